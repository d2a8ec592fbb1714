//! Bring your own key: the RSA wrapping key of GetParametersForImport, the
//! unwrapping of ImportKeyMaterial's EncryptedKeyMaterial, and the checks
//! imported material must pass.
//!
//! Wrapped formats (AWS "Import key material" documentation):
//! - RSAES_OAEP_SHA_1 / RSAES_OAEP_SHA_256: RSA-OAEP (MGF1 with the same
//!   hash, empty label) of the key material; exactly one modulus long.
//! - RSA_AES_KEY_WRAP_SHA_1 / _SHA_256: RSA-OAEP of a fresh 32-byte AES
//!   key (one modulus long), followed by the key material wrapped under
//!   that AES-256 key with AES Key Wrap with Padding (RFC 5649), i.e.
//!   `openssl enc -id-aes256-wrap-pad -iv A65959A6`.

use aes::cipher::generic_array::GenericArray;
use aes_kw::KekAes256;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;

use super::key::Parsed;
use super::rsa_oaep::{decrypt_with, encrypt_to};
use super::{AlgorithmSpec, AsymError, KeySpec, PrivateKeyMaterial, WrappingKeySpec};
use crate::secret::{Key256, SecretBytes};

/// A new RSA key pair to wrap imported key material to (its public half
/// is GetParametersForImport's PublicKey).
pub fn generate_wrapping_key(spec: WrappingKeySpec) -> Result<PrivateKeyMaterial, AsymError> {
    PrivateKeyMaterial::generate(spec.into())
}

/// Recovers the key material from ImportKeyMaterial's EncryptedKeyMaterial.
/// Every failure to unwrap is the opaque [`AsymError::InvalidCiphertext`]
/// (InvalidCiphertextException); check the result with
/// [`validate_import_material`].
pub fn unwrap_import(
    wrapping_private: &PrivateKeyMaterial,
    algorithm: AlgorithmSpec,
    wrapped: &[u8],
) -> Result<SecretBytes, AsymError> {
    let Parsed::Rsa(rsa) = &wrapping_private.parsed else {
        return Err(AsymError::UnsupportedKeySpec {
            spec: wrapping_private.spec(),
            operation: "Unwrapping imported key material",
        });
    };
    if !algorithm.is_aes_key_wrap() {
        return decrypt_with(rsa, algorithm.oaep(), wrapped);
    }
    let k = rsa.size();
    if wrapped.len() <= k {
        return Err(AsymError::InvalidCiphertext);
    }
    let (wrapped_aes_key, wrapped_material) = wrapped.split_at(k);
    let aes_key = decrypt_with(rsa, algorithm.oaep(), wrapped_aes_key)?;
    let aes_key = Key256::from_slice(aes_key.expose()).ok_or(AsymError::InvalidCiphertext)?;
    // Passed by reference so no unzeroized copy of the key is made here;
    // the AES round keys inside the Kek are only zeroized on drop if the
    // `aes` crate's `zeroize` feature is on.
    let kek = KekAes256::new(GenericArray::from_slice(aes_key.expose()));
    // RFC 5649: the output is the input less the 8-byte integrity block.
    let out_len = wrapped_material
        .len()
        .checked_sub(8)
        .ok_or(AsymError::InvalidCiphertext)?;
    let mut out = SecretBytes::new(vec![0; out_len]);
    let material_len = kek
        .unwrap_with_padding(wrapped_material, out.expose_mut())
        .map_err(|_| AsymError::InvalidCiphertext)?
        .len();
    out.expose_mut().truncate(material_len);
    Ok(out)
}

/// Wraps `material` to a wrapping public key the way AWS's documentation
/// tells users to (the inverse of [`unwrap_import`]); for clients and tests.
pub fn wrap_for_import(
    wrapping_public_key_der: &[u8],
    algorithm: AlgorithmSpec,
    material: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let public = RsaPublicKey::from_public_key_der(wrapping_public_key_der).map_err(|e| {
        AsymError::InvalidPublicKey(format!("expected a DER RSA SubjectPublicKeyInfo ({e})"))
    })?;
    let spec = match public.n().bits() {
        2048 => KeySpec::Rsa2048,
        3072 => KeySpec::Rsa3072,
        4096 => KeySpec::Rsa4096,
        bits => {
            return Err(AsymError::InvalidPublicKey(format!(
                "the wrapping key has {bits} bits; expected 2048, 3072 or 4096"
            )))
        }
    };
    if !algorithm.is_aes_key_wrap() {
        return encrypt_to(spec, &public, algorithm.oaep(), material);
    }
    if material.is_empty() {
        return Err(AsymError::InputLength {
            field: "keyMaterial",
            len: 0,
            min: 1,
            max: u32::MAX as usize,
        });
    }
    let aes_key = Key256::random();
    let kek = KekAes256::new(GenericArray::from_slice(aes_key.expose()));
    let mut out = encrypt_to(spec, &public, algorithm.oaep(), aes_key.expose())?;
    let padded = material.len().div_ceil(8) * 8;
    let start = out.len();
    out.resize(start + padded + 8, 0);
    kek.wrap_with_padding(material, &mut out[start..])
        .map_err(|e| AsymError::Internal(format!("AES key wrap: {e}")))?;
    Ok(out)
}

