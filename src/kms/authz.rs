//! The authorization point every KMS operation passes through: it loads
//! the key policy, the caller's identity policies and grants, fills the
//! condition keys, and asks the policy engine for the AWS decision.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::model::KeyRecord;
use super::model::StateRule;
use super::op::Op;
use super::store;
use super::{ErrorCode, KmsError, KmsResult};
use crate::policy::{
    self, keys, AuthzInput, AuthzRequest, ConditionContext, Effect, PolicyDocument,
};

/// The caller's identity policies (a user's, or a role session's role's),
/// parsed. A root principal has none: it holds every permission of its
/// own account implicitly.
fn identity_policies(op: &Op<'_>) -> KmsResult<Vec<Arc<PolicyDocument>>> {
    let docs = crate::iam::roles::identity_policy_texts(op.tx, &op.ctx.caller)?;
    // Documents were validated when stored; one that no longer parses
    // grants nothing rather than failing every request.
    Ok(docs
        .iter()
        .filter_map(|d| PolicyDocument::shared_identity_policy(d).ok())
        .collect())
}

/// Condition keys that describe the key itself.
fn key_conditions(op: &Op<'_>, k: &KeyRecord, ctx: &mut ConditionContext) -> KmsResult<()> {
    ctx.insert(keys::KEY_SPEC, k.key_spec.as_str());
    ctx.insert(keys::KEY_USAGE, k.key_usage.as_str());
    ctx.insert("kms:KeyOrigin", k.origin.as_str());
    ctx.insert("kms:MultiRegion", k.key_id.is_multi_region());
    if let Some(kind) = k.multi_region_key_type() {
        ctx.insert("kms:MultiRegionKeyType", kind);
    }
    for (tk, tv) in store::tags(op.tx, &k.key_id)? {
        ctx.insert(&format!("{}{tk}", keys::RESOURCE_TAG_PREFIX), tv);
    }
    let aliases: Vec<String> = store::aliases(op.tx, &k.account, &k.region, Some(&k.key_id))?
        .into_iter()
        .map(|a| a.name)
        .collect();
    ctx.insert(keys::RESOURCE_ALIASES, aliases);
    Ok(())
}

/// Decides whether the caller of `op` may perform `action` (e.g.
/// `kms:Decrypt`) on `k`, given the request's own condition keys.
pub(crate) fn authorize(
    op: &Op<'_>,
    action: &str,
    k: &KeyRecord,
    conditions: &Map<String, Value>,
) -> KmsResult<()> {
    let mut req = AuthzRequest::from_request(op.ctx, action, &k.arn());
    req.context.merge(ConditionContext::from_json(conditions));
    key_conditions(op, k, &mut req.context)?;
    if let Some(alias) = &op.trace.request_alias {
        req.context.insert("kms:RequestAlias", alias.as_str());
    }
    let key_policy = PolicyDocument::shared_key_policy(&k.policy).map_err(KmsError::from)?;
    let identity = identity_policies(op)?;
    let grant_allows = super::grants::allows(op, k, action, conditions)?;
    let input = AuthzInput::new(
        &req,
        k.account.as_str(),
        &key_policy,
        &identity,
        grant_allows,
    );
    policy::authorize(&input).map_err(KmsError::from)
}

/// Account-level actions with no key resource (CreateKey, ListKeys,
/// ListAliases, GenerateRandom, alias resources): the caller's identity
/// policies decide; an account root may do anything in its own account.
pub(crate) fn authorize_identity(
    op: &Op<'_>,
    action: &str,
    resource: &str,
    extra: ConditionContext,
) -> KmsResult<()> {
    let mut req = AuthzRequest::from_request(op.ctx, action, resource);
    req.context.merge(extra);
    let identity = identity_policies(op)?;
    let mut allowed = req.is_account_root();
    for p in &identity {
        match p.evaluate(&req) {
            Effect::ExplicitDeny => {
                return Err(denied(
                    op,
                    action,
                    resource,
                    "with an explicit deny in an identity-based policy",
                ))
            }
            Effect::Allow => allowed = true,
            Effect::NotApplicable => {}
        }
    }
    if allowed {
        Ok(())
    } else {
        Err(denied(
            op,
            action,
            resource,
            &format!("because no identity-based policy allows the {action} action"),
        ))
    }
}

