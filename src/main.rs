//! The `keyvol` CLI: wiring of global options to the library's commands.

mod cli;

use std::io::{BufReader, BufWriter};

use clap::{Arg, ArgMatches, Command};
use serde_json::{json, Value};

use cli::CliError;
use keyvol::session::{Session, SessionOptions};

fn global_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("home")
            .long("home")
            .global(true)
            .help("State directory (env KEYVOL_HOME)"),
    )
    .arg(
        Arg::new("profile")
            .long("profile")
            .global(true)
            .help("Profile to act as (env KEYVOL_PROFILE)"),
    )
    .arg(
        Arg::new("region")
            .long("region")
            .global(true)
            .help("Region (env KEYVOL_REGION)"),
    )
    .arg(
        Arg::new("output")
            .long("output")
            .global(true)
            .value_parser(["json", "text", "table"])
            .help("Output format (default json)"),
    )
    .arg(
        Arg::new("query")
            .long("query")
            .global(true)
            .help("Print only this field (dotted path)"),
    )
    .arg(
        Arg::new("debug")
            .long("debug")
            .global(true)
            .action(clap::ArgAction::SetTrue)
            .help("Log keyvol's debug lines to stderr"),
    )
}

fn envelope_command() -> Command {
    let common = |c: Command| {
        c.arg(Arg::new("in").long("in").required(true))
            .arg(Arg::new("out").long("out").required(true))
            .arg(Arg::new("encryption-context").long("encryption-context"))
    };
    Command::new("envelope")
        .about("Envelope-encrypt files of any size under a KMS key")
        .subcommand_required(true)
        .subcommand(common(
            Command::new("encrypt").arg(Arg::new("key-id").long("key-id").required(true)),
        ))
        .subcommand(common(
            Command::new("decrypt").arg(Arg::new("key-id").long("key-id")),
        ))
}

fn build() -> Command {
    global_args(
        Command::new("keyvol")
            .version(env!("CARGO_PKG_VERSION"))
            .about("EBS-style encrypted volumes with an embedded AWS KMS-compatible key service")
            .subcommand_required(true)
            .subcommand(cli::kms::command().subcommand(cli::serve::serve_command()))
            .subcommand(cli::configure::command())
            .subcommand(cli::iam::command())
            .subcommand(cli::volume::command())
            .subcommand(envelope_command()),
    )
}

fn session(m: &ArgMatches) -> Result<Session, CliError> {
    let mut opts = SessionOptions::from_env().map_err(|e| CliError::usage(e.message))?;
    if let Some(h) = m.get_one::<String>("home") {
        opts.home = h.into();
    }
    if let Some(p) = m.get_one::<String>("profile") {
        opts.profile = p.clone();
    }
    if let Some(r) = m.get_one::<String>("region") {
        opts.region = r
            .parse()
            .map_err(|e: keyvol::ids::IdError| CliError::usage(e.to_string()))?;
    }
    Session::open(&opts).map_err(|e| CliError::service("OpenSession", e))
}

fn run_envelope(s: &Session, sub: &str, m: &ArgMatches) -> Result<Value, CliError> {
    let op = if sub == "encrypt" {
        "EnvelopeEncrypt"
    } else {
        "EnvelopeDecrypt"
    };
    let path = |n: &str| m.get_one::<String>(n).cloned().unwrap_or_default();
    let (inp, out) = (path("in"), path("out"));
    let context = match m.get_one::<String>("encryption-context") {
        Some(c) => Some(
            serde_json::from_value(cli::kms::parse_map(c, "EncryptionContext")?)
                .map_err(|e| CliError::usage(e.to_string()))?,
        ),
        None => None,
    };
    let mut input = BufReader::new(
        std::fs::File::open(&inp)
            .map_err(|e| CliError::usage(format!("cannot open --in {inp}: {e}")))?,
    );
    // Write to a temporary file beside the output and rename on success, so
    // a failed decryption never leaves unauthenticated plaintext behind.
    let tmp = format!("{out}.keyvol-tmp");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| CliError::usage(format!("cannot create --out {out}: {e}")))?;
    let mut output = BufWriter::new(file);
    let key_id = m.get_one::<String>("key-id").map(String::as_str);
    let result = if sub == "encrypt" {
        keyvol::envelope::encrypt(
            &s.kms,
            &s.ctx,
            key_id.unwrap_or(""),
            context.unwrap_or_default(),
            &mut input,
            &mut output,
        )
    } else {
        keyvol::envelope::decrypt(
            &s.kms,
            &s.ctx,
            key_id,
            context.as_ref(),
            &mut input,
            &mut output,
        )
    };
    drop(output);
    match result {
        Ok(n) => {
            std::fs::rename(&tmp, &out)
                .map_err(|e| CliError::usage(format!("cannot write --out {out}: {e}")))?;
            Ok(json!({"In": inp, "Out": out, "PlaintextBytes": n}))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(CliError::service(op, e))
        }
    }
}

fn run_kms(s: &Session, sub: &str, m: &ArgMatches) -> Result<Value, CliError> {
    if sub == "audit" {
        let (which, am) = m
            .subcommand()
            .ok_or_else(|| CliError::usage("audit needs list or verify"))?;
        return cli::kms::run_audit(s, which, am);
    }
    if sub == "usage" {
        let month = m.get_one::<String>("month").map(String::as_str);
        let r = s
            .kms
            .usage(&s.ctx.caller.account, month)
            .map_err(|e| CliError::service("GetUsage", e))?;
        return Ok(serde_json::to_value(r).unwrap_or_default());
    }
    let (op, req) = cli::kms::request_of(sub, m)?;
    s.kms
        .call(&s.ctx, &op, req)
        .map_err(|e| CliError::service(&op, e))
}

/// The attach daemon (`volume attach --foreground`) logs to its volume
/// log at info level; every other command to stderr (warnings, or debug
/// lines with `--debug`).
fn init_logging(m: &ArgMatches) {
    let debug = m.get_flag("debug");
    let daemon = m.subcommand().is_some_and(|(group, gm)| {
        group == "volume"
            && gm
                .subcommand()
                .is_some_and(|(sub, sm)| sub == "attach" && sm.get_flag("foreground"))
    });
    if daemon {
        keyvol::logging::init_daemon(debug);
    } else {
        keyvol::logging::init_cli(debug);
    }
}

fn run(m: &ArgMatches) -> Result<(), CliError> {
    init_logging(m);
    let output = m
        .get_one::<String>("output")
        .map(String::as_str)
        .unwrap_or("json");
    let q = m.get_one::<String>("query").map(String::as_str);
    let (group, gm) = m
        .subcommand()
        .ok_or_else(|| CliError::usage("a command is required"))?;
    let (sub, sm) = gm
        .subcommand()
        .ok_or_else(|| CliError::usage(format!("{group} needs a subcommand")))?;
    let s = session(m)?;
    if (group, sub) == ("kms", "serve") {
        return cli::serve::run_serve(&s, sm);
    }
    let v = match group {
        "kms" => run_kms(&s, sub, sm)?,
        "iam" => cli::iam::run(&s, sub, sm)?,
        "configure" => cli::configure::run(&s, sub, sm)?,
        "envelope" => run_envelope(&s, sub, sm)?,
        "volume" => cli::volume::run(&s, sub, sm)?,
        other => return Err(CliError::usage(format!("unknown command {other}"))),
    };
    if v.is_null() {
        return Ok(());
    }
    cli::print(v, output, q)
}

fn main() {
    let matches = build().get_matches();
    if let Err(e) = run(&matches) {
        std::process::exit(e.report());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        super::build().debug_assert();
    }
}
