//! KMS errors on the wire: the `{"__type", "message"}` JSON body, HTTP
//! status codes, and the way back from an error name to an [`ErrorCode`].

use serde_json::{json, Value};

use crate::kms::{ErrorCode, KmsError};

/// Every [`ErrorCode`], for name lookups.
pub const ALL_ERROR_CODES: &[ErrorCode] = ErrorCode::ALL;

/// The [`ErrorCode`] of an AWS error name. Accepts the bare name
/// (`NotFoundException`) and the namespaced form AWS services also send
/// (`com.amazonaws.kms#NotFoundException`), and ignores a trailing
/// `:<detail>` as the AWS SDKs do.
pub fn error_code_from_name(name: &str) -> Option<ErrorCode> {
    let name = name.rsplit('#').next().unwrap_or(name);
    let name = name.split(':').next().unwrap_or(name).trim();
    ALL_ERROR_CODES
        .iter()
        .copied()
        .find(|c| c.to_string() == name)
}

/// The HTTP status of an error response: 5xx only for faults of the service.
pub fn http_status(err: &KmsError) -> u16 {
    match err.code {
        _ if err.is_internal() => 500,
        ErrorCode::RequestEntityTooLargeException => 413,
        _ => 400,
    }
}

/// The JSON body of an error response. An error without a message (AWS's
/// InvalidCiphertextException) carries none, as AWS sends it.
pub fn error_body(err: &KmsError) -> Value {
    if err.message.is_empty() {
        return json!({ "__type": err.code.to_string() });
    }
    json!({ "__type": err.code.to_string(), "message": err.message })
}

/// The [`KmsError`] of an error response body, or `None` when the body is
/// not an AWS error document. An error name this crate does not know
/// becomes a `KMSInternalException` naming it.
pub fn error_from_body(body: &Value) -> Option<KmsError> {
    let ty = body.get("__type")?.as_str()?;
    let message = body
        .get("message")
        .or_else(|| body.get("Message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Some(match error_code_from_name(ty) {
        Some(code) => KmsError::new(code, message),
        None => KmsError::internal(format!(
            "the KMS answered with unknown error '{ty}': {message}"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_by_name() {
        for &code in ALL_ERROR_CODES {
            assert_eq!(error_code_from_name(&code.to_string()), Some(code));
            let err = KmsError::new(code, "m");
            assert_eq!(error_from_body(&error_body(&err)), Some(err));
        }
        assert_eq!(
            error_code_from_name("com.amazonaws.kms#NotFoundException"),
            Some(ErrorCode::NotFoundException)
        );
        assert_eq!(error_code_from_name("NoSuchThing"), None);
    }

    #[test]
    fn invalid_ciphertext_carries_no_message() {
        let body = error_body(&KmsError::invalid_ciphertext());
        assert_eq!(body, json!({"__type": "InvalidCiphertextException"}));
    }

    #[test]
    fn statuses() {
        assert_eq!(http_status(&KmsError::internal("x")), 500);
        assert_eq!(http_status(&KmsError::not_found("x")), 400);
        assert_eq!(
            http_status(&KmsError::new(
                ErrorCode::RequestEntityTooLargeException,
                "x"
            )),
            413
        );
    }

    #[test]
    fn unknown_names_are_internal_and_named() {
        let e = error_from_body(&json!({"__type": "Weird", "Message": "m"})).unwrap();
        assert_eq!(e.code, ErrorCode::KMSInternalException);
        assert!(e.message.contains("Weird"));
        assert!(error_from_body(&json!({"x": 1})).is_none());
    }
}
