//! The AWS-LC (aws-lc-rs) form of signing keys: RSA, ECDSA on the NIST
//! curves, Ed25519 and ML-DSA Sign/Verify run on AWS-LC's assembly, with
//! the key parsed once when the key material loads (public keys included,
//! one per verification algorithm) so a call does no parsing.
//!
//! ML-DSA over a RAW message is aws-lc-rs's `PqdsaKeyPair` (pure ML-DSA,
//! empty context). aws-lc-rs has no API for the "external μ" form that
//! EXTERNAL_MU needs, so [`MuKey`] holds a second `EVP_PKEY` of the same
//! key and calls AWS-LC's `EVP_PKEY_sign`/`EVP_PKEY_verify`, which for an
//! ML-DSA key take μ itself (`ml_dsa_extmu_*_sign`/`_verify` in AWS-LC's
//! `crypto/fipsmodule/pqdsa/pqdsa.c`).
//!
//! Secrecy: the aws-lc-rs key pairs are opaque (no accessor hands out the
//! private key) and hold it in an `EVP_PKEY`, whose big numbers (ML-DSA:
//! seed and expanded key) AWS-LC frees with `OPENSSL_free`, which cleanses
//! the memory first; so the key is zeroized when the last
//! [`PrivateKeyMaterial`] clone drops. [`MuKey`] frees its `EVP_PKEY` the
//! same way. secp256k1 keys keep the RustCrypto signer (`Parsed::K256`).
//!
//! [`PrivateKeyMaterial`]: super::PrivateKeyMaterial

use std::ptr::{self, NonNull};

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair as RsaKeyPair, OaepAlgorithm, OaepPrivateDecryptingKey, PrivateDecryptingKey,
    RsaParameters,
};
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ParsedPublicKey, PqdsaKeyPair,
};
use aws_lc_sys as lc;

use super::{AsymError, HashAlg, KeySpec, SigningAlgorithmSpec};

/// A signing key as AWS-LC objects, or `None` for specs signed elsewhere.
pub(crate) enum Signer {
    Rsa {
        pair: RsaKeyPair,
        /// One parsed public key per RSA signing algorithm, in
        /// [`RSA_VERIFY`] order.
        verifiers: Vec<ParsedPublicKey>,
        /// The same private key for RSA-OAEP Decrypt (AWS-LC blinds the
        /// private operation and checks the padding in constant time).
        decrypter: OaepPrivateDecryptingKey,
    },
    Ecdsa {
        pair: EcdsaKeyPair,
        verifier: ParsedPublicKey,
        hash: HashAlg,
    },
    Ed25519 {
        pair: Ed25519KeyPair,
        verifier: ParsedPublicKey,
    },
    /// ML-DSA: `pair` signs RAW messages, `mu` signs and verifies
    /// EXTERNAL_MU ones.
    MlDsa {
        pair: PqdsaKeyPair,
        verifier: ParsedPublicKey,
        mu: MuKey,
    },
    /// secp256k1 (RustCrypto) and HMAC keys.
    None,
}

/// The RSA signing algorithms and their AWS-LC verification parameters,
/// in the order of `Signer::Rsa::verifiers`.
const RSA_VERIFY: [(SigningAlgorithmSpec, &RsaParameters); 6] = [
    (
        SigningAlgorithmSpec::RsassaPssSha256,
        &sig::RSA_PSS_2048_8192_SHA256,
    ),
    (
        SigningAlgorithmSpec::RsassaPssSha384,
        &sig::RSA_PSS_2048_8192_SHA384,
    ),
    (
        SigningAlgorithmSpec::RsassaPssSha512,
        &sig::RSA_PSS_2048_8192_SHA512,
    ),
    (
        SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        &sig::RSA_PKCS1_2048_8192_SHA256,
    ),
    (
        SigningAlgorithmSpec::RsassaPkcs1V15Sha384,
        &sig::RSA_PKCS1_2048_8192_SHA384,
    ),
    (
        SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
        &sig::RSA_PKCS1_2048_8192_SHA512,
    ),
];

