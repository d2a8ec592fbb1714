//! AWS KMS names for key specs, key usages and algorithms, and which of them
//! go together (what CreateKey accepts and DescribeKey/GetPublicKey report).

use std::fmt;
use std::str::FromStr;

use super::AsymError;

/// Defines a fieldless enum whose values parse from and display as the AWS
/// strings, with the AWS request field name used in validation messages.
macro_rules! aws_enum {
    (
        $(#[$meta:meta])*
        $name:ident, field = $field:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in AWS documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The AWS request field this enum is sent in (lowerCamel, as in
            /// AWS validation messages).
            pub const FIELD: &'static str = $field;

            /// The AWS string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = AsymError;

            fn from_str(s: &str) -> Result<Self, AsymError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(AsymError::InvalidValue {
                        field: $field,
                        value: s.to_string(),
                        allowed: Self::ALL.iter().map(|v| v.as_str()).collect(),
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// `[A, B, C]`, the way AWS lists allowed values in its messages.
pub(crate) fn join<T: fmt::Display>(values: &[T]) -> String {
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

aws_enum! {
    /// The type of key material of a KMS key (`KeySpec`).
    KeySpec, field = "keySpec" {
        Rsa2048 => "RSA_2048",
        Rsa3072 => "RSA_3072",
        Rsa4096 => "RSA_4096",
        EccNistP256 => "ECC_NIST_P256",
        EccNistP384 => "ECC_NIST_P384",
        EccNistP521 => "ECC_NIST_P521",
        EccSecgP256k1 => "ECC_SECG_P256K1",
        EccNistEdwards25519 => "ECC_NIST_EDWARDS25519",
        /// ML-DSA-44 (FIPS 204, NIST security category 2).
        MlDsa44 => "ML_DSA_44",
        /// ML-DSA-65 (FIPS 204, NIST security category 3).
        MlDsa65 => "ML_DSA_65",
        /// ML-DSA-87 (FIPS 204, NIST security category 5).
        MlDsa87 => "ML_DSA_87",
        Hmac224 => "HMAC_224",
        Hmac256 => "HMAC_256",
        Hmac384 => "HMAC_384",
        Hmac512 => "HMAC_512",
        SymmetricDefault => "SYMMETRIC_DEFAULT",
    }
}

aws_enum! {
    /// Where a key's material comes from (`OriginType`).
    Origin, field = "origin" {
        AwsKms => "AWS_KMS",
        External => "EXTERNAL",
        AwsCloudhsm => "AWS_CLOUDHSM",
        ExternalKeyStore => "EXTERNAL_KEY_STORE",
    }
}

aws_enum! {
    /// Who manages a key (`KeyManagerType`).
    KeyManager, field = "keyManager" {
        Aws => "AWS",
        Customer => "CUSTOMER",
    }
}

aws_enum! {
    /// The AWS KMS key states keyvol's keys can be in (`KeyState`).
    KeyState, field = "keyState" {
        Enabled => "Enabled",
        Disabled => "Disabled",
        PendingDeletion => "PendingDeletion",
        PendingImport => "PendingImport",
        PendingReplicaDeletion => "PendingReplicaDeletion",
    }
}

aws_enum! {
    /// What a KMS key may be used for (`KeyUsage`).
    KeyUsage, field = "keyUsage" {
        EncryptDecrypt => "ENCRYPT_DECRYPT",
        SignVerify => "SIGN_VERIFY",
        GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        KeyAgreement => "KEY_AGREEMENT",
    }
}

aws_enum! {
    /// Sign/Verify algorithms (`SigningAlgorithmSpec`).
    SigningAlgorithmSpec, field = "signingAlgorithm" {
        RsassaPssSha256 => "RSASSA_PSS_SHA_256",
        RsassaPssSha384 => "RSASSA_PSS_SHA_384",
        RsassaPssSha512 => "RSASSA_PSS_SHA_512",
        RsassaPkcs1V15Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
        RsassaPkcs1V15Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
        RsassaPkcs1V15Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
        EcdsaSha256 => "ECDSA_SHA_256",
        EcdsaSha384 => "ECDSA_SHA_384",
        EcdsaSha512 => "ECDSA_SHA_512",
        /// Pure Ed25519 over the raw message (RFC 8032); RAW messages only.
        Ed25519Sha512 => "ED25519_SHA_512",
        /// ML-DSA (FIPS 204) of an ML_DSA_* key: pure ML-DSA with an empty
        /// context over a RAW message, or the signature of an EXTERNAL_MU
        /// message representative.
        MlDsaShake256 => "ML_DSA_SHAKE_256",
    }
}

aws_enum! {
    /// Encrypt/Decrypt algorithms (`EncryptionAlgorithmSpec`).
    EncryptionAlgorithmSpec, field = "encryptionAlgorithm" {
        SymmetricDefault => "SYMMETRIC_DEFAULT",
        RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
        RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
    }
}

aws_enum! {
    /// GenerateMac/VerifyMac algorithms (`MacAlgorithmSpec`).
    MacAlgorithmSpec, field = "macAlgorithm" {
        HmacSha224 => "HMAC_SHA_224",
        HmacSha256 => "HMAC_SHA_256",
        HmacSha384 => "HMAC_SHA_384",
        HmacSha512 => "HMAC_SHA_512",
    }
}

aws_enum! {
    /// Whether Sign/Verify get the message itself, its digest, or (ML-DSA
    /// only) its 64-byte message representative μ (`MessageType`).
    MessageType, field = "messageType" {
        Raw => "RAW",
        Digest => "DIGEST",
        /// μ = SHAKE256(SHAKE256(pk, 64) || 0x00 || 0x00 || M, 64), FIPS 204
        /// section 6.2 with an empty context, computed by the caller.
        ExternalMu => "EXTERNAL_MU",
    }
}

aws_enum! {
    /// DeriveSharedSecret algorithms (`KeyAgreementAlgorithmSpec`).
    KeyAgreementAlgorithmSpec, field = "keyAgreementAlgorithm" {
        Ecdh => "ECDH",
    }
}

aws_enum! {
    /// GenerateDataKeyPair key pair types (`DataKeyPairSpec`).
    DataKeyPairSpec, field = "keyPairSpec" {
        Rsa2048 => "RSA_2048",
        Rsa3072 => "RSA_3072",
        Rsa4096 => "RSA_4096",
        EccNistP256 => "ECC_NIST_P256",
        EccNistP384 => "ECC_NIST_P384",
        EccNistP521 => "ECC_NIST_P521",
        EccSecgP256k1 => "ECC_SECG_P256K1",
    }
}

aws_enum! {
    /// GetParametersForImport wrapping key types (`WrappingKeySpec`).
    WrappingKeySpec, field = "wrappingKeySpec" {
        Rsa2048 => "RSA_2048",
        Rsa3072 => "RSA_3072",
        Rsa4096 => "RSA_4096",
    }
}

aws_enum! {
    /// GetParametersForImport wrapping algorithms (`AlgorithmSpec`).
    AlgorithmSpec, field = "wrappingAlgorithm" {
        RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
        RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        RsaAesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
        RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
    }
}

/// A hash function used by a signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Digest length in bytes (what a DIGEST message must be).
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            HashAlg::Sha256 => sha2::Sha256::digest(message).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(message).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(message).to_vec(),
        }
    }
}

/// The algorithm lists DescribeKey and GetPublicKey report for a key: only
/// the list that matches the key usage is non-empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyAlgorithms {
    pub encryption: Vec<EncryptionAlgorithmSpec>,
    pub signing: Vec<SigningAlgorithmSpec>,
    pub mac: Vec<MacAlgorithmSpec>,
    pub key_agreement: Vec<KeyAgreementAlgorithmSpec>,
}

impl KeySpec {
    /// True for RSA, ECC and ML-DSA specs (keys with a public half).
    pub fn is_asymmetric(self) -> bool {
        self.rsa_bits().is_some() || self.is_ecc() || self.is_ml_dsa()
    }

    /// The value of the deprecated `CustomerMasterKeySpec` field for keys of
    /// this spec: the KeySpec itself, except for the specs added after that
    /// field was deprecated (ECC_NIST_EDWARDS25519, ML_DSA_*), which its
    /// enum in the AWS model does not have; responses leave it out for them.
    pub fn customer_master_key_spec(self) -> Option<&'static str> {
        match self {
            KeySpec::EccNistEdwards25519 => None,
            s if s.is_ml_dsa() => None,
            s => Some(s.as_str()),
        }
    }

    /// True for the RSA specs.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096)
    }

    /// True for the ML-DSA (FIPS 204) specs.
    pub fn is_ml_dsa(self) -> bool {
        matches!(self, KeySpec::MlDsa44 | KeySpec::MlDsa65 | KeySpec::MlDsa87)
    }

    pub fn is_ecc(self) -> bool {
        matches!(
            self,
            KeySpec::EccNistP256
                | KeySpec::EccNistP384
                | KeySpec::EccNistP521
                | KeySpec::EccSecgP256k1
                | KeySpec::EccNistEdwards25519
        )
    }

    pub fn is_hmac(self) -> bool {
        self.mac_algorithm().is_some()
    }

    /// RSA modulus size in bits, for RSA specs.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeySpec::Rsa2048 => Some(2048),
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The one MAC algorithm of an HMAC spec.
    pub fn mac_algorithm(self) -> Option<MacAlgorithmSpec> {
        match self {
            KeySpec::Hmac224 => Some(MacAlgorithmSpec::HmacSha224),
            KeySpec::Hmac256 => Some(MacAlgorithmSpec::HmacSha256),
            KeySpec::Hmac384 => Some(MacAlgorithmSpec::HmacSha384),
            KeySpec::Hmac512 => Some(MacAlgorithmSpec::HmacSha512),
            _ => None,
        }
    }

    /// Length in bytes of the key KMS generates for an HMAC spec (the
    /// spec's bit count / 8).
    pub fn hmac_key_len(self) -> Option<usize> {
        match self {
            KeySpec::Hmac224 => Some(28),
            KeySpec::Hmac256 => Some(32),
            KeySpec::Hmac384 => Some(48),
            KeySpec::Hmac512 => Some(64),
            _ => None,
        }
    }

    /// The HMAC key lengths in bytes an HMAC spec accepts: from the
    /// generated length up to the hash's block size, as ImportKeyMaterial
    /// allows (HMAC_224: 28..=64, HMAC_256: 32..=64, HMAC_384: 48..=128,
    /// HMAC_512: 64..=128).
    pub fn hmac_key_len_range(self) -> Option<std::ops::RangeInclusive<usize>> {
        match self {
            KeySpec::Hmac224 => Some(28..=64),
            KeySpec::Hmac256 => Some(32..=64),
            KeySpec::Hmac384 => Some(48..=128),
            KeySpec::Hmac512 => Some(64..=128),
            _ => None,
        }
    }

    /// The key usages CreateKey accepts with this spec.
    pub fn key_usages(self) -> &'static [KeyUsage] {
        use KeyUsage::*;
        match self {
            KeySpec::SymmetricDefault => &[EncryptDecrypt],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &[EncryptDecrypt, SignVerify],
            KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521 => {
                &[SignVerify, KeyAgreement]
            }
            KeySpec::EccSecgP256k1
            | KeySpec::EccNistEdwards25519
            | KeySpec::MlDsa44
            | KeySpec::MlDsa65
            | KeySpec::MlDsa87 => &[SignVerify],
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
                &[GenerateVerifyMac]
            }
        }
    }

    /// Every signing algorithm this key material can do (used when the key
    /// usage is SIGN_VERIFY).
    pub fn signing_algorithms(self) -> &'static [SigningAlgorithmSpec] {
        use SigningAlgorithmSpec::*;
        match self {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &[
                RsassaPkcs1V15Sha256,
                RsassaPkcs1V15Sha384,
                RsassaPkcs1V15Sha512,
                RsassaPssSha256,
                RsassaPssSha384,
                RsassaPssSha512,
            ],
            KeySpec::EccNistP256 | KeySpec::EccSecgP256k1 => &[EcdsaSha256],
            KeySpec::EccNistP384 => &[EcdsaSha384],
            KeySpec::EccNistP521 => &[EcdsaSha512],
            KeySpec::EccNistEdwards25519 => &[Ed25519Sha512],
            KeySpec::MlDsa44 | KeySpec::MlDsa65 | KeySpec::MlDsa87 => &[MlDsaShake256],
            _ => &[],
        }
    }

    /// Every encryption algorithm this key material can do (used when the
    /// key usage is ENCRYPT_DECRYPT).
    pub fn encryption_algorithms(self) -> &'static [EncryptionAlgorithmSpec] {
        use EncryptionAlgorithmSpec::*;
        match self {
            KeySpec::SymmetricDefault => &[SymmetricDefault],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                &[RsaesOaepSha1, RsaesOaepSha256]
            }
            _ => &[],
        }
    }

    /// Key agreement algorithms (used when the key usage is KEY_AGREEMENT).
    pub fn key_agreement_algorithms(self) -> &'static [KeyAgreementAlgorithmSpec] {
        match self {
            KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521 => {
                &[KeyAgreementAlgorithmSpec::Ecdh]
            }
            _ => &[],
        }
    }

    /// Checks a CreateKey KeySpec/KeyUsage pair. A missing usage defaults to
    /// ENCRYPT_DECRYPT, as in AWS, so an ECC or HMAC spec needs an explicit
    /// usage.
    pub fn validate_key_usage(self, usage: Option<KeyUsage>) -> Result<KeyUsage, AsymError> {
        let usage = usage.unwrap_or(KeyUsage::EncryptDecrypt);
        if self.key_usages().contains(&usage) {
            Ok(usage)
        } else {
            Err(AsymError::IncompatibleKeyUsage { spec: self, usage })
        }
    }

    /// The algorithm lists DescribeKey/GetPublicKey report for a key of this
    /// spec and usage (empty lists when the pair is invalid).
    pub fn algorithms(self, usage: KeyUsage) -> KeyAlgorithms {
        let mut out = KeyAlgorithms::default();
        if !self.key_usages().contains(&usage) {
            return out;
        }
        match usage {
            KeyUsage::EncryptDecrypt => out.encryption = self.encryption_algorithms().to_vec(),
            KeyUsage::SignVerify => out.signing = self.signing_algorithms().to_vec(),
            KeyUsage::GenerateVerifyMac => out.mac = self.mac_algorithm().into_iter().collect(),
            KeyUsage::KeyAgreement => out.key_agreement = self.key_agreement_algorithms().to_vec(),
        }
        out
    }
}

