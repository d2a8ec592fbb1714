//! AWS STS on the keyvol endpoint (Query protocol, XML responses, version
//! 2011-06-15): GetCallerIdentity, which SDKs and test fixtures call first.
//!
//! A request is routed here when its SigV4 credential scope names the
//! service `sts`; the signature is verified exactly as for the KMS.

use crate::kms::{Caller, ErrorCode, KmsError};

/// The credential-scope service name of STS.
pub const STS_SERVICE: &str = "sts";
/// The API version this module answers.
pub const STS_VERSION: &str = "2011-06-15";
/// The content type of STS responses.
pub const XML_CONTENT_TYPE: &str = "text/xml";

const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Parses a Query-protocol body or query string into its parameters.
pub fn query_params(body: &[u8], query: &str) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    params.extend(form_urlencoded::parse(body).into_owned());
    params
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Runs the STS action of a verified request and returns its XML body.
pub fn answer(
    params: &[(String, String)],
    caller: &Caller,
    user_id: &str,
    request_id: &str,
) -> Result<String, KmsError> {
    let action = param(params, "Action").ok_or_else(|| {
        KmsError::new(
            ErrorCode::ValidationException,
            "Missing required parameter Action: expected Action=GetCallerIdentity.",
        )
    })?;
    if let Some(v) = param(params, "Version") {
        if v != STS_VERSION {
            return Err(KmsError::new(
                ErrorCode::ValidationException,
                format!(
                    "Version {} is not supported: use {STS_VERSION}.",
                    xml_escape(&truncate(v, 32))
                ),
            ));
        }
    }
    match action {
        "GetCallerIdentity" => Ok(format!(
            "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\">\
             <GetCallerIdentityResult>\
             <Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>\
             </GetCallerIdentityResult>\
             <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
             </GetCallerIdentityResponse>",
            xml_escape(&caller.principal_arn),
            xml_escape(user_id),
            caller.account
        )),
        other => Err(KmsError::new(
            ErrorCode::UnknownOperationException,
            format!(
                "Could not find operation {} for version {STS_VERSION}",
                xml_escape(&truncate(other, 64))
            ),
        )),
    }
}

/// The STS name of an error: STS says `InvalidClientTokenId` and
/// `SignatureDoesNotMatch` where the KMS says `UnrecognizedClientException`
/// and `InvalidSignatureException`.
fn sts_code(code: ErrorCode) -> String {
    match code {
        ErrorCode::UnrecognizedClientException => "InvalidClientTokenId".into(),
        ErrorCode::InvalidSignatureException => "SignatureDoesNotMatch".into(),
        ErrorCode::IncompleteSignatureException => "IncompleteSignature".into(),
        ErrorCode::MissingAuthenticationTokenException => "MissingAuthenticationToken".into(),
        ErrorCode::UnknownOperationException => "InvalidAction".into(),
        ErrorCode::ValidationException => "ValidationError".into(),
        other => other.to_string(),
    }
}

/// The XML error body of an STS error, as AWS sends it.
pub fn error_body(err: &KmsError, request_id: &str) -> String {
    let kind = if err.is_internal() {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{kind}</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        sts_code(err.code),
        xml_escape(&err.message)
    )
}

/// The HTTP status of an STS error: 403 for authentication failures, as
/// STS answers them.
pub fn http_status(err: &KmsError) -> u16 {
    match err.code {
        _ if err.is_internal() => 500,
        ErrorCode::UnrecognizedClientException
        | ErrorCode::InvalidSignatureException
        | ErrorCode::IncompleteSignatureException
        | ErrorCode::MissingAuthenticationTokenException => 403,
        ErrorCode::RequestEntityTooLargeException => 413,
        _ => 400,
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccountId;

    #[test]
    fn get_caller_identity_names_the_caller() {
        let caller = Caller::root(AccountId::default_account());
        let params = query_params(b"Action=GetCallerIdentity&Version=2011-06-15", "");
        let xml = answer(&params, &caller, "111122223333", "rid").unwrap();
        assert!(
            xml.contains("<Arn>arn:aws:iam::111122223333:root</Arn>"),
            "{xml}"
        );
        assert!(xml.contains("<Account>111122223333</Account>"), "{xml}");
        assert!(xml.contains("<RequestId>rid</RequestId>"), "{xml}");
    }

    #[test]
    fn unknown_actions_and_versions_are_refused_and_escaped() {
        let caller = Caller::root(AccountId::default_account());
        let e = answer(
            &query_params(b"Action=AssumeRole<x>", ""),
            &caller,
            "u",
            "r",
        )
        .unwrap_err();
        assert_eq!(sts_code(e.code), "InvalidAction");
        assert!(!error_body(&e, "r").contains("<x>"));
        let e = answer(
            &query_params(b"Action=GetCallerIdentity&Version=2099-01-01", ""),
            &caller,
            "u",
            "r",
        )
        .unwrap_err();
        assert_eq!(sts_code(e.code), "ValidationError");
        assert!(answer(&[], &caller, "u", "r").is_err());
    }
}