impl Signer {
    /// Parses the PKCS#8 private key of an ML-DSA spec (seed or expanded
    /// form, as AWS-LC reads it) and checks that it is a key of `spec`'s
    /// parameter set. Returns the signer and the key's DER
    /// SubjectPublicKeyInfo. The error is a reason for `InvalidKeyMaterial`.
    pub(crate) fn load_ml_dsa(spec: KeySpec, pkcs8: &[u8]) -> Result<(Self, Vec<u8>), String> {
        let (signing, verifying): (_, &'static sig::PqdsaVerificationAlgorithm) = match spec {
            KeySpec::MlDsa44 => (&sig::ML_DSA_44_SIGNING, &sig::ML_DSA_44),
            KeySpec::MlDsa65 => (&sig::ML_DSA_65_SIGNING, &sig::ML_DSA_65),
            KeySpec::MlDsa87 => (&sig::ML_DSA_87_SIGNING, &sig::ML_DSA_87),
            _ => return Err(format!("{spec} is not an ML-DSA key spec")),
        };
        let pair = PqdsaKeyPair::from_pkcs8(signing, pkcs8).map_err(|e| {
            format!("expected a DER-encoded PKCS#8 {spec} private key (AWS-LC refuses it: {e})")
        })?;
        let public = pair
            .public_key()
            .as_der()
            .map_err(|_| "AWS-LC could not encode the public key".to_string())?;
        let public = public.as_ref().to_vec();
        let verifier = ParsedPublicKey::new(verifying, &public)
            .map_err(|e| format!("AWS-LC refuses the public key ({e})"))?;
        let mu = MuKey::from_pkcs8(pkcs8)
            .ok_or_else(|| "AWS-LC refuses the private key for external mu".to_string())?;
        Ok((Signer::MlDsa { pair, verifier, mu }, public))
    }

    /// Signs a 64-byte ML-DSA message representative μ (EXTERNAL_MU).
    /// `None` if this is not an ML-DSA key.
    pub(crate) fn sign_mu(&self, mu: &[u8]) -> Option<Result<Vec<u8>, AsymError>> {
        let Signer::MlDsa { mu: key, .. } = self else {
            return None;
        };
        Some(key.sign(mu).ok_or_else(|| {
            AsymError::Internal(format!(
                "{}: AWS-LC could not sign the external mu",
                SigningAlgorithmSpec::MlDsaShake256
            ))
        }))
    }

    /// Verifies an ML-DSA signature of μ (EXTERNAL_MU): `Some(valid)`, or
    /// `None` if this is not an ML-DSA key.
    pub(crate) fn verify_mu(&self, mu: &[u8], signature: &[u8]) -> Option<bool> {
        let Signer::MlDsa { mu: key, .. } = self else {
            return None;
        };
        Some(key.verify(mu, signature))
    }

