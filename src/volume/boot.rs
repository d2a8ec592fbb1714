//! The boot table: which volumes of a home come up at boot, where, with
//! which filesystem and mount options (keyvol's `/etc/crypttab` +
//! `/etc/fstab`), and `mount --all` / `unmount --all` over it.
//!
//! The table `boot_volumes` lives in the home's `state.db` beside the
//! volume tables (created the same way: `CREATE TABLE IF NOT EXISTS` in one
//! `BEGIN IMMEDIATE` transaction). One row per volume; `position` orders
//! `mount --all` (enable order; re-enabling keeps the place), and
//! `unmount --all` goes in reverse. Each row keeps the profile and region
//! it was enabled with, so that boot acts as the same principal.
//!
//! Invariants `mount --all` relies on:
//! 1. A volume counts as up only when its daemon is alive (its lock is
//!    held) *and* its filesystem is mounted at the entry's mountpoint;
//!    anything else goes through [`Volumes::mount`], which recovers a
//!    mount left by a daemon that died.
//! 2. A failing `nofail` entry is reported and never fails the run; a
//!    failing other entry fails the run only after every entry was tried.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::ids::{Region, VolumeId};
use crate::session::{Session, SessionOptions};
use crate::volume::mount::FsType;
use crate::volume::service::{SourceResolver, Volumes};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS boot_volumes (
    volume_id TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    region TEXT NOT NULL,
    mountpoint TEXT NOT NULL UNIQUE,
    fs TEXT NOT NULL,
    options TEXT NOT NULL,
    nofail INTEGER NOT NULL,
    position INTEGER NOT NULL,
    enabled INTEGER NOT NULL
);
"#;

/// With this variable set (as `keyvol-volumes.service` does), `mount
/// --all` starts each volume's daemon as `keyvol-attach@VOL.service`, so
/// that systemd restarts it when it dies.
pub const ATTACH_UNITS_ENV: &str = "KEYVOL_ATTACH_UNITS";

/// One volume that comes up at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub volume_id: VolumeId,
    pub profile: String,
    pub region: Region,
    pub mountpoint: PathBuf,
    pub fs: FsType,
    pub options: Vec<String>,
    pub nofail: bool,
    pub position: i64,
}

impl BootEntry {
    pub fn to_json(&self) -> Value {
        json!({
            "VolumeId": self.volume_id,
            "MountPoint": self.mountpoint,
            "FileSystem": self.fs.as_str(),
            "Options": self.options,
            "NoFail": self.nofail,
            "Profile": self.profile,
            "Region": self.region.as_str(),
            "Order": self.position,
        })
    }
}

/// How a volume comes up at boot (`volume enable VOL --mount DIR ...`).
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub mountpoint: PathBuf,
    pub fs: FsType,
    pub options: Vec<String>,
    pub nofail: bool,
}

/// Splits and checks `o1,o2`: each option a word of letters, digits and
/// `_=.:/-` (what `mount -o` takes), no empty ones.
pub fn parse_mount_options(s: &str) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for o in s.split(',').map(str::trim) {
        if o.is_empty() {
            return Err(ApiError::invalid_parameter(format!(
                "mount options '{s}' have an empty option: give o1,o2 (e.g. ro,discard)"
            )));
        }
        let ok = o
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_=.:/-".contains(c));
        if !ok {
            return Err(ApiError::invalid_parameter(format!(
                "mount option '{o}' has a character mount -o does not take here \
                 (letters, digits and _=.:/- only)"
            )));
        }
        out.push(o.to_string());
    }
    Ok(out)
}

fn db_err(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("state database (boot table): {e}"))
}

/// The boot table of a home.
pub struct BootTable {
    conn: rusqlite::Connection,
}

impl BootTable {
    pub fn open(s: &Session) -> ApiResult<BootTable> {
        let conn = s
            .home
            .connect()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        s.home
            .ensure_schema(&conn, "boot-table", SCHEMA)
            .map_err(db_err)?;
        Ok(BootTable { conn })
    }

    /// Records (or replaces) the boot entry of volume `vol` of the
    /// session's account and region (the caller found it: in this home, or
    /// at the control plane and held on this host).
    pub fn enable(&self, s: &Session, vol: &VolumeId, spec: BootSpec) -> ApiResult<BootEntry> {
        let BootSpec {
            mountpoint,
            fs,
            options,
            nofail,
        } = spec;
        let mountpoint = mountpoint.as_path();
        let v = vol.as_str();
        if !mountpoint.is_absolute() {
            return Err(ApiError::invalid_parameter(format!(
                "--mount {}: give an absolute path (boot does not know your directory)",
                mountpoint.display()
            )));
        }
        let taken: Option<String> = self
            .conn
            .query_row(
                "SELECT volume_id FROM boot_volumes WHERE mountpoint = ?1 AND volume_id != ?2",
                params![mountpoint.to_string_lossy(), v],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if let Some(other) = taken {
            return Err(ApiError::invalid_parameter(format!(
                "{} is already the boot mountpoint of {other}; disable it first (keyvol volume disable {other})",
                mountpoint.display()
            )));
        }
        let position: i64 = match self.position_of(v)? {
            Some(p) => p,
            None => self
                .conn
                .query_row(
                    "SELECT COALESCE(MAX(position), 0) + 1 FROM boot_volumes",
                    [],
                    |row| row.get(0),
                )
                .map_err(db_err)?,
        };
        self.conn
            .execute(
                "INSERT OR REPLACE INTO boot_volumes \
                 (volume_id, profile, region, mountpoint, fs, options, nofail, position, enabled) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    v,
                    s.profile,
                    s.ctx.region.as_str(),
                    mountpoint.to_string_lossy(),
                    fs.as_str(),
                    options.join(","),
                    nofail,
                    position,
                    s.kms.clock().now(),
                ],
            )
            .map_err(db_err)?;
        self.get(v)?
            .ok_or_else(|| ApiError::internal("the boot entry vanished"))
    }

