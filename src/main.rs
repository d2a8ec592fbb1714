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
            .help("JMESPath expression applied to the response (as the aws CLI)"),
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
        c.arg(
            Arg::new("in")
                .long("in")
                .required(true)
                .value_name("PATH")
                .help("The file to read"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .required(true)
                .value_name("PATH")
                .help("The file to write (replaced only on success)"),
        )
        .arg(
            Arg::new("encryption-context")
                .long("encryption-context")
                .help("k=v,k2=v2 or JSON, bound to the ciphertext; decryption must give the same"),
        )
    };
    Command::new("envelope")
        .about("Envelope-encrypt files of any size under a KMS key")
        .subcommand_required(true)
        .subcommand(common(
            Command::new("encrypt")
                .about("Encrypt a file under a new data key of --key-id")
                .after_help("Example:\n  keyvol envelope encrypt --key-id alias/demo --in big.tar --out big.tar.enc")
                .arg(
                    Arg::new("key-id")
                        .long("key-id")
                        .required(true)
                        .help("The KMS key: id, ARN or alias/NAME"),
                ),
        ))
        .subcommand(common(
            Command::new("decrypt")
                .about("Decrypt a file made by envelope encrypt")
                .after_help("Example:\n  keyvol envelope decrypt --in big.tar.enc --out big.tar")
                .arg(
                    Arg::new("key-id")
                        .long("key-id")
                        .help("Refuse unless the file was encrypted under this key"),
                ),
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
            .subcommand(envelope_command())
            .subcommand(cli::host::command())
            .subcommand(cli::serve::serve_command().about("Same as keyvol kms serve"))
            .subcommand(keyvol::clidocs::completion_command())
            .subcommand(keyvol::clidocs::man_command()),
    )
}

/// The whole `keyvol` command tree (completions, man pages, help check).
pub fn command() -> Command {
    build()
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
    // The attach daemon that the server's AttachVolume starts acts for the
    // server's caller, whom the server authenticated and authorized.
    use keyvol::volume::service::{ATTACH_CALLER_ENV, ATTACH_CHILD_ENV};
    if let (Some(_), Some(handoff)) = (
        std::env::var_os(ATTACH_CHILD_ENV),
        std::env::var_os(ATTACH_CALLER_ENV),
    ) {
        let ctx = keyvol::request::RequestContext::from_handoff(&handoff.to_string_lossy())
            .ok_or_else(|| CliError::usage(format!("{ATTACH_CALLER_ENV} is not a caller")))?;
        return Session::open_for(&opts, ctx).map_err(|e| CliError::service("OpenSession", e));
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
    // A fresh 0600 temporary file beside the output, renamed on success, so
    // a failed decryption never leaves unauthenticated plaintext behind.
    let mut file = keyvol::envelope::OutputFile::create(std::path::Path::new(&out))
        .map_err(|e| CliError::usage(format!("cannot create --out {out}: {e}")))?;
    let mut output = BufWriter::new(file.file());
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
    let flushed = output.into_inner().map(drop).map_err(|e| e.into_error());
    match result {
        Ok(n) => {
            flushed
                .and_then(|()| file.commit())
                .map_err(|e| CliError::usage(format!("cannot write --out {out}: {e}")))?;
            Ok(json!({"In": inp, "Out": out, "PlaintextBytes": n}))
        }
        Err(e) => Err(CliError::service(op, e)),
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
    // Parsed before anything runs: a bad expression changes nothing.
    let q = m
        .get_one::<String>("query")
        .map(String::as_str)
        .map(keyvol::output::Query::parse)
        .transpose()
        .map_err(CliError::usage)?;
    let (group, gm) = m
        .subcommand()
        .ok_or_else(|| CliError::usage("a command is required"))?;
    match group {
        "completion" | "man" => return cli::print_docs(command(), group, gm),
        "host" => return cli::host::run(m, gm),
        "serve" => return cli::serve::run_serve(&session(m)?, gm),
        _ => {}
    }
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
    cli::print(v, output, q.as_ref())
}

fn main() {
    // `--cli-input-json` / `--generate-cli-skeleton` of the volume commands
    // (the kms commands read their own --cli-input-json).
    let args = keyvol::cli_input::expand(&command(), std::env::args_os().collect(), |path| {
        path.first() == Some(&"volume")
    });
    let args = match args {
        Ok(keyvol::cli_input::Expanded::Args(a)) => a,
        Ok(keyvol::cli_input::Expanded::Skeleton(s)) => {
            keyvol::output::print_lines(&[s]);
            return;
        }
        Err(e) => std::process::exit(CliError::usage(e).report()),
    };
    // Usage errors exit 252 as in the aws CLI; --help and --version exit 0.
    let matches = build().try_get_matches_from(args).unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 252 } else { 0 })
    });
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

    #[test]
    fn every_subcommand_and_argument_has_help() {
        let missing = keyvol::clidocs::missing_help(&super::command());
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
