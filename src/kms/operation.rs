//! Every KMS operation, declared once: its AWS name, the typed `Kms`
//! method that serves it with its request and response shapes, the body in
//! `ops/` that does its work (and what is prepared before its transaction),
//! whether it changes state, a one-line summary and the request members
//! keyvol honours. Everything else that lists operations derives from this
//! table: the typed methods and the JSON dispatch (`dispatch.rs`), the read
//! path and the audit's `readOnly` (`service.rs`), the metrics' label set,
//! and the `keyvol kms` commands with their flags, help and man pages.
//!
//! The table is a macro (`kms_operations!`) that hands its rows to another
//! macro, so that `dispatch.rs` can build its `match` from the same rows
//! that [`Operation::ALL`] is built from here; this module names no
//! method, it only passes the identifiers through.

/// Whether an operation changes state beyond its own audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Changes nothing but the audit log (CloudTrail marks it `readOnly`).
    /// It runs on a read connection when the writer is busy and commits
    /// without an fsync (see `service.rs`).
    ReadOnly,
    /// Changes keys, aliases, grants, policies or import state; commits
    /// durably on the write connection.
    ReadWrite,
}

/// A request member of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The AWS member name (`KeyId`); the aws CLI flag is its kebab case.
    pub name: &'static str,
    /// AWS requires it.
    pub required: bool,
}

/// One KMS operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// The AWS operation name (`GenerateRandom`).
    pub name: &'static str,
    pub access: Access,
    /// What it does, in one line (the `keyvol kms` command's help).
    pub summary: &'static str,
    /// The request members keyvol honours, in the aws CLI's order. `None`
    /// for an operation of a feature keyvol does not offer (custom key
    /// stores, ML-KEM): it is answered as AWS answers an account without
    /// the feature, and has no `keyvol kms` command.
    pub members: Option<&'static [Member]>,
    /// Work is done before the operation's transaction (a key generated,
    /// an RSA key pair: up to seconds), outside the write connection.
    pub prepared: bool,
}

impl Operation {
    /// The operation named `name` (its AWS name).
    pub fn named(name: &str) -> Option<&'static Operation> {
        Operation::ALL.iter().find(|o| o.name == name)
    }

    /// The operation is offered, with a `keyvol kms` command.
    pub fn offered(&self) -> bool {
        self.members.is_some()
    }
}

/// `name` is a read-only operation; an unknown name is not.
pub(crate) fn is_read_only(name: &str) -> bool {
    Operation::named(name).is_some_and(|o| o.access == Access::ReadOnly)
}

/// `name` has work done before its transaction; an unknown name has not.
pub(crate) fn is_prepared(name: &str) -> bool {
    Operation::named(name).is_some_and(|o| o.prepared)
}

