//! The control plane's own records next to the volume table: tags of
//! volumes and snapshots, the EC2 options of volumes (type, IOPS,
//! throughput), volume modifications, and the per-account, per-region
//! EBS encryption defaults.

use rusqlite::{params, OptionalExtension};

use crate::api_error::{ApiError, ApiResult};
use crate::session::Session;

use super::params::Tag;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ec2_tags (
    resource_id TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_id, key)
);
CREATE INDEX IF NOT EXISTS ec2_tags_by_account ON ec2_tags(account, region);
CREATE TABLE IF NOT EXISTS ec2_volume_options (
    volume_id TEXT PRIMARY KEY,
    volume_type TEXT NOT NULL,
    iops INTEGER,
    throughput INTEGER,
    availability_zone TEXT
);
CREATE TABLE IF NOT EXISTS ec2_volume_modifications (
    volume_id TEXT PRIMARY KEY,
    original_size INTEGER NOT NULL,
    target_size INTEGER NOT NULL,
    original_type TEXT NOT NULL,
    target_type TEXT NOT NULL,
    original_iops INTEGER,
    target_iops INTEGER,
    original_throughput INTEGER,
    target_throughput INTEGER,
    start_time INTEGER NOT NULL,
    end_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ec2_account_settings (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    encryption_by_default INTEGER NOT NULL DEFAULT 0,
    default_kms_key TEXT,
    PRIMARY KEY (account, region)
);
"#;

/// The EC2 device names AttachVolume gave, with the pid of the attach
/// daemon it started (a name belongs to that attachment only).
const ATTACHMENT_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ec2_attachment_devices (
    volume_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    device TEXT NOT NULL,
    pid INTEGER NOT NULL,
    attached INTEGER NOT NULL
);
"#;

/// Most tags a resource may carry (EC2's limit).
pub const MAX_TAGS: usize = 50;

fn db_err(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("state database: {e}"))
}

/// The EC2 options of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeOptions {
    pub volume_type: String,
    pub iops: Option<i64>,
    pub throughput: Option<i64>,
    /// The zone CreateVolume named; volumes made before zones were
    /// recorded (and by the keyvol CLI without one) are in `<region>a`.
    pub availability_zone: Option<String>,
}

impl VolumeOptions {
    /// The volume's availability zone in `region`.
    pub fn zone(&self, region: &str) -> String {
        self.availability_zone
            .clone()
            .unwrap_or_else(|| format!("{region}a"))
    }
}

impl Default for VolumeOptions {
    fn default() -> Self {
        VolumeOptions {
            volume_type: "gp3".into(),
            iops: Some(3000),
            throughput: Some(125),
            availability_zone: None,
        }
    }
}

/// A finished (or running) ModifyVolume.
#[derive(Debug, Clone)]
pub struct Modification {
    pub volume_id: String,
    pub original_size: i64,
    pub target_size: i64,
    pub original: VolumeOptions,
    pub target: VolumeOptions,
    pub start_time: i64,
    pub end_time: i64,
}

pub struct Records<'a> {
    s: &'a Session,
    conn: crate::home::PooledConnection,
}

/// Checks tag keys and values as EC2 does.
/// Homes made before zones were recorded lack the column.
fn add_zone_column(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    crate::home::Home::add_column_if_missing(
        conn,
        "ec2_volume_options",
        "availability_zone",
        "TEXT",
    )
}

pub fn check_tags(tags: &[Tag]) -> ApiResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::new(
            "TagLimitExceeded",
            format!(
                "A resource can have at most {MAX_TAGS} tags; the request has {}",
                tags.len()
            ),
        ));
    }
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 127 {
            return Err(ApiError::invalid_parameter(
                "Tag keys must be between 1 and 127 Unicode characters long",
            ));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid_parameter(format!(
                "Tag keys starting with 'aws:' are reserved for internal use: {}",
                t.key.chars().take(127).collect::<String>()
            )));
        }
        if t.value.chars().count() > 255 {
            return Err(ApiError::invalid_parameter(format!(
                "The value of tag '{}' is longer than 255 characters",
                t.key
            )));
        }
    }
    let mut keys: Vec<&str> = tags.iter().map(|t| t.key.as_str()).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(ApiError::invalid_parameter(
            "A tag key appears more than once in the request",
        ));
    }
    Ok(())
}

