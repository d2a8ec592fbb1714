//! `RemoteKms`: a blocking KMS client of a keyvol endpoint that signs each
//! request with SigV4 and maps AWS error documents back to [`KmsError`].
//! It never acts "via EC2": only the control plane's own KMS calls do.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use ureq::http;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use zeroize::Zeroizing;

use super::errors::error_from_body;
use super::sigv4::{self, HttpRequest, SigningParams};
use super::{CONTENT_TYPE, TARGET_PREFIX};
use crate::ids::Region;
use crate::kms::{ErrorCode, KmsError};
use crate::secret::SecretBytes;

/// Largest response body accepted from the KMS.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// A KMS reached over HTTP, e.g. `keyvol kms serve` on another host.
pub struct RemoteKms {
    agent: ureq::Agent,
    /// `http://host:port`, without a trailing slash.
    endpoint: String,
    /// `host:port` as the `Host` header carries it.
    authority: String,
    region: Region,
    access_key_id: String,
    secret_access_key: SecretBytes,
}

impl std::fmt::Debug for RemoteKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKms")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl RemoteKms {
    /// A client of the KMS at `endpoint` (`http://127.0.0.1:PORT`, or
    /// `https://HOST:PORT` verified against the system CA bundle), signing
    /// as `access_key_id` for `region`.
    pub fn new(
        endpoint: &str,
        region: Region,
        access_key_id: &str,
        secret_access_key: SecretBytes,
    ) -> Result<Self, KmsError> {
        Self::with_ca_pem(endpoint, region, access_key_id, secret_access_key, None)
    }

    /// As [`RemoteKms::new`], trusting the CA certificates in `ca_pem` (PEM)
    /// for an `https://` endpoint, e.g. the KMS's own self-signed certificate.
    pub fn with_ca_pem(
        endpoint: &str,
        region: Region,
        access_key_id: &str,
        secret_access_key: SecretBytes,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, KmsError> {
        let http = HttpEndpoint::new(endpoint, ca_pem, "KMS", "RemoteKms")
            .map_err(KmsError::validation)?;
        check_access_key_id(access_key_id).map_err(KmsError::validation)?;
        Ok(RemoteKms {
            agent: http.agent,
            endpoint: http.endpoint,
            authority: http.authority,
            region,
            access_key_id: access_key_id.to_string(),
            secret_access_key,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs one KMS operation (`"Encrypt"`, ...) with an AWS JSON request
    /// body and returns the AWS JSON response.
    pub fn call(&self, operation: &str, request: Value) -> Result<Value, KmsError> {
        let body = serde_json::to_vec(&request).map_err(|e| {
            KmsError::validation(format!("the {operation} request is not serializable: {e}"))
        })?;
        let bytes = self.send(operation, &body)?;
        serde_json::from_slice(&bytes).map_err(|_| {
            KmsError::internal(format!(
                "the KMS at {} answered {operation} with a body that is not JSON",
                self.endpoint
            ))
        })
    }

    /// Sends one signed request with the JSON `body` and returns the body
    /// of a 200 answer, in a buffer zeroized on drop (it may hold a data
    /// key); any other answer becomes the [`KmsError`] it carries.
    fn send(&self, operation: &str, body: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        if operation.is_empty() || !operation.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KmsError::new(
                ErrorCode::UnknownOperationException,
                format!("'{operation}' is not a KMS operation name"),
            ));
        }
        let headers = signed_kms_headers(
            &self.authority,
            &self.region,
            &self.access_key_id,
            &self.secret_access_key,
            operation,
            body,
        )?;
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(format!("{}/", self.endpoint));
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let req = builder.body(body).map_err(|e| {
            KmsError::validation(format!("cannot build the {operation} request: {e}"))
        })?;

        let mut resp = self.agent.run(req).map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let bytes = Zeroizing::new(
            resp.body_mut()
                .with_config()
                .limit(MAX_RESPONSE_BYTES)
                .read_to_vec()
                .map_err(|e| self.unreachable(&e))?,
        );
        if status == 200 {
            return Ok(bytes);
        }
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if let Some(err) = parsed.as_ref().and_then(error_from_body) {
            return Err(err);
        }
        let snippet: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        Err(KmsError::internal(format!(
            "the KMS at {} answered {operation} with HTTP {status}: {snippet}",
            self.endpoint
        )))
    }

    fn unreachable(&self, e: &ureq::Error) -> KmsError {
        KmsError::new(
            ErrorCode::DependencyTimeoutException,
            format!("cannot reach the KMS at {}: {e}", self.endpoint),
        )
    }
}

/// The headers of a KMS JSON request for `operation` with `body` to
/// `authority` (`host:port`), signed with SigV4 now: `Content-Type`,
/// `Host`, `X-Amz-Date`, `X-Amz-Target` and, last, `Authorization`.
pub fn signed_kms_headers(
    authority: &str,
    region: &Region,
    access_key_id: &str,
    secret_access_key: &SecretBytes,
    operation: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>, KmsError> {
    let mut headers = vec![
        ("content-type".to_string(), CONTENT_TYPE.to_string()),
        ("host".to_string(), authority.to_string()),
        (
            "x-amz-date".to_string(),
            sigv4::format_amz_date(OffsetDateTime::now_utc()),
        ),
        (
            "x-amz-target".to_string(),
            format!("{TARGET_PREFIX}{operation}"),
        ),
    ];
    let authorization = sigv4::sign_request(
        &HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        },
        &SigningParams {
            access_key_id,
            secret_access_key,
            region: region.as_str(),
            service: sigv4::KMS_SERVICE,
        },
    )?;
    headers.push(("authorization".to_string(), authorization));
    Ok(headers)
}

/// A checked `http(s)://HOST:PORT` endpoint and the agent that reaches it.
pub(crate) struct HttpEndpoint {
    pub(crate) agent: ureq::Agent,
    /// `http://host:port`, without a trailing slash.
    pub(crate) endpoint: String,
    /// `host:port` as the `Host` header carries it.
    pub(crate) authority: String,
}

/// An access key id a client signs with: non-empty, and nothing that
/// would break the SigV4 `Credential=` field.
pub(crate) fn check_access_key_id(access_key_id: &str) -> Result<(), String> {
    if access_key_id.is_empty() || access_key_id.contains(['/', ',', ' ']) {
        return Err(format!(
            "access key id '{access_key_id}' is not valid: it must be non-empty without '/', ',' or spaces"
        ));
    }
    Ok(())
}

impl HttpEndpoint {
    /// `endpoint` checked (`what` names the service in errors), with an
    /// agent trusting `ca_pem` (else the system bundle) for https.
    pub(crate) fn new(
        endpoint: &str,
        ca_pem: Option<&[u8]>,
        what: &str,
        agent_name: &str,
    ) -> Result<Self, String> {
        let trimmed = endpoint.trim().trim_end_matches('/');
        let (scheme, authority) = if let Some(a) = trimmed.strip_prefix("http://") {
            ("http", a)
        } else if let Some(a) = trimmed.strip_prefix("https://") {
            ("https", a)
        } else {
            return Err(format!(
                "{what} endpoint '{endpoint}' must look like http://HOST:PORT or https://HOST:PORT"
            ));
        };
        let valid = !authority.is_empty()
            && !authority.contains(['/', '?', '#', '@', ' '])
            && format!("{scheme}://{authority}/")
                .parse::<http::Uri>()
                .is_ok();
        if !valid {
            return Err(format!(
                "{what} endpoint '{endpoint}' must look like {scheme}://HOST:PORT (no path, query or user info)"
            ));
        }
        let mut config = ureq::Agent::config_builder();
        if scheme == "https" {
            config = config.tls_config(tls_config(what, endpoint, ca_pem)?);
        }
        let config = config
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            // Below the server's idle limit (ServeOptions::header_read_timeout,
            // 20 s by default), so a pooled connection is not reused just as
            // the server closes it.
            .max_idle_age(Duration::from_secs(10))
            .max_idle_connections_per_host(8)
            .user_agent(format!("keyvol/{} {agent_name}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HttpEndpoint {
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::new(),
                EndpointResolver::default(),
            ),
            endpoint: format!("{scheme}://{authority}"),
            authority: authority.to_string(),
        })
    }
}

