//! `DeviceFs`: the fuser `Filesystem` of one device file. Callbacks are
//! thin: each delegates to `do_*` on the device and maps errors to errno in
//! one place ([`reply_errno`]), logging the detail.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::fuse::FuseOptions;
use crate::volume::{EncryptedDevice, VolumeError};

/// Largest read/write request negotiated with the kernel (max_pages 256).
pub(crate) const MAX_REQUEST: u32 = 1024 * 1024;

/// The file's attributes never change while mounted: cache them long.
const TTL: Duration = Duration::from_secs(3600);

/// Inode of the device file in the directory layout.
pub(crate) const FILE_INO: INodeNo = INodeNo(2);

thread_local! {
    /// Per-worker read buffer, reused across requests. A reply is sent
    /// (writev) before the worker reads its next request, so a buffer is
    /// never reused while its request is in flight.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Where the device file lives in the mount.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    /// The mount root is the file (mounted over a regular file).
    RootIsFile,
    /// The root is a directory holding one file of this name.
    FileInDir(OsString),
}

/// The fuser file system serving one [`EncryptedDevice`].
#[derive(Debug)]
pub struct DeviceFs {
    device: Arc<EncryptedDevice>,
    layout: Layout,
    uid: u32,
    gid: u32,
    mode: u16,
    mounted_at: SystemTime,
}

impl DeviceFs {
    /// The errno answered for a failed request; failures of the device
    /// itself (not refusals of a bad request) are counted on it.
    fn failed(&self, op: &str, offset: u64, err: &VolumeError) -> Errno {
        let errno = reply_errno(op, offset, err);
        let refusal = matches!(
            err,
            VolumeError::OutOfRange { .. }
                | VolumeError::InvalidInput(_)
                | VolumeError::Unsupported(_)
        );
        if !refusal {
            self.device.note_io_error();
        }
        errno
    }

    pub(crate) fn new(device: Arc<EncryptedDevice>, layout: Layout, opts: &FuseOptions) -> Self {
        DeviceFs {
            device,
            layout,
            uid: opts.uid,
            gid: opts.gid,
            mode: opts.mode & 0o7777,
            mounted_at: SystemTime::now(),
        }
    }