    /// Parses the PKCS#8 private key (already checked by the RustCrypto
    /// loader to be a key of `spec`) and its DER SubjectPublicKeyInfo.
    /// The error is a reason for `InvalidKeyMaterial`.
    pub(crate) fn load(spec: KeySpec, pkcs8: &[u8], public_der: &[u8]) -> Result<Self, String> {
        let refused =
            |what: &str, e: &dyn std::fmt::Display| format!("AWS-LC refuses the {what} ({e})");
        let parse = |alg: &'static dyn sig::VerificationAlgorithm| {
            ParsedPublicKey::new(alg, public_der).map_err(|e| refused("public key", &e))
        };
        let ecdsa = |signing: &'static sig::EcdsaSigningAlgorithm,
                     verifying: &'static sig::EcdsaVerificationAlgorithm,
                     hash: HashAlg| {
            Ok(Signer::Ecdsa {
                pair: EcdsaKeyPair::from_pkcs8(signing, pkcs8)
                    .map_err(|e| refused("private key", &e))?,
                verifier: parse(verifying)?,
                hash,
            })
        };
        match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| refused("private key", &e))?;
                let verifiers = RSA_VERIFY
                    .iter()
                    .map(|(_, params)| parse(*params))
                    .collect::<Result<_, _>>()?;
                let decrypter = PrivateDecryptingKey::from_pkcs8(pkcs8)
                    .map_err(|e| refused("private key", &e))
                    .and_then(|k| {
                        OaepPrivateDecryptingKey::new(k).map_err(|e| refused("private key", &e))
                    })?;
                Ok(Signer::Rsa {
                    pair,
                    verifiers,
                    decrypter,
                })
            }
            KeySpec::EccNistP256 => ecdsa(
                &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
                &sig::ECDSA_P256_SHA256_ASN1,
                HashAlg::Sha256,
            ),
            KeySpec::EccNistP384 => ecdsa(
                &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
                &sig::ECDSA_P384_SHA384_ASN1,
                HashAlg::Sha384,
            ),
            KeySpec::EccNistP521 => ecdsa(
                &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
                &sig::ECDSA_P521_SHA512_ASN1,
                HashAlg::Sha512,
            ),
            KeySpec::EccNistEdwards25519 => Ok(Signer::Ed25519 {
                pair: Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| refused("private key", &e))?,
                verifier: parse(&sig::ED25519)?,
            }),
            _ => Ok(Signer::None),
        }
    }

    /// RSA-OAEP decryption of `ciphertext` with `algorithm`, the plaintext
    /// in a zeroizing buffer; `None` when this is no RSA key. Every failure
    /// (wrong length, bad padding, wrong key) is the same opaque error, so
    /// that it is no padding oracle.
    pub(crate) fn rsa_decrypt(
        &self,
        algorithm: &'static OaepAlgorithm,
        ciphertext: &[u8],
    ) -> Option<Result<crate::secret::SecretBytes, AsymError>> {
        let Signer::Rsa { decrypter, .. } = self else {
            return None;
        };
        if ciphertext.len() != decrypter.key_size_bytes() {
            return Some(Err(AsymError::InvalidCiphertext));
        }
        let mut out = crate::secret::SecretBytes::new(vec![0; decrypter.min_output_size()]);
        let len = match decrypter.decrypt(algorithm, ciphertext, out.expose_mut(), None) {
            Ok(plaintext) => plaintext.len(),
            Err(_) => return Some(Err(AsymError::InvalidCiphertext)),
        };
        out.expose_mut().truncate(len);
        Some(Ok(out))
    }

    /// Signs a digest (RSA, ECDSA) or a raw message (Ed25519, `hash` =
    /// `None`). `None` if this key is not signed here or the algorithm does
    /// not fit it (the caller checked the algorithm against the key spec).
    pub(crate) fn sign(
        &self,
        algorithm: SigningAlgorithmSpec,
        hash: Option<HashAlg>,
        input: &[u8],
    ) -> Option<Result<Vec<u8>, AsymError>> {
        let failed = || AsymError::Internal(format!("{algorithm}: AWS-LC could not sign"));
        Some(match (self, hash) {
            (Signer::Rsa { pair, .. }, Some(hash)) => {
                let digest = import_digest(hash, input)?;
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign_digest(rsa_encoding(algorithm)?, &digest, &mut out)
                    .map(|()| out)
                    .map_err(|_| failed())
            }
            (Signer::Ecdsa { pair, hash: h, .. }, Some(hash)) if *h == hash => pair
                .sign_digest(&import_digest(hash, input)?)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| failed()),
            (Signer::Ed25519 { pair, .. }, None) => pair
                .try_sign(input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| failed()),
            (Signer::MlDsa { pair, .. }, None) => {
                // Pure ML-DSA, empty context, hedged (fresh randomness per
                // signature), as AWS KMS signs RAW messages.
                let mut out = vec![0; pair.algorithm().signature_len()];
                pair.sign(input, &mut out)
                    .map(|len| {
                        out.truncate(len);
                        out
                    })
                    .map_err(|_| failed())
            }
            _ => return None,
        })
    }

    /// Verifies like [`Signer::sign`] signs: `Some(valid)`, or `None` if
    /// this key is not verified here.
    pub(crate) fn verify(
        &self,
        algorithm: SigningAlgorithmSpec,
        hash: Option<HashAlg>,
        input: &[u8],
        signature: &[u8],
    ) -> Option<bool> {
        match (self, hash) {
            (Signer::Rsa { verifiers, .. }, Some(hash)) => {
                let i = RSA_VERIFY.iter().position(|(a, _)| *a == algorithm)?;
                let digest = import_digest(hash, input)?;
                Some(
                    verifiers
                        .get(i)?
                        .verify_digest_sig(&digest, signature)
                        .is_ok(),
                )
            }
            (
                Signer::Ecdsa {
                    verifier, hash: h, ..
                },
                Some(hash),
            ) if *h == hash => {
                let digest = import_digest(hash, input)?;
                Some(verifier.verify_digest_sig(&digest, signature).is_ok())
            }
            (Signer::Ed25519 { verifier, .. }, None) | (Signer::MlDsa { verifier, .. }, None) => {
                Some(verifier.verify_sig(input, signature).is_ok())
            }
            _ => None,
        }
    }
}

