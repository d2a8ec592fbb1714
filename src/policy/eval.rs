//! Deciding one policy document for one request: which statements apply,
//! and whether the document denies, allows, or says nothing.

use super::context::substitute_variables;
use super::context::ConditionContext;
use super::parse::{
    Patterns, PolicyDocument, PrincipalEntry, Principals, Statement, StatementEffect,
};
use super::{keys, root_arn, wildcard_match};
use crate::request::{PrincipalType, RequestContext};

/// One request to authorize.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthzRequest {
    /// `arn:aws:iam::<account>:root`, `...:user/<name>`, an assumed-role
    /// session ARN, or a service principal (`ec2.amazonaws.com`).
    pub principal_arn: String,
    /// The 12-digit account of the principal.
    pub principal_account: String,
    /// The action, e.g. `kms:Decrypt`.
    pub action: String,
    /// The key ARN.
    pub resource: String,
    pub context: ConditionContext,
    /// The caller's session policy (a role session made with AssumeRole
    /// `Policy`), whose allows bound the session's: see
    /// [`AuthzRequest::session_effect`].
    pub session_policy: Option<String>,
}

impl AuthzRequest {
    /// The request of `ctx`'s caller for `action` on `resource`, with the
    /// condition keys every KMS request carries: kms:CallerAccount,
    /// aws:PrincipalArn, aws:PrincipalAccount, aws:PrincipalType and, when
    /// a service calls on the caller's behalf, kms:ViaService. Add the
    /// operation's own keys (encryption context, grant keys, tags) to
    /// `context` afterwards.
    pub fn from_request(ctx: &RequestContext, action: &str, resource: &str) -> Self {
        let caller = &ctx.caller;
        let account = caller.account.as_str();
        let principal_type = match caller.principal_type {
            PrincipalType::Root => "Account",
            PrincipalType::IAMUser => "User",
            PrincipalType::AssumedRole => "AssumedRole",
            PrincipalType::AWSService => "AWSService",
        };
        // aws:PrincipalArn of a role session is its role's ARN, as in IAM.
        let principal_arn = caller
            .session_role()
            .map(|(role, _)| role)
            .unwrap_or_else(|| caller.principal_arn.clone());
        let mut context = ConditionContext::new()
            .with(keys::CALLER_ACCOUNT, account)
            .with(keys::PRINCIPAL_ARN, principal_arn)
            .with(keys::PRINCIPAL_ACCOUNT, account)
            .with("aws:PrincipalType", principal_type);
        // ${aws:username} in policies: the IAM user's name.
        if let Some((_, name)) = caller.principal_arn.split_once(":user/") {
            context.insert("aws:username", name.rsplit('/').next().unwrap_or(name));
        }
        for (k, v) in &caller.principal_tags {
            context.insert(&format!("aws:PrincipalTag/{k}"), v.as_str());
        }
        if let Some(via) = &ctx.via_service {
            context.insert(keys::VIA_SERVICE, via.as_str());
        }
        AuthzRequest {
            principal_arn: caller.principal_arn.clone(),
            principal_account: account.to_string(),
            action: action.to_string(),
            resource: resource.to_string(),
            context,
            session_policy: caller.session_policy.clone(),
        }
    }

    /// What the caller's session policy says about this request; `None`
    /// for a caller without one. A session may do only what its session
    /// policy allows too, and nothing it denies. A stored policy that no
    /// longer parses allows nothing.
    pub fn session_effect(&self) -> Option<Effect> {
        let text = self.session_policy.as_deref()?;
        Some(match PolicyDocument::shared_identity_policy(text) {
            Ok(d) => d.evaluate(self),
            Err(_) => Effect::NotApplicable,
        })
    }

    /// True when the caller is its account's root principal.
    pub fn is_account_root(&self) -> bool {
        self.principal_arn == root_arn(&self.principal_account)
    }
}

/// What one document says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A Deny statement applies: nothing else can allow the request.
    ExplicitDeny,
    /// An Allow statement applies and no Deny does.
    Allow,
    /// No statement applies.
    NotApplicable,
}

