//! Identifier newtypes: accounts, regions, keys, ARNs, volumes, snapshots.
//!
//! Each parses from its AWS text form and refuses anything else, so code
//! past the parse never re-checks a string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier of some kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} '{value}': {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn id_err(kind: &'static str, value: &str, reason: &'static str) -> IdError {
    IdError {
        kind,
        value: value.chars().take(128).collect(),
        reason,
    }
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A 12-digit AWS account id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);
string_newtype!(AccountId);

impl AccountId {
    pub fn default_account() -> Self {
        AccountId("111122223333".into())
    }
    /// The ARN of the account's root principal.
    pub fn root_arn(&self) -> String {
        format!("arn:aws:iam::{}:root", self.0)
    }
}

impl FromStr for AccountId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(s.to_string()))
        } else {
            Err(id_err(
                "account id",
                s,
                "an account id is exactly 12 digits",
            ))
        }
    }
}

/// A region name such as `us-east-1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);
string_newtype!(Region);

impl Region {
    pub fn default_region() -> Self {
        Region("us-east-1".into())
    }
}

/// The regions of the `aws`, `aws-cn` and `aws-us-gov` partitions (from
/// botocore's endpoints.json): a made-up name is refused, as AWS refuses it.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "cn-north-1",
    "cn-northwest-1",
    "us-gov-east-1",
    "us-gov-west-1",
];

impl FromStr for Region {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if KNOWN_REGIONS.contains(&s) {
            Ok(Region(s.to_string()))
        } else {
            Err(id_err(
                "region",
                s,
                "expected an AWS region name such as us-east-1",
            ))
        }
    }
}

/// A KMS key id: a lowercase UUID, or `mrk-` and 32 lowercase hex digits
/// for a multi-Region key.
///
/// The related keys of a multi-Region key (its primary and replicas) share
/// one public id, one in each region, so a multi-Region `KeyId` also names
/// its region: two replicas are different keys with different records.
/// `Display` prints the public id; [`KeyId::store_key`] is the text the
/// records are keyed by (the UUID, or `mrk-<hex>/<region>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    bytes: [u8; 16],
    /// For a multi-Region key: its region, an index into [`KNOWN_REGIONS`].
    mrk_region: Option<u8>,
}

const MRK_PREFIX: &str = "mrk-";

fn region_index(region: &Region) -> Option<u8> {
    KNOWN_REGIONS
        .iter()
        .position(|r| *r == region.as_str())
        .and_then(|i| u8::try_from(i).ok())
}

impl KeyId {
    pub fn generate() -> Self {
        KeyId {
            bytes: *uuid::Uuid::new_v4().as_bytes(),
            mrk_region: None,
        }
    }
    /// A new multi-Region key id, for the primary key in `region`.
    pub fn generate_multi_region(region: &Region) -> Option<Self> {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Some(KeyId {
            bytes,
            mrk_region: Some(region_index(region)?),
        })
    }
    /// A single-Region key id from its UUID's 16 bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        KeyId {
            bytes: b,
            mrk_region: None,
        }
    }
    /// The id's 16 bytes (the UUID's, or the multi-Region id's hex digits).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }
    pub fn is_multi_region(&self) -> bool {
        self.mrk_region.is_some()
    }
    /// The related key of this multi-Region key in `region` (the id itself
    /// for a single-Region key). None for a region keyvol does not know.
    pub fn in_region(&self, region: &Region) -> Option<KeyId> {
        match self.mrk_region {
            None => Some(*self),
            Some(_) => Some(KeyId {
                bytes: self.bytes,
                mrk_region: Some(region_index(region)?),
            }),
        }
    }
    /// A key id as a request writes it (a UUID or `mrk-...`), in `region`.
    pub fn parse_public(s: &str, region: &Region) -> Result<KeyId, IdError> {
        match s.strip_prefix(MRK_PREFIX) {
            Some(hex_id) => {
                let bytes = parse_mrk_hex(s, hex_id)?;
                Ok(KeyId {
                    bytes,
                    mrk_region: Some(region_index(region).ok_or_else(|| {
                        id_err("key id", s, "the region of the key is not known")
                    })?),
                })
            }
            None => parse_uuid_key_id(s),
        }
    }
    /// The text the KMS's records are keyed by: the UUID, or
    /// `mrk-<hex>/<region>` for a multi-Region key.
    pub fn store_key(&self) -> String {
        match self.mrk_region {
            None => self.to_string(),
            Some(i) => format!(
                "{self}/{}",
                KNOWN_REGIONS
                    .get(usize::from(i))
                    .copied()
                    .unwrap_or_default()
            ),
        }
    }
    /// The prefix every related key's store key starts with (`mrk-<hex>/`).
    pub fn family_prefix(&self) -> String {
        format!("{self}/")
    }
    pub fn arn(&self, region: &Region, account: &AccountId) -> String {
        format!("arn:aws:kms:{region}:{account}:key/{self}")
    }
}

fn parse_uuid_key_id(s: &str) -> Result<KeyId, IdError> {
    const WHY: &str = "a key id is a 36-character UUID or mrk- and 32 hex digits";
    if s.len() != 36 {
        return Err(id_err("key id", s, WHY));
    }
    uuid::Uuid::parse_str(s)
        .map(|u| KeyId::from_bytes(*u.as_bytes()))
        .map_err(|_| id_err("key id", s, WHY))
}

