//! The KMS's SQLite schema and row access. One connection per `Kms`
//! handle; every operation is one transaction.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::model::KeyRecord;
use super::{KmsError, KmsResult};
use crate::ids::{AccountId, KeyId, Region};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    key_spec TEXT NOT NULL,
    key_usage TEXT NOT NULL,
    origin TEXT NOT NULL,
    key_manager TEXT NOT NULL,
    state TEXT NOT NULL,
    created INTEGER NOT NULL,
    deletion_date INTEGER,
    pending_window INTEGER,
    state_before_deletion TEXT,
    rotation_enabled INTEGER NOT NULL DEFAULT 0,
    rotation_period INTEGER,
    next_rotation INTEGER,
    on_demand_rotations INTEGER NOT NULL DEFAULT 0,
    policy TEXT NOT NULL,
    valid_to INTEGER,
    expiration_model TEXT,
    public_key BLOB,
    primary_region TEXT
);
CREATE INDEX IF NOT EXISTS keys_by_account ON keys(account, region);
CREATE INDEX IF NOT EXISTS keys_due ON keys(state, deletion_date);
CREATE TABLE IF NOT EXISTS key_material (
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    created INTEGER NOT NULL,
    rotation_type TEXT,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (account, region, name)
);
CREATE TABLE IF NOT EXISTS tags (
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);
CREATE TABLE IF NOT EXISTS import_parameters (
    token_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    wrapping_algorithm TEXT NOT NULL,
    wrapping_key_spec TEXT NOT NULL,
    sealed_wrapping_key BLOB NOT NULL,
    valid_to INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS imported_key_material (
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    material_id TEXT NOT NULL,
    check_value BLOB NOT NULL,
    version INTEGER,
    description TEXT,
    expiration_model TEXT,
    valid_to INTEGER,
    imported INTEGER NOT NULL,
    pending_sealed BLOB,
    created INTEGER NOT NULL,
    rotation_date INTEGER,
    rotation_type TEXT,
    PRIMARY KEY (key_id, material_id)
);
CREATE INDEX IF NOT EXISTS imported_key_material_expiry ON imported_key_material(valid_to);
CREATE TABLE IF NOT EXISTS deleted_keys (
    key_id TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    deleted_at INTEGER NOT NULL
);
"#;

/// Maps a database failure to the KMS's internal error (a 5xx on the wire).
pub(crate) fn db(e: rusqlite::Error) -> KmsError {
    KmsError::internal(format!("state database: {e}"))
}

const KEY_COLUMNS: &str = "key_id, account, region, description, key_spec, key_usage, origin, \
     key_manager, state, created, deletion_date, pending_window, state_before_deletion, \
     rotation_enabled, rotation_period, next_rotation, on_demand_rotations, policy, valid_to, \
     expiration_model, public_key, primary_region";

fn text(r: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    r.get(i)
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let parse_err = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("bad {what} in keys table").into(),
        )
    };
    let key_id: String = r.get(0)?;
    let account: String = r.get(1)?;
    let region: String = r.get(2)?;
    let state: String = r.get(8)?;
    Ok(KeyRecord {
        key_id: key_id.parse().map_err(|_| parse_err(0, "key id"))?,
        account: account.parse().map_err(|_| parse_err(1, "account"))?,
        region: region.parse().map_err(|_| parse_err(2, "region"))?,
        description: r.get(3)?,
        key_spec: text(r, 4)?.parse().map_err(|_| parse_err(4, "key spec"))?,
        key_usage: text(r, 5)?.parse().map_err(|_| parse_err(5, "key usage"))?,
        origin: text(r, 6)?.parse().map_err(|_| parse_err(6, "origin"))?,
        key_manager: text(r, 7)?
            .parse()
            .map_err(|_| parse_err(7, "key manager"))?,
        state: state.parse().map_err(|_| parse_err(8, "state"))?,
        created: r.get(9)?,
        deletion_date: r.get(10)?,
        pending_window: r.get(11)?,
        state_before_deletion: r.get(12)?,
        rotation_enabled: r.get::<_, i64>(13)? != 0,
        rotation_period: r.get(14)?,
        next_rotation: r.get(15)?,
        on_demand_rotations: r.get(16)?,
        policy: r.get(17)?,
        valid_to: r.get(18)?,
        expiration_model: r.get(19)?,
        public_key: r.get(20)?,
        primary_region: r
            .get::<_, Option<String>>(21)?
            .map(|p| p.parse())
            .transpose()
            .map_err(|_| parse_err(21, "primary region"))?,
    })
}

