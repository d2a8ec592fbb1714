//! File systems on volumes: `keyvol volume mount` (attach if needed, a
//! loop device, mkfs on first use, mount; or fuse2fs) and `unmount` (and
//! detach), one file system per volume.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::volume::service::{absolute, db_err, io_err, vol_err, Volumes};
use crate::volume::{mount, VolumeError};

impl Volumes<'_> {
    /// Attach + loop device + mkfs on first use + mount (root), or fuse2fs.
    /// One volume, one filesystem mount: a volume whose device already
    /// carries a loop device or a mount is refused. `dir` must be an empty
    /// directory that is not a mount point (it is created when missing, and
    /// removed again if the mount fails).
    pub fn mount(&self, v: &str, dir: &Path, fs_type: mount::FsType) -> ApiResult<Value> {
        let r = self.row(v)?;
        let dir = absolute(dir)?;
        // Mounts and unmounts of one volume run one at a time, so two
        // concurrent mounts cannot both find the device unused.
        let _serial = self.serialize_mounts(&r)?;
        self.check_backing(&r)?;
        let mut recovered = None;
        if let Some((device, _, _)) = self.attachment(&r)? {
            let users = mount::stack_of(Path::new(&device))
                .map_err(vol_err)?
                .users();
            if !users.is_empty() {
                return Err(ApiError::new(
                    "VolumeInUse",
                    format!(
                        "Volume {v} is already in use by {} (one volume, one filesystem mount): use that mount, or unmount it first",
                        users.join(", ")
                    ),
                ));
            }
        } else {
            // A dead daemon's stack (maybe its ext4 still at `dir`) goes first.
            recovered = self.recover(&r)?;
        }
        let created = prepare_mountpoint(&dir)?;
        let undo_dir = || {
            if created {
                let _ = fs::remove_dir(&dir);
            }
        };
        let dir = match dir.canonicalize() {
            Ok(d) => d,
            Err(e) => {
                undo_dir();
                return Err(io_err("resolving mountpoint", &dir, e));
            }
        };
        let attached_here = match self.attachment(&r)? {
            Some(_) => false,
            None => {
                if let Err(e) = self.attach(v, None) {
                    undo_dir();
                    return Err(e);
                }
                true
            }
        };
        let undo = |e: ApiError| {
            if attached_here {
                let _ = self.detach(v, true);
            }
            undo_dir();
            e
        };
        let (device, _, _) = self
            .attachment(&r)?
            .ok_or_else(|| undo(ApiError::internal("the attachment vanished while mounting")))?;
        let m = mount::mount_volume_with_options(
            Path::new(&device),
            &dir,
            fs_type,
            &self.mount_options,
        )
        .map_err(|e| undo(vol_err(e)))?;
        let recorded = self.conn.execute(
            "INSERT OR REPLACE INTO mounts (mountpoint, volume_id, fs, mounted, attached_here) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![dir.to_string_lossy(), v, fs_type.as_str(), self.s.kms.clock().now(), attached_here],
        );
        if let Err(e) = recorded {
            let _ = mount::unmount_volume(&m);
            return Err(undo(db_err(e)));
        }
        let mut out = self.to_json(&self.row(v)?)?;
        out["Mount"] = json!({"MountPoint": dir, "FileSystem": fs_type.as_str(), "LoopDevice": m.loop_device(), "Formatted": m.formatted()});
        if let Some(c) = recovered {
            out["Recovered"] = json!(c);
        }
        Ok(out)
    }

    /// Undoes a mount keyvol made for a volume of the caller's account
    /// (anything else at `dir` is refused, untouched): unmounts the
    /// filesystem, never lazily (a busy one is refused and nothing
    /// changes), detaches its loop device, then the volume if the mount
    /// attached it. After a crash of the daemon, clears what it left.
    pub fn unmount(&self, dir: &Path) -> ApiResult<Value> {
        let dir = absolute(dir)?;
        let canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        let not_ours = || {
            ApiError::invalid_parameter(format!(
                "{} is not a mount that keyvol made for a volume of account {} in {}: keyvol unmounts only its own mounts",
                dir.display(),
                self.s.ctx.caller.account.as_str(),
                self.s.ctx.region.as_str()
            ))
        };
        let vol: Option<(String, bool)> = self
            .conn
            .query_row(
                "SELECT volume_id, attached_here FROM mounts WHERE mountpoint = ?1 OR mountpoint = ?2",
                params![canon.to_string_lossy(), dir.to_string_lossy()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err)?;
        let Some((v, attached_here)) = vol else {
            return Err(not_ours());
        };
        let r = self.row(&v).map_err(|_| not_ours())?;
        let _serial = self.serialize_mounts(&r)?;
        let Some((device, _, _)) = self.attachment(&r)? else {
            let cleared = self.recover(&r)?.unwrap_or_default();
            return Ok(
                json!({"MountPoint": canon, "Unmounted": true, "VolumeId": v, "Recovered": cleared,
                             "Volume": self.to_json(&r)?}),
            );
        };
        let device = PathBuf::from(device);
        let stack = mount::stack_of(&device).map_err(vol_err)?;
        let here: Vec<&mount::MountEntry> = mount::mounts()
            .map_err(vol_err)?
            .iter()
            .filter(|m| m.target == canon)
            .map(|m| stack.mounts.iter().find(|s| *s == m))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "what is mounted at {} is not volume {v}'s filesystem: keyvol leaves it alone",
                    canon.display()
                ))
            })?;
        let mounted = !here.is_empty();
        for m in here.iter().rev() {
            mount::unmount_fs(&m.target).map_err(|e| match e {
                VolumeError::Busy { .. } => ApiError::new(
                    "VolumeInUse",
                    format!("The filesystem of volume {v} at {} is busy (a process has a file open or its working directory there; `fuser -vm {}` lists them). Nothing was changed: stop them and run unmount again", canon.display(), canon.display()),
                ),
                e => vol_err(e),
            })?;
        }
        let stack = mount::stack_of(&device).map_err(vol_err)?;
        if stack.mounts.is_empty() {
            for l in &stack.loops {
                mount::detach_loop(&l.name).map_err(vol_err)?;
            }
        }
        if let Err(e) = self.conn.execute(
            "DELETE FROM mounts WHERE mountpoint = ?1 OR mountpoint = ?2",
            params![canon.to_string_lossy(), dir.to_string_lossy()],
        ) {
            tracing::warn!("removing the mount record of {}: {e}", canon.display());
        }
        let mut out = json!({"MountPoint": canon, "Unmounted": mounted, "VolumeId": v});
        // Unmount undoes what mount did: a volume that was attached before
        // (`keyvol volume attach`, AttachVolume) stays attached.
        out["Volume"] = if attached_here {
            self.detach(&v, false)?
        } else {
            self.to_json(&self.row(&v)?)?
        };
        Ok(out)
    }
}

