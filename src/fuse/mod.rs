//! FUSE front end: exposes an [`EncryptedDevice`] as one regular file,
//! through fuser, with thin callbacks (see [`fs`]) and one error-to-errno
//! mapping. This module never touches crypto.
//!
//! Settings follow shared/PERF_NOTES.md: 1 MiB requests (max_pages 256),
//! `FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES` on open, `FUSE_ASYNC_DIO`,
//! several worker threads each on its own cloned /dev/fuse fd, a raised
//! max_background, no writeback cache, fallocate punch/zero support and
//! `PR_SET_IO_FLUSHER` on the daemon's threads.

mod fs;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

use crate::volume::{EncryptedDevice, VolumeError};

pub use fs::DeviceFs;

/// How the device file is exposed.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// Name of the device file when the mountpoint is a directory.
    pub file_name: String,
    /// Worker threads, each reading its own cloned /dev/fuse fd.
    pub threads: usize,
    /// Let other users (the kernel's loop driver acting for root, other
    /// uids) open the file; only root may set it without
    /// `user_allow_other` in /etc/fuse.conf.
    pub allow_other: bool,
    /// Owner and mode of the device file.
    pub uid: u32,
    pub gid: u32,
    pub mode: u16,
}

impl Default for FuseOptions {
    fn default() -> Self {
        let (uid, gid) = (crate::sys::effective_uid(), crate::sys::effective_gid());
        FuseOptions {
            file_name: "device".into(),
            threads: 4,
            allow_other: uid == 0,
            uid,
            gid,
            mode: 0o600,
        }
    }
}

/// A served device: unmount it, or wait for someone else to.
#[derive(Debug)]
pub struct FuseHandle {
    mountpoint: PathBuf,
    device_path: PathBuf,
    unmounter: SessionUnmounter,
    notifier: fuser::Notifier,
    file_ino: fuser::INodeNo,
    thread: JoinHandle<io::Result<()>>,
}

impl FuseHandle {
    /// Something that tells the kernel the device file's attributes
    /// changed (its size, after a grow), so `stat` and loop devices see
    /// them at once instead of after the attribute cache expires.
    pub fn size_notifier(&self) -> SizeNotifier {
        SizeNotifier {
            notifier: self.notifier.clone(),
            ino: self.file_ino,
        }
    }

    /// Path of the decrypted device file: the mountpoint itself when it was
    /// a regular file, else `<mountpoint>/<file_name>`.
    pub fn device_path(&self) -> &Path {
        &self.device_path
    }

