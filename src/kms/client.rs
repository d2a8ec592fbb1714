//! The KMS as volume and snapshot code see it: the embedded KMS of the
//! home, or a remote one over the AWS KMS protocol. Both take AWS JSON
//! requests and give AWS JSON responses.

use serde_json::Value;

use super::{Kms, KmsResult, RequestContext};

pub trait KmsClient: Send + Sync {
    /// Runs `operation` as the caller of `ctx` (for a remote KMS, as the
    /// principal of the profile's access key, in `ctx`'s region).
    fn call(&self, ctx: &RequestContext, operation: &str, request: Value) -> KmsResult<Value>;

    /// Where this KMS is, for messages ("embedded" or the endpoint URL).
    fn describe(&self) -> String;
}

impl KmsClient for Kms {
    fn call(&self, ctx: &RequestContext, operation: &str, request: Value) -> KmsResult<Value> {
        Kms::call(self, ctx, operation, request)
    }

    fn describe(&self) -> String {
        format!("embedded KMS of {}", self.home().dir().display())
    }
}
