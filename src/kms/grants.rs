//! Grants as the authorization point reads them: the table, a grant's
//! operations and constraints, whether a grant allows a request, and the
//! shape of grant tokens. The operations on grants (CreateGrant, ListGrants,
//! ListRetirableGrants, RetireGrant, RevokeGrant) are in `ops/grants.rs`.
//!
//! A grant is effective at once (stronger than AWS's eventual
//! consistency).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::ciphertext::EncryptionContext;
use super::model::KeyRecord;
use super::op::Op;
use super::store::db;
use super::{ErrorCode, KmsError, KmsResult};
use crate::policy::keys;
use crate::validate;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    name TEXT,
    grantee_principal TEXT NOT NULL,
    retiring_principal TEXT,
    issuing_account TEXT NOT NULL,
    operations TEXT NOT NULL,
    constraints TEXT,
    token TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_by_key ON grants(key_id);
CREATE INDEX IF NOT EXISTS grants_by_token ON grants(token);
"#;

/// Operations a grant can allow.
pub const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

/// Operations whose requests carry an encryption context, the only ones a
/// grant with constraints may allow.
pub(crate) const CONTEXT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "CreateGrant",
    "RetireGrant",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct GrantConstraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<EncryptionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<EncryptionContext>,
}

impl GrantConstraints {
    pub(crate) fn is_empty(&self) -> bool {
        self.encryption_context_subset.is_none() && self.encryption_context_equals.is_none()
    }

    /// Does a request with `ctx` meet these constraints? As in AWS, the
    /// keys of a constraint match case-insensitively, the values exactly.
    fn admits(&self, ctx: &EncryptionContext) -> bool {
        if let Some(eq) = &self.encryption_context_equals {
            if eq.len() != ctx.len() || !eq.iter().all(|(k, v)| value_ci(ctx, k) == Some(v)) {
                return false;
            }
        }
        if let Some(sub) = &self.encryption_context_subset {
            if !sub.iter().all(|(k, v)| value_ci(ctx, k) == Some(v)) {
                return false;
            }
        }
        true
    }

    /// Is `child` at least as constrained as `self` (every request the
    /// child admits, the parent admits)?
    pub(crate) fn covers(&self, child: &GrantConstraints) -> bool {
        if self.is_empty() {
            return true;
        }
        // The child's tightest description of the contexts it admits.
        match (
            &child.encryption_context_equals,
            &child.encryption_context_subset,
        ) {
            (Some(eq), _) => self.admits(eq),
            (None, Some(sub)) => {
                self.encryption_context_equals.is_none()
                    && self
                        .encryption_context_subset
                        .as_ref()
                        .is_some_and(|p| p.iter().all(|(k, v)| value_ci(sub, k) == Some(v)))
            }
            (None, None) => false,
        }
    }
}

/// The value of context key `key`, matched case-insensitively.
pub(crate) fn value_ci<'a>(ctx: &'a EncryptionContext, key: &str) -> Option<&'a String> {
    ctx.get(key).or_else(|| {
        ctx.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub grant_id: String,
    pub key_id: String,
    pub name: Option<String>,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    pub issuing_account: String,
    pub operations: Vec<String>,
    pub constraints: GrantConstraints,
    pub created: i64,
}

impl Grant {
    pub(crate) fn to_json(&self, key_arn: &str) -> Value {
        let mut v = json!({
            "KeyId": key_arn,
            "GrantId": self.grant_id,
            "CreationDate": self.created,
            "GranteePrincipal": self.grantee_principal,
            "IssuingAccount": format!("arn:aws:iam::{}:root", self.issuing_account),
            "Operations": self.operations,
        });
        if let Some(n) = &self.name {
            v["Name"] = json!(n);
        }
        if let Some(r) = &self.retiring_principal {
            v["RetiringPrincipal"] = json!(r);
        }
        if !self.constraints.is_empty() {
            v["Constraints"] = json!(self.constraints);
        }
        v
    }
}

pub(crate) fn grant_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Grant> {
    let ops: String = r.get(6)?;
    let cons: Option<String> = r.get(7)?;
    Ok(Grant {
        grant_id: r.get(0)?,
        key_id: r.get(1)?,
        name: r.get(2)?,
        grantee_principal: r.get(3)?,
        retiring_principal: r.get(4)?,
        issuing_account: r.get(5)?,
        operations: serde_json::from_str(&ops).unwrap_or_default(),
        constraints: cons
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default(),
        created: r.get(8)?,
    })
}

pub(crate) const GRANT_COLUMNS: &str =
    "grant_id, key_id, name, grantee_principal, retiring_principal, issuing_account, operations, constraints, created";

pub(crate) fn grants_of_key(op: &Op<'_>, k: &KeyRecord) -> KmsResult<Vec<Grant>> {
    let mut st = op
        .tx
        .prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE key_id = ?1 ORDER BY created, grant_id"
        ))
        .map_err(db)?;
    let rows = st.query_map([k.key_id], grant_from_row).map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

fn request_context(conditions: &Map<String, Value>) -> EncryptionContext {
    conditions
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(keys::ENCRYPTION_CONTEXT_PREFIX)
                .and_then(|ck| v.as_str().map(|s| (ck.to_string(), s.to_string())))
        })
        .collect()
}

/// Does a grant on `k` give the caller `action` for this request?
pub(crate) fn allows(
    op: &Op<'_>,
    k: &KeyRecord,
    action: &str,
    conditions: &Map<String, Value>,
) -> KmsResult<bool> {
    let operation = match action.strip_prefix("kms:") {
        // CreateGrant through a grant is decided in create_grant, which also
        // checks that the new grant is no broader than its parent.
        Some("CreateGrant") => return Ok(false),
        Some(o) if GRANT_OPERATIONS.contains(&o) => o,
        _ => return Ok(false),
    };
    let ctx = request_context(conditions);
    let caller = &op.ctx.caller.principal_arn;
    Ok(grants_of_key(op, k)?.iter().any(|g| {
        &g.grantee_principal == caller
            && g.operations.iter().any(|o| o == operation)
            && g.constraints.admits(&ctx)
    }))
}

/// Length of a grant token: 32 random bytes and the 32-byte grant id, hex.
const GRANT_TOKEN_LEN: usize = 128;

pub(crate) fn check_tokens(tokens: &[String]) -> KmsResult<()> {
    validate::count("grantTokens", tokens.len(), 0, 10)?;
    for t in tokens {
        if t.len() != GRANT_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KmsError::new(
                ErrorCode::InvalidGrantTokenException,
                "The grant token is not valid.",
            ));
        }
    }
    Ok(())
}

/// The `GrantTokens` member of any request: a list of at most 10
/// well-formed tokens, else InvalidGrantTokenException as in AWS.
pub(crate) fn check_grant_tokens(tokens: &Value) -> KmsResult<()> {
    let Some(list) = tokens.as_array() else {
        return Err(KmsError::new(
            ErrorCode::SerializationException,
            "GrantTokens must be a list of strings.",
        ));
    };
    let mut strings = Vec::with_capacity(list.len());
    for t in list {
        match t.as_str() {
            Some(s) => strings.push(s.to_string()),
            None => {
                return Err(KmsError::new(
                    ErrorCode::SerializationException,
                    "GrantTokens must be a list of strings.",
                ))
            }
        }
    }
    check_tokens(&strings)
}
