//! Asymmetric, HMAC and import cryptography of the KMS, over bytes only:
//! key generation and PKCS#8/SPKI encoding, Sign/Verify (ML-DSA
//! included), RSA-OAEP Encrypt/Decrypt, GenerateMac/VerifyMac, ECDH, data
//! key pairs and the BYOK unwrapping of ImportKeyMaterial. Nothing here
//! touches storage.
//!
//! The KMS operations call these functions with a [`PrivateKeyMaterial`]
//! loaded from the (sealed) key store; every error converts into the AWS
//! error the operation must return (`KmsError::from(AsymError)`).

mod ecdh;
mod import;
mod key;
mod mac;
mod rsa_oaep;
mod sign;
mod signer;
mod spec;

pub use ecdh::derive_shared_secret;
pub use import::{generate_wrapping_key, unwrap_import, validate_import_material, wrap_for_import};
pub use key::{generate_data_key_pair, DataKeyPair, PrivateKeyMaterial};
pub use mac::{generate_mac, verify_mac, MAX_MAC_MESSAGE_LEN};
pub use rsa_oaep::{decrypt, encrypt};
pub use sign::{sign, verify, EXTERNAL_MU_LEN, MAX_RAW_MESSAGE_LEN};
pub use spec::{
    AlgorithmSpec, DataKeyPairSpec, EncryptionAlgorithmSpec, HashAlg, KeyAgreementAlgorithmSpec,
    KeyAlgorithms, KeyManager, KeySpec, KeyState, KeyUsage, MacAlgorithmSpec, MessageType, Origin,
    SigningAlgorithmSpec, WrappingKeySpec,
};

use crate::kms::error::{ErrorCode, KmsError};
use crate::validate::{Constraint, Violation};

/// An error of an asymmetric/HMAC/import primitive. Messages name what to
/// fix and never carry key bytes or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsymError {
    /// A string is not one of an AWS enum's values.
    #[error("{}", enum_violation(.field, .value, .allowed))]
    InvalidValue {
        field: &'static str,
        value: String,
        allowed: Vec<&'static str>,
    },

    /// CreateKey with a KeyUsage the KeySpec does not support.
    #[error(
        "KeyUsage {usage} is not compatible with KeySpec {spec}; valid KeyUsage values \
         for {spec} are {}", spec::join(spec.key_usages())
    )]
    IncompatibleKeyUsage { spec: KeySpec, usage: KeyUsage },

    /// The operation does not apply to keys of this spec (e.g. a public key
    /// of an HMAC key, or asymmetric generation of SYMMETRIC_DEFAULT).
    #[error("{operation} is not supported for KMS keys with KeySpec {spec}")]
    UnsupportedKeySpec {
        spec: KeySpec,
        operation: &'static str,
    },

    /// An algorithm the key's spec cannot perform.
    #[error(
        "{algorithm} is not a valid {kind} algorithm for a KMS key with KeySpec {spec}; \
         {advice}"
    )]
    IncompatibleAlgorithm {
        spec: KeySpec,
        kind: &'static str,
        algorithm: String,
        /// "use one of [...]", or that the spec does no such operation.
        advice: String,
    },

    /// A message (or other input) outside its length constraint.
    #[error("{}", length_violation(.field, *.len, *.min, *.max))]
    InputLength {
        field: &'static str,
        len: usize,
        min: usize,
        max: usize,
    },

    /// A DIGEST message whose length is not the algorithm's hash length.
    #[error(
        "Digest is invalid length for algorithm {algorithm}: a DIGEST message must be \
         exactly {expected} bytes, got {actual}"
    )]
    DigestLength {
        algorithm: SigningAlgorithmSpec,
        expected: usize,
        actual: usize,
    },

    /// An EXTERNAL_MU message that is not a 64-byte μ.
    #[error(
        "External mu is invalid length for algorithm {algorithm}: an EXTERNAL_MU message \
         must be exactly {expected} bytes (the FIPS 204 message representative), got {actual}"
    )]
    MuLength {
        algorithm: SigningAlgorithmSpec,
        expected: usize,
        actual: usize,
    },

    /// A MessageType the signing algorithm does not accept.
    #[error(
        "MessageType {message_type} is not supported with {algorithm}; use one of {}",
        spec::join(algorithm.message_types())
    )]
    MessageTypeNotSupported {
        algorithm: SigningAlgorithmSpec,
        message_type: MessageType,
    },

    /// An RSA-OAEP plaintext above the key's limit.
    #[error(
        "Plaintext is {len} bytes, but {algorithm} with a {spec} key encrypts at most \
         {max} bytes; encrypt a data key instead (envelope encryption)"
    )]
    PlaintextTooLong {
        spec: KeySpec,
        algorithm: EncryptionAlgorithmSpec,
        max: usize,
        len: usize,
    },

    /// Decryption or unwrapping failed. Deliberately says nothing about why.
    #[error("the ciphertext is invalid for this key and algorithm")]
    InvalidCiphertext,

    /// A peer public key that cannot be used (not DER SPKI, wrong curve,
    /// not a point on the curve).
    #[error("invalid PublicKey: {0}")]
    InvalidPublicKey(String),

    /// Key material that does not parse or does not match the key spec.
    #[error("the key material is not valid for KeySpec {spec}: {reason}")]
    InvalidKeyMaterial { spec: KeySpec, reason: String },

    /// A failure of the service itself (randomness, encoding).
    #[error("internal cryptographic failure: {0}")]
    Internal(String),
}

