//! CreateVolume, DescribeVolumes, DeleteVolume, ModifyVolume,
//! DescribeVolumesModifications and DescribeVolumeStatus.

use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::clock::to_rfc3339;
use crate::ids::VolumeId;
use crate::policy::ConditionContext;
use crate::snapshot::ops as snapshot_ops;
use crate::volume::remote::KEYVOL_DETAILS;
use crate::volume::service::{VolumeRecord, Volumes};

use super::authz::{request_tags, snapshot_arn, volume_arn, Resource};
use super::records::{check_tags, Modification, Records, VolumeOptions};
use super::{page, passes, tag_set, Call, Tag};

const GIB: u64 = 1 << 30;
/// EBS volume sizes, in GiB.
const MAX_GIB: i64 = 16384;
const VOLUME_TYPES: &[&str] = &["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"];

pub(crate) fn volumes<'a>(c: &Call<'a>) -> ApiResult<Volumes<'a>> {
    Ok(Volumes::open(c.s)?.with_snapshot_source(snapshot_ops::SNAPSHOT_SOURCE))
}

/// The availability zones of a region: `<region>a`, `b`, `c`.
pub(crate) fn zones(region: &str) -> Vec<String> {
    ["a", "b", "c"]
        .iter()
        .map(|z| format!("{region}{z}"))
        .collect()
}

fn check_zone(c: &Call<'_>) -> ApiResult<String> {
    let zone = match (c.p.get("AvailabilityZone"), c.p.get("AvailabilityZoneId")) {
        (Some(z), _) => z.to_string(),
        (None, Some(id)) => super::account::zone_of_id(c.region(), id).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Invalid availability zone id: [{}]",
                id.chars().take(32).collect::<String>()
            ))
        })?,
        (None, None) => {
            return Err(ApiError::new(
                "MissingParameter",
                "The request must contain the parameter AvailabilityZone or AvailabilityZoneId",
            ))
        }
    };
    if !zones(c.region()).contains(&zone) {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid availability zone: [{}]: use a zone of region {} ({})",
            zone.chars().take(32).collect::<String>(),
            c.region(),
            zones(c.region()).join(", ")
        )));
    }
    Ok(zone)
}

/// VolumeType, Iops and Throughput as EBS allows them together.
fn volume_options(c: &Call<'_>, base: Option<&VolumeOptions>) -> ApiResult<VolumeOptions> {
    let vt = match c.p.get("VolumeType") {
        Some(t) if VOLUME_TYPES.contains(&t) => t.to_string(),
        Some(t) => {
            return Err(ApiError::invalid_parameter(format!(
                "Value ({}) for parameter volumeType is invalid. Expected one of: {}.",
                t.chars().take(32).collect::<String>(),
                VOLUME_TYPES.join(", ")
            )))
        }
        None => base
            .map(|b| b.volume_type.clone())
            .unwrap_or_else(|| "gp3".into()),
    };
    let type_changed = base.is_some_and(|b| b.volume_type != vt);
    let iops = c.p.int("Iops")?;
    let throughput = c.p.int("Throughput")?;
    let keep = |v: Option<i64>, old: Option<i64>| if type_changed { v } else { v.or(old) };
    let (iops, throughput) = match vt.as_str() {
        "gp3" => {
            let i = keep(iops, base.and_then(|b| b.iops)).unwrap_or(3000);
            let t = keep(throughput, base.and_then(|b| b.throughput)).unwrap_or(125);
            if !(3000..=16000).contains(&i) {
                return Err(ApiError::invalid_parameter(format!(
                    "Iops {i} is out of range for gp3: give 3000 to 16000"
                )));
            }
            if !(125..=1000).contains(&t) {
                return Err(ApiError::invalid_parameter(format!(
                    "Throughput {t} is out of range for gp3: give 125 to 1000 MiB/s"
                )));
            }
            (Some(i), Some(t))
        }
        "io1" | "io2" => {
            let i = keep(iops, base.and_then(|b| b.iops)).ok_or_else(|| {
                ApiError::new(
                    "MissingParameter",
                    format!("The parameter iops must be specified for {vt} volumes."),
                )
            })?;
            let max = if vt == "io1" { 64000 } else { 256000 };
            if !(100..=max).contains(&i) {
                return Err(ApiError::invalid_parameter(format!(
                    "Iops {i} is out of range for {vt}: give 100 to {max}"
                )));
            }
            if throughput.is_some() {
                return Err(ApiError::new(
                    "InvalidParameterCombination",
                    format!("The parameter throughput is not supported for {vt} volumes."),
                ));
            }
            (Some(i), None)
        }
        _ => {
            if iops.is_some() {
                return Err(ApiError::new(
                    "InvalidParameterCombination",
                    format!("The parameter iops is not supported for {vt} volumes."),
                ));
            }
            if throughput.is_some() {
                return Err(ApiError::new(
                    "InvalidParameterCombination",
                    format!("The parameter throughput is not supported for {vt} volumes."),
                ));
            }
            (None, None)
        }
    };
    Ok(VolumeOptions {
        volume_type: vt,
        iops,
        throughput,
        availability_zone: base.and_then(|b| b.availability_zone.clone()),
    })
}

