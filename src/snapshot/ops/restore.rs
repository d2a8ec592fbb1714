//! Restore (CreateVolume --snapshot-id): a new volume usable at once and
//! hydrated lazily from the snapshot, the KMS grant that keeps a restore
//! from another account's snapshot readable until it is hydrated, and the
//! snapshot source the volume layer hydrates through.

use super::*;
use crate::snapshot::engine::SnapshotSource;

/// Restores `snapshot` as a new volume of the caller (CreateVolume
/// --snapshot-id): usable at once, hydrated lazily.
pub fn restore(
    s: &Session,
    snapshot: &str,
    kms_key_id: Option<&str>,
    size: Option<u64>,
    hydrate: bool,
) -> ApiResult<VolumeRecord> {
    restore_with(s, snapshot, kms_key_id, size, hydrate, &mut Quiet)
}

/// [`restore`] with progress reports (for `--hydrate`).
pub fn restore_with(
    s: &Session,
    snapshot: &str,
    kms_key_id: Option<&str>,
    size: Option<u64>,
    hydrate: bool,
    rep: &mut dyn Reporter,
) -> ApiResult<VolumeRecord> {
    restore_as(
        s,
        VolumeId::generate(),
        snapshot,
        kms_key_id,
        size,
        hydrate,
        rep,
    )
}

/// [`restore_with`] as the volume `vol` (an id the control plane chose
/// and authorized).
pub fn restore_as(
    s: &Session,
    vol: VolumeId,
    snapshot: &str,
    kms_key_id: Option<&str>,
    size: Option<u64>,
    hydrate: bool,
    rep: &mut dyn Reporter,
) -> ApiResult<VolumeRecord> {
    let sid = parse_snapshot_id(snapshot)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, _) = open_verified(&store, s, &sid)?;
    if m.state != SnapshotState::Completed {
        return Err(ApiError::incorrect_state(format!(
            "Snapshot {sid} is {}; only completed snapshots can be restored",
            m.state
        )));
    }
    let size = size.unwrap_or(m.volume_size_bytes);
    if size < m.volume_size_bytes {
        return Err(ApiError::invalid_parameter(format!(
            "size {size} is smaller than snapshot {sid}'s {} bytes: give at least the snapshot's size",
            m.volume_size_bytes
        )));
    }
    check_present(&store, &m)?;
    let vols = Volumes::open(s)?.with_snapshot_source(SNAPSHOT_SOURCE);
    // As EBS: without a key, a volume from an own snapshot uses the
    // snapshot's key, one from a shared snapshot the caller's aws/ebs key;
    // the volume gets a new data key of its own either way.
    let key = match kms_key_id {
        Some(k) => k,
        None if m.owner_id == s.ctx.caller.account => m.kms_key_id.as_str(),
        None => crate::kms::EBS_ALIAS,
    };
    let (arn, wrapped) = vols.new_data_key(&vol, Some(key))?;
    let r = vols.insert(&vol, size, &arn, &wrapped, Some(sid.as_str()))?;
    let n = size.div_ceil(CHUNK_SIZE);
    let to_fetch: Vec<bool> = (0..n).map(|i| m.blocks.contains_key(&i)).collect();
    let made = HydrationMap::create(&vols.hydration_path(&vol), &to_fetch).map_err(vol_err);
    let hydrated = made.and_then(|()| {
        if !hydrate {
            return Ok(());
        }
        let _lock = vols.lock_detached(&r);
        let dev = vols.open_device(&r)?;
        dev.hydrate_all(&mut |d, t| rep.progress("restore", d, t))
            .map_err(|e| ApiError::new("SnapshotIntegrityError", e.to_string()))?;
        dev.close().map_err(vol_err)
    });
    // A volume restored from another account's snapshot must stay readable
    // until it is hydrated, even if the owner later narrows its key policy:
    // as EBS, a grant on the snapshot's key made now (via EC2, for the
    // restoring principal, on the snapshot's own encryption context) and
    // retired once nothing is left to fetch.
    let granted = hydrated.and_then(|()| {
        if m.owner_id == s.ctx.caller.account {
            return Ok(());
        }
        grant_for_restore(s, &m, &vol)?;
        if hydrate {
            retire_restore_grant(s, &vol)?;
        }
        Ok(())
    });
    if let Err(e) = granted {
        let _ = retire_restore_grant(s, &vol);
        let _ = vols.delete(vol.as_str());
        return Err(e);
    }
    Ok(r)
}

