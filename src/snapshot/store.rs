//! The snapshot chunk store: content-addressed chunks and manifests in a
//! local directory or any S3-compatible object store, behind one blocking
//! API.
//!
//! # Layout
//!
//! ```text
//! <prefix>/<region>/chunks/<aa>/<sha256 hex>     aa = first two hex digits
//! <prefix>/<region>/manifests/<snapshot-id>.json
//! ```
//!
//! A chunk's name is the SHA-256 of its bytes (the ciphertext), so a chunk
//! is written once and shared by every snapshot that holds the same block;
//! every read re-hashes the bytes. Each object write is atomic (a local file
//! is written aside and renamed, with fsync; an S3 PUT is all or nothing).
//!
//! # Crash consistency and garbage collection
//!
//! Writers upload chunks first and the manifest that refers to them after,
//! so a crash leaves at worst chunks no manifest refers to; a completed
//! manifest never refers to a chunk that was not yet stored.
//! [`ChunkStore::garbage_collect`] is mark-and-sweep: it removes chunks that
//! no manifest (pending, completed or error) refers to and that are older
//! than the grace period. The grace period protects a snapshot in flight:
//!
//! **Writer contract:** every chunk returned by `put_chunk`/`put_chunks`
//! must appear in a stored manifest (a pending one is enough) within
//! `grace / 2` of the call returning. `put_chunk` re-writes an existing
//! chunk older than `grace / 2` to refresh its age, so a chunk it skipped is
//! at most `grace / 2` old and survives for at least `grace / 2` more.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::aws_config::AwsCredentials;
use crate::ids::{Region, SnapshotId};
use crate::pipeline::AlignedBuf;
use crate::secret::SecretBytes;

use super::error::{Result, SnapshotError};
use super::manifest::{ChunkRef, Manifest, SnapshotState, BLOCK_SIZE};

/// How long an unreferenced chunk is kept by default (see the module docs).
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

/// Requests in flight for the batch operations.
const CONCURRENCY: usize = 8;

/// Where snapshots are stored.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A local directory (created if missing).
    Local { root: PathBuf },
    /// An S3-compatible bucket. Path-style requests; `http://` endpoints are
    /// allowed (for a local server such as 127.0.0.1). Credentials left
    /// `None` come from the AWS credential chain (environment with
    /// `AWS_SESSION_TOKEN`, `AWS_PROFILE` and the shared files, web
    /// identity; see `aws_config`) when the store is opened.
    S3 {
        /// `None` means AWS S3 itself.
        endpoint: Option<String>,
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/`.
        prefix: String,
        /// The bucket's (signing) region, not the snapshot region.
        region: String,
        access_key_id: Option<String>,
        secret_access_key: Option<SecretBytes>,
    },
}

impl StoreConfig {
    /// Parses a store specification:
    ///
    /// - a path (`/var/lib/keyvol/snapshots`, `./snaps`) or `file:///path`:
    ///   a local directory;
    /// - `s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]`: an S3-compatible
    ///   bucket (region defaults to `us-east-1`; credentials come from the
    ///   environment or [`StoreConfig::with_credentials`], never from the
    ///   URL, which may end up in logs and process lists).
    pub fn parse(spec: &str) -> Result<StoreConfig> {
        let err = |reason: String| SnapshotError::Config {
            spec: spec.chars().take(200).collect(),
            reason,
        };
        if spec.is_empty() {
            return Err(err("empty; give a directory or s3://bucket/prefix".into()));
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            return parse_s3(rest).map_err(err);
        }
        if let Some(path) = spec.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(err(
                    "a file:// URL needs an absolute path (file:///dir)".into()
                ));
            }
            return Ok(StoreConfig::Local { root: path.into() });
        }
        if spec.contains("://") {
            return Err(err(
                "unsupported scheme; use a directory, file:///dir or s3://bucket/prefix".into(),
            ));
        }
        Ok(StoreConfig::Local { root: spec.into() })
    }

    /// Sets S3 credentials (no effect on a local store).
    pub fn with_credentials(self, access_key_id: &str, secret_access_key: SecretBytes) -> Self {
        match self {
            StoreConfig::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                ..
            } => StoreConfig::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                access_key_id: Some(access_key_id.to_string()),
                secret_access_key: Some(secret_access_key),
            },
            local => local,
        }
    }

    /// A printable name for messages: the directory or `s3://bucket/prefix`
    /// (never credentials).
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Local { root } => root.display().to_string(),
            StoreConfig::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => {
                let mut s = format!("s3://{bucket}");
                if !prefix.is_empty() {
                    s.push('/');
                    s.push_str(prefix);
                }
                if let Some(e) = endpoint {
                    s.push_str("?endpoint=");
                    s.push_str(e);
                }
                s
            }
        }
    }
}

fn parse_s3(rest: &str) -> std::result::Result<StoreConfig, String> {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if !bucket_ok {
        return Err(format!(
            "bucket '{bucket}' is not a valid S3 bucket name (3-63 lowercase letters, digits, '-' and '.')"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..")
        || prefix.contains("//")
        || prefix.bytes().any(|b| b.is_ascii_control() || b == b'\\')
    {
        return Err(format!(
            "prefix '{prefix}' must be '/'-separated names without '.', '..' or empty parts"
        ));
    }
    let mut endpoint = None;
    let mut region = "us-east-1".to_string();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "endpoint" => {
                if !(v.starts_with("http://") || v.starts_with("https://")) || v.len() < 10 {
                    return Err(format!(
                        "endpoint '{v}' must be an http:// or https:// URL, e.g. http://127.0.0.1:9000"
                    ));
                }
                endpoint = Some(v.trim_end_matches('/').to_string());
            }
            "region" => {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(format!("region '{v}' is not a region name such as us-east-1"));
                }
                region = v.to_string();
            }
            "access_key_id" | "secret_access_key" => {
                return Err(
                    "credentials do not belong in the store URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "unknown option '{other}'; the options are endpoint and region"
                ))
            }
        }
    }
    Ok(StoreConfig::S3 {
        endpoint,
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        region,
        access_key_id: None,
        secret_access_key: None,
    })
}