/// The key a new volume or copy is encrypted under when the request names
/// none: the account's EBS default key of this region, else aws/ebs.
pub(crate) fn default_key(c: &Call<'_>) -> ApiResult<String> {
    let (_, key) = Records::open(c.s)?.ebs_defaults()?;
    Ok(key.unwrap_or_else(|| crate::kms::EBS_ALIAS.to_string()))
}

/// Encrypted=false is honoured nowhere: keyvol keeps no unencrypted
/// volumes. With encryption by default on, EC2 encrypts such a request
/// anyway, and so does keyvol; otherwise it is refused, so that nobody
/// believes they got an unencrypted volume.
pub(crate) fn check_encrypted(c: &Call<'_>, records: &Records<'_>) -> ApiResult<()> {
    let (by_default, _) = records.ebs_defaults()?;
    match c.p.bool("Encrypted")? {
        Some(false) if !by_default => Err(ApiError::invalid_parameter(
            "keyvol volumes and snapshots are always encrypted: omit Encrypted or set it to true (or enable EBS encryption by default)",
        )),
        None if c.p.get("KmsKeyId").is_some() && !by_default => Err(ApiError::new(
            "InvalidParameterDependency",
            "The parameter KmsKeyId requires the parameter Encrypted to be set.",
        )),
        _ => Ok(()),
    }
}

/// The condition keys of a volume as a resource of a request.
pub(crate) fn volume_resource(
    c: &Call<'_>,
    r: &VolumeRecord,
    o: &VolumeOptions,
    tags: &[Tag],
) -> Resource {
    let mut res = Resource::new(volume_arn(c.region(), &r.account, r.volume_id.as_str()))
        .with("ec2:Encrypted", true)
        .with("ec2:VolumeSize", r.size.div_ceil(GIB) as i64)
        .with("ec2:VolumeType", o.volume_type.as_str())
        .with("ec2:AvailabilityZone", o.zone(r.region.as_str()))
        .with_tags(tags);
    if let Some(sn) = &r.snapshot_id {
        res = res.with("ec2:ParentSnapshot", snapshot_arn(c.region(), sn));
    }
    if let Some(i) = o.iops {
        res = res.with("ec2:VolumeIops", i);
    }
    if let Some(t) = o.throughput {
        res = res.with("ec2:VolumeThroughput", t);
    }
    res
}