impl SigningAlgorithmSpec {
    /// The hash applied to RAW messages; `None` for pure Ed25519 and
    /// ML-DSA, which sign the message itself (their hashing is part of the
    /// signature scheme).
    pub fn hash(self) -> Option<HashAlg> {
        use SigningAlgorithmSpec::*;
        match self {
            RsassaPssSha256 | RsassaPkcs1V15Sha256 | EcdsaSha256 => Some(HashAlg::Sha256),
            RsassaPssSha384 | RsassaPkcs1V15Sha384 | EcdsaSha384 => Some(HashAlg::Sha384),
            RsassaPssSha512 | RsassaPkcs1V15Sha512 | EcdsaSha512 => Some(HashAlg::Sha512),
            Ed25519Sha512 | MlDsaShake256 => None,
        }
    }

    /// The MessageType values Sign and Verify accept with this algorithm:
    /// RAW and DIGEST for the hash-then-sign algorithms, RAW only for pure
    /// Ed25519, RAW and EXTERNAL_MU for ML-DSA.
    pub fn message_types(self) -> &'static [MessageType] {
        match self {
            SigningAlgorithmSpec::Ed25519Sha512 => &[MessageType::Raw],
            SigningAlgorithmSpec::MlDsaShake256 => &[MessageType::Raw, MessageType::ExternalMu],
            _ => &[MessageType::Raw, MessageType::Digest],
        }
    }
}

