//! The JSON entry point: one operation name and its AWS request body in,
//! the AWS response body out. The CLI and the HTTP server both use it; the
//! operations are the rows of the table in `operation.rs`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::operation::kms_operations;
use super::{ErrorCode, Kms, KmsError, KmsResult, RequestContext};

fn parse<T: DeserializeOwned>(operation: &str, v: Value) -> KmsResult<T> {
    serde_json::from_value(v).map_err(|e| {
        KmsError::new(
            ErrorCode::SerializationException,
            format!("The request body of {operation} does not match its shape: {e}"),
        )
    })
}

fn out<T: Serialize>(r: KmsResult<T>) -> KmsResult<Value> {
    r.and_then(|v| serde_json::to_value(v).map_err(|e| KmsError::internal(e.to_string())))
}

/// Builds `Kms::call` from the rows of the operation table
/// (`operation.rs`), so that an operation is dispatched exactly when it is
/// declared there.
macro_rules! dispatch {
    ($($name:literal => $method:ident, $access:ident, $summary:literal, $members:tt;)*) => {
        impl Kms {
            /// Runs `operation` with an AWS JSON request body.
            pub fn call(&self, ctx: &RequestContext, operation: &str, request: Value) -> KmsResult<Value> {
                let request = if request.is_null() { Value::Object(Default::default()) } else { request };
                if !request.is_object() {
                    return Err(KmsError::new(ErrorCode::SerializationException, "The request body must be a JSON object."));
                }
                if let Some(tokens) = request.get("GrantTokens") {
                    super::grants::check_grant_tokens(tokens)?;
                }
                match operation {
                    $($name => out(self.$method(ctx, parse(operation, request)?)),)*
                    other => Err(KmsError::new(
                        ErrorCode::UnknownOperationException,
                        format!("Unknown operation {other}"),
                    )),
                }
            }
        }
    };
}

kms_operations!(dispatch);
