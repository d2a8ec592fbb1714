//! The attach agent: the daemon that serves a volume's decrypted device
//! through FUSE (`keyvol volume attach`, or the server's AttachVolume),
//! the server end of its control socket (the protocol, both ends, is
//! [`super::control`]), starting and stopping it, and clearing what a dead
//! daemon left. The records it serves from are [`super::service`]'s.

use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::params;
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::volume::control::Reply;
use crate::volume::device::HydrationMap;
use crate::volume::service::{
    absolute, canonical_device, db_err, io_err, lock_held, take_lock, vol_err, VolumeRecord,
    Volumes,
};
use crate::volume::{mount, ChangeLog, EncryptedDevice, SectorCipher, CHUNK_SIZE};

/// Set by `attach` for the daemon process it starts, whose command the
/// control plane already authorized and audited.
pub const ATTACH_CHILD_ENV: &str = "KEYVOL_ATTACH_CHILD";

/// Set (with [`ATTACH_CHILD_ENV`]) for an attach daemon started on behalf
/// of a caller of the server, who has no profile in the home: the caller
/// ([`RequestContext::to_handoff`](crate::request::RequestContext::to_handoff))
/// that the daemon acts as for its KMS calls.
pub const ATTACH_CALLER_ENV: &str = "KEYVOL_ATTACH_CALLER";

/// At most this many snapshots of one volume are cut and not yet finished.
pub const MAX_PENDING_SNAPSHOTS: usize = 5;

/// Where a `STOP` request waits for the daemon's main thread to try the
/// unmount: the answer is `Ok` (stopping) or why it refused.
type StopSlot = Arc<std::sync::Mutex<Option<std::sync::mpsc::Sender<Result<(), String>>>>>;

/// The attach daemon's control socket: one thread per connection, one
/// request at a time ([`super::control::Request`] has the protocol). A
/// connection that closes abandons the cuts it made and did not finish.
fn serve_control(
    listener: std::os::unix::net::UnixListener,
    dev: Arc<EncryptedDevice>,
    stop: StopSlot,
    sizes: crate::fuse::SizeNotifier,
) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let dev = dev.clone();
        let stop = stop.clone();
        let sizes = sizes.clone();
        std::thread::spawn(move || {
            let mut mine: Vec<String> = Vec::new();
            let _ = control_session(&conn, &dev, &stop, &sizes, &mut mine);
            for id in mine {
                tracing::info!(snapshot = %id, "cut abandoned (its client went away)");
                let _ = dev.finish_cut(&id, false);
            }
        });
    }
}

fn control_session(
    conn: &std::os::unix::net::UnixStream,
    dev: &EncryptedDevice,
    stop: &StopSlot,
    sizes: &crate::fuse::SizeNotifier,
    mine: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut reader = std::io::BufReader::new(conn.try_clone()?);
    let mut out = std::io::BufWriter::new(conn.try_clone()?);
    let mut line = String::new();
    // One chunk buffer for the session's reads (a snapshot's client reads
    // thousands of chunks over its connection).
    let mut chunk = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        use super::control::{Refusal, Request};
        let failed = |e: String| (Refusal::Failed, e);
        // The reply's words, and whether `chunk` follows them.
        let reply: Result<(String, bool), (Refusal, String)> = match Request::parse(&line) {
            Err(e) => Err(failed(e)),
            Ok(Request::Cut { snapshot: id, all }) => dev
                .cut(&id, all, MAX_PENDING_SNAPSHOTS)
                .map(|chunks| {
                    tracing::info!(snapshot = %id, all, chunks = chunks.len(), "snapshot cut");
                    crate::telemetry::snapshot_cut(chunks.len());
                    let list: Vec<String> = chunks.iter().map(u64::to_string).collect();
                    mine.push(id.clone());
                    (list.join(" "), false)
                })
                .map_err(|e| {
                    tracing::warn!(snapshot = %id, "snapshot cut refused: {e}");
                    (Refusal::of(&e), e.to_string())
                }),
            Ok(Request::Read { snapshot: id, chunk: c }) => dev
                .snapshot_read_into(&id, c, &mut chunk)
                .map(|()| {
                    crate::telemetry::snapshot_chunk_read();
                    (chunk.len().to_string(), true)
                })
                .map_err(|e| {
                    tracing::error!(snapshot = %id, chunk = c, errno = e.errno(), "snapshot read failed: {e}");
                    failed(e.to_string())
                }),
            Ok(Request::Finish { snapshot: id, ok }) => {
                mine.retain(|m| *m != id);
                tracing::info!(snapshot = %id, ok, "snapshot cut finished");
                dev.finish_cut(&id, ok)
                    .map(|()| (String::new(), false))
                    .map_err(|e| failed(e.to_string()))
            }
            Ok(Request::Stop) => request_stop_of_main(stop)
                .map(|()| (String::new(), false))
                .map_err(failed),
            Ok(Request::Health) => {
                let (n, last) = dev.io_errors();
                Ok((format!("{n} {last}"), false))
            }
            Ok(Request::Grow { size: n }) => dev
                .grow(n)
                .map_err(|e| {
                    tracing::error!(size = n, "online grow failed: {e}");
                    failed(e.to_string())
                })
                .map(|()| {
                    tracing::info!(size = n, "device grown online");
                    // The size is in effect; a kernel that missed the
                    // notice sees it when its attribute cache expires.
                    if let Err(e) = sizes.size_changed() {
                        tracing::warn!("telling the kernel the new size: {e}");
                    }
                    (String::new(), false)
                }),
        };
        match reply {
            Ok((words, body)) => {
                writeln!(out, "{}", Reply::Done(words).encode())?;
                if body {
                    out.write_all(&chunk)?;
                }
            }
            Err((refusal, why)) => writeln!(out, "{}", Reply::Refused(refusal, why).encode())?,
        }
        out.flush()?;
    }
}

