//! CreateSnapshot, DescribeSnapshots, DeleteSnapshot, CopySnapshot and the
//! createVolumePermission attribute (Modify/Describe/ResetSnapshotAttribute).
//!
//! CreateSnapshot and CopySnapshot answer as soon as the snapshot is
//! `pending`, as EC2 does; the copy or upload goes on in the service and
//! ends `completed` or `error` with a `statusMessage`.

use std::sync::mpsc;

use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::ids::Region;
use crate::policy::ConditionContext;
use crate::snapshot::ops as snapshot_ops;

use super::authz::{request_tags, snapshot_arn, volume_arn, Resource};
use super::records::{check_tags, Records};
use super::{page, passes, tag_set, Call, Tag};

/// The EC2 `Snapshot` of the snapshot layer's JSON; tags only for the
/// owner (EC2 shows no tags of other accounts' snapshots).
fn snapshot_json(v: &Value, tags: &[Tag]) -> Value {
    json!({
        "snapshotId": v["SnapshotId"],
        "volumeId": v["VolumeId"],
        "status": v["State"],
        "statusMessage": v.get("StateMessage"),
        "startTime": v["StartTime"],
        "progress": v["Progress"],
        "ownerId": v["OwnerId"],
        "description": v["Description"],
        "volumeSize": v["VolumeSize"],
        "encrypted": true,
        "kmsKeyId": v["KmsKeyId"],
        "storageTier": "standard",
        "tagSet": tag_set(tags),
    })
}

/// A snapshot the caller can see (own or shared) as a resource of a
/// request: its ARN and condition keys.
pub(crate) fn snapshot_resource(c: &Call<'_>, id: &str) -> ApiResult<Resource> {
    let v = snapshot_ops::describe(c.s, id)?;
    let own = v["OwnerId"] == c.account();
    let tags = if own {
        Records::open(c.s)?.tags(id)?
    } else {
        Vec::new()
    };
    Ok(Resource::new(snapshot_arn(c.region(), id))
        .with("ec2:Encrypted", true)
        .with("ec2:Owner", v["OwnerId"].as_str().unwrap_or_default())
        .with("ec2:VolumeSize", v["VolumeSize"].as_i64().unwrap_or(0))
        .with(
            "ec2:ParentVolume",
            volume_arn(
                c.region(),
                v["OwnerId"].as_str().unwrap_or_default(),
                v["VolumeId"].as_str().unwrap_or_default(),
            ),
        )
        .with_tags(&tags))
}

/// Hears the pending snapshot of a background operation.
struct Pending(mpsc::Sender<Value>);
impl snapshot_ops::Reporter for Pending {
    fn pending(&mut self, snapshot: &Value) {
        let _ = self.0.send(snapshot.clone());
    }
}

