//! `keyvol kms serve` (also `keyvol serve`): the home's KMS as an AWS KMS
//! JSON API server, with Prometheus metrics on `--metrics ADDR`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use clap::{Arg, ArgMatches, Command};
use serde_json::json;

use keyvol::server::{HomeKmsService, ServeOptions, TlsIdentity};
use keyvol::session::Session;

use super::CliError;

/// Where `keyvol kms serve` listens without `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// The `serve` subcommand of `keyvol kms`.
pub fn serve_command() -> Command {
    Command::new("serve")
        .about("Serve this home's KMS over the AWS KMS JSON API (SigV4, aws CLI and SDK compatible)")
        .long_about(
            "Serve this home's KMS over the AWS KMS JSON API. Clients sign with the access keys of \
             this home (keyvol iam create-account / create-access-key). Prints one JSON line with \
             the bound address once listening (--listen 127.0.0.1:0 picks a free port) and stops \
             gracefully on SIGTERM or SIGINT.",
        )
        .arg(
            Arg::new("listen")
                .long("listen")
                .value_name("ADDR:PORT")
                .default_value(DEFAULT_LISTEN)
                .help("Address and port to listen on"),
        )
        .arg(
            Arg::new("tls-cert")
                .long("tls-cert")
                .value_name("PEM")
                .requires("tls-key")
                .help("Serve HTTPS with this certificate chain (PEM)"),
        )
        .arg(
            Arg::new("tls-key")
                .long("tls-key")
                .value_name("PEM")
                .requires("tls-cert")
                .help("The private key of --tls-cert (PEM)"),
        )
        .arg(
            Arg::new("max-connections")
                .long("max-connections")
                .value_name("N")
                .value_parser(clap::value_parser!(u32).range(1..))
                .help("Open connections at most (default 512)"),
        )
        .arg(
            Arg::new("ebs-quota")
                .long("ebs-quota")
                .value_name("NAME=VALUE")
                .action(clap::ArgAction::Append)
                .help("Set an EBS direct APIs quota (repeatable): StartSnapshot, PutSnapshotBlock, CompleteSnapshot, ListSnapshotBlocks, ListChangedBlocks or GetSnapshotBlock (requests per second per account), PutSnapshotBlockPerSnapshot, GetSnapshotBlockPerSnapshot (per second per snapshot), OpenUploads, SnapshotsPerRegion; EBS's defaults otherwise"),
        )
        .arg(
            Arg::new("metrics")
                .long("metrics")
                .value_name("ADDR:PORT")
                .help("Also serve Prometheus metrics at http://ADDR:PORT/metrics (requests by operation and outcome, latency histograms)"),
        )
        .after_help(
            "Examples:\n  keyvol kms serve --listen 127.0.0.1:8090\n  keyvol kms serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem --metrics 127.0.0.1:9100",
        )
}

/// Runs the server until SIGTERM/SIGINT.
pub fn run_serve(session: &Session, m: &ArgMatches) -> Result<(), CliError> {
    let listen_arg = m
        .get_one::<String>("listen")
        .map(String::as_str)
        .unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_arg.parse().map_err(|e| {
        CliError::usage(format!(
            "--listen {listen_arg}: {e}; expected ADDR:PORT such as 127.0.0.1:8090 or [::1]:8090"
        ))
    })?;
    let mut opts = ServeOptions::default();
    if let Some(n) = m.get_one::<u32>("max-connections") {
        opts.max_connections = *n as usize;
    }
    if let (Some(cert), Some(key)) = (
        m.get_one::<String>("tls-cert"),
        m.get_one::<String>("tls-key"),
    ) {
        let identity = TlsIdentity::from_pem_files(Path::new(cert), Path::new(key))
            .map_err(|e| CliError::usage(format!("--tls-cert {cert} --tls-key {key}: {e}")))?;
        opts.tls = Some(identity);
    }
    let mut quotas = keyvol::ebs::quota::Quotas::default();
    for spec in m.get_many::<String>("ebs-quota").into_iter().flatten() {
        quotas
            .set(spec)
            .map_err(|e| CliError::usage(format!("--ebs-quota {spec}: {e}")))?;
    }
    keyvol::ebs::quota::configure(session.home.dir(), quotas);
    keyvol::sys::harden_and_report("the KMS server");
    let tls = opts.tls.is_some();
    if !tls && !listen.ip().is_loopback() {
        eprintln!(
            "keyvol: warning: serving plain HTTP on {listen}: request bodies (plaintexts, data keys) \
             cross the network unencrypted; use --tls-cert and --tls-key"
        );
    }
    let metrics = match m.get_one::<String>("metrics") {
        Some(addr) => {
            Some(keyvol::telemetry::install_and_serve(addr, &[]).map_err(CliError::usage)?)
        }
        None => None,
    };
    let service =
        HomeKmsService::for_session(session).map_err(|e| CliError::service("KmsServe", e))?;
    let home = session.home.dir().display().to_string();
    keyvol::server::http::run(Arc::new(service), listen, opts, |addr| {
        let scheme = if tls { "https" } else { "http" };
        let mut line = json!({
            "Listening": addr.to_string(),
            "Endpoint": format!("{scheme}://{addr}"),
            "Tls": tls,
            "Home": home,
        });
        if let Some(m) = metrics {
            line["Metrics"] = json!(format!("http://{m}/metrics"));
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    })
    .map_err(|e| CliError::usage(format!("kms serve on {listen}: {e}")))
}
