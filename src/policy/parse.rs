//! Parsing policy text into a checked [`PolicyDocument`]: the AWS grammar
//! of Version, Id, Statement, Sid, Effect, Principal, Action, Resource and
//! Condition, with the MalformedPolicyDocumentException messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use super::condition::{parse_conditions, Condition};
use super::PolicyError;

/// The largest policy AWS KMS accepts, in bytes.
pub const MAX_POLICY_BYTES: usize = 32768;

/// Parsed documents kept by [`PolicyDocument::shared_key_policy`] and
/// [`PolicyDocument::shared_identity_policy`] before the cache starts over.
const SHARED_POLICIES: usize = 1024;

/// Whether a document is attached to a resource (a key policy: every
/// statement names a principal) or to an identity (no principal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    Resource,
    Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementEffect {
    Allow,
    Deny,
}

/// A parsed, checked policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    version: Option<String>,
    id: Option<String>,
    kind: PolicyKind,
    statements: Vec<Statement>,
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub(crate) sid: Option<String>,
    pub(crate) effect: StatementEffect,
    /// `None` in identity policies: the statement applies to its holder.
    pub(crate) principal: Option<Principals>,
    pub(crate) action: Patterns,
    pub(crate) resource: Patterns,
    pub(crate) conditions: Vec<Condition>,
    /// Policy variables in Resource and condition values are resolved
    /// (version 2012-10-17).
    pub(crate) variables: bool,
}

/// An Action/NotAction or Resource/NotResource element.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Patterns {
    pub(crate) negated: bool,
    pub(crate) items: Vec<String>,
}

/// A Principal/NotPrincipal element.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Principals {
    pub(crate) negated: bool,
    pub(crate) entries: Vec<PrincipalEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PrincipalEntry {
    /// `"*"` or `{"AWS": "*"}`.
    Anyone,
    /// A 12-digit account id or `arn:<partition>:iam::<account>:root`: the account.
    Account(String),
    /// The ARN of a user, role, assumed-role session or federated user.
    Arn(String),
    /// `{"Service": "ec2.amazonaws.com"}`.
    Service(String),
    /// A Federated or CanonicalUser principal: valid, never one of our callers.
    Other,
}

impl PolicyDocument {
    /// Parses a policy of either kind: a document whose statements name
    /// principals is a resource policy (then all of them must), otherwise
    /// an identity policy.
    pub fn parse(text: &str) -> Result<PolicyDocument, PolicyError> {
        Self::parse_as(text, None)
    }

    /// Parses a key policy: every statement must have a Principal or NotPrincipal.
    pub fn parse_key_policy(text: &str) -> Result<PolicyDocument, PolicyError> {
        Self::parse_as(text, Some(PolicyKind::Resource))
    }

    /// Parses an IAM identity policy: no statement may have a principal.
    pub fn parse_identity_policy(text: &str) -> Result<PolicyDocument, PolicyError> {
        Self::parse_as(text, Some(PolicyKind::Identity))
    }

    /// [`PolicyDocument::parse_key_policy`] for the request path: the
    /// documents of stored texts are parsed once and shared.
    pub fn shared_key_policy(text: &str) -> Result<Arc<PolicyDocument>, PolicyError> {
        Self::shared(text, PolicyKind::Resource)
    }

    /// [`PolicyDocument::parse_identity_policy`] for the request path.
    pub fn shared_identity_policy(text: &str) -> Result<Arc<PolicyDocument>, PolicyError> {
        Self::shared(text, PolicyKind::Identity)
    }

    /// Every request parsed the key policy and the caller's policies again
    /// (tens of microseconds each); a document depends only on its text and
    /// kind, so it is kept by both (the whole text is the key: two texts
    /// never share a document). Failures are not kept.
    fn shared(text: &str, kind: PolicyKind) -> Result<Arc<PolicyDocument>, PolicyError> {
        type Cache = Mutex<HashMap<(PolicyKind, Box<str>), Arc<PolicyDocument>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = lock().get(&(kind, Box::from(text))) {
            return Ok(d.clone());
        }
        let doc = Arc::new(Self::parse_as(text, Some(kind))?);
        let mut c = lock();
        if c.len() >= SHARED_POLICIES {
            c.clear();
        }
        c.insert((kind, Box::from(text)), doc.clone());
        Ok(doc)
    }

