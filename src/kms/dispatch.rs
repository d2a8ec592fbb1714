//! The JSON entry point: one operation name and its AWS request body in,
//! the AWS response body out. The CLI and the HTTP server both use it.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::{ErrorCode, Kms, KmsError, KmsResult, RequestContext};

fn parse<T: DeserializeOwned>(operation: &str, v: Value) -> KmsResult<T> {
    serde_json::from_value(v).map_err(|e| {
        KmsError::new(
            ErrorCode::SerializationException,
            format!("The request body of {operation} does not match its shape: {e}"),
        )
    })
}

fn out<T: Serialize>(r: KmsResult<T>) -> KmsResult<Value> {
    r.and_then(|v| serde_json::to_value(v).map_err(|e| KmsError::internal(e.to_string())))
}

macro_rules! operations {
    ($($name:literal => $method:ident),* $(,)?) => {
        /// Every operation the KMS serves, by its AWS name.
        pub const OPERATIONS: &[&str] = &[$($name),*];

        impl Kms {
            /// Runs `operation` with an AWS JSON request body.
            pub fn call(&self, ctx: &RequestContext, operation: &str, request: Value) -> KmsResult<Value> {
                let request = if request.is_null() { Value::Object(Default::default()) } else { request };
                if !request.is_object() {
                    return Err(KmsError::new(ErrorCode::SerializationException, "The request body must be a JSON object."));
                }
                if let Some(tokens) = request.get("GrantTokens") {
                    super::grants::check_grant_tokens(tokens)?;
                }
                match operation {
                    $($name => out(self.$method(ctx, parse(operation, request)?)),)*
                    other => Err(KmsError::new(
                        ErrorCode::UnknownOperationException,
                        format!("Unknown operation {other}"),
                    )),
                }
            }
        }
    };
}

operations! {
    "CreateKey" => create_key,
    "DescribeKey" => describe_key,
    "ListKeys" => list_keys,
    "UpdateKeyDescription" => update_key_description,
    "EnableKey" => enable_key,
    "DisableKey" => disable_key,
    "ScheduleKeyDeletion" => schedule_key_deletion,
    "CancelKeyDeletion" => cancel_key_deletion,
    "Encrypt" => encrypt,
    "Decrypt" => decrypt,
    "ReEncrypt" => re_encrypt,
    "GenerateDataKey" => generate_data_key,
    "GenerateDataKeyWithoutPlaintext" => generate_data_key_without_plaintext,
    "GenerateRandom" => generate_random,
    "CreateAlias" => create_alias,
    "UpdateAlias" => update_alias,
    "DeleteAlias" => delete_alias,
    "ListAliases" => list_aliases,
    "EnableKeyRotation" => enable_key_rotation,
    "DisableKeyRotation" => disable_key_rotation,
    "GetKeyRotationStatus" => get_key_rotation_status,
    "RotateKeyOnDemand" => rotate_key_on_demand,
    "ListKeyRotations" => list_key_rotations,
    "TagResource" => tag_resource,
    "UntagResource" => untag_resource,
    "ListResourceTags" => list_resource_tags,
    "GetKeyPolicy" => get_key_policy,
    "PutKeyPolicy" => put_key_policy,
    "ListKeyPolicies" => list_key_policies,
    "CreateGrant" => create_grant,
    "ListGrants" => list_grants,
    "ListRetirableGrants" => list_retirable_grants,
    "RetireGrant" => retire_grant,
    "RevokeGrant" => revoke_grant,
    "GetPublicKey" => get_public_key,
    "Sign" => sign,
    "Verify" => verify,
    "GenerateMac" => generate_mac,
    "VerifyMac" => verify_mac,
    "GenerateDataKeyPair" => generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext" => generate_data_key_pair_without_plaintext,
    "DeriveSharedSecret" => derive_shared_secret,
    "GetParametersForImport" => get_parameters_for_import,
    "ImportKeyMaterial" => import_key_material,
    "DeleteImportedKeyMaterial" => delete_imported_key_material,
    "GetKeyLastUsage" => get_key_last_usage,
    "DescribeCustomKeyStores" => describe_custom_key_stores,
    "CreateCustomKeyStore" => create_custom_key_store,
    "ConnectCustomKeyStore" => connect_custom_key_store,
    "DisconnectCustomKeyStore" => disconnect_custom_key_store,
    "DeleteCustomKeyStore" => delete_custom_key_store,
    "UpdateCustomKeyStore" => update_custom_key_store,
    "Encapsulate" => encapsulate,
    "Decapsulate" => decapsulate,
    "ReplicateKey" => replicate_key,
    "UpdatePrimaryRegion" => update_primary_region,
}
