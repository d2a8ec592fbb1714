//! Logging of every keyvol binary, through the `tracing` ecosystem: one
//! init function per kind of process.
//!
//! - A CLI (`keyvol`, `keyvol-snap`, the KMS server) logs to stderr:
//!   warnings only, or everything of keyvol at debug level with `--debug`.
//! - The attach daemon logs to stderr, which its starter points at the
//!   volume's log (`<vol>.log`): start, attach, detach, every I/O error
//!   with its errno, cuts, hydration progress and failures.
//!
//! Lines never carry ANSI colours; under systemd (the `JOURNAL_STREAM`
//! variable set) they carry no timestamp either, since journald adds its
//! own. No secret is ever logged: key material lives in types whose
//! `Debug` is redacted, and log calls name ids, paths and offsets only.
//! Records of crates that use `log` (fuser) are bridged in.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether stderr goes to the journal (systemd sets JOURNAL_STREAM).
pub fn journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Logging of a command-line tool: warnings, or keyvol's debug lines with
/// `debug`. Calling it twice keeps the first setting.
pub fn init_cli(debug: bool) {
    let own = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::WARN
    };
    init(own);
}

/// Logging of the attach daemon (info and above of keyvol, warnings of
/// the crates it uses, or everything of keyvol with `debug`).
pub fn init_daemon(debug: bool) {
    let own = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    init(own);
}

fn init(own: LevelFilter) {
    // fuser warns about every request it does not implement (ioctl,
    // getxattr) and about unmounting a filesystem we already unmounted:
    // noise in a volume log; its errors still show.
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("fuser", LevelFilter::ERROR)
        .with_target("keyvol", own)
        .with_target("keyvol_snap", own);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests, a library user with its own subscriber) keeps
    // the subscriber already installed.
    let _ = if journald() {
        registry.with(fmt.without_time()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}
