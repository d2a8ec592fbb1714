//! The one home of `unsafe` system calls of the volume host (attach
//! daemon, mounts) and the KMS server: each is a small safe function with
//! a `// SAFETY:` line, so callers stay free of `unsafe`.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// The effective group id of this process.
pub fn effective_gid() -> u32 {
    // SAFETY: getegid cannot fail and touches no memory.
    unsafe { libc::getegid() }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    effective_uid() == 0
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: i64, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    if pid <= 0 {
        // 0 and negative pids address process groups: never meant here.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal a process group",
        ));
    }
    // SAFETY: kill takes integer arguments only and touches no memory.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to this process (delivered to a thread that does not
/// block it, or to the one waiting in [`StopSignals::wait`]).
pub fn signal_self(signal: i32) -> io::Result<()> {
    kill(i64::from(std::process::id()), signal)
}

/// SIGTERM, SIGINT and SIGHUP: the signals that stop a daemon.
pub struct StopSignals(libc::sigset_t);

impl StopSignals {
    pub fn new() -> StopSignals {
        // SAFETY: sigemptyset/sigaddset initialise and fill a local set;
        // a zeroed sigset_t is a valid argument to sigemptyset.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            set
        };
        StopSignals(set)
    }

    /// Blocks the signals in the calling thread and the threads it spawns
    /// later, so that only [`StopSignals::wait`] receives them.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: pthread_sigmask with a valid, initialised set and a null
        // old-set pointer, which it accepts.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }

    /// Waits for one of the signals; returns its number.
    pub fn wait(&self) -> i32 {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait with a valid set and a valid out pointer.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }
}

