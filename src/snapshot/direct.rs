//! Snapshots written and read block by block: the snapshot engine under the
//! EBS direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
//! ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock).
//!
//! A snapshot made this way is an ordinary keyvol snapshot: a manifest in
//! the store naming 512 KiB chunks, each the XTS ciphertext of its block
//! under the snapshot's data key (block `i` starts at sector `i * 128`),
//! owned and shared through the control plane's records.
//!
//! - **Start** makes a new data key under the given (or the account's
//!   default) KMS key, through the caller's KMS authorization via EC2; a
//!   child of a parent snapshot keeps the parent's key and data key, so its
//!   unchanged blocks are the parent's chunks. The pending manifest is
//!   stored at once (the store's GC contract), and the upload is recorded
//!   in `ebs_uploads`.
//! - **Put** checks the block's SHA-256 against `x-amz-Checksum` before
//!   anything is stored, encrypts it, stores the chunk, then records it in
//!   `ebs_upload_blocks` (one SQLite commit): an acknowledged block survives
//!   a crash of the server. An all-zero block is recorded as a hole. The
//!   pending manifest is re-stored every [`REPUT_EVERY`] blocks or
//!   [`REPUT_AFTER`], so it names every stored chunk older than the
//!   store's GC grace.
//! - **Complete** checks `ChangedBlocksCount` and the LINEAR aggregate
//!   checksum (SHA-256 over the concatenated per-block SHA-256 digests in
//!   block-index order), checks every chunk is present, and stores the
//!   completed manifest. A bad count or checksum changes nothing: the
//!   snapshot stays pending.
//! - An upload with no activity for its `Timeout` ends in `error`.
//! - **Reads** hand out block tokens: base64 of the expiry (8 bytes, big
//!   endian Unix seconds) and an HMAC-SHA256 (first 24 bytes) under a key
//!   derived from the snapshot's data key, over the snapshot id, block
//!   index, chunk name and expiry. A token is good for that block of that
//!   snapshot only, until it expires; nobody without the data key can make
//!   one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use rusqlite::OptionalExtension;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::api_error::ApiError;
use crate::ids::{SnapshotId, VolumeId};
use crate::secret::{ct_eq, Key256, VolumeDataKey};
use crate::session::Session;
use crate::volume::{SectorCipher, SECTOR_SIZE};

use super::engine;
use super::manifest::{manifest_mac_key, now_rfc3339};
use super::ops::{self, db_err};
use super::{ChunkRef, ChunkStore, Manifest, SnapshotState, BLOCK_SIZE};

/// The `VolumeId` of a snapshot made through the direct APIs (EBS's).
pub const DIRECT_VOLUME_ID: &str = "vol-ffffffff";
/// The largest volume a snapshot can describe, in GiB (EBS's 64 TiB).
pub const MAX_VOLUME_SIZE_GIB: u64 = 65_536;
/// How long a block token stays good.
pub const BLOCK_TOKEN_TTL_SECS: i64 = 12 * 3600;
/// The pending manifest is re-stored after this many new blocks...
pub const REPUT_EVERY: usize = 256;
/// ...or when a block arrives this long after the last re-store.
pub const REPUT_AFTER: Duration = Duration::from_secs(300);

const SECTORS_PER_BLOCK: u64 = BLOCK_SIZE as u64 / SECTOR_SIZE as u64;
const TOKEN_INFO: &[u8] = b"keyvol ebs block token v1";
const TOKEN_DOMAIN: &[u8] = b"keyvol ebs block token v1\n";
const CHECKSUM_SCOPE_INFO: &[u8] = b"keyvol ebs block checksum scope v1";
const PAGE_PREFIX: &str = "keyvol-ebs-page:";
/// How long a reader's unwrapped data key is reused before the KMS is
/// asked again (a key disabled or a policy narrowed takes effect by then).
const READER_TTL: Duration = Duration::from_secs(60);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ebs_uploads (
    snapshot_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    timeout_minutes INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    client_token TEXT,
    request_hash TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS ebs_uploads_token ON ebs_uploads (owner, client_token);
CREATE TABLE IF NOT EXISTS ebs_client_tokens (
    owner TEXT NOT NULL,
    client_token TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    PRIMARY KEY (owner, client_token)
);
CREATE TABLE IF NOT EXISTS ebs_upload_blocks (
    snapshot_id TEXT NOT NULL,
    block_index INTEGER NOT NULL,
    chunk TEXT,
    checksum BLOB NOT NULL,
    PRIMARY KEY (snapshot_id, block_index)
);
CREATE TABLE IF NOT EXISTS ebs_block_checksums (
    chunk TEXT NOT NULL,
    block_index INTEGER NOT NULL,
    scope BLOB NOT NULL,
    checksum BLOB NOT NULL,
    PRIMARY KEY (chunk, block_index, scope)
) WITHOUT ROWID;
"#;

/// An EBS error: its name, its `Reason` and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectError {
    pub code: &'static str,
    pub reason: Option<&'static str>,
    pub message: String,
}

pub type DirectResult<T> = Result<T, DirectError>;

