//! The EC2 control plane: volumes, snapshots, tags and the account's EBS
//! encryption defaults as the EC2 API (Query protocol, version 2016-11-15)
//! defines them, behind IAM and in the audit chain.
//!
//! Every call, from the aws CLI over `keyvol serve` or in process, goes
//! through [`call`]: the action is authorized with the caller's identity
//! policies (the KMS's policy engine, `ec2:` actions on
//! `arn:aws:ec2:<region>:<account>:volume/<vol>` and
//! `arn:aws:ec2:<region>::snapshot/<snap>`), run, and recorded as one
//! CloudTrail-shaped event (`eventSource` `ec2.amazonaws.com`) in the same
//! hash chain as the KMS events. The KMS calls an action makes (data keys
//! of volumes and snapshots) are made after it was authorized, on the
//! caller's behalf "via EC2".

pub mod authz;
pub mod hosts;
pub mod local;
pub mod params;
pub mod records;
pub mod xml;

mod account;
pub mod attachments;
mod snapshots;
mod volumes;

use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::policy::ConditionContext;
use crate::session::Session;

pub use local::{gate, Target};
pub use params::{Filter, Params, Tag};

/// The credential-scope service name of EC2.
pub const EC2_SERVICE: &str = "ec2";
/// The API version this module answers.
pub const EC2_VERSION: &str = "2016-11-15";

/// One action: its name, the function that runs it, and whether it
/// changes nothing (read-only in the audit log).
struct Action {
    name: &'static str,
    run: fn(&Call<'_>) -> ApiResult<Value>,
    read_only: bool,
}

macro_rules! actions {
    ($($name:literal => $f:path, $ro:literal;)*) => {
        const ACTIONS: &[Action] = &[$(Action { name: $name, run: $f, read_only: $ro },)*];
    };
}

actions! {
    "CreateVolume" => volumes::create_volume, false;
    "DescribeVolumes" => volumes::describe_volumes, true;
    "DeleteVolume" => volumes::delete_volume, false;
    "ModifyVolume" => volumes::modify_volume, false;
    "DescribeVolumesModifications" => volumes::describe_volumes_modifications, true;
    "DescribeVolumeStatus" => volumes::describe_volume_status, true;
    "AttachVolume" => attachments::attach_volume, false;
    "DetachVolume" => attachments::detach_volume, false;
    "DescribeInstances" => attachments::describe_instances, true;
    "CreateSnapshot" => snapshots::create_snapshot, false;
    "DescribeSnapshots" => snapshots::describe_snapshots, true;
    "DeleteSnapshot" => snapshots::delete_snapshot, false;
    "CopySnapshot" => snapshots::copy_snapshot, false;
    "ModifySnapshotAttribute" => snapshots::modify_snapshot_attribute, false;
    "DescribeSnapshotAttribute" => snapshots::describe_snapshot_attribute, true;
    "ResetSnapshotAttribute" => snapshots::reset_snapshot_attribute, false;
    "CreateTags" => account::create_tags, false;
    "DeleteTags" => account::delete_tags, false;
    "DescribeTags" => account::describe_tags, true;
    "EnableEbsEncryptionByDefault" => account::enable_ebs_encryption_by_default, false;
    "DisableEbsEncryptionByDefault" => account::disable_ebs_encryption_by_default, false;
    "GetEbsEncryptionByDefault" => account::get_ebs_encryption_by_default, true;
    "GetEbsDefaultKmsKeyId" => account::get_ebs_default_kms_key_id, true;
    "ModifyEbsDefaultKmsKeyId" => account::modify_ebs_default_kms_key_id, false;
    "ResetEbsDefaultKmsKeyId" => account::reset_ebs_default_kms_key_id, false;
    "DescribeRegions" => account::describe_regions, true;
    "DescribeAvailabilityZones" => account::describe_availability_zones, true;
}

/// The keyvol extensions [`call`] answers besides [`ACTIONS`].
const ACTIONS_EXTENDED: &[&str] = &[
    hosts::DESCRIBE_HOST_REQUESTS,
    hosts::REPORT_HOST_SNAPSHOT,
    hosts::REPORT_HOST_HYDRATED,
    hosts::CLAIM_VOLUME_DATA,
];

/// The names of every action the control plane answers.
pub fn action_names() -> impl Iterator<Item = &'static str> {
    ACTIONS.iter().map(|a| a.name)
}

