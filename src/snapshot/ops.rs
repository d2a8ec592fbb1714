//! Snapshot operations with EC2's semantics and field names: create
//! (point-in-time, incremental), describe, list, delete, wait, share,
//! unshare, describe-attribute, copy (re-encrypting, cross-account and
//! cross-region, incremental per lineage), restore (lazily hydrated),
//! list-blocks and list-changed-blocks.
//!
//! The manifests in the store are the truth other hosts and accounts read;
//! the home's SQLite database only remembers which snapshot a volume's change
//! log is relative to, and which process runs a snapshot job (so a job that
//! died is marked `error` instead of staying pending forever).
//!
//! Crash consistency: a pending manifest is stored before any chunk, and
//! re-stored as chunks are added; the completed manifest is stored only
//! after every chunk it names was checked present. Delete removes the
//! manifest first and frees only chunks no other manifest names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::OptionalExtension;
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::ids::{AccountId, Region, SnapshotId, VolumeId};
use crate::kms::client::{DataKey, WrappedKey};
use crate::kms::RequestContext;
use crate::pipeline::AlignedBuf;
use crate::secret::VolumeDataKey;
use crate::session::Session;
use crate::volume::device::{ChunkSource, HydrationMap};
use crate::volume::service::{VolumeRecord, Volumes};
use crate::volume::{EncryptedDevice, SectorCipher, VolumeError, CHUNK_SIZE, SECTOR_SIZE};

use super::error::SnapshotError;
use super::manifest::{changed_blocks, manifest_mac_key, now_rfc3339};
use super::{ChunkRef, ChunkStore, Manifest, SnapshotState, StoreConfig, BLOCK_SIZE};

/// Chunks stored between two puts of a pending manifest (which keep it
/// naming what is stored, and show progress).
const PENDING_PUT_EVERY: usize = 256;

/// Sectors per chunk: chunk `i` starts at sector `i * SECTORS_PER_CHUNK`.
const SECTORS_PER_CHUNK: u64 = CHUNK_SIZE / SECTOR_SIZE as u64;

/// The StateMessage of a copy whose source key the caller cannot use (EC2's).
pub const KEY_NOT_ACCESSIBLE: &str = "Given key ID is not accessible";

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

/// Hears about a long operation: the pending snapshot as soon as it exists,
/// then progress.
pub trait Reporter {
    /// The snapshot (EC2 shape) once its pending manifest is stored.
    fn pending(&mut self, _snapshot: &Value) {}
    /// `done` of `total` units of `what` are finished.
    fn progress(&mut self, _what: &str, _done: u64, _total: u64) {}
}

/// A reporter that ignores everything.
pub struct Quiet;
impl Reporter for Quiet {}

/// Options of [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub description: String,
    /// Freezes this filesystem around the cut (as `fsfreeze`); it must be
    /// the mountpoint of the volume's own filesystem.
    pub freeze: Option<PathBuf>,
}

/// Options of [`copy`].
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub source_region: Region,
    pub kms_key_id: Option<String>,
    pub description: Option<String>,
}

