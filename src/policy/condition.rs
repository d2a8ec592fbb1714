//! Condition blocks: the parsed operators and their AWS evaluation rules.
//!
//! AWS semantics kept here: operators of a block are ANDed, keys of one
//! operator are ANDed, values of one key are ORed (for negated operators the
//! key must match none of them); a key absent from the request makes a
//! condition false, except negated operators, `...IfExists`, `Null` and
//! `ForAllValues:`, which are true then.

use std::net::IpAddr;

use serde_json::Value;
use time::OffsetDateTime;

use super::context::{
    normalize_key, parse_bool, parse_date, substitute_variables, ConditionContext, Item,
};
use super::{strip_prefix_ci, wildcard_match, PolicyError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Cmp::Eq => ord == Equal,
            Cmp::Lt => ord == Less,
            Cmp::Le => ord != Greater,
            Cmp::Gt => ord == Greater,
            Cmp::Ge => ord != Less,
        }
    }
}

/// An operator family; negation is kept apart in [`Condition::negated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Arn,
    Bool,
    Null,
    Numeric(Cmp),
    Date(Cmp),
    IpAddress,
    BinaryEquals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    Single,
    ForAnyValue,
    ForAllValues,
}

/// The values a policy gives for one key, parsed for their operator.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Strings(Vec<String>),
    Bools(Vec<bool>),
    Numbers(Vec<f64>),
    Dates(Vec<OffsetDateTime>),
    Networks(Vec<(IpAddr, u8)>),
}

/// One `operator: {key: values}` entry of a statement's Condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    operator: String,
    family: Family,
    negated: bool,
    qualifier: SetQualifier,
    if_exists: bool,
    /// Normalized with [`normalize_key`].
    key: String,
    values: Values,
    /// Policy variables (`${aws:username}`) in the values are resolved:
    /// true in policies of version 2012-10-17, false in 2008-10-17 ones,
    /// where `${...}` is literal text.
    pub(crate) variables: bool,
}

fn family_of(name: &str) -> Option<(Family, bool)> {
    use Cmp::*;
    use Family::*;
    let known: &[(&str, Family, bool)] = &[
        ("StringEquals", StringEquals, false),
        ("StringNotEquals", StringEquals, true),
        ("StringEqualsIgnoreCase", StringEqualsIgnoreCase, false),
        ("StringNotEqualsIgnoreCase", StringEqualsIgnoreCase, true),
        ("StringLike", StringLike, false),
        ("StringNotLike", StringLike, true),
        ("ArnEquals", Arn, false),
        ("ArnLike", Arn, false),
        ("ArnNotEquals", Arn, true),
        ("ArnNotLike", Arn, true),
        ("Bool", Bool, false),
        ("Null", Null, false),
        ("NumericEquals", Numeric(Eq), false),
        ("NumericNotEquals", Numeric(Eq), true),
        ("NumericLessThan", Numeric(Lt), false),
        ("NumericLessThanEquals", Numeric(Le), false),
        ("NumericGreaterThan", Numeric(Gt), false),
        ("NumericGreaterThanEquals", Numeric(Ge), false),
        ("DateEquals", Date(Eq), false),
        ("DateNotEquals", Date(Eq), true),
        ("DateLessThan", Date(Lt), false),
        ("DateLessThanEquals", Date(Le), false),
        ("DateGreaterThan", Date(Gt), false),
        ("DateGreaterThanEquals", Date(Ge), false),
        ("IpAddress", IpAddress, false),
        ("NotIpAddress", IpAddress, true),
        ("BinaryEquals", BinaryEquals, false),
    ];
    known
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, f, neg)| (f, neg))
}

