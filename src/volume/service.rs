//! Volume records and lifecycle: create, import, describe, delete,
//! modify, status, and the data key through the KMS. Volumes are regional
//! and belong to an account, like EBS. Attaching (the daemon) is
//! [`super::agent`], file systems on volumes [`super::mounting`].
//!
//! Files of a volume, under `<home>/volumes/<region>/`: `<vol>.img` (the
//! sparse ciphertext), `<vol>.changes` (the change log), `<vol>.lock` (held
//! by the attach daemon for as long as it runs: one attachment at a time,
//! released by the kernel when the daemon dies), `<vol>.dev` (the default
//! device file a `mount` serves through), `<vol>.log` (daemon log) and
//! `<vol>.mount-lock` (held while a mount or unmount of the volume runs).

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::clock::to_rfc3339;
use crate::ids::VolumeId;
use crate::kms::api::b64_encode;
use crate::kms::{ErrorCode, KmsError};
use crate::secret::VolumeDataKey;
use crate::session::Session;
use crate::volume::device::{ChunkSource, HydrationMap};
use crate::volume::{mount, VolumeError, SECTOR_SIZE};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS volumes (
    volume_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    size INTEGER NOT NULL,
    kms_key_arn TEXT NOT NULL,
    encrypted_data_key BLOB NOT NULL,
    created INTEGER NOT NULL,
    snapshot_id TEXT,
    state TEXT NOT NULL DEFAULT 'available'
);
CREATE TABLE IF NOT EXISTS attachments (
    volume_id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    pid INTEGER NOT NULL,
    attached INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mounts (
    mountpoint TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    fs TEXT NOT NULL,
    mounted INTEGER NOT NULL
);
"#;

/// Homes made before mounts recorded whether they attached the volume
/// lack the column; their mounts did (unmount detaches, as it did then).
fn add_attached_here_column(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    crate::home::Home::add_column_if_missing(
        conn,
        "mounts",
        "attached_here",
        "INTEGER NOT NULL DEFAULT 1",
    )
}

/// Volumes of homes made before backing files were made lazily all have
/// theirs (`1`); a new volume's is made at its first use on this machine
/// ([`Volumes::check_backing`]), so `0` means "never made: all zeros".
fn add_backing_made_column(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    crate::home::Home::add_column_if_missing(
        conn,
        "volumes",
        "backing_made",
        "INTEGER NOT NULL DEFAULT 1",
    )
}

/// Smallest and largest volume (EBS allows 1 GiB..16 TiB; smaller volumes
/// are allowed here for tests and demonstrations).
pub const MIN_SIZE: u64 = 1 << 20;
pub const MAX_SIZE: u64 = 16 << 40;

/// A volume as stored.
#[derive(Debug, Clone)]
pub struct VolumeRecord {
    pub volume_id: VolumeId,
    pub account: String,
    pub region: String,
    pub size: u64,
    pub kms_key_arn: String,
    pub encrypted_data_key: Vec<u8>,
    pub created: i64,
    pub snapshot_id: Option<String>,
}

impl VolumeRecord {
    /// The encryption context of the volume's data key, as EBS uses it.
    pub fn encryption_context(&self) -> Value {
        json!({"aws:ebs:id": self.volume_id.as_str()})
    }
}

/// An attachment as recorded, and whether its daemon still runs.
#[derive(Debug, Clone)]
pub(super) struct Attachment {
    pub(super) device: PathBuf,
    pub(super) pid: i64,
    pub(super) attached: i64,
    pub(super) alive: bool,
}

pub(super) fn db_err(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("state database: {e}"))
}

pub(super) fn io_err(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("{what} {}: {e}", path.display()))
}

/// `1GiB`, `512MiB`, `10G`, `4096K`, or a plain number of GiB (as EBS).
pub fn parse_size(s: &str) -> ApiResult<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        ApiError::invalid_parameter(format!(
            "size '{s}' must be a number with an optional unit such as 512MiB or 10GiB"
        ))
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "g" | "gib" | "gb" => 1 << 30,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "t" | "tib" | "tb" => 1 << 40,
        "b" => 1,
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "size unit '{other}' is not one of B, KiB, MiB, GiB, TiB"
            )))
        }
    };
    let size = n
        .checked_mul(mult)
        .ok_or_else(|| ApiError::invalid_parameter(format!("size '{s}' is too large")))?;
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) || size % (1 << 20) != 0 {
        return Err(ApiError::invalid_parameter(format!(
            "size '{s}' must be a whole number of MiB between 1 MiB and 16 TiB"
        )));
    }
    Ok(size)
}