/// How long a looked-up host name's addresses are reused.
const RESOLVE_TTL: Duration = Duration::from_secs(10);

/// Resolves an endpoint's host without a thread per request. ureq's
/// default resolver, once a connect timeout is set, spawns a thread for the
/// lookup of every request, also of one that then reuses a pooled
/// connection: on loopback that thread cost more CPU than the request
/// itself. An IP literal needs no lookup at all; a name is looked up
/// through the default resolver at most once per [`RESOLVE_TTL`].
#[derive(Debug, Default)]
struct EndpointResolver {
    /// The latest lookup: `scheme://authority`, when, and its addresses.
    cache: std::sync::Mutex<Option<(String, std::time::Instant, ResolvedSocketAddrs)>>,
}

impl EndpointResolver {
    /// The socket address of an IP-literal authority (`127.0.0.1:80`,
    /// `[::1]:443`, or without a port the scheme's default).
    fn literal(uri: &http::Uri) -> Option<std::net::SocketAddr> {
        let authority = uri.authority()?;
        let port = authority.port_u16().or_else(|| match uri.scheme_str()? {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip: std::net::IpAddr = host.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, port))
    }
}

impl Resolver for EndpointResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some(addr) = Self::literal(uri) {
            let mut out = self.empty();
            out.push(addr);
            return Ok(out);
        }
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        let lock = || {
            self.cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((k, at, addrs)) = &*lock() {
            if *k == key && at.elapsed() < RESOLVE_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        *lock() = Some((key, std::time::Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// Trust roots for an https endpoint: `ca_pem`, else the system bundle.
fn tls_config(
    what: &str,
    endpoint: &str,
    ca_pem: Option<&[u8]>,
) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig, TlsProvider};
    let pem = match ca_pem {
        Some(p) => p.to_vec(),
        None => super::tls::system_ca_bundle().ok_or_else(|| {
            format!(
                "{what} endpoint '{endpoint}': no CA certificate given and no system CA bundle found in {}",
                super::tls::SYSTEM_CA_BUNDLES.join(", ")
            )
        })?,
    };
    let certs: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "{what} endpoint '{endpoint}': the CA PEM holds no certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(super::tls::provider())
        .build())
}

use crate::kms::ciphertext::EncryptionContext;
use crate::kms::client::{self, DataKey, WrappedKey};
use crate::kms::RequestContext;

impl crate::kms::KmsClient for RemoteKms {
    /// The remote KMS authenticates the profile's access key; the caller of
    /// `ctx` is who that key belongs to. The region is the client's. A
    /// context acting through EC2 gets no via-service effect remotely:
    /// only the control plane's own KMS calls act via EC2, so a key policy
    /// that requires `kms:ViaService` refuses these requests.
    fn call(
        &self,
        _ctx: &RequestContext,
        operation: &str,
        request: Value,
    ) -> Result<Value, KmsError> {
        RemoteKms::call(self, operation, request)
    }

    fn describe(&self) -> String {
        format!("remote KMS at {}", self.endpoint)
    }

    fn generate_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> Result<(WrappedKey, DataKey), KmsError> {
        client::generate_data_key_json(self, ctx, key, bytes, context)
    }

    fn generate_wrapped_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        client::generate_wrapped_data_key_json(self, ctx, key, bytes, context)
    }

    fn decrypt_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        client::decrypt_data_key_json(self, ctx, key, wrapped, context)
    }

    fn encrypt_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        data_key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        client::encrypt_data_key_json(self, ctx, key, data_key, context)
    }
}