impl DirectError {
    pub fn new(
        code: &'static str,
        reason: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        DirectError {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn validation(reason: &'static str, message: impl Into<String>) -> Self {
        DirectError::new("ValidationException", Some(reason), message)
    }

    pub fn not_found(id: &str) -> Self {
        DirectError::new(
            "ResourceNotFoundException",
            Some("SNAPSHOT_NOT_FOUND"),
            format!("The snapshot '{id}' does not exist."),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        DirectError::new("InternalServerException", None, message)
    }

    /// The HTTP status EBS answers the error with.
    pub fn status(&self) -> u16 {
        match self.code {
            "ValidationException" | "RequestThrottledException" => 400,
            "ConcurrentLimitExceededException" => 400,
            "ResourceNotFoundException" => 404,
            "AccessDeniedException" => 403,
            "ConflictException" => 409,
            "ServiceQuotaExceededException" => 402,
            _ => 500,
        }
    }
}

/// Errors of the layers below under EBS's names.
impl From<ApiError> for DirectError {
    fn from(e: ApiError) -> Self {
        let (code, reason) = match e.code.as_str() {
            "InvalidSnapshot.NotFound" => ("ResourceNotFoundException", Some("SNAPSHOT_NOT_FOUND")),
            "InvalidSnapshotID.Malformed" => ("ValidationException", Some("INVALID_SNAPSHOT_ID")),
            "UnauthorizedOperation" => ("AccessDeniedException", Some("UNAUTHORIZED_ACCOUNT")),
            "AccessDeniedException" => ("AccessDeniedException", Some("DEPENDENCY_ACCESS_DENIED")),
            "NotFoundException"
            | "DisabledException"
            | "KMSInvalidStateException"
            | "InvalidKeyUsageException"
            | "IncorrectKeyException"
            | "InvalidCiphertextException"
            | "InvalidKMSKey.NotFound" => ("ValidationException", Some("INVALID_CUSTOMER_KEY")),
            "ThrottlingException" => (
                "RequestThrottledException",
                Some("DEPENDENCY_REQUEST_THROTTLED"),
            ),
            "InvalidParameterValue"
            | "InvalidParameter"
            | "MissingParameter"
            | "IncorrectState"
            | "InvalidParameterCombination"
            | "ValidationException" => ("ValidationException", Some("INVALID_PARAMETER_VALUE")),
            _ => ("InternalServerException", None),
        };
        DirectError::new(code, reason, e.message)
    }
}

impl From<super::SnapshotError> for DirectError {
    fn from(e: super::SnapshotError) -> Self {
        DirectError::from(engine::snap_err(e))
    }
}

fn db(s: &Session) -> DirectResult<crate::home::PooledConnection> {
    let c = ops::db(s)?;
    s.home
        .ensure_schema(&c, "snapshot-direct", SCHEMA)
        .map_err(|e| DirectError::from(db_err(e)))?;
    Ok(c)
}

fn sql(e: rusqlite::Error) -> DirectError {
    DirectError::from(db_err(e))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn epoch_of(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

fn parse_id(id: &str) -> DirectResult<SnapshotId> {
    id.parse().map_err(|_| {
        DirectError::validation(
            "INVALID_SNAPSHOT_ID",
            format!(
                "'{}' is not a snapshot id: expected snap- followed by hex digits",
                id.chars().take(80).collect::<String>()
            ),
        )
    })
}

// ------------------------------------------------------------ uploads

/// What StartSnapshot asks for.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub volume_size_gib: u64,
    pub parent_snapshot_id: Option<String>,
    pub description: String,
    pub client_token: Option<String>,
    pub encrypted: Option<bool>,
    pub kms_key_arn: Option<String>,
    pub timeout_minutes: Option<i64>,
    /// A digest of every parameter (tags included), to tell a retry from
    /// another request with the same client token.
    pub request_hash: String,
}

/// One snapshot being uploaded, as this process holds it: its cipher, its
/// manifest so far, and when the manifest was last stored.
struct Upload {
    owner: String,
    cipher: SectorCipher,
    mac: Key256,
    /// Names the data key in `ebs_block_checksums`.
    scope: ChecksumScope,
    store: ChunkStore,
    state: Mutex<UploadState>,
    journal: Journal,
    /// The deadline last committed (Unix seconds), and the Timeout.
    deadline: std::sync::atomic::AtomicI64,
    timeout_secs: i64,
}

/// One block's record: index, chunk (None: a hole) and SHA-256.
type BlockRecord = (u64, Option<ChunkRef>, [u8; 32]);

/// The records of an upload's blocks, committed in groups: each writer
/// queues its record and then either finds it committed by the writer
/// before it or commits everything queued in one transaction (one fsync
/// for all the blocks that arrived meanwhile).
struct Journal {
    conn: Mutex<rusqlite::Connection>,
    queue: Mutex<JournalQueue>,
}

#[derive(Default)]
struct JournalQueue {
    next: u64,
    committed: u64,
    pending: Vec<BlockRecord>,
    /// Sequence ranges whose commit failed, with the error.
    failed: Vec<(u64, u64, DirectError)>,
}

impl Journal {
    fn new(conn: rusqlite::Connection) -> Journal {
        Journal {
            conn: Mutex::new(conn),
            queue: Mutex::new(JournalQueue::default()),
        }
    }

    /// Records `rec` durably; returns the deadline the commit set.
    fn record(&self, id: &SnapshotId, rec: BlockRecord, now: i64) -> DirectResult<Option<i64>> {
        let seq = {
            let mut q = lock(&self.queue);
            q.next += 1;
            q.pending.push(rec);
            q.next
        };
        let conn = lock(&self.conn);
        let (batch, upto) = {
            let mut q = lock(&self.queue);
            if let Some((_, _, e)) = q
                .failed
                .iter()
                .find(|(lo, hi, _)| (*lo..=*hi).contains(&seq))
            {
                return Err(e.clone());
            }
            if q.committed >= seq {
                return Ok(None);
            }
            (std::mem::take(&mut q.pending), q.next)
        };
        let lo = upto + 1 - batch.len() as u64;
        let result = (|| -> DirectResult<i64> {
            let tx = conn.unchecked_transaction().map_err(sql)?;
            let changed = tx
                .execute(
                    "UPDATE ebs_uploads SET deadline = ?2 + timeout_minutes * 60 WHERE snapshot_id = ?1",
                    rusqlite::params![id.as_str(), now],
                )
                .map_err(sql)?;
            if changed == 0 {
                return Err(DirectError::not_found(id.as_str()));
            }
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO ebs_upload_blocks (snapshot_id, block_index, chunk, checksum) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(sql)?;
                for (i, chunk, digest) in &batch {
                    st.execute(rusqlite::params![
                        id.as_str(),
                        *i as i64,
                        chunk.map(|c| c.to_hex()),
                        &digest[..]
                    ])
                    .map_err(sql)?;
                }
            }
            let deadline: i64 = tx
                .query_row(
                    "SELECT deadline FROM ebs_uploads WHERE snapshot_id = ?1",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(deadline)
        })();
        let mut q = lock(&self.queue);
        match result {
            Ok(deadline) => {
                q.committed = upto;
                Ok(Some(deadline))
            }
            Err(e) => {
                q.failed.push((lo, upto, e.clone()));
                if q.failed.len() > 64 {
                    q.failed.remove(0);
                }
                Err(e)
            }
        }
    }
}

struct UploadState {
    manifest: Manifest,
    since_put: usize,
    last_put: Instant,
}

type UploadKey = (PathBuf, String);

fn uploads() -> &'static Mutex<HashMap<UploadKey, Arc<Upload>>> {
    static UPLOADS: OnceLock<Mutex<HashMap<UploadKey, Arc<Upload>>>> = OnceLock::new();
    UPLOADS.get_or_init(Default::default)
}

fn upload_key(s: &Session, id: &SnapshotId) -> UploadKey {
    (s.home.dir().to_path_buf(), id.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// StartSnapshot: a pending snapshot of `volume_size_gib` GiB. Returns the
/// snapshot as StartSnapshot answers (without tags: the caller adds them).
pub fn start(s: &Session, req: &StartRequest, default_key: Option<&str>) -> DirectResult<Value> {
    if req.volume_size_gib == 0 || req.volume_size_gib > MAX_VOLUME_SIZE_GIB {
        return Err(DirectError::validation(
            "INVALID_VOLUME_SIZE",
            format!(
                "VolumeSize {} is not valid: give a size from 1 to {MAX_VOLUME_SIZE_GIB} GiB",
                req.volume_size_gib
            ),
        ));
    }
    let timeout = req.timeout_minutes.unwrap_or(60);
    if !(10..=4320).contains(&timeout) {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            format!("Timeout {timeout} is not valid: give 10 to 4320 minutes"),
        ));
    }
    if req.description.chars().count() > 255 {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            "Description is longer than 255 characters",
        ));
    }
    if req.parent_snapshot_id.is_some() && req.encrypted.is_some() {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            "ParentSnapshotId and Encrypted cannot be given together: a child snapshot is encrypted as its parent is",
        ));
    }
    if req.encrypted == Some(false) {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            "keyvol encrypts every snapshot: omit Encrypted or pass true",
        ));
    }
    if let Some(k) = &req.kms_key_arn {
        let ok =
            k.starts_with("arn:aws") && k.split(':').nth(2) == Some("kms") && k.contains(":key/");
        if !ok {
            return Err(DirectError::validation(
                "INVALID_CUSTOMER_KEY",
                format!(
                    "KmsKeyArn '{}' is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)",
                    k.chars().take(128).collect::<String>()
                ),
            ));
        }
    }
    let owner = s.ctx.caller.account.clone();
    if let Some(token) = &req.client_token {
        if token.chars().count() > 255 {
            return Err(DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                "ClientToken is longer than 255 characters",
            ));
        }
        let seen: Option<(String, String)> = db(s)?
            .query_row(
                "SELECT snapshot_id, request_hash FROM ebs_client_tokens WHERE owner = ?1 AND client_token = ?2",
                rusqlite::params![owner.as_str(), token],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        if let Some((id, hash)) = seen {
            if hash != req.request_hash {
                return Err(DirectError::new(
                    "ConflictException",
                    None,
                    "The request uses the same client token as a previous, but non-identical request.",
                ));
            }
            let id = parse_id(&id)?;
            let store = ops::store_for(s, &s.ctx.region)?;
            let (m, _) = ops::peek_visible(&store, s, &id)?;
            return Ok(start_response(&m));
        }
    }
    check_start_quotas(s, owner.as_str())?;

    let store = ops::store_for(s, &s.ctx.region)?;
    let id = SnapshotId::generate();
    let (parent, key_arn, wrapped, context, dek) = match &req.parent_snapshot_id {
        Some(p) => {
            let pid = parse_id(p)?;
            let (pm, dek) = ops::open_verified(&store, s, &pid).map_err(|e| {
                if e.code == "InvalidSnapshot.NotFound" {
                    DirectError::new(
                        "ResourceNotFoundException",
                        Some("DEPENDENCY_RESOURCE_NOT_FOUND"),
                        format!("The parent snapshot '{pid}' does not exist."),
                    )
                } else {
                    e.into()
                }
            })?;
            if pm.owner_id != owner {
                return Err(DirectError::new(
                    "ResourceNotFoundException",
                    Some("DEPENDENCY_RESOURCE_NOT_FOUND"),
                    format!("The parent snapshot '{pid}' does not exist in this account."),
                ));
            }
            if pm.state != SnapshotState::Completed {
                return Err(DirectError::validation(
                    "INVALID_DEPENDENCY_REQUEST",
                    format!(
                        "The parent snapshot {pid} is {}; a parent must be completed",
                        pm.state
                    ),
                ));
            }
            if req.volume_size_gib < pm.volume_size_gib() {
                return Err(DirectError::validation(
                    "INVALID_VOLUME_SIZE",
                    format!(
                        "VolumeSize {} is smaller than the parent snapshot's {} GiB",
                        req.volume_size_gib,
                        pm.volume_size_gib()
                    ),
                ));
            }
            if let Some(k) = &req.kms_key_arn {
                if k != &pm.kms_key_id {
                    return Err(DirectError::validation(
                        "INVALID_CUSTOMER_KEY",
                        format!(
                            "KmsKeyArn must be the parent snapshot's key {} (keyvol keeps a child under its parent's key, so their unchanged blocks are shared)",
                            pm.kms_key_id
                        ),
                    ));
                }
            }
            (
                Some(pm.clone()),
                pm.kms_key_id.clone(),
                pm.encrypted_data_key.clone(),
                pm.encryption_context.clone(),
                dek,
            )
        }
        None => {
            let key = req.kms_key_arn.as_deref().or(default_key);
            let vols = crate::volume::service::Volumes::open(s)?;
            let (arn, wrapped) = vols.new_data_key(&id, key)?;
            let context: BTreeMap<String, String> =
                [("aws:ebs:id".to_string(), id.to_string())].into();
            let dek = ops::unwrap_key(s, &s.ctx.region, &arn, &wrapped, &context)?;
            (None, arn, wrapped, context, dek)
        }
    };
    let volume_id: VolumeId = DIRECT_VOLUME_ID
        .parse()
        .map_err(|_| DirectError::internal("the direct-API volume id does not parse"))?;
    let m = Manifest {
        snapshot_id: id.clone(),
        volume_id,
        volume_size_bytes: req.volume_size_gib << 30,
        block_size: BLOCK_SIZE,
        parent_snapshot_id: parent.as_ref().map(|p| p.snapshot_id.clone()),
        lineage_id: parent
            .as_ref()
            .map(|p| p.lineage_id.clone())
            .unwrap_or_else(|| id.to_string()),
        source_snapshot_id: None,
        source_region: None,
        owner_id: owner.clone(),
        region: s.ctx.region.clone(),
        kms_key_id: key_arn,
        encrypted_data_key: wrapped,
        encryption_context: context,
        description: req.description.clone(),
        start_time: now_rfc3339(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        create_volume_permissions: Default::default(),
        blocks: parent.map(|p| p.blocks).unwrap_or_default(),
    };
    let token = req
        .client_token
        .as_deref()
        .map(|t| (t, req.request_hash.as_str()));
    begin(s, store, &m, &dek, timeout, token)?;
    Ok(start_response(&m))
}

