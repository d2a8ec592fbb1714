//! The operations of the KMS as the table in `operation.rs` declares them:
//! the typed methods of `Kms` (each runs its body from `ops/` through
//! `Kms::run`: one transaction, one authorization point, one audit record,
//! after the work the row prepares outside the transaction) and
//! `Kms::call`, the JSON entry point the CLI and the HTTP server use: one
//! operation name and its AWS request body in, the AWS response body out.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::api::*;
use super::operation::kms_operations;
use super::ops::asym::*;
use super::ops::import::{
    pregenerate_wrapping_key, DeleteImportedKeyMaterialRequest, GetParametersForImportRequest,
    GetParametersForImportResponse, ImportKeyMaterialRequest, ImportKeyMaterialResponse,
};
use super::ops::multi_region::{
    ReplicateKeyRequest, ReplicateKeyResponse, UpdatePrimaryRegionRequest,
};
use super::ops::{
    pregenerate_key, to_audit, CreateGrantRequest, CustomKeyStoreRequest, KeyOnlyRequest,
    ListGrantsRequest, ListRetirableGrantsRequest, RetireGrantRequest, RevokeGrantRequest,
};
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

/// One typed operation: its body run by `Kms::run`, after the work it
/// prepares outside the transaction, if any.
macro_rules! run_operation {
    ($kms:expr, $ctx:expr, $name:literal, $req:ident, $body:ident) => {
        $kms.run($ctx, $name, to_audit(&$req), |op| $kms.$body(op, &$req))
    };
    ($kms:expr, $ctx:expr, $name:literal, $req:ident, $body:ident, $prepare:ident) => {{
        let mut prepared = $prepare(&$req);
        $kms.run($ctx, $name, to_audit(&$req), |op| {
            $kms.$body(op, &$req, &mut prepared)
        })
    }};
}

/// Builds the typed methods of `Kms` and `Kms::call` from the rows of the
/// operation table (`operation.rs`), so that an operation is served exactly
/// as it is declared there.
macro_rules! dispatch {
    ($($name:literal => $method:ident($req:ty) -> $resp:ty, $body:ident $(prepared_by $prepare:ident)?, $access:ident, $summary:literal, $members:tt;)*) => {
        impl Kms {
            $(
                #[doc = concat!("`", $name, "`: ", $summary, ".")]
                pub fn $method(&self, ctx: &RequestContext, req: $req) -> KmsResult<$resp> {
                    run_operation!(self, ctx, $name, req, $body $(, $prepare)?)
                }
            )*

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