impl client::JsonKms for RemoteKms {
    fn call_json(
        &self,
        _ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.send(operation, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(endpoint: &str) -> Result<RemoteKms, KmsError> {
        RemoteKms::new(
            endpoint,
            Region::default_region(),
            "AKID",
            SecretBytes::from_slice(b"s"),
        )
    }

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            new("http://127.0.0.1:8080/").unwrap().endpoint(),
            "http://127.0.0.1:8080"
        );
        assert!(new("http://[::1]:9").is_ok());
        let e = RemoteKms::with_ca_pem(
            "https://kms:443",
            Region::default_region(),
            "AKID",
            SecretBytes::from_slice(b"s"),
            Some(b"no pem here"),
        )
        .unwrap_err();
        assert!(e.message.contains("holds no certificate"), "{}", e.message);
        assert!(new("127.0.0.1:80")
            .unwrap_err()
            .message
            .contains("http://HOST:PORT"));
        assert!(new("http://h/path").is_err());
        assert!(new("http://").is_err());
        assert!(new("http://u@h:1").is_err());
    }

    /// IP literals skip the lookup (and its thread); names still resolve.
    #[test]
    fn endpoint_hosts_resolve() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        let lit = EndpointResolver::literal;
        assert_eq!(
            lit(&uri("http://127.0.0.1:8080/")),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            lit(&uri("https://[::1]/")),
            Some("[::1]:443".parse().unwrap())
        );
        assert_eq!(
            lit(&uri("http://10.0.0.7/")),
            Some("10.0.0.7:80".parse().unwrap())
        );
        assert_eq!(lit(&uri("http://localhost:9/")), None);
        let r = EndpointResolver::default();
        let config = ureq::config::Config::default();
        let timeout = ureq::unversioned::transport::NextTimeout::default();
        let addrs = r
            .resolve(&uri("http://localhost:9/"), &config, timeout)
            .unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.port() == 9 && a.ip().is_loopback()));
        // The name's addresses are kept for the next request.
        let cached = r.cache.lock().unwrap().clone().unwrap();
        assert_eq!(cached.0, "http://localhost:9");
        assert_eq!(cached.2.len(), addrs.len());
    }

    #[test]
    fn secret_is_not_in_debug() {
        let c = RemoteKms::new(
            "http://h:1",
            Region::default_region(),
            "AKID",
            SecretBytes::from_slice(b"hunter2hunter2"),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn unreachable_names_the_endpoint() {
        // Port 1 on loopback: nothing listens there.
        let c = new("http://127.0.0.1:1").unwrap();
        let e = c.call("Echo", serde_json::json!({})).unwrap_err();
        assert_eq!(e.code, ErrorCode::DependencyTimeoutException);
        assert!(
            e.message
                .starts_with("cannot reach the KMS at http://127.0.0.1:1: "),
            "{}",
            e.message
        );
    }
}
