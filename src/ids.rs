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

/// A KMS key id: a lowercase UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(uuid::Uuid);

impl KeyId {
    pub fn generate() -> Self {
        KeyId(uuid::Uuid::new_v4())
    }
    pub fn from_bytes(b: [u8; 16]) -> Self {
        KeyId(uuid::Uuid::from_bytes(b))
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    pub fn arn(&self, region: &Region, account: &AccountId) -> String {
        format!("arn:aws:kms:{region}:{account}:key/{self}")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl FromStr for KeyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 36 {
            return Err(id_err("key id", s, "a key id is a 36-character UUID"));
        }
        uuid::Uuid::parse_str(s)
            .map(KeyId)
            .map_err(|_| id_err("key id", s, "a key id is a 36-character UUID"))
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