/// A digest computed by the caller (or by `prepare` for RAW messages), as
/// AWS-LC takes it; `None` if its length does not fit the hash (checked
/// before, so never in practice).
fn import_digest(hash: HashAlg, d: &[u8]) -> Option<Digest> {
    let alg = match hash {
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    };
    Digest::import_less_safe(d, alg).ok()
}

/// PSS: salt as long as the hash, MGF1 with the same hash (what AWS KMS
/// and `-pkeyopt rsa_pss_saltlen:digest` use).
fn rsa_encoding(algorithm: SigningAlgorithmSpec) -> Option<&'static dyn sig::RsaEncoding> {
    use SigningAlgorithmSpec::*;
    Some(match algorithm {
        RsassaPssSha256 => &sig::RSA_PSS_SHA256,
        RsassaPssSha384 => &sig::RSA_PSS_SHA384,
        RsassaPssSha512 => &sig::RSA_PSS_SHA512,
        RsassaPkcs1V15Sha256 => &sig::RSA_PKCS1_SHA256,
        RsassaPkcs1V15Sha384 => &sig::RSA_PKCS1_SHA384,
        RsassaPkcs1V15Sha512 => &sig::RSA_PKCS1_SHA512,
        _ => return None,
    })
}

/// An ML-DSA private key as an AWS-LC `EVP_PKEY` of its own, for the
/// external-μ operations aws-lc-rs does not offer. It owns one reference
/// to the key; dropping it frees the key, which cleanses it (see `Drop`).
pub(crate) struct MuKey(NonNull<lc::EVP_PKEY>);

// SAFETY: an EVP_PKEY has no thread affinity. After parsing, this type
// never mutates it: each operation makes its own EVP_PKEY_CTX, which only
// takes a reference (an atomic count) on the key and reads it. AWS-LC
// supports concurrent use of one EVP_PKEY through separate contexts (as
// aws-lc-rs's key pairs, which are Send + Sync, rely on too).
unsafe impl Send for MuKey {}
// SAFETY: as for Send; `&MuKey` only allows the read-only operations.
unsafe impl Sync for MuKey {}

impl MuKey {
    /// Parses PKCS#8 DER into an ML-DSA `EVP_PKEY`. `None` if AWS-LC
    /// refuses it, if it is not an ML-DSA key, or if bytes follow it.
    fn from_pkcs8(pkcs8: &[u8]) -> Option<Self> {
        let mut cbs = lc::CBS {
            data: ptr::null(),
            len: 0,
        };
        // SAFETY: FFI calls. CBS_init points `cbs` (ours, on the stack) at
        // `pkcs8`, which outlives the block; EVP_parse_private_key only
        // reads through it, copies what it keeps into the new EVP_PKEY and
        // advances `cbs` past the parsed element. A null result is handled;
        // a non-null one is a new EVP_PKEY we own, freed by `Drop` (or
        // below, if it is refused).
        let key = unsafe {
            lc::CBS_init(&mut cbs, pkcs8.as_ptr(), pkcs8.len());
            NonNull::new(lc::EVP_parse_private_key(&mut cbs)).map(MuKey)
        };
        let Some(key) = key else {
            clear_errors();
            return None;
        };
        // SAFETY: FFI calls reading the live key we own and the CBS we own.
        let (id, rest) = unsafe { (lc::EVP_PKEY_id(key.0.as_ptr()), lc::CBS_len(&cbs)) };
        (id == lc::EVP_PKEY_PQDSA && rest == 0).then_some(key)
    }