/// A pending snapshot of a volume whose data is on a volume host on
/// another machine (CreateSnapshot of a volume attached there): the
/// manifest `m` (the volume's id, key and data key `dek`, its parent's
/// blocks), written by that host block by block with PutSnapshotBlock
/// and CompleteSnapshot as an upload of the direct APIs would be.
pub fn start_volume_snapshot(
    s: &Session,
    store: ChunkStore,
    m: &Manifest,
    dek: &VolumeDataKey,
) -> DirectResult<()> {
    begin(s, store, m, dek, HOST_SNAPSHOT_TIMEOUT_MINUTES, None)
}

/// How long a volume host's snapshot upload may go without a block.
pub const HOST_SNAPSHOT_TIMEOUT_MINUTES: i64 = 60;

/// Records the upload of pending manifest `m` (the database row, the
/// client token, the snapshot's record, the pending manifest in the store)
/// and keeps it open in this process.
fn begin(
    s: &Session,
    store: ChunkStore,
    m: &Manifest,
    dek: &VolumeDataKey,
    timeout: i64,
    token: Option<(&str, &str)>,
) -> DirectResult<()> {
    let id = &m.snapshot_id;
    let owner = &m.owner_id;
    let mac = manifest_mac_key(dek);
    let cipher = SectorCipher::new(dek).map_err(|e| DirectError::internal(e.to_string()))?;
    let now = s.kms.clock().now();
    {
        let c = db(s)?;
        let tx = c.unchecked_transaction().map_err(sql)?;
        tx.execute(
            "INSERT INTO ebs_uploads (snapshot_id, owner, timeout_minutes, deadline) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id.as_str(), owner.as_str(), timeout, now + timeout * 60],
        )
        .map_err(sql)?;
        if let Some((token, hash)) = token {
            tx.execute(
                "INSERT INTO ebs_client_tokens (owner, client_token, snapshot_id, request_hash) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![owner.as_str(), token, id.as_str(), hash],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
    }
    ops::record_snapshot(s, m)?;
    engine::put(&store, m, &mac)?;
    lock(uploads()).insert(
        upload_key(s, id),
        Arc::new(Upload {
            owner: owner.to_string(),
            cipher,
            mac,
            scope: checksum_scope(dek),
            store,
            state: Mutex::new(UploadState {
                manifest: m.clone(),
                since_put: 0,
                last_put: Instant::now(),
            }),
            journal: Journal::new(journal_connection(s)?),
            deadline: (now + timeout * 60).into(),
            timeout_secs: timeout * 60,
        }),
    );
    Ok(())
}

/// StartSnapshot's count quotas, checked when the request arrives: open
/// uploads of the account, and snapshots it owns in the region.
fn check_start_quotas(s: &Session, owner: &str) -> DirectResult<()> {
    let q = crate::ebs::quota::of(s.home.dir());
    let c = db(s)?;
    let count = |sql_text: &str, params: &[&dyn rusqlite::ToSql]| -> DirectResult<u64> {
        c.prepare_cached(sql_text)
            .and_then(|mut st| st.query_row(params, |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(sql)
    };
    let open = count(
        "SELECT count(*) FROM ebs_uploads WHERE owner = ?1",
        &[&owner],
    )?;
    if open >= q.open_uploads {
        return Err(DirectError::new(
            "ConcurrentLimitExceededException",
            None,
            format!(
                "The account has {open} snapshots being written (StartSnapshot without CompleteSnapshot), its limit: complete or delete one first"
            ),
        ));
    }
    let owned = count(
        "SELECT count(*) FROM snapshot_records WHERE owner = ?1 AND region = ?2",
        &[&owner, &s.ctx.region.as_str()],
    )?;
    if owned >= q.snapshots_per_region {
        return Err(DirectError::new(
            "ServiceQuotaExceededException",
            Some("DEPENDENCY_SERVICE_QUOTA_EXCEEDED"),
            format!(
                "The account has {owned} snapshots in {}, the quota of snapshots per region: delete snapshots first",
                s.ctx.region
            ),
        ));
    }
    Ok(())
}

fn start_response(m: &Manifest) -> Value {
    let mut v = json!({
        "SnapshotId": m.snapshot_id,
        "OwnerId": m.owner_id.as_str(),
        "Status": m.state.to_string(),
        "StartTime": epoch_of(&m.start_time),
        "VolumeSize": m.volume_size_gib(),
        "BlockSize": BLOCK_SIZE,
        "KmsKeyArn": m.kms_key_id,
        "SseType": "sse-kms",
    });
    if !m.description.is_empty() {
        v["Description"] = json!(m.description);
    }
    if let Some(p) = &m.parent_snapshot_id {
        v["ParentSnapshotId"] = json!(p);
    }
    v
}

/// The upload of pending snapshot `id` of the caller, timed-out uploads
/// ended first.
fn open_upload(s: &Session, id: &SnapshotId) -> DirectResult<Arc<Upload>> {
    let now = s.kms.clock().now();
    let cached = lock(uploads()).get(&upload_key(s, id)).cloned();
    if let Some(u) = &cached {
        if u.owner != s.ctx.caller.account.as_str() {
            return Err(DirectError::not_found(id.as_str()));
        }
        if now <= u.deadline.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(u.clone());
        }
        // Past the deadline this process knows: the database decides.
    }
    let row: Option<(String, i64, i64)> = db(s)?
        .query_row(
            "SELECT owner, deadline, timeout_minutes FROM ebs_uploads WHERE snapshot_id = ?1",
            [id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql)?;
    let Some((owner, deadline, timeout_minutes)) = row else {
        lock(uploads()).remove(&upload_key(s, id));
        // Not an upload: another account's, unknown, or already completed.
        let store = ops::store_for(s, &s.ctx.region)?;
        return match ops::peek_visible(&store, s, id) {
            Ok((m, _)) if m.owner_id == s.ctx.caller.account => Err(DirectError::validation(
                "INVALID_SNAPSHOT_ID",
                format!(
                    "Snapshot {id} is {} and was not started with StartSnapshot, or is no longer being written: blocks can be written only to a pending snapshot of StartSnapshot",
                    m.state
                ),
            )),
            _ => Err(DirectError::not_found(id.as_str())),
        };
    };
    if owner != s.ctx.caller.account.as_str() {
        return Err(DirectError::not_found(id.as_str()));
    }
    if s.kms.clock().now() > deadline {
        expire(s, id)?;
        return Err(DirectError::validation(
            "WRITE_REQUEST_TIMEOUT",
            format!("Snapshot {id} timed out before it was completed and is now in state error"),
        ));
    }
    if let Some(u) = cached {
        u.deadline
            .store(deadline, std::sync::atomic::Ordering::Relaxed);
        return Ok(u);
    }
    // Not held by this process (a restart): rebuild from the store and the
    // recorded blocks.
    let store = ops::store_for(s, &s.ctx.region)?;
    let (mut m, dek) = ops::open_verified(&store, s, id)?;
    for (i, chunk) in recorded_blocks(s, id)? {
        match chunk {
            Some(c) => m.blocks.insert(i, c),
            None => m.blocks.remove(&i),
        };
    }
    let u = Arc::new(Upload {
        owner,
        cipher: SectorCipher::new(&dek).map_err(|e| DirectError::internal(e.to_string()))?,
        mac: manifest_mac_key(&dek),
        scope: checksum_scope(&dek),
        store,
        state: Mutex::new(UploadState {
            manifest: m,
            since_put: 0,
            last_put: Instant::now(),
        }),
        journal: Journal::new(journal_connection(s)?),
        deadline: deadline.into(),
        timeout_secs: timeout_minutes * 60,
    });
    Ok(lock(uploads())
        .entry(upload_key(s, id))
        .or_insert(u)
        .clone())
}

/// The upload's own connection for its block records (held as long as the
/// upload is).
fn journal_connection(s: &Session) -> DirectResult<rusqlite::Connection> {
    let c = s
        .home
        .connect()
        .map_err(|e| DirectError::internal(e.to_string()))?;
    drop(db(s)?);
    Ok(c)
}

type Recorded = Vec<(u64, Option<ChunkRef>)>;

fn recorded_blocks(s: &Session, id: &SnapshotId) -> DirectResult<Recorded> {
    let c = db(s)?;
    let mut st = c
        .prepare("SELECT block_index, chunk FROM ebs_upload_blocks WHERE snapshot_id = ?1 ORDER BY block_index")
        .map_err(sql)?;
    let rows = st
        .query_map([id.as_str()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        let (i, c) = row.map_err(sql)?;
        let chunk = match c {
            Some(h) => Some(h.parse::<ChunkRef>().map_err(DirectError::internal)?),
            None => None,
        };
        out.push((i as u64, chunk));
    }
    Ok(out)
}

/// Ends a timed-out upload: the snapshot is `error`.
fn expire(s: &Session, id: &SnapshotId) -> DirectResult<()> {
    let timeout: i64 = db(s)?
        .query_row(
            "SELECT timeout_minutes FROM ebs_uploads WHERE snapshot_id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?
        .unwrap_or(60);
    let store = ops::store_for(s, &s.ctx.region)?;
    let (mut m, dek) = ops::open_verified(&store, s, id)?;
    for (i, chunk) in recorded_blocks(s, id)? {
        match chunk {
            Some(c) => m.blocks.insert(i, c),
            None => m.blocks.remove(&i),
        };
    }
    m.state = SnapshotState::Error;
    m.state_message = Some(format!(
        "The snapshot was not completed within its Timeout of {timeout} minutes after its last block"
    ));
    engine::put(&store, &m, &manifest_mac_key(&dek))?;
    forget(s, id)
}

/// Drops what the upload of `id` recorded (completed, expired, deleted).
pub fn forget(s: &Session, id: &SnapshotId) -> DirectResult<()> {
    let c = db(s)?;
    for q in [
        "DELETE FROM ebs_upload_blocks WHERE snapshot_id = ?1",
        "DELETE FROM ebs_uploads WHERE snapshot_id = ?1",
    ] {
        c.execute(q, [id.as_str()]).map_err(sql)?;
    }
    lock(uploads()).remove(&upload_key(s, id));
    Ok(())
}

/// The state of upload `id`: `None` when it is not an upload of the
/// direct APIs, `Some(true)` while it is open, `Some(false)` when its
/// Timeout passed (it is ended here, DescribeSnapshots then shows `error`).
fn upload_open(s: &Session, id: &SnapshotId) -> DirectResult<Option<bool>> {
    let deadline: Option<i64> = db(s)?
        .query_row(
            "SELECT deadline FROM ebs_uploads WHERE snapshot_id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    match deadline {
        None => Ok(None),
        Some(d) if s.kms.clock().now() > d => {
            expire(s, id)?;
            Ok(Some(false))
        }
        Some(_) => Ok(Some(true)),
    }
}

/// Is `id` an open upload of the direct APIs?
pub fn is_upload(s: &Session, id: &SnapshotId) -> DirectResult<bool> {
    Ok(upload_open(s, id)? == Some(true))
}

/// Ends the upload `id` when its Timeout passed; true when it did.
pub(super) fn ended_by_timeout(s: &Session, id: &SnapshotId) -> crate::api_error::ApiResult<bool> {
    upload_open(s, id)
        .map(|open| open == Some(false))
        .map_err(|e| ApiError::new(e.code, e.message))
}

/// The SHA-256 of `data`, checked against a base64 `x-amz-Checksum`.
fn check_checksum(data: &[u8], declared: &str, what: &str) -> DirectResult<[u8; 32]> {
    let digest: [u8; 32] = Sha256::digest(data).into();
    let given = b64().decode(declared.trim()).map_err(|_| {
        DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            format!("The checksum of {what} is not base64"),
        )
    })?;
    if !ct_eq(&given, &digest) {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            format!("The checksum of {what} does not match its data: the block was not stored"),
        ));
    }
    Ok(digest)
}

/// PutSnapshotBlock: stores block `index` of pending snapshot `id`, with
/// the client's `x-amz-Progress` when it sent one. Returns the block's
/// checksum (base64 SHA-256).
pub fn put_block(
    s: &Session,
    id: &str,
    index: u64,
    data: &[u8],
    checksum: &str,
    progress: Option<u8>,
) -> DirectResult<String> {
    let id = parse_id(id)?;
    if data.len() != BLOCK_SIZE as usize {
        return Err(DirectError::validation(
            "INVALID_BLOCK",
            format!(
                "A block is {} bytes, not {}: send exactly 524288 bytes (pad the last block with zeros)",
                BLOCK_SIZE,
                data.len()
            ),
        ));
    }
    let digest = check_checksum(data, checksum, &format!("block {index}"))?;
    ops::host::check_writer(s, &id)?;
    let u = open_upload(s, &id)?;
    let blocks = lock(&u.state).manifest.block_count();
    if index >= blocks {
        return Err(DirectError::validation(
            "INVALID_BLOCK",
            format!("BlockIndex {index} is beyond the end of the snapshot's {blocks} blocks"),
        ));
    }
    let chunk = if data.iter().all(|&b| b == 0) {
        None
    } else {
        // Encrypted in place: once encrypted the buffer holds no plaintext,
        // so only a failed encryption needs wiping.
        let mut buf = data.to_vec();
        if let Err(e) = u
            .cipher
            .encrypt_sectors(index * SECTORS_PER_BLOCK, &mut buf)
        {
            zeroize::Zeroize::zeroize(&mut buf);
            return Err(DirectError::internal(e.to_string()));
        }
        Some(u.store.put_chunk(&buf)?)
    };
    let now = s.kms.clock().now();
    match u.journal.record(&id, (index, chunk, digest), now) {
        Ok(Some(d)) => u.deadline.store(d, std::sync::atomic::Ordering::Relaxed),
        Ok(None) => {
            u.deadline
                .fetch_max(now + u.timeout_secs, std::sync::atomic::Ordering::Relaxed);
        }
        Err(e) => {
            if e.code == "ResourceNotFoundException" {
                // Deleted or ended by another process meanwhile.
                lock(uploads()).remove(&upload_key(s, &id));
            }
            return Err(e);
        }
    }
    let mut st = lock(&u.state);
    match chunk {
        Some(c) => st.manifest.blocks.insert(index, c),
        None => st.manifest.blocks.remove(&index),
    };
    st.since_put += 1;
    if let Some(p) = progress {
        // The client's x-amz-Progress, shown by DescribeSnapshots; 100 only
        // once completed.
        st.manifest.progress = p.min(99);
    }
    if st.since_put >= REPUT_EVERY || st.last_put.elapsed() >= REPUT_AFTER {
        engine::put(&u.store, &st.manifest, &u.mac)?;
        st.since_put = 0;
        st.last_put = Instant::now();
    }
    Ok(b64().encode(digest))
}

/// The LINEAR aggregate checksum: SHA-256 over the blocks' SHA-256
/// digests in block-index order.
pub fn linear_checksum(digests: impl IntoIterator<Item = [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

/// CompleteSnapshot.
pub fn complete(
    s: &Session,
    id: &str,
    changed_blocks_count: u64,
    checksum: Option<&str>,
    algorithm: Option<&str>,
    aggregation: Option<&str>,
) -> DirectResult<Value> {
    let id = parse_id(id)?;
    if let Some(a) = algorithm {
        if a != "SHA256" {
            return Err(DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                format!(
                    "ChecksumAlgorithm '{}' is not supported: use SHA256",
                    a.chars().take(32).collect::<String>()
                ),
            ));
        }
    }
    if let Some(a) = aggregation {
        if a != "LINEAR" {
            return Err(DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                format!(
                    "ChecksumAggregationMethod '{}' is not supported: use LINEAR",
                    a.chars().take(32).collect::<String>()
                ),
            ));
        }
    }
    if checksum.is_some() && (algorithm.is_none() || aggregation.is_none()) {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            "A Checksum needs ChecksumAlgorithm SHA256 and ChecksumAggregationMethod LINEAR",
        ));
    }
    ops::host::check_writer(s, &id)?;
    let u = open_upload(s, &id)?;
    let digests: Vec<[u8; 32]> = {
        let c = lock(&u.journal.conn);
        let mut st = c
            .prepare("SELECT checksum FROM ebs_upload_blocks WHERE snapshot_id = ?1 ORDER BY block_index")
            .map_err(sql)?;
        let rows = st
            .query_map([id.as_str()], |r| r.get::<_, Vec<u8>>(0))
            .map_err(sql)?;
        let mut out = Vec::new();
        for r in rows {
            let d = r.map_err(sql)?;
            out.push(
                d.try_into().map_err(|_| {
                    DirectError::internal("a recorded block checksum is not 32 bytes")
                })?,
            );
        }
        out
    };
    if digests.len() as u64 != changed_blocks_count {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            format!(
                "ChangedBlocksCount is {changed_blocks_count} but {} blocks were written to snapshot {id}; the snapshot stays pending",
                digests.len()
            ),
        ));
    }
    if let Some(sum) = checksum {
        let want = linear_checksum(digests.iter().copied());
        let given = b64().decode(sum.trim()).unwrap_or_default();
        if !ct_eq(&given, &want) {
            return Err(DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                format!("The aggregated checksum does not match the {} blocks written to snapshot {id}; the snapshot stays pending", digests.len()),
            ));
        }
    }
    let mut st = lock(&u.state);
    let mut m = st.manifest.clone();
    engine::check_present(&u.store, &m)?;
    m.state = SnapshotState::Completed;
    m.progress = 100;
    engine::put(&u.store, &m, &u.mac)?;
    let (volume, start_time) = (m.volume_id.clone(), m.start_time.clone());
    st.manifest = m;
    drop(st);
    keep_checksums(s, &id, &u.scope)?;
    forget(s, &id)?;
    if volume.as_str() != DIRECT_VOLUME_ID {
        // A volume host's snapshot of its volume: the volume's change log
        // (on that host) is now relative to it.
        ops::set_parent(s, &volume, &id, &start_time)?;
        ops::host::forget(s, &id)?;
    }
    Ok(json!({"Status": "completed"}))
}

