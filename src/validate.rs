//! Input validation with AWS's messages, for every service of keyvol (KMS,
//! IAM, STS).
//!
//! Each constraint is declared where it is checked (`length("description",
//! d, 0, 8192)`), and its message is built here only, in AWS's exact text:
//!
//! ```text
//! 1 validation error detected: Value 'x' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^alias/[a-zA-Z0-9/_-]+$
//! 2 validation errors detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null; Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null
//! ```
//!
//! This module knows no service error type: a [`Violation`] (one member) or
//! [`ValidationErrors`] (one or more) converts into each service's error
//! (`KmsError` has `From` impls). Echoed values are cut to
//! [`MAX_SHOWN_CHARS`] characters, on a character boundary; the helpers for
//! blobs and lengths never echo the value, so secrets (plaintext, key
//! material, ciphertext) never reach a message.

use std::fmt;

/// The most characters of a member's value a message echoes.
pub const MAX_SHOWN_CHARS: usize = 128;

/// What a message shows of the member's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// `Value null at '...'`: the member is absent.
    Null,
    /// `Value at '...'`: the value is not echoed (secrets, lists, lengths).
    Hidden,
    /// `Value '...' at '...'`, already truncated.
    Value(String),
}

/// The constraint a member fails, as AWS words it after `failed to satisfy
/// constraint: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// `Member must not be null`
    NotNull,
    /// `Member must have length greater than or equal to N`
    MinLength(usize),
    /// `Member must have length less than or equal to N`
    MaxLength(usize),
    /// `Member must have length between A and B`
    LengthBetween(usize, usize),
    /// `Member must have value greater than or equal to N`
    MinValue(i64),
    /// `Member must have value less than or equal to N`
    MaxValue(i64),
    /// `Member must have value between A and B`
    ValueBetween(i64, i64),
    /// `Member must satisfy enum value set: [A, B]`
    Enum(Vec<String>),
    /// Each member of a list: `Member must satisfy constraint: [Member must
    /// satisfy enum value set: [A, B]]`
    EachEnum(Vec<String>),
    /// `Member must satisfy regular expression pattern: P`, where P is the
    /// pattern (or a description of it).
    Pattern(String),
    /// Any other constraint, written out (`Member must be a role ARN ...`).
    Other(String),
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::NotNull => f.write_str("Member must not be null"),
            Constraint::MinLength(n) => {
                write!(f, "Member must have length greater than or equal to {n}")
            }
            Constraint::MaxLength(n) => {
                write!(f, "Member must have length less than or equal to {n}")
            }
            Constraint::LengthBetween(a, b) => {
                write!(f, "Member must have length between {a} and {b}")
            }
            Constraint::MinValue(n) => {
                write!(f, "Member must have value greater than or equal to {n}")
            }
            Constraint::MaxValue(n) => {
                write!(f, "Member must have value less than or equal to {n}")
            }
            Constraint::ValueBetween(a, b) => {
                write!(f, "Member must have value between {a} and {b}")
            }
            Constraint::Enum(values) => {
                write!(
                    f,
                    "Member must satisfy enum value set: [{}]",
                    values.join(", ")
                )
            }
            Constraint::EachEnum(values) => write!(
                f,
                "Member must satisfy constraint: [Member must satisfy enum value set: [{}]]",
                values.join(", ")
            ),
            Constraint::Pattern(p) => {
                write!(f, "Member must satisfy regular expression pattern: {p}")
            }
            Constraint::Other(text) => f.write_str(text),
        }
    }
}

/// One member that fails one constraint. `Display` is AWS's whole message
/// for it alone (`1 validation error detected: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The member path in AWS's lowerCamel form (`tags.1.member.tagKey`).
    pub path: String,
    pub value: Shown,
    pub constraint: Constraint,
    /// Text appended to the constraint (` bytes (got 7000)`).
    pub suffix: String,
}