fn denied(op: &Op<'_>, action: &str, resource: &str, why: &str) -> KmsError {
    KmsError::new(
        ErrorCode::AccessDeniedException,
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} {why}",
            op.ctx.caller.principal_arn
        ),
    )
}

pub(crate) fn authorize_account_action(op: &Op<'_>, action: &str) -> KmsResult<()> {
    authorize_identity(op, action, "*", ConditionContext::new())
}

/// CreateKey: an identity-policy decision with the new key's properties.
pub(crate) fn authorize_create_key(
    op: &Op<'_>,
    k: &KeyRecord,
    tags: &[super::api::Tag],
) -> KmsResult<()> {
    let multi_region = ConditionContext::new().with("kms:MultiRegion", k.key_id.is_multi_region());
    authorize_create_key_with(op, k, tags, multi_region)
}

/// [`authorize_create_key`] with further condition keys (ReplicateKey's
/// CreateKey in the replica's Region).
pub(crate) fn authorize_create_key_with(
    op: &Op<'_>,
    k: &KeyRecord,
    tags: &[super::api::Tag],
    extra: ConditionContext,
) -> KmsResult<()> {
    let mut c = extra
        .with(keys::KEY_SPEC, k.key_spec.as_str())
        .with(keys::KEY_USAGE, k.key_usage.as_str())
        .with("kms:KeyOrigin", k.origin.as_str())
        .with(
            keys::TAG_KEYS,
            tags.iter().map(|t| t.tag_key.clone()).collect::<Vec<_>>(),
        );
    for t in tags {
        c.insert(
            &format!("{}{}", keys::REQUEST_TAG_PREFIX, t.tag_key),
            t.tag_value.as_str(),
        );
    }
    authorize_identity(op, "kms:CreateKey", "*", c)
}

/// Alias operations also need permission on the alias resource, which only
/// identity policies can give.
pub(crate) fn authorize_alias(op: &Op<'_>, action: &str, alias: &str) -> KmsResult<()> {
    let arn = format!(
        "arn:aws:kms:{}:{}:{alias}",
        op.ctx.region, op.ctx.caller.account
    );
    authorize_identity(op, action, &arn, ConditionContext::new())
}

/// Validates the policy of a key being created: grammar, size, and the
/// lockout safety check unless bypassed.
pub(crate) fn validate_new_policy(
    op: &Op<'_>,
    text: &str,
    key_arn: &str,
    bypass: bool,
) -> KmsResult<String> {
    let doc = PolicyDocument::parse_key_policy(text).map_err(KmsError::from)?;
    if !bypass {
        let caller = &op.ctx.caller;
        policy::lockout_check(
            &doc,
            &caller.principal_arn,
            caller.account.as_str(),
            key_arn,
        )
        .map_err(KmsError::from)?;
    }
    Ok(text.to_string())
}

/// Validates a new policy for an existing key (PutKeyPolicy).
pub(crate) fn validate_policy_for_key(
    op: &Op<'_>,
    text: &str,
    k: &KeyRecord,
    bypass: bool,
) -> KmsResult<String> {
    validate_new_policy(op, text, &k.arn(), bypass)
}

/// Validates an identity (IAM) policy document.
pub fn validate_identity_policy(text: &str) -> KmsResult<()> {
    PolicyDocument::parse_identity_policy(text)
        .map(|_| ())
        .map_err(KmsError::from)
}

impl Op<'_> {
    /// The one authorization point: may the caller perform `action` on `k`?
    pub fn authorize(
        &self,
        action: &str,
        k: &KeyRecord,
        conditions: &Map<String, Value>,
    ) -> KmsResult<()> {
        authorize(self, action, k, conditions)
    }

    /// Key state check and authorization for a use of `k`.
    pub fn permit(
        &self,
        action: &str,
        k: &KeyRecord,
        rule: StateRule,
        conditions: &Map<String, Value>,
    ) -> KmsResult<()> {
        self.authorize(action, k, conditions)?;
        k.check_state(rule)
    }
}
