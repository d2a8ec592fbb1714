//! The EBS direct APIs (REST-JSON, version 2019-11-02) on `keyvol serve`:
//! StartSnapshot, PutSnapshotBlock, CompleteSnapshot, ListSnapshotBlocks,
//! ListChangedBlocks and GetSnapshotBlock, for requests whose SigV4
//! credential scope names `ebs`.
//!
//! Each call is authorized as `ebs:<Action>` on the snapshot's ARN
//! (`arn:aws:ec2:<region>::snapshot/<snap>`, `snapshot/*` for
//! StartSnapshot) with the caller's identity policies, by the same policy
//! engine as EC2 and the KMS, with `aws:RequestTag/K`, `aws:TagKeys` and
//! `aws:ResourceTag/K`; the KMS calls under it (a new data key at start,
//! the data key's Decrypt for writes and reads) are the caller's, made via
//! EC2. Every call, allowed or refused, is one CloudTrail-shaped event
//! (`eventSource` `ebs.amazonaws.com`) in the audit chain: StartSnapshot
//! and CompleteSnapshot as management events, the block and list calls as
//! data events (`managementEvent` false, `eventCategory` `Data`), each
//! recorded on its own (no sampling). A request past the quotas of
//! [`quota`] is refused before anything else (and recorded). The engine is
//! [`crate::snapshot::direct`].

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub mod quota;

use crate::api_error::ApiError;
use crate::ec2::authz::{request_tags, snapshot_arn, Resource};
use crate::ec2::records::{check_tags, Records};
use crate::ec2::Tag;
use crate::session::Session;
use crate::snapshot::direct::{self, DirectError, DirectResult, Paging};

/// The credential-scope service name of the EBS direct APIs.
pub const EBS_SERVICE: &str = "ebs";
const EVENT_SOURCE: &str = "ebs.amazonaws.com";

/// One HTTP request of the EBS API, its signature already verified.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response body: JSON, or a block's bytes.
pub enum Body {
    Json(Value),
    Empty,
    Block(Vec<u8>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(v) => write!(f, "Json({v})"),
            Body::Empty => f.write_str("Empty"),
            Body::Block(b) => write!(f, "Block({} bytes)", b.len()),
        }
    }
}

/// An EBS response: status, headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    fn json(status: u16, v: Value) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Json(v),
        }
    }

    /// EBS's error response: `x-amzn-ErrorType` and a body with the
    /// error shape's `Message` and `Reason`.
    pub fn error(e: &DirectError) -> Self {
        let mut body = json!({"Message": e.message});
        if let Some(r) = e.reason {
            body["Reason"] = json!(r);
        }
        Response {
            status: e.status(),
            headers: vec![("x-amzn-ErrorType", e.code.to_string())],
            body: Body::Json(body),
        }
    }
}

/// The operation a method and path name, and its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Start,
    Put { id: String, index: String },
    Complete { id: String },
    ListBlocks { id: String },
    Get { id: String, index: String },
    Changed { id: String },
}

impl Route {
    fn of(method: &str, path: &str) -> Option<Route> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let s = |x: &str| x.to_string();
        match (method, segs.as_slice()) {
            ("POST", ["snapshots"]) => Some(Route::Start),
            ("POST", ["snapshots", "completion", id]) => Some(Route::Complete { id: s(id) }),
            ("PUT", ["snapshots", id, "blocks", i]) => Some(Route::Put {
                id: s(id),
                index: s(i),
            }),
            ("GET", ["snapshots", id, "blocks"]) => Some(Route::ListBlocks { id: s(id) }),
            ("GET", ["snapshots", id, "blocks", i]) => Some(Route::Get {
                id: s(id),
                index: s(i),
            }),
            ("GET", ["snapshots", id, "changedblocks"]) => Some(Route::Changed { id: s(id) }),
            _ => None,
        }
    }

    fn action(&self) -> &'static str {
        match self {
            Route::Start => "StartSnapshot",
            Route::Put { .. } => "PutSnapshotBlock",
            Route::Complete { .. } => "CompleteSnapshot",
            Route::ListBlocks { .. } => "ListSnapshotBlocks",
            Route::Get { .. } => "GetSnapshotBlock",
            Route::Changed { .. } => "ListChangedBlocks",
        }
    }

    fn is_management(&self) -> bool {
        matches!(self, Route::Start | Route::Complete { .. })
    }
}

