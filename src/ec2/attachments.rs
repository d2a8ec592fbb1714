//! AttachVolume, DetachVolume, and DescribeInstances for the volume hosts.
//!
//! The volume host the control plane runs itself is its own machine:
//! instance [`host_instance_id`] of each account and region. AttachVolume
//! to it starts the attach daemon there, acting for the caller (whose KMS
//! permissions, through EC2, unwrap the volume's data key), and
//! DetachVolume stops it, as `keyvol volume attach` and `detach` do. The
//! EC2 device name the call gave is recorded with the daemon's pid, so it
//! is shown for that attachment only; the daemon serves the device file
//! in the home (`Attachments[].Device` of `keyvol volume describe`).
//! Volume hosts on other machines are instances too ([`super::hosts`]):
//! AttachVolume to one only records the attachment, for its daemon to
//! obtain the data key with `KeyvolReleaseVolumeKey`.

use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::clock::to_rfc3339;
use crate::policy::ConditionContext;
use crate::volume::service::{host_instance_id, VolumeRecord, Volumes};

use super::authz::Resource;
use super::hosts::{self, Instance, RemoteAttachments};
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

/// The instance resource of `i`.
fn instance_resource(c: &Call<'_>, i: &Instance) -> Resource {
    Resource::new(instance_arn(c, i.id()))
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
    let instance = hosts::resolve_instance(c, instance)?;
    check_device_name(device)?;
    c.authorize(
        &[
            volume_resource(c, &r, &o, &tags),
            instance_resource(c, &instance),
        ],
        &ConditionContext::new(),
    )?;
    let remote = RemoteAttachments::open(c.s)?;
    let in_use = match remote.get(r.volume_id.as_str())? {
        Some(a) => Some(a.instance_id),
        None => vols
            .attached_pid(&r)?
            .map(|_| host_instance_id(c.account(), c.region())),
    };
    if let Some(i) = in_use {
        return Err(ApiError::new(
            "VolumeInUse",
            format!("{} is already attached to an instance ({i})", r.volume_id),
        ));
    }
    let (local, host) = match &instance {
        Instance::Local(id) => (id.clone(), None),
        Instance::Remote { id, host } => (id.clone(), Some(host.clone())),
    };
    if let Some(host) = host {
        // The data comes with the host (its backing file); the control
        // plane only records the attachment and who made it.
        return hosts::attach_remote(c, r.volume_id.as_str(), &local, &host, device);
    }
    if let Some(elsewhere) = remote.data_host(r.volume_id.as_str())? {
        return Err(hosts::data_elsewhere(
            r.volume_id.as_str(),
            &elsewhere,
            "attach it to that host (or to another volume host that has its backing file), not to the control plane's own",
        ));
    }
    if device_taken(&vols, &records, device, r.volume_id.as_str())? {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid value '{device}' for unixDevice. Attachment point {device} is already in use"
        )));
    }
    vols.attach_here(r.volume_id.as_str(), None)?;
    let now = c.s.kms.clock().now();
    let Some(pid) = vols.attached_pid(&r)? else {
        return Err(ApiError::internal(format!(
            "the attach daemon of {} stopped right after it started: see its log in the home",
            r.volume_id
        )));
    };
    records.put_device_name(r.volume_id.as_str(), device, pid, now)?;
    Ok(attachment_json(&r, &local, device, "attaching", now))
}