    fn parse_as(text: &str, expected: Option<PolicyKind>) -> Result<PolicyDocument, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge(text.len()));
        }
        let root: Value = serde_json::from_str(text)
            .map_err(|e| PolicyError::Syntax(format!("invalid JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| PolicyError::Syntax("a policy must be a JSON object".into()))?;
        let mut version = None;
        let mut id = None;
        let mut raw_statements = None;
        for (name, value) in root {
            match name.as_str() {
                "Version" => {
                    let v = as_str(value, "Version")?;
                    if v != "2012-10-17" && v != "2008-10-17" {
                        return Err(PolicyError::Version(v.chars().take(64).collect()));
                    }
                    version = Some(v.to_string());
                }
                "Id" => id = Some(as_str(value, "Id")?.to_string()),
                "Statement" => raw_statements = Some(value),
                other => return Err(unknown_element(other, "the policy")),
            }
        }
        let raw_statements = match raw_statements {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            Some(_) => {
                return Err(PolicyError::Syntax(
                    "Statement must be an object or a list of objects".into(),
                ))
            }
            None => Vec::new(),
        };
        if raw_statements.is_empty() {
            return Err(PolicyError::NoStatement);
        }
        let mut statements = raw_statements
            .into_iter()
            .map(parse_statement)
            .collect::<Result<Vec<_>, _>>()?;
        // Policy variables exist from version 2012-10-17 on; without a
        // Version (2008-10-17 by default) `${...}` is literal text.
        let variables = version.as_deref() == Some("2012-10-17");
        for st in &mut statements {
            st.variables = variables;
            for c in &mut st.conditions {
                c.variables = variables;
            }
        }
        let with_principal = statements.iter().filter(|s| s.principal.is_some()).count();
        let kind = match expected {
            Some(kind) => kind,
            None if with_principal == 0 => PolicyKind::Identity,
            None => PolicyKind::Resource,
        };
        match kind {
            PolicyKind::Resource if with_principal < statements.len() => {
                return Err(PolicyError::NoPrincipal)
            }
            PolicyKind::Identity if with_principal > 0 => {
                return Err(PolicyError::PrincipalInIdentityPolicy)
            }
            _ => {}
        }
        if kind == PolicyKind::Identity {
            let mut seen = HashSet::new();
            for sid in statements.iter().filter_map(|s| s.sid.as_deref()) {
                if !seen.insert(sid) {
                    return Err(PolicyError::DuplicateSid(sid.to_string()));
                }
            }
        }
        Ok(PolicyDocument {
            version,
            id,
            kind,
            statements,
        })
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }
}

impl Statement {
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    pub fn effect(&self) -> StatementEffect {
        self.effect
    }
}

fn as_str<'a>(value: &'a Value, element: &str) -> Result<&'a str, PolicyError> {
    value
        .as_str()
        .ok_or_else(|| PolicyError::Syntax(format!("{element} must be a string")))
}

fn unknown_element(name: &str, place: &str) -> PolicyError {
    let name: String = name.chars().take(64).collect();
    PolicyError::Syntax(format!("unknown element '{name}' in {place}"))
}

/// A string or a list of strings.
fn string_list(value: &Value, element: &str) -> Result<Vec<String>, PolicyError> {
    let err = || PolicyError::Syntax(format!("{element} must be a string or a list of strings"));
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(err))
            .collect(),
        _ => Err(err()),
    }
}

/// Takes `name` or `Not<name>` from a statement, refusing both.
fn either<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<(bool, &'a Value)>, PolicyError> {
    let not_name = format!("Not{name}");
    match (obj.get(name), obj.get(&not_name)) {
        (Some(_), Some(_)) => Err(PolicyError::BothElements(name)),
        (Some(v), None) => Ok(Some((false, v))),
        (None, Some(v)) => Ok(Some((true, v))),
        (None, None) => Ok(None),
    }
}