/// Is this request PutSnapshotBlock (whose body may be unsigned)?
pub fn is_put_block(method: &str, path: &str) -> bool {
    matches!(Route::of(method, path), Some(Route::Put { .. }))
}

/// The action a request names, for logs and metrics.
pub fn action_of(method: &str, path: &str) -> &'static str {
    Route::of(method, path)
        .map(|r| r.action())
        .unwrap_or("Unknown")
}

/// Answers one EBS request for the session's caller and records it.
pub fn handle(s: &Session, req: &Request<'_>) -> Response {
    let Some(route) = Route::of(req.method, req.path) else {
        let e = DirectError::new(
            "ValidationException",
            Some("INVALID_PARAMETER_VALUE"),
            format!(
                "No EBS direct API operation is {} {}",
                req.method.chars().take(16).collect::<String>(),
                req.path.chars().take(128).collect::<String>()
            ),
        );
        return Response::error(&e);
    };
    let q = Query(crate::server::sts::query_params(b"", req.query));
    let mut audited = json!({});
    let result = run(s, &route, req, &q, &mut audited);
    let (response_elements, error) = match &result {
        Ok(r) => (
            match (&route, &r.body) {
                (Route::Start | Route::Complete { .. }, Body::Json(v)) => v.clone(),
                _ => Value::Null,
            },
            None,
        ),
        Err(e) => (Value::Null, Some(e)),
    };
    if let Err(e) = record(s, &route, audited, response_elements, error) {
        return Response::error(&DirectError::internal(format!(
            "the call ran but its audit record could not be written: {}",
            e.message
        )));
    }
    match result {
        Ok(r) => r,
        Err(e) => Response::error(&e),
    }
}