/// Which data key a recorded block checksum belongs to: 16 bytes derived
/// from the data key (one-way), the same for a snapshot and its children.
/// With the chunk name and the block index it fixes the plaintext, so a
/// recorded digest is never served for other bytes.
type ChecksumScope = [u8; 16];

fn checksum_scope(dek: &VolumeDataKey) -> ChecksumScope {
    let mut out = [0u8; 16];
    derive(dek, CHECKSUM_SCOPE_INFO, &mut out);
    out
}

/// HKDF-SHA256 of the data key (no salt) with `info`, into `out`.
fn derive(dek: &VolumeDataKey, info: &[u8], out: &mut [u8]) {
    hkdf::Hkdf::<Sha256>::new(None, dek.expose())
        .expand(info, out)
        .expect("16 or 32 bytes is a valid HKDF-SHA256 output length");
}

/// Keeps the SHA-256 of every stored block of a completed upload, so that
/// GetSnapshotBlock answers its checksum without hashing the block again.
fn keep_checksums(s: &Session, id: &SnapshotId, scope: &ChecksumScope) -> DirectResult<()> {
    db(s)?
        .execute(
            "INSERT OR IGNORE INTO ebs_block_checksums (chunk, block_index, scope, checksum) \
             SELECT chunk, block_index, ?2, checksum FROM ebs_upload_blocks \
             WHERE snapshot_id = ?1 AND chunk IS NOT NULL",
            rusqlite::params![id.as_str(), &scope[..]],
        )
        .map_err(sql)?;
    Ok(())
}