fn parse_mrk_hex(s: &str, hex_id: &str) -> Result<[u8; 16], IdError> {
    const WHY: &str = "a multi-Region key id is mrk- and 32 lowercase hex digits";
    if hex_id.len() != 32
        || !hex_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(id_err("key id", s, WHY));
    }
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(hex_id, &mut bytes).map_err(|_| id_err("key id", s, WHY))?;
    Ok(bytes)
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mrk_region {
            None => write!(f, "{}", uuid::Uuid::from_bytes(self.bytes).hyphenated()),
            Some(_) => write!(f, "{MRK_PREFIX}{}", hex::encode(self.bytes)),
        }
    }
}

/// Parses a store key: a UUID, or `mrk-<hex>/<region>`.
impl FromStr for KeyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.split_once('/') {
            Some((public, region)) if public.starts_with(MRK_PREFIX) => {
                let region: Region = region.parse()?;
                KeyId::parse_public(public, &region)
            }
            _ if s.starts_with(MRK_PREFIX) => Err(id_err(
                "key id",
                s,
                "a multi-Region key id is read with its region",
            )),
            _ => parse_uuid_key_id(s),
        }
    }
}

impl rusqlite::ToSql for KeyId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.store_key()))
    }
}

impl rusqlite::types::FromSql for KeyId {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        v.as_str()?
            .parse()
            .map_err(|e: IdError| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The parts of an ARN: `arn:<partition>:<service>:<region>:<account>:<resource>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    pub resource: String,
}

impl FromStr for Arn {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let mut it = s.splitn(6, ':');
        let parts: Vec<&str> = (&mut it).collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[1].is_empty() || parts[2].is_empty() {
            return Err(id_err(
                "ARN",
                s,
                "expected arn:partition:service:region:account:resource",
            ));
        }
        Ok(Arn {
            partition: parts[1].into(),
            service: parts[2].into(),
            region: parts[3].into(),
            account: parts[4].into(),
            resource: parts[5].into(),
        })
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

fn hex17(prefix: &str) -> String {
    let mut b = [0u8; 9];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    let h = hex::encode(b);
    format!("{prefix}{}", &h[..17])
}

fn parse_prefixed(kind: &'static str, prefix: &str, s: &str) -> Result<String, IdError> {
    match s.strip_prefix(prefix) {
        Some(rest)
            if (rest.len() == 17 || rest.len() == 8)
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(s.to_string())
        }
        _ => Err(id_err(
            kind,
            s,
            "expected the prefix followed by 17 lowercase hex digits",
        )),
    }
}

/// An EBS-style volume id: `vol-` and 17 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);
string_newtype!(VolumeId);

impl VolumeId {
    pub fn generate() -> Self {
        VolumeId(hex17("vol-"))
    }
}

impl FromStr for VolumeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_prefixed("volume id", "vol-", s).map(VolumeId)
    }
}

/// An EBS-style snapshot id: `snap-` and 17 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(String);
string_newtype!(SnapshotId);

impl SnapshotId {
    pub fn generate() -> Self {
        SnapshotId(hex17("snap-"))
    }
}

impl FromStr for SnapshotId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_prefixed("snapshot id", "snap-", s).map(SnapshotId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        assert!("111122223333".parse::<AccountId>().is_ok());
        assert!("11112222333".parse::<AccountId>().is_err());
        assert!("11112222333a".parse::<AccountId>().is_err());
    }

    #[test]
    fn regions() {
        for ok in ["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"] {
            assert!(ok.parse::<Region>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us--1",
            "us-east-x",
            "xx-fake-9",
            "moon-base-1",
        ] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }

    #[test]
    fn key_ids_round_trip() {
        let k = KeyId::generate();
        assert_eq!(k.to_string().parse::<KeyId>().unwrap(), k);
        assert!("not-a-uuid".parse::<KeyId>().is_err());
        let west: Region = "us-west-2".parse().unwrap();
        let m = KeyId::generate_multi_region(&Region::default_region()).unwrap();
        let shown = m.to_string();
        assert!(shown.starts_with("mrk-") && shown.len() == 36, "{shown}");
        assert_eq!(m.store_key(), format!("{shown}/us-east-1"));
        assert_eq!(m.store_key().parse::<KeyId>().unwrap(), m);
        let replica = m.in_region(&west).unwrap();
        assert_ne!(replica, m);
        assert_eq!(replica.to_string(), shown);
        assert_eq!(KeyId::parse_public(&shown, &west).unwrap(), replica);
        assert!(
            shown.parse::<KeyId>().is_err(),
            "a bare mrk id has no region"
        );
        assert!(KeyId::parse_public("mrk-ABCDEF0123456789abcdef0123456789", &west).is_err());
        assert!(KeyId::parse_public("mrk-0123", &west).is_err());
        assert_eq!(k.in_region(&west), Some(k));
        let arn = k.arn(&Region::default_region(), &AccountId::default_account());
        let parsed: Arn = arn.parse().unwrap();
        assert_eq!(parsed.service, "kms");
        assert_eq!(parsed.resource, format!("key/{k}"));
    }

    #[test]
    fn volume_and_snapshot_ids() {
        let v = VolumeId::generate();
        assert_eq!(v.as_str().len(), 21);
        assert_eq!(v.as_str().parse::<VolumeId>().unwrap(), v);
        assert!("vol-XYZ".parse::<VolumeId>().is_err());
        let s = SnapshotId::generate();
        assert_eq!(s.as_str().parse::<SnapshotId>().unwrap(), s);
        assert!(v.as_str().parse::<SnapshotId>().is_err());
    }
}
