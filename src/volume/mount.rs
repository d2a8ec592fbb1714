//! Mount orchestration: puts a filesystem on an attached device file and
//! takes it off again. As root: a loop device (`--direct-io=on
//! --sector-size 4096`), `mkfs` on first use (an existing filesystem,
//! found with `blkid`, is kept), then `mount`. Otherwise: `fuse2fs`.
//!
//! Every step done is recorded in [`MountedVolume::steps`], and
//! [`unmount_volume`] undoes them in reverse; a failure part-way through
//! [`mount_volume`] undoes what was done before returning the error.
//! [`mounts`] and [`loop_devices`] read the system's state (`/proc/mounts`,
//! `losetup -J`) for `status`.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use crate::volume::error::VolumeError;

/// Filesystems `mount` can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsType {
    type Err = VolumeError;
    fn from_str(s: &str) -> Result<Self, VolumeError> {
        match s {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            other => Err(VolumeError::InvalidInput(format!(
                "unsupported filesystem {other:?}: use ext4 or xfs"
            ))),
        }
    }
}

/// One step of a mount, recorded so that it can be undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// `losetup` attached this loop device to the device file.
    LoopAttached { loop_device: PathBuf },
    /// `mkfs` made a new filesystem on this block device or file.
    Formatted { target: PathBuf, fs: FsType },
    /// `mount` mounted `source` at `mountpoint`.
    Mounted {
        source: PathBuf,
        mountpoint: PathBuf,
    },
    /// `fuse2fs` mounted the device file at `mountpoint`.
    Fuse2fsMounted { mountpoint: PathBuf },
}

/// A filesystem mounted from a device file, with the steps that did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    pub device_file: PathBuf,
    pub mountpoint: PathBuf,
    /// The filesystem found or made.
    pub fs: FsType,
    pub steps: Vec<MountStep>,
    /// Options given to `mount -o` (or fuse2fs `-o`).
    pub options: Vec<String>,
}

impl MountedVolume {
    /// The loop device used, if any.
    pub fn loop_device(&self) -> Option<&Path> {
        self.steps.iter().find_map(|s| match s {
            MountStep::LoopAttached { loop_device } => Some(loop_device.as_path()),
            _ => None,
        })
    }

    /// Whether this mount made a new filesystem.
    pub fn formatted(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, MountStep::Formatted { .. }))
    }
}

/// Mounts the filesystem on `device_file` at `mountpoint`, making a `fs`
/// filesystem first if the device has none. As root through a loop
/// device; otherwise through fuse2fs (ext4 only).
pub fn mount_volume(
    device_file: &Path,
    mountpoint: &Path,
    fs: FsType,
) -> Result<MountedVolume, VolumeError> {
    mount_volume_with_options(device_file, mountpoint, fs, &[])
}

/// [`mount_volume`] with options for `mount -o` (`ro`, `discard`,
/// `nouuid`, ...; checked by `boot::parse_mount_options`).
pub fn mount_volume_with_options(
    device_file: &Path,
    mountpoint: &Path,
    fs: FsType,
    options: &[String],
) -> Result<MountedVolume, VolumeError> {
    let mut done = MountedVolume {
        device_file: device_file.to_path_buf(),
        mountpoint: mountpoint.to_path_buf(),
        fs,
        steps: Vec::new(),
        options: options.to_vec(),
    };
    let res = if crate::sys::is_root() {
        mount_with_loop(&mut done)
    } else {
        mount_with_fuse2fs(&mut done)
    };
    match res {
        Ok(()) => Ok(done),
        Err(e) => {
            if let Err(undo) = undo_steps(&done.steps) {
                tracing::warn!("undoing a failed mount of {}: {undo}", mountpoint.display());
            }
            Err(e)
        }
    }
}

/// Undoes every step of `m`, in reverse (unmount, then detach the loop
/// device), stopping at the first failure: a busy filesystem stays
/// mounted on its loop device, exactly as it was. Formatting is not
/// undone: the filesystem stays for next time.
pub fn unmount_volume(m: &MountedVolume) -> Result<(), VolumeError> {
    undo_steps_strict(&m.steps)
}

