//! The AWS KMS JSON 1.1 HTTP API: SigV4 verification, the hyper server
//! (HTTP or HTTPS), and a signing blocking client (`RemoteKms`) for volume
//! hosts.
//!
//! The server knows the KMS only through [`KmsService`]: it authenticates a
//! request (SigV4), decodes it (`X-Amz-Target: TrentService.<Operation>`,
//! a JSON object body) and hands the operation to the service, which
//! authorizes, audits and runs it. [`service::HomeKmsService`] is that
//! service over a home's KMS and identity store (`keyvol kms serve`).
//!
//! # keyvol extension: `x-keyvol-via-service`
//!
//! In AWS, EBS calls the KMS on a user's behalf, and key policies can
//! require that with the `kms:ViaService` condition key (the AWS managed
//! key `aws/ebs` allows use only via `ec2.<region>.amazonaws.com`). A
//! keyvol volume host plays EBS's part: when it calls a remote KMS for a
//! volume or snapshot it sends
//!
//! ```text
//! x-keyvol-via-service: ec2.<region>.amazonaws.com
//! ```
//!
//! and the server sets `kms:ViaService` for that request. The header counts
//! only when it is among the request's SigV4 `SignedHeaders` (an unsigned
//! one is ignored), and the only value accepted is `ec2.<region>.amazonaws.com`
//! for the region of the signature (another value is a
//! `ValidationException`). Only identities registered as volume hosts
//! (`keyvol iam register-volume-host`) may claim it; any other signer is
//! refused with `AccessDeniedException`. The audit log then shows
//! `invokedBy` `ec2.amazonaws.com` and the host's address.
//! AWS SDKs never send it, so for them nothing changes.

pub mod client;
pub mod errors;
pub mod http;
pub mod service;
pub mod sigv4;
pub mod sts;
pub mod tls;

pub use client::RemoteKms;
pub use http::{serve, start, ServeOptions, ServerHandle};
pub use service::HomeKmsService;
pub use tls::TlsIdentity;

use crate::kms::{Caller, KmsError, RequestContext};
use crate::secret::SecretBytes;

/// The secret and the principal of one access key.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub secret_access_key: SecretBytes,
    pub caller: Caller,
    /// For temporary (STS) credentials: the session token every request
    /// must carry in `X-Amz-Security-Token`, and when it expires.
    pub session: Option<crate::iam::roles::SessionToken>,
}

/// The KMS as the HTTP server sees it.
pub trait KmsService: Send + Sync + 'static {
    /// The secret and the principal of an access key id, or None if unknown.
    fn credentials(&self, access_key_id: &str) -> Option<Credentials>;
    /// Runs one KMS operation ("Encrypt", "CreateKey", ...) whose request is
    /// the AWS JSON body (blobs base64, as the AWS API), returning the AWS
    /// JSON response. Authorization and audit happen inside.
    fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, KmsError>;
    /// Runs one EC2 action (Query-protocol parameters, Action included) for
    /// a verified caller, returning the response members by their EC2 wire
    /// names. Authorization and audit happen inside.
    fn ec2(
        &self,
        _ctx: &RequestContext,
        _params: Vec<(String, String)>,
    ) -> Result<serde_json::Value, crate::api_error::ApiError> {
        Err(crate::api_error::ApiError::new(
            "InvalidAction",
            "This endpoint serves no EC2 API.",
        ))
    }
    /// Answers one EBS direct API request of a verified caller.
    /// Authorization and audit happen inside.
    fn ebs(&self, _ctx: &RequestContext, _req: &crate::ebs::Request<'_>) -> crate::ebs::Response {
        crate::ebs::Response::error(&crate::snapshot::direct::DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            "This endpoint serves no EBS direct API.",
        ))
    }
    /// Is the caller a registered volume host (`keyvol iam
    /// register-volume-host`)? Only a volume host's KMS requests may act
    /// through EC2 with the `x-keyvol-via-service` header.
    fn is_volume_host(&self, _caller: &crate::kms::Caller) -> bool {
        false
    }
    /// STS AssumeRole for a verified caller.
    fn assume_role(
        &self,
        _ctx: &RequestContext,
        _input: &crate::iam::roles::AssumeRoleInput,
    ) -> Result<crate::iam::roles::AssumedRole, crate::iam::IamError> {
        Err(crate::iam::IamError::new(
            crate::iam::IamErrorCode::InvalidAction,
            "This endpoint issues no temporary credentials.",
        ))
    }
    /// STS GetCallerIdentity's `UserId` of a verified caller.
    fn user_id(&self, caller: &crate::kms::Caller) -> Result<String, crate::iam::IamError> {
        Ok(caller.principal_arn.clone())
    }
}

/// The `X-Amz-Target` prefix of every KMS operation.
pub const TARGET_PREFIX: &str = "TrentService.";
/// The content type of AWS JSON 1.1 requests and responses.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The keyvol extension header that claims `kms:ViaService` (module docs).
pub const VIA_SERVICE_HEADER: &str = "x-keyvol-via-service";