/// The query-string parameters of a request.
struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn run(
    s: &Session,
    route: &Route,
    req: &Request<'_>,
    q: &Query,
    audited: &mut Value,
) -> DirectResult<Response> {
    let snapshot = match route {
        Route::Put { id, .. } | Route::Get { id, .. } => Some(id.as_str()),
        _ => None,
    };
    quota::admit(
        s.home.dir(),
        s.ctx.caller.account.as_str(),
        route.action(),
        snapshot,
    )?;
    match route {
        Route::Start => start(s, req, audited),
        Route::Put { id, index } => {
            let index = block_index(index)?;
            *audited = json!({"snapshotId": id, "blockIndex": index});
            authorize(
                s,
                "ebs:PutSnapshotBlock",
                &[snapshot_resource(s, id)?],
                None,
            )?;
            let length = req
                .header("x-amz-Data-Length")
                .ok_or_else(|| missing("x-amz-Data-Length"))?;
            let length: usize = length.trim().parse().map_err(|_| {
                DirectError::validation(
                    "INVALID_PARAMETER_VALUE",
                    "x-amz-Data-Length is not a number",
                )
            })?;
            if length != req.body.len() {
                return Err(DirectError::validation(
                    "INVALID_PARAMETER_VALUE",
                    format!(
                        "x-amz-Data-Length is {length} but the body has {} bytes",
                        req.body.len()
                    ),
                ));
            }
            let algorithm = req
                .header("x-amz-Checksum-Algorithm")
                .ok_or_else(|| missing("x-amz-Checksum-Algorithm"))?;
            if algorithm.trim() != "SHA256" {
                return Err(DirectError::validation(
                    "INVALID_PARAMETER_VALUE",
                    "x-amz-Checksum-Algorithm must be SHA256",
                ));
            }
            let checksum = req
                .header("x-amz-Checksum")
                .ok_or_else(|| missing("x-amz-Checksum"))?;
            let progress = match req.header("x-amz-Progress") {
                None => None,
                Some(p) => match p.trim().parse::<u8>() {
                    Ok(n @ 0..=100) => Some(n),
                    _ => {
                        return Err(DirectError::validation(
                            "INVALID_PARAMETER_VALUE",
                            "x-amz-Progress must be a percentage from 0 to 100",
                        ))
                    }
                },
            };
            let sum = direct::put_block(s, id, index, req.body, checksum, progress)?;
            Ok(Response {
                status: 201,
                headers: vec![
                    ("x-amz-Checksum", sum),
                    ("x-amz-Checksum-Algorithm", "SHA256".into()),
                ],
                body: Body::Empty,
            })
        }
        Route::Complete { id } => {
            let count = req
                .header("x-amz-ChangedBlocksCount")
                .ok_or_else(|| missing("x-amz-ChangedBlocksCount"))?;
            let count: u64 = count.trim().parse().map_err(|_| {
                DirectError::validation(
                    "INVALID_PARAMETER_VALUE",
                    "x-amz-ChangedBlocksCount must be a number of blocks (0 or more)",
                )
            })?;
            *audited = json!({"snapshotId": id, "changedBlocksCount": count});
            authorize(
                s,
                "ebs:CompleteSnapshot",
                &[snapshot_resource(s, id)?],
                None,
            )?;
            let v = direct::complete(
                s,
                id,
                count,
                req.header("x-amz-Checksum"),
                req.header("x-amz-Checksum-Algorithm").map(str::trim),
                req.header("x-amz-Checksum-Aggregation-Method")
                    .map(str::trim),
            )?;
            Ok(Response::json(202, v))
        }
        Route::ListBlocks { id } => {
            let paging = paging(q)?;
            *audited = json!({"snapshotId": id});
            authorize(
                s,
                "ebs:ListSnapshotBlocks",
                &[snapshot_resource(s, id)?],
                None,
            )?;
            Ok(Response::json(200, direct::list_blocks(s, id, paging)?))
        }
        Route::Changed { id } => {
            let paging = paging(q)?;
            let first = q.get("firstSnapshotId").filter(|f| !f.is_empty());
            *audited = json!({"secondSnapshotId": id, "firstSnapshotId": first});
            let mut resources = vec![snapshot_resource(s, id)?];
            if let Some(f) = first {
                resources.push(snapshot_resource(s, f)?);
            }
            authorize(s, "ebs:ListChangedBlocks", &resources, None)?;
            Ok(Response::json(
                200,
                direct::list_changed_blocks(s, first, id, paging)?,
            ))
        }
        Route::Get { id, index } => {
            let index = block_index(index)?;
            *audited = json!({"snapshotId": id, "blockIndex": index});
            authorize(
                s,
                "ebs:GetSnapshotBlock",
                &[snapshot_resource(s, id)?],
                None,
            )?;
            let token = q.get("blockToken").ok_or_else(|| missing("blockToken"))?;
            let (data, sum) = direct::get_block(s, id, index, token)?;
            Ok(Response {
                status: 200,
                headers: vec![
                    ("x-amz-Data-Length", data.len().to_string()),
                    ("x-amz-Checksum", sum),
                    ("x-amz-Checksum-Algorithm", "SHA256".into()),
                ],
                body: Body::Block(data),
            })
        }
    }
}

fn missing(name: &str) -> DirectError {
    DirectError::validation(
        "INVALID_PARAMETER_VALUE",
        format!("The request must carry {name}"),
    )
}

fn block_index(s: &str) -> DirectResult<u64> {
    s.parse::<u64>()
        .ok()
        .filter(|i| *i <= i32::MAX as u64)
        .ok_or_else(|| {
            DirectError::validation(
                "INVALID_BLOCK",
                format!(
                    "BlockIndex '{}' is not a block index (0 or more)",
                    s.chars().take(32).collect::<String>()
                ),
            )
        })
}

