//! Snapshots of volumes whose data is on a volume host on another machine
//! (attached there by AttachVolume): the control plane cannot read that
//! data, so CreateSnapshot asks the host for it.
//!
//! 1. CreateSnapshot (authorized on the volume as ever) stores the pending
//!    manifest: the volume's id, key and data key (unwrapped as the
//!    caller, via EC2), its parent's blocks. The snapshot is opened as an
//!    upload of the direct APIs ([`crate::snapshot::direct`]) and a request
//!    for the host is recorded here.
//! 2. The host's attach daemon asks for requests
//!    (`KeyvolDescribeHostRequests`, about every second), cuts its device
//!    (the point in time) and says so (`KeyvolReportHostSnapshot`
//!    `Status=cut`); CreateSnapshot answers `pending` only then, or fails
//!    after [`HOST_CUT_WAIT`] with the snapshot in `error`.
//! 3. The host writes the cut's changed blocks with PutSnapshotBlock and
//!    ends with CompleteSnapshot, both signed as the host: only the
//!    registered host of the instance the volume is attached to may write
//!    to such a snapshot ([`check_writer`]). Completion names the snapshot
//!    as the volume's parent, as a snapshot made here does.
//!
//! A host that fails reports `Status=failed`: the snapshot is `error` with
//! its message. The records live in the home's database with the rest of
//! the control plane's.

use super::records::parent_of;
use super::*;
use crate::ec2::hosts::RemoteAttachment;
use crate::snapshot::direct::{self, DirectError, DirectResult};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS snapshot_host_requests (
    snapshot_id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    host_principal TEXT NOT NULL,
    parent_id TEXT,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    message TEXT,
    requested INTEGER NOT NULL
);
"#;

/// How long CreateSnapshot waits for the volume host to cut its device.
pub const HOST_CUT_WAIT: Duration = Duration::from_secs(30);
/// The variable that shortens [`HOST_CUT_WAIT`] (whole seconds, at most
/// its value), for tests of a host that does not answer.
pub const HOST_CUT_WAIT_ENV: &str = "KEYVOL_HOST_SNAPSHOT_WAIT_SECS";

fn cut_wait() -> Duration {
    std::env::var(HOST_CUT_WAIT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .filter(|d| *d <= HOST_CUT_WAIT)
        .unwrap_or(HOST_CUT_WAIT)
}

fn conn(s: &Session) -> ApiResult<crate::home::PooledConnection> {
    let c = db(s)?;
    s.home
        .ensure_schema(&c, "snapshot-host-requests", SCHEMA)
        .map_err(db_err)?;
    Ok(c)
}

/// One snapshot a volume host is asked to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRequest {
    pub snapshot_id: String,
    pub volume_id: String,
    /// The snapshot the control plane's copy of the volume's blocks comes
    /// from: the host sends every block changed since it, or all of them
    /// when it does not know its change log to be relative to it.
    pub parent_snapshot_id: Option<String>,
    pub size_bytes: u64,
}

/// CreateSnapshot of `r`, attached to the volume host of `a`: the steps
/// of the module docs. Reports the pending snapshot once the host has cut.
pub(super) fn create_on_host(
    s: &Session,
    vols: &Volumes<'_>,
    r: &VolumeRecord,
    a: &RemoteAttachment,
    opts: &CreateOptions,
    rep: &mut dyn Reporter,
) -> ApiResult<Value> {
    if opts.freeze.is_some() {
        return Err(ApiError::invalid_parameter(format!(
            "--freeze names a mountpoint on this machine, but volume {} is attached to volume host {}: freeze it there",
            r.volume_id, a.instance_id
        )));
    }
    if a.state != "attached" {
        return Err(ApiError::incorrect_state(format!(
            "Volume '{}' is still attaching to volume host {}: its daemon has not started; try again once DescribeVolumes shows it attached",
            r.volume_id, a.instance_id
        )));
    }
    let store = store_for(s, &s.ctx.region)?;
    let dek = vols.data_key(r)?;
    let mac = manifest_mac_key(&dek);
    let parent = parent_of(s, &store, &r.volume_id, &mac)?;
    let id = SnapshotId::generate();
    let mut m = super::create::pending_manifest(s, r, id.clone(), parent, &opts.description);
    // Blocks beyond a grown volume's old end are the host's to send.
    let blocks = m.block_count();
    m.blocks.retain(|i, _| *i < blocks);
    direct::start_volume_snapshot(s, store_for(s, &s.ctx.region)?, &m, &dek).map_err(api_error)?;
    drop(dek);
    conn(s)?
        .execute(
            "INSERT INTO snapshot_host_requests \
             (snapshot_id, volume_id, instance_id, host_principal, parent_id, size, state, requested) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'requested', ?7)",
            rusqlite::params![
                id.as_str(),
                r.volume_id.as_str(),
                a.instance_id,
                a.host_principal,
                m.parent_snapshot_id.as_ref().map(|p| p.to_string()),
                r.size as i64,
                s.kms.clock().now(),
            ],
        )
        .map_err(db_err)?;
    let outcome = await_cut(s, &store, &id);
    match outcome {
        Ok(()) => {
            let out = to_json(&m);
            rep.pending(&out);
            Ok(out)
        }
        Err(message) => {
            fail(s, &store, &mut m, &mac, &message)?;
            Err(ApiError::incorrect_state(message))
        }
    }
}