/// One call being run: the session of the caller, the parameters, and
/// whether it is a dry run.
pub struct Call<'a> {
    pub s: &'a Session,
    pub p: &'a Params,
    pub action: &'static str,
    dry_run: bool,
}

impl Call<'_> {
    /// Authorizes `ec2:<Action>` on `resources`; a dry run ends here with
    /// `DryRunOperation` when it would have been allowed.
    pub fn authorize(
        &self,
        resources: &[authz::Resource],
        request: &ConditionContext,
    ) -> ApiResult<()> {
        self.authorize_action(&format!("ec2:{}", self.action), resources, request)?;
        if self.dry_run {
            return Err(ApiError::new(
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            ));
        }
        Ok(())
    }

    /// Authorizes another action the call also needs (`ec2:CreateTags`
    /// for tags on create), without ending a dry run.
    pub fn authorize_action(
        &self,
        action: &str,
        resources: &[authz::Resource],
        request: &ConditionContext,
    ) -> ApiResult<()> {
        authz::authorize(self.s, action, resources, request)
    }

    pub fn region(&self) -> &str {
        self.s.ctx.region.as_str()
    }

    pub fn account(&self) -> &str {
        self.s.ctx.caller.account.as_str()
    }
}

/// Runs one EC2 action for the session's caller and records it in the
/// audit log, allowed or refused. `params` are the request's Query
/// parameters (Action and Version included).
pub fn call(s: &Session, params: &Params) -> ApiResult<Value> {
    let action = params.get("Action").unwrap_or_default().to_string();
    let result = run(s, &action, params);
    let read_only = ACTIONS
        .iter()
        .find(|a| a.name == action)
        .is_some_and(|a| a.read_only);
    if let Err(e) = audit(s, "ec2.amazonaws.com", &action, params, &result, read_only) {
        // An action that ran but could not be recorded is reported as
        // failed: nothing is done unaudited without the caller knowing.
        return Err(ApiError::internal(format!(
            "the action ran but its audit record could not be written: {}",
            e.message
        )));
    }
    result
}

fn run(s: &Session, action: &str, params: &Params) -> ApiResult<Value> {
    if action.is_empty() {
        return Err(ApiError::new(
            "MissingAction",
            "The request must contain the parameter Action",
        ));
    }
    if let Some(v) = params.get("Version") {
        if v != EC2_VERSION {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!(
                    "Version {} is not supported: use {EC2_VERSION}.",
                    v.chars().take(32).collect::<String>()
                ),
            ));
        }
    }
    let dry_run = params.bool("DryRun")?.unwrap_or(false);
    if let Some(run) = hosts::extension(action) {
        let name = ACTIONS_EXTENDED
            .iter()
            .copied()
            .find(|n| *n == action)
            .unwrap_or_default();
        return run(&Call {
            s,
            p: params,
            action: name,
            dry_run,
        });
    }
    let Some(a) = ACTIONS.iter().find(|a| a.name == action) else {
        return Err(ApiError::new(
            "InvalidAction",
            format!(
                "The action {} is not valid for this web service.",
                action.chars().take(64).collect::<String>()
            ),
        ));
    };
    let c = Call {
        s,
        p: params,
        action: a.name,
        dry_run,
    };
    (a.run)(&c)
}

/// Caps of what one audit record holds of a request: a denied request
/// cannot grow the log by more than this.
const AUDIT_MAX_PARAMS: usize = 64;
const AUDIT_MAX_VALUE: usize = 256;
const AUDIT_MAX_RESPONSE: usize = 8192;

pub(crate) fn capped(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...(truncated)", &s[..end])
}

/// The audited request parameters: the Query pairs (without Action and
/// Version), capped in number and length.
fn request_parameters(params: &Params) -> Value {
    let mut m = serde_json::Map::new();
    let pairs: Vec<&(String, String)> = params
        .pairs()
        .iter()
        .filter(|(k, _)| k != "Action" && k != "Version")
        .collect();
    for (k, v) in pairs.iter().take(AUDIT_MAX_PARAMS) {
        m.insert(capped(k, 128), json!(capped(v, AUDIT_MAX_VALUE)));
    }
    if pairs.len() > AUDIT_MAX_PARAMS {
        m.insert(
            "keyvolTruncatedParameters".into(),
            json!(pairs.len() - AUDIT_MAX_PARAMS),
        );
    }
    Value::Object(m)
}