    fn file_ino(&self) -> INodeNo {
        match self.layout {
            Layout::RootIsFile => INodeNo::ROOT,
            Layout::FileInDir(_) => FILE_INO,
        }
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let is_file = ino == self.file_ino();
        let is_dir = ino == INodeNo::ROOT && matches!(self.layout, Layout::FileInDir(_));
        if !(is_file || is_dir) {
            return None;
        }
        let size = if is_file { self.device.size() } else { 0 };
        Some(FileAttr {
            ino,
            size,
            blocks: size / 512,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: if is_file {
                FileType::RegularFile
            } else {
                FileType::Directory
            },
            perm: if is_file { self.mode } else { 0o755 },
            nlink: if is_file { 1 } else { 2 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn do_read(&self, offset: u64, size: u32, reply: ReplyData) {
        READ_BUF.with_borrow_mut(|buf| {
            let size = size.min(MAX_REQUEST) as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            match self.device.read_at(&mut buf[..size], offset) {
                Ok(n) => {
                    crate::telemetry::volume_read(n);
                    reply.data(&buf[..n])
                }
                Err(e) => reply.error(self.failed("read", offset, &e)),
            }
        });
    }

    fn do_write(&self, offset: u64, data: &[u8], reply: ReplyWrite) {
        match self.device.write_at(data, offset) {
            // Requests are at most MAX_REQUEST bytes, so the length fits u32.
            Ok(()) => {
                crate::telemetry::volume_write(data.len());
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(self.failed("write", offset, &e)),
        }
    }

    fn do_fallocate(&self, offset: u64, length: u64, mode: i32) -> Result<(), VolumeError> {
        let size = self.device.size();
        let end = offset.saturating_add(length);
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let rest = mode & !libc::FALLOC_FL_KEEP_SIZE;
        if rest == libc::FALLOC_FL_PUNCH_HOLE || rest == libc::FALLOC_FL_ZERO_RANGE {
            if end > size && !keep_size {
                return Err(VolumeError::OutOfRange {
                    off: offset,
                    end,
                    size,
                });
            }
            if offset >= size {
                return Ok(());
            }
            let len = end.min(size) - offset;
            if rest == libc::FALLOC_FL_PUNCH_HOLE {
                self.device.punch_hole(offset, len)
            } else {
                self.device.zero_range(offset, len)
            }
        } else if rest == 0 {
            // Preallocation: every sector inside the device already reads
            // and writes; the device never grows.
            if end > size && !keep_size {
                return Err(VolumeError::OutOfRange {
                    off: offset,
                    end,
                    size,
                });
            }
            Ok(())
        } else {
            Err(VolumeError::Unsupported(format!(
                "fallocate mode {mode:#x} (only punch-hole, zero-range and preallocation)"
            )))
        }
    }
}

/// The one place where device errors become errno values; logs the detail
/// with the errno (a full host disk is named as such).
fn reply_errno(op: &str, offset: u64, err: &VolumeError) -> Errno {
    let errno = err.errno();
    let name = std::io::Error::from_raw_os_error(errno);
    if errno == libc::ENOSPC {
        tracing::error!(
            errno,
            "{op} at offset {offset} failed: ENOSPC, the host filesystem is full ({name}): {err}"
        );
    } else {
        tracing::error!(
            errno,
            "{op} at offset {offset} failed: errno {errno} ({name}): {err}"
        );
    }
    crate::telemetry::volume_error(op);
    Errno::from_i32(errno)
}

impl Filesystem for DeviceFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_REQUEST) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_REQUEST) {
            let _ = config.set_max_readahead(nearest);
        }
        // Kernels without these keep working, only slower.
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        let _ = config.add_capabilities(InitFlags::FUSE_MAX_PAGES);
        // Shared mmap of the device file although it is opened with
        // FOPEN_DIRECT_IO (Linux 6.6+): tools that map a block file work;
        // the kernel keeps the mapped pages coherent with direct I/O.
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_err()
        {
            tracing::info!(
                "the kernel offers no FUSE_DIRECT_IO_ALLOW_MMAP: no shared mmap of the device"
            );
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (&self.layout, self.attr(FILE_INO)) {
            (Layout::FileInDir(file), Some(attr)) if parent == INodeNo::ROOT && name == file => {
                reply.entry(&TTL, &attr, Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(attr) = self.attr(ino) else {
            return reply.error(Errno::ENOENT);
        };
        // The device has a fixed size, owner and mode while attached;
        // truncating to its own size (O_TRUNC-free opens do not) is a no-op.
        let changes_size = ino == self.file_ino() && size.is_some_and(|s| s != attr.size);
        if changes_size || mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &attr)
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != self.file_ino() {
            return reply.error(Errno::EISDIR);
        }
        // Direct I/O: no second page cache above the filesystem on the
        // device; parallel direct writes: non-extending writes to this one
        // file are not serialized on the inode lock.
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
        )
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.do_read(offset, size, reply)
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.do_write(offset, data, reply)
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered in the daemon; durability is fsync's job.
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.device.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed("fsync", 0, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Layout::FileInDir(name) = &self.layout else {
            return reply.error(Errno::ENOTDIR);
        };
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries: [(INodeNo, FileType, &OsStr); 3] = [
            (INodeNo::ROOT, FileType::Directory, OsStr::new(".")),
            (INodeNo::ROOT, FileType::Directory, OsStr::new("..")),
            (FILE_INO, FileType::RegularFile, name.as_os_str()),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.do_fallocate(offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed("fallocate", offset, &e)),
        }
    }
}