pub(crate) fn get_key(conn: &Connection, id: &KeyId) -> KmsResult<Option<KeyRecord>> {
    conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?1"))
        .and_then(|mut st| st.query_row([id], key_from_row).optional())
        .map_err(db)
}

pub(crate) fn list_keys(
    conn: &Connection,
    account: &AccountId,
    region: &Region,
) -> KmsResult<Vec<KeyRecord>> {
    let mut st = conn
        .prepare(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE account = ?1 AND region = ?2 ORDER BY created, key_id"
        ))
        .map_err(db)?;
    let rows = st
        .query_map(params![account.as_str(), region.as_str()], key_from_row)
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

pub(crate) fn insert_key(conn: &Connection, k: &KeyRecord) -> KmsResult<()> {
    conn.execute(
        &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22)"),
        params![
            k.key_id,
            k.account.as_str(),
            k.region.as_str(),
            k.description,
            k.key_spec.as_str(),
            k.key_usage.as_str(),
            k.origin.as_str(),
            k.key_manager.as_str(),
            k.state.as_str(),
            k.created,
            k.deletion_date,
            k.pending_window,
            k.state_before_deletion,
            k.rotation_enabled as i64,
            k.rotation_period,
            k.next_rotation,
            k.on_demand_rotations,
            k.policy,
            k.valid_to,
            k.expiration_model,
            k.public_key,
            k.primary_region.as_ref().map(|r| r.as_str()),
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Writes every mutable column of `k` back.
pub(crate) fn update_key(conn: &Connection, k: &KeyRecord) -> KmsResult<()> {
    conn.execute(
        "UPDATE keys SET description=?2, state=?3, deletion_date=?4, pending_window=?5, \
         state_before_deletion=?6, rotation_enabled=?7, rotation_period=?8, next_rotation=?9, \
         on_demand_rotations=?10, policy=?11, valid_to=?12, expiration_model=?13, public_key=?14, \
         primary_region=?15 WHERE key_id=?1",
        params![
            k.key_id,
            k.description,
            k.state.as_str(),
            k.deletion_date,
            k.pending_window,
            k.state_before_deletion,
            k.rotation_enabled as i64,
            k.rotation_period,
            k.next_rotation,
            k.on_demand_rotations,
            k.policy,
            k.valid_to,
            k.expiration_model,
            k.public_key,
            k.primary_region.as_ref().map(|r| r.as_str()),
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// The related keys of multi-Region key `id` in every region, `id`'s own
/// record included, by region.
pub(crate) fn related_keys(conn: &Connection, id: &KeyId) -> KmsResult<Vec<KeyRecord>> {
    if !id.is_multi_region() {
        return Ok(get_key(conn, id)?.into_iter().collect());
    }
    let prefix = id.family_prefix();
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE substr(key_id, 1, ?2) = ?1 ORDER BY region"
        ))
        .map_err(db)?;
    let rows = st
        .query_map(params![prefix, prefix.len() as i64], key_from_row)
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

/// Destroys a key for good: its material, aliases and tags go with it
/// (foreign keys cascade); a tombstone keeps the ARN for clear errors.
pub(crate) fn destroy_key(conn: &Connection, k: &KeyRecord, now: i64) -> KmsResult<()> {
    conn.execute(
        "INSERT OR REPLACE INTO deleted_keys (key_id, arn, deleted_at) VALUES (?1, ?2, ?3)",
        params![k.key_id, k.arn(), now],
    )
    .map_err(db)?;
    conn.execute("DELETE FROM keys WHERE key_id = ?1", [k.key_id])
        .map_err(db)?;
    Ok(())
}

pub(crate) fn deleted_at(conn: &Connection, id: &KeyId) -> KmsResult<Option<i64>> {
    conn.query_row(
        "SELECT deleted_at FROM deleted_keys WHERE key_id = ?1",
        [id],
        |r| r.get(0),
    )
    .optional()
    .map_err(db)
}

pub(crate) struct MaterialRow {
    pub version: u32,
    pub sealed: Vec<u8>,
    pub created: i64,
    pub rotation_type: Option<String>,
}

pub(crate) fn insert_material(
    conn: &Connection,
    id: &KeyId,
    version: u32,
    sealed: &[u8],
    created: i64,
    rotation_type: Option<&str>,
) -> KmsResult<()> {
    conn.execute(
        "INSERT INTO key_material (key_id, version, sealed, created, rotation_type) VALUES (?1,?2,?3,?4,?5)",
        params![id, version, sealed, created, rotation_type],
    )
    .map_err(db)?;
    Ok(())
}

pub(crate) fn materials(conn: &Connection, id: &KeyId) -> KmsResult<Vec<MaterialRow>> {
    let mut st = conn
        .prepare_cached(
            "SELECT version, sealed, created, rotation_type FROM key_material WHERE key_id = ?1 ORDER BY version",
        )
        .map_err(db)?;
    let rows = st.query_map([id], material_from_row).map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

fn material_from_row(r: &Row<'_>) -> rusqlite::Result<MaterialRow> {
    Ok(MaterialRow {
        version: r.get(0)?,
        sealed: r.get(1)?,
        created: r.get(2)?,
        rotation_type: r.get(3)?,
    })
}

/// One material version (the newest when `version` is None).
pub(crate) fn material(
    conn: &Connection,
    id: &KeyId,
    version: Option<u32>,
) -> KmsResult<Option<MaterialRow>> {
    let map = material_from_row;
    match version {
        Some(v) => conn
            .prepare_cached(
                "SELECT version, sealed, created, rotation_type FROM key_material WHERE key_id = ?1 AND version = ?2",
            )
            .and_then(|mut st| st.query_row(params![id, v], map).optional()),
        None => conn
            .prepare_cached(
                "SELECT version, sealed, created, rotation_type FROM key_material WHERE key_id = ?1 ORDER BY version DESC LIMIT 1",
            )
            .and_then(|mut st| st.query_row([id], map).optional()),
    }
    .map_err(db)
}

pub(crate) fn delete_material(conn: &Connection, id: &KeyId, version: u32) -> KmsResult<()> {
    conn.execute(
        "DELETE FROM key_material WHERE key_id = ?1 AND version = ?2",
        params![id, version],
    )
    .map_err(db)?;
    Ok(())
}

/// One row of `imported_key_material`: a key material of a key with
/// Origin EXTERNAL that was imported once. It stays after the material is
/// deleted or expires (ImportState PENDING_IMPORT), so that only the same
/// material can be imported again; its bytes live in `key_material` under
/// `version` while imported, or sealed in `pending_sealed` while it waits
/// for RotateKeyOnDemand (`version` NULL, KeyMaterialState
/// PENDING_ROTATION).
#[derive(Debug, Clone)]
pub(crate) struct ImportedRow {
    pub material_id: String,
    /// Identifies the material without revealing it (see `ops::import`).
    pub check_value: Vec<u8>,
    pub version: Option<u32>,
    pub description: Option<String>,
    pub expiration_model: Option<String>,
    pub valid_to: Option<i64>,
    pub imported: bool,
    pub pending_sealed: Option<Vec<u8>>,
    pub created: i64,
    pub rotation_date: Option<i64>,
    pub rotation_type: Option<String>,
}

const IMPORTED_COLUMNS: &str = "material_id, check_value, version, description, expiration_model, \
     valid_to, imported, pending_sealed, created, rotation_date, rotation_type";

fn imported_from_row(r: &Row<'_>) -> rusqlite::Result<ImportedRow> {
    Ok(ImportedRow {
        material_id: r.get(0)?,
        check_value: r.get(1)?,
        version: r.get(2)?,
        description: r.get(3)?,
        expiration_model: r.get(4)?,
        valid_to: r.get(5)?,
        imported: r.get::<_, i64>(6)? != 0,
        pending_sealed: r.get(7)?,
        created: r.get(8)?,
        rotation_date: r.get(9)?,
        rotation_type: r.get(10)?,
    })
}

/// The imported materials of a key: by version, the one pending rotation
/// last.
pub(crate) fn imported_materials(conn: &Connection, id: &KeyId) -> KmsResult<Vec<ImportedRow>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {IMPORTED_COLUMNS} FROM imported_key_material WHERE key_id = ?1 \
             ORDER BY version IS NULL, version"
        ))
        .map_err(db)?;
    let rows = st.query_map([id], imported_from_row).map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

/// Inserts or replaces the row of `m.material_id`.
pub(crate) fn put_imported(conn: &Connection, id: &KeyId, m: &ImportedRow) -> KmsResult<()> {
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO imported_key_material (key_id, {IMPORTED_COLUMNS}) \
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"
        ),
        params![
            id,
            m.material_id,
            m.check_value,
            m.version,
            m.description,
            m.expiration_model,
            m.valid_to,
            m.imported as i64,
            m.pending_sealed,
            m.created,
            m.rotation_date,
            m.rotation_type,
        ],
    )
    .map_err(db)?;
    Ok(())
}

pub(crate) fn remove_imported(conn: &Connection, id: &KeyId, material_id: &str) -> KmsResult<()> {
    conn.execute(
        "DELETE FROM imported_key_material WHERE key_id = ?1 AND material_id = ?2",
        params![id, material_id],
    )
    .map_err(db)?;
    Ok(())
}

/// Imported materials whose ValidTo has passed at `now` and that are still
/// there to expire.
pub(crate) fn expired_imports(conn: &Connection, now: i64) -> KmsResult<Vec<(KeyId, ImportedRow)>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT key_id, {IMPORTED_COLUMNS} FROM imported_key_material \
             WHERE valid_to IS NOT NULL AND valid_to <= ?1 AND imported = 1 ORDER BY key_id"
        ))
        .map_err(db)?;
    let rows = st
        .query_map([now], |r| {
            let key: String = r.get(0)?;
            let key = key.parse::<KeyId>().map_err(|_| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    "bad key id in imported_key_material".into(),
                )
            })?;
            // The row's own columns start at index 1.
            Ok((
                key,
                ImportedRow {
                    material_id: r.get(1)?,
                    check_value: r.get(2)?,
                    version: r.get(3)?,
                    description: r.get(4)?,
                    expiration_model: r.get(5)?,
                    valid_to: r.get(6)?,
                    imported: r.get::<_, i64>(7)? != 0,
                    pending_sealed: r.get(8)?,
                    created: r.get(9)?,
                    rotation_date: r.get(10)?,
                    rotation_type: r.get(11)?,
                },
            ))
        })
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

