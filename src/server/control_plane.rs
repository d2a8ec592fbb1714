//! `ControlPlaneClient`: the blocking client a volume host on another
//! machine uses to reach the control plane (`keyvol serve`): EC2 and STS
//! actions (Query protocol, SigV4), the EBS direct APIs (REST) and the
//! keyvol extension
//! [`RELEASE_VOLUME_KEY`] that hands the host the data key of a volume
//! attached to it.

use ureq::http;
use zeroize::Zeroizing;

use super::client::HttpEndpoint;
use super::sigv4::{self, HttpRequest, SigningParams};
use crate::api_error::{ApiError, ApiResult};
use crate::ids::Region;
use crate::secret::{SecretBytes, VolumeDataKey};

/// The keyvol extension action (EC2 Query protocol, signed for `ec2`)
/// with which a registered volume host obtains the plaintext data key of
/// a volume attached to it; see the `server` module docs.
pub const RELEASE_VOLUME_KEY: &str = "KeyvolReleaseVolumeKey";

/// Largest response body accepted from the control plane.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// The error code of a control plane that does not answer.
pub const UNREACHABLE: &str = "ServiceUnavailable";

/// An HTTP answer: its status, headers and body.
type Answer = (u16, Vec<(String, String)>, Zeroizing<Vec<u8>>);

/// A successful answer of the EBS direct APIs: its headers and body (a
/// block's bytes, or JSON).
pub struct EbsReply {
    pub headers: Vec<(String, String)>,
    pub body: Zeroizing<Vec<u8>>,
}

impl EbsReply {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

impl std::fmt::Debug for EbsReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbsReply")
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The control plane at one endpoint, signing as one access key.
pub struct ControlPlaneClient {
    http: HttpEndpoint,
    region: Region,
    access_key_id: String,
    secret_access_key: SecretBytes,
}

impl std::fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneClient")
            .field("endpoint", &self.http.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// An EC2 (or STS) XML response, kept in a buffer zeroized on drop.
pub struct XmlReply(Zeroizing<String>);

impl std::fmt::Debug for XmlReply {
    /// Only the size: a reply may carry a data key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XmlReply({} bytes)", self.0.len())
    }
}

impl XmlReply {
    /// The text of the first `<tag>` element, unescaped.
    pub fn text(&self, tag: &str) -> Option<String> {
        self.texts(tag).into_iter().next()
    }

    /// The texts of every `<tag>` element, in order, unescaped.
    pub fn texts(&self, tag: &str) -> Vec<String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut out = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find(&open) {
            let after = &rest[i + open.len()..];
            let Some(j) = after.find(&close) else { break };
            out.push(unescape(&after[..j]));
            rest = &after[j + close.len()..];
        }
        out
    }
}

/// The positions of `<tag>` openings and `</tag>` closings in `doc`, in
/// order (`true` for an opening).
fn marks(doc: &str, tag: &str) -> Vec<(usize, bool, usize)> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = doc[at..].find('<') {
        let i = at + i;
        let rest = &doc[i..];
        if rest.starts_with(&open) {
            out.push((i, true, open.len()));
            at = i + open.len();
        } else if rest.starts_with(&close) {
            out.push((i, false, close.len()));
            at = i + close.len();
        } else {
            at = i + 1;
        }
    }
    out
}

/// The (start, end) byte ranges of the outermost `<tag>` elements: the
/// inner text, and the whole element.
fn elements(doc: &str, tag: &str) -> Vec<((usize, usize), (usize, usize))> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = (0, 0);
    for (i, opening, len) in marks(doc, tag) {
        if opening {
            if depth == 0 {
                start = (i, i + len);
            }
            depth += 1;
        } else if depth > 0 {
            depth -= 1;
            if depth == 0 {
                out.push(((start.1, i), (start.0, i + len)));
            }
        }
    }
    out
}

impl XmlReply {
    /// The inside of the first outermost `<tag>` element.
    pub fn section(&self, tag: &str) -> Option<XmlReply> {
        let ((a, b), _) = *elements(&self.0, tag).first()?;
        Some(XmlReply(Zeroizing::new(self.0[a..b].to_string())))
    }

    /// The `<item>` elements directly inside the first `<tag>`.
    pub fn items(&self, tag: &str) -> Vec<XmlReply> {
        let Some(list) = self.section(tag) else {
            return Vec::new();
        };
        elements(&list.0, "item")
            .into_iter()
            .map(|((a, b), _)| XmlReply(Zeroizing::new(list.0[a..b].to_string())))
            .collect()
    }

