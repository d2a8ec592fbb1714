//! `VolumeError`: the one error type of the volume data path (cipher, device,
//! change log, mount orchestration). Messages say what happened and with
//! what (path, offset, command); none carries key bytes or plaintext.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Errors of the volume data path.
#[derive(Debug, Error)]
pub enum VolumeError {
    /// The two 256-bit halves of an AES-256-XTS key are equal, which IEEE
    /// 1619 and FIPS 140 forbid (the tweak would leak through the data key).
    #[error("the volume data key is invalid: its two AES-256-XTS halves are equal; generate a new 64-byte key")]
    EqualKeyHalves,

    /// A sector-crypto buffer whose length is not a whole number of sectors.
    #[error("buffer of {len} bytes is not a multiple of the {sector_size}-byte sector size")]
    NotSectorMultiple { len: usize, sector_size: usize },

    /// A device size that is zero or not a multiple of the sector size.
    #[error(
        "device size {size} is invalid: it must be a non-zero multiple of {sector_size} bytes"
    )]
    InvalidSize { size: u64, sector_size: u64 },

    /// An access past the end of the device.
    #[error("range {off}..{end} is past the end of the {size}-byte device")]
    OutOfRange { off: u64, end: u64, size: u64 },

    /// An I/O error on a named file (backing file, change log, mountpoint).
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An I/O error on the device's backing file at an offset.
    #[error("{op} at offset {off} of {}: {source}", path.display())]
    DeviceIo {
        op: &'static str,
        path: PathBuf,
        off: u64,
        #[source]
        source: io::Error,
    },

    /// The change-log file exists but cannot be understood.
    #[error("change log {} is corrupt: {detail}; delete it to treat every chunk as changed", path.display())]
    ChangeLogCorrupt { path: PathBuf, detail: String },

    /// The change log covers more chunks than the device now has.
    #[error("change log {} covers {found} chunks but the volume has {expected}; volumes never shrink", path.display())]
    ChangeLogMismatch {
        path: PathBuf,
        found: u64,
        expected: u64,
    },

    /// An unsupported request (e.g. a fallocate mode the device cannot honour).
    #[error("unsupported operation: {0}")]
    Unsupported(String),

    /// An external command (losetup, mkfs, mount, ...) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// The FUSE mount or session failed.
    #[error("FUSE mount at {}: {source}", path.display())]
    Fuse {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A filesystem or device that is still in use (umount said EBUSY);
    /// nothing was changed.
    #[error("{} is busy: a process has a file open or its working directory there (see `fuser -vm {}`); nothing was changed: stop it and try again", path.display(), path.display())]
    Busy { path: PathBuf },

    /// A cut refused because the volume has `in_progress` snapshots cut
    /// and not finished, the most it takes (`max`).
    #[error("{in_progress} snapshots of this volume are already in progress (at most {max}); wait for one to complete")]
    TooManyCuts { in_progress: usize, max: usize },

    /// Invalid input from the caller, with what to fix.
    #[error("{0}")]
    InvalidInput(String),
}

impl VolumeError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        VolumeError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The OS error number closest to this error, for front ends (FUSE)
    /// that must answer with an errno.
    pub fn errno(&self) -> i32 {
        match self {
            VolumeError::Io { source, .. }
            | VolumeError::DeviceIo { source, .. }
            | VolumeError::Fuse { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            VolumeError::OutOfRange { .. } => libc::ENOSPC,
            VolumeError::NotSectorMultiple { .. }
            | VolumeError::InvalidSize { .. }
            | VolumeError::InvalidInput(_) => libc::EINVAL,
            VolumeError::Unsupported(_) => libc::EOPNOTSUPP,
            VolumeError::Busy { .. } | VolumeError::TooManyCuts { .. } => libc::EBUSY,
            VolumeError::EqualKeyHalves
            | VolumeError::ChangeLogCorrupt { .. }
            | VolumeError::ChangeLogMismatch { .. }
            | VolumeError::Command { .. } => libc::EIO,
        }
    }
}
