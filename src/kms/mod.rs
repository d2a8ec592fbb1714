//! The embedded KMS: keys, key states, cryptographic operations, policies,
//! grants and the audit log.

pub mod api;
pub mod asym;
pub mod audit;
mod authz;
pub mod batch;
pub mod ciphertext;
pub mod client;
mod commit;
mod dispatch;
pub mod error;
pub mod grants;
pub mod model;
pub(crate) mod op;
pub mod operation;
pub mod ops;
mod readers;
mod service;
mod state;
mod store;
pub mod usage;

pub use crate::policy::{aws_managed_ebs_policy, default_key_policy};
pub use crate::request::{Caller, PrincipalType, RequestContext};
pub use authz::validate_identity_policy;
pub use client::KmsClient;
pub use error::{ErrorCode, KmsError, KmsResult};
pub use model::EBS_ALIAS;
pub use operation::{Operation, OPERATIONS};
pub(crate) use service::user_identity;
pub use state::Kms;
