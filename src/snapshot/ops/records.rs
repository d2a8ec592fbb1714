//! The control plane's records of snapshots in the home's database: who
//! owns a snapshot and who may create volumes from it (never the manifest
//! in the store, which a store reader could edit or roll back), and which
//! completed snapshot each volume's change log is relative to. The schema
//! also holds the job table (`jobs.rs`) and the grants of restores from
//! shared snapshots (`restore.rs`).

use super::*;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS snapshot_volume_log (
    volume_id TEXT PRIMARY KEY,
    snapshot_id TEXT NOT NULL,
    start_time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_jobs (
    snapshot_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_records (
    snapshot_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    region TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS restore_grants (
    volume_id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    key_arn TEXT NOT NULL,
    grant_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_permissions (
    snapshot_id TEXT NOT NULL,
    account TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, account)
);
"#;

pub(in crate::snapshot) fn db_err(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("state database: {e}"))
}

pub(in crate::snapshot) fn db(s: &Session) -> ApiResult<crate::home::PooledConnection> {
    let c = s
        .home
        .connect_pooled()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    s.home
        .ensure_schema(&c, "snapshot-ops", SCHEMA)
        .map_err(db_err)?;
    s.home
        .ensure_schema_with(&c, "snapshot-ops-restorer", |c| {
            // Who restored (a request context handoff): the grant's
            // retiring principal. Homes made before it lack the column.
            crate::home::Home::add_column_if_missing(c, "restore_grants", "restorer", "TEXT")
        })
        .map_err(db_err)?;
    Ok(c)
}

/// Who owns a snapshot and who may create volumes from it. The home's
/// records decide, never the manifest in the store: a store reader who
/// writes back an older manifest (one that still lists an account) or
/// edits its owner changes nothing. A snapshot the records do not know yet
/// (made before they existed) is read from its manifest until its sharing
/// is first changed.
#[derive(Debug, Clone, Default)]
pub(super) struct Access {
    owner: Option<AccountId>,
    shared_with: BTreeSet<AccountId>,
}

impl Access {
    pub(super) fn of(&self, m: &Manifest) -> (AccountId, BTreeSet<AccountId>) {
        match &self.owner {
            Some(o) => (o.clone(), self.shared_with.clone()),
            None => (m.owner_id.clone(), m.create_volume_permissions.clone()),
        }
    }
}

/// The records of every snapshot of the home.
pub(super) fn access_map(s: &Session) -> ApiResult<std::collections::HashMap<String, Access>> {
    let c = db(s)?;
    let mut out: std::collections::HashMap<String, Access> = std::collections::HashMap::new();
    let mut st = c
        .prepare("SELECT snapshot_id, owner FROM snapshot_records")
        .map_err(db_err)?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(db_err)?;
    for row in rows {
        let (id, owner) = row.map_err(db_err)?;
        out.entry(id).or_default().owner = owner.parse().ok();
    }
    let mut st = c
        .prepare("SELECT snapshot_id, account FROM snapshot_permissions")
        .map_err(db_err)?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(db_err)?;
    for row in rows {
        let (id, acct) = row.map_err(db_err)?;
        if let Ok(a) = acct.parse() {
            out.entry(id).or_default().shared_with.insert(a);
        }
    }
    Ok(out)
}

pub(super) fn access(s: &Session, id: &SnapshotId) -> ApiResult<Access> {
    let c = db(s)?;
    let owner: Option<String> = c
        .prepare_cached("SELECT owner FROM snapshot_records WHERE snapshot_id = ?1")
        .and_then(|mut st| st.query_row([id.as_str()], |r| r.get(0)).optional())
        .map_err(db_err)?;
    let Some(owner) = owner else {
        return Ok(Access::default());
    };
    let mut st = c
        .prepare_cached("SELECT account FROM snapshot_permissions WHERE snapshot_id = ?1")
        .map_err(db_err)?;
    let shared_with = st
        .query_map([id.as_str()], |r| r.get::<_, String>(0))
        .map_err(db_err)?
        .filter_map(|a| a.ok().and_then(|a| a.parse().ok()))
        .collect();
    Ok(Access {
        owner: owner.parse().ok(),
        shared_with,
    })
}

/// Records a new snapshot of the caller (create, copy).
pub(in crate::snapshot) fn record_snapshot(s: &Session, m: &Manifest) -> ApiResult<()> {
    db(s)?
        .execute(
            "INSERT OR IGNORE INTO snapshot_records (snapshot_id, owner, region) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.snapshot_id.as_str(), m.owner_id.as_str(), m.region.as_str()],
        )
        .map_err(db_err)?;
    Ok(())
}

/// Replaces the accounts a snapshot is shared with, in one transaction.
pub(super) fn set_shared_with(
    s: &Session,
    m: &Manifest,
    owner: &AccountId,
    accounts: &BTreeSet<AccountId>,
) -> ApiResult<()> {
    let c = db(s)?;
    let tx = c.unchecked_transaction().map_err(db_err)?;
    tx.execute(
        "INSERT OR IGNORE INTO snapshot_records (snapshot_id, owner, region) VALUES (?1, ?2, ?3)",
        rusqlite::params![m.snapshot_id.as_str(), owner.as_str(), m.region.as_str()],
    )
    .map_err(db_err)?;
    tx.execute(
        "DELETE FROM snapshot_permissions WHERE snapshot_id = ?1",
        [m.snapshot_id.as_str()],
    )
    .map_err(db_err)?;
    for a in accounts {
        tx.execute(
            "INSERT INTO snapshot_permissions (snapshot_id, account) VALUES (?1, ?2)",
            rusqlite::params![m.snapshot_id.as_str(), a.as_str()],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

pub(super) fn forget_snapshot(s: &Session, id: &SnapshotId) -> ApiResult<()> {
    let c = db(s)?;
    for sql in [
        "DELETE FROM snapshot_permissions WHERE snapshot_id = ?1",
        "DELETE FROM snapshot_records WHERE snapshot_id = ?1",
    ] {
        c.execute(sql, [id.as_str()]).map_err(db_err)?;
    }
    Ok(())
}

pub(in crate::snapshot) fn visible_to(s: &Session, m: &Manifest) -> ApiResult<bool> {
    let (owner, shared) = access(s, &m.snapshot_id)?.of(m);
    let me = &s.ctx.caller.account;
    // A manifest whose owner differs from the record is not the snapshot
    // that was made: nobody sees it.
    Ok(owner == m.owner_id && (&owner == me || shared.contains(me)))
}

/// Reads a manifest the caller may see, unauthenticated (for listing and
/// access checks only).
pub(in crate::snapshot) fn peek_visible(
    store: &ChunkStore,
    s: &Session,
    id: &SnapshotId,
) -> ApiResult<(Manifest, Vec<u8>)> {
    let bytes = store.get_manifest(id).map_err(snap_err)?;
    let m = Manifest::peek_unauthenticated(&bytes).map_err(snap_err)?;
    if !visible_to(s, &m)? {
        return Err(not_found(id.as_str()));
    }
    Ok((m, bytes))
}

/// Reads and authenticates a manifest the caller may see; returns it with
/// its data key.
pub(in crate::snapshot) fn open_verified(
    store: &ChunkStore,
    s: &Session,
    id: &SnapshotId,
) -> ApiResult<(Manifest, VolumeDataKey)> {
    let (m, bytes) = peek_visible(store, s, id)?;
    let dek = dek_of(s, &m)?;
    let m = Manifest::open(&bytes, &manifest_mac_key(&dek)).map_err(snap_err)?;
    Ok((m, dek))
}

/// The completed snapshot the volume's change log is relative to.
pub(super) fn parent_of(
    s: &Session,
    store: &ChunkStore,
    vol: &VolumeId,
    mac: &crate::secret::Key256,
) -> ApiResult<Option<Manifest>> {
    let last: Option<String> = db(s)?
        .query_row(
            "SELECT snapshot_id FROM snapshot_volume_log WHERE volume_id = ?1",
            [vol.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    let Some(id) = last.and_then(|l| l.parse::<SnapshotId>().ok()) else {
        return Ok(None);
    };
    let Ok(bytes) = store.get_manifest(&id) else {
        return Ok(None);
    };
    Ok(Manifest::open(&bytes, mac)
        .ok()
        .filter(|m| m.state == SnapshotState::Completed && &m.volume_id == vol))
}

/// Names `id` (started at `start_time`) as the snapshot the volume's
/// change log is relative to, unless a later one already is.
pub(in crate::snapshot) fn set_parent(
    s: &Session,
    vol: &VolumeId,
    id: &SnapshotId,
    start_time: &str,
) -> ApiResult<()> {
    db(s)?
        .execute(
            "INSERT INTO snapshot_volume_log (volume_id, snapshot_id, start_time) VALUES (?1, ?2, ?3)
             ON CONFLICT(volume_id) DO UPDATE SET snapshot_id = excluded.snapshot_id, start_time = excluded.start_time
             WHERE excluded.start_time > snapshot_volume_log.start_time",
            rusqlite::params![vol.as_str(), id.as_str(), start_time],
        )
        .map_err(db_err)?;
    Ok(())
}
