//! `keyvol-snap create --freeze`: which filesystem may be frozen (only the
//! mountpoint of the volume's own filesystem) and a freeze that is thawed
//! on every way out (return, error, panic, SIGINT/SIGTERM/SIGHUP/SIGQUIT).
//!
//! The freeze is the `FIFREEZE`/`FITHAW` ioctl pair that `fsfreeze(8)`
//! runs, issued on a descriptor of the mountpoint held from freeze to thaw,
//! so a signal handler can thaw with one async-signal-safe system call.
//! What must hold:
//! 1. the descriptor frozen is the root of the filesystem on the loop
//!    device (or fuse2fs mount) over this volume's attached device file,
//!    checked on the open descriptor itself (`st_dev`), so a mount swapped
//!    in between the check and the freeze is refused;
//! 2. at most one freeze per process is live, and its descriptor is in
//!    [`FROZEN_FD`] while it is, for the signal handler;
//! 3. the freeze lasts only for the cut, whose control request times out
//!    ([`crate::volume::control::CONTROL_TIMEOUT`]); what no process can cover: a
//!    SIGKILL (the filesystem stays frozen until `fsfreeze -u MOUNTPOINT`),
//!    and a daemon hung before the freeze, since FIFREEZE first syncs the
//!    filesystem through the device and waits in the kernel for it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::api_error::{ApiError, ApiResult};
use crate::volume::mount;
use crate::volume::service::{VolumeRecord, Volumes};

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` of <linux/fs.h> (the
/// generic ioctl encoding of x86, arm and riscv).
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// The descriptor of the filesystem frozen now, or -1 (invariant 2).
static FROZEN_FD: AtomicI32 = AtomicI32::new(-1);

/// Signals after which the process would end with the filesystem frozen.
const FATAL_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// A filesystem `--freeze` may freeze: the mountpoint of a volume's own
/// filesystem and the device number it had when checked.
#[derive(Debug, Clone)]
pub struct FreezeTarget {
    pub dir: PathBuf,
    dev: u64,
}

/// The mountpoint of `r`'s filesystem that `--freeze PATH` names, or an
/// `InvalidParameterValue` naming what PATH is instead. Nothing is frozen.
pub fn volume_mountpoint(vols: &Volumes, r: &VolumeRecord, path: &Path) -> ApiResult<FreezeTarget> {
    let vol = &r.volume_id;
    let refuse = |why: String| {
        ApiError::invalid_parameter(format!(
            "--freeze {}: {why}; give the mountpoint of {vol}'s filesystem \
             (`keyvol volume status` lists it), or no --freeze",
            path.display()
        ))
    };
    let device = vols.to_json(r)?["Attachments"][0]["Device"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| {
            refuse(format!(
                "{vol} is not attached, so it has no mounted filesystem"
            ))
        })?;
    let canonical = std::fs::canonicalize(path).map_err(|e| refuse(e.to_string()))?;
    let loops: Vec<PathBuf> = mount::loop_devices()?
        .into_iter()
        .filter(|l| l.back_file.as_deref() == Some(device.as_path()))
        .map(|l| l.name)
        .collect();
    let own: Vec<mount::MountEntry> = mount::mounts()?
        .into_iter()
        .filter(|m| m.source == device || loops.contains(&m.source))
        .collect();
    let Some(m) = own.iter().find(|m| m.target == canonical) else {
        return Err(refuse(match own.first() {
            Some(m) => format!(
                "not the mountpoint of {vol}'s filesystem, which is mounted at {}",
                m.target.display()
            ),
            None => format!("{vol}'s filesystem is not mounted"),
        }));
    };
    let dev = std::fs::metadata(&canonical)
        .map_err(|e| refuse(e.to_string()))?
        .dev();
    // Over a loop device the filesystem's device number is the loop
    // device's own: a mount swapped in since /proc/mounts was read differs.
    if loops.contains(&m.source) {
        let rdev = std::fs::metadata(&m.source)
            .map_err(|e| refuse(format!("{}: {e}", m.source.display())))?
            .rdev();
        if rdev != dev {
            return Err(refuse(format!(
                "the filesystem at {} is not the one on {}",
                canonical.display(),
                m.source.display()
            )));
        }
    }
    Ok(FreezeTarget {
        dir: canonical,
        dev,
    })
}

/// A frozen filesystem, thawed by [`Frozen::thaw`] or on drop.
pub struct Frozen {
    dir: PathBuf,
    fd: Option<OwnedFd>,
    /// The signal actions to restore after the thaw.
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("dir", &self.dir)
            .field("frozen", &self.fd.is_some())
            .finish()
    }
}

impl Frozen {
    /// Freezes `target`'s filesystem, re-checking on the open descriptor
    /// that it is still the same filesystem (invariant 1).
    pub fn freeze(target: &FreezeTarget) -> ApiResult<Frozen> {
        let dir = &target.dir;
        let fail = |what: &str, e: std::io::Error| {
            ApiError::invalid_parameter(format!("--freeze {}: {what}: {e}", dir.display()))
        };
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| ApiError::invalid_parameter("--freeze: the path holds a NUL byte"))?;
        let fd = sys::open_dir(&c).map_err(|e| fail("opening", e))?;
        if sys::fstat_dev(&fd).map_err(|e| fail("stat", e))? != target.dev {
            return Err(ApiError::invalid_parameter(format!(
                "--freeze {}: the filesystem mounted there changed; nothing was frozen",
                dir.display()
            )));
        }
        if FROZEN_FD
            .compare_exchange(-1, fd.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(ApiError::internal("a filesystem is frozen already"));
        }
        let previous = sys::catch_fatal_signals();
        if let Err(e) = sys::ioctl(&fd, FIFREEZE) {
            FROZEN_FD.store(-1, Ordering::SeqCst);
            sys::restore_signals(&previous);
            return Err(fail("freezing (FIFREEZE)", e));
        }
        Ok(Frozen {
            dir: dir.clone(),
            fd: Some(fd),
            previous,
        })
    }

    /// Thaws now, reporting a failure (the filesystem may stay frozen:
    /// the message says how to thaw it by hand).
    pub fn thaw(mut self) -> ApiResult<()> {
        self.thaw_now()
    }

    fn thaw_now(&mut self) -> ApiResult<()> {
        let Some(fd) = self.fd.take() else {
            return Ok(());
        };
        // The handler thaws only while FROZEN_FD holds the descriptor; once
        // taken back here, the thaw below is the only one.
        let mine = FROZEN_FD
            .compare_exchange(fd.as_raw_fd(), -1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        let r = if mine {
            sys::ioctl(&fd, FITHAW)
        } else {
            Ok(())
        };
        sys::restore_signals(&self.previous);
        r.map_err(|e| {
            ApiError::internal(format!(
                "thawing {} (FITHAW) failed: {e}; run `fsfreeze -u {}`",
                self.dir.display(),
                self.dir.display()
            ))
        })
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = self.thaw_now();
    }
}

/// Runs in the signal handler: thaws (one ioctl, async-signal-safe), then
/// ends the process by the same signal with its default action.
extern "C" fn thaw_and_reraise(sig: libc::c_int) {
    let fd = FROZEN_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: ioctl on a descriptor this process holds open while it is
        // in FROZEN_FD; FITHAW takes no memory argument.
        unsafe { libc::ioctl(fd, FITHAW as _, 0) };
    }
    // SAFETY: signal and raise are async-signal-safe; they restore the
    // default action and deliver the signal again to end the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// The system calls of this module behind safe functions.
mod sys {
    use std::ffi::CStr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub fn open_dir(path: &CStr) -> std::io::Result<OwnedFd> {
        // SAFETY: path is a valid NUL-terminated string; the returned
        // descriptor is owned by the OwnedFd below.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by no one else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// st_dev of an open descriptor.
    pub fn fstat_dev(fd: &OwnedFd) -> std::io::Result<u64> {
        // SAFETY: stat is plain data, fully written by fstat on success.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open; st points to a stat buffer of the right size.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st.st_dev)
    }

    pub fn ioctl(fd: &OwnedFd, request: libc::c_ulong) -> std::io::Result<()> {
        // SAFETY: FIFREEZE/FITHAW on an open descriptor take no memory
        // argument.
        if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Installs the thawing handler for the fatal signals; returns the
    /// previous actions.
    pub fn catch_fatal_signals() -> Vec<(libc::c_int, libc::sigaction)> {
        let mut previous = Vec::new();
        for sig in super::FATAL_SIGNALS {
            // SAFETY: sigaction structs are plain data; the handler is an
            // extern "C" fn that only makes async-signal-safe calls.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = super::thaw_and_reraise as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) == 0 {
                    previous.push((sig, old));
                }
            }
        }
        previous
    }

    pub fn restore_signals(previous: &[(libc::c_int, libc::sigaction)]) {
        for (sig, old) in previous {
            // SAFETY: restores an action sigaction returned earlier.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}