/// Unmounts whatever is mounted at `mountpoint` and, when its source is a
/// loop device, detaches it. Returns the steps that were undone.
pub fn unmount_path(mountpoint: &Path) -> Result<Vec<MountStep>, VolumeError> {
    let canon = mountpoint
        .canonicalize()
        .map_err(|e| VolumeError::io("resolving mountpoint", mountpoint, e))?;
    let entry = mounts()?
        .into_iter()
        .rev()
        .find(|m| m.target == canon)
        .ok_or_else(|| {
            VolumeError::InvalidInput(format!("nothing is mounted at {}", canon.display()))
        })?;
    let mut steps = Vec::new();
    let is_loop = entry
        .source
        .to_str()
        .is_some_and(|s| s.starts_with("/dev/loop"));
    if is_loop {
        steps.push(MountStep::LoopAttached {
            loop_device: entry.source.clone(),
        });
    }
    steps.push(MountStep::Mounted {
        source: entry.source,
        mountpoint: canon,
    });
    undo_steps_strict(&steps)?;
    Ok(steps)
}

fn mount_with_loop(done: &mut MountedVolume) -> Result<(), VolumeError> {
    let out = run(
        "losetup",
        [
            OsStr::new("--find"),
            OsStr::new("--show"),
            OsStr::new("--direct-io=on"),
            OsStr::new("--sector-size"),
            OsStr::new("4096"),
            done.device_file.as_os_str(),
        ],
    )?;
    let loop_device = PathBuf::from(out.trim());
    done.steps.push(MountStep::LoopAttached {
        loop_device: loop_device.clone(),
    });
    done.fs = match detect_fs(&loop_device)? {
        Some(found) => found,
        None => {
            mkfs(&loop_device, done.fs)?;
            done.steps.push(MountStep::Formatted {
                target: loop_device.clone(),
                fs: done.fs,
            });
            done.fs
        }
    };
    let options = done.options.join(",");
    let mut args = vec![OsStr::new("-t"), OsStr::new(done.fs.as_str())];
    if !options.is_empty() {
        args.extend([OsStr::new("-o"), OsStr::new(&options)]);
    }
    args.extend([loop_device.as_os_str(), done.mountpoint.as_os_str()]);
    run("mount", args)?;
    done.steps.push(MountStep::Mounted {
        source: loop_device,
        mountpoint: done.mountpoint.clone(),
    });
    Ok(())
}

fn mount_with_fuse2fs(done: &mut MountedVolume) -> Result<(), VolumeError> {
    match detect_fs(&done.device_file)? {
        Some(FsType::Ext4) => {}
        Some(FsType::Xfs) => {
            return Err(VolumeError::InvalidInput(
                "the volume holds xfs, which only root can mount (fuse2fs reads ext2/3/4)".into(),
            ))
        }
        None if done.fs == FsType::Ext4 => {
            mkfs(&done.device_file, FsType::Ext4)?;
            done.steps.push(MountStep::Formatted {
                target: done.device_file.clone(),
                fs: FsType::Ext4,
            });
        }
        None => {
            return Err(VolumeError::InvalidInput(
                "without root only ext4 is available (through fuse2fs); use --fs ext4".into(),
            ))
        }
    }
    done.fs = FsType::Ext4;
    run(
        "fuse2fs",
        [
            done.device_file.as_os_str(),
            done.mountpoint.as_os_str(),
            OsStr::new("-o"),
            OsStr::new(&fuse2fs_options(&done.options)),
        ],
    )?;
    done.steps.push(MountStep::Fuse2fsMounted {
        mountpoint: done.mountpoint.clone(),
    });
    Ok(())
}

