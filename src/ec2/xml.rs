//! EC2 responses and errors as XML, as the EC2 Query protocol sends them.
//!
//! An operation builds its response as a JSON object whose member names
//! are already the EC2 wire names (`volumeId`, `tagSet`, ...); lists
//! become `<item>` elements, `null` members are left out.

use serde_json::Value;

use crate::api_error::ApiError;

/// The XML namespace of EC2 API version 2016-11-15.
pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Escapes text for an XML element.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push_str("&#xFFFD;"),
            c => out.push(c),
        }
    }
}

fn element(name: &str, v: &Value, out: &mut String) {
    match v {
        Value::Null => {}
        Value::Array(items) => {
            out.push_str(&format!("<{name}>"));
            for i in items {
                element("item", i, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::Object(m) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in m {
                element(k, v, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::String(s) => {
            out.push_str(&format!("<{name}>"));
            escape(s, out);
            out.push_str(&format!("</{name}>"));
        }
        Value::Bool(b) => out.push_str(&format!("<{name}>{b}</{name}>")),
        Value::Number(n) => out.push_str(&format!("<{name}>{n}</{name}>")),
    }
}

/// `<{Action}Response xmlns=...><requestId>..</requestId>...members...`.
pub fn response(action: &str, body: &Value, request_id: &str) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!("<{action}Response xmlns=\"{NAMESPACE}\">"));
    out.push_str("<requestId>");
    escape(request_id, &mut out);
    out.push_str("</requestId>");
    if let Value::Object(m) = body {
        for (k, v) in m {
            element(k, v, &mut out);
        }
    }
    out.push_str(&format!("</{action}Response>"));
    out
}

/// The XML error body EC2 sends.
pub fn error(e: &ApiError, request_id: &str) -> String {
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>");
    escape(&e.code, &mut out);
    out.push_str("</Code><Message>");
    escape(&e.message, &mut out);
    out.push_str("</Message></Error></Errors><RequestID>");
    escape(request_id, &mut out);
    out.push_str("</RequestID></Response>");
    out
}

/// The HTTP status EC2 answers an error with.
pub fn status(e: &ApiError) -> u16 {
    match e.code.as_str() {
        "AuthFailure" | "SignatureDoesNotMatch" | "InvalidClientTokenId" => 401,
        "UnauthorizedOperation" | "OptInRequired" | "Blocked" => 403,
        "DryRunOperation" => 412,
        "RequestLimitExceeded" => 503,
        "InternalError" | "InternalFailure" | "KMSInternalException" => 500,
        "ServiceUnavailable" | "Unavailable" => 503,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_become_items_and_text_is_escaped() {
        let x = response(
            "DescribeVolumes",
            &json!({"volumeSet": [{"volumeId": "vol-1", "size": 8, "encrypted": true, "tagSet": [{"key": "a<b", "value": "&"}], "snapshotId": null}]}),
            "rid",
        );
        // Members come in name order (serde_json's map); XML readers match
        // them by name.
        for part in [
            "<volumeSet><item>",
            "<volumeId>vol-1</volumeId>",
            "<size>8</size>",
            "<encrypted>true</encrypted>",
            "<tagSet><item><key>a&lt;b</key><value>&amp;</value></item></tagSet>",
        ] {
            assert!(x.contains(part), "{part} missing from {x}");
        }
        assert!(!x.contains("snapshotId"));
        assert!(x.starts_with("<?xml"));
        let e = error(
            &ApiError::new("InvalidVolume.NotFound", "no <vol>\u{1}"),
            "r",
        );
        assert!(
            e.contains(
                "<Code>InvalidVolume.NotFound</Code><Message>no &lt;vol&gt;&#xFFFD;</Message>"
            ),
            "{e}"
        );
        assert_eq!(status(&ApiError::new("UnauthorizedOperation", "")), 403);
    }
}
