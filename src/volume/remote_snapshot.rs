//! The volume host's side of snapshots of its volumes (the control plane's
//! side is [`crate::snapshot::ops::host`]): a thread of each attach daemon
//! on a host whose records are at a control plane on another machine
//! asks, by long poll (`KeyvolDescribeHostRequests`, `WaitSeconds`), what
//! the control plane wants of its volume: whether it is still attached to
//! this host (a DetachVolume made anywhere stops the daemon; a forced one
//! undoes the mounts on the device first), a size that ModifyVolume grew
//! (the device grows online to it), and the snapshots CreateSnapshot made
//! of it. For each snapshot it
//!
//! 1. cuts the device (the point in time; every chunk when the control
//!    plane's parent is not the snapshot this host's change log is
//!    relative to) and reports the cut (`KeyvolReportHostSnapshot`
//!    `Status=cut`), which lets CreateSnapshot answer;
//! 2. sends each chunk of the cut, as plaintext of the cut (decrypted
//!    here; the control plane encrypts it again under the same data key),
//!    with PutSnapshotBlock and its SHA-256, then CompleteSnapshot with the
//!    count and the LINEAR checksum;
//! 3. clears the change bits of what it sent (the cut completed) and
//!    records the snapshot as its log's base. Any failure keeps the bits
//!    and is reported (`Status=failed`), which ends the snapshot in
//!    `error`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::api_error::{ApiError, ApiResult};
use crate::ec2::hosts::{DESCRIBE_HOST_REQUESTS, MAX_HOST_WAIT_SECS, REPORT_HOST_SNAPSHOT};
use crate::ids::{SnapshotId, VolumeId};
use crate::server::control_plane::{ControlPlaneClient, XmlReply};
use crate::session::Session;
use crate::snapshot::direct::linear_checksum;
use crate::snapshot::ops::host::{log_base, set_log_base};
use crate::volume::device::EncryptedDevice;

use super::remote::{control_plane, own_instance};

/// The wait between polls after the control plane could not be reached.
const RETRY: Duration = Duration::from_secs(5);

/// How often a daemon whose volume was detached at the control plane asks
/// again while its device is in use (the stop is tried at the first
/// answer and then about once a minute).
const DETACHED_POLL: Duration = Duration::from_secs(5);
/// Polls between two stop attempts of a detached volume's daemon.
const STOP_EVERY: u32 = 12;

/// Starts the thread of the attach daemon of `v`, serving `dev` at
/// `device`, that asks the control plane by long poll what it wants of the
/// volume: snapshots, a grown size, and whether it was detached.
pub fn watch_for_snapshots(s: &Session, v: &str, dev: Arc<EncryptedDevice>, device: &Path) {
    let s = s.clone();
    let vol = v.to_string();
    let v = vol.clone();
    let device = device.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("snapshot-watch".into())
        .spawn(move || {
            let mut client: Option<(ControlPlaneClient, String)> = None;
            let mut detached = Detached::default();
            loop {
                if client.is_none() {
                    client = match connect(&s) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::debug!(volume = %v, "snapshot requests: {}", e.message);
                            std::thread::sleep(RETRY);
                            continue;
                        }
                    };
                }
                let Some((cp, instance)) = client.as_ref() else {
                    continue;
                };
                let wait = MAX_HOST_WAIT_SECS.to_string();
                let size = dev.size().to_string();
                let asked = cp.ec2(
                    DESCRIBE_HOST_REQUESTS,
                    &[
                        ("InstanceId", instance.as_str()),
                        ("VolumeId", v.as_str()),
                        ("SizeInBytes", size.as_str()),
                        ("WaitSeconds", wait.as_str()),
                    ],
                );
                let reply = match asked {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(volume = %v, "asking for snapshot requests: {}", e.message);
                        std::thread::sleep(RETRY);
                        continue;
                    }
                };
                let gone = reply
                    .items("detachSet")
                    .into_iter()
                    .find(|d| d.text("volumeId").as_deref() == Some(v.as_str()));
                if let Some(d) = gone {
                    detached.stop(&v, &device, d.text("force").as_deref() == Some("true"));
                    std::thread::sleep(DETACHED_POLL);
                    continue;
                }
                detached = Detached::default();
                for item in reply.items("volumeSet") {
                    grow(&s, &v, &dev, &item);
                }
                for item in reply.items("snapshotSet") {
                    take(&s, cp, instance, &v, &dev, &item);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(volume = %vol, "not taking snapshots for the control plane: {e}");
    }
}

