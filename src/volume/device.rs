//! `EncryptedDevice`: a fixed-size, sector-encrypted block device over a
//! sparse backing file, safe to use from many threads at once.
//!
//! - Sector `n` of the device is AES-256-XTS ciphertext at byte `n * 4096`
//!   of the backing file (tweak `n`).
//! - A hole (an all-zero ciphertext sector) reads as zeros; writing an
//!   all-zero sector, a discard or a zero-range punches a hole instead of
//!   storing ciphertext, so the backing file stays thin.
//! - Partial sectors are read-modify-written under striped per-sector
//!   locks (writers exclusive, readers shared), so concurrent writers never
//!   tear a sector and readers never see half a sector.
//! - Every write marks its 512 KiB chunks in the [`ChangeLog`], durably,
//!   before the data is written.
//! - I/O is positional (pread/pwrite), never a shared seek offset. Whole
//!   sectors are read straight into the caller's buffer and decrypted in
//!   place; writes encrypt into one reusable per-thread buffer.
//! - Snapshot cuts ([`EncryptedDevice::cut`]): under a write barrier (every
//!   stripe lock held), the set of chunks a snapshot must capture is fixed;
//!   from then on a write to a chunk of that set not yet captured first
//!   stashes the chunk's current ciphertext (copy-before-write), so the
//!   snapshot reads exactly the data of the cut. Stashes are bounded in
//!   memory and spill to a file past the bound ([`crate::volume::stash`]).
//! - Lazy hydration ([`EncryptedDevice::with_hydration`]): a volume restored
//!   from a snapshot fetches a chunk from its [`ChunkSource`] on first read
//!   or write, re-encrypts it under the volume key, stores it, and records
//!   it durably in a [`HydrationMap`].

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::pipeline::AlignedBuf;
use crate::volume::blockmath::{chunk_range, split, PartialSector};
use crate::volume::changes::{ChangeLog, CHUNK_SIZE};
use crate::volume::error::VolumeError;
use crate::volume::stash::{sweep_spills, Stash, StashBudget, STASH_MEMORY_LIMIT};
use crate::volume::xts::{SectorCipher, SECTOR_SIZE};

const SS: u64 = SECTOR_SIZE as u64;

/// Largest piece of a request handled under one set of locks (a FUSE
/// request is at most this big; larger library calls are split).
const MAX_PIECE: u64 = 1024 * 1024;

/// Sectors per lock group: locks cover 64 KiB, few enough per 1 MiB piece.
const LOCK_GROUP_SECTORS: u64 = 16;

/// Chunks [`EncryptedDevice::hydrate_all`] writes between two syncs of the
/// data and the map (32 MiB).
const HYDRATION_BATCH: usize = 64;

/// Number of striped locks (group `g` uses stripe `g % N_LOCKS`).
const N_LOCKS: usize = 256;

/// Upper bound of lock groups one piece can touch (unaligned 1 MiB).
const MAX_GROUPS: usize = (MAX_PIECE / SS / LOCK_GROUP_SECTORS) as usize + 2;

thread_local! {
    /// Per-thread encryption buffer for writes, reused across requests.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's write buffer, `len` bytes of it.
fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        f(&mut scratch[..len])
    })
}

/// The decrypted view of one volume's sparse, encrypted backing file.
#[derive(Debug)]
pub struct EncryptedDevice {
    file: File,
    path: PathBuf,
    /// Device size in bytes; only grows ([`EncryptedDevice::grow`]).
    size: AtomicU64,
    /// Held by a grow: one at a time.
    grow_lock: Mutex<()>,
    cipher: SectorCipher,
    changes: ChangeLog,
    locks: Box<[RwLock<()>]>,
    /// Snapshot cuts in progress (copy-before-write state).
    cuts: Mutex<Vec<Cut>>,
    /// `cuts.len()`, read without the mutex on every write.
    n_cuts: AtomicUsize,
    /// What the cuts' stashes may hold in memory together.
    stash_budget: Arc<StashBudget>,
    hydration: Option<Hydration>,
    /// I/O errors answered to the device's users (see
    /// [`EncryptedDevice::note_io_error`]).
    io_errors: AtomicU64,
    /// Unix seconds of the latest of them (0: none).
    last_io_error: AtomicU64,
}

/// Where a restored volume's not yet hydrated chunks come from.
pub trait ChunkSource: Send + Sync + std::fmt::Debug {
    /// Fills `out` (one chunk, [`CHUNK_SIZE`] bytes) with the plaintext of
    /// chunk `index`; zeros for a chunk the source does not hold. Data that
    /// fails verification is an error, never returned.
    fn fetch(&self, index: u64, out: &mut [u8]) -> Result<(), VolumeError>;
}

/// One snapshot cut in progress.
#[derive(Debug)]
struct Cut {
    id: String,
    /// Every chunk the snapshot captures (fixed at the cut).
    chunks: Vec<u64>,
    /// Chunks of `chunks` not yet handed to the snapshot.
    pending: HashSet<u64>,
    /// Ciphertext of pending chunks as it was at the cut, saved before a write.
    stash: Stash,
    /// Chunks written after the cut (their change bits must stay set).
    dirtied: HashSet<u64>,
}

/// The durable record of which chunks of a restored volume still have to
/// be fetched: one byte per chunk (1 = to fetch, 0 = stored locally).
#[derive(Debug)]
pub struct HydrationMap {
    file: File,
    path: PathBuf,
    pending: Vec<AtomicBool>,
}

impl HydrationMap {
    /// Creates the map file: `to_fetch[i]` says whether chunk `i` must be
    /// fetched.
    pub fn create(path: &Path, to_fetch: &[bool]) -> Result<(), VolumeError> {
        let bytes: Vec<u8> = to_fetch.iter().map(|&b| u8::from(b)).collect();
        let tmp = path.with_extension("hydrate.tmp");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| VolumeError::io("creating hydration map", &tmp, e))?;
        f.write_all_at(&bytes, 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| VolumeError::io("writing hydration map", &tmp, e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| VolumeError::io("installing hydration map", path, e))
    }

