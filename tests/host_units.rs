//! `keyvol host install-units`: the generated systemd units pass
//! `systemd-analyze verify` (with the generated man pages on MANPATH, so
//! their Documentation= lines resolve too), are ordered by where the KMS
//! is, and their ExecStart/ExecStop lines really bring volumes up and down.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn install_units(home: &Path, dir: &Path) -> serde_json::Value {
    keyvol_json(
        home,
        &["host", "install-units", "--dir", dir.to_str().unwrap()],
    )
}

/// `key=value` lines of a unit file; repeated keys in order.
fn unit_lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn values(lines: &[(String, String)], key: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

fn verify(dir: &Path, units: &[&str]) -> std::process::Output {
    let man = dir.join("man");
    let m = keyvol(dir, &["man", "--out", man.join("man1").to_str().unwrap()]);
    assert!(m.status.success());
    Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .current_dir(dir)
        .env("MANPATH", &man)
        .output()
        .expect("systemd-analyze (package systemd, scripts/setup.sh)")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = install_units(home.path(), dir.path());
    assert_eq!(out["RemoteKms"], false);
    let volumes = dir.path().join("keyvol-volumes.service");
    let l = unit_lines(&volumes);
    assert_eq!(values(&l, "Type"), ["oneshot"]);
    assert_eq!(values(&l, "RemainAfterExit"), ["yes"]);
    let bin = env!("CARGO_BIN_EXE_keyvol");
    assert_eq!(
        values(&l, "ExecStart"),
        [format!("{bin} volume mount --all")]
    );
    assert_eq!(
        values(&l, "ExecStop"),
        [format!("{bin} volume unmount --all")]
    );
    assert!(values(&l, "Before")[0].contains("local-fs.target"));
    assert!(values(&l, "After")
        .iter()
        .all(|a| !a.contains("network-online")));
    assert!(values(&l, "Environment").contains(&format!("KEYVOL_HOME={}", home.path().display())));
    let attach = unit_lines(&dir.path().join("keyvol-attach@.service"));
    assert_eq!(values(&attach, "Restart"), ["on-failure"]);
    let v = verify(
        dir.path(),
        &[
            "keyvol-volumes.service",
            "keyvol-attach@vol-0123456789abcdef0.service",
        ],
    );
    assert!(
        v.status.success() && v.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    // verify does find faults: a unit with a bad directive fails it.
    std::fs::write(
        dir.path().join("broken.service"),
        "[Service]\nType=oneshot\nExecStart=relative/path\n",
    )
    .unwrap();
    let v = verify(dir.path(), &["broken.service"]);
    assert!(
        !v.status.success() || !v.stderr.is_empty(),
        "a broken unit passed verify"
    );
}

#[test]
fn a_remote_kms_orders_after_the_network() {
    let home = tempfile::tempdir().unwrap();
    keyvol_json(
        home.path(),
        &[
            "configure",
            "set",
            "kms-endpoint",
            "https://kms.example:8090",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = install_units(home.path(), dir.path());
    assert_eq!(out["RemoteKms"], true);
    for unit in ["keyvol-volumes.service", "keyvol-attach@.service"] {
        let l = unit_lines(&dir.path().join(unit));
        assert!(
            values(&l, "After")
                .iter()
                .any(|a| a.contains("network-online.target")),
            "{unit}"
        );
        assert!(
            values(&l, "Wants")
                .iter()
                .any(|a| a.contains("network-online.target")),
            "{unit}"
        );
        assert!(
            values(&l, "Before")
                .iter()
                .all(|b| !b.contains("local-fs.target")),
            "{unit}"
        );
    }
    let v = verify(
        dir.path(),
        &[
            "keyvol-volumes.service",
            "keyvol-attach@vol-0123456789abcdef0.service",
        ],
    );
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

/// Runs an Exec line of a unit as systemd would: `%i` and `%t`
/// substituted, the unit's Environment= set.
fn exec_line(
    unit: &Path,
    key: &str,
    instance: &str,
    runtime: &Path,
) -> (Command, HashMap<String, String>) {
    let l = unit_lines(unit);
    let line = values(&l, key)
        .pop()
        .unwrap_or_else(|| panic!("{key} missing"));
    let line = line
        .replace("%i", instance)
        .replace("%t", runtime.to_str().unwrap());
    let mut words = line.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap());
    cmd.args(words);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap());
    let mut env = HashMap::new();
    for e in values(&l, "Environment") {
        let (k, v) = e.split_once('=').unwrap();
        env.insert(k.to_string(), v.to_string());
    }
    (cmd, env)
}

#[test]
fn the_attach_unit_exec_start_brings_a_volume_up() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let units = tempfile::tempdir().unwrap();
    install_units(home.path(), units.path());
    let vol = keyvol_json(home.path(), &["volume", "create", "--size", "64MiB"])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    // systemd makes RuntimeDirectory=keyvol/%i under %t (/run) first.
    let runtime = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(runtime.path().join("keyvol").join(&vol)).unwrap();
    let (mut cmd, env) = exec_line(
        &units.path().join("keyvol-attach@.service"),
        "ExecStart",
        &vol,
        runtime.path(),
    );
    assert_eq!(env["KEYVOL_HOME"], home.path().to_str().unwrap());
    let mut child = cmd.envs(&env).stdout(Stdio::piped()).spawn().unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let stop = |child: &mut std::process::Child| {
        // SAFETY: kill of our own child, as systemctl stop does (SIGTERM).
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap()
    };
    let device: PathBuf = runtime.path().join("keyvol").join(&vol).join("device");
    let status = keyvol_json(home.path(), &["volume", "status"]);
    let described = keyvol_json(home.path(), &["volume", "describe", &vol]);
    let st = stop(&mut child);
    assert!(ready.contains("\"attached\""), "ready line: {ready}");
    assert_eq!(
        status["Attachments"][0]["VolumeId"],
        vol.as_str(),
        "{status}"
    );
    assert_eq!(
        status["Attachments"][0]["Device"],
        device.to_str().unwrap(),
        "{status}"
    );
    assert_eq!(described["State"], "in-use", "{described}");
    assert!(
        st.success(),
        "the daemon exits cleanly on SIGTERM (no restart): {st}"
    );
    let after = keyvol_json(home.path(), &["volume", "status"]);
    assert!(
        after["Attachments"].as_array().unwrap().is_empty(),
        "{after}"
    );
}

#[test]
fn the_volumes_unit_exec_lines_mount_and_unmount_the_boot_table() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let units = tempfile::tempdir().unwrap();
    install_units(home.path(), units.path());
    let vol = keyvol_json(home.path(), &["volume", "create", "--size", "64MiB"])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let mnt = home.path().join("data");
    keyvol_json(
        home.path(),
        &["volume", "enable", &vol, "--mount", mnt.to_str().unwrap()],
    );
    let unit = units.path().join("keyvol-volumes.service");
    let runtime = tempfile::tempdir().unwrap();
    let (mut start, mut env) = exec_line(&unit, "ExecStart", "", runtime.path());
    // No systemd here to start keyvol-attach@ units: attach directly.
    assert_eq!(env.remove("KEYVOL_ATTACH_UNITS").as_deref(), Some("1"));
    let out = start.envs(&env).output().unwrap();
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(&format!(" {} ", mnt.display()));
    let (mut stop, _) = exec_line(&unit, "ExecStop", "", runtime.path());
    let stopped = stop.envs(&env).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounted, "ExecStart did not mount {}", mnt.display());
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(!std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(&format!(" {} ", mnt.display())));
}
