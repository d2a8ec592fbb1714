//! Sign and Verify: RSASSA-PSS and PKCS#1 v1.5, ECDSA (DER signatures) and
//! Ed25519, over RAW messages (hashed here) or DIGEST messages (hashed by
//! the caller). RSA, NIST-curve ECDSA and Ed25519 run on AWS-LC
//! (`signer.rs`); secp256k1 on RustCrypto's k256.

use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};

use super::key::Parsed;
use super::{
    check_len, incompatible_algorithm, AsymError, HashAlg, MessageType, PrivateKeyMaterial,
    SigningAlgorithmSpec,
};

/// The largest RAW message Sign and Verify accept (AWS: 4096 bytes); larger
/// messages must be hashed by the caller and sent as DIGEST.
pub const MAX_RAW_MESSAGE_LEN: usize = 4096;

/// Signs `message` with `key` (AWS Sign). RSA signatures are PKCS#1 (RFC
/// 8017), PSS with a salt as long as the hash and MGF1 with the same hash;
/// ECDSA signatures are DER-encoded (RFC 3279); Ed25519 signatures are the
/// 64 bytes of RFC 8032.
pub fn sign(
    key: &PrivateKeyMaterial,
    algorithm: SigningAlgorithmSpec,
    message_type: MessageType,
    message: &[u8],
) -> Result<Vec<u8>, AsymError> {
    check_algorithm(key, algorithm)?;
    let input = prepare(algorithm, message_type, message)?;
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

/// What the signature primitive gets: a digest (with its hash), or the raw
/// message for pure Ed25519.
enum Input<'a> {
    Digest(Vec<u8>, HashAlg),
    Raw(&'a [u8]),
}

impl Input<'_> {
    /// The hash (none for a raw message) and the bytes to sign.
    fn parts(&self) -> (Option<HashAlg>, &[u8]) {
        match self {
            Input::Digest(d, hash) => (Some(*hash), d),
            Input::Raw(m) => (None, m),
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

fn prepare(
    algorithm: SigningAlgorithmSpec,
    message_type: MessageType,
    message: &[u8],
) -> Result<Input<'_>, AsymError> {
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
        (None, MessageType::Digest) => Err(AsymError::MessageTypeNotSupported {
            algorithm,
            message_type,
        }),
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