/// How a statement's principal element matched the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PrincipalMatch {
    /// Through the caller's account (account id or `:root`): in a key
    /// policy this delegates to the account's IAM policies.
    Account,
    /// The caller itself, `*`, or a NotPrincipal that leaves it out.
    Direct,
}

/// The detailed outcome the KMS decision needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) deny: bool,
    /// An Allow statement names the caller directly (ARN, `*`, NotPrincipal).
    pub(crate) allow_direct: bool,
    /// An Allow statement names the caller's account.
    pub(crate) allow_account: bool,
}

impl PolicyDocument {
    /// Decides this document alone. In a key policy an account id or
    /// `arn:aws:iam::<account>:root` matches every principal of that
    /// account; [`super::authorize`] adds the IAM delegation on top.
    pub fn evaluate(&self, req: &AuthzRequest) -> Effect {
        let o = self.outcome(req);
        if o.deny {
            Effect::ExplicitDeny
        } else if o.allow_direct || o.allow_account {
            Effect::Allow
        } else {
            Effect::NotApplicable
        }
    }

    pub(crate) fn outcome(&self, req: &AuthzRequest) -> Outcome {
        let mut o = Outcome::default();
        for st in self.statements() {
            let Some(m) = st.applies(req) else { continue };
            match (st.effect, m) {
                (StatementEffect::Deny, _) => o.deny = true,
                (StatementEffect::Allow, PrincipalMatch::Direct) => o.allow_direct = true,
                (StatementEffect::Allow, PrincipalMatch::Account) => o.allow_account = true,
            }
        }
        o
    }
}

impl Statement {
    /// Does Resource pattern `p` (policy variables resolved) match?
    fn resource_hit(&self, p: &str, req: &AuthzRequest) -> bool {
        if !self.variables {
            return wildcard_match(p, &req.resource);
        }
        substitute_variables(p, &req.context).is_some_and(|p| wildcard_match(&p, &req.resource))
    }

    /// How the statement matches the request, if it does.
    fn applies(&self, req: &AuthzRequest) -> Option<PrincipalMatch> {
        let action = req.action.to_lowercase();
        let action_hit = |p: &String| wildcard_match(&p.to_lowercase(), &action);
        if !pattern_hit(&self.action, action_hit)
            || !pattern_hit(&self.resource, |p| self.resource_hit(p, req))
        {
            return None;
        }
        let m = match &self.principal {
            None => PrincipalMatch::Direct,
            Some(p) => principal_match(p, req)?,
        };
        self.conditions
            .iter()
            .all(|c| c.holds(&req.context))
            .then_some(m)
    }
}

fn pattern_hit(p: &Patterns, hit: impl Fn(&String) -> bool) -> bool {
    p.items.iter().any(hit) != p.negated
}

fn principal_match(p: &Principals, req: &AuthzRequest) -> Option<PrincipalMatch> {
    if p.negated {
        // AWS decides NotPrincipal for each entity of the caller (its
        // account, then itself): the statement applies unless every one is
        // listed, so excluding a user also needs its account listed.
        let root = root_arn(&req.principal_account);
        let mut entities = vec![root.as_str()];
        if req.principal_arn != root {
            entities.push(req.principal_arn.as_str());
        }
        // Each entity must be listed as itself: an account entry lists the
        // account's root entity, not every principal of the account.
        let listed = |entity: &str| {
            p.entries.iter().any(|e| match e {
                PrincipalEntry::Account(a) => entity == root && *a == req.principal_account,
                other => entry_match(other, entity, &req.principal_account).is_some(),
            })
        };
        return entities
            .iter()
            .any(|e| !listed(e))
            .then_some(PrincipalMatch::Direct);
    }
    p.entries
        .iter()
        .filter_map(|e| entry_match(e, &req.principal_arn, &req.principal_account))
        .max()
}

fn entry_match(entry: &PrincipalEntry, arn: &str, account: &str) -> Option<PrincipalMatch> {
    match entry {
        PrincipalEntry::Anyone => Some(PrincipalMatch::Direct),
        PrincipalEntry::Account(a) if a == account => Some(PrincipalMatch::Account),
        PrincipalEntry::Arn(p) if principal_arn_match(p, arn) => Some(PrincipalMatch::Direct),
        PrincipalEntry::Service(s) if s == "*" || s == arn => Some(PrincipalMatch::Direct),
        _ => None,
    }
}

