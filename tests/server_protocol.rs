//! The KMS HTTP API over real sockets: SigV4 acceptance and rejection,
//! request decoding errors, limits, slow clients, concurrency, graceful
//! shutdown, a seeded fuzz of the decoder, and interoperability with
//! botocore's signer and boto3's KMS client.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyvol::ids::{AccountId, Region};
use keyvol::kms::{Caller, ErrorCode, KmsError, PrincipalType, RequestContext};
use keyvol::secret::SecretBytes;
use keyvol::server::http::{decode_request, ServeOptions};
use keyvol::server::sigv4::{self, format_amz_date, HttpRequest, SigningParams, VerifyPolicy};
use keyvol::server::{start, Credentials, KmsService, RemoteKms, ServerHandle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use time::OffsetDateTime;

const AKID: &str = "AKIAKEYVOLTEST000001";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const VENV: &str = ".cache/keyvol-venv";

/// A KMS with one access key and a few operations that show what the
/// server handed over.
struct MockKms {
    keys: HashMap<String, (String, Caller)>,
    /// Calls of "Sleep" under way, so tests can wait for one to be in flight.
    sleeping: AtomicUsize,
}

impl MockKms {
    fn new() -> Arc<Self> {
        let account: AccountId = "111122223333".parse().unwrap();
        let mut alice = Caller::root(account.clone());
        alice.principal_arn = "arn:aws:iam::111122223333:user/alice".into();
        alice.principal_type = PrincipalType::IAMUser;
        let mut keys = HashMap::new();
        keys.insert(AKID.to_string(), (SECRET.to_string(), alice));
        Arc::new(MockKms {
            keys,
            sleeping: AtomicUsize::new(0),
        })
    }
}

impl KmsService for MockKms {
    fn credentials(&self, access_key_id: &str) -> Option<Credentials> {
        self.keys.get(access_key_id).map(|(s, c)| Credentials {
            secret_access_key: SecretBytes::from_slice(s.as_bytes()),
            caller: c.clone(),
            session: None,
        })
    }

    fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        request: Value,
    ) -> Result<Value, KmsError> {
        match operation {
            "Echo" => Ok(json!({
                "Operation": operation,
                "Request": request,
                "Region": ctx.region.as_str(),
                "Principal": ctx.caller.principal_arn,
                "AccessKeyId": ctx.caller.access_key_id,
                "SourceIp": ctx.source_ip,
                "UserAgent": ctx.user_agent,
                "ViaService": ctx.via_service,
            })),
            "Fail" => {
                let name = request["Code"].as_str().unwrap_or("NotFoundException");
                let code = keyvol::server::errors::error_code_from_name(name)
                    .unwrap_or(ErrorCode::KMSInternalException);
                Err(KmsError::new(
                    code,
                    request["Message"].as_str().unwrap_or("failed"),
                ))
            }
            "Sleep" => {
                let ms = request["Millis"].as_u64().unwrap_or(100);
                self.sleeping.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(ms));
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                Ok(json!({"Slept": ms}))
            }
            "Panic" => panic!("the mock KMS panics on purpose"),
            // A minimal Encrypt/DescribeKey so boto3 can talk to the server.
            "Encrypt" => Ok(json!({
                "CiphertextBlob": request["Plaintext"],
                "KeyId": format!("arn:aws:kms:{}:111122223333:key/{}", ctx.region, request["KeyId"].as_str().unwrap_or("")),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            })),
            "DescribeKey" => Err(KmsError::not_found(format!(
                "Key '{}' does not exist",
                request["KeyId"].as_str().unwrap_or("")
            ))),
            other => Err(KmsError::new(
                ErrorCode::UnknownOperationException,
                format!("unknown operation {other}"),
            )),
        }
    }
}

fn server_with(opts: ServeOptions) -> ServerHandle {
    start(MockKms::new(), "127.0.0.1:0".parse().unwrap(), opts).unwrap()
}

/// Waits until a "Sleep" call is running inside `mock`.
fn wait_for_sleeper(mock: &MockKms) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while mock.sleeping.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the Sleep request never reached the service"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn server() -> ServerHandle {
    server_with(ServeOptions::default())
}

/// A request to sign and send, with every part adjustable.
#[derive(Clone)]
struct Signed {
    method: String,
    path: String,
    target: Option<String>,
    body: Vec<u8>,
    date: OffsetDateTime,
    region: String,
    service: String,
    access_key_id: String,
    secret: String,
    content_type: String,
    extra: Vec<(String, String)>,
}

impl Signed {
    fn new(target: &str, body: &[u8]) -> Self {
        Signed {
            method: "POST".into(),
            path: "/".into(),
            target: Some(format!("TrentService.{target}")),
            body: body.to_vec(),
            date: OffsetDateTime::now_utc(),
            region: "us-east-1".into(),
            service: "kms".into(),
            access_key_id: AKID.into(),
            secret: SECRET.into(),
            content_type: "application/x-amz-json-1.1".into(),
            extra: vec![],
        }
    }

