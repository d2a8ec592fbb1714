//! `keyvol-snap`: the companion snapshot CLI, wiring of the command line to
//! the keyvol library's snapshot operations.

mod cli;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Parser;
use keyvol::api_error::{ApiError, ApiResult};
use keyvol::output::Query;
use keyvol::session::{Session, SessionOptions};
use keyvol::snapshot::ops::{self, CopyOptions, CreateOptions, Reporter};
use keyvol::volume::service::{parse_size, Volumes};
use serde_json::Value;

use cli::{Cli, Cmd};

/// Progress on a terminal (stderr), the pending snapshot as a line for a
/// parent process, or nothing.
struct Report {
    tty: bool,
    pending_line: bool,
    last: u64,
}

impl Reporter for Report {
    fn pending(&mut self, snapshot: &Value) {
        if self.pending_line {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{snapshot}");
            let _ = out.flush();
        }
    }
    fn progress(&mut self, what: &str, done: u64, total: u64) {
        if !self.tty || total == 0 {
            return;
        }
        let pct = done * 100 / total;
        if pct != self.last || done == total {
            self.last = pct;
            let width = 30u64;
            let fill = (pct * width / 100) as usize;
            let _ = write!(
                std::io::stderr(),
                "\r{what:<9} [{}{}] {pct:>3}% ({done}/{total} blocks){}",
                "#".repeat(fill),
                "-".repeat(width as usize - fill),
                if done == total { "\n" } else { "" }
            );
        }
    }
}

fn session(cli: &Cli) -> Result<Session, ApiError> {
    let mut opts = SessionOptions::from_env().map_err(ApiError::from)?;
    if let Some(h) = &cli.global.home {
        opts.home = h.into();
    }
    if let Some(p) = &cli.global.profile {
        opts.profile = p.clone();
    }
    if let Some(r) = &cli.global.region {
        opts.region = r
            .parse()
            .map_err(|e: keyvol::ids::IdError| ApiError::invalid_parameter(e.to_string()))?;
    }
    Session::open(&opts).map_err(ApiError::from)
}

fn op_name(c: &Cmd) -> &'static str {
    match c {
        Cmd::Create { .. } => "CreateSnapshot",
        Cmd::Describe { .. } | Cmd::DescribeSnapshots { .. } => "DescribeSnapshots",
        Cmd::Delete { .. } => "DeleteSnapshot",
        Cmd::Wait { .. } => "DescribeSnapshots",
        Cmd::Share { .. } | Cmd::Unshare { .. } => "ModifySnapshotAttribute",
        Cmd::DescribeAttribute { .. } => "DescribeSnapshotAttribute",
        Cmd::Copy { .. } => "CopySnapshot",
        Cmd::Restore { .. } => "CreateVolume",
        Cmd::ListBlocks { .. } => "ListSnapshotBlocks",
        Cmd::ListChangedBlocks { .. } => "ListChangedBlocks",
        Cmd::Completion { .. } | Cmd::Man { .. } => "Documentation",
    }
}

/// Runs this command again in the background with `--wait --report-pending`
/// and prints the pending snapshot it reports (create and copy without
/// --wait return at once, as EC2 does).
fn in_background(s: &Session) -> ApiResult<Value> {
    let exe = std::env::current_exe()
        .map_err(|e| ApiError::internal(format!("locating keyvol-snap: {e}")))?;
    let logs = s.home.dir().join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", logs.display())))?;
    let log_path = logs.join(format!("snapshot-job-{}.log", std::process::id()));
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .args(["--wait", "--report-pending"]);
    let line = keyvol::background::start_and_wait_ready(cmd, &log_path, "the snapshot job")?;
    serde_json::from_str(line.trim())
        .map_err(|e| ApiError::internal(format!("the snapshot job printed bad JSON: {e}")))
}

fn run(cli: &Cli) -> ApiResult<Value> {
    let s = session(cli)?;
    if let Some(cp) = keyvol::volume::remote::control_plane(&s)? {
        // Records at a control plane on another machine: it authorizes and
        // audits each command there.
        return run_remote(cli, &s, &cp);
    }
    let background = matches!(
        &cli.command,
        Cmd::Create { wait: false, .. } | Cmd::Copy { wait: false, .. }
    );
    let (action, target) = gate_of(&cli.command);
    let params = gate_params(&cli.command);
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if background {
        return keyvol::ec2::gate(&s, action, target, &params, || in_background(&s), audited);
    }
    let report_pending = matches!(
        &cli.command,
        Cmd::Create {
            report_pending: true,
            ..
        } | Cmd::Copy {
            report_pending: true,
            ..
        }
    );
    let mut rep = Report {
        tty: !report_pending && std::io::stderr().is_terminal(),
        pending_line: report_pending,
        last: u64::MAX,
    };
    if report_pending {
        // The job a gated command started in the background: already
        // authorized and audited.
        return run_command(cli, &s, &mut rep, true);
    }
    keyvol::ec2::gate(
        &s,
        action,
        target,
        &params,
        || run_command(cli, &s, &mut rep, false),
        audited,
    )
}