impl Default for StopSignals {
    fn default() -> Self {
        StopSignals::new()
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Unmounts the filesystem at `path` (`umount2`); `lazy` detaches it at
/// once and lets the kernel finish when the last user goes (MNT_DETACH).
/// A busy filesystem fails with EBUSY unless `lazy`.
pub fn unmount(path: &Path, lazy: bool) -> io::Result<()> {
    let c = c_path(path)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: umount2 with a valid NUL-terminated path and integer flags.
    let rc = unsafe { libc::umount2(c.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes an exclusive flock on `file` without waiting; `false` when
/// another open file description holds it.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock on a file descriptor we own, integer flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Takes an exclusive flock on `file`, waiting for other holders.
pub fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own, integer flags.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Deallocates `len` bytes of `file` at `off` (a hole that reads as
/// zeros), keeping the file size (fallocate PUNCH_HOLE | KEEP_SIZE).
pub fn punch_hole(file: &std::fs::File, off: u64, len: u64) -> io::Result<()> {
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: fallocate on an fd we own, with plain integer arguments; it
    // touches no memory of ours.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            o,
            l,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Marks the calling thread (and threads it spawns later) as an I/O
/// flusher (`PR_SET_IO_FLUSHER`, Linux 5.6+, needs CAP_SYS_RESOURCE).
pub fn set_io_flusher() -> io::Result<()> {
    /// From linux/prctl.h; not exported by the libc crate.
    const PR_SET_IO_FLUSHER: libc::c_int = 57;
    // SAFETY: prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) takes integer arguments
    // only and changes flags of the calling task; no memory is shared.
    let rc = unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes this process non-dumpable: no core dump, and other processes of
/// the same user can no longer ptrace it or read its memory through
/// /proc (its /proc files become root-owned).
pub fn set_non_dumpable() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel would dump this process's core (PR_GET_DUMPABLE).
pub fn is_dumpable() -> bool {
    // SAFETY: prctl(PR_GET_DUMPABLE) takes integer arguments only and
    // returns the flag.
    let rc = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    rc != 0
}

/// How much of this process's memory is locked in RAM (never swapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLock {
    /// Every page, now and later, once touched (mlockall with
    /// MCL_ONFAULT, so nothing is populated that is not used).
    All,
    /// Nothing: the memory-lock limit (RLIMIT_MEMLOCK, bytes) is finite and
    /// the process lacks CAP_IPC_LOCK; locking everything would make
    /// allocations past the limit fail.
    NotAllowed { limit: u64 },
    /// mlockall failed with this errno.
    Failed { errno: i32 },
}

/// Locks all of this process's pages in RAM where the memory-lock limit
/// allows it (root with CAP_IPC_LOCK, or an unlimited RLIMIT_MEMLOCK).
pub fn lock_all_memory() -> MemoryLock {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid pointer given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let unlimited = rc == 0 && lim.rlim_cur == libc::RLIM_INFINITY;
    if !unlimited && !has_cap_ipc_lock() {
        return MemoryLock::NotAllowed {
            limit: lim.rlim_cur,
        };
    }
    // SAFETY: mlockall takes integer flags only.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        MemoryLock::All
    } else {
        MemoryLock::Failed {
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        }
    }
}

/// Locks the pages holding `len` bytes at `addr` in RAM (mlock); within
/// RLIMIT_MEMLOCK without CAP_IPC_LOCK. The memory must stay mapped for
/// as long as it matters (the kernel unlocks pages when they are unmapped).
pub fn lock_region(addr: *const u8, len: usize) -> io::Result<()> {
    // SAFETY: mlock only changes the residency of the pages in the range;
    // it reads and writes no memory, and an invalid range is an error.
    let rc = unsafe { libc::mlock(addr.cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether CAP_IPC_LOCK (bit 14) is in this process's effective set.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Whether this process's pages are locked (VmLck in /proc/self/status is
/// non-zero, or mlockall's future flag is in force).
pub fn locked_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Hardening of a process that holds key material (attach daemon, KMS
/// server): non-dumpable, memory locked where allowed. Returns what was
/// achieved, for the process's start log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    pub dumpable: bool,
    pub memory: MemoryLock,
}

/// Applies [`set_non_dumpable`] and [`lock_all_memory`].
pub fn harden_key_holder() -> Hardening {
    let _ = set_non_dumpable();
    Hardening {
        dumpable: is_dumpable(),
        memory: lock_all_memory(),
    }
}

/// Serves allocations of 256 KiB and more (chunk buffers, copy-before-write
/// stashes) straight from `mmap`, so freeing one returns its pages at once.
/// glibc otherwise raises that threshold to the largest block freed so far
/// and keeps freed chunk buffers in per-thread arenas, where a long-running
/// daemon (whose memory is locked) holds them for good. Call it before
/// threads start.
pub fn return_large_frees_to_the_os() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable of the allocator; a fixed value
    // also turns off glibc's dynamic threshold.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// [`harden_key_holder`], with a warning in the log (stderr for a CLI)
/// when memory could not be locked; `what` names the process.
pub fn harden_and_report(what: &str) -> Hardening {
    let h = harden_key_holder();
    if h.dumpable {
        tracing::warn!("{what} could not make itself non-dumpable: its core dumps may hold keys");
    }
    if let Some(note) = h.memory_note() {
        tracing::warn!("{what}: {note}");
    }
    h
}

impl Hardening {
    /// A note for the log or stderr when memory could not be locked.
    pub fn memory_note(&self) -> Option<String> {
        match self.memory {
            MemoryLock::All => None,
            MemoryLock::NotAllowed { limit } => Some(format!(
                "memory holding key material is not locked in RAM: the memory-lock limit \
                 (RLIMIT_MEMLOCK) is {limit} bytes and the process lacks CAP_IPC_LOCK; raise it \
                 (ulimit -l unlimited, or LimitMEMLOCK=infinity in a systemd unit) or run as root"
            )),
            MemoryLock::Failed { errno } => Some(format!(
                "memory holding key material is not locked in RAM: mlockall failed: {}",
                io::Error::from_raw_os_error(errno)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_dumpable_sticks() {
        // Runs in the test process: becoming non-dumpable is harmless here.
        set_non_dumpable().unwrap();
        assert!(!is_dumpable());
    }

    #[test]
    fn kill_refuses_process_groups() {
        assert!(kill(0, 0).is_err());
        assert!(kill(-1, 0).is_err());
        kill(i64::from(std::process::id()), 0).unwrap();
    }

    #[test]
    fn memory_note_names_the_limit() {
        let h = Hardening {
            dumpable: false,
            memory: MemoryLock::NotAllowed { limit: 65536 },
        };
        assert!(h.memory_note().unwrap().contains("65536"));
        assert!(Hardening {
            dumpable: false,
            memory: MemoryLock::All
        }
        .memory_note()
        .is_none());
    }
}