/// The EC2 `Volume` of a record.
pub(crate) fn volume_json(
    vols: &Volumes<'_>,
    records: &Records<'_>,
    r: &VolumeRecord,
    o: &VolumeOptions,
    tags: &[Tag],
) -> ApiResult<Value> {
    let v = vols.to_json(r)?;
    // A volume attached to a host on another machine: that attachment.
    if let Some(a) =
        super::hosts::RemoteAttachments::open(vols.session())?.get(r.volume_id.as_str())?
    {
        let mut out = volume_json_with(r, o, tags, &v, vec![a.to_json()]);
        out["status"] = json!("in-use");
        return Ok(out);
    }
    let attachments: Vec<Value> = v["Attachments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    // The EC2 name AttachVolume gave this attachment, else
                    // the device file the daemon serves.
                    let named = a["Pid"]
                        .as_i64()
                        .map(|pid| records.device_name(r.volume_id.as_str(), pid))
                        .transpose()?
                        .flatten();
                    let device = named.map(Value::from).unwrap_or_else(|| a["Device"].clone());
                    Ok(json!({
                        "volumeId": a["VolumeId"], "instanceId": a["InstanceId"], "device": device,
                        "status": a["State"], "attachTime": a["AttachTime"], "deleteOnTermination": false,
                    }))
                })
                .collect::<ApiResult<Vec<Value>>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(volume_json_with(r, o, tags, &v, attachments))
}

/// Adds the members of the keyvol extension [`KEYVOL_DETAILS`] of `r` to
/// its `Volume` `v` when the request asked for them: `sizeInBytes` (the
/// exact size, as CreateVolume's `SizeInBytes`) and `dataHostInstanceId`,
/// the instance whose machine holds the volume's data (a host that
/// attached it, or the control plane's own once it used the volume;
/// absent while the volume was never used anywhere: all zeros, or what
/// its snapshot holds). EC2's clients never ask, so what they get is
/// EC2's `Volume` exactly.
fn keyvol_details(
    c: &Call<'_>,
    vols: &Volumes<'_>,
    r: &VolumeRecord,
    v: &mut Value,
) -> ApiResult<()> {
    if c.p.bool(KEYVOL_DETAILS)? != Some(true) {
        return Ok(());
    }
    v["sizeInBytes"] = json!(r.size);
    if let Some(i) = super::hosts::data_holder(c.s, vols, r)? {
        v["dataHostInstanceId"] = json!(i);
    }
    Ok(())
}

/// The EC2 `Volume` of a record with its `attachmentSet`; `v` is the
/// record's [`Volumes::to_json`].
fn volume_json_with(
    r: &VolumeRecord,
    o: &VolumeOptions,
    tags: &[Tag],
    v: &Value,
    attachments: Vec<Value>,
) -> Value {
    json!({
        "volumeId": r.volume_id.as_str(),
        "size": r.size.div_ceil(GIB),
        "snapshotId": r.snapshot_id.clone().unwrap_or_default(),
        "availabilityZone": o.zone(r.region.as_str()),
        "status": v["State"],
        "createTime": v["CreateTime"],
        "attachmentSet": attachments,
        "tagSet": tag_set(tags),
        "volumeType": o.volume_type,
        "iops": o.iops,
        "throughput": o.throughput,
        "encrypted": true,
        "kmsKeyId": r.kms_key_arn,
        "multiAttachEnabled": false,
        "ownerId": r.account,
        "volumeArn": volume_arn(&r.region, &r.account, r.volume_id.as_str()),
    })
}

/// The keyvol extension `SizeInBytes` of CreateVolume: a whole number of
/// MiB from 1 MiB (the keyvol CLI's small volumes); the aws CLI never
/// sends it. Authorized as `ec2:VolumeSize` in GiB, rounded up.
fn size_bytes(c: &Call<'_>) -> ApiResult<Option<u64>> {
    match c.p.get("SizeInBytes") {
        None => Ok(None),
        Some(v) => crate::volume::service::parse_size(&format!("{v}B")).map(Some),
    }
}

