//! The control plane's snapshot operations, with EC2's semantics and field
//! names: create (point-in-time, incremental), describe, list, delete,
//! wait, share, unshare, describe-attribute, copy (re-encrypting,
//! cross-account and cross-region, incremental per lineage), restore
//! (lazily hydrated), list-blocks and list-changed-blocks; one file per
//! verb family, and here what they share (options, ids, the store of a
//! region, data keys, the EC2 shape).
//!
//! The manifests in the store are the truth other hosts and accounts read;
//! the home's SQLite database (`records.rs`, `jobs.rs`) only remembers who
//! owns and may use a snapshot, which snapshot a volume's change log is
//! relative to, and which process runs a snapshot job (so a job that died
//! is marked `error` instead of staying pending forever). The chunk work is
//! the snapshot engine's (`super::engine`); a cut of an attached volume is
//! read over the attach daemon's control socket
//! ([`crate::volume::control::ControlClient`]).
//!
//! Crash consistency: a pending manifest is stored before any chunk, and
//! re-stored as chunks are added; the completed manifest is stored only
//! after every chunk it names was checked present. Delete removes the
//! manifest first and frees only chunks no other manifest names.

mod copy;
mod create;
mod delete;
mod describe;
pub mod host;
mod jobs;
mod records;
mod restore;
mod sharing;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::OptionalExtension;
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::ids::{AccountId, Region, SnapshotId, VolumeId};
use crate::kms::client::{DataKey, WrappedKey};
use crate::kms::RequestContext;
use crate::pipeline::AlignedBuf;
use crate::secret::VolumeDataKey;
use crate::session::Session;
use crate::volume::device::{ChunkSource, HydrationMap};
use crate::volume::service::{VolumeRecord, Volumes};
use crate::volume::{SectorCipher, CHUNK_SIZE};

use super::engine::{check_present, put, snap_err, vol_err};
use super::manifest::{changed_blocks, manifest_mac_key, now_rfc3339};
use super::{ChunkRef, ChunkStore, Manifest, SnapshotState, StoreConfig, BLOCK_SIZE};

pub use super::engine::{Quiet, Reporter};
pub use copy::{copy, KEY_NOT_ACCESSIBLE};
pub use create::create;
pub use delete::delete;
pub use describe::{
    describe, describe_snapshots, fail_on_error, list_blocks, list_changed_blocks, wait,
};
pub(super) use records::{
    db, db_err, open_verified, peek_visible, record_snapshot, set_parent, visible_to,
};
pub use restore::{
    hydration_source, restore, restore_as, restore_grant, restore_with, retire_restore_grant,
    SNAPSHOT_SOURCE,
};
pub use sharing::{describe_attribute, modify_permission};

/// Options of [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub description: String,
    /// Freezes this filesystem around the cut (as `fsfreeze`); it must be
    /// the mountpoint of the volume's own filesystem.
    pub freeze: Option<PathBuf>,
}

/// Options of [`copy`].
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub source_region: Region,
    pub kms_key_id: Option<String>,
    pub description: Option<String>,
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidSnapshot.NotFound",
        format!("The snapshot '{id}' does not exist."),
    )
}

/// Parses a snapshot id (`InvalidSnapshotID.Malformed` otherwise).
pub fn parse_snapshot_id(id: &str) -> ApiResult<SnapshotId> {
    id.parse().map_err(|_| {
        ApiError::new(
            "InvalidSnapshotID.Malformed",
            format!(
                "Invalid id: \"{}\" (expecting \"snap-...\")",
                id.chars().take(80).collect::<String>()
            ),
        )
    })
}

/// The configured store (setting `snapshot-store`, default
/// `<home>/snapshots`) for snapshots of `region`.
pub fn store_for(s: &Session, region: &Region) -> ApiResult<ChunkStore> {
    let spec = crate::config::get(&s.home, "snapshot-store")?;
    let cfg = match spec {
        Some(spec) => StoreConfig::parse(&spec).map_err(snap_err)?,
        None => StoreConfig::Local {
            root: s.home.dir().join("snapshots"),
        },
    };
    ChunkStore::open(&cfg, region).map_err(snap_err)
}

/// The caller acting through EC2 in `region`.
pub(super) fn ctx_in(s: &Session, region: &Region) -> RequestContext {
    let mut c = s.ctx.clone();
    c.region = region.clone();
    c.via_ec2()
}

/// Decrypts a snapshot's data key as the caller, in `region`.
pub(in crate::snapshot) fn unwrap_key(
    s: &Session,
    region: &Region,
    key_arn: &str,
    wrapped: &[u8],
    context: &BTreeMap<String, String>,
) -> ApiResult<VolumeDataKey> {
    let wrapped = WrappedKey(wrapped.to_vec());
    let key = s
        .kms_client()?
        .decrypt_data_key(&ctx_in(s, region), key_arn, &wrapped, context)?;
    Ok(key.volume_key(key_arn)?)
}

pub(super) fn dek_of(s: &Session, m: &Manifest) -> ApiResult<VolumeDataKey> {
    unwrap_key(
        s,
        &m.region,
        &m.kms_key_id,
        &m.encrypted_data_key,
        &m.encryption_context,
    )
}

/// The EC2 shape of a snapshot.
pub fn to_json(m: &Manifest) -> Value {
    let mut v = json!({
        "SnapshotId": m.snapshot_id,
        "VolumeId": m.volume_id,
        "State": m.state.to_string(),
        "Progress": format!("{}%", m.progress),
        "OwnerId": m.owner_id.as_str(),
        "KmsKeyId": m.kms_key_id,
        "Encrypted": true,
        "StartTime": m.start_time,
        "VolumeSize": m.volume_size_gib(),
        "VolumeSizeInBytes": m.volume_size_bytes,
        "Description": m.description,
        "StorageTier": "standard",
    });
    if let Some(msg) = &m.state_message {
        v["StateMessage"] = json!(msg);
    }
    if let Some(p) = &m.source_snapshot_id {
        v["SourceSnapshotId"] = json!(p);
    }
    if let Some(r) = &m.source_region {
        v["SourceRegion"] = json!(r.as_str());
    }
    if let Some(p) = &m.parent_snapshot_id {
        v["ParentSnapshotId"] = json!(p);
    }
    v
}