fn recorded_checksum(
    s: &Session,
    chunk: &ChunkRef,
    index: u64,
    scope: &ChecksumScope,
) -> DirectResult<Option<[u8; 32]>> {
    let c = db(s)?;
    let mut st = c
        .prepare_cached(
            "SELECT checksum FROM ebs_block_checksums WHERE chunk = ?1 AND block_index = ?2 AND scope = ?3",
        )
        .map_err(sql)?;
    let found: Option<Vec<u8>> = st
        .query_row(
            rusqlite::params![chunk.to_hex(), index as i64, &scope[..]],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    Ok(found.and_then(|d| d.try_into().ok()))
}

/// Forgets the recorded checksums of chunks deleted from the store.
pub fn forget_checksums(s: &Session, chunks: &[ChunkRef]) -> DirectResult<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let c = db(s)?;
    let tx = c.unchecked_transaction().map_err(sql)?;
    {
        let mut st = tx
            .prepare_cached("DELETE FROM ebs_block_checksums WHERE chunk = ?1")
            .map_err(sql)?;
        for chunk in chunks {
            st.execute([chunk.to_hex()]).map_err(sql)?;
        }
    }
    tx.commit().map_err(sql)
}

// ------------------------------------------------------------ reads

/// A completed snapshot as one caller reads it: the manifest, the cipher
/// and the token key, kept for [`READER_TTL`].
struct Reader {
    manifest: Manifest,
    cipher: SectorCipher,
    token_key: Key256,
    scope: ChecksumScope,
    store: ChunkStore,
    made: Instant,
}