/// Runs `work` on its own thread with a session of its own, and returns
/// the pending snapshot it reports first, or its error when it fails
/// before one exists.
fn in_background(
    c: &Call<'_>,
    work: impl FnOnce(&crate::session::Session, &mut Pending) -> ApiResult<Value> + Send + 'static,
) -> ApiResult<Value> {
    let (tx, rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let s = c.s.clone();
    std::thread::Builder::new()
        .name("ec2-snapshot".into())
        .spawn(move || {
            let mut rep = Pending(tx);
            if let Err(e) = work(&s, &mut rep) {
                let _ = etx.send(e);
            }
        })
        .map_err(|e| ApiError::internal(format!("cannot start the snapshot worker: {e}")))?;
    match rx.recv() {
        Ok(v) => Ok(v),
        // The worker ended without a pending snapshot: its error says why.
        Err(_) => Err(erx
            .recv()
            .unwrap_or_else(|_| ApiError::internal("the snapshot worker ended without a result"))),
    }
}

pub fn create_snapshot(c: &Call<'_>) -> ApiResult<Value> {
    let vol = c.p.required("VolumeId")?.to_string();
    let description = c.p.get("Description").unwrap_or_default().to_string();
    if description.chars().count() > 255 {
        return Err(ApiError::invalid_parameter(
            "The description is longer than 255 characters",
        ));
    }
    let tags = c.p.tag_specifications("snapshot")?;
    check_tags(&tags)?;
    let vols = super::volumes::volumes(c)?;
    let records = Records::open(c.s)?;
    let r = vols.get(&vol)?;
    let o = records.volume_options(&vol)?;
    let vtags = records.tags(&vol)?;
    let resources = [
        super::volumes::volume_resource(c, &r, &o, &vtags),
        Resource::new(snapshot_arn(c.region(), "*")),
    ];
    let request = request_tags(&tags);
    if !tags.is_empty() {
        c.authorize_action(
            "ec2:CreateTags",
            &resources[1..],
            &request.clone().with("ec2:CreateAction", "CreateSnapshot"),
        )?;
    }
    c.authorize(&resources, &request)?;
    // A volume attached to a host on another machine is cut there
    // (`snapshot::ops::host`); one whose data stays on such a host while
    // detached is refused by `create`.
    let opts = snapshot_ops::CreateOptions {
        description,
        freeze: None,
    };
    let pending = in_background(c, move |s, rep| snapshot_ops::create(s, &vol, &opts, rep))?;
    let id = pending["SnapshotId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    records.put_tags(&id, &tags)?;
    Ok(snapshot_json(&pending, &tags))
}

/// Every snapshot the caller may see in this region: own and shared with
/// it, each with its tags (own only).
fn visible(c: &Call<'_>, records: &Records<'_>) -> ApiResult<Vec<(Value, Vec<Tag>)>> {
    let mut all = Vec::new();
    for shared in [false, true] {
        let v = snapshot_ops::describe_snapshots(c.s, shared)?;
        for snap in v["Snapshots"].as_array().cloned().unwrap_or_default() {
            let tags = if shared {
                Vec::new()
            } else {
                records.tags(snap["SnapshotId"].as_str().unwrap_or_default())?
            };
            all.push((snap, tags));
        }
    }
    Ok(all)
}

pub fn describe_snapshots(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    let owners = c.p.list("Owner")?;
    let restorable = c.p.list("RestorableBy")?;
    let ids = c.p.list("SnapshotId")?;
    super::no_ids_with_max_results(c.p, &ids, "snapshotIds")?;
    c.authorize(&[Resource::new("*".into())], &ConditionContext::new())?;
    let me = c.account().to_string();
    let records = Records::open(c.s)?;
    let mut snaps = visible(c, &records)?;
    if !ids.is_empty() {
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !snaps.iter().any(|(s, _)| s["SnapshotId"] == id.as_str()))
            .collect();
        if let Some(m) = missing.first() {
            snapshot_ops::parse_snapshot_id(m)?;
            return Err(ApiError::new(
                "InvalidSnapshot.NotFound",
                format!("The snapshot '{m}' does not exist."),
            ));
        }
        snaps.retain(|(s, _)| ids.iter().any(|id| s["SnapshotId"] == id.as_str()));
    }
    if !owners.is_empty() {
        snaps.retain(|(s, _)| {
            let owner = s["OwnerId"].as_str().unwrap_or_default();
            owners
                .iter()
                .any(|o| (o == "self" && owner == me) || o == owner)
        });
    }
    if !restorable.is_empty() {
        // Restorable by `self`: own and shared with the caller. Restorable
        // by another account: the caller's own snapshots shared with it.
        let mut keep = Vec::new();
        for (s, t) in snaps {
            let owner = s["OwnerId"].as_str().unwrap_or_default().to_string();
            let id = s["SnapshotId"].as_str().unwrap_or_default().to_string();
            let mut ok = false;
            for r in &restorable {
                if r == "self" || *r == me {
                    ok = true;
                } else if owner == me {
                    let perms = snapshot_ops::describe_attribute(c.s, &id)?;
                    ok |= perms["CreateVolumePermissions"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|p| p["UserId"] == r.as_str()));
                }
            }
            if ok {
                keep.push((s, t));
            }
        }
        snaps = keep;
    }
    let mut out = Vec::new();
    for (s, tags) in snaps {
        let v = snapshot_json(&s, &tags);
        let field = |name: &str| -> Option<Vec<String>> {
            let one = |k: &str| {
                Some(vec![match &v[k] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                }])
            };
            match name {
                "snapshot-id" => one("snapshotId"),
                "status" => one("status"),
                "volume-id" => one("volumeId"),
                "owner-id" => one("ownerId"),
                "description" => one("description"),
                "progress" => one("progress"),
                "start-time" => one("startTime"),
                "volume-size" => one("volumeSize"),
                "encrypted" => one("encrypted"),
                "storage-tier" => one("storageTier"),
                _ => None,
            }
        };
        if passes(&filters, &tags, &field)? {
            out.push(v);
        }
    }
    let (items, next) = page(c.p, out, 5, 1000)?;
    Ok(json!({"snapshotSet": items, "nextToken": next}))
}