fn fuse2fs_options(extra: &[String]) -> String {
    std::iter::once("fakeroot")
        .chain(extra.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(",")
}

fn undo_step(step: &MountStep) -> Result<(), VolumeError> {
    match step {
        MountStep::Mounted { mountpoint, .. } => unmount_fs(mountpoint),
        MountStep::Fuse2fsMounted { mountpoint } => {
            run("fusermount3", [OsStr::new("-u"), mountpoint.as_os_str()])
                .or_else(|_| run("fusermount", [OsStr::new("-u"), mountpoint.as_os_str()]))
                .map(drop)
        }
        MountStep::LoopAttached { loop_device } => detach_loop(loop_device),
        MountStep::Formatted { .. } => Ok(()),
    }
}

/// Undoes the steps of a mount that failed part-way: keeps going after a
/// failure, since later steps (a loop detach) may still succeed.
fn undo_steps(steps: &[MountStep]) -> Result<(), VolumeError> {
    let mut first_err = None;
    for step in steps.iter().rev() {
        if let Err(e) = undo_step(step) {
            tracing::warn!("undoing {step:?}: {e}");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Undoes the steps of a working mount, in reverse, stopping at the first
/// failure so that nothing under a still-mounted filesystem is taken away.
fn undo_steps_strict(steps: &[MountStep]) -> Result<(), VolumeError> {
    steps.iter().rev().try_for_each(undo_step)
}

/// Unmounts the filesystem at `mountpoint` (never lazily): a busy one is
/// [`VolumeError::Busy`] and stays mounted.
pub fn unmount_fs(mountpoint: &Path) -> Result<(), VolumeError> {
    match crate::sys::unmount(mountpoint, false) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(VolumeError::Busy {
            path: mountpoint.to_path_buf(),
        }),
        // Not root: fuse2fs mounts go through the setuid helper, which
        // also refuses (changing nothing) while they are busy.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            run("fusermount3", [OsStr::new("-u"), mountpoint.as_os_str()])
                .or_else(|_| run("umount", [mountpoint.as_os_str()]))
                .map(drop)
        }
        Err(e) => Err(VolumeError::io("unmounting", mountpoint, e)),
    }
}

/// Makes a loop device re-read the size of its backing file (after the
/// volume grew online): `losetup -c`.
pub fn refresh_loop_capacity(loop_device: &Path) -> Result<(), VolumeError> {
    run("losetup", [OsStr::new("-c"), loop_device.as_os_str()]).map(drop)
}

/// Detaches a loop device.
pub fn detach_loop(loop_device: &Path) -> Result<(), VolumeError> {
    run("losetup", [OsStr::new("-d"), loop_device.as_os_str()]).map(drop)
}

/// What sits on a device file: loop devices backed by it, filesystems
/// mounted from it or from those loop devices (in /proc/mounts order), and
/// a keyvol FUSE mount at its path (source `keyvol:<backing file>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStack {
    pub loops: Vec<LoopDevice>,
    pub mounts: Vec<MountEntry>,
    pub fuse: Option<MountEntry>,
}

impl DeviceStack {
    /// Loop devices and filesystem mounts, as "loop device X", "mount Y".
    pub fn users(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .loops
            .iter()
            .map(|l| format!("loop device {}", l.name.display()))
            .collect();
        out.extend(
            self.mounts
                .iter()
                .map(|m| format!("mount {}", m.target.display())),
        );
        out
    }

    pub fn is_empty(&self) -> bool {
        self.loops.is_empty() && self.mounts.is_empty() && self.fuse.is_none()
    }
}

/// The stack on `device` (a device file path, canonical).
pub fn stack_of(device: &Path) -> Result<DeviceStack, VolumeError> {
    let loops: Vec<LoopDevice> = loop_devices()?
        .into_iter()
        .filter(|l| l.back_file.as_deref() == Some(device))
        .collect();
    let all = mounts()?;
    let mounts = all
        .iter()
        .filter(|m| m.source == device || loops.iter().any(|l| l.name == m.source))
        .cloned()
        .collect();
    let fuse = all
        .iter()
        .rev()
        .find(|m| {
            m.target == device
                && m.fstype.starts_with("fuse")
                && m.source
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"keyvol:")
        })
        .cloned();
    Ok(DeviceStack {
        loops,
        mounts,
        fuse,
    })
}

