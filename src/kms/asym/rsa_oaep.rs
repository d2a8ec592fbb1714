//! RSA-OAEP Encrypt/Decrypt with RSA KMS keys: RSAES_OAEP_SHA_1 and
//! RSAES_OAEP_SHA_256, MGF1 over the same hash, empty label (as AWS KMS
//! and OpenSSL's `rsa_oaep_md`/`rsa_mgf1_md` options).

use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};

use super::key::Parsed;
use super::{
    incompatible_algorithm, AsymError, EncryptionAlgorithmSpec, KeySpec, PrivateKeyMaterial,
};
use crate::secret::SecretBytes;

/// Encrypts `plaintext` to the public half of an RSA key (AWS Encrypt with
/// an asymmetric key). The ciphertext is as long as the modulus.
pub fn encrypt(
    key: &PrivateKeyMaterial,
    algorithm: EncryptionAlgorithmSpec,
    plaintext: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let rsa = rsa_key(key, algorithm)?;
    encrypt_to(key.spec(), rsa.as_ref(), algorithm, plaintext)
}

/// Decrypts an RSA-OAEP `ciphertext` (AWS Decrypt with an asymmetric key).
/// Every failure is the same opaque [`AsymError::InvalidCiphertext`].
pub fn decrypt(
    key: &PrivateKeyMaterial,
    algorithm: EncryptionAlgorithmSpec,
    ciphertext: &[u8],
) -> Result<SecretBytes, AsymError> {
    let rsa = rsa_key(key, algorithm)?;
    decrypt_with(rsa, algorithm, ciphertext)
}

/// RSA-OAEP encryption to `public`, with the AWS plaintext limit of the
/// key `spec`. Shared with the import wrapping.
pub(crate) fn encrypt_to(
    spec: KeySpec,
    public: &RsaPublicKey,
    algorithm: EncryptionAlgorithmSpec,
    plaintext: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let max = algorithm
        .max_plaintext_len(spec)
        .ok_or_else(|| incompatible(spec, algorithm))?;
    if plaintext.is_empty() || plaintext.len() > max {
        return Err(AsymError::PlaintextTooLong {
            spec,
            algorithm,
            max,
            len: plaintext.len(),
        });
    }
    public
        .encrypt(&mut OsRng, oaep(algorithm), plaintext)
        .map_err(|e| AsymError::Internal(format!("{algorithm} encryption: {e}")))
}

/// RSA-OAEP decryption, blinded, with one opaque error for every failure
/// (wrong length, bad padding, wrong key) so that it is no padding oracle.
pub(crate) fn decrypt_with(
    key: &RsaPrivateKey,
    algorithm: EncryptionAlgorithmSpec,
    ciphertext: &[u8],
) -> Result<SecretBytes, AsymError> {
    if ciphertext.len() != key.size() {
        return Err(AsymError::InvalidCiphertext);
    }
    key.decrypt_blinded(&mut OsRng, oaep(algorithm), ciphertext)
        .map(SecretBytes::new)
        .map_err(|_| AsymError::InvalidCiphertext)
}

fn oaep(algorithm: EncryptionAlgorithmSpec) -> Oaep {
    match algorithm {
        EncryptionAlgorithmSpec::RsaesOaepSha1 => Oaep::new::<sha1::Sha1>(),
        // SYMMETRIC_DEFAULT never reaches here: max_plaintext_len and
        // rsa_key refuse it first.
        _ => Oaep::new::<sha2::Sha256>(),
    }
}

fn rsa_key(
    key: &PrivateKeyMaterial,
    algorithm: EncryptionAlgorithmSpec,
) -> Result<&RsaPrivateKey, AsymError> {
    match &key.parsed {
        Parsed::Rsa(k) if algorithm != EncryptionAlgorithmSpec::SymmetricDefault => Ok(k),
        _ => Err(incompatible(key.spec(), algorithm)),
    }
}

fn incompatible(spec: KeySpec, algorithm: EncryptionAlgorithmSpec) -> AsymError {
    incompatible_algorithm(spec, "encryption", algorithm, spec.encryption_algorithms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_rsa_keys_and_symmetric_default_are_refused() {
        let ec = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let err = encrypt(&ec, EncryptionAlgorithmSpec::RsaesOaepSha256, b"x").unwrap_err();
        assert!(matches!(err, AsymError::IncompatibleAlgorithm { .. }));
        assert!(
            err.to_string().contains("cannot be used for encryption"),
            "{err}"
        );
        assert!(decrypt(&ec, EncryptionAlgorithmSpec::RsaesOaepSha1, &[0; 64]).is_err());
    }
}