/// Finds the snapshot a restored volume hydrates from. The snapshot layer
/// provides it (`snapshot::ops::hydration_source`), so that volumes do not
/// depend on snapshots.
#[derive(Clone, Copy)]
pub struct SourceResolver {
    pub source: fn(&Session, &VolumeRecord) -> ApiResult<Arc<dyn ChunkSource>>,
    /// Called when a restored volume has nothing left to fetch (or is
    /// deleted): the snapshot layer retires what the restore needed.
    pub hydrated: fn(&Session, &VolumeRecord) -> ApiResult<()>,
}

use super::agent::{grow_online, io_health};
pub use super::agent::{ATTACH_CALLER_ENV, ATTACH_CHILD_ENV, MAX_PENDING_SNAPSHOTS};

pub struct Volumes<'a> {
    pub(super) s: &'a Session,
    pub(super) conn: crate::home::PooledConnection,
    pub(super) source: Option<SourceResolver>,
    pub(super) mount_options: Vec<String>,
}

impl<'a> Volumes<'a> {
    pub fn open(s: &'a Session) -> ApiResult<Volumes<'a>> {
        let conn = s
            .home
            .connect_pooled()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        s.home
            .ensure_schema(&conn, "volumes", SCHEMA)
            .map_err(db_err)?;
        s.home
            .ensure_schema_with(&conn, "volumes-mount-attached", add_attached_here_column)
            .map_err(db_err)?;
        s.home
            .ensure_schema_with(&conn, "volumes-backing-made", add_backing_made_column)
            .map_err(db_err)?;
        Ok(Volumes {
            s,
            conn,
            source: None,
            mount_options: Vec::new(),
        })
    }

    /// Are this home's volume records at a control plane on another
    /// machine (the `kms-endpoint` setting)?
    pub fn remote(&self) -> ApiResult<bool> {
        Ok(crate::config::get(&self.s.home, super::remote::ENDPOINT_SETTING)?.is_some())
    }

    /// The session these volumes are opened for.
    pub fn session(&self) -> &'a Session {
        self.s
    }

    /// Options that [`Volumes::mount`] passes to `mount -o` (`ro`,
    /// `discard`, `nouuid`, ...), checked by `boot::parse_mount_options`.
    pub fn with_mount_options(mut self, options: Vec<String>) -> Self {
        self.mount_options = options;
        self
    }

    /// Lets restored volumes hydrate from their snapshot through `f`.
    pub fn with_snapshot_source(mut self, f: SourceResolver) -> Self {
        self.source = Some(f);
        self
    }

    pub(super) fn dir(&self) -> PathBuf {
        self.s
            .home
            .dir()
            .join("volumes")
            .join(self.s.ctx.region.as_str())
    }

    pub fn backing_path(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.img"))
    }
    pub fn changes_path(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.changes"))
    }
    /// The attach daemon's control socket (snapshot cuts).
    pub fn control_path(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.sock"))
    }
    /// The hydration map of a volume restored from a snapshot.
    pub fn hydration_path(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.hydrate"))
    }
    pub(super) fn lock_path(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.lock"))
    }
    pub(super) fn default_device(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.dev"))
    }
    pub(super) fn log_path(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.log"))
    }

