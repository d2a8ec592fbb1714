//! `ChangeLog`: which 512 KiB chunks of a volume changed since the last
//! snapshot, kept durable so that a crash never loses a change and an
//! unclean stop costs the next snapshot only the chunks that may have
//! changed.
//!
//! On-disk format (a 0600 file beside the backing file), all integers
//! little-endian:
//!
//! | bytes   | field                                             |
//! |---------|---------------------------------------------------|
//! | 0..8    | magic `KVCHLOG1`                                  |
//! | 8..16   | number of chunks (u64)                            |
//! | 16..20  | state (u32): 0 = closed cleanly, 1 = open (written by keyvol before the durable marks; bits not trusted), 2 = open, every chunk written is marked durably |
//! | 20..32  | reserved, zero                                    |
//! | 32..    | bitmap: bit `i % 8` of byte `i / 8` = chunk `i`   |
//!
//! Two bitmaps live in memory: `changed`, exactly the chunks written since
//! the last snapshot (what the next snapshot captures), and `durable`, what
//! the file says (a superset of `changed` while open).
//!
//! Invariants:
//! 1. Before any write to a chunk proceeds, the chunk's bit is durable in
//!    the file (written and fdatasynced; [`ChangeLog::mark`]). A crash
//!    therefore never loses a change, whatever of the data had reached the
//!    disk: data written without fsync may or may not be on disk, and its
//!    chunk is marked either way.
//! 2. A mark makes a whole aligned group of [`MARK_GROUP`] chunks durable at
//!    once, and concurrent marks share one fdatasync (group commit), so a
//!    sequential writer pays one fdatasync per group and a write to a chunk
//!    whose bit is already durable pays nothing (no lock, no I/O). The
//!    group's other chunks are durable but not `changed`: only a recovery
//!    after a crash reads them.
//! 3. `durable` shrinks back to `changed` only while no write is in
//!    progress (after a snapshot under the device's write barrier, at a
//!    clean close), so a bit a writer relies on is never cleared.
//! 4. The state word is 2 while a daemon uses the log. Finding it 2 at
//!    [`ChangeLog::open`] means an unclean stop, and the bitmap is trusted
//!    (invariant 1). Finding it 1 means an unclean stop of an older keyvol
//!    that did not sync its bits: every chunk is then treated as changed.
//!    An older keyvol refuses a log in state 2 (unknown state) rather than
//!    trusting it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::volume::error::VolumeError;

/// Bytes per change-tracking chunk (the EBS direct API block size).
pub const CHUNK_SIZE: u64 = 512 * 1024;

/// Chunks made durable together by one mark (8 MiB, invariant 2): an
/// fdatasync costs milliseconds on a shared disk, so a sequential writer
/// pays one per 8 MiB, and a snapshot after a crash reads at most this many
/// chunks per group written.
pub const MARK_GROUP: u64 = 16;

const MAGIC: &[u8; 8] = b"KVCHLOG1";
const HEADER_LEN: u64 = 32;
const STATE_OFFSET: u64 = 16;
const STATE_CLEAN: u32 = 0;
const STATE_OPEN_LEGACY: u32 = 1;
const STATE_OPEN: u32 = 2;

/// How [`ChangeLog::open`] found the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No log yet (a new volume).
    Fresh,
    /// Closed cleanly: the bitmap is exact.
    ClosedCleanly,
    /// Left open by an unclean stop: the bitmap holds every chunk that may
    /// have changed (invariant 1), possibly a few more of their groups.
    Interrupted,
    /// Left open by an older keyvol that did not sync its bits: every chunk
    /// counts as changed.
    InterruptedLegacy,
}

/// The durable changed-chunk bitmap of one volume.
#[derive(Debug)]
pub struct ChangeLog {
    path: PathBuf,
    bits: RwLock<Bitmaps>,
    /// Groups waiting for the next commit (group commit, invariant 2).
    staged: Mutex<Vec<(u64, u64)>>,
    /// Serializes every file update; holds the file and its state.
    disk: Mutex<Disk>,
    found: Found,
    /// Commits made by marks (each one fdatasync).
    commits: AtomicU64,
}

#[derive(Debug)]
struct Bitmaps {
    n_chunks: u64,
    /// Chunks written since the last snapshot.
    changed: Vec<AtomicU64>,
    /// The file's bitmap; a set bit is durable.
    durable: Vec<AtomicU64>,
}

#[derive(Debug)]
struct Disk {
    file: File,
    open: bool,
}

