//! keyvol: EBS-style encrypted volumes with an embedded, AWS KMS-compatible
//! key management service.

pub mod ids;
pub mod secret;
pub mod kms;
pub mod volume;
pub mod fuse;
