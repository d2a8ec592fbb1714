//! Snapshot manifests: the chunk index and metadata of one snapshot, and
//! their authenticated on-store form (HMAC-SHA256 under a key derived from
//! the snapshot's data key).
//!
//! # Stored form (`<prefix>/<region>/manifests/<snapshot-id>.json`)
//!
//! ```json
//! { "Format": "keyvol-snapshot-manifest-v1",
//!   "Manifest": { "SnapshotId": "snap-...", ..., "Blocks": { "0": "<sha256 hex>", ... } },
//!   "Mac": "<base64 HMAC-SHA256>" }
//! ```
//!
//! `Mac` = HMAC-SHA256(mac_key, `MAC_DOMAIN` || canonical(Manifest)), where
//! canonical(Manifest) is the compact `serde_json` serialization of the
//! [`Manifest`] struct (fixed field order, sorted maps and sets, so the
//! same value always gives the same bytes). [`Manifest::open`] parses,
//! re-serializes canonically and checks the MAC in constant time, so an
//! accepted manifest is exactly the value that was sealed; unknown or
//! duplicate fields are refused. The mac key is
//! HKDF-SHA256(ikm = the 64-byte volume data key, salt = none,
//! info = "keyvol snapshot manifest v1"): see [`manifest_mac_key`]. Snapshots
//! of one volume share its data key, so the MAC does not tell them apart;
//! the store checks that a manifest describes the snapshot it is stored as.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::ids::{AccountId, Region, SnapshotId, VolumeId};
use crate::secret::{ct_eq, Key256, VolumeDataKey};

use super::error::{Result, SnapshotError};

/// Bytes per block (chunk): the EBS direct API block size, 512 KiB.
pub const BLOCK_SIZE: u32 = 512 * 1024;

/// The `Format` tag of the stored manifest document.
pub const MANIFEST_FORMAT: &str = "keyvol-snapshot-manifest-v1";

/// HKDF `info` for the manifest MAC key.
pub const MANIFEST_MAC_INFO: &[u8] = b"keyvol snapshot manifest v1";

/// Why serializing a manifest cannot fail: it holds only structs, strings,
/// integers, and maps with string or integer keys, all of which serde_json
/// writes to a `Vec` without error.
const SERIALIZE_INFALLIBLE: &str =
    "a Manifest holds only strings, integers and string/integer-keyed maps";

/// Prefix of the MACed bytes, so a MAC over a manifest is never valid for
/// any other message under the same key.
const MAC_DOMAIN: &[u8] = b"keyvol snapshot manifest v1\n";

/// A chunk's name: the SHA-256 of its (encrypted) bytes. Doubles as the
/// EBS direct API `BlockToken` and `Checksum` of a block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkRef([u8; 32]);

impl ChunkRef {
    /// The name of a chunk with these bytes. SHA-256 through AWS-LC (its
    /// SHA-NI code: every stored and every fetched chunk is hashed once).
    pub fn of(bytes: &[u8]) -> ChunkRef {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        ChunkRef(out)
    }

    pub fn from_bytes(hash: [u8; 32]) -> ChunkRef {
        ChunkRef(hash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as used in object names and manifests.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkRef({})", self.to_hex())
    }
}

impl FromStr for ChunkRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "'{}' is not a chunk name: expected 64 lowercase hex digits",
                s.chars().take(80).collect::<String>()
            ));
        }
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| format!("'{s}' is not a chunk name: expected 64 lowercase hex digits"))?;
        Ok(ChunkRef(out))
    }
}

impl Serialize for ChunkRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// EC2 snapshot states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    Pending,
    Completed,
    Error,
}

impl fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SnapshotState::Pending => "pending",
            SnapshotState::Completed => "completed",
            SnapshotState::Error => "error",
        })
    }
}