fn size_gib(c: &Call<'_>) -> ApiResult<Option<i64>> {
    match c.p.int("Size")? {
        None => Ok(None),
        Some(n) if (1..=MAX_GIB).contains(&n) => Ok(Some(n)),
        Some(n) => Err(ApiError::invalid_parameter(format!(
            "Volume of {n}GiB is out of range: give a size from 1 to {MAX_GIB} GiB"
        ))),
    }
}

pub fn create_volume(c: &Call<'_>) -> ApiResult<Value> {
    let records = Records::open(c.s)?;
    let zone = check_zone(c)?;
    check_encrypted(c, &records)?;
    if c.p.bool("MultiAttachEnabled")? == Some(true) {
        return Err(ApiError::new(
            "InvalidParameterCombination",
            "keyvol volumes have one attachment at a time: MultiAttachEnabled is not supported",
        ));
    }
    let mut opts = volume_options(c, None)?;
    opts.availability_zone = Some(zone.clone());
    let tags = c.p.tag_specifications("volume")?;
    check_tags(&tags)?;
    let exact = size_bytes(c)?;
    let size = match exact {
        Some(b) => Some(b.div_ceil(GIB) as i64),
        None => size_gib(c)?,
    };
    let snapshot = c.p.get("SnapshotId").filter(|s| !s.is_empty());
    if size.is_none() && snapshot.is_none() {
        return Err(ApiError::new(
            "MissingParameter",
            "The request must contain the parameter size or snapshotId",
        ));
    }
    let vol = VolumeId::generate();
    let arn = volume_arn(c.region(), c.account(), vol.as_str());
    let mut res = Resource::new(arn.clone())
        .with("ec2:Encrypted", true)
        .with("ec2:VolumeType", opts.volume_type.as_str())
        .with("ec2:AvailabilityZone", zone.as_str());
    if let Some(n) = size {
        res = res.with("ec2:VolumeSize", n);
    }
    let mut resources = Vec::new();
    if let Some(sn) = snapshot {
        snapshot_ops::parse_snapshot_id(sn)?;
        res = res.with("ec2:ParentSnapshot", snapshot_arn(c.region(), sn));
        resources.push(super::snapshots::snapshot_resource(c, sn)?);
    }
    resources.insert(0, res);
    let request = request_tags(&tags);
    if !tags.is_empty() {
        c.authorize_action(
            "ec2:CreateTags",
            &resources[..1],
            &request.clone().with("ec2:CreateAction", "CreateVolume"),
        )?;
    }
    c.authorize(&resources, &request)?;
    let explicit_key = c.p.get("KmsKeyId").filter(|k| !k.is_empty());
    let vols = volumes(c)?;
    let r = match snapshot {
        Some(sn) => {
            // Without a key: an own snapshot's volume keeps the snapshot's
            // key, a shared one's gets the account default, as in EC2.
            let key = match explicit_key {
                Some(k) => Some(k.to_string()),
                None => {
                    let own = snapshot_ops::describe(c.s, sn)?["OwnerId"] == c.account();
                    (!own).then(|| default_key(c)).transpose()?
                }
            };
            snapshot_ops::restore_as(
                c.s,
                vol.clone(),
                sn,
                key.as_deref(),
                exact.or(size.map(|n| n as u64 * GIB)),
                false,
                &mut snapshot_ops::Quiet,
            )?
        }
        None => {
            let key = match explicit_key {
                Some(k) => k.to_string(),
                None => default_key(c)?,
            };
            let bytes = exact.unwrap_or(size.unwrap_or(1) as u64 * GIB);
            let (key_arn, wrapped) = vols.new_data_key(&vol, Some(&key))?;
            vols.insert(&vol, bytes, &key_arn, &wrapped, None)?
        }
    };
    let finished = records
        .set_volume_options(vol.as_str(), &opts)
        .and_then(|()| records.put_tags(vol.as_str(), &tags));
    if let Err(e) = finished {
        let _ = vols.delete(vol.as_str());
        let _ = records.forget(vol.as_str());
        return Err(e);
    }
    let mut v = volume_json(&vols, &records, &r, &opts, &tags)?;
    keyvol_details(c, &vols, &r, &mut v)?;
    Ok(v)
}