/// Waits until the host reports the cut of `id`: `Err` with the reason
/// when it reported a failure or did not answer in time.
fn await_cut(s: &Session, store: &ChunkStore, id: &SnapshotId) -> Result<(), String> {
    let wait = cut_wait();
    let until = Instant::now() + wait;
    loop {
        let row: Option<(String, Option<String>, String)> = conn(s)
            .map_err(|e| e.message.clone())?
            .query_row(
                "SELECT state, message, instance_id FROM snapshot_host_requests WHERE snapshot_id = ?1",
                [id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        let Some((state, message, instance)) = row else {
            return ended_request(s, store, id);
        };
        match state.as_str() {
            "cut" => return Ok(()),
            "failed" => {
                return Err(format!(
                    "volume host {instance} could not take snapshot {id}: {}",
                    message.unwrap_or_default()
                ))
            }
            _ if Instant::now() >= until => {
                return Err(format!(
                    "volume host {instance} did not take snapshot {id} within {} s: is the attach daemon there running, and does it reach the control plane?",
                    wait.as_secs()
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What a request that is gone while CreateSnapshot waited for its cut
/// means: a host quick enough cuts, sends and completes a small snapshot
/// between two looks (completing forgets the request), so its verified
/// manifest says whether it was cut; otherwise it was withdrawn (deleted,
/// or its volume detached).
fn ended_request(s: &Session, store: &ChunkStore, id: &SnapshotId) -> Result<(), String> {
    match open_verified(store, s, id) {
        Ok((m, _)) if m.state == SnapshotState::Completed => Ok(()),
        Ok((m, _)) if m.state == SnapshotState::Error => Err(format!(
            "snapshot {id} failed: {}",
            m.state_message.unwrap_or_default()
        )),
        _ => Err(format!("the request of snapshot {id} was withdrawn")),
    }
}

/// Ends snapshot `m` in `error` with `message`: its manifest, its upload
/// and the host's request.
fn fail(
    s: &Session,
    store: &ChunkStore,
    m: &mut Manifest,
    mac: &crate::secret::Key256,
    message: &str,
) -> ApiResult<()> {
    m.state = SnapshotState::Error;
    m.state_message = Some(message.to_string());
    put(store, m, mac)?;
    direct::forget(s, &m.snapshot_id).map_err(api_error)?;
    forget(s, &m.snapshot_id)
}

fn api_error(e: DirectError) -> ApiError {
    ApiError::new(e.code, e.message)
}

/// The requests not yet cut for volumes attached to `instance`, whose
/// registered host is `principal`.
pub fn requests_for(s: &Session, instance: &str, principal: &str) -> ApiResult<Vec<HostRequest>> {
    let c = conn(s)?;
    let mut st = c
        .prepare_cached(
            "SELECT snapshot_id, volume_id, parent_id, size FROM snapshot_host_requests \
             WHERE instance_id = ?1 AND host_principal = ?2 AND state = 'requested' ORDER BY requested",
        )
        .map_err(db_err)?;
    let rows = st
        .query_map([instance, principal], |r| {
            Ok(HostRequest {
                snapshot_id: r.get(0)?,
                volume_id: r.get(1)?,
                parent_snapshot_id: r.get(2)?,
                size_bytes: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })
        .map_err(db_err)?;
    rows.collect::<Result<_, _>>().map_err(db_err)
}

/// The host's report on request `id`: cut, or failed with `message`.
/// Refused unless the request is the host's own and still open (a cut
/// only while the request waits, a failure until completion).
pub fn report(s: &Session, id: &str, principal: &str, cut: bool, message: &str) -> ApiResult<()> {
    let sid = parse_snapshot_id(id)?;
    let row: Option<(String, String)> = conn(s)?
        .query_row(
            "SELECT host_principal, state FROM snapshot_host_requests WHERE snapshot_id = ?1",
            [sid.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err)?;
    let state = match row {
        Some((p, state)) if p == principal => state,
        _ => {
            return Err(ApiError::new(
                "InvalidSnapshot.NotFound",
                format!("The snapshot '{sid}' is not a request of this volume host"),
            ))
        }
    };
    if cut {
        if state != "requested" {
            return Err(ApiError::incorrect_state(format!(
                "Snapshot {sid} is no longer waiting for its cut ({state})"
            )));
        }
        conn(s)?
            .execute(
                "UPDATE snapshot_host_requests SET state = 'cut' WHERE snapshot_id = ?1 AND state = 'requested'",
                [sid.as_str()],
            )
            .map_err(db_err)?;
        return Ok(());
    }
    let message = crate::ec2::capped(message, 512);
    if state == "requested" {
        // CreateSnapshot is still waiting: it ends the snapshot itself.
        conn(s)?
            .execute(
                "UPDATE snapshot_host_requests SET state = 'failed', message = ?2 WHERE snapshot_id = ?1",
                rusqlite::params![sid.as_str(), message],
            )
            .map_err(db_err)?;
        return Ok(());
    }
    let store = store_for(s, &s.ctx.region)?;
    let (mut m, dek) = open_verified(&store, s, &sid)?;
    if m.state != SnapshotState::Pending {
        return forget(s, &sid);
    }
    let mac = manifest_mac_key(&dek);
    drop(dek);
    fail(
        s,
        &store,
        &mut m,
        &mac,
        &format!("the volume host failed: {message}"),
    )
}

/// Ends in `error` every snapshot of `vol` its host has not completed
/// (DetachVolume: the daemon that was sending it is stopped).
pub fn end_for_volume(s: &Session, vol: &str, message: &str) -> ApiResult<()> {
    end_where(s, vol, false, message)
}

/// Ends the snapshots of `vol` whose cut its host's attach daemon already
/// made, as [`end_for_volume`] does: a new daemon of the volume (its key
/// released again) has not that cut, so they could never complete (they
/// would stay pending until the upload's timeout). Snapshots still waiting
/// for a cut stay: the new daemon takes them.
pub fn end_cut_for_volume(s: &Session, vol: &str, message: &str) -> ApiResult<()> {
    end_where(s, vol, true, message)
}

fn end_where(s: &Session, vol: &str, only_cut: bool, message: &str) -> ApiResult<()> {
    let ids: Vec<String> = {
        let c = conn(s)?;
        let mut st = c
            .prepare(if only_cut {
                "SELECT snapshot_id FROM snapshot_host_requests WHERE volume_id = ?1 AND state = 'cut'"
            } else {
                "SELECT snapshot_id FROM snapshot_host_requests WHERE volume_id = ?1"
            })
            .map_err(db_err)?;
        let rows = st
            .query_map([vol], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)?
    };
    for id in ids {
        let sid = parse_snapshot_id(&id)?;
        let store = store_for(s, &s.ctx.region)?;
        match open_verified(&store, s, &sid) {
            Ok((mut m, dek)) if m.state == SnapshotState::Pending => {
                let mac = manifest_mac_key(&dek);
                drop(dek);
                fail(s, &store, &mut m, &mac, message)?;
            }
            _ => forget(s, &sid)?,
        }
    }
    Ok(())
}

/// Refuses a block or completion of a host's snapshot from anyone but
/// that host.
pub fn check_writer(s: &Session, id: &SnapshotId) -> DirectResult<()> {
    let row: Option<(String, String)> = conn(s)
        .map_err(DirectError::from)?
        .query_row(
            "SELECT host_principal, instance_id FROM snapshot_host_requests WHERE snapshot_id = ?1",
            [id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| DirectError::internal(format!("state database: {e}")))?;
    match row {
        Some((principal, instance)) if principal != s.ctx.caller.principal_arn => {
            Err(DirectError::new(
                "AccessDeniedException",
                Some("UNAUTHORIZED_ACCOUNT"),
                format!(
                    "Snapshot {id} is a snapshot of a volume attached to volume host {instance}: only that host writes its blocks"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Forgets the host's request of `id` (completed, failed, deleted).
pub fn forget(s: &Session, id: &SnapshotId) -> ApiResult<()> {
    conn(s)?
        .execute(
            "DELETE FROM snapshot_host_requests WHERE snapshot_id = ?1",
            [id.as_str()],
        )
        .map_err(db_err)?;
    Ok(())
}

/// The snapshot the change log of `vol` in this home is relative to (a
/// volume host's own record of its last completed cut).
pub fn log_base(s: &Session, vol: &VolumeId) -> ApiResult<Option<String>> {
    db(s)?
        .query_row(
            "SELECT snapshot_id FROM snapshot_volume_log WHERE volume_id = ?1",
            [vol.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)
}

/// Records that the change log of `vol` in this home is now relative to
/// snapshot `id` (a volume host, after its cut was completed).
pub fn set_log_base(s: &Session, vol: &VolumeId, id: &SnapshotId) -> ApiResult<()> {
    super::records::set_parent(s, vol, id, &now_rfc3339())
}

/// CreateSnapshot of `vol` from a volume host whose records are at a
/// control plane on another machine (`keyvol-snap create` there): the
/// control plane's CreateSnapshot, which this host's attach daemon answers
/// with the cut. Returns the pending snapshot, or with `wait` the snapshot
/// once it is completed (an error once it failed).
pub fn create_at_control_plane(
    s: &Session,
    vol: &str,
    opts: &CreateOptions,
    wait: bool,
) -> ApiResult<Value> {
    if opts.freeze.is_some() {
        return Err(ApiError::invalid_parameter(
            "--freeze is not available on a volume host whose records are at a control plane on another machine (kms-endpoint): freeze the filesystem yourself (fsfreeze --freeze) around the snapshot",
        ));
    }
    let cp = crate::volume::remote::control_plane(s)?
        .ok_or_else(|| ApiError::internal("no control plane is configured (kms-endpoint)"))?;
    let mut p = vec![("VolumeId", vol)];
    if !opts.description.is_empty() {
        p.push(("Description", opts.description.as_str()));
    }
    let x = cp.ec2("CreateSnapshot", &p)?;
    if !wait {
        return Ok(snapshot_of(&x));
    }
    let id = x.text("snapshotId").unwrap_or_default();
    loop {
        let d = cp.ec2("DescribeSnapshots", &[("SnapshotId.1", id.as_str())])?;
        let Some(snap) = d.items("snapshotSet").into_iter().next() else {
            return Err(ApiError::new(
                "InvalidSnapshot.NotFound",
                format!("The snapshot '{id}' does not exist."),
            ));
        };
        match snap.text("status").as_deref() {
            Some("completed") => return Ok(snapshot_of(&snap)),
            Some("error") => {
                return Err(ApiError::incorrect_state(format!(
                    "snapshot {id} failed: {}",
                    snap.text("statusMessage").unwrap_or_default()
                )))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A snapshot of a CreateSnapshot or DescribeSnapshots answer, in the
/// keyvol CLI's shape.
fn snapshot_of(x: &crate::server::control_plane::XmlReply) -> Value {
    let t = |k: &str| x.text(k).unwrap_or_default();
    json!({
        "SnapshotId": t("snapshotId"),
        "VolumeId": t("volumeId"),
        "State": t("status"),
        "Progress": t("progress"),
        "StartTime": t("startTime"),
        "VolumeSize": t("volumeSize").parse::<u64>().unwrap_or(0),
        "OwnerId": t("ownerId"),
        "Encrypted": true,
        "KmsKeyId": t("kmsKeyId"),
        "Description": t("description"),
    })
}
