//! `ChangeLog`: which 512 KiB chunks of a volume changed since the last
//! snapshot, kept durable so that a crash never loses a change.
//!
//! On-disk format (a 0600 file beside the backing file), all integers
//! little-endian:
//!
//! | bytes   | field                                             |
//! |---------|---------------------------------------------------|
//! | 0..8    | magic `KVCHLOG1`                                  |
//! | 8..16   | number of chunks (u64)                            |
//! | 16..20  | state (u32): 0 = closed cleanly, 1 = open         |
//! | 20..32  | reserved, zero                                    |
//! | 32..    | bitmap: bit `i % 8` of byte `i / 8` = chunk `i`   |
//!
//! Invariants:
//! - Before any write to a chunk proceeds, either its bit is durable or the
//!   state word "open" is durable (it is made so, with an fsync, before the
//!   first mark after an open or a clean close): a crash can therefore never
//!   lose a change, and [`ChangeLog::mark`] needs no fsync of its own.
//! - The state word says "open" while a daemon uses the log. Finding it
//!   open at [`ChangeLog::open`] means an unclean stop: every chunk is then
//!   treated as changed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::volume::error::VolumeError;

/// Bytes per change-tracking chunk (the EBS direct API block size).
pub const CHUNK_SIZE: u64 = 512 * 1024;

const MAGIC: &[u8; 8] = b"KVCHLOG1";
const HEADER_LEN: u64 = 32;
const STATE_OFFSET: u64 = 16;
const STATE_CLEAN: u32 = 0;
const STATE_OPEN: u32 = 1;

/// The durable changed-chunk bitmap of one volume.
#[derive(Debug)]
pub struct ChangeLog {
    path: PathBuf,
    /// In-memory copy of the bitmap; a set bit is always durable already.
    bits: RwLock<Vec<AtomicU64>>,
    /// Serializes every file update; holds the file and its state.
    disk: Mutex<Disk>,
    opened_unclean: bool,
}

#[derive(Debug)]
struct Disk {
    file: File,
    n_chunks: u64,
    open: bool,
}

impl ChangeLog {
    /// Opens (or creates, mode 0600) the change log at `path` for a volume
    /// of `n_chunks` chunks and marks it open. A log left open by an
    /// unclean stop comes back with every chunk marked changed; a log with
    /// fewer chunks is grown.
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
        let mut opened_unclean = false;
        if len == 0 {
            // Fresh log: nothing changed yet.
        } else {
            let mut header = [0u8; HEADER_LEN as usize];
            file.read_exact_at(&mut header, 0)
                .map_err(|e| corrupt(format!("header unreadable ({e})")))?;
            if &header[..8] != MAGIC {
                return Err(corrupt("bad magic".into()));
            }
            let found = u64::from_le_bytes(le8(&header[8..16]));
            let state = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
            if found > n_chunks {
                return Err(VolumeError::ChangeLogMismatch {
                    path: path.to_path_buf(),
                    found,
                    expected: n_chunks,
                });
            }
            let nbytes = bytes_for(found);
            if len < HEADER_LEN + nbytes as u64 {
                return Err(corrupt(format!(
                    "{len} bytes is too short for {found} chunks"
                )));
            }
            let mut bitmap = vec![0u8; nbytes];
            file.read_exact_at(&mut bitmap, HEADER_LEN)
                .map_err(|e| corrupt(format!("bitmap unreadable ({e})")))?;
            for (i, b) in bitmap.iter().enumerate() {
                words[i / 8] |= u64::from(*b) << ((i % 8) * 8);
            }
            match state {
                STATE_CLEAN => {}
                STATE_OPEN => {
                    opened_unclean = true;
                    for i in 0..found {
                        words[(i / 64) as usize] |= 1 << (i % 64);
                    }
                }
                other => return Err(corrupt(format!("unknown state {other}"))),
            }
        }

