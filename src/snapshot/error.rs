//! The one error type of the snapshot storage layer: configuration, store
//! I/O, and corruption (chunks and manifests), each its own variant.

use crate::ids::SnapshotId;

use super::manifest::ChunkRef;

/// Everything that can go wrong storing or reading snapshot data.
///
/// Corruption (`ChunkCorrupt`, `ManifestInvalid`, `ManifestAuthentication`,
/// `ManifestMismatch`) is kept apart from I/O (`Store`): the first means the
/// stored bytes are wrong, the second that the store could not be reached or
/// refused the request.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The store specification could not be parsed or the store not opened.
    #[error("invalid snapshot store '{spec}': {reason}")]
    Config { spec: String, reason: String },

    /// The object store failed an operation (network, permissions, disk).
    #[error("snapshot store {operation} of {location} failed: {source}")]
    Store {
        operation: &'static str,
        location: String,
        #[source]
        source: object_store::Error,
    },

    /// A chunk that a snapshot refers to is not in the store.
    #[error("chunk {chunk} is missing from the snapshot store")]
    ChunkMissing { chunk: ChunkRef },

    /// A chunk's bytes do not hash to its name: the stored object was altered.
    #[error("chunk {chunk} is corrupt: its content does not match its SHA-256")]
    ChunkCorrupt { chunk: ChunkRef },

    /// A chunk handed to `put_chunk` is empty or larger than a block.
    #[error("chunk of {len} bytes refused: a chunk holds 1..={max} bytes")]
    ChunkSize { len: usize, max: usize },

    /// No manifest is stored under this snapshot id.
    #[error("snapshot {snapshot_id} has no manifest in the store")]
    ManifestMissing { snapshot_id: SnapshotId },

    /// The stored manifest is not a well-formed keyvol manifest.
    #[error("manifest of {snapshot} is invalid: {reason}")]
    ManifestInvalid { snapshot: String, reason: String },

    /// The manifest's MAC does not verify: it was edited, or the key is wrong.
    #[error(
        "manifest of {snapshot} failed authentication: it was modified or the data key is wrong"
    )]
    ManifestAuthentication { snapshot: String },

    /// The manifest stored under one snapshot id describes another snapshot.
    #[error(
        "manifest stored as {expected} describes snapshot {found}: the store was tampered with"
    )]
    ManifestMismatch { expected: SnapshotId, found: String },

    /// Garbage collection stopped rather than risk deleting referenced chunks.
    #[error("garbage collection stopped, no chunk was deleted: {reason}")]
    GcBlocked { reason: String },

    /// A failure while reading one block of a snapshot; names both.
    #[error("snapshot {snapshot_id} block {block_index}: {source}")]
    Block {
        snapshot_id: SnapshotId,
        block_index: u64,
        #[source]
        source: Box<SnapshotError>,
    },

    /// The store's internal I/O runtime could not be started or failed.
    #[error("snapshot store runtime: {0}")]
    Runtime(String),
}

impl SnapshotError {
    /// Adds the snapshot id and block index to an error about one chunk, so
    /// the message says which snapshot block is affected.
    pub fn in_block(self, snapshot_id: &SnapshotId, block_index: u64) -> SnapshotError {
        SnapshotError::Block {
            snapshot_id: snapshot_id.clone(),
            block_index,
            source: Box::new(self),
        }
    }

    /// True for errors meaning the stored data is wrong or missing (as
    /// opposed to the store being unreachable or misconfigured).
    pub fn is_corruption(&self) -> bool {
        match self {
            SnapshotError::ChunkMissing { .. }
            | SnapshotError::ChunkCorrupt { .. }
            | SnapshotError::ManifestInvalid { .. }
            | SnapshotError::ManifestAuthentication { .. }
            | SnapshotError::ManifestMismatch { .. } => true,
            SnapshotError::Block { source, .. } => source.is_corruption(),
            _ => false,
        }
    }
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;