    /// This document without its first outermost `<tag>` element.
    pub fn without(&self, tag: &str) -> XmlReply {
        let mut s = Zeroizing::new(self.0.to_string());
        if let Some((_, (a, b))) = elements(&self.0, tag).first().copied() {
            s.replace_range(a..b, "");
        }
        XmlReply(s)
    }
}

/// Undoes the five XML entities (and numeric ones) of element text.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(end) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&after[..=end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Percent-encodes a key, value, path segment or query value (RFC 3986
/// unreserved characters kept), as SigV4 signs them.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    form_encode(s, &mut out);
    out
}

/// `application/x-www-form-urlencoded` of one key or value.
fn form_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
}

impl ControlPlaneClient {
    /// A client of the control plane at `endpoint` (`http://HOST:PORT` or
    /// `https://HOST:PORT`, verified against `ca_pem`, else the system CA
    /// bundle), signing as `access_key_id` for `region`.
    pub fn new(
        endpoint: &str,
        region: Region,
        access_key_id: &str,
        secret_access_key: SecretBytes,
        ca_pem: Option<&[u8]>,
    ) -> ApiResult<Self> {
        let http = HttpEndpoint::new(endpoint, ca_pem, "control plane", "ControlPlaneClient")
            .map_err(ApiError::invalid_parameter)?;
        super::client::check_access_key_id(access_key_id).map_err(ApiError::invalid_parameter)?;
        Ok(ControlPlaneClient {
            http,
            region,
            access_key_id: access_key_id.to_string(),
            secret_access_key,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.http.endpoint
    }

    /// Runs one EC2 action with its Query parameters (Action and Version
    /// are added); an EC2 error answer becomes the [`ApiError`] it names.
    pub fn ec2(&self, action: &str, params: &[(&str, &str)]) -> ApiResult<XmlReply> {
        self.query(
            crate::ec2::EC2_SERVICE,
            action,
            crate::ec2::EC2_VERSION,
            params,
        )
    }

    /// The ARN of the principal this client signs as (STS
    /// GetCallerIdentity).
    pub fn caller_arn(&self) -> ApiResult<String> {
        let reply = self.query(
            super::sts::STS_SERVICE,
            "GetCallerIdentity",
            super::sts::STS_VERSION,
            &[],
        )?;
        reply.text("Arn").ok_or_else(|| {
            ApiError::internal(format!(
                "the control plane at {} answered GetCallerIdentity without an Arn",
                self.endpoint()
            ))
        })
    }

    /// The keyvol extension [`RELEASE_VOLUME_KEY`]: the plaintext data key
    /// of `volume_id`, attached to `instance_id` (this host).
    pub fn release_volume_key(
        &self,
        volume_id: &str,
        instance_id: &str,
    ) -> ApiResult<VolumeDataKey> {
        let reply = self.ec2(
            RELEASE_VOLUME_KEY,
            &[("VolumeId", volume_id), ("InstanceId", instance_id)],
        )?;
        let b64 = Zeroizing::new(reply.text("dataKey").unwrap_or_default());
        let bytes = Zeroizing::new(crate::kms::api::b64_decode(&b64).unwrap_or_default());
        VolumeDataKey::from_slice(&bytes).ok_or_else(|| {
            ApiError::internal(format!(
                "the control plane at {} answered {RELEASE_VOLUME_KEY} for {volume_id} without a 64-byte data key",
                self.endpoint()
            ))
        })
    }

    fn query(
        &self,
        service: &str,
        action: &str,
        version: &str,
        params: &[(&str, &str)],
    ) -> ApiResult<XmlReply> {
        let mut body = String::new();
        let all = [("Action", action), ("Version", version)];
        for (i, (k, v)) in all.iter().chain(params).enumerate() {
            if i > 0 {
                body.push('&');
            }
            form_encode(k, &mut body);
            body.push('=');
            form_encode(v, &mut body);
        }
        let content_type = [(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        let (status, _, bytes) = self.send(
            service,
            action,
            ("POST", "/", ""),
            &content_type,
            body.as_bytes(),
        )?;
        let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
        let reply = XmlReply(text);
        if status == 200 {
            return Ok(reply);
        }
        match (reply.text("Code"), reply.text("Message")) {
            (Some(code), message) => Err(ApiError::new(&code, message.unwrap_or_default())),
            _ => Err(ApiError::internal(format!(
                "the control plane at {} answered {action} with HTTP {status}",
                self.endpoint()
            ))),
        }
    }

    /// One call of the EBS direct APIs (REST, signed for `ebs`): `method`
    /// on `path` with the (already encoded, sorted) `query`, the extra
    /// `headers` and `body`. Answers the status, the response headers and
    /// the body of a success; an EBS error answer (`x-amzn-ErrorType`)
    /// becomes the [`ApiError`] it names, its `Reason` in the message.
    pub fn ebs(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> ApiResult<EbsReply> {
        let action = crate::ebs::action_of(method, path);
        let (status, headers, body) = self.send(
            crate::ebs::EBS_SERVICE,
            action,
            (method, path, query),
            headers,
            body,
        )?;
        if (200..300).contains(&status) {
            return Ok(EbsReply { headers, body });
        }
        let code = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-amzn-errortype"))
            .map(|(_, v)| v.split(':').next().unwrap_or_default().to_string());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = v["Message"].as_str().unwrap_or_default().to_string();
        Err(match code {
            Some(code) if !code.is_empty() => ApiError::new(&code, message),
            _ => ApiError::internal(format!(
                "the control plane at {} answered {action} with HTTP {status}",
                self.endpoint()
            )),
        })
    }

    /// Signs and sends one request: its status, headers and body.
    fn send(
        &self,
        service: &str,
        action: &str,
        (method, path, query): (&str, &str, &str),
        extra: &[(String, String)],
        body: &[u8],
    ) -> ApiResult<Answer> {
        let mut headers = vec![
            ("host".to_string(), self.http.authority.clone()),
            (
                "x-amz-date".to_string(),
                sigv4::format_amz_date(time::OffsetDateTime::now_utc()),
            ),
        ];
        headers.extend(extra.iter().cloned());
        let authorization = sigv4::sign_request(
            &HttpRequest {
                method,
                path,
                query,
                headers: &headers,
                body,
            },
            &SigningParams {
                access_key_id: &self.access_key_id,
                secret_access_key: &self.secret_access_key,
                region: self.region.as_str(),
                service,
            },
        )
        .map_err(ApiError::from)?;
        let uri = if query.is_empty() {
            format!("{}{path}", self.http.endpoint)
        } else {
            format!("{}{path}?{query}", self.http.endpoint)
        };
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let req = builder
            .header("authorization", authorization)
            .body(body)
            .map_err(|e| ApiError::internal(format!("cannot build the {action} request: {e}")))?;
        let mut resp = self.http.agent.run(req).map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let bytes = Zeroizing::new(
            resp.body_mut()
                .with_config()
                .limit(MAX_RESPONSE_BYTES)
                .read_to_vec()
                .map_err(|e| self.unreachable(&e))?,
        );
        Ok((status, headers, bytes))
    }

    fn unreachable(&self, e: &ureq::Error) -> ApiError {
        ApiError::new(
            UNREACHABLE,
            format!("cannot reach the control plane at {}: {e}", self.endpoint()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_found_and_unescaped() {
        let r = XmlReply(Zeroizing::new(
            "<a><item><v>x &amp; y &lt;z&gt; &#x41;&#66;</v></item><item><v>2</v></item><w>&bogus;</w></a>"
                .into(),
        ));
        assert_eq!(r.text("v").as_deref(), Some("x & y <z> AB"));
        assert_eq!(r.texts("v"), vec!["x & y <z> AB", "2"]);
        assert_eq!(r.text("w").as_deref(), Some("&bogus;"));
        assert_eq!(r.text("none"), None);
        assert_eq!(unescape("a & b"), "a & b");
        let d = XmlReply(Zeroizing::new(
            "<r><volumeSet><item><id>1</id><attachmentSet><item><status>attaching</status></item></attachmentSet><status>in-use</status></item><item><id>2</id></item></volumeSet></r>".into(),
        ));
        let vols = d.items("volumeSet");
        assert_eq!(vols.len(), 2);
        assert_eq!(vols[0].items("attachmentSet").len(), 1);
        assert_eq!(
            vols[0].without("attachmentSet").text("status").as_deref(),
            Some("in-use")
        );
        assert_eq!(vols[1].text("id").as_deref(), Some("2"));
        assert!(d.items("none").is_empty());
    }

    #[test]
    fn form_values_are_percent_encoded() {
        let mut s = String::new();
        form_encode("a b/c=d&é", &mut s);
        assert_eq!(s, "a%20b%2Fc%3Dd%26%C3%A9");
    }

    #[test]
    fn unreachable_names_the_control_plane() {
        let c = ControlPlaneClient::new(
            "http://127.0.0.1:1",
            Region::default_region(),
            "AKID",
            SecretBytes::from_slice(b"s"),
            None,
        )
        .unwrap();
        let e = c.ec2("DescribeVolumes", &[]).unwrap_err();
        assert_eq!(e.code, UNREACHABLE);
        assert!(
            e.message
                .starts_with("cannot reach the control plane at http://127.0.0.1:1"),
            "{}",
            e.message
        );
        assert!(!format!("{c:?}").contains("\"s\""));
    }
}
