//! Sign and Verify: RSASSA-PSS and PKCS#1 v1.5, ECDSA (DER signatures),
//! Ed25519 and ML-DSA, over RAW messages (hashed here, or by the signature
//! scheme for Ed25519 and ML-DSA), DIGEST messages (hashed by the caller)
//! or, for ML-DSA, EXTERNAL_MU messages (the FIPS 204 message
//! representative μ computed by the caller). RSA, NIST-curve ECDSA,
//! Ed25519 and ML-DSA run on AWS-LC (`signer.rs`); secp256k1 on
//! RustCrypto's k256.

use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};

use super::key::Parsed;
use super::{
    check_len, incompatible_algorithm, AsymError, HashAlg, MessageType, PrivateKeyMaterial,
    SigningAlgorithmSpec,
};

/// The largest RAW message Sign and Verify accept (AWS: 4096 bytes); larger
/// messages must be hashed by the caller and sent as DIGEST.
pub const MAX_RAW_MESSAGE_LEN: usize = 4096;

/// The length of an EXTERNAL_MU message: ML-DSA's μ is 64 bytes (FIPS 204
/// section 6.2).
pub const EXTERNAL_MU_LEN: usize = 64;

/// Signs `message` with `key` (AWS Sign). RSA signatures are PKCS#1 (RFC
/// 8017), PSS with a salt as long as the hash and MGF1 with the same hash;
/// ECDSA signatures are DER-encoded (RFC 3279); Ed25519 signatures are the
/// 64 bytes of RFC 8032; ML-DSA signatures are the raw FIPS 204 encoding
/// (2420, 3309 or 4627 bytes), hedged, so signing twice gives two different
/// valid signatures.
pub fn sign(
    key: &PrivateKeyMaterial,
    algorithm: SigningAlgorithmSpec,
    message_type: MessageType,
    message: &[u8],
) -> Result<Vec<u8>, AsymError> {
    check_algorithm(key, algorithm)?;
    let input = prepare(algorithm, message_type, message)?;
    if let Input::Mu(mu) = input {
        return key.signer.sign_mu(mu).unwrap_or_else(|| {
            Err(AsymError::Internal(format!(
                "{algorithm}: key and algorithm do not match"
            )))
        });
    }
    let (hash, bytes) = input.parts();
    if let Some(signed) = key.signer.sign(algorithm, hash, bytes) {
        return signed;
    }
    let internal = |e: &dyn std::fmt::Display| AsymError::Internal(format!("{algorithm}: {e}"));
    let signature = match (&key.parsed, &input) {
        (Parsed::K256(k), Input::Digest(d, _)) => {
            // k256 always produces low-S signatures.
            let s: k256::ecdsa::Signature = k.sign_prehash(d).map_err(|e| internal(&e))?;
            s.to_der().as_bytes().to_vec()
        }
        _ => return Err(internal(&"key and algorithm do not match")),
    };
    Ok(signature)
}

