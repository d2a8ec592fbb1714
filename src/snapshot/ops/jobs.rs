//! Snapshot job tracking: which process runs a pending snapshot (create,
//! copy), so that one whose process died is marked `error` (and a direct-API
//! upload past its Timeout ends) instead of staying pending forever.

use super::*;

pub(super) fn record_job(s: &Session, id: &SnapshotId) -> ApiResult<()> {
    db(s)?
        .execute(
            "INSERT OR REPLACE INTO snapshot_jobs (snapshot_id, pid) VALUES (?1, ?2)",
            rusqlite::params![id.as_str(), std::process::id() as i64],
        )
        .map_err(db_err)?;
    Ok(())
}

pub(super) fn end_job(s: &Session, id: &SnapshotId) -> ApiResult<()> {
    db(s)?
        .execute(
            "DELETE FROM snapshot_jobs WHERE snapshot_id = ?1",
            [id.as_str()],
        )
        .map_err(db_err)?;
    Ok(())
}

fn pid_alive(pid: i64) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for the process.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A pending snapshot of the caller whose job process died is marked
/// `error` (cleanup after a crash); others are returned unchanged.
pub(super) fn reap(
    s: &Session,
    store: &ChunkStore,
    m: Manifest,
    bytes: &[u8],
) -> ApiResult<Manifest> {
    if m.state != SnapshotState::Pending || m.owner_id != s.ctx.caller.account {
        return Ok(m);
    }
    // A direct-API upload whose Timeout passed ends in error here.
    if crate::snapshot::direct::ended_by_timeout(s, &m.snapshot_id)? {
        let bytes = store.get_manifest(&m.snapshot_id).map_err(snap_err)?;
        return Manifest::peek_unauthenticated(&bytes).map_err(snap_err);
    }
    let pid: Option<i64> = db(s)?
        .query_row(
            "SELECT pid FROM snapshot_jobs WHERE snapshot_id = ?1",
            [m.snapshot_id.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    match pid {
        Some(p) if !pid_alive(p) => {
            let dek = dek_of(s, &m)?;
            let mac = manifest_mac_key(&dek);
            let mut m = Manifest::open(bytes, &mac).map_err(snap_err)?;
            m.state = SnapshotState::Error;
            m.state_message = Some(
                "the process that made this snapshot stopped before it completed; delete it and create a new one"
                    .into(),
            );
            put(store, &m, &mac)?;
            end_job(s, &m.snapshot_id)?;
            Ok(m)
        }
        _ => Ok(m),
    }
}