/// One snapshot: metadata (EC2 `DescribeSnapshots` field names where EC2
/// has the field) and the block index. Blocks absent from `blocks` were
/// never written (read as zeros).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Manifest {
    pub snapshot_id: SnapshotId,
    pub volume_id: VolumeId,
    /// The volume size in bytes (EC2's `VolumeSize` is in GiB: see
    /// [`Manifest::volume_size_gib`]).
    pub volume_size_bytes: u64,
    /// Always [`BLOCK_SIZE`]; stored so a reader refuses other layouts.
    pub block_size: u32,
    /// The snapshot this one is incremental to (EBS direct API
    /// `ParentSnapshotId`).
    pub parent_snapshot_id: Option<SnapshotId>,
    /// Groups a snapshot with its copies; an incremental copy finds its
    /// previous copy in the destination by lineage.
    pub lineage_id: String,
    /// For a copy: the snapshot it was copied from, and its region.
    pub source_snapshot_id: Option<SnapshotId>,
    pub source_region: Option<Region>,
    pub owner_id: AccountId,
    pub region: Region,
    /// The ARN of the KMS key that wraps the data key.
    pub kms_key_id: String,
    /// The data key as wrapped by the KMS (a KMS ciphertext blob), base64 in
    /// the stored form.
    #[serde(with = "base64_bytes")]
    pub encrypted_data_key: Vec<u8>,
    pub encryption_context: BTreeMap<String, String>,
    pub description: String,
    /// RFC 3339, UTC.
    pub start_time: String,
    pub state: SnapshotState,
    pub state_message: Option<String>,
    /// Percent complete, 0..=100; stored as EC2 writes it (`"42%"`).
    #[serde(with = "progress_percent")]
    pub progress: u8,
    /// Accounts allowed to create volumes from (and copy) this snapshot.
    pub create_volume_permissions: BTreeSet<AccountId>,
    /// Block index -> chunk holding that block's ciphertext.
    pub blocks: BTreeMap<u64, ChunkRef>,
}

impl Manifest {
    /// EC2's `VolumeSize`: the size in GiB, rounded up.
    pub fn volume_size_gib(&self) -> u64 {
        self.volume_size_bytes.div_ceil(1 << 30)
    }

    /// Number of blocks the volume spans (written or not).
    pub fn block_count(&self) -> u64 {
        self.volume_size_bytes.div_ceil(u64::from(BLOCK_SIZE))
    }

    /// The stored, authenticated form; see the module docs for the format.
    pub fn seal(&self, mac_key: &Key256) -> Vec<u8> {
        let mac = mac_of(mac_key, &self.canonical());
        let doc = SealedOut {
            format: MANIFEST_FORMAT,
            manifest: self,
            mac: base64::engine::general_purpose::STANDARD.encode(mac),
        };
        serde_json::to_vec_pretty(&doc).expect(SERIALIZE_INFALLIBLE)
    }

    /// Parses a stored manifest and checks its MAC (constant time); any edit
    /// of the manifest is `ManifestAuthentication`, bytes that are not a
    /// manifest at all are `ManifestInvalid`.
    pub fn open(bytes: &[u8], mac_key: &Key256) -> Result<Manifest> {
        let doc = parse_sealed(bytes)?;
        let name = doc.manifest.snapshot_id.to_string();
        let expected = mac_of(mac_key, &doc.manifest.canonical());
        let given = base64::engine::general_purpose::STANDARD
            .decode(doc.mac.as_bytes())
            .map_err(|_| SnapshotError::ManifestAuthentication {
                snapshot: name.clone(),
            })?;
        if !ct_eq(&expected, &given) {
            return Err(SnapshotError::ManifestAuthentication { snapshot: name });
        }
        Ok(doc.manifest)
    }

    /// Parses a stored manifest WITHOUT checking its MAC, for listing
    /// (id, owner, state, permissions, wrapped key) before the data key is
    /// available and for garbage collection. Nothing read this way may be
    /// trusted for access decisions or data until [`Manifest::open`] has
    /// verified the same bytes.
    pub fn peek_unauthenticated(bytes: &[u8]) -> Result<Manifest> {
        Ok(parse_sealed(bytes)?.manifest)
    }

    /// The written blocks, in order.
    pub fn blocks(&self) -> Vec<u64> {
        self.blocks.keys().copied().collect()
    }

    fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect(SERIALIZE_INFALLIBLE)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.block_size != BLOCK_SIZE {
            return Err(format!(
                "block size {} is not the supported {BLOCK_SIZE}",
                self.block_size
            ));
        }
        if self.progress > 100 {
            return Err(format!("progress {}% is over 100%", self.progress));
        }
        if let Some((&last, _)) = self.blocks.last_key_value() {
            if last >= self.block_count() {
                return Err(format!(
                    "block {last} lies beyond the volume's {} bytes",
                    self.volume_size_bytes
                ));
            }
        }
        Ok(())
    }
}

