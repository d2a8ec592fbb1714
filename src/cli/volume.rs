//! `keyvol volume ...`: EBS-style volume lifecycle, attach and mount.

use std::path::Path;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{json, Value};

use keyvol::api_error::ApiError;
use keyvol::session::Session;
use keyvol::volume::mount::FsType;
use keyvol::volume::service::{parse_size, Volumes};

use super::CliError;

fn vol_arg() -> Arg {
    Arg::new("volume-id").required(true).help("vol-...")
}

pub fn command() -> Command {
    Command::new("volume")
        .about("Encrypted volumes: create, attach through FUSE, mount a filesystem")
        .subcommand_required(true)
        .subcommand(
            Command::new("create")
                .about("Create a volume with a new data key under a KMS key")
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
                    Arg::new("hydrate")
                        .long("hydrate")
                        .action(clap::ArgAction::SetTrue)
                        .requires("snapshot-id")
                        .help("With --snapshot-id: fetch every block now instead of on first read"),
                ),
        )
        .subcommand(Command::new("describe").arg(vol_arg()))
        .subcommand(
            Command::new("describe-volumes")
                .arg(Arg::new("volume-ids").long("volume-ids").num_args(1..)),
        )
        .subcommand(Command::new("list"))
        .subcommand(Command::new("delete").arg(vol_arg()))
        .subcommand(
            Command::new("modify")
                .arg(vol_arg())
                .arg(Arg::new("size").long("size").required(true)),
        )
        .subcommand(
            Command::new("attach")
                .arg(vol_arg())
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
                ),
        )
        .subcommand(
            Command::new("detach")
                .arg(vol_arg())
                .arg(Arg::new("force").long("force").action(ArgAction::SetTrue)),
        )
        .subcommand(
            Command::new("mount")
                .arg(vol_arg())
                .arg(Arg::new("dir").required(true))
                .arg(
                    Arg::new("fs")
                        .long("fs")
                        .default_value("ext4")
                        .value_parser(["ext4", "xfs"]),
                ),
        )
        .subcommand(Command::new("unmount").arg(Arg::new("dir").required(true)))
        .subcommand(Command::new("status"))
        .subcommand(
            Command::new("import")
                .about("Register a volume made on another host that shares this KMS")
                .arg(
                    Arg::new("volume-json")
                        .long("volume-json")
                        .required(true)
                        .help("file://PATH of `keyvol volume describe` output"),
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
        _ => "DescribeVolumeStatus",
    }
}

pub fn run(s: &Session, sub: &str, m: &ArgMatches) -> Result<Value, CliError> {
    let op = op_name(sub);
    tracing::debug!(operation = op, "volume {sub}");
    let api = |e: ApiError| CliError::api(op, e);
    let vols = Volumes::open(s)
        .map_err(api)?
        .with_snapshot_source(keyvol::snapshot::ops::hydration_source);
    let vol = || {
        m.get_one::<String>("volume-id")
            .cloned()
            .unwrap_or_default()
    };
    Ok(match sub {
        "create" => {
            let size = m
                .get_one::<String>("size")
                .map(|x| parse_size(x))
                .transpose()
                .map_err(api)?;
            let key = m.get_one::<String>("kms-key-id").map(String::as_str);
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
            vols.to_json(&r).map_err(api)?
        }
        "describe" => vols.to_json(&vols.get(&vol()).map_err(api)?).map_err(api)?,
        "describe-volumes" | "list" => {
            let wanted: Option<Vec<String>> = m
                .try_get_many::<String>("volume-ids")
                .ok()
                .flatten()
                .map(|v| v.cloned().collect());
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
                .map(|r| vols.to_json(r))
                .collect::<Result<_, _>>()
                .map_err(api)?;
            json!({"Volumes": out})
        }
        "delete" => {
            vols.delete(&vol()).map_err(api)?;
            json!({})
        }
        "modify" => {
            let size = parse_size(
                m.get_one::<String>("size")
                    .map(String::as_str)
                    .unwrap_or(""),
            )
            .map_err(api)?;
            vols.to_json(&vols.modify(&vol(), size).map_err(api)?)
                .map_err(api)?
        }
        "attach" => {
            let device = m.get_one::<String>("device").map(Path::new);
            if m.get_flag("foreground") {
                let device =
                    device.ok_or_else(|| CliError::usage("--foreground needs --device PATH"))?;
                let mut out = std::io::stdout();
                vols.run_daemon(&vol(), device, &mut out).map_err(api)?;
                return Ok(Value::Null);
            }
            vols.attach(&vol(), device).map_err(api)?
        }
        "detach" => vols.detach(&vol(), m.get_flag("force")).map_err(api)?,
        "mount" => {
            let fs: FsType = m
                .get_one::<String>("fs")
                .map(String::as_str)
                .unwrap_or("ext4")
                .parse()
                .map_err(|e: keyvol::volume::VolumeError| CliError::usage(e.to_string()))?;
            let dir = m.get_one::<String>("dir").cloned().unwrap_or_default();
            vols.mount(&vol(), Path::new(&dir), fs).map_err(api)?
        }
        "unmount" => {
            let dir = m.get_one::<String>("dir").cloned().unwrap_or_default();
            vols.unmount(Path::new(&dir)).map_err(api)?
        }
        "status" => vols.status().map_err(api)?,
        "import" => {
            let arg = m
                .get_one::<String>("volume-json")
                .cloned()
                .unwrap_or_default();
            let path = arg.strip_prefix("file://").unwrap_or(&arg);
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("cannot read --volume-json {path}: {e}")))?;
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
