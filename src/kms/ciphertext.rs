//! The symmetric ciphertext blob: self-describing, authenticated, bound to
//! the key ARN and the encryption context.
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 1    | format version, `0x01`                                  |
//! | 1      | 16   | key id (the UUID's 16 bytes)                            |
//! | 17     | 4    | key material version, u32 little-endian                 |
//! | 21     | 32   | salt (random)                                           |
//! | 53     | n    | AES-256-GCM ciphertext of the plaintext (n = its length)|
//! | 53+n   | 16   | GCM tag                                                 |
//!
//! The GCM key and nonce are derived per message:
//! `HKDF-SHA256(ikm = key material, salt = salt, info = "keyvol kms v1")`
//! -> 32-byte key || 12-byte nonce. A (key, nonce) pair never repeats
//! because each message has its own 256-bit random salt.
//! AAD = `"keyvol kms v1\0" || key ARN || "\0" || canonical context`, where
//! the canonical context is the JSON object of the context with keys
//! sorted (order-free, exact match).

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{KmsError, KmsResult};
use crate::ids::KeyId;
use crate::secret::SecretBytes;

pub const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 16 + 4 + 32;
const TAG_LEN: usize = 16;
/// Bytes a ciphertext blob adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// An encryption context: string pairs, compared exactly, order-free.
pub type EncryptionContext = BTreeMap<String, String>;

/// The header fields of a blob, readable without any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    pub key_id: KeyId,
    pub material_version: u32,
}

pub fn parse_header(blob: &[u8]) -> KmsResult<BlobHeader> {
    if blob.len() < OVERHEAD || blob[0] != VERSION {
        return Err(KmsError::invalid_ciphertext());
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&blob[1..17]);
    let mut v = [0u8; 4];
    v.copy_from_slice(&blob[17..21]);
    Ok(BlobHeader {
        key_id: KeyId::from_bytes(id),
        material_version: u32::from_le_bytes(v),
    })
}

fn aad(key_arn: &str, context: &EncryptionContext) -> Vec<u8> {
    let mut a = b"keyvol kms v1\0".to_vec();
    a.extend_from_slice(key_arn.as_bytes());
    a.push(0);
    // BTreeMap serializes with sorted keys: the canonical form.
    a.extend_from_slice(
        serde_json::to_string(context)
            .unwrap_or_default()
            .as_bytes(),
    );
    a
}

fn derive(material: &[u8], salt: &[u8]) -> KmsResult<(Aes256Gcm, [u8; 12])> {
    let hk = Hkdf::<Sha256>::new(Some(salt), material);
    let mut okm = Zeroizing::new([0u8; 44]);
    hk.expand(b"keyvol kms v1", &mut okm[..])
        .map_err(|_| KmsError::internal("key derivation failed"))?;
    let cipher = Aes256Gcm::new_from_slice(&okm[..32])
        .map_err(|_| KmsError::internal("key derivation failed"))?;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    Ok((cipher, nonce))
}

pub fn seal(
    key_id: &KeyId,
    key_arn: &str,
    material_version: u32,
    material: &SecretBytes,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> KmsResult<Vec<u8>> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(VERSION);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&material_version.to_le_bytes());
    let mut salt = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    out.extend_from_slice(&salt);
    let (cipher, nonce) = derive(material.expose(), &salt)?;
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad(key_arn, context),
            },
        )
        .map_err(|_| KmsError::internal("encryption failed"))?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts a blob whose header was already parsed and whose material was
/// looked up. Every failure is the same opaque InvalidCiphertextException.
pub fn open(
    blob: &[u8],
    key_arn: &str,
    material: &SecretBytes,
    context: &EncryptionContext,
) -> KmsResult<SecretBytes> {
    if blob.len() < OVERHEAD {
        return Err(KmsError::invalid_ciphertext());
    }
    let (cipher, nonce) = derive(material.expose(), &blob[21..HEADER_LEN])?;
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &blob[HEADER_LEN..],
                aad: &aad(key_arn, context),
            },
        )
        .map(SecretBytes::new)
        .map_err(|_| KmsError::invalid_ciphertext())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let id = KeyId::generate();
        let m = SecretBytes::random(32);
        let mut ctx = EncryptionContext::new();
        ctx.insert("a".into(), "1".into());
        let blob = seal(&id, "arn:k", 3, &m, &ctx, b"hello").unwrap();
        assert_eq!(blob.len(), OVERHEAD + 5);
        let h = parse_header(&blob).unwrap();
        assert_eq!(h.key_id, id);
        assert_eq!(h.material_version, 3);
        assert_eq!(open(&blob, "arn:k", &m, &ctx).unwrap().expose(), b"hello");
        assert!(open(&blob, "arn:other", &m, &ctx).is_err());
        assert!(open(&blob, "arn:k", &m, &EncryptionContext::new()).is_err());
        for i in 21..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            assert!(open(&t, "arn:k", &m, &ctx).is_err(), "byte {i}");
        }
    }
}