impl From<AsymError> for KmsError {
    fn from(e: AsymError) -> KmsError {
        let code = match &e {
            AsymError::InvalidValue { .. }
            | AsymError::IncompatibleKeyUsage { .. }
            | AsymError::InputLength { .. }
            | AsymError::DigestLength { .. }
            | AsymError::MuLength { .. }
            | AsymError::MessageTypeNotSupported { .. }
            | AsymError::PlaintextTooLong { .. }
            | AsymError::InvalidPublicKey(_) => ErrorCode::ValidationException,
            AsymError::UnsupportedKeySpec { .. } => ErrorCode::UnsupportedOperationException,
            AsymError::IncompatibleAlgorithm { .. } => ErrorCode::InvalidKeyUsageException,
            AsymError::InvalidCiphertext => return KmsError::invalid_ciphertext(),
            AsymError::InvalidKeyMaterial { .. } => ErrorCode::IncorrectKeyMaterialException,
            AsymError::Internal(_) => ErrorCode::KMSInternalException,
        };
        KmsError::new(code, e.to_string())
    }
}

/// The error for an `algorithm` of `kind` ("signing", ...) that a key of
/// `spec` cannot perform; `supported` is what it can.
fn incompatible_algorithm<T: std::fmt::Display>(
    spec: KeySpec,
    kind: &'static str,
    algorithm: impl std::fmt::Display,
    supported: &[T],
) -> AsymError {
    let advice = if supported.is_empty() {
        format!("KMS keys with KeySpec {spec} cannot be used for {kind}; use another key")
    } else {
        format!("use one of {}", spec::join(supported))
    };
    AsymError::IncompatibleAlgorithm {
        spec,
        kind,
        algorithm: algorithm.to_string(),
        advice,
    }
}

fn enum_violation(field: &str, value: &str, allowed: &[&str]) -> Violation {
    crate::validate::not_one_of(field, value, allowed)
}

fn length_violation(field: &str, len: usize, min: usize, max: usize) -> Violation {
    Violation::hidden(field, Constraint::LengthBetween(min, max))
        .with_suffix(format!(" bytes (got {len})"))
}

/// Checks `len` against an AWS length constraint on `field`.
fn check_len(field: &'static str, len: usize, min: usize, max: usize) -> Result<(), AsymError> {
    if (min..=max).contains(&len) {
        Ok(())
    } else {
        Err(AsymError::InputLength {
            field,
            len,
            min,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_aws_error_names() {
        let e: KmsError = AsymError::DigestLength {
            algorithm: SigningAlgorithmSpec::EcdsaSha256,
            expected: 32,
            actual: 20,
        }
        .into();
        assert_eq!(e.code, ErrorCode::ValidationException);
        assert!(e
            .message
            .starts_with("Digest is invalid length for algorithm ECDSA_SHA_256"));

        let e: KmsError = "RSA_1024".parse::<KeySpec>().unwrap_err().into();
        assert_eq!(e.code, ErrorCode::ValidationException);
        assert!(
            e.message.starts_with(
                "1 validation error detected: Value 'RSA_1024' at 'keySpec' failed to satisfy \
                 constraint: Member must satisfy enum value set: [RSA_2048, RSA_3072, "
            ),
            "{}",
            e.message
        );
        let e: KmsError = check_len("message", 0, 1, 4096).unwrap_err().into();
        assert_eq!(
            e.message,
            "1 validation error detected: Value at 'message' failed to satisfy constraint: \
             Member must have length between 1 and 4096 bytes (got 0)"
        );

        let e: KmsError = AsymError::InvalidCiphertext.into();
        assert_eq!(e, KmsError::invalid_ciphertext());

        let e: KmsError = incompatible_algorithm(
            KeySpec::EccNistP256,
            "signing",
            SigningAlgorithmSpec::RsassaPssSha256,
            KeySpec::EccNistP256.signing_algorithms(),
        )
        .into();
        assert_eq!(e.code, ErrorCode::InvalidKeyUsageException);
        assert!(
            e.message.contains("use one of [ECDSA_SHA_256]"),
            "{}",
            e.message
        );
    }
}