/// Checks that unwrapped key material fits the KMS key it is imported into:
/// 32 bytes for SYMMETRIC_DEFAULT, an in-range HMAC key, or a PKCS#8 DER
/// private key of exactly the key's RSA size or curve.
pub fn validate_import_material(spec: KeySpec, material: &SecretBytes) -> Result<(), AsymError> {
    if spec == KeySpec::SymmetricDefault {
        return if material.len() == 32 {
            Ok(())
        } else {
            Err(AsymError::InvalidKeyMaterial {
                spec,
                reason: format!(
                    "symmetric key material must be 32 bytes (256 bits), got {}",
                    material.len()
                ),
            })
        };
    }
    PrivateKeyMaterial::load(spec, material).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5649 section 6 has AES-192 vectors only; this is the wrap of
    /// 20 bytes under an all-0x01 AES-256 key produced by
    /// `openssl enc -id-aes256-wrap-pad -K 0101..01 -iv A65959A6`.
    #[test]
    fn aes256_kwp_known_answer() {
        let kek = KekAes256::from([1u8; 32]);
        let mut out = [0u8; 32];
        let material = hex::decode("c37b7e6492584340bed12207808941155068f738").unwrap();
        kek.wrap_with_padding(&material, &mut out).unwrap();
        assert_eq!(hex::encode(out), KWP_VECTOR);
    }

    const KWP_VECTOR: &str = "ce5b48b16262baa0f8e703aa1e5543d21bec70f122d63719c10ab600def2dfc2";

    #[test]
    fn wrap_for_import_round_trips_every_length_class() {
        let wrapping = generate_wrapping_key(WrappingKeySpec::Rsa2048).unwrap();
        let public = wrapping.public_key_der().unwrap();
        // One semiblock, exactly one, just over, the symmetric key size, and
        // a PKCS#8 RSA key's size.
        for len in [1usize, 8, 9, 32, 1217] {
            let material: Vec<u8> = (0..len).map(|i| i as u8 ^ 0xa5).collect();
            for alg in [
                AlgorithmSpec::RsaAesKeyWrapSha1,
                AlgorithmSpec::RsaAesKeyWrapSha256,
            ] {
                let wrapped = wrap_for_import(public, alg, &material).unwrap();
                assert_eq!(wrapped.len(), 256 + 8 + len.div_ceil(8) * 8, "{len}");
                let back = unwrap_import(&wrapping, alg, &wrapped).unwrap();
                assert_eq!(back.expose(), &material[..], "{alg} {len}");
            }
        }
        let wrapped = wrap_for_import(public, AlgorithmSpec::RsaesOaepSha256, &[9; 32]).unwrap();
        assert_eq!(wrapped.len(), 256);
        let back = unwrap_import(&wrapping, AlgorithmSpec::RsaesOaepSha256, &wrapped).unwrap();
        assert_eq!(back.expose(), &[9; 32]);
        assert!(wrap_for_import(b"junk", AlgorithmSpec::RsaesOaepSha1, &[1]).is_err());
        // An ECC key cannot unwrap.
        let ec = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        assert!(matches!(
            unwrap_import(&ec, AlgorithmSpec::RsaesOaepSha1, &wrapped),
            Err(AsymError::UnsupportedKeySpec { .. })
        ));
    }

    #[test]
    fn validate_checks_lengths_and_formats() {
        let sym = SecretBytes::from_slice(&[1; 32]);
        assert!(validate_import_material(KeySpec::SymmetricDefault, &sym).is_ok());
        let short = SecretBytes::from_slice(&[1; 16]);
        assert!(validate_import_material(KeySpec::SymmetricDefault, &short).is_err());
        let hmac = SecretBytes::from_slice(&[1; 100]);
        assert!(validate_import_material(KeySpec::Hmac512, &hmac).is_ok());
        assert!(validate_import_material(KeySpec::Hmac256, &hmac).is_err());
        let ec = PrivateKeyMaterial::generate(KeySpec::EccNistP384).unwrap();
        assert!(validate_import_material(KeySpec::EccNistP384, ec.material()).is_ok());
        let err = validate_import_material(KeySpec::EccNistP256, ec.material()).unwrap_err();
        assert!(matches!(err, AsymError::InvalidKeyMaterial { .. }));
    }
}
