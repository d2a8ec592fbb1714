//! Volume lifecycle: create, describe, delete, modify, attach (the daemon
//! that serves the decrypted device through FUSE), detach, mount, unmount,
//! status. Volumes are regional and belong to an account, like EBS.
//!
//! Files of a volume, under `<home>/volumes/<region>/`: `<vol>.img` (the
//! sparse ciphertext), `<vol>.changes` (the change log), `<vol>.lock` (held
//! by the attach daemon for as long as it runs: one attachment at a time,
//! released by the kernel when the daemon dies), `<vol>.dev` (the default
//! device file a `mount` serves through), `<vol>.log` (daemon log) and
//! `<vol>.mount-lock` (held while a mount or unmount of the volume runs).

use std::fs;
use std::io::{BufRead, Write};
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
use crate::volume::{
    mount, ChangeLog, EncryptedDevice, SectorCipher, VolumeError, CHUNK_SIZE, SECTOR_SIZE,
};

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

/// Set by `attach` for the daemon process it starts, whose command the
/// control plane already authorized and audited.
pub const ATTACH_CHILD_ENV: &str = "KEYVOL_ATTACH_CHILD";

/// Set (with [`ATTACH_CHILD_ENV`]) for an attach daemon started on behalf
/// of a caller of the server, who has no profile in the home: the caller
/// ([`RequestContext::to_handoff`](crate::request::RequestContext::to_handoff))
/// that the daemon acts as for its KMS calls.
pub const ATTACH_CALLER_ENV: &str = "KEYVOL_ATTACH_CALLER";

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
struct Attachment {
    device: PathBuf,
    pid: i64,
    attached: i64,
    alive: bool,
}