/// The rows of the table, handed to the macro `$then`:
/// `"AwsName" => method(Request) -> Response, body [prepared_by prepare],
/// Access, "summary", [Member, Member: required, ...];` where `body` is the
/// `Kms` method in `ops/` that does the work inside the transaction and
/// `prepare` what is made before it (slow key generation, outside the write
/// lock),
/// or `..., absent;` for an operation of a feature keyvol does not offer.
macro_rules! kms_operations {
    ($then:ident) => {
        $then! {
            "CreateKey" => create_key(CreateKeyRequest) -> KeyMetadataResponse, create_key_body prepared_by pregenerate_key, ReadWrite,
                "Create a KMS key (symmetric, asymmetric, HMAC, or for imported key material)",
                [Policy, Description, KeyUsage, KeySpec, CustomerMasterKeySpec, Origin,
                 BypassPolicyLockoutSafetyCheck, Tags, MultiRegion];
            "DescribeKey" => describe_key(KeyIdRequest) -> KeyMetadataResponse, describe_key_body, ReadOnly,
                "Show the metadata of a KMS key",
                [KeyId: required, GrantTokens];
            "ListKeys" => list_keys(ListRequest) -> ListKeysResponse, list_keys_body, ReadOnly,
                "List the KMS keys of the account in the region",
                [Limit, Marker];
            "UpdateKeyDescription" => update_key_description(UpdateKeyDescriptionRequest) -> Empty, update_key_description_body, ReadWrite,
                "Replace the description of a KMS key",
                [KeyId: required, Description: required];
            "EnableKey" => enable_key(KeyIdRequest) -> Empty, enable_key_body, ReadWrite,
                "Enable a disabled KMS key",
                [KeyId: required];
            "DisableKey" => disable_key(KeyIdRequest) -> Empty, disable_key_body, ReadWrite,
                "Disable a KMS key: its cryptographic operations fail until it is enabled",
                [KeyId: required];
            "ScheduleKeyDeletion" => schedule_key_deletion(ScheduleKeyDeletionRequest) -> ScheduleKeyDeletionResponse, schedule_key_deletion_body, ReadWrite,
                "Delete a KMS key after a waiting period of 7 to 30 days",
                [KeyId: required, PendingWindowInDays];
            "CancelKeyDeletion" => cancel_key_deletion(KeyIdRequest) -> KeyIdResponse, cancel_key_deletion_body, ReadWrite,
                "Cancel the scheduled deletion of a KMS key (it stays disabled)",
                [KeyId: required];
            "Encrypt" => encrypt(EncryptRequest) -> EncryptResponse, encrypt_body, ReadOnly,
                "Encrypt up to 4,096 bytes under a KMS key",
                [KeyId: required, Plaintext: required, EncryptionContext, EncryptionAlgorithm,
                 GrantTokens, DryRun];
            "Decrypt" => decrypt(DecryptRequest) -> DecryptResponse, decrypt_body, ReadOnly,
                "Decrypt a ciphertext of Encrypt, GenerateDataKey or GenerateDataKeyPair",
                [CiphertextBlob: required, KeyId, EncryptionContext, EncryptionAlgorithm,
                 GrantTokens, DryRun];
            "ReEncrypt" => re_encrypt(ReEncryptRequest) -> ReEncryptResponse, re_encrypt_body, ReadOnly,
                "Decrypt a ciphertext and encrypt it under another KMS key, inside the KMS",
                [CiphertextBlob: required, SourceEncryptionContext, SourceKeyId,
                 DestinationKeyId: required, DestinationEncryptionContext,
                 SourceEncryptionAlgorithm, DestinationEncryptionAlgorithm, GrantTokens, DryRun];
            "GenerateDataKey" => generate_data_key(GenerateDataKeyRequest) -> GenerateDataKeyResponse, generate_data_key_body, ReadOnly,
                "Generate a data key: its plaintext and a copy encrypted under a KMS key",
                [KeyId: required, EncryptionContext, NumberOfBytes, KeySpec, GrantTokens, DryRun];
            "GenerateDataKeyWithoutPlaintext" => generate_data_key_without_plaintext(GenerateDataKeyRequest) -> GenerateDataKeyResponse, generate_data_key_without_plaintext_body, ReadOnly,
                "Generate a data key encrypted under a KMS key, without its plaintext",
                [KeyId: required, EncryptionContext, NumberOfBytes, KeySpec, GrantTokens, DryRun];
            "GenerateRandom" => generate_random(GenerateRandomRequest) -> GenerateRandomResponse, generate_random_body, ReadOnly,
                "Generate random bytes",
                [NumberOfBytes, CustomKeyStoreId];
            "CreateAlias" => create_alias(AliasRequest) -> Empty, create_alias_body, ReadWrite,
                "Create an alias (alias/NAME) of a KMS key",
                [AliasName: required, TargetKeyId: required];
            "UpdateAlias" => update_alias(AliasRequest) -> Empty, update_alias_body, ReadWrite,
                "Point an alias at another KMS key",
                [AliasName: required, TargetKeyId: required];
            "DeleteAlias" => delete_alias(AliasRequest) -> Empty, delete_alias_body, ReadWrite,
                "Delete an alias (its KMS key stays)",
                [AliasName: required];
            "ListAliases" => list_aliases(ListRequest) -> ListAliasesResponse, list_aliases_body, ReadOnly,
                "List the aliases of the account, or of one KMS key",
                [KeyId, Limit, Marker];
            "EnableKeyRotation" => enable_key_rotation(EnableKeyRotationRequest) -> Empty, enable_key_rotation_body, ReadWrite,
                "Turn on automatic rotation of the key material of a KMS key",
                [KeyId: required, RotationPeriodInDays];
            "DisableKeyRotation" => disable_key_rotation(KeyIdRequest) -> Empty, disable_key_rotation_body, ReadWrite,
                "Turn off automatic rotation of the key material of a KMS key",
                [KeyId: required];
            "GetKeyRotationStatus" => get_key_rotation_status(KeyIdRequest) -> KeyRotationStatusResponse, get_key_rotation_status_body, ReadOnly,
                "Show whether a KMS key rotates automatically, and when next",
                [KeyId: required];
            "RotateKeyOnDemand" => rotate_key_on_demand(KeyIdRequest) -> KeyIdResponse, rotate_key_on_demand_body, ReadWrite,
                "Rotate the key material of a KMS key now",
                [KeyId: required];
            "ListKeyRotations" => list_key_rotations(ListKeyRotationsRequest) -> ListKeyRotationsResponse, list_key_rotations_body, ReadOnly,
                "List the completed rotations of a KMS key",
                [KeyId: required, IncludeKeyMaterial, Limit, Marker];
            "TagResource" => tag_resource(TagResourceRequest) -> Empty, tag_resource_body, ReadWrite,
                "Add or replace tags of a KMS key",
                [KeyId: required, Tags: required];
            "UntagResource" => untag_resource(UntagResourceRequest) -> Empty, untag_resource_body, ReadWrite,
                "Remove tags from a KMS key",
                [KeyId: required, TagKeys: required];
            "ListResourceTags" => list_resource_tags(ListRequest) -> ListTagsResponse, list_resource_tags_body, ReadOnly,
                "List the tags of a KMS key",
                [KeyId: required, Limit, Marker];
            "GetKeyPolicy" => get_key_policy(KeyPolicyRequest) -> KeyPolicyResponse, get_key_policy_body, ReadOnly,
                "Show the key policy of a KMS key",
                [KeyId: required, PolicyName];
            "PutKeyPolicy" => put_key_policy(KeyPolicyRequest) -> Empty, put_key_policy_body, ReadWrite,
                "Replace the key policy of a KMS key",
                [KeyId: required, PolicyName, Policy: required, BypassPolicyLockoutSafetyCheck];
            "ListKeyPolicies" => list_key_policies(ListRequest) -> ListKeyPoliciesResponse, list_key_policies_body, ReadOnly,
                "List the policy names of a KMS key (only `default`)",
                [KeyId: required, Limit, Marker];
            "CreateGrant" => create_grant(CreateGrantRequest) -> Value, create_grant_body, ReadWrite,
                "Let a principal use a KMS key for some operations (a grant)",
                [KeyId: required, GranteePrincipal: required, RetiringPrincipal,
                 Operations: required, Constraints, GrantTokens, Name, DryRun];
            "ListGrants" => list_grants(ListGrantsRequest) -> Value, list_grants_body, ReadOnly,
                "List the grants of a KMS key",
                [KeyId: required, GrantId, GranteePrincipal, Limit, Marker];
            "ListRetirableGrants" => list_retirable_grants(ListRetirableGrantsRequest) -> Value, list_retirable_grants_body, ReadOnly,
                "List the grants that a principal may retire",
                [RetiringPrincipal: required, Limit, Marker];
            "RetireGrant" => retire_grant(RetireGrantRequest) -> Empty, retire_grant_body, ReadWrite,
                "Retire a grant, by its token or by its key and id",
                [GrantToken, KeyId, GrantId, DryRun];
            "RevokeGrant" => revoke_grant(RevokeGrantRequest) -> Empty, revoke_grant_body, ReadWrite,
                "Revoke a grant of a KMS key",
                [KeyId: required, GrantId: required, DryRun];
            "GetPublicKey" => get_public_key(GetPublicKeyRequest) -> GetPublicKeyResponse, get_public_key_body, ReadOnly,
                "Show the public key of an asymmetric KMS key",
                [KeyId: required, GrantTokens];
            "Sign" => sign(SignRequest) -> SignResponse, sign_body, ReadOnly,
                "Sign a message or digest with an asymmetric KMS key",
                [KeyId: required, Message: required, MessageType, GrantTokens,
                 SigningAlgorithm: required, DryRun];
            "Verify" => verify(VerifyRequest) -> VerifyResponse, verify_body, ReadOnly,
                "Verify a signature with an asymmetric KMS key",
                [KeyId: required, Message: required, MessageType, Signature: required,
                 SigningAlgorithm: required, GrantTokens, DryRun];
            "GenerateMac" => generate_mac(GenerateMacRequest) -> GenerateMacResponse, generate_mac_body, ReadOnly,
                "Compute the HMAC of a message with an HMAC KMS key",
                [Message: required, KeyId: required, MacAlgorithm: required, GrantTokens, DryRun];
            "VerifyMac" => verify_mac(VerifyMacRequest) -> VerifyMacResponse, verify_mac_body, ReadOnly,
                "Verify the HMAC of a message with an HMAC KMS key",
                [Message: required, KeyId: required, MacAlgorithm: required, Mac: required,
                 GrantTokens, DryRun];
            "GenerateDataKeyPair" => generate_data_key_pair(GenerateDataKeyPairRequest) -> GenerateDataKeyPairResponse, generate_data_key_pair_body prepared_by pregenerate_data_key_pair, ReadOnly,
                "Generate a data key pair: the public key, the private key and the private key encrypted under a KMS key",
                [EncryptionContext, KeyId: required, KeyPairSpec: required, GrantTokens,
                 Recipient, DryRun];
            "GenerateDataKeyPairWithoutPlaintext" => generate_data_key_pair_without_plaintext(GenerateDataKeyPairRequest) -> GenerateDataKeyPairResponse, generate_data_key_pair_without_plaintext_body prepared_by pregenerate_data_key_pair, ReadOnly,
                "Generate a data key pair without the plaintext of its private key",
                [EncryptionContext, KeyId: required, KeyPairSpec: required, GrantTokens, DryRun];
            "DeriveSharedSecret" => derive_shared_secret(DeriveSharedSecretRequest) -> DeriveSharedSecretResponse, derive_shared_secret_body, ReadOnly,
                "Derive an ECDH shared secret from a key agreement KMS key and a public key",
                [KeyId: required, KeyAgreementAlgorithm: required, PublicKey: required,
                 GrantTokens, DryRun, Recipient];
            "GetParametersForImport" => get_parameters_for_import(GetParametersForImportRequest) -> GetParametersForImportResponse, get_parameters_for_import_body prepared_by pregenerate_wrapping_key, ReadWrite,
                "Get the wrapping public key and import token to import key material",
                [KeyId: required, WrappingAlgorithm: required, WrappingKeySpec: required];
            "ImportKeyMaterial" => import_key_material(ImportKeyMaterialRequest) -> ImportKeyMaterialResponse, import_key_material_body, ReadWrite,
                "Import key material into a KMS key of origin EXTERNAL",
                [KeyId: required, ImportToken: required, EncryptedKeyMaterial: required, ValidTo,
                 ExpirationModel, ImportType, KeyMaterialDescription, KeyMaterialId];
            "DeleteImportedKeyMaterial" => delete_imported_key_material(DeleteImportedKeyMaterialRequest) -> ImportKeyMaterialResponse, delete_imported_key_material_body, ReadWrite,
                "Delete imported key material of a KMS key",
                [KeyId: required, KeyMaterialId];
            "GetKeyLastUsage" => get_key_last_usage(KeyOnlyRequest) -> Value, get_key_last_usage_body, ReadOnly,
                "Show the last successful cryptographic use of a KMS key (from the audit log)",
                [KeyId: required];
            "DescribeCustomKeyStores" => describe_custom_key_stores(CustomKeyStoreRequest) -> Value, describe_custom_key_stores_body, ReadOnly,
                "List the custom key stores of the account (there are none)",
                [CustomKeyStoreId, CustomKeyStoreName, Limit, Marker];
            "CreateCustomKeyStore" => create_custom_key_store(CustomKeyStoreRequest) -> Value, create_custom_key_store_body, ReadWrite,
                "Create a custom key store (not offered)", absent;
            "ConnectCustomKeyStore" => connect_custom_key_store(CustomKeyStoreRequest) -> Value, custom_key_store_by_id_body, ReadWrite,
                "Connect a custom key store (not offered)", absent;
            "DisconnectCustomKeyStore" => disconnect_custom_key_store(CustomKeyStoreRequest) -> Value, custom_key_store_by_id_body, ReadWrite,
                "Disconnect a custom key store (not offered)", absent;
            "DeleteCustomKeyStore" => delete_custom_key_store(CustomKeyStoreRequest) -> Value, custom_key_store_by_id_body, ReadWrite,
                "Delete a custom key store (not offered)", absent;
            "UpdateCustomKeyStore" => update_custom_key_store(CustomKeyStoreRequest) -> Value, custom_key_store_by_id_body, ReadWrite,
                "Change a custom key store (not offered)", absent;
            "Encapsulate" => encapsulate(KeyOnlyRequest) -> Value, encapsulate_body, ReadWrite,
                "Encapsulate a shared secret with an ML-KEM key (not offered)", absent;
            "Decapsulate" => decapsulate(KeyOnlyRequest) -> Value, decapsulate_body, ReadWrite,
                "Decapsulate a shared secret with an ML-KEM key (not offered)", absent;
            "ReplicateKey" => replicate_key(ReplicateKeyRequest) -> ReplicateKeyResponse, replicate_key_body, ReadWrite,
                "Create a replica of a multi-Region primary key in another region",
                [KeyId: required, ReplicaRegion: required, Policy, BypassPolicyLockoutSafetyCheck,
                 Description, Tags];
            "UpdatePrimaryRegion" => update_primary_region(UpdatePrimaryRegionRequest) -> Empty, update_primary_region_body, ReadWrite,
                "Make a replica of a multi-Region key the primary key",
                [KeyId: required, PrimaryRegion: required];
        }
    };
}
pub(crate) use kms_operations;

