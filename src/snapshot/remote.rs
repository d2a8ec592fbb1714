//! `keyvol-snap` on a volume host whose records are at a control plane on
//! another machine (`kms-endpoint`): each command is the control plane's
//! EC2 action (or EBS direct API), authorized and audited there, answered
//! in the keyvol CLI's shape (the same members as [`super::ops::to_json`]
//! where EC2 has them). Snapshots of this host's attached volumes are cut
//! here and written there ([`super::ops::host`]).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::server::control_plane::{percent_encode as encode, ControlPlaneClient, XmlReply};

/// A snapshot of a CreateSnapshot, CopySnapshot or DescribeSnapshots
/// answer, in the keyvol CLI's shape.
pub fn snapshot_json(x: &XmlReply) -> Value {
    let base = x.without("tagSet");
    let t = |k: &str| base.text(k).unwrap_or_default();
    let mut v = json!({
        "SnapshotId": t("snapshotId"),
        "VolumeId": t("volumeId"),
        "State": t("status"),
        "Progress": t("progress"),
        "OwnerId": t("ownerId"),
        "KmsKeyId": t("kmsKeyId"),
        "Encrypted": t("encrypted") != "false",
        "StartTime": t("startTime"),
        "VolumeSize": t("volumeSize").parse::<u64>().unwrap_or(0),
        "Description": t("description"),
        "StorageTier": t("storageTier"),
    });
    for (wire, member) in [
        ("statusMessage", "StateMessage"),
        ("sourceSnapshotId", "SourceSnapshotId"),
        ("sourceRegion", "SourceRegion"),
    ] {
        if let Some(x) = base.text(wire).filter(|x| !x.is_empty()) {
            v[member] = json!(x);
        }
    }
    let tags: Vec<Value> = x
        .items("tagSet")
        .iter()
        .map(|t| json!({"Key": t.text("key"), "Value": t.text("value")}))
        .collect();
    if !tags.is_empty() {
        v["Tags"] = json!(tags);
    }
    v
}

fn first_snapshot(x: &XmlReply, id: &str) -> ApiResult<XmlReply> {
    x.items("snapshotSet").into_iter().next().ok_or_else(|| {
        ApiError::new(
            "InvalidSnapshot.NotFound",
            format!("The snapshot '{id}' does not exist."),
        )
    })
}

/// DescribeSnapshots of one snapshot.
pub fn describe(cp: &ControlPlaneClient, id: &str) -> ApiResult<Value> {
    let x = cp.ec2("DescribeSnapshots", &[("SnapshotId.1", id)])?;
    Ok(snapshot_json(&first_snapshot(&x, id)?))
}

/// DescribeSnapshots of the caller's own snapshots, or with
/// `restorable` of every snapshot it may restore (own and shared); every
/// page.
pub fn describe_snapshots(cp: &ControlPlaneClient, restorable: bool) -> ApiResult<Value> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut p = vec![if restorable {
            ("RestorableBy.1", "self")
        } else {
            ("Owner.1", "self")
        }];
        if let Some(t) = &token {
            p.push(("NextToken", t.as_str()));
        }
        let x = cp.ec2("DescribeSnapshots", &p)?;
        out.extend(x.items("snapshotSet").iter().map(snapshot_json));
        token = x
            .without("snapshotSet")
            .text("nextToken")
            .filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(json!({"Snapshots": out}));
        }
    }
}

/// DeleteSnapshot.
pub fn delete(cp: &ControlPlaneClient, id: &str) -> ApiResult<Value> {
    cp.ec2("DeleteSnapshot", &[("SnapshotId", id)])?;
    Ok(json!({}))
}