    /// Opens an existing map.
    pub fn open(path: &Path) -> Result<Self, VolumeError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| VolumeError::io("opening hydration map", path, e))?;
        let bytes =
            std::fs::read(path).map_err(|e| VolumeError::io("reading hydration map", path, e))?;
        if bytes.iter().any(|&b| b > 1) {
            return Err(VolumeError::InvalidInput(format!(
                "hydration map {} is corrupt (bytes other than 0 and 1)",
                path.display()
            )));
        }
        Ok(HydrationMap {
            file,
            path: path.to_path_buf(),
            pending: bytes.iter().map(|&b| AtomicBool::new(b == 1)).collect(),
        })
    }

    /// Whether chunk `index` still has to be fetched.
    pub fn is_pending(&self, index: u64) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.pending.get(i))
            .is_some_and(|b| b.load(Ordering::Acquire))
    }

    /// Chunks still to fetch.
    pub fn pending_chunks(&self) -> Vec<u64> {
        (0..self.pending.len() as u64)
            .filter(|&i| self.is_pending(i))
            .collect()
    }

    fn mark_done(&self, chunks: &[u64]) -> Result<(), VolumeError> {
        for &index in chunks {
            self.file
                .write_all_at(&[0], index)
                .map_err(|e| VolumeError::io("updating hydration map", &self.path, e))?;
        }
        self.file
            .sync_data()
            .map_err(|e| VolumeError::io("syncing hydration map", &self.path, e))?;
        for &index in chunks {
            if let Some(b) = usize::try_from(index)
                .ok()
                .and_then(|i| self.pending.get(i))
            {
                b.store(false, Ordering::Release);
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Hydration {
    source: Arc<dyn ChunkSource>,
    map: HydrationMap,
    /// Shared by the workers of [`EncryptedDevice::hydrate_all`] from the
    /// pending check of a chunk through its write; exclusive for a
    /// hydration on first use, which checks, writes, syncs and marks under
    /// it. So no chunk is written from the snapshot after the map marks it
    /// done (when the user's writes may have followed).
    lock: RwLock<()>,
}

impl EncryptedDevice {
    /// Opens (creating it, mode 0600, if missing) the backing file at
    /// `backing` as a device of `size` bytes — a non-zero multiple of 4096.
    /// A shorter backing file is extended sparsely; the change log is grown
    /// to cover the device.
    pub fn open(
        backing: &Path,
        size: u64,
        cipher: SectorCipher,
        changes: ChangeLog,
    ) -> Result<Self, VolumeError> {
        if size == 0 || !size.is_multiple_of(SS) {
            return Err(VolumeError::InvalidSize {
                size,
                sector_size: SS,
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(backing)
            .map_err(|e| VolumeError::io("opening backing file", backing, e))?;
        let len = file
            .metadata()
            .map_err(|e| VolumeError::io("reading backing file size", backing, e))?
            .len();
        if len > size {
            return Err(VolumeError::InvalidInput(format!(
                "backing file {} is {len} bytes, larger than the {size}-byte volume; \
                 volumes never shrink",
                backing.display()
            )));
        }
        if len < size {
            file.set_len(size)
                .map_err(|e| VolumeError::io("extending backing file", backing, e))?;
        }
        let n_chunks = size.div_ceil(CHUNK_SIZE);
        if changes.n_chunks() < n_chunks {
            changes.resize(n_chunks)?;
        }
        // No cut is in progress yet: a spill file by name is a leftover.
        sweep_spills(backing);
        Ok(EncryptedDevice {
            file,
            path: backing.to_path_buf(),
            size: AtomicU64::new(size),
            grow_lock: Mutex::new(()),
            cipher,
            changes,
            locks: (0..N_LOCKS).map(|_| RwLock::new(())).collect(),
            cuts: Mutex::new(Vec::new()),
            n_cuts: AtomicUsize::new(0),
            stash_budget: StashBudget::new(STASH_MEMORY_LIMIT),
            hydration: None,
            io_errors: AtomicU64::new(0),
            last_io_error: AtomicU64::new(0),
        })
    }

    /// Counts an I/O error answered to a user of the device (a read or
    /// write that failed: a chunk that failed verification, the host file
    /// system full or failing). DescribeVolumeStatus reports the volume
    /// impaired once any was seen.
    pub fn note_io_error(&self) {
        self.io_errors.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_io_error.store(now, Ordering::Relaxed);
    }

    /// The I/O errors counted so far and the Unix time of the latest.
    pub fn io_errors(&self) -> (u64, u64) {
        (
            self.io_errors.load(Ordering::Relaxed),
            self.last_io_error.load(Ordering::Relaxed),
        )
    }

    /// Bounds what copy-before-write keeps in memory for all cuts together
    /// to `bytes` (default [`STASH_MEMORY_LIMIT`]); past it chunks spill to
    /// a file beside the backing file.
    pub fn with_stash_limit(mut self, bytes: usize) -> Self {
        self.stash_budget = StashBudget::new(bytes);
        self
    }

    /// Bytes copy-before-write holds in memory now.
    pub fn stash_in_memory(&self) -> usize {
        self.stash_budget.used()
    }

    /// Serves chunks marked in `map` from `source` (lazy hydration of a
    /// restored volume).
    pub fn with_hydration(mut self, source: Arc<dyn ChunkSource>, map: HydrationMap) -> Self {
        self.hydration = Some(Hydration {
            source,
            map,
            lock: RwLock::new(()),
        });
        self
    }

    /// Chunks still to be fetched from the snapshot (empty when the volume
    /// was not restored or is fully hydrated).
    pub fn hydration_pending(&self) -> Vec<u64> {
        self.hydration
            .as_ref()
            .map(|h| h.map.pending_chunks())
            .unwrap_or_default()
    }

    /// Fetches every chunk not yet hydrated, on a pipeline of workers
    /// (fetch, verify, decrypt, re-encrypt and write overlap on both
    /// cores); `progress(done, total)` after each batch is durable.
    ///
    /// Order of durability as for one chunk: the data of a batch of
    /// written chunks is synced, then the map marks them done (synced), so
    /// a crash at any point refetches at worst. The sync and the map of one
    /// batch run on this thread while the workers go on with the next.
    pub fn hydrate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<(), VolumeError> {
        let Some(h) = &self.hydration else {
            return Ok(());
        };
        let todo = h.map.pending_chunks();
        let total = todo.len() as u64;
        let mut seen = 0u64;
        let mut written: Vec<u64> = Vec::with_capacity(HYDRATION_BATCH);
        let mut commit = |written: &mut Vec<u64>, seen: u64| -> Result<(), VolumeError> {
            if !written.is_empty() {
                self.file
                    .sync_data()
                    .map_err(|e| VolumeError::io("syncing backing file", &self.path, e))?;
                h.map.mark_done(written)?;
                written.clear();
            }
            progress(seen, total);
            Ok(())
        };
        // Bulk hydration writes around the page cache: the volume's data
        // would otherwise fill the host's cache (and on a VM pay for
        // every fresh page it touches) only to be flushed by the batch's
        // sync. Where the filesystem refuses O_DIRECT, the writes are
        // buffered.
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path)
            .inspect_err(|e| tracing::debug!("hydration without O_DIRECT: {e}"))
            .ok();
        crate::pipeline::run(
            &todo,
            crate::pipeline::workers(),
            || {
                Ok((
                    AlignedBuf::new(CHUNK_SIZE as usize),
                    AlignedBuf::new(CHUNK_SIZE as usize),
                ))
            },
            |(buf, out), &index| self.hydrate_one(h, index, buf, out, direct.as_ref()),
            |&index, wrote| {
                seen += 1;
                if wrote {
                    written.push(index);
                }
                if written.len() >= HYDRATION_BATCH {
                    commit(&mut written, seen)?;
                }
                Ok(())
            },
        )?;
        if total > 0 {
            commit(&mut written, seen)?;
        }
        Ok(())
    }

    /// One worker's chunk of [`Self::hydrate_all`]: fetched into `buf`,
    /// then re-encrypted into `out` and written (through `direct`, the
    /// backing file opened with O_DIRECT, if there is one) if still
    /// pending; not durable yet. Whether it was written.
    fn hydrate_one(
        &self,
        h: &Hydration,
        index: u64,
        buf: &mut AlignedBuf,
        out: &mut AlignedBuf,
        direct: Option<&File>,
    ) -> Result<bool, VolumeError> {
        if !h.map.is_pending(index) {
            return Ok(false);
        }
        // The snapshot never changes: fetching needs no lock.
        buf.set_len(CHUNK_SIZE as usize);
        h.source.fetch(index, buf)?;
        let _shared = h.lock.read().unwrap_or_else(|p| p.into_inner());
        if !h.map.is_pending(index) {
            return Ok(false);
        }
        let start = index * CHUNK_SIZE;
        let len = CHUNK_SIZE.min(self.size().saturating_sub(start)) as usize;
        out.set_len(len);
        self.store_sectors_via(direct, start / SS, &buf[..len], out)?;
        Ok(true)
    }

    /// Makes chunk `index` local: fetches, re-encrypts and stores it if the
    /// hydration map says it is still in the snapshot.
    pub fn ensure_hydrated(&self, index: u64) -> Result<(), VolumeError> {
        match &self.hydration {
            Some(h) if h.map.is_pending(index) => self.hydrate_chunks(&[index]),
            _ => Ok(()),
        }
    }

    /// Hydrates those of `chunks` still pending: data first (synced), then
    /// the map (synced), so a crash at any point refetches at worst.
    fn hydrate_chunks(&self, chunks: &[u64]) -> Result<(), VolumeError> {
        let Some(h) = &self.hydration else {
            return Ok(());
        };
        let _g = h.lock.write().unwrap_or_else(|p| p.into_inner());
        let todo: Vec<u64> = chunks
            .iter()
            .copied()
            .filter(|&c| h.map.is_pending(c))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let mut buf = AlignedBuf::new(CHUNK_SIZE as usize);
        for &index in &todo {
            let start = index * CHUNK_SIZE;
            let len = CHUNK_SIZE.min(self.size().saturating_sub(start)) as usize;
            h.source.fetch(index, &mut buf)?;
            with_scratch(len, |out| self.store_sectors(start / SS, &buf[..len], out))?;
        }
        self.file
            .sync_data()
            .map_err(|e| VolumeError::io("syncing backing file", &self.path, e))?;
        h.map.mark_done(&todo)
    }

    fn ensure_range_hydrated(&self, off: u64, len: u64) -> Result<(), VolumeError> {
        if self.hydration.is_none() {
            return Ok(());
        }
        if let Some((first, last)) = chunk_range(off, len, CHUNK_SIZE) {
            for c in first..=last {
                self.ensure_hydrated(c)?;
            }
        }
        Ok(())
    }

    /// Cuts snapshot `id`: under a write barrier, fixes the chunks it
    /// captures — every chunk if `all`, else those marked in the change log
    /// — and returns them. Until [`Self::finish_cut`], writes to those
    /// chunks preserve their ciphertext for [`Self::snapshot_read`].
    pub fn cut(&self, id: &str, all: bool, max_cuts: usize) -> Result<Vec<u64>, VolumeError> {
        // The barrier: every stripe lock, in order (writers hold their
        // stripes across the copy-before-write check and the write).
        let _barrier = self.barrier();
        let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        if cuts.len() >= max_cuts {
            return Err(VolumeError::TooManyCuts {
                in_progress: cuts.len(),
                max: max_cuts,
            });
        }
        if cuts.iter().any(|c| c.id == id) {
            return Err(VolumeError::InvalidInput(format!(
                "snapshot {id} is already cut"
            )));
        }
        let chunks: Vec<u64> = if all {
            (0..self.size().div_ceil(CHUNK_SIZE)).collect()
        } else {
            self.changes.changed()
        };
        cuts.push(Cut {
            id: id.to_string(),
            pending: chunks.iter().copied().collect(),
            chunks: chunks.clone(),
            stash: Stash::new(&self.path, self.stash_budget.clone()),
            dirtied: HashSet::new(),
        });
        self.n_cuts.store(cuts.len(), Ordering::Release);
        Ok(chunks)
    }

    /// The ciphertext of chunk `index` as it was at the cut of snapshot
    /// `id` (each chunk once).
    pub fn snapshot_read(&self, id: &str, index: u64) -> Result<Vec<u8>, VolumeError> {
        let mut buf = Vec::new();
        self.snapshot_read_into(id, index, &mut buf)?;
        Ok(buf)
    }

    /// [`Self::snapshot_read`] into `buf`, which is resized to the chunk's
    /// length and whose allocation is reused from call to call (a fresh
    /// 512 KiB buffer per chunk costs a mapping and its page faults).
    pub fn snapshot_read_into(
        &self,
        id: &str,
        index: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), VolumeError> {
        self.ensure_hydrated(index)?;
        let start = index * CHUNK_SIZE;
        // The chunk's stripes, shared, for the whole read: a writer of the
        // chunk waits on them, so one that came first has stashed the
        // chunk's ciphertext at the cut, and one that comes after finds it
        // no longer pending and overwrites it freely. The cuts mutex is
        // held only to look the chunk up, so readers of other chunks and
        // writers elsewhere go on meanwhile. (Stripes before the cuts
        // mutex: the order writers and the barrier take them in.)
        let _stripes = self.lock_read(start, CHUNK_SIZE as usize);
        {
            let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
            let cut = cuts
                .iter_mut()
                .find(|c| c.id == id)
                .ok_or_else(|| VolumeError::InvalidInput(format!("snapshot {id} is not cut")))?;
            if let Some(b) = cut.stash.take(index)? {
                cut.pending.remove(&index);
                *buf = b;
                return Ok(());
            }
            if !cut.pending.remove(&index) {
                return Err(VolumeError::InvalidInput(format!(
                    "chunk {index} is not part of snapshot {id} or was already read"
                )));
            }
        }
        let len = CHUNK_SIZE.min(self.size().saturating_sub(start)) as usize;
        buf.resize(len, 0);
        self.pread(buf, start)
    }

    /// The plaintext of chunk `index` as it was at the cut of snapshot `id`
    /// (each chunk once, as [`Self::snapshot_read`]), [`CHUNK_SIZE`] bytes:
    /// zeros past the device's end and for holes. For a volume host that
    /// sends its cut to the control plane (PutSnapshotBlock).
    pub fn snapshot_read_plain(
        &self,
        id: &str,
        index: u64,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, VolumeError> {
        let mut b = zeroize::Zeroizing::new(self.snapshot_read(id, index)?);
        let first = index * (CHUNK_SIZE / SS);
        for (i, sector) in b.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            // A hole's zero ciphertext is already the zero plaintext.
            if !is_zero(sector) {
                self.cipher.decrypt_sectors(first + i as u64, sector)?;
            }
        }
        let mut out = zeroize::Zeroizing::new(vec![0u8; CHUNK_SIZE as usize]);
        let n = b.len().min(out.len());
        out[..n].copy_from_slice(&b[..n]);
        Ok(out)
    }

    /// Ends the cut of snapshot `id`. If `completed`, clears the change-log
    /// bits of its chunks that were not written after the cut.
    pub fn finish_cut(&self, id: &str, completed: bool) -> Result<(), VolumeError> {
        // Under the write barrier no write is between marking its change
        // bit and recording itself as dirtied, so no bit of a write after
        // the cut is cleared.
        let _barrier = self.barrier();
        let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pos) = cuts.iter().position(|c| c.id == id) else {
            return Ok(());
        };
        let cut = cuts.remove(pos);
        self.n_cuts.store(cuts.len(), Ordering::Release);
        if cut.stash.spilled() > 0 {
            tracing::info!(
                snapshot = id,
                chunks = cut.stash.spilled(),
                "copy-before-write spilled chunks to a file (memory bound reached)"
            );
        }
        if completed {
            let clear: Vec<u64> = cut
                .chunks
                .iter()
                .copied()
                .filter(|c| !cut.dirtied.contains(c))
                .collect();
            self.changes.clear(&clear)?;
        }
        Ok(())
    }

    fn read_chunk_ciphertext(&self, index: u64) -> Result<Vec<u8>, VolumeError> {
        let start = index * CHUNK_SIZE;
        let len = CHUNK_SIZE.min(self.size().saturating_sub(start)) as usize;
        let mut buf = vec![0u8; len];
        self.pread(&mut buf, start)?;
        Ok(buf)
    }

    /// Copy-before-write: called with the stripe locks of `[off, off+len)`
    /// held, before the write.
    fn before_write(&self, off: u64, len: usize) -> Result<(), VolumeError> {
        if self.n_cuts.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let Some((first, last)) = chunk_range(off, len as u64, CHUNK_SIZE) else {
            return Ok(());
        };
        let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        for c in first..=last {
            let mut saved: Option<Vec<u8>> = None;
            for cut in cuts.iter_mut() {
                cut.dirtied.insert(c);
                if cut.pending.contains(&c) && !cut.stash.contains(c) {
                    let b = match &saved {
                        Some(b) => b.clone(),
                        None => {
                            let b = self.read_chunk_ciphertext(c)?;
                            saved = Some(b.clone());
                            b
                        }
                    };
                    cut.stash.insert(c, b)?;
                }
            }
        }
        Ok(())
    }

    /// Where the expanded XTS key schedule lives in memory (address and
    /// length), so a daemon that may not lock all its memory can lock these
    /// pages. The device never moves while shared (it sits in an `Arc`).
    pub fn key_memory(&self) -> (*const u8, usize) {
        (
            std::ptr::from_ref(&self.cipher).cast(),
            std::mem::size_of::<SectorCipher>(),
        )
    }

    /// Device size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Grows the device online to `new_size` bytes (a multiple of 4096, not
    /// smaller than today's): the backing file is extended sparsely and made
    /// durable, the change log covers the new chunks, and only then do
    /// reads and writes see the new end. New chunks read as zeros and are
    /// never hydrated from a snapshot. Shrinking is refused.
    pub fn grow(&self, new_size: u64) -> Result<(), VolumeError> {
        let _one = self.grow_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.size();
        if !new_size.is_multiple_of(SS) {
            return Err(VolumeError::InvalidSize {
                size: new_size,
                sector_size: SS,
            });
        }
        if new_size < old {
            return Err(VolumeError::InvalidInput(format!(
                "the device has {old} bytes; it cannot shrink to {new_size}"
            )));
        }
        if new_size == old {
            return Ok(());
        }
        self.file
            .set_len(new_size)
            .map_err(|e| VolumeError::io("extending backing file", &self.path, e))?;
        self.file
            .sync_all()
            .map_err(|e| VolumeError::io("syncing backing file", &self.path, e))?;
        self.changes.resize(new_size.div_ceil(CHUNK_SIZE))?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    /// The backing file's path.
    pub fn backing_path(&self) -> &Path {
        &self.path
    }

    /// The change log (for snapshots).
    pub fn changes(&self) -> &ChangeLog {
        &self.changes
    }

    /// Reads up to `buf.len()` bytes at `off`; returns fewer only at the end
    /// of the device (0 at or past the end), like a regular file.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize, VolumeError> {
        if off >= self.size() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size() - off) as usize;
        self.ensure_range_hydrated(off, len as u64)?;
        let mut done = 0usize;
        while done < len {
            let pos = off + done as u64;
            let n = piece_len(pos, len - done);
            self.read_piece(&mut buf[done..done + n], pos)?;
            done += n;
        }
        Ok(len)
    }

    /// Writes all of `buf` at `off`. The whole range must lie inside the
    /// device. Durable after [`Self::sync`].
    pub fn write_at(&self, buf: &[u8], off: u64) -> Result<(), VolumeError> {
        self.check_range(off, buf.len() as u64)?;
        self.ensure_range_hydrated(off, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let n = piece_len(pos, buf.len() - done);
            self.write_piece(Source::Data(&buf[done..done + n]), pos, n)?;
            done += n;
        }
        Ok(())
    }

    /// Discards `[off, off + len)`: it reads as zeros afterwards, and whole
    /// sectors become holes in the backing file.
    pub fn punch_hole(&self, off: u64, len: u64) -> Result<(), VolumeError> {
        self.zero_range(off, len)
    }

    /// Zeroes `[off, off + len)`. Zeros are stored as holes, so this is the
    /// same operation as [`Self::punch_hole`].
    pub fn zero_range(&self, off: u64, len: u64) -> Result<(), VolumeError> {
        self.check_range(off, len)?;
        self.ensure_range_hydrated(off, len)?;
        let mut done = 0u64;
        while done < len {
            let pos = off + done;
            let n = piece_len(pos, usize::try_from(len - done).unwrap_or(usize::MAX));
            self.write_piece(Source::Zeros, pos, n)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Makes every completed write durable (fsync of the backing file; the
    /// change log is already durable).
    pub fn sync(&self) -> Result<(), VolumeError> {
        self.file
            .sync_all()
            .map_err(|e| VolumeError::io("syncing backing file", &self.path, e))
    }

    /// Syncs and records a clean stop in the change log. The device stays
    /// usable; a later write reopens the log.
    pub fn close(&self) -> Result<(), VolumeError> {
        // The barrier: the log shrinks to the changed chunks only while no
        // write is between its mark and its data.
        let _barrier = self.barrier();
        self.sync()?;
        self.changes.close_clean()
    }

    /// Every stripe lock, in order: no write is in progress while held
    /// (writers hold their stripes from the change mark to the data).
    fn barrier(&self) -> Vec<RwLockWriteGuard<'_, ()>> {
        self.locks
            .iter()
            .map(|l| l.write().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    fn check_range(&self, off: u64, len: u64) -> Result<(), VolumeError> {
        match off.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(VolumeError::OutOfRange {
                off,
                end: off.saturating_add(len),
                size: self.size(),
            }),
        }
    }

    fn mark_changed(&self, off: u64, len: u64) -> Result<(), VolumeError> {
        match chunk_range(off, len, CHUNK_SIZE) {
            Some((first, last)) => self.changes.mark(first, last),
            None => Ok(()),
        }
    }

    fn read_piece(&self, buf: &mut [u8], off: u64) -> Result<(), VolumeError> {
        let span = split(off, buf.len(), SECTOR_SIZE);
        let _guard = self.lock_read(off, buf.len());
        if let Some(h) = span.head {
            self.read_partial(&h, buf)?;
        }
        if span.whole > 0 {
            let start = span.whole_in_buf;
            let end = start + span.whole as usize * SECTOR_SIZE;
            let first = span.first_whole;
            self.pread(&mut buf[start..end], first * SS)?;
            for (i, sector) in buf[start..end].chunks_exact_mut(SECTOR_SIZE).enumerate() {
                // A hole's zero ciphertext is already the zero plaintext.
                if !is_zero(sector) {
                    self.cipher.decrypt_sectors(first + i as u64, sector)?;
                }
            }
        }
        if let Some(t) = span.tail {
            self.read_partial(&t, buf)?;
        }
        Ok(())
    }

    fn read_partial(&self, p: &PartialSector, buf: &mut [u8]) -> Result<(), VolumeError> {
        let mut sector = [0u8; SECTOR_SIZE];
        self.read_sector(p.sector, &mut sector)?;
        buf[p.in_buf..p.in_buf + p.len].copy_from_slice(&sector[p.in_sector..p.in_sector + p.len]);
        Ok(())
    }

    /// Reads and decrypts one sector (zeros for a hole).
    fn read_sector(&self, sector: u64, out: &mut [u8; SECTOR_SIZE]) -> Result<(), VolumeError> {
        self.pread(out, sector * SS)?;
        if !is_zero(out) {
            self.cipher.decrypt_sectors(sector, out)?;
        }
        Ok(())
    }

    fn write_piece(&self, src: Source<'_>, off: u64, len: usize) -> Result<(), VolumeError> {
        let span = split(off, len, SECTOR_SIZE);
        let _guard = self.lock_write(off, len);
        // Marked under the stripe locks, so a snapshot that clears change
        // bits under the write barrier never loses this write's bit.
        self.mark_changed(off, len as u64)?;
        self.before_write(off, len)?;
        if let Some(h) = span.head {
            self.write_partial(&h, &src)?;
        }
        if span.whole > 0 {
            let n = span.whole as usize * SECTOR_SIZE;
            match src {
                Source::Zeros => self.punch(span.first_whole * SS, n as u64)?,
                Source::Data(data) => {
                    let plain = &data[span.whole_in_buf..span.whole_in_buf + n];
                    with_scratch(n, |out| self.store_sectors(span.first_whole, plain, out))?;
                }
            }
        }
        if let Some(t) = span.tail {
            self.write_partial(&t, &src)?;
        }
        Ok(())
    }

    fn write_partial(&self, p: &PartialSector, src: &Source<'_>) -> Result<(), VolumeError> {
        let mut sector = [0u8; SECTOR_SIZE];
        self.read_sector(p.sector, &mut sector)?;
        let piece = &mut sector[p.in_sector..p.in_sector + p.len];
        match src {
            Source::Data(data) => piece.copy_from_slice(&data[p.in_buf..p.in_buf + p.len]),
            Source::Zeros => piece.fill(0),
        }
        let mut out = [0u8; SECTOR_SIZE];
        self.store_sectors(p.sector, &sector, &mut out)
    }

    /// Stores plaintext sectors starting at `first`: runs of all-zero
    /// sectors become holes, other runs are encrypted from `plain` into
    /// `out` (as long as `plain`: the copy and the encryption are one pass)
    /// and written with one pwrite each.
    fn store_sectors(&self, first: u64, plain: &[u8], out: &mut [u8]) -> Result<(), VolumeError> {
        self.store_sectors_via(None, first, plain, out)
    }

    /// [`Self::store_sectors`], writing through `direct` (the backing file
    /// opened with O_DIRECT; `out` then starts on a 4 KiB boundary, as
    /// every run of whole sectors in it does) where given. A write the
    /// kernel refuses there (EINVAL: an alignment the filesystem does not
    /// take) goes through the buffered file instead.
    fn store_sectors_via(
        &self,
        direct: Option<&File>,
        first: u64,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<(), VolumeError> {
        let n = plain.len() / SECTOR_SIZE;
        let mut i = 0;
        while i < n {
            let zero = is_zero(&plain[i * SECTOR_SIZE..(i + 1) * SECTOR_SIZE]);
            let mut j = i + 1;
            while j < n && is_zero(&plain[j * SECTOR_SIZE..(j + 1) * SECTOR_SIZE]) == zero {
                j += 1;
            }
            let run = &plain[i * SECTOR_SIZE..j * SECTOR_SIZE];
            let off = (first + i as u64) * SS;
            if zero {
                self.punch(off, run.len() as u64)?;
            } else {
                let sealed = &mut out[i * SECTOR_SIZE..j * SECTOR_SIZE];
                self.cipher
                    .encrypt_sectors_into(first + i as u64, run, sealed)?;
                let written = match direct {
                    Some(d) => match d.write_all_at(sealed, off) {
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            self.file.write_all_at(sealed, off)
                        }
                        other => other,
                    },
                    None => self.file.write_all_at(sealed, off),
                };
                written.map_err(|e| self.dev_err("writing", off, e))?;
            }
            i = j;
        }
        Ok(())
    }

    /// Turns whole sectors into holes; where the backing filesystem cannot
    /// punch holes, writes zero ciphertext, which reads back the same.
    fn punch(&self, off: u64, len: u64) -> Result<(), VolumeError> {
        if libc::off_t::try_from(off.saturating_add(len)).is_err() {
            return Err(VolumeError::OutOfRange {
                off,
                end: off.saturating_add(len),
                size: self.size(),
            });
        }
        let Err(err) = crate::sys::punch_hole(&self.file, off, len) else {
            return Ok(());
        };
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(self.dev_err("punching a hole", off, err));
        }
        let zeros = [0u8; SECTOR_SIZE];
        for s in 0..len / SS {
            let at = off + s * SS;
            self.file
                .write_all_at(&zeros, at)
                .map_err(|e| self.dev_err("writing zeros", at, e))?;
        }
        Ok(())
    }

    /// Fills `buf` from the backing file at `off`; bytes past its end (none
    /// while the file has the device's size) read as zeros.
    fn pread(&self, buf: &mut [u8], off: u64) -> Result<(), VolumeError> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.dev_err("reading", off + done as u64, e)),
            }
        }
        Ok(())
    }

    fn dev_err(&self, op: &'static str, off: u64, source: io::Error) -> VolumeError {
        VolumeError::DeviceIo {
            op,
            path: self.path.clone(),
            off,
            source,
        }
    }

    /// The stripes covering `[off, off + len)`, ascending and distinct (the
    /// one global lock order, so lockers never deadlock).
    fn stripes(off: u64, len: usize) -> ([usize; MAX_GROUPS], usize) {
        let mut out = [0usize; MAX_GROUPS];
        let first = off / SS / LOCK_GROUP_SECTORS;
        let last = (off + len.max(1) as u64 - 1) / SS / LOCK_GROUP_SECTORS;
        let mut n = 0;
        for g in first..=last {
            if n == MAX_GROUPS {
                break; // unreachable: pieces are at most MAX_PIECE long
            }
            out[n] = (g % N_LOCKS as u64) as usize;
            n += 1;
        }
        out[..n].sort_unstable();
        (out, n)
    }

    fn lock_read(&self, off: u64, len: usize) -> [Option<RwLockReadGuard<'_, ()>>; MAX_GROUPS] {
        let (stripes, n) = Self::stripes(off, len);
        let mut guards = std::array::from_fn(|_| None);
        for (g, s) in guards.iter_mut().zip(&stripes[..n]) {
            *g = Some(self.locks[*s].read().unwrap_or_else(|p| p.into_inner()));
        }
        guards
    }

    fn lock_write(&self, off: u64, len: usize) -> [Option<RwLockWriteGuard<'_, ()>>; MAX_GROUPS] {
        let (stripes, n) = Self::stripes(off, len);
        let mut guards = std::array::from_fn(|_| None);
        for (g, s) in guards.iter_mut().zip(&stripes[..n]) {
            *g = Some(self.locks[*s].write().unwrap_or_else(|p| p.into_inner()));
        }
        guards
    }
}

/// What a write stores: caller data, or zeros (discard / zero range).
enum Source<'a> {
    Data(&'a [u8]),
    Zeros,
}

/// Length of the next piece at `pos`: at most `MAX_PIECE`, ending on a
/// `MAX_PIECE` boundary when possible so pieces stay sector-aligned.
fn piece_len(pos: u64, remaining: usize) -> usize {
    let to_boundary = MAX_PIECE - pos % MAX_PIECE;
    (remaining as u64).min(to_boundary) as usize
}

/// Whether a buffer is all zeros (vectorizable: ORs 64-byte lanes).
fn is_zero(buf: &[u8]) -> bool {
    let (chunks, rest) = buf.as_chunks::<64>();
    chunks.iter().all(|c| c.iter().fold(0u8, |a, b| a | b) == 0) && rest.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::VolumeDataKey;

    fn device(dir: &Path, chunks: u64) -> EncryptedDevice {
        let key = VolumeDataKey::from_slice(&(0..64).collect::<Vec<u8>>()).unwrap();
        let changes = ChangeLog::open(&dir.join("changes"), chunks).unwrap();
        let cipher = SectorCipher::new(&key).unwrap();
        EncryptedDevice::open(&dir.join("img"), chunks * CHUNK_SIZE, cipher, changes).unwrap()
    }

    #[test]
    fn cut_preserves_the_data_of_the_cut_and_later_change_bits() {
        let dir = tempfile::tempdir().unwrap();
        let dev = device(dir.path(), 4);
        dev.write_at(&[1u8; 8192], 0).unwrap();
        dev.write_at(&[2u8; 4096], CHUNK_SIZE).unwrap();
        assert_eq!(dev.cut("s1", false, 5).unwrap(), vec![0, 1]);
        let at_cut = dev.read_chunk_ciphertext(0).unwrap();
        dev.write_at(&[9u8; 4096], 0).unwrap();
        assert_ne!(dev.read_chunk_ciphertext(0).unwrap(), at_cut);
        assert_eq!(dev.snapshot_read("s1", 0).unwrap(), at_cut);
        assert!(dev.snapshot_read("s1", 0).is_err(), "each chunk once");
        assert!(dev.snapshot_read("s1", 3).is_err(), "not in the cut");
        let one = dev.read_chunk_ciphertext(1).unwrap();
        assert_eq!(dev.snapshot_read("s1", 1).unwrap(), one);
        dev.finish_cut("s1", true).unwrap();
        // Chunk 0 was written after the cut: still changed for the next one.
        assert_eq!(dev.changes().changed(), vec![0]);
        let mut buf = [0u8; 4];
        dev.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [9; 4]);
    }

    #[test]
    fn cut_reads_racing_writers_see_the_data_at_the_cut() {
        // Readers of the cut and writers of the same chunks at once: each
        // chunk read must be its ciphertext at the cut, whichever of the
        // two reached the chunk first.
        let dir = tempfile::tempdir().unwrap();
        let chunks = 32u64;
        let dev = device(dir.path(), chunks);
        for c in 0..chunks {
            dev.write_at(&vec![c as u8 + 1; CHUNK_SIZE as usize], c * CHUNK_SIZE)
                .unwrap();
        }
        let at_cut: Vec<Vec<u8>> = (0..chunks)
            .map(|c| dev.read_chunk_ciphertext(c).unwrap())
            .collect();
        assert_eq!(dev.cut("race", true, 5).unwrap().len(), chunks as usize);
        std::thread::scope(|s| {
            for w in 0..2u64 {
                let dev = &dev;
                s.spawn(move || {
                    for round in 0..3u8 {
                        for c in (w..chunks).step_by(2) {
                            let off = c * CHUNK_SIZE + (u64::from(round) * 12288) % CHUNK_SIZE;
                            dev.write_at(&[0xee - round; 8192], off).unwrap();
                        }
                    }
                });
            }
            for r in 0..2u64 {
                let (dev, at_cut) = (&dev, &at_cut);
                s.spawn(move || {
                    let mut buf = Vec::new();
                    for c in (r..chunks).step_by(2) {
                        dev.snapshot_read_into("race", c, &mut buf).unwrap();
                        assert!(
                            buf == at_cut[c as usize],
                            "chunk {c} is not as it was at the cut"
                        );
                    }
                });
            }
        });
        dev.finish_cut("race", true).unwrap();
    }

    #[test]
    fn copy_before_write_past_the_memory_bound_spills_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let dev = device(dir.path(), 8).with_stash_limit(2 * CHUNK_SIZE as usize);
        for c in 0..8u64 {
            dev.write_at(&vec![c as u8 + 1; CHUNK_SIZE as usize], c * CHUNK_SIZE)
                .unwrap();
        }
        let at_cut: Vec<Vec<u8>> = (0..8)
            .map(|c| dev.read_chunk_ciphertext(c).unwrap())
            .collect();
        assert_eq!(dev.cut("s1", false, 5).unwrap(), (0..8).collect::<Vec<_>>());
        assert_eq!(dev.cut("s2", false, 5).unwrap(), (0..8).collect::<Vec<_>>());
        assert_eq!(dev.snapshot_read("s1", 0).unwrap(), at_cut[0]);
        // Every chunk overwritten: 2 chunks stay in memory for both cuts
        // together, the other 13 stashed chunks go to the spill files.
        for c in 0..8u64 {
            dev.write_at(&vec![0xee; CHUNK_SIZE as usize], c * CHUNK_SIZE)
                .unwrap();
            assert!(dev.stash_in_memory() <= 2 * CHUNK_SIZE as usize);
        }
        assert_eq!(dev.stash_in_memory(), 2 * CHUNK_SIZE as usize);
        {
            let cuts = dev.cuts.lock().unwrap();
            assert_eq!(cuts[0].stash.spilled() + cuts[1].stash.spilled(), 13);
        }
        // No file by name: the spill files have none.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "{names:?}");
        for c in (1..8).rev() {
            assert_eq!(dev.snapshot_read("s1", c).unwrap(), at_cut[c as usize]);
        }
        for c in 0..8 {
            assert_eq!(dev.snapshot_read("s2", c).unwrap(), at_cut[c as usize]);
        }
        dev.finish_cut("s1", true).unwrap();
        dev.finish_cut("s2", true).unwrap();
        assert_eq!(dev.stash_in_memory(), 0);
        assert_eq!(dev.changes().changed(), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn at_most_max_cuts_and_abandoned_cuts_clear_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dev = device(dir.path(), 2);
        dev.write_at(&[3u8; 4096], 0).unwrap();
        for i in 0..5 {
            assert_eq!(dev.cut(&format!("s{i}"), true, 5).unwrap(), vec![0, 1]);
        }
        assert!(matches!(
            dev.cut("s5", true, 5),
            Err(VolumeError::TooManyCuts {
                in_progress: 5,
                max: 5
            })
        ));
        for i in 0..5 {
            dev.finish_cut(&format!("s{i}"), false).unwrap();
        }
        assert_eq!(dev.changes().changed(), vec![0]);
        assert!(dev.cut("s6", true, 5).is_ok());
    }

    #[derive(Debug, Default)]
    struct Pattern(std::sync::atomic::AtomicU64);
    impl ChunkSource for Pattern {
        fn fetch(&self, index: u64, out: &mut [u8]) -> Result<(), VolumeError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            out.fill(index as u8 + 0x40);
            Ok(())
        }
    }

    #[test]
    fn hydration_fetches_once_on_first_use_and_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let map_path = dir.path().join("map");
        HydrationMap::create(&map_path, &[false, true, true]).unwrap();
        let src = Arc::new(Pattern::default());
        let dev = device(dir.path(), 3)
            .with_hydration(src.clone(), HydrationMap::open(&map_path).unwrap());
        let mut buf = vec![0u8; 8];
        dev.read_at(&mut buf, CHUNK_SIZE + 100).unwrap();
        assert_eq!(buf, vec![0x41; 8]);
        dev.read_at(&mut buf, CHUNK_SIZE).unwrap();
        assert_eq!(src.0.load(Ordering::SeqCst), 1);
        dev.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, vec![0; 8], "chunk 0 is not in the snapshot");
        // A write to an unhydrated chunk hydrates it first (rest preserved).
        dev.write_at(&[7u8; 4], 2 * CHUNK_SIZE).unwrap();
        dev.read_at(&mut buf, 2 * CHUNK_SIZE).unwrap();
        assert_eq!(buf, [7, 7, 7, 7, 0x42, 0x42, 0x42, 0x42]);
        assert_eq!(std::fs::read(&map_path).unwrap(), vec![0, 0, 0]);
        assert!(dev.hydration_pending().is_empty());
    }

    /// Chunk `i`'s sector `k` is zero where `k % 3 == 0` (holes in the
    /// backing file) and `(i ^ k) | 1` (never zero) elsewhere.
    #[derive(Debug)]
    struct Mixed;
    impl ChunkSource for Mixed {
        fn fetch(&self, index: u64, out: &mut [u8]) -> Result<(), VolumeError> {
            for (k, sector) in out.chunks_mut(SECTOR_SIZE).enumerate() {
                sector.fill(if k % 3 == 0 {
                    0
                } else {
                    (index as u8) ^ k as u8 | 1
                });
            }
            Ok(())
        }
    }

    /// Bulk hydration (through O_DIRECT where the filesystem takes it)
    /// stores what a device opened afresh reads back, holes included, and
    /// only ciphertext.
    #[test]
    fn bulk_hydration_stores_what_a_fresh_device_reads() {
        let dir = tempfile::tempdir().unwrap();
        let map_path = dir.path().join("map");
        HydrationMap::create(&map_path, &[true, false, true, true]).unwrap();
        let dev = device(dir.path(), 4)
            .with_hydration(Arc::new(Mixed), HydrationMap::open(&map_path).unwrap());
        let mut seen = Vec::new();
        dev.hydrate_all(&mut |done, total| seen.push((done, total)))
            .unwrap();
        assert_eq!(seen.last(), Some(&(3, 3)));
        assert_eq!(std::fs::read(&map_path).unwrap(), vec![0, 0, 0, 0]);
        drop(dev);
        let fresh = device(dir.path(), 4);
        let raw = std::fs::read(dir.path().join("img")).unwrap();
        let mut want = vec![0u8; CHUNK_SIZE as usize];
        let mut got = vec![0u8; CHUNK_SIZE as usize];
        for c in 0..4u64 {
            fresh.read_at(&mut got, c * CHUNK_SIZE).unwrap();
            if c == 1 {
                assert!(is_zero(&got), "chunk 1 is not in the snapshot");
                continue;
            }
            Mixed.fetch(c, &mut want).unwrap();
            assert!(got == want, "chunk {c} reads back as hydrated");
            let stored = &raw[(c * CHUNK_SIZE) as usize..((c + 1) * CHUNK_SIZE) as usize];
            for (k, sector) in stored.chunks(SECTOR_SIZE).enumerate() {
                let plain = &want[k * SECTOR_SIZE..(k + 1) * SECTOR_SIZE];
                if k % 3 == 0 {
                    assert!(is_zero(sector), "a zero sector is a hole");
                } else {
                    assert!(
                        sector != plain,
                        "sector {k} of chunk {c} is stored in clear"
                    );
                }
            }
        }
    }

    #[test]
    fn stripes_sorted_and_distinct() {
        let (s, n) =
            EncryptedDevice::stripes(255 * LOCK_GROUP_SECTORS * SS + 100, MAX_PIECE as usize);
        assert_eq!(n, 17);
        let v = &s[..n];
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
        assert_eq!(v[0], 0);
        assert_eq!(v[n - 1], 255);
    }

    #[test]
    fn pieces_end_on_boundaries() {
        assert_eq!(piece_len(0, 3 << 20), 1 << 20);
        assert_eq!(piece_len(4096, 3 << 20), (1 << 20) - 4096);
        assert_eq!(piece_len(4096, 10), 10);
    }

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 4096];
        assert!(is_zero(&b));
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[7] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[0u8; 5]));
        assert!(!is_zero(&[0, 0, 0, 0, 9]));
    }
}
