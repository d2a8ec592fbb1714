//! AttachVolume, DetachVolume, and DescribeInstances for the volume host.
//!
//! The volume host the control plane runs itself is its own machine:
//! instance [`host_instance_id`] of each account and region. AttachVolume
//! to it starts the attach daemon there, acting for the caller (whose KMS
//! permissions, through EC2, unwrap the volume's data key), and
//! DetachVolume stops it, as `keyvol volume attach` and `detach` do. The
//! EC2 device name the call gave is recorded with the daemon's pid, so it
//! is shown for that attachment only; the daemon serves the device file
//! in the home (`Attachments[].Device` of `keyvol volume describe`).
//! Volume hosts on other machines attach with their own keyvol CLI.

use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::clock::to_rfc3339;
use crate::policy::ConditionContext;
use crate::volume::service::{host_instance_id, VolumeRecord, Volumes};

use super::authz::Resource;
use super::records::Records;
use super::volumes::{one, volume_json, volume_resource, volumes};
use super::{page, passes, Call};

/// The ARN of instance `id` of the caller.
pub fn instance_arn(c: &Call<'_>, id: &str) -> String {
    format!("arn:aws:ec2:{}:{}:instance/{id}", c.region(), c.account())
}

/// The instance resource of the caller's own volume host.
pub(crate) fn host_resource(c: &Call<'_>) -> Resource {
    Resource::new(instance_arn(c, &host_instance_id(c.account(), c.region())))
}

/// `InstanceId` as EC2 checks it: `i-` and 8 or 17 hex digits, naming an
/// instance (a volume host) of the caller in the call's region.
fn check_instance(c: &Call<'_>, id: &str) -> ApiResult<()> {
    let hex = id.strip_prefix("i-").unwrap_or("");
    let well_formed = matches!(hex.len(), 8 | 17)
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(ApiError::new(
            "InvalidInstanceID.Malformed",
            format!(
                "Invalid id: \"{}\" (expecting \"i-...\")",
                id.chars().take(32).collect::<String>()
            ),
        ));
    }
    let host = host_instance_id(c.account(), c.region());
    if id != host {
        return Err(ApiError::new(
            "InvalidInstanceID.NotFound",
            format!(
                "The instance ID '{id}' does not exist: the volume host of this control plane in {} is {host}",
                c.region()
            ),
        ));
    }
    Ok(())
}

/// An EBS device name as EC2 takes it: `/dev/sdf` or `xvdf` (`sd` or
/// `xvd`, then one or two letters), with or without `/dev/`.
fn check_device_name(device: &str) -> ApiResult<()> {
    let name = device.strip_prefix("/dev/").unwrap_or(device);
    let letters = name
        .strip_prefix("xvd")
        .or_else(|| name.strip_prefix("sd"))
        .unwrap_or("");
    if (1..=2).contains(&letters.len()) && letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "Value ({}) for parameter device is invalid. {} is not a valid EBS device name (for example /dev/sdf or xvdf).",
        device.chars().take(32).collect::<String>(),
        device.chars().take(32).collect::<String>()
    )))
}

/// Is `device` the name of another live attachment on the caller's host?
fn device_taken(
    vols: &Volumes<'_>,
    records: &Records<'_>,
    device: &str,
    vol: &str,
) -> ApiResult<bool> {
    for (other, pid) in records.volumes_named(device)? {
        if other == vol {
            continue;
        }
        if let Ok(r) = vols.get(&other) {
            if vols.attached_pid(&r)? == Some(pid) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn attachment_json(r: &VolumeRecord, instance: &str, device: &str, state: &str, at: i64) -> Value {
    json!({
        "attachTime": to_rfc3339(at),
        "device": device,
        "instanceId": instance,
        "status": state,
        "volumeId": r.volume_id.as_str(),
        "deleteOnTermination": false,
    })
}

pub fn attach_volume(c: &Call<'_>) -> ApiResult<Value> {
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let (r, o, tags) = one(c, &vols, &records)?;
    let instance = c.p.required("InstanceId")?;
    let device = c.p.required("Device")?;
    check_instance(c, instance)?;
    check_device_name(device)?;
    c.authorize(
        &[volume_resource(c, &r, &o, &tags), host_resource(c)],
        &ConditionContext::new(),
    )?;
    if vols.attached_pid(&r)?.is_some() {
        return Err(ApiError::new(
            "VolumeInUse",
            format!("{} is already attached to an instance", r.volume_id),
        ));
    }
    if device_taken(&vols, &records, device, r.volume_id.as_str())? {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid value '{device}' for unixDevice. Attachment point {device} is already in use"
        )));
    }
    vols.attach(r.volume_id.as_str(), None)?;
    let now = c.s.kms.clock().now();
    let Some(pid) = vols.attached_pid(&r)? else {
        return Err(ApiError::internal(format!(
            "the attach daemon of {} stopped right after it started: see its log in the home",
            r.volume_id
        )));
    };
    records.put_device_name(r.volume_id.as_str(), device, pid, now)?;
    Ok(attachment_json(&r, instance, device, "attaching", now))
}

