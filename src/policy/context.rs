//! The request's condition keys and their values, with AWS's key-name
//! matching rules.

use std::collections::BTreeMap;

use time::format_description::well_known::{Iso8601, Rfc3339};
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// One value of a condition key in the request.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionValue {
    String(String),
    /// A multi-valued key (`kms:EncryptionContextKeys`, `aws:TagKeys`, ...).
    /// An empty set counts as the key being absent.
    Strings(Vec<String>),
    Bool(bool),
    Number(f64),
    Date(OffsetDateTime),
}

impl From<&str> for ConditionValue {
    fn from(s: &str) -> Self {
        ConditionValue::String(s.to_string())
    }
}
impl From<String> for ConditionValue {
    fn from(s: String) -> Self {
        ConditionValue::String(s)
    }
}
impl From<bool> for ConditionValue {
    fn from(b: bool) -> Self {
        ConditionValue::Bool(b)
    }
}
impl From<i64> for ConditionValue {
    fn from(n: i64) -> Self {
        ConditionValue::Number(n as f64)
    }
}
impl From<u32> for ConditionValue {
    fn from(n: u32) -> Self {
        ConditionValue::Number(f64::from(n))
    }
}
impl From<f64> for ConditionValue {
    fn from(n: f64) -> Self {
        ConditionValue::Number(n)
    }
}
impl From<OffsetDateTime> for ConditionValue {
    fn from(d: OffsetDateTime) -> Self {
        ConditionValue::Date(d)
    }
}
impl From<Vec<String>> for ConditionValue {
    fn from(v: Vec<String>) -> Self {
        ConditionValue::Strings(v)
    }
}
impl From<Vec<&str>> for ConditionValue {
    fn from(v: Vec<&str>) -> Self {
        ConditionValue::Strings(v.into_iter().map(str::to_string).collect())
    }
}

impl ConditionValue {
    /// The values to test one by one: one for a single-valued key.
    pub(crate) fn items(&self) -> Vec<Item<'_>> {
        match self {
            ConditionValue::Strings(v) => v.iter().map(|s| Item::Str(s)).collect(),
            other => vec![Item::One(other)],
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Item<'a> {
    Str(&'a str),
    One(&'a ConditionValue),
}

impl Item<'_> {
    pub(crate) fn as_string(&self) -> String {
        match self {
            Item::Str(s) => (*s).to_string(),
            Item::One(ConditionValue::String(s)) => s.clone(),
            Item::One(ConditionValue::Strings(v)) => v.join(","),
            Item::One(ConditionValue::Bool(b)) => b.to_string(),
            Item::One(ConditionValue::Number(n)) => n.to_string(),
            Item::One(ConditionValue::Date(d)) => d.format(&Rfc3339).unwrap_or_default(),
        }
    }
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Item::One(ConditionValue::Bool(b)) => Some(*b),
            _ => parse_bool(&self.as_string()),
        }
    }
    pub(crate) fn as_number(&self) -> Option<f64> {
        match self {
            Item::One(ConditionValue::Number(n)) => Some(*n),
            _ => self.as_string().trim().parse().ok(),
        }
    }
    pub(crate) fn as_date(&self) -> Option<OffsetDateTime> {
        match self {
            Item::One(ConditionValue::Date(d)) => Some(*d),
            Item::One(ConditionValue::Number(n)) if n.is_finite() => {
                OffsetDateTime::from_unix_timestamp(*n as i64).ok()
            }
            _ => parse_date(&self.as_string()),
        }
    }
}

/// The condition keys of one request. Key names match case-insensitively,
/// as every IAM condition key name does, the `<context-key>` of
/// `kms:EncryptionContext:<context-key>` included (a case-sensitive context
/// key needs `kms:EncryptionContextKeys`, whose values keep their case).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConditionContext {
    values: BTreeMap<String, ConditionValue>,
}