    /// Headers including `Authorization`.
    fn headers(&self, addr: SocketAddr) -> Vec<(String, String)> {
        let mut headers = vec![
            ("Host".to_string(), addr.to_string()),
            ("Content-Type".to_string(), self.content_type.clone()),
            ("X-Amz-Date".to_string(), format_amz_date(self.date)),
        ];
        if let Some(t) = &self.target {
            headers.push(("X-Amz-Target".to_string(), t.clone()));
        }
        headers.extend(self.extra.iter().cloned());
        let secret = SecretBytes::from_slice(self.secret.as_bytes());
        let auth = sigv4::sign_request(
            &HttpRequest {
                method: &self.method,
                path: &self.path,
                query: "",
                headers: &headers,
                body: &self.body,
            },
            &SigningParams {
                access_key_id: &self.access_key_id,
                secret_access_key: &secret,
                region: &self.region,
                service: &self.service,
            },
        )
        .unwrap();
        headers.push(("Authorization".to_string(), auth));
        headers
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn error_type(&self) -> String {
        self.json()["__type"].as_str().unwrap_or("").to_string()
    }
    fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or("").to_string()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn wire(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Reads one HTTP/1.1 response (Content-Length framed), or None if the
/// server closed the connection first.
fn read_response(stream: &mut TcpStream) -> Option<Resp> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    Some(Resp {
        status,
        headers,
        body,
    })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn exchange(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    read_response(&mut s).expect("the server closed the connection without a response")
}

fn send(addr: SocketAddr, req: &Signed) -> Resp {
    exchange(
        addr,
        &wire(&req.method, &req.path, &req.headers(addr), &req.body, true),
    )
}

fn assert_error(resp: &Resp, status: u16, ty: &str) {
    assert_eq!(
        resp.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.error_type(), ty, "message: {}", resp.message());
    assert_eq!(
        resp.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    assert!(resp.header("x-amzn-requestid").is_some());
}

const INVALID_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// The retired keyvol header `x-keyvol-via-service` (it once claimed
/// `kms:ViaService`) is refused wherever a KMS request carries it, signed
/// or not, with any value; without it no request acts via EC2, and
/// RemoteKms never sends it, even for a context acting via EC2.
#[test]
fn retired_via_service_header_is_refused() {
    let srv = server();
    let addr = srv.local_addr();
    let via = |req: &Signed| send(addr, req);

    for value in [
        "ec2.us-east-1.amazonaws.com",
        "s3.us-east-1.amazonaws.com",
        "",
    ] {
        let mut signed = Signed::new("Echo", b"{}");
        signed.extra = vec![("X-Keyvol-Via-Service".into(), value.into())];
        let r = via(&signed);
        assert_error(&r, 400, "ValidationException");
        assert!(
            r.message()
                .contains("x-keyvol-via-service header is no longer accepted"),
            "{}",
            r.message()
        );
    }
    // Added after signing: refused all the same.
    let plain = Signed::new("Echo", b"{}");
    let mut headers = plain.headers(addr);
    headers.push((
        "x-keyvol-via-service".into(),
        "ec2.us-east-1.amazonaws.com".into(),
    ));
    let r = exchange(addr, &wire("POST", "/", &headers, b"{}", true));
    assert_error(&r, 400, "ValidationException");
    assert_eq!(via(&plain).json()["ViaService"], Value::Null);

    // RemoteKms claims nothing, whatever its KmsClient context says.
    use keyvol::kms::KmsClient;
    let client = RemoteKms::new(
        &format!("http://{addr}"),
        Region::default_region(),
        AKID,
        SecretBytes::from_slice(SECRET.as_bytes()),
    )
    .unwrap();
    let account: AccountId = "111122223333".parse().unwrap();
    let ctx = RequestContext::new(Caller::root(account), Region::default_region());
    let direct = KmsClient::call(&client, &ctx, "Echo", json!({})).unwrap();
    assert_eq!(direct["ViaService"], Value::Null);
    let through_ec2 = KmsClient::call(&client, &ctx.via_ec2(), "Echo", json!({})).unwrap();
    assert_eq!(through_ec2["ViaService"], Value::Null);
}

#[test]
fn signed_request_reaches_the_service_with_its_context() {
    let srv = server();
    let addr = srv.local_addr();
    let mut req = Signed::new("Echo", br#"{"KeyId":"alias/x","Blob":"AAE="}"#);
    req.region = "eu-west-3".into();
    req.extra.push(("User-Agent".into(), "test-agent/1".into()));
    let resp = send(addr, &req);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        resp.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    let id = resp.header("x-amzn-requestid").unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "request id {id} is not a uuid"
    );
    let v = resp.json();
    assert_eq!(v["Request"], json!({"KeyId": "alias/x", "Blob": "AAE="}));
    assert_eq!(v["Region"], "eu-west-3");
    assert_eq!(v["Principal"], "arn:aws:iam::111122223333:user/alice");
    assert_eq!(v["AccessKeyId"], AKID);
    assert_eq!(v["SourceIp"], "127.0.0.1");
    assert_eq!(v["UserAgent"], "test-agent/1");

    // An empty body is an empty request object.
    let resp = send(addr, &Signed::new("Echo", b""));
    assert_eq!(resp.json()["Request"], json!({}));
}

#[test]
fn remote_kms_round_trip_and_error_mapping() {
    let srv = server();
    let endpoint = format!("http://{}", srv.local_addr());
    let region: Region = "ap-southeast-2".parse().unwrap();
    let kms = RemoteKms::new(
        &endpoint,
        region.clone(),
        AKID,
        SecretBytes::from_slice(SECRET.as_bytes()),
    )
    .unwrap();
    let t0 = Instant::now();
    for i in 0..200 {
        let v = kms.call("Echo", json!({"N": i})).unwrap();
        assert_eq!(v["Request"]["N"], i);
        assert_eq!(v["Region"], "ap-southeast-2");
    }
    eprintln!(
        "200 sequential RemoteKms calls on one connection: {:?}",
        t0.elapsed()
    );
    let e = kms
        .call(
            "Fail",
            json!({"Code": "DisabledException", "Message": "key is disabled"}),
        )
        .unwrap_err();
    assert_eq!(
        e,
        KmsError::new(ErrorCode::DisabledException, "key is disabled")
    );
    let e = kms
        .call(
            "Fail",
            json!({"Code": "KMSInternalException", "Message": "db down"}),
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::KMSInternalException);
    let e = kms.call("NoSuchOperation", json!({})).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownOperationException);

    let wrong = RemoteKms::new(
        &endpoint,
        region.clone(),
        AKID,
        SecretBytes::from_slice(b"wrong"),
    )
    .unwrap();
    let e = wrong.call("Echo", json!({})).unwrap_err();
    assert_eq!(
        e,
        KmsError::new(ErrorCode::InvalidSignatureException, INVALID_SIGNATURE)
    );
    let unknown = RemoteKms::new(
        &endpoint,
        region,
        "AKIAUNKNOWN",
        SecretBytes::from_slice(b"x"),
    )
    .unwrap();
    assert_eq!(
        unknown.call("Echo", json!({})).unwrap_err().code,
        ErrorCode::UnrecognizedClientException
    );

    // A panic inside the service is a 500 KMSInternalException, and the
    // server goes on serving.
    let e = kms.call("Panic", json!({})).unwrap_err();
    assert_eq!(e.code, ErrorCode::KMSInternalException);
    assert!(e.message.contains("Panic"), "{}", e.message);
    assert!(kms.call("Echo", json!({})).is_ok());

    let addr = srv.local_addr();
    drop(srv);
    let e = kms.call("Echo", json!({})).unwrap_err();
    assert_eq!(e.code, ErrorCode::DependencyTimeoutException);
    assert!(
        e.message
            .contains(&format!("cannot reach the KMS at http://{addr}")),
        "{}",
        e.message
    );
}

#[test]
fn sigv4_rejections_over_http() {
    let srv = server();
    let addr = srv.local_addr();
    let base = Signed::new("Echo", br#"{"A":1}"#);

    let mut r = base.clone();
    r.secret = "not-the-secret".into();
    let resp = send(addr, &r);
    assert_error(&resp, 400, "InvalidSignatureException");
    assert_eq!(resp.message(), INVALID_SIGNATURE);

    let mut r = base.clone();
    r.access_key_id = "AKIANOBODY".into();
    let resp = send(addr, &r);
    assert_error(&resp, 400, "UnrecognizedClientException");
    assert_eq!(
        resp.message(),
        "The security token included in the request is invalid."
    );

    let mut r = base.clone();
    r.region = "moon".into();
    let resp = send(addr, &r);
    assert_error(&resp, 400, "InvalidSignatureException");
    assert!(
        resp.message().contains("valid region, not 'moon'"),
        "{}",
        resp.message()
    );

    let mut r = base.clone();
    r.service = "s3".into();
    let resp = send(addr, &r);
    assert_error(&resp, 400, "InvalidSignatureException");
    assert_eq!(
        resp.message(),
        "Credential should be scoped to correct service: 'kms'."
    );

    let mut r = base.clone();
    r.date -= time::Duration::minutes(6);
    let resp = send(addr, &r);
    assert_error(&resp, 400, "InvalidSignatureException");
    assert!(
        resp.message().starts_with("Signature expired: "),
        "{}",
        resp.message()
    );
    assert!(
        resp.message().contains(" is now earlier than "),
        "{}",
        resp.message()
    );

    let mut r = base.clone();
    r.date += time::Duration::minutes(6);
    assert!(send(addr, &r)
        .message()
        .starts_with("Signature not yet current"));

    // Four minutes off is within the window.
    let mut r = base.clone();
    r.date -= time::Duration::minutes(4);
    assert_eq!(send(addr, &r).status, 200);

    // The body altered after signing.
    let headers = base.headers(addr);
    let resp = exchange(addr, &wire("POST", "/", &headers, br#"{"A":2}"#, true));
    assert_error(&resp, 400, "InvalidSignatureException");
    assert_eq!(resp.message(), INVALID_SIGNATURE);

    // A signed header altered after signing.
    let mut altered = base.headers(addr);
    for (n, v) in altered.iter_mut() {
        if n == "X-Amz-Target" {
            *v = "TrentService.Fail".into();
        }
    }
    assert_error(
        &exchange(addr, &wire("POST", "/", &altered, &base.body, true)),
        400,
        "InvalidSignatureException",
    );

    // No Authorization header at all.
    let unsigned: Vec<_> = base
        .headers(addr)
        .into_iter()
        .filter(|(n, _)| n != "Authorization")
        .collect();
    let resp = exchange(addr, &wire("POST", "/", &unsigned, &base.body, true));
    assert_error(&resp, 400, "MissingAuthenticationTokenException");
    assert_eq!(resp.message(), "Missing Authentication Token");

    // The date header removed after signing.
    let no_date: Vec<_> = base
        .headers(addr)
        .into_iter()
        .filter(|(n, _)| n != "X-Amz-Date")
        .collect();
    let resp = exchange(addr, &wire("POST", "/", &no_date, &base.body, true));
    assert_error(&resp, 400, "IncompleteSignatureException");
    assert!(
        resp.message().contains("'X-Amz-Date' or a 'Date'"),
        "{}",
        resp.message()
    );

    // An Authorization header with parts missing.
    let mut partial = unsigned.clone();
    partial.push((
        "Authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/kms/aws4_request"),
    ));
    let resp = exchange(addr, &wire("POST", "/", &partial, &base.body, true));
    assert_error(&resp, 400, "IncompleteSignatureException");
    assert!(resp.message().contains("'Signature'"), "{}", resp.message());
}

#[test]
fn server_clock_is_injectable() {
    let fixed = time::macros::datetime!(2026-11-28 12:00:00 UTC);
    let srv = server_with(ServeOptions {
        clock: Arc::new(move || fixed),
        ..ServeOptions::default()
    });
    let mut r = Signed::new("Echo", b"{}");
    r.date = fixed - time::Duration::seconds(299);
    assert_eq!(send(srv.local_addr(), &r).status, 200);
    r.date = fixed - time::Duration::seconds(301);
    let resp = send(srv.local_addr(), &r);
    assert_eq!(
        resp.message(),
        "Signature expired: 20261128T115459Z is now earlier than 20261128T115500Z (20261128T120000Z - 5 min.)"
    );
}

#[test]
fn decoding_errors() {
    let srv = server_with(ServeOptions {
        regions: vec!["us-east-1".parse().unwrap()],
        ..ServeOptions::default()
    });
    let addr = srv.local_addr();

    let resp = send(addr, &Signed::new("Echo", b"{\"a\": "));
    assert_error(&resp, 400, "SerializationException");
    assert!(
        resp.message().contains("not valid JSON"),
        "{}",
        resp.message()
    );

    let resp = send(addr, &Signed::new("Echo", b"[1,2]"));
    assert_error(&resp, 400, "SerializationException");
    assert!(resp.message().contains("JSON object, not an array"));

    let deep = "[".repeat(100_000);
    assert_error(
        &send(addr, &Signed::new("Echo", deep.as_bytes())),
        400,
        "SerializationException",
    );

    assert_error(
        &send(addr, &Signed::new("NoSuchThing", b"{}")),
        400,
        "UnknownOperationException",
    );

    let mut r = Signed::new("Echo", b"{}");
    r.target = Some("DynamoDB_20120810.GetItem".into());
    let resp = send(addr, &r);
    assert_error(&resp, 400, "UnknownOperationException");
    assert!(resp.message().contains("TrentService.<Operation>"));
    r.target = None;
    assert_error(&send(addr, &r), 400, "UnknownOperationException");

    let mut r = Signed::new("Echo", b"{}");
    r.content_type = "text/plain".into();
    let resp = send(addr, &r);
    assert_error(&resp, 400, "SerializationException");
    assert!(
        resp.message()
            .contains("Content-Type 'text/plain' is not supported"),
        "{}",
        resp.message()
    );
    r.content_type = "application/x-amz-json-1.0; charset=utf-8".into();
    assert_eq!(send(addr, &r).status, 200);

    let mut r = Signed::new("Echo", b"{}");
    r.region = "eu-west-1".into();
    let resp = send(addr, &r);
    assert!(
        resp.message().contains("not 'eu-west-1'"),
        "{}",
        resp.message()
    );

    // Service errors: 5xx only for faults of the service.
    for (code, status) in [
        ("NotFoundException", 400),
        ("AccessDeniedException", 400),
        ("KMSInternalException", 500),
        ("DependencyTimeoutException", 500),
    ] {
        let body = format!(r#"{{"Code":"{code}","Message":"m"}}"#);
        let resp = send(addr, &Signed::new("Fail", body.as_bytes()));
        assert_error(&resp, status, code);
        assert_eq!(resp.message(), "m");
    }

    let mut r = Signed::new("Echo", b"");
    r.method = "GET".into();
    let resp = send(addr, &r);
    assert_error(&resp, 405, "UnknownOperationException");
    assert_eq!(resp.header("allow"), Some("POST"));
    let mut r = Signed::new("Echo", b"{}");
    r.path = "/admin".into();
    assert_error(&send(addr, &r), 404, "UnknownOperationException");
}

#[test]
fn oversized_bodies_are_refused() {
    let srv = server();
    let addr = srv.local_addr();
    let big = vec![b' '; (1 << 20) + 1];
    // Declared length over the limit: refused before the body is read.
    let resp = send(addr, &Signed::new("Echo", &big));
    assert_error(&resp, 413, "RequestEntityTooLargeException");
    assert!(resp.message().contains("1048576 bytes"));

    // Chunked, with no declared length: refused while reading.
    let r = Signed::new("Echo", &big);
    let mut headers = r.headers(addr);
    headers.push(("Transfer-Encoding".into(), "chunked".into()));
    let mut raw = b"POST / HTTP/1.1\r\n".to_vec();
    for (n, v) in &headers {
        raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    for c in big.chunks(64 * 1024) {
        raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let mut s = connect(addr);
    // The server may answer and close before taking all of the body.
    let _ = s.write_all(&raw);
    let resp = read_response(&mut s).expect("a 413 response");
    assert_error(&resp, 413, "RequestEntityTooLargeException");

    // Just under the limit is served.
    let mut body = br#"{"A":1}"#.to_vec();
    body.resize(1 << 20, b' ');
    assert_eq!(send(addr, &Signed::new("Echo", &body)).status, 200);
}

#[test]
fn two_hundred_concurrent_connections_are_all_answered() {
    let srv = server();
    let addr = srv.local_addr();
    let start = Instant::now();
    // Open all connections first so they are open at the same time.
    let mut conns: Vec<TcpStream> = (0..200).map(|_| connect(addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let r = Signed::new("Echo", format!("{{\"I\":{i}}}").as_bytes());
        c.write_all(&wire("POST", "/", &r.headers(addr), &r.body, false))
            .unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let resp = read_response(c).expect("a response on every connection");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["Request"]["I"], i);
    }
    // Keep-alive: a second request on each connection.
    for c in conns.iter_mut() {
        let r = Signed::new("Echo", b"{}");
        c.write_all(&wire("POST", "/", &r.headers(addr), &r.body, false))
            .unwrap();
        assert_eq!(read_response(c).unwrap().status, 200);
    }
    eprintln!(
        "400 requests on 200 concurrent connections: {:?}",
        start.elapsed()
    );

    // 32 threads with a RemoteKms each, in parallel.
    let endpoint = format!("http://{addr}");
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let kms = RemoteKms::new(
                    &endpoint,
                    Region::default_region(),
                    AKID,
                    SecretBytes::from_slice(SECRET.as_bytes()),
                )
                .unwrap();
                for i in 0..20 {
                    let v = kms.call("Echo", json!({"T": t, "I": i})).unwrap();
                    assert_eq!(v["Request"], json!({"T": t, "I": i}));
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("640 RemoteKms calls from 32 threads: {:?}", t0.elapsed());
}

#[test]
fn connection_limit_queues_extra_connections() {
    let srv = server_with(ServeOptions {
        max_connections: 4,
        ..ServeOptions::default()
    });
    let addr = srv.local_addr();
    let held: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = Signed::new("Echo", b"{}");
    let mut fifth = connect(addr);
    fifth
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    fifth
        .write_all(&wire("POST", "/", &r.headers(addr), &r.body, true))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = fifth.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "the fifth connection was served while 4 were held: {early:?}"
    );
    drop(held);
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = fifth.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn slow_clients_are_timed_out_while_others_are_served() {
    let srv = server_with(ServeOptions {
        header_read_timeout: Duration::from_secs(2),
        body_read_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    });
    let addr = srv.local_addr();
    let r = Signed::new("Echo", br#"{"A":1}"#);
    let raw = wire("POST", "/", &r.headers(addr), &r.body, true);

    let started = Instant::now();
    // Half a request head, then silence.
    let mut slow_head = connect(addr);
    slow_head.write_all(&raw[..raw.len() / 3]).unwrap();
    // A full head but half the body, then silence.
    let head_len = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut slow_body = connect(addr);
    slow_body.write_all(&raw[..head_len + 3]).unwrap();
    // A connection that sends nothing at all.
    let mut idle = connect(addr);

    // Meanwhile others are served, without waiting for the slow ones.
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(send(addr, &Signed::new("Echo", b"{}")).status, 200);
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }

    let mut buf = Vec::new();
    let n = slow_head.read_to_end(&mut buf);
    assert!(n.is_ok() || buf.is_empty(), "{n:?}");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10),
        "slow head closed after {waited:?}"
    );

    let resp = read_response(&mut slow_body).expect("a response to the stalled body");
    assert_error(&resp, 400, "SerializationException");
    assert!(
        resp.message().contains("did not arrive within"),
        "{}",
        resp.message()
    );

    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "idle connection kept for {:?}",
        started.elapsed()
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let mock = MockKms::new();
    let srv = start(
        mock.clone(),
        "127.0.0.1:0".parse().unwrap(),
        ServeOptions::default(),
    )
    .unwrap();
    let addr = srv.local_addr();
    let inflight =
        std::thread::spawn(move || send(addr, &Signed::new("Sleep", br#"{"Millis":700}"#)));
    wait_for_sleeper(&mock);
    let t = Instant::now();
    srv.shutdown().unwrap();
    let resp = inflight.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["Slept"], 700);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "shutdown did not wait: {:?}",
        t.elapsed()
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is still open after shutdown"
    );
}

/// Mutations of a valid signed request and random requests thrown at the
/// pure decoder: never a panic, never a 5xx.
#[test]
fn fuzz_decoder() {
    let service = MockKms::new();
    let now = OffsetDateTime::now_utc();
    let policy = VerifyPolicy {
        service: "kms",
        regions: &[],
        now,
    };
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let base = Signed::new("Echo", br#"{"KeyId":"k","Plaintext":"AAAA"}"#);
    let valid = base.headers(addr);
    let decoded = decode_request(
        &HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &valid,
            body: &base.body,
        },
        None,
        service.as_ref(),
        &policy,
        1 << 20,
    )
    .unwrap();
    assert_eq!(decoded.operation, "Echo");

    let mut rng = StdRng::seed_from_u64(0x6b65_7976_6f6c);
    let mut accepted = 0;
    for round in 0..20_000 {
        let mut headers = valid.clone();
        let mut body = base.body.clone();
        let mut method = "POST".to_string();
        let mut path = "/".to_string();
        let mut query = String::new();
        for _ in 0..rng.gen_range(1..4) {
            match rng.gen_range(0..10) {
                0 => {
                    if !body.is_empty() {
                        let i = rng.gen_range(0..body.len());
                        body[i] = rng.gen();
                    }
                }
                1 => body = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
                2 => {
                    let i = rng.gen_range(0..headers.len());
                    let v = &mut headers[i].1;
                    let mut bytes = v.clone().into_bytes();
                    if !bytes.is_empty() {
                        let j = rng.gen_range(0..bytes.len());
                        bytes[j] = rng.gen_range(0x20..0x7f);
                    }
                    *v = String::from_utf8_lossy(&bytes).into_owned();
                }
                3 => {
                    let i = rng.gen_range(0..headers.len());
                    headers.remove(i);
                    if headers.is_empty() {
                        headers.push(("x".into(), "y".into()));
                    }
                }
                4 => {
                    let i = rng.gen_range(0..headers.len());
                    let cut = rng.gen_range(0..=headers[i].1.len());
                    let s: String = headers[i].1.chars().take(cut).collect();
                    headers[i].1 = s;
                }
                5 => method = ["GET", "PUT", "post", "", "POST"][rng.gen_range(0..5)].into(),
                6 => path = ["/", "//", "/./", "/%2F", "", "/a/../"][rng.gen_range(0..6)].into(),
                7 => {
                    query =
                        ["", "a=b", "X-Amz-Signature=1", "%", "&&=&"][rng.gen_range(0..5)].into()
                }
                8 => {
                    let junk: String = (0..rng.gen_range(0..40))
                        .map(|_| rng.gen_range(' '..'~'))
                        .collect();
                    headers.push((
                        [
                            "Authorization",
                            "X-Amz-Date",
                            "X-Amz-Target",
                            "Content-Type",
                            "Date",
                        ][rng.gen_range(0..5)]
                        .into(),
                        junk,
                    ));
                }
                _ => {
                    let chars: Vec<char> = "{}[]\":,0123456789.eE+-truefalsn\\u ".chars().collect();
                    body = (0..rng.gen_range(0..80))
                        .map(|_| chars[rng.gen_range(0..chars.len())])
                        .collect::<String>()
                        .into_bytes();
                }
            }
        }
        let req = HttpRequest {
            method: &method,
            path: &path,
            query: &query,
            headers: &headers,
            body: &body,
        };
        match decode_request(&req, Some(addr), service.as_ref(), &policy, 1 << 20) {
            Ok(_) => accepted += 1,
            Err(r) => {
                assert!(
                    (400..500).contains(&r.status),
                    "round {round}: status {} for {:?}",
                    r.status,
                    r.error
                );
                assert!(!r.error.message.contains(SECRET));
            }
        }
    }
    // Some mutations (e.g. of unsigned parts) keep the request valid.
    assert!(accepted > 0 && accepted < 20_000, "accepted {accepted}");
}

/// Random bytes, mutated requests and truncated requests against the live
/// server: it answers each with a 4xx (or closes), never a 5xx, and stays up.
#[test]
fn fuzz_live_server() {
    let srv = server_with(ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        body_read_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    });
    let addr = srv.local_addr();
    let mut rng = StdRng::seed_from_u64(42);
    let r = Signed::new("Echo", br#"{"A":[1,2,3]}"#);
    let valid = wire("POST", "/", &r.headers(addr), &r.body, true);
    let mut answered = 0;
    for _ in 0..300 {
        let raw: Vec<u8> = match rng.gen_range(0..3) {
            0 => (0..rng.gen_range(1..512)).map(|_| rng.gen()).collect(),
            1 => {
                let mut v = valid.clone();
                for _ in 0..rng.gen_range(1..8) {
                    let i = rng.gen_range(0..v.len());
                    v[i] = rng.gen();
                }
                v
            }
            _ => {
                let mut v = valid.clone();
                let i = rng.gen_range(0..v.len());
                v.insert(i, b"\r\n"[rng.gen_range(0..2)]);
                v
            }
        };
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&raw);
        let _ = s.shutdown(std::net::Shutdown::Write);
        if let Some(resp) = read_response(&mut s) {
            answered += 1;
            assert!(
                resp.status < 500,
                "status {} for a client error",
                resp.status
            );
        }
    }
    assert!(answered > 0);
    assert_eq!(
        send(addr, &Signed::new("Echo", b"{}")).status,
        200,
        "the server is still up"
    );
}

fn python() -> String {
    let venv = std::env::var("KEYVOL_VENV").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/{VENV}")
    });
    let p = format!("{venv}/bin/python");
    assert!(
        std::path::Path::new(&p).exists(),
        "{p} is missing: run scripts/setup.sh (it creates the venv with boto3)"
    );
    p
}

fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const BOTOCORE_SIGN: &str = r#"
import datetime, json, sys
import botocore.auth as A
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
host, when, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
if when != "now":
    fixed = datetime.datetime.strptime(when, "%Y%m%dT%H%M%SZ")
    A.get_current_datetime = lambda: fixed
req = AWSRequest(method="POST", url="http://" + host + "/", data=body, headers={
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "TrentService.Echo",
    "User-Agent": "botocore-test",
})
A.SigV4Auth(Credentials(sys.argv[4], sys.argv[5]), "kms", "us-west-2").add_auth(req)
prepared = req.prepare()
print(json.dumps([[k, v] for k, v in prepared.headers.items()]))
"#;

#[test]
fn botocore_signatures_verify_and_match() {
    let body = r#"{"KeyId":"alias/test","Plaintext":"aGVsbG8="}"#;
    let out = run_python(
        BOTOCORE_SIGN,
        &["kms.example:443", "20261128T103000Z", body, AKID, SECRET],
    );
    let pairs: Vec<(String, String)> = serde_json::from_str(&out).unwrap();
    let boto_auth = pairs
        .iter()
        .find(|(n, _)| n == "Authorization")
        .unwrap()
        .1
        .clone();

    // The verifier accepts botocore's signature.
    let mut headers = pairs.clone();
    headers.push(("Host".into(), "kms.example:443".into()));
    let service = MockKms::new();
    let when = time::macros::datetime!(2026-11-28 10:31:00 UTC);
    let policy = VerifyPolicy {
        service: "kms",
        regions: &[],
        now: when,
    };
    let req = HttpRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: body.as_bytes(),
    };
    let d = decode_request(&req, None, service.as_ref(), &policy, 1 << 20).unwrap();
    assert_eq!(d.ctx.region.as_str(), "us-west-2");
    assert_eq!(d.operation, "Echo");

    // Our signer, given the headers botocore signed, produces the same
    // Authorization header byte for byte.
    let signed_names: Vec<String> = boto_auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .split(';')
        .map(str::to_string)
        .collect();
    let to_sign: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| signed_names.contains(&n.to_ascii_lowercase()))
        .cloned()
        .collect();
    let secret = SecretBytes::from_slice(SECRET.as_bytes());
    let ours = sigv4::sign_request(
        &HttpRequest {
            headers: &to_sign,
            ..req
        },
        &SigningParams {
            access_key_id: AKID,
            secret_access_key: &secret,
            region: "us-west-2",
            service: "kms",
        },
    )
    .unwrap();
    assert_eq!(ours, boto_auth);

    // A tampered body fails against botocore's signature.
    let tampered = HttpRequest {
        body: br#"{"KeyId":"alias/other","Plaintext":"aGVsbG8="}"#,
        ..req
    };
    let e = decode_request(&tampered, None, service.as_ref(), &policy, 1 << 20).unwrap_err();
    assert_eq!(e.error.code, ErrorCode::InvalidSignatureException);
}

#[test]
fn botocore_signed_request_is_served_over_http() {
    let srv = server();
    let addr = srv.local_addr();
    let body = r#"{"From":"botocore"}"#;
    let out = run_python(
        BOTOCORE_SIGN,
        &[&addr.to_string(), "now", body, AKID, SECRET],
    );
    let mut headers: Vec<(String, String)> = serde_json::from_str(&out).unwrap();
    headers.push(("Host".into(), addr.to_string()));
    let resp = exchange(addr, &wire("POST", "/", &headers, body.as_bytes(), true));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["Request"]["From"], "botocore");
    assert_eq!(resp.json()["Region"], "us-west-2");
}

const BOTO3_CLIENT: &str = r#"
import sys, boto3, botocore
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="eu-central-1",
                   aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                   config=botocore.config.Config(retries={"max_attempts": 1}))
r = kms.encrypt(KeyId="1234abcd-12ab-34cd-56ef-1234567890ab", Plaintext=b"hello keyvol")
assert r["CiphertextBlob"] == b"hello keyvol", r
assert r["KeyId"] == "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", r
assert len(r["ResponseMetadata"]["RequestId"]) == 36, r
try:
    kms.describe_key(KeyId="alias/missing")
    raise SystemExit("describe_key did not fail")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "NotFoundException", e.response
    assert "alias/missing" in e.response["Error"]["Message"], e.response
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
bad = boto3.client("kms", endpoint_url=sys.argv[1], region_name="eu-central-1",
                   aws_access_key_id=sys.argv[2], aws_secret_access_key="wrong",
                   config=botocore.config.Config(retries={"max_attempts": 1}))
try:
    bad.encrypt(KeyId="k", Plaintext=b"x")
    raise SystemExit("a wrong secret was accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidSignatureException", e.response
print("ok")
"#;

#[test]
fn boto3_kms_client_talks_to_the_server() {
    let srv = server();
    let endpoint = format!("http://{}", srv.local_addr());
    let out = run_python(BOTO3_CLIENT, &[&endpoint, AKID, SECRET]);
    assert_eq!(out.trim(), "ok");
}

#[test]
fn serve_stops_gracefully_on_sigterm() {
    let mock = MockKms::new();
    let service = mock.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        keyvol::server::http::run(
            service,
            "127.0.0.1:0".parse().unwrap(),
            ServeOptions::default(),
            move |addr| tx.send(addr).unwrap(),
        )
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server did not report its address");
    let inflight =
        std::thread::spawn(move || send(addr, &Signed::new("Sleep", br#"{"Millis":600}"#)));
    wait_for_sleeper(&mock);
    // SAFETY: kill(2) on our own pid; serve() has installed its SIGTERM
    // handler before binding, so the signal is caught, not fatal.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    let resp = inflight.join().unwrap();
    assert_eq!(resp.status, 200, "the in-flight request was cut off");
    server.join().unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after SIGTERM"
    );
}

/// A test CA and a leaf certificate for 127.0.0.1 made with the openssl CLI:
/// (directory, CA PEM, leaf PEM path, key PEM path).
fn test_pki() -> (
    tempfile::TempDir,
    Vec<u8>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl is missing: run scripts/setup.sh");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=keyvol test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let ca = std::fs::read(p("ca.pem")).unwrap();
    let (cert, key) = (p("leaf.pem"), p("leaf.key"));
    (dir, ca, cert, key)
}

#[test]
fn https_with_a_private_ca() {
    let (_dir, ca, cert, key) = test_pki();
    let identity = keyvol::server::TlsIdentity::from_pem_files(&cert, &key).unwrap();
    let srv = server_with(ServeOptions {
        tls: Some(identity),
        ..ServeOptions::default()
    });
    let addr = srv.local_addr();
    let endpoint = format!("https://{addr}");
    let secret = || SecretBytes::from_slice(SECRET.as_bytes());
    let kms = RemoteKms::with_ca_pem(
        &endpoint,
        Region::default_region(),
        AKID,
        secret(),
        Some(&ca),
    )
    .unwrap();
    let v = kms.call("Echo", json!({"Over": "tls"})).unwrap();
    assert_eq!(v["Request"]["Over"], "tls");
    assert_eq!(
        kms.call("Fail", json!({"Code": "DisabledException"}))
            .unwrap_err()
            .code,
        ErrorCode::DisabledException
    );

    // Without the private CA the server's certificate is not trusted.
    let untrusting = RemoteKms::new(&endpoint, Region::default_region(), AKID, secret()).unwrap();
    let e = untrusting.call("Echo", json!({})).unwrap_err();
    assert_eq!(e.code, ErrorCode::DependencyTimeoutException);
    assert!(
        e.message
            .contains(&format!("cannot reach the KMS at {endpoint}")),
        "{}",
        e.message
    );

    // Plain HTTP to the TLS port gets no KMS answer, and the server stays up.
    let r = Signed::new("Echo", b"{}");
    let mut s = connect(addr);
    s.write_all(&wire("POST", "/", &r.headers(addr), &r.body, true))
        .unwrap();
    assert!(read_response(&mut s).is_none());
    // A client that connects and never starts the handshake does not hold
    // up others.
    let _silent = connect(addr);
    assert!(kms.call("Echo", json!({})).is_ok());

    // The boto3 KMS client over HTTPS, verifying with the private CA.
    let ca_path = _dir.path().join("ca.pem");
    let script = r#"
import sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1", verify=sys.argv[4],
                   aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
r = kms.encrypt(KeyId="k1", Plaintext=b"over tls")
assert r["CiphertextBlob"] == b"over tls", r
print("ok")
"#;
    let out = run_python(
        script,
        &[&endpoint, AKID, SECRET, ca_path.to_str().unwrap()],
    );
    assert_eq!(out.trim(), "ok");
}