fn parse_statement(raw: &Value) -> Result<Statement, PolicyError> {
    let obj = raw
        .as_object()
        .ok_or_else(|| PolicyError::Syntax("each statement must be a JSON object".into()))?;
    const KNOWN: [&str; 9] = [
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    if let Some(name) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(unknown_element(name, "a statement"));
    }
    let sid = obj
        .get("Sid")
        .map(|v| as_str(v, "Sid"))
        .transpose()?
        .map(str::to_string);
    let effect = match obj.get("Effect") {
        None => return Err(PolicyError::NoEffect),
        Some(v) => match as_str(v, "Effect")? {
            "Allow" => StatementEffect::Allow,
            "Deny" => StatementEffect::Deny,
            other => return Err(PolicyError::InvalidEffect(other.chars().take(64).collect())),
        },
    };
    let principal = either(obj, "Principal")?
        .map(|(negated, v)| {
            Ok::<_, PolicyError>(Principals {
                negated,
                entries: parse_principal(v)?,
            })
        })
        .transpose()?;
    let (negated, raw_actions) = either(obj, "Action")?.ok_or(PolicyError::NoAction)?;
    let items = string_list(raw_actions, "Action")?;
    if items.is_empty() {
        return Err(PolicyError::NoAction);
    }
    if let Some(bad) = items.iter().find(|a| !valid_action(a)) {
        return Err(PolicyError::InvalidAction(bad.chars().take(128).collect()));
    }
    let action = Patterns { negated, items };
    let (negated, raw_resources) = either(obj, "Resource")?.ok_or(PolicyError::NoResource)?;
    let items = string_list(raw_resources, "Resource")?;
    if items.is_empty() {
        return Err(PolicyError::NoResource);
    }
    if let Some(bad) = items
        .iter()
        .find(|r| r.as_str() != "*" && !r.starts_with("arn:"))
    {
        return Err(PolicyError::InvalidResource(
            bad.chars().take(128).collect(),
        ));
    }
    let resource = Patterns { negated, items };
    let conditions = match obj.get("Condition") {
        Some(block) => parse_conditions(block)?,
        None => Vec::new(),
    };
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
        variables: true,
    })
}

/// `*`, or `vendor:name` where both parts are non-empty and the vendor is
/// letters, digits and dashes.
fn valid_action(action: &str) -> bool {
    if action == "*" {
        return true;
    }
    match action.split_once(':') {
        Some((vendor, name)) => {
            !vendor.is_empty()
                && !name.is_empty()
                && vendor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !name.contains(':')
        }
        None => false,
    }
}

fn parse_principal(value: &Value) -> Result<Vec<PrincipalEntry>, PolicyError> {
    let invalid = |what: &str| PolicyError::InvalidPrincipal(what.chars().take(128).collect());
    match value {
        Value::String(s) if s == "*" => Ok(vec![PrincipalEntry::Anyone]),
        Value::String(s) => Err(invalid(s)),
        Value::Object(map) if !map.is_empty() => {
            let mut entries = Vec::new();
            for (kind, ids) in map {
                let ids = string_list(ids, &format!("Principal {kind}"))?;
                if ids.is_empty() {
                    return Err(invalid(kind));
                }
                for id in ids {
                    entries.push(match kind.as_str() {
                        "AWS" => aws_principal(&id).ok_or_else(|| invalid(&id))?,
                        "Service" if id == "*" || valid_service(&id) => PrincipalEntry::Service(id),
                        "Federated" | "CanonicalUser" if !id.is_empty() => PrincipalEntry::Other,
                        _ => return Err(invalid(&format!("{kind}: {id}"))),
                    });
                }
            }
            Ok(entries)
        }
        _ => Err(invalid(&value.to_string())),
    }
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_service(s: &str) -> bool {
    s.ends_with(".amazonaws.com")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// An `"AWS"` principal: `*`, an account id, or an IAM/STS principal ARN
/// (no wildcards: AWS refuses them in principals).
fn aws_principal(id: &str) -> Option<PrincipalEntry> {
    if id == "*" {
        return Some(PrincipalEntry::Anyone);
    }
    if is_account_id(id) {
        return Some(PrincipalEntry::Account(id.to_string()));
    }
    if id.contains(['*', '?']) {
        return None;
    }
    let parts: Vec<&str> = id.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return None;
    };
    if arn != "arn" || partition.is_empty() || !region.is_empty() || !is_account_id(account) {
        return None;
    }
    let named = |prefix: &str| resource.strip_prefix(prefix).is_some_and(|n| !n.is_empty());
    match service {
        "iam" if resource == "root" => Some(PrincipalEntry::Account(account.to_string())),
        "iam" if named("user/") || named("role/") => Some(PrincipalEntry::Arn(id.to_string())),
        "sts" if named("assumed-role/") || named("federated-user/") => {
            Some(PrincipalEntry::Arn(id.to_string()))
        }
        _ => None,
    }
}