/// The caller's own snapshot `SnapshotId` as a resource, or the EC2 error.
fn own_snapshot(c: &Call<'_>) -> ApiResult<(String, Resource)> {
    let id = c.p.required("SnapshotId")?.to_string();
    snapshot_ops::parse_snapshot_id(&id)?;
    let res = snapshot_resource(c, &id)?;
    Ok((id, res))
}

fn is_owner(c: &Call<'_>, res: &Resource) -> bool {
    matches!(
        res.conditions.get("ec2:Owner"),
        Some(crate::policy::ConditionValue::String(o)) if o == c.account()
    )
}

pub fn delete_snapshot(c: &Call<'_>) -> ApiResult<Value> {
    let (id, res) = own_snapshot(c)?;
    c.authorize(&[res], &ConditionContext::new())?;
    snapshot_ops::delete(c.s, &id)?;
    Records::open(c.s)?.forget(&id)?;
    Ok(json!({"return": true}))
}

pub fn copy_snapshot(c: &Call<'_>) -> ApiResult<Value> {
    let source_region: Region =
        c.p.required("SourceRegion")?
            .parse()
            .map_err(|e: crate::ids::IdError| ApiError::invalid_parameter(e.to_string()))?;
    let source = c.p.required("SourceSnapshotId")?.to_string();
    snapshot_ops::parse_snapshot_id(&source)?;
    if let Some(d) = c.p.get("DestinationRegion") {
        if d != c.region() {
            return Err(ApiError::invalid_parameter(format!(
                "DestinationRegion {} is not the region of this request ({}): call CopySnapshot in the destination region",
                d.chars().take(32).collect::<String>(),
                c.region()
            )));
        }
    }
    let records = Records::open(c.s)?;
    super::volumes::check_encrypted(c, &records)?;
    let tags = c.p.tag_specifications("snapshot")?;
    check_tags(&tags)?;
    let description = c.p.get("Description").map(str::to_string);
    let key = match c.p.get("KmsKeyId").filter(|k| !k.is_empty()) {
        Some(k) => k.to_string(),
        None => super::volumes::default_key(c)?,
    };
    let resources = [
        Resource::new(snapshot_arn(source_region.as_str(), &source)),
        Resource::new(snapshot_arn(c.region(), "*")),
    ];
    let request = request_tags(&tags);
    if !tags.is_empty() {
        c.authorize_action(
            "ec2:CreateTags",
            &resources[1..],
            &request.clone().with("ec2:CreateAction", "CopySnapshot"),
        )?;
    }
    c.authorize(&resources, &request)?;
    let opts = snapshot_ops::CopyOptions {
        source_region,
        kms_key_id: Some(key),
        description,
    };
    let pending = in_background(c, move |s, rep| snapshot_ops::copy(s, &source, &opts, rep))?;
    let id = pending["SnapshotId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    records.put_tags(&id, &tags)?;
    Ok(json!({"snapshotId": id, "tagSet": tag_set(&tags)}))
}

fn check_attribute(c: &Call<'_>, required: bool) -> ApiResult<()> {
    match c.p.get("Attribute") {
        Some("createVolumePermission") => Ok(()),
        None if !required => Ok(()),
        None => Err(ApiError::new(
            "MissingParameter",
            "The request must contain the parameter Attribute",
        )),
        Some("productCodes") => Err(ApiError::invalid_parameter(
            "keyvol snapshots have no product codes: the only attribute is createVolumePermission",
        )),
        Some(other) => Err(ApiError::invalid_parameter(format!(
            "Value ({}) for parameter attribute is invalid. Expected: 'createVolumePermission' or 'productCodes'.",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

pub fn modify_snapshot_attribute(c: &Call<'_>) -> ApiResult<Value> {
    check_attribute(c, false)?;
    let (id, res) = own_snapshot(c)?;
    let mut add =
        c.p.struct_list_field("CreateVolumePermission.Add", "UserId")?;
    let mut remove =
        c.p.struct_list_field("CreateVolumePermission.Remove", "UserId")?;
    let mut groups =
        c.p.struct_list_field("CreateVolumePermission.Add", "Group")?;
    groups.extend(c.p.struct_list_field("CreateVolumePermission.Remove", "Group")?);
    let users = c.p.list("UserId")?;
    groups.extend(c.p.list("UserGroup")?);
    match c.p.get("OperationType") {
        Some("add") => add.extend(users),
        Some("remove") => remove.extend(users),
        None if users.is_empty() && groups.is_empty() => {}
        None => {
            return Err(ApiError::new(
                "MissingParameter",
                "The request must contain the parameter OperationType (add or remove) with UserId or UserGroup",
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "Value ({}) for parameter operationType is invalid. Expected: 'add' or 'remove'.",
                other.chars().take(32).collect::<String>()
            )))
        }
    }
    if let Some(g) = groups.iter().find(|g| g.as_str() != "all") {
        return Err(ApiError::invalid_parameter(format!(
            "Value ({}) for parameter group is invalid. Expected: 'all'.",
            g.chars().take(32).collect::<String>()
        )));
    }
    if add.is_empty() && remove.is_empty() && groups.is_empty() {
        return Err(ApiError::new(
            "MissingParameter",
            "The request must name accounts to add or remove (CreateVolumePermission.Add/Remove, or OperationType with UserId)",
        ));
    }
    if !is_owner(c, &res) {
        return Err(not_owner(c, &res, &id));
    }
    c.authorize(&[res], &ConditionContext::new())?;
    snapshot_ops::modify_permission(c.s, &id, &add, &remove, !groups.is_empty())?;
    Ok(json!({"return": true}))
}

/// Another account's snapshot: EC2 answers as if the caller lacked the
/// permission, and names nothing of it beyond its id.
fn not_owner(c: &Call<'_>, res: &Resource, id: &str) -> ApiError {
    ApiError::new(
        "UnauthorizedOperation",
        format!(
            "You are not authorized to perform this operation. User: {} is not authorized to perform: ec2:{} on resource: {} because only the owner of snapshot {id} may",
            c.s.ctx.caller.principal_arn, c.action, res.arn
        ),
    )
}

pub fn describe_snapshot_attribute(c: &Call<'_>) -> ApiResult<Value> {
    check_attribute(c, true)?;
    let (id, res) = own_snapshot(c)?;
    if !is_owner(c, &res) {
        return Err(not_owner(c, &res, &id));
    }
    c.authorize(&[res], &ConditionContext::new())?;
    let v = snapshot_ops::describe_attribute(c.s, &id)?;
    let perms: Vec<Value> = v["CreateVolumePermissions"]
        .as_array()
        .map(|a| a.iter().map(|p| json!({"userId": p["UserId"]})).collect())
        .unwrap_or_default();
    Ok(json!({"snapshotId": id, "createVolumePermission": perms}))
}

pub fn reset_snapshot_attribute(c: &Call<'_>) -> ApiResult<Value> {
    check_attribute(c, true)?;
    let (id, res) = own_snapshot(c)?;
    if !is_owner(c, &res) {
        return Err(not_owner(c, &res, &id));
    }
    c.authorize(&[res], &ConditionContext::new())?;
    let v = snapshot_ops::describe_attribute(c.s, &id)?;
    let all: Vec<String> = v["CreateVolumePermissions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["UserId"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !all.is_empty() {
        snapshot_ops::modify_permission(c.s, &id, &[], &all, false)?;
    }
    Ok(json!({"return": true}))
}