impl<'a> Records<'a> {
    pub fn open(s: &'a Session) -> ApiResult<Records<'a>> {
        let conn = s
            .home
            .connect_pooled()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        s.home
            .ensure_schema(&conn, "ec2-records", SCHEMA)
            .map_err(db_err)?;
        s.home
            .ensure_schema_with(&conn, "ec2-records-zone", add_zone_column)
            .map_err(db_err)?;
        s.home
            .ensure_schema(&conn, "ec2-attachment-devices", ATTACHMENT_SCHEMA)
            .map_err(db_err)?;
        Ok(Records { s, conn })
    }

    fn account(&self) -> &str {
        self.s.ctx.caller.account.as_str()
    }

    fn region(&self) -> &str {
        self.s.ctx.region.as_str()
    }

    pub fn tags(&self, resource: &str) -> ApiResult<Vec<Tag>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT key, value FROM ec2_tags WHERE resource_id = ?1 AND account = ?2 ORDER BY key")
            .map_err(db_err)?;
        let rows = st
            .query_map(params![resource, self.account()], |r| {
                Ok(Tag {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    /// Every tag of the caller's account in this region: (resource, tag).
    pub fn all_tags(&self) -> ApiResult<Vec<(String, Tag)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT resource_id, key, value FROM ec2_tags WHERE account = ?1 AND region = ?2 ORDER BY resource_id, key")
            .map_err(db_err)?;
        let rows = st
            .query_map(params![self.account(), self.region()], |r| {
                Ok((
                    r.get(0)?,
                    Tag {
                        key: r.get(1)?,
                        value: r.get(2)?,
                    },
                ))
            })
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    /// Adds or overwrites tags; refused when the resource would carry more
    /// than [`MAX_TAGS`]. All or nothing.
    pub fn put_tags(&self, resource: &str, tags: &[Tag]) -> ApiResult<()> {
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        for t in tags {
            tx.execute(
                "INSERT INTO ec2_tags (resource_id, account, region, key, value) VALUES (?1,?2,?3,?4,?5) \
                 ON CONFLICT(resource_id, key) DO UPDATE SET value = excluded.value",
                params![resource, self.account(), self.region(), t.key, t.value],
            )
            .map_err(db_err)?;
        }
        let n: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM ec2_tags WHERE resource_id = ?1",
                [resource],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if n as usize > MAX_TAGS {
            return Err(ApiError::new(
                "TagLimitExceeded",
                format!("{resource} would have {n} tags; a resource can have at most {MAX_TAGS}"),
            ));
        }
        tx.commit().map_err(db_err)
    }

    /// Removes tags: by key, or by key and value when a value is given
    /// (`None` value: the key whatever its value).
    pub fn delete_tags(&self, resource: &str, tags: &[(String, Option<String>)]) -> ApiResult<()> {
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        if tags.is_empty() {
            tx.execute("DELETE FROM ec2_tags WHERE resource_id = ?1", [resource])
                .map_err(db_err)?;
        }
        for (k, v) in tags {
            match v {
                Some(v) => tx.execute(
                    "DELETE FROM ec2_tags WHERE resource_id = ?1 AND key = ?2 AND value = ?3",
                    params![resource, k, v],
                ),
                None => tx.execute(
                    "DELETE FROM ec2_tags WHERE resource_id = ?1 AND key = ?2",
                    params![resource, k],
                ),
            }
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    pub fn volume_options(&self, vol: &str) -> ApiResult<VolumeOptions> {
        let row = self
            .conn
            .query_row(
                "SELECT volume_type, iops, throughput, availability_zone FROM ec2_volume_options WHERE volume_id = ?1",
                [vol],
                |r| {
                    Ok(VolumeOptions {
                        volume_type: r.get(0)?,
                        iops: r.get(1)?,
                        throughput: r.get(2)?,
                        availability_zone: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)?;
        Ok(row.unwrap_or_default())
    }

    pub fn set_volume_options(&self, vol: &str, o: &VolumeOptions) -> ApiResult<()> {
        self.conn
            .execute(
                "INSERT INTO ec2_volume_options (volume_id, volume_type, iops, throughput, availability_zone) VALUES (?1,?2,?3,?4,?5) \
                 ON CONFLICT(volume_id) DO UPDATE SET volume_type = excluded.volume_type, iops = excluded.iops, throughput = excluded.throughput, \
                 availability_zone = COALESCE(excluded.availability_zone, ec2_volume_options.availability_zone)",
                params![vol, o.volume_type, o.iops, o.throughput, o.availability_zone],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Forgets everything recorded of a deleted volume or snapshot.
    pub fn forget(&self, resource: &str) -> ApiResult<()> {
        for sql in [
            "DELETE FROM ec2_tags WHERE resource_id = ?1",
            "DELETE FROM ec2_volume_options WHERE volume_id = ?1",
            "DELETE FROM ec2_volume_modifications WHERE volume_id = ?1",
            "DELETE FROM ec2_attachment_devices WHERE volume_id = ?1",
        ] {
            self.conn.execute(sql, [resource]).map_err(db_err)?;
        }
        Ok(())
    }

    /// Records the device name of the attachment of `vol` by daemon `pid`.
    pub fn put_device_name(&self, vol: &str, device: &str, pid: i64, at: i64) -> ApiResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ec2_attachment_devices (volume_id, account, region, device, pid, attached) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![vol, self.account(), self.region(), device, pid, at],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// The device name AttachVolume gave the attachment of `vol` by daemon
    /// `pid`, if it was made by AttachVolume.
    pub fn device_name(&self, vol: &str, pid: i64) -> ApiResult<Option<String>> {
        self.conn
            .query_row(
                "SELECT device FROM ec2_attachment_devices WHERE volume_id = ?1 AND pid = ?2",
                params![vol, pid],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }

    /// The (volume, pid) of the caller's attachments named `device`.
    pub fn volumes_named(&self, device: &str) -> ApiResult<Vec<(String, i64)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT volume_id, pid FROM ec2_attachment_devices \
                 WHERE account = ?1 AND region = ?2 AND device = ?3",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map(params![self.account(), self.region(), device], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(db_err);
        rows
    }

    pub fn forget_device_name(&self, vol: &str) -> ApiResult<()> {
        self.conn
            .execute(
                "DELETE FROM ec2_attachment_devices WHERE volume_id = ?1",
                [vol],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn put_modification(&self, m: &Modification) -> ApiResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ec2_volume_modifications (volume_id, original_size, target_size, original_type, target_type, original_iops, target_iops, original_throughput, target_throughput, start_time, end_time) \
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                params![m.volume_id, m.original_size, m.target_size, m.original.volume_type, m.target.volume_type, m.original.iops, m.target.iops, m.original.throughput, m.target.throughput, m.start_time, m.end_time],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn modification(&self, vol: &str) -> ApiResult<Option<Modification>> {
        self.conn
            .query_row(
                "SELECT volume_id, original_size, target_size, original_type, target_type, original_iops, target_iops, original_throughput, target_throughput, start_time, end_time FROM ec2_volume_modifications WHERE volume_id = ?1",
                [vol],
                |r| {
                    Ok(Modification {
                        volume_id: r.get(0)?,
                        original_size: r.get(1)?,
                        target_size: r.get(2)?,
                        original: VolumeOptions { volume_type: r.get(3)?, iops: r.get(5)?, throughput: r.get(7)?, availability_zone: None },
                        target: VolumeOptions { volume_type: r.get(4)?, iops: r.get(6)?, throughput: r.get(8)?, availability_zone: None },
                        start_time: r.get(9)?,
                        end_time: r.get(10)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
    }

    /// (encryption by default, default KMS key ARN if one was set).
    pub fn ebs_defaults(&self) -> ApiResult<(bool, Option<String>)> {
        let row: Option<(i64, Option<String>)> = self
            .conn
            .query_row(
                "SELECT encryption_by_default, default_kms_key FROM ec2_account_settings WHERE account = ?1 AND region = ?2",
                params![self.account(), self.region()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err)?;
        Ok(row.map(|(e, k)| (e != 0, k)).unwrap_or((false, None)))
    }

    pub fn set_encryption_by_default(&self, on: bool) -> ApiResult<()> {
        self.conn
            .execute(
                "INSERT INTO ec2_account_settings (account, region, encryption_by_default) VALUES (?1,?2,?3) \
                 ON CONFLICT(account, region) DO UPDATE SET encryption_by_default = excluded.encryption_by_default",
                params![self.account(), self.region(), on as i64],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn set_default_kms_key(&self, arn: Option<&str>) -> ApiResult<()> {
        self.conn
            .execute(
                "INSERT INTO ec2_account_settings (account, region, default_kms_key) VALUES (?1,?2,?3) \
                 ON CONFLICT(account, region) DO UPDATE SET default_kms_key = excluded.default_kms_key",
                params![self.account(), self.region(), arn],
            )
            .map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_column_is_added_to_an_older_table_once() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE ec2_volume_options (volume_id TEXT PRIMARY KEY, volume_type TEXT NOT NULL, iops INTEGER, throughput INTEGER);
             INSERT INTO ec2_volume_options VALUES ('vol-0123456789abcdef0', 'gp3', 3000, 125);",
        )
        .unwrap();
        add_zone_column(&conn).unwrap();
        add_zone_column(&conn).unwrap();
        let zone: Option<String> = conn
            .query_row(
                "SELECT availability_zone FROM ec2_volume_options WHERE volume_id = 'vol-0123456789abcdef0'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(zone, None);
        let o = VolumeOptions::default();
        assert_eq!(o.zone("eu-west-1"), "eu-west-1a");
    }
}