/// What a daemon whose volume was detached at the control plane has done
/// about it.
#[derive(Debug, Default)]
struct Detached {
    /// Polls since the control plane first answered that it was detached.
    polls: u32,
    /// Was a forced DetachVolume acted on yet?
    forced: bool,
}

impl Detached {
    /// One answer that the volume is detached (`force`: forced): a stop
    /// at the first answer, at the first forced one, and every
    /// [`STOP_EVERY`] polls.
    fn stop(&mut self, v: &str, device: &Path, force: bool) {
        let now = self.polls.is_multiple_of(STOP_EVERY) || (force && !self.forced);
        if self.polls == 0 || (force && !self.forced) {
            tracing::info!(
                volume = v,
                force,
                "the control plane no longer shows this volume attached to this host (DetachVolume): stopping"
            );
        }
        self.polls = self.polls.wrapping_add(1);
        self.forced |= force;
        if now {
            stop_detached(v, device, force);
        }
    }
}

/// DetachVolume of `v` made anywhere (the aws CLI, the control plane's
/// own `keyvol volume detach`, another principal): the daemon is asked to
/// stop (SIGTERM to itself, so the main loop tries the unmount; a busy
/// device is refused there and asked again about every minute). A forced
/// DetachVolume first undoes the mounts and loop devices on `device`, as
/// the host's own `volume detach --force` does, refusing a busy one.
fn stop_detached(v: &str, device: &Path, force: bool) {
    if force {
        match crate::volume::mount::release_stack(device, false) {
            Ok(undone) if !undone.is_empty() => {
                tracing::info!(volume = v, "forced detach: {}", undone.join(", "))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(volume = v, "forced detach: {e}"),
        }
    }
    if let Err(e) = crate::sys::signal_self(libc::SIGTERM) {
        tracing::warn!("signalling the daemon to stop: {e}");
    }
}

/// ModifyVolume at the control plane grew the volume: the device grows
/// online to the recorded size (the daemon's own grow, through its control
/// socket, as a local ModifyVolume does); the filesystem is the user's to
/// grow (resize2fs). A failure is logged and tried again at the next poll.
fn grow(s: &Session, v: &str, dev: &EncryptedDevice, item: &XmlReply) {
    let Some(size) = item.text("sizeInBytes").and_then(|n| n.parse::<u64>().ok()) else {
        return;
    };
    if item.text("volumeId").as_deref() != Some(v) || size <= dev.size() {
        return;
    }
    let grown = super::service::Volumes::open(s).and_then(|vols| vols.modify(v, size));
    match grown {
        Ok(_) => tracing::info!(
            volume = v,
            size,
            "grown online to the control plane's size (ModifyVolume)"
        ),
        Err(e) => tracing::warn!(
            volume = v,
            size,
            "growing to the control plane's size: {}",
            e.message
        ),
    }
}

fn connect(s: &Session) -> ApiResult<(ControlPlaneClient, String)> {
    let cp = control_plane(s)?
        .ok_or_else(|| ApiError::internal("no control plane is configured (kms-endpoint)"))?;
    let instance = own_instance(s, &cp)?;
    Ok((cp, instance))
}

/// Takes the snapshot one request names; failures are reported to the
/// control plane (and logged), never fatal to the daemon.
fn take(
    s: &Session,
    cp: &ControlPlaneClient,
    instance: &str,
    v: &str,
    dev: &EncryptedDevice,
    item: &XmlReply,
) {
    let text = |k: &str| item.text(k).unwrap_or_default();
    let Ok(id) = text("snapshotId").parse::<SnapshotId>() else {
        return;
    };
    if text("volumeId") != v {
        return;
    }
    let parent = item.text("parentSnapshotId").filter(|p| !p.is_empty());
    let report = |status: &str, message: &str| {
        cp.ec2(
            REPORT_HOST_SNAPSHOT,
            &[
                ("InstanceId", instance),
                ("SnapshotId", id.as_str()),
                ("Status", status),
                ("Message", message),
            ],
        )
    };
    let vol: VolumeId = match v.parse() {
        Ok(vol) => vol,
        Err(_) => return,
    };
    // Incremental only from the snapshot this host's log is relative to.
    let base = log_base(s, &vol).unwrap_or(None);
    let all = parent.is_none() || base != parent;
    let chunks = match dev.cut(
        id.as_str(),
        all,
        crate::volume::service::MAX_PENDING_SNAPSHOTS,
    ) {
        Ok(c) => c,
        Err(e) => {
            let message = format!("cutting the device: {e}");
            tracing::warn!(volume = v, snapshot = %id, "{message}");
            let _ = report("failed", &message);
            return;
        }
    };
    if let Err(e) = report("cut", "") {
        tracing::warn!(volume = v, snapshot = %id, "reporting the cut: {}", e.message);
        let _ = dev.finish_cut(id.as_str(), false);
        return;
    }
    tracing::info!(
        volume = v,
        snapshot = %id,
        chunks = chunks.len(),
        full = all,
        "cut: sending the snapshot's blocks to the control plane"
    );
    match send(cp, dev, &id, chunks, parent.is_none()) {
        Ok(()) => {
            if let Err(e) = dev.finish_cut(id.as_str(), true) {
                tracing::warn!(volume = v, snapshot = %id, "ending the cut: {e}");
            } else if let Err(e) = set_log_base(s, &vol, &id) {
                tracing::warn!(volume = v, snapshot = %id, "recording the log's base: {}", e.message);
            }
            tracing::info!(volume = v, snapshot = %id, "snapshot completed at the control plane");
        }
        Err(e) => {
            let _ = dev.finish_cut(id.as_str(), false);
            tracing::warn!(volume = v, snapshot = %id, "sending the snapshot: {}", e.message);
            let _ = report("failed", &format!("{}: {}", e.code, e.message));
        }
    }
}

/// PutSnapshotBlock of every chunk of the cut (all-zero ones skipped when
/// the snapshot has no parent: they are holes already), then
/// CompleteSnapshot.
fn send(
    cp: &ControlPlaneClient,
    dev: &EncryptedDevice,
    id: &SnapshotId,
    mut chunks: Vec<u64>,
    skip_zeros: bool,
) -> ApiResult<()> {
    chunks.sort_unstable();
    let b64 = base64::engine::general_purpose::STANDARD;
    let total = chunks.len().max(1);
    let mut digests = Vec::with_capacity(chunks.len());
    for (n, chunk) in chunks.iter().enumerate() {
        let plain = dev
            .snapshot_read_plain(id.as_str(), *chunk)
            .map_err(|e| ApiError::internal(format!("reading chunk {chunk} of the cut: {e}")))?;
        if skip_zeros && plain.iter().all(|&b| b == 0) {
            continue;
        }
        let digest: [u8; 32] = Sha256::digest(&plain[..]).into();
        let headers = [
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
            ("x-amz-data-length".to_string(), plain.len().to_string()),
            ("x-amz-checksum".to_string(), b64.encode(digest)),
            ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
            ("x-amz-progress".to_string(), (n * 100 / total).to_string()),
        ];
        cp.ebs(
            "PUT",
            &format!("/snapshots/{id}/blocks/{chunk}"),
            "",
            &headers,
            &plain,
        )?;
        digests.push(digest);
    }
    let headers = [
        (
            "x-amz-changedblockscount".to_string(),
            digests.len().to_string(),
        ),
        (
            "x-amz-checksum".to_string(),
            b64.encode(linear_checksum(digests.iter().copied())),
        ),
        ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
        (
            "x-amz-checksum-aggregation-method".to_string(),
            "LINEAR".to_string(),
        ),
    ];
    cp.ebs(
        "POST",
        &format!("/snapshots/completion/{id}"),
        "",
        &headers,
        b"",
    )?;
    Ok(())
}
