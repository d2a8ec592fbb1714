//! AWS Signature Version 4: verification of signed requests (server side)
//! and signing (client side), built on one canonicalization so both agree.
//!
//! The steps follow the AWS documentation ("Create a signed AWS API
//! request") and botocore's `SigV4Auth`: canonical request, string to sign,
//! signing key derivation, HMAC-SHA256 signature. Presigned URLs
//! (query-string authentication) are not supported: KMS clients send an
//! `Authorization` header.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};
use zeroize::Zeroizing;

use super::Credentials;
use crate::ids::Region;
use crate::kms::{ErrorCode, KmsError};
use crate::secret::{ct_eq, Key256, SecretBytes};

/// The one signing algorithm of Signature Version 4 with HMAC-SHA256.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name a KMS request's credential scope must carry.
pub const KMS_SERVICE: &str = "kms";
/// How far the request's date may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);

const TERMINATOR: &str = "aws4_request";
const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
const HTTP_DATE: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// An HTTP request as the signature sees it. `path` and `query` are the raw
/// (still percent-encoded) parts of the request target; header names may be
/// of any case, and a name may repeat.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl<'a> HttpRequest<'a> {
    /// All values of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&'a str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The parsed `Authorization` header of a SigV4 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub scope_date: String,
    pub region: String,
    pub service: String,
    pub terminator: String,
    /// Lowercase header names, in the order the client listed them.
    pub signed_headers: Vec<String>,
    /// Lowercase hex HMAC-SHA256 signature.
    pub signature: String,
}

/// What the verifier accepts besides a correct signature.
#[derive(Debug, Clone)]
pub struct VerifyPolicy<'a> {
    /// The service the credential scope must name (`kms`).
    pub service: &'a str,
    /// The regions served; empty means any well-formed region.
    pub regions: &'a [Region],
    /// The server's clock.
    pub now: OffsetDateTime,
}

