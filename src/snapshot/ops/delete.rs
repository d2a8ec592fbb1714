//! DeleteSnapshot: the manifest first, then the chunks no other snapshot
//! uses; refused while a volume restored from the snapshot still hydrates.

use super::jobs::reap;
use super::records::forget_snapshot;
use super::*;
use crate::snapshot::engine::free_unreferenced;

/// DeleteSnapshot: removes the manifest, then frees the chunks no other
/// snapshot uses. Refused while a volume restored from it still hydrates.
pub fn delete(s: &Session, id: &str) -> ApiResult<Value> {
    let id = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, bytes) = peek_visible(&store, s, &id)?;
    if m.owner_id != s.ctx.caller.account {
        return Err(ApiError::new(
            "UnauthorizedOperation",
            format!(
                "You are not authorized to delete snapshot {id}: it belongs to account {}",
                m.owner_id
            ),
        ));
    }
    let m = reap(s, &store, m, &bytes)?;
    let upload =
        crate::snapshot::direct::is_upload(s, &id).map_err(|e| ApiError::internal(e.message))?;
    if m.state == SnapshotState::Pending && !upload {
        return Err(ApiError::incorrect_state(format!(
            "Snapshot {id} is still pending; wait for it (keyvol-snap wait {id}) before deleting it"
        )));
    }
    // Opening the volumes first creates their table in a fresh home.
    let vols = Volumes::open(s)?.with_snapshot_source(SNAPSHOT_SOURCE);
    let users: Vec<String> = {
        let conn = db(s)?;
        let mut st = conn
            .prepare("SELECT volume_id FROM volumes WHERE snapshot_id = ?1")
            .map_err(db_err)?;
        let rows = st
            .query_map([id.as_str()], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        rows.filter_map(Result::ok).collect()
    };
    for v in users {
        if let Ok(vid) = v.parse::<VolumeId>() {
            let p = vols.hydration_path(&vid);
            if p.exists() && HydrationMap::open(&p).is_ok_and(|h| !h.pending_chunks().is_empty()) {
                return Err(ApiError::new(
                    "InvalidSnapshot.InUse",
                    format!("The snapshot {id} is currently in use by {v}, which is still being hydrated from it; attach it and hydrate it (or delete it) first"),
                ));
            }
        }
    }
    store.delete_manifest(&id).map_err(snap_err)?;
    forget_snapshot(s, &id)?;
    if upload {
        // An abandoned upload: its recorded blocks go with it.
        crate::snapshot::direct::forget(s, &id).map_err(|e| ApiError::internal(e.message))?;
        // A volume host's snapshot: its host is not asked for it any more.
        super::host::forget(s, &id)?;
    }
    crate::snapshot::direct::forget_readers(s, &id);
    let freed = free_unreferenced(&store, &m)?;
    crate::snapshot::direct::forget_checksums(s, &freed)
        .map_err(|e| ApiError::internal(e.message))?;
    // Also sweep chunks left unreferenced earlier (past the grace period:
    // deletes during a pending snapshot, failed copies, crashed writers).
    // Best effort: the snapshot is deleted whatever the sweep finds.
    let _ = store.garbage_collect();
    Ok(Value::Null)
}