type ReaderKey = (PathBuf, String, String);

fn readers() -> &'static Mutex<HashMap<ReaderKey, Arc<Reader>>> {
    static READERS: OnceLock<Mutex<HashMap<ReaderKey, Arc<Reader>>>> = OnceLock::new();
    READERS.get_or_init(Default::default)
}

fn token_key(dek: &VolumeDataKey) -> Key256 {
    let mut okm = Zeroizing::new([0u8; 32]);
    derive(dek, TOKEN_INFO, &mut okm[..]);
    Key256::from_slice(&okm[..]).expect("okm is exactly 32 bytes")
}

fn open_reader(s: &Session, id: &SnapshotId) -> DirectResult<Arc<Reader>> {
    let key = (
        s.home.dir().to_path_buf(),
        id.to_string(),
        s.ctx.caller.principal_arn.clone(),
    );
    {
        let mut cache = lock(readers());
        cache.retain(|_, r| r.made.elapsed() < READER_TTL);
        if let Some(r) = cache.get(&key).cloned() {
            drop(cache);
            // Who may see it is decided on every call (an unshare takes
            // effect at once); only the unwrapped key is reused.
            if !ops::visible_to(s, &r.manifest)? {
                return Err(DirectError::not_found(id.as_str()));
            }
            return Ok(r);
        }
    }
    let store = ops::store_for(s, &s.ctx.region)?;
    let (m, dek) = ops::open_verified(&store, s, id)?;
    if m.state != SnapshotState::Completed {
        return Err(DirectError::validation(
            "INVALID_SNAPSHOT_ID",
            format!(
                "Snapshot {id} is {}; blocks can be read only from a completed snapshot",
                m.state
            ),
        ));
    }
    let r = Arc::new(Reader {
        cipher: SectorCipher::new(&dek).map_err(|e| DirectError::internal(e.to_string()))?,
        token_key: token_key(&dek),
        scope: checksum_scope(&dek),
        manifest: m,
        store,
        made: Instant::now(),
    });
    lock(readers()).insert(key, r.clone());
    Ok(r)
}