/// A command on a volume host whose records are at the control plane
/// `cp`: its EC2 action (or EBS direct API) there.
fn run_remote(cli: &Cli, s: &Session, cp: &keyvol::server::ControlPlaneClient) -> ApiResult<Value> {
    use keyvol::snapshot::remote;
    match &cli.command {
        Cmd::Create {
            volume_id,
            description,
            freeze,
            wait,
            ..
        } => ops::host::create_at_control_plane(
            s,
            volume_id,
            &CreateOptions {
                description: description.clone(),
                freeze: freeze.as_ref().map(Into::into),
            },
            *wait,
        ),
        Cmd::Describe { snapshot_id } => remote::describe(cp, snapshot_id),
        Cmd::DescribeSnapshots { restorable_by } => {
            remote::describe_snapshots(cp, restorable_by.is_some())
        }
        Cmd::Delete { snapshot_id } => remote::delete(cp, snapshot_id),
        Cmd::Wait {
            snapshot_id,
            timeout_seconds,
        } => remote::wait(cp, snapshot_id, Duration::from_secs(*timeout_seconds)),
        Cmd::Share {
            snapshot_id,
            accounts,
            group,
        } => {
            check_share(accounts, group.as_deref())?;
            remote::modify_permission(cp, snapshot_id, true, accounts, group.is_some())
        }
        Cmd::Unshare {
            snapshot_id,
            accounts,
        } => remote::modify_permission(cp, snapshot_id, false, accounts, false),
        Cmd::DescribeAttribute { snapshot_id, .. } => remote::describe_attribute(cp, snapshot_id),
        Cmd::Copy {
            snapshot_id,
            source_region,
            kms_key_id,
            description,
            wait,
            ..
        } => remote::copy(
            cp,
            snapshot_id,
            source_region,
            kms_key_id.as_deref(),
            description.as_deref(),
            *wait,
        ),
        Cmd::Restore { snapshot_id, .. } => Err(ApiError::invalid_parameter(format!(
            "keyvol-snap restore makes a volume of this home, whose records are at the control plane {}: use `keyvol volume create --snapshot-id {snapshot_id}` on this host",
            cp.endpoint()
        ))),
        Cmd::ListBlocks { snapshot_id } => remote::list_blocks(cp, snapshot_id),
        Cmd::ListChangedBlocks {
            first_snapshot_id,
            second_snapshot_id,
        } => remote::list_changed_blocks(cp, first_snapshot_id, second_snapshot_id),
        Cmd::Completion { .. } | Cmd::Man { .. } => run_command(
            cli,
            s,
            &mut Report {
                tty: false,
                pending_line: false,
                last: u64::MAX,
            },
            false,
        ),
    }
}

/// `share`'s options: accounts, or the group `all`.
fn check_share(accounts: &[String], group: Option<&str>) -> ApiResult<()> {
    if let Some(g) = group.filter(|g| *g != "all") {
        return Err(ApiError::invalid_parameter(format!(
            "group '{g}' is not valid: the only group is 'all'"
        )));
    }
    if accounts.is_empty() && group.is_none() {
        return Err(ApiError::invalid_parameter(
            "give --account ID (repeatable) to share with",
        ));
    }
    Ok(())
}