pub fn detach_volume(c: &Call<'_>) -> ApiResult<Value> {
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let (r, o, tags) = one(c, &vols, &records)?;
    let host = host_instance_id(c.account(), c.region());
    if let Some(i) = c.p.get("InstanceId") {
        check_instance(c, i)?;
    }
    c.authorize(
        &[volume_resource(c, &r, &o, &tags), host_resource(c)],
        &ConditionContext::new(),
    )?;
    let Some(pid) = vols.attached_pid(&r)? else {
        return Err(ApiError::incorrect_state(format!(
            "Volume '{}' is in the 'available' state.",
            r.volume_id
        )));
    };
    let (path, attached) = vols
        .attachment(&r)?
        .map(|(d, _, t)| (d, t))
        .unwrap_or_default();
    let device = records
        .device_name(r.volume_id.as_str(), pid)?
        .unwrap_or(path);
    if let Some(d) = c.p.get("Device") {
        if d != device {
            return Err(ApiError::new(
                "InvalidAttachment.NotFound",
                format!(
                    "The volume {} is not attached at {}: its attachment is {device}",
                    r.volume_id,
                    d.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    vols.detach(r.volume_id.as_str(), c.p.bool("Force")?.unwrap_or(false))?;
    records.forget_device_name(r.volume_id.as_str())?;
    Ok(attachment_json(&r, &host, &device, "detaching", attached))
}

/// DescribeInstances: the caller's volume host in the call's region, as
/// a running instance in zone `<region>a` whose block device mappings are
/// the volumes attached to it. `InstanceId.N` naming another instance is
/// `InvalidInstanceID.NotFound`, as in EC2.
pub fn describe_instances(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    let ids = c.p.list("InstanceId")?;
    super::no_ids_with_max_results(c.p, &ids, "instanceIds")?;
    for id in &ids {
        check_instance(c, id)?;
    }
    c.authorize(&[Resource::new("*".into())], &ConditionContext::new())?;
    let host = host_instance_id(c.account(), c.region());
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let mut mappings = Vec::new();
    for r in vols.list()? {
        let o = records.volume_options(r.volume_id.as_str())?;
        let v = volume_json(&vols, &records, &r, &o, &[])?;
        for a in v["attachmentSet"].as_array().into_iter().flatten() {
            mappings.push(json!({
                "deviceName": a["device"],
                "ebs": {
                    "attachTime": a["attachTime"],
                    "deleteOnTermination": false,
                    "status": a["status"],
                    "volumeId": a["volumeId"],
                },
            }));
        }
    }
    let zone = format!("{}a", c.region());
    let field = |name: &str| -> Option<Vec<String>> {
        let devices = |k: &str| {
            mappings
                .iter()
                .map(|m| m["ebs"][k].as_str().unwrap_or_default().to_string())
                .collect()
        };
        Some(match name {
            "instance-id" => vec![host.clone()],
            "instance-state-name" => vec!["running".into()],
            "instance-state-code" => vec!["16".into()],
            "availability-zone" => vec![zone.clone()],
            "owner-id" => vec![c.account().to_string()],
            "block-device-mapping.volume-id" => devices("volumeId"),
            "block-device-mapping.status" => devices("status"),
            "block-device-mapping.device-name" => mappings
                .iter()
                .map(|m| m["deviceName"].as_str().unwrap_or_default().to_string())
                .collect(),
            _ => return None,
        })
    };
    let mut reservations = Vec::new();
    if passes(&filters, &[], &field)? {
        let reservation = format!("r-{}", &host[2..]);
        reservations.push(json!({
            "reservationId": reservation,
            "ownerId": c.account(),
            "groupSet": Value::Null,
            "instancesSet": [{
                "instanceId": host,
                "instanceState": {"code": 16, "name": "running"},
                "placement": {"availabilityZone": zone, "tenancy": "default"},
                // EC2's names (ArchitectureValues) for this machine's.
                "architecture": match std::env::consts::ARCH {
                    "aarch64" => "arm64",
                    "x86" => "i386",
                    other => other,
                },
                "platformDetails": "Linux/UNIX",
                "rootDeviceType": "ebs",
                "blockDeviceMapping": if mappings.is_empty() { Value::Null } else { Value::Array(mappings.clone()) },
            }],
        }));
    }
    let (items, next) = page(c.p, reservations, 5, 1000)?;
    Ok(json!({"reservationSet": items, "nextToken": next}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_ebs_names() {
        for ok in ["/dev/sdf", "sdf", "/dev/xvdf", "xvdba", "/dev/sdp"] {
            assert!(check_device_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/dev/",
            "/dev/sda1",
            "/dev/nvme0n1",
            "../x",
            "/dev/sdF",
            "xvdabc",
            "/tmp/sdf",
        ] {
            let e = check_device_name(bad).unwrap_err();
            assert_eq!(e.code, "InvalidParameterValue", "{bad}");
        }
    }
}