impl ConditionContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: &str, value: impl Into<ConditionValue>) {
        self.values.insert(normalize_key(key), value.into());
    }

    /// Builder form of [`ConditionContext::insert`].
    pub fn with(mut self, key: &str, value: impl Into<ConditionValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `kms:EncryptionContext:<k>` for each pair and
    /// `kms:EncryptionContextKeys` to the keys (absent for an empty context).
    pub fn set_encryption_context<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut keys = Vec::new();
        for (k, v) in pairs {
            self.insert(&format!("{}{k}", super::keys::ENCRYPTION_CONTEXT_PREFIX), v);
            keys.push(k.to_string());
        }
        if !keys.is_empty() {
            self.insert(super::keys::ENCRYPTION_CONTEXT_KEYS, keys);
        }
    }

    /// A context from a JSON object of condition keys: strings, booleans,
    /// numbers, and lists of strings (multi-valued keys). Other values
    /// (objects, null, lists of non-strings) are skipped: no policy value
    /// could match them.
    pub fn from_json(map: &serde_json::Map<String, serde_json::Value>) -> Self {
        use serde_json::Value;
        let mut ctx = Self::new();
        for (key, value) in map {
            let v = match value {
                Value::String(s) => ConditionValue::String(s.clone()),
                Value::Bool(b) => ConditionValue::Bool(*b),
                Value::Number(n) => match n.as_f64() {
                    Some(f) => ConditionValue::Number(f),
                    None => continue,
                },
                Value::Array(items) => {
                    let strings: Option<Vec<String>> = items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect();
                    match strings {
                        Some(v) => ConditionValue::Strings(v),
                        None => continue,
                    }
                }
                Value::Null | Value::Object(_) => continue,
            };
            ctx.insert(key, v);
        }
        ctx
    }

    /// The value of `key`; an empty multi-valued key counts as absent.
    pub fn get(&self, key: &str) -> Option<&ConditionValue> {
        self.get_normalized(&normalize_key(key))
    }

    pub(crate) fn get_normalized(&self, key: &str) -> Option<&ConditionValue> {
        match self.values.get(key) {
            Some(ConditionValue::Strings(v)) if v.is_empty() => None,
            other => other,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Adds every key of `other`, replacing keys both have.
    pub fn merge(&mut self, other: ConditionContext) {
        self.values.extend(other.values);
    }
}

/// Replaces the policy variables of `text` (`${aws:username}`,
/// `${aws:PrincipalTag/team}`, with an optional default:
/// `${aws:username, 'nobody'}`) by the request's values, as IAM does in
/// policies of version 2012-10-17. `${$}` is a literal `$`. `None` when a
/// variable has no value and no default, or is `${*}`/`${?}` (a literal
/// wildcard character, which the wildcard matcher cannot express): the
/// element then matches nothing, as an unresolved variable does in IAM.
pub(crate) fn substitute_variables(text: &str, ctx: &ConditionContext) -> Option<String> {
    if !text.contains("${") {
        return Some(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let inner = after[..end].trim();
        rest = &after[end + 1..];
        if inner == "$" {
            out.push('$');
            continue;
        }
        if inner == "*" || inner == "?" {
            return None;
        }
        let (key, default) = match inner.split_once(',') {
            Some((k, d)) => {
                let d = d.trim();
                let d = d.strip_prefix('\'').and_then(|d| d.strip_suffix('\''))?;
                (k.trim(), Some(d))
            }
            None => (inner, None),
        };
        match ctx.get(key) {
            Some(ConditionValue::String(v)) => out.push_str(v),
            Some(ConditionValue::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            _ => out.push_str(default?),
        }
    }
    out.push_str(rest);
    Some(out)
}

/// The lookup form of a condition key: lowercase.
pub(crate) fn normalize_key(key: &str) -> String {
    key.to_lowercase()
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// ISO 8601 (with time and offset, or a bare date at midnight UTC) or epoch seconds.
pub(crate) fn parse_date(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return OffsetDateTime::from_unix_timestamp(s.parse().ok()?).ok();
    }
    if let Ok(d) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(d);
    }
    if let Ok(d) = OffsetDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(d);
    }
    if let Ok(d) = PrimitiveDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(d.assume_utc());
    }
    let date = Date::parse(s, format_description!("[year]-[month]-[day]")).ok()?;
    Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc())
}

#[cfg(test)]
mod variable_tests {
    use super::*;

    #[test]
    fn variables_resolve_with_defaults_and_escapes() {
        let ctx = ConditionContext::new().with("aws:username", "alice");
        let sub = |t: &str| substitute_variables(t, &ctx);
        assert_eq!(
            sub("home/${aws:username}/*").as_deref(),
            Some("home/alice/*")
        );
        assert_eq!(
            sub("${AWS:UserName}").as_deref(),
            Some("alice"),
            "keys are case-insensitive"
        );
        assert_eq!(
            sub("${aws:PrincipalTag/team, 'none'}").as_deref(),
            Some("none")
        );
        assert_eq!(
            sub("${aws:PrincipalTag/team}"),
            None,
            "unresolved: matches nothing"
        );
        assert_eq!(sub("cost${$}"), Some("cost$".into()));
        assert_eq!(sub("${*}"), None);
        assert_eq!(sub("unterminated ${aws:username"), None);
        assert_eq!(sub("plain").as_deref(), Some("plain"));
    }
}
