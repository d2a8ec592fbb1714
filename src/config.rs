//! Per-home settings (`keyvol configure set|get|list`): where the control
//! plane (KMS, volume records) is and where snapshots are stored. Environment variables override them.

use rusqlite::OptionalExtension;

use crate::home::Home;
use crate::kms::{KmsError, KmsResult};

/// Settings a home knows, with the environment variable that overrides each.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "kms-endpoint",
        "KEYVOL_KMS_ENDPOINT",
        "URL of the control plane (keyvol serve: KMS, EC2, STS; https://HOST:PORT off loopback) whose KMS this home uses and where its volume records are; empty = this home's own",
    ),
    (
        "snapshot-store",
        "KEYVOL_SNAPSHOT_STORE",
        "where snapshots are kept: a directory, file:///DIR or s3://BUCKET/PREFIX?endpoint=URL",
    ),
];

fn db(e: rusqlite::Error) -> KmsError {
    KmsError::internal(format!("state database: {e}"))
}

fn conn(home: &Home) -> KmsResult<rusqlite::Connection> {
    let c = home
        .connect()
        .map_err(|e| KmsError::internal(e.to_string()))?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )
    .map_err(db)?;
    Ok(c)
}

fn check_name(name: &str) -> KmsResult<&'static (&'static str, &'static str, &'static str)> {
    SETTINGS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
        KmsError::validation(format!(
            "unknown setting '{name}': known settings are {}",
            SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The effective value: the environment variable, else the stored value.
pub fn get(home: &Home, name: &str) -> KmsResult<Option<String>> {
    let (_, env, _) = check_name(name)?;
    if let Ok(v) = std::env::var(env) {
        return Ok(Some(v).filter(|v| !v.is_empty()));
    }
    conn(home)?
        .query_row("SELECT value FROM config WHERE key = ?1", [name], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(db)
        .map(|v| v.filter(|v| !v.is_empty()))
}

pub fn set(home: &Home, name: &str, value: &str) -> KmsResult<()> {
    check_name(name)?;
    conn(home)?
        .execute(
            "INSERT INTO config (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [name, value],
        )
        .map_err(db)?;
    Ok(())
}

pub fn unset(home: &Home, name: &str) -> KmsResult<()> {
    check_name(name)?;
    conn(home)?
        .execute("DELETE FROM config WHERE key = ?1", [name])
        .map_err(db)?;
    Ok(())
}