    fn position_of(&self, v: &str) -> ApiResult<Option<i64>> {
        self.conn
            .query_row(
                "SELECT position FROM boot_volumes WHERE volume_id = ?1",
                [v],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_err)
    }

    /// Removes the boot entry of `v`; an error when there is none.
    pub fn disable(&self, v: &str) -> ApiResult<BootEntry> {
        let e = self.get(v)?.ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "volume {v} is not enabled for boot (keyvol volume status lists the boot table)"
            ))
        })?;
        self.conn
            .execute("DELETE FROM boot_volumes WHERE volume_id = ?1", [v])
            .map_err(db_err)?;
        Ok(e)
    }

    pub fn get(&self, v: &str) -> ApiResult<Option<BootEntry>> {
        Ok(self.list()?.into_iter().find(|e| e.volume_id.as_str() == v))
    }

    /// Every entry, in boot order.
    pub fn list(&self) -> ApiResult<Vec<BootEntry>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT volume_id, profile, region, mountpoint, fs, options, nofail, position \
                 FROM boot_volumes ORDER BY position",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (v, profile, region, mp, fs, options, nofail, position) = row.map_err(db_err)?;
            let corrupt = |what: &str| {
                ApiError::internal(format!("boot table row of {v}: {what} is not valid"))
            };
            out.push(BootEntry {
                volume_id: v.parse().map_err(|_| corrupt("the volume id"))?,
                profile,
                region: region.parse().map_err(|_| corrupt("the region"))?,
                mountpoint: PathBuf::from(mp),
                fs: fs.parse().map_err(|_| corrupt("the filesystem"))?,
                options: if options.is_empty() {
                    Vec::new()
                } else {
                    options.split(',').map(str::to_string).collect()
                },
                nofail,
                position,
            });
        }
        Ok(out)
    }
}

/// What `mount --all` or `unmount --all` did.
#[derive(Debug, Default)]
pub struct BootReport {
    /// One object per entry: `VolumeId`, `MountPoint`, `Action`, `Error`.
    pub volumes: Vec<Value>,
    /// Entries without `nofail` that failed: the run failed.
    pub failed: Vec<String>,
}

impl BootReport {
    pub fn to_json(&self) -> Value {
        json!({"Volumes": self.volumes})
    }

    /// The error of the run, when an entry without `nofail` failed.
    pub fn error(&self, operation: &str) -> Option<ApiError> {
        (!self.failed.is_empty()).then(|| {
            ApiError::new(
                "IncorrectState",
                format!(
                    "{operation} failed for {}: fix the cause (details above), or mark the volume \
                     --nofail with keyvol volume enable",
                    self.failed.join(", ")
                ),
            )
        })
    }
}

/// The session of an entry: `s` itself when profile and region match.
fn session_for(s: &Session, e: &BootEntry) -> ApiResult<Option<Session>> {
    if e.profile == s.profile && e.region == s.ctx.region {
        return Ok(None);
    }
    let opts = SessionOptions {
        home: s.home.dir().to_path_buf(),
        profile: e.profile.clone(),
        region: e.region.clone(),
    };
    Session::open(&opts).map(Some).map_err(ApiError::from)
}

/// Is `e` up: daemon alive and its filesystem at the mountpoint?
fn is_up(vols: &Volumes, e: &BootEntry) -> ApiResult<bool> {
    let status = vols.status()?;
    let attachments = status["Attachments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(entry_is_up(&attachments, e))
}

/// Is boot entry `e` up among `volume status` attachments: its daemon
/// alive and its filesystem at its mountpoint? A dead daemon's attachment
/// still lists its mount: that volume is not up, and mounting it again
/// recovers it.
pub fn entry_is_up(attachments: &[Value], e: &BootEntry) -> bool {
    attachments.iter().any(|a| {
        a["VolumeId"] == json!(e.volume_id)
            && a["State"] == "attached"
            && a["Mounts"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["MountPoint"] == json!(e.mountpoint.to_string_lossy()))
            })
    })
}

fn is_attached(vols: &Volumes, v: &VolumeId) -> ApiResult<bool> {
    let r = vols.get(v.as_str())?;
    let j = vols.to_json(&r)?;
    Ok(j["Attachments"].as_array().is_some_and(|a| !a.is_empty()))
}