/// The members of one row: `[A, B: required]` or `absent`.
macro_rules! members {
    (absent) => {
        None
    };
    ([$($member:ident $(: $required:ident)?),* $(,)?]) => {
        Some(&[$(Member {
            name: stringify!($member),
            required: members!(@required $($required)?),
        }),*])
    };
    (@required) => {
        false
    };
    (@required required) => {
        true
    };
}

macro_rules! prepared {
    () => {
        false
    };
    ($prepare:ident) => {
        true
    };
}

macro_rules! operation_table {
    ($($name:literal => $method:ident($req:ty) -> $resp:ty, $body:ident $(prepared_by $prepare:ident)?, $access:ident, $summary:literal, $members:tt;)*) => {
        impl Operation {
            /// Every operation the KMS serves, in the table's order.
            pub const ALL: &'static [Operation] = &[$(Operation {
                name: $name,
                access: Access::$access,
                summary: $summary,
                members: members!($members),
                prepared: prepared!($($prepare)?),
            }),*];
        }

        /// The AWS names of every operation the KMS serves.
        pub const OPERATIONS: &[&str] = &[$($name),*];
    };
}

kms_operations!(operation_table);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_the_name_list() {
        let mut names: Vec<&str> = Operation::ALL.iter().map(|o| o.name).collect();
        assert_eq!(names, OPERATIONS);
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            OPERATIONS.len(),
            "an operation is declared twice"
        );
    }

    #[test]
    fn members_are_unique_per_operation() {
        for op in Operation::ALL {
            let mut m: Vec<&str> = op.members.unwrap_or(&[]).iter().map(|m| m.name).collect();
            m.sort_unstable();
            let n = m.len();
            m.dedup();
            assert_eq!(m.len(), n, "{} lists a member twice", op.name);
        }
    }

    #[test]
    fn read_only_as_cloudtrail_marks_it() {
        assert!(is_read_only("Decrypt"));
        assert!(is_read_only("ListKeyPolicies"));
        assert!(is_read_only("DescribeCustomKeyStores"));
        assert!(!is_read_only("CreateKey"));
        assert!(!is_read_only("GetParametersForImport"));
        assert!(!is_read_only("NoSuchOperation"));
        assert!(is_prepared("GenerateDataKeyPair"));
        assert!(is_prepared("CreateKey"));
        assert!(!is_prepared("GenerateDataKey"));
        let read_only = Operation::ALL
            .iter()
            .filter(|o| o.access == Access::ReadOnly)
            .count();
        assert_eq!(read_only, 26);
    }

    /// `CreateKey` -> `create-key`, the aws CLI's command name.
    fn kebab(name: &str) -> String {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// The README's `keyvol kms <operation>` section names every command,
    /// and every command it names in its list is one.
    #[test]
    fn the_readme_names_every_command() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("### `keyvol kms <operation>`")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("the README has a `keyvol kms <operation>` section");
        let offered: Vec<String> = Operation::ALL
            .iter()
            .filter(|o| o.offered())
            .map(|o| kebab(o.name))
            .collect();
        for cmd in &offered {
            assert!(
                section.contains(&format!("`{cmd}`")) || section.contains(&format!("`{cmd} ")),
                "the README's kms section does not name `{cmd}`"
            );
        }
        let list = section.split("\n\n").nth(1).unwrap_or_default();
        for named in list.split('`').skip(1).step_by(2) {
            let named = named.split(' ').next().unwrap_or_default();
            if named.contains('-') && named.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                assert!(
                    offered.iter().any(|c| c == named),
                    "the README names `{named}`, not a command"
                );
            }
        }
    }

    #[test]
    fn absent_features_have_no_members() {
        let absent: Vec<&str> = Operation::ALL
            .iter()
            .filter(|o| !o.offered())
            .map(|o| o.name)
            .collect();
        assert_eq!(
            absent,
            [
                "CreateCustomKeyStore",
                "ConnectCustomKeyStore",
                "DisconnectCustomKeyStore",
                "DeleteCustomKeyStore",
                "UpdateCustomKeyStore",
                "Encapsulate",
                "Decapsulate",
            ]
        );
        let gdk = Operation::named("GenerateDataKey").and_then(|o| o.members);
        let required: Vec<&str> = gdk
            .unwrap_or(&[])
            .iter()
            .filter(|m| m.required)
            .map(|m| m.name)
            .collect();
        assert_eq!(required, ["KeyId"]);
    }
}