/// Forgets every cached reader of snapshot `id` (deleted, unshared).
pub fn forget_readers(s: &Session, id: &SnapshotId) {
    let home = s.home.dir().to_path_buf();
    lock(readers()).retain(|(h, sid, _), _| !(h == &home && sid == id.as_str()));
}

type HmacSha256 = Hmac<Sha256>;

fn token_mac(key: &Key256, id: &SnapshotId, index: u64, chunk: &ChunkRef, expiry: i64) -> [u8; 24] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key.expose())
        .expect("HMAC-SHA256 takes a key of any length");
    mac.update(TOKEN_DOMAIN);
    mac.update(id.as_str().as_bytes());
    mac.update(b"\n");
    mac.update(&index.to_be_bytes());
    mac.update(chunk.as_bytes());
    mac.update(&expiry.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 24];
    out.copy_from_slice(&full[..24]);
    out
}

fn make_token(r: &Reader, index: u64, chunk: &ChunkRef, expiry: i64) -> String {
    let mut raw = Vec::with_capacity(32);
    raw.extend_from_slice(&expiry.to_be_bytes());
    raw.extend_from_slice(&token_mac(
        &r.token_key,
        &r.manifest.snapshot_id,
        index,
        chunk,
        expiry,
    ));
    b64().encode(raw)
}

fn page_start(token: Option<&str>, starting: Option<u64>) -> DirectResult<u64> {
    match token {
        None | Some("") => Ok(starting.unwrap_or(0)),
        Some(t) => b64()
            .decode(t)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| s.strip_prefix(PAGE_PREFIX).and_then(|n| n.parse().ok()))
            .ok_or_else(|| {
                DirectError::validation(
                    "INVALID_PAGE_TOKEN",
                    "The NextToken is not valid: pass the NextToken of the previous page unchanged",
                )
            }),
    }
}

fn page_limit(max_results: Option<i64>) -> DirectResult<usize> {
    match max_results {
        None => Ok(10_000),
        Some(n) if (100..=10_000).contains(&n) => Ok(n as usize),
        Some(n) => Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            format!("MaxResults {n} is not valid: give 100 to 10000"),
        )),
    }
}

/// Paging of block lists: up to `max_results` blocks from `start`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Paging<'a> {
    pub max_results: Option<i64>,
    pub next_token: Option<&'a str>,
    pub starting_block_index: Option<u64>,
}

fn next_page(items_after: bool, next_index: u64) -> Option<String> {
    items_after.then(|| b64().encode(format!("{PAGE_PREFIX}{next_index}")))
}

/// ListSnapshotBlocks of a completed snapshot the caller owns or may use.
pub fn list_blocks(s: &Session, id: &str, paging: Paging<'_>) -> DirectResult<Value> {
    let id = parse_id(id)?;
    let limit = page_limit(paging.max_results)?;
    let start = page_start(paging.next_token, paging.starting_block_index)?;
    let r = open_reader(s, &id)?;
    let expiry = s.kms.clock().now() + BLOCK_TOKEN_TTL_SECS;
    let mut it = r.manifest.blocks.range(start..).peekable();
    let mut blocks = Vec::new();
    while blocks.len() < limit {
        let Some((i, c)) = it.next() else { break };
        blocks.push(json!({"BlockIndex": i, "BlockToken": make_token(&r, *i, c, expiry)}));
    }
    let mut v = json!({
        "Blocks": blocks,
        "ExpiryTime": expiry,
        "VolumeSize": r.manifest.volume_size_gib(),
        "BlockSize": BLOCK_SIZE,
    });
    if let Some(t) = next_page(
        it.peek().is_some(),
        it.peek().map(|(i, _)| **i).unwrap_or(0),
    ) {
        v["NextToken"] = json!(t);
    }
    Ok(v)
}