/// The control plane's action and resource of a command.
fn gate_of(cmd: &Cmd) -> (&'static str, keyvol::ec2::Target<'_>) {
    use keyvol::ec2::Target;
    match cmd {
        Cmd::Create { volume_id, .. } => ("ec2:CreateSnapshot", Target::NewSnapshotOf(volume_id)),
        Cmd::Describe { .. } | Cmd::DescribeSnapshots { .. } | Cmd::Wait { .. } => {
            ("ec2:DescribeSnapshots", Target::Account)
        }
        Cmd::Delete { snapshot_id } => ("ec2:DeleteSnapshot", Target::Snapshot(snapshot_id)),
        Cmd::Share { snapshot_id, .. } | Cmd::Unshare { snapshot_id, .. } => {
            ("ec2:ModifySnapshotAttribute", Target::Snapshot(snapshot_id))
        }
        Cmd::DescribeAttribute { snapshot_id, .. } => (
            "ec2:DescribeSnapshotAttribute",
            Target::Snapshot(snapshot_id),
        ),
        Cmd::Copy {
            snapshot_id,
            source_region,
            ..
        } => (
            "ec2:CopySnapshot",
            Target::CopyOf {
                region: source_region,
                snapshot: snapshot_id,
            },
        ),
        Cmd::Restore { snapshot_id, .. } => (
            "ec2:CreateVolume",
            Target::NewVolume {
                size_bytes: None,
                snapshot: Some(snapshot_id),
            },
        ),
        Cmd::ListBlocks { snapshot_id } => {
            ("ebs:ListSnapshotBlocks", Target::Snapshot(snapshot_id))
        }
        Cmd::ListChangedBlocks {
            second_snapshot_id, ..
        } => (
            "ebs:ListChangedBlocks",
            Target::Snapshot(second_snapshot_id),
        ),
        Cmd::Completion { .. } | Cmd::Man { .. } => ("ec2:DescribeSnapshots", Target::Account),
    }
}

/// The audited parameters of a command.
fn gate_params(cmd: &Cmd) -> Vec<(&'static str, String)> {
    match cmd {
        Cmd::Create { volume_id, .. } => vec![("VolumeId", volume_id.clone())],
        Cmd::Copy {
            snapshot_id,
            source_region,
            ..
        } => vec![
            ("SourceSnapshotId", snapshot_id.clone()),
            ("SourceRegion", source_region.clone()),
        ],
        Cmd::Describe { snapshot_id }
        | Cmd::Delete { snapshot_id }
        | Cmd::Share { snapshot_id, .. }
        | Cmd::Unshare { snapshot_id, .. }
        | Cmd::DescribeAttribute { snapshot_id, .. }
        | Cmd::Restore { snapshot_id, .. }
        | Cmd::ListBlocks { snapshot_id }
        | Cmd::Wait { snapshot_id, .. } => vec![("SnapshotId", snapshot_id.clone())],
        _ => Vec::new(),
    }
}

/// The audited response: the ids and state, no keys.
fn audited(v: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["SnapshotId", "VolumeId", "State"] {
        if let Some(x) = v.get(k).filter(|x| x.is_string()) {
            out.insert(k.to_string(), x.clone());
        }
    }
    Value::Object(out)
}

fn run_command(cli: &Cli, s: &Session, rep: &mut Report, report_pending: bool) -> ApiResult<Value> {
    let v = match &cli.command {
        Cmd::Create {
            volume_id,
            description,
            freeze,
            ..
        } => ops::create(
            s,
            volume_id,
            &CreateOptions {
                description: description.clone(),
                freeze: freeze.as_ref().map(Into::into),
            },
            rep,
        )?,
        Cmd::Describe { snapshot_id } => ops::describe(s, snapshot_id)?,
        Cmd::DescribeSnapshots { restorable_by } => {
            ops::describe_snapshots(s, restorable_by.is_some())?
        }
        Cmd::Delete { snapshot_id } => ops::delete(s, snapshot_id)?,
        Cmd::Wait {
            snapshot_id,
            timeout_seconds,
        } => ops::wait(s, snapshot_id, Duration::from_secs(*timeout_seconds))?,
        Cmd::Share {
            snapshot_id,
            accounts,
            group,
        } => {
            check_share(accounts, group.as_deref())?;
            ops::modify_permission(s, snapshot_id, accounts, &[], group.is_some())?
        }
        Cmd::Unshare {
            snapshot_id,
            accounts,
        } => ops::modify_permission(s, snapshot_id, &[], accounts, false)?,
        Cmd::DescribeAttribute { snapshot_id, .. } => ops::describe_attribute(s, snapshot_id)?,
        Cmd::Copy {
            snapshot_id,
            source_region,
            kms_key_id,
            description,
            ..
        } => {
            let source_region = source_region
                .parse()
                .map_err(|e: keyvol::ids::IdError| ApiError::invalid_parameter(e.to_string()))?;
            ops::copy(
                s,
                snapshot_id,
                &CopyOptions {
                    source_region,
                    kms_key_id: kms_key_id.clone(),
                    description: description.clone(),
                },
                rep,
            )?
        }
        Cmd::Restore {
            snapshot_id,
            kms_key_id,
            size,
            hydrate,
        } => {
            let size = size.as_deref().map(parse_size).transpose()?;
            let r = ops::restore_with(s, snapshot_id, kms_key_id.as_deref(), size, *hydrate, rep)?;
            Volumes::open(s)?.to_json(&r)?
        }
        Cmd::ListBlocks { snapshot_id } => ops::list_blocks(s, snapshot_id)?,
        Cmd::ListChangedBlocks {
            first_snapshot_id,
            second_snapshot_id,
        } => ops::list_changed_blocks(s, first_snapshot_id, second_snapshot_id)?,
        Cmd::Completion { .. } | Cmd::Man { .. } => Value::Null,
    };
    // create --wait and copy --wait (here they always wait): a snapshot
    // that ended in `error` fails the call with its StateMessage.
    let v = match &cli.command {
        Cmd::Create { .. } | Cmd::Copy { .. } => ops::fail_on_error(v)?,
        _ => v,
    };
    if report_pending {
        // The parent printed the pending snapshot and is gone.
        return Ok(Value::Null);
    }
    Ok(v)
}