impl ChangeLog {
    /// Opens (or creates, mode 0600) the change log at `path` for a volume
    /// of `n_chunks` chunks and marks it open. A log left open by an
    /// unclean stop comes back with the chunks it marked durably (every
    /// chunk, for a log of an older keyvol); a log with fewer chunks is
    /// grown.
    pub fn open(path: &Path, n_chunks: u64) -> Result<Self, VolumeError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| VolumeError::io("opening change log", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| VolumeError::io("reading change log size", path, e))?
            .len();
        let corrupt = |detail: String| VolumeError::ChangeLogCorrupt {
            path: path.to_path_buf(),
            detail,
        };

        let mut words = vec![0u64; words_for(n_chunks)];
        let mut found = Found::Fresh;
        if len > 0 {
            let mut header = [0u8; HEADER_LEN as usize];
            file.read_exact_at(&mut header, 0)
                .map_err(|e| corrupt(format!("header unreadable ({e})")))?;
            if &header[..8] != MAGIC {
                return Err(corrupt("bad magic".into()));
            }
            let n_found = u64::from_le_bytes(le8(&header[8..16]));
            let state = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
            if n_found > n_chunks {
                return Err(VolumeError::ChangeLogMismatch {
                    path: path.to_path_buf(),
                    found: n_found,
                    expected: n_chunks,
                });
            }
            let nbytes = bytes_for(n_found);
            if len < HEADER_LEN + nbytes as u64 {
                return Err(corrupt(format!(
                    "{len} bytes is too short for {n_found} chunks"
                )));
            }
            let mut bitmap = vec![0u8; nbytes];
            file.read_exact_at(&mut bitmap, HEADER_LEN)
                .map_err(|e| corrupt(format!("bitmap unreadable ({e})")))?;
            for (i, b) in bitmap.iter().enumerate() {
                words[i / 8] |= u64::from(*b) << ((i % 8) * 8);
            }
            // Bits past the chunk count are padding, never chunks.
            for i in n_found..words.len() as u64 * 64 {
                words[(i / 64) as usize] &= !(1 << (i % 64));
            }
            found = match state {
                STATE_CLEAN => Found::ClosedCleanly,
                STATE_OPEN => Found::Interrupted,
                STATE_OPEN_LEGACY => {
                    for i in 0..n_found {
                        words[(i / 64) as usize] |= 1 << (i % 64);
                    }
                    Found::InterruptedLegacy
                }
                other => return Err(corrupt(format!("unknown state {other}"))),
            };
        }

