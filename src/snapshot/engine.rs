//! The snapshot engine's chunk work, with no caller and no records: the
//! sector runs of a chunk (holes stay holes), storing and checking a
//! manifest's chunks, freeing the chunks of a deleted manifest, the
//! re-encrypting copy of chunks, and a snapshot as the chunk source a
//! restored volume hydrates from. The store and the manifests themselves
//! are `store.rs` and `manifest.rs`; who may do what is `ops/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use crate::api_error::{ApiError, ApiResult};
use crate::ids::SnapshotId;
use crate::pipeline::AlignedBuf;
use crate::volume::device::ChunkSource;
use crate::volume::{SectorCipher, VolumeError, CHUNK_SIZE, SECTOR_SIZE};

use super::error::SnapshotError;
use super::{ChunkRef, ChunkStore, Manifest, SnapshotState};

/// Chunks stored between two puts of a pending manifest (which keep it
/// naming what is stored, and show progress).
pub(super) const PENDING_PUT_EVERY: usize = 256;

/// Sectors per chunk: chunk `i` starts at sector `i * SECTORS_PER_CHUNK`.
pub(super) const SECTORS_PER_CHUNK: u64 = CHUNK_SIZE / SECTOR_SIZE as u64;

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

pub(super) fn vol_err(e: VolumeError) -> ApiError {
    ApiError::from(e)
}

pub(super) fn progress_of(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 99;
    }
    ((done * 100 / total).min(99)) as u8
}

pub(super) fn is_zero(b: &[u8]) -> bool {
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
pub(super) fn block_err(id: &SnapshotId, index: u64, e: SnapshotError) -> ApiError {
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

pub(super) fn put(store: &ChunkStore, m: &Manifest, mac: &crate::secret::Key256) -> ApiResult<()> {
    store.put_manifest(&m.seal(mac)).map(drop).map_err(snap_err)
}

/// Deletes chunks of `gone` no remaining manifest names, and returns them.
/// Skipped while any snapshot is pending (its writer may rely on a chunk it
/// found stored); the store's grace-period GC frees them later.
pub(super) fn free_unreferenced(store: &ChunkStore, gone: &Manifest) -> ApiResult<Vec<ChunkRef>> {
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

/// The snapshot a copy reads its chunks from.
pub(super) struct CopySource<'a> {
    pub store: &'a ChunkStore,
    pub id: &'a SnapshotId,
    pub cipher: &'a SectorCipher,
}

/// The copy's pipeline: each worker fetches a chunk of `todo` (block index,
/// chunk of snapshot `from`, verified), re-encrypts its data sectors in
/// place from `from.cipher` to `dst_cipher` (holes stay holes) and stages
/// it in a batch of `store`; this thread records it in `m` and, every
/// [`PENDING_PUT_EVERY`] chunks, commits the batch and re-stores the
/// pending manifest. Returns once every chunk is durable.
pub(super) fn reencrypt(
    from: &CopySource<'_>,
    store: &ChunkStore,
    dst_cipher: &SectorCipher,
    todo: &[(u64, ChunkRef)],
    m: &mut Manifest,
    mac: &crate::secret::Key256,
    rep: &mut dyn Reporter,
) -> ApiResult<()> {
    let total = todo.len() as u64;
    let mut done = 0u64;
    let mut since_put = 0usize;
    let batch = store.batch();
    crate::pipeline::run(
        todo,
        crate::pipeline::STORE_WORKERS,
        || Ok(AlignedBuf::new(CHUNK_SIZE as usize)),
        |buf, &(i, c)| {
            let n = from
                .store
                .get_chunk_into(&c, buf.spare())
                .map_err(|e| block_err(from.id, i, e))?;
            buf.set_len(n);
            on_data_sectors(buf, i * SECTORS_PER_CHUNK, |sec, run| {
                from.cipher.decrypt_sectors(sec, run)?;
                dst_cipher.encrypt_sectors(sec, run)
            })
            .map_err(vol_err)?;
            batch.put(buf).map_err(snap_err)
        },
        |&(i, _), r| {
            m.blocks.insert(i, r);
            done += 1;
            since_put += 1;
            rep.progress("copy", done, total);
            if since_put >= PENDING_PUT_EVERY {
                m.progress = progress_of(done, total);
                batch.commit().map_err(snap_err)?;
                put(store, m, mac)?;
                since_put = 0;
            }
            Ok(())
        },
    )?;
    batch.commit().map_err(snap_err)
}

/// A snapshot as the chunk source of a volume restored from it: its
/// authenticated block map, read from `store` and decrypted with `cipher`.
#[derive(Debug)]
pub(super) struct SnapshotSource {
    pub store: ChunkStore,
    pub id: SnapshotId,
    pub blocks: BTreeMap<u64, ChunkRef>,
    pub cipher: SectorCipher,
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
