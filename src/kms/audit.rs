//! The CloudTrail-shaped audit log: every KMS call, allowed or denied, and
//! every event the KMS does by itself (automatic rotation, key deletion).
//!
//! Records are hash-chained: `hash_n = HMAC-SHA256(audit_key, hash_{n-1} ||
//! seq_n (u64 LE) || event_n)`, with `audit_key` derived from the home's root
//! key, and the chain head stored apart. `verify` recomputes the chain and
//! names the first record that does not fit: an edited, deleted, inserted or
//! reordered event, or a truncated tail, all break it.

use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use sha2::Sha256;

use super::store::db;
use super::KmsResult;
use crate::secret::Key256;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    event_time INTEGER NOT NULL,
    account TEXT NOT NULL,
    caller_account TEXT NOT NULL,
    principal TEXT NOT NULL,
    event_name TEXT NOT NULL,
    key_arn TEXT,
    error_code TEXT,
    event TEXT NOT NULL,
    hash TEXT NOT NULL
);
-- No query could use this index (they filter on account OR caller_account),
-- and every audited call paid a page of it.
DROP INDEX IF EXISTS audit_by_account;
CREATE INDEX IF NOT EXISTS audit_by_key ON audit(key_arn, seq);
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"#;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One event to append.
pub(crate) struct AuditEntry<'a> {
    pub event_time: i64,
    pub account: &'a str,
    pub caller_account: &'a str,
    pub principal: &'a str,
    pub event_name: &'a str,
    pub key_arn: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub event: &'a Value,
}

fn chain_hash(key: &Key256, prev: &str, seq: i64, event: &str) -> String {
    // HMAC accepts keys of any length; 32 bytes cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key.expose()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(prev.as_bytes());
    mac.update(&(seq as u64).to_le_bytes());
    mac.update(event.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Appends one event inside the caller's (write) transaction.
pub(crate) fn append(conn: &Connection, key: &Key256, e: &AuditEntry<'_>) -> KmsResult<()> {
    append_all(conn, key, &[AuditRecord::of(e)])
}

/// An event ready to append: [`AuditEntry`] owned, its event already
/// serialized, so a call can hand it to the group commit
/// (`service::Kms::submit`) and the leader only chains and inserts.
#[derive(Debug, Clone)]
pub(crate) struct AuditRecord {
    pub event_time: i64,
    pub account: String,
    pub caller_account: String,
    pub principal: String,
    pub event_name: String,
    pub key_arn: Option<String>,
    pub error_code: Option<String>,
    pub event: String,
}

impl AuditRecord {
    pub(crate) fn of(e: &AuditEntry<'_>) -> AuditRecord {
        AuditRecord {
            event_time: e.event_time,
            account: e.account.to_string(),
            caller_account: e.caller_account.to_string(),
            principal: e.principal.to_string(),
            event_name: e.event_name.to_string(),
            key_arn: e.key_arn.map(str::to_string),
            error_code: e.error_code.map(str::to_string),
            event: serde_json::to_string(e.event).unwrap_or_default(),
        }
    }
}

/// Appends `records` in order inside the caller's (write) transaction: the
/// head is read once and written once, whatever their number.
pub(crate) fn append_all(
    conn: &Connection,
    key: &Key256,
    records: &[AuditRecord],
) -> KmsResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    // Cached statements: every audited call runs these three.
    let head: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 0")
        .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db)?;
    let (mut seq, mut hash) = head.unwrap_or((0, GENESIS.to_string()));
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO audit (seq, event_time, account, caller_account, principal, event_name, key_arn, error_code, event, hash) \
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
        )
        .map_err(db)?;
    for e in records {
        seq += 1;
        hash = chain_hash(key, &hash, seq, &e.event);
        insert
            .execute(params![
                seq,
                e.event_time,
                e.account,
                e.caller_account,
                e.principal,
                e.event_name,
                e.key_arn,
                e.error_code,
                e.event,
                hash
            ])
            .map_err(db)?;
    }
    conn.prepare_cached(
        "INSERT INTO audit_head (id, seq, hash) VALUES (0, ?1, ?2) \
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .and_then(|mut st| st.execute(params![seq, hash]))
    .map_err(db)?;
    Ok(())
}

