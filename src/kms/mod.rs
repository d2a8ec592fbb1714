//! The embedded KMS: keys, key states, cryptographic operations, policies,
//! grants and the audit log.

pub mod asym;
pub mod error;

pub use error::{ErrorCode, KmsError, KmsResult};
pub mod context;

pub use context::{Caller, PrincipalType, RequestContext};
