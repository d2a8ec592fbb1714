//! keyvol: EBS-style encrypted volumes with an embedded, AWS KMS-compatible
//! key management service.

pub mod api_error;
pub mod aws_config;
pub mod background;
pub mod cli_input;
pub mod cli_shorthand;
pub mod clidocs;
pub mod clock;
pub mod config;
pub mod ebs;
pub mod ec2;
pub mod envelope;
pub mod fuse;
pub mod home;
pub mod iam;
pub mod ids;
pub mod kms;
pub mod logging;
pub mod output;
pub mod output_text;
pub mod pipeline;
pub mod policy;
pub mod request;
pub mod secret;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod sys;
pub mod telemetry;
pub mod validate;
pub mod volume;
