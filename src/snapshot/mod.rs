//! Snapshots: manifests, the content-addressed chunk store (local directory
//! or S3-compatible), the engine's chunk work on them (`engine`), and the
//! control plane's operations built on them (`ops`, `direct`), and the
//! snapshot commands of a volume host whose records are at a control plane
//! on another machine (`remote`).

pub mod direct;
mod engine;
pub mod error;
pub mod freeze;
pub mod manifest;
pub mod remote;
pub mod store;

pub use error::SnapshotError;
pub use manifest::{
    changed_blocks, manifest_mac_key, ChunkRef, Manifest, SnapshotState, BLOCK_SIZE,
};
pub use store::{ChunkStore, GcReport, StoreConfig, StoreUsage, TransferStats};
pub mod ops;