/// What [`ChunkStore::garbage_collect`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub manifests_scanned: u64,
    pub chunks_scanned: u64,
    /// Chunks kept because a manifest refers to them.
    pub chunks_referenced: u64,
    /// Unreferenced chunks kept because they are younger than the grace period.
    pub chunks_in_grace: u64,
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    /// Local store only: files of writes interrupted by a crash (written
    /// aside, never renamed into place) older than the grace period.
    pub partial_writes_removed: u64,
    /// Referenced by a manifest but absent from the store (corruption).
    pub chunks_missing: Vec<ChunkRef>,
    /// Pending manifests older than the grace period: a writer probably
    /// crashed; the caller should resume the snapshot or mark it `error`.
    pub stale_pending: Vec<SnapshotId>,
}

/// Chunk count and total chunk bytes in the store (this region).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    pub chunks: u64,
    pub bytes: u64,
}

/// Uploads done and skipped by this handle, for tests and progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
    /// `put_chunk` calls that found the chunk already stored.
    pub chunks_deduplicated: u64,
}

/// Snapshot chunks and manifests of one region, in one object store.
///
/// All methods block; the store owns a small tokio runtime for the object
/// store's async client. It is `Send + Sync`: call it from several threads
/// to overlap requests, or use the batch methods.
pub struct ChunkStore {
    /// Kept only to be shut down without blocking on drop.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/<region>` (no leading or trailing `/`).
    base: String,
    /// The directory of a local store, to clean up interrupted writes.
    local_root: Option<PathBuf>,
    region: Region,
    describe: String,
    /// Full name of an object is `<object_base>/<path>`: the local
    /// directory or `s3://bucket`.
    object_base: String,
    /// `" (endpoint URL)"` for a non-AWS S3 endpoint, else empty.
    endpoint_note: String,
    grace: Duration,
    uploaded_chunks: AtomicU64,
    uploaded_bytes: AtomicU64,
    deduplicated: AtomicU64,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore")
            .field("store", &self.describe)
            .field("region", &self.region)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        // `Runtime::drop` panics inside another runtime; this never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ChunkStore {
    /// Opens the store for snapshots of `region`. A local root is created if
    /// missing; an S3 bucket must exist already.
    pub fn open(config: &StoreConfig, region: &Region) -> Result<ChunkStore> {
        let describe = config.describe();
        let cfg_err = |reason: String| SnapshotError::Config {
            spec: describe.clone(),
            reason,
        };
        let (local_root, object_base, endpoint_note) = match config {
            StoreConfig::Local { root } => (
                Some(root.clone()),
                root.display().to_string(),
                String::new(),
            ),
            StoreConfig::S3 {
                bucket, endpoint, ..
            } => (
                None,
                format!("s3://{bucket}"),
                endpoint
                    .as_ref()
                    .map(|e| format!(" (endpoint {e})"))
                    .unwrap_or_default(),
            ),
        };
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match config {
            StoreConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    cfg_err(format!("cannot create directory {}: {e}", root.display()))
                })?;
                let fs = LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| cfg_err(e.to_string()))?
                    .with_fsync(true)
                    .with_automatic_cleanup(true);
                (Arc::new(fs), String::new())
            }
            StoreConfig::S3 {
                endpoint,
                bucket,
                prefix,
                region: bucket_region,
                access_key_id,
                secret_access_key,
            } => {
                let credentials = match (access_key_id, secret_access_key) {
                    (Some(id), Some(secret)) => AwsCredentials::Static {
                        access_key_id: id.clone(),
                        secret_access_key: secret.clone(),
                        session_token: None,
                        source: "the store configuration".into(),
                    },
                    _ => crate::aws_config::resolve().map_err(cfg_err)?,
                };
                let b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(bucket_region);
                let mut b = with_aws_credentials(b, &credentials)
                    .map_err(cfg_err)?
                    .with_virtual_hosted_style_request(false)
                    // Fail within seconds, not the default 3 minutes, when
                    // the endpoint is down or refuses us.
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(20),
                        ..Default::default()
                    });
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                }
                let s3 = b.build().map_err(|e| cfg_err(e.to_string()))?;
                (Arc::new(s3), prefix.clone())
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keyvol-snapstore")
            .enable_all()
            .build()
            .map_err(|e| SnapshotError::Runtime(format!("cannot start I/O threads: {e}")))?;
        let base = if prefix.is_empty() {
            region.to_string()
        } else {
            format!("{prefix}/{region}")
        };
        Ok(ChunkStore {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            store,
            base,
            local_root,
            region: region.clone(),
            describe,
            object_base,
            endpoint_note,
            grace: DEFAULT_GC_GRACE,
            uploaded_chunks: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
        })
    }

    /// Sets the garbage-collection grace period (see the module docs for the
    /// writer contract it implies). Zero is for tests and offline cleanup
    /// only, with no writer running; it also makes `put_chunk` re-upload
    /// chunks that already exist (their age is never under `grace / 2`).
    pub fn with_gc_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Checks that the store answers (the bucket exists and the credentials
    /// are accepted) with one small listing; `open` itself does no I/O on S3.
    pub fn check(&self) -> Result<()> {
        self.block_on(self.list_manifest_objects())??;
        Ok(())
    }

    /// The store, for messages: directory or `s3://bucket/prefix`.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Stores one chunk (1..=512 KiB of ciphertext) under its SHA-256 and
    /// returns that name. Idempotent: a chunk already stored, intact and
    /// younger than `grace / 2` is not uploaded again.
    pub fn put_chunk(&self, bytes: &[u8]) -> Result<ChunkRef> {
        match &self.local_root {
            // One chunk of a local store is written on the calling thread:
            // no hop through the store's runtime and its blocking pool.
            Some(root) => self.put_local_chunk(root, bytes),
            None => self.block_on(self.put_chunk_async(bytes))?,
        }
    }

    /// A chunk's name and object path, once its size is checked.
    fn named(&self, bytes: &[u8]) -> Result<(ChunkRef, Path)> {
        if bytes.is_empty() || bytes.len() > BLOCK_SIZE as usize {
            return Err(SnapshotError::ChunkSize {
                len: bytes.len(),
                max: BLOCK_SIZE as usize,
            });
        }
        let chunk = ChunkRef::of(bytes);
        Ok((chunk, self.chunk_path(&chunk)))
    }

    fn put_local_chunk(&self, root: &std::path::Path, bytes: &[u8]) -> Result<ChunkRef> {
        self.put_local_with(root, bytes, write_local_chunk)
    }

    /// A chunk of a local store: named, skipped if already stored and
    /// fresh, else handed to `write` with its file's path and 4 KiB-aligned
    /// bytes (bytes already on a 4 KiB boundary, a pipeline's reused
    /// buffer, go as they are; others are staged once in such a buffer).
    fn put_local_with(
        &self,
        root: &std::path::Path,
        bytes: &[u8],
        write: impl FnOnce(&std::path::Path, &[u8]) -> std::io::Result<()>,
    ) -> Result<ChunkRef> {
        let (chunk, path) = self.named(bytes)?;
        let file = root.join(path.as_ref());
        if self.fresh_local(&file, bytes.len()) {
            self.deduplicated.fetch_add(1, Ordering::Relaxed);
            return Ok(chunk);
        }
        let written = if is_aligned(bytes) {
            write(&file, bytes)
        } else {
            let mut staged = AlignedBuf::new(bytes.len());
            staged.set_len(bytes.len());
            staged.copy_from_slice(bytes);
            write(&file, &staged)
        };
        written.map_err(|e| self.local_err("put", &path, e))?;
        self.uploaded_chunks.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(chunk)
    }

    /// A batch of chunk writes whose durability is paid once for the batch
    /// instead of once per chunk: see [`ChunkBatch`].
    pub fn batch(&self) -> ChunkBatch<'_> {
        ChunkBatch {
            store: self,
            staged: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Whether the chunk at `file` is stored with `len` bytes and young
    /// enough (under `grace / 2`) not to need its age refreshed.
    fn fresh_local(&self, file: &std::path::Path, len: usize) -> bool {
        std::fs::metadata(file).ok().is_some_and(|m| {
            m.len() == len as u64
                && m.modified()
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default()
                    < self.grace / 2
        })
    }

    fn local_err(&self, operation: &'static str, path: &Path, e: std::io::Error) -> SnapshotError {
        let source = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        };
        self.store_err(operation, path, source)
    }

    /// Stores several chunks with requests overlapped; names in input order.
    pub fn put_chunks(&self, chunks: &[&[u8]]) -> Result<Vec<ChunkRef>> {
        // Futures collected first: a lazy `map` closure inside a `Send`
        // future trips a higher-ranked lifetime limitation of rustc.
        let requests: Vec<_> = chunks.iter().map(|c| self.put_chunk_async(c)).collect();
        self.block_on(async {
            futures_util::stream::iter(requests)
                .buffered(CONCURRENCY)
                .try_collect()
                .await
        })?
    }

    /// Reads a chunk and checks that it hashes to its name: a missing chunk
    /// is `ChunkMissing`, altered bytes are `ChunkCorrupt`.
    pub fn get_chunk(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        match &self.local_root {
            // A local chunk is read on the calling thread.
            Some(root) => self.get_local_chunk(root, chunk),
            None => self.block_on(self.get_chunk_async(chunk))?,
        }
    }

    /// [`Self::get_chunk`] into `out` (a block's worth of room, ideally a
    /// pipeline worker's reused [`AlignedBuf`]), returning the chunk's
    /// length: a local chunk is read straight into an aligned `out` with one
    /// `O_DIRECT` request and checked there, with no copy.
    pub fn get_chunk_into(&self, chunk: &ChunkRef, out: &mut [u8]) -> Result<usize> {
        let Some(root) = &self.local_root else {
            let bytes = self.get_chunk(chunk)?;
            if bytes.len() > out.len() {
                return Err(SnapshotError::ChunkSize {
                    len: bytes.len(),
                    max: out.len(),
                });
            }
            out[..bytes.len()].copy_from_slice(&bytes);
            return Ok(bytes.len());
        };
        let file = root.join(self.chunk_path(chunk).as_ref());
        match read_local_chunk_into(&file, out) {
            Ok(n) if ChunkRef::of(&out[..n]) == *chunk => Ok(n),
            Ok(_) => Err(SnapshotError::ChunkCorrupt { chunk: *chunk }),
            Err(e) => self.verified_local(chunk, Err(e)).map(|_| 0),
        }
    }

    fn get_local_chunk(&self, root: &std::path::Path, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let read = read_local_chunk(&root.join(self.chunk_path(chunk).as_ref()));
        self.verified_local(chunk, read)
    }

    /// A local chunk's read, as `get_chunk` answers it: missing, failed, or
    /// the bytes once they hash to the chunk's name.
    fn verified_local(&self, chunk: &ChunkRef, read: std::io::Result<Vec<u8>>) -> Result<Vec<u8>> {
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::ChunkMissing { chunk: *chunk })
            }
            Err(e) => return Err(self.local_err("get", &self.chunk_path(chunk), e)),
        };
        if ChunkRef::of(&bytes) != *chunk {
            return Err(SnapshotError::ChunkCorrupt { chunk: *chunk });
        }
        Ok(bytes)
    }

    /// Reads several chunks with requests overlapped, each verified; in
    /// input order.
    pub fn get_chunks(&self, chunks: &[ChunkRef]) -> Result<Vec<Vec<u8>>> {
        // Futures collected first: a lazy `map` closure inside a `Send`
        // future trips a higher-ranked lifetime limitation of rustc.
        let requests: Vec<_> = chunks.iter().map(|c| self.get_chunk_async(c)).collect();
        self.block_on(async {
            futures_util::stream::iter(requests)
                .buffered(CONCURRENCY)
                .try_collect()
                .await
        })?
    }

    /// Removes a chunk; removing an absent chunk succeeds. Callers other
    /// than garbage collection must know no manifest refers to it.
    pub fn delete_chunk(&self, chunk: &ChunkRef) -> Result<()> {
        let path = self.chunk_path(chunk);
        self.block_on(async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.store_err("delete", &path, e)),
            }
        })?
    }

    /// Of `chunks`, those not in the store (one listing, not one request
    /// per chunk). Check a manifest with this before marking it completed.
    pub fn missing_chunks(&self, chunks: &[ChunkRef]) -> Result<Vec<ChunkRef>> {
        let stored: std::collections::HashSet<ChunkRef> = self
            .block_on(self.list_chunks_async())??
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let mut missing: Vec<ChunkRef> = chunks
            .iter()
            .filter(|c| !stored.contains(c))
            .copied()
            .collect();
        missing.sort_unstable();
        missing.dedup();
        Ok(missing)
    }

    /// Stores a sealed manifest (see [`Manifest::seal`]) under the snapshot
    /// id it names, replacing any previous version atomically. Returns that
    /// id. Bytes that are not a manifest are refused.
    pub fn put_manifest(&self, sealed: &[u8]) -> Result<SnapshotId> {
        let id = Manifest::peek_unauthenticated(sealed)?.snapshot_id;
        let path = self.manifest_path(&id);
        let payload = PutPayload::from(sealed.to_vec());
        self.block_on(async {
            self.store
                .put(&path, payload)
                .await
                .map_err(|e| self.store_err("put", &path, e))
        })??;
        Ok(id)
    }

    /// The sealed manifest of `id`, checked to describe snapshot `id` (so a
    /// manifest cannot be swapped for another snapshot's). Authenticate it
    /// with [`Manifest::open`].
    pub fn get_manifest(&self, id: &SnapshotId) -> Result<Vec<u8>> {
        let path = self.manifest_path(id);
        let bytes = self.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map_err(|e| self.store_err("get", &path, e)),
                Err(object_store::Error::NotFound { .. }) => Err(SnapshotError::ManifestMissing {
                    snapshot_id: id.clone(),
                }),
                Err(e) => Err(self.store_err("get", &path, e)),
            }
        })??;
        let found = Manifest::peek_unauthenticated(&bytes).map_err(|e| match e {
            SnapshotError::ManifestInvalid { reason, .. } => SnapshotError::ManifestInvalid {
                snapshot: id.to_string(),
                reason,
            },
            other => other,
        })?;
        if &found.snapshot_id != id {
            return Err(SnapshotError::ManifestMismatch {
                expected: id.clone(),
                found: found.snapshot_id.to_string(),
            });
        }
        Ok(bytes.to_vec())
    }

    /// The ids of all stored manifests (any state), sorted. Objects in the
    /// manifests folder that are not `<snapshot-id>.json` are ignored.
    pub fn list_manifests(&self) -> Result<Vec<SnapshotId>> {
        let mut ids: Vec<SnapshotId> = self
            .block_on(self.list_manifest_objects())??
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes a manifest; removing an absent one succeeds. Its chunks are
    /// freed by the next [`ChunkStore::garbage_collect`].
    pub fn delete_manifest(&self, id: &SnapshotId) -> Result<()> {
        let path = self.manifest_path(id);
        self.block_on(async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.store_err("delete", &path, e)),
            }
        })?
    }

    /// Mark and sweep: deletes chunks that no manifest refers to and that
    /// are older than the grace period. A manifest that cannot be read or
    /// parsed stops the collection before anything is deleted
    /// (`GcBlocked`), since its references are unknown.
    pub fn garbage_collect(&self) -> Result<GcReport> {
        let mut report = self.block_on(self.garbage_collect_async())??;
        if let Some(root) = &self.local_root {
            report.partial_writes_removed =
                remove_partial_writes(&root.join(&self.base), self.grace);
        }
        Ok(report)
    }

    /// Number and total size of the stored chunks.
    pub fn usage(&self) -> Result<StoreUsage> {
        let chunks = self.block_on(self.list_chunks_async())??;
        Ok(StoreUsage {
            chunks: chunks.len() as u64,
            bytes: chunks.iter().map(|(_, m)| m.size).sum(),
        })
    }

    /// Total size of the stored chunks in bytes.
    pub fn stored_bytes(&self) -> Result<u64> {
        Ok(self.usage()?.bytes)
    }

    /// Uploads done and skipped through this handle so far.
    pub fn transfer_stats(&self) -> TransferStats {
        TransferStats {
            chunks_uploaded: self.uploaded_chunks.load(Ordering::Relaxed),
            bytes_uploaded: self.uploaded_bytes.load(Ordering::Relaxed),
            chunks_deduplicated: self.deduplicated.load(Ordering::Relaxed),
        }
    }

    /// The object name of a chunk, relative to the store root (the local
    /// directory or the bucket).
    pub fn chunk_location(&self, chunk: &ChunkRef) -> String {
        let hex = chunk.to_hex();
        format!("{}/chunks/{}/{hex}", self.base, &hex[..2])
    }

    /// The object name of a manifest, relative to the store root.
    pub fn manifest_location(&self, id: &SnapshotId) -> String {
        format!("{}/manifests/{id}.json", self.base)
    }

    fn chunk_path(&self, chunk: &ChunkRef) -> Path {
        Path::from(self.chunk_location(chunk))
    }

    fn manifest_path(&self, id: &SnapshotId) -> Path {
        Path::from(self.manifest_location(id))
    }

    fn store_err(
        &self,
        operation: &'static str,
        path: &Path,
        source: object_store::Error,
    ) -> SnapshotError {
        SnapshotError::Store {
            operation,
            location: format!("{}/{path}{}", self.object_base, self.endpoint_note),
            source,
        }
    }

    /// Runs `fut` on the store's runtime, also when called from inside
    /// another tokio runtime (where blocking that thread would panic).
    fn block_on<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(self.handle.block_on(fut));
        }
        std::thread::scope(|s| {
            s.spawn(|| self.handle.block_on(fut))
                .join()
                .map_err(|_| SnapshotError::Runtime("a store request thread panicked".into()))
        })
    }

    async fn put_chunk_async(&self, bytes: &[u8]) -> Result<ChunkRef> {
        let (chunk, path) = self.named(bytes)?;
        match self.store.head(&path).await {
            Ok(meta) if meta.size == bytes.len() as u64 && age(&meta) < self.grace / 2 => {
                self.deduplicated.fetch_add(1, Ordering::Relaxed);
                return Ok(chunk);
            }
            // Wrong size (a damaged copy) or old enough to need its age
            // refreshed: write it again.
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.store_err("head", &path, e)),
        }
        match &self.local_root {
            Some(root) => {
                let file = root.join(path.as_ref());
                let mut staged = AlignedBuf::new(bytes.len());
                staged.set_len(bytes.len());
                staged.copy_from_slice(bytes);
                tokio::task::spawn_blocking(move || write_local_chunk(&file, &staged))
                    .await
                    .map_err(|e| SnapshotError::Runtime(format!("a chunk write failed: {e}")))?
                    .map_err(|e| self.local_err("put", &path, e))?;
            }
            None => {
                self.store
                    .put(&path, PutPayload::from(bytes.to_vec()))
                    .await
                    .map_err(|e| self.store_err("put", &path, e))?;
            }
        }
        self.uploaded_chunks.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(chunk)
    }

    async fn get_chunk_async(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        if let Some(root) = &self.local_root {
            let file = root.join(self.chunk_path(chunk).as_ref());
            let read = tokio::task::spawn_blocking(move || read_local_chunk(&file))
                .await
                .map_err(|e| SnapshotError::Runtime(format!("a chunk read failed: {e}")))?;
            return self.verified_local(chunk, read);
        }
        let path = self.chunk_path(chunk);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.store_err("get", &path, e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(SnapshotError::ChunkMissing { chunk: *chunk })
            }
            Err(e) => return Err(self.store_err("get", &path, e)),
        };
        if ChunkRef::of(&bytes) != *chunk {
            return Err(SnapshotError::ChunkCorrupt { chunk: *chunk });
        }
        Ok(bytes.to_vec())
    }

    /// Every stored chunk with its metadata; objects whose names are not
    /// chunk names are skipped.
    async fn list_chunks_async(&self) -> Result<Vec<(ChunkRef, ObjectMeta)>> {
        let prefix = Path::from(format!("{}/chunks", self.base));
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_err("list", &prefix, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let chunk: ChunkRef = name.parse().ok()?;
                (self.chunk_path(&chunk) == m.location).then_some((chunk, m))
            })
            .collect())
    }

    async fn list_manifest_objects(&self) -> Result<Vec<(SnapshotId, ObjectMeta)>> {
        let prefix = Path::from(format!("{}/manifests", self.base));
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_err("list", &prefix, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let id: SnapshotId = m.location.filename()?.strip_suffix(".json")?.parse().ok()?;
                (self.manifest_path(&id) == m.location).then_some((id, m))
            })
            .collect())
    }

    async fn garbage_collect_async(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        // Mark. Chunks listed after this point that a manifest written after
        // the listing refers to are either new (inside the grace period) or
        // were referenced by a manifest listed here.
        let mut referenced = std::collections::HashSet::new();
        for (id, meta) in self.list_manifest_objects().await? {
            let path = meta.location.clone();
            let bytes = match self.store.get(&path).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map_err(|e| self.store_err("get", &path, e))?,
                // Deleted since the listing: its chunks are free to go.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(self.store_err("get", &path, e)),
            };
            let manifest = Manifest::peek_unauthenticated(&bytes).map_err(|e| SnapshotError::GcBlocked {
                reason: format!(
                    "manifest {id} ({}/{path}) is unreadable ({e}); repair or delete it, then rerun",
                    self.object_base
                ),
            })?;
            report.manifests_scanned += 1;
            if manifest.state == SnapshotState::Pending && age(&meta) >= self.grace {
                report.stale_pending.push(id);
            }
            referenced.extend(manifest.blocks.into_values());
        }
        // Sweep.
        let mut doomed = Vec::new();
        let mut present = std::collections::HashSet::new();
        for (chunk, meta) in self.list_chunks_async().await? {
            report.chunks_scanned += 1;
            present.insert(chunk);
            if referenced.contains(&chunk) {
                report.chunks_referenced += 1;
            } else if age(&meta) < self.grace {
                report.chunks_in_grace += 1;
            } else {
                doomed.push((meta.location, meta.size));
            }
        }
        report.chunks_missing = referenced.difference(&present).copied().collect();
        report.chunks_missing.sort_unstable();
        let results: Vec<Result<u64>> =
            futures_util::stream::iter(doomed.into_iter().map(|(path, size)| async move {
                match self.store.delete(&path).await {
                    Ok(()) => Ok(size),
                    Err(object_store::Error::NotFound { .. }) => Ok(0),
                    Err(e) => Err(self.store_err("delete", &path, e)),
                }
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in results {
            let size = r?;
            report.chunks_deleted += 1;
            report.bytes_freed += size;
        }
        Ok(report)
    }
}

/// Removes the files that `LocalFileSystem` writes aside (`<name>#<n>`)
/// and a crash left behind, under `dir/chunks/*/` and `dir/manifests/`, if
/// older than `grace`. Best effort: unreadable entries are skipped (a later
/// run retries). Returns how many were removed.
/// Gives `b` the credentials of the AWS chain (see `aws_config`).
fn with_aws_credentials(
    b: AmazonS3Builder,
    c: &AwsCredentials,
) -> std::result::Result<AmazonS3Builder, String> {
    use object_store::aws::AmazonS3ConfigKey as Key;
    let utf8 = |what: &str, s: &SecretBytes| {
        std::str::from_utf8(s.expose())
            .map(str::to_string)
            .map_err(|_| format!("the S3 {what} is not UTF-8"))
    };
    Ok(match c {
        AwsCredentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
            ..
        } => {
            let mut b = b
                .with_access_key_id(access_key_id)
                .with_secret_access_key(utf8("secret access key", secret_access_key)?);
            if let Some(t) = session_token {
                b = b.with_token(utf8("session token", t)?);
            }
            b
        }
        AwsCredentials::WebIdentity {
            token_file,
            role_arn,
            session_name,
            sts_endpoint,
        } => {
            let mut b = b
                .with_config(Key::WebIdentityTokenFile, token_file)
                .with_config(Key::RoleArn, role_arn);
            if let Some(n) = session_name {
                b = b.with_config(Key::RoleSessionName, n);
            }
            if let Some(e) = sts_endpoint {
                b = b.with_config(Key::StsEndpoint, e);
            }
            b
        }
        AwsCredentials::Container {
            relative_uri,
            full_uri,
            token_file,
        } => {
            let mut b = b;
            if let Some(u) = relative_uri {
                b = b.with_config(Key::ContainerCredentialsRelativeUri, u);
            }
            if let Some(u) = full_uri {
                b = b.with_config(Key::ContainerCredentialsFullUri, u);
            }
            if let Some(t) = token_file {
                b = b.with_config(Key::ContainerAuthorizationTokenFile, t);
            }
            b
        }
        AwsCredentials::InstanceMetadata => b,
    })
}

