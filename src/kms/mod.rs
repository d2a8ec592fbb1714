//! The embedded KMS: keys, key states, cryptographic operations, policies,
//! grants and the audit log.

pub mod api;
pub mod asym;
pub mod audit;
mod authz;
pub mod ciphertext;
pub mod client;
pub mod context;
mod dispatch;
pub mod error;
pub mod grants;
pub mod model;
mod ops;
mod ops_absent;
pub mod ops_asym;
pub mod ops_import;
pub mod policy;
mod service;
mod store;
pub mod usage;

pub use authz::validate_identity_policy;
pub use client::KmsClient;
pub use context::{Caller, PrincipalType, RequestContext};
pub use dispatch::OPERATIONS;
pub use error::{ErrorCode, KmsError, KmsResult};
pub use ops::EBS_ALIAS;
pub use policy::{aws_managed_ebs_policy, default_key_policy};
pub(crate) use service::user_identity;
pub use service::Kms;