/// Makes sure `dir` can be mounted on: an empty directory that is not a
/// mount point, created when missing (`Ok(true)`). Anything else is
/// refused before anything is attached.
fn prepare_mountpoint(dir: &Path) -> ApiResult<bool> {
    let bad = |why: &str| {
        ApiError::invalid_parameter(format!(
            "mountpoint {} {why}: give an empty directory (or a path that does not exist yet)",
            dir.display()
        ))
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| io_err("creating mountpoint", dir, e))?;
            Ok(true)
        }
        Err(e) => Err(io_err("inspecting mountpoint", dir, e)),
        Ok(m) if m.file_type().is_symlink() => Err(bad("is a symbolic link")),
        Ok(m) if !m.is_dir() => Err(bad("is not a directory")),
        Ok(_) => {
            let mut entries =
                fs::read_dir(dir).map_err(|e| io_err("reading mountpoint", dir, e))?;
            if entries.next().is_some() {
                return Err(bad("is not empty"));
            }
            let canon = dir
                .canonicalize()
                .map_err(|e| io_err("resolving mountpoint", dir, e))?;
            if mount::mounts()
                .map_err(vol_err)?
                .iter()
                .any(|m| m.target == canon)
            {
                return Err(bad("is already a mount point"));
            }
            Ok(false)
        }
    }
}