/// The aws CLI names the resource of a snapshot command with an option
/// (`--snapshot-id snap-...`, `copy --source-snapshot-id snap-...`,
/// `create --volume-id vol-...`); keyvol-snap takes it as the first
/// positional argument. This rewrites the option into that argument.
fn aws_spellings(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let names = ["--snapshot-id", "--source-snapshot-id", "--volume-id"];
    let Some(sub) = args.iter().skip(1).position(|a| {
        cli::command()
            .get_subcommands()
            .any(|c| a.to_str() == Some(c.get_name()))
    }) else {
        return args;
    };
    let sub = sub + 1;
    let mut out: Vec<std::ffi::OsString> = args[..=sub].to_vec();
    let mut id = None;
    let mut rest = Vec::new();
    let mut it = args[sub + 1..].iter();
    while let Some(a) = it.next() {
        let text = a.to_string_lossy();
        if id.is_none() && names.contains(&text.as_ref()) {
            if let Some(v) = it.next() {
                id = Some(v.clone());
                continue;
            }
        }
        if let Some((_, v)) = text.split_once('=').filter(|(n, _)| names.contains(n)) {
            if id.is_none() {
                id = Some(v.into());
                continue;
            }
        }
        rest.push(a.clone());
    }
    if let Some(id) = id {
        out.push(id);
    }
    out.extend(rest);
    out
}

fn main() {
    let args = keyvol::cli_input::expand(&cli::command(), std::env::args_os().collect(), |path| {
        !matches!(path.first(), Some(&"completion") | Some(&"man"))
    });
    let args = match args {
        Ok(keyvol::cli_input::Expanded::Args(a)) => a,
        Ok(keyvol::cli_input::Expanded::Skeleton(s)) => {
            keyvol::output::print_lines(&[s]);
            return;
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "\nkeyvol-snap: error: {e}");
            std::process::exit(252);
        }
    };
    let args = aws_spellings(args);
    // Usage errors exit 252 as in the aws CLI; --help and --version exit 0.
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 252 } else { 0 })
    });
    keyvol::logging::init_cli(cli.global.debug);
    // Parsed before anything runs: a bad expression changes nothing.
    let query = match cli.global.query.as_deref().map(Query::parse).transpose() {
        Ok(q) => q,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "\nkeyvol-snap: error: {e}");
            std::process::exit(252);
        }
    };
    if let Cmd::Completion { shell } = &cli.command {
        let mut out = std::io::stdout().lock();
        if let Err(e) = keyvol::clidocs::write_completion(cli::command(), shell, &mut out) {
            let _ = writeln!(std::io::stderr(), "\nkeyvol-snap: error: {e}");
            std::process::exit(252);
        }
        return;
    }
    if let Cmd::Man { out } = &cli.command {
        match keyvol::clidocs::write_man_pages(cli::command(), std::path::Path::new(out)) {
            Ok(pages) => {
                let list: Vec<String> = pages.iter().map(|p| p.display().to_string()).collect();
                let v = serde_json::json!({ "ManPages": list });
                keyvol::output::print_lines(
                    &[serde_json::to_string_pretty(&v).unwrap_or_default()],
                );
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "\nkeyvol-snap: error: {e}");
                std::process::exit(252);
            }
        }
        return;
    }
    match run(&cli) {
        Ok(v) => {
            if !v.is_null() {
                let output = cli.global.output.as_deref().unwrap_or("json");
                match keyvol::output::render(v, output, query.as_ref()) {
                    Ok(lines) => keyvol::output::print_lines(&lines),
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "\nkeyvol-snap: error: {e}");
                        std::process::exit(252);
                    }
                }
            }
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "\nAn error occurred ({}) when calling the {} operation: {}",
                e.code,
                op_name(&cli.command),
                e.message
            );
            std::process::exit(254);
        }
    }
}
