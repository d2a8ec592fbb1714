//! DescribeSnapshots (one, the caller's, or those shared with the caller),
//! the SnapshotCompleted waiter, and the EBS direct API's block listings.

use super::jobs::reap;
use super::records::access_map;
use super::*;

/// DescribeSnapshots of one snapshot the caller owns or may use.
pub fn describe(s: &Session, id: &str) -> ApiResult<Value> {
    let id = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, bytes) = peek_visible(&store, s, &id)?;
    let m = reap(s, &store, m, &bytes)?;
    Ok(as_seen_by(s, &m))
}

/// A snapshot as the caller sees it: another account's snapshot shared
/// with the caller does not name its parent (which may not be shared).
fn as_seen_by(s: &Session, m: &Manifest) -> Value {
    let mut v = to_json(m);
    if m.owner_id != s.ctx.caller.account {
        if let Some(o) = v.as_object_mut() {
            o.remove("ParentSnapshotId");
        }
    }
    v
}

/// DescribeSnapshots: the caller's own snapshots in this region, or with
/// `restorable_by_self` those other accounts shared with the caller.
pub fn describe_snapshots(s: &Session, restorable_by_self: bool) -> ApiResult<Value> {
    let store = store_for(s, &s.ctx.region)?;
    let me = &s.ctx.caller.account;
    let records = access_map(s)?;
    let mut out = Vec::new();
    for id in store.list_manifests().map_err(snap_err)? {
        let Ok(bytes) = store.get_manifest(&id) else {
            continue;
        };
        let Ok(m) = Manifest::peek_unauthenticated(&bytes) else {
            continue;
        };
        let (owner, shared) = records.get(id.as_str()).cloned().unwrap_or_default().of(&m);
        if owner != m.owner_id {
            continue;
        }
        let wanted = if restorable_by_self {
            &owner != me && shared.contains(me)
        } else {
            &owner == me
        };
        if wanted {
            let m = reap(s, &store, m, &bytes)?;
            out.push(as_seen_by(s, &m));
        }
    }
    out.sort_by(|a, b| a["StartTime"].as_str().cmp(&b["StartTime"].as_str()));
    Ok(json!({ "Snapshots": out }))
}

/// A snapshot (EC2 shape) that ended in `error` as the error of the call
/// that waited for it, naming its StateMessage; any other state as is.
pub fn fail_on_error(v: Value) -> ApiResult<Value> {
    if v["State"] != "error" {
        return Ok(v);
    }
    Err(ApiError::new(
        "ResourceNotReady",
        format!(
            "Waiter SnapshotCompleted failed: snapshot {} is in state error: {}",
            v["SnapshotId"].as_str().unwrap_or("?"),
            v["StateMessage"].as_str().unwrap_or("no StateMessage")
        ),
    ))
}

/// Waits until the snapshot is completed (or fails with its StateMessage).
pub fn wait(s: &Session, id: &str, timeout: Duration) -> ApiResult<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = fail_on_error(describe(s, id)?)?;
        match v["State"].as_str() {
            Some("completed") => return Ok(v),
            _ if Instant::now() > deadline => {
                return Err(ApiError::new(
                    "ResourceNotReady",
                    format!(
                    "Waiter SnapshotCompleted failed: snapshot {id} is still pending after {} s",
                    timeout.as_secs()
                ),
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// ListSnapshotBlocks (EBS direct API).
pub fn list_blocks(s: &Session, id: &str) -> ApiResult<Value> {
    let sid = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, _) = open_verified(&store, s, &sid)?;
    let blocks: Vec<Value> = m
        .blocks
        .iter()
        .map(|(i, c)| json!({"BlockIndex": i, "BlockToken": c.to_hex()}))
        .collect();
    Ok(
        json!({"Blocks": blocks, "BlockSize": BLOCK_SIZE, "VolumeSize": m.volume_size_gib(), "VolumeSizeInBytes": m.volume_size_bytes, "SnapshotId": sid}),
    )
}

/// ListChangedBlocks (EBS direct API) between two snapshots.
pub fn list_changed_blocks(s: &Session, first: &str, second: &str) -> ApiResult<Value> {
    let a = parse_snapshot_id(first)?;
    let b = parse_snapshot_id(second)?;
    let store = store_for(s, &s.ctx.region)?;
    let (ma, _) = open_verified(&store, s, &a)?;
    let (mb, _) = open_verified(&store, s, &b)?;
    let blocks: Vec<Value> = changed_blocks(&ma, &mb)
        .into_iter()
        .map(|i| {
            let mut v = json!({"BlockIndex": i});
            if let Some(c) = ma.blocks.get(&i) {
                v["FirstBlockToken"] = json!(c.to_hex());
            }
            if let Some(c) = mb.blocks.get(&i) {
                v["SecondBlockToken"] = json!(c.to_hex());
            }
            v
        })
        .collect();
    Ok(
        json!({"ChangedBlocks": blocks, "BlockSize": BLOCK_SIZE, "VolumeSize": mb.volume_size_gib()}),
    )
}
