//! Volumes: the sector cipher, the encrypted block device, change tracking
//! and mount orchestration.

pub mod agent;
pub mod blockmath;
pub mod boot;
pub mod changes;
pub mod control;
pub mod device;
pub mod error;
pub mod mount;
pub mod mounting;
pub mod remote;
pub mod remote_restore;
pub mod remote_snapshot;
pub mod stash;
pub mod xts;

pub use changes::{ChangeLog, CHUNK_SIZE};
pub use device::EncryptedDevice;
pub use error::VolumeError;
pub use xts::{SectorCipher, SECTOR_SIZE};
pub mod service;