/// The KeyMaterialId of material `version` of `k`: the id an import gave
/// it for keys with Origin EXTERNAL, else the one derived from the version.
pub(crate) fn material_id_of(conn: &Connection, k: &KeyRecord, version: u32) -> KmsResult<String> {
    if k.origin == crate::kms::asym::Origin::External {
        let id: Option<String> = conn
            .prepare_cached(
                "SELECT material_id FROM imported_key_material WHERE key_id = ?1 AND version = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![k.key_id, version], |r| r.get(0))
                    .optional()
            })
            .map_err(db)?;
        if let Some(id) = id {
            return Ok(id);
        }
    }
    Ok(super::model::key_material_id(&k.key_id, version))
}

/// Upgrades a home made before keys took more than one imported material:
/// the one-row-per-key `imported_material` table (its check value, and
/// the key's expiration) becomes `imported_key_material` rows of material
/// version 1, keeping the KeyMaterialId keyvol returned for them.
pub(crate) fn migrate(conn: &Connection) -> KmsResult<()> {
    // Homes from before multi-Region keys.
    crate::home::Home::add_column_if_missing(conn, "keys", "primary_region", "TEXT")
        .map_err(|e| KmsError::internal(e.to_string()))?;
    let old: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'imported_material'",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if old == 0 {
        return Ok(());
    }
    /// key id, check value, expiration model, valid to, created, materials.
    type OldRow = (String, Vec<u8>, Option<String>, Option<i64>, i64, i64);
    let rows: Vec<OldRow> = {
        let mut st = conn
            .prepare(
                "SELECT i.key_id, i.check_value, k.expiration_model, k.valid_to, k.created, \
                 (SELECT COUNT(*) FROM key_material m WHERE m.key_id = i.key_id) \
                 FROM imported_material i JOIN keys k ON k.key_id = i.key_id",
            )
            .map_err(db)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)?
    };
    for (key, check_value, expiration_model, valid_to, created, materials) in rows {
        let id: KeyId = key
            .parse()
            .map_err(|_| KmsError::internal(format!("bad key id {key} in imported_material")))?;
        let imported = materials > 0;
        put_imported(
            conn,
            &id,
            &ImportedRow {
                material_id: super::model::key_material_id(&id, 1),
                check_value,
                version: Some(1),
                description: None,
                expiration_model: expiration_model.filter(|_| imported),
                valid_to: valid_to.filter(|_| imported),
                imported,
                pending_sealed: None,
                created,
                rotation_date: None,
                rotation_type: None,
            },
        )?;
    }
    conn.execute("DROP TABLE imported_material", [])
        .map_err(db)?;
    Ok(())
}

