//! Request and response shapes of the KMS operations, with the AWS API's
//! field names (PascalCase, blobs as base64), shared by the library's typed
//! functions, the CLI and the HTTP server.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::ciphertext::EncryptionContext;
use crate::secret::SecretBytes;

/// A public binary value (ciphertext, public key, signature): base64 in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64_encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        b64_decode(&s)
            .map(Blob)
            .ok_or_else(|| serde::de::Error::custom("blob is not valid base64"))
    }
}

/// A secret binary value (plaintext, data key): base64 in JSON, zeroized
/// on drop, redacted in Debug.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretBlob(pub SecretBytes);

impl Serialize for SecretBlob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let enc = zeroize::Zeroizing::new(b64_encode(self.0.expose()));
        s.serialize_str(&enc)
    }
}

impl<'de> Deserialize<'de> for SecretBlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = zeroize::Zeroizing::new(String::deserialize(d)?);
        b64_decode(&s)
            .map(|v| SecretBlob(SecretBytes::new(v)))
            .ok_or_else(|| serde::de::Error::custom("blob is not valid base64"))
    }
}

pub fn b64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

/// Declares a request struct: AWS field names, every field optional.
#[macro_export]
#[doc(hidden)]
macro_rules! request_struct {
    ($(#[$m:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, Deserialize, Serialize)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name {
            $(#[serde(default, skip_serializing_if = "Option::is_none")] pub $field: Option<$ty>,)*
        }
    };
}

request_struct!(CreateKeyRequest {
    policy: String,
    description: String,
    key_usage: String,
    key_spec: String,
    customer_master_key_spec: String,
    origin: String,
    bypass_policy_lockout_safety_check: bool,
    tags: Vec<Tag>,
    multi_region: bool,
});
request_struct!(KeyIdRequest { key_id: String, grant_tokens: Vec<String> });
request_struct!(ListRequest {
    limit: i64,
    marker: String,
    key_id: String
});
request_struct!(ListKeyRotationsRequest {
    limit: i64,
    marker: String,
    key_id: String,
    include_key_material: String,
});
request_struct!(UpdateKeyDescriptionRequest {
    key_id: String,
    description: String
});
request_struct!(ScheduleKeyDeletionRequest {
    key_id: String,
    pending_window_in_days: i64
});
request_struct!(EncryptRequest {
    key_id: String,
    plaintext: SecretBlob,
    encryption_context: EncryptionContext,
    encryption_algorithm: String,
    grant_tokens: Vec<String>,
    dry_run: bool,
});
request_struct!(DecryptRequest {
    key_id: String,
    ciphertext_blob: Blob,
    encryption_context: EncryptionContext,
    encryption_algorithm: String,
    grant_tokens: Vec<String>,
    dry_run: bool,
});
request_struct!(ReEncryptRequest {
    ciphertext_blob: Blob,
    source_encryption_context: EncryptionContext,
    source_key_id: String,
    destination_key_id: String,
    destination_encryption_context: EncryptionContext,
    source_encryption_algorithm: String,
    destination_encryption_algorithm: String,
    grant_tokens: Vec<String>,
    dry_run: bool,
});
request_struct!(GenerateDataKeyRequest {
    key_id: String,
    encryption_context: EncryptionContext,
    number_of_bytes: i64,
    key_spec: String,
    grant_tokens: Vec<String>,
    dry_run: bool,
});
request_struct!(GenerateRandomRequest {
    number_of_bytes: i64,
    custom_key_store_id: String
});
request_struct!(AliasRequest {
    alias_name: String,
    target_key_id: String
});
request_struct!(EnableKeyRotationRequest {
    key_id: String,
    rotation_period_in_days: i64
});
request_struct!(TagResourceRequest { key_id: String, tags: Vec<Tag> });
request_struct!(UntagResourceRequest { key_id: String, tag_keys: Vec<String> });
request_struct!(KeyPolicyRequest {
    key_id: String,
    policy_name: String,
    policy: String,
    bypass_policy_lockout_safety_check: bool,
});

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadataResponse {
    pub key_metadata: Value,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    pub ciphertext_blob: Blob,
    pub key_id: String,
    pub encryption_algorithm: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    pub key_id: String,
    pub plaintext: SecretBlob,
    pub encryption_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    pub ciphertext_blob: Blob,
    pub source_key_id: String,
    pub key_id: String,
    pub source_encryption_algorithm: String,
    pub destination_encryption_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_key_material_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    pub ciphertext_blob: Blob,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretBlob>,
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    pub plaintext: SecretBlob,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    pub key_id: String,
    /// Absent for a multi-Region primary key with replicas: its waiting
    /// period starts when its last replica is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<i64>,
    pub key_state: String,
    pub pending_window_in_days: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdResponse {
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysEntry {
    pub key_id: String,
    pub key_arn: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    pub keys: Vec<ListKeysEntry>,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasEntry {
    pub alias_name: String,
    pub alias_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_date: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasEntry>,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyRotationStatusResponse {
    pub key_id: String,
    pub key_rotation_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<i64>,
}

/// RotationsListEntry: one key material of a key.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEntry {
    pub key_id: String,
    pub key_material_id: String,
    /// The fields from here to `valid_to` are for symmetric keys with
    /// imported material only (`key_material_state`: every key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_material_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_material_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<i64>,
    /// Absent for the first material and material pending rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_type: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsResponse {
    pub rotations: Vec<RotationEntry>,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTagsResponse {
    pub tags: Vec<Tag>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyPolicyResponse {
    pub policy: String,
    pub policy_name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesResponse {
    pub policy_names: Vec<String>,
    pub truncated: bool,
}

/// An empty response (`{}`), for operations AWS answers with nothing.
#[derive(Debug, Clone, Serialize)]
pub struct Empty {}

/// Response fields that are timestamps (epoch seconds on the wire; the
/// CLI prints them as RFC 3339, as the aws CLI does).
pub const TIMESTAMP_FIELDS: &[&str] = &[
    "CreationDate",
    "DeletionDate",
    "ValidTo",
    "LastUpdatedDate",
    "NextRotationDate",
    "RotationDate",
    "OnDemandRotationStartDate",
    "ParametersValidTo",
    "eventTime",
];