/// Cuts `value` to at most `max_chars` characters (never inside one).
pub fn truncate(value: &str, max_chars: usize) -> &str {
    match value.char_indices().nth(max_chars) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// An AWS member name (`RoleArn`, `Plaintext`) in the lowerCamel form of
/// validation messages (`roleArn`, `plaintext`).
pub fn member_name(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Violation {
    /// A violation with the value not echoed.
    pub fn hidden(path: impl Into<String>, constraint: Constraint) -> Self {
        Violation {
            path: path.into(),
            value: Shown::Hidden,
            constraint,
            suffix: String::new(),
        }
    }

    /// A violation that echoes `value` (cut to [`MAX_SHOWN_CHARS`]). Never
    /// for secrets.
    pub fn shown(path: impl Into<String>, value: &str, constraint: Constraint) -> Self {
        Violation {
            path: path.into(),
            value: Shown::Value(truncate(value, MAX_SHOWN_CHARS).to_string()),
            constraint,
            suffix: String::new(),
        }
    }

    /// `Value null at 'path' ...: Member must not be null`.
    pub fn null(path: impl Into<String>) -> Self {
        Violation {
            path: path.into(),
            value: Shown::Null,
            constraint: Constraint::NotNull,
            suffix: String::new(),
        }
    }

    /// Echoes at most `max_chars` characters of the value (where a service
    /// echoes less than [`MAX_SHOWN_CHARS`]).
    pub fn show_at_most(mut self, max_chars: usize) -> Self {
        if let Shown::Value(v) = &mut self.value {
            let end = truncate(v, max_chars).len();
            v.truncate(end);
        }
        self
    }

    /// Appends `suffix` to the constraint's text.
    pub fn with_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    /// The message without its `1 validation error detected: ` head.
    pub fn detail(&self) -> String {
        let value = match &self.value {
            Shown::Null => "Value null".to_string(),
            Shown::Hidden => "Value".to_string(),
            Shown::Value(v) => format!("Value '{v}'"),
        };
        format!(
            "{value} at '{}' failed to satisfy constraint: {}{}",
            self.path, self.constraint, self.suffix
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1 validation error detected: {}", self.detail())
    }
}

impl std::error::Error for Violation {}

/// One or more violations of one request: `N validation errors detected:
/// <first>; <second>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(Vec<Violation>);

impl ValidationErrors {
    pub fn violations(&self) -> &[Violation] {
        &self.0
    }
}

impl From<Violation> for ValidationErrors {
    fn from(v: Violation) -> Self {
        ValidationErrors(vec![v])
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            1 => write!(f, "1 validation error detected: ")?,
            n => write!(f, "{n} validation errors detected: ")?,
        }
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&v.detail())?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A required member: its value, or `Value null ... Member must not be null`.
pub fn required<'a, T>(field: &str, value: &'a Option<T>) -> Result<&'a T, Violation> {
    value.as_ref().ok_or_else(|| Violation::null(field))
}

/// A string member of `min..=max` characters; the value is not echoed.
pub fn length(field: &str, value: &str, min: usize, max: usize) -> Result<(), Violation> {
    count(field, value.chars().count(), min, max)
}

/// A blob (or list) member of `min..=max` bytes (items); never echoed.
pub fn byte_length(field: &str, value: &[u8], min: usize, max: usize) -> Result<(), Violation> {
    count(field, value.len(), min, max)
}

/// A member whose length (characters, bytes or items) is `len`.
pub fn count(field: &str, len: usize, min: usize, max: usize) -> Result<(), Violation> {
    if len < min {
        Err(Violation::hidden(field, Constraint::MinLength(min)))
    } else if len > max {
        Err(Violation::hidden(field, Constraint::MaxLength(max)))
    } else {
        Ok(())
    }
}

/// A number member in `min..=max`; the value is echoed.
pub fn range(field: &str, n: i64, min: i64, max: i64) -> Result<(), Violation> {
    let constraint = if n < min {
        Constraint::MinValue(min)
    } else if n > max {
        Constraint::MaxValue(max)
    } else {
        return Ok(());
    };
    Err(Violation::shown(field, &n.to_string(), constraint))
}

/// A member of an AWS enum; the value is echoed.
pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), Violation> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(not_one_of(field, value, allowed))
}

/// The violation of a value outside an AWS enum.
pub fn not_one_of(field: &str, value: &str, allowed: &[&str]) -> Violation {
    let allowed = allowed.iter().map(|s| s.to_string()).collect();
    Violation::shown(field, value, Constraint::Enum(allowed))
}

/// The violation of a value that does not match `pattern` (the regular
/// expression, or a description of it); the value is echoed.
pub fn pattern(field: &str, value: &str, pattern: &str) -> Violation {
    Violation::shown(field, value, Constraint::Pattern(pattern.to_string()))
}