    pub(super) fn row(&self, v: &str) -> ApiResult<VolumeRecord> {
        let not_found = || {
            ApiError::new(
                "InvalidVolume.NotFound",
                format!("The volume '{v}' does not exist."),
            )
        };
        let id: VolumeId = v.parse().map_err(|_| {
            ApiError::new(
                "InvalidVolumeID.Malformed",
                format!("Invalid id: \"{v}\" (expecting \"vol-...\")"),
            )
        })?;
        let r = self
            .conn
            .query_row(
                "SELECT volume_id, account, region, size, kms_key_arn, encrypted_data_key, created, snapshot_id FROM volumes WHERE volume_id = ?1",
                [id.as_str()],
                |r| {
                    Ok(VolumeRecord {
                        volume_id: id.clone(),
                        account: r.get(1)?,
                        region: r.get(2)?,
                        size: r.get::<_, i64>(3)? as u64,
                        kms_key_arn: r.get(4)?,
                        encrypted_data_key: r.get(5)?,
                        created: r.get(6)?,
                        snapshot_id: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)?
            .ok_or_else(not_found)?;
        // Volumes are regional and private to their account.
        if r.account != self.s.ctx.caller.account.as_str() || r.region != self.s.ctx.region.as_str()
        {
            return Err(not_found());
        }
        Ok(r)
    }

    /// The record of volume `v` of the caller's account and region.
    pub fn get(&self, v: &str) -> ApiResult<VolumeRecord> {
        self.row(v)
    }

    /// The attachment row of `r`, live or left by a daemon that died.
    pub(super) fn attachment_row(&self, r: &VolumeRecord) -> ApiResult<Option<Attachment>> {
        let row: Option<(String, i64, i64)> = self
            .conn
            .query_row(
                "SELECT device, pid, attached FROM attachments WHERE volume_id = ?1",
                [r.volume_id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_err)?;
        Ok(row.map(|(device, pid, attached)| Attachment {
            device: PathBuf::from(device),
            pid,
            attached,
            // The lock says the truth: the kernel drops it when the daemon dies.
            alive: lock_held(&self.lock_path(&r.volume_id)),
        }))
    }

    /// The (device path, daemon pid, attach time) of the live attachment
    /// of `r` (its lock held by a live daemon), if attached.
    pub fn attachment(&self, r: &VolumeRecord) -> ApiResult<Option<(String, i64, i64)>> {
        Ok(self
            .attachment_row(r)?
            .filter(|a| a.alive)
            .map(|a| (a.device.to_string_lossy().into_owned(), a.pid, a.attached)))
    }

    /// The pid of the live attach daemon of `r`, if attached.
    pub fn attached_pid(&self, r: &VolumeRecord) -> ApiResult<Option<i64>> {
        Ok(self.attachment(r)?.map(|(_, pid, _)| pid))
    }

    /// The EC2 shape of a volume, plus its wrapped data key and context.
    pub fn to_json(&self, r: &VolumeRecord) -> ApiResult<Value> {
        let att = self.attachment(r)?;
        // On a host whose records are at a control plane, the instance is
        // the control plane's to name (`keyvol volume describe`).
        let instance = match self.remote()? {
            true => Value::Null,
            false => json!(host_instance_id(&r.account, &r.region)),
        };
        let attachments: Vec<Value> = att
            .iter()
            .map(|(dev, pid, t)| {
                json!({"VolumeId": r.volume_id, "Device": dev, "State": "attached", "AttachTime": to_rfc3339(*t),
                       "InstanceId": instance, "Pid": pid,
                       "DeleteOnTermination": false})
            })
            .collect();
        Ok(json!({
            "VolumeId": r.volume_id,
            "Size": r.size.div_ceil(1 << 30),
            "SizeInBytes": r.size,
            "AvailabilityZone": format!("{}a", r.region),
            "State": if att.is_some() { "in-use" } else { "available" },
            "CreateTime": to_rfc3339(r.created),
            "Encrypted": true,
            "KmsKeyId": r.kms_key_arn,
            "SnapshotId": r.snapshot_id.clone().unwrap_or_default(),
            "VolumeType": "gp3",
            "MultiAttachEnabled": false,
            "OwnerId": r.account,
            "Attachments": attachments,
            "EncryptedDataKey": b64_encode(&r.encrypted_data_key),
            "EncryptionContext": r.encryption_context(),
            "HydrationPendingChunks": pending_hydration(&self.hydration_path(&r.volume_id)),
        }))
    }

    /// CreateVolume: a new data key (GenerateDataKeyWithoutPlaintext, 64
    /// bytes, context {"aws:ebs:id": vol}) under `kms_key_id` (default
    /// alias/aws/ebs), through the caller's KMS authorization via EC2.
    /// The volume is made on this machine, so its backing file is too.
    pub fn create(&self, size: u64, kms_key_id: Option<&str>) -> ApiResult<VolumeRecord> {
        let vol = VolumeId::generate();
        // Before the data key is made: a size the host cannot hold changes nothing.
        fs::create_dir_all(self.dir()).map_err(|e| io_err("creating", &self.dir(), e))?;
        check_host_can_hold(&self.dir(), size)?;
        let (arn, wrapped) = self.new_data_key(&vol, kms_key_id)?;
        self.insert_with_backing(&vol, size, &arn, &wrapped, None)
    }

    /// Makes a data key for `vol` under a key of this region.
    pub fn new_data_key(
        &self,
        vol_or_snap: &dyn std::fmt::Display,
        kms_key_id: Option<&str>,
    ) -> ApiResult<(String, Vec<u8>)> {
        let kms = self.s.kms_client()?;
        let via = self.s.ctx.via_ec2();
        let key = kms_key_id.unwrap_or(crate::kms::EBS_ALIAS);
        let md = kms.describe_key(&via, key)?;
        let arn = md.arn.clone();
        if !md.is_symmetric_encryption() {
            return Err(ApiError::new("InvalidParameterValue", format!(
                "KMS key {arn} is not a symmetric encryption key: volumes need a SYMMETRIC_DEFAULT key with KeyUsage ENCRYPT_DECRYPT"
            )));
        }
        let context = [("aws:ebs:id".to_string(), vol_or_snap.to_string())].into();
        let wrapped = kms.generate_wrapped_data_key(&via, &arn, 64, &context)?;
        Ok((arn, wrapped.0))
    }

    /// Stores a new volume record (CreateVolume, restores). Its sparse
    /// backing file is made only when the volume is first used on this
    /// machine ([`Volumes::check_backing`]): a volume that a host on
    /// another machine holds leaves no file here. The size is checked
    /// against what the host filesystem can hold first.
    pub fn insert(
        &self,
        vol: &VolumeId,
        size: u64,
        arn: &str,
        wrapped: &[u8],
        snapshot: Option<&str>,
    ) -> ApiResult<VolumeRecord> {
        self.check_id_free(vol)?;
        fs::create_dir_all(self.dir()).map_err(|e| io_err("creating", &self.dir(), e))?;
        check_host_can_hold(&self.dir(), size)?;
        self.insert_row(vol, size, arn, wrapped, snapshot, false)?;
        self.row(vol.as_str())
    }

    /// [`Volumes::insert`] with the sparse backing file made now: a
    /// volume whose data is this machine's from the start (`keyvol volume
    /// create`, a volume host's own volumes). A failure leaves no file
    /// behind (the file is created exclusively, so only a file this call
    /// made is ever removed).
    pub fn insert_with_backing(
        &self,
        vol: &VolumeId,
        size: u64,
        arn: &str,
        wrapped: &[u8],
        snapshot: Option<&str>,
    ) -> ApiResult<VolumeRecord> {
        self.check_id_free(vol)?;
        fs::create_dir_all(self.dir()).map_err(|e| io_err("creating", &self.dir(), e))?;
        check_host_can_hold(&self.dir(), size)?;
        let path = self.backing_path(vol);
        let f = create_exclusive(&path, vol)?;
        let made = (|| {
            f.set_len(size).map_err(|e| size_err(&path, size, e))?;
            f.sync_all().map_err(|e| io_err("syncing", &path, e))?;
            self.insert_row(vol, size, arn, wrapped, snapshot, true)
        })();
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.row(vol.as_str())
    }

    fn insert_row(
        &self,
        vol: &VolumeId,
        size: u64,
        arn: &str,
        wrapped: &[u8],
        snapshot: Option<&str>,
        backing_made: bool,
    ) -> ApiResult<()> {
        let now = self.s.kms.clock().now();
        self.conn
            .execute(
                "INSERT INTO volumes (volume_id, account, region, size, kms_key_arn, encrypted_data_key, created, snapshot_id, backing_made) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![vol.as_str(), self.s.ctx.caller.account.as_str(), self.s.ctx.region.as_str(), size as i64, arn, wrapped, now, snapshot, backing_made],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Has the backing file of `r` been made on this machine? `false`
    /// for a volume never used here since it was created (its data is all
    /// zeros, or a volume host on another machine holds it).
    pub fn backing_made(&self, r: &VolumeRecord) -> ApiResult<bool> {
        self.conn
            .query_row(
                "SELECT backing_made FROM volumes WHERE volume_id = ?1",
                [r.volume_id.as_str()],
                |row| row.get(0),
            )
            .map_err(db_err)
    }

    /// Makes the sparse backing file of `r`, never made yet, and records
    /// that it is made. A file already there (a crash after it was made
    /// and before the record said so) is kept when it is the volume's
    /// size, and refused otherwise.
    fn make_backing(&self, r: &VolumeRecord) -> ApiResult<()> {
        fs::create_dir_all(self.dir()).map_err(|e| io_err("creating", &self.dir(), e))?;
        let path = self.backing_path(&r.volume_id);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                let made = f
                    .set_len(r.size)
                    .map_err(|e| size_err(&path, r.size, e))
                    .and_then(|()| f.sync_all().map_err(|e| io_err("syncing", &path, e)));
                if let Err(e) = made {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let len = fs::metadata(&path)
                    .map_err(|e| io_err("inspecting", &path, e))?
                    .len();
                if len != r.size {
                    return Err(exists_err(&path, &r.volume_id));
                }
            }
            Err(e) => return Err(io_err("creating", &path, e)),
        }
        self.conn
            .execute(
                "UPDATE volumes SET backing_made = 1 WHERE volume_id = ?1",
                [r.volume_id.as_str()],
            )
            .map_err(db_err)?;
        tracing::info!(volume = %r.volume_id, "made the backing file at the volume's first use on this machine");
        Ok(())
    }

    /// Volume ids are unique in the home, across accounts and regions: a
    /// data key is bound to its volume id, and files are named by it.
    fn check_id_free(&self, vol: &VolumeId) -> ApiResult<()> {
        let taken: Option<String> = self
            .conn
            .query_row(
                "SELECT account FROM volumes WHERE volume_id = ?1",
                [vol.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if taken.is_some() {
            return Err(ApiError::new(
                "InvalidVolume.Duplicate",
                format!("Volume {vol} already exists in this home; nothing was changed"),
            ));
        }
        Ok(())
    }

    /// Registers a volume made on another host sharing this KMS: its
    /// `describe` output (id, size, key, wrapped data key) and its backing
    /// file, hard-linked or copied sparsely into this home. The data key
    /// stays bound to the volume id, so the id is kept; an id already in
    /// this home (any account) is refused. The destination is created
    /// exclusively; a file this call did not create is never touched.
    pub fn import(&self, described: &Value, backing: &Path) -> ApiResult<VolumeRecord> {
        let field = |k: &str| {
            described[k].as_str().map(str::to_string).ok_or_else(|| {
                ApiError::invalid_parameter(format!("the volume description has no {k}: give the output of `keyvol volume describe VOL`"))
            })
        };
        let vol: VolumeId = field("VolumeId")?
            .parse()
            .map_err(|e: crate::ids::IdError| ApiError::invalid_parameter(e.to_string()))?;
        let arn = field("KmsKeyId")?;
        let wrapped = crate::kms::api::b64_decode(&field("EncryptedDataKey")?)
            .ok_or_else(|| ApiError::invalid_parameter("EncryptedDataKey is not base64"))?;
        let size = described["SizeInBytes"].as_u64().ok_or_else(|| {
            ApiError::invalid_parameter("the volume description has no SizeInBytes")
        })?;
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) || size % (1 << 20) != 0 {
            return Err(ApiError::invalid_parameter(format!(
                "SizeInBytes {size} is not a whole number of MiB between 1 MiB and 16 TiB"
            )));
        }
        let meta = fs::metadata(backing).map_err(|e| io_err("reading", backing, e))?;
        if !meta.is_file() || meta.len() != size {
            return Err(ApiError::invalid_parameter(format!(
                "backing file {} has {} bytes but the volume has {size}: give the volume's own <vol>.img",
                backing.display(),
                meta.len()
            )));
        }
        // A restored volume still fetching chunks from its snapshot has no
        // complete data in its backing file.
        let snapshot = described["SnapshotId"].as_str().unwrap_or_default();
        let pending = described["HydrationPendingChunks"].as_u64();
        let sibling_map = backing.with_extension("hydrate");
        let map_pending = if sibling_map.exists() {
            HydrationMap::open(&sibling_map)?.pending_chunks().len() as u64
        } else {
            0
        };
        if !snapshot.is_empty() && (pending != Some(0) || map_pending > 0) {
            return Err(ApiError::new(
                "IncorrectState",
                format!(
                    "Volume {vol} was restored from {snapshot} and is not fully hydrated ({} chunks still in the snapshot): attach it on its host until hydration finishes (or restore with --hydrate), then describe and import it again",
                    pending.unwrap_or(0).max(map_pending)
                ),
            ));
        }
        self.check_id_free(&vol)?;
        fs::create_dir_all(self.dir()).map_err(|e| io_err("creating", &self.dir(), e))?;
        check_host_can_hold(&self.dir(), size)?;
        let dest = self.backing_path(&vol);
        match fs::hard_link(backing, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(exists_err(&dest, &vol));
            }
            Err(_) => {
                // Another filesystem: copy, skipping zero blocks (holes).
                let out = create_exclusive(&dest, &vol)?;
                if let Err(e) = copy_sparse(backing, &out, size) {
                    let _ = fs::remove_file(&dest);
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.insert_row(&vol, size, &arn, &wrapped, None, true) {
            let _ = fs::remove_file(&dest);
            return Err(e);
        }
        self.row(vol.as_str())
    }

    pub fn list(&self) -> ApiResult<Vec<VolumeRecord>> {
        let mut st = self
            .conn
            .prepare("SELECT volume_id FROM volumes WHERE account = ?1 AND region = ?2 ORDER BY created, volume_id")
            .map_err(db_err)?;
        let ids = st
            .query_map(
                params![
                    self.s.ctx.caller.account.as_str(),
                    self.s.ctx.region.as_str()
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        ids.iter().map(|v| self.row(v)).collect()
    }

    pub fn delete(&self, v: &str) -> ApiResult<()> {
        let r = self.row(v)?;
        if self.attachment(&r)?.is_some() {
            return Err(ApiError::new(
                "VolumeInUse",
                format!(
                    "Volume {v} is currently attached: detach it first (keyvol volume detach {v})"
                ),
            ));
        }
        self.recover(&r)?;
        self.hydration_done(&r);
        for p in [
            self.backing_path(&r.volume_id),
            self.changes_path(&r.volume_id),
            self.hydration_path(&r.volume_id),
            self.control_path(&r.volume_id),
            self.default_device(&r.volume_id),
            self.lock_path(&r.volume_id),
            self.log_path(&r.volume_id),
            self.dir().join(format!("{}.mount-lock", r.volume_id)),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &p, e)),
            }
        }
        self.conn
            .execute("DELETE FROM volumes WHERE volume_id = ?1", [v])
            .map_err(db_err)?;
        Ok(())
    }

    /// Records the grown size of a volume whose data is on a volume host on
    /// another machine (that host grows its device or backing file).
    pub fn record_size(&self, v: &str, size: u64) -> ApiResult<VolumeRecord> {
        let r = self.row(v)?;
        if size < r.size {
            return Err(ApiError::invalid_parameter(format!(
                "New size {size} is smaller than the volume's {} bytes: volumes only grow",
                r.size
            )));
        }
        self.conn
            .execute(
                "UPDATE volumes SET size = ?2 WHERE volume_id = ?1",
                params![v, size as i64],
            )
            .map_err(db_err)?;
        self.row(v)
    }

    /// ModifyVolume: grow only, attached or not (an attached volume grows
    /// online). The filesystem is the user's to grow (resize2fs), as on EBS.
    pub fn modify(&self, v: &str, size: u64) -> ApiResult<VolumeRecord> {
        let r = self.row(v)?;
        if size < r.size {
            return Err(ApiError::invalid_parameter(format!(
                "New size {size} is smaller than the volume's {} bytes: volumes only grow",
                r.size
            )));
        }
        if let Some((device, _, _)) = self.attachment(&r)? {
            // Attached (and perhaps mounted): the daemon grows the device
            // online, then each loop device over it learns the new
            // capacity. The filesystem is the user's to grow (resize2fs).
            grow_online(&self.control_path(&r.volume_id), size)?;
            for l in mount::stack_of(&canonical_device(Path::new(&device)))
                .unwrap_or_default()
                .loops
            {
                mount::refresh_loop_capacity(&l.name)?;
            }
            return self.record_size(v, size);
        }
        if !self.backing_made(&r)? {
            // Made at its first use, at the new size.
            return self.record_size(v, size);
        }
        let path = self.backing_path(&r.volume_id);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io_err("opening", &path, e))?;
        f.set_len(size).map_err(|e| io_err("growing", &path, e))?;
        f.sync_all().map_err(|e| io_err("syncing", &path, e))?;
        self.record_size(v, size)
    }

    /// Holds `<vol>.mount-lock` (flock, waiting) until dropped.
    pub(super) fn serialize_mounts(&self, r: &VolumeRecord) -> ApiResult<fs::File> {
        let p = self.dir().join(format!("{}.mount-lock", r.volume_id));
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .map_err(|e| io_err("opening", &p, e))?;
        crate::sys::lock_exclusive(&f).map_err(|e| io_err("locking", &p, e))?;
        Ok(f)
    }

    /// The backing file exists and holds the whole volume; every use of
    /// the data on this machine (attach, mount, a snapshot of a detached
    /// volume) asks this first. A volume whose file was never made (see
    /// [`Volumes::insert`]) gets it now, sparse: all zeros, as the volume
    /// has always read. A file that was made and is gone is an error:
    /// keyvol never puts an empty volume in place of lost data.
    pub(super) fn check_backing(&self, r: &VolumeRecord) -> ApiResult<()> {
        if !self.backing_made(r)? {
            self.make_backing(r)?;
        }
        let p = self.backing_path(&r.volume_id);
        match fs::metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
                "InvalidVolume.DataMissing",
                format!(
                    "The data of volume {} is gone: its backing file {} does not exist. Restore the file from a backup, or create a volume from a snapshot (keyvol-snap restore); keyvol never recreates it empty",
                    r.volume_id,
                    p.display()
                ),
            )),
            Err(e) => Err(io_err("inspecting", &p, e)),
            Ok(m) if !m.is_file() || m.len() < r.size => Err(ApiError::new(
                "InvalidVolume.Truncated",
                format!(
                    "The data of volume {} is truncated: its backing file {} has {} bytes but the volume has {}. Restore the file from a backup, or create a volume from a snapshot (keyvol-snap restore)",
                    r.volume_id,
                    p.display(),
                    m.len(),
                    r.size
                ),
            )),
            Ok(_) => Ok(()),
        }
    }

    /// Decrypts the volume's data key through the KMS (Decrypt via EC2,
    /// context {"aws:ebs:id": vol}). A deleted key means the volume is
    /// crypto-shredded, and the error says so.
    ///
    /// On a host whose records are at a control plane on another machine
    /// (`kms-endpoint`), the key comes from the control plane instead
    /// ([`super::remote::release_data_key`]), for a volume attached here.
    pub fn data_key(&self, r: &VolumeRecord) -> ApiResult<VolumeDataKey> {
        if self.remote()? {
            return super::remote::release_data_key(self.s, r);
        }
        unwrap_data_key(
            self.s,
            &r.kms_key_arn,
            &r.encrypted_data_key,
            r.volume_id.as_str(),
        )
    }

    /// Attachments of this home's volumes, live or dead (a daemon that
    /// died: what it left, and the one command that clears it), with their
    /// loop devices and mounts.
    pub fn status(&self) -> ApiResult<Value> {
        let mut out = Vec::new();
        for r in self.list()? {
            let Some(a) = self.attachment_row(&r)? else {
                continue;
            };
            let stack = mount::stack_of(&canonical_device(&a.device)).unwrap_or_default();
            let ms: Vec<Value> = stack
                .mounts
                .iter()
                .map(
                    |m| json!({"MountPoint": m.target, "Source": m.source, "FileSystem": m.fstype}),
                )
                .collect();
            let mut entry = json!({
                "VolumeId": r.volume_id, "Device": a.device, "Pid": a.pid, "AttachTime": to_rfc3339(a.attached),
                "State": if a.alive { "attached" } else { "dead" },
                "LoopDevices": stack.loops.iter().map(|l| &l.name).collect::<Vec<_>>(), "Mounts": ms,
            });
            if a.alive {
                // A daemon that does not answer in time reports nothing.
                if let Some((n, last)) = io_health(&self.control_path(&r.volume_id)) {
                    entry["IoErrors"] = json!(n);
                    if n > 0 {
                        entry["LastIoError"] = json!(to_rfc3339(last as i64));
                    }
                }
            }
            if !a.alive {
                entry["Recovery"] = json!(format!(
                    "the attach daemon died: `keyvol volume mount {} DIR` mounts it again (or `keyvol volume detach {}` clears it)",
                    r.volume_id, r.volume_id
                ));
            }
            out.push(entry);
        }
        Ok(json!({"Attachments": out}))
    }
}

/// The instance id of this machine as the volume host of `account` in
/// `region` (EC2's `i-` and 17 hex digits, stable): where the attach
/// daemons of this home run, whether `keyvol volume attach` or the
/// server's AttachVolume started them.
pub fn host_instance_id(account: &str, region: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("keyvol volume host\0{account}\0{region}"));
    format!("i-{}", &hex::encode(d)[..17])
}

/// Decrypts a wrapped volume (or snapshot) data key; 64 bytes expected.
pub fn unwrap_data_key(
    s: &Session,
    key_arn: &str,
    wrapped: &[u8],
    context_id: &str,
) -> ApiResult<VolumeDataKey> {
    let kms = s.kms_client()?;
    let via = s.ctx.via_ec2();
    let context = [("aws:ebs:id".to_string(), context_id.to_string())].into();
    let wrapped = crate::kms::client::WrappedKey(wrapped.to_vec());
    match kms.decrypt_data_key(&via, key_arn, &wrapped, &context) {
        Ok(k) => Ok(k.volume_key(context_id)?),
        Err(e) => Err(explain_key_failure(s, key_arn, context_id, e)),
    }
}

fn explain_key_failure(s: &Session, key_arn: &str, what: &str, e: KmsError) -> ApiError {
    let gone = matches!(e.code, ErrorCode::NotFoundException)
        || (e.code == ErrorCode::InvalidCiphertextException
            && s.kms.key_deleted_at(key_arn).ok().flatten().is_some());
    if gone {
        let when = s
            .kms
            .key_deleted_at(key_arn)
            .ok()
            .flatten()
            .map(|t| format!(" on {}", to_rfc3339(t)))
            .unwrap_or_default();
        return ApiError::new(
            &e.code.to_string(),
            format!("{what} can never be read again: its KMS key {key_arn} was deleted{when}, so its data key is gone (crypto-shredded)"),
        );
    }
    ApiError::from(e)
}

pub(super) fn absolute(p: &Path) -> ApiResult<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .map_err(|e| ApiError::internal(format!("current directory: {e}")))
    }
}

