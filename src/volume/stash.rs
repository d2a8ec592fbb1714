//! `Stash`: the copy-before-write store of one snapshot cut (the ciphertext
//! of chunks saved before a write overwrote them), bounded in memory.
//!
//! - Every stash of a device draws on one [`StashBudget`] (16 MiB by
//!   default); past it, chunks go to a spill file, so a snapshot of a busy
//!   volume costs the daemon at most the budget in memory however much of
//!   the volume is overwritten during it.
//! - Only ciphertext is stashed: the bytes of the backing file exactly as
//!   they are on disk (sector `n` encrypted with tweak `n`), so a spill file
//!   holds nothing the backing file beside it does not hold already. The
//!   stash never sees plaintext.
//! - The spill file is a 0600 file in the volume's directory of the home,
//!   unlinked from the start (`O_TMPFILE`, or created and removed at once
//!   where the filesystem lacks it): it goes away when the cut ends, and
//!   with the process on a crash. [`sweep_spills`] removes what a crash
//!   between creating and removing a named one left behind.
//! - A chunk read back frees its slot (reused, and its blocks punched), so
//!   the file holds at most the chunks still waiting for the snapshot.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::volume::changes::CHUNK_SIZE;
use crate::volume::error::VolumeError;

/// Default in-memory budget of all copy-before-write stashes of a device.
pub const STASH_MEMORY_LIMIT: usize = 16 << 20;

/// Name part of a named spill file (after the backing file's name).
const SPILL_INFIX: &str = ".cbw-";

/// The in-memory bytes all stashes of one device may hold together.
#[derive(Debug)]
pub struct StashBudget {
    limit: usize,
    used: AtomicUsize,
}

impl StashBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(StashBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes held in memory now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The chunks one cut saved before they were overwritten.
#[derive(Debug)]
pub struct Stash {
    /// Where a spill file goes and how a named one is called.
    backing: PathBuf,
    budget: Arc<StashBudget>,
    chunks: HashMap<u64, Entry>,
    /// Bytes of `chunks` held in memory (drawn from `budget`).
    in_memory: usize,
    spill: Option<Spill>,
    /// Chunks written to the spill file so far.
    spilled: u64,
}

#[derive(Debug)]
enum Entry {
    Memory(Vec<u8>),
    Spilled { slot: u64, len: usize },
}

#[derive(Debug)]
struct Spill {
    file: File,
    /// The directory, for messages (the file itself has no name).
    dir: PathBuf,
    next_slot: u64,
    free: Vec<u64>,
}

impl Stash {
    /// An empty stash for the device whose backing file is `backing`.
    pub fn new(backing: &Path, budget: Arc<StashBudget>) -> Self {
        Stash {
            backing: backing.to_path_buf(),
            budget,
            chunks: HashMap::new(),
            in_memory: 0,
            spill: None,
            spilled: 0,
        }
    }

    /// Whether chunk `index` is stashed.
    pub fn contains(&self, index: u64) -> bool {
        self.chunks.contains_key(&index)
    }

    /// Chunks written to the spill file so far.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// Stashes the ciphertext of chunk `index` (at most one chunk): in
    /// memory while the budget allows, else in the spill file.
    pub fn insert(&mut self, index: u64, ciphertext: Vec<u8>) -> Result<(), VolumeError> {
        debug_assert!(ciphertext.len() as u64 <= CHUNK_SIZE);
        if self.chunks.contains_key(&index) {
            return Ok(());
        }
        let len = ciphertext.len();
        if self.budget.try_take(len) {
            self.in_memory += len;
            self.chunks.insert(index, Entry::Memory(ciphertext));
            return Ok(());
        }
        let spill = match self.spill.take() {
            Some(s) => s,
            None => Spill::create(&self.backing)?,
        };
        let spill = self.spill.insert(spill);
        let slot = spill.free.pop().unwrap_or_else(|| {
            spill.next_slot += 1;
            spill.next_slot - 1
        });
        spill
            .file
            .write_all_at(&ciphertext, slot * CHUNK_SIZE)
            .map_err(|e| {
                VolumeError::io("writing a copy-before-write spill file in", &spill.dir, e)
            })?;
        self.chunks.insert(index, Entry::Spilled { slot, len });
        self.spilled += 1;
        Ok(())
    }

    /// Removes and returns the stashed ciphertext of chunk `index`.
    pub fn take(&mut self, index: u64) -> Result<Option<Vec<u8>>, VolumeError> {
        match self.chunks.remove(&index) {
            None => Ok(None),
            Some(Entry::Memory(b)) => {
                self.in_memory -= b.len();
                self.budget.give_back(b.len());
                Ok(Some(b))
            }
            Some(Entry::Spilled { slot, len }) => {
                // An entry is spilled only once the file exists.
                let spill = self.spill.as_mut().ok_or_else(|| {
                    VolumeError::io(
                        "reading a copy-before-write spill file in",
                        &self.backing,
                        std::io::Error::other("no spill file"),
                    )
                })?;
                let mut buf = vec![0u8; len];
                let at = slot * CHUNK_SIZE;
                spill.file.read_exact_at(&mut buf, at).map_err(|e| {
                    VolumeError::io("reading a copy-before-write spill file in", &spill.dir, e)
                })?;
                // Best effort: the blocks are reused or freed with the file.
                let _ = crate::sys::punch_hole(&spill.file, at, CHUNK_SIZE);
                spill.free.push(slot);
                Ok(Some(buf))
            }
        }
    }
}

impl Drop for Stash {
    fn drop(&mut self) {
        self.budget.give_back(self.in_memory);
    }
}

impl Spill {
    /// An unnamed 0600 file beside `backing`.
    fn create(backing: &Path) -> Result<Self, VolumeError> {
        let dir = backing
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let tmp = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        let file = match tmp {
            Ok(f) => f,
            // No O_TMPFILE here: a named file, removed at once.
            Err(_) => {
                let path = spill_name(backing);
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| {
                        VolumeError::io("creating a copy-before-write spill file", &path, e)
                    })?;
                std::fs::remove_file(&path).map_err(|e| {
                    VolumeError::io("removing a copy-before-write spill file", &path, e)
                })?;
                f
            }
        };
        Ok(Spill {
            file,
            dir,
            next_slot: 0,
            free: Vec::new(),
        })
    }
}