/// Starts the daemon of `v` as `keyvol-attach@v.service` and waits until
/// it serves the device.
fn attach_through_systemd(vols: &Volumes, v: &VolumeId) -> ApiResult<()> {
    let unit = format!("keyvol-attach@{v}.service");
    let out = std::process::Command::new("systemctl")
        .args(["start", &unit])
        .output()
        .map_err(|e| ApiError::internal(format!("running systemctl start {unit}: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::internal(format!(
            "systemctl start {unit} failed: {} (see journalctl -u {unit})",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    for _ in 0..600 {
        if is_attached(vols, v)? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(ApiError::internal(format!(
        "{unit} did not attach {v} within 60 s (see journalctl -u {unit})"
    )))
}

fn mount_one(
    s: &Session,
    e: &BootEntry,
    source: Option<SourceResolver>,
) -> ApiResult<&'static str> {
    let mut vols = Volumes::open(s)?.with_mount_options(e.options.clone());
    if let Some(f) = source {
        vols = vols.with_snapshot_source(f);
    }
    // On a host whose records are at a control plane, a restore no machine
    // holds yet is taken up here first (and let go again if it fails).
    match crate::volume::remote::control_plane(s)? {
        Some(cp) => vols.with_adopted(&cp, e.volume_id.as_str(), || bring_up(&vols, e)),
        None => bring_up(&vols, e),
    }
}

/// [`mount_one`] once the volume is this home's.
fn bring_up(vols: &Volumes, e: &BootEntry) -> ApiResult<&'static str> {
    if is_up(vols, e)? {
        return Ok("already-mounted");
    }
    if std::env::var_os(ATTACH_UNITS_ENV).is_some_and(|v| v == "1")
        && !is_attached(vols, &e.volume_id)?
    {
        attach_through_systemd(vols, &e.volume_id)?;
    }
    vols.mount(e.volume_id.as_str(), &e.mountpoint, e.fs)?;
    Ok("mounted")
}

fn unmount_one(s: &Session, e: &BootEntry) -> ApiResult<&'static str> {
    let vols = Volumes::open(s)?;
    let mounted = crate::volume::mount::mounts()?
        .iter()
        .any(|m| m.target == e.mountpoint);
    if mounted {
        vols.unmount(&e.mountpoint)?;
        if is_attached(&vols, &e.volume_id)? {
            vols.detach(e.volume_id.as_str(), true)?;
        }
        return Ok("unmounted");
    }
    match is_attached(&vols, &e.volume_id) {
        Ok(true) => {
            vols.detach(e.volume_id.as_str(), true)?;
            Ok("detached")
        }
        Ok(false) => Ok("not-mounted"),
        // A volume deleted after it was enabled is not up either.
        Err(err) if err.code == "InvalidVolume.NotFound" => Ok("not-mounted"),
        Err(err) => Err(err),
    }
}

/// Attaches and mounts every entry of the boot table, in order. Entries
/// already up are left alone (invariant 1).
pub fn mount_all(s: &Session, source: Option<SourceResolver>) -> ApiResult<BootReport> {
    let entries = BootTable::open(s)?.list()?;
    let mut report = BootReport::default();
    for e in &entries {
        let res = session_for(s, e).and_then(|own| mount_one(own.as_ref().unwrap_or(s), e, source));
        record(&mut report, e, res);
    }
    Ok(report)
}

/// Unmounts and detaches every entry of the boot table, in reverse order.
pub fn unmount_all(s: &Session) -> ApiResult<BootReport> {
    let entries = BootTable::open(s)?.list()?;
    let mut report = BootReport::default();
    for e in entries.iter().rev() {
        let res = session_for(s, e).and_then(|own| unmount_one(own.as_ref().unwrap_or(s), e));
        record(&mut report, e, res);
    }
    Ok(report)
}

fn record(report: &mut BootReport, e: &BootEntry, res: ApiResult<&'static str>) {
    let mut v = json!({"VolumeId": e.volume_id, "MountPoint": e.mountpoint});
    match res {
        Ok(action) => v["Action"] = json!(action),
        Err(err) => {
            v["Action"] = json!("failed");
            v["Error"] = json!(format!("{}: {}", err.code, err.message));
            v["NoFail"] = json!(e.nofail);
            if !e.nofail {
                report.failed.push(e.volume_id.to_string());
            }
        }
    }
    report.volumes.push(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_parse_and_refuse() {
        assert_eq!(
            parse_mount_options("ro,discard").unwrap(),
            vec!["ro".to_string(), "discard".to_string()]
        );
        assert_eq!(parse_mount_options("nouuid").unwrap(), vec!["nouuid"]);
        assert_eq!(
            parse_mount_options("commit=30,errors=remount-ro")
                .unwrap()
                .len(),
            2
        );
        for bad in ["", "ro,,discard", "ro discard", "ro;reboot", "a,$(x)"] {
            assert!(parse_mount_options(bad).is_err(), "{bad:?} accepted");
        }
    }
}
