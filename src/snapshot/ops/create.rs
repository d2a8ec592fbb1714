//! CreateSnapshot: cut the volume (opened here when detached, else over
//! the attach daemon's control socket), store the cut's chunks through the
//! pipeline, complete the manifest and name it the volume's parent.

use super::jobs::{end_job, record_job};
use super::records::{forget_snapshot, parent_of, set_parent};
use super::*;
use crate::snapshot::engine::{is_zero, progress_of, PENDING_PUT_EVERY};
use crate::volume::control::ControlClient;
use crate::volume::EncryptedDevice;

/// How a snapshot reads the volume: the device opened here (volume
/// detached, its lock held), or the attach daemon's control socket.
enum Transport {
    Direct {
        device: Box<EncryptedDevice>,
        _lock: std::fs::File,
    },
    Daemon(ControlClient),
}

/// What one pipeline worker reads a cut's chunks through: the device opened
/// here (shared by the workers), or a control connection of its own (the
/// daemon serves each connection on a thread of its own; the cut stays
/// with the connection that made it).
enum CutReader<'a> {
    Device(&'a EncryptedDevice),
    Daemon(ControlClient),
}

impl CutReader<'_> {
    /// The ciphertext of chunk `chunk` at the cut of `id`, into `buf`.
    fn read_into(&mut self, id: &SnapshotId, chunk: u64, buf: &mut AlignedBuf) -> ApiResult<()> {
        match self {
            CutReader::Device(device) => {
                let b = device.snapshot_read(id.as_str(), chunk).map_err(vol_err)?;
                if b.len() > buf.capacity() {
                    return Err(ApiError::internal("the device read an oversized chunk"));
                }
                buf.set_len(b.len());
                buf.copy_from_slice(&b);
                Ok(())
            }
            CutReader::Daemon(c) => c.read_into(id, chunk, buf),
        }
    }
}

impl Transport {
    fn cut(&mut self, id: &SnapshotId, all: bool) -> ApiResult<Vec<u64>> {
        match self {
            Transport::Direct { device, .. } => device
                .cut(
                    id.as_str(),
                    all,
                    crate::volume::service::MAX_PENDING_SNAPSHOTS,
                )
                .map_err(vol_err),
            Transport::Daemon(c) => c.cut(id, all),
        }
    }

    /// A reader of this cut for one pipeline worker.
    fn reader(&self) -> ApiResult<CutReader<'_>> {
        match self {
            Transport::Direct { device, .. } => Ok(CutReader::Device(device)),
            Transport::Daemon(c) => Ok(CutReader::Daemon(ControlClient::connect(c.path())?)),
        }
    }

    fn finish(&mut self, id: &SnapshotId, ok: bool) -> ApiResult<()> {
        match self {
            Transport::Direct { device, .. } => {
                device.finish_cut(id.as_str(), ok).map_err(vol_err)?;
                device.close().map_err(vol_err)
            }
            Transport::Daemon(c) => c.finish(id, ok),
        }
    }
}

/// CreateSnapshot: cuts the volume at once (point in time), stores the
/// pending manifest, then stores every changed chunk and completes.
/// Returns the final snapshot; a failure leaves it in state `error`.
pub fn create(
    s: &Session,
    vol: &str,
    opts: &CreateOptions,
    rep: &mut dyn Reporter,
) -> ApiResult<Value> {
    let vols = Volumes::open(s)?.with_snapshot_source(SNAPSHOT_SOURCE);
    let r = vols.get(vol)?;
    if vols.remote()? {
        let out = super::host::create_at_control_plane(s, r.volume_id.as_str(), opts, true)?;
        rep.pending(&out);
        return Ok(out);
    }
    let remote = crate::ec2::hosts::RemoteAttachments::open(s)?;
    if let Some(a) = remote.get(r.volume_id.as_str())? {
        return super::host::create_on_host(s, &vols, &r, &a, opts, rep);
    }
    crate::ec2::hosts::check_data_here(s, r.volume_id.as_str())?;
    // Before anything else: only this volume's own mountpoint is frozen.
    let freeze_dir = match &opts.freeze {
        Some(dir) => Some(crate::snapshot::freeze::volume_mountpoint(&vols, &r, dir)?),
        None => None,
    };
    let store = store_for(s, &s.ctx.region)?;
    let dek = vols.data_key(&r)?;
    let mac = manifest_mac_key(&dek);
    drop(dek);
    let parent = parent_of(s, &store, &r.volume_id, &mac)?;
    let id = SnapshotId::generate();
    let mut transport = match vols.lock_detached(&r) {
        Some(lock) => Transport::Direct {
            device: Box::new(vols.open_device(&r)?),
            _lock: lock,
        },
        None => Transport::Daemon(ControlClient::connect(&vols.control_path(&r.volume_id))?),
    };
    let frozen = match &freeze_dir {
        Some(dir) => Some(crate::snapshot::freeze::Frozen::freeze(dir)?),
        None => None,
    };
    let cut = transport.cut(&id, parent.is_none());
    let thawed = frozen
        .map(crate::snapshot::freeze::Frozen::thaw)
        .transpose();
    let chunks = cut?;
    thawed?;
    let mut m = pending_manifest(s, &r, id.clone(), parent, &opts.description);
    // Blocks beyond a grown volume's old end stay as they are; the cut's
    // chunks are replaced below.
    record_job(s, &id)?;
    if let Err(e) = record_snapshot(s, &m).and_then(|()| put(&store, &m, &mac)) {
        let _ = transport.finish(&id, false);
        let _ = end_job(s, &id);
        let _ = forget_snapshot(s, &id);
        return Err(e);
    }
    rep.pending(&to_json(&m));
    let result = upload(&store, &transport, &mut m, &chunks, &mac, rep);
    let result = result.and_then(|()| check_present(&store, &m));
    let out = match result {
        Ok(()) => {
            m.state = SnapshotState::Completed;
            m.progress = 100;
            put(&store, &m, &mac)?;
            // The volume's log names this snapshot as the parent before the
            // change bits it captured are cleared: a crash in between
            // leaves bits set (read again next time), never bits cleared
            // against an older parent (changes lost from the lineage).
            set_parent(s, &r.volume_id, &id, &m.start_time)?;
            transport.finish(&id, true)?;
            Ok(to_json(&m))
        }
        Err(e) => {
            m.state = SnapshotState::Error;
            m.state_message = Some(e.message.clone());
            let _ = put(&store, &m, &mac);
            let _ = transport.finish(&id, false);
            Err(ApiError::new(
                &e.code,
                format!("snapshot {id} failed: {}", e.message),
            ))
        }
    };
    end_job(s, &id)?;
    out
}