/// Parses a statement's `Condition` object.
pub(crate) fn parse_conditions(block: &Value) -> Result<Vec<Condition>, PolicyError> {
    let ops = block.as_object().ok_or_else(|| {
        PolicyError::Syntax("Condition must be an object of condition operators".into())
    })?;
    let mut out = Vec::new();
    for (operator, entries) in ops {
        let unknown = || PolicyError::UnknownConditionOperator(operator.clone());
        let (qualifier, rest) = if let Some(r) = strip_prefix_ci(operator, "ForAnyValue:") {
            (SetQualifier::ForAnyValue, r)
        } else if let Some(r) = strip_prefix_ci(operator, "ForAllValues:") {
            (SetQualifier::ForAllValues, r)
        } else {
            (SetQualifier::Single, operator.as_str())
        };
        let (base, if_exists) = match rest.len().checked_sub("IfExists".len()) {
            Some(at)
                if rest
                    .get(at..)
                    .is_some_and(|t| t.eq_ignore_ascii_case("IfExists")) =>
            {
                (rest.get(..at).unwrap_or_default(), true)
            }
            _ => (rest, false),
        };
        let (family, negated) = family_of(base).ok_or_else(unknown)?;
        if family == Family::Null && (if_exists || qualifier != SetQualifier::Single) {
            return Err(unknown());
        }
        let keys = entries.as_object().ok_or_else(|| {
            PolicyError::Syntax(format!(
                "condition operator {operator} must map condition keys to values"
            ))
        })?;
        for (key, raw) in keys {
            let texts = value_texts(operator, key, raw)?;
            out.push(Condition {
                operator: operator.clone(),
                family,
                negated,
                qualifier,
                if_exists,
                key: normalize_key(key),
                values: parse_values(operator, family, texts)?,
                variables: true,
            });
        }
    }
    Ok(out)
}

/// The values of one key as text: a string, number or boolean, or a list of them.
fn value_texts(operator: &str, key: &str, raw: &Value) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| {
        match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(PolicyError::Syntax(format!(
            "the value of condition key {key} under {operator} must be a string, number, boolean or a list of them"
        ))),
    }
    };
    match raw {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

fn parse_values(operator: &str, family: Family, texts: Vec<String>) -> Result<Values, PolicyError> {
    fn each<T>(
        operator: &str,
        texts: &[String],
        expected: &'static str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, PolicyError> {
        texts
            .iter()
            .map(|t| {
                f(t).ok_or_else(|| PolicyError::InvalidConditionValue {
                    operator: operator.to_string(),
                    value: t.chars().take(128).collect(),
                    expected,
                })
            })
            .collect()
    }
    Ok(match family {
        Family::Bool | Family::Null => Values::Bools(each(
            operator,
            &texts,
            "expected true or false",
            parse_bool,
        )?),
        Family::Numeric(_) => Values::Numbers(each(operator, &texts, "expected a number", |t| {
            t.trim().parse::<f64>().ok().filter(|n| n.is_finite())
        })?),
        Family::Date(_) => Values::Dates(each(
            operator,
            &texts,
            "expected an ISO 8601 date (2024-01-31T00:00:00Z) or epoch seconds",
            parse_date,
        )?),
        Family::IpAddress => Values::Networks(each(
            operator,
            &texts,
            "expected an IP address or CIDR block (203.0.113.0/24)",
            parse_cidr,
        )?),
        _ => Values::Strings(texts),
    })
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let addr: IpAddr = addr.trim().parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.trim().parse::<u8>().ok().filter(|b| *b <= max)?,
        None => max,
    };
    Some((addr, bits))
}

fn in_network(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    let prefix = |a: u128, b: u128, width: u32| {
        let shift = width - u32::from(bits);
        shift >= width || (a >> shift) == (b >> shift)
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            prefix(u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix(u128::from(a), u128::from(b), 128),
        _ => false,
    }
}

/// ARN matching: each of the six colon-separated parts is matched on its
/// own with wildcards; the last part keeps any further colons.
fn arn_match(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| wildcard_match(p, a))
}

impl Condition {
    /// Whether this condition holds for the request.
    pub(crate) fn holds(&self, ctx: &ConditionContext) -> bool {
        let value = ctx.get_normalized(&self.key);
        if let Values::Bools(wanted) = &self.values {
            if self.family == Family::Null {
                // `"Null": {"k": "true"}` holds when k is absent.
                return wanted.iter().any(|absent| *absent == value.is_none());
            }
        }
        let Some(value) = value else {
            return self.if_exists
                || match self.qualifier {
                    SetQualifier::ForAllValues => true,
                    SetQualifier::ForAnyValue => false,
                    SetQualifier::Single => self.negated,
                };
        };
        let items = value.items();
        let negated = self.negated;
        match self.qualifier {
            SetQualifier::Single => {
                let any = items.iter().any(|i| self.matches_any_value(*i, ctx));
                any != negated
            }
            SetQualifier::ForAnyValue => items
                .iter()
                .any(|i| self.matches_any_value(*i, ctx) != negated),
            SetQualifier::ForAllValues => items
                .iter()
                .all(|i| self.matches_any_value(*i, ctx) != negated),
        }
    }

