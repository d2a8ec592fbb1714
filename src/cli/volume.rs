//! `keyvol volume ...`: EBS-style volume lifecycle, attach and mount.

use std::path::Path;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{json, Value};

use keyvol::api_error::ApiError;
use keyvol::ec2::Target;
use keyvol::session::Session;
use keyvol::volume::boot;
use keyvol::volume::mount::FsType;
use keyvol::volume::service::{parse_size, Volumes};

use super::CliError;

/// The daemon's `--metrics` address, also as a variable: a background
/// attach hands it to the daemon it starts through the environment.
const METRICS_ENV: &str = "KEYVOL_METRICS_ADDR";

fn vol_arg() -> Arg {
    Arg::new("volume-id")
        .required_unless_present("volume-id-option")
        .value_name("VOLUME_ID")
        .help("The volume (vol-...)")
}

/// The aws CLI's spelling of the volume: `--volume-id VOL`.
fn vol_option() -> Arg {
    Arg::new("volume-id-option")
        .long("volume-id")
        .value_name("VOLUME_ID")
        .conflicts_with("volume-id")
        .help("The volume, as the aws CLI spells it (instead of VOLUME_ID)")
}

fn fs_arg() -> Arg {
    Arg::new("fs")
        .long("fs")
        .default_value("ext4")
        .value_parser(["ext4", "xfs"])
        .help("Filesystem to make on first use (an existing one is kept)")
}

fn all_arg(what: &str) -> Arg {
    Arg::new("all")
        .long("all")
        .action(ArgAction::SetTrue)
        .help(format!(
            "{what} every volume enabled for boot (keyvol volume enable), in order"
        ))
}

pub fn command() -> Command {
    let mut cmd = subcommands();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for n in names {
        cmd = cmd.mut_subcommand(n, |c| c.args(keyvol::cli_input::input_args()));
    }
    cmd
}

