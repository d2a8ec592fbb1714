//! The AWS policy language (key policies, IAM identity policies, role
//! trust policies) and the authorization decision, as pure functions over
//! parsed documents. It serves the KMS, IAM/STS and EC2 alike.
//!
//! - [`PolicyDocument::parse`] (and the kind-checking `parse_key_policy` /
//!   `parse_identity_policy`) turns policy text into a checked document or a
//!   [`PolicyError`] carrying the MalformedPolicyDocumentException message.
//! - [`PolicyDocument::evaluate`] decides one document for one
//!   [`AuthzRequest`]: explicit deny, allow, or not applicable.
//! - [`authorize`] is the KMS decision: key policy, the caller's identity
//!   policies and grants, same-account and cross-account, with the AWS
//!   AccessDenied messages.
//! - [`default_key_policy`], [`aws_managed_ebs_policy`] and
//!   [`lockout_check`] are what CreateKey and PutKeyPolicy need.
//!
//! Nothing here does I/O: the caller loads the key policy, the caller's
//! identity policies and the grant decision, and fills the
//! [`ConditionContext`] with the request's condition keys.

mod authorize;
mod condition;
mod context;
mod eval;
mod parse;
mod templates;

#[cfg(test)]
mod tests_authorize;
#[cfg(test)]
mod tests_parse;

pub use authorize::{
    authorize, cross_account_action, lockout_check, AuthzInput, Denial, DenialReason,
};
pub use context::{ConditionContext, ConditionValue};
pub use eval::{AuthzRequest, Effect};
pub use parse::{PolicyDocument, PolicyKind, Statement, StatementEffect, MAX_POLICY_BYTES};
pub use templates::{aws_managed_ebs_policy, default_key_policy};

/// Condition keys the KMS request path fills, by their AWS names (matching
/// is case-insensitive, so the spelling here is only for readability).
pub mod keys {
    /// The account of the caller (single string).
    pub const CALLER_ACCOUNT: &str = "kms:CallerAccount";
    /// `ec2.<region>.amazonaws.com` when a service calls on the caller's behalf.
    pub const VIA_SERVICE: &str = "kms:ViaService";
    /// Prefix of `kms:EncryptionContext:<context-key>`; like every condition key
    /// name, the context key matches case-insensitively.
    pub const ENCRYPTION_CONTEXT_PREFIX: &str = "kms:EncryptionContext:";
    /// The keys of the request's encryption context (multi-valued).
    pub const ENCRYPTION_CONTEXT_KEYS: &str = "kms:EncryptionContextKeys";
    /// The operations a CreateGrant request asks for (multi-valued).
    pub const GRANT_OPERATIONS: &str = "kms:GrantOperations";
    /// True when CreateGrant is called by an AWS service for a resource.
    pub const GRANT_IS_FOR_AWS_RESOURCE: &str = "kms:GrantIsForAWSResource";
    /// The grantee principal of a CreateGrant request.
    pub const GRANTEE_PRINCIPAL: &str = "kms:GranteePrincipal";
    /// The aliases of the key (multi-valued).
    pub const RESOURCE_ALIASES: &str = "kms:ResourceAliases";
    /// The rotation period of EnableKeyRotation (number).
    pub const ROTATION_PERIOD_IN_DAYS: &str = "kms:RotationPeriodInDays";
    /// The key spec of the key (or of CreateKey).
    pub const KEY_SPEC: &str = "kms:KeySpec";
    /// The key usage of the key (or of CreateKey).
    pub const KEY_USAGE: &str = "kms:KeyUsage";
    /// The caller's ARN.
    pub const PRINCIPAL_ARN: &str = "aws:PrincipalArn";
    /// The caller's account.
    pub const PRINCIPAL_ACCOUNT: &str = "aws:PrincipalAccount";
    /// The time of the request (date).
    pub const CURRENT_TIME: &str = "aws:CurrentTime";
    /// Prefix of `aws:ResourceTag/<tag-key>`.
    pub const RESOURCE_TAG_PREFIX: &str = "aws:ResourceTag/";
    /// Prefix of `aws:RequestTag/<tag-key>`.
    pub const REQUEST_TAG_PREFIX: &str = "aws:RequestTag/";
    /// The tag keys of a TagResource/CreateKey request (multi-valued).
    pub const TAG_KEYS: &str = "aws:TagKeys";
}

/// Why a policy document is refused. `Display` is the message of AWS's
/// MalformedPolicyDocumentException, naming the offending element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("Policy exceeds {MAX_POLICY_BYTES} bytes (it has {0} bytes)")]
    TooLarge(usize),
    #[error("Syntax errors in policy: {0}")]
    Syntax(String),
    #[error("Invalid policy version '{0}': use \"2012-10-17\" or \"2008-10-17\"")]
    Version(String),
    #[error("Policy contains no statement")]
    NoStatement,
    #[error("Policy contains a statement with no effect")]
    NoEffect,
    #[error("Policy contains a statement with an invalid effect '{0}': use \"Allow\" or \"Deny\"")]
    InvalidEffect(String),
    #[error("Policy contains a statement with no action")]
    NoAction,
    #[error("Policy contains a statement with no resource")]
    NoResource,
    #[error("Policy contains a statement with no principal")]
    NoPrincipal,
    #[error("Policy document should not specify a principal.")]
    PrincipalInIdentityPolicy,
    #[error("Policy contains a statement with both {0} and Not{0}")]
    BothElements(&'static str),
    #[error("Policy contains a statement with one or more invalid principals: '{0}'")]
    InvalidPrincipal(String),
    #[error("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.: '{0}'")]
    InvalidAction(String),
    #[error("Resource {0} must be in ARN format or \"*\".")]
    InvalidResource(String),
    #[error("Unknown condition operator: {0}")]
    UnknownConditionOperator(String),
    #[error("Invalid value '{value}' for condition operator {operator}: {expected}")]
    InvalidConditionValue {
        operator: String,
        value: String,
        expected: &'static str,
    },
    #[error("Statement IDs (SID) in a single policy must be unique: '{0}'")]
    DuplicateSid(String),
    #[error("The new key policy will not allow you to update the key policy in the future.")]
    Lockout,
}

/// Matches `text` against an AWS wildcard pattern: `*` is any run of
/// characters (also empty), `?` exactly one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position after the last `*` seen and the text position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `s` without `prefix`, compared ASCII case-insensitively; never panics on
/// a non-ASCII boundary.
pub(crate) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// The account root ARN of `account`.
pub(crate) fn root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

#[cfg(test)]
mod wildcard_tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("kms:*", "kms:Decrypt"));
        assert!(wildcard_match(
            "kms:Generate*",
            "kms:GenerateDataKeyWithoutPlaintext"
        ));
        assert!(!wildcard_match("kms:Generate*", "kms:Decrypt"));
        assert!(wildcard_match("kms:ReEncrypt*", "kms:ReEncrypt"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*a*b*", "xxaxxbxx"));
        assert!(!wildcard_match("*a*b", "xxaxxbxx"));
        assert!(wildcard_match("", ""));
        assert!(!wildcard_match("", "a"));
        assert!(wildcard_match("é*", "éclair"));
    }
}
