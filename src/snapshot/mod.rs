//! Snapshots: manifests, the content-addressed chunk store (local directory
//! or S3-compatible), and the operations built on them.

pub mod direct;
pub mod error;
pub mod freeze;
pub mod manifest;
pub mod store;

pub use error::SnapshotError;
pub use manifest::{
    changed_blocks, manifest_mac_key, ChunkRef, Manifest, SnapshotState, BLOCK_SIZE,
};
pub use store::{ChunkStore, GcReport, StoreConfig, StoreUsage, TransferStats};
pub mod ops;