/// The result of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyReport {
    pub events_checked: u64,
    pub valid: bool,
    /// The sequence number of the first record that breaks the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_sequence: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

pub(crate) fn verify(conn: &Connection, key: &Key256) -> KmsResult<VerifyReport> {
    let mut st = conn
        .prepare("SELECT seq, event, hash FROM audit ORDER BY seq")
        .map_err(db)?;
    let mut rows = st.query([]).map_err(db)?;
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1i64;
    let mut n = 0u64;
    let bad = |n, seq, problem: String| VerifyReport {
        events_checked: n,
        valid: false,
        first_bad_sequence: Some(seq),
        problem: Some(problem),
    };
    while let Some(r) = rows.next().map_err(db)? {
        let seq: i64 = r.get(0).map_err(db)?;
        let event: String = r.get(1).map_err(db)?;
        let hash: String = r.get(2).map_err(db)?;
        if seq != expected_seq {
            return Ok(bad(
                n,
                expected_seq,
                format!(
                "event {expected_seq} is missing (next stored event is {seq}): events were deleted"
            ),
            ));
        }
        let want = chain_hash(key, &prev, seq, &event);
        if !crate::secret::ct_eq(want.as_bytes(), hash.as_bytes()) {
            return Ok(bad(
                n,
                seq,
                format!(
                "event {seq} does not match its chain hash: it was edited, inserted or reordered"
            ),
            ));
        }
        prev = hash;
        expected_seq += 1;
        n += 1;
    }
    let head: Option<(i64, String)> = conn
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 0", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(db)?;
    let (head_seq, head_hash) = head.unwrap_or((0, GENESIS.to_string()));
    if head_seq != expected_seq - 1 || head_hash != prev {
        return Ok(bad(n, expected_seq, format!(
            "the log ends at event {} but its head records event {head_seq}: events were removed from the end",
            expected_seq - 1
        )));
    }
    Ok(VerifyReport {
        events_checked: n,
        valid: true,
        first_bad_sequence: None,
        problem: None,
    })
}

/// Filters for `audit list`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub account: Option<String>,
    pub key_arn: Option<String>,
    pub event_name: Option<String>,
    pub principal: Option<String>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub errors_only: bool,
    pub limit: Option<i64>,
}

pub(crate) fn list(conn: &Connection, f: &AuditFilter) -> KmsResult<Vec<Value>> {
    let mut st = conn
        .prepare(
            "SELECT event FROM audit WHERE (?1 IS NULL OR account = ?1 OR caller_account = ?1) \
             AND (?2 IS NULL OR key_arn = ?2 OR key_arn LIKE '%' || ?2) AND (?3 IS NULL OR event_name = ?3) \
             AND (?4 IS NULL OR principal = ?4) AND (?5 IS NULL OR event_time >= ?5) \
             AND (?6 IS NULL OR event_time <= ?6) AND (?7 = 0 OR error_code IS NOT NULL) \
             ORDER BY seq LIMIT ?8",
        )
        .map_err(db)?;
    let rows = st
        .query_map(
            params![
                f.account,
                f.key_arn,
                f.event_name,
                f.principal,
                f.start_time,
                f.end_time,
                f.errors_only as i64,
                f.limit.unwrap_or(i64::MAX)
            ],
            |r| r.get::<_, String>(0),
        )
        .map_err(db)?;
    let mut out = Vec::new();
    for r in rows {
        let s = r.map_err(db)?;
        out.push(serde_json::from_str(&s).unwrap_or(Value::String(s)));
    }
    Ok(out)
}

/// Request counts per event name for an account between two times (the
/// usage bill's input).
pub(crate) fn request_count(
    conn: &Connection,
    account: &str,
    from: i64,
    to: i64,
) -> KmsResult<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM audit WHERE caller_account = ?1 AND event_time >= ?2 AND event_time < ?3 \
         AND principal != 'kms.amazonaws.com'",
        params![account, from, to],
        |r| r.get(0),
    )
    .map_err(db)
}