pub(crate) struct AliasRow {
    pub name: String,
    pub key_id: KeyId,
    pub created: i64,
    pub updated: i64,
}

pub(crate) fn alias(
    conn: &Connection,
    account: &AccountId,
    region: &Region,
    name: &str,
) -> KmsResult<Option<AliasRow>> {
    conn.prepare_cached(
        "SELECT name, key_id, created, updated FROM aliases WHERE account=?1 AND region=?2 AND name=?3",
    )
    .and_then(|mut st| {
        st.query_row(
            params![account.as_str(), region.as_str(), name],
            alias_from_row,
        )
        .optional()
    })
    .map_err(db)
}

fn alias_from_row(r: &Row<'_>) -> rusqlite::Result<AliasRow> {
    let key: String = r.get(1)?;
    Ok(AliasRow {
        name: r.get(0)?,
        key_id: key.parse().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                "bad key id".into(),
            )
        })?,
        created: r.get(2)?,
        updated: r.get(3)?,
    })
}

pub(crate) fn aliases(
    conn: &Connection,
    account: &AccountId,
    region: &Region,
    key: Option<&KeyId>,
) -> KmsResult<Vec<AliasRow>> {
    let mut st = conn
        .prepare_cached(
            "SELECT name, key_id, created, updated FROM aliases WHERE account=?1 AND region=?2 \
             AND (?3 IS NULL OR key_id = ?3) ORDER BY name",
        )
        .map_err(db)?;
    let rows = st
        .query_map(
            params![
                account.as_str(),
                region.as_str(),
                key.map(|k| k.store_key())
            ],
            alias_from_row,
        )
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

pub(crate) fn tags(conn: &Connection, id: &KeyId) -> KmsResult<Vec<(String, String)>> {
    let mut st = conn
        .prepare_cached("SELECT tag_key, tag_value FROM tags WHERE key_id = ?1 ORDER BY tag_key")
        .map_err(db)?;
    let rows = st
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

/// Keys whose deletion window or rotation period has passed at `now`.
pub(crate) fn due_keys(conn: &Connection, now: i64) -> KmsResult<Vec<KeyRecord>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE (state = 'PendingDeletion' AND deletion_date <= ?1) \
             OR (rotation_enabled = 1 AND next_rotation <= ?1 AND state = 'Enabled')"
        ))
        .map_err(db)?;
    let rows = st.query_map([now], key_from_row).map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

