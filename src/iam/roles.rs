//! IAM roles, principal tags and STS sessions.
//!
//! A role is a principal with a trust policy (who may assume it) and inline
//! policies (what its sessions may do). `AssumeRole` checks the trust
//! policy and the caller's own identity policies with the shared policy
//! engine, exactly as a key policy and IAM are checked for the KMS, and
//! issues temporary credentials: an `ASIA` access key id, a secret and a
//! session token, for the principal
//! `arn:aws:sts::<account>:assumed-role/<role>/<session>`. The secret is
//! sealed under the root key; only the SHA-256 of the session token is
//! stored, and a request signed with the key must carry the token
//! (`X-Amz-Security-Token`) until the session expires.
//!
//! Tags on users and roles, overridden by a session's tags, are the
//! principal's `aws:PrincipalTag/<key>` condition keys. Tag keys are
//! unique regardless of case, as in IAM and STS.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{db, exists_or_db, iam_error, is_name, random_chars, Iam};
use super::{IamError, IamErrorCode, IamResult};
use crate::ids::AccountId;
use crate::kms::{Caller, PrincipalType, RequestContext};
use crate::policy::{self, AuthzInput, AuthzRequest, PolicyDocument};
use crate::secret::SecretBytes;
use crate::validate::{self, Constraint, ValidationErrors, Validator, Violation};