/// Verifies `signature` over `message` (AWS Verify). A malformed or wrong
/// signature gives `Ok(false)` (KMSInvalidSignatureException for the
/// caller); `Err` is for requests that are invalid whatever the signature.
pub fn verify(
    key: &PrivateKeyMaterial,
    algorithm: SigningAlgorithmSpec,
    message_type: MessageType,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, AsymError> {
    check_algorithm(key, algorithm)?;
    let input = prepare(algorithm, message_type, message)?;
    if let Input::Mu(mu) = input {
        return key.signer.verify_mu(mu, signature).ok_or_else(|| {
            AsymError::Internal(format!("{algorithm}: key and algorithm do not match"))
        });
    }
    let (hash, bytes) = input.parts();
    if let Some(valid) = key.signer.verify(algorithm, hash, bytes, signature) {
        return Ok(valid);
    }
    let valid = match (&key.parsed, &input) {
        (Parsed::K256(k), Input::Digest(d, _)) => {
            // k256 refuses high-S signatures, which OpenSSL and other ECDSA
            // signers produce half of the time; ECDSA itself accepts both.
            k256::ecdsa::Signature::from_der(signature).is_ok_and(|s| {
                let s = s.normalize_s().unwrap_or(s);
                k.verifying_key().verify_prehash(d, &s).is_ok()
            })
        }
        _ => {
            return Err(AsymError::Internal(format!(
                "{algorithm}: key and algorithm do not match"
            )))
        }
    };
    Ok(valid)
}

/// What the signature primitive gets: a digest (with its hash), the raw
/// message for pure Ed25519 and ML-DSA, or an ML-DSA μ.
enum Input<'a> {
    Digest(Vec<u8>, HashAlg),
    Raw(&'a [u8]),
    Mu(&'a [u8]),
}

impl Input<'_> {
    /// The hash (none for a raw message or μ) and the bytes to sign.
    fn parts(&self) -> (Option<HashAlg>, &[u8]) {
        match self {
            Input::Digest(d, hash) => (Some(*hash), d),
            Input::Raw(m) | Input::Mu(m) => (None, m),
        }
    }
}

fn check_algorithm(
    key: &PrivateKeyMaterial,
    algorithm: SigningAlgorithmSpec,
) -> Result<(), AsymError> {
    let supported = key.spec().signing_algorithms();
    if supported.contains(&algorithm) {
        Ok(())
    } else {
        Err(incompatible_algorithm(
            key.spec(),
            "signing",
            algorithm,
            supported,
        ))
    }
}

/// Checks the message against the message type and algorithm (lengths,
/// and which types the algorithm takes) and hashes a RAW message for the
/// hash-then-sign algorithms.
fn prepare(
    algorithm: SigningAlgorithmSpec,
    message_type: MessageType,
    message: &[u8],
) -> Result<Input<'_>, AsymError> {
    if !algorithm.message_types().contains(&message_type) {
        return Err(AsymError::MessageTypeNotSupported {
            algorithm,
            message_type,
        });
    }
    if message_type == MessageType::ExternalMu {
        if message.len() != EXTERNAL_MU_LEN {
            return Err(AsymError::MuLength {
                algorithm,
                expected: EXTERNAL_MU_LEN,
                actual: message.len(),
            });
        }
        return Ok(Input::Mu(message));
    }
    match (algorithm.hash(), message_type) {
        (Some(hash), MessageType::Raw) => {
            check_len("message", message.len(), 1, MAX_RAW_MESSAGE_LEN)?;
            Ok(Input::Digest(hash.digest(message), hash))
        }
        (Some(hash), MessageType::Digest) => {
            if message.len() != hash.output_len() {
                return Err(AsymError::DigestLength {
                    algorithm,
                    expected: hash.output_len(),
                    actual: message.len(),
                });
            }
            Ok(Input::Digest(message.to_vec(), hash))
        }
        (None, MessageType::Raw) => {
            check_len("message", message.len(), 1, MAX_RAW_MESSAGE_LEN)?;
            Ok(Input::Raw(message))
        }
        (None, MessageType::Digest) | (_, MessageType::ExternalMu) => {
            Err(AsymError::MessageTypeNotSupported {
                algorithm,
                message_type,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::asym::KeySpec;

    const ECC: [(KeySpec, SigningAlgorithmSpec); 4] = [
        (KeySpec::EccNistP256, SigningAlgorithmSpec::EcdsaSha256),
        (KeySpec::EccNistP384, SigningAlgorithmSpec::EcdsaSha384),
        (KeySpec::EccNistP521, SigningAlgorithmSpec::EcdsaSha512),
        (KeySpec::EccSecgP256k1, SigningAlgorithmSpec::EcdsaSha256),
    ];

    #[test]
    fn ecdsa_raw_and_digest_are_interchangeable() {
        for (spec, alg) in ECC {
            let key = PrivateKeyMaterial::generate(spec).unwrap();
            let msg = b"the quick brown fox";
            let sig = sign(&key, alg, MessageType::Raw, msg).unwrap();
            // DER SEQUENCE of two INTEGERs.
            assert_eq!(sig[0], 0x30, "{spec}");
            assert!(verify(&key, alg, MessageType::Raw, msg, &sig).unwrap());
            let digest = alg.hash().unwrap().digest(msg);
            assert!(verify(&key, alg, MessageType::Digest, &digest, &sig).unwrap());
            let sig2 = sign(&key, alg, MessageType::Digest, &digest).unwrap();
            assert!(verify(&key, alg, MessageType::Raw, msg, &sig2).unwrap());
            assert!(!verify(&key, alg, MessageType::Raw, b"other", &sig).unwrap());
        }
    }

    /// AWS-LC's signatures verify under the RustCrypto keys the material
    /// also loads into (the previous signer), and AWS-LC rejects a
    /// signature of another message.
    #[test]
    fn aws_lc_signatures_verify_with_rustcrypto() {
        use ecdsa::signature::Verifier as _;
        use rsa::{Pkcs1v15Sign, Pss};
        let msg = b"cross-check";
        let rsa_key = PrivateKeyMaterial::generate(KeySpec::Rsa2048).unwrap();
        let Parsed::Rsa(rsa) = &rsa_key.parsed else {
            panic!("an RSA key parses as RSA")
        };
        let public: &rsa::RsaPublicKey = (**rsa).as_ref();
        for alg in KeySpec::Rsa2048.signing_algorithms() {
            let sig = sign(&rsa_key, *alg, MessageType::Raw, msg).unwrap();
            assert_eq!(sig.len(), 256, "{alg}");
            let hash = alg.hash().unwrap();
            let d = hash.digest(msg);
            let pss = alg.as_str().contains("PSS");
            let ok = match (hash, pss) {
                (HashAlg::Sha256, true) => public.verify(Pss::new::<sha2::Sha256>(), &d, &sig),
                (HashAlg::Sha384, true) => public.verify(Pss::new::<sha2::Sha384>(), &d, &sig),
                (HashAlg::Sha512, true) => public.verify(Pss::new::<sha2::Sha512>(), &d, &sig),
                (HashAlg::Sha256, false) => {
                    public.verify(Pkcs1v15Sign::new::<sha2::Sha256>(), &d, &sig)
                }
                (HashAlg::Sha384, false) => {
                    public.verify(Pkcs1v15Sign::new::<sha2::Sha384>(), &d, &sig)
                }
                (HashAlg::Sha512, false) => {
                    public.verify(Pkcs1v15Sign::new::<sha2::Sha512>(), &d, &sig)
                }
            };
            assert!(ok.is_ok(), "{alg} verifies with the rsa crate");
            assert!(!verify(&rsa_key, *alg, MessageType::Raw, b"other", &sig).unwrap());
        }
        let p256 = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let alg = SigningAlgorithmSpec::EcdsaSha256;
        let sig = sign(&p256, alg, MessageType::Raw, msg).unwrap();
        let Parsed::P256(k) = &p256.parsed else {
            panic!("a P-256 key parses as P-256")
        };
        let s = p256::ecdsa::Signature::from_der(&sig).unwrap();
        assert!(k.verifying_key().verify(msg, &s).is_ok());
        let ed = PrivateKeyMaterial::generate(KeySpec::EccNistEdwards25519).unwrap();
        let alg = SigningAlgorithmSpec::Ed25519Sha512;
        let sig = sign(&ed, alg, MessageType::Raw, msg).unwrap();
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let k = ed25519_dalek::SigningKey::from_pkcs8_der(ed.material().expose()).unwrap();
        // Ed25519 is deterministic: the same bytes as ed25519-dalek's.
        assert_eq!(sig, ed25519_dalek::Signer::sign(&k, msg).to_bytes());
    }

    #[test]
    fn malformed_signatures_are_false_not_errors() {
        for (spec, alg) in ECC {
            let key = PrivateKeyMaterial::generate(spec).unwrap();
            for bad in [
                &b""[..],
                &[0x30][..],
                &[0xff; 200][..],
                &[0x30, 0x06, 2, 1, 0, 2, 1, 0],
            ] {
                assert!(!verify(&key, alg, MessageType::Raw, b"m", bad).unwrap());
            }
        }
        let ed = PrivateKeyMaterial::generate(KeySpec::EccNistEdwards25519).unwrap();
        let alg = SigningAlgorithmSpec::Ed25519Sha512;
        assert!(!verify(&ed, alg, MessageType::Raw, b"m", &[1; 63]).unwrap());
        assert!(!verify(&ed, alg, MessageType::Raw, b"m", &[1; 64]).unwrap());
    }

    #[test]
    fn ed25519_signs_raw_only() {
        let key = PrivateKeyMaterial::generate(KeySpec::EccNistEdwards25519).unwrap();
        let alg = SigningAlgorithmSpec::Ed25519Sha512;
        let sig = sign(&key, alg, MessageType::Raw, b"hello").unwrap();
        assert_eq!(sig.len(), 64);
        assert!(verify(&key, alg, MessageType::Raw, b"hello", &sig).unwrap());
        assert!(matches!(
            sign(&key, alg, MessageType::Digest, &[0; 64]),
            Err(AsymError::MessageTypeNotSupported { .. })
        ));
    }

    const ML_DSA: [(KeySpec, usize); 3] = [
        (KeySpec::MlDsa44, 2420),
        (KeySpec::MlDsa65, 3309),
        (KeySpec::MlDsa87, 4627),
    ];

    /// SHAKE256(parts..., 64) through AWS-LC's EVP (the sign path never
    /// computes μ itself; AWS-LC does, inside pure ML-DSA).
    fn shake256_64(parts: &[&[u8]]) -> [u8; 64] {
        use aws_lc_sys as lc;
        let mut out = [0u8; 64];
        // SAFETY: FFI calls on a digest context created, used and freed
        // here; each update reads `p.len()` bytes of `p`; the final call
        // writes 64 bytes into `out`.
        unsafe {
            let ctx = lc::EVP_MD_CTX_new();
            assert!(!ctx.is_null());
            assert_eq!(
                lc::EVP_DigestInit_ex(ctx, lc::EVP_shake256(), std::ptr::null_mut()),
                1
            );
            for p in parts {
                assert_eq!(lc::EVP_DigestUpdate(ctx, p.as_ptr().cast(), p.len()), 1);
            }
            assert_eq!(lc::EVP_DigestFinalXOF(ctx, out.as_mut_ptr(), 64), 1);
            lc::EVP_MD_CTX_free(ctx);
        }
        out
    }

    /// μ of FIPS 204 section 6.2 with an empty context string.
    fn mu(key: &PrivateKeyMaterial, pk_len: usize, message: &[u8]) -> [u8; 64] {
        let spki = key.public_key_der().unwrap();
        let pk = &spki[spki.len() - pk_len..];
        let tr = shake256_64(&[pk]);
        shake256_64(&[&tr, &[0, 0], message])
    }

    #[test]
    fn ml_dsa_signs_raw_hedged_and_external_mu_interchangeably() {
        let alg = SigningAlgorithmSpec::MlDsaShake256;
        for ((spec, sig_len), pk_len) in ML_DSA.into_iter().zip([1312, 1952, 2592]) {
            let key = PrivateKeyMaterial::generate(spec).unwrap();
            let msg = b"post-quantum hello";
            let s1 = sign(&key, alg, MessageType::Raw, msg).unwrap();
            let s2 = sign(&key, alg, MessageType::Raw, msg).unwrap();
            assert_eq!(s1.len(), sig_len, "{spec}");
            assert_ne!(s1, s2, "{spec}: signatures are hedged");
            for s in [&s1, &s2] {
                assert!(verify(&key, alg, MessageType::Raw, msg, s).unwrap());
            }
            assert!(!verify(&key, alg, MessageType::Raw, b"post-quantum hellO", &s1).unwrap());
            // A RAW signature verifies as EXTERNAL_MU over μ(M), and an
            // EXTERNAL_MU signature of μ(M) verifies as RAW over M.
            let m = mu(&key, pk_len, msg);
            assert!(verify(&key, alg, MessageType::ExternalMu, &m, &s1).unwrap());
            let s3 = sign(&key, alg, MessageType::ExternalMu, &m).unwrap();
            assert_eq!(s3.len(), sig_len);
            assert!(verify(&key, alg, MessageType::Raw, msg, &s3).unwrap());
            assert!(!verify(&key, alg, MessageType::Raw, b"other", &s3).unwrap());
            let mut m2 = m;
            m2[0] ^= 1;
            assert!(!verify(&key, alg, MessageType::ExternalMu, &m2, &s3).unwrap());
            // A signature by another key of the same spec does not verify.
            let other = PrivateKeyMaterial::generate(spec).unwrap();
            assert!(!verify(&other, alg, MessageType::Raw, msg, &s1).unwrap());
            // Malformed signatures are false, not errors.
            for bad in [
                &b""[..],
                &[0; 64][..],
                &s1[..sig_len - 1],
                &[0xff; 6144][..],
            ] {
                assert!(!verify(&key, alg, MessageType::Raw, msg, bad).unwrap());
                assert!(!verify(&key, alg, MessageType::ExternalMu, &m, bad).unwrap());
            }
        }
    }

    #[test]
    fn ml_dsa_message_types_and_lengths_are_checked() {
        let key = PrivateKeyMaterial::generate(KeySpec::MlDsa44).unwrap();
        let alg = SigningAlgorithmSpec::MlDsaShake256;
        let err = sign(&key, alg, MessageType::Digest, &[0; 64]).unwrap_err();
        assert!(matches!(err, AsymError::MessageTypeNotSupported { .. }));
        assert_eq!(
            err.to_string(),
            "MessageType DIGEST is not supported with ML_DSA_SHAKE_256; use one of [RAW, EXTERNAL_MU]"
        );
        assert!(matches!(
            verify(&key, alg, MessageType::Digest, &[0; 64], &[0; 2420]),
            Err(AsymError::MessageTypeNotSupported { .. })
        ));
        for len in [0, 32, 63, 65, 128] {
            assert!(matches!(
                sign(&key, alg, MessageType::ExternalMu, &vec![0; len]),
                Err(AsymError::MuLength { expected: 64, actual, .. }) if actual == len
            ));
            assert!(matches!(
                verify(
                    &key,
                    alg,
                    MessageType::ExternalMu,
                    &vec![0; len],
                    &[0; 2420]
                ),
                Err(AsymError::MuLength { .. })
            ));
        }
        assert!(sign(&key, alg, MessageType::Raw, &[7; MAX_RAW_MESSAGE_LEN]).is_ok());
        assert!(matches!(
            sign(&key, alg, MessageType::Raw, &[7; MAX_RAW_MESSAGE_LEN + 1]),
            Err(AsymError::InputLength { .. })
        ));
        // EXTERNAL_MU is for ML-DSA only; ML-DSA keys sign with ML-DSA only.
        let ec = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let ecdsa = SigningAlgorithmSpec::EcdsaSha256;
        assert!(matches!(
            sign(&ec, ecdsa, MessageType::ExternalMu, &[0; 64]),
            Err(AsymError::MessageTypeNotSupported { .. })
        ));
        let ed = PrivateKeyMaterial::generate(KeySpec::EccNistEdwards25519).unwrap();
        assert!(matches!(
            sign(
                &ed,
                SigningAlgorithmSpec::Ed25519Sha512,
                MessageType::ExternalMu,
                &[0; 64]
            ),
            Err(AsymError::MessageTypeNotSupported { .. })
        ));
        assert!(matches!(
            sign(&ec, alg, MessageType::Raw, b"m"),
            Err(AsymError::IncompatibleAlgorithm { .. })
        ));
        assert!(matches!(
            sign(&key, ecdsa, MessageType::Raw, b"m"),
            Err(AsymError::IncompatibleAlgorithm { .. })
        ));
    }

    #[test]
    fn lengths_and_algorithms_are_checked() {
        let key = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let alg = SigningAlgorithmSpec::EcdsaSha256;
        assert!(matches!(
            sign(&key, alg, MessageType::Digest, &[0; 31]),
            Err(AsymError::DigestLength {
                expected: 32,
                actual: 31,
                ..
            })
        ));
        assert!(sign(&key, alg, MessageType::Raw, &[0; MAX_RAW_MESSAGE_LEN]).is_ok());
        assert!(matches!(
            sign(&key, alg, MessageType::Raw, &[0; MAX_RAW_MESSAGE_LEN + 1]),
            Err(AsymError::InputLength { .. })
        ));
        assert!(matches!(
            sign(&key, alg, MessageType::Raw, b""),
            Err(AsymError::InputLength { .. })
        ));
        assert!(matches!(
            sign(
                &key,
                SigningAlgorithmSpec::EcdsaSha384,
                MessageType::Raw,
                b"m"
            ),
            Err(AsymError::IncompatibleAlgorithm { .. })
        ));
        let hmac = PrivateKeyMaterial::generate(KeySpec::Hmac256).unwrap();
        assert!(matches!(
            sign(&hmac, alg, MessageType::Raw, b"m"),
            Err(AsymError::IncompatibleAlgorithm { .. })
        ));
    }
}