/// The caller's volumes named by `VolumeId.N` (all of them when none is
/// named), each with its options and tags. A named volume that does not
/// exist fails the call, as in EC2.
fn selected(
    c: &Call<'_>,
    vols: &Volumes<'_>,
    records: &Records<'_>,
) -> ApiResult<Vec<(VolumeRecord, VolumeOptions, Vec<Tag>)>> {
    let ids = c.p.list("VolumeId")?;
    super::no_ids_with_max_results(c.p, &ids, "volumeIds")?;
    let rs = if ids.is_empty() {
        vols.list()?
    } else {
        let mut missing = Vec::new();
        let mut out = Vec::new();
        for id in &ids {
            match vols.get(id) {
                Ok(r) => out.push(r),
                Err(e) if e.code == "InvalidVolume.NotFound" => missing.push(id.clone()),
                Err(e) => return Err(e),
            }
        }
        if !missing.is_empty() {
            return Err(ApiError::new(
                "InvalidVolume.NotFound",
                format!("The volume '{}' does not exist.", missing.join(", ")),
            ));
        }
        out
    };
    rs.into_iter()
        .map(|r| {
            let o = records.volume_options(r.volume_id.as_str())?;
            let t = records.tags(r.volume_id.as_str())?;
            Ok((r, o, t))
        })
        .collect()
}

pub fn describe_volumes(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    c.authorize(&[Resource::new("*".into())], &ConditionContext::new())?;
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let mut out = Vec::new();
    for (r, o, tags) in selected(c, &vols, &records)? {
        let mut v = volume_json(&vols, &records, &r, &o, &tags)?;
        keyvol_details(c, &vols, &r, &mut v)?;
        let att = v["attachmentSet"].as_array().cloned().unwrap_or_default();
        let field = |name: &str| -> Option<Vec<String>> {
            let s = |x: &Value| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let one = |k: &str| Some(vec![s(&v[k])]);
            let from_att = |k: &str| Some(att.iter().map(|a| s(&a[k])).collect());
            match name {
                "volume-id" => one("volumeId"),
                "status" => one("status"),
                "size" => one("size"),
                "snapshot-id" => one("snapshotId"),
                "encrypted" => one("encrypted"),
                "availability-zone" => one("availabilityZone"),
                "create-time" => one("createTime"),
                "volume-type" => one("volumeType"),
                "multi-attach-enabled" => one("multiAttachEnabled"),
                "attachment.instance-id" => from_att("instanceId"),
                "attachment.device" => from_att("device"),
                "attachment.status" => from_att("status"),
                "attachment.attach-time" => from_att("attachTime"),
                "attachment.delete-on-termination" => from_att("deleteOnTermination"),
                _ => None,
            }
        };
        if passes(&filters, &tags, &field)? {
            out.push(v);
        }
    }
    let (items, next) = page(c.p, out, 5, 500)?;
    Ok(json!({"volumeSet": items, "nextToken": next}))
}

/// The caller's volume `VolumeId` with its options and tags.
pub(crate) fn one(
    c: &Call<'_>,
    vols: &Volumes<'_>,
    records: &Records<'_>,
) -> ApiResult<(VolumeRecord, VolumeOptions, Vec<Tag>)> {
    let id = c.p.required("VolumeId")?;
    let r = vols.get(id)?;
    let o = records.volume_options(id)?;
    let t = records.tags(id)?;
    Ok((r, o, t))
}

pub fn delete_volume(c: &Call<'_>) -> ApiResult<Value> {
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let (r, o, tags) = one(c, &vols, &records)?;
    c.authorize(
        &[volume_resource(c, &r, &o, &tags)],
        &ConditionContext::new(),
    )?;
    let remote = super::hosts::RemoteAttachments::open(c.s)?;
    if let Some(a) = remote.get(r.volume_id.as_str())? {
        return Err(ApiError::new(
            "VolumeInUse",
            format!(
                "Volume {} is currently attached to {}: detach it first",
                r.volume_id, a.instance_id
            ),
        ));
    }
    vols.delete(r.volume_id.as_str())?;
    records.forget(r.volume_id.as_str())?;
    remote.forget_volume(r.volume_id.as_str())?;
    Ok(json!({"return": true}))
}

