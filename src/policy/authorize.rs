//! The KMS authorization decision (key policy, identity policies, grants,
//! cross-account rules) and the key policy lockout safety check.
//!
//! The rules follow the AWS KMS developer guide:
//! 1. An explicit Deny in the key policy or in one of the caller's identity
//!    policies wins over everything, grants included.
//! 2. Same account: allowed if the key policy allows the caller directly
//!    (its ARN, a role it assumed, `*`), or the key policy allows the
//!    caller's account (account id / `:root`, "delegate to IAM") and the
//!    caller is that root or an identity policy allows the action on the
//!    key, or a grant allows it.
//! 3. Another account: only the actions of [`cross_account_action`]; the key
//!    policy must allow the caller (its account or itself) and the caller's
//!    identity policies must allow it too (the other account's root is
//!    allowed by identity), unless a grant allows it.

use std::fmt;
use std::sync::Arc;

use super::context::ConditionContext;
use super::eval::{AuthzRequest, Effect, Outcome};
use super::parse::PolicyDocument;
use super::{keys, PolicyError};

/// Everything the decision reads, loaded by the caller.
#[derive(Debug, Clone, Copy)]
pub struct AuthzInput<'a> {
    pub request: &'a AuthzRequest,
    /// The account that owns the key.
    pub key_account: &'a str,
    pub key_policy: &'a PolicyDocument,
    /// The caller's own IAM policies (user inline and attached).
    pub identity_policies: &'a [Arc<PolicyDocument>],
    /// A grant on the key gives the caller this action (constraints met).
    pub grant_allows: bool,
    /// Whether the action may be used from another account; see
    /// [`cross_account_action`].
    pub cross_account_permitted: bool,
}

impl<'a> AuthzInput<'a> {
    /// An input whose cross-account permission follows [`cross_account_action`].
    pub fn new(
        request: &'a AuthzRequest,
        key_account: &'a str,
        key_policy: &'a PolicyDocument,
        identity_policies: &'a [Arc<PolicyDocument>],
        grant_allows: bool,
    ) -> Self {
        AuthzInput {
            request,
            key_account,
            key_policy,
            identity_policies,
            grant_allows,
            cross_account_permitted: cross_account_action(&request.action),
        }
    }
}

/// The actions a principal of another account may perform on a key.
pub fn cross_account_action(action: &str) -> bool {
    const CROSS_ACCOUNT: [&str; 20] = [
        "kms:Decrypt",
        "kms:DeriveSharedSecret",
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyPair",
        "kms:GenerateDataKeyPairWithoutPlaintext",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:GenerateMac",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:Sign",
        "kms:Verify",
        "kms:VerifyMac",
        "kms:DescribeKey",
        "kms:CreateGrant",
        "kms:GetPublicKey",
        "kms:GetKeyRotationStatus",
        "kms:ListGrants",
        "kms:RetireGrant",
        "kms:RevokeGrant",
    ];
    CROSS_ACCOUNT.iter().any(|a| a.eq_ignore_ascii_case(action))
}

/// Why a request is refused; each reason has its AWS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    NoResourcePolicyAllows,
    NoIdentityPolicyAllows,
    ExplicitDenyInResourcePolicy,
    ExplicitDenyInIdentityPolicy,
    NoSessionPolicyAllows,
    ExplicitDenyInSessionPolicy,
}

/// A refused request: who, what, on which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenialReason,
    pub principal_arn: String,
    pub action: String,
    pub resource: String,
}

impl Denial {
    fn new(reason: DenialReason, req: &AuthzRequest) -> Self {
        Denial {
            reason,
            principal_arn: req.principal_arn.clone(),
            action: req.action.clone(),
            resource: req.resource.clone(),
        }
    }