        let log = ChangeLog {
            path: path.to_path_buf(),
            bits: RwLock::new(Bitmaps {
                n_chunks,
                changed: words.iter().copied().map(AtomicU64::new).collect(),
                durable: words.into_iter().map(AtomicU64::new).collect(),
            }),
            staged: Mutex::new(Vec::new()),
            disk: Mutex::new(Disk { file, open: false }),
            found,
            commits: AtomicU64::new(0),
        };
        {
            let mut disk = log.lock_disk();
            log.write_all(&disk)?;
            log.set_state(&mut disk, true)?;
        }
        Ok(log)
    }

    /// How the file was found at open.
    pub fn found(&self) -> Found {
        self.found
    }

    /// Whether the log was found open, i.e. the last stop was unclean (the
    /// chunks that may have changed are marked; see [`Found`]).
    pub fn opened_unclean(&self) -> bool {
        matches!(self.found, Found::Interrupted | Found::InterruptedLegacy)
    }

    /// Number of chunks covered.
    pub fn n_chunks(&self) -> u64 {
        self.read_bits().n_chunks
    }

    /// Commits (one fdatasync each) that marks have made so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Marks chunks `first..=last` changed and returns once their bits are
    /// durable (invariant 1), so the caller may then write to them.
    /// Costs nothing when they are already durable (no lock, no I/O);
    /// otherwise makes their groups durable, sharing the fdatasync with
    /// concurrent marks (invariant 2).
    pub fn mark(&self, first: u64, last: u64) -> Result<(), VolumeError> {
        {
            let bits = self.read_bits();
            self.check_range(bits.n_chunks, first, last)?;
            for c in first..=last {
                let (w, m) = (&bits.changed[(c / 64) as usize], 1u64 << (c % 64));
                // A load first: no shared cache line is written when set.
                if w.load(Ordering::Acquire) & m == 0 {
                    w.fetch_or(m, Ordering::AcqRel);
                }
            }
            if all_set(&bits.durable, first, last) {
                return Ok(());
            }
        }
        let group = (
            first / MARK_GROUP * MARK_GROUP,
            (last / MARK_GROUP + 1) * MARK_GROUP - 1,
        );
        self.lock_staged().push(group);
        let mut disk = self.lock_disk();
        let bits = self.read_bits();
        if all_set(&bits.durable, first, last) {
            return Ok(()); // committed by the writer before us, with its own
        }
        if !disk.open {
            self.set_state(&mut disk, true)?;
        }
        // This writer's group, and every group staged meanwhile (a failed
        // commit drops its batch; each waiter then brings its own again).
        let mut batch = std::mem::take(&mut *self.lock_staged());
        batch.push(group);
        let last_chunk = bits.n_chunks - 1; // n_chunks > last >= 0 (checked)
        for g in &mut batch {
            g.1 = g.1.min(last_chunk);
        }
        let lo = batch.iter().map(|g| g.0 / 8).min().unwrap_or(0) as usize;
        let hi = batch.iter().map(|g| g.1 / 8).max().unwrap_or(0) as usize;
        let mut bytes: Vec<u8> = (lo..=hi).map(|i| byte_of(&bits.durable, i)).collect();
        for &(a, b) in &batch {
            for c in a..=b {
                bytes[(c / 8) as usize - lo] |= 1 << (c % 8);
            }
        }
        disk.file
            .write_all_at(&bytes, HEADER_LEN + lo as u64)
            .map_err(|e| VolumeError::io("writing change log", &self.path, e))?;
        disk.file
            .sync_data()
            .map_err(|e| VolumeError::io("syncing change log", &self.path, e))?;
        for &(a, b) in &batch {
            for c in a..=b {
                bits.durable[(c / 64) as usize].fetch_or(1 << (c % 64), Ordering::Release);
            }
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The chunks marked changed, in ascending order.
    pub fn changed(&self) -> Vec<u64> {
        let bits = self.read_bits();
        let mut out = Vec::new();
        for (w, word) in bits.changed.iter().enumerate() {
            let mut v = word.load(Ordering::Acquire);
            while v != 0 {
                let b = v.trailing_zeros() as u64;
                out.push(w as u64 * 64 + b);
                v &= v - 1;
            }
        }
        out
    }

    /// Clears the given chunks (after a snapshot has captured them) and
    /// makes that durable; the file's bitmap becomes exactly the chunks
    /// still changed. Call it only while no write is in progress (the
    /// device holds its write barrier; invariant 3).
    pub fn clear(&self, chunks: &[u64]) -> Result<(), VolumeError> {
        let disk = self.lock_disk();
        {
            let bits = self.read_bits();
            for &c in chunks {
                if c >= bits.n_chunks {
                    return Err(VolumeError::InvalidInput(format!(
                        "chunk {c} is past the last chunk {} of change log {}",
                        bits.n_chunks.saturating_sub(1),
                        self.path.display()
                    )));
                }
            }
            for &c in chunks {
                bits.changed[(c / 64) as usize].fetch_and(!(1 << (c % 64)), Ordering::AcqRel);
            }
            bits.shrink_durable();
        }
        self.write_all(&disk)
    }

    /// Grows the log to `n_chunks` chunks (volumes never shrink); new
    /// chunks start unchanged, since nothing has been written to them.
    pub fn resize(&self, n_chunks: u64) -> Result<(), VolumeError> {
        let disk = self.lock_disk();
        {
            let mut bits = self.bits.write().unwrap_or_else(|p| p.into_inner());
            if n_chunks < bits.n_chunks {
                return Err(VolumeError::ChangeLogMismatch {
                    path: self.path.clone(),
                    found: bits.n_chunks,
                    expected: n_chunks,
                });
            }
            bits.n_chunks = n_chunks;
            bits.changed
                .resize_with(words_for(n_chunks), || AtomicU64::new(0));
            bits.durable
                .resize_with(words_for(n_chunks), || AtomicU64::new(0));
        }
        self.write_all(&disk)
    }

    /// Records a clean stop: the file holds exactly the changed chunks and
    /// a later [`ChangeLog::open`] trusts it. Call it only while no write is
    /// in progress (invariant 3). A later `mark` reopens the log first.
    pub fn close_clean(&self) -> Result<(), VolumeError> {
        let mut disk = self.lock_disk();
        self.read_bits().shrink_durable();
        self.write_all(&disk)?;
        self.set_state(&mut disk, false)
    }

    fn read_bits(&self) -> RwLockReadGuard<'_, Bitmaps> {
        // A poisoned lock only means a panic elsewhere; the atomics stay valid.
        self.bits.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_staged(&self) -> MutexGuard<'_, Vec<(u64, u64)>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_range(&self, n_chunks: u64, first: u64, last: u64) -> Result<(), VolumeError> {
        if first > last || last >= n_chunks {
            return Err(VolumeError::InvalidInput(format!(
                "chunk range {first}..={last} is outside change log {}",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Rewrites header and the durable bitmap from memory and fsyncs.
    fn write_all(&self, disk: &Disk) -> Result<(), VolumeError> {
        let bits = self.read_bits();
        let nbytes = bytes_for(bits.n_chunks);
        let mut buf = Vec::with_capacity(HEADER_LEN as usize + nbytes);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&bits.n_chunks.to_le_bytes());
        let state = if disk.open { STATE_OPEN } else { STATE_CLEAN };
        buf.extend_from_slice(&state.to_le_bytes());
        buf.resize(HEADER_LEN as usize, 0);
        buf.extend((0..nbytes).map(|i| byte_of(&bits.durable, i)));
        disk.file
            .write_all_at(&buf, 0)
            .map_err(|e| VolumeError::io("writing change log", &self.path, e))?;
        disk.file
            .set_len(buf.len() as u64)
            .map_err(|e| VolumeError::io("sizing change log", &self.path, e))?;
        disk.file
            .sync_all()
            .map_err(|e| VolumeError::io("syncing change log", &self.path, e))
    }

    fn set_state(&self, disk: &mut Disk, open: bool) -> Result<(), VolumeError> {
        let state = if open { STATE_OPEN } else { STATE_CLEAN };
        disk.file
            .write_all_at(&state.to_le_bytes(), STATE_OFFSET)
            .map_err(|e| VolumeError::io("writing change log state", &self.path, e))?;
        disk.file
            .sync_data()
            .map_err(|e| VolumeError::io("syncing change log", &self.path, e))?;
        disk.open = open;
        Ok(())
    }
}

impl Bitmaps {
    /// `durable := changed` (invariant 3: no write in progress).
    fn shrink_durable(&self) {
        for (d, c) in self.durable.iter().zip(&self.changed) {
            d.store(c.load(Ordering::Acquire), Ordering::Release);
        }
    }
}

fn all_set(bits: &[AtomicU64], first: u64, last: u64) -> bool {
    (first..=last).all(|c| bits[(c / 64) as usize].load(Ordering::Acquire) & (1 << (c % 64)) != 0)
}

fn words_for(n_chunks: u64) -> usize {
    n_chunks.div_ceil(64) as usize
}

fn bytes_for(n_chunks: u64) -> usize {
    n_chunks.div_ceil(8) as usize
}

fn byte_of(bits: &[AtomicU64], byte: usize) -> u8 {
    (bits[byte / 8].load(Ordering::Acquire) >> ((byte % 8) * 8)) as u8
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn marks_persist_across_clean_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = ChangeLog::open(&p, 100).unwrap();
        assert!(!log.opened_unclean());
        assert!(log.changed().is_empty());
        log.mark(3, 5).unwrap();
        log.mark(70, 70).unwrap();
        log.mark(4, 4).unwrap();
        assert_eq!(log.changed(), vec![3, 4, 5, 70]);
        log.close_clean().unwrap();
        drop(log);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let log = ChangeLog::open(&p, 100).unwrap();
        assert!(!log.opened_unclean());
        assert_eq!(log.changed(), vec![3, 4, 5, 70]);
        log.clear(&[4, 70]).unwrap();
        assert_eq!(log.changed(), vec![3, 5]);
        log.close_clean().unwrap();
        let log = ChangeLog::open(&p, 100).unwrap();
        assert_eq!(log.changed(), vec![3, 5]);
    }

    #[test]
    fn unclean_stop_keeps_the_durable_marks_of_their_groups() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = ChangeLog::open(&p, 100).unwrap();
        log.mark(2, 2).unwrap();
        log.mark(40, 41).unwrap();
        assert_eq!(log.changed(), vec![2, 40, 41]);
        // Durable before the write may proceed: a reader of the file sees
        // the groups (chunks 0..16 and 32..48) and the open state.
        let raw = std::fs::read(&p).unwrap();
        let h = HEADER_LEN as usize;
        assert_eq!(&raw[h..h + 7], &[0xff, 0xff, 0, 0, 0xff, 0xff, 0]);
        assert_eq!(raw[16], STATE_OPEN as u8);
        drop(log); // no close_clean: as after a crash
        let log = ChangeLog::open(&p, 100).unwrap();
        assert!(log.opened_unclean());
        assert_eq!(log.found(), Found::Interrupted);
        let expect: Vec<u64> = (0..16).chain(32..48).collect();
        assert_eq!(log.changed(), expect);
    }

    #[test]
    fn marks_in_a_durable_group_cost_no_commit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = ChangeLog::open(&p, 100).unwrap();
        log.mark(0, 0).unwrap();
        assert_eq!(log.commits(), 1);
        log.mark(5, 6).unwrap();
        log.mark(15, 15).unwrap();
        log.mark(0, 0).unwrap();
        assert_eq!(log.commits(), 1, "chunks 0..16 were durable already");
        assert_eq!(log.changed(), vec![0, 5, 6, 15]);
        log.mark(15, 16).unwrap();
        assert_eq!(log.commits(), 2);
        // The last group is cut at the last chunk.
        log.mark(99, 99).unwrap();
        assert_eq!(log.changed(), vec![0, 5, 6, 15, 16, 99]);
    }

    #[test]
    fn clear_and_clean_close_shrink_the_file_to_the_changed_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = ChangeLog::open(&p, 64).unwrap();
        log.mark(3, 3).unwrap();
        log.mark(20, 20).unwrap();
        log.clear(&[3]).unwrap();
        let raw = std::fs::read(&p).unwrap();
        let h = HEADER_LEN as usize;
        assert_eq!(&raw[h..h + 8], &[0, 0, 0b1_0000, 0, 0, 0, 0, 0]);
        // Chunk 21 is in a group no longer durable: marking it commits.
        let before = log.commits();
        log.mark(21, 21).unwrap();
        assert_eq!(log.commits(), before + 1);
        log.close_clean().unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(&raw[h..h + 8], &[0, 0, 0b11_0000, 0, 0, 0, 0, 0]);
        assert_eq!(raw[16], STATE_CLEAN as u8);
        drop(log);
        let log = ChangeLog::open(&p, 64).unwrap();
        assert_eq!(log.found(), Found::ClosedCleanly);
        assert_eq!(log.changed(), vec![20, 21]);
    }

    #[test]
    fn a_legacy_open_log_marks_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = ChangeLog::open(&p, 10).unwrap();
        log.mark(2, 2).unwrap();
        log.close_clean().unwrap();
        drop(log);
        // State 1: left open by a keyvol whose bits were not synced.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&STATE_OPEN_LEGACY.to_le_bytes(), STATE_OFFSET)
            .unwrap();
        drop(f);
        let log = ChangeLog::open(&p, 12).unwrap();
        assert_eq!(log.found(), Found::InterruptedLegacy);
        assert!(log.opened_unclean());
        assert_eq!(log.changed(), (0..10).collect::<Vec<_>>());
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(raw[16], STATE_OPEN as u8);
    }

    #[test]
    fn mark_after_close_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = ChangeLog::open(&p, 10).unwrap();
        log.close_clean().unwrap();
        log.mark(1, 1).unwrap();
        drop(log);
        let log = ChangeLog::open(&p, 10).unwrap();
        assert!(log.opened_unclean());
    }

    #[test]
    fn resize_grows_and_refuses_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = ChangeLog::open(&p, 10).unwrap();
        log.mark(9, 9).unwrap();
        assert!(log.mark(9, 200).is_err());
        log.resize(300).unwrap();
        log.mark(250, 299).unwrap();
        assert_eq!(log.changed().len(), 51);
        assert!(matches!(
            log.resize(5),
            Err(VolumeError::ChangeLogMismatch { .. })
        ));
        log.close_clean().unwrap();
        drop(log);
        assert!(matches!(
            ChangeLog::open(&p, 100),
            Err(VolumeError::ChangeLogMismatch { found: 300, .. })
        ));
        let log = ChangeLog::open(&p, 400).unwrap();
        assert_eq!(log.n_chunks(), 400);
        assert_eq!(log.changed().len(), 51);
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        std::fs::write(&p, b"not a change log at all, really!!").unwrap();
        let err = ChangeLog::open(&p, 10).unwrap_err();
        assert!(matches!(err, VolumeError::ChangeLogCorrupt { .. }));
        assert!(err.to_string().contains("delete it"));
    }

    #[test]
    fn concurrent_marks_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = std::sync::Arc::new(ChangeLog::open(&p, 256).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for c in (t..256).step_by(4) {
                        log.mark(c, c).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(log.changed(), (0..256).collect::<Vec<_>>());
        drop(log);
        let raw = std::fs::read(&p).unwrap();
        assert!(raw[HEADER_LEN as usize..].iter().all(|&b| b == 0xff));
    }
}
