//! KMS keys as stored, their states, and the key-state effect table.

use serde_json::{json, Value};

use super::{ErrorCode, KmsError, KmsResult};
use crate::ids::{AccountId, KeyId, Region};

/// The `KeyMaterialId` of version `version` of a key's material: 64
/// lowercase hex digits, as AWS reports them, derived from the key id and
/// the version only (nothing of the material itself).
pub fn key_material_id(key_id: &KeyId, version: u32) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"keyvol key material id v1\0");
    h.update(key_id.to_string().as_bytes());
    h.update(version.to_le_bytes());
    hex::encode(h.finalize())
}

pub use super::asym::KeyState;

/// The alias of each account's AWS managed key for EBS, made on first use.
pub const EBS_ALIAS: &str = "alias/aws/ebs";
use super::asym::{KeyManager, KeySpec, KeyUsage, Origin};

/// How an operation treats keys in each state, per the AWS KMS key-state
/// effect table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRule {
    /// Any state is fine (DescribeKey, List*, Get*Policy, DeleteAlias, ...).
    Any,
    /// Cryptographic use: Enabled only; Disabled -> DisabledException;
    /// PendingDeletion / PendingImport -> KMSInvalidStateException.
    Use,
    /// Management that works on Enabled and Disabled keys (aliases, tags,
    /// description, policy, grants, Enable/DisableKey).
    Manage,
    /// Rotation settings: Enabled only, Disabled -> DisabledException.
    Rotate,
    /// ScheduleKeyDeletion: anything not already pending deletion.
    Schedule,
    /// CancelKeyDeletion: PendingDeletion only.
    Cancel,
}

/// A KMS key as stored (no key material: that lives sealed in
/// `key_material`).
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key_id: KeyId,
    pub account: AccountId,
    pub region: Region,
    pub description: String,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub origin: Origin,
    pub key_manager: KeyManager,
    pub state: KeyState,
    pub created: i64,
    pub deletion_date: Option<i64>,
    pub pending_window: Option<i64>,
    pub state_before_deletion: Option<String>,
    pub rotation_enabled: bool,
    pub rotation_period: Option<i64>,
    pub next_rotation: Option<i64>,
    pub on_demand_rotations: i64,
    pub policy: String,
    pub valid_to: Option<i64>,
    pub expiration_model: Option<String>,
    pub public_key: Option<Vec<u8>>,
    /// For a multi-Region key: the region of its primary key (its own for
    /// the primary). None for a single-Region key.
    pub primary_region: Option<Region>,
}

impl KeyRecord {
    pub fn arn(&self) -> String {
        self.key_id.arn(&self.region, &self.account)
    }

    pub fn is_symmetric(&self) -> bool {
        self.key_spec == KeySpec::SymmetricDefault
    }

    /// Is this the primary key of a multi-Region key?
    pub fn is_primary(&self) -> bool {
        self.primary_region.as_ref() == Some(&self.region)
    }

    /// Is this a replica key of a multi-Region key?
    pub fn is_replica(&self) -> bool {
        self.key_id.is_multi_region() && !self.is_primary()
    }