/// Takes down the filesystems and loop devices on `device` (newest mount
/// first), leaving its FUSE mount. With `lazy_if_busy` (the daemon is dead:
/// nothing behind the stack can be saved), a busy filesystem is detached
/// lazily; otherwise a busy one stops the release with
/// [`VolumeError::Busy`], before any loop device is touched. Returns what
/// was undone.
pub fn release_stack(device: &Path, lazy_if_busy: bool) -> Result<Vec<String>, VolumeError> {
    let stack = stack_of(device)?;
    let mut undone = Vec::new();
    for m in stack.mounts.iter().rev() {
        match unmount_fs(&m.target) {
            Ok(()) => undone.push(format!("unmounted {}", m.target.display())),
            Err(VolumeError::Busy { .. }) if lazy_if_busy => {
                crate::sys::unmount(&m.target, true)
                    .map_err(|e| VolumeError::io("lazily unmounting", &m.target, e))?;
                undone.push(format!("unmounted {} lazily (busy)", m.target.display()));
            }
            Err(e) => return Err(e),
        }
    }
    for l in &stack.loops {
        detach_loop(&l.name)?;
        undone.push(format!("detached {}", l.name.display()));
    }
    Ok(undone)
}

/// Unmounts the FUSE mount of a dead daemon at `device` (the kernel keeps
/// it, answering "Transport endpoint is not connected", until someone
/// unmounts it); lazily when a process still holds the dead file open.
pub fn clear_dead_fuse(device: &Path) -> Result<bool, VolumeError> {
    let Some(m) = stack_of(device)?.fuse else {
        return Ok(false);
    };
    match crate::sys::unmount(&m.target, false) {
        Ok(()) => Ok(true),
        Err(_) => crate::sys::unmount(&m.target, true)
            .map(|()| true)
            .map_err(|e| VolumeError::io("unmounting the dead FUSE mount", &m.target, e)),
    }
}

/// The filesystem `blkid` finds on `dev`, `None` for an empty device.
fn detect_fs(dev: &Path) -> Result<Option<FsType>, VolumeError> {
    let out = Command::new("blkid")
        .args([OsStr::new("-p"), OsStr::new("-o"), OsStr::new("value")])
        .args([OsStr::new("-s"), OsStr::new("TYPE"), dev.as_os_str()])
        .output()
        .map_err(|e| VolumeError::io("running blkid on", dev, e))?;
    // blkid exits 2 when it finds nothing to report.
    if out.status.code() == Some(2) {
        return Ok(None);
    }
    if !out.status.success() {
        return Err(command_error(&format!("blkid -p {}", dev.display()), &out));
    }
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match found.as_str() {
        "" => Ok(None),
        "ext4" => Ok(Some(FsType::Ext4)),
        "xfs" => Ok(Some(FsType::Xfs)),
        other => Err(VolumeError::InvalidInput(format!(
            "{} already holds a {other} filesystem (or signature); keyvol mounts ext4 or xfs \
             and will not overwrite it",
            dev.display()
        ))),
    }
}

fn mkfs(target: &Path, fs: FsType) -> Result<(), VolumeError> {
    match fs {
        FsType::Ext4 => run(
            "mkfs.ext4",
            [
                OsStr::new("-q"),
                OsStr::new("-F"),
                OsStr::new("-b"),
                OsStr::new("4096"),
                target.as_os_str(),
            ],
        ),
        FsType::Xfs => run(
            "mkfs.xfs",
            [OsStr::new("-q"), OsStr::new("-f"), target.as_os_str()],
        ),
    }
    .map(drop)
}