pub fn detach_volume(c: &Call<'_>) -> ApiResult<Value> {
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let (r, o, tags) = one(c, &vols, &records)?;
    let host = host_instance_id(c.account(), c.region());
    let named =
        c.p.get("InstanceId")
            .map(|i| hosts::resolve_instance(c, i))
            .transpose()?;
    let remotes = RemoteAttachments::open(c.s)?;
    let remote = remotes.get(r.volume_id.as_str())?;
    let force = c.p.bool("Force")?.unwrap_or(false);
    // Forced, a volume no longer attached whose data is on a host on
    // another machine: that host's daemon may still serve it (it refused
    // the stop while its device was in use).
    let held = match (&remote, force) {
        (None, true) if vols.attached_pid(&r)?.is_none() => {
            remotes.data_host(r.volume_id.as_str())?
        }
        _ => None,
    };
    let attached_to = match (&remote, &held) {
        (Some(a), _) => a.instance_id.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => host.clone(),
    };
    let instance_res = Resource::new(instance_arn(c, &attached_to));
    c.authorize(
        &[volume_resource(c, &r, &o, &tags), instance_res],
        &ConditionContext::new(),
    )?;
    if let Some(n) = &named {
        let attached_here = remote.is_some() || held.is_some() || vols.attached_pid(&r)?.is_some();
        if attached_here && n.id() != attached_to {
            return Err(ApiError::new(
                "InvalidAttachment.NotFound",
                format!(
                    "The volume {} is not attached to instance {}: it is attached to {attached_to}",
                    r.volume_id,
                    n.id()
                ),
            ));
        }
    }
    if let Some(a) = &remote {
        return hosts::detach_remote(c, a);
    }
    if let Some(i) = &held {
        return hosts::force_detached(c, r.volume_id.as_str(), i);
    }
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
    vols.detach_here(r.volume_id.as_str(), c.p.bool("Force")?.unwrap_or(false))?;
    records.forget_device_name(r.volume_id.as_str())?;
    Ok(attachment_json(&r, &host, &device, "detaching", attached))
}

/// DescribeInstances: the caller's volume hosts in the call's region
/// (the control plane's own, then each registered host on another
/// machine), each a running instance in zone `<region>a` whose block
/// device mappings are the volumes attached to it. `InstanceId.N` naming
/// another instance is `InvalidInstanceID.NotFound`, as in EC2.
pub fn describe_instances(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    let ids = c.p.list("InstanceId")?;
    super::no_ids_with_max_results(c.p, &ids, "instanceIds")?;
    for id in &ids {
        hosts::resolve_instance(c, id)?;
    }
    c.authorize(&[Resource::new("*".into())], &ConditionContext::new())?;
    let all = hosts::instances(c)?;
    let vols = volumes(c)?;
    let records = Records::open(c.s)?;
    let mut attached: Vec<(String, Value)> = Vec::new();
    for r in vols.list()? {
        let o = records.volume_options(r.volume_id.as_str())?;
        let v = volume_json(&vols, &records, &r, &o, &[])?;
        for a in v["attachmentSet"].as_array().into_iter().flatten() {
            let instance = a["instanceId"].as_str().unwrap_or_default().to_string();
            attached.push((
                instance,
                json!({
                    "deviceName": a["device"],
                    "ebs": {
                        "attachTime": a["attachTime"],
                        "deleteOnTermination": false,
                        "status": a["status"],
                        "volumeId": a["volumeId"],
                    },
                }),
            ));
        }
    }
    let zone = format!("{}a", c.region());
    let mut reservations = Vec::new();
    for instance in &all {
        let id = instance.id().to_string();
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        let mappings: Vec<Value> = attached
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, m)| m.clone())
            .collect();
        let field = |name: &str| -> Option<Vec<String>> {
            let devices = |k: &str| {
                mappings
                    .iter()
                    .map(|m| m["ebs"][k].as_str().unwrap_or_default().to_string())
                    .collect()
            };
            Some(match name {
                "instance-id" => vec![id.clone()],
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
        if !passes(&filters, &[], &field)? {
            continue;
        }
        let mut item = json!({
            "instanceId": id,
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
            "blockDeviceMapping": if mappings.is_empty() { Value::Null } else { Value::Array(mappings) },
        });
        if let Instance::Remote { host, .. } = instance {
            // The identity the host signs with (as an instance profile).
            item["iamInstanceProfile"] = json!({"arn": host});
        }
        reservations.push(json!({
            "reservationId": format!("r-{}", id.strip_prefix("i-").unwrap_or(&id)),
            "ownerId": c.account(),
            "groupSet": Value::Null,
            "instancesSet": [item],
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