/// IAM's role name constraint, as its messages word it.
pub(crate) const NAME_PATTERN: &str = "[\\w+=,.@-]+ (1-64 characters)";
/// STS's session name (and source identity) constraint.
const SESSION_NAME_PATTERN: &str = "[\\w+=,.@-]* (2-64 characters)";

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS roles (
    account TEXT NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    role_id TEXT NOT NULL,
    trust_policy TEXT NOT NULL,
    description TEXT,
    max_session_duration INTEGER NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE IF NOT EXISTS role_policies (
    account TEXT NOT NULL,
    role_name TEXT NOT NULL,
    policy_name TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (account, role_name, policy_name)
);
CREATE TABLE IF NOT EXISTS principal_tags (
    principal_arn TEXT NOT NULL,
    tag_key TEXT NOT NULL COLLATE NOCASE,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (principal_arn, tag_key)
);
CREATE TABLE IF NOT EXISTS sts_sessions (
    access_key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    role_name TEXT NOT NULL,
    session_name TEXT NOT NULL,
    sealed_secret BLOB NOT NULL,
    token_sha256 BLOB NOT NULL,
    expiration INTEGER NOT NULL,
    tags TEXT NOT NULL,
    source_identity TEXT,
    issued INTEGER NOT NULL
);
"#;

/// Homes made before session policies lack their column.
pub(crate) fn add_session_policy_column(conn: &Connection) -> rusqlite::Result<()> {
    crate::home::Home::add_column_if_missing(conn, "sts_sessions", "session_policy", "TEXT")
}

/// The longest inline session policy STS takes, in characters.
pub const MAX_SESSION_POLICY: usize = 2048;

/// The shortest session STS issues, and the default.
pub const MIN_SESSION_SECONDS: i64 = 900;
pub const DEFAULT_SESSION_SECONDS: i64 = 3600;
/// The longest MaxSessionDuration a role may have; a session of a session
/// (role chaining) lasts at most one hour.
pub const MAX_ROLE_SESSION_SECONDS: i64 = 43_200;
const CHAINED_SESSION_SECONDS: i64 = 3600;
/// IAM's and STS's tag limits.
const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

/// What a request signed with a session's key must also carry.
#[derive(Clone)]
pub struct SessionToken {
    pub token_sha256: [u8; 32],
    /// Seconds since the epoch; the key is refused from then on.
    pub expiration: i64,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionToken")
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// The secret, principal and (for a session) token of an access key.
#[derive(Debug, Clone)]
pub struct KeyCredentials {
    pub secret: SecretBytes,
    pub caller: Caller,
    pub session: Option<SessionToken>,
}

/// An AssumeRole request, by its STS member names.
#[derive(Debug, Clone, Default)]
pub struct AssumeRoleInput {
    pub role_arn: String,
    pub role_session_name: String,
    pub duration_seconds: Option<i64>,
    pub tags: Vec<(String, String)>,
    pub external_id: Option<String>,
    pub source_identity: Option<String>,
    /// The inline session policy (`Policy`).
    pub policy: Option<String>,
}

/// Temporary credentials and the session's identity.
#[derive(Debug, Clone)]
pub struct AssumedRole {
    pub access_key_id: String,
    pub secret_access_key: SecretBytes,
    pub session_token: SecretBytes,
    pub expiration: i64,
    pub assumed_role_id: String,
    pub arn: String,
    pub source_identity: Option<String>,
}

fn sts_validation(message: String) -> IamError {
    IamError::new(IamErrorCode::ValidationError, message)
}

/// IAM's and STS's ValidationError (ValidationException inside, renamed
/// on the wire) for members that fail their constraints.
fn invalid(e: impl Into<ValidationErrors>) -> IamError {
    sts_validation(e.into().to_string())
}

/// `arn:aws:iam::<account>:role/[<path>/]<name>` as (account, name).
fn parse_role_arn(arn: &str) -> Result<(AccountId, String), Violation> {
    let bad = || {
        Violation::shown(
            "roleArn",
            arn,
            Constraint::Other(
                "Member must be a role ARN arn:aws:iam::<account>:role/<name>".into(),
            ),
        )
        .show_at_most(128)
    };
    if !(20..=2048).contains(&arn.len()) {
        return Err(bad());
    }
    let rest = arn.strip_prefix("arn:aws:iam::").ok_or_else(bad)?;
    let (account, resource) = rest.split_once(':').ok_or_else(bad)?;
    let account: AccountId = account.parse().map_err(|_| bad())?;
    let path = resource.strip_prefix("role/").ok_or_else(bad)?;
    let name = path.rsplit('/').next().unwrap_or_default();
    if !is_name(name, b"+=,.@_-") {
        return Err(bad());
    }
    Ok((account, name.to_string()))
}

pub(crate) fn role_arn(account: &AccountId, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

/// Checks a tag set as IAM and STS do: at most 50 tags, keys of 1 to 128
/// and values of at most 256 characters, keys unique regardless of case.
pub fn validate_tags(tags: &[(String, String)], member: &str) -> IamResult<()> {
    validate::count(member, tags.len(), 0, MAX_TAGS).map_err(invalid)?;
    for (i, (k, v)) in tags.iter().enumerate() {
        let n = i + 1;
        if k.is_empty() || k.chars().count() > MAX_TAG_KEY {
            return Err(invalid(Violation::hidden(
                format!("{member}.{n}.member.key"),
                Constraint::LengthBetween(1, MAX_TAG_KEY),
            )));
        }
        validate::length(&format!("{member}.{n}.member.value"), v, 0, MAX_TAG_VALUE)
            .map_err(invalid)?;
        let ok = |s: &str| {
            s.chars()
                .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
        };
        if !ok(k) || !ok(v) {
            return Err(invalid(Violation::hidden(
                format!("{member}.{n}"),
                Constraint::Pattern("[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*".into()),
            )));
        }
        if tags[..i].iter().any(|(p, _)| p.eq_ignore_ascii_case(k)) {
            return Err(sts_validation(format!(
                "Duplicate tag keys found: '{k}'. Tag keys are case insensitive."
            )));
        }
    }
    Ok(())
}

/// The identity policies of a principal, as stored: a user's inline
/// policies, or the role's of an assumed-role session; none for a root.
/// The one query the KMS, EC2 and STS authorization points share.
pub(crate) fn identity_policy_texts(conn: &Connection, caller: &Caller) -> IamResult<Vec<String>> {
    let (sql, name) = if let Some((_, user)) = caller.principal_arn.rsplit_once(":user/") {
        (
            "SELECT document FROM user_policies WHERE account = ?1 AND user_name = ?2",
            user.to_string(),
        )
    } else if let Some((role, _)) = caller.session_role() {
        let name = role.rsplit('/').next().unwrap_or_default().to_string();
        (
            "SELECT document FROM role_policies WHERE account = ?1 AND role_name = ?2",
            name,
        )
    } else {
        return Ok(Vec::new());
    };
    let mut st = conn.prepare_cached(sql).map_err(db)?;
    let rows = st
        .query_map(params![caller.account.as_str(), name], |r| r.get(0))
        .map_err(db)?;
    rows.collect::<Result<Vec<String>, _>>().map_err(db)
}

/// The tags of a principal (a user or role ARN), in key order.
pub(crate) fn principal_tags(conn: &Connection, arn: &str) -> IamResult<Vec<(String, String)>> {
    let mut st = conn
        .prepare_cached(
            "SELECT tag_key, tag_value FROM principal_tags WHERE principal_arn = ?1 ORDER BY tag_key",
        )
        .map_err(db)?;
    let rows = st
        .query_map([arn], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

fn tags_json(tags: &[(String, String)]) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// A role as IAM's GetRole shows it.
struct RoleRow {
    name: String,
    role_id: String,
    trust_policy: String,
    description: Option<String>,
    max_session_duration: i64,
    created: i64,
}

impl Iam {
    fn role_row(&self, conn: &Connection, account: &AccountId, name: &str) -> IamResult<RoleRow> {
        conn.query_row(
            "SELECT name, role_id, trust_policy, description, max_session_duration, created FROM roles WHERE account = ?1 AND name = ?2",
            params![account.as_str(), name],
            |r| {
                Ok(RoleRow {
                    name: r.get(0)?,
                    role_id: r.get(1)?,
                    trust_policy: r.get(2)?,
                    description: r.get(3)?,
                    max_session_duration: r.get(4)?,
                    created: r.get(5)?,
                })
            },
        )
        .optional()
        .map_err(db)?
        .ok_or_else(|| iam_error(IamErrorCode::NoSuchEntity, format!("The role with name {name} cannot be found.")))
    }

    fn role_json(&self, conn: &Connection, account: &AccountId, r: &RoleRow) -> IamResult<Value> {
        let arn = role_arn(account, &r.name);
        let mut v = json!({
            "Path": "/",
            "RoleName": r.name,
            "RoleId": r.role_id,
            "Arn": arn,
            "CreateDate": crate::clock::to_rfc3339(r.created),
            "AssumeRolePolicyDocument": serde_json::from_str::<Value>(&r.trust_policy).unwrap_or(Value::Null),
            "MaxSessionDuration": r.max_session_duration,
        });
        if let Some(d) = &r.description {
            v["Description"] = json!(d);
        }
        let tags = principal_tags(conn, &arn)?;
        if !tags.is_empty() {
            v["Tags"] = tags_json(&tags);
        }
        Ok(v)
    }

    /// IAM CreateRole: a role of `account` that the principals its trust
    /// policy names may assume.
    pub fn create_role(
        &self,
        account: &AccountId,
        name: &str,
        trust_policy: &str,
        description: Option<&str>,
        max_session_duration: Option<i64>,
        tags: &[(String, String)],
    ) -> IamResult<Value> {
        let mut v = Validator::new();
        if !is_name(name, b"+=,.@_-") {
            v.push(validate::pattern("roleName", name, NAME_PATTERN).show_at_most(80));
        }
        let max = max_session_duration.unwrap_or(DEFAULT_SESSION_SECONDS);
        if !(DEFAULT_SESSION_SECONDS..=MAX_ROLE_SESSION_SECONDS).contains(&max) {
            v.push(Violation::shown(
                "maxSessionDuration",
                &max.to_string(),
                Constraint::ValueBetween(DEFAULT_SESSION_SECONDS, MAX_ROLE_SESSION_SECONDS),
            ));
        }
        if let Some(d) = description {
            v.check(validate::length("description", d, 0, 1000));
        }
        v.finish().map_err(invalid)?;
        trust_document(trust_policy)?;
        validate_tags(tags, "tags")?;
        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let role_id = format!(
            "AROA{}",
            String::from_utf8_lossy(random_chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 17).expose())
        );
        let now = self.clock.now();
        tx.execute(
            "INSERT INTO roles (account, name, role_id, trust_policy, description, max_session_duration, created) VALUES (?1,?2,?3,?4,?5,?6,?7)",
            params![account.as_str(), name, role_id, trust_policy, description, max, now],
        )
        .map_err(|e| exists_or_db(e, || format!("Role with name {name} already exists.")))?;
        put_tags(&tx, &role_arn(account, name), tags)?;
        let row = self.role_row(&tx, account, name)?;
        let v = self.role_json(&tx, account, &row)?;
        tx.commit().map_err(db)?;
        Ok(json!({"Role": v}))
    }

    pub fn get_role(&self, account: &AccountId, name: &str) -> IamResult<Value> {
        let conn = self.conn();
        let row = self.role_row(&conn, account, name)?;
        Ok(json!({"Role": self.role_json(&conn, account, &row)?}))
    }

    pub fn list_roles(&self, account: &AccountId) -> IamResult<Value> {
        let conn = self.conn();
        let names: Vec<String> = {
            let mut st = conn
                .prepare("SELECT name FROM roles WHERE account = ?1 ORDER BY name")
                .map_err(db)?;
            let rows = st.query_map([account.as_str()], |r| r.get(0)).map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        let mut roles = Vec::new();
        for n in names {
            let row = self.role_row(&conn, account, &n)?;
            roles.push(self.role_json(&conn, account, &row)?);
        }
        Ok(json!({"Roles": roles}))
    }

    /// IAM DeleteRole: refused while the role has inline policies, as IAM
    /// refuses it; the role's open sessions end with it.
    pub fn delete_role(&self, account: &AccountId, name: &str) -> IamResult<()> {
        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let row = self.role_row(&tx, account, name)?;
        let policies: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM role_policies WHERE account = ?1 AND role_name = ?2",
                params![account.as_str(), row.name],
                |r| r.get(0),
            )
            .map_err(db)?;
        if policies > 0 {
            return Err(IamError::new(
                IamErrorCode::ValidationError,
                "DeleteConflict: Cannot delete entity, must delete policies first.",
            ));
        }
        tx.execute(
            "DELETE FROM roles WHERE account = ?1 AND name = ?2",
            params![account.as_str(), row.name],
        )
        .map_err(db)?;
        tx.execute(
            "DELETE FROM principal_tags WHERE principal_arn = ?1",
            [role_arn(account, &row.name)],
        )
        .map_err(db)?;
        tx.execute(
            "DELETE FROM sts_sessions WHERE account = ?1 AND role_name = ?2",
            params![account.as_str(), row.name],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    pub fn put_role_policy(
        &self,
        account: &AccountId,
        role: &str,
        name: &str,
        document: &str,
    ) -> IamResult<()> {
        let conn = self.conn();
        let row = self.role_row(&conn, account, role)?;
        crate::kms::validate_identity_policy(document)?;
        conn.execute(
            "INSERT INTO role_policies (account, role_name, policy_name, document) VALUES (?1,?2,?3,?4) \
             ON CONFLICT(account, role_name, policy_name) DO UPDATE SET document = excluded.document",
            params![account.as_str(), row.name, name, document],
        )
        .map_err(db)?;
        Ok(())
    }

    pub fn delete_role_policy(&self, account: &AccountId, role: &str, name: &str) -> IamResult<()> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM role_policies WHERE account=?1 AND role_name=?2 AND policy_name=?3",
                params![account.as_str(), role, name],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(iam_error(
                IamErrorCode::NoSuchEntity,
                format!("The role policy with name {name} cannot be found."),
            ));
        }
        Ok(())
    }

    pub fn list_role_policies(&self, account: &AccountId, role: &str) -> IamResult<Vec<String>> {
        let conn = self.conn();
        let row = self.role_row(&conn, account, role)?;
        let mut st = conn
            .prepare("SELECT policy_name FROM role_policies WHERE account=?1 AND role_name=?2 ORDER BY policy_name")
            .map_err(db)?;
        let rows = st
            .query_map(params![account.as_str(), row.name], |r| r.get(0))
            .map_err(db)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db)
    }

    /// The ARN of a user or role of `account` that exists.
    fn tagged_principal(
        &self,
        conn: &Connection,
        account: &AccountId,
        kind: &str,
        name: &str,
    ) -> IamResult<String> {
        match kind {
            "user" => {
                self.require_user(conn, account, name)?;
                Ok(format!("arn:aws:iam::{account}:user/{name}"))
            }
            _ => {
                let row = self.role_row(conn, account, name)?;
                Ok(role_arn(account, &row.name))
            }
        }
    }

    /// IAM TagUser / TagRole (`kind` "user" or "role"): adds or replaces tags.
    pub fn tag_principal(
        &self,
        account: &AccountId,
        kind: &str,
        name: &str,
        tags: &[(String, String)],
    ) -> IamResult<()> {
        validate_tags(tags, "tags")?;
        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let arn = self.tagged_principal(&tx, account, kind, name)?;
        put_tags(&tx, &arn, tags)?;
        let n: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM principal_tags WHERE principal_arn = ?1",
                [&arn],
                |r| r.get(0),
            )
            .map_err(db)?;
        if n as usize > MAX_TAGS {
            return Err(IamError::new(
                IamErrorCode::LimitExceeded,
                format!("LimitExceeded: {arn} would have {n} tags; the limit is {MAX_TAGS}."),
            ));
        }
        tx.commit().map_err(db)
    }

    /// IAM UntagUser / UntagRole.
    pub fn untag_principal(
        &self,
        account: &AccountId,
        kind: &str,
        name: &str,
        keys: &[String],
    ) -> IamResult<()> {
        let conn = self.conn();
        let arn = self.tagged_principal(&conn, account, kind, name)?;
        for k in keys {
            conn.execute(
                "DELETE FROM principal_tags WHERE principal_arn = ?1 AND tag_key = ?2",
                params![arn, k],
            )
            .map_err(db)?;
        }
        Ok(())
    }

    /// IAM ListUserTags / ListRoleTags.
    pub fn list_principal_tags(
        &self,
        account: &AccountId,
        kind: &str,
        name: &str,
    ) -> IamResult<Value> {
        let conn = self.conn();
        let arn = self.tagged_principal(&conn, account, kind, name)?;
        Ok(json!({"Tags": tags_json(&principal_tags(&conn, &arn)?), "IsTruncated": false}))
    }

    /// STS AssumeRole for `ctx`'s caller: the role's trust policy and the
    /// caller's identity policies decide `sts:AssumeRole` (and
    /// `sts:TagSession` when session tags are passed) as the KMS decides a
    /// key policy with IAM; a role that does not exist is refused as one
    /// that does not trust the caller, so a refusal tells nothing.
    pub fn assume_role(
        &self,
        ctx: &RequestContext,
        input: &AssumeRoleInput,
    ) -> IamResult<AssumedRole> {
        let mut v = Validator::new();
        let role = v.check(parse_role_arn(&input.role_arn));
        let session = &input.role_session_name;
        if !(2..=64).contains(&session.len()) || !is_name(session, b"+=,.@_-") {
            v.push(
                validate::pattern("roleSessionName", session, SESSION_NAME_PATTERN)
                    .show_at_most(80),
            );
        }
        if let Some(s) = &input.source_identity {
            if !(2..=64).contains(&s.len()) || !is_name(s, b"+=,.@_-") {
                // The source identity is not echoed.
                v.push(Violation::hidden(
                    "sourceIdentity",
                    Constraint::Pattern(SESSION_NAME_PATTERN.into()),
                ));
            }
        }
        if let Some(e) = &input.external_id {
            if !(2..=1224).contains(&e.len()) {
                v.push(Violation::hidden(
                    "externalId",
                    Constraint::LengthBetween(2, 1224),
                ));
            }
        }
        if let Some(p) = &input.policy {
            v.check(validate::length("policy", p, 1, MAX_SESSION_POLICY));
        }
        let (account, name) = v.finish_with(role).map_err(invalid)?;
        validate_tags(&input.tags, "tags")?;
        if let Some(p) = &input.policy {
            // An identity policy's grammar (no Principal); it only narrows.
            PolicyDocument::shared_identity_policy(p).map_err(|e| {
                IamError::new(
                    IamErrorCode::MalformedPolicyDocument,
                    format!("The session policy is not valid: {e}"),
                )
            })?;
        }
        let duration = input.duration_seconds.unwrap_or(DEFAULT_SESSION_SECONDS);
        if duration < MIN_SESSION_SECONDS {
            return Err(invalid(Violation::shown(
                "durationSeconds",
                &duration.to_string(),
                Constraint::MinValue(MIN_SESSION_SECONDS),
            )));
        }
        let chained = ctx.caller.principal_type == PrincipalType::AssumedRole;
        if chained && duration > CHAINED_SESSION_SECONDS {
            return Err(sts_validation(format!(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining (at most {CHAINED_SESSION_SECONDS})."
            )));
        }

        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let arn = role_arn(&account, &name);
        let mut req = AuthzRequest::from_request(ctx, "sts:AssumeRole", &arn);
        req.context.insert("sts:RoleSessionName", session.as_str());
        if let Some(e) = &input.external_id {
            req.context.insert("sts:ExternalId", e.as_str());
        }
        if let Some(s) = &input.source_identity {
            req.context.insert("sts:SourceIdentity", s.as_str());
        }
        for (k, v) in &input.tags {
            req.context
                .insert(&format!("aws:RequestTag/{k}"), v.as_str());
        }
        if !input.tags.is_empty() {
            req.context.insert(
                "aws:TagKeys",
                input
                    .tags
                    .iter()
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>(),
            );
        }
        let denied = || {
            IamError::new(
                IamErrorCode::AccessDenied,
                format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {arn}",
                    ctx.caller.principal_arn
                ),
            )
        };
        let row = self.role_row(&tx, &account, &name).map_err(|_| denied())?;
        let trust = trust_document(&row.trust_policy).map_err(|_| denied())?;
        let identity: Vec<_> = identity_policy_texts(&tx, &ctx.caller)?
            .iter()
            .filter_map(|d| PolicyDocument::shared_identity_policy(d).ok())
            .collect();
        let mut actions = vec!["sts:AssumeRole"];
        if !input.tags.is_empty() {
            actions.push("sts:TagSession");
        }
        for action in actions {
            req.action = action.to_string();
            let input = AuthzInput {
                request: &req,
                key_account: account.as_str(),
                key_policy: &trust,
                identity_policies: &identity,
                grant_allows: false,
                cross_account_permitted: true,
            };
            policy::authorize(&input)
                .map_err(|d| IamError::new(IamErrorCode::AccessDenied, d.message()))?;
        }
        if duration > row.max_session_duration {
            return Err(sts_validation(format!(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role ({}).",
                row.max_session_duration
            )));
        }

        let now = self.clock.now();
        let expiration = now + duration;
        let akid = format!(
            "ASIA{}",
            String::from_utf8_lossy(random_chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16).expose())
        );
        let secret = super::new_secret();
        let token = random_chars(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            256,
        );
        let token_sha256: [u8; 32] = Sha256::digest(token.expose()).into();
        let sealed = self
            .home
            .seal(&format!("sts-session/{akid}"), secret.expose());
        let tags =
            serde_json::to_string(&input.tags).map_err(|e| IamError::internal(e.to_string()))?;
        tx.execute("DELETE FROM sts_sessions WHERE expiration <= ?1", [now])
            .map_err(db)?;
        tx.execute(
            "INSERT INTO sts_sessions (access_key_id, account, role_name, session_name, sealed_secret, token_sha256, expiration, tags, source_identity, issued, session_policy) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
            params![akid, account.as_str(), row.name, session, sealed, token_sha256.to_vec(), expiration, tags, input.source_identity, now, input.policy],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(AssumedRole {
            access_key_id: akid,
            secret_access_key: secret,
            session_token: token,
            expiration,
            assumed_role_id: format!("{}:{session}", row.role_id),
            arn: format!("arn:aws:sts::{account}:assumed-role/{}/{session}", row.name),
            source_identity: input.source_identity.clone(),
        })
    }

    /// The credentials of a session key (`ASIA...`); None when unknown.
    pub(crate) fn session_credentials(&self, access_key_id: &str) -> Option<KeyCredentials> {
        let conn = self.conn();
        type Row = (
            String,
            String,
            String,
            Vec<u8>,
            Vec<u8>,
            i64,
            String,
            Option<String>,
        );
        let row: Row = conn
            .prepare_cached(
                "SELECT account, role_name, session_name, sealed_secret, token_sha256, expiration, tags, session_policy FROM sts_sessions WHERE access_key_id = ?1",
            )
            .and_then(|mut st| {
                st.query_row([access_key_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
                })
                .optional()
            })
            .ok()
            .flatten()?;
        let (account, role, session, sealed, token_sha256, expiration, tags, session_policy) = row;
        let account: AccountId = account.parse().ok()?;
        let secret = self
            .home
            .unseal(&format!("sts-session/{access_key_id}"), &sealed)
            .ok()?;
        let session_tags: Vec<(String, String)> = serde_json::from_str(&tags).unwrap_or_default();
        let mut principal_tags = principal_tags(&conn, &role_arn(&account, &role)).ok()?;
        principal_tags
            .retain(|(k, _)| !session_tags.iter().any(|(s, _)| s.eq_ignore_ascii_case(k)));
        principal_tags.extend(session_tags);
        Some(KeyCredentials {
            secret,
            caller: Caller {
                principal_arn: format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
                account,
                principal_type: PrincipalType::AssumedRole,
                access_key_id: Some(access_key_id.to_string()),
                principal_tags,
                session_policy,
            },
            session: Some(SessionToken {
                token_sha256: token_sha256.try_into().ok()?,
                expiration,
            }),
        })
    }

    /// The role id (`AROA...`) of an assumed-role caller's role.
    pub(crate) fn role_id(&self, account: &AccountId, name: &str) -> Option<String> {
        self.conn()
            .query_row(
                "SELECT role_id FROM roles WHERE account = ?1 AND name = ?2",
                params![account.as_str(), name],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
    }
}

fn put_tags(conn: &Connection, arn: &str, tags: &[(String, String)]) -> IamResult<()> {
    for (k, v) in tags {
        conn.execute(
            "INSERT INTO principal_tags (principal_arn, tag_key, tag_value) VALUES (?1, ?2, ?3) \
             ON CONFLICT(principal_arn, tag_key) DO UPDATE SET tag_key = excluded.tag_key, tag_value = excluded.tag_value",
            params![arn, k, v],
        )
        .map_err(db)?;
    }
    Ok(())
}

/// A trust policy as the policy engine reads it: the resource-policy
/// grammar (every statement names a Principal), with no Resource element
/// (the role itself is the resource), and actions of STS only.
fn trust_document(text: &str) -> IamResult<std::sync::Arc<PolicyDocument>> {
    let malformed = |m: &str| {
        IamError::new(
            IamErrorCode::MalformedPolicyDocument,
            format!("MalformedPolicyDocument: {m}"),
        )
    };
    if text.len() > 2048 {
        return Err(malformed(
            "the trust policy is larger than the 2048 characters a role allows.",
        ));
    }
    let mut root: Value =
        serde_json::from_str(text).map_err(|e| malformed(&format!("invalid JSON: {e}")))?;
    let statements = match root.get_mut("Statement") {
        Some(Value::Array(items)) => items.iter_mut().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err(malformed("the policy needs a Statement.")),
    };
    for st in statements {
        let Some(obj) = st.as_object_mut() else {
            return Err(malformed("each Statement must be an object."));
        };
        if obj.contains_key("Resource") || obj.contains_key("NotResource") {
            return Err(malformed("Has prohibited field Resource."));
        }
        obj.insert("Resource".into(), json!("*"));
    }
    let doc = PolicyDocument::shared_key_policy(&root.to_string())
        .map_err(|e| malformed(&e.to_string()))?;
    for st in doc.statements() {
        let sts_only = !st.action.negated
            && st
                .action
                .items
                .iter()
                .all(|a| a.to_ascii_lowercase().starts_with("sts:"));
        if !sts_only {
            return Err(malformed(
                "AssumeRole policy may only specify STS AssumeRole actions.",
            ));
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_parse_with_paths_and_refuse_others() {
        let (a, n) = parse_role_arn("arn:aws:iam::111122223333:role/ops/deploy").unwrap();
        assert_eq!((a.as_str(), n.as_str()), ("111122223333", "deploy"));
        for bad in [
            "arn:aws:iam::111122223333:user/alice",
            "arn:aws:iam::1111:role/x",
            "arn:aws:sts::111122223333:role/x",
            "short",
        ] {
            let e = invalid(parse_role_arn(bad).unwrap_err());
            assert_eq!(e.code, IamErrorCode::ValidationError, "{bad}");
            assert_eq!(
                e.message,
                format!("1 validation error detected: Value '{bad}' at 'roleArn' failed to satisfy constraint: Member must be a role ARN arn:aws:iam::<account>:role/<name>")
            );
        }
    }

    #[test]
    fn tags_are_unique_regardless_of_case_and_bounded() {
        let t = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert!(validate_tags(&[t("team", "blue"), t("env", "")], "tags").is_ok());
        let e = validate_tags(&[t("team", "a"), t("Team", "b")], "tags").unwrap_err();
        assert!(e.message.contains("Duplicate"), "{}", e.message);
        assert!(validate_tags(&[t("", "x")], "tags").is_err());
        assert!(validate_tags(&[t(&"k".repeat(129), "x")], "tags").is_err());
        assert!(validate_tags(&[t("k", &"v".repeat(257))], "tags").is_err());
        assert!(validate_tags(&[t("k<", "x")], "tags").is_err());
        let many: Vec<_> = (0..51).map(|i| t(&format!("k{i}"), "v")).collect();
        assert!(validate_tags(&many, "tags").is_err());
    }
}
