//! `keyvol host ...`: living on a Linux host. `install-units` writes the
//! systemd units that bring the boot table's volumes up at boot
//! (`keyvol-volumes.service`) and supervise one attach daemon per volume
//! (`keyvol-attach@VOL.service`, restarted when it dies).

use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command};
use serde_json::json;

use super::CliError;

/// Where `install-units` writes without `--dir`.
pub const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";
/// The boot unit: `volume mount --all` / `volume unmount --all`.
pub const VOLUMES_UNIT: &str = "keyvol-volumes.service";
/// The per-volume attach daemon (instance = volume id).
pub const ATTACH_UNIT: &str = "keyvol-attach@.service";

pub fn command() -> Command {
    Command::new("host")
        .about("Living on a Linux host: systemd units for boot-time volumes and supervised daemons")
        .subcommand_required(true)
        .subcommand(
            Command::new("install-units")
                .about("Write keyvol-volumes.service and keyvol-attach@.service for this home")
                .long_about(
                    "Write the systemd units of this home: keyvol-volumes.service (oneshot: \
                     `keyvol volume mount --all` at start, `unmount --all` at stop; before \
                     local-fs.target, or after network-online.target when the home uses a remote \
                     KMS) and keyvol-attach@.service (one attach daemon per volume, in the \
                     foreground, restarted on failure). The home's path is baked into both.",
                )
                .after_help(
                    "Example:\n  keyvol host install-units && systemctl daemon-reload && systemctl enable keyvol-volumes.service",
                )
                .arg(
                    Arg::new("dir")
                        .long("dir")
                        .value_name("DIR")
                        .default_value(SYSTEM_UNIT_DIR)
                        .help("Directory to write the unit files to"),
                )
                .arg(
                    Arg::new("keyvol-bin")
                        .long("keyvol-bin")
                        .value_name("PATH")
                        .help("The keyvol binary the units run (default: this one)"),
                ),
        )
}

/// The units of a home: (file name, contents).
pub fn units(home: &Path, keyvol_bin: &Path, remote_kms: bool) -> Vec<(&'static str, String)> {
    let home = home.display();
    let bin = keyvol_bin.display();
    let (order, install) = if remote_kms {
        (
            "After=network-online.target\nWants=network-online.target\nBefore=remote-fs.target umount.target\nConflicts=umount.target",
            "WantedBy=remote-fs.target",
        )
    } else {
        (
            "DefaultDependencies=no\nAfter=systemd-modules-load.service systemd-udevd.service\nBefore=local-fs.target umount.target\nConflicts=umount.target",
            "WantedBy=local-fs.target",
        )
    };
    let volumes = format!(
        "# Written by `keyvol host install-units` for the keyvol home {home}.\n\
         [Unit]\n\
         Description=keyvol volumes of {home} (the boot table: attach and mount)\n\
         Documentation=man:keyvol-volume-mount(1) man:keyvol-volume-enable(1)\n\
         {order}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         Environment=KEYVOL_HOME={home}\n\
         Environment=KEYVOL_ATTACH_UNITS=1\n\
         ExecStart={bin} volume mount --all\n\
         ExecStop={bin} volume unmount --all\n\
         TimeoutSec=300\n\
         \n\
         [Install]\n\
         {install}\n"
    );
    // Before keyvol-volumes.service: started first by its `mount --all`,
    // stopped only after its `unmount --all` has released the volume.
    let attach_order = if remote_kms {
        "After=network-online.target\nWants=network-online.target\nBefore=keyvol-volumes.service"
    } else {
        "DefaultDependencies=no\nAfter=systemd-modules-load.service\nConflicts=umount.target\nBefore=umount.target keyvol-volumes.service"
    };
    let attach = format!(
        "# Written by `keyvol host install-units` for the keyvol home {home}.\n\
         [Unit]\n\
         Description=keyvol attach daemon of volume %i ({home})\n\
         Documentation=man:keyvol-volume-attach(1)\n\
         {attach_order}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         Environment=KEYVOL_HOME={home}\n\
         RuntimeDirectory=keyvol/%i\n\
         RuntimeDirectoryPreserve=restart\n\
         ExecStart={bin} volume attach %i --foreground --device %t/keyvol/%i/device\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         TimeoutStopSec=60\n"
    );
    vec![(VOLUMES_UNIT, volumes), (ATTACH_UNIT, attach)]
}

fn home_of(global: &ArgMatches) -> Result<PathBuf, CliError> {
    let home = match global.get_one::<String>("home") {
        Some(h) => PathBuf::from(h),
        None => match std::env::var_os("KEYVOL_HOME") {
            Some(h) => PathBuf::from(h),
            None => keyvol::home::default_home(),
        },
    };
    if home.is_absolute() {
        return Ok(home);
    }
    std::env::current_dir()
        .map(|d| d.join(&home))
        .map_err(|e| CliError::usage(format!("current directory: {e}")))
}

/// Whether the home talks to a remote KMS (the `kms-endpoint` setting or
/// its variable). Read without creating anything: a home that does not
/// exist yet has the embedded KMS.
fn remote_kms(home: &Path) -> Result<bool, CliError> {
    if let Ok(v) = std::env::var("KEYVOL_KMS_ENDPOINT") {
        return Ok(!v.is_empty());
    }
    let db = home.join("state.db");
    if !db.exists() {
        return Ok(false);
    }
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| CliError::usage(format!("opening {}: {e}", db.display())))?;
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM config WHERE key = 'kms-endpoint'",
            [],
            |r| r.get(0),
        )
        .ok();
    Ok(value.is_some_and(|v| !v.is_empty()))
}

pub fn run(global: &ArgMatches, m: &ArgMatches) -> Result<(), CliError> {
    let Some(("install-units", sm)) = m.subcommand() else {
        return Err(CliError::usage("host needs a subcommand: install-units"));
    };
    let home = home_of(global)?;
    let dir = PathBuf::from(
        sm.get_one::<String>("dir")
            .map(String::as_str)
            .unwrap_or(SYSTEM_UNIT_DIR),
    );
    let bin = match sm.get_one::<String>("keyvol-bin") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_exe()
            .map_err(|e| CliError::usage(format!("locating the keyvol binary: {e}")))?,
    };
    if !bin.is_absolute() {
        return Err(CliError::usage(format!(
            "--keyvol-bin {}: systemd needs an absolute path",
            bin.display()
        )));
    }
    let remote = remote_kms(&home)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::usage(format!("creating --dir {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, text) in units(&home, &bin, remote) {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| CliError::usage(format!("writing {}: {e}", path.display())))?;
        written.push(path.display().to_string());
    }
    let out = json!({
        "Units": written,
        "Home": home,
        "RemoteKms": remote,
        "Next": "systemctl daemon-reload && systemctl enable --now keyvol-volumes.service",
    });
    super::print(out, "json", None)
}