/// ListChangedBlocks: the blocks that differ between two snapshots of one
/// lineage, or every block of `second` when `first` is not given.
pub fn list_changed_blocks(
    s: &Session,
    first: Option<&str>,
    second: &str,
    paging: Paging<'_>,
) -> DirectResult<Value> {
    let b_id = parse_id(second)?;
    let limit = page_limit(paging.max_results)?;
    let start = page_start(paging.next_token, paging.starting_block_index)?;
    let b = open_reader(s, &b_id)?;
    let a = match first {
        Some(f) => {
            let a_id = parse_id(f)?;
            let a = open_reader(s, &a_id)?;
            if a.manifest.lineage_id != b.manifest.lineage_id {
                return Err(DirectError::validation(
                    "UNRELATED_SNAPSHOTS",
                    format!("Snapshots {a_id} and {b_id} are not of the same lineage: compare snapshots of one volume or one chain of StartSnapshot parents"),
                ));
            }
            if !ct_eq(a.token_key.expose(), b.token_key.expose()) {
                return Err(DirectError::validation(
                    "UNRELATED_SNAPSHOTS",
                    format!("Snapshots {a_id} and {b_id} are encrypted under different data keys (one is a copy of the other's lineage), so their blocks cannot be compared"),
                ));
            }
            Some(a)
        }
        None => None,
    };
    let indices: Vec<u64> = match &a {
        Some(a) => super::changed_blocks(&a.manifest, &b.manifest),
        None => b.manifest.blocks.keys().copied().collect(),
    };
    let expiry = s.kms.clock().now() + BLOCK_TOKEN_TTL_SECS;
    let mut it = indices.into_iter().filter(|i| *i >= start).peekable();
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(i) = it.next() else { break };
        let mut v = json!({"BlockIndex": i});
        if let Some(a) = &a {
            if let Some(c) = a.manifest.blocks.get(&i) {
                v["FirstBlockToken"] = json!(make_token(a, i, c, expiry));
            }
        }
        if let Some(c) = b.manifest.blocks.get(&i) {
            v["SecondBlockToken"] = json!(make_token(&b, i, c, expiry));
        }
        out.push(v);
    }
    let mut v = json!({
        "ChangedBlocks": out,
        "ExpiryTime": expiry,
        "VolumeSize": b.manifest.volume_size_gib(),
        "BlockSize": BLOCK_SIZE,
    });
    if let Some(t) = next_page(it.peek().is_some(), it.peek().copied().unwrap_or(0)) {
        v["NextToken"] = json!(t);
    }
    Ok(v)
}

/// GetSnapshotBlock: the plaintext of block `index` and its checksum
/// (base64 SHA-256), for a token of that block.
pub fn get_block(
    s: &Session,
    id: &str,
    index: u64,
    token: &str,
) -> DirectResult<(Vec<u8>, String)> {
    let id = parse_id(id)?;
    let r = open_reader(s, &id)?;
    let bad = |why: &str| {
        DirectError::validation(
            "INVALID_BLOCK_TOKEN",
            format!("The BlockToken is not valid for block {index} of snapshot {id}: {why}"),
        )
    };
    let raw = b64().decode(token.trim()).map_err(|_| bad("not base64"))?;
    if raw.len() != 32 {
        return Err(bad(
            "pass a BlockToken of ListSnapshotBlocks or ListChangedBlocks unchanged",
        ));
    }
    let mut e = [0u8; 8];
    e.copy_from_slice(&raw[..8]);
    let expiry = i64::from_be_bytes(e);
    let Some(chunk) = r.manifest.blocks.get(&index) else {
        return Err(bad("the block is not in the snapshot"));
    };
    let want = token_mac(&r.token_key, &id, index, chunk, expiry);
    if !ct_eq(&raw[8..], &want) {
        return Err(bad("it was not issued for this block"));
    }
    if s.kms.clock().now() > expiry {
        return Err(bad("it has expired; list the blocks again for a new token"));
    }
    // The block is the caller's data, not key material: it leaves as the
    // response body without another copy.
    let mut data = r
        .store
        .get_chunk(chunk)
        .map_err(|e| DirectError::from(engine::snap_err(e.in_block(&id, index))))?;
    if data.len() != BLOCK_SIZE as usize {
        return Err(DirectError::internal(format!(
            "chunk {chunk} of block {index} is {} bytes, not {BLOCK_SIZE}",
            data.len()
        )));
    }
    engine::on_data_sectors(&mut data, index * SECTORS_PER_BLOCK, |sec, run| {
        r.cipher.decrypt_sectors(sec, run)
    })
    .map_err(|e| DirectError::internal(e.to_string()))?;
    // A block uploaded through PutSnapshotBlock has its SHA-256 recorded
    // (verified against the client's before it was stored); others are
    // hashed here. The chunk itself was verified against its name above,
    // so a recorded digest always belongs to these bytes.
    let digest = match recorded_checksum(s, chunk, index, &r.scope)? {
        Some(d) => d,
        None => Sha256::digest(&data[..]).into(),
    };
    Ok((data, b64().encode(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let t = next_page(true, 4096).unwrap();
        assert_eq!(page_start(Some(&t), None).unwrap(), 4096);
        assert_eq!(page_start(None, Some(7)).unwrap(), 7);
        assert_eq!(
            page_start(Some("bm90IGEgdG9rZW4="), None)
                .unwrap_err()
                .reason,
            Some("INVALID_PAGE_TOKEN")
        );
        assert!(next_page(false, 1).is_none());
        assert!(page_limit(Some(99)).is_err());
        assert_eq!(page_limit(None).unwrap(), 10_000);
    }

    #[test]
    fn linear_checksum_is_the_hash_of_the_digests_in_order() {
        let d1: [u8; 32] = Sha256::digest(b"one").into();
        let d2: [u8; 32] = Sha256::digest(b"two").into();
        let mut cat = d1.to_vec();
        cat.extend_from_slice(&d2);
        let want: [u8; 32] = Sha256::digest(&cat).into();
        assert_eq!(linear_checksum([d1, d2]), want);
        assert_ne!(linear_checksum([d2, d1]), want);
    }

    #[test]
    fn a_block_checksum_must_match() {
        let data = vec![7u8; 64];
        let good = b64().encode(Sha256::digest(&data));
        assert!(check_checksum(&data, &good, "block 0").is_ok());
        let bad = b64().encode(Sha256::digest(b"other"));
        assert!(check_checksum(&data, &bad, "block 0").is_err());
        assert!(check_checksum(&data, "***", "block 0").is_err());
    }
}