/// Polls DescribeSnapshots until `id` is completed (its description), in
/// error (its StateMessage as `IncorrectState`) or `timeout` passed.
pub fn wait(cp: &ControlPlaneClient, id: &str, timeout: Duration) -> ApiResult<Value> {
    let until = Instant::now() + timeout;
    loop {
        let v = describe(cp, id)?;
        match v["State"].as_str() {
            Some("completed") => return Ok(v),
            Some("error") => {
                return Err(ApiError::incorrect_state(format!(
                    "snapshot {id} failed: {}",
                    v["StateMessage"].as_str().unwrap_or_default()
                )))
            }
            _ if Instant::now() >= until => {
                return Err(ApiError::new(
                    "RequestTimeout",
                    format!(
                        "snapshot {id} is still {} after {} s",
                        v["State"].as_str().unwrap_or_default(),
                        timeout.as_secs()
                    ),
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// ModifySnapshotAttribute createVolumePermission: `add` (or remove) the
/// accounts, or the group `all`; then the attribute as it is.
pub fn modify_permission(
    cp: &ControlPlaneClient,
    id: &str,
    add: bool,
    accounts: &[String],
    group_all: bool,
) -> ApiResult<Value> {
    let mut owned: Vec<(String, String)> = vec![
        ("SnapshotId".into(), id.into()),
        ("Attribute".into(), "createVolumePermission".into()),
        (
            "OperationType".into(),
            if add { "add" } else { "remove" }.into(),
        ),
    ];
    for (i, a) in accounts.iter().enumerate() {
        owned.push((format!("UserId.{}", i + 1), a.clone()));
    }
    if group_all {
        owned.push(("UserGroup.1".into(), "all".into()));
    }
    let p: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    cp.ec2("ModifySnapshotAttribute", &p)?;
    describe_attribute(cp, id)
}

/// DescribeSnapshotAttribute createVolumePermission.
pub fn describe_attribute(cp: &ControlPlaneClient, id: &str) -> ApiResult<Value> {
    let x = cp.ec2(
        "DescribeSnapshotAttribute",
        &[("SnapshotId", id), ("Attribute", "createVolumePermission")],
    )?;
    let perms: Vec<Value> = x
        .items("createVolumePermission")
        .iter()
        .map(|p| match (p.text("userId"), p.text("group")) {
            (Some(u), _) => json!({"UserId": u}),
            (None, g) => json!({"Group": g.unwrap_or_default()}),
        })
        .collect();
    Ok(json!({"SnapshotId": id, "CreateVolumePermissions": perms}))
}

/// CopySnapshot into the client's region (encrypted under `kms_key_id`,
/// else the account's default); with `wait`, the copy once completed.
pub fn copy(
    cp: &ControlPlaneClient,
    id: &str,
    source_region: &str,
    kms_key_id: Option<&str>,
    description: Option<&str>,
    wait_for_it: bool,
) -> ApiResult<Value> {
    let mut p = vec![
        ("SourceSnapshotId", id),
        ("SourceRegion", source_region),
        ("Encrypted", "true"),
    ];
    if let Some(k) = kms_key_id {
        p.push(("KmsKeyId", k));
    }
    if let Some(d) = description {
        p.push(("Description", d));
    }
    let x = cp.ec2("CopySnapshot", &p)?;
    let new_id = x.text("snapshotId").unwrap_or_default();
    if wait_for_it {
        return wait(cp, &new_id, Duration::from_secs(24 * 3600));
    }
    describe(cp, &new_id)
}

/// ListSnapshotBlocks (every page): the blocks' indices and tokens.
pub fn list_blocks(cp: &ControlPlaneClient, id: &str) -> ApiResult<Value> {
    let path = format!("/snapshots/{id}/blocks");
    pages(cp, &path, "", "Blocks")
}

/// ListChangedBlocks between `first` and `second` (every page).
pub fn list_changed_blocks(cp: &ControlPlaneClient, first: &str, second: &str) -> ApiResult<Value> {
    let path = format!("/snapshots/{second}/changedblocks");
    pages(
        cp,
        &path,
        &format!("firstSnapshotId={}", encode(first)),
        "ChangedBlocks",
    )
}

/// Every page of an EBS list call, its `member` lists joined.
fn pages(cp: &ControlPlaneClient, path: &str, query: &str, member: &str) -> ApiResult<Value> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut q: Vec<String> = Vec::new();
        if !query.is_empty() {
            q.push(query.to_string());
        }
        if let Some(t) = &token {
            q.push(format!("pageToken={}", encode(t)));
        }
        q.sort();
        let mut v = cp.ebs("GET", path, &q.join("&"), &[], b"")?.json();
        if let Some(items) = v[member].as_array() {
            all.extend(items.iter().cloned());
        }
        token = v["NextToken"].as_str().map(str::to_string);
        if token.is_none() {
            if let Some(o) = v.as_object_mut() {
                o.remove("NextToken");
            }
            v[member] = json!(all);
            return Ok(v);
        }
    }
}