        let log = ChangeLog {
            path: path.to_path_buf(),
            bits: RwLock::new(words.into_iter().map(AtomicU64::new).collect()),
            disk: Mutex::new(Disk {
                file,
                n_chunks,
                open: false,
            }),
            opened_unclean,
        };
        {
            let mut disk = log.lock_disk();
            log.write_all(&disk)?;
            log.set_state(&mut disk, true)?;
        }
        Ok(log)
    }

    /// Whether the log was found open, i.e. the last stop was unclean and
    /// every chunk has been marked changed.
    pub fn opened_unclean(&self) -> bool {
        self.opened_unclean
    }

    /// Number of chunks covered.
    pub fn n_chunks(&self) -> u64 {
        self.lock_disk().n_chunks
    }

    /// Marks chunks `first..=last` changed (durable through the "open" state
    /// until the next clean close).
    /// Cheap when they are already marked (no lock, no I/O).
    pub fn mark(&self, first: u64, last: u64) -> Result<(), VolumeError> {
        if self.all_set(&self.read_bits(), first, last)? {
            return Ok(());
        }
        let mut disk = self.lock_disk();
        if !disk.open {
            self.set_state(&mut disk, true)?;
        }
        let bits = self.read_bits();
        if self.all_set(&bits, first, last)? {
            return Ok(()); // another writer made them durable meanwhile
        }
        // Build the new bytes from the durable in-memory state plus the new
        // bits, write and fsync them, and only then publish in memory.
        let first_byte = (first / 8) as usize;
        let last_byte = (last / 8) as usize;
        let mut bytes = Vec::with_capacity(last_byte - first_byte + 1);
        for byte in first_byte..=last_byte {
            let mut v = byte_of(&bits, byte);
            for bit in 0..8u64 {
                let chunk = byte as u64 * 8 + bit;
                if chunk >= first && chunk <= last {
                    v |= 1 << bit;
                }
            }
            bytes.push(v);
        }
        // No fsync here: the state word already says "open" on disk, and a
        // log found open after a crash counts every chunk as changed, so
        // the bit needs to be durable only by the next clean close (which
        // fsyncs the whole bitmap). Writing it through keeps a killed
        // daemon's file accurate for inspection.
        disk.file
            .write_all_at(&bytes, HEADER_LEN + first_byte as u64)
            .map_err(|e| VolumeError::io("writing change log", &self.path, e))?;
        for chunk in first..=last {
            bits[(chunk / 64) as usize].fetch_or(1 << (chunk % 64), Ordering::Release);
        }
        Ok(())
    }

    /// The chunks marked changed, in ascending order.
    pub fn changed(&self) -> Vec<u64> {
        let bits = self.read_bits();
        let mut out = Vec::new();
        for (w, word) in bits.iter().enumerate() {
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
    /// makes that durable.
    pub fn clear(&self, chunks: &[u64]) -> Result<(), VolumeError> {
        let disk = self.lock_disk();
        {
            let bits = self.read_bits();
            for &c in chunks {
                if c >= disk.n_chunks {
                    return Err(VolumeError::InvalidInput(format!(
                        "chunk {c} is past the last chunk {} of change log {}",
                        disk.n_chunks.saturating_sub(1),
                        self.path.display()
                    )));
                }
                bits[(c / 64) as usize].fetch_and(!(1 << (c % 64)), Ordering::AcqRel);
            }
        }
        self.write_all(&disk)
    }

    /// Grows the log to `n_chunks` chunks (volumes never shrink); new
    /// chunks start unchanged, since nothing has been written to them.
    pub fn resize(&self, n_chunks: u64) -> Result<(), VolumeError> {
        let mut disk = self.lock_disk();
        if n_chunks < disk.n_chunks {
            return Err(VolumeError::ChangeLogMismatch {
                path: self.path.clone(),
                found: disk.n_chunks,
                expected: n_chunks,
            });
        }
        {
            let mut bits = self.bits.write().unwrap_or_else(|p| p.into_inner());
            bits.resize_with(words_for(n_chunks), || AtomicU64::new(0));
        }
        disk.n_chunks = n_chunks;
        self.write_all(&disk)
    }

    /// Records a clean stop: a later [`ChangeLog::open`] trusts the bitmap.
    /// A later `mark` reopens the log first.
    pub fn close_clean(&self) -> Result<(), VolumeError> {
        let mut disk = self.lock_disk();
        self.write_all(&disk)?;
        self.set_state(&mut disk, false)
    }

    fn read_bits(&self) -> RwLockReadGuard<'_, Vec<AtomicU64>> {
        // A poisoned lock only means a panic elsewhere; the atomics stay valid.
        self.bits.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all_set(&self, bits: &[AtomicU64], first: u64, last: u64) -> Result<bool, VolumeError> {
        if first > last || last >= bits.len() as u64 * 64 {
            return Err(VolumeError::InvalidInput(format!(
                "chunk range {first}..={last} is outside change log {}",
                self.path.display()
            )));
        }
        Ok((first..=last)
            .all(|c| bits[(c / 64) as usize].load(Ordering::Acquire) & (1 << (c % 64)) != 0))
    }

    /// Rewrites header and bitmap from memory and fsyncs.
    fn write_all(&self, disk: &Disk) -> Result<(), VolumeError> {
        let bits = self.read_bits();
        let nbytes = bytes_for(disk.n_chunks);
        let mut buf = Vec::with_capacity(HEADER_LEN as usize + nbytes);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&disk.n_chunks.to_le_bytes());
        let state = if disk.open { STATE_OPEN } else { STATE_CLEAN };
        buf.extend_from_slice(&state.to_le_bytes());
        buf.resize(HEADER_LEN as usize, 0);
        buf.extend((0..nbytes).map(|i| byte_of(&bits, i)));
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
    fn unclean_stop_marks_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes");
        let log = ChangeLog::open(&p, 10).unwrap();
        log.mark(2, 2).unwrap();
        // The bit is durable before close: a reader of the file sees it.
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(raw[HEADER_LEN as usize], 0b100);
        assert_eq!(raw[16], STATE_OPEN as u8);
        drop(log); // no close_clean: as after a crash
        let log = ChangeLog::open(&p, 10).unwrap();
        assert!(log.opened_unclean());
        assert_eq!(log.changed(), (0..10).collect::<Vec<_>>());
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
