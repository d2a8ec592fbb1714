//! The boot table with real mounts: `volume enable|disable`, `mount --all`
//! (in order, idempotent, `nofail`, mount options reaching `mount`) and
//! `unmount --all`, and a daemon killed with SIGKILL between two boots.
//! Need root and /dev/fuse; under CI=true a missing one is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

struct Home {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    volumes: Vec<String>,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
            mounts: Vec::new(),
            volumes: Vec::new(),
        }
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        keyvol(self.dir.path(), args)
    }
    fn json(&self, args: &[&str]) -> Value {
        keyvol_json(self.dir.path(), args)
    }
    fn err(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(!out.status.success(), "keyvol {args:?} should have failed");
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
    fn create(&mut self) -> String {
        let v = self.json(&["volume", "create", "--size", "64MiB"])["VolumeId"]
            .as_str()
            .unwrap()
            .to_string();
        self.volumes.push(v.clone());
        v
    }
    fn enable(&mut self, vol: &str, extra: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(format!("mnt-{vol}"));
        let mut args = vec!["volume", "enable", vol, "--mount", dir.to_str().unwrap()];
        args.extend(extra);
        let out = self.json(&args);
        assert_eq!(out["BootVolume"]["VolumeId"], vol);
        self.mounts.push(dir.clone());
        dir
    }
    fn actions(&self, args: &[&str]) -> Vec<String> {
        self.json(args)["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["Action"].as_str().unwrap().to_string())
            .collect()
    }
    fn pids(&self) -> Vec<i64> {
        let mut p: Vec<i64> = self.json(&["volume", "status"])["Attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["Pid"].as_i64().unwrap())
            .collect();
        p.sort();
        p
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Leave no mount, loop device or daemon behind, whatever failed.
        let _ = self.run(&["volume", "unmount", "--all"]);
        for m in &self.mounts {
            if mount_entry(m).is_some() {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        for v in &self.volumes {
            let _ = self.run(&["volume", "detach", v, "--force"]);
            // The FUSE mount a killed daemon leaves on its device file.
            let dev = self.dir.path().join(format!("volumes/us-east-1/{v}.dev"));
            if mount_entry(&dev).is_some() {
                let _ = Command::new("umount").arg("-l").arg(&dev).status();
            }
        }
    }
}

/// The `/proc/mounts` line of `dir`: (source, options).
fn mount_entry(dir: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/mounts").unwrap();
    text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && Path::new(f[1]) == dir).then(|| (f[0].to_string(), f[3].to_string()))
    })
}

/// Loop devices whose backing file lies in `home`.
fn loops_in(home: &Path) -> Vec<String> {
    let out = Command::new("losetup")
        .args(["-n", "-O", "NAME,BACK-FILE"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&*home.to_string_lossy()))
        .map(str::to_string)
        .collect()
}

fn write_file(dir: &Path, name: &str, data: &[u8]) {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn mount_all_in_order_idempotent_and_unmount_all_undoes_it() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let (a, b) = (h.create(), h.create());
    let da = h.enable(&a, &[]);
    let db = h.enable(&b, &["--options", "discard,noatime"]);
    let boot = h.json(&["volume", "status"])["BootVolumes"].clone();
    assert_eq!(boot[0]["VolumeId"], a.as_str());
    assert_eq!(boot[1]["VolumeId"], b.as_str());
    assert_eq!(
        boot[1]["Options"],
        serde_json::json!(["discard", "noatime"])
    );

    assert_eq!(
        h.actions(&["volume", "mount", "--all"]),
        ["mounted", "mounted"]
    );
    let (_, opts) = mount_entry(&db).expect("b is mounted");
    assert!(opts.split(',').any(|o| o == "discard"), "options {opts}");
    assert!(opts.split(',').any(|o| o == "noatime"), "options {opts}");
    assert!(mount_entry(&da).is_some(), "a is mounted");
    write_file(&da, "a.txt", b"volume a");
    write_file(&db, "b.txt", b"volume b");
    let pids = h.pids();
    assert_eq!(pids.len(), 2);
    let boot = h.json(&["volume", "status"])["BootVolumes"].clone();
    assert_eq!(
        (boot[0]["Up"].as_bool(), boot[1]["Up"].as_bool()),
        (Some(true), Some(true))
    );

    // Again: nothing to do, the same daemons, the files still there.
    assert_eq!(
        h.actions(&["volume", "mount", "--all"]),
        ["already-mounted", "already-mounted"]
    );
    assert_eq!(h.pids(), pids);
    assert_eq!(std::fs::read(da.join("a.txt")).unwrap(), b"volume a");

    // unmount --all: nothing mounted, attached or looped any more.
    assert_eq!(
        h.actions(&["volume", "unmount", "--all"]),
        ["unmounted", "unmounted"]
    );
    assert!(mount_entry(&da).is_none() && mount_entry(&db).is_none());
    assert!(h.pids().is_empty(), "daemons left");
    assert!(loops_in(h.dir.path()).is_empty(), "loop devices left");
    let boot = h.json(&["volume", "status"])["BootVolumes"].clone();
    assert_eq!(boot[0]["Up"], false);
    assert_eq!(
        h.actions(&["volume", "unmount", "--all"]),
        ["not-mounted", "not-mounted"]
    );

    // The next boot finds the data.
    h.json(&["volume", "mount", "--all"]);
    assert_eq!(std::fs::read(db.join("b.txt")).unwrap(), b"volume b");
    h.json(&["volume", "unmount", "--all"]);

    // disable takes a volume out of the table.
    h.json(&["volume", "disable", &a]);
    let boot = h.json(&["volume", "status"])["BootVolumes"].clone();
    assert_eq!(boot.as_array().unwrap().len(), 1);
    assert_eq!(boot[0]["VolumeId"], b.as_str());
}

#[test]
fn ro_option_gives_a_read_only_mount() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let v = h.create();
    let d = h.enable(&v, &["--options", "ro"]);
    h.json(&["volume", "mount", "--all"]);
    let (_, opts) = mount_entry(&d).expect("mounted");
    assert_eq!(opts.split(',').next(), Some("ro"), "options {opts}");
    let e = std::fs::write(d.join("x"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    h.json(&["volume", "unmount", "--all"]);
    // The same option through `volume mount --options`.
    let dir = h.dir.path().join("direct");
    h.mounts.push(dir.clone());
    h.json(&[
        "volume",
        "mount",
        &v,
        dir.to_str().unwrap(),
        "--options",
        "ro",
    ]);
    let (_, opts) = mount_entry(&dir).expect("mounted");
    assert_eq!(opts.split(',').next(), Some("ro"), "options {opts}");
    h.json(&["volume", "unmount", dir.to_str().unwrap()]);
}

#[test]
fn nofail_volumes_do_not_fail_the_run() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let (good, gone) = (h.create(), h.create());
    let dg = h.enable(&gone, &["--nofail"]);
    let d = h.enable(&good, &[]);
    // A volume deleted after it was enabled cannot come up.
    h.json(&["volume", "delete", &gone]);
    let out = h.json(&["volume", "mount", "--all"]);
    assert_eq!(out["Volumes"][0]["Action"], "failed");
    assert!(
        out["Volumes"][0]["Error"]
            .as_str()
            .unwrap()
            .contains("InvalidVolume.NotFound"),
        "{out}"
    );
    assert_eq!(out["Volumes"][1]["Action"], "mounted");
    assert!(mount_entry(&d).is_some() && mount_entry(&dg).is_none());
    let out = h.json(&["volume", "unmount", "--all"]);
    assert_eq!(out["Volumes"][0]["Action"], "unmounted");
    assert_eq!(
        out["Volumes"][1]["Action"], "not-mounted",
        "the deleted one"
    );

    // Without --nofail the run fails, after trying every volume: here one
    // whose mountpoint is a regular file.
    let bad = h.create();
    let file = h.dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    h.json(&["volume", "enable", &bad, "--mount", file.to_str().unwrap()]);
    let (stdout, stderr) = h.err(&["volume", "mount", "--all"]);
    assert!(
        stderr.contains(&bad) && stderr.contains("--nofail"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&gone),
        "a nofail volume failed the run: {stderr}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["Volumes"][1]["Action"], "mounted");
    assert_eq!(report["Volumes"][2]["Action"], "failed");
    assert!(mount_entry(&d).is_some());
}

#[test]
fn enable_refuses_bad_entries_and_changes_nothing() {
    let mut h = Home::new();
    let (a, b) = (h.create(), h.create());
    let (_, e) = h.err(&["volume", "enable", &a, "--mount", "relative/dir"]);
    assert!(e.contains("absolute"), "{e}");
    let (_, e) = h.err(&[
        "volume",
        "enable",
        "vol-00000000000000000",
        "--mount",
        "/mnt/x",
    ]);
    assert!(e.contains("InvalidVolume.NotFound"), "{e}");
    let (_, e) = h.err(&[
        "volume",
        "enable",
        &a,
        "--mount",
        "/mnt/x",
        "--options",
        "ro,,x",
    ]);
    assert!(e.contains("empty option"), "{e}");
    let (_, e) = h.err(&[
        "volume",
        "enable",
        &a,
        "--mount",
        "/mnt/x",
        "--options",
        "ro;reboot",
    ]);
    assert!(e.contains("mount option"), "{e}");
    h.json(&["volume", "enable", &a, "--mount", "/mnt/x"]);
    let (_, e) = h.err(&["volume", "enable", &b, "--mount", "/mnt/x"]);
    assert!(e.contains("already the boot mountpoint"), "{e}");
    let (_, e) = h.err(&["volume", "disable", &b]);
    assert!(e.contains("not enabled"), "{e}");
    // Enabling again replaces the entry and keeps its place.
    h.json(&["volume", "enable", &b, "--mount", "/mnt/y"]);
    h.json(&[
        "volume", "enable", &a, "--mount", "/mnt/z", "--fs", "xfs", "--nofail",
    ]);
    let boot = h.json(&["volume", "status"])["BootVolumes"].clone();
    assert_eq!(boot[0]["VolumeId"], a.as_str());
    assert_eq!(boot[0]["MountPoint"], "/mnt/z");
    assert_eq!(boot[0]["FileSystem"], "xfs");
    assert_eq!(boot[0]["NoFail"], true);
    assert_eq!(boot[1]["VolumeId"], b.as_str());
    h.mounts.clear();
}

/// The second `mount --all` clears what the killed daemon left (its dead
/// FUSE mount, the loop device and the ext4 mount on top) and mounts again.
#[test]
fn mount_all_recovers_a_daemon_killed_with_sigkill() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let (a, b) = (h.create(), h.create());
    let da = h.enable(&a, &[]);
    let db = h.enable(&b, &[]);
    h.json(&["volume", "mount", "--all"]);
    write_file(&da, "a.txt", b"volume a survives");
    write_file(&db, "b.txt", b"volume b survives");
    let status = h.json(&["volume", "status"]);
    let victim = status["Attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["VolumeId"] == a.as_str())
        .unwrap()["Pid"]
        .as_i64()
        .unwrap();
    // SAFETY: kill of the attach daemon's pid, as a crash would.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    for _ in 0..100 {
        // SAFETY: signal 0 only checks that the pid exists.
        if unsafe { libc::kill(victim as i32, 0) } != 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // status says the killed volume is not up, the other one is.
    let boot = h.json(&["volume", "status"])["BootVolumes"].clone();
    let up = |v: &str| {
        boot.as_array()
            .unwrap()
            .iter()
            .find(|e| e["VolumeId"] == v)
            .unwrap()["Up"]
            .clone()
    };
    assert_eq!(up(&a), false, "{boot}");
    assert_eq!(up(&b), true, "{boot}");
    let actions = h.actions(&["volume", "mount", "--all"]);
    assert_eq!(actions, ["mounted", "already-mounted"]);
    assert_eq!(
        std::fs::read(da.join("a.txt")).unwrap(),
        b"volume a survives"
    );
    assert_eq!(
        std::fs::read(db.join("b.txt")).unwrap(),
        b"volume b survives"
    );
    // The recovered volume is writable again through its new daemon.
    write_file(&da, "after.txt", b"written after the crash");
    assert_eq!(h.pids().len(), 2);
    h.json(&["volume", "unmount", "--all"]);
    assert!(mount_entry(&da).is_none() && mount_entry(&db).is_none());
    assert!(h.pids().is_empty(), "daemons left");
    assert!(loops_in(h.dir.path()).is_empty(), "loop devices left");
}