/// The written blocks of `m`, in order (free-function form of
/// [`Manifest::blocks`]).
pub fn blocks(m: &Manifest) -> Vec<u64> {
    m.blocks()
}

/// Blocks whose content differs between `a` and `b` (written in one and not
/// the other, or written with different chunks), in order: EBS
/// `ListChangedBlocks`.
pub fn changed_blocks(a: &Manifest, b: &Manifest) -> Vec<u64> {
    let mut out: Vec<u64> = a
        .blocks
        .iter()
        .filter(|(i, c)| b.blocks.get(i) != Some(c))
        .map(|(i, _)| *i)
        .chain(
            b.blocks
                .keys()
                .filter(|i| !a.blocks.contains_key(i))
                .copied(),
        )
        .collect();
    out.sort_unstable();
    out
}

/// The manifest MAC key of a snapshot whose blocks are encrypted under
/// `dek`: HKDF-SHA256(ikm = dek, salt = none, info = `MANIFEST_MAC_INFO`).
pub fn manifest_mac_key(dek: &VolumeDataKey) -> Key256 {
    let hk = hkdf::Hkdf::<Sha256>::new(None, dek.expose());
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(MANIFEST_MAC_INFO, &mut okm[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Key256::from_slice(&okm[..]).expect("okm is exactly 32 bytes")
}

/// The current time in RFC 3339 (UTC), for `start_time`.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn mac_of(key: &Key256, body: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
        .expect("HMAC accepts keys of any length");
    mac.update(MAC_DOMAIN);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SealedOut<'a> {
    format: &'static str,
    manifest: &'a Manifest,
    mac: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SealedIn {
    format: String,
    manifest: Manifest,
    mac: String,
}

fn parse_sealed(bytes: &[u8]) -> Result<SealedIn> {
    let invalid =
        |snapshot: String, reason: String| SnapshotError::ManifestInvalid { snapshot, reason };
    let doc: SealedIn = serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            "a snapshot".into(),
            format!("not a keyvol manifest document: {e}"),
        )
    })?;
    if doc.format != MANIFEST_FORMAT {
        return Err(invalid(
            doc.manifest.snapshot_id.to_string(),
            format!(
                "format '{}' is not the supported '{MANIFEST_FORMAT}'",
                doc.format.chars().take(64).collect::<String>()
            ),
        ));
    }
    doc.manifest
        .validate()
        .map_err(|reason| invalid(doc.manifest.snapshot_id.to_string(), reason))?;
    Ok(doc)
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|_| serde::de::Error::custom("EncryptedDataKey is not valid base64"))
    }
}