impl EncryptionAlgorithmSpec {
    /// OAEP hash output length in bytes, for the RSA algorithms.
    fn oaep_hash_len(self) -> Option<usize> {
        match self {
            EncryptionAlgorithmSpec::RsaesOaepSha1 => Some(20),
            EncryptionAlgorithmSpec::RsaesOaepSha256 => Some(32),
            EncryptionAlgorithmSpec::SymmetricDefault => None,
        }
    }

    /// The largest plaintext AWS accepts for this algorithm with an RSA key
    /// of `spec` (RFC 8017: modulus bytes - 2 * hash length - 2), e.g. 214
    /// (SHA-1) and 190 (SHA-256) bytes for RSA_2048.
    pub fn max_plaintext_len(self, spec: KeySpec) -> Option<usize> {
        let k = spec.rsa_bits()? / 8;
        let h = self.oaep_hash_len()?;
        Some(k - 2 * h - 2)
    }
}

impl From<DataKeyPairSpec> for KeySpec {
    fn from(spec: DataKeyPairSpec) -> KeySpec {
        match spec {
            DataKeyPairSpec::Rsa2048 => KeySpec::Rsa2048,
            DataKeyPairSpec::Rsa3072 => KeySpec::Rsa3072,
            DataKeyPairSpec::Rsa4096 => KeySpec::Rsa4096,
            DataKeyPairSpec::EccNistP256 => KeySpec::EccNistP256,
            DataKeyPairSpec::EccNistP384 => KeySpec::EccNistP384,
            DataKeyPairSpec::EccNistP521 => KeySpec::EccNistP521,
            DataKeyPairSpec::EccSecgP256k1 => KeySpec::EccSecgP256k1,
        }
    }
}