pub(super) fn snap_err(e: SnapshotError) -> ApiError {
    match &e {
        SnapshotError::ManifestMissing { snapshot_id } => ApiError::new(
            "InvalidSnapshot.NotFound",
            format!("The snapshot '{snapshot_id}' does not exist."),
        ),
        SnapshotError::Config { .. } => ApiError::invalid_parameter(e.to_string()),
        _ if e.is_corruption() => ApiError::new("SnapshotIntegrityError", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

fn vol_err(e: VolumeError) -> ApiError {
    ApiError::from(e)
}

pub(super) fn db_err(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("state database: {e}"))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidSnapshot.NotFound",
        format!("The snapshot '{id}' does not exist."),
    )
}

/// Parses a snapshot id (`InvalidSnapshotID.Malformed` otherwise).
pub fn parse_snapshot_id(id: &str) -> ApiResult<SnapshotId> {
    id.parse().map_err(|_| {
        ApiError::new(
            "InvalidSnapshotID.Malformed",
            format!(
                "Invalid id: \"{}\" (expecting \"snap-...\")",
                id.chars().take(80).collect::<String>()
            ),
        )
    })
}

/// The configured store (setting `snapshot-store`, default
/// `<home>/snapshots`) for snapshots of `region`.
pub fn store_for(s: &Session, region: &Region) -> ApiResult<ChunkStore> {
    let spec = crate::config::get(&s.home, "snapshot-store")?;
    let cfg = match spec {
        Some(spec) => StoreConfig::parse(&spec).map_err(snap_err)?,
        None => StoreConfig::Local {
            root: s.home.dir().join("snapshots"),
        },
    };
    ChunkStore::open(&cfg, region).map_err(snap_err)
}

pub(super) fn db(s: &Session) -> ApiResult<crate::home::PooledConnection> {
    let c = s
        .home
        .connect_pooled()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    s.home
        .ensure_schema(&c, "snapshot-ops", SCHEMA)
        .map_err(db_err)?;
    Ok(c)
}

/// The caller acting through EC2 in `region`.
fn ctx_in(s: &Session, region: &Region) -> RequestContext {
    let mut c = s.ctx.clone();
    c.region = region.clone();
    c.via_ec2()
}

/// Decrypts a snapshot's data key as the caller, in `region`.
pub(super) fn unwrap_key(
    s: &Session,
    region: &Region,
    key_arn: &str,
    wrapped: &[u8],
    context: &BTreeMap<String, String>,
) -> ApiResult<VolumeDataKey> {
    let wrapped = WrappedKey(wrapped.to_vec());
    let key = s
        .kms_client()?
        .decrypt_data_key(&ctx_in(s, region), key_arn, &wrapped, context)?;
    Ok(key.volume_key(key_arn)?)
}

fn dek_of(s: &Session, m: &Manifest) -> ApiResult<VolumeDataKey> {
    unwrap_key(
        s,
        &m.region,
        &m.kms_key_id,
        &m.encrypted_data_key,
        &m.encryption_context,
    )
}

/// Who owns a snapshot and who may create volumes from it. The home's
/// records decide, never the manifest in the store: a store reader who
/// writes back an older manifest (one that still lists an account) or
/// edits its owner changes nothing. A snapshot the records do not know yet
/// (made before they existed) is read from its manifest until its sharing
/// is first changed.
#[derive(Debug, Clone, Default)]
struct Access {
    owner: Option<AccountId>,
    shared_with: BTreeSet<AccountId>,
}

impl Access {
    fn of(&self, m: &Manifest) -> (AccountId, BTreeSet<AccountId>) {
        match &self.owner {
            Some(o) => (o.clone(), self.shared_with.clone()),
            None => (m.owner_id.clone(), m.create_volume_permissions.clone()),
        }
    }
}

/// The records of every snapshot of the home.
fn access_map(s: &Session) -> ApiResult<std::collections::HashMap<String, Access>> {
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

fn access(s: &Session, id: &SnapshotId) -> ApiResult<Access> {
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
pub(super) fn record_snapshot(s: &Session, m: &Manifest) -> ApiResult<()> {
    db(s)?
        .execute(
            "INSERT OR IGNORE INTO snapshot_records (snapshot_id, owner, region) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.snapshot_id.as_str(), m.owner_id.as_str(), m.region.as_str()],
        )
        .map_err(db_err)?;
    Ok(())
}

/// Replaces the accounts a snapshot is shared with, in one transaction.
fn set_shared_with(
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

fn forget_snapshot(s: &Session, id: &SnapshotId) -> ApiResult<()> {
    let c = db(s)?;
    for sql in [
        "DELETE FROM snapshot_permissions WHERE snapshot_id = ?1",
        "DELETE FROM snapshot_records WHERE snapshot_id = ?1",
    ] {
        c.execute(sql, [id.as_str()]).map_err(db_err)?;
    }
    Ok(())
}

pub(super) fn visible_to(s: &Session, m: &Manifest) -> ApiResult<bool> {
    let (owner, shared) = access(s, &m.snapshot_id)?.of(m);
    let me = &s.ctx.caller.account;
    // A manifest whose owner differs from the record is not the snapshot
    // that was made: nobody sees it.
    Ok(owner == m.owner_id && (&owner == me || shared.contains(me)))
}

/// Reads a manifest the caller may see, unauthenticated (for listing and
/// access checks only).
pub(super) fn peek_visible(
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
pub(super) fn open_verified(
    store: &ChunkStore,
    s: &Session,
    id: &SnapshotId,
) -> ApiResult<(Manifest, VolumeDataKey)> {
    let (m, bytes) = peek_visible(store, s, id)?;
    let dek = dek_of(s, &m)?;
    let m = Manifest::open(&bytes, &manifest_mac_key(&dek)).map_err(snap_err)?;
    Ok((m, dek))
}

/// The EC2 shape of a snapshot.
pub fn to_json(m: &Manifest) -> Value {
    let mut v = json!({
        "SnapshotId": m.snapshot_id,
        "VolumeId": m.volume_id,
        "State": m.state.to_string(),
        "Progress": format!("{}%", m.progress),
        "OwnerId": m.owner_id.as_str(),
        "KmsKeyId": m.kms_key_id,
        "Encrypted": true,
        "StartTime": m.start_time,
        "VolumeSize": m.volume_size_gib(),
        "VolumeSizeInBytes": m.volume_size_bytes,
        "Description": m.description,
        "StorageTier": "standard",
    });
    if let Some(msg) = &m.state_message {
        v["StateMessage"] = json!(msg);
    }
    if let Some(p) = &m.source_snapshot_id {
        v["SourceSnapshotId"] = json!(p);
    }
    if let Some(r) = &m.source_region {
        v["SourceRegion"] = json!(r.as_str());
    }
    if let Some(p) = &m.parent_snapshot_id {
        v["ParentSnapshotId"] = json!(p);
    }
    v
}

fn progress_of(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 99;
    }
    ((done * 100 / total).min(99)) as u8
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Applies `f` (decrypt or encrypt) to the runs of non-zero sectors of
/// `buf`, whose first sector is `first`: an all-zero ciphertext sector is a
/// hole (zeros) and stays one.
pub(super) fn on_data_sectors(
    buf: &mut [u8],
    first: u64,
    mut f: impl FnMut(u64, &mut [u8]) -> Result<(), VolumeError>,
) -> Result<(), VolumeError> {
    let n = buf.len() / SECTOR_SIZE;
    let mut i = 0;
    while i < n {
        if is_zero(&buf[i * SECTOR_SIZE..(i + 1) * SECTOR_SIZE]) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < n && !is_zero(&buf[j * SECTOR_SIZE..(j + 1) * SECTOR_SIZE]) {
            j += 1;
        }
        f(first + i as u64, &mut buf[i * SECTOR_SIZE..j * SECTOR_SIZE])?;
        i = j;
    }
    Ok(())
}

/// A store error reading block `index` of snapshot `id`: a missing or
/// corrupt chunk names the block.
fn block_err(id: &SnapshotId, index: u64, e: SnapshotError) -> ApiError {
    match e {
        SnapshotError::ChunkMissing { .. } | SnapshotError::ChunkCorrupt { .. } => {
            snap_err(e.in_block(id, index))
        }
        e => snap_err(e),
    }
}

/// Fails naming the first blocks whose chunks are not in the store.
pub(super) fn check_present(store: &ChunkStore, m: &Manifest) -> ApiResult<()> {
    let refs: Vec<ChunkRef> = m.blocks.values().copied().collect();
    let missing = store.missing_chunks(&refs).map_err(snap_err)?;
    if let Some(first) = missing.first() {
        let blocks: Vec<String> = m
            .blocks
            .iter()
            .filter(|(_, c)| missing.contains(c))
            .take(8)
            .map(|(i, _)| i.to_string())
            .collect();
        return Err(ApiError::new(
            "SnapshotIntegrityError",
            format!(
                "snapshot {} block {}: chunk {first} is missing from the snapshot store ({} missing chunk(s); blocks {})",
                m.snapshot_id,
                blocks.first().map(String::as_str).unwrap_or("?"),
                missing.len(),
                blocks.join(", ")
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- create

/// How long one request on the attach daemon's control socket may take
/// (a cut, one 512 KiB chunk): past it the daemon counts as hung, the
/// request fails and a frozen filesystem is thawed.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// How a snapshot reads the volume: the device opened here (volume
/// detached, its lock held), or the attach daemon's control socket.
enum Transport {
    Direct {
        device: Box<EncryptedDevice>,
        _lock: std::fs::File,
    },
    Daemon {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
        /// The control socket, for the pipeline's own connections.
        path: PathBuf,
    },
}

/// What one pipeline worker reads a cut's chunks through: the device opened
/// here (shared by the workers), or a control connection of its own (the
/// daemon serves each connection on a thread of its own; the cut stays
/// with the connection that made it).
enum CutReader<'a> {
    Device(&'a EncryptedDevice),
    Daemon(Transport),
}

impl CutReader<'_> {
    /// The ciphertext of chunk `chunk` at the cut of `id`, into `buf`.
    fn read_into(&mut self, id: &SnapshotId, chunk: u64, buf: &mut AlignedBuf) -> ApiResult<()> {
        match self {
            CutReader::Device(device) => {
                let b = device.snapshot_read(id.as_str(), chunk).map_err(vol_err)?;
                if b.len() > buf.capacity() {
                    return Err(ApiError::internal("the device read an oversized chunk"));
                }
                buf.set_len(b.len());
                buf.copy_from_slice(&b);
                Ok(())
            }
            CutReader::Daemon(t) => t.read_into(id, chunk, buf),
        }
    }
}

impl Transport {
    fn connect(path: &std::path::Path) -> ApiResult<Transport> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match UnixStream::connect(path) {
                Ok(c) => {
                    let timeouts = c
                        .set_read_timeout(Some(CONTROL_TIMEOUT))
                        .and_then(|()| c.set_write_timeout(Some(CONTROL_TIMEOUT)));
                    timeouts.map_err(|e| ApiError::internal(format!("control socket: {e}")))?;
                    let writer = c
                        .try_clone()
                        .map_err(|e| ApiError::internal(format!("control socket: {e}")))?;
                    return Ok(Transport::Daemon {
                        reader: BufReader::new(c),
                        writer,
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(ApiError::internal(format!(
                        "cannot reach the attach daemon at {}: {e}",
                        path.display()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn request(&mut self, req: &crate::volume::control::Request) -> ApiResult<String> {
        let Transport::Daemon { reader, writer, .. } = self else {
            return Err(ApiError::internal("not a daemon transport"));
        };
        let line = req.encode();
        let mut answer = String::new();
        let sent =
            writeln!(writer, "{line}").and_then(|()| reader.read_line(&mut answer).map(drop));
        if let Err(e) = sent {
            // The conversation is out of step now: later requests fail at
            // once instead of reading a late answer.
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return Err(control_io_error(req.verb(), e));
        }
        let answer = answer.trim_end().to_string();
        if let Some(rest) = answer.strip_prefix("OK") {
            return Ok(rest.trim().to_string());
        }
        let msg = answer.strip_prefix("ERR ").unwrap_or(&answer).to_string();
        if msg.contains("already in progress") {
            return Err(ApiError::new("SnapshotCreationPerVolumeRateExceeded", msg));
        }
        Err(ApiError::new(
            "IncorrectState",
            if msg.is_empty() {
                "the attach daemon closed the control connection".into()
            } else {
                msg
            },
        ))
    }

    fn cut(&mut self, id: &SnapshotId, all: bool) -> ApiResult<Vec<u64>> {
        match self {
            Transport::Direct { device, .. } => device
                .cut(
                    id.as_str(),
                    all,
                    crate::volume::service::MAX_PENDING_SNAPSHOTS,
                )
                .map_err(vol_err),
            Transport::Daemon { .. } => {
                let list = self.request(&crate::volume::control::Request::Cut {
                    snapshot: id.to_string(),
                    all,
                })?;
                list.split_whitespace()
                    .map(|c| {
                        c.parse::<u64>().map_err(|_| {
                            ApiError::internal("the attach daemon sent a bad chunk list")
                        })
                    })
                    .collect()
            }
        }
    }

    /// A reader of this cut for one pipeline worker.
    fn reader(&self) -> ApiResult<CutReader<'_>> {
        match self {
            Transport::Direct { device, .. } => Ok(CutReader::Device(device)),
            Transport::Daemon { path, .. } => Ok(CutReader::Daemon(Transport::connect(path)?)),
        }
    }

    /// READ of one chunk over the control socket, into `buf`.
    fn read_into(&mut self, id: &SnapshotId, chunk: u64, buf: &mut AlignedBuf) -> ApiResult<()> {
        let len: usize = self
            .request(&crate::volume::control::Request::Read {
                snapshot: id.to_string(),
                chunk,
            })?
            .parse()
            .map_err(|_| ApiError::internal("the attach daemon sent a bad length"))?;
        if len > CHUNK_SIZE as usize || len > buf.capacity() {
            return Err(ApiError::internal(
                "the attach daemon sent an oversized chunk",
            ));
        }
        buf.set_len(len);
        if let Transport::Daemon { reader, writer, .. } = self {
            if let Err(e) = reader.read_exact(buf) {
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return Err(control_io_error("READ", e));
            }
        }
        Ok(())
    }

    fn finish(&mut self, id: &SnapshotId, ok: bool) -> ApiResult<()> {
        match self {
            Transport::Direct { device, .. } => {
                device.finish_cut(id.as_str(), ok).map_err(vol_err)?;
                device.close().map_err(vol_err)
            }
            Transport::Daemon { .. } => self
                .request(&crate::volume::control::Request::Finish {
                    snapshot: id.to_string(),
                    ok,
                })
                .map(drop),
        }
    }
}

/// An I/O failure on the control socket, a timeout named as such.
fn control_io_error(request: &str, e: std::io::Error) -> ApiError {
    let verb = request.split_whitespace().next().unwrap_or(request);
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        return ApiError::internal(format!(
            "the attach daemon did not answer {verb} within {} s; it may be hung: \
             check `keyvol volume status`",
            CONTROL_TIMEOUT.as_secs()
        ));
    }
    ApiError::internal(format!("attach daemon ({verb}): {e}"))
}

/// The completed snapshot the volume's change log is relative to.
fn parent_of(
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

pub(super) fn put(store: &ChunkStore, m: &Manifest, mac: &crate::secret::Key256) -> ApiResult<()> {
    store.put_manifest(&m.seal(mac)).map(drop).map_err(snap_err)
}

fn record_job(s: &Session, id: &SnapshotId) -> ApiResult<()> {
    db(s)?
        .execute(
            "INSERT OR REPLACE INTO snapshot_jobs (snapshot_id, pid) VALUES (?1, ?2)",
            rusqlite::params![id.as_str(), std::process::id() as i64],
        )
        .map_err(db_err)?;
    Ok(())
}

fn end_job(s: &Session, id: &SnapshotId) -> ApiResult<()> {
    db(s)?
        .execute(
            "DELETE FROM snapshot_jobs WHERE snapshot_id = ?1",
            [id.as_str()],
        )
        .map_err(db_err)?;
    Ok(())
}

/// CreateSnapshot: cuts the volume at once (point in time), stores the
/// pending manifest, then stores every changed chunk and completes.
/// Returns the final snapshot; a failure leaves it in state `error`.
pub fn create(
    s: &Session,
    vol: &str,
    opts: &CreateOptions,
    rep: &mut dyn Reporter,
) -> ApiResult<Value> {
    let vols = Volumes::open(s)?.with_snapshot_source(SNAPSHOT_SOURCE);
    let r = vols.get(vol)?;
    if vols.remote()? {
        return Err(ApiError::incorrect_state(format!(
            "Snapshots of {vol} are the control plane's to make, and this host's volume records are at a control plane on another machine (kms-endpoint), which cannot read this host's data: snapshots of volumes on such hosts are not offered yet"
        )));
    }
    crate::ec2::hosts::check_data_here(s, r.volume_id.as_str())?;
    // Before anything else: only this volume's own mountpoint is frozen.
    let freeze_dir = match &opts.freeze {
        Some(dir) => Some(super::freeze::volume_mountpoint(&vols, &r, dir)?),
        None => None,
    };
    let store = store_for(s, &s.ctx.region)?;
    let dek = vols.data_key(&r)?;
    let mac = manifest_mac_key(&dek);
    drop(dek);
    let parent = parent_of(s, &store, &r.volume_id, &mac)?;
    let id = SnapshotId::generate();
    let mut transport = match vols.lock_detached(&r) {
        Some(lock) => Transport::Direct {
            device: Box::new(vols.open_device(&r)?),
            _lock: lock,
        },
        None => Transport::connect(&vols.control_path(&r.volume_id))?,
    };
    let frozen = match &freeze_dir {
        Some(dir) => Some(super::freeze::Frozen::freeze(dir)?),
        None => None,
    };
    let cut = transport.cut(&id, parent.is_none());
    let thawed = frozen.map(super::freeze::Frozen::thaw).transpose();
    let chunks = cut?;
    thawed?;
    let mut m = Manifest {
        snapshot_id: id.clone(),
        volume_id: r.volume_id.clone(),
        volume_size_bytes: r.size,
        block_size: BLOCK_SIZE,
        parent_snapshot_id: parent.as_ref().map(|p| p.snapshot_id.clone()),
        lineage_id: r.volume_id.to_string(),
        source_snapshot_id: None,
        source_region: None,
        owner_id: s.ctx.caller.account.clone(),
        region: s.ctx.region.clone(),
        kms_key_id: r.kms_key_arn.clone(),
        encrypted_data_key: r.encrypted_data_key.clone(),
        encryption_context: [("aws:ebs:id".to_string(), r.volume_id.to_string())].into(),
        description: opts.description.clone(),
        start_time: now_rfc3339(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        create_volume_permissions: BTreeSet::new(),
        blocks: parent.map(|p| p.blocks).unwrap_or_default(),
    };
    // Blocks beyond a grown volume's old end stay as they are; the cut's
    // chunks are replaced below.
    record_job(s, &id)?;
    if let Err(e) = record_snapshot(s, &m).and_then(|()| put(&store, &m, &mac)) {
        let _ = transport.finish(&id, false);
        let _ = end_job(s, &id);
        let _ = forget_snapshot(s, &id);
        return Err(e);
    }
    rep.pending(&to_json(&m));
    let result = upload(&store, &transport, &mut m, &chunks, &mac, rep);
    let result = result.and_then(|()| check_present(&store, &m));
    let out = match result {
        Ok(()) => {
            m.state = SnapshotState::Completed;
            m.progress = 100;
            put(&store, &m, &mac)?;
            // The volume's log names this snapshot as the parent before the
            // change bits it captured are cleared: a crash in between
            // leaves bits set (read again next time), never bits cleared
            // against an older parent (changes lost from the lineage).
            db(s)?
                .execute(
                    "INSERT INTO snapshot_volume_log (volume_id, snapshot_id, start_time) VALUES (?1, ?2, ?3)
                     ON CONFLICT(volume_id) DO UPDATE SET snapshot_id = excluded.snapshot_id, start_time = excluded.start_time
                     WHERE excluded.start_time > snapshot_volume_log.start_time",
                    rusqlite::params![r.volume_id.as_str(), id.as_str(), m.start_time],
                )
                .map_err(db_err)?;
            transport.finish(&id, true)?;
            Ok(to_json(&m))
        }
        Err(e) => {
            m.state = SnapshotState::Error;
            m.state_message = Some(e.message.clone());
            let _ = put(&store, &m, &mac);
            let _ = transport.finish(&id, false);
            Err(ApiError::new(
                &e.code,
                format!("snapshot {id} failed: {}", e.message),
            ))
        }
    };
    end_job(s, &id)?;
    out
}

/// Stores the cut's `chunks` through the pipeline: each worker reads a
/// chunk over its own reader, names it (SHA-256) and stores it durably;
/// this thread records each stored chunk in the manifest and re-stores the
/// pending manifest every [`PENDING_PUT_EVERY`] chunks, so the pending
/// manifest names only chunks already durable (the GC contract).
fn upload(
    store: &ChunkStore,
    transport: &Transport,
    m: &mut Manifest,
    chunks: &[u64],
    mac: &crate::secret::Key256,
    rep: &mut dyn Reporter,
) -> ApiResult<()> {
    let total = chunks.len() as u64;
    let mut done = 0u64;
    let mut since_put = 0usize;
    let id = m.snapshot_id.clone();
    crate::pipeline::run(
        chunks,
        crate::pipeline::STORE_WORKERS,
        || Ok((transport.reader()?, AlignedBuf::new(CHUNK_SIZE as usize))),
        |(reader, buf), &c| {
            reader.read_into(&id, c, buf)?;
            if is_zero(buf) {
                return Ok(None);
            }
            store.put_chunk(buf).map(Some).map_err(snap_err)
        },
        |&c, stored| {
            match stored {
                Some(r) => m.blocks.insert(c, r),
                None => m.blocks.remove(&c),
            };
            done += 1;
            since_put += 1;
            rep.progress("snapshot", done, total);
            if since_put >= PENDING_PUT_EVERY {
                m.progress = progress_of(done, total);
                put(store, m, mac)?;
                since_put = 0;
            }
            Ok(())
        },
    )
}

// ---------------------------------------------------------------- describe

fn pid_alive(pid: i64) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for the process.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A pending snapshot of the caller whose job process died is marked
/// `error` (cleanup after a crash); others are returned unchanged.
fn reap(s: &Session, store: &ChunkStore, m: Manifest, bytes: &[u8]) -> ApiResult<Manifest> {
    if m.state != SnapshotState::Pending || m.owner_id != s.ctx.caller.account {
        return Ok(m);
    }
    // A direct-API upload whose Timeout passed ends in error here.
    if super::direct::ended_by_timeout(s, &m.snapshot_id)? {
        let bytes = store.get_manifest(&m.snapshot_id).map_err(snap_err)?;
        return Manifest::peek_unauthenticated(&bytes).map_err(snap_err);
    }
    let pid: Option<i64> = db(s)?
        .query_row(
            "SELECT pid FROM snapshot_jobs WHERE snapshot_id = ?1",
            [m.snapshot_id.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    match pid {
        Some(p) if !pid_alive(p) => {
            let dek = dek_of(s, &m)?;
            let mac = manifest_mac_key(&dek);
            let mut m = Manifest::open(bytes, &mac).map_err(snap_err)?;
            m.state = SnapshotState::Error;
            m.state_message = Some(
                "the process that made this snapshot stopped before it completed; delete it and create a new one"
                    .into(),
            );
            put(store, &m, &mac)?;
            end_job(s, &m.snapshot_id)?;
            Ok(m)
        }
        _ => Ok(m),
    }
}

/// DescribeSnapshots of one snapshot the caller owns or may use.
pub fn describe(s: &Session, id: &str) -> ApiResult<Value> {
    let id = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, bytes) = peek_visible(&store, s, &id)?;
    let m = reap(s, &store, m, &bytes)?;
    Ok(as_seen_by(s, &m))
}

/// A snapshot as the caller sees it: another account's snapshot shared
/// with the caller does not name its parent (which may not be shared).
fn as_seen_by(s: &Session, m: &Manifest) -> Value {
    let mut v = to_json(m);
    if m.owner_id != s.ctx.caller.account {
        if let Some(o) = v.as_object_mut() {
            o.remove("ParentSnapshotId");
        }
    }
    v
}

/// DescribeSnapshots: the caller's own snapshots in this region, or with
/// `restorable_by_self` those other accounts shared with the caller.
pub fn describe_snapshots(s: &Session, restorable_by_self: bool) -> ApiResult<Value> {
    let store = store_for(s, &s.ctx.region)?;
    let me = &s.ctx.caller.account;
    let records = access_map(s)?;
    let mut out = Vec::new();
    for id in store.list_manifests().map_err(snap_err)? {
        let Ok(bytes) = store.get_manifest(&id) else {
            continue;
        };
        let Ok(m) = Manifest::peek_unauthenticated(&bytes) else {
            continue;
        };
        let (owner, shared) = records.get(id.as_str()).cloned().unwrap_or_default().of(&m);
        if owner != m.owner_id {
            continue;
        }
        let wanted = if restorable_by_self {
            &owner != me && shared.contains(me)
        } else {
            &owner == me
        };
        if wanted {
            let m = reap(s, &store, m, &bytes)?;
            out.push(as_seen_by(s, &m));
        }
    }
    out.sort_by(|a, b| a["StartTime"].as_str().cmp(&b["StartTime"].as_str()));
    Ok(json!({ "Snapshots": out }))
}

/// A snapshot (EC2 shape) that ended in `error` as the error of the call
/// that waited for it, naming its StateMessage; any other state as is.
pub fn fail_on_error(v: Value) -> ApiResult<Value> {
    if v["State"] != "error" {
        return Ok(v);
    }
    Err(ApiError::new(
        "ResourceNotReady",
        format!(
            "Waiter SnapshotCompleted failed: snapshot {} is in state error: {}",
            v["SnapshotId"].as_str().unwrap_or("?"),
            v["StateMessage"].as_str().unwrap_or("no StateMessage")
        ),
    ))
}

/// Waits until the snapshot is completed (or fails with its StateMessage).
pub fn wait(s: &Session, id: &str, timeout: Duration) -> ApiResult<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = fail_on_error(describe(s, id)?)?;
        match v["State"].as_str() {
            Some("completed") => return Ok(v),
            _ if Instant::now() > deadline => {
                return Err(ApiError::new(
                    "ResourceNotReady",
                    format!(
                    "Waiter SnapshotCompleted failed: snapshot {id} is still pending after {} s",
                    timeout.as_secs()
                ),
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

// ---------------------------------------------------------------- delete

/// DeleteSnapshot: removes the manifest, then frees the chunks no other
/// snapshot uses. Refused while a volume restored from it still hydrates.
pub fn delete(s: &Session, id: &str) -> ApiResult<Value> {
    let id = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, bytes) = peek_visible(&store, s, &id)?;
    if m.owner_id != s.ctx.caller.account {
        return Err(ApiError::new(
            "UnauthorizedOperation",
            format!(
                "You are not authorized to delete snapshot {id}: it belongs to account {}",
                m.owner_id
            ),
        ));
    }
    let m = reap(s, &store, m, &bytes)?;
    let upload = super::direct::is_upload(s, &id).map_err(|e| ApiError::internal(e.message))?;
    if m.state == SnapshotState::Pending && !upload {
        return Err(ApiError::incorrect_state(format!(
            "Snapshot {id} is still pending; wait for it (keyvol-snap wait {id}) before deleting it"
        )));
    }
    // Opening the volumes first creates their table in a fresh home.
    let vols = Volumes::open(s)?.with_snapshot_source(SNAPSHOT_SOURCE);
    let users: Vec<String> = {
        let conn = db(s)?;
        let mut st = conn
            .prepare("SELECT volume_id FROM volumes WHERE snapshot_id = ?1")
            .map_err(db_err)?;
        let rows = st
            .query_map([id.as_str()], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        rows.filter_map(Result::ok).collect()
    };
    for v in users {
        if let Ok(vid) = v.parse::<VolumeId>() {
            let p = vols.hydration_path(&vid);
            if p.exists() && HydrationMap::open(&p).is_ok_and(|h| !h.pending_chunks().is_empty()) {
                return Err(ApiError::new(
                    "InvalidSnapshot.InUse",
                    format!("The snapshot {id} is currently in use by {v}, which is still being hydrated from it; attach it and hydrate it (or delete it) first"),
                ));
            }
        }
    }
    store.delete_manifest(&id).map_err(snap_err)?;
    forget_snapshot(s, &id)?;
    if upload {
        // An abandoned upload: its recorded blocks go with it.
        super::direct::forget(s, &id).map_err(|e| ApiError::internal(e.message))?;
    }
    super::direct::forget_readers(s, &id);
    let freed = free_unreferenced(&store, &m)?;
    super::direct::forget_checksums(s, &freed).map_err(|e| ApiError::internal(e.message))?;
    // Also sweep chunks left unreferenced earlier (past the grace period:
    // deletes during a pending snapshot, failed copies, crashed writers).
    // Best effort: the snapshot is deleted whatever the sweep finds.
    let _ = store.garbage_collect();
    Ok(Value::Null)
}

/// Deletes chunks of `gone` no remaining manifest names, and returns them.
/// Skipped while any snapshot is pending (its writer may rely on a chunk it
/// found stored); the store's grace-period GC frees them later.
fn free_unreferenced(store: &ChunkStore, gone: &Manifest) -> ApiResult<Vec<ChunkRef>> {
    let mut referenced = BTreeSet::new();
    for other in store.list_manifests().map_err(snap_err)? {
        let bytes = store.get_manifest(&other).map_err(snap_err)?;
        let m = Manifest::peek_unauthenticated(&bytes).map_err(snap_err)?;
        if m.state == SnapshotState::Pending {
            return Ok(Vec::new());
        }
        referenced.extend(m.blocks.values().copied());
    }
    let mut freed = Vec::new();
    for c in gone.blocks.values() {
        if !referenced.contains(c) {
            store.delete_chunk(c).map_err(snap_err)?;
            freed.push(*c);
        }
    }
    Ok(freed)
}

// ---------------------------------------------------------------- sharing

/// ModifySnapshotAttribute createVolumePermission: add/remove accounts.
/// Refused for snapshots under an AWS managed key and for public sharing.
pub fn modify_permission(
    s: &Session,
    id: &str,
    add: &[String],
    remove: &[String],
    group_all: bool,
) -> ApiResult<Value> {
    let sid = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, _) = peek_visible(&store, s, &sid)?;
    if m.owner_id != s.ctx.caller.account {
        return Err(ApiError::new(
            "UnauthorizedOperation",
            format!(
                "You are not authorized to modify snapshot {id}: it belongs to account {}",
                m.owner_id
            ),
        ));
    }
    if group_all {
        return Err(ApiError::new(
            "OperationNotPermitted",
            format!("Encrypted snapshots cannot be made public: snapshot {id} is encrypted; share it with specific accounts (--account ID) instead"),
        ));
    }
    let md = s
        .kms_client()?
        .describe_key(&ctx_in(s, &s.ctx.region), &m.kms_key_id)?;
    if md.key_manager == "AWS" {
        return Err(ApiError::new(
            "OperationNotPermitted",
            format!("Snapshot {id} is encrypted with an AWS managed key ({}); AWS managed keys cannot be shared. Copy the snapshot under a customer managed key and share the copy.", m.kms_key_id),
        ));
    }
    let (mut m, dek) = open_verified(&store, s, &sid)?;
    if m.state != SnapshotState::Completed {
        return Err(ApiError::incorrect_state(format!(
            "Snapshot {id} is {}; only completed snapshots can be shared",
            m.state
        )));
    }
    for a in add.iter().chain(remove) {
        a.parse::<AccountId>().map_err(|_| {
            ApiError::invalid_parameter(format!("'{a}' is not a 12-digit account id"))
        })?;
    }
    let (owner, mut shared) = access(s, &sid)?.of(&m);
    for a in add {
        if let Ok(acct) = a.parse::<AccountId>() {
            shared.insert(acct);
        }
    }
    for a in remove {
        if let Ok(acct) = a.parse::<AccountId>() {
            shared.remove(&acct);
        }
    }
    // The manifest carries a copy for readers of old homes; the records
    // written last are what decides.
    m.create_volume_permissions = shared.clone();
    put(&store, &m, &manifest_mac_key(&dek))?;
    set_shared_with(s, &m, &owner, &shared)?;
    describe_attribute(s, id)
}

/// DescribeSnapshotAttribute createVolumePermission.
pub fn describe_attribute(s: &Session, id: &str) -> ApiResult<Value> {
    let sid = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, _) = peek_visible(&store, s, &sid)?;
    if m.owner_id != s.ctx.caller.account {
        return Err(ApiError::new(
            "UnauthorizedOperation",
            format!("Only the owner of snapshot {id} can describe its attributes"),
        ));
    }
    let (_, shared) = access(s, &sid)?.of(&m);
    let perms: Vec<Value> = shared
        .iter()
        .map(|a| json!({"UserId": a.as_str()}))
        .collect();
    Ok(json!({"SnapshotId": sid, "CreateVolumePermissions": perms}))
}

// ---------------------------------------------------------------- blocks

/// ListSnapshotBlocks (EBS direct API).
pub fn list_blocks(s: &Session, id: &str) -> ApiResult<Value> {
    let sid = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, _) = open_verified(&store, s, &sid)?;
    let blocks: Vec<Value> = m
        .blocks
        .iter()
        .map(|(i, c)| json!({"BlockIndex": i, "BlockToken": c.to_hex()}))
        .collect();
    Ok(
        json!({"Blocks": blocks, "BlockSize": BLOCK_SIZE, "VolumeSize": m.volume_size_gib(), "VolumeSizeInBytes": m.volume_size_bytes, "SnapshotId": sid}),
    )
}

/// ListChangedBlocks (EBS direct API) between two snapshots.
pub fn list_changed_blocks(s: &Session, first: &str, second: &str) -> ApiResult<Value> {
    let a = parse_snapshot_id(first)?;
    let b = parse_snapshot_id(second)?;
    let store = store_for(s, &s.ctx.region)?;
    let (ma, _) = open_verified(&store, s, &a)?;
    let (mb, _) = open_verified(&store, s, &b)?;
    let blocks: Vec<Value> = changed_blocks(&ma, &mb)
        .into_iter()
        .map(|i| {
            let mut v = json!({"BlockIndex": i});
            if let Some(c) = ma.blocks.get(&i) {
                v["FirstBlockToken"] = json!(c.to_hex());
            }
            if let Some(c) = mb.blocks.get(&i) {
                v["SecondBlockToken"] = json!(c.to_hex());
            }
            v
        })
        .collect();
    Ok(
        json!({"ChangedBlocks": blocks, "BlockSize": BLOCK_SIZE, "VolumeSize": mb.volume_size_gib()}),
    )
}

// ---------------------------------------------------------------- copy

/// CopySnapshot, run by the destination account in the session's region:
/// re-encrypts every chunk under a new data key wrapped by the destination
/// key. Refusals (unknown or unshared snapshot, a key of another region)
/// are errors; a source key the caller cannot use ends the copy in state
/// `error` with EC2's StateMessage.
pub fn copy(s: &Session, id: &str, opts: &CopyOptions, rep: &mut dyn Reporter) -> ApiResult<Value> {
    let sid = parse_snapshot_id(id)?;
    let src_store = store_for(s, &opts.source_region)?;
    let (src_peek, src_bytes) = peek_visible(&src_store, s, &sid)?;
    if src_peek.state != SnapshotState::Completed {
        return Err(ApiError::incorrect_state(format!(
            "Snapshot {id} is {}; only completed snapshots can be copied",
            src_peek.state
        )));
    }
    let dest = s.ctx.region.clone();
    let dctx = ctx_in(s, &dest);
    let kms = s.kms_client()?;
    let key = opts.kms_key_id.as_deref().unwrap_or(crate::kms::EBS_ALIAS);
    if let Some(r) = key.strip_prefix("arn:").and_then(|a| a.split(':').nth(2)) {
        if r != dest.as_str() {
            return Err(ApiError::invalid_parameter(format!(
                "KMS key {key} is in region {r}; a copy into {dest} needs a key of {dest}"
            )));
        }
    }
    let md = kms.describe_key(&dctx, key)?;
    let arn = md.arn.clone();
    if md.region() != Some(dest.as_str()) {
        return Err(ApiError::invalid_parameter(format!(
            "KMS key {arn} is not a key of {dest}; a copy into {dest} needs a key of {dest}"
        )));
    }
    if md.key_spec != "SYMMETRIC_DEFAULT" {
        return Err(ApiError::invalid_parameter(format!(
            "KMS key {arn} is not a symmetric encryption key"
        )));
    }
    let store = store_for(s, &dest)?;
    let new_id = SnapshotId::generate();
    let context: BTreeMap<String, String> = [("aws:ebs:id".to_string(), new_id.to_string())].into();
    // An earlier copy of this lineage under the same key: reuse its data key
    // and its chunks of unchanged blocks.
    let prev = previous_copy(s, &store, &src_peek, &arn);
    let (dek, wrapped, prev) = match prev.and_then(|p| dek_of(s, &p).ok().map(|d| (p, d))) {
        Some((p, d)) => {
            let held = DataKey::from_volume_key(&d);
            let w = kms.encrypt_data_key(&dctx, &arn, &held, &context)?;
            (d, w.0, Some(p))
        }
        None => {
            let (w, k) = kms.generate_data_key(&dctx, &arn, 64, &context)?;
            (k.volume_key(&new_id.to_string())?, w.0, None)
        }
    };
    let mac = manifest_mac_key(&dek);
    let mut m = Manifest {
        snapshot_id: new_id.clone(),
        volume_id: src_peek.volume_id.clone(),
        volume_size_bytes: src_peek.volume_size_bytes,
        block_size: BLOCK_SIZE,
        parent_snapshot_id: prev.as_ref().map(|p| p.snapshot_id.clone()),
        lineage_id: src_peek.lineage_id.clone(),
        source_snapshot_id: Some(sid.clone()),
        source_region: Some(opts.source_region.clone()),
        owner_id: s.ctx.caller.account.clone(),
        region: dest.clone(),
        kms_key_id: arn.clone(),
        encrypted_data_key: wrapped,
        encryption_context: context,
        description: opts.description.clone().unwrap_or_else(|| {
            format!("Copied for DestinationSnapshot {new_id} from SourceSnapshot {sid}")
        }),
        start_time: now_rfc3339(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        create_volume_permissions: BTreeSet::new(),
        blocks: BTreeMap::new(),
    };
    record_job(s, &new_id)?;
    record_snapshot(s, &m)?;
    put(&store, &m, &mac)?;
    rep.pending(&to_json(&m));
    let result = (|| -> ApiResult<()> {
        let src_dek = dek_of(s, &src_peek)
            .map_err(|e| ApiError::new(&e.code, format!("{KEY_NOT_ACCESSIBLE}|{}", e.message)))?;
        let src = Manifest::open(&src_bytes, &manifest_mac_key(&src_dek)).map_err(snap_err)?;
        let src_cipher = SectorCipher::new(&src_dek).map_err(vol_err)?;
        let dst_cipher = SectorCipher::new(&dek).map_err(vol_err)?;
        // Unchanged blocks since the previous copy's source keep their chunk.
        let prev_src = prev.as_ref().and_then(|p| {
            let sid = p.source_snapshot_id.as_ref()?;
            let st = store_for(s, p.source_region.as_ref()?).ok()?;
            let bytes = st.get_manifest(sid).ok()?;
            Manifest::open(&bytes, &manifest_mac_key(&src_dek)).ok()
        });
        let mut todo: Vec<(u64, ChunkRef)> = Vec::new();
        for (i, c) in &src.blocks {
            let reused = prev_src
                .as_ref()
                .filter(|ps| ps.blocks.get(i) == Some(c))
                .and_then(|_| prev.as_ref()?.blocks.get(i));
            match reused {
                Some(r) => {
                    m.blocks.insert(*i, *r);
                }
                None => todo.push((*i, *c)),
            }
        }
        // The pipeline: each worker fetches a chunk (verified), re-encrypts
        // its data sectors in place (holes stay holes) and stores it
        // durably; this thread records it and re-stores the pending
        // manifest now and then.
        let total = todo.len() as u64;
        let mut done = 0u64;
        let mut since_put = 0usize;
        crate::pipeline::run(
            &todo,
            crate::pipeline::STORE_WORKERS,
            || Ok(AlignedBuf::new(CHUNK_SIZE as usize)),
            |buf, &(i, c)| {
                let n = src_store
                    .get_chunk_into(&c, buf.spare())
                    .map_err(|e| block_err(&sid, i, e))?;
                buf.set_len(n);
                on_data_sectors(buf, i * SECTORS_PER_CHUNK, |sec, run| {
                    src_cipher.decrypt_sectors(sec, run)?;
                    dst_cipher.encrypt_sectors(sec, run)
                })
                .map_err(vol_err)?;
                store.put_chunk(buf).map_err(snap_err)
            },
            |&(i, _), r| {
                m.blocks.insert(i, r);
                done += 1;
                since_put += 1;
                rep.progress("copy", done, total);
                if since_put >= PENDING_PUT_EVERY {
                    m.progress = progress_of(done, total);
                    put(&store, &m, &mac)?;
                    since_put = 0;
                }
                Ok(())
            },
        )?;
        check_present(&store, &m)
    })();
    match result {
        Ok(()) => {
            m.state = SnapshotState::Completed;
            m.progress = 100;
        }
        Err(e) => {
            m.state = SnapshotState::Error;
            m.blocks.clear();
            m.state_message = Some(match e.message.split_once('|') {
                Some((head, _)) if head == KEY_NOT_ACCESSIBLE => KEY_NOT_ACCESSIBLE.to_string(),
                _ => e.message.clone(),
            });
        }
    }
    put(&store, &m, &mac)?;
    end_job(s, &new_id)?;
    Ok(to_json(&m))
}

/// The newest completed copy of `src`'s lineage under `arn` owned by the
/// caller in `store`, if any.
fn previous_copy(s: &Session, store: &ChunkStore, src: &Manifest, arn: &str) -> Option<Manifest> {
    let mut best: Option<Manifest> = None;
    for id in store.list_manifests().ok()? {
        let Ok(bytes) = store.get_manifest(&id) else {
            continue;
        };
        let Ok(m) = Manifest::peek_unauthenticated(&bytes) else {
            continue;
        };
        if m.owner_id == s.ctx.caller.account
            && m.lineage_id == src.lineage_id
            && m.kms_key_id == arn
            && m.state == SnapshotState::Completed
            && m.source_snapshot_id.is_some()
            && m.source_snapshot_id.as_ref() != Some(&src.snapshot_id)
            && best.as_ref().is_none_or(|b| b.start_time < m.start_time)
        {
            best = Some(m);
        }
    }
    // Authenticate the candidate before trusting its block map.
    let m = best?;
    let bytes = store.get_manifest(&m.snapshot_id).ok()?;
    let dek = dek_of(s, &m).ok()?;
    Manifest::open(&bytes, &manifest_mac_key(&dek)).ok()
}

// ---------------------------------------------------------------- restore

/// Restores `snapshot` as a new volume of the caller (CreateVolume
/// --snapshot-id): usable at once, hydrated lazily.
pub fn restore(
    s: &Session,
    snapshot: &str,
    kms_key_id: Option<&str>,
    size: Option<u64>,
    hydrate: bool,
) -> ApiResult<VolumeRecord> {
    restore_with(s, snapshot, kms_key_id, size, hydrate, &mut Quiet)
}

/// [`restore`] with progress reports (for `--hydrate`).
pub fn restore_with(
    s: &Session,
    snapshot: &str,
    kms_key_id: Option<&str>,
    size: Option<u64>,
    hydrate: bool,
    rep: &mut dyn Reporter,
) -> ApiResult<VolumeRecord> {
    restore_as(
        s,
        VolumeId::generate(),
        snapshot,
        kms_key_id,
        size,
        hydrate,
        rep,
    )
}

/// [`restore_with`] as the volume `vol` (an id the control plane chose
/// and authorized).
pub fn restore_as(
    s: &Session,
    vol: VolumeId,
    snapshot: &str,
    kms_key_id: Option<&str>,
    size: Option<u64>,
    hydrate: bool,
    rep: &mut dyn Reporter,
) -> ApiResult<VolumeRecord> {
    let sid = parse_snapshot_id(snapshot)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, _) = open_verified(&store, s, &sid)?;
    if m.state != SnapshotState::Completed {
        return Err(ApiError::incorrect_state(format!(
            "Snapshot {sid} is {}; only completed snapshots can be restored",
            m.state
        )));
    }
    let size = size.unwrap_or(m.volume_size_bytes);
    if size < m.volume_size_bytes {
        return Err(ApiError::invalid_parameter(format!(
            "size {size} is smaller than snapshot {sid}'s {} bytes: give at least the snapshot's size",
            m.volume_size_bytes
        )));
    }
    check_present(&store, &m)?;
    let vols = Volumes::open(s)?.with_snapshot_source(SNAPSHOT_SOURCE);
    // As EBS: without a key, a volume from an own snapshot uses the
    // snapshot's key, one from a shared snapshot the caller's aws/ebs key;
    // the volume gets a new data key of its own either way.
    let key = match kms_key_id {
        Some(k) => k,
        None if m.owner_id == s.ctx.caller.account => m.kms_key_id.as_str(),
        None => crate::kms::EBS_ALIAS,
    };
    let (arn, wrapped) = vols.new_data_key(&vol, Some(key))?;
    let r = vols.insert(&vol, size, &arn, &wrapped, Some(sid.as_str()))?;
    let n = size.div_ceil(CHUNK_SIZE);
    let to_fetch: Vec<bool> = (0..n).map(|i| m.blocks.contains_key(&i)).collect();
    let made = HydrationMap::create(&vols.hydration_path(&vol), &to_fetch).map_err(vol_err);
    let hydrated = made.and_then(|()| {
        if !hydrate {
            return Ok(());
        }
        let _lock = vols.lock_detached(&r);
        let dev = vols.open_device(&r)?;
        dev.hydrate_all(&mut |d, t| rep.progress("restore", d, t))
            .map_err(|e| ApiError::new("SnapshotIntegrityError", e.to_string()))?;
        dev.close().map_err(vol_err)
    });
    // A volume restored from another account's snapshot must stay readable
    // until it is hydrated, even if the owner later narrows its key policy:
    // as EBS, a grant on the snapshot's key made now (via EC2, for the
    // restoring principal, on the snapshot's own encryption context) and
    // retired once nothing is left to fetch.
    let granted = hydrated.and_then(|()| {
        if m.owner_id == s.ctx.caller.account {
            return Ok(());
        }
        grant_for_restore(s, &m, &vol)?;
        if hydrate {
            retire_restore_grant(s, &vol)?;
        }
        Ok(())
    });
    if let Err(e) = granted {
        let _ = retire_restore_grant(s, &vol);
        let _ = vols.delete(vol.as_str());
        return Err(e);
    }
    Ok(r)
}

fn grant_for_restore(s: &Session, m: &Manifest, vol: &VolumeId) -> ApiResult<()> {
    let me = &s.ctx.caller.principal_arn;
    let g = s.kms_client()?.call(
        &ctx_in(s, &m.region),
        "CreateGrant",
        json!({
            "KeyId": m.kms_key_id,
            "GranteePrincipal": me,
            "RetiringPrincipal": me,
            "Operations": ["Decrypt"],
            "Constraints": {"EncryptionContextEquals": m.encryption_context},
            "Name": format!("keyvol-restore-{vol}"),
        }),
    )?;
    let id = g["GrantId"].as_str().unwrap_or_default().to_string();
    db(s)?
        .execute(
            "INSERT OR REPLACE INTO restore_grants (volume_id, region, key_arn, grant_id) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![vol.as_str(), m.region.as_str(), m.kms_key_id, id],
        )
        .map_err(db_err)?;
    Ok(())
}

/// Retires the grant a restore of `vol` from a shared snapshot made, if
/// any (hydration finished, or the volume is deleted).
pub fn retire_restore_grant(s: &Session, vol: &VolumeId) -> ApiResult<()> {
    let c = db(s)?;
    let row: Option<(String, String, String)> = c
        .query_row(
            "SELECT region, key_arn, grant_id FROM restore_grants WHERE volume_id = ?1",
            [vol.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db_err)?;
    let Some((region, key, grant)) = row else {
        return Ok(());
    };
    let region: Region = region
        .parse()
        .map_err(|_| ApiError::internal(format!("restore grant of {vol}: bad region")))?;
    match s.kms_client()?.call(
        &ctx_in(s, &region),
        "RetireGrant",
        json!({"KeyId": key, "GrantId": grant}),
    ) {
        Ok(_) => {}
        // Already gone (revoked by the key's owner, or the key deleted).
        Err(e) if matches!(e.code, crate::kms::ErrorCode::NotFoundException) => {}
        Err(e) => return Err(e.into()),
    }
    c.execute(
        "DELETE FROM restore_grants WHERE volume_id = ?1",
        [vol.as_str()],
    )
    .map_err(db_err)?;
    Ok(())
}

/// The grant id of a restore still hydrating from another account's
/// snapshot, if any.
pub fn restore_grant(s: &Session, vol: &VolumeId) -> ApiResult<Option<String>> {
    db(s)?
        .query_row(
            "SELECT grant_id FROM restore_grants WHERE volume_id = ?1",
            [vol.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)
}

/// What the volume layer needs of snapshots: the source a restored volume
/// hydrates from, and the release of the restore's grant when done.
pub const SNAPSHOT_SOURCE: crate::volume::service::SourceResolver =
    crate::volume::service::SourceResolver {
        source: hydration_source,
        hydrated: |s, r| retire_restore_grant(s, &r.volume_id),
    };

/// The snapshot a restored volume hydrates from, as the device's
/// [`ChunkSource`] (authenticated manifest, snapshot data key).
pub fn hydration_source(s: &Session, r: &VolumeRecord) -> ApiResult<Arc<dyn ChunkSource>> {
    let sid = parse_snapshot_id(r.snapshot_id.as_deref().unwrap_or(""))?;
    let region: Region = r
        .region
        .parse()
        .map_err(|_| ApiError::internal(format!("volume {} has a bad region", r.volume_id)))?;
    let store = store_for(s, &region)?;
    let bytes = store.get_manifest(&sid).map_err(snap_err)?;
    let m = Manifest::peek_unauthenticated(&bytes).map_err(snap_err)?;
    let dek = dek_of(s, &m)?;
    let m = Manifest::open(&bytes, &manifest_mac_key(&dek)).map_err(snap_err)?;
    let cipher = SectorCipher::new(&dek).map_err(vol_err)?;
    Ok(Arc::new(SnapshotSource {
        store,
        id: sid,
        blocks: m.blocks,
        cipher,
    }))
}

#[derive(Debug)]
struct SnapshotSource {
    store: ChunkStore,
    id: SnapshotId,
    blocks: BTreeMap<u64, ChunkRef>,
    cipher: SectorCipher,
}

impl ChunkSource for SnapshotSource {
    fn fetch(&self, index: u64, out: &mut [u8]) -> Result<(), VolumeError> {
        let Some(c) = self.blocks.get(&index) else {
            out.fill(0);
            return Ok(());
        };
        // Straight into `out` (one O_DIRECT read when it is aligned, as the
        // hydration workers' buffers are); an I/O error (EIO through FUSE)
        // names snapshot and block.
        let n = self
            .store
            .get_chunk_into(c, out)
            .map_err(|e| VolumeError::Io {
                op: "hydrating from",
                path: PathBuf::from(self.store.chunk_location(c)),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.in_block(&self.id, index).to_string(),
                ),
            })?;
        if n % SECTOR_SIZE != 0 {
            return Err(VolumeError::InvalidInput(format!(
                "snapshot {} block {index}: chunk of {n} bytes is not whole sectors of one block",
                self.id
            )));
        }
        out[n..].fill(0);
        on_data_sectors(&mut out[..n], index * SECTORS_PER_CHUNK, |sec, run| {
            self.cipher.decrypt_sectors(sec, run)
        })
    }
}