    /// The FUSE mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the worker threads to finish. A busy device
    /// (a loop device or a process holds it open) is
    /// [`VolumeError::Busy`]: it stays mounted and served by the worker
    /// threads (use [`FuseHandle::try_unmount`] to keep the handle).
    ///
    /// A hold that lasts only milliseconds does not count as busy: a child
    /// process forked anywhere in this process carries copies of its open
    /// descriptors (the device file's too) until its `exec` closes them, so
    /// a busy answer is retried for up to [`UNMOUNT_SETTLE`] first.
    pub fn unmount(self) -> Result<(), VolumeError> {
        let deadline = std::time::Instant::now() + UNMOUNT_SETTLE;
        loop {
            match self.try_unmount() {
                Ok(()) => break,
                Err(VolumeError::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        self.finish()
    }

    /// Unmounts the device file, never lazily: while anything holds it
    /// open (a loop device, a process) the unmount fails with
    /// [`VolumeError::Busy`] and the device goes on serving, unchanged.
    /// Call [`FuseHandle::finish`] after success.
    pub fn try_unmount(&self) -> Result<(), VolumeError> {
        match crate::sys::unmount(&self.mountpoint, false) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(VolumeError::Busy {
                path: self.mountpoint.clone(),
            }),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                // Not root: the setuid helper unmounts user mounts (and
                // fails, changing nothing, when the file is busy).
                let out = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg(&self.mountpoint)
                    .output()
                    .map_err(|e| VolumeError::Fuse {
                        path: self.mountpoint.clone(),
                        source: e,
                    })?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                if out.status.success() {
                    Ok(())
                } else if stderr.contains("busy") {
                    Err(VolumeError::Busy {
                        path: self.mountpoint.clone(),
                    })
                } else {
                    Err(VolumeError::Command {
                        command: format!("fusermount3 -u {}", self.mountpoint.display()),
                        status: out.status.to_string(),
                        stderr: stderr.trim().to_string(),
                    })
                }
            }
            Err(e) => Err(VolumeError::Fuse {
                path: self.mountpoint.clone(),
                source: e,
            }),
        }
    }

    /// After [`FuseHandle::try_unmount`] succeeded: waits for the worker
    /// threads to finish.
    pub fn finish(mut self) -> Result<(), VolumeError> {
        // Already unmounted: fuser sees the closed connection and does nothing.
        let _ = self.unmounter.unmount();
        self.wait()
    }

    /// Blocks until the file system is unmounted (e.g. by `umount PATH`)
    /// and the worker threads have finished.
    pub fn wait(self) -> Result<(), VolumeError> {
        let path = self.mountpoint;
        match self.thread.join() {
            Ok(res) => res.map_err(|e| VolumeError::Fuse { path, source: e }),
            Err(_) => Err(VolumeError::Fuse {
                path,
                source: io::Error::other("a FUSE worker thread panicked"),
            }),
        }
    }
}

/// How long [`FuseHandle::unmount`] retries a busy answer before it
/// reports [`VolumeError::Busy`].
pub const UNMOUNT_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Mounts `device` at `mountpoint` and serves it from background threads.
///
/// If `mountpoint` is a regular file, the FUSE root itself is the device
/// file, mounted over it (the CLI's `attach VOL --device PATH`); if it is a
/// directory, the device appears as `<mountpoint>/<opts.file_name>`.
pub fn serve(
    device: Arc<EncryptedDevice>,
    mountpoint: &Path,
    opts: &FuseOptions,
) -> Result<FuseHandle, VolumeError> {
    let meta = std::fs::metadata(mountpoint)
        .map_err(|e| VolumeError::io("inspecting mountpoint", mountpoint, e))?;
    let layout = if meta.is_file() {
        fs::Layout::RootIsFile
    } else if meta.is_dir() {
        if opts.file_name.is_empty() || opts.file_name.contains('/') {
            return Err(VolumeError::InvalidInput(format!(
                "device file name {:?} must be one non-empty path component",
                opts.file_name
            )));
        }
        fs::Layout::FileInDir(opts.file_name.clone().into())
    } else {
        return Err(VolumeError::InvalidInput(format!(
            "mountpoint {} must be a regular file or a directory",
            mountpoint.display()
        )));
    };
    let device_path = match &layout {
        fs::Layout::RootIsFile => mountpoint.to_path_buf(),
        fs::Layout::FileInDir(name) => mountpoint.join(name),
    };

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("keyvol:{}", device.backing_path().display())),
        MountOption::Subtype("keyvol".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;

    let layout_ino = match &layout {
        fs::Layout::RootIsFile => None,
        fs::Layout::FileInDir(_) => Some(fs::FILE_INO),
    };
    let filesystem = DeviceFs::new(device, layout, opts);
    let fuse_err = |e: io::Error| VolumeError::Fuse {
        path: mountpoint.to_path_buf(),
        source: e,
    };
    let file_ino = match &layout_ino {
        Some(ino) => *ino,
        None => fuser::INodeNo(1),
    };
    let mut session = Session::new(filesystem, mountpoint, &config).map_err(fuse_err)?;
    let unmounter = session.unmount_callable();
    let notifier = session.notifier();
    let thread = std::thread::Builder::new()
        .name("keyvol-fuse".into())
        .spawn(move || {
            set_io_flusher();
            // Worker threads are spawned from here and inherit the flag.
            session.run()
        })
        .map_err(fuse_err)?;
    Ok(FuseHandle {
        mountpoint: mountpoint.to_path_buf(),
        device_path,
        unmounter,
        notifier,
        file_ino,
        thread,
    })
}

/// Invalidates the kernel's cached attributes of the device file.
#[derive(Clone)]
pub struct SizeNotifier {
    notifier: fuser::Notifier,
    ino: fuser::INodeNo,
}

impl SizeNotifier {
    pub fn size_changed(&self) -> io::Result<()> {
        // A negative offset invalidates the attributes only, not the data.
        self.notifier.inval_inode(self.ino, -1, 0)
    }
}

/// Marks the calling thread (and threads it spawns later) as an I/O
/// flusher: its allocations never recurse into filesystem I/O and it is
/// not throttled, so the daemon keeps making progress while the kernel
/// writes back the filesystem it serves. Needs CAP_SYS_RESOURCE; without
/// it the daemon still works, less safely under memory pressure.
fn set_io_flusher() {
    if let Err(e) = crate::sys::set_io_flusher() {
        tracing::warn!("prctl(PR_SET_IO_FLUSHER) failed: {e}; continuing without it");
    }
}