fn subcommands() -> Command {
    Command::new("volume")
        .about("Encrypted volumes: create, attach through FUSE, mount a filesystem")
        .subcommand_required(true)
        .subcommand(
            Command::new("create")
                .about("Create a volume with a new data key under a KMS key")
                .after_help("Example:\n  keyvol volume create --size 10GiB --kms-key-id alias/demo")
                .arg(
                    Arg::new("size")
                        .long("size")
                        .help("e.g. 512MiB, 10GiB; a plain number is GiB"),
                )
                .arg(
                    Arg::new("kms-key-id")
                        .long("kms-key-id")
                        .help("KMS key (default alias/aws/ebs)"),
                )
                .arg(
                    Arg::new("snapshot-id")
                        .long("snapshot-id")
                        .help("Restore from this snapshot"),
                )
                .arg(
                    Arg::new("encrypted")
                        .long("encrypted")
                        .action(ArgAction::SetTrue)
                        .help("Accepted as the aws CLI spells it: every keyvol volume is encrypted"),
                )
                .arg(
                    Arg::new("availability-zone")
                        .long("availability-zone")
                        .value_name("ZONE")
                        .help("A zone of the region (<region>a, b or c), as the aws CLI gives it"),
                )
                .arg(
                    Arg::new("tag-specifications")
                        .long("tag-specifications")
                        .value_name("SPEC")
                        .num_args(1..)
                        .action(ArgAction::Append)
                        .help("ResourceType=volume,Tags=[{Key=k,Value=v},...] or JSON, as the aws CLI"),
                )
                .arg(
                    Arg::new("hydrate")
                        .long("hydrate")
                        .action(clap::ArgAction::SetTrue)
                        .requires("snapshot-id")
                        .help("With --snapshot-id: fetch every block now instead of on first read"),
                ),
        )
        .subcommand(
            Command::new("describe")
                .about("DescribeVolumes of one volume: EC2's fields plus its wrapped data key")
                .after_help("Example:\n  keyvol volume describe vol-0123456789abcdef0 --query State")
                .arg(vol_arg())
                .arg(vol_option()),
        )
        .subcommand(
            Command::new("describe-volumes")
                .about("DescribeVolumes: every volume of the account and region, or the ones named")
                .after_help("Example:\n  keyvol volume describe-volumes --volume-ids vol-1 vol-2")
                .arg(
                    Arg::new("volume-ids")
                        .long("volume-ids")
                        .value_name("VOLUME_ID")
                        .num_args(1..)
                        .help("Only these volumes"),
                )
                .arg(
                    Arg::new("filters")
                        .long("filters")
                        .value_name("FILTER")
                        .num_args(1..)
                        .action(ArgAction::Append)
                        .help("EC2 filters: Name=tag:team,Values=db or JSON (status, size, tag:K, tag-key, attachment.*, ...)"),
                ),
        )
        .subcommand(
            Command::new("list").about("Every volume of the account and region (describe-volumes)"),
        )
        .subcommand(
            Command::new("delete")
                .about("DeleteVolume: remove a detached volume and its ciphertext")
                .after_help("Example:\n  keyvol volume delete vol-0123456789abcdef0")
                .arg(vol_arg())
                .arg(vol_option()),
        )
        .subcommand(
            Command::new("modify")
                .about("ModifyVolume: grow a volume (resize2fs/xfs_growfs is then yours)")
                .after_help("Example:\n  keyvol volume modify vol-0123456789abcdef0 --size 20GiB")
                .arg(vol_arg())
                .arg(vol_option())
                .arg(
                    Arg::new("size")
                        .long("size")
                        .required(true)
                        .help("The new size, larger than today's (e.g. 20GiB)"),
                ),
        )
        .subcommand(
            Command::new("attach")
                .about("AttachVolume: start the daemon that serves the decrypted device through FUSE")
                .after_help(
                    "Example:\n  keyvol volume attach vol-0123456789abcdef0 --device /run/keyvol/data.dev",
                )
                .arg(vol_arg())
                .arg(vol_option())
                .arg(
                    Arg::new("device")
                        .long("device")
                        .help("File path at which to expose the decrypted device"),
                )
                .arg(
                    Arg::new("foreground")
                        .long("foreground")
                        .action(ArgAction::SetTrue)
                        .help("Run the daemon in this process"),
                )
                .arg(
                    Arg::new("metrics")
                        .long("metrics")
                        .value_name("ADDR:PORT")
                        .env(METRICS_ENV)
                        .help("Serve the daemon's Prometheus metrics at http://ADDR:PORT/metrics (bytes and operations read/written, errors, hydration, snapshots)"),
                ),
        )
        .subcommand(
            Command::new("detach")
                .about("DetachVolume: stop the attach daemon (refused while mounted)")
                .after_help("Example:\n  keyvol volume detach vol-0123456789abcdef0")
                .arg(vol_arg())
                .arg(vol_option())
                .arg(
                    Arg::new("force")
                        .long("force")
                        .action(ArgAction::SetTrue)
                        .help("Unmount and release loop devices that use the volume first"),
                ),
        )
        .subcommand(
            Command::new("mount")
                .about("Attach, then put a filesystem on the volume and mount it (mkfs on first use)")
                .after_help(
                    "Examples:\n  keyvol volume mount vol-0123456789abcdef0 /mnt/data\n  keyvol volume mount --all",
                )
                .arg(
                    Arg::new("volume-id")
                        .value_name("VOLUME_ID")
                        .required_unless_present_any(["all", "volume-id-option"])
                        .help("The volume (vol-...)"),
                )
                .arg(vol_option().conflicts_with("all"))
                .arg(
                    Arg::new("dir")
                        .value_name("DIR")
                        .required_unless_present("all")
                        .help("The mount point (created when missing)"),
                )
                .arg(fs_arg())
                .arg(
                    Arg::new("options")
                        .long("options")
                        .value_name("O1,O2")
                        .help("Mount options passed to mount -o (e.g. ro,discard; nouuid for xfs)"),
                )
                .arg(all_arg("Attach and mount").conflicts_with_all(["volume-id", "dir"])),
        )
        .subcommand(
            Command::new("unmount")
                .about("Unmount a mounted volume, undo its loop device and detach it")
                .after_help("Examples:\n  keyvol volume unmount /mnt/data\n  keyvol volume unmount --all")
                .arg(
                    Arg::new("dir")
                        .value_name("DIR")
                        .required_unless_present("all")
                        .help("The mount point"),
                )
                .arg(all_arg("Unmount and detach").conflicts_with("dir")),
        )
        .subcommand(
            Command::new("status")
                .about("Attachments, loop devices and mounts of this home's volumes, and the boot table"),
        )
        .subcommand(
            Command::new("enable")
                .about("Bring a volume up at boot: record it in the home's boot table")
                .long_about(
                    "Bring a volume up at boot: record it in the home's boot table (the keyvol \
                     counterpart of /etc/crypttab + /etc/fstab). `keyvol volume mount --all` \
                     (run by keyvol-volumes.service) attaches and mounts the enabled volumes in \
                     the order they were enabled. Enabling a volume again replaces its entry.",
                )
                .after_help(
                    "Example:\n  keyvol volume enable vol-0123456789abcdef0 --mount /srv/data --options discard --nofail",
                )
                .arg(vol_arg())
                .arg(vol_option())
                .arg(
                    Arg::new("mount")
                        .long("mount")
                        .value_name("DIR")
                        .required(true)
                        .help("Where to mount the volume at boot"),
                )
                .arg(fs_arg())
                .arg(
                    Arg::new("options")
                        .long("options")
                        .value_name("O1,O2")
                        .help("Mount options passed to mount -o (e.g. ro,discard; nouuid for xfs)"),
                )
                .arg(
                    Arg::new("nofail")
                        .long("nofail")
                        .action(ArgAction::SetTrue)
                        .help("A failure of this volume does not fail `mount --all`"),
                ),
        )
        .subcommand(
            Command::new("disable")
                .about("Remove a volume from the boot table (it stays mounted until unmounted)")
                .after_help("Example:\n  keyvol volume disable vol-0123456789abcdef0")
                .arg(vol_arg())
                .arg(vol_option()),
        )
        .subcommand(
            Command::new("import")
                .about("Put a volume's backing file on this host (a volume made on another host)")
                .after_help(
                    "Example:\n  keyvol volume import --volume-json file://vol.json --backing-file /backup/vol.img",
                )
                .arg(
                    Arg::new("volume-json")
                        .long("volume-json")
                        .required_unless_present("volume-id-option")
                        .help("file://PATH of `keyvol volume describe` output"),
                )
                .arg(
                    Arg::new("volume-id-option")
                        .long("volume-id")
                        .value_name("VOLUME_ID")
                        .help("With a control plane (kms-endpoint): the volume whose backing file this is, as the control plane records it"),
                )
                .arg(
                    Arg::new("backing-file")
                        .long("backing-file")
                        .required(true)
                        .help("The volume's ciphertext file (<vol>.img)"),
                ),
        )
}

