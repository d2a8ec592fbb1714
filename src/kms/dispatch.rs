//! The operations of the KMS, each declared once in the table below: its
//! AWS name, the typed method of `Kms`, its request and response shapes,
//! the body in `ops` that does its work, and the work it prepares before
//! its transaction (`prepare`). The table makes the typed methods (each
//! runs its body through `Kms::run`: one transaction, one authorization
//! point, one audit record) and `Kms::call`, the JSON entry point the CLI
//! and the HTTP server use: one operation name and its AWS request body in,
//! the AWS response body out.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::api::*;
use super::ops::asym::*;
use super::ops::import::{
    pregenerate_wrapping_key, DeleteImportedKeyMaterialRequest, GetParametersForImportRequest,
    GetParametersForImportResponse, ImportKeyMaterialRequest, ImportKeyMaterialResponse,
};
use super::ops::multi_region::{
    ReplicateKeyRequest, ReplicateKeyResponse, UpdatePrimaryRegionRequest,
};
use super::ops::{
    pregenerate_key, to_audit, CreateGrantRequest, CustomKeyStoreRequest, KeyOnlyRequest,
    ListGrantsRequest, ListRetirableGrantsRequest, RetireGrantRequest, RevokeGrantRequest,
};
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

/// One typed operation: its body run by `Kms::run`, after the work it
/// prepares outside the transaction, if any.
macro_rules! run_operation {
    ($kms:expr, $ctx:expr, $name:literal, $req:ident, $body:ident) => {
        $kms.run($ctx, $name, to_audit(&$req), |op| $kms.$body(op, &$req))
    };
    ($kms:expr, $ctx:expr, $name:literal, $req:ident, $body:ident, $prepare:ident) => {{
        let mut prepared = $prepare(&$req);
        $kms.run($ctx, $name, to_audit(&$req), |op| {
            $kms.$body(op, &$req, &mut prepared)
        })
    }};
}