fn audit(
    s: &Session,
    event_source: &str,
    action: &str,
    params: &Params,
    result: &ApiResult<Value>,
    read_only: bool,
) -> ApiResult<()> {
    let response = match result {
        Ok(v) if !read_only => v.clone(),
        _ => Value::Null,
    };
    let name = ACTIONS
        .iter()
        .find(|a| a.name == action)
        .map(|a| a.name.to_string())
        .unwrap_or_else(|| capped(action, 64));
    record_event(
        s,
        Event {
            source: event_source,
            name: &name,
            request: request_parameters(params),
            response,
            error: result
                .as_ref()
                .err()
                .map(|e| (e.code.as_str(), e.message.as_str())),
            read_only,
            management: true,
        },
    )
}

/// One CloudTrail-shaped event of a control-plane call (EC2 or EBS).
pub(crate) struct Event<'a> {
    pub source: &'a str,
    pub name: &'a str,
    /// The audited request parameters (already capped by the caller).
    pub request: Value,
    /// The response elements (null for reads); capped here.
    pub response: Value,
    pub error: Option<(&'a str, &'a str)>,
    pub read_only: bool,
    /// A management event, or a data event (EBS block reads and writes).
    pub management: bool,
}

/// Appends `e` to the audit chain as the session's caller's event.
pub(crate) fn record_event(s: &Session, e: Event<'_>) -> ApiResult<()> {
    let caller = &s.ctx.caller;
    let now = s.kms.clock().now();
    let response = {
        let text = serde_json::to_string(&e.response).unwrap_or_default();
        if text.len() <= AUDIT_MAX_RESPONSE {
            e.response
        } else {
            json!({"keyvolTruncated": true, "bytes": text.len()})
        }
    };
    let mut event = json!({
        "eventVersion": "1.08",
        "userIdentity": crate::kms::user_identity(caller),
        "eventTime": crate::clock::to_rfc3339(now),
        "eventSource": e.source,
        "eventName": e.name,
        "awsRegion": s.ctx.region,
        "sourceIPAddress": s.ctx.source_ip.clone().unwrap_or_else(|| "keyvol-cli".into()),
        "userAgent": s.ctx.user_agent.clone().map(|u| capped(&u, 256)).unwrap_or_else(|| "keyvol".into()),
        "requestParameters": e.request,
        "responseElements": response,
        "requestID": s.ctx.audit_request_id(),
        "eventID": uuid::Uuid::new_v4().to_string(),
        "readOnly": e.read_only,
        "eventType": "AwsApiCall",
        "managementEvent": e.management,
        "recipientAccountId": caller.account,
        "eventCategory": if e.management { "Management" } else { "Data" },
    });
    if let Some((code, message)) = e.error {
        event["errorCode"] = json!(code);
        event["errorMessage"] = json!(capped(message, 1024));
    }
    s.kms
        .record_foreign_event(
            caller.account.as_str(),
            caller,
            e.name,
            e.error.map(|(c, _)| c),
            &event,
            e.management,
        )
        .map_err(ApiError::from)
}

// ------------------------------------------------------------ shared helpers

/// Tags as EC2's `tagSet` (null when there are none, as EC2 leaves it out).
pub(crate) fn tag_set(tags: &[Tag]) -> Value {
    if tags.is_empty() {
        return Value::Null;
    }
    Value::Array(
        tags.iter()
            .map(|t| json!({"key": t.key, "value": t.value}))
            .collect(),
    )
}

/// Does `value` match a filter value with EC2's wildcards (`*`, `?`)?
pub(crate) fn filter_match(pattern: &str, value: &str) -> bool {
    crate::policy::wildcard_match(pattern, value)
}

