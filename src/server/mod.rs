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
//! # Volume hosts on other machines
//!
//! In AWS, only EBS calls the KMS "via EC2" (`kms:ViaService`,
//! `kms:GrantIsForAWSResource`), after an EC2 action was authorized. Here
//! too: the control plane makes those calls itself, acting as the caller
//! of the EC2 action; no request can claim them. The keyvol header that
//! once did (`x-keyvol-via-service`, [`RETIRED_VIA_SERVICE_HEADER`]) is
//! refused with `ValidationException` wherever a KMS request carries it.
//!
//! A volume host on another machine is a registered identity (`keyvol iam
//! register-volume-host`), and the control plane shows it as an EC2
//! instance (`i-` and 17 hex digits of SHA-256 over the account, region
//! and host principal ARN; DescribeInstances). AttachVolume to that
//! instance records the attachment (`attaching`) with the AttachVolume
//! caller's identity, and starts nothing on the control plane's machine.
//!
//! # keyvol extension: `KeyvolReleaseVolumeKey`
//!
//! The host's attach daemon then asks for the volume's data key with one
//! EC2 Query request, signed with SigV4 for the service `ec2` like every
//! request:
//!
//! ```text
//! POST /   Action=KeyvolReleaseVolumeKey&Version=2016-11-15
//!          &VolumeId=vol-...&InstanceId=i-...
//! -> <KeyvolReleaseVolumeKeyResponse><requestId/><volumeId/><instanceId/>
//!    <kmsKeyId/><dataKey>BASE64 (64 bytes)</dataKey></KeyvolReleaseVolumeKeyResponse>
//! ```
//!
//! The control plane answers only when all hold, else with an EC2 error
//! (`UnauthorizedOperation`, `InvalidVolume.NotFound`,
//! `IncorrectState`): the request came over TLS (`keyvol serve
//! --tls-cert/--tls-key`) or from loopback; the signer is a registered
//! volume host and `InstanceId` is its own instance; the volume (of the
//! signer's account and region) is attached or attaching to that instance
//! by an AttachVolume that was authorized. It then decrypts the wrapped
//! key itself, via EC2, acting as the AttachVolume caller (the KMS audit
//! shows `invokedBy` `ec2.amazonaws.com` and that caller), marks the
//! attachment `attached`, and records one `ec2.amazonaws.com` event
//! `KeyvolReleaseVolumeKey` without the key. DetachVolume forgets the
//! attachment, and with it the right to the key; the host's daemon, which
//! polls DescribeVolumes, stops then. AWS SDKs never send it.

pub mod client;
pub mod control_plane;
pub mod errors;
pub mod http;
pub mod service;
pub mod sigv4;
pub mod sts;
pub mod tls;

pub use client::RemoteKms;
pub use control_plane::ControlPlaneClient;
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
    /// Whether [`KmsService::call_batch`] should run this call: a cheap
    /// stateless one, which the server then queues for its batch threads
    /// instead of giving it a thread of its own.
    fn batches(&self, _operation: &str, _request: &serde_json::Value) -> bool {
        false
    }
    /// Runs `calls` in order on this thread, returning each one's outcome
    /// as [`KmsService::call`] would.
    fn call_batch(
        &self,
        calls: Vec<crate::kms::batch::Call>,
    ) -> Vec<Result<serde_json::Value, KmsError>> {
        calls
            .into_iter()
            .map(|c| self.call(&c.ctx, &c.operation, c.request))
            .collect()
    }
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
    /// The keyvol extension `KeyvolReleaseVolumeKey` (module docs) for a
    /// verified caller; `secure` says the request came over TLS or from
    /// loopback. Authorization and audit happen inside.
    fn release_volume_key(
        &self,
        _ctx: &RequestContext,
        _params: Vec<(String, String)>,
        _secure: bool,
    ) -> Result<crate::ec2::hosts::ReleasedKey, crate::api_error::ApiError> {
        Err(crate::api_error::ApiError::new(
            "InvalidAction",
            "This endpoint releases no volume keys.",
        ))
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
/// The retired keyvol header that claimed `kms:ViaService`: refused
/// (module docs).
pub const RETIRED_VIA_SERVICE_HEADER: &str = "x-keyvol-via-service";