/// Wakes the daemon's main thread (blocked in sigwait) to try the unmount
/// and waits for its answer.
fn request_stop_of_main(stop: &StopSlot) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    match stop.lock() {
        Ok(mut s) => *s = Some(tx),
        Err(_) => return Err("the daemon's stop slot is poisoned".into()),
    }
    crate::sys::signal_self(libc::SIGTERM).map_err(|e| format!("signalling the daemon: {e}"))?;
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .map_err(|_| "the daemon did not answer the stop request within 30 s".to_string())?
}

/// The daemon's answer to `STOP`.
enum StopReply {
    Stopping,
    Refused(String),
}

/// Client side of `STOP`.
/// The I/O errors a running attach daemon's device answered, and the Unix
/// time of the latest; `None` when it does not answer within 2 s.
pub(super) fn io_health(socket: &Path) -> Option<(u64, u64)> {
    let conn = std::os::unix::net::UnixStream::connect(socket).ok()?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    let line = super::control::Request::Health.encode();
    (&conn).write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(&conn).read_line(&mut line).ok()?;
    let Reply::Done(words) = Reply::parse(&line) else {
        return None;
    };
    let mut words = words.split(' ');
    let n = words.next()?.parse().ok()?;
    let last = words.next()?.parse().ok()?;
    Some((n, last))
}