/// Chunk writes whose durability is paid once per batch: the pipelines
/// that store thousands of chunks and record them in a manifest only every
/// few hundred use it instead of [`ChunkStore::put_chunk`], which flushes
/// the disk twice per chunk (the file's data, then its directory).
///
/// In a local store, [`ChunkBatch::put`] writes the chunk to a staging
/// file beside its name and does not sync it; [`ChunkBatch::commit`] makes
/// every staged file durable with one `syncfs`, renames each into place,
/// and makes the renames durable with a second `syncfs`. So a chunk is
/// under its name only once its bytes are durable — the store never holds
/// a torn chunk under a name a later writer would trust and skip — and
/// every chunk `put` returned is durable once `commit` returns. A writer
/// commits before it stores any manifest that names the batch's chunks.
/// What a crash or a dropped batch leaves is staging files, which the
/// store's sweep of partial writes removes (a dropped batch removes its
/// own at once).
///
/// In an S3 store every `put` is durable on return (a PUT is all or
/// nothing) and `commit` has nothing to do. `put` is safe from many
/// threads at once.
pub struct ChunkBatch<'s> {
    store: &'s ChunkStore,
    /// (staging file, the chunk's name) of each chunk put and not yet
    /// committed.
    staged: std::sync::Mutex<Vec<(PathBuf, PathBuf)>>,
}

