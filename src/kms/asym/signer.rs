//! The AWS-LC (aws-lc-rs) form of signing keys: RSA, ECDSA on the NIST
//! curves and Ed25519 Sign/Verify run on AWS-LC's assembly, with the key
//! parsed once when the key material loads (public keys included, one per
//! verification algorithm) so a call does no parsing.
//!
//! Secrecy: the aws-lc-rs key pairs are opaque (no accessor hands out the
//! private key) and hold it in an `EVP_PKEY`, whose big numbers AWS-LC
//! frees with `OPENSSL_free`, which cleanses the memory first; so the key
//! is zeroized when the last [`PrivateKeyMaterial`] clone drops.
//! secp256k1 keys keep the RustCrypto signer (`Parsed::K256`).
//!
//! [`PrivateKeyMaterial`]: super::PrivateKeyMaterial

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, RsaParameters};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, ParsedPublicKey};

use super::{AsymError, HashAlg, KeySpec, SigningAlgorithmSpec};

/// A signing key as AWS-LC objects, or `None` for specs signed elsewhere.
pub(crate) enum Signer {
    Rsa {
        pair: RsaKeyPair,
        /// One parsed public key per RSA signing algorithm, in
        /// [`RSA_VERIFY`] order.
        verifiers: Vec<ParsedPublicKey>,
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
                Ok(Signer::Rsa { pair, verifiers })
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
            (Signer::Ed25519 { verifier, .. }, None) => {
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