/// Asks a running attach daemon to grow its device to `size` bytes.
pub(super) fn grow_online(socket: &Path, size: u64) -> ApiResult<()> {
    let talk = || -> std::io::Result<String> {
        let conn = std::os::unix::net::UnixStream::connect(socket)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        let line = super::control::Request::Grow { size }.encode();
        (&conn).write_all(format!("{line}\n").as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(&conn).read_line(&mut line)?;
        Ok(line)
    };
    let line = talk().map_err(|e| {
        ApiError::incorrect_state(format!(
            "the attach daemon did not answer the grow ({e}): nothing was changed; check `keyvol volume status`"
        ))
    })?;
    match Reply::parse(&line) {
        Reply::Refused(_, why) => Err(ApiError::internal(format!(
            "the attach daemon could not grow the device: {why}"
        ))),
        Reply::Done(words) if words.is_empty() => Ok(()),
        Reply::Done(_) => Err(ApiError::internal(format!(
            "the attach daemon answered the grow with '{}'",
            line.trim()
        ))),
    }
}

fn request_stop(socket: &Path) -> std::io::Result<StopReply> {
    let conn = std::os::unix::net::UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(40)))?;
    let line = super::control::Request::Stop.encode();
    (&conn).write_all(format!("{line}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(&conn).read_line(&mut line)?;
    Ok(match line.trim() {
        // OK, or the daemon exited before answering: it is stopping.
        "" => StopReply::Stopping,
        answer => match Reply::parse(answer) {
            Reply::Refused(_, why) => StopReply::Refused(why),
            Reply::Done(_) => StopReply::Stopping,
        },
    })
}

/// Fetches the rest of a restored volume's snapshot, logging progress
/// every tenth and failures.
fn hydrate_in_background(dev: &EncryptedDevice, vol: &str, pending: usize) {
    tracing::info!(volume = vol, chunks = pending, "hydration started");
    let mut last_tenth = 0;
    let res = dev.hydrate_all(&mut |done, total| {
        crate::telemetry::hydration_progress(done, total);
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if tenth > last_tenth {
            last_tenth = tenth;
            tracing::info!(volume = vol, done, total, "hydration {}%", tenth * 10);
        }
    });
    match res {
        Ok(()) => tracing::info!(volume = vol, "hydration finished"),
        Err(e) => tracing::error!(
            volume = vol,
            errno = e.errno(),
            "background hydration stopped: {e} (missing chunks are still fetched on first read)"
        ),
    }
}

impl Volumes<'_> {
    /// Runs the attach daemon in this process until SIGTERM/SIGINT/SIGHUP
    /// or a `STOP` on its control socket: holds the lock, serves the device
    /// at `device`, and prints one JSON line to `ready` once the device is
    /// usable. A stop while the device is busy (a loop device or a process
    /// holds it open) is refused and the daemon goes on serving.
    pub fn run_daemon(&self, v: &str, device: &Path, ready: &mut dyn Write) -> ApiResult<()> {
        crate::sys::return_large_frees_to_the_os();
        let hardening = crate::sys::harden_and_report("the attach daemon");
        tracing::info!(
            volume = v,
            pid = std::process::id(),
            dumpable = hardening.dumpable,
            memory_locked = hardening.memory == crate::sys::MemoryLock::All,
            "attach daemon starting (keyvol {})",
            env!("CARGO_PKG_VERSION")
        );
        let r = self.row(v)?;
        let lock = take_lock(&self.lock_path(&r.volume_id)).ok_or_else(|| {
            ApiError::new(
                "VolumeInUse",
                format!(
                    "Volume {v} is already attached (one attachment at a time); detach it first"
                ),
            )
        })?;
        let device_arc = Arc::new(self.open_device(&r)?);
        if hardening.memory != crate::sys::MemoryLock::All {
            // At least the pages of the key schedule, within the limit.
            let (addr, len) = device_arc.key_memory();
            match crate::sys::lock_region(addr, len) {
                Ok(()) => tracing::info!("locked the pages of the volume key in RAM ({len} bytes)"),
                Err(e) => {
                    tracing::warn!("the volume key's pages are not locked in RAM: mlock: {e}")
                }
            }
        }
        if !device.exists() {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(device)
                .map_err(|e| io_err("creating device file", device, e))?;
        }
        // Block the stop signals before FUSE starts its threads, so only
        // this thread receives them (via sigwait).
        let signals = crate::sys::StopSignals::new();
        signals
            .block()
            .map_err(|e| ApiError::internal(format!("blocking stop signals: {e}")))?;
        // Only a dead daemon's mount can be here: we hold the lock.
        if let Err(e) = mount::clear_dead_fuse(device) {
            tracing::warn!("clearing a dead FUSE mount at {}: {e}", device.display());
        }
        let handle = crate::fuse::serve(
            device_arc.clone(),
            device,
            &crate::fuse::FuseOptions::default(),
        )?;
        let device_path = handle.device_path().to_path_buf();
        let control = self.control_path(&r.volume_id);
        let stop: StopSlot = Arc::new(std::sync::Mutex::new(None));
        // Everything after the mount undoes the mount when it fails, so a
        // failed attach never leaves a FUSE mount without its daemon.
        let started = (|| -> ApiResult<()> {
            let _ = fs::remove_file(&control);
            let listener = std::os::unix::net::UnixListener::bind(&control)
                .map_err(|e| io_err("binding control socket", &control, e))?;
            let dev = device_arc.clone();
            let slot = stop.clone();
            let sizes = handle.size_notifier();
            std::thread::spawn(move || serve_control(listener, dev, slot, sizes));
            // A restored volume fetches the rest of its snapshot in the
            // background while attached (reads of missing chunks go first).
            let pending = device_arc.hydration_pending().len();
            if pending > 0 {
                let dev = device_arc.clone();
                let vol = v.to_string();
                std::thread::spawn(move || hydrate_in_background(&dev, &vol, pending));
            }
            let now = self.s.kms.clock().now();
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO attachments (volume_id, device, pid, attached) VALUES (?1, ?2, ?3, ?4)",
                    params![v, device_path.to_string_lossy(), std::process::id() as i64, now],
                )
                .map_err(db_err)?;
            Ok(())
        })();
        if let Err(e) = started {
            tracing::error!("attach of {v} failed after the FUSE mount: {e}");
            if let Err(ue) = handle.unmount() {
                tracing::error!("undoing the FUSE mount at {}: {ue}", device_path.display());
            }
            let _ = fs::remove_file(&control);
            let _ = device_arc.close();
            return Err(e);
        }
        tracing::info!(
            volume = v,
            device = %device_path.display(),
            size = r.size,
            "attached: serving the decrypted device"
        );
        let _ = writeln!(
            ready,
            "{}",
            json!({"VolumeId": v, "Device": device_path, "State": "attached", "Pid": std::process::id(),
                   "Dumpable": hardening.dumpable, "MemoryLocked": hardening.memory == crate::sys::MemoryLock::All})
        );
        let _ = ready.flush();
        if self.remote().unwrap_or(false) {
            super::remote_snapshot::watch_for_snapshots(
                self.s,
                v,
                device_arc.clone(),
                &device_path,
            );
        }
        loop {
            let sig = signals.wait();
            let waiter = stop.lock().map(|mut s| s.take()).unwrap_or(None);
            match handle.try_unmount() {
                Ok(()) => {
                    tracing::info!(volume = v, signal = sig, "stopping: device unmounted");
                    if let Some(w) = waiter {
                        let _ = w.send(Ok(()));
                    }
                    break;
                }
                Err(e) => {
                    // Nothing changes: the device keeps serving whoever holds it.
                    tracing::warn!(volume = v, signal = sig, "refusing to stop: {e}");
                    if let Some(w) = waiter {
                        let _ = w.send(Err(e.to_string()));
                    }
                }
            }
        }
        let res = handle.finish();
        let _ = fs::remove_file(&control);
        let fully_hydrated = device_arc.hydration_pending().is_empty();
        let closed = device_arc.close();
        if fully_hydrated && closed.is_ok() && r.snapshot_id.is_some() {
            self.hydration_done(&r);
        }
        // Best effort: a full disk must not keep the daemon from stopping; a
        // row left behind reads as a dead attachment and is cleared later.
        if let Err(e) = self
            .conn
            .execute("DELETE FROM attachments WHERE volume_id = ?1", [v])
        {
            tracing::warn!("removing the attachment record of {v}: {e} (cleared on next use)");
        }
        match (&res, &closed) {
            (Ok(()), Ok(())) => tracing::info!(volume = v, "detached"),
            _ => tracing::error!(volume = v, "detached with errors: {res:?} {closed:?}"),
        }
        drop(lock);
        res?;
        closed?;
        Ok(())
    }

    /// Opens the decrypted device of volume `r` (its data key through the
    /// KMS), with lazy hydration from its snapshot while any chunk is still
    /// to be fetched. A missing or short backing file is an error: keyvol
    /// never puts an empty volume in place of lost data.
    pub fn open_device(&self, r: &VolumeRecord) -> ApiResult<EncryptedDevice> {
        self.check_backing(r)?;
        let key = self.data_key(r)?;
        let cipher = SectorCipher::new(&key)?;
        drop(key);
        let changes = ChangeLog::open(
            &self.changes_path(&r.volume_id),
            r.size.div_ceil(CHUNK_SIZE),
        )?;
        let mut device =
            EncryptedDevice::open(&self.backing_path(&r.volume_id), r.size, cipher, changes)?;
        let map_path = self.hydration_path(&r.volume_id);
        if map_path.exists() {
            let map = HydrationMap::open(&map_path)?;
            if !map.pending_chunks().is_empty() {
                let resolve = self.source.ok_or_else(|| {
                    ApiError::internal(format!(
                        "volume {} still hydrates from its snapshot, but no snapshot source was given",
                        r.volume_id
                    ))
                })?;
                let source = (resolve.source)(self.s, r)?;
                device = device.with_hydration(source, map);
            } else {
                self.hydration_done(r);
            }
        }
        Ok(device)
    }

    /// Tells the snapshot layer that `r` needs its snapshot no more (best
    /// effort: a failure is logged and retried at the next attach).
    pub(super) fn hydration_done(&self, r: &VolumeRecord) {
        if let Some(h) = self.source {
            if let Err(e) = (h.hydrated)(self.s, r) {
                tracing::warn!(volume = %r.volume_id, "releasing the restore's snapshot access: {e}");
            }
        }
    }

    /// Takes the attachment lock of a detached volume (so it cannot be
    /// attached meanwhile); `None` when the volume is attached.
    pub fn lock_detached(&self, r: &VolumeRecord) -> Option<fs::File> {
        take_lock(&self.lock_path(&r.volume_id))
    }

    /// Clears what a dead attach daemon of `r` left behind: the filesystems
    /// mounted over its device (through loop devices), those loop devices,
    /// its stale FUSE mount ("Transport endpoint is not connected"), and
    /// the attachment and mount records. Only the stacks on this volume's
    /// device files are touched, and only while this call holds the
    /// volume's lock (so no live daemon serves them). `None` when a live
    /// daemon holds the lock or nothing was left.
    pub(super) fn recover(&self, r: &VolumeRecord) -> ApiResult<Option<Vec<String>>> {
        let Some(lock) = take_lock(&self.lock_path(&r.volume_id)) else {
            return Ok(None);
        };
        let row = self.attachment_row(r)?;
        let mut devices = vec![canonical_device(&self.default_device(&r.volume_id))];
        if let Some(a) = &row {
            let d = canonical_device(&a.device);
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
        let mut cleared = Vec::new();
        for d in &devices {
            cleared.extend(mount::release_stack(d, true).map_err(vol_err)?);
            if mount::clear_dead_fuse(d).map_err(vol_err)? {
                cleared.push(format!("unmounted the dead FUSE device {}", d.display()));
            }
        }
        if row.is_some() {
            cleared.push("removed the attachment record".to_string());
        }
        // Records only: best effort (a full disk must not block recovery).
        for sql in [
            "DELETE FROM attachments WHERE volume_id = ?1",
            "DELETE FROM mounts WHERE volume_id = ?1",
        ] {
            if let Err(e) = self.conn.execute(sql, [r.volume_id.as_str()]) {
                tracing::warn!("{sql}: {e} (cleared on next use)");
            }
        }
        drop(lock);
        if cleared.is_empty() {
            return Ok(None);
        }
        tracing::info!(volume = %r.volume_id, "cleared what a dead attach daemon left: {}", cleared.join("; "));
        Ok(Some(cleared))
    }

    /// Attaches: on a host whose records are at a control plane on another
    /// machine, AttachVolume there first ([`Volumes::attach_remote`]);
    /// then the daemon here ([`Volumes::attach_here`]).
    pub fn attach(&self, v: &str, device: Option<&Path>) -> ApiResult<Value> {
        match super::remote::control_plane(self.s)? {
            Some(cp) => self.attach_remote(&cp, v, device),
            None => self.attach_here(v, device),
        }
    }

    /// Detaches: the daemon here ([`Volumes::detach_here`]), then, on a
    /// host whose records are at a control plane on another machine,
    /// DetachVolume there ([`Volumes::detach_remote`]).
    pub fn detach(&self, v: &str, force: bool) -> ApiResult<Value> {
        match super::remote::control_plane(self.s)? {
            Some(cp) => self.detach_remote(&cp, v, force),
            None => self.detach_here(v, force),
        }
    }

    /// Attaches in the background: starts the daemon (this binary with
    /// `--foreground`) and returns once the device is served. What a dead
    /// daemon of this volume left is cleared first. This machine only: the
    /// control plane's own host, or the daemon of a remote host.
    pub fn attach_here(&self, v: &str, device: Option<&Path>) -> ApiResult<Value> {
        let r = self.row(v)?;
        if self.attachment(&r)?.is_some() {
            return Err(ApiError::new(
                "VolumeInUse",
                format!("Volume {v} is already attached; detach it first"),
            ));
        }
        self.check_backing(&r)?;
        let recovered = self.recover(&r)?;
        // Check the key before forking, for a clear error in this process
        // (a remote host's daemon asks the control plane once, itself).
        if !self.remote()? {
            drop(self.data_key(&r)?);
        }
        let device = device
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.default_device(&r.volume_id));
        let device = canonical_device(&absolute(&device)?);
        let exe = std::env::current_exe()
            .map_err(|e| ApiError::internal(format!("locating the keyvol binary: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            "--home",
            &self.s.home.dir().to_string_lossy(),
            "--region",
            self.s.ctx.region.as_str(),
        ]);
        if self.s.profile.is_empty() {
            // A caller of the server: the daemon acts as that caller.
            cmd.env(ATTACH_CALLER_ENV, self.s.ctx.to_handoff());
        } else {
            cmd.args(["--profile", &self.s.profile]);
        }
        cmd.args([
            "volume",
            "attach",
            v,
            "--device",
            &device.to_string_lossy(),
            "--foreground",
        ]);
        if tracing::enabled!(tracing::Level::DEBUG) {
            cmd.arg("--debug");
        }
        cmd.env(ATTACH_CHILD_ENV, "1");
        crate::background::start_and_wait_ready(
            cmd,
            &self.log_path(&r.volume_id),
            &format!("the attach daemon of {v}"),
        )?;
        let mut out = self.to_json(&self.row(v)?)?;
        if let Some(c) = recovered {
            out["Recovered"] = json!(c);
        }
        Ok(out)
    }

    /// Detaches: refuses while a loop device or mount uses the device,
    /// unless `force` (then undoes them first, refusing when one is busy);
    /// asks the daemon to stop, which it refuses while the device file is
    /// busy; waits for its lock to go. After a crash, clears what the dead
    /// daemon left.
    pub fn detach_here(&self, v: &str, force: bool) -> ApiResult<Value> {
        let r = self.row(v)?;
        let Some((device, pid, _)) = self.attachment(&r)? else {
            return match self.recover(&r)? {
                Some(cleared) => {
                    let mut out = self.to_json(&self.row(v)?)?;
                    out["Recovered"] = json!(cleared);
                    Ok(out)
                }
                None => Err(ApiError::incorrect_state(format!(
                    "Volume {v} is not attached"
                ))),
            };
        };
        let device = PathBuf::from(device);
        let stack = mount::stack_of(&device).map_err(vol_err)?;
        let users = stack.users();
        if !users.is_empty() {
            if !force {
                return Err(ApiError::new("VolumeInUse", format!(
                    "Volume {v} is still in use by {}: unmount it first (keyvol volume unmount DIR) or pass --force",
                    users.join(", ")
                )));
            }
            mount::release_stack(&device, false).map_err(vol_err)?;
        }
        self.stop_daemon(&r, pid)?;
        let lock = self.lock_path(&r.volume_id);
        for _ in 0..600 {
            if !lock_held(&lock) {
                if let Err(e) = self
                    .conn
                    .execute("DELETE FROM attachments WHERE volume_id = ?1", [v])
                {
                    tracing::warn!("removing the attachment record of {v}: {e}");
                }
                return self.to_json(&self.row(v)?);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(ApiError::internal(format!(
            "the attach daemon of {v} (pid {pid}) did not stop within 30 s"
        )))
    }

    /// Asks the daemon to stop over its control socket; it answers `ERR`
    /// (and keeps serving) when its device is busy. Falls back to SIGTERM
    /// when the socket is unavailable.
    fn stop_daemon(&self, r: &VolumeRecord, pid: i64) -> ApiResult<()> {
        let v = &r.volume_id;
        match request_stop(&self.control_path(v)) {
            Ok(StopReply::Stopping) => Ok(()),
            Ok(StopReply::Refused(why)) => Err(ApiError::new(
                "VolumeInUse",
                format!("Volume {v} stays attached: {why}"),
            )),
            Err(e) => {
                tracing::debug!("control socket of {v}: {e}; stopping the daemon with SIGTERM");
                crate::sys::kill(pid, libc::SIGTERM).map_err(|e| {
                    ApiError::internal(format!(
                        "signalling the attach daemon of {v} (pid {pid}): {e}"
                    ))
                })
            }
        }
    }
}