impl ChunkBatch<'_> {
    /// Stores one chunk as [`ChunkStore::put_chunk`] does, durable only
    /// once [`ChunkBatch::commit`] returns.
    pub fn put(&self, bytes: &[u8]) -> Result<ChunkRef> {
        let store = self.store;
        let Some(root) = &store.local_root else {
            return store.put_chunk(bytes);
        };
        store.put_local_with(root, bytes, |file, aligned| {
            let staging = stage_local_chunk(file, aligned, false)?;
            self.lock().push((staging, file.to_path_buf()));
            Ok(())
        })
    }

    /// Makes every chunk put so far durable under its name (see the type's
    /// docs). On an error the chunks not yet published are removed and
    /// none of this batch's chunks may be named by a manifest.
    pub fn commit(&self) -> Result<()> {
        let Some(root) = &self.store.local_root else {
            return Ok(());
        };
        let staged = std::mem::take(&mut *self.lock());
        if staged.is_empty() {
            return Ok(());
        }
        let chunks = Path::from(format!("{}/chunks", self.store.base));
        let err = |e: std::io::Error| self.store.local_err("put", &chunks, e);
        let mut published = 0;
        let result = sync_filesystem(root)
            .and_then(|()| {
                for (staging, dest) in &staged {
                    std::fs::rename(staging, dest)?;
                    published += 1;
                }
                Ok(())
            })
            .and_then(|()| sync_filesystem(root));
        for (staging, _) in &staged[published..] {
            let _ = std::fs::remove_file(staging);
        }
        result.map_err(err)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PathBuf, PathBuf)>> {
        // The list stays consistent whatever a panicking holder did: each
        // entry is pushed whole.
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ChunkBatch<'_> {
    fn drop(&mut self) {
        for (staging, _) in self.lock().drain(..) {
            let _ = std::fs::remove_file(staging);
        }
    }
}