/// A request whose signature checked out.
#[derive(Debug)]
pub struct Verified {
    pub access_key_id: String,
    /// The region of the credential scope: the region the request is made in.
    pub region: Region,
    pub credentials: Credentials,
    pub signed_at: OffsetDateTime,
    /// The lower-case names of the headers the signature covers.
    pub signed_headers: Vec<String>,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization, KmsError> {
    let value = value.trim();
    let rest = match value.split_once(' ') {
        Some((alg, rest)) if alg == ALGORITHM => rest,
        _ => {
            let alg: String = value
                .split(' ')
                .next()
                .unwrap_or("")
                .chars()
                .take(40)
                .collect();
            return Err(incomplete(format!(
                "Unsupported signing algorithm '{alg}': the Authorization header must start with '{ALGORITHM} '."
            )));
        }
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(incomplete(format!(
                "Authorization component '{}' must be of the form Key=Value.",
                truncate(part, 64)
            )));
        };
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => {
                return Err(incomplete(format!(
                    "Unknown Authorization component '{}': expected Credential, SignedHeaders and Signature.",
                    truncate(other, 64)
                )))
            }
        };
        if slot.replace(v.trim()).is_some() {
            return Err(incomplete(format!(
                "Authorization header names '{}' more than once.",
                k.trim()
            )));
        }
    }
    let mut missing = String::new();
    for (name, v) in [
        ("Credential", &credential),
        ("Signature", &signature),
        ("SignedHeaders", &signed),
    ] {
        if v.is_none_or(|v| v.is_empty()) {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(incomplete(missing.trim_end().to_string()));
    };
    if !missing.is_empty() {
        return Err(incomplete(missing.trim_end().to_string()));
    }

    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts.iter().any(|p| p.is_empty()) {
        return Err(incomplete(format!(
            "Credential '{}' is malformed: expected <AccessKeyId>/<YYYYMMDD>/<region>/<service>/aws4_request.",
            truncate(credential, 160)
        )));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers.iter().any(|h| {
        h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
    }) {
        return Err(incomplete(format!(
            "SignedHeaders '{}' must be a ';'-separated list of lowercase header names.",
            truncate(signed, 160)
        )));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete(
            "Signature must be 64 hexadecimal characters (HMAC-SHA256).",
        ));
    }
    Ok(Authorization {
        access_key_id: parts[0].to_string(),
        scope_date: parts[1].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        terminator: parts[4].to_string(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// Verifies the SigV4 signature of `req`. `lookup` maps an access key id to
/// its secret and principal; it is called only for a well-formed, current
/// request, and an unknown key is `UnrecognizedClientException`.
pub fn verify(
    req: &HttpRequest<'_>,
    policy: &VerifyPolicy<'_>,
    lookup: impl FnOnce(&str) -> Option<Credentials>,
) -> Result<Verified, KmsError> {
    verify_payload(req, policy, lookup, false)
}

/// [`verify`] for an operation whose body the client may leave unsigned
/// (`x-amz-content-sha256: UNSIGNED-PAYLOAD`, botocore's
/// `v4-unsigned-body`): the EBS direct API's PutSnapshotBlock, whose body
/// is covered by its signed `x-amz-Checksum` header instead.
pub fn verify_unsigned_payload_allowed(
    req: &HttpRequest<'_>,
    policy: &VerifyPolicy<'_>,
    lookup: impl FnOnce(&str) -> Option<Credentials>,
) -> Result<Verified, KmsError> {
    verify_payload(req, policy, lookup, true)
}

/// The payload hash of an unsigned body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

fn verify_payload(
    req: &HttpRequest<'_>,
    policy: &VerifyPolicy<'_>,
    lookup: impl FnOnce(&str) -> Option<Credentials>,
    unsigned_allowed: bool,
) -> Result<Verified, KmsError> {
    let auths = req.header_values("authorization");
    let Some(&auth_value) = auths.first() else {
        if req.query.contains("X-Amz-Signature=") || req.query.contains("X-Amz-Credential=") {
            return Err(incomplete(
                "Query-string (presigned URL) authentication is not supported: send an Authorization header.",
            ));
        }
        return Err(KmsError::new(
            ErrorCode::MissingAuthenticationTokenException,
            "Missing Authentication Token",
        ));
    };
    if auths.len() > 1 {
        return Err(incomplete(
            "The request carries more than one Authorization header.",
        ));
    }
    let auth = parse_authorization(auth_value)?;

    if auth.terminator != TERMINATOR {
        return Err(invalid_signature(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'.",
            truncate(&auth.terminator, 64)
        )));
    }
    if auth.service != policy.service {
        return Err(invalid_signature(format!(
            "Credential should be scoped to correct service: '{}'.",
            policy.service
        )));
    }
    let region: Region = match auth.region.parse() {
        Ok(r) if policy.regions.is_empty() || policy.regions.contains(&r) => r,
        _ => {
            return Err(invalid_signature(format!(
                "Credential should be scoped to a valid region, not '{}'.",
                truncate(&auth.region, 64)
            )))
        }
    };

    // The request time: X-Amz-Date wins over Date, as in AWS.
    let (date_header, date_value) = match (req.header("x-amz-date"), req.header("date")) {
        (Some(v), _) => ("x-amz-date", v),
        (None, Some(v)) => ("date", v),
        (None, None) => return Err(incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )),
    };
    let signed_at = parse_request_date(date_header, date_value)?;
    let amz_date = format_amz_date(signed_at);
    if auth.scope_date != amz_date[..8] {
        return Err(invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
            truncate(&auth.scope_date, 16),
            &amz_date[..8]
        )));
    }
    for (required, shown) in [
        ("host", "Host"),
        (date_header, display_date_header(date_header)),
    ] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(invalid_signature(format!(
                "'{shown}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }
    // Every `x-amz-*` header present must be covered by the signature:
    // `X-Amz-Target` picks the operation, so an unsigned one would let a
    // captured request be replayed as another operation.
    if let Some((name, _)) = req.headers.iter().find(|(name, _)| {
        let lower = name.to_ascii_lowercase();
        lower.starts_with("x-amz-") && !auth.signed_headers.contains(&lower)
    }) {
        return Err(invalid_signature(format!(
            "'{}' must be a 'SignedHeader' in the AWS Authorization.",
            truncate(name, 64)
        )));
    }
    check_skew(signed_at, policy.now)?;

    let Some(credentials) = lookup(&auth.access_key_id) else {
        return Err(KmsError::new(
            ErrorCode::UnrecognizedClientException,
            "The security token included in the request is invalid.",
        ));
    };

    let declared = req.header("x-amz-content-sha256").map(str::trim);
    let body_hash = if unsigned_allowed && declared == Some(UNSIGNED_PAYLOAD) {
        UNSIGNED_PAYLOAD.to_string()
    } else {
        hex::encode(Sha256::digest(req.body))
    };
    if let Some(declared) = declared {
        if !declared.eq_ignore_ascii_case(&body_hash) {
            return Err(invalid_signature(
                "The provided 'x-amz-content-sha256' header does not match what was computed: the body must be signed (UNSIGNED-PAYLOAD is not accepted).",
            ));
        }
    }
    let canonical = canonical_request(req, &auth.signed_headers, &body_hash);
    let sts = string_to_sign(&amz_date, &auth.region, &auth.service, &canonical);
    let key = cached_signing_key(
        &credentials.secret_access_key,
        &auth.scope_date,
        &auth.region,
        &auth.service,
    );
    let expected = signature(&key, &sts);
    if !ct_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(invalid_signature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    check_session_token(req, &credentials, policy.now)?;
    Ok(Verified {
        access_key_id: auth.access_key_id,
        region,
        credentials,
        signed_at,
        signed_headers: auth.signed_headers,
    })
}

/// Temporary credentials are good only with their session token, until
/// they expire; a long-term key is refused with a token, as AWS refuses it.
/// The token is compared by its SHA-256, in constant time.
fn check_session_token(
    req: &HttpRequest<'_>,
    credentials: &Credentials,
    now: OffsetDateTime,
) -> Result<(), KmsError> {
    let invalid = || {
        KmsError::new(
            ErrorCode::UnrecognizedClientException,
            "The security token included in the request is invalid.",
        )
    };
    let token = req.header("x-amz-security-token").map(str::trim);
    match (&credentials.session, token) {
        (None, None) => Ok(()),
        (None, Some(_)) | (Some(_), None) => Err(invalid()),
        (Some(session), Some(token)) => {
            let digest = Sha256::digest(token.as_bytes());
            if !ct_eq(&digest, &session.token_sha256) {
                return Err(invalid());
            }
            if now.unix_timestamp() >= session.expiration {
                return Err(KmsError::new(
                    ErrorCode::ExpiredTokenException,
                    "The security token included in the request is expired",
                ));
            }
            Ok(())
        }
    }
}

/// The signing identity of a client.
#[derive(Debug, Clone, Copy)]
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a SecretBytes,
    pub region: &'a str,
    pub service: &'a str,
}

/// Signs `req` and returns the value of its `Authorization` header. Every
/// header of `req` is signed; `req` must already carry `Host` and
/// `X-Amz-Date` (see [`format_amz_date`]) or `Date`.
pub fn sign_request(req: &HttpRequest<'_>, params: &SigningParams<'_>) -> Result<String, KmsError> {
    let signed_at = match (req.header("x-amz-date"), req.header("date")) {
        (Some(v), _) => parse_request_date("x-amz-date", v)?,
        (None, Some(v)) => parse_request_date("date", v)?,
        (None, None) => {
            return Err(KmsError::validation(
                "a request to sign must carry an X-Amz-Date (or Date) header",
            ))
        }
    };
    if req.header("host").is_none() {
        return Err(KmsError::validation(
            "a request to sign must carry a Host header",
        ));
    }
    let amz_date = format_amz_date(signed_at);
    let mut names: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.trim().to_ascii_lowercase())
        .filter(|n| n != "authorization")
        .collect();
    names.sort();
    names.dedup();
    let body_hash = match req.header("x-amz-content-sha256") {
        Some(h) => h.trim().to_string(),
        None => hex::encode(Sha256::digest(req.body)),
    };
    let canonical = canonical_request(req, &names, &body_hash);
    let sts = string_to_sign(&amz_date, params.region, params.service, &canonical);
    let key = signing_key(
        params.secret_access_key,
        &amz_date[..8],
        params.region,
        params.service,
    );
    Ok(format!(
        "{ALGORITHM} Credential={}/{}/{}/{}/{TERMINATOR}, SignedHeaders={}, Signature={}",
        params.access_key_id,
        &amz_date[..8],
        params.region,
        params.service,
        names.join(";"),
        signature(&key, &sts)
    ))
}

/// `YYYYMMDD'T'HHMMSS'Z'` in UTC, the `X-Amz-Date` format.
pub fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    // Formatting a valid date with a fixed numeric description cannot fail;
    // fall back to an obviously wrong value rather than panic.
    t.format(AMZ_DATE)
        .unwrap_or_else(|_| "00000000T000000Z".to_string())
}

/// The canonical request: method, canonical URI, canonical query string,
/// canonical headers, signed headers and the hex SHA-256 of the payload.
pub fn canonical_request(
    req: &HttpRequest<'_>,
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(&req.method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req.header_values(name).into_iter().map(trim_all).collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// The string to sign: algorithm, request time, credential scope and the
/// hex SHA-256 of the canonical request.
pub fn string_to_sign(amz_date: &str, region: &str, service: &str, canonical: &str) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    format!(
        "{ALGORITHM}\n{amz_date}\n{date}/{region}/{service}/{TERMINATOR}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
pub fn signing_key(secret: &SecretBytes, date: &str, region: &str, service: &str) -> Key256 {
    let mut seed = SecretBytes::new(Vec::with_capacity(4 + secret.len()));
    seed.expose_mut().extend_from_slice(b"AWS4");
    seed.expose_mut().extend_from_slice(secret.expose());
    let k_date = hmac_sha256(seed.expose(), date.as_bytes());
    let k_region = hmac_sha256(&k_date[..], region.as_bytes());
    let k_service = hmac_sha256(&k_region[..], service.as_bytes());
    let k_signing = hmac_sha256(&k_service[..], TERMINATOR.as_bytes());
    // Invariant: `k_signing` is a [u8; 32], so the length always matches.
    Key256::from_slice(&k_signing[..]).expect("HMAC-SHA256 output is 32 bytes")
}

/// The signing key of the last request this thread verified, with what
/// it was derived from: a client signs every request of a day with the
/// same key, so its four HMACs are computed once per thread, secret,
/// date, region and service. Secrets stay in zeroizing types.
struct LastSigningKey {
    secret: SecretBytes,
    scope: String,
    key: Key256,
}

thread_local! {
    static LAST_SIGNING_KEY: std::cell::RefCell<Option<LastSigningKey>> =
        const { std::cell::RefCell::new(None) };
}

/// [`signing_key`], reused while this thread sees the same secret and
/// scope (compared in constant time for the secret).
fn cached_signing_key(secret: &SecretBytes, date: &str, region: &str, service: &str) -> Key256 {
    let scope = format!("{date}/{region}/{service}");
    LAST_SIGNING_KEY.with_borrow_mut(|last| {
        if let Some(l) = last.as_ref() {
            if l.scope == scope && ct_eq(l.secret.expose(), secret.expose()) {
                return l.key.clone();
            }
        }
        let key = signing_key(secret, date, region, service);
        *last = Some(LastSigningKey {
            secret: secret.clone(),
            scope,
            key: key.clone(),
        });
        key
    })
}

/// Lowercase hex HMAC-SHA256 of the string to sign.
pub fn signature(key: &Key256, string_to_sign: &str) -> String {
    hex::encode(&hmac_sha256(key.expose(), string_to_sign.as_bytes())[..])
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Zeroizing<[u8; 32]> {
    // Invariant: HMAC takes keys of any length (long keys are hashed), so
    // new_from_slice cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

fn parse_request_date(header: &str, value: &str) -> Result<OffsetDateTime, KmsError> {
    let value = value.trim();
    let parsed = if header == "date" {
        PrimitiveDateTime::parse(value, HTTP_DATE)
            .or_else(|_| PrimitiveDateTime::parse(value, AMZ_DATE))
    } else {
        PrimitiveDateTime::parse(value, AMZ_DATE)
    };
    match parsed {
        Ok(t) => Ok(t.assume_utc()),
        Err(_) => Err(incomplete(format!(
            "Date must be in ISO-8601 'basic format' (YYYYMMDD'T'HHMMSS'Z'). Got '{}' in the {} header.",
            truncate(value, 40),
            display_date_header(header)
        ))),
    }
}

fn check_skew(signed_at: OffsetDateTime, now: OffsetDateTime) -> Result<(), KmsError> {
    if signed_at < now - MAX_CLOCK_SKEW {
        return Err(invalid_signature(format!(
            "Signature expired: {} is now earlier than {} ({} - 5 min.)",
            format_amz_date(signed_at),
            format_amz_date(now - MAX_CLOCK_SKEW),
            format_amz_date(now)
        )));
    }
    if signed_at > now + MAX_CLOCK_SKEW {
        return Err(invalid_signature(format!(
            "Signature not yet current: {} is still later than {} ({} + 5 min.)",
            format_amz_date(signed_at),
            format_amz_date(now + MAX_CLOCK_SKEW),
            format_amz_date(now)
        )));
    }
    Ok(())
}

fn display_date_header(header: &str) -> &'static str {
    if header == "date" {
        "Date"
    } else {
        "X-Amz-Date"
    }
}

/// The path with dot segments and empty segments removed (as botocore's
/// `remove_dot_segments`), then URI-encoded once more, keeping `/` and `~`.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::new();
    if path.starts_with('/') {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    uri_encode(out.as_bytes(), true)
}

/// Each `name=value` pair decoded, re-encoded with the SigV4 rules and
/// sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 encoding of everything but the unreserved characters
/// (`A-Z a-z 0-9 - _ . ~`), and `/` when `keep_slash`.
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; a malformed escape is kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Trims a header value and collapses runs of whitespace to one space.
fn trim_all(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn incomplete(message: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::IncompleteSignatureException, message)
}

fn invalid_signature(message: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::InvalidSignatureException, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccountId;
    use crate::kms::Caller;
    use time::macros::datetime;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const T0: OffsetDateTime = datetime!(2015-08-30 12:36:00 UTC);

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn creds() -> Credentials {
        Credentials {
            secret_access_key: SecretBytes::from_slice(SECRET.as_bytes()),
            caller: Caller::root(AccountId::default_account()),
            session: None,
        }
    }

    fn policy(service: &str) -> VerifyPolicy<'_> {
        VerifyPolicy {
            service,
            regions: &[],
            now: T0,
        }
    }

    fn secret() -> SecretBytes {
        SecretBytes::from_slice(SECRET.as_bytes())
    }

    /// Signs with the AWS test-suite identity and returns the signature.
    fn suite_sign(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        service: &str,
    ) -> String {
        let headers = h(headers);
        let req = HttpRequest {
            method,
            path,
            query,
            headers: &headers,
            body,
        };
        let s = secret();
        let auth = sign_request(
            &req,
            &SigningParams {
                access_key_id: "AKIDEXAMPLE",
                secret_access_key: &s,
                region: "us-east-1",
                service,
            },
        )
        .unwrap();
        // The signer's output verifies with the same secret.
        let mut with_auth = headers.clone();
        with_auth.push(("Authorization".into(), auth.clone()));
        let req = HttpRequest {
            headers: &with_auth,
            ..req
        };
        let v = verify(&req, &policy(service), |id| {
            (id == "AKIDEXAMPLE").then(creds)
        })
        .unwrap();
        assert_eq!(v.access_key_id, "AKIDEXAMPLE");
        assert_eq!(v.region.as_str(), "us-east-1");
        auth.rsplit("Signature=").next().unwrap().to_string()
    }

    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
    const DATE: (&str, &str) = ("X-Amz-Date", "20150830T123600Z");

    #[test]
    fn aws_suite_get_vanilla() {
        assert_eq!(
            suite_sign("GET", "/", "", &[HOST, DATE], b"", "service"),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn aws_suite_get_vanilla_query_order_key_case() {
        assert_eq!(
            suite_sign(
                "GET",
                "/",
                "Param2=value2&Param1=value1",
                &[HOST, DATE],
                b"",
                "service"
            ),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn aws_suite_post_vanilla() {
        assert_eq!(
            suite_sign("POST", "/", "", &[HOST, DATE], b"", "service"),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn aws_suite_post_x_www_form_urlencoded() {
        assert_eq!(
            suite_sign(
                "POST",
                "/",
                "",
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    HOST,
                    DATE
                ],
                b"Param1=value1",
                "service"
            ),
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn aws_docs_iam_list_users() {
        assert_eq!(
            suite_sign(
                "GET",
                "/",
                "Action=ListUsers&Version=2010-05-08",
                &[
                    (
                        "Content-Type",
                        "application/x-www-form-urlencoded; charset=utf-8"
                    ),
                    ("Host", "iam.amazonaws.com"),
                    DATE
                ],
                b"",
                "iam"
            ),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn aws_docs_signing_key_derivation() {
        let k = signing_key(&secret(), "20120215", "us-east-1", "iam");
        assert_eq!(
            hex::encode(k.expose()),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    /// The per-thread signing key is reused only for the same secret and
    /// scope: another secret, date, region or service derives afresh.
    #[test]
    fn cached_signing_keys_follow_secret_and_scope() {
        let other = SecretBytes::from_slice(b"another-secret-of-the-same-size-xxxxxxxx");
        let fresh =
            |s: &SecretBytes, d: &str, r: &str, v: &str| signing_key(s, d, r, v).expose().to_vec();
        let cached = |s: &SecretBytes, d: &str, r: &str, v: &str| {
            cached_signing_key(s, d, r, v).expose().to_vec()
        };
        for (s, d, r, v) in [
            (secret(), "20120215", "us-east-1", "iam"),
            (secret(), "20120215", "us-east-1", "iam"),
            (other.clone(), "20120215", "us-east-1", "iam"),
            (secret(), "20120215", "us-east-1", "iam"),
            (secret(), "20120216", "us-east-1", "iam"),
            (secret(), "20120216", "eu-west-1", "iam"),
            (secret(), "20120216", "eu-west-1", "kms"),
            (other, "20120216", "eu-west-1", "kms"),
        ] {
            assert_eq!(cached(&s, d, r, v), fresh(&s, d, r, v), "{d}/{r}/{v}");
        }
    }

    #[test]
    fn canonical_uri_normalizes() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(canonical_uri("/../.."), "/");
        assert_eq!(canonical_uri("/a b/%41"), "/a%20b/%2541");
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a%20b&x"), "k=a%20b&x=");
        assert_eq!(canonical_query("k=a b+c"), "k=a%20b%2Bc");
        assert_eq!(canonical_query("k=%zz%4"), "k=%25zz%254");
    }

    #[test]
    fn parse_authorization_reports_missing_parts() {
        let e = parse_authorization("AWS4-HMAC-SHA256 Credential=a/b/c/d/e").unwrap_err();
        assert_eq!(e.code, ErrorCode::IncompleteSignatureException);
        assert!(e.message.contains("'Signature'"), "{}", e.message);
        assert!(e.message.contains("'SignedHeaders'"), "{}", e.message);
        let e = parse_authorization("Basic dXNlcjpwYXNz").unwrap_err();
        assert!(e.message.contains("Unsupported signing algorithm"));
        let e = parse_authorization(&format!(
            "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature={}",
            "0".repeat(64)
        ))
        .unwrap_err();
        assert!(e.message.contains("Credential"), "{}", e.message);
        let a = parse_authorization(&format!(
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/kms/aws4_request,SignedHeaders=host;x-amz-date,Signature={}",
            "A".repeat(64)
        ))
        .unwrap();
        assert_eq!(a.access_key_id, "AK");
        assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);
        assert_eq!(a.signature, "a".repeat(64));
    }

    fn signed_kms(
        headers: &[(&str, &str)],
        body: &[u8],
        region: &str,
        secret: &str,
    ) -> Vec<(String, String)> {
        let mut headers = h(headers);
        let s = SecretBytes::from_slice(secret.as_bytes());
        let req = HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let auth = sign_request(
            &req,
            &SigningParams {
                access_key_id: "AKIDEXAMPLE",
                secret_access_key: &s,
                region,
                service: "kms",
            },
        )
        .unwrap();
        headers.push(("Authorization".into(), auth));
        headers
    }

    fn check(
        headers: &[(String, String)],
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Verified, KmsError> {
        let req = HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body,
        };
        let p = VerifyPolicy {
            service: "kms",
            regions: &[],
            now,
        };
        verify(&req, &p, |id| (id == "AKIDEXAMPLE").then(creds))
    }

    #[test]
    fn verify_requires_every_amz_header_signed() {
        // Signed without X-Amz-Target, then the target added: a captured
        // request replayed as another operation.
        let mut headers = signed_kms(&[HOST, DATE], b"{}", "us-east-1", SECRET);
        assert!(check(&headers, b"{}", T0).is_ok());
        headers.push(("X-Amz-Target".into(), "TrentService.GenerateDataKey".into()));
        let e = check(&headers, b"{}", T0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidSignatureException);
        assert!(e.message.contains("'X-Amz-Target'"), "{}", e.message);

        let mut headers = signed_kms(&[HOST, DATE], b"{}", "us-east-1", SECRET);
        headers.push(("x-amz-security-token".into(), "forged".into()));
        let e = check(&headers, b"{}", T0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidSignatureException);

        // Headers outside x-amz-* may stay unsigned, as in AWS.
        let mut headers = signed_kms(&[HOST, DATE], b"{}", "us-east-1", SECRET);
        headers.push(("User-Agent".into(), "test".into()));
        assert!(check(&headers, b"{}", T0).is_ok());
    }

    #[test]
    fn verify_rejects_tampering_and_skew() {
        let headers = signed_kms(
            &[HOST, DATE, ("X-Amz-Target", "TrentService.Encrypt")],
            b"{}",
            "eu-west-1",
            SECRET,
        );
        let ok = check(&headers, b"{}", T0).unwrap();
        assert_eq!(ok.region.as_str(), "eu-west-1");

        let e = check(&headers, b"{ }", T0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidSignatureException);
        assert!(e.message.starts_with("The request signature we calculated"));

        let mut altered = headers.clone();
        altered[2].1 = "TrentService.Decrypt".into();
        assert_eq!(
            check(&altered, b"{}", T0).unwrap_err().code,
            ErrorCode::InvalidSignatureException
        );

        let e = check(&headers, b"{}", T0 + Duration::minutes(6)).unwrap_err();
        assert_eq!(
            e.message,
            "Signature expired: 20150830T123600Z is now earlier than 20150830T123700Z (20150830T124200Z - 5 min.)"
        );
        let e = check(&headers, b"{}", T0 - Duration::minutes(6)).unwrap_err();
        assert!(
            e.message.starts_with("Signature not yet current"),
            "{}",
            e.message
        );
        assert!(check(&headers, b"{}", T0 + Duration::minutes(4)).is_ok());

        let wrong = signed_kms(&[HOST, DATE], b"{}", "us-east-1", "not-the-secret");
        assert_eq!(
            check(&wrong, b"{}", T0).unwrap_err().code,
            ErrorCode::InvalidSignatureException
        );

        let mut unknown = headers.clone();
        let last = unknown.len() - 1;
        unknown[last].1 = unknown[last].1.replace("AKIDEXAMPLE", "AKIDOTHER");
        let e = check(&unknown, b"{}", T0).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnrecognizedClientException);
        assert_eq!(
            e.message,
            "The security token included in the request is invalid."
        );
    }

    #[test]
    fn verify_requires_host_and_date_signed() {
        let no_date = signed_kms(
            &[HOST, ("Date", "Sun, 30 Aug 2015 12:36:00 GMT")],
            b"",
            "us-east-1",
            SECRET,
        );
        let v = check(&no_date, b"", T0).unwrap();
        assert_eq!(v.signed_at, T0);

        let e = check(&h(&[HOST]), b"", T0).unwrap_err();
        assert_eq!(e.code, ErrorCode::MissingAuthenticationTokenException);
        assert_eq!(e.message, "Missing Authentication Token");

        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kms/aws4_request, SignedHeaders=host, Signature={}",
            "0".repeat(64)
        );
        let e = check(&h(&[HOST, ("Authorization", &auth)]), b"", T0).unwrap_err();
        assert_eq!(e.code, ErrorCode::IncompleteSignatureException);
        assert!(
            e.message.contains("'X-Amz-Date' or a 'Date' header"),
            "{}",
            e.message
        );

        // Signed with Date, then an X-Amz-Date (which wins) added afterwards.
        let mut headers = no_date.clone();
        headers.push(("X-Amz-Date".into(), "20150830T123600Z".into()));
        let e = check(&headers, b"", T0).unwrap_err();
        assert_eq!(
            e.message,
            "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."
        );

        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kms/aws4_request, SignedHeaders=x-amz-date, Signature={}",
            "0".repeat(64)
        );
        let e = check(&h(&[HOST, DATE, ("Authorization", &auth)]), b"", T0).unwrap_err();
        assert_eq!(
            e.message,
            "'Host' must be a 'SignedHeader' in the AWS Authorization."
        );
    }

    #[test]
    fn verify_checks_scope() {
        let auth = |scope: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, SignedHeaders=host;x-amz-date, Signature={}",
                "0".repeat(64)
            )
        };
        let run = |scope: &str| {
            check(&h(&[HOST, DATE, ("Authorization", &auth(scope))]), b"", T0).unwrap_err()
        };
        let e = run("20150830/us-east-1/s3/aws4_request");
        assert_eq!(
            e.message,
            "Credential should be scoped to correct service: 'kms'."
        );
        let e = run("20150830/mars/kms/aws4_request");
        assert_eq!(e.code, ErrorCode::InvalidSignatureException);
        assert!(e.message.contains("valid region, not 'mars'"));
        let e = run("20150830/us-east-1/kms/aws5_request");
        assert!(e.message.contains("valid terminator"));
        let e = run("20150831/us-east-1/kms/aws4_request");
        assert!(e
            .message
            .starts_with("Date in Credential scope does not match"));

        // A served-region list narrows the accepted regions.
        let headers = signed_kms(&[HOST, DATE], b"", "eu-west-1", SECRET);
        let req = HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let only = ["us-east-1".parse().unwrap()];
        let p = VerifyPolicy {
            service: "kms",
            regions: &only,
            now: T0,
        };
        let e = verify(&req, &p, |_| Some(creds())).unwrap_err();
        assert!(e.message.contains("not 'eu-west-1'"));
    }

    #[test]
    fn content_sha256_must_match_body() {
        let hash = hex::encode(Sha256::digest(b"{}"));
        let headers = signed_kms(
            &[HOST, DATE, ("X-Amz-Content-Sha256", &hash)],
            b"{}",
            "us-east-1",
            SECRET,
        );
        assert!(check(&headers, b"{}", T0).is_ok());
        let e = check(&headers, b"{\"a\":1}", T0).unwrap_err();
        assert!(e.message.contains("x-amz-content-sha256"));
        let unsigned = signed_kms(
            &[HOST, DATE, ("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")],
            b"{}",
            "us-east-1",
            SECRET,
        );
        assert_eq!(
            check(&unsigned, b"{}", T0).unwrap_err().code,
            ErrorCode::InvalidSignatureException
        );
    }

    #[test]
    fn header_values_are_trimmed_and_joined() {
        let headers = h(&[HOST, DATE, ("X-Multi", "  a   b "), ("x-multi", "c")]);
        let req = HttpRequest {
            method: "post",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let c = canonical_request(&req, &["host".into(), "x-multi".into()], "abc");
        assert_eq!(
            c,
            "POST\n/\n\nhost:example.amazonaws.com\nx-multi:a b,c\n\nhost;x-multi\nabc"
        );
    }
}