/// Collects the violations of several members of one request, for one
/// message naming them all.
///
/// ```
/// use keyvol::validate::{self, Validator};
/// let (name, size): (Option<String>, Option<i64>) = (None, Some(0));
/// let mut v = Validator::new();
/// v.required("name", &name);
/// if let Some(n) = size {
///     v.check(validate::range("size", n, 1, 16));
/// }
/// assert!(v.finish().unwrap_err().to_string().starts_with("2 validation errors detected: "));
/// ```
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<Violation>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `v`.
    pub fn push(&mut self, v: Violation) {
        self.errors.push(v);
    }

    /// The value of a check, or `None` with its violation recorded.
    pub fn check<T>(&mut self, r: Result<T, Violation>) -> Option<T> {
        match r {
            Ok(t) => Some(t),
            Err(v) => {
                self.errors.push(v);
                None
            }
        }
    }

    /// A required member: `None` (recorded) when it is absent.
    pub fn required<'a, T>(&mut self, field: &str, value: &'a Option<T>) -> Option<&'a T> {
        self.check(required(field, value))
    }

    /// `Err` with every recorded violation, in order, if there is one.
    pub fn finish(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.errors))
        }
    }

    /// As [`Validator::finish`], then `value` (built from what
    /// [`Validator::check`]/[`Validator::required`] returned, e.g.
    /// `a.zip(b)`), which is `Some` when nothing was recorded.
    pub fn finish_with<T>(self, value: Option<T>) -> Result<T, ValidationErrors> {
        self.finish()?;
        // Unreachable when `value` comes from this validator's checks; a
        // caller's slip still answers a validation error, not a panic.
        value.ok_or_else(|| ValidationErrors(vec![Violation::null("request")]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_violations_read_as_aws_writes_them() {
        assert_eq!(
            Violation::null("plaintext").to_string(),
            "1 validation error detected: Value null at 'plaintext' failed to satisfy constraint: Member must not be null"
        );
        assert_eq!(
            pattern("aliasName", "x", "^alias/[a-zA-Z0-9/_-]+$").to_string(),
            "1 validation error detected: Value 'x' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^alias/[a-zA-Z0-9/_-]+$"
        );
        assert_eq!(
            length("description", &"d".repeat(8193), 0, 8192).unwrap_err().to_string(),
            "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192"
        );
        assert_eq!(
            byte_length("plaintext", b"", 1, 4096).unwrap_err().to_string(),
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
        assert_eq!(
            range("numberOfBytes", 0, 1, 1024).unwrap_err().to_string(),
            "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: Member must have value greater than or equal to 1"
        );
        assert_eq!(
            range("limit", 1001, 1, 1000).unwrap_err().to_string(),
            "1 validation error detected: Value '1001' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 1000"
        );
        assert_eq!(
            one_of("keySpec", "AES_512", &["AES_256", "AES_128"]).unwrap_err().to_string(),
            "1 validation error detected: Value 'AES_512' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
        );
        assert_eq!(
            Violation::shown(
                "operations",
                "[Nope]",
                Constraint::EachEnum(vec!["Decrypt".into(), "Encrypt".into()])
            )
            .to_string(),
            "1 validation error detected: Value '[Nope]' at 'operations' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [Decrypt, Encrypt]]"
        );
        assert_eq!(
            Violation::hidden("signature", Constraint::LengthBetween(1, 6144))
                .with_suffix(" bytes (got 0)")
                .to_string(),
            "1 validation error detected: Value at 'signature' failed to satisfy constraint: Member must have length between 1 and 6144 bytes (got 0)"
        );
        assert_eq!(
            Violation::shown("limit", "0", Constraint::ValueBetween(1, 1000)).detail(),
            "Value '0' at 'limit' failed to satisfy constraint: Member must have value between 1 and 1000"
        );
    }

    #[test]
    fn checks_that_pass() {
        assert!(one_of("k", "A", &["A", "B"]).is_ok());
        assert!(range("n", 1, 1, 1).is_ok());
        assert!(length("s", "ééé", 1, 3).is_ok());
        assert!(byte_length("b", &[0; 4], 0, 4).is_ok());
        assert_eq!(required("x", &Some(3)), Ok(&3));
        let mut v = Validator::new();
        assert_eq!(v.required("x", &Some("a")), Some(&"a"));
        assert_eq!(v.check(range("n", 5, 1, 9)), Some(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn several_violations_join_into_one_message() {
        let mut v = Validator::new();
        let arn = v.required::<String>("roleArn", &None);
        let session = Some("s".to_string());
        let name = v.required("roleSessionName", &session);
        v.check(range("durationSeconds", 1, 900, 43200));
        let e = v.finish_with(arn.zip(name)).unwrap_err();
        assert_eq!(e.violations().len(), 2);
        assert_eq!(
            e.to_string(),
            "2 validation errors detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null; Value '1' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"
        );
        let one: ValidationErrors = Violation::null("policy").into();
        assert_eq!(one.to_string(), Violation::null("policy").to_string());

        let mut v = Validator::new();
        let a = v.required("a", &Some(1));
        let b = v.required("b", &Some(2));
        assert_eq!(v.finish_with(a.zip(b)), Ok((&1, &2)));
        // A value the validator did not see: an error, never a panic.
        assert!(Validator::new().finish_with(None::<()>).is_err());
    }

    #[test]
    fn echoed_values_are_cut_on_a_character_boundary() {
        let long = "é🦀".repeat(200);
        let v = pattern("aliasName", &long, "^alias/");
        let Shown::Value(shown) = &v.value else {
            panic!("{v:?}")
        };
        assert_eq!(shown.chars().count(), MAX_SHOWN_CHARS);
        assert!(long.starts_with(shown.as_str()));
        let short = v.clone().show_at_most(3);
        assert_eq!(short.value, Shown::Value("é🦀é".into()));
        assert!(v
            .to_string()
            .contains(&format!("Value '{shown}' at 'aliasName'")));
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(truncate("", 5), "");
        assert_eq!(truncate("ab", 5), "ab");
        // Hidden values stay hidden, whatever their length.
        let e = length("plaintext", &long, 1, 10).unwrap_err();
        assert!(!e.to_string().contains('é'), "{e}");
    }

    #[test]
    fn member_names_are_lower_camel() {
        assert_eq!(member_name("RoleArn"), "roleArn");
        assert_eq!(member_name("Étoile"), "étoile");
        assert_eq!(member_name(""), "");
    }
}