fn modification_json(m: &Modification) -> Value {
    json!({
        "volumeId": m.volume_id,
        "modificationState": "completed",
        "targetSize": m.target_size,
        "targetIops": m.target.iops,
        "targetVolumeType": m.target.volume_type,
        "targetThroughput": m.target.throughput,
        "targetMultiAttachEnabled": false,
        "originalSize": m.original_size,
        "originalIops": m.original.iops,
        "originalVolumeType": m.original.volume_type,
        "originalThroughput": m.original.throughput,
        "originalMultiAttachEnabled": false,
        "progress": 100,
        "startTime": to_rfc3339(m.start_time),
        "endTime": to_rfc3339(m.end_time),
    })
}

pub fn modify_volume(c: &Call<'_>) -> ApiResult<Value> {
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let (r, o, tags) = one(c, &vols, &records)?;
    let target = volume_options(c, Some(&o))?;
    let old_gib = r.size.div_ceil(GIB) as i64;
    let new_gib = size_gib(c)?.unwrap_or(old_gib);
    if new_gib < old_gib {
        return Err(ApiError::invalid_parameter(format!(
            "New size cannot be smaller than existing size: the volume has {old_gib} GiB; volumes only grow"
        )));
    }
    if c.p.bool("MultiAttachEnabled")? == Some(true) {
        return Err(ApiError::new(
            "InvalidParameterCombination",
            "keyvol volumes have one attachment at a time: MultiAttachEnabled is not supported",
        ));
    }
    if new_gib == old_gib && target == o {
        return Err(ApiError::invalid_parameter(
            "The request names no change: give a larger Size, or another VolumeType, Iops or Throughput",
        ));
    }
    c.authorize(
        &[volume_resource(c, &r, &o, &tags)],
        &ConditionContext::new(),
    )?;
    // A volume whose data is on a host on another machine: the record
    // grows here, and the host grows its device online when attached there
    // (it learns the size by its long poll), else its backing file at the
    // next attach.
    let elsewhere = super::hosts::data_instance(c.s, r.volume_id.as_str())?.is_some();
    let start = c.s.kms.clock().now();
    let new_bytes = (new_gib as u64 * GIB).max(r.size);
    if new_bytes > r.size {
        if elsewhere {
            vols.record_size(r.volume_id.as_str(), new_bytes)?;
        } else {
            vols.modify(r.volume_id.as_str(), new_bytes)?;
        }
    }
    records.set_volume_options(r.volume_id.as_str(), &target)?;
    let m = Modification {
        volume_id: r.volume_id.to_string(),
        original_size: old_gib,
        target_size: new_gib,
        original: o,
        target,
        start_time: start,
        end_time: c.s.kms.clock().now(),
    };
    records.put_modification(&m)?;
    Ok(json!({"volumeModification": modification_json(&m)}))
}

pub fn describe_volumes_modifications(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    c.authorize(&[Resource::new("*".into())], &ConditionContext::new())?;
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let mut out = Vec::new();
    for (r, _, tags) in selected(c, &vols, &records)? {
        let Some(m) = records.modification(r.volume_id.as_str())? else {
            continue;
        };
        let v = modification_json(&m);
        let field = |name: &str| -> Option<Vec<String>> {
            let s = |k: &str| match &v[k] {
                Value::String(s) => vec![s.clone()],
                other => vec![other.to_string()],
            };
            match name {
                "volume-id" => Some(s("volumeId")),
                "modification-state" => Some(s("modificationState")),
                "target-size" => Some(s("targetSize")),
                "target-iops" => Some(s("targetIops")),
                "target-volume-type" => Some(s("targetVolumeType")),
                "original-size" => Some(s("originalSize")),
                "original-iops" => Some(s("originalIops")),
                "original-volume-type" => Some(s("originalVolumeType")),
                "start-time" => Some(s("startTime")),
                _ => None,
            }
        };
        if passes(&filters, &tags, &field)? {
            out.push(v);
        }
    }
    let (items, next) = page(c.p, out, 5, 500)?;
    Ok(json!({"volumeModificationSet": items, "nextToken": next}))
}