fn paging(q: &Query) -> DirectResult<Paging<'_>> {
    let int = |name: &str| -> DirectResult<Option<i64>> {
        match q.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                DirectError::validation(
                    "INVALID_PARAMETER_VALUE",
                    format!("{name} must be a number"),
                )
            }),
        }
    };
    let start = int("startingBlockIndex")?;
    if start.is_some_and(|s| s < 0) {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            "startingBlockIndex must be 0 or more",
        ));
    }
    Ok(Paging {
        max_results: int("maxResults")?,
        next_token: q.get("pageToken"),
        starting_block_index: start.map(|s| s as u64),
    })
}

fn start(s: &Session, req: &Request<'_>, audited: &mut Value) -> DirectResult<Response> {
    let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(req.body).map_err(|e| {
            DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                format!("The request body is not JSON: {e}"),
            )
        })?
    };
    let Some(obj) = body.as_object() else {
        return Err(DirectError::validation(
            "INVALID_PARAMETER_VALUE",
            "The request body must be a JSON object",
        ));
    };
    let string = |name: &str| -> DirectResult<Option<String>> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(_) => Err(DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                format!("{name} must be a string"),
            )),
        }
    };
    let volume_size = match obj.get("VolumeSize") {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            DirectError::validation(
                "INVALID_VOLUME_SIZE",
                "VolumeSize must be a whole number of GiB",
            )
        })?,
        None | Some(Value::Null) => return Err(missing("VolumeSize")),
        Some(_) => {
            return Err(DirectError::validation(
                "INVALID_VOLUME_SIZE",
                "VolumeSize must be a whole number of GiB",
            ))
        }
    };
    let encrypted = match obj.get("Encrypted") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                "Encrypted must be true or false",
            ))
        }
    };
    let timeout = match obj.get("Timeout") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
            DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                "Timeout must be a whole number of minutes",
            )
        })?),
        Some(_) => {
            return Err(DirectError::validation(
                "INVALID_PARAMETER_VALUE",
                "Timeout must be a whole number of minutes",
            ))
        }
    };
    let tags = tags_of(obj.get("Tags"))?;
    check_tags(&tags).map_err(|e| DirectError::validation("INVALID_TAG", e.message))?;
    let mut hashed = body.clone();
    if let Some(o) = hashed.as_object_mut() {
        o.remove("ClientToken");
    }
    let request = direct::StartRequest {
        volume_size_gib: volume_size,
        parent_snapshot_id: string("ParentSnapshotId")?,
        description: string("Description")?.unwrap_or_default(),
        client_token: string("ClientToken")?,
        encrypted,
        kms_key_arn: string("KmsKeyArn")?,
        timeout_minutes: timeout,
        request_hash: hex::encode(Sha256::digest(hashed.to_string().as_bytes())),
    };
    *audited = json!({
        "volumeSize": volume_size,
        "parentSnapshotId": request.parent_snapshot_id,
        "description": request.description.chars().take(255).collect::<String>(),
        "encrypted": encrypted,
        "kmsKeyArn": request.kms_key_arn.as_ref().map(|k| k.chars().take(256).collect::<String>()),
        "timeout": timeout,
        "tags": tags
            .iter()
            .take(50)
            .map(|t| json!({
                "Key": t.key.chars().take(128).collect::<String>(),
                "Value": t.value.chars().take(256).collect::<String>(),
            }))
            .collect::<Vec<_>>(),
    });
    let mut resources = vec![Resource::new(snapshot_arn(s.ctx.region.as_str(), "*"))];
    if let Some(p) = &request.parent_snapshot_id {
        resources.push(snapshot_resource(s, p)?);
    }
    authorize(s, "ebs:StartSnapshot", &resources, Some(&tags))?;
    let records = Records::open(s)?;
    let (by_default, default_key) = records.ebs_defaults()?;
    let _ = by_default;
    let mut v = direct::start(s, &request, default_key.as_deref())?;
    let id = v["SnapshotId"].as_str().unwrap_or_default().to_string();
    if records.tags(&id)?.is_empty() {
        records.put_tags(&id, &tags)?;
    }
    let stored = records.tags(&id)?;
    if !stored.is_empty() {
        v["Tags"] = Value::Array(
            stored
                .iter()
                .map(|t| json!({"Key": t.key, "Value": t.value}))
                .collect(),
        );
    }
    Ok(Response::json(201, v))
}