fn db_err(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("state database: {e}"))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ApiError {
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

pub struct Volumes<'a> {
    s: &'a Session,
    conn: crate::home::PooledConnection,
    source: Option<SourceResolver>,
    mount_options: Vec<String>,
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
        Ok(Volumes {
            s,
            conn,
            source: None,
            mount_options: Vec::new(),
        })
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

    fn dir(&self) -> PathBuf {
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
    fn lock_path(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.lock"))
    }
    fn default_device(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.dev"))
    }
    fn log_path(&self, v: &VolumeId) -> PathBuf {
        self.dir().join(format!("{v}.log"))
    }

    fn row(&self, v: &str) -> ApiResult<VolumeRecord> {
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
    fn attachment_row(&self, r: &VolumeRecord) -> ApiResult<Option<Attachment>> {
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
        let attachments: Vec<Value> = att
            .iter()
            .map(|(dev, pid, t)| {
                json!({"VolumeId": r.volume_id, "Device": dev, "State": "attached", "AttachTime": to_rfc3339(*t),
                       "InstanceId": host_instance_id(&r.account, &r.region), "Pid": pid,
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
    pub fn create(&self, size: u64, kms_key_id: Option<&str>) -> ApiResult<VolumeRecord> {
        let vol = VolumeId::generate();
        // Before the data key is made: a size the host cannot hold changes nothing.
        fs::create_dir_all(self.dir()).map_err(|e| io_err("creating", &self.dir(), e))?;
        check_host_can_hold(&self.dir(), size)?;
        let (arn, wrapped) = self.new_data_key(&vol, kms_key_id)?;
        self.insert(&vol, size, &arn, &wrapped, None)
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

    /// Stores a new volume record with its sparse backing file. The size
    /// is checked against what the host filesystem can hold first; a
    /// failure leaves no file behind (the file is created exclusively, so
    /// only a file this call made is ever removed).
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
        let path = self.backing_path(vol);
        let f = create_exclusive(&path, vol)?;
        let made = (|| {
            f.set_len(size).map_err(|e| size_err(&path, size, e))?;
            f.sync_all().map_err(|e| io_err("syncing", &path, e))?;
            self.insert_row(vol, size, arn, wrapped, snapshot)
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
    ) -> ApiResult<()> {
        let now = self.s.kms.clock().now();
        self.conn
            .execute(
                "INSERT INTO volumes (volume_id, account, region, size, kms_key_arn, encrypted_data_key, created, snapshot_id) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                params![vol.as_str(), self.s.ctx.caller.account.as_str(), self.s.ctx.region.as_str(), size as i64, arn, wrapped, now, snapshot],
            )
            .map_err(db_err)?;
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
        if let Err(e) = self.insert_row(&vol, size, &arn, &wrapped, None) {
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
            self.conn
                .execute(
                    "UPDATE volumes SET size = ?2 WHERE volume_id = ?1",
                    params![v, size as i64],
                )
                .map_err(db_err)?;
            return self.row(v);
        }
        let path = self.backing_path(&r.volume_id);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io_err("opening", &path, e))?;
        f.set_len(size).map_err(|e| io_err("growing", &path, e))?;
        f.sync_all().map_err(|e| io_err("syncing", &path, e))?;
        self.conn
            .execute(
                "UPDATE volumes SET size = ?2 WHERE volume_id = ?1",
                params![v, size as i64],
            )
            .map_err(db_err)?;
        self.row(v)
    }

    /// Holds `<vol>.mount-lock` (flock, waiting) until dropped.
    fn serialize_mounts(&self, r: &VolumeRecord) -> ApiResult<fs::File> {
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

    /// The backing file exists and holds the whole volume.
    fn check_backing(&self, r: &VolumeRecord) -> ApiResult<()> {
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
    pub fn data_key(&self, r: &VolumeRecord) -> ApiResult<VolumeDataKey> {
        unwrap_data_key(
            self.s,
            &r.kms_key_arn,
            &r.encrypted_data_key,
            r.volume_id.as_str(),
        )
    }

    /// Runs the attach daemon in this process until SIGTERM/SIGINT/SIGHUP
    /// or a `STOP` on its control socket: holds the lock, serves the device
    /// at `device`, and prints one JSON line to `ready` once the device is
    /// usable. A stop while the device is busy (a loop device or a process
    /// holds it open) is refused and the daemon goes on serving.
    pub fn run_daemon(&self, v: &str, device: &Path, ready: &mut dyn Write) -> ApiResult<()> {
        crate::sys::return_large_frees_to_the_os();
        let hardening = crate::sys::harden_and_report("the attach daemon");
        tracing::info!(
            volume = v,
            pid = std::process::id(),
            dumpable = hardening.dumpable,
            memory_locked = hardening.memory == crate::sys::MemoryLock::All,
            "attach daemon starting (keyvol {})",
            env!("CARGO_PKG_VERSION")
        );
        let r = self.row(v)?;
        let lock = take_lock(&self.lock_path(&r.volume_id)).ok_or_else(|| {
            ApiError::new(
                "VolumeInUse",
                format!(
                    "Volume {v} is already attached (one attachment at a time); detach it first"
                ),
            )
        })?;
        let device_arc = Arc::new(self.open_device(&r)?);
        if hardening.memory != crate::sys::MemoryLock::All {
            // At least the pages of the key schedule, within the limit.
            let (addr, len) = device_arc.key_memory();
            match crate::sys::lock_region(addr, len) {
                Ok(()) => tracing::info!("locked the pages of the volume key in RAM ({len} bytes)"),
                Err(e) => {
                    tracing::warn!("the volume key's pages are not locked in RAM: mlock: {e}")
                }
            }
        }
        if !device.exists() {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(device)
                .map_err(|e| io_err("creating device file", device, e))?;
        }
        // Block the stop signals before FUSE starts its threads, so only
        // this thread receives them (via sigwait).
        let signals = crate::sys::StopSignals::new();
        signals
            .block()
            .map_err(|e| ApiError::internal(format!("blocking stop signals: {e}")))?;
        // Only a dead daemon's mount can be here: we hold the lock.
        if let Err(e) = mount::clear_dead_fuse(device) {
            tracing::warn!("clearing a dead FUSE mount at {}: {e}", device.display());
        }
        let handle = crate::fuse::serve(
            device_arc.clone(),
            device,
            &crate::fuse::FuseOptions::default(),
        )?;
        let device_path = handle.device_path().to_path_buf();
        let control = self.control_path(&r.volume_id);
        let stop: StopSlot = Arc::new(std::sync::Mutex::new(None));
        // Everything after the mount undoes the mount when it fails, so a
        // failed attach never leaves a FUSE mount without its daemon.
        let started = (|| -> ApiResult<()> {
            let _ = fs::remove_file(&control);
            let listener = std::os::unix::net::UnixListener::bind(&control)
                .map_err(|e| io_err("binding control socket", &control, e))?;
            let dev = device_arc.clone();
            let slot = stop.clone();
            let sizes = handle.size_notifier();
            std::thread::spawn(move || serve_control(listener, dev, slot, sizes));
            // A restored volume fetches the rest of its snapshot in the
            // background while attached (reads of missing chunks go first).
            let pending = device_arc.hydration_pending().len();
            if pending > 0 {
                let dev = device_arc.clone();
                let vol = v.to_string();
                std::thread::spawn(move || hydrate_in_background(&dev, &vol, pending));
            }
            let now = self.s.kms.clock().now();
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO attachments (volume_id, device, pid, attached) VALUES (?1, ?2, ?3, ?4)",
                    params![v, device_path.to_string_lossy(), std::process::id() as i64, now],
                )
                .map_err(db_err)?;
            Ok(())
        })();
        if let Err(e) = started {
            tracing::error!("attach of {v} failed after the FUSE mount: {e}");
            if let Err(ue) = handle.unmount() {
                tracing::error!("undoing the FUSE mount at {}: {ue}", device_path.display());
            }
            let _ = fs::remove_file(&control);
            let _ = device_arc.close();
            return Err(e);
        }
        tracing::info!(
            volume = v,
            device = %device_path.display(),
            size = r.size,
            "attached: serving the decrypted device"
        );
        let _ = writeln!(
            ready,
            "{}",
            json!({"VolumeId": v, "Device": device_path, "State": "attached", "Pid": std::process::id(),
                   "Dumpable": hardening.dumpable, "MemoryLocked": hardening.memory == crate::sys::MemoryLock::All})
        );
        let _ = ready.flush();
        loop {
            let sig = signals.wait();
            let waiter = stop.lock().map(|mut s| s.take()).unwrap_or(None);
            match handle.try_unmount() {
                Ok(()) => {
                    tracing::info!(volume = v, signal = sig, "stopping: device unmounted");
                    if let Some(w) = waiter {
                        let _ = w.send(Ok(()));
                    }
                    break;
                }
                Err(e) => {
                    // Nothing changes: the device keeps serving whoever holds it.
                    tracing::warn!(volume = v, signal = sig, "refusing to stop: {e}");
                    if let Some(w) = waiter {
                        let _ = w.send(Err(e.to_string()));
                    }
                }
            }
        }
        let res = handle.finish();
        let _ = fs::remove_file(&control);
        let fully_hydrated = device_arc.hydration_pending().is_empty();
        let closed = device_arc.close();
        if fully_hydrated && closed.is_ok() && r.snapshot_id.is_some() {
            self.hydration_done(&r);
        }
        // Best effort: a full disk must not keep the daemon from stopping; a
        // row left behind reads as a dead attachment and is cleared later.
        if let Err(e) = self
            .conn
            .execute("DELETE FROM attachments WHERE volume_id = ?1", [v])
        {
            tracing::warn!("removing the attachment record of {v}: {e} (cleared on next use)");
        }
        match (&res, &closed) {
            (Ok(()), Ok(())) => tracing::info!(volume = v, "detached"),
            _ => tracing::error!(volume = v, "detached with errors: {res:?} {closed:?}"),
        }
        drop(lock);
        res?;
        closed?;
        Ok(())
    }

    /// Opens the decrypted device of volume `r` (its data key through the
    /// KMS), with lazy hydration from its snapshot while any chunk is still
    /// to be fetched. A missing or short backing file is an error: keyvol
    /// never puts an empty volume in place of lost data.
    pub fn open_device(&self, r: &VolumeRecord) -> ApiResult<EncryptedDevice> {
        self.check_backing(r)?;
        let key = self.data_key(r)?;
        let cipher = SectorCipher::new(&key)?;
        drop(key);
        let changes = ChangeLog::open(
            &self.changes_path(&r.volume_id),
            r.size.div_ceil(CHUNK_SIZE),
        )?;
        let mut device =
            EncryptedDevice::open(&self.backing_path(&r.volume_id), r.size, cipher, changes)?;
        let map_path = self.hydration_path(&r.volume_id);
        if map_path.exists() {
            let map = HydrationMap::open(&map_path)?;
            if !map.pending_chunks().is_empty() {
                let resolve = self.source.ok_or_else(|| {
                    ApiError::internal(format!(
                        "volume {} still hydrates from its snapshot, but no snapshot source was given",
                        r.volume_id
                    ))
                })?;
                let source = (resolve.source)(self.s, r)?;
                device = device.with_hydration(source, map);
            } else {
                self.hydration_done(r);
            }
        }
        Ok(device)
    }

    /// Tells the snapshot layer that `r` needs its snapshot no more (best
    /// effort: a failure is logged and retried at the next attach).
    fn hydration_done(&self, r: &VolumeRecord) {
        if let Some(h) = self.source {
            if let Err(e) = (h.hydrated)(self.s, r) {
                tracing::warn!(volume = %r.volume_id, "releasing the restore's snapshot access: {e}");
            }
        }
    }

    /// Takes the attachment lock of a detached volume (so it cannot be
    /// attached meanwhile); `None` when the volume is attached.
    pub fn lock_detached(&self, r: &VolumeRecord) -> Option<fs::File> {
        take_lock(&self.lock_path(&r.volume_id))
    }

    /// Clears what a dead attach daemon of `r` left behind: the filesystems
    /// mounted over its device (through loop devices), those loop devices,
    /// its stale FUSE mount ("Transport endpoint is not connected"), and
    /// the attachment and mount records. Only the stacks on this volume's
    /// device files are touched, and only while this call holds the
    /// volume's lock (so no live daemon serves them). `None` when a live
    /// daemon holds the lock or nothing was left.
    fn recover(&self, r: &VolumeRecord) -> ApiResult<Option<Vec<String>>> {
        let Some(lock) = take_lock(&self.lock_path(&r.volume_id)) else {
            return Ok(None);
        };
        let row = self.attachment_row(r)?;
        let mut devices = vec![canonical_device(&self.default_device(&r.volume_id))];
        if let Some(a) = &row {
            let d = canonical_device(&a.device);
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
        let mut cleared = Vec::new();
        for d in &devices {
            cleared.extend(mount::release_stack(d, true).map_err(vol_err)?);
            if mount::clear_dead_fuse(d).map_err(vol_err)? {
                cleared.push(format!("unmounted the dead FUSE device {}", d.display()));
            }
        }
        if row.is_some() {
            cleared.push("removed the attachment record".to_string());
        }
        // Records only: best effort (a full disk must not block recovery).
        for sql in [
            "DELETE FROM attachments WHERE volume_id = ?1",
            "DELETE FROM mounts WHERE volume_id = ?1",
        ] {
            if let Err(e) = self.conn.execute(sql, [r.volume_id.as_str()]) {
                tracing::warn!("{sql}: {e} (cleared on next use)");
            }
        }
        drop(lock);
        if cleared.is_empty() {
            return Ok(None);
        }
        tracing::info!(volume = %r.volume_id, "cleared what a dead attach daemon left: {}", cleared.join("; "));
        Ok(Some(cleared))
    }

    /// Attaches in the background: starts the daemon (this binary with
    /// `--foreground`) and returns once the device is served. What a dead
    /// daemon of this volume left is cleared first.
    pub fn attach(&self, v: &str, device: Option<&Path>) -> ApiResult<Value> {
        let r = self.row(v)?;
        if self.attachment(&r)?.is_some() {
            return Err(ApiError::new(
                "VolumeInUse",
                format!("Volume {v} is already attached; detach it first"),
            ));
        }
        self.check_backing(&r)?;
        let recovered = self.recover(&r)?;
        // Check the key before forking, for a clear error in this process.
        drop(self.data_key(&r)?);
        let device = device
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.default_device(&r.volume_id));
        let device = canonical_device(&absolute(&device)?);
        let exe = std::env::current_exe()
            .map_err(|e| ApiError::internal(format!("locating the keyvol binary: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            "--home",
            &self.s.home.dir().to_string_lossy(),
            "--region",
            self.s.ctx.region.as_str(),
        ]);
        if self.s.profile.is_empty() {
            // A caller of the server: the daemon acts as that caller.
            cmd.env(ATTACH_CALLER_ENV, self.s.ctx.to_handoff());
        } else {
            cmd.args(["--profile", &self.s.profile]);
        }
        cmd.args([
            "volume",
            "attach",
            v,
            "--device",
            &device.to_string_lossy(),
            "--foreground",
        ]);
        if tracing::enabled!(tracing::Level::DEBUG) {
            cmd.arg("--debug");
        }
        cmd.env(ATTACH_CHILD_ENV, "1");
        crate::background::start_and_wait_ready(
            cmd,
            &self.log_path(&r.volume_id),
            &format!("the attach daemon of {v}"),
        )?;
        let mut out = self.to_json(&self.row(v)?)?;
        if let Some(c) = recovered {
            out["Recovered"] = json!(c);
        }
        Ok(out)
    }

    /// Detaches: refuses while a loop device or mount uses the device,
    /// unless `force` (then undoes them first, refusing when one is busy);
    /// asks the daemon to stop, which it refuses while the device file is
    /// busy; waits for its lock to go. After a crash, clears what the dead
    /// daemon left.
    pub fn detach(&self, v: &str, force: bool) -> ApiResult<Value> {
        let r = self.row(v)?;
        let Some((device, pid, _)) = self.attachment(&r)? else {
            return match self.recover(&r)? {
                Some(cleared) => {
                    let mut out = self.to_json(&self.row(v)?)?;
                    out["Recovered"] = json!(cleared);
                    Ok(out)
                }
                None => Err(ApiError::incorrect_state(format!(
                    "Volume {v} is not attached"
                ))),
            };
        };
        let device = PathBuf::from(device);
        let stack = mount::stack_of(&device).map_err(vol_err)?;
        let users = stack.users();
        if !users.is_empty() {
            if !force {
                return Err(ApiError::new("VolumeInUse", format!(
                    "Volume {v} is still in use by {}: unmount it first (keyvol volume unmount DIR) or pass --force",
                    users.join(", ")
                )));
            }
            mount::release_stack(&device, false).map_err(vol_err)?;
        }
        self.stop_daemon(&r, pid)?;
        let lock = self.lock_path(&r.volume_id);
        for _ in 0..600 {
            if !lock_held(&lock) {
                if let Err(e) = self
                    .conn
                    .execute("DELETE FROM attachments WHERE volume_id = ?1", [v])
                {
                    tracing::warn!("removing the attachment record of {v}: {e}");
                }
                return self.to_json(&self.row(v)?);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(ApiError::internal(format!(
            "the attach daemon of {v} (pid {pid}) did not stop within 30 s"
        )))
    }

    /// Asks the daemon to stop over its control socket; it answers `ERR`
    /// (and keeps serving) when its device is busy. Falls back to SIGTERM
    /// when the socket is unavailable.
    fn stop_daemon(&self, r: &VolumeRecord, pid: i64) -> ApiResult<()> {
        let v = &r.volume_id;
        match request_stop(&self.control_path(v)) {
            Ok(StopReply::Stopping) => Ok(()),
            Ok(StopReply::Refused(why)) => Err(ApiError::new(
                "VolumeInUse",
                format!("Volume {v} stays attached: {why}"),
            )),
            Err(e) => {
                tracing::debug!("control socket of {v}: {e}; stopping the daemon with SIGTERM");
                crate::sys::kill(pid, libc::SIGTERM).map_err(|e| {
                    ApiError::internal(format!(
                        "signalling the attach daemon of {v} (pid {pid}): {e}"
                    ))
                })
            }
        }
    }

    /// Attach + loop device + mkfs on first use + mount (root), or fuse2fs.
    /// One volume, one filesystem mount: a volume whose device already
    /// carries a loop device or a mount is refused. `dir` must be an empty
    /// directory that is not a mount point (it is created when missing, and
    /// removed again if the mount fails).
    pub fn mount(&self, v: &str, dir: &Path, fs_type: mount::FsType) -> ApiResult<Value> {
        let r = self.row(v)?;
        let dir = absolute(dir)?;
        // Mounts and unmounts of one volume run one at a time, so two
        // concurrent mounts cannot both find the device unused.
        let _serial = self.serialize_mounts(&r)?;
        self.check_backing(&r)?;
        let mut recovered = None;
        if let Some((device, _, _)) = self.attachment(&r)? {
            let users = mount::stack_of(Path::new(&device))
                .map_err(vol_err)?
                .users();
            if !users.is_empty() {
                return Err(ApiError::new(
                    "VolumeInUse",
                    format!(
                        "Volume {v} is already in use by {} (one volume, one filesystem mount): use that mount, or unmount it first",
                        users.join(", ")
                    ),
                ));
            }
        } else {
            // A dead daemon's stack (maybe its ext4 still at `dir`) goes first.
            recovered = self.recover(&r)?;
        }
        let created = prepare_mountpoint(&dir)?;
        let undo_dir = || {
            if created {
                let _ = fs::remove_dir(&dir);
            }
        };
        let dir = match dir.canonicalize() {
            Ok(d) => d,
            Err(e) => {
                undo_dir();
                return Err(io_err("resolving mountpoint", &dir, e));
            }
        };
        let attached_here = match self.attachment(&r)? {
            Some(_) => false,
            None => {
                if let Err(e) = self.attach(v, None) {
                    undo_dir();
                    return Err(e);
                }
                true
            }
        };
        let undo = |e: ApiError| {
            if attached_here {
                let _ = self.detach(v, true);
            }
            undo_dir();
            e
        };
        let (device, _, _) = self
            .attachment(&r)?
            .ok_or_else(|| undo(ApiError::internal("the attachment vanished while mounting")))?;
        let m = mount::mount_volume_with_options(
            Path::new(&device),
            &dir,
            fs_type,
            &self.mount_options,
        )
        .map_err(|e| undo(vol_err(e)))?;
        let recorded = self.conn.execute(
            "INSERT OR REPLACE INTO mounts (mountpoint, volume_id, fs, mounted) VALUES (?1, ?2, ?3, ?4)",
            params![dir.to_string_lossy(), v, fs_type.as_str(), self.s.kms.clock().now()],
        );
        if let Err(e) = recorded {
            let _ = mount::unmount_volume(&m);
            return Err(undo(db_err(e)));
        }
        let mut out = self.to_json(&self.row(v)?)?;
        out["Mount"] = json!({"MountPoint": dir, "FileSystem": fs_type.as_str(), "LoopDevice": m.loop_device(), "Formatted": m.formatted()});
        if let Some(c) = recovered {
            out["Recovered"] = json!(c);
        }
        Ok(out)
    }

    /// Undoes a mount keyvol made for a volume of the caller's account
    /// (anything else at `dir` is refused, untouched): unmounts the
    /// filesystem, never lazily (a busy one is refused and nothing
    /// changes), detaches its loop device, then the volume. After a crash
    /// of the daemon, clears what it left.
    pub fn unmount(&self, dir: &Path) -> ApiResult<Value> {
        let dir = absolute(dir)?;
        let canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        let not_ours = || {
            ApiError::invalid_parameter(format!(
                "{} is not a mount that keyvol made for a volume of account {} in {}: keyvol unmounts only its own mounts",
                dir.display(),
                self.s.ctx.caller.account.as_str(),
                self.s.ctx.region.as_str()
            ))
        };
        let vol: Option<String> = self
            .conn
            .query_row(
                "SELECT volume_id FROM mounts WHERE mountpoint = ?1 OR mountpoint = ?2",
                params![canon.to_string_lossy(), dir.to_string_lossy()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        let Some(v) = vol else {
            return Err(not_ours());
        };
        let r = self.row(&v).map_err(|_| not_ours())?;
        let _serial = self.serialize_mounts(&r)?;
        let Some((device, _, _)) = self.attachment(&r)? else {
            let cleared = self.recover(&r)?.unwrap_or_default();
            return Ok(
                json!({"MountPoint": canon, "Unmounted": true, "VolumeId": v, "Recovered": cleared,
                             "Volume": self.to_json(&r)?}),
            );
        };
        let device = PathBuf::from(device);
        let stack = mount::stack_of(&device).map_err(vol_err)?;
        let here: Vec<&mount::MountEntry> = mount::mounts()
            .map_err(vol_err)?
            .iter()
            .filter(|m| m.target == canon)
            .map(|m| stack.mounts.iter().find(|s| *s == m))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "what is mounted at {} is not volume {v}'s filesystem: keyvol leaves it alone",
                    canon.display()
                ))
            })?;
        let mounted = !here.is_empty();
        for m in here.iter().rev() {
            mount::unmount_fs(&m.target).map_err(|e| match e {
                VolumeError::Busy { .. } => ApiError::new(
                    "VolumeInUse",
                    format!("The filesystem of volume {v} at {} is busy (a process has a file open or its working directory there; `fuser -vm {}` lists them). Nothing was changed: stop them and run unmount again", canon.display(), canon.display()),
                ),
                e => vol_err(e),
            })?;
        }
        let stack = mount::stack_of(&device).map_err(vol_err)?;
        if stack.mounts.is_empty() {
            for l in &stack.loops {
                mount::detach_loop(&l.name).map_err(vol_err)?;
            }
        }
        if let Err(e) = self.conn.execute(
            "DELETE FROM mounts WHERE mountpoint = ?1 OR mountpoint = ?2",
            params![canon.to_string_lossy(), dir.to_string_lossy()],
        ) {
            tracing::warn!("removing the mount record of {}: {e}", canon.display());
        }
        let mut out = json!({"MountPoint": canon, "Unmounted": mounted, "VolumeId": v});
        out["Volume"] = self.detach(&v, false)?;
        Ok(out)
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

/// At most this many snapshots of one volume are cut and not yet finished.
pub const MAX_PENDING_SNAPSHOTS: usize = 5;

/// Where a `STOP` request waits for the daemon's main thread to try the
/// unmount: the answer is `Ok` (stopping) or why it refused.
type StopSlot = Arc<std::sync::Mutex<Option<std::sync::mpsc::Sender<Result<(), String>>>>>;

/// The attach daemon's control socket: one thread per connection, one
/// request at a time ([`super::control::Request`] has the protocol). A
/// connection that closes abandons the cuts it made and did not finish.
fn serve_control(
    listener: std::os::unix::net::UnixListener,
    dev: Arc<EncryptedDevice>,
    stop: StopSlot,
    sizes: crate::fuse::SizeNotifier,
) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let dev = dev.clone();
        let stop = stop.clone();
        let sizes = sizes.clone();
        std::thread::spawn(move || {
            let mut mine: Vec<String> = Vec::new();
            let _ = control_session(&conn, &dev, &stop, &sizes, &mut mine);
            for id in mine {
                tracing::info!(snapshot = %id, "cut abandoned (its client went away)");
                let _ = dev.finish_cut(&id, false);
            }
        });
    }
}

fn control_session(
    conn: &std::os::unix::net::UnixStream,
    dev: &EncryptedDevice,
    stop: &StopSlot,
    sizes: &crate::fuse::SizeNotifier,
    mine: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut reader = std::io::BufReader::new(conn.try_clone()?);
    let mut out = std::io::BufWriter::new(conn.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        use super::control::Request;
        let reply: Result<(String, Vec<u8>), String> = match Request::parse(&line) {
            Err(e) => Err(e),
            Ok(Request::Cut { snapshot: id, all }) => dev
                .cut(&id, all, MAX_PENDING_SNAPSHOTS)
                .map(|chunks| {
                    tracing::info!(snapshot = %id, all, chunks = chunks.len(), "snapshot cut");
                    crate::telemetry::snapshot_cut(chunks.len());
                    let list: Vec<String> = chunks.iter().map(u64::to_string).collect();
                    mine.push(id.clone());
                    (format!("OK {}", list.join(" ")), Vec::new())
                })
                .map_err(|e| {
                    tracing::warn!(snapshot = %id, "snapshot cut refused: {e}");
                    e.to_string()
                }),
            Ok(Request::Read { snapshot: id, chunk: c }) => dev
                .snapshot_read(&id, c)
                .map(|b| {
                    crate::telemetry::snapshot_chunk_read();
                    (format!("OK {}", b.len()), b)
                })
                .map_err(|e| {
                    tracing::error!(snapshot = %id, chunk = c, errno = e.errno(), "snapshot read failed: {e}");
                    e.to_string()
                }),
            Ok(Request::Finish { snapshot: id, ok }) => {
                mine.retain(|m| *m != id);
                tracing::info!(snapshot = %id, ok, "snapshot cut finished");
                dev.finish_cut(&id, ok)
                    .map(|()| ("OK".to_string(), Vec::new()))
                    .map_err(|e| e.to_string())
            }
            Ok(Request::Stop) => {
                request_stop_of_main(stop).map(|()| ("OK".to_string(), Vec::new()))
            }
            Ok(Request::Health) => {
                let (n, last) = dev.io_errors();
                Ok((format!("OK {n} {last}"), Vec::new()))
            }
            Ok(Request::Grow { size: n }) => dev
                .grow(n)
                .map_err(|e| {
                    tracing::error!(size = n, "online grow failed: {e}");
                    e.to_string()
                })
                .map(|()| {
                    tracing::info!(size = n, "device grown online");
                    // The size is in effect; a kernel that missed the
                    // notice sees it when its attribute cache expires.
                    if let Err(e) = sizes.size_changed() {
                        tracing::warn!("telling the kernel the new size: {e}");
                    }
                    ("OK".to_string(), Vec::new())
                }),
        };
        match reply {
            Ok((head, body)) => {
                writeln!(out, "{head}")?;
                out.write_all(&body)?;
            }
            Err(e) => writeln!(out, "ERR {}", e.replace('\n', " "))?,
        }
        out.flush()?;
    }
}

/// Wakes the daemon's main thread (blocked in sigwait) to try the unmount
/// and waits for its answer.
fn request_stop_of_main(stop: &StopSlot) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    match stop.lock() {
        Ok(mut s) => *s = Some(tx),
        Err(_) => return Err("the daemon's stop slot is poisoned".into()),
    }
    crate::sys::signal_self(libc::SIGTERM).map_err(|e| format!("signalling the daemon: {e}"))?;
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .map_err(|_| "the daemon did not answer the stop request within 30 s".to_string())?
}

/// The daemon's answer to `STOP`.
enum StopReply {
    Stopping,
    Refused(String),
}

/// Client side of `STOP`.
/// The I/O errors a running attach daemon's device answered, and the Unix
/// time of the latest; `None` when it does not answer within 2 s.
fn io_health(socket: &Path) -> Option<(u64, u64)> {
    let conn = std::os::unix::net::UnixStream::connect(socket).ok()?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    let line = super::control::Request::Health.encode();
    (&conn).write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(&conn).read_line(&mut line).ok()?;
    let mut words = line.trim().strip_prefix("OK ")?.split(' ');
    let n = words.next()?.parse().ok()?;
    let last = words.next()?.parse().ok()?;
    Some((n, last))
}

/// Asks a running attach daemon to grow its device to `size` bytes.
fn grow_online(socket: &Path, size: u64) -> ApiResult<()> {
    let talk = || -> std::io::Result<String> {
        let conn = std::os::unix::net::UnixStream::connect(socket)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        let line = super::control::Request::Grow { size }.encode();
        (&conn).write_all(format!("{line}\n").as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(&conn).read_line(&mut line)?;
        Ok(line)
    };
    let line = talk().map_err(|e| {
        ApiError::incorrect_state(format!(
            "the attach daemon did not answer the grow ({e}): nothing was changed; check `keyvol volume status`"
        ))
    })?;
    match line.trim().strip_prefix("ERR ") {
        Some(why) => Err(ApiError::internal(format!(
            "the attach daemon could not grow the device: {why}"
        ))),
        None if line.trim() == "OK" => Ok(()),
        None => Err(ApiError::internal(format!(
            "the attach daemon answered the grow with '{}'",
            line.trim()
        ))),
    }
}

fn request_stop(socket: &Path) -> std::io::Result<StopReply> {
    let conn = std::os::unix::net::UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(40)))?;
    let line = super::control::Request::Stop.encode();
    (&conn).write_all(format!("{line}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(&conn).read_line(&mut line)?;
    Ok(match line.trim().strip_prefix("ERR ") {
        Some(why) => StopReply::Refused(why.to_string()),
        // OK, or the daemon exited before answering: it is stopping.
        None => StopReply::Stopping,
    })
}

/// Fetches the rest of a restored volume's snapshot, logging progress
/// every tenth and failures.
fn hydrate_in_background(dev: &EncryptedDevice, vol: &str, pending: usize) {
    tracing::info!(volume = vol, chunks = pending, "hydration started");
    let mut last_tenth = 0;
    let res = dev.hydrate_all(&mut |done, total| {
        crate::telemetry::hydration_progress(done, total);
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if tenth > last_tenth {
            last_tenth = tenth;
            tracing::info!(volume = vol, done, total, "hydration {}%", tenth * 10);
        }
    });
    match res {
        Ok(()) => tracing::info!(volume = vol, "hydration finished"),
        Err(e) => tracing::error!(
            volume = vol,
            errno = e.errno(),
            "background hydration stopped: {e} (missing chunks are still fetched on first read)"
        ),
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

fn absolute(p: &Path) -> ApiResult<PathBuf> {
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
fn canonical_device(p: &Path) -> PathBuf {
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
fn vol_err(e: VolumeError) -> ApiError {
    match e {
        VolumeError::Busy { .. } => ApiError::new("VolumeInUse", e.to_string()),
        e => ApiError::from(e),
    }
}

/// Makes sure `dir` can be mounted on: an empty directory that is not a
/// mount point, created when missing (`Ok(true)`). Anything else is
/// refused before anything is attached.
fn prepare_mountpoint(dir: &Path) -> ApiResult<bool> {
    let bad = |why: &str| {
        ApiError::invalid_parameter(format!(
            "mountpoint {} {why}: give an empty directory (or a path that does not exist yet)",
            dir.display()
        ))
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| io_err("creating mountpoint", dir, e))?;
            Ok(true)
        }
        Err(e) => Err(io_err("inspecting mountpoint", dir, e)),
        Ok(m) if m.file_type().is_symlink() => Err(bad("is a symbolic link")),
        Ok(m) if !m.is_dir() => Err(bad("is not a directory")),
        Ok(_) => {
            let mut entries =
                fs::read_dir(dir).map_err(|e| io_err("reading mountpoint", dir, e))?;
            if entries.next().is_some() {
                return Err(bad("is not empty"));
            }
            let canon = dir
                .canonicalize()
                .map_err(|e| io_err("resolving mountpoint", dir, e))?;
            if mount::mounts()
                .map_err(vol_err)?
                .iter()
                .any(|m| m.target == canon)
            {
                return Err(bad("is already a mount point"));
            }
            Ok(false)
        }
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
fn pending_hydration(map: &Path) -> u64 {
    fs::read(map)
        .map(|b| b.iter().filter(|&&x| x == 1).count() as u64)
        .unwrap_or(0)
}

/// Takes the attachment lock (flock, exclusive, non-blocking).
fn take_lock(path: &Path) -> Option<fs::File> {
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

fn lock_held(path: &Path) -> bool {
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