fn grant_for_restore(s: &Session, m: &Manifest, vol: &VolumeId) -> ApiResult<()> {
    let me = &s.ctx.caller.principal_arn;
    let g = s.kms_client()?.call(
        &ctx_in(s, &m.region),
        "CreateGrant",
        json!({
            "KeyId": m.kms_key_id,
            "GranteePrincipal": me,
            "RetiringPrincipal": me,
            "Operations": ["Decrypt"],
            "Constraints": {"EncryptionContextEquals": m.encryption_context},
            "Name": format!("keyvol-restore-{vol}"),
        }),
    )?;
    let id = g["GrantId"].as_str().unwrap_or_default().to_string();
    db(s)?
        .execute(
            "INSERT OR REPLACE INTO restore_grants (volume_id, region, key_arn, grant_id, restorer) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![vol.as_str(), m.region.as_str(), m.kms_key_id, id, s.ctx.to_handoff()],
        )
        .map_err(db_err)?;
    Ok(())
}

/// Retires the grant a restore of `vol` from a shared snapshot made, if
/// any (hydration finished, or the volume is deleted). The control plane
/// retires it via EC2 as the principal who restored, the grant's retiring
/// principal, whoever's call finished the hydration (the volume host that
/// reports it, or a DeleteVolume by another principal).
pub fn retire_restore_grant(s: &Session, vol: &VolumeId) -> ApiResult<()> {
    let c = db(s)?;
    let row: Option<(String, String, String, Option<String>)> = c
        .query_row(
            "SELECT region, key_arn, grant_id, restorer FROM restore_grants WHERE volume_id = ?1",
            [vol.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(db_err)?;
    let Some((region, key, grant, restorer)) = row else {
        return Ok(());
    };
    let region: Region = region
        .parse()
        .map_err(|_| ApiError::internal(format!("restore grant of {vol}: bad region")))?;
    // A grant recorded before the restorer was (an older home) is retired
    // as the caller, as then.
    let ctx = match restorer
        .as_deref()
        .map(crate::request::RequestContext::from_handoff)
    {
        Some(Some(mut r)) => {
            r.region = region.clone();
            r.via_ec2()
        }
        Some(None) => {
            return Err(ApiError::internal(format!(
                "restore grant of {vol}: the restorer's record is not readable"
            )))
        }
        None => ctx_in(s, &region),
    };
    match s
        .kms_client()?
        .call(&ctx, "RetireGrant", json!({"KeyId": key, "GrantId": grant}))
    {
        Ok(_) => {}
        // Already gone (revoked by the key's owner, or the key deleted).
        Err(e) if matches!(e.code, crate::kms::ErrorCode::NotFoundException) => {}
        Err(e) => return Err(e.into()),
    }
    c.execute(
        "DELETE FROM restore_grants WHERE volume_id = ?1",
        [vol.as_str()],
    )
    .map_err(db_err)?;
    Ok(())
}

/// The grant id of a restore still hydrating from another account's
/// snapshot, if any.
pub fn restore_grant(s: &Session, vol: &VolumeId) -> ApiResult<Option<String>> {
    db(s)?
        .query_row(
            "SELECT grant_id FROM restore_grants WHERE volume_id = ?1",
            [vol.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)
}

/// What the volume layer needs of snapshots: the source a restored volume
/// hydrates from, and the release of the restore's grant when done.
pub const SNAPSHOT_SOURCE: crate::volume::service::SourceResolver =
    crate::volume::service::SourceResolver {
        source: hydration_source,
        hydrated: |s, r| retire_restore_grant(s, &r.volume_id),
    };

/// The snapshot a restored volume hydrates from, as the device's
/// [`ChunkSource`] (authenticated manifest, snapshot data key).
pub fn hydration_source(s: &Session, r: &VolumeRecord) -> ApiResult<Arc<dyn ChunkSource>> {
    let sid = parse_snapshot_id(r.snapshot_id.as_deref().unwrap_or(""))?;
    let region: Region = r
        .region
        .parse()
        .map_err(|_| ApiError::internal(format!("volume {} has a bad region", r.volume_id)))?;
    let store = store_for(s, &region)?;
    let bytes = store.get_manifest(&sid).map_err(snap_err)?;
    let m = Manifest::peek_unauthenticated(&bytes).map_err(snap_err)?;
    let dek = dek_of(s, &m)?;
    let m = Manifest::open(&bytes, &manifest_mac_key(&dek)).map_err(snap_err)?;
    let cipher = SectorCipher::new(&dek).map_err(vol_err)?;
    Ok(Arc::new(SnapshotSource {
        store,
        id: sid,
        blocks: m.blocks,
        cipher,
    }))
}