    /// Signs μ (must be 64 bytes; AWS-LC refuses other lengths). Hedged:
    /// AWS-LC draws fresh randomness for each signature.
    fn sign(&self, mu: &[u8]) -> Option<Vec<u8>> {
        let ctx = PkeyCtx::new(self)?;
        let mut len = 0usize;
        // SAFETY: FFI calls on the live context we own. A null signature
        // buffer makes EVP_PKEY_sign only write the signature length into
        // `len`; the second call writes at most `len` bytes (it checks
        // `*sig_len` against the signature size first) into `out`, which
        // has `len` bytes, reads `mu.len()` bytes of `mu`, and sets `len`
        // to the bytes written.
        let ok = unsafe {
            let c = ctx.0.as_ptr();
            lc::EVP_PKEY_sign_init(c) == 1
                && lc::EVP_PKEY_sign(c, ptr::null_mut(), &mut len, mu.as_ptr(), mu.len()) == 1
        };
        if !ok {
            clear_errors();
            return None;
        }
        let mut out = vec![0u8; len];
        // SAFETY: see above.
        let ok = unsafe {
            lc::EVP_PKEY_sign(
                ctx.0.as_ptr(),
                out.as_mut_ptr(),
                &mut len,
                mu.as_ptr(),
                mu.len(),
            ) == 1
        };
        if !ok || len > out.len() {
            clear_errors();
            return None;
        }
        out.truncate(len);
        Some(out)
    }

    /// True if `signature` is this key's ML-DSA signature of μ.
    fn verify(&self, mu: &[u8], signature: &[u8]) -> bool {
        let Some(ctx) = PkeyCtx::new(self) else {
            return false;
        };
        // SAFETY: FFI calls on the live context we own; EVP_PKEY_verify
        // only reads `signature.len()` bytes of `signature` and
        // `mu.len()` bytes of `mu` (a slice pointer is never null, even
        // for an empty slice, and AWS-LC refuses a wrong length before it
        // reads).
        let ok = unsafe {
            let c = ctx.0.as_ptr();
            lc::EVP_PKEY_verify_init(c) == 1
                && lc::EVP_PKEY_verify(
                    c,
                    signature.as_ptr(),
                    signature.len(),
                    mu.as_ptr(),
                    mu.len(),
                ) == 1
        };
        if !ok {
            clear_errors();
        }
        ok
    }
}

impl Drop for MuKey {
    fn drop(&mut self) {
        // SAFETY: FFI release of the one reference we own, once. When it is
        // the last, PQDSA_KEY_free OPENSSL_free-s the seed, private and
        // public key, and OPENSSL_free cleanses each allocation first.
        unsafe { lc::EVP_PKEY_free(self.0.as_ptr()) }
    }
}

/// An `EVP_PKEY_CTX` for one operation on a [`MuKey`].
struct PkeyCtx(NonNull<lc::EVP_PKEY_CTX>);

impl PkeyCtx {
    fn new(key: &MuKey) -> Option<Self> {
        // SAFETY: FFI call on the live key; the context takes its own
        // reference on it (released by EVP_PKEY_CTX_free), so it may
        // outlive nothing it points to. A null result is handled.
        NonNull::new(unsafe { lc::EVP_PKEY_CTX_new(key.0.as_ptr(), ptr::null_mut()) }).map(PkeyCtx)
    }
}

impl Drop for PkeyCtx {
    fn drop(&mut self) {
        // SAFETY: FFI free of the context we own, once.
        unsafe { lc::EVP_PKEY_CTX_free(self.0.as_ptr()) }
    }
}

/// Drops the reasons AWS-LC queued for a failed call (a refused key, a
/// wrong signature) so they do not linger on this thread's error queue.
fn clear_errors() {
    // SAFETY: FFI call without arguments on the thread's own queue.
    unsafe { lc::ERR_clear_error() }
}
