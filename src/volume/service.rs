//! Volume lifecycle: create, describe, delete, modify, attach (the daemon
//! that serves the decrypted device through FUSE), detach, mount, unmount,
//! status. Volumes are regional and belong to an account, like EBS.
//!
//! Files of a volume, under `<home>/volumes/<region>/`: `<vol>.img` (the
//! sparse ciphertext), `<vol>.changes` (the change log), `<vol>.lock` (held
//! by the attach daemon for as long as it runs: one attachment at a time,
//! released by the kernel when the daemon dies), `<vol>.dev` (the default
//! device file a `mount` serves through) and `<vol>.log` (daemon log).

use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
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
use crate::volume::{mount, ChangeLog, EncryptedDevice, SectorCipher, CHUNK_SIZE, SECTOR_SIZE};

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
pub type SourceResolver = fn(&Session, &VolumeRecord) -> ApiResult<Arc<dyn ChunkSource>>;

pub struct Volumes<'a> {
    s: &'a Session,
    conn: rusqlite::Connection,
    source: Option<SourceResolver>,
    mount_options: Vec<String>,
}

impl<'a> Volumes<'a> {
    pub fn open(s: &'a Session) -> ApiResult<Volumes<'a>> {
        let conn = s
            .home
            .connect()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
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

    /// Is the volume attached (its lock held by a live daemon)?
    fn attachment(&self, r: &VolumeRecord) -> ApiResult<Option<(String, i64, i64)>> {
        if !lock_held(&self.lock_path(&r.volume_id)) {
            // A daemon that died leaves a stale row: the lock says the truth.
            self.conn
                .execute(
                    "DELETE FROM attachments WHERE volume_id = ?1",
                    [r.volume_id.as_str()],
                )
                .map_err(db_err)?;
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT device, pid, attached FROM attachments WHERE volume_id = ?1",
                [r.volume_id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_err)
    }

    /// The EC2 shape of a volume, plus its wrapped data key and context.
    pub fn to_json(&self, r: &VolumeRecord) -> ApiResult<Value> {
        let att = self.attachment(r)?;
        let attachments: Vec<Value> = att
            .iter()
            .map(|(dev, pid, t)| {
                json!({"VolumeId": r.volume_id, "Device": dev, "State": "attached", "AttachTime": to_rfc3339(*t),
                       "InstanceId": format!("keyvol-daemon-{pid}"), "DeleteOnTermination": false})
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
        }))
    }

    /// CreateVolume: a new data key (GenerateDataKeyWithoutPlaintext, 64
    /// bytes, context {"aws:ebs:id": vol}) under `kms_key_id` (default
    /// alias/aws/ebs), through the caller's KMS authorization via EC2.
    pub fn create(&self, size: u64, kms_key_id: Option<&str>) -> ApiResult<VolumeRecord> {
        let vol = VolumeId::generate();
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
        let md = kms.call(&via, "DescribeKey", json!({"KeyId": key}))?;
        let arn = md["KeyMetadata"]["Arn"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if md["KeyMetadata"]["KeySpec"] != "SYMMETRIC_DEFAULT"
            || md["KeyMetadata"]["KeyUsage"] != "ENCRYPT_DECRYPT"
        {
            return Err(ApiError::new("InvalidParameterValue", format!(
                "KMS key {arn} is not a symmetric encryption key: volumes need a SYMMETRIC_DEFAULT key with KeyUsage ENCRYPT_DECRYPT"
            )));
        }
        let r = kms.call(&via, "GenerateDataKeyWithoutPlaintext", json!({
            "KeyId": arn, "NumberOfBytes": 64, "EncryptionContext": {"aws:ebs:id": vol_or_snap.to_string()}
        }))?;
        let wrapped = r["CiphertextBlob"]
            .as_str()
            .and_then(crate::kms::api::b64_decode)
            .ok_or_else(|| ApiError::internal("KMS returned no ciphertext"))?;
        Ok((arn, wrapped))
    }

    /// Stores a new volume record with its sparse backing file.
    pub fn insert(
        &self,
        vol: &VolumeId,
        size: u64,
        arn: &str,
        wrapped: &[u8],
        snapshot: Option<&str>,
    ) -> ApiResult<VolumeRecord> {
        fs::create_dir_all(self.dir()).map_err(|e| io_err("creating", &self.dir(), e))?;
        let path = self.backing_path(vol);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("creating", &path, e))?;
        f.set_len(size).map_err(|e| io_err("sizing", &path, e))?;
        f.sync_all().map_err(|e| io_err("syncing", &path, e))?;
        let now = self.s.kms.clock().now();
        self.conn
            .execute(
                "INSERT INTO volumes (volume_id, account, region, size, kms_key_arn, encrypted_data_key, created, snapshot_id) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                params![vol.as_str(), self.s.ctx.caller.account.as_str(), self.s.ctx.region.as_str(), size as i64, arn, wrapped, now, snapshot],
            )
            .map_err(db_err)?;
        self.row(vol.as_str())
    }

    /// Registers a volume made on another host sharing this KMS: its
    /// `describe` output (id, size, key, wrapped data key) and its backing
    /// file, hard-linked or copied sparsely into this home. The data key
    /// stays bound to the volume id, so the id is kept.
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
        let meta = fs::metadata(backing).map_err(|e| io_err("reading", backing, e))?;
        if meta.len() != size {
            return Err(ApiError::invalid_parameter(format!(
                "backing file {} has {} bytes but the volume has {size}",
                backing.display(),
                meta.len()
            )));
        }
        if self.row(vol.as_str()).is_ok() {
            return Err(ApiError::new(
                "InvalidVolume.Duplicate",
                format!("Volume {vol} already exists in this home"),
            ));
        }
        fs::create_dir_all(self.dir()).map_err(|e| io_err("creating", &self.dir(), e))?;
        let dest = self.backing_path(&vol);
        if fs::hard_link(backing, &dest).is_err() {
            let ok = std::process::Command::new("cp")
                .args(["--sparse=always", "--reflink=auto"])
                .arg(backing)
                .arg(&dest)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = fs::remove_file(&dest);
                return Err(ApiError::internal(format!(
                    "copying {} into the home failed",
                    backing.display()
                )));
            }
        }
        let now = self.s.kms.clock().now();
        self.conn
            .execute(
                "INSERT INTO volumes (volume_id, account, region, size, kms_key_arn, encrypted_data_key, created, snapshot_id) VALUES (?1,?2,?3,?4,?5,?6,?7,NULL)",
                params![vol.as_str(), self.s.ctx.caller.account.as_str(), self.s.ctx.region.as_str(), size as i64, arn, wrapped, now],
            )
            .map_err(db_err)?;
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
        clear_stale_mount(&self.default_device(&r.volume_id));
        for p in [
            self.backing_path(&r.volume_id),
            self.changes_path(&r.volume_id),
            self.hydration_path(&r.volume_id),
            self.control_path(&r.volume_id),
            self.default_device(&r.volume_id),
            self.lock_path(&r.volume_id),
            self.log_path(&r.volume_id),
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

    /// ModifyVolume: grow only. The filesystem is the user's to grow
    /// (resize2fs), as on EBS.
    pub fn modify(&self, v: &str, size: u64) -> ApiResult<VolumeRecord> {
        let r = self.row(v)?;
        if size < r.size {
            return Err(ApiError::invalid_parameter(format!(
                "New size {size} is smaller than the volume's {} bytes: volumes only grow",
                r.size
            )));
        }
        if self.attachment(&r)?.is_some() {
            return Err(ApiError::incorrect_state(format!(
                "Volume {v} is attached: detach it, modify it, and attach again"
            )));
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

    /// Runs the attach daemon in this process until SIGTERM/SIGINT/SIGHUP:
    /// holds the lock, serves the device at `device`, and prints one JSON
    /// line to `ready` once the device is usable.
    pub fn run_daemon(&self, v: &str, device: &Path, ready: &mut dyn Write) -> ApiResult<()> {
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
        let signals = stop_signals();
        // SAFETY: pthread_sigmask with a valid, initialised set.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
        clear_stale_mount(device);
        let handle = crate::fuse::serve(
            device_arc.clone(),
            device,
            &crate::fuse::FuseOptions::default(),
        )?;
        let device_path = handle.device_path().to_path_buf();
        let control = self.control_path(&r.volume_id);
        // Everything after the mount undoes the mount when it fails, so a
        // failed attach never leaves a FUSE mount without its daemon.
        let started = (|| -> ApiResult<()> {
            let _ = fs::remove_file(&control);
            let listener = std::os::unix::net::UnixListener::bind(&control)
                .map_err(|e| io_err("binding control socket", &control, e))?;
            let dev = device_arc.clone();
            std::thread::spawn(move || serve_control(listener, dev));
            // A restored volume fetches the rest of its snapshot in the
            // background while attached (reads of missing chunks go first).
            if !device_arc.hydration_pending().is_empty() {
                let dev = device_arc.clone();
                std::thread::spawn(move || {
                    if let Err(e) = dev.hydrate_all(&mut crate::telemetry::hydration_progress) {
                        eprintln!("background hydration stopped: {e}");
                    }
                });
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
            let _ = handle.unmount();
            let _ = fs::remove_file(&control);
            let _ = device_arc.close();
            return Err(e);
        }
        let _ = writeln!(
            ready,
            "{}",
            json!({"VolumeId": v, "Device": device_path, "State": "attached", "Pid": std::process::id()})
        );
        let _ = ready.flush();
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait with a valid set and a valid out pointer.
        unsafe { libc::sigwait(&signals, &mut sig) };
        let res = handle.unmount();
        if res.is_err() {
            // Busy (a process still has the device open): detach the mount
            // lazily rather than leave it behind without its daemon.
            clear_stale_mount(&device_path);
        }
        let _ = fs::remove_file(&control);
        let closed = device_arc.close();
        self.conn
            .execute("DELETE FROM attachments WHERE volume_id = ?1", [v])
            .map_err(db_err)?;
        drop(lock);
        res?;
        closed?;
        Ok(())
    }

    /// Opens the decrypted device of volume `r` (its data key through the
    /// KMS), with lazy hydration from its snapshot while any chunk is still
    /// to be fetched.
    pub fn open_device(&self, r: &VolumeRecord) -> ApiResult<EncryptedDevice> {
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
                let source = resolve(self.s, r)?;
                device = device.with_hydration(source, map);
            }
        }
        Ok(device)
    }

    /// Takes the attachment lock of a detached volume (so it cannot be
    /// attached meanwhile); `None` when the volume is attached.
    pub fn lock_detached(&self, r: &VolumeRecord) -> Option<fs::File> {
        take_lock(&self.lock_path(&r.volume_id))
    }

    /// Attaches in the background: starts the daemon (this binary with
    /// `--foreground`) and returns once the device is served.
    pub fn attach(&self, v: &str, device: Option<&Path>) -> ApiResult<Value> {
        let r = self.row(v)?;
        if self.attachment(&r)?.is_some() {
            return Err(ApiError::new(
                "VolumeInUse",
                format!("Volume {v} is already attached; detach it first"),
            ));
        }
        // Check the key before forking, for a clear error in this process.
        drop(self.data_key(&r)?);
        let device = device
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.default_device(&r.volume_id));
        let device = absolute(&device)?;
        let exe = std::env::current_exe()
            .map_err(|e| ApiError::internal(format!("locating the keyvol binary: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            "--home",
            &self.s.home.dir().to_string_lossy(),
            "--profile",
            &self.s.profile,
            "--region",
            self.s.ctx.region.as_str(),
        ])
        .args([
            "volume",
            "attach",
            v,
            "--device",
            &device.to_string_lossy(),
            "--foreground",
        ]);
        crate::background::start_and_wait_ready(
            cmd,
            &self.log_path(&r.volume_id),
            &format!("the attach daemon of {v}"),
        )?;
        self.to_json(&self.row(v)?)
    }

    /// Detaches: refuses while a loop device or mount uses the device,
    /// unless `force` (then undoes them first); stops the daemon, which
    /// flushes and exits; waits for its lock to go.
    pub fn detach(&self, v: &str, force: bool) -> ApiResult<Value> {
        let r = self.row(v)?;
        let (device, pid, _) = self
            .attachment(&r)?
            .ok_or_else(|| ApiError::incorrect_state(format!("Volume {v} is not attached")))?;
        let device = PathBuf::from(device);
        let users = users_of(&device)?;
        if !users.is_empty() {
            if !force {
                return Err(ApiError::new("VolumeInUse", format!(
                    "Volume {v} is still in use by {}: unmount it first (keyvol volume unmount DIR) or pass --force",
                    users.join(", ")
                )));
            }
            release_users(&device)?;
        }
        // SAFETY: kill with a pid read from our own attachment row.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let lock = self.lock_path(&r.volume_id);
        for _ in 0..600 {
            if !lock_held(&lock) {
                self.conn
                    .execute("DELETE FROM attachments WHERE volume_id = ?1", [v])
                    .map_err(db_err)?;
                return self.to_json(&self.row(v)?);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(ApiError::internal(format!(
            "the attach daemon of {v} (pid {pid}) did not stop within 30 s"
        )))
    }

    /// Attach + loop device + mkfs on first use + mount (root), or fuse2fs.
    pub fn mount(&self, v: &str, dir: &Path, fs_type: mount::FsType) -> ApiResult<Value> {
        let r = self.row(v)?;
        let dir = absolute(dir)?;
        fs::create_dir_all(&dir).map_err(|e| io_err("creating mountpoint", &dir, e))?;
        let attached_here = match self.attachment(&r)? {
            Some(_) => false,
            None => {
                self.attach(v, None)?;
                true
            }
        };
        let (device, _, _) = self
            .attachment(&r)?
            .ok_or_else(|| ApiError::internal("attachment vanished"))?;
        match mount::mount_volume_with_options(
            Path::new(&device),
            &dir,
            fs_type,
            &self.mount_options,
        ) {
            Ok(m) => {
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO mounts (mountpoint, volume_id, fs, mounted) VALUES (?1, ?2, ?3, ?4)",
                        params![dir.to_string_lossy(), v, fs_type.as_str(), self.s.kms.clock().now()],
                    )
                    .map_err(db_err)?;
                let mut out = self.to_json(&self.row(v)?)?;
                out["Mount"] = json!({"MountPoint": dir, "FileSystem": fs_type.as_str(), "LoopDevice": m.loop_device(), "Formatted": m.formatted()});
                Ok(out)
            }
            Err(e) => {
                if attached_here {
                    let _ = self.detach(v, true);
                }
                Err(e.into())
            }
        }
    }

    /// Undoes every step of a mount, also after a partial failure, and
    /// detaches the volume.
    pub fn unmount(&self, dir: &Path) -> ApiResult<Value> {
        let dir = absolute(dir)?;
        let vol: Option<String> = self
            .conn
            .query_row(
                "SELECT volume_id FROM mounts WHERE mountpoint = ?1",
                [dir.to_string_lossy()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        let mounted = mount::mounts()?.iter().any(|m| m.target == dir);
        let steps = if mounted {
            mount::unmount_path(&dir)?
        } else {
            Vec::new()
        };
        let mut out = json!({"MountPoint": dir, "Unmounted": mounted, "StepsUndone": steps.len()});
        if let Some(v) = vol {
            self.conn
                .execute(
                    "DELETE FROM mounts WHERE mountpoint = ?1",
                    [dir.to_string_lossy()],
                )
                .map_err(db_err)?;
            if let Ok(r) = self.row(&v) {
                if self.attachment(&r)?.is_some() {
                    out["Volume"] = self.detach(&v, true)?;
                }
            }
        } else if !mounted {
            return Err(ApiError::invalid_parameter(format!(
                "nothing keyvol mounted is at {}",
                dir.display()
            )));
        }
        Ok(out)
    }

    /// Attachments, loop devices and mounts of this home's volumes.
    pub fn status(&self) -> ApiResult<Value> {
        let loops = mount::loop_devices().unwrap_or_default();
        let mounts = mount::mounts().unwrap_or_default();
        let mut out = Vec::new();
        for r in self.list()? {
            let Some((device, pid, t)) = self.attachment(&r)? else {
                continue;
            };
            let lps: Vec<&mount::LoopDevice> = loops
                .iter()
                .filter(|l| l.back_file.as_deref() == Some(Path::new(&device)))
                .collect();
            let ms: Vec<Value> = mounts
                .iter()
                .filter(|m| {
                    m.source == Path::new(&device) || lps.iter().any(|l| l.name == m.source)
                })
                .map(
                    |m| json!({"MountPoint": m.target, "Source": m.source, "FileSystem": m.fstype}),
                )
                .collect();
            out.push(json!({
                "VolumeId": r.volume_id, "Device": device, "Pid": pid, "AttachTime": to_rfc3339(t),
                "LoopDevices": lps.iter().map(|l| &l.name).collect::<Vec<_>>(), "Mounts": ms,
            }));
        }
        Ok(json!({"Attachments": out}))
    }
}

/// At most this many snapshots of one volume are cut and not yet finished.
pub const MAX_PENDING_SNAPSHOTS: usize = 5;

/// The attach daemon's control socket: one thread per connection, one
/// line-oriented request at a time:
///
/// - `CUT <snap> ALL|CHANGED` -> `OK <chunk> <chunk> ...` (the cut's chunks)
/// - `READ <snap> <chunk>` -> `OK <len>` then `len` bytes of ciphertext
/// - `FINISH <snap> OK|FAIL` -> `OK` (on OK, clears the captured change bits)
///
/// Errors answer `ERR <message>`. A connection that closes abandons the
/// cuts it made and did not finish.
fn serve_control(listener: std::os::unix::net::UnixListener, dev: Arc<EncryptedDevice>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let dev = dev.clone();
        std::thread::spawn(move || {
            let mut mine: Vec<String> = Vec::new();
            let _ = control_session(&conn, &dev, &mut mine);
            for id in mine {
                let _ = dev.finish_cut(&id, false);
            }
        });
    }
}

fn control_session(
    conn: &std::os::unix::net::UnixStream,
    dev: &EncryptedDevice,
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
        let parts: Vec<&str> = line.split_whitespace().collect();
        let reply: Result<(String, Vec<u8>), String> = match parts.as_slice() {
            ["CUT", id, mode] => dev
                .cut(id, *mode == "ALL", MAX_PENDING_SNAPSHOTS)
                .map(|chunks| {
                    crate::telemetry::snapshot_cut(chunks.len());
                    mine.push(id.to_string());
                    let list: Vec<String> = chunks.iter().map(u64::to_string).collect();
                    (format!("OK {}", list.join(" ")), Vec::new())
                })
                .map_err(|e| e.to_string()),
            ["READ", id, chunk] => match chunk.parse::<u64>() {
                Ok(c) => dev
                    .snapshot_read(id, c)
                    .map(|b| {
                        crate::telemetry::snapshot_chunk_read();
                        (format!("OK {}", b.len()), b)
                    })
                    .map_err(|e| e.to_string()),
                Err(_) => Err(format!("'{chunk}' is not a chunk index")),
            },
            ["FINISH", id, status] => {
                mine.retain(|m| m != id);
                dev.finish_cut(id, *status == "OK")
                    .map(|()| ("OK".to_string(), Vec::new()))
                    .map_err(|e| e.to_string())
            }
            _ => Err("unknown request".to_string()),
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

/// Decrypts a wrapped volume (or snapshot) data key; 64 bytes expected.
pub fn unwrap_data_key(
    s: &Session,
    key_arn: &str,
    wrapped: &[u8],
    context_id: &str,
) -> ApiResult<VolumeDataKey> {
    let kms = s.kms_client()?;
    let via = s.ctx.via_ec2();
    let r = kms.call(&via, "Decrypt", json!({
        "KeyId": key_arn, "CiphertextBlob": b64_encode(wrapped), "EncryptionContext": {"aws:ebs:id": context_id}
    }));
    let r = match r {
        Ok(r) => r,
        Err(e) => return Err(explain_key_failure(s, key_arn, context_id, e)),
    };
    let pt = r["Plaintext"]
        .as_str()
        .and_then(crate::kms::api::b64_decode)
        .map(crate::secret::SecretBytes::new);
    pt.as_ref()
        .and_then(|p| VolumeDataKey::from_slice(p.expose()))
        .ok_or_else(|| ApiError::internal(format!("the data key of {context_id} is not 64 bytes")))
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

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Lazily unmounts a FUSE mount left at `path` by a daemon that died
/// (kill -9, OOM): the kernel keeps such a mount until someone unmounts it.
/// Only called while holding the volume's lock, so no live daemon serves it.
pub(crate) fn clear_stale_mount(path: &Path) {
    let target = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let stale = mount::mounts()
        .unwrap_or_default()
        .iter()
        .any(|m| m.target == target && m.fstype.starts_with("fuse"));
    if stale {
        if let Ok(c) = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 with a valid NUL-terminated path.
            let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            if rc != 0 {
                let _ = std::process::Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&target)
                    .status();
            }
        }
    }
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
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(f)
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

/// Loop devices and mounts that use `device`.
fn users_of(device: &Path) -> ApiResult<Vec<String>> {
    let mut users = Vec::new();
    for l in mount::loop_devices()? {
        if l.back_file.as_deref() == Some(device) {
            users.push(format!("loop device {}", l.name.display()));
        }
    }
    for m in mount::mounts()? {
        if m.source == device {
            users.push(format!("mount {}", m.target.display()));
        }
    }
    Ok(users)
}

/// Unmounts and detaches everything that uses `device` (detach --force).
fn release_users(device: &Path) -> ApiResult<()> {
    let loops: Vec<mount::LoopDevice> = mount::loop_devices()?
        .into_iter()
        .filter(|l| l.back_file.as_deref() == Some(device))
        .collect();
    for m in mount::mounts()? {
        if m.source == device || loops.iter().any(|l| l.name == m.source) {
            mount::unmount_path(&m.target)?;
        }
    }
    for l in mount::loop_devices()? {
        if l.back_file.as_deref() == Some(device) {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&l.name)
                .status();
        }
    }
    Ok(())
}

/// The sector size of volumes (exported for docs and tests).
pub const VOLUME_SECTOR_SIZE: usize = SECTOR_SIZE;