/// The path under which the kernel names a device file (in /proc/mounts
/// and losetup): its directory resolved, its own name kept (a dead FUSE
/// mount on the file itself cannot be resolved).
pub(super) fn canonical_device(p: &Path) -> PathBuf {
    match (
        p.parent().and_then(|d| d.canonicalize().ok()),
        p.file_name(),
    ) {
        (Some(d), Some(n)) => d.join(n),
        _ => p.to_path_buf(),
    }
}

/// A volume-layer error as an API error: a busy device or filesystem is
/// `VolumeInUse`.
pub(super) fn vol_err(e: VolumeError) -> ApiError {
    match e {
        VolumeError::Busy { .. } => ApiError::new("VolumeInUse", e.to_string()),
        e => ApiError::from(e),
    }
}

/// Refuses a size the filesystem holding `dir` cannot give one file (ext4
/// with 4 KiB blocks: just under 16 TiB), by sizing an unnamed temporary
/// file there (O_TMPFILE): nothing is ever created under a name.
fn check_host_can_hold(dir: &Path, size: u64) -> ApiResult<()> {
    let probe = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir);
    let f = match probe {
        Ok(f) => f,
        // A filesystem without O_TMPFILE: the create itself checks and cleans up.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)
            ) =>
        {
            return Ok(())
        }
        Err(e) => return Err(io_err("probing the volume directory", dir, e)),
    };
    f.set_len(size).map_err(|e| size_err(dir, size, e))
}