fn op_name(sub: &str) -> &'static str {
    match sub {
        "create" => "CreateVolume",
        "describe" | "describe-volumes" | "list" => "DescribeVolumes",
        "delete" => "DeleteVolume",
        "modify" => "ModifyVolume",
        "attach" => "AttachVolume",
        "detach" => "DetachVolume",
        "mount" => "MountVolume",
        "unmount" => "UnmountVolume",
        "import" => "ImportVolume",
        "enable" => "EnableVolumeAtBoot",
        "disable" => "DisableVolumeAtBoot",
        _ => "DescribeVolumeStatus",
    }
}

/// The tags of `--tag-specifications` (ResourceType volume only).
fn tag_specs(m: &ArgMatches) -> Result<Vec<(String, String)>, String> {
    let raw = strings(m, "tag-specifications");
    let mut tags = Vec::new();
    for (rt, t) in keyvol::cli_shorthand::tag_specifications(&raw)? {
        if rt != "volume" {
            return Err(format!(
                "--tag-specifications: ResourceType must be volume here, not '{rt}'"
            ));
        }
        tags.extend(t);
    }
    Ok(tags)
}

fn mount_options(m: &ArgMatches) -> Result<Vec<String>, ApiError> {
    m.get_one::<String>("options")
        .map(|o| boot::parse_mount_options(o))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// `mount --all` / `unmount --all`: prints the report, then fails when a
/// volume without `nofail` failed.
fn run_all(s: &Session, sub: &str, op: &str) -> Result<Value, CliError> {
    let api = |e: ApiError| CliError::api(op, e);
    let report = if sub == "mount" {
        boot::mount_all(s, Some(snapshot_source(s).map_err(api)?)).map_err(api)?
    } else {
        boot::unmount_all(s).map_err(api)?
    };
    match report.error(if sub == "mount" {
        "mount --all"
    } else {
        "unmount --all"
    }) {
        None => Ok(report.to_json()),
        Some(e) => {
            let out = m_output(&report.to_json());
            keyvol::output::print_lines(&[out]);
            Err(api(e))
        }
    }
}

fn m_output(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub fn run(s: &Session, sub: &str, m: &ArgMatches) -> Result<Value, CliError> {
    let op = op_name(sub);
    tracing::debug!(operation = op, "volume {sub}");
    let api = |e: ApiError| CliError::api(op, e);
    if matches!(sub, "mount" | "unmount") && m.get_flag("all") {
        return run_all(s, sub, op);
    }
    let vols = Volumes::open(s)
        .map_err(api)?
        .with_snapshot_source(snapshot_source(s).map_err(api)?);
    let vols = if sub == "mount" {
        vols.with_mount_options(mount_options(m).map_err(api)?)
    } else {
        vols
    };
    let vol = || {
        ["volume-id", "volume-id-option"]
            .iter()
            .find_map(|id| m.try_get_one::<String>(id).ok().flatten().cloned())
            .unwrap_or_default()
    };
    // Every command is the control plane's action on its volume: authorized
    // with the caller's identity policies and audited there.
    let vid = vol();
    let size_arg = m
        .try_get_one::<String>("size")
        .ok()
        .flatten()
        .map(|x| parse_size(x))
        .transpose()
        .map_err(api)?;
    let snap_arg = m
        .try_get_one::<String>("snapshot-id")
        .ok()
        .flatten()
        .cloned();
    let foreground_child = sub == "attach"
        && m.get_flag("foreground")
        && std::env::var_os(keyvol::volume::service::ATTACH_CHILD_ENV).is_some();
    let (action, target) = match sub {
        "create" => (
            "ec2:CreateVolume",
            Target::NewVolume {
                size_bytes: size_arg,
                snapshot: snap_arg.as_deref(),
            },
        ),
        "import" => (
            "ec2:ImportVolume",
            Target::NewVolume {
                size_bytes: None,
                snapshot: None,
            },
        ),
        "describe" | "describe-volumes" | "list" => ("ec2:DescribeVolumes", Target::Account),
        "status" => ("ec2:DescribeVolumeStatus", Target::Account),
        "delete" => ("ec2:DeleteVolume", Target::Volume(&vid)),
        "modify" => ("ec2:ModifyVolume", Target::Volume(&vid)),
        "attach" | "mount" | "enable" | "disable" => {
            ("ec2:AttachVolume", Target::VolumeOnHost(&vid))
        }
        "detach" => ("ec2:DetachVolume", Target::VolumeOnHost(&vid)),
        // The volume of a mountpoint is found by unmount itself; the
        // action is authorized on the caller's volumes.
        "unmount" => ("ec2:DetachVolume", Target::Account),
        _ => ("ec2:DescribeVolumes", Target::Account),
    };
    let params: Vec<(&str, &str)> = [("VolumeId", vid.as_str())]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .chain(snap_arg.as_deref().map(|sn| ("SnapshotId", sn)))
        .collect();
    if foreground_child {
        // The daemon a gated `attach` started: already authorized and audited.
        return run_command(s, sub, m, &vols, &vol, op);
    }
    if sub != "status" {
        // Records at a control plane on another machine: it authorizes
        // and audits each command there.
        if let Some(cp) = keyvol::volume::remote::control_plane(s).map_err(api)? {
            return run_remote(sub, m, &vols, &cp, &vid, op);
        }
    }
    if sub == "detach" {
        if let Some(out) =
            detach_from_remote_host(s, &vols, &vid, m.get_flag("force")).map_err(api)?
        {
            return Ok(out);
        }
    }
    keyvol::ec2::gate(
        s,
        action,
        target,
        &params,
        || split_usage(run_command(s, sub, m, &vols, &vol, op)),
        audited_response,
    )
    .map_err(api)?
}

/// Where restored volumes hydrate from: the snapshot store of this home,
/// or, on a host whose records are at a control plane on another machine,
/// that control plane's EBS direct APIs.
fn snapshot_source(s: &Session) -> Result<keyvol::volume::service::SourceResolver, ApiError> {
    let remote = keyvol::config::get(&s.home, keyvol::volume::remote::ENDPOINT_SETTING)?.is_some();
    Ok(if remote {
        keyvol::volume::remote_restore::SOURCE
    } else {
        keyvol::snapshot::ops::SNAPSHOT_SOURCE
    })
}

/// `volume detach` on the control plane's own machine of a volume attached
/// to a volume host on another machine: the control plane's DetachVolume,
/// the same call as `aws ec2 detach-volume` (authorized as
/// `ec2:DetachVolume` on the volume and on that host's instance, one audit
/// event). The attachment and the host's right to the key are forgotten;
/// the host's daemon learns it from its long poll and stops, refusing
/// while its device is in use there; `force` is DetachVolume's `Force`
/// (the daemon then undoes the mounts and loop devices on its device
/// first, also for a volume an earlier detach left served there). `None`
/// when no host on another machine holds an attachment of `v` (or, with
/// `force`, its data).
fn detach_from_remote_host(
    s: &Session,
    vols: &Volumes<'_>,
    v: &str,
    force: bool,
) -> Result<Option<Value>, ApiError> {
    let remote = keyvol::ec2::hosts::RemoteAttachments::open(s)?;
    if v.is_empty() {
        return Ok(None);
    }
    let held = force && remote.data_host(v)?.is_some();
    if remote.get(v)?.is_none() && !held {
        return Ok(None);
    }
    let mut pairs = vec![
        ("Action".to_string(), "DetachVolume".to_string()),
        ("VolumeId".to_string(), v.to_string()),
    ];
    if force {
        pairs.push(("Force".to_string(), "true".to_string()));
    }
    let p = keyvol::ec2::Params::new(pairs);
    let detached = keyvol::ec2::call(s, &p)?;
    let mut out = vols.to_json(&vols.get(v)?)?;
    keyvol::ec2::hosts::show_remote_attachment(s, &mut out)?;
    out["DetachedFrom"] = json!({
        "InstanceId": detached["instanceId"],
        "Device": detached["device"],
        "State": detached["status"],
    });
    Ok(Some(out))
}

/// A command's outcome as the control plane audits it: service errors are
/// errors of the action; a usage error is the CLI's own (exit 252) and
/// passes through unchanged.
pub(crate) fn split_usage(r: Result<Value, CliError>) -> Result<Result<Value, CliError>, ApiError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(CliError::Api { error, .. }) => Err(error),
        Err(CliError::Service { error, .. }) => Err(error.into()),
        Err(u @ CliError::Usage(_)) => Ok(Err(u)),
    }
}

