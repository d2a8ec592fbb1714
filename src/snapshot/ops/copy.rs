//! CopySnapshot: checks of the destination key, the new snapshot's data
//! key (reused from an earlier copy of the lineage under the same key) and
//! manifest, and its chunks re-encrypted by the engine.

use super::jobs::{end_job, record_job};
use super::*;
use crate::snapshot::engine::{reencrypt, CopySource};

/// The StateMessage of a copy whose source key the caller cannot use (EC2's).
pub const KEY_NOT_ACCESSIBLE: &str = "Given key ID is not accessible";

/// CopySnapshot, run by the destination account in the session's region:
/// re-encrypts every chunk under a new data key wrapped by the destination
/// key. Refusals (unknown or unshared snapshot, a key of another region)
/// are errors; a source key the caller cannot use ends the copy in state
/// `error` with EC2's StateMessage.
pub fn copy(s: &Session, id: &str, opts: &CopyOptions, rep: &mut dyn Reporter) -> ApiResult<Value> {
    let sid = parse_snapshot_id(id)?;
    let src_store = store_for(s, &opts.source_region)?;
    let (src_peek, src_bytes) = peek_visible(&src_store, s, &sid)?;
    if src_peek.state != SnapshotState::Completed {
        return Err(ApiError::incorrect_state(format!(
            "Snapshot {id} is {}; only completed snapshots can be copied",
            src_peek.state
        )));
    }
    let dest = s.ctx.region.clone();
    let dctx = ctx_in(s, &dest);
    let kms = s.kms_client()?;
    let key = opts.kms_key_id.as_deref().unwrap_or(crate::kms::EBS_ALIAS);
    if let Some(r) = key.strip_prefix("arn:").and_then(|a| a.split(':').nth(2)) {
        if r != dest.as_str() {
            return Err(ApiError::invalid_parameter(format!(
                "KMS key {key} is in region {r}; a copy into {dest} needs a key of {dest}"
            )));
        }
    }
    let md = kms.describe_key(&dctx, key)?;
    let arn = md.arn.clone();
    if md.region() != Some(dest.as_str()) {
        return Err(ApiError::invalid_parameter(format!(
            "KMS key {arn} is not a key of {dest}; a copy into {dest} needs a key of {dest}"
        )));
    }
    if md.key_spec != "SYMMETRIC_DEFAULT" {
        return Err(ApiError::invalid_parameter(format!(
            "KMS key {arn} is not a symmetric encryption key"
        )));
    }
    let store = store_for(s, &dest)?;
    let new_id = SnapshotId::generate();
    let context: BTreeMap<String, String> = [("aws:ebs:id".to_string(), new_id.to_string())].into();
    // An earlier copy of this lineage under the same key: reuse its data key
    // and its chunks of unchanged blocks.
    let prev = previous_copy(s, &store, &src_peek, &arn);
    let (dek, wrapped, prev) = match prev.and_then(|p| dek_of(s, &p).ok().map(|d| (p, d))) {
        Some((p, d)) => {
            let held = DataKey::from_volume_key(&d);
            let w = kms.encrypt_data_key(&dctx, &arn, &held, &context)?;
            (d, w.0, Some(p))
        }
        None => {
            let (w, k) = kms.generate_data_key(&dctx, &arn, 64, &context)?;
            (k.volume_key(&new_id.to_string())?, w.0, None)
        }
    };
    let mac = manifest_mac_key(&dek);
    let mut m = Manifest {
        snapshot_id: new_id.clone(),
        volume_id: src_peek.volume_id.clone(),
        volume_size_bytes: src_peek.volume_size_bytes,
        block_size: BLOCK_SIZE,
        parent_snapshot_id: prev.as_ref().map(|p| p.snapshot_id.clone()),
        lineage_id: src_peek.lineage_id.clone(),
        source_snapshot_id: Some(sid.clone()),
        source_region: Some(opts.source_region.clone()),
        owner_id: s.ctx.caller.account.clone(),
        region: dest.clone(),
        kms_key_id: arn.clone(),
        encrypted_data_key: wrapped,
        encryption_context: context,
        description: opts.description.clone().unwrap_or_else(|| {
            format!("Copied for DestinationSnapshot {new_id} from SourceSnapshot {sid}")
        }),
        start_time: now_rfc3339(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        create_volume_permissions: BTreeSet::new(),
        blocks: BTreeMap::new(),
    };
    record_job(s, &new_id)?;
    record_snapshot(s, &m)?;
    put(&store, &m, &mac)?;
    rep.pending(&to_json(&m));
    // A source key the caller cannot use fails the copy with EC2's
    // StateMessage; anything else with what failed.
    let result = match dek_of(s, &src_peek) {
        Err(_) => Err(KEY_NOT_ACCESSIBLE.to_string()),
        Ok(src_dek) => (|| -> ApiResult<()> {
            let src = Manifest::open(&src_bytes, &manifest_mac_key(&src_dek)).map_err(snap_err)?;
            let src_cipher = SectorCipher::new(&src_dek).map_err(vol_err)?;
            let dst_cipher = SectorCipher::new(&dek).map_err(vol_err)?;
            // Unchanged blocks since the previous copy's source keep their chunk.
            let prev_src = prev.as_ref().and_then(|p| {
                let sid = p.source_snapshot_id.as_ref()?;
                let st = store_for(s, p.source_region.as_ref()?).ok()?;
                let bytes = st.get_manifest(sid).ok()?;
                Manifest::open(&bytes, &manifest_mac_key(&src_dek)).ok()
            });
            let mut todo: Vec<(u64, ChunkRef)> = Vec::new();
            for (i, c) in &src.blocks {
                let reused = prev_src
                    .as_ref()
                    .filter(|ps| ps.blocks.get(i) == Some(c))
                    .and_then(|_| prev.as_ref()?.blocks.get(i));
                match reused {
                    Some(r) => {
                        m.blocks.insert(*i, *r);
                    }
                    None => todo.push((*i, *c)),
                }
            }
            let from = CopySource {
                store: &src_store,
                id: &sid,
                cipher: &src_cipher,
            };
            reencrypt(&from, &store, &dst_cipher, &todo, &mut m, &mac, rep)?;
            check_present(&store, &m)
        })()
        .map_err(|e| e.message),
    };
    match result {
        Ok(()) => {
            m.state = SnapshotState::Completed;
            m.progress = 100;
        }
        Err(e) => {
            m.state = SnapshotState::Error;
            m.blocks.clear();
            m.state_message = Some(e);
        }
    }
    put(&store, &m, &mac)?;
    end_job(s, &new_id)?;
    Ok(to_json(&m))
}

/// The newest completed copy of `src`'s lineage under `arn` owned by the
/// caller in `store`, if any.
fn previous_copy(s: &Session, store: &ChunkStore, src: &Manifest, arn: &str) -> Option<Manifest> {
    let mut best: Option<Manifest> = None;
    for id in store.list_manifests().ok()? {
        let Ok(bytes) = store.get_manifest(&id) else {
            continue;
        };
        let Ok(m) = Manifest::peek_unauthenticated(&bytes) else {
            continue;
        };
        if m.owner_id == s.ctx.caller.account
            && m.lineage_id == src.lineage_id
            && m.kms_key_id == arn
            && m.state == SnapshotState::Completed
            && m.source_snapshot_id.is_some()
            && m.source_snapshot_id.as_ref() != Some(&src.snapshot_id)
            && best.as_ref().is_none_or(|b| b.start_time < m.start_time)
        {
            best = Some(m);
        }
    }
    // Authenticate the candidate before trusting its block map.
    let m = best?;
    let bytes = store.get_manifest(&m.snapshot_id).ok()?;
    let dek = dek_of(s, &m).ok()?;
    Manifest::open(&bytes, &manifest_mac_key(&dek)).ok()
}
