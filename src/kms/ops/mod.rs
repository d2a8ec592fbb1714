//! The KMS operations (symmetric keys, aliases, rotation, tags, policies),
//! each a typed function with AWS semantics, limits and messages, one file
//! per family; this module holds what they share (request-condition maps,
//! key-usage checks, pagination). A body (`<operation>_body`) does one
//! operation's work with an [`Op`] that resolves and permits; it never
//! opens a transaction: the operation table (`dispatch.rs`) runs it
//! through the handle's `run` (`service.rs`).

mod absent;
mod aliases;
pub mod asym;
mod crypto;
mod grants;
pub mod import;
mod key_policy;
mod keys;
pub mod multi_region;
mod rotation;
mod tags;

// CreateKey takes tags as TagResource does.
use tags::{put_tags, validate_tags};

pub use absent::{CustomKeyStoreRequest, KeyOnlyRequest};
pub use grants::{
    CreateGrantRequest, ListGrantsRequest, ListRetirableGrantsRequest, RetireGrantRequest,
    RevokeGrantRequest,
};
pub(crate) use keys::{create_aws_managed_ebs_key, pregenerate_key};
pub(crate) use rotation::add_material;

use serde_json::{json, Map, Value};

use crate::clock::DAY;
use crate::ids::KeyId;
use crate::kms::api::*;
use crate::kms::asym::{KeyManager, KeySpec, KeyUsage, Origin, PrivateKeyMaterial};
use crate::kms::ciphertext::{self, EncryptionContext};
use crate::kms::model::{key_material_id, AlgorithmLists, KeyRecord, KeyState, StateRule};
use crate::kms::op::Op;
use crate::kms::store;
use crate::kms::{ErrorCode, Kms, KmsError, KmsResult};
use crate::secret::SecretBytes;
use crate::validate::{self, Constraint, Violation};
use asym::dry_run;

pub use crate::kms::model::EBS_ALIAS;
pub const MAX_PLAINTEXT: usize = 4096;
pub const MAX_ON_DEMAND_ROTATIONS: i64 = 10;
const SYMMETRIC: &str = "SYMMETRIC_DEFAULT";

pub(crate) fn to_audit<T: serde::Serialize>(req: &T) -> Value {
    serde_json::to_value(req).unwrap_or(Value::Null)
}

pub(crate) fn no_conditions() -> Map<String, Value> {
    Map::new()
}

pub(crate) fn context_conditions(ctx: &EncryptionContext) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in ctx {
        m.insert(format!("kms:EncryptionContext:{k}"), json!(v));
    }
    m.insert(
        "kms:EncryptionContextKeys".into(),
        json!(ctx.keys().collect::<Vec<_>>()),
    );
    m
}

fn check_algorithm(alg: Option<&str>) -> KmsResult<()> {
    match alg {
        None | Some(SYMMETRIC) => Ok(()),
        Some(other) => Err(KmsError::new(
            ErrorCode::InvalidKeyUsageException,
            format!("The encryption algorithm {other} is not supported for a symmetric key: use SYMMETRIC_DEFAULT."),
        )),
    }
}

/// Refuses keys other than symmetric encryption keys for `operation`
/// (GenerateDataKey*, ReEncrypt destinations, ...).
pub(crate) fn check_symmetric_encrypt(k: &KeyRecord, operation: &str) -> KmsResult<()> {
    if k.key_usage != KeyUsage::EncryptDecrypt {
        return Err(wrong_usage(k, operation));
    }
    if !k.is_symmetric() {
        return Err(KmsError::new(
            ErrorCode::InvalidKeyUsageException,
            format!(
                "{} has KeySpec {} which is not valid for {operation}: use a symmetric encryption key (SYMMETRIC_DEFAULT).",
                k.arn(),
                k.key_spec
            ),
        ));
    }
    Ok(())
}

/// AWS's InvalidKeyUsageException for a key whose KeyUsage does not allow
/// `operation`.
pub(crate) fn wrong_usage(k: &KeyRecord, operation: &str) -> KmsError {
    KmsError::new(
        ErrorCode::InvalidKeyUsageException,
        format!(
            "{} key usage is {} which is not valid for {operation}.",
            k.arn(),
            k.key_usage
        ),
    )
}

fn paginate<T>(
    items: Vec<T>,
    limit: Option<i64>,
    marker: Option<&str>,
) -> KmsResult<(Vec<T>, bool, Option<String>)> {
    let limit = limit.unwrap_or(100);
    validate::range("limit", limit, 1, 1000)?;
    let start = match marker {
        None => 0,
        Some(m) => m.parse::<usize>().map_err(|_| {
            KmsError::new(
                ErrorCode::InvalidMarkerException,
                format!("Invalid marker '{m}'"),
            )
        })?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(limit as usize).collect();
    let end = start + page.len();
    let truncated = end < total;
    Ok((page, truncated, truncated.then(|| end.to_string())))
}

/// AWS managed keys cannot be changed by anyone, whatever their policy says.
pub(crate) fn access_denied_managed(op: &Op<'_>, action: &str, k: &KeyRecord) -> KmsError {
    KmsError::new(
        ErrorCode::AccessDeniedException,
        format!(
            "User: {} is not authorized to perform: {} on resource: {} because it is an AWS managed key",
            op.ctx.caller.principal_arn,
            action,
            k.arn()
        ),
    )
}