impl From<WrappingKeySpec> for KeySpec {
    fn from(spec: WrappingKeySpec) -> KeySpec {
        match spec {
            WrappingKeySpec::Rsa2048 => KeySpec::Rsa2048,
            WrappingKeySpec::Rsa3072 => KeySpec::Rsa3072,
            WrappingKeySpec::Rsa4096 => KeySpec::Rsa4096,
        }
    }
}

impl AlgorithmSpec {
    /// The RSA-OAEP algorithm used for the RSA part of the wrapping.
    pub fn oaep(self) -> EncryptionAlgorithmSpec {
        match self {
            AlgorithmSpec::RsaesOaepSha1 | AlgorithmSpec::RsaAesKeyWrapSha1 => {
                EncryptionAlgorithmSpec::RsaesOaepSha1
            }
            AlgorithmSpec::RsaesOaepSha256 | AlgorithmSpec::RsaAesKeyWrapSha256 => {
                EncryptionAlgorithmSpec::RsaesOaepSha256
            }
        }
    }

    /// True when the key material is AES-KWP-wrapped under an ephemeral
    /// AES-256 key that is itself RSA-OAEP-wrapped.
    pub fn is_aes_key_wrap(self) -> bool {
        matches!(
            self,
            AlgorithmSpec::RsaAesKeyWrapSha1 | AlgorithmSpec::RsaAesKeyWrapSha256
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_aws_string() {
        for s in KeySpec::ALL {
            assert_eq!(s.as_str().parse::<KeySpec>().unwrap(), *s);
        }
        for s in SigningAlgorithmSpec::ALL {
            assert_eq!(s.to_string().parse::<SigningAlgorithmSpec>().unwrap(), *s);
        }
        for s in AlgorithmSpec::ALL {
            assert_eq!(s.to_string().parse::<AlgorithmSpec>().unwrap(), *s);
        }
        assert_eq!(KeyUsage::KeyAgreement.to_string(), "KEY_AGREEMENT");
        assert_eq!(MessageType::Digest.to_string(), "DIGEST");
    }

    #[test]
    fn unknown_value_names_field_and_allowed_values() {
        let err = "RSA_1024".parse::<KeySpec>().unwrap_err().to_string();
        assert!(err.contains("'RSA_1024' at 'keySpec'"), "{err}");
        assert!(err.contains("[RSA_2048, RSA_3072"), "{err}");
        // Case matters, as in AWS.
        assert!("rsa_2048".parse::<KeySpec>().is_err());
    }

    #[test]
    fn serde_uses_aws_strings() {
        let json = serde_json::to_string(&SigningAlgorithmSpec::EcdsaSha384).unwrap();
        assert_eq!(json, "\"ECDSA_SHA_384\"");
        let back: DataKeyPairSpec = serde_json::from_str("\"ECC_SECG_P256K1\"").unwrap();
        assert_eq!(back, DataKeyPairSpec::EccSecgP256k1);
        assert!(serde_json::from_str::<MessageType>("\"HASH\"").is_err());
    }

    #[test]
    fn key_usage_validation_follows_aws() {
        use KeyUsage::*;
        assert_eq!(
            KeySpec::Rsa2048.validate_key_usage(None).unwrap(),
            EncryptDecrypt
        );
        assert!(KeySpec::Rsa3072
            .validate_key_usage(Some(SignVerify))
            .is_ok());
        assert!(KeySpec::Rsa2048
            .validate_key_usage(Some(KeyAgreement))
            .is_err());
        assert!(KeySpec::EccNistP384
            .validate_key_usage(Some(KeyAgreement))
            .is_ok());
        assert!(KeySpec::EccSecgP256k1
            .validate_key_usage(Some(KeyAgreement))
            .is_err());
        let err = KeySpec::EccNistP256.validate_key_usage(None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec ECC_NIST_P256; \
             valid KeyUsage values for ECC_NIST_P256 are [SIGN_VERIFY, KEY_AGREEMENT]"
        );
        assert!(KeySpec::Hmac384
            .validate_key_usage(Some(GenerateVerifyMac))
            .is_ok());
        assert!(KeySpec::Hmac384
            .validate_key_usage(Some(SignVerify))
            .is_err());
        assert!(KeySpec::SymmetricDefault
            .validate_key_usage(Some(SignVerify))
            .is_err());
    }

    #[test]
    fn algorithm_lists_match_describe_key() {
        let rsa_sign = KeySpec::Rsa2048.algorithms(KeyUsage::SignVerify);
        assert_eq!(rsa_sign.signing.len(), 6);
        assert!(rsa_sign.encryption.is_empty());
        let rsa_enc = KeySpec::Rsa4096.algorithms(KeyUsage::EncryptDecrypt);
        assert_eq!(
            rsa_enc.encryption,
            vec![
                EncryptionAlgorithmSpec::RsaesOaepSha1,
                EncryptionAlgorithmSpec::RsaesOaepSha256
            ]
        );
        assert_eq!(
            KeySpec::EccNistP521
                .algorithms(KeyUsage::SignVerify)
                .signing,
            vec![SigningAlgorithmSpec::EcdsaSha512]
        );
        assert_eq!(
            KeySpec::EccNistP256
                .algorithms(KeyUsage::KeyAgreement)
                .key_agreement,
            vec![KeyAgreementAlgorithmSpec::Ecdh]
        );
        assert_eq!(
            KeySpec::Hmac224.algorithms(KeyUsage::GenerateVerifyMac).mac,
            vec![MacAlgorithmSpec::HmacSha224]
        );
        assert_eq!(
            KeySpec::Hmac224.algorithms(KeyUsage::SignVerify),
            KeyAlgorithms::default()
        );
    }

    #[test]
    fn ml_dsa_specs_sign_only_with_ml_dsa_shake_256() {
        for spec in [KeySpec::MlDsa44, KeySpec::MlDsa65, KeySpec::MlDsa87] {
            assert!(spec.is_ml_dsa() && spec.is_asymmetric() && !spec.is_ecc());
            assert_eq!(spec.key_usages(), &[KeyUsage::SignVerify]);
            assert!(spec.validate_key_usage(Some(KeyUsage::SignVerify)).is_ok());
            for usage in [
                None,
                Some(KeyUsage::EncryptDecrypt),
                Some(KeyUsage::KeyAgreement),
                Some(KeyUsage::GenerateVerifyMac),
            ] {
                assert!(matches!(
                    spec.validate_key_usage(usage),
                    Err(AsymError::IncompatibleKeyUsage { .. })
                ));
            }
            assert_eq!(
                spec.algorithms(KeyUsage::SignVerify).signing,
                vec![SigningAlgorithmSpec::MlDsaShake256]
            );
            assert_eq!(spec.customer_master_key_spec(), None);
        }
        assert_eq!(
            KeySpec::EccNistP256.customer_master_key_spec(),
            Some("ECC_NIST_P256")
        );
        assert_eq!("ML_DSA_65".parse::<KeySpec>().unwrap(), KeySpec::MlDsa65);
        assert_eq!(
            "EXTERNAL_MU".parse::<MessageType>().unwrap(),
            MessageType::ExternalMu
        );
        assert_eq!(SigningAlgorithmSpec::MlDsaShake256.hash(), None);
        assert!(!SigningAlgorithmSpec::EcdsaSha256
            .message_types()
            .contains(&MessageType::ExternalMu));
    }

    #[test]
    fn oaep_plaintext_limits_are_the_aws_figures() {
        use EncryptionAlgorithmSpec::*;
        let cases = [
            (KeySpec::Rsa2048, 214, 190),
            (KeySpec::Rsa3072, 342, 318),
            (KeySpec::Rsa4096, 470, 446),
        ];
        for (spec, sha1, sha256) in cases {
            assert_eq!(RsaesOaepSha1.max_plaintext_len(spec), Some(sha1));
            assert_eq!(RsaesOaepSha256.max_plaintext_len(spec), Some(sha256));
        }
        assert_eq!(SymmetricDefault.max_plaintext_len(KeySpec::Rsa2048), None);
        assert_eq!(RsaesOaepSha1.max_plaintext_len(KeySpec::EccNistP256), None);
    }
}