    /// The AccessDeniedException message, as AWS words it.
    pub fn message(&self) -> String {
        let Denial {
            principal_arn,
            action,
            resource,
            ..
        } = self;
        let head = format!(
            "User: {principal_arn} is not authorized to perform: {action} on resource: {resource}"
        );
        match self.reason {
            DenialReason::NoResourcePolicyAllows => {
                format!("{head} because no resource-based policy allows the {action} action")
            }
            DenialReason::NoIdentityPolicyAllows => {
                format!("{head} because no identity-based policy allows the {action} action")
            }
            DenialReason::ExplicitDenyInResourcePolicy => {
                format!("{head} with an explicit deny in a resource-based policy")
            }
            DenialReason::ExplicitDenyInIdentityPolicy => {
                format!("{head} with an explicit deny in an identity-based policy")
            }
            DenialReason::NoSessionPolicyAllows => {
                format!("{head} because no session policy allows the {action} action")
            }
            DenialReason::ExplicitDenyInSessionPolicy => {
                format!("{head} with an explicit deny in a session policy")
            }
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Denial {}

/// The KMS authorization decision for one request.
pub fn authorize(input: &AuthzInput<'_>) -> Result<(), Denial> {
    let req = input.request;
    let deny = |reason| Err(Denial::new(reason, req));
    let key = input.key_policy.outcome(req);
    if key.deny {
        return deny(DenialReason::ExplicitDenyInResourcePolicy);
    }
    let identity =
        input
            .identity_policies
            .iter()
            .map(|p| p.outcome(req))
            .fold(Outcome::default(), |a, b| Outcome {
                deny: a.deny || b.deny,
                allow_direct: a.allow_direct || b.allow_direct,
                allow_account: a.allow_account || b.allow_account,
            });
    if identity.deny {
        return deny(DenialReason::ExplicitDenyInIdentityPolicy);
    }
    // A role session made with a session policy: what the policy denies
    // is denied, and only what it allows is left (grants aside, which
    // name their grantee themselves).
    let session = req.session_effect();
    if session == Some(Effect::ExplicitDeny) {
        return deny(DenialReason::ExplicitDenyInSessionPolicy);
    }
    let same_account = req.principal_account == input.key_account;
    if !same_account && !input.cross_account_permitted {
        return deny(DenialReason::NoResourcePolicyAllows);
    }
    if input.grant_allows {
        return Ok(());
    }
    if session.is_some_and(|e| e != Effect::Allow) {
        return deny(DenialReason::NoSessionPolicyAllows);
    }
    // The account root holds every identity permission within its account.
    let identity_allows = req.is_account_root() || identity.allow_direct || identity.allow_account;
    let key_allows_caller = key.allow_direct || key.allow_account;
    if same_account {
        if key.allow_direct || (key.allow_account && identity_allows) {
            return Ok(());
        }
    } else if key_allows_caller && identity_allows {
        return Ok(());
    }
    // The key policy named the caller (or delegated to its account) but
    // IAM did not follow: the identity side is what is missing.
    if key_allows_caller {
        deny(DenialReason::NoIdentityPolicyAllows)
    } else {
        deny(DenialReason::NoResourcePolicyAllows)
    }
}

/// The policy lockout safety check of CreateKey and PutKeyPolicy: the new
/// policy must let the caller (itself, or its account root) call
/// kms:PutKeyPolicy again (naming the caller, `*`, or the caller's
/// account) and must not deny it. The caller-derived keys
/// every request carries (kms:CallerAccount, aws:PrincipalArn,
/// aws:PrincipalAccount) are set; nothing else is.
pub fn lockout_check(
    policy: &PolicyDocument,
    caller_arn: &str,
    caller_account: &str,
    key_arn: &str,
) -> Result<(), PolicyError> {
    let context = ConditionContext::new()
        .with(keys::CALLER_ACCOUNT, caller_account)
        .with(keys::PRINCIPAL_ARN, caller_arn)
        .with(keys::PRINCIPAL_ACCOUNT, caller_account);
    let req = AuthzRequest {
        principal_arn: caller_arn.to_string(),
        principal_account: caller_account.to_string(),
        action: "kms:PutKeyPolicy".into(),
        resource: key_arn.to_string(),
        context,
        session_policy: None,
    };
    // An account match (account id or `:root`) covers the caller too.
    let o = policy.outcome(&req);
    if !o.deny && (o.allow_direct || o.allow_account) {
        Ok(())
    } else {
        Err(PolicyError::Lockout)
    }
}
