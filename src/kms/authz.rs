//! The authorization point every KMS operation passes through.

use serde_json::{Map, Value};

use super::model::KeyRecord;
use super::service::Op;
use super::{ErrorCode, KmsError, KmsResult};

/// Decides whether the caller of `op` may perform `action` (e.g.
/// `kms:Decrypt`) on `k`, given the request's condition keys.
pub(crate) fn authorize(
    op: &Op<'_>,
    action: &str,
    k: &KeyRecord,
    _conditions: &Map<String, Value>,
) -> KmsResult<()> {
    let caller = &op.ctx.caller;
    let denied = || {
        KmsError::new(
            ErrorCode::AccessDeniedException,
            format!(
                "User: {} is not authorized to perform: {} on resource: {} because no resource-based policy allows the {} action",
                caller.principal_arn,
                action,
                k.arn(),
                action
            ),
        )
    };
    if caller.account != k.account {
        return Err(denied());
    }
    if k.is_aws_managed() {
        let via_ok =
            op.ctx.via_service.as_deref() == Some(&format!("ec2.{}.amazonaws.com", k.region));
        let metadata = action.starts_with("kms:Describe")
            || action.starts_with("kms:Get")
            || action.starts_with("kms:List")
            || action == "kms:RevokeGrant";
        if !via_ok && !metadata {
            return Err(denied());
        }
    }
    Ok(())
}

/// Account-level actions with no key resource (CreateKey, ListKeys,
/// ListAliases, GenerateRandom): allowed by the caller's identity policies.
pub(crate) fn authorize_account_action(_op: &Op<'_>, _action: &str) -> KmsResult<()> {
    Ok(())
}

/// CreateKey: an identity-policy decision (there is no key policy yet).
pub(crate) fn authorize_create_key(
    op: &Op<'_>,
    _k: &KeyRecord,
    _tags: &[super::api::Tag],
) -> KmsResult<()> {
    authorize_account_action(op, "kms:CreateKey")
}

/// Alias operations also need permission on the alias resource.
pub(crate) fn authorize_alias(_op: &Op<'_>, _action: &str, _alias: &str) -> KmsResult<()> {
    Ok(())
}

fn check_policy_text(text: &str) -> KmsResult<()> {
    if text.len() > 32768 {
        return Err(KmsError::new(
            ErrorCode::LimitExceededException,
            "Policy exceeds the 32768 byte limit for key policies.",
        ));
    }
    serde_json::from_str::<Value>(text).map_err(|e| {
        KmsError::new(
            ErrorCode::MalformedPolicyDocumentException,
            format!("The policy is not valid JSON: {e}"),
        )
    })?;
    Ok(())
}

/// Validates the policy of a key being created.
pub(crate) fn validate_new_policy(_op: &Op<'_>, text: &str, _bypass: bool) -> KmsResult<String> {
    check_policy_text(text)?;
    Ok(text.to_string())
}

/// Validates a new policy for an existing key (PutKeyPolicy).
pub(crate) fn validate_policy_for_key(
    _op: &Op<'_>,
    text: &str,
    _k: &KeyRecord,
    _bypass: bool,
) -> KmsResult<String> {
    check_policy_text(text)?;
    Ok(text.to_string())
}

/// Validates an identity (IAM) policy document.
pub fn validate_identity_policy(text: &str) -> KmsResult<()> {
    check_policy_text(text)
}