macro_rules! operations {
    ($($name:literal => $method:ident($req:ty) -> $resp:ty, $body:ident $(, prepare $prepare:ident)?;)*) => {
        /// Every operation the KMS serves, by its AWS name.
        pub const OPERATIONS: &[&str] = &[$($name),*];

        impl Kms {
            $(
                #[doc = concat!("The AWS KMS operation `", $name, "`.")]
                pub fn $method(&self, ctx: &RequestContext, req: $req) -> KmsResult<$resp> {
                    run_operation!(self, ctx, $name, req, $body $(, $prepare)?)
                }
            )*

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
    "CreateKey" => create_key(CreateKeyRequest) -> KeyMetadataResponse, create_key_body, prepare pregenerate_key;
    "DescribeKey" => describe_key(KeyIdRequest) -> KeyMetadataResponse, describe_key_body;
    "ListKeys" => list_keys(ListRequest) -> ListKeysResponse, list_keys_body;
    "UpdateKeyDescription" => update_key_description(UpdateKeyDescriptionRequest) -> Empty, update_key_description_body;
    "EnableKey" => enable_key(KeyIdRequest) -> Empty, enable_key_body;
    "DisableKey" => disable_key(KeyIdRequest) -> Empty, disable_key_body;
    "ScheduleKeyDeletion" => schedule_key_deletion(ScheduleKeyDeletionRequest) -> ScheduleKeyDeletionResponse, schedule_key_deletion_body;
    "CancelKeyDeletion" => cancel_key_deletion(KeyIdRequest) -> KeyIdResponse, cancel_key_deletion_body;
    "Encrypt" => encrypt(EncryptRequest) -> EncryptResponse, encrypt_body;
    "Decrypt" => decrypt(DecryptRequest) -> DecryptResponse, decrypt_body;
    "ReEncrypt" => re_encrypt(ReEncryptRequest) -> ReEncryptResponse, re_encrypt_body;
    "GenerateDataKey" => generate_data_key(GenerateDataKeyRequest) -> GenerateDataKeyResponse, generate_data_key_body;
    "GenerateDataKeyWithoutPlaintext" => generate_data_key_without_plaintext(GenerateDataKeyRequest) -> GenerateDataKeyResponse, generate_data_key_without_plaintext_body;
    "GenerateRandom" => generate_random(GenerateRandomRequest) -> GenerateRandomResponse, generate_random_body;
    "CreateAlias" => create_alias(AliasRequest) -> Empty, create_alias_body;
    "UpdateAlias" => update_alias(AliasRequest) -> Empty, update_alias_body;
    "DeleteAlias" => delete_alias(AliasRequest) -> Empty, delete_alias_body;
    "ListAliases" => list_aliases(ListRequest) -> ListAliasesResponse, list_aliases_body;
    "EnableKeyRotation" => enable_key_rotation(EnableKeyRotationRequest) -> Empty, enable_key_rotation_body;
    "DisableKeyRotation" => disable_key_rotation(KeyIdRequest) -> Empty, disable_key_rotation_body;
    "GetKeyRotationStatus" => get_key_rotation_status(KeyIdRequest) -> KeyRotationStatusResponse, get_key_rotation_status_body;
    "RotateKeyOnDemand" => rotate_key_on_demand(KeyIdRequest) -> KeyIdResponse, rotate_key_on_demand_body;
    "ListKeyRotations" => list_key_rotations(ListKeyRotationsRequest) -> ListKeyRotationsResponse, list_key_rotations_body;
    "TagResource" => tag_resource(TagResourceRequest) -> Empty, tag_resource_body;
    "UntagResource" => untag_resource(UntagResourceRequest) -> Empty, untag_resource_body;
    "ListResourceTags" => list_resource_tags(ListRequest) -> ListTagsResponse, list_resource_tags_body;
    "GetKeyPolicy" => get_key_policy(KeyPolicyRequest) -> KeyPolicyResponse, get_key_policy_body;
    "PutKeyPolicy" => put_key_policy(KeyPolicyRequest) -> Empty, put_key_policy_body;
    "ListKeyPolicies" => list_key_policies(ListRequest) -> ListKeyPoliciesResponse, list_key_policies_body;
    "CreateGrant" => create_grant(CreateGrantRequest) -> Value, create_grant_body;
    "ListGrants" => list_grants(ListGrantsRequest) -> Value, list_grants_body;
    "ListRetirableGrants" => list_retirable_grants(ListRetirableGrantsRequest) -> Value, list_retirable_grants_body;
    "RetireGrant" => retire_grant(RetireGrantRequest) -> Empty, retire_grant_body;
    "RevokeGrant" => revoke_grant(RevokeGrantRequest) -> Empty, revoke_grant_body;
    "GetPublicKey" => get_public_key(GetPublicKeyRequest) -> GetPublicKeyResponse, get_public_key_body;
    "Sign" => sign(SignRequest) -> SignResponse, sign_body;
    "Verify" => verify(VerifyRequest) -> VerifyResponse, verify_body;
    "GenerateMac" => generate_mac(GenerateMacRequest) -> GenerateMacResponse, generate_mac_body;
    "VerifyMac" => verify_mac(VerifyMacRequest) -> VerifyMacResponse, verify_mac_body;
    "GenerateDataKeyPair" => generate_data_key_pair(GenerateDataKeyPairRequest) -> GenerateDataKeyPairResponse, generate_data_key_pair_body, prepare pregenerate_data_key_pair;
    "GenerateDataKeyPairWithoutPlaintext" => generate_data_key_pair_without_plaintext(GenerateDataKeyPairRequest) -> GenerateDataKeyPairResponse, generate_data_key_pair_without_plaintext_body, prepare pregenerate_data_key_pair;
    "DeriveSharedSecret" => derive_shared_secret(DeriveSharedSecretRequest) -> DeriveSharedSecretResponse, derive_shared_secret_body;
    "GetParametersForImport" => get_parameters_for_import(GetParametersForImportRequest) -> GetParametersForImportResponse, get_parameters_for_import_body, prepare pregenerate_wrapping_key;
    "ImportKeyMaterial" => import_key_material(ImportKeyMaterialRequest) -> ImportKeyMaterialResponse, import_key_material_body;
    "DeleteImportedKeyMaterial" => delete_imported_key_material(DeleteImportedKeyMaterialRequest) -> ImportKeyMaterialResponse, delete_imported_key_material_body;
    "GetKeyLastUsage" => get_key_last_usage(KeyOnlyRequest) -> Value, get_key_last_usage_body;
    "DescribeCustomKeyStores" => describe_custom_key_stores(CustomKeyStoreRequest) -> Value, describe_custom_key_stores_body;
    "CreateCustomKeyStore" => create_custom_key_store(CustomKeyStoreRequest) -> Value, create_custom_key_store_body;
    "ConnectCustomKeyStore" => connect_custom_key_store(CustomKeyStoreRequest) -> Value, custom_key_store_by_id_body;
    "DisconnectCustomKeyStore" => disconnect_custom_key_store(CustomKeyStoreRequest) -> Value, custom_key_store_by_id_body;
    "DeleteCustomKeyStore" => delete_custom_key_store(CustomKeyStoreRequest) -> Value, custom_key_store_by_id_body;
    "UpdateCustomKeyStore" => update_custom_key_store(CustomKeyStoreRequest) -> Value, custom_key_store_by_id_body;
    "Encapsulate" => encapsulate(KeyOnlyRequest) -> Value, encapsulate_body;
    "Decapsulate" => decapsulate(KeyOnlyRequest) -> Value, decapsulate_body;
    "ReplicateKey" => replicate_key(ReplicateKeyRequest) -> ReplicateKeyResponse, replicate_key_body;
    "UpdatePrimaryRegion" => update_primary_region(UpdatePrimaryRegionRequest) -> Empty, update_primary_region_body;
}
