//! AWS STS on the keyvol endpoint (Query protocol, XML responses, version
//! 2011-06-15): GetCallerIdentity, which SDKs and test fixtures call first.
//!
//! A request is routed here when its SigV4 credential scope names the
//! service `sts`; the signature is verified exactly as for the KMS.

use super::KmsService;
use crate::iam::roles::AssumeRoleInput;
use crate::iam::{IamError, IamErrorCode};
use crate::kms::RequestContext;
use crate::validate::{member_name, Validator, Violation};

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

/// Runs the STS action of a verified request and returns its XML body:
/// GetCallerIdentity, or AssumeRole through `service`.
pub fn answer(
    params: &[(String, String)],
    ctx: &RequestContext,
    service: &dyn KmsService,
    request_id: &str,
) -> Result<String, IamError> {
    let action = param(params, "Action").ok_or_else(|| {
        IamError::new(
            IamErrorCode::ValidationError,
            "Missing required parameter Action: expected Action=GetCallerIdentity or Action=AssumeRole.",
        )
    })?;
    if let Some(v) = param(params, "Version") {
        if v != STS_VERSION {
            return Err(IamError::new(
                IamErrorCode::ValidationError,
                format!(
                    "Version {} is not supported: use {STS_VERSION}.",
                    xml_escape(&truncate(v, 32))
                ),
            ));
        }
    }
    let caller = &ctx.caller;
    match action {
        "GetCallerIdentity" => Ok(format!(
            "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\">\
             <GetCallerIdentityResult>\
             <Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>\
             </GetCallerIdentityResult>\
             <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
             </GetCallerIdentityResponse>",
            xml_escape(&caller.principal_arn),
            xml_escape(&service.user_id(caller)?),
            caller.account
        )),
        "AssumeRole" => {
            let input = assume_role_input(params)?;
            let r = service.assume_role(ctx, &input)?;
            let source_identity = r
                .source_identity
                .as_deref()
                .map(|s| format!("<SourceIdentity>{}</SourceIdentity>", xml_escape(s)))
                .unwrap_or_default();
            Ok(format!(
                "<AssumeRoleResponse xmlns=\"{NAMESPACE}\"><AssumeRoleResult>\
                 <Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
                 <SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>\
                 <AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser>\
                 {source_identity}</AssumeRoleResult>\
                 <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
                 </AssumeRoleResponse>",
                r.access_key_id,
                xml_escape(&String::from_utf8_lossy(r.secret_access_key.expose())),
                xml_escape(&String::from_utf8_lossy(r.session_token.expose())),
                crate::clock::to_rfc3339(r.expiration),
                xml_escape(&r.assumed_role_id),
                xml_escape(&r.arn),
            ))
        }
        other => Err(IamError::new(
            IamErrorCode::InvalidAction,
            format!(
                "Could not find operation {} for version {STS_VERSION}",
                xml_escape(&truncate(other, 64))
            ),
        )),
    }
}

/// The members of an AssumeRole request (`Tags.member.N.Key`/`.Value`,
/// `Policy`). Managed session policies (`PolicyArns`: keyvol has no
/// managed policies) and MFA are refused plainly: a session must never be
/// broader than the caller asked for.
fn assume_role_input(params: &[(String, String)]) -> Result<AssumeRoleInput, IamError> {
    for unsupported in ["PolicyArns.member.1.arn", "SerialNumber", "TokenCode"] {
        if param(params, unsupported).is_some() {
            return Err(IamError::new(
                IamErrorCode::ValidationError,
                format!(
                    "{} is not supported by this endpoint: assume the role without it.",
                    unsupported.split('.').next().unwrap_or(unsupported)
                ),
            ));
        }
    }
    let duration_seconds = match param(params, "DurationSeconds") {
        None => None,
        Some(d) => Some(d.trim().parse::<i64>().map_err(|_| {
            IamError::new(
                IamErrorCode::ValidationError,
                format!(
                    "DurationSeconds must be a number of seconds, not '{}'.",
                    xml_escape(&truncate(d, 32))
                ),
            )
        })?),
    };
    let mut tags = Vec::new();
    for n in 1.. {
        let key = param(params, &format!("Tags.member.{n}.Key"));
        let value = param(params, &format!("Tags.member.{n}.Value"));
        match (key, value) {
            (None, None) => break,
            (Some(k), v) => tags.push((k.to_string(), v.unwrap_or("").to_string())),
            (None, Some(_)) => {
                return Err(Violation::null(format!("tags.{n}.member.key")).into());
            }
        }
        if n > 64 {
            break;
        }
    }
    // Both absent: one message naming both, as STS answers.
    let mut v = Validator::new();
    let mut required = |name: &str| {
        let value = param(params, name).map(str::to_string);
        v.required(&member_name(name), &value).cloned()
    };
    let present = required("RoleArn").zip(required("RoleSessionName"));
    let (role_arn, role_session_name) = v.finish_with(present)?;
    Ok(AssumeRoleInput {
        role_arn,
        role_session_name,
        duration_seconds,
        tags,
        external_id: param(params, "ExternalId").map(str::to_string),
        source_identity: param(params, "SourceIdentity").map(str::to_string),
        policy: param(params, "Policy").map(str::to_string),
    })
}