/// A fresh name for a named spill file of `backing`.
fn spill_name(backing: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut name = backing.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        "{SPILL_INFIX}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    backing.with_file_name(name)
}

/// Removes named spill files of `backing` a crashed process left behind
/// (call it while holding the volume, before any cut). Best effort.
pub fn sweep_spills(backing: &Path) {
    let (Some(dir), Some(base)) = (backing.parent(), backing.file_name()) else {
        return;
    };
    let mut prefix = base.to_os_string();
    prefix.push(SPILL_INFIX);
    let prefix = prefix.to_string_lossy().into_owned();
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_the_budget_and_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("vol.img");
        let budget = StashBudget::new(2 * CHUNK_SIZE as usize);
        let chunk = |i: u8| vec![i; CHUNK_SIZE as usize];
        let mut a = Stash::new(&backing, budget.clone());
        let mut b = Stash::new(&backing, budget.clone());
        a.insert(0, chunk(1)).unwrap();
        b.insert(0, chunk(2)).unwrap();
        assert_eq!(budget.used(), 2 * CHUNK_SIZE as usize);
        a.insert(1, chunk(3)).unwrap();
        a.insert(2, chunk(4)).unwrap();
        assert_eq!(a.spilled(), 2);
        assert_eq!(budget.used(), 2 * CHUNK_SIZE as usize);
        // Nothing named is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(a.take(1).unwrap(), Some(chunk(3)));
        assert_eq!(a.take(1).unwrap(), None);
        a.insert(5, vec![6; 4096]).unwrap(); // reuses slot 0
        assert_eq!(a.spilled(), 3);
        assert_eq!(a.take(0).unwrap(), Some(chunk(1)));
        assert_eq!(budget.used(), CHUNK_SIZE as usize);
        assert_eq!(a.take(5).unwrap(), Some(vec![6; 4096]));
        assert_eq!(a.take(2).unwrap(), Some(chunk(4)));
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn sweep_removes_only_spill_names_of_this_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("vol-1.img");
        std::fs::write(&backing, b"").unwrap();
        std::fs::write(spill_name(&backing), b"x").unwrap();
        std::fs::write(dir.path().join("vol-2.img.cbw-1-0"), b"x").unwrap();
        sweep_spills(&backing);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["vol-1.img", "vol-2.img.cbw-1-0"]);
    }
}