/// Whether `Kms::run_due_work` has anything to do at `now`: a key in
/// [`due_keys`] or material in [`expired_imports`] (the same conditions, so
/// a call that finds nothing due sees what the write path would see).
pub(crate) fn work_due(conn: &Connection, now: i64) -> KmsResult<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM keys WHERE (state = 'PendingDeletion' AND deletion_date <= ?1) \
         OR (rotation_enabled = 1 AND next_rotation <= ?1 AND state = 'Enabled')) \
         OR EXISTS (SELECT 1 FROM imported_key_material \
         WHERE valid_to IS NOT NULL AND valid_to <= ?1 AND imported = 1)",
    )
    .and_then(|mut st| st.query_row([now], |r| r.get::<_, bool>(0)))
    .map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A home from before multi-material imports: one `imported_material`
    /// row per key, the expiration on the key.
    #[test]
    fn migrate_moves_single_imported_material_rows() {
        let conn = Connection::open_in_memory().unwrap();
        let old_table = "CREATE TABLE imported_material (
            key_id TEXT PRIMARY KEY REFERENCES keys(key_id) ON DELETE CASCADE,
            check_value BLOB NOT NULL);";
        conn.execute_batch(&format!("{SCHEMA} {old_table}"))
            .unwrap();
        let imported: KeyId = "11111111-2222-3333-4444-555555555555".parse().unwrap();
        let deleted: KeyId = "66666666-2222-3333-4444-555555555555".parse().unwrap();
        for (id, valid_to) in [(&imported, Some(2_000_000_000i64)), (&deleted, None)] {
            conn.execute(
                "INSERT INTO keys (key_id, account, region, key_spec, key_usage, origin, key_manager, \
                 state, created, policy, valid_to, expiration_model) \
                 VALUES (?1, '111122223333', 'us-east-1', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', \
                 'EXTERNAL', 'CUSTOMER', 'Enabled', 5, '{}', ?2, ?3)",
                params![id, valid_to, valid_to.map(|_| "KEY_MATERIAL_EXPIRES")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO imported_material (key_id, check_value) VALUES (?1, x'0102')",
                [id],
            )
            .unwrap();
        }
        insert_material(&conn, &imported, 1, b"sealed", 5, None).unwrap();
        migrate(&conn).unwrap();
        // Idempotent: the old table is gone.
        migrate(&conn).unwrap();
        let rows = imported_materials(&conn, &imported).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            r.material_id,
            super::super::model::key_material_id(&imported, 1)
        );
        assert_eq!(r.check_value, vec![1, 2]);
        assert_eq!(r.version, Some(1));
        assert!(r.imported);
        assert_eq!(r.valid_to, Some(2_000_000_000));
        assert_eq!(r.expiration_model.as_deref(), Some("KEY_MATERIAL_EXPIRES"));
        let rows = imported_materials(&conn, &deleted).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].imported);
        let old: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'imported_material'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
    }
}
