//! Authorization of `ec2:` actions: the caller's IAM identity policies,
//! decided by the same policy engine as the KMS (`crate::policy`), on the
//! resource ARNs EC2 uses, with EC2's condition keys.
//!
//! An account root may do anything in its own account unless an identity
//! policy denies it... roots have none, so: everything in its account. An
//! IAM user needs an Allow for the action on every resource of the request
//! and no explicit Deny.

use crate::api_error::{ApiError, ApiResult};
use crate::policy::{AuthzRequest, ConditionContext, Effect, PolicyDocument};
use crate::session::Session;

use super::params::Tag;

/// One resource of a request and its own condition keys.
#[derive(Debug, Clone)]
pub struct Resource {
    pub arn: String,
    pub conditions: ConditionContext,
}

impl Resource {
    pub fn new(arn: String) -> Self {
        Resource {
            arn,
            conditions: ConditionContext::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<crate::policy::ConditionValue>) -> Self {
        self.conditions.insert(key, value);
        self
    }

    /// `ec2:ResourceTag/K` and `aws:ResourceTag/K` for each tag.
    pub fn with_tags(mut self, tags: &[Tag]) -> Self {
        for t in tags {
            self.conditions
                .insert(&format!("ec2:ResourceTag/{}", t.key), t.value.as_str());
            self.conditions
                .insert(&format!("aws:ResourceTag/{}", t.key), t.value.as_str());
        }
        self
    }
}

/// `arn:aws:ec2:<region>:<account>:volume/<vol>`.
pub fn volume_arn(region: &str, account: &str, vol: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:volume/{vol}")
}

/// `arn:aws:ec2:<region>::snapshot/<snap>`: snapshot ARNs carry no account.
pub fn snapshot_arn(region: &str, snap: &str) -> String {
    format!("arn:aws:ec2:{region}::snapshot/{snap}")
}

/// `aws:RequestTag/K` for each tag and `aws:TagKeys`.
pub fn request_tags(tags: &[Tag]) -> ConditionContext {
    let mut c = ConditionContext::new();
    for t in tags {
        c.insert(&format!("aws:RequestTag/{}", t.key), t.value.as_str());
    }
    if !tags.is_empty() {
        c.insert(
            "aws:TagKeys",
            tags.iter().map(|t| t.key.clone()).collect::<Vec<_>>(),
        );
    }
    c
}

/// Decides `action` (`ec2:CreateVolume`) for the session's caller on every
/// resource; `request` holds the request-wide condition keys.
pub fn authorize(
    s: &Session,
    action: &str,
    resources: &[Resource],
    request: &ConditionContext,
) -> ApiResult<()> {
    let docs = identity_policies(s)?;
    for r in resources {
        let mut req = AuthzRequest::from_request(&s.ctx, action, &r.arn);
        req.context.insert("ec2:Region", s.ctx.region.as_str());
        req.context.merge(request.clone());
        req.context.merge(r.conditions.clone());
        let mut allowed = req.is_account_root();
        for d in &docs {
            match d.evaluate(&req) {
                Effect::ExplicitDeny => {
                    return Err(unauthorized(
                        s,
                        action,
                        &r.arn,
                        "with an explicit deny in an identity-based policy",
                    ))
                }
                Effect::Allow => allowed = true,
                Effect::NotApplicable => {}
            }
        }
        if !allowed {
            return Err(unauthorized(
                s,
                action,
                &r.arn,
                &format!("because no identity-based policy allows the {action} action"),
            ));
        }
        // A role session's session policy bounds what its role allows.
        match req.session_effect() {
            Some(Effect::ExplicitDeny) => {
                return Err(unauthorized(
                    s,
                    action,
                    &r.arn,
                    "with an explicit deny in a session policy",
                ))
            }
            Some(Effect::NotApplicable) => {
                return Err(unauthorized(
                    s,
                    action,
                    &r.arn,
                    &format!("because no session policy allows the {action} action"),
                ))
            }
            Some(Effect::Allow) | None => {}
        }
    }
    Ok(())
}

fn identity_policies(s: &Session) -> ApiResult<Vec<std::sync::Arc<PolicyDocument>>> {
    let texts = s.iam.policies_of(&s.ctx.caller)?;
    texts
        .iter()
        .map(|t| {
            PolicyDocument::shared_identity_policy(t).map_err(|e| {
                ApiError::internal(format!("a stored identity policy does not parse: {e}"))
            })
        })
        .collect()
}

fn unauthorized(s: &Session, action: &str, resource: &str, why: &str) -> ApiError {
    ApiError::new(
        "UnauthorizedOperation",
        format!(
            "You are not authorized to perform this operation. User: {} is not authorized to perform: {action} on resource: {resource} {why}",
            s.ctx.caller.principal_arn
        ),
    )
}