/// The audited response of a volume command: the ids it names, nothing
/// else (no wrapped keys, no paths).
pub(crate) fn audited_response(r: &Result<Value, CliError>) -> Value {
    let Ok(v) = r else { return Value::Null };
    let mut out = serde_json::Map::new();
    for k in ["VolumeId", "SnapshotId", "State"] {
        if let Some(x) = v.get(k).filter(|x| x.is_string()) {
            out.insert(k.to_string(), x.clone());
        }
    }
    Value::Object(out)
}

fn run_command(
    s: &Session,
    sub: &str,
    m: &ArgMatches,
    vols: &Volumes<'_>,
    vol: &dyn Fn() -> String,
    op: &'static str,
) -> Result<Value, CliError> {
    let api = |e: ApiError| CliError::api(op, e);
    Ok(match sub {
        "create" => {
            let size = m
                .get_one::<String>("size")
                .map(|x| parse_size(x))
                .transpose()
                .map_err(api)?;
            let key = m.get_one::<String>("kms-key-id").map(String::as_str);
            if let Some(z) = m.get_one::<String>("availability-zone") {
                let region = s.ctx.region.as_str();
                if !["a", "b", "c"].iter().any(|l| *z == format!("{region}{l}")) {
                    return Err(CliError::api(op, ApiError::invalid_parameter(format!(
                        "Invalid availability zone: [{z}]: use a zone of region {region} ({region}a, {region}b, {region}c)"
                    ))));
                }
            }
            let tags = tag_specs(m).map_err(CliError::usage)?;
            let r = match m.get_one::<String>("snapshot-id") {
                Some(snap) => {
                    keyvol::snapshot::ops::restore(s, snap, key, size, m.get_flag("hydrate"))
                        .map_err(api)?
                }
                None => {
                    let size = size.ok_or_else(|| {
                        CliError::usage(
                            "the following arguments are required: --size (or --snapshot-id)",
                        )
                    })?;
                    vols.create(size, key).map_err(api)?
                }
            };
            if !tags.is_empty() {
                // Tags are the control plane's CreateTags, authorized and
                // audited as such; a refusal leaves no untagged volume.
                let mut p = vec![
                    ("Action".to_string(), "CreateTags".to_string()),
                    ("ResourceId.1".to_string(), r.volume_id.to_string()),
                ];
                for (i, (k, v)) in tags.iter().enumerate() {
                    p.push((format!("Tag.{}.Key", i + 1), k.clone()));
                    p.push((format!("Tag.{}.Value", i + 1), v.clone()));
                }
                if let Err(e) = keyvol::ec2::call(s, &keyvol::ec2::Params::new(p)) {
                    let _ = vols.delete(r.volume_id.as_str());
                    return Err(api(e));
                }
            }
            vols.to_json(&r).map_err(api)?
        }
        "describe" => {
            let mut v = vols.to_json(&vols.get(&vol()).map_err(api)?).map_err(api)?;
            keyvol::ec2::hosts::show_remote_attachment(s, &mut v).map_err(api)?;
            v
        }
        "describe-volumes" | "list" => {
            let ids = strings(m, "volume-ids");
            let wanted = (!ids.is_empty()).then_some(ids);
            // --filters: the control plane's DescribeVolumes decides which.
            let filters = strings(m, "filters");
            let wanted = if filters.is_empty() {
                wanted
            } else {
                let parsed = keyvol::cli_shorthand::filters(&filters).map_err(CliError::usage)?;
                let mut p = vec![("Action".to_string(), "DescribeVolumes".to_string())];
                for (i, (name, values)) in parsed.iter().enumerate() {
                    p.push((format!("Filter.{}.Name", i + 1), name.clone()));
                    for (j, v) in values.iter().enumerate() {
                        p.push((format!("Filter.{}.Value.{}", i + 1, j + 1), v.clone()));
                    }
                }
                for (i, v) in wanted.iter().flatten().enumerate() {
                    p.push((format!("VolumeId.{}", i + 1), v.clone()));
                }
                let found = keyvol::ec2::call(s, &keyvol::ec2::Params::new(p)).map_err(api)?;
                Some(
                    found["volumeSet"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v["volumeId"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            };
            let all = match wanted {
                Some(ids) => ids
                    .iter()
                    .map(|v| vols.get(v))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(api)?,
                None => vols.list().map_err(api)?,
            };
            let out: Vec<Value> = all
                .iter()
                .map(|r| {
                    let mut v = vols.to_json(r)?;
                    keyvol::ec2::hosts::show_remote_attachment(s, &mut v)?;
                    Ok(v)
                })
                .collect::<Result<_, ApiError>>()
                .map_err(api)?;
            json!({"Volumes": out})
        }
        "delete" => {
            vols.delete(&vol()).map_err(api)?;
            json!({})
        }
        "modify" => {
            let size = new_size(m).map_err(api)?;
            // Data on a volume host on another machine: the record grows
            // here, the host grows its device (online when attached).
            let elsewhere = keyvol::ec2::hosts::data_instance(s, &vol())
                .map_err(api)?
                .is_some();
            let r = if elsewhere {
                vols.record_size(&vol(), size)
            } else {
                vols.modify(&vol(), size)
            };
            vols.to_json(&r.map_err(api)?).map_err(api)?
        }
        "attach" => {
            let device = m.get_one::<String>("device").map(Path::new);
            let metrics = m.get_one::<String>("metrics");
            if m.get_flag("foreground") {
                let device =
                    device.ok_or_else(|| CliError::usage("--foreground needs --device PATH"))?;
                if let Some(addr) = metrics {
                    keyvol::telemetry::install_and_serve(addr, &[("volume_id", &vol())])
                        .map_err(CliError::usage)?;
                }
                let mut out = std::io::stdout();
                vols.run_daemon(&vol(), device, &mut out).map_err(api)?;
                return Ok(Value::Null);
            }
            if let Some(addr) = metrics {
                std::env::set_var(METRICS_ENV, addr);
            }
            vols.attach(&vol(), device).map_err(api)?
        }
        "detach" => vols.detach(&vol(), m.get_flag("force")).map_err(api)?,
        "mount" => {
            let fs = fs_type(m)?;
            let dir = m.get_one::<String>("dir").cloned().unwrap_or_default();
            vols.mount(&vol(), Path::new(&dir), fs).map_err(api)?
        }
        "unmount" => {
            let dir = m.get_one::<String>("dir").cloned().unwrap_or_default();
            vols.unmount(Path::new(&dir)).map_err(api)?
        }
        "status" => {
            let mut out = vols.status().map_err(api)?;
            let table = boot::BootTable::open(s).map_err(api)?;
            let entries = table.list().map_err(api)?;
            let attachments = out["Attachments"].as_array().cloned().unwrap_or_default();
            out["BootVolumes"] = entries
                .iter()
                .map(|e| {
                    let mut j = e.to_json();
                    j["Up"] = json!(boot::entry_is_up(&attachments, e));
                    j
                })
                .collect();
            out
        }
        "enable" => {
            let fs = fs_type(m)?;
            let dir = m.get_one::<String>("mount").cloned().unwrap_or_default();
            let id = vols.get(&vol()).map_err(api)?.volume_id;
            enable(s, m, &id, fs, &dir).map_err(api)?
        }
        "disable" => disable(s, &vol()).map_err(api)?,
        "import" => {
            let arg = m
                .get_one::<String>("volume-json")
                .cloned()
                .unwrap_or_default();
            let path = arg.strip_prefix("file://").unwrap_or(&arg);
            // A description is small: read at most 64 KiB + 1 of it.
            let bytes = super::kms::read_path("ImportVolume", "VolumeJson", path, 64 * 1024)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| CliError::usage(format!("--volume-json {path} is not UTF-8 text")))?;
            let described: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::usage(format!("--volume-json {path} is not JSON: {e}")))?;
            let backing = m
                .get_one::<String>("backing-file")
                .cloned()
                .unwrap_or_default();
            vols.to_json(&vols.import(&described, Path::new(&backing)).map_err(api)?)
                .map_err(api)?
        }
        other => return Err(CliError::usage(format!("unknown volume command {other}"))),
    })
}

/// A command of a home whose volume records are at a control plane on
/// another machine (`kms-endpoint`): the control plane's EC2 actions,
/// with the backing files and attach daemons on this host.
fn run_remote(
    sub: &str,
    m: &ArgMatches,
    vols: &Volumes<'_>,
    cp: &keyvol::server::ControlPlaneClient,
    vid: &str,
    op: &'static str,
) -> Result<Value, CliError> {
    let api = |e: ApiError| CliError::api(op, e);
    let unsupported = |what: &str| {
        CliError::usage(format!(
            "{what} is not available on a volume host whose records are at the control plane {} (kms-endpoint): use the aws CLI against that endpoint, or attach the volume and use the device it serves",
            cp.endpoint()
        ))
    };
    Ok(match sub {
        "create" => {
            let tags = tag_specs(m).map_err(CliError::usage)?;
            let size = m
                .get_one::<String>("size")
                .map(|x| parse_size(x))
                .transpose()
                .map_err(api)?;
            let key = m.get_one::<String>("kms-key-id").map(String::as_str);
            match m.get_one::<String>("snapshot-id") {
                Some(snap) => vols
                    .restore_remote(cp, snap, size, key, &tags, m.get_flag("hydrate"))
                    .map_err(api)?,
                None => {
                    let size = size.ok_or_else(|| {
                        CliError::usage(
                            "the following arguments are required: --size (or --snapshot-id)",
                        )
                    })?;
                    vols.create_remote(cp, size, key, &tags).map_err(api)?
                }
            }
        }
        "describe" => vols.describe_one_remote(cp, vid).map_err(api)?,
        "modify" => {
            let size = new_size(m).map_err(api)?;
            vols.modify_remote(cp, vid, size).map_err(api)?
        }
        "describe-volumes" | "list" => {
            let filters =
                keyvol::cli_shorthand::filters(&strings(m, "filters")).map_err(CliError::usage)?;
            let ids = strings(m, "volume-ids");
            vols.describe_remote(cp, &ids, &filters).map_err(api)?
        }
        "delete" => {
            vols.delete_remote(cp, vid).map_err(api)?;
            json!({})
        }
        "attach" => {
            let device = m.get_one::<String>("device").map(Path::new);
            if m.get_flag("foreground") {
                let device =
                    device.ok_or_else(|| CliError::usage("--foreground needs --device PATH"))?;
                if let Some(addr) = m.get_one::<String>("metrics") {
                    keyvol::telemetry::install_and_serve(addr, &[("volume_id", vid)])
                        .map_err(CliError::usage)?;
                }
                let mut out = std::io::stdout();
                vols.run_daemon_remote(cp, vid, device, &mut out)
                    .map_err(api)?;
                return Ok(Value::Null);
            }
            if let Some(addr) = m.get_one::<String>("metrics") {
                std::env::set_var(METRICS_ENV, addr);
            }
            vols.attach_remote(cp, vid, device).map_err(api)?
        }
        "detach" => vols
            .detach_remote(cp, vid, m.get_flag("force"))
            .map_err(api)?,
        "mount" => {
            let fs = fs_type(m)?;
            let dir = m.get_one::<String>("dir").cloned().unwrap_or_default();
            vols.with_adopted(cp, vid, || vols.mount(vid, Path::new(&dir), fs))
                .map_err(api)?
        }
        "unmount" => {
            let dir = m.get_one::<String>("dir").cloned().unwrap_or_default();
            vols.unmount(Path::new(&dir)).map_err(api)?
        }
        // The boot table is this host's own; `mount --all` attaches each
        // volume at the control plane (AttachVolume), as `mount` does.
        "enable" => {
            let fs = fs_type(m)?;
            let dir = m.get_one::<String>("mount").cloned().unwrap_or_default();
            let id = vols.boot_volume_remote(cp, vid).map_err(api)?;
            enable(vols.session(), m, &id, fs, &dir).map_err(api)?
        }
        "disable" => disable(vols.session(), vid).map_err(api)?,
        "import" => {
            let backing = m
                .get_one::<String>("backing-file")
                .cloned()
                .unwrap_or_default();
            let id = if vid.is_empty() {
                let arg = m
                    .get_one::<String>("volume-json")
                    .cloned()
                    .unwrap_or_default();
                let path = arg.strip_prefix("file://").unwrap_or(&arg);
                let bytes = super::kms::read_path("ImportVolume", "VolumeJson", path, 64 * 1024)?;
                let described: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    CliError::usage(format!("--volume-json {path} is not JSON: {e}"))
                })?;
                described["VolumeId"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        CliError::usage(format!("--volume-json {path} names no VolumeId"))
                    })?
            } else {
                vid.to_string()
            };
            vols.import_remote(cp, &id, Path::new(&backing))
                .map_err(api)?
        }
        other => return Err(unsupported(&format!("`keyvol volume {other}`"))),
    })
}