pub fn describe_volume_status(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    c.authorize(&[Resource::new("*".into())], &ConditionContext::new())?;
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let attached = vols.status()?;
    let mut out = Vec::new();
    for (r, o, tags) in selected(c, &vols, &records)? {
        let zone = o.zone(r.region.as_str());
        let mut details = Vec::new();
        // The key must be usable for the volume to be read at all.
        let key_ok = key_enabled(c, &r.kms_key_arn);
        let attachment = attached["Attachments"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["VolumeId"] == r.volume_id.as_str()));
        let io_ok = attachment.is_none_or(|e| e["State"] != "dead");
        let io_errors = attachment.and_then(|e| {
            e["IoErrors"]
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| (n, e["LastIoError"].clone()))
        });
        details.push(json!({"name": "io-enabled", "status": if key_ok && io_ok { "passed" } else { "failed" }}));
        details.push(json!({"name": "io-performance", "status": if io_ok { "normal" } else { "severely-degraded" }}));
        let status = if key_ok && io_ok && io_errors.is_none() {
            "ok"
        } else {
            "impaired"
        };
        let mut events = Vec::new();
        if !key_ok {
            events.push(json!({"eventType": "kms-key-unusable", "description": format!("The KMS key {} is disabled, pending deletion or gone: the volume cannot be read", r.kms_key_arn)}));
        }
        if !io_ok {
            events.push(json!({"eventType": "attach-daemon-dead", "description": format!("The attach daemon of {} died: `keyvol volume mount {} DIR` mounts it again", r.volume_id, r.volume_id)}));
        }
        if let Some((n, last)) = &io_errors {
            // EBS's event when the data may be inconsistent; the volume
            // stays readable and writable.
            let mut e = json!({"eventType": "potential-data-inconsistency", "description": format!("{n} reads or writes of {} failed since it was attached (see the attach daemon's log); check the file system with fsck", r.volume_id)});
            if let Some(t) = last.as_str() {
                e["notBefore"] = json!(t);
            }
            events.push(e);
        }
        let v = json!({
            "volumeId": r.volume_id.as_str(),
            "availabilityZone": zone,
            "volumeStatus": {"status": status, "details": details},
            "actionsSet": [],
            "eventsSet": events,
        });
        let field = |name: &str| -> Option<Vec<String>> {
            match name {
                "volume-id" => Some(vec![r.volume_id.to_string()]),
                "availability-zone" => Some(vec![zone.clone()]),
                "volume-status.status" => Some(vec![status.to_string()]),
                "volume-status.details-name" => {
                    Some(vec!["io-enabled".into(), "io-performance".into()])
                }
                "event.event-type" => Some(
                    events
                        .iter()
                        .map(|e| e["eventType"].as_str().unwrap_or_default().to_string())
                        .collect(),
                ),
                _ => None,
            }
        };
        if passes(&filters, &tags, &field)? {
            out.push(v);
        }
    }
    let (items, next) = page(c.p, out, 5, 1000)?;
    Ok(json!({"volumeStatusSet": items, "nextToken": next}))
}

/// Is the key usable (Enabled)? Asked of the KMS's own records, not
/// through a caller's permissions: the answer is the volume's health.
fn key_enabled(c: &Call<'_>, arn: &str) -> bool {
    c.s.kms.key_state(arn).ok().flatten().as_deref() == Some("Enabled")
}