/// Does the resource pass every filter? `field` gives the resource's
/// values for a filter name, or `None` for a name this call does not know.
pub(crate) fn passes(
    filters: &[Filter],
    tags: &[Tag],
    field: &dyn Fn(&str) -> Option<Vec<String>>,
) -> ApiResult<bool> {
    for f in filters {
        let values: Vec<String> = if let Some(k) = f.name.strip_prefix("tag:") {
            tags.iter()
                .filter(|t| t.key == k)
                .map(|t| t.value.clone())
                .collect()
        } else if f.name == "tag-key" {
            tags.iter().map(|t| t.key.clone()).collect()
        } else if f.name == "tag-value" {
            tags.iter().map(|t| t.value.clone()).collect()
        } else {
            field(&f.name).ok_or_else(|| {
                ApiError::new(
                    "InvalidParameterValue",
                    format!(
                        "The filter '{}' is invalid",
                        f.name.chars().take(64).collect::<String>()
                    ),
                )
            })?
        };
        if !f
            .values
            .iter()
            .any(|p| values.iter().any(|v| filter_match(p, v)))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One page of `items`: `MaxResults` (at least `min`, at most `max` items
/// returned, as the action's reference says) and an opaque `NextToken` from the last page.
pub(crate) fn page(
    p: &Params,
    items: Vec<Value>,
    min: i64,
    max: i64,
) -> ApiResult<(Vec<Value>, Option<String>)> {
    let limit = match p.int("MaxResults")? {
        None => None,
        // As EC2: a larger MaxResults returns at most `max` items.
        Some(n) if n >= min => Some(n.min(max) as usize),
        Some(n) => {
            return Err(ApiError::invalid_parameter(format!(
                "Value ({n}) for parameter maxResults is invalid. Expecting a value between {min} and {max}."
            )))
        }
    };
    let start = match p.get("NextToken") {
        None | Some("") => 0,
        Some(t) => decode_token(t).ok_or_else(|| {
            ApiError::new(
                "InvalidPaginationToken",
                "The pagination token is invalid or expired: pass the NextToken of the previous page unchanged",
            )
        })?,
    };
    if start > items.len() {
        return Err(ApiError::new(
            "InvalidPaginationToken",
            "The pagination token is beyond the end of the results",
        ));
    }
    let Some(limit) = limit else {
        return Ok((items.into_iter().skip(start).collect(), None));
    };
    let end = (start + limit).min(items.len());
    let next = (end < items.len()).then(|| encode_token(end));
    Ok((items.into_iter().skip(start).take(limit).collect(), next))
}

fn encode_token(offset: usize) -> String {
    crate::kms::api::b64_encode(format!("keyvol-page:{offset}").as_bytes())
}

fn decode_token(t: &str) -> Option<usize> {
    let raw = crate::kms::api::b64_decode(t)?;
    let s = std::str::from_utf8(&raw).ok()?;
    s.strip_prefix("keyvol-page:")?.parse().ok()
}

/// MaxResults cannot be combined with ids (EC2 refuses it).
pub(crate) fn no_ids_with_max_results(p: &Params, ids: &[String], what: &str) -> ApiResult<()> {
    if !ids.is_empty() && p.get("MaxResults").is_some() {
        return Err(ApiError::invalid_parameter(format!(
            "The parameter {what} cannot be used with the parameter maxResults"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_item_once() {
        let items: Vec<Value> = (0..12).map(|i| json!(i)).collect();
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut pairs = vec![("MaxResults".to_string(), "5".to_string())];
            if let Some(t) = &token {
                pairs.push(("NextToken".into(), t.clone()));
            }
            let (got, next) = page(&Params::new(pairs), items.clone(), 5, 500).unwrap();
            seen.extend(got);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, items);
        let bad = Params::new(vec![("NextToken".into(), "garbage".into())]);
        assert_eq!(
            page(&bad, items.clone(), 5, 500).unwrap_err().code,
            "InvalidPaginationToken"
        );
        let small = Params::new(vec![("MaxResults".into(), "2".into())]);
        assert_eq!(
            page(&small, items, 5, 500).unwrap_err().code,
            "InvalidParameterValue"
        );
    }

    #[test]
    fn filters_use_wildcards_and_tags() {
        let tags = vec![Tag {
            key: "team".into(),
            value: "db-prod".into(),
        }];
        let f = |n: &str| (n == "status").then(|| vec!["available".to_string()]);
        let ok = |filters: Vec<Filter>| passes(&filters, &tags, &f).unwrap();
        assert!(ok(vec![Filter {
            name: "tag:team".into(),
            values: vec!["db-*".into()]
        }]));
        assert!(!ok(vec![Filter {
            name: "tag:team".into(),
            values: vec!["web".into()]
        }]));
        assert!(ok(vec![Filter {
            name: "status".into(),
            values: vec!["in-use".into(), "available".into()]
        }]));
        assert!(ok(vec![Filter {
            name: "tag-key".into(),
            values: vec!["team".into()]
        }]));
        assert!(passes(
            &[Filter {
                name: "bogus".into(),
                values: vec![]
            }],
            &tags,
            &f
        )
        .is_err());
    }
}