/// Whether `bytes` can go to an `O_DIRECT` write as they are: on a 4 KiB
/// boundary and whole 4 KiB units long.
fn is_aligned(bytes: &[u8]) -> bool {
    bytes.len().is_multiple_of(AlignedBuf::ALIGN)
        && (bytes.as_ptr() as usize).is_multiple_of(AlignedBuf::ALIGN)
}

/// Publishes a chunk file of a local store as object_store's local put
/// does (a staging file `<name>#<suffix>` written, synced, renamed into
/// place, its directory synced: all or nothing, durable on return), but
/// written with `O_DIRECT` where the filesystem allows it: the chunk is
/// ciphertext no one reads soon, and copying it through the page cache cost
/// more CPU than encrypting it. Lengths that are not a multiple of 4 KiB,
/// and filesystems that refuse `O_DIRECT` (tmpfs), take the buffered path.
fn write_local_chunk(dest: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let staging = stage_local_chunk(dest, bytes, true)?;
    if let Err(e) = std::fs::rename(&staging, dest) {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    match dest.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Writes `bytes` to a new staging file beside `dest` (`<name>#d<suffix>`,
/// the name [`remove_partial_writes`] sweeps) and returns its path; with
/// `sync`, the file's data is durable on return. The file is removed again
/// if the write fails.
fn stage_local_chunk(dest: &std::path::Path, bytes: &[u8], sync: bool) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut suffix = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
    let mut staging = dest.as_os_str().to_owned();
    staging.push(format!("#d{}", hex::encode(suffix)));
    let staging = PathBuf::from(staging);
    let aligned = is_aligned(bytes);
    let open = |direct: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&staging)
    };
    let attempt = |direct: bool| -> std::io::Result<std::fs::File> {
        match open(direct) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = dest
                    .parent()
                    .ok_or_else(|| std::io::Error::other("a chunk path has no directory"))?;
                std::fs::create_dir_all(dir)?;
                if let Some(up) = dir.parent() {
                    std::fs::File::open(up)?.sync_all()?;
                }
                open(direct)
            }
            other => other,
        }
    };
    let mut file = match aligned.then(|| attempt(true)) {
        Some(Ok(f)) => f,
        Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => attempt(false)?,
        Some(Err(e)) => return Err(e),
        None => attempt(false)?,
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    Ok(staging)
}