fn size_err(path: &Path, size: u64, e: std::io::Error) -> ApiError {
    if matches!(e.raw_os_error(), Some(libc::EFBIG) | Some(libc::EINVAL)) {
        ApiError::invalid_parameter(format!(
            "the host filesystem of {} cannot hold a volume of {size} bytes ({e}): choose a smaller --size, or put the home on a filesystem with larger files (xfs)",
            path.display()
        ))
    } else {
        io_err("sizing", path, e)
    }
}

/// Creates `path` exclusively (O_EXCL, mode 0600): an existing file is
/// refused, never reused.
fn create_exclusive(path: &Path, vol: &VolumeId) -> ApiResult<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                exists_err(path, vol)
            } else {
                io_err("creating", path, e)
            }
        })
}

fn exists_err(path: &Path, vol: &VolumeId) -> ApiError {
    ApiError::new(
        "InvalidVolume.Duplicate",
        format!(
            "{} already exists (a file of volume {vol} this home does not record): keyvol never overwrites it; move it away if it is not needed",
            path.display()
        ),
    )
}

/// Copies `size` bytes of `from` into `to`, leaving all-zero blocks as
/// holes (an all-zero ciphertext sector reads as zeros either way).
fn copy_sparse(from: &Path, to: &fs::File, size: u64) -> ApiResult<()> {
    use std::os::unix::fs::FileExt;
    let src = fs::File::open(from).map_err(|e| io_err("opening", from, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], off)
            .map_err(|e| io_err("reading", from, e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            to.write_all_at(&buf[..n], off)
                .map_err(|e| ApiError::internal(format!("copying into the home: {e}")))?;
        }
        off += n as u64;
    }
    to.set_len(size)
        .and_then(|()| to.sync_all())
        .map_err(|e| ApiError::internal(format!("copying into the home: {e}")))
}

/// Chunks a hydration map still marks as to fetch (0 without a map).
pub(super) fn pending_hydration(map: &Path) -> u64 {
    fs::read(map)
        .map(|b| b.iter().filter(|&&x| x == 1).count() as u64)
        .unwrap_or(0)
}

/// Takes the attachment lock (flock, exclusive, non-blocking).
pub(super) fn take_lock(path: &Path) -> Option<fs::File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .ok()?;
    crate::sys::try_lock_exclusive(&f)
        .ok()
        .filter(|&taken| taken)
        .map(|_| f)
}

pub(super) fn lock_held(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    match take_lock(path) {
        Some(f) => {
            drop(f);
            false
        }
        None => true,
    }
}

/// The sector size of volumes (exported for docs and tests).
pub const VOLUME_SECTOR_SIZE: usize = SECTOR_SIZE;