/// The pending manifest of snapshot `id` of volume `r`: the volume's id,
/// key and data key, its `parent`'s blocks (a grown volume's blocks beyond
/// the old end are the cut's to add).
pub(super) fn pending_manifest(
    s: &Session,
    r: &VolumeRecord,
    id: SnapshotId,
    parent: Option<Manifest>,
    description: &str,
) -> Manifest {
    Manifest {
        snapshot_id: id,
        volume_id: r.volume_id.clone(),
        volume_size_bytes: r.size,
        block_size: BLOCK_SIZE,
        parent_snapshot_id: parent.as_ref().map(|p| p.snapshot_id.clone()),
        lineage_id: r.volume_id.to_string(),
        source_snapshot_id: None,
        source_region: None,
        owner_id: s.ctx.caller.account.clone(),
        region: s.ctx.region.clone(),
        kms_key_id: r.kms_key_arn.clone(),
        encrypted_data_key: r.encrypted_data_key.clone(),
        encryption_context: [("aws:ebs:id".to_string(), r.volume_id.to_string())].into(),
        description: description.to_string(),
        start_time: now_rfc3339(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        create_volume_permissions: BTreeSet::new(),
        blocks: parent.map(|p| p.blocks).unwrap_or_default(),
    }
}

/// Stores the cut's `chunks` through the pipeline: each worker reads a
/// chunk over its own reader, names it (SHA-256) and stages it in a
/// [`ChunkBatch`](crate::snapshot::store::ChunkBatch); this thread records
/// each stored chunk in the manifest and, every [`PENDING_PUT_EVERY`]
/// chunks, commits the batch and then re-stores the pending manifest, so
/// the pending manifest names only chunks already durable (the GC
/// contract). Returns once every chunk is durable.
fn upload(
    store: &ChunkStore,
    transport: &Transport,
    m: &mut Manifest,
    chunks: &[u64],
    mac: &crate::secret::Key256,
    rep: &mut dyn Reporter,
) -> ApiResult<()> {
    let total = chunks.len() as u64;
    let mut done = 0u64;
    let mut since_put = 0usize;
    let id = m.snapshot_id.clone();
    let batch = store.batch();
    crate::pipeline::run(
        chunks,
        crate::pipeline::STORE_WORKERS,
        || Ok((transport.reader()?, AlignedBuf::new(CHUNK_SIZE as usize))),
        |(reader, buf), &c| {
            reader.read_into(&id, c, buf)?;
            if is_zero(buf) {
                return Ok(None);
            }
            batch.put(buf).map(Some).map_err(snap_err)
        },
        |&c, stored| {
            match stored {
                Some(r) => m.blocks.insert(c, r),
                None => m.blocks.remove(&c),
            };
            done += 1;
            since_put += 1;
            rep.progress("snapshot", done, total);
            if since_put >= PENDING_PUT_EVERY {
                m.progress = progress_of(done, total);
                batch.commit().map_err(snap_err)?;
                put(store, m, mac)?;
                since_put = 0;
            }
            Ok(())
        },
    )?;
    batch.commit().map_err(snap_err)
}