/// `syncfs(2)` of the filesystem that holds `dir`: every file and
/// directory written on it so far is durable on return (one device flush
/// for all of them).
fn sync_filesystem(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir)?;
    // SAFETY: `d` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads a chunk file of a local store in one request: with `O_DIRECT`
/// (chunks are written past the page cache, so a buffered read would go to
/// the disk in readahead-sized steps, one round trip each), buffered where
/// the filesystem refuses it.
fn read_local_chunk(file: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut buf = AlignedBuf::new(BLOCK_SIZE as usize);
    let n = read_local_chunk_into(file, buf.spare())?;
    Ok(buf.spare()[..n].to_vec())
}

/// [`read_local_chunk`] into `out`, returning the chunk's length: straight
/// into `out` with `O_DIRECT` when `out` starts on a 4 KiB boundary and
/// holds the chunk rounded up to whole 4 KiB units, else buffered.
fn read_local_chunk_into(file: &std::path::Path, out: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let buffered = |out: &mut [u8]| -> std::io::Result<usize> {
        let mut f = std::fs::File::open(file)?;
        let len = f.metadata()?.len() as usize;
        if len > BLOCK_SIZE as usize || len > out.len() {
            return Err(too_large(len));
        }
        f.read_exact(&mut out[..len])?;
        Ok(len)
    };
    if !(out.as_ptr() as usize).is_multiple_of(AlignedBuf::ALIGN) {
        return buffered(out);
    }
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(file);
    let mut f = match direct {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return buffered(out),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len() as usize;
    if len > BLOCK_SIZE as usize {
        return Err(too_large(len));
    }
    // Whole 4 KiB units are read; the file's end stops the last one.
    let want = len.div_ceil(AlignedBuf::ALIGN) * AlignedBuf::ALIGN;
    if want > out.len() {
        return buffered(out);
    }
    let mut got = 0;
    loop {
        match f.read(&mut out[got..want]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return buffered(out),
            Err(e) => return Err(e),
        }
        if got >= len {
            break;
        }
    }
    Ok(got.min(len))
}

fn too_large(len: usize) -> std::io::Error {
    std::io::Error::other(format!(
        "a chunk file of {len} bytes is larger than a block"
    ))
}

fn remove_partial_writes(dir: &std::path::Path, grace: Duration) -> u64 {
    let mut folders = vec![dir.join("manifests")];
    if let Ok(entries) = std::fs::read_dir(dir.join("chunks")) {
        folders.extend(entries.flatten().map(|e| e.path()));
    }
    let mut removed = 0;
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let partial = entry.file_name().to_str().is_some_and(|n| n.contains('#'));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|a| a >= grace);
            if partial && old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// How long ago the object was last written (zero if its time is ahead of
/// ours).
fn age(meta: &ObjectMeta) -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::from(meta.last_modified))
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_specs() {
        match StoreConfig::parse("/var/lib/snaps").unwrap() {
            StoreConfig::Local { root } => assert_eq!(root, PathBuf::from("/var/lib/snaps")),
            other => panic!("{other:?}"),
        }
        match StoreConfig::parse("file:///x/y").unwrap() {
            StoreConfig::Local { root } => assert_eq!(root, PathBuf::from("/x/y")),
            other => panic!("{other:?}"),
        }
        match StoreConfig::parse(
            "s3://my-bucket/a/b/?endpoint=http://127.0.0.1:9000/&region=eu-west-1",
        )
        .unwrap()
        {
            StoreConfig::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                access_key_id,
                ..
            } => {
                assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:9000"));
                assert_eq!(bucket, "my-bucket");
                assert_eq!(prefix, "a/b");
                assert_eq!(region, "eu-west-1");
                assert!(access_key_id.is_none());
            }
            other => panic!("{other:?}"),
        }
        match StoreConfig::parse("s3://bkt").unwrap() {
            StoreConfig::S3 {
                prefix,
                region,
                endpoint,
                ..
            } => {
                assert_eq!(prefix, "");
                assert_eq!(region, "us-east-1");
                assert!(endpoint.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_bad_specs_with_reasons() {
        for (spec, needle) in [
            ("", "empty"),
            ("s3://B", "bucket"),
            ("s3://ok-bucket/../x", "prefix"),
            ("s3://ok-bucket?endpoint=ftp://x", "endpoint"),
            ("s3://ok-bucket?color=red", "unknown option"),
            (
                "s3://ok-bucket?secret_access_key=abc",
                "AWS_SECRET_ACCESS_KEY",
            ),
            ("gs://bucket", "unsupported scheme"),
            ("file://relative", "absolute"),
        ] {
            let e = StoreConfig::parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn describe_never_shows_credentials() {
        let c = StoreConfig::parse("s3://bkt/p?endpoint=http://127.0.0.1:1")
            .unwrap()
            .with_credentials("AKIDEXAMPLE", SecretBytes::from_slice(b"wJalrXUtnFEMI"));
        assert_eq!(c.describe(), "s3://bkt/p?endpoint=http://127.0.0.1:1");
        assert!(!format!("{c:?}").contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn layout_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(
            &StoreConfig::Local {
                root: dir.path().into(),
            },
            &Region::default_region(),
        )
        .unwrap();
        let c = ChunkRef::of(b"abc");
        let hex = c.to_hex();
        assert_eq!(
            store.chunk_location(&c),
            format!("us-east-1/chunks/{}/{hex}", &hex[..2])
        );
        let id: SnapshotId = "snap-0123456789abcdef0".parse().unwrap();
        assert_eq!(
            store.manifest_location(&id),
            "us-east-1/manifests/snap-0123456789abcdef0.json"
        );
        assert!(matches!(
            store.put_chunk(&[]),
            Err(SnapshotError::ChunkSize { len: 0, .. })
        ));
        assert!(store.put_chunk(&vec![0; BLOCK_SIZE as usize + 1]).is_err());
    }

    #[test]
    fn works_inside_another_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(
            &StoreConfig::Local {
                root: dir.path().into(),
            },
            &Region::default_region(),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = store.put_chunk(b"inside").unwrap();
            assert_eq!(store.get_chunk(&c).unwrap(), b"inside");
            drop(store);
        });
    }

    #[test]
    fn local_chunks_round_trip_through_the_direct_and_buffered_paths() {
        let dir = tempfile::tempdir().unwrap();
        for len in [BLOCK_SIZE as usize, 4096, 1000, 1] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let file = dir.path().join(format!("aa/{len}"));
            write_local_chunk(&file, &data).unwrap();
            assert_eq!(read_local_chunk(&file).unwrap(), data, "{len} bytes");
            // No staging file is left behind.
            let names: Vec<String> = std::fs::read_dir(dir.path().join("aa"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
        }
        let missing = read_local_chunk(&dir.path().join("aa/none")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    /// Names under the store's chunk directories: (published, staging).
    fn chunk_files(root: &std::path::Path) -> (usize, usize) {
        let (mut named, mut staging) = (0, 0);
        for dir in walk(root) {
            let n = dir.file_name().unwrap().to_string_lossy().into_owned();
            if dir.is_file() && dir.to_string_lossy().contains("/chunks/") {
                if n.contains('#') {
                    staging += 1;
                } else {
                    named += 1;
                }
            }
        }
        (named, staging)
    }

    fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }

    #[test]
    fn a_batch_publishes_its_chunks_only_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::Local {
            root: dir.path().to_path_buf(),
        };
        let region: Region = "us-east-1".parse().unwrap();
        let store = ChunkStore::open(&config, &region).unwrap();
        let chunks: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                let mut c = vec![i; BLOCK_SIZE as usize];
                c[0] = 0xa5;
                c
            })
            .collect();
        let batch = store.batch();
        let mut refs = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks.iter().map(|c| s.spawn(|| batch.put(c))).collect();
            for h in handles {
                refs.push(h.join().unwrap().unwrap());
            }
        });
        // Staged only: not under their names, so no reader or later
        // writer can trust a chunk that is not durable yet.
        assert_eq!(chunk_files(dir.path()), (0, 5));
        for r in &refs {
            assert!(matches!(
                store.get_chunk(r),
                Err(SnapshotError::ChunkMissing { .. })
            ));
        }
        assert_eq!(store.missing_chunks(&refs).unwrap().len(), 5);
        batch.commit().unwrap();
        assert_eq!(chunk_files(dir.path()), (5, 0));
        for (r, c) in refs.iter().zip(&chunks) {
            assert_eq!(&store.get_chunk(r).unwrap(), c);
        }
        // A second commit has nothing to do; a chunk already stored is not
        // staged again.
        batch.commit().unwrap();
        let again = store.batch();
        assert_eq!(again.put(&chunks[0]).unwrap(), refs[0]);
        assert_eq!(chunk_files(dir.path()), (5, 0));
        assert_eq!(store.transfer_stats().chunks_deduplicated, 1);
        // A batch dropped before its commit (a failed snapshot) leaves
        // nothing behind, and an odd-sized chunk takes the buffered path.
        let dropped = store.batch();
        let odd = vec![7u8; 1000];
        let odd_ref = dropped.put(&odd).unwrap();
        assert_eq!(chunk_files(dir.path()), (5, 1));
        drop(dropped);
        assert_eq!(chunk_files(dir.path()), (5, 0));
        assert!(store.get_chunk(&odd_ref).is_err());
        let kept = store.batch();
        kept.put(&odd).unwrap();
        kept.commit().unwrap();
        assert_eq!(store.get_chunk(&odd_ref).unwrap(), odd);
    }
}
