//! Operations of features this KMS does not offer (custom key stores,
//! ML-KEM key encapsulation, multi-Region replication), answered as AWS
//! answers an account that has none of them, and GetKeyLastUsage, which
//! the audit log answers.
//!
//! Key-based operations resolve and authorize the key first, exactly as
//! AWS does, so a caller learns nothing about a key it may not use.

use crate::kms::op::Op;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::no_conditions;
use crate::kms::model::StateRule;
use crate::kms::store;
use crate::kms::{ErrorCode, Kms, KmsError, KmsResult};
use crate::validate;

crate::request_struct!(CustomKeyStoreRequest {
    custom_key_store_id: String,
    custom_key_store_name: String,
    custom_key_store_type: String,
    cloud_hsm_cluster_id: String,
    limit: i64,
    marker: String,
});

crate::request_struct!(KeyOnlyRequest { key_id: String });

/// The successful cryptographic operations GetKeyLastUsage reports
/// (botocore's `KeyLastUsageTrackingOperation`).
const TRACKED_OPERATIONS: &[&str] = &[
    "Decrypt",
    "DeriveSharedSecret",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
    "Encapsulate",
    "Decapsulate",
];

fn store_not_found(id: Option<&str>) -> KmsError {
    match id {
        Some(id) => KmsError::new(
            ErrorCode::CustomKeyStoreNotFoundException,
            format!("Custom key store {id} does not exist in this account and Region."),
        ),
        None => KmsError::new(
            ErrorCode::CustomKeyStoreNotFoundException,
            "The specified custom key store does not exist in this account and Region.",
        ),
    }
}

impl Kms {
    pub(crate) fn describe_custom_key_stores_body(
        &self,
        _op: &mut Op<'_>,
        req: &CustomKeyStoreRequest,
    ) -> KmsResult<Value> {
        if req.custom_key_store_id.is_some() || req.custom_key_store_name.is_some() {
            return Err(store_not_found(
                req.custom_key_store_id
                    .as_deref()
                    .or(req.custom_key_store_name.as_deref()),
            ));
        }
        if let Some(l) = req.limit {
            validate::range("limit", l, 1, 1000)?;
        }
        if req.marker.is_some() {
            return Err(KmsError::new(
                ErrorCode::InvalidMarkerException,
                "The marker does not belong to an earlier DescribeCustomKeyStores response.",
            ));
        }
        Ok(json!({"CustomKeyStores": [], "Truncated": false}))
    }

    pub(crate) fn create_custom_key_store_body(
        &self,
        _op: &mut Op<'_>,
        req: &CustomKeyStoreRequest,
    ) -> KmsResult<Value> {
        validate::required("customKeyStoreName", &req.custom_key_store_name)?;
        match req.custom_key_store_type.as_deref() {
                None | Some("AWS_CLOUDHSM") => {
                    validate::required("cloudHsmClusterId", &req.cloud_hsm_cluster_id)?;
                    Err(KmsError::new(
                        ErrorCode::CloudHsmClusterNotFoundException,
                        format!(
                            "AWS CloudHSM cluster {} does not exist in this account and Region.",
                            req.cloud_hsm_cluster_id.as_deref().unwrap_or_default()
                        ),
                    ))
                }
                Some("EXTERNAL_KEY_STORE") => Err(KmsError::new(
                    ErrorCode::XksProxyUriUnreachableException,
                    "KMS was unable to reach the external key store proxy at the specified URI endpoint.",
                )),
                Some(other) => Err(validate::not_one_of(
                    "customKeyStoreType",
                    other,
                    &["AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"],
                )
                .into()),
            }
    }

    /// ConnectCustomKeyStore, DisconnectCustomKeyStore, DeleteCustomKeyStore
    /// and UpdateCustomKeyStore: no custom key store exists here.
    pub(crate) fn custom_key_store_by_id_body(
        &self,
        _op: &mut Op<'_>,
        req: &CustomKeyStoreRequest,
    ) -> KmsResult<Value> {
        validate::required("customKeyStoreId", &req.custom_key_store_id)?;
        Err(store_not_found(req.custom_key_store_id.as_deref()))
    }

    /// A key operation whose feature no key here has: the key is resolved
    /// and the action authorized, then `refusal` says why it cannot run.
    fn key_operation_absent(
        &self,
        op: &mut Op<'_>,
        operation: &str,
        req: &KeyOnlyRequest,
        refusal: impl Fn(&str) -> KmsError,
    ) -> KmsResult<Value> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        op.permit(
            &format!("kms:{operation}"),
            &k,
            StateRule::Any,
            &no_conditions(),
        )?;
        Err(refusal(&k.arn()))
    }

    pub(crate) fn encapsulate_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyOnlyRequest,
    ) -> KmsResult<Value> {
        self.key_operation_absent(op, "Encapsulate", req, |arn| {
            KmsError::new(
                ErrorCode::InvalidKeyUsageException,
                format!("{arn} key usage is not KEY_AGREEMENT with an ML_KEM key spec: Encapsulate needs an ML-KEM key."),
            )
        })
    }

    pub(crate) fn decapsulate_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyOnlyRequest,
    ) -> KmsResult<Value> {
        self.key_operation_absent(op, "Decapsulate", req, |arn| {
            KmsError::new(
                ErrorCode::InvalidKeyUsageException,
                format!("{arn} key usage is not KEY_AGREEMENT with an ML_KEM key spec: Decapsulate needs an ML-KEM key."),
            )
        })
    }

    /// The last successful cryptographic operation with a key, from the
    /// audit log (which records every call from the key's creation on).
    pub(crate) fn get_key_last_usage_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyOnlyRequest,
    ) -> KmsResult<Value> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        op.permit("kms:GetKeyLastUsage", &k, StateRule::Any, &no_conditions())?;
        let placeholders = vec!["?"; TRACKED_OPERATIONS.len()].join(",");
        let sql = format!(
            "SELECT event_time, event_name, event FROM audit \
                 WHERE key_arn = ?1 AND error_code IS NULL AND event_name IN ({placeholders}) \
                 ORDER BY seq DESC LIMIT 1"
        );
        let arn = k.arn();
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&arn];
        params.extend(TRACKED_OPERATIONS.iter().map(|o| o as &dyn rusqlite::ToSql));
        let last: Option<(i64, String, String)> = op
            .tx
            .query_row(&sql, params.as_slice(), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(store::db)?;
        let mut out = json!({
            "KeyId": arn,
            "TrackingStartDate": k.created,
            "KeyCreationDate": k.created,
        });
        if let Some((time, name, event)) = last {
            let event: Value = serde_json::from_str(&event).unwrap_or(Value::Null);
            let mut usage = json!({"Operation": name, "Timestamp": time});
            for (field, member) in [
                ("eventID", "CloudTrailEventId"),
                ("requestID", "KmsRequestId"),
            ] {
                if let Some(v) = event.get(field).and_then(Value::as_str) {
                    usage[member] = json!(v);
                }
            }
            out["KeyLastUsage"] = usage;
        }
        Ok(out)
    }
}