    /// The positive test: does one request value match one of the policy's
    /// values? String and ARN values may hold policy variables (resolved
    /// from `ctx`; an unresolved one matches nothing).
    fn matches_any_value(&self, item: Item<'_>, ctx: &ConditionContext) -> bool {
        let resolved;
        let values = match &self.values {
            Values::Strings(vs) if self.variables && vs.iter().any(|v| v.contains("${")) => {
                resolved = Values::Strings(
                    vs.iter()
                        .filter_map(|v| substitute_variables(v, ctx))
                        .collect(),
                );
                &resolved
            }
            other => other,
        };
        match (values, self.family) {
            (Values::Strings(vs), Family::StringEquals | Family::BinaryEquals) => {
                let s = item.as_string();
                vs.contains(&s)
            }
            (Values::Strings(vs), Family::StringEqualsIgnoreCase) => {
                let s = item.as_string().to_lowercase();
                vs.iter().any(|v| v.to_lowercase() == s)
            }
            (Values::Strings(vs), Family::StringLike) => {
                let s = item.as_string();
                vs.iter().any(|v| wildcard_match(v, &s))
            }
            (Values::Strings(vs), Family::Arn) => {
                let s = item.as_string();
                vs.iter().any(|v| arn_match(v, &s))
            }
            (Values::Bools(vs), _) => item.as_bool().is_some_and(|b| vs.contains(&b)),
            (Values::Numbers(vs), Family::Numeric(cmp)) => item.as_number().is_some_and(|n| {
                vs.iter()
                    .any(|v| n.partial_cmp(v).is_some_and(|o| cmp.holds(o)))
            }),
            (Values::Dates(vs), Family::Date(cmp)) => item
                .as_date()
                .is_some_and(|d| vs.iter().any(|v| cmp.holds(d.cmp(v)))),
            (Values::Networks(vs), _) => item
                .as_string()
                .trim()
                .parse::<IpAddr>()
                .is_ok_and(|ip| vs.iter().any(|n| in_network(ip, *n))),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(block: Value, ctx: &ConditionContext) -> bool {
        let conds = parse_conditions(&block).unwrap();
        conds.iter().all(|c| c.holds(ctx))
    }

    #[test]
    fn keys_are_case_insensitive_the_encryption_context_key_included() {
        let ctx = ConditionContext::new()
            .with("KMS:CallerAccount", "111122223333")
            .with("kms:EncryptionContext:Department", "IT");
        assert!(holds(
            json!({"StringEquals": {"kms:calleraccount": "111122223333"}}),
            &ctx
        ));
        assert!(holds(
            json!({"StringEquals": {"KMS:encryptioncontext:Department": "IT"}}),
            &ctx
        ));
        assert!(holds(
            json!({"StringEquals": {"kms:EncryptionContext:department": "IT"}}),
            &ctx
        ));
        // The value keeps its case under StringEquals.
        assert!(!holds(
            json!({"StringEquals": {"kms:EncryptionContext:department": "it"}}),
            &ctx
        ));
    }

    #[test]
    fn context_from_json() {
        let map = json!({"kms:CallerAccount": "111122223333", "kms:GrantIsForAWSResource": true,
            "kms:RotationPeriodInDays": 90, "aws:TagKeys": ["a", "b"], "skip": {"x": 1}, "n": null});
        let ctx = ConditionContext::from_json(map.as_object().unwrap());
        assert_eq!(ctx.get("KMS:CALLERACCOUNT"), Some(&"111122223333".into()));
        assert!(holds(
            json!({"Bool": {"kms:GrantIsForAWSResource": "true"},
            "NumericEquals": {"kms:RotationPeriodInDays": 90},
            "ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]},
            "Null": {"skip": "true", "n": "true"}}),
            &ctx
        ));
    }

    #[test]
    fn missing_keys() {
        let ctx = ConditionContext::new();
        assert!(!holds(json!({"StringEquals": {"k": "v"}}), &ctx));
        assert!(holds(json!({"StringNotEquals": {"k": "v"}}), &ctx));
        assert!(holds(json!({"StringEqualsIfExists": {"k": "v"}}), &ctx));
        assert!(holds(
            json!({"ForAllValues:StringEquals": {"k": "v"}}),
            &ctx
        ));
        assert!(!holds(
            json!({"ForAnyValue:StringEquals": {"k": "v"}}),
            &ctx
        ));
        assert!(holds(json!({"Null": {"k": "true"}}), &ctx));
        assert!(!holds(json!({"Null": {"k": "false"}}), &ctx));
        let empty = ConditionContext::new().with("k", Vec::<String>::new());
        assert!(holds(json!({"Null": {"k": true}}), &empty));
    }

    #[test]
    fn numbers_dates_bools_ips() {
        let ctx = ConditionContext::new()
            .with("n", 365i64)
            .with("s", "365")
            .with("d", parse_date("2024-06-01T12:00:00Z").unwrap())
            .with("b", true)
            .with("ip", "203.0.113.7");
        assert!(holds(
            json!({"NumericLessThanEquals": {"n": 365, "s": "365"}}),
            &ctx
        ));
        assert!(!holds(json!({"NumericLessThan": {"n": "365"}}), &ctx));
        assert!(holds(json!({"NumericNotEquals": {"n": [1, 2]}}), &ctx));
        assert!(holds(json!({"DateGreaterThan": {"d": "2024-01-01"}}), &ctx));
        assert!(holds(json!({"DateLessThan": {"d": 1735689600}}), &ctx));
        assert!(!holds(
            json!({"DateEquals": {"d": "2024-06-01T12:00:01Z"}}),
            &ctx
        ));
        assert!(holds(json!({"Bool": {"b": "TRUE"}}), &ctx));
        assert!(!holds(json!({"Bool": {"b": false}}), &ctx));
        assert!(holds(json!({"IpAddress": {"ip": "203.0.113.0/24"}}), &ctx));
        assert!(holds(
            json!({"NotIpAddress": {"ip": ["10.0.0.0/8", "::1"]}}),
            &ctx
        ));
    }

    #[test]
    fn arn_operators_match_by_part() {
        let ctx = ConditionContext::new()
            .with("aws:PrincipalArn", "arn:aws:iam::111122223333:user/alice");
        assert!(holds(
            json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/*"}}),
            &ctx
        ));
        assert!(holds(
            json!({"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/alice"}}),
            &ctx
        ));
        assert!(!holds(
            json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333"}}),
            &ctx
        ));
        assert!(holds(
            json!({"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::444455556666:*"}}),
            &ctx
        ));
    }

    #[test]
    fn set_qualifiers_on_multi_valued_keys() {
        let mut ctx = ConditionContext::new();
        ctx.set_encryption_context([("Department", "IT"), ("Project", "Alpha")]);
        let all = json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department", "Project", "X"]}});
        assert!(holds(all, &ctx));
        let all_strict =
            json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department"]}});
        assert!(!holds(all_strict, &ctx));
        let any = json!({"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "Proj*"}});
        assert!(holds(any, &ctx));
        let any_not = json!({"ForAnyValue:StringNotEquals": {"kms:EncryptionContextKeys": ["Department", "Project"]}});
        assert!(!holds(any_not, &ctx));
        let all_not =
            json!({"ForAllValues:StringNotEquals": {"kms:EncryptionContextKeys": "Secret"}});
        assert!(holds(all_not, &ctx));
    }

    #[test]
    fn values_or_keys_and_negation_nor() {
        let ctx = ConditionContext::new().with("a", "1").with("b", "2");
        assert!(holds(
            json!({"StringEquals": {"a": ["0", "1"], "b": "2"}}),
            &ctx
        ));
        assert!(!holds(
            json!({"StringEquals": {"a": ["0", "1"], "b": "3"}}),
            &ctx
        ));
        assert!(!holds(json!({"StringNotEquals": {"a": ["0", "1"]}}), &ctx));
        assert!(holds(json!({"StringNotEquals": {"a": ["0", "2"]}}), &ctx));
        assert!(holds(
            json!({"StringEqualsIgnoreCase": {"a": "1"}, "StringLike": {"b": "?"}}),
            &ctx
        ));
    }
}