mod progress_percent {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v}%"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        let s = String::deserialize(d)?;
        s.strip_suffix('%')
            .filter(|n| {
                (1..=3).contains(&n.len())
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && (n == &"0" || !n.starts_with('0'))
            })
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| *n <= 100)
            .ok_or_else(|| serde::de::Error::custom("Progress must be \"0%\"..\"100%\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut blocks = BTreeMap::new();
        blocks.insert(0, ChunkRef::of(b"zero"));
        blocks.insert(3, ChunkRef::of(b"three"));
        Manifest {
            snapshot_id: SnapshotId::generate(),
            volume_id: VolumeId::generate(),
            volume_size_bytes: 4 * u64::from(BLOCK_SIZE),
            block_size: BLOCK_SIZE,
            parent_snapshot_id: None,
            lineage_id: "lineage-1".into(),
            source_snapshot_id: None,
            source_region: None,
            owner_id: AccountId::default_account(),
            region: Region::default_region(),
            kms_key_id: "arn:aws:kms:us-east-1:111122223333:key/x".into(),
            encrypted_data_key: vec![1, 2, 3],
            encryption_context: [("aws:ebs:id".to_string(), "vol-1".to_string())].into(),
            description: "d".into(),
            start_time: now_rfc3339(),
            state: SnapshotState::Completed,
            state_message: None,
            progress: 100,
            create_volume_permissions: BTreeSet::new(),
            blocks,
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let key = manifest_mac_key(&VolumeDataKey::random());
        let m = sample();
        let sealed = m.seal(&key);
        assert_eq!(Manifest::open(&sealed, &key).unwrap(), m);
        assert_eq!(Manifest::peek_unauthenticated(&sealed).unwrap(), m);
        let text = String::from_utf8(sealed).unwrap();
        assert!(text.contains("\"Progress\": \"100%\""), "{text}");
        assert!(text.contains("\"State\": \"completed\""), "{text}");
    }

    #[test]
    fn wrong_key_and_edits_fail_authentication() {
        let key = manifest_mac_key(&VolumeDataKey::random());
        let m = sample();
        let sealed = String::from_utf8(m.seal(&key)).unwrap();
        let other = manifest_mac_key(&VolumeDataKey::random());
        assert!(matches!(
            Manifest::open(sealed.as_bytes(), &other),
            Err(SnapshotError::ManifestAuthentication { .. })
        ));
        let edited = sealed.replace("\"Description\": \"d\"", "\"Description\": \"e\"");
        assert_ne!(edited, sealed);
        assert!(matches!(
            Manifest::open(edited.as_bytes(), &key),
            Err(SnapshotError::ManifestAuthentication { .. })
        ));
        let extra = sealed.replacen("\"Description\"", "\"Extra\": 1, \"Description\"", 1);
        assert!(matches!(
            Manifest::open(extra.as_bytes(), &key),
            Err(SnapshotError::ManifestInvalid { .. })
        ));
        assert!(Manifest::open(b"not json", &key).is_err());
    }

    #[test]
    fn mac_key_is_deterministic_per_dek() {
        let dek = VolumeDataKey::from_slice(&[7; 64]).unwrap();
        let a = manifest_mac_key(&dek);
        let b = manifest_mac_key(&dek);
        assert_eq!(a.expose(), b.expose());
        let other = manifest_mac_key(&VolumeDataKey::from_slice(&[8; 64]).unwrap());
        assert_ne!(a.expose(), other.expose());
    }

    #[test]
    fn validation_refuses_out_of_range() {
        let key = manifest_mac_key(&VolumeDataKey::random());
        let mut m = sample();
        m.blocks.insert(4, ChunkRef::of(b"past the end"));
        assert!(matches!(
            Manifest::open(&m.seal(&key), &key),
            Err(SnapshotError::ManifestInvalid { .. })
        ));
        let mut m = sample();
        m.block_size = 4096;
        assert!(Manifest::open(&m.seal(&key), &key).is_err());
    }

    #[test]
    fn changed_blocks_between_manifests() {
        let a = sample();
        let mut b = a.clone();
        assert!(changed_blocks(&a, &b).is_empty());
        b.blocks.insert(3, ChunkRef::of(b"three v2"));
        b.blocks.insert(1, ChunkRef::of(b"one"));
        b.blocks.remove(&0);
        assert_eq!(changed_blocks(&a, &b), vec![0, 1, 3]);
        assert_eq!(blocks(&b), vec![1, 3]);
    }

    #[test]
    fn chunk_ref_parses_only_lowercase_hex() {
        let c = ChunkRef::of(b"x");
        assert_eq!(c.to_hex().parse::<ChunkRef>().unwrap(), c);
        assert!(c.to_hex().to_uppercase().parse::<ChunkRef>().is_err());
        assert!("abc".parse::<ChunkRef>().is_err());
    }

    #[test]
    fn progress_format() {
        let key = manifest_mac_key(&VolumeDataKey::random());
        let sealed = String::from_utf8(sample().seal(&key)).unwrap();
        for bad in ["\"101%\"", "\"42\"", "\"-1%\"", "\"007%\""] {
            let t = sealed.replace("\"100%\"", bad);
            assert!(
                Manifest::peek_unauthenticated(t.as_bytes()).is_err(),
                "{bad}"
            );
        }
        let t = sealed.replace("\"100%\"", "\"0%\"");
        assert_eq!(
            Manifest::peek_unauthenticated(t.as_bytes())
                .unwrap()
                .progress,
            0
        );
    }
}