/// `volume enable`: the boot entry of `vol` (found by the caller).
fn enable(
    s: &Session,
    m: &ArgMatches,
    vol: &keyvol::ids::VolumeId,
    fs: FsType,
    dir: &str,
) -> Result<Value, ApiError> {
    let table = boot::BootTable::open(s)?;
    let e = table.enable(
        s,
        vol,
        boot::BootSpec {
            mountpoint: dir.into(),
            fs,
            options: mount_options(m)?,
            nofail: m.get_flag("nofail"),
        },
    )?;
    Ok(json!({"BootVolume": e.to_json()}))
}

/// `volume disable`: removes the boot entry of `v`.
fn disable(s: &Session, v: &str) -> Result<Value, ApiError> {
    let table = boot::BootTable::open(s)?;
    Ok(json!({"BootVolume": table.disable(v)?.to_json(), "Disabled": true}))
}

/// The `--fs` of `volume mount` (ext4 when not given).
fn fs_type(m: &clap::ArgMatches) -> Result<FsType, CliError> {
    m.get_one::<String>("fs")
        .map(String::as_str)
        .unwrap_or("ext4")
        .parse()
        .map_err(|e: keyvol::volume::VolumeError| CliError::usage(e.to_string()))
}

/// The `--size` of `volume modify`.
fn new_size(m: &ArgMatches) -> Result<u64, ApiError> {
    parse_size(
        m.get_one::<String>("size")
            .map(String::as_str)
            .unwrap_or(""),
    )
}

/// The values of a repeatable option `id` (none when absent or not an
/// option of this command).
fn strings(m: &ArgMatches, id: &str) -> Vec<String> {
    m.try_get_many::<String>(id)
        .ok()
        .flatten()
        .map(|v| v.cloned().collect())
        .unwrap_or_default()
}