fn tags_of(v: Option<&Value>) -> DirectResult<Vec<Tag>> {
    let bad = || {
        DirectError::validation(
            "INVALID_TAG",
            "Tags must be a list of {\"Key\": ..., \"Value\": ...} objects",
        )
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                let key = t.get("Key").and_then(Value::as_str).ok_or_else(bad)?;
                let value = match t.get("Value") {
                    None | Some(Value::Null) => "",
                    Some(Value::String(v)) => v.as_str(),
                    Some(_) => return Err(bad()),
                };
                Ok(Tag {
                    key: key.to_string(),
                    value: value.to_string(),
                })
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// A snapshot as a resource of a request: its ARN and, for the caller's
/// own snapshots, its tags.
fn snapshot_resource(s: &Session, id: &str) -> DirectResult<Resource> {
    let tags = if id.starts_with("snap-") && id.len() <= 64 {
        Records::open(s)?.tags(id)?
    } else {
        Vec::new()
    };
    Ok(Resource::new(snapshot_arn(s.ctx.region.as_str(), id)).with_tags(&tags))
}

fn authorize(
    s: &Session,
    action: &str,
    resources: &[Resource],
    tags: Option<&[Tag]>,
) -> DirectResult<()> {
    let request = tags.map(request_tags).unwrap_or_default();
    crate::ec2::authz::authorize(s, action, resources, &request).map_err(|e| {
        DirectError::new(
            "AccessDeniedException",
            Some("UNAUTHORIZED_ACCOUNT"),
            e.message
                .replace("You are not authorized to perform this operation. ", ""),
        )
    })
}

fn record(
    s: &Session,
    route: &Route,
    request: Value,
    response: Value,
    error: Option<&DirectError>,
) -> Result<(), ApiError> {
    let management = route.is_management();
    crate::ec2::record_event(
        s,
        crate::ec2::Event {
            source: EVENT_SOURCE,
            name: route.action(),
            request,
            response,
            error: error.map(|e| (e.code, e.message.as_str())),
            read_only: matches!(
                route,
                Route::ListBlocks { .. } | Route::Get { .. } | Route::Changed { .. }
            ),
            management,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_ebs_model() {
        assert_eq!(Route::of("POST", "/snapshots"), Some(Route::Start));
        assert_eq!(
            Route::of("PUT", "/snapshots/snap-0123456789abcdef0/blocks/7"),
            Some(Route::Put {
                id: "snap-0123456789abcdef0".into(),
                index: "7".into()
            })
        );
        assert_eq!(
            Route::of("POST", "/snapshots/completion/snap-1").map(|r| r.action()),
            Some("CompleteSnapshot")
        );
        assert_eq!(
            Route::of("GET", "/snapshots/snap-1/changedblocks").map(|r| r.action()),
            Some("ListChangedBlocks")
        );
        assert_eq!(
            Route::of("GET", "/snapshots/snap-1/blocks/3").map(|r| r.action()),
            Some("GetSnapshotBlock")
        );
        assert_eq!(Route::of("DELETE", "/snapshots/snap-1"), None);
        assert_eq!(Route::of("GET", "/"), None);
        assert!(is_put_block("PUT", "/snapshots/snap-1/blocks/0"));
        assert!(!is_put_block("GET", "/snapshots/snap-1/blocks/0"));
    }

    #[test]
    fn block_indices_are_whole_numbers() {
        assert_eq!(block_index("0").unwrap(), 0);
        assert!(block_index("-1").is_err());
        assert!(block_index("1e3").is_err());
        assert!(block_index("99999999999").is_err());
    }

    #[test]
    fn errors_carry_their_type_and_reason() {
        let r = Response::error(&DirectError::validation("INVALID_BLOCK_TOKEN", "bad"));
        assert_eq!(r.status, 400);
        assert_eq!(r.headers[0].1, "ValidationException");
        match r.body {
            Body::Json(v) => assert_eq!(v["Reason"], "INVALID_BLOCK_TOKEN"),
            other => panic!("{other:?}"),
        }
    }
}