/// Runs a command; its stdout on success, a `Command` error otherwise.
fn run<I, S>(program: &str, args: I) -> Result<String, VolumeError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let line = std::iter::once(program.to_string())
        .chain(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(&args)
        .output()
        .map_err(|e| VolumeError::Command {
            command: line.clone(),
            status: "not started".into(),
            stderr: format!("{e} (is {program} installed and on PATH?)"),
        })?;
    if !out.status.success() {
        return Err(command_error(&line, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn command_error(line: &str, out: &std::process::Output) -> VolumeError {
    VolumeError::Command {
        command: line.to_string(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub source: PathBuf,
    pub target: PathBuf,
    pub fstype: String,
    pub options: String,
}

/// The system's mounts, from `/proc/mounts`.
pub fn mounts() -> Result<Vec<MountEntry>, VolumeError> {
    let text = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| VolumeError::io("reading", "/proc/mounts", e))?;
    Ok(parse_mounts(&text))
}

fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let (source, target, fstype, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(MountEntry {
                source: PathBuf::from(unescape_octal(source)),
                target: PathBuf::from(unescape_octal(target)),
                fstype: fstype.to_string(),
                options: options.to_string(),
            })
        })
        .collect()
}

/// Undoes the `\040`-style octal escapes of `/proc/mounts`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One loop device, from `losetup -J`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    pub name: PathBuf,
    pub back_file: Option<PathBuf>,
    pub direct_io: bool,
    pub sector_size: u32,
}

/// The system's loop devices (`losetup -J -l -O NAME,BACK-FILE,DIO,LOG-SEC`).
pub fn loop_devices() -> Result<Vec<LoopDevice>, VolumeError> {
    let out = run("losetup", ["-J", "-l", "-O", "NAME,BACK-FILE,DIO,LOG-SEC"])?;
    parse_losetup_json(&out)
}

fn parse_losetup_json(text: &str) -> Result<Vec<LoopDevice>, VolumeError> {
    if text.trim().is_empty() {
        return Ok(Vec::new()); // losetup prints nothing when no device is set up
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| VolumeError::InvalidInput(format!("unexpected `losetup -J` output: {e}")))?;
    let flag = |x: &serde_json::Value| match x {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => s == "1",
        serde_json::Value::Number(n) => n.as_u64() == Some(1),
        _ => false,
    };
    let num = |x: &serde_json::Value| match x {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0) as u32,
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(v.get("loopdevices")
        .and_then(|d| d.as_array())
        .map(|devs| {
            devs.iter()
                .filter_map(|d| {
                    Some(LoopDevice {
                        name: PathBuf::from(d.get("name")?.as_str()?),
                        back_file: d
                            .get("back-file")
                            .and_then(|b| b.as_str())
                            .map(|s| PathBuf::from(s.trim_end_matches(" (deleted)"))),
                        direct_io: d.get("dio").is_some_and(flag),
                        sector_size: d.get("log-sec").map_or(0, num),
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_mounts_with_escapes() {
        let m = parse_mounts(
            "/dev/loop3 /mnt/my\\040vol ext4 rw,relatime 0 0\n\
             keyvol:/x /tmp/dev fuse rw,allow_other 0 0\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/my vol"));
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[1].source, PathBuf::from("keyvol:/x"));
    }

    #[test]
    fn parses_losetup_json_both_styles() {
        let new = r#"{"loopdevices": [{"name": "/dev/loop0", "back-file": "/v/dev", "dio": true, "log-sec": 4096}]}"#;
        let old = r#"{"loopdevices": [{"name": "/dev/loop1", "back-file": null, "dio": "0", "log-sec": "512"}]}"#;
        let a = parse_losetup_json(new).unwrap();
        assert_eq!(
            a,
            vec![LoopDevice {
                name: "/dev/loop0".into(),
                back_file: Some("/v/dev".into()),
                direct_io: true,
                sector_size: 4096
            }]
        );
        let b = parse_losetup_json(old).unwrap();
        assert_eq!(
            (b[0].back_file.clone(), b[0].direct_io, b[0].sector_size),
            (None, false, 512)
        );
        assert!(parse_losetup_json("").unwrap().is_empty());
        assert!(parse_losetup_json("{not json").is_err());
    }

    #[test]
    fn fs_type_parses() {
        assert_eq!("xfs".parse::<FsType>().unwrap(), FsType::Xfs);
        assert!("btrfs"
            .parse::<FsType>()
            .unwrap_err()
            .to_string()
            .contains("ext4 or xfs"));
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let e = run("keyvol-no-such-program", ["x"]).unwrap_err();
        assert!(e.to_string().contains("installed"));
    }
}
