//! The symmetric ciphertext blob: self-describing, authenticated, bound to
//! the key ARN and the encryption context.
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 1    | format: `0x01` single-Region key, `0x02` multi-Region   |
//! | 1      | 16   | key id (the UUID's 16 bytes, or the 16 bytes of the 32  |
//! |        |      | hex digits after `mrk-`)                                |
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
//!
//! A multi-Region key's blob (`0x02`) binds the ARN with an empty region,
//! `arn:aws:kms::<account>:key/mrk-...`: any related key of the key that
//! sealed it opens it, in its own region, as AWS's multi-Region keys do
//! (they share their id and their key material).

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{KmsError, KmsResult};
use crate::ids::{KeyId, Region};
use crate::secret::SecretBytes;

pub const VERSION: u8 = 1;
/// The format byte of a blob sealed by a multi-Region key.
pub const VERSION_MULTI_REGION: u8 = 2;
const HEADER_LEN: usize = 1 + 16 + 4 + 32;
const TAG_LEN: usize = 16;
/// Bytes a ciphertext blob adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// An encryption context: string pairs, compared exactly, order-free.
pub type EncryptionContext = BTreeMap<String, String>;

/// The header fields of a blob, readable without any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// The 16 bytes of the key id.
    pub key_bytes: [u8; 16],
    /// Sealed by a multi-Region key (format `0x02`).
    pub multi_region: bool,
    pub material_version: u32,
}

impl BlobHeader {
    /// The key that opens the blob in `region`: the single-Region key of
    /// the header, or the related multi-Region key in `region`.
    pub fn key_in(&self, region: &Region) -> Option<KeyId> {
        let id = KeyId::from_bytes(self.key_bytes);
        if !self.multi_region {
            return Some(id);
        }
        let public = format!("mrk-{}", hex::encode(self.key_bytes));
        KeyId::parse_public(&public, region).ok()
    }
}

pub fn parse_header(blob: &[u8]) -> KmsResult<BlobHeader> {
    if blob.len() < OVERHEAD || !matches!(blob[0], VERSION | VERSION_MULTI_REGION) {
        return Err(KmsError::invalid_ciphertext());
    }
    let mut key_bytes = [0u8; 16];
    key_bytes.copy_from_slice(&blob[1..17]);
    let mut v = [0u8; 4];
    v.copy_from_slice(&blob[17..21]);
    Ok(BlobHeader {
        key_bytes,
        multi_region: blob[0] == VERSION_MULTI_REGION,
        material_version: u32::from_le_bytes(v),
    })
}

/// The key ARN a blob of `key_id` is bound to: the key's ARN, with the
/// region left empty for a multi-Region key.
pub fn binding_arn(key_id: &KeyId, key_arn: &str) -> String {
    if !key_id.is_multi_region() {
        return key_arn.to_string();
    }
    match key_arn.split(':').collect::<Vec<_>>().as_slice() {
        [a, p, s, _region, account, resource] => format!("{a}:{p}:{s}::{account}:{resource}"),
        _ => key_arn.to_string(),
    }
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
    out.push(if key_id.is_multi_region() {
        VERSION_MULTI_REGION
    } else {
        VERSION
    });
    let key_arn = &binding_arn(key_id, key_arn);
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
    key_id: &KeyId,
    key_arn: &str,
    material: &SecretBytes,
    context: &EncryptionContext,
) -> KmsResult<SecretBytes> {
    let header = parse_header(blob)?;
    if header.key_bytes != *key_id.as_bytes() || header.multi_region != key_id.is_multi_region() {
        return Err(KmsError::invalid_ciphertext());
    }
    let key_arn = &binding_arn(key_id, key_arn);
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
        assert_eq!(h.key_in(&Region::default_region()), Some(id));
        assert!(!h.multi_region);
        assert_eq!(h.material_version, 3);
        assert_eq!(
            open(&blob, &id, "arn:k", &m, &ctx).unwrap().expose(),
            b"hello"
        );
        assert!(open(&blob, &id, "arn:other", &m, &ctx).is_err());
        assert!(open(&blob, &id, "arn:k", &m, &EncryptionContext::new()).is_err());
        assert!(open(&blob, &KeyId::generate(), "arn:k", &m, &ctx).is_err());
        for i in 21..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            assert!(open(&t, &id, "arn:k", &m, &ctx).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_multi_region_blob_opens_with_every_related_key() {
        let east = Region::default_region();
        let west: Region = "us-west-2".parse().unwrap();
        let primary = KeyId::generate_multi_region(&east).unwrap();
        let replica = primary.in_region(&west).unwrap();
        let arn = |r: &Region, k: &KeyId| format!("arn:aws:kms:{r}:111122223333:key/{k}");
        let m = SecretBytes::random(32);
        let ctx = EncryptionContext::new();
        let blob = seal(&primary, &arn(&east, &primary), 1, &m, &ctx, b"hi").unwrap();
        assert_eq!(blob[0], VERSION_MULTI_REGION);
        let h = parse_header(&blob).unwrap();
        assert_eq!(h.key_in(&west), Some(replica));
        let opened = open(&blob, &replica, &arn(&west, &replica), &m, &ctx).unwrap();
        assert_eq!(opened.expose(), b"hi");
        // Another account's key with the same id does not open it.
        let other = format!("arn:aws:kms:{west}:444455556666:key/{replica}");
        assert!(open(&blob, &replica, &other, &m, &ctx).is_err());
        // Nor does a single-Region key with the same 16 bytes.
        let single = KeyId::from_bytes(*primary.as_bytes());
        assert!(open(&blob, &single, &arn(&east, &single), &m, &ctx).is_err());
        let mut flipped = blob.clone();
        flipped[0] = VERSION;
        assert!(open(&flipped, &single, &arn(&east, &single), &m, &ctx).is_err());
    }
}
