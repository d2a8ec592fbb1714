//! Snapshot operations (create, describe, share, copy, restore).

use crate::api_error::{ApiError, ApiResult};
use crate::session::Session;
use crate::volume::service::VolumeRecord;

/// Restores `snapshot` as a new volume of the caller.
pub fn restore(
    _s: &Session,
    snapshot: &str,
    _kms_key_id: Option<&str>,
    _size: Option<u64>,
    _hydrate: bool,
) -> ApiResult<VolumeRecord> {
    Err(ApiError::new(
        "InvalidSnapshot.NotFound",
        format!("The snapshot '{snapshot}' does not exist."),
    ))
}