/// The XML error body of an STS error, as AWS sends it.
pub fn error_body(err: &IamError, request_id: &str) -> String {
    let kind = if err.is_internal() {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{kind}</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        err.code,
        xml_escape(&err.message)
    )
}

/// The HTTP status of an STS error: 403 for authentication failures, as
/// STS answers them.
pub fn http_status(err: &IamError) -> u16 {
    match err.code {
        IamErrorCode::ServiceFailure => 500,
        IamErrorCode::InvalidClientTokenId
        | IamErrorCode::ExpiredToken
        | IamErrorCode::AccessDenied
        | IamErrorCode::SignatureDoesNotMatch
        | IamErrorCode::IncompleteSignature
        | IamErrorCode::MissingAuthenticationToken => 403,
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
    use crate::ids::{AccountId, Region};
    use crate::kms::Caller;
    use crate::kms::KmsError;

    struct NoSts;
    impl KmsService for NoSts {
        fn credentials(&self, _: &str) -> Option<super::super::Credentials> {
            None
        }
        fn call(
            &self,
            _: &RequestContext,
            _: &str,
            _: serde_json::Value,
        ) -> Result<serde_json::Value, KmsError> {
            Err(KmsError::internal("unused"))
        }
        fn user_id(&self, caller: &Caller) -> Result<String, IamError> {
            Ok(caller.account.to_string())
        }
    }

    fn ctx() -> RequestContext {
        RequestContext::new(
            Caller::root(AccountId::default_account()),
            Region::default_region(),
        )
    }

    #[test]
    fn get_caller_identity_names_the_caller() {
        let params = query_params(b"Action=GetCallerIdentity&Version=2011-06-15", "");
        let xml = answer(&params, &ctx(), &NoSts, "rid").unwrap();
        assert!(
            xml.contains("<Arn>arn:aws:iam::111122223333:root</Arn>"),
            "{xml}"
        );
        assert!(xml.contains("<Account>111122223333</Account>"), "{xml}");
        assert!(xml.contains("<RequestId>rid</RequestId>"), "{xml}");
    }

    #[test]
    fn unknown_actions_and_versions_are_refused_and_escaped() {
        let e = answer(&query_params(b"Action=Frob<x>", ""), &ctx(), &NoSts, "r").unwrap_err();
        assert_eq!(e.code.as_str(), "InvalidAction");
        assert!(!error_body(&e, "r").contains("<x>"));
        let e = answer(
            &query_params(b"Action=GetCallerIdentity&Version=2099-01-01", ""),
            &ctx(),
            &NoSts,
            "r",
        )
        .unwrap_err();
        assert_eq!(e.code.as_str(), "ValidationError");
        assert!(answer(&[], &ctx(), &NoSts, "r").is_err());
    }

    #[test]
    fn assume_role_members_are_read_and_checked() {
        let p = query_params(
            b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fr&RoleSessionName=s1&DurationSeconds=900&Tags.member.1.Key=team&Tags.member.1.Value=blue&ExternalId=xyz",
            "",
        );
        let i = assume_role_input(&p).unwrap();
        assert_eq!(i.role_arn, "arn:aws:iam::111122223333:role/r");
        assert_eq!(i.duration_seconds, Some(900));
        assert_eq!(i.tags, vec![("team".to_string(), "blue".to_string())]);
        assert_eq!(i.external_id.as_deref(), Some("xyz"));
        let e = assume_role_input(&query_params(b"Action=AssumeRole&RoleArn=x", "")).unwrap_err();
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null"
        );
        let e = assume_role_input(&query_params(b"Action=AssumeRole", "")).unwrap_err();
        assert_eq!(e.code.as_str(), "ValidationError");
        assert_eq!(
            e.message,
            "2 validation errors detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null; Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null"
        );
        let e = assume_role_input(&query_params(
            b"Action=AssumeRole&RoleArn=x&RoleSessionName=s&Tags.member.1.Value=v",
            "",
        ))
        .unwrap_err();
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'tags.1.member.key' failed to satisfy constraint: Member must not be null"
        );
        let i = assume_role_input(&query_params(
            b"Action=AssumeRole&RoleArn=x&RoleSessionName=s&Policy=%7B%7D",
            "",
        ))
        .unwrap();
        assert_eq!(i.policy.as_deref(), Some("{}"));
        let e = assume_role_input(&query_params(
            b"Action=AssumeRole&RoleArn=x&RoleSessionName=s&PolicyArns.member.1.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FX",
            "",
        ))
        .unwrap_err();
        assert!(e.message.contains("PolicyArns"), "{}", e.message);
        let e = assume_role_input(&query_params(
            b"Action=AssumeRole&RoleArn=x&RoleSessionName=s&DurationSeconds=soon",
            "",
        ))
        .unwrap_err();
        assert_eq!(e.code.as_str(), "ValidationError");
    }
}