    /// `PRIMARY` or `REPLICA` for a multi-Region key.
    pub fn multi_region_key_type(&self) -> Option<&'static str> {
        if !self.key_id.is_multi_region() {
            None
        } else if self.is_primary() {
            Some("PRIMARY")
        } else {
            Some("REPLICA")
        }
    }

    pub fn is_aws_managed(&self) -> bool {
        self.key_manager == KeyManager::Aws
    }

    /// Applies the key-state effect table for `rule`, with AWS's messages.
    pub fn check_state(&self, rule: StateRule) -> KmsResult<()> {
        let arn = self.arn();
        let pending_deletion = || KmsError::invalid_state(format!("{arn} is pending deletion."));
        let pending_import = || KmsError::invalid_state(format!("{arn} is pending import."));
        let pending_replica_deletion = || {
            KmsError::invalid_state(format!(
                "{arn} is pending deletion: it is deleted after its replica keys are."
            ))
        };
        let disabled =
            || KmsError::new(ErrorCode::DisabledException, format!("{arn} is disabled."));
        match (rule, self.state) {
            (StateRule::Any, _) => Ok(()),
            (StateRule::Use | StateRule::Rotate, KeyState::Enabled) => Ok(()),
            (StateRule::Use | StateRule::Rotate, KeyState::Disabled) => Err(disabled()),
            (StateRule::Manage, KeyState::Enabled | KeyState::Disabled) => Ok(()),
            (StateRule::Manage, KeyState::PendingImport) if self.origin == Origin::External => {
                Ok(())
            }
            (StateRule::Schedule, KeyState::PendingDeletion) => Err(pending_deletion()),
            (StateRule::Schedule, KeyState::PendingReplicaDeletion) => {
                Err(pending_replica_deletion())
            }
            (StateRule::Schedule, _) => Ok(()),
            (StateRule::Cancel, KeyState::PendingDeletion | KeyState::PendingReplicaDeletion) => {
                Ok(())
            }
            (StateRule::Cancel, _) => Err(KmsError::invalid_state(format!(
                "{arn} is not pending deletion."
            ))),
            (_, KeyState::PendingDeletion) => Err(pending_deletion()),
            (_, KeyState::PendingImport) => Err(pending_import()),
            (_, KeyState::PendingReplicaDeletion) => Err(pending_replica_deletion()),
        }
    }

    /// The AWS `KeyMetadata` object (timestamps as epoch seconds).
    pub fn metadata(&self, algorithms: &AlgorithmLists) -> Value {
        let mut m = json!({
            "AWSAccountId": self.account,
            "KeyId": self.key_id.to_string(),
            "Arn": self.arn(),
            "CreationDate": self.created,
            "Enabled": self.state == KeyState::Enabled,
            "Description": self.description,
            "KeyUsage": self.key_usage,
            "KeyState": self.state.as_str(),
            "Origin": self.origin,
            "KeyManager": self.key_manager,
            "KeySpec": self.key_spec,
            "MultiRegion": self.key_id.is_multi_region(),
        });
        let obj = m.as_object_mut();
        if let Some(obj) = obj {
            // The deprecated field, for the specs its enum has.
            let cmk_spec = self.key_spec.customer_master_key_spec();
            if let Some(s) = cmk_spec {
                obj.insert("CustomerMasterKeySpec".into(), json!(s));
            }
            if let Some(d) = self.deletion_date {
                obj.insert("DeletionDate".into(), json!(d));
            }
            if let Some(w) = self.pending_window {
                if self.state == KeyState::PendingDeletion {
                    obj.insert("PendingDeletionWindowInDays".into(), json!(w));
                }
            }
            if let Some(v) = self.valid_to {
                obj.insert("ValidTo".into(), json!(v));
            }
            if let Some(e) = &self.expiration_model {
                obj.insert("ExpirationModel".into(), json!(e));
            }
            for (name, list) in [
                ("EncryptionAlgorithms", &algorithms.encryption),
                ("SigningAlgorithms", &algorithms.signing),
                ("MacAlgorithms", &algorithms.mac),
                ("KeyAgreementAlgorithms", &algorithms.key_agreement),
            ] {
                if !list.is_empty() {
                    obj.insert(name.into(), json!(list));
                }
            }
        }
        m
    }
}

/// The algorithm lists DescribeKey and GetPublicKey report for a key.
#[derive(Debug, Clone, Default)]
pub struct AlgorithmLists {
    pub encryption: Vec<String>,
    pub signing: Vec<String>,
    pub mac: Vec<String>,
    pub key_agreement: Vec<String>,
}

impl AlgorithmLists {
    pub fn symmetric() -> Self {
        AlgorithmLists {
            encryption: vec!["SYMMETRIC_DEFAULT".into()],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: KeyState) -> KeyRecord {
        KeyRecord {
            key_id: KeyId::generate(),
            account: AccountId::default_account(),
            region: Region::default_region(),
            description: String::new(),
            key_spec: KeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            origin: Origin::AwsKms,
            key_manager: KeyManager::Customer,
            state,
            created: 0,
            deletion_date: None,
            pending_window: None,
            state_before_deletion: None,
            rotation_enabled: false,
            rotation_period: None,
            next_rotation: None,
            on_demand_rotations: 0,
            policy: String::new(),
            valid_to: None,
            expiration_model: None,
            public_key: None,
            primary_region: None,
        }
    }

    #[test]
    fn state_table() {
        use KeyState::*;
        use StateRule::*;
        let code = |s, r| key(s).check_state(r).err().map(|e| e.code);
        assert_eq!(code(Enabled, Use), None);
        assert_eq!(code(Disabled, Use), Some(ErrorCode::DisabledException));
        assert_eq!(
            code(PendingDeletion, Use),
            Some(ErrorCode::KMSInvalidStateException)
        );
        assert_eq!(
            code(PendingImport, Use),
            Some(ErrorCode::KMSInvalidStateException)
        );
        assert_eq!(code(Disabled, Manage), None);
        assert_eq!(
            code(PendingDeletion, Manage),
            Some(ErrorCode::KMSInvalidStateException)
        );
        assert_eq!(code(PendingDeletion, Any), None);
        assert_eq!(
            code(PendingDeletion, Schedule),
            Some(ErrorCode::KMSInvalidStateException)
        );
        assert_eq!(code(Disabled, Schedule), None);
        assert_eq!(
            code(Enabled, Cancel),
            Some(ErrorCode::KMSInvalidStateException)
        );
        assert_eq!(code(PendingDeletion, Cancel), None);
        assert_eq!(code(Disabled, Rotate), Some(ErrorCode::DisabledException));
        let msg = key(Disabled).check_state(Use).unwrap_err().message;
        assert!(msg.ends_with(" is disabled."), "{msg}");
    }
}