/// A principal ARN names the caller itself, or a role whose session the caller is.
fn principal_arn_match(policy: &str, caller: &str) -> bool {
    if policy == caller {
        return true;
    }
    let p: Vec<&str> = policy.splitn(6, ':').collect();
    let c: Vec<&str> = caller.splitn(6, ':').collect();
    match (&p[..], &c[..]) {
        ([_, pp, "iam", _, pa, pr], [_, cp, "sts", _, ca, cr]) if pp == cp && pa == ca => {
            let role = pr.strip_prefix("role/").and_then(|r| r.rsplit('/').next());
            let session_role = cr
                .strip_prefix("assumed-role/")
                .and_then(|r| r.split('/').next());
            role.is_some() && role == session_role
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(principal: &str, action: &str) -> AuthzRequest {
        let account = principal.split(':').nth(4).unwrap_or_default().to_string();
        AuthzRequest {
            principal_arn: principal.into(),
            principal_account: account,
            action: action.into(),
            resource: "arn:aws:kms:us-east-1:111122223333:key/k1".into(),
            context: ConditionContext::new(),
            session_policy: None,
        }
    }

    #[test]
    fn from_request_sets_the_standard_keys() {
        use crate::ids::{AccountId, Region};
        use crate::request::Caller;
        let caller = Caller::root(AccountId::default_account());
        let ctx = RequestContext::new(caller, Region::default_region()).via_ec2();
        let r = AuthzRequest::from_request(&ctx, "kms:Decrypt", "arn:k");
        assert!(r.is_account_root());
        assert_eq!(r.principal_account, "111122223333");
        let get = |k: &str| r.context.get(k).cloned();
        assert_eq!(get("kms:CallerAccount"), Some("111122223333".into()));
        assert_eq!(
            get("kms:ViaService"),
            Some("ec2.us-east-1.amazonaws.com".into())
        );
        assert_eq!(get("aws:PrincipalType"), Some("Account".into()));
        assert_eq!(
            get("aws:principalarn"),
            Some("arn:aws:iam::111122223333:root".into())
        );
    }

    #[test]
    fn role_principal_matches_its_sessions_only() {
        assert!(principal_arn_match(
            "arn:aws:iam::111122223333:role/ops/Admin",
            "arn:aws:sts::111122223333:assumed-role/Admin/bob"
        ));
        assert!(!principal_arn_match(
            "arn:aws:iam::111122223333:role/Admin",
            "arn:aws:sts::444455556666:assumed-role/Admin/bob"
        ));
        assert!(!principal_arn_match(
            "arn:aws:iam::111122223333:user/Admin",
            "arn:aws:sts::111122223333:assumed-role/Admin/bob"
        ));
    }

    #[test]
    fn account_principal_matches_every_principal_of_the_account() {
        let doc = PolicyDocument::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}}"#,
        )
        .unwrap();
        let alice = req("arn:aws:iam::111122223333:user/alice", "kms:Decrypt");
        assert_eq!(doc.evaluate(&alice), Effect::Allow);
        let o = doc.outcome(&alice);
        assert!(o.allow_account && !o.allow_direct);
        let other = req("arn:aws:iam::444455556666:user/alice", "kms:Decrypt");
        assert_eq!(doc.evaluate(&other), Effect::NotApplicable);
    }

    #[test]
    fn actions_ignore_case_resources_do_not() {
        let doc = PolicyDocument::parse(
            r#"{"Statement":{"Effect":"Allow","Action":"KMS:decrypt","Resource":"arn:aws:kms:*:111122223333:key/k?"}}"#,
        )
        .unwrap();
        assert_eq!(
            doc.evaluate(&req("arn:aws:iam::111122223333:user/a", "kms:Decrypt")),
            Effect::Allow
        );
        let mut other_key = req("arn:aws:iam::111122223333:user/a", "kms:Decrypt");
        other_key.resource = "arn:aws:kms:us-east-1:111122223333:key/K1".into();
        assert_eq!(doc.evaluate(&other_key), Effect::NotApplicable);
    }
}
