//! Data safety of volumes through the `keyvol` CLI, with real mounts: one
//! filesystem mount per volume, unmount touching only keyvol's own mounts,
//! busy unmounts that change nothing, crash recovery after kill -9 of the
//! attach daemon with keyvol commands alone (and a crash loop), import
//! refusals, missing/short backing files, sizes and mountpoints checked
//! before anything is made, a full host disk, shared mmap of the device,
//! non-dumpable key holders and a log without key bytes. Need root and
//! /dev/fuse; under CI=true a missing one is a failure.

mod common;

use std::io::{BufRead, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

struct Home {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    volumes: Vec<(String, Option<String>)>,
    extra_mounts: Vec<PathBuf>,
}

impl Home {
    fn new() -> Home {
        Home::in_dir(tempfile::tempdir().unwrap())
    }
    fn in_dir(dir: tempfile::TempDir) -> Home {
        Home {
            dir,
            mounts: Vec::new(),
            volumes: Vec::new(),
            extra_mounts: Vec::new(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        keyvol(self.path(), args)
    }
    fn json(&self, args: &[&str]) -> Value {
        keyvol_json(self.path(), args)
    }
    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "keyvol {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }
    fn create(&mut self, size: &str) -> String {
        let v = self.json(&["volume", "create", "--size", size])["VolumeId"]
            .as_str()
            .unwrap()
            .to_string();
        self.volumes.push((v.clone(), None));
        v
    }
    fn mount_at(&mut self, vol: &str, dir: &Path) -> Value {
        let out = self.json(&["volume", "mount", vol, dir.to_str().unwrap()]);
        assert_eq!(out["State"], "in-use", "{out}");
        if !self.mounts.contains(&dir.to_path_buf()) {
            self.mounts.push(dir.to_path_buf());
        }
        out
    }
    fn mount(&mut self, vol: &str) -> PathBuf {
        let dir = self.path().join(format!("mnt-{vol}"));
        self.mount_at(vol, &dir);
        dir
    }
    fn unmount(&mut self, dir: &Path) -> Value {
        let out = self.json(&["volume", "unmount", dir.to_str().unwrap()]);
        self.mounts.retain(|m| m != dir);
        out
    }
    fn vol_dir(&self) -> PathBuf {
        self.path().join("volumes/us-east-1")
    }
    fn device(&self, vol: &str) -> PathBuf {
        self.vol_dir().join(format!("{vol}.dev"))
    }
    fn backing(&self, vol: &str) -> PathBuf {
        self.vol_dir().join(format!("{vol}.img"))
    }
    fn pid(&self, vol: &str) -> i64 {
        self.attachment(vol)["Pid"].as_i64().unwrap()
    }
    fn attachment(&self, vol: &str) -> Value {
        self.json(&["volume", "status"])["Attachments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["VolumeId"] == vol)
            .cloned()
            .unwrap_or(Value::Null)
    }
    fn kill_daemon(&self, vol: &str) {
        let pid = self.pid(vol);
        // SAFETY: kill of the daemon's pid, as a crash would.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        // The lock goes when the kernel has reaped the process.
        for _ in 0..200 {
            if self.json(&["volume", "describe", vol])["State"] == "available" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the daemon of {vol} did not die");
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Leave no mount, loop device or daemon behind, whatever failed.
        for m in self.mounts.clone() {
            let _ = self.run(&["volume", "unmount", m.to_str().unwrap()]);
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        for (v, profile) in self.volumes.clone() {
            let mut args = vec!["volume", "detach", &v, "--force"];
            if let Some(p) = &profile {
                args.extend(["--profile", p]);
            }
            let _ = self.run(&args);
        }
        for m in self.extra_mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Writes `n` files of a few KiB under `dir`, each fsync'd; returns their sums.
fn write_synced(dir: &Path, prefix: &str, n: usize) -> Vec<(PathBuf, String)> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{prefix}{i}"));
            let data: Vec<u8> = (0..(3000 + i * 517))
                .map(|j| (j * 31 + i * 7) as u8)
                .collect();
            let mut f = std::fs::File::create(&p).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
            (p, hex::encode(Sha256::digest(&data)))
        })
        .collect()
}

fn verify(files: &[(PathBuf, String)]) {
    for (p, want) in files {
        assert_eq!(&sha(p), want, "{} must read back intact", p.display());
    }
}

fn mounted_at(target: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(target.to_str().unwrap()))
        .map(|l| l.split(' ').nth(2).unwrap_or("").to_string())
        .collect()
}

fn loops_backed_by(file: &Path) -> Vec<String> {
    let out = Command::new("losetup")
        .args(["-J", "-l", "-O", "NAME,BACK-FILE"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    v["loopdevices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["back-file"]
                .as_str()
                .is_some_and(|b| b.trim_end_matches(" (deleted)") == file.to_str().unwrap())
        })
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

fn all_loops() -> usize {
    let out = Command::new("losetup").args(["-a"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn e2fsck_clean(device: &Path) {
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(device)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fsck_volume(h: &Home, vol: &str) {
    let dev = h.path().join("dev-check");
    h.json(&["volume", "attach", vol, "--device", dev.to_str().unwrap()]);
    e2fsck_clean(&dev);
    h.json(&["volume", "detach", vol]);
}

fn holder_in(dir: &Path) -> Child {
    Command::new("sleep")
        .arg("600")
        .current_dir(dir)
        .spawn()
        .unwrap()
}

// ------------------------------------------------------------------ 1

#[test]
fn a_second_mount_of_a_volume_is_refused_and_the_first_stays_healthy() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.create("64MiB");
    let first = h.mount(&vol);
    let second = h.path().join("second");
    let e = h.err(&["volume", "mount", &vol, second.to_str().unwrap()]);
    assert!(e.contains("(VolumeInUse)"), "{e}");
    assert!(e.contains(first.to_str().unwrap()), "names the mount: {e}");
    assert!(!second.exists(), "a refused mount leaves no directory");
    assert_eq!(loops_backed_by(&h.device(&vol)).len(), 1);
    // The first mount goes on working and keeps every file.
    let files = write_synced(&first, "f", 40);
    h.unmount(&first);
    h.mount_at(&vol, &first);
    verify(&files);
    h.unmount(&first);

    // A device already used by a loop device someone else set up.
    let dev = h.path().join("plain-dev");
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    let lo = sh(&format!("losetup --find --show {}", dev.display()));
    let e = h.err(&["volume", "mount", &vol, second.to_str().unwrap()]);
    sh(&format!("losetup -d {}", lo.trim()));
    assert!(e.contains("(VolumeInUse)") && e.contains(lo.trim()), "{e}");
    h.json(&["volume", "detach", &vol]);
    fsck_volume(&h, &vol);

    // Two mounts at once: exactly one wins.
    let (a, b) = (h.path().join("a"), h.path().join("b"));
    let start = |d: &Path| {
        Command::new(env!("CARGO_BIN_EXE_keyvol"))
            .args(["volume", "mount", &vol, d.to_str().unwrap()])
            .env("KEYVOL_HOME", h.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (start(&a), start(&b));
    h.mounts.extend([a.clone(), b.clone()]);
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    assert!(
        oa.status.success() != ob.status.success(),
        "exactly one of two concurrent mounts succeeds: {} / {}",
        String::from_utf8_lossy(&oa.stderr),
        String::from_utf8_lossy(&ob.stderr)
    );
    assert_eq!(loops_backed_by(&h.device(&vol)).len(), 1);
    let won = if oa.status.success() { a } else { b };
    let moved: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, sum)| (won.join(p.file_name().unwrap()), sum.clone()))
        .collect();
    verify(&moved);
    h.unmount(&won);
}

// ------------------------------------------------------------------ 3

#[test]
fn a_busy_unmount_changes_nothing_and_the_next_one_finishes() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.create("64MiB");
    let dir = h.mount(&vol);
    let mut holder = holder_in(&dir);
    let before = h.attachment(&vol);
    let e = h.err(&["volume", "unmount", dir.to_str().unwrap()]);
    assert!(e.contains("(VolumeInUse)") && e.contains("busy"), "{e}");
    assert!(e.contains(dir.to_str().unwrap()), "names the mount: {e}");
    // Nothing changed: same daemon, loop device, mount; still writable.
    let after = h.attachment(&vol);
    assert_eq!(after["State"], "attached");
    assert_eq!(after["Pid"], before["Pid"]);
    assert_eq!(after["LoopDevices"], before["LoopDevices"]);
    assert_eq!(mounted_at(&dir), vec!["ext4".to_string()]);
    let files = write_synced(&dir, "busy", 5);
    holder.kill().unwrap();
    holder.wait().unwrap();
    // One call finishes everything.
    let out = h.unmount(&dir);
    assert_eq!(out["Unmounted"], true);
    assert_eq!(out["Volume"]["State"], "available");
    assert!(mounted_at(&dir).is_empty());
    assert!(loops_backed_by(&h.device(&vol)).is_empty());
    h.mount_at(&vol, &dir);
    verify(&files);
    h.unmount(&dir);

    // The daemon refuses to stop while a process holds the device file.
    let dev = h.path().join("dev");
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .unwrap();
    let e = h.err(&["volume", "detach", &vol]);
    assert!(e.contains("(VolumeInUse)") && e.contains("busy"), "{e}");
    assert_eq!(h.json(&["volume", "describe", &vol])["State"], "in-use");
    f.write_all_at(b"still served", 1 << 20).unwrap();
    let mut buf = [0u8; 12];
    f.read_exact_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(&buf, b"still served");
    drop(f);
    assert_eq!(h.json(&["volume", "detach", &vol])["State"], "available");
}

// ------------------------------------------------------------------ 2

#[test]
fn unmount_touches_only_mounts_keyvol_made_for_the_callers_account() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    // A tmpfs.
    let t = h.path().join("tmpfs");
    std::fs::create_dir(&t).unwrap();
    sh(&format!("mount -t tmpfs -o size=1m tmpfs {}", t.display()));
    h.extra_mounts.push(t.clone());
    let e = h.err(&["volume", "unmount", t.to_str().unwrap()]);
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("only its own"),
        "{e}"
    );
    assert_eq!(mounted_at(&t), vec!["tmpfs".to_string()]);
    // An unrelated loop mount.
    let img = h.path().join("other.img");
    sh(&format!(
        "truncate -s 16M {i} && mkfs.ext4 -q -F {i}",
        i = img.display()
    ));
    let l = h.path().join("loopmnt");
    std::fs::create_dir(&l).unwrap();
    sh(&format!("mount -o loop {} {}", img.display(), l.display()));
    h.extra_mounts.push(l.clone());
    let e = h.err(&["volume", "unmount", l.to_str().unwrap()]);
    assert!(e.contains("(InvalidParameterValue)"), "{e}");
    assert_eq!(mounted_at(&l), vec!["ext4".to_string()]);
    assert_eq!(loops_backed_by(&img).len(), 1, "its loop device stays");
    // Another account's volume mount.
    h.json(&[
        "iam",
        "create-account",
        "--account-id",
        "444455556666",
        "--profile-name",
        "b",
    ]);
    let vol = h.create("32MiB");
    let dir = h.mount(&vol);
    let e = h.err(&["volume", "unmount", dir.to_str().unwrap(), "--profile", "b"]);
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("444455556666"),
        "{e}"
    );
    assert_eq!(mounted_at(&dir), vec!["ext4".to_string()]);
    assert_eq!(h.attachment(&vol)["State"], "attached");
    // Something mounted over keyvol's mount is left alone too.
    sh(&format!(
        "mount -t tmpfs -o size=1m tmpfs {}",
        dir.display()
    ));
    let e = h.err(&["volume", "unmount", dir.to_str().unwrap()]);
    assert!(e.contains("not volume"), "{e}");
    sh(&format!("umount {}", dir.display()));
    assert_eq!(h.unmount(&dir)["Unmounted"], true);
    assert!(mounted_at(&dir).is_empty());
}

// ------------------------------------------------------------------ 4

#[test]
fn after_kill_9_each_volume_command_clears_what_the_dead_daemon_left() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.create("64MiB");
    let mut files = Vec::new();
    for (round, cmd) in ["unmount", "detach", "attach", "mount"].iter().enumerate() {
        let dir = h.mount(&vol);
        verify(&files);
        files.extend(write_synced(&dir, &format!("r{round}-"), 4));
        let lo = loops_backed_by(&h.device(&vol));
        assert_eq!(lo.len(), 1);
        h.kill_daemon(&vol);
        let st = h.attachment(&vol);
        assert_eq!(st["State"], "dead", "{st}");
        assert!(st["Recovery"].as_str().unwrap().contains("volume mount"));
        let d = dir.to_str().unwrap();
        let out = match *cmd {
            "unmount" => h.unmount(&dir),
            "detach" => h.json(&["volume", "detach", &vol]),
            "attach" => h.json(&["volume", "attach", &vol]),
            _ => h.json(&["volume", "mount", &vol, d]),
        };
        assert!(
            out.to_string().contains("dead FUSE device"),
            "{cmd} reports what it cleared: {out}"
        );
        let fuse_left: Vec<String> = mounted_at(&h.device(&vol));
        match *cmd {
            "unmount" | "detach" => {
                assert!(fuse_left.is_empty(), "{cmd}: {fuse_left:?}");
                assert!(mounted_at(&dir).is_empty());
                assert!(loops_backed_by(&h.device(&vol)).is_empty());
                assert!(h.attachment(&vol).is_null());
            }
            "attach" => {
                // A fresh daemon serves the device; the dead stack is gone.
                assert_eq!(fuse_left, vec!["fuse".to_string()]);
                assert!(mounted_at(&dir).is_empty());
                assert!(loops_backed_by(&h.device(&vol)).is_empty());
                assert_eq!(h.attachment(&vol)["State"], "attached");
                let mut b = [0u8; 4096];
                std::fs::File::open(h.device(&vol))
                    .unwrap()
                    .read_exact_at(&mut b, 0)
                    .unwrap();
                h.json(&["volume", "detach", &vol]);
            }
            _ => {
                assert_eq!(mounted_at(&dir), vec!["ext4".to_string()]);
                let now = loops_backed_by(&h.device(&vol));
                assert_eq!(now.len(), 1, "only the new loop device: {now:?}");
                verify(&files);
                h.unmount(&dir);
            }
        }
        h.mounts.retain(|m| m != &dir);
    }
    fsck_volume(&h, &vol);
}

#[test]
fn crash_loop_kill_9_during_fsynced_writes_recovers_with_one_command() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    const TRIALS: usize = 20;
    let mut h = Home::new();
    let vol = h.create("32MiB");
    let dir = h.path().join("mnt");
    let log = h.path().join("durable.log");
    let mut durable: Vec<(PathBuf, String)> = Vec::new();
    for trial in 0..TRIALS {
        // The one recovery command: mount again.
        h.mount_at(&vol, &dir);
        verify(&durable);
        let sub = dir.join(format!("t{trial}"));
        std::fs::create_dir(&sub).unwrap();
        let script = format!(
            "i=0; while true; do f={d}/f$i; head -c $((2000 + (i % 7) * 1500)) /dev/urandom > $f || exit 0; \
             sync $f || exit 0; sha256sum $f >> {l} || exit 0; i=$((i+1)); done",
            d = sub.display(),
            l = log.display()
        );
        let mut writer = Command::new("bash")
            .args(["-c", &script])
            .current_dir(h.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let the writer make some progress, varying the crash point.
        let start = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        let want = start + 3 + trial % 5;
        for _ in 0..3000 {
            let n = std::fs::read_to_string(&log)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if n >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        h.kill_daemon(&vol);
        // The writer stops on its first I/O error.
        let _ = writer.kill();
        writer.wait().unwrap();
        durable = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| {
                let (sum, path) = l.split_once("  ").unwrap();
                (PathBuf::from(path), sum.to_string())
            })
            .collect();
        assert!(
            durable.len() > start,
            "trial {trial}: the writer made no progress"
        );
    }
    h.mount_at(&vol, &dir);
    verify(&durable);
    assert!(durable.len() >= TRIALS * 3);
    h.unmount(&dir);
    fsck_volume(&h, &vol);
}

// ------------------------------------------------------------------ 6

#[test]
fn a_missing_or_short_backing_file_is_an_error_never_an_empty_volume() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let gone = h.create("16MiB");
    std::fs::remove_file(h.backing(&gone)).unwrap();
    let loops = all_loops();
    for args in [
        vec!["volume", "attach", gone.as_str()],
        vec!["volume", "mount", gone.as_str(), "/nonexistent-keyvol-mnt"],
    ] {
        let e = h.err(&args);
        assert!(
            e.contains("(InvalidVolume.DataMissing)") && e.contains("gone"),
            "{e}"
        );
    }
    assert!(!h.backing(&gone).exists(), "no empty file in its place");
    assert!(!Path::new("/nonexistent-keyvol-mnt").exists());
    let short = h.create("16MiB");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(h.backing(&short))
        .unwrap();
    f.set_len(8 << 20).unwrap();
    let e = h.err(&["volume", "attach", &short]);
    assert!(
        e.contains("(InvalidVolume.Truncated)") && e.contains("truncated"),
        "{e}"
    );
    assert_eq!(std::fs::metadata(h.backing(&short)).unwrap().len(), 8 << 20);
    assert_eq!(all_loops(), loops);
    assert_eq!(
        h.json(&["volume", "describe", &short])["State"],
        "available"
    );
}

// ------------------------------------------------------------------ 7

#[test]
fn sizes_and_mountpoints_are_checked_before_anything_is_made() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    h.create("16MiB"); // makes the home and its volume directory
    let before = all_files(&h.vol_dir());
    let fs_type = sh(&format!("stat -f -c %T {}", h.path().display()));
    if fs_type.trim() == "ext2/ext3" {
        // ext4 with 4 KiB blocks holds files of just under 16 TiB.
        let e = h.err(&["volume", "create", "--size", "16TiB"]);
        assert!(
            e.contains("(InvalidParameterValue)") && e.contains("cannot hold"),
            "{e}"
        );
    }
    assert_eq!(all_files(&h.vol_dir()), before, "no file left behind");
    assert_eq!(
        h.json(&["volume", "describe-volumes"])["Volumes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let vol = h.create("16MiB");
    let file = h.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let full = h.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep"), b"keep").unwrap();
    let t = h.path().join("tmpfs");
    std::fs::create_dir(&t).unwrap();
    sh(&format!("mount -t tmpfs -o size=1m tmpfs {}", t.display()));
    h.extra_mounts.push(t.clone());
    let loops = all_loops();
    for (dir, why) in [
        ("/proc/self", "symbolic link"),
        (file.to_str().unwrap(), "not a directory"),
        (full.to_str().unwrap(), "not empty"),
        (t.to_str().unwrap(), "already a mount point"),
    ] {
        let e = h.err(&["volume", "mount", &vol, dir]);
        assert!(
            e.contains("(InvalidParameterValue)") && e.contains(why),
            "{dir}: {e}"
        );
    }
    assert_eq!(all_loops(), loops, "no loop device left");
    assert_eq!(h.json(&["volume", "describe", &vol])["State"], "available");
    assert_eq!(std::fs::read(full.join("keep")).unwrap(), b"keep");
}

// ------------------------------------------------------------------ 5

#[test]
fn import_refuses_taken_ids_foreign_files_partial_restores_and_wrong_sizes() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.create("16MiB");
    let dev = h.path().join("dev");
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    f.write_all_at(&[0x5a; 65536], 4096).unwrap();
    f.sync_all().unwrap();
    drop(f);
    h.json(&["volume", "detach", &vol]);
    let original = sha(&h.backing(&vol));
    let described = h.json(&["volume", "describe", &vol]);
    assert_eq!(described["HydrationPendingChunks"], 0);
    let copy = h.path().join("copy.img");
    sh(&format!(
        "cp --sparse=always {} {}",
        h.backing(&vol).display(),
        copy.display()
    ));
    // Account B imports with A's volume id.
    h.json(&[
        "iam",
        "create-account",
        "--account-id",
        "444455556666",
        "--profile-name",
        "b",
    ]);
    let desc = h.path().join("desc.json");
    std::fs::write(&desc, described.to_string()).unwrap();
    let desc_arg = format!("file://{}", desc.display());
    let import = |profile: &str, backing: &Path| {
        h.err(&[
            "volume",
            "import",
            "--volume-json",
            &desc_arg,
            "--backing-file",
            backing.to_str().unwrap(),
            "--profile",
            profile,
        ])
    };
    let e = import("b", &copy);
    assert!(e.contains("(InvalidVolume.Duplicate)"), "{e}");
    assert_eq!(
        sha(&h.backing(&vol)),
        original,
        "A's backing file unchanged"
    );
    // Also a copy from another filesystem (no hard link possible).
    let e = import("b", Path::new("/dev/null"));
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("bytes"),
        "{e}"
    );
    assert_eq!(sha(&h.backing(&vol)), original);

    // A backing file already at the destination is never overwritten.
    let mut other = described.clone();
    other["VolumeId"] = Value::from("vol-0123456789abcdef0");
    std::fs::write(&desc, other.to_string()).unwrap();
    let stray = h.vol_dir().join("vol-0123456789abcdef0.img");
    std::fs::write(&stray, b"not mine").unwrap();
    let e = import("default", &copy);
    assert!(
        e.contains("(InvalidVolume.Duplicate)") && e.contains("never overwrites"),
        "{e}"
    );
    assert_eq!(std::fs::read(&stray).unwrap(), b"not mine");
    std::fs::remove_file(&stray).unwrap();

    // A size that does not match the description.
    let short = h.path().join("short.img");
    sh(&format!("truncate -s 8M {}", short.display()));
    let e = import("default", &short);
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("bytes"),
        "{e}"
    );

    // A restored volume that has not finished hydrating.
    let mut partial = other.clone();
    partial["SnapshotId"] = Value::from("snap-0123456789abcdef0");
    partial["HydrationPendingChunks"] = Value::from(3);
    std::fs::write(&desc, partial.to_string()).unwrap();
    let e = import("default", &copy);
    assert!(
        e.contains("(IncorrectState)") && e.contains("hydrated"),
        "{e}"
    );
    assert!(!stray.exists());

    // The good case still works, copied from another filesystem (no hard
    // link possible), and the copy is the same data.
    let t = h.path().join("tmpfs");
    std::fs::create_dir(&t).unwrap();
    sh(&format!("mount -t tmpfs -o size=32m tmpfs {}", t.display()));
    h.extra_mounts.push(t.clone());
    let far = t.join("far.img");
    sh(&format!(
        "cp --sparse=always {} {}",
        copy.display(),
        far.display()
    ));
    std::fs::write(&desc, other.to_string()).unwrap();
    let ok = h.json(&[
        "volume",
        "import",
        "--volume-json",
        &desc_arg,
        "--backing-file",
        far.to_str().unwrap(),
    ]);
    assert_eq!(ok["VolumeId"], "vol-0123456789abcdef0");
    assert_eq!(sha(&stray), original);
}

// ------------------------------------------------------------------ 9

#[test]
fn the_device_file_can_be_mapped_shared() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    use rand::{Rng, SeedableRng};
    let mut h = Home::new();
    let vol = h.create("8MiB");
    let dev = h.path().join("dev");
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    const LEN: usize = 8 << 20;
    let mut model = vec![0u8; LEN];
    let seed = 0x6d6d6170;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: maps LEN bytes of a file we opened read-write; the map is
        // used only inside this block and unmapped before the file closes.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "shared mmap of the device: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: p points to LEN mapped, writable bytes.
        let map = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, LEN) };
        for _ in 0..200 {
            let off = rng.gen_range(0..LEN - 9000);
            let len = rng.gen_range(1..9000);
            let byte: u8 = rng.gen_range(1..=255);
            map[off..off + len].fill(byte);
            model[off..off + len].fill(byte);
            if rng.gen_bool(0.2) {
                // Reads through the map agree with the model at any time.
                let o = rng.gen_range(0..LEN - 4096);
                assert_eq!(&map[o..o + 4096], &model[o..o + 4096], "seed {seed}");
            }
        }
        // SAFETY: msync/munmap of the whole mapping made above.
        unsafe {
            assert_eq!(libc::msync(p, LEN, libc::MS_SYNC), 0);
            assert_eq!(libc::munmap(p, LEN), 0);
        }
        let mut got = vec![0u8; LEN];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(
            got == model,
            "pread after msync differs from the model (seed {seed})"
        );
    }
    h.json(&["volume", "detach", &vol]);
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    let got = std::fs::read(&dev).unwrap();
    assert!(
        got == model,
        "after re-attach the data differs from the model (seed {seed})"
    );
    h.json(&["volume", "detach", &vol]);
}

/// fsx (the Rust port of Apple's and FreeBSD's File System eXerciser,
/// installed by scripts/setup.sh) in block mode on the device file, with
/// its mmap reads and writes among pread/pwrite, fsync and msync
/// invalidation; every read is checked against fsx's own model.
#[test]
fn fsx_with_mmap_operations_on_the_device_file() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let fsx = cargo_home
        .map(|c| c.join("bin/fsx"))
        .filter(|p| p.exists())
        .expect("fsx is missing: scripts/setup.sh installs it (cargo install fsx)");
    let mut h = Home::new();
    let vol = h.create("16MiB");
    let dev = h.path().join("dev");
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    let config = h.path().join("fsx.toml");
    std::fs::write(
        &config,
        "flen = 16777216\nblockmode = true\nnosizechecks = true\n\
         [opsize]\nmax = 262144\nmin = 1\nalign = 1\n\
         [weights]\nclose_open = 0\nread = 10\nwrite = 10\nmapread = 10\nmapwrite = 10\n\
         invalidate = 1\ntruncate = 0\nfsync = 1\nfdatasync = 1\nposix_fallocate = 0\n\
         punch_hole = 1\nsendfile = 1\nposix_fadvise = 1\ncopy_file_range = 1\n",
    )
    .unwrap();
    let artifacts = h.path().join("fsx-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = Command::new(&fsx)
        .arg("-f")
        .arg(&config)
        .args(["-N", "3000", "-S", "20261201"])
        .arg("-P")
        .arg(&artifacts)
        .arg(&dev)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fsx failed on the device file:\n{log}"
    );
    h.json(&["volume", "detach", &vol]);
}

// ------------------------------------------------------------------ 10

fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn the_attach_daemon_and_the_kms_server_are_not_dumpable() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.create("16MiB");
    // The daemon in the foreground, to read its ready line.
    let dev = h.path().join("dev");
    std::fs::write(&dev, b"").unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .args([
            "volume",
            "attach",
            &vol,
            "--device",
            dev.to_str().unwrap(),
            "--foreground",
        ])
        .env("KEYVOL_HOME", h.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(daemon.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        ready["Dumpable"], false,
        "PR_GET_DUMPABLE in the daemon: {ready}"
    );
    // As root (CAP_IPC_LOCK) its memory is locked.
    assert_eq!(ready["MemoryLocked"], true, "{ready}");
    let vmlck = status_field(&proc_status(daemon.id()), "VmLck:");
    assert_ne!(vmlck, "0 kB", "the daemon's pages are locked");
    // SAFETY: SIGTERM to the daemon we started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());

    // The KMS server as an ordinary user: its /proc files turn root-owned.
    let home = tempfile::tempdir().unwrap();
    sh(&format!(
        "chown 65534:65534 {} && chmod 700 {}",
        home.path().display(),
        home.path().display()
    ));
    let mut server = Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .args(["kms", "serve", "--listen", "127.0.0.1:0"])
        .env("KEYVOL_HOME", home.path())
        .env("HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("Listening"), "{line}");
    let status = proc_status(server.id());
    assert!(
        status_field(&status, "Uid:").starts_with("65534"),
        "{status}"
    );
    let owner = std::fs::metadata(format!("/proc/{}/status", server.id()))
        .unwrap()
        .uid();
    assert_eq!(
        owner, 0,
        "a non-dumpable process's /proc files belong to root"
    );
    // SAFETY: SIGTERM to the server we started.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not locked") && stderr.contains("RLIMIT_MEMLOCK"),
        "an unprivileged server says its memory is not locked: {stderr}"
    );
}

// ------------------------------------------------------------------ 8, 11

#[test]
fn a_full_host_disk_fails_the_writer_not_unmount_detach_or_fsynced_files() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let top = tempfile::tempdir().unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=96m tmpfs {}",
        top.path().display()
    ));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _t = Unmount(top.path().to_path_buf());
    let mut h = Home::in_dir(tempfile::tempdir_in(top.path()).unwrap());
    let key = h.json(&["kms", "create-key"])["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = h.json(&["volume", "create", "--size", "64MiB", "--kms-key-id", &key])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    h.volumes.push((vol.clone(), None));
    let dir = h.mount(&vol);
    let files = write_synced(&dir, "before", 20);
    let pid = h.pid(&vol);
    // Fill the host filesystem.
    let filler = top.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    // The writer in the volume's filesystem gets an error.
    let big = dir.join("big");
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&big)?;
        for _ in 0..40 {
            f.write_all(&[0xab; 1 << 20])?;
        }
        f.sync_all()
    })();
    let err = res.expect_err("writing 40 MiB into a full host disk must fail");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EIO) | Some(libc::ENOSPC)),
        "{err}"
    );
    // SAFETY: signal 0 only checks that the daemon lives.
    assert_eq!(
        unsafe { libc::kill(pid as i32, 0) },
        0,
        "the daemon survives"
    );
    let log = std::fs::read_to_string(h.vol_dir().join(format!("{vol}.log"))).unwrap();
    assert!(
        log.contains("errno=28") && log.contains("ENOSPC"),
        "the log names ENOSPC: {log}"
    );
    // Unmount and detach work with state.db's disk full.
    let _ = std::fs::remove_file(&big);
    let out = h.unmount(&dir);
    assert_eq!(out["Unmounted"], true, "{out}");
    assert!(loops_backed_by(&h.device(&vol)).is_empty());
    assert!(mounted_at(&h.device(&vol)).is_empty());
    // Space back: the volume mounts and every fsync'd file is intact.
    std::fs::remove_file(&filler).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .args(["--debug", "volume", "mount", &vol, dir.to_str().unwrap()])
        .env("KEYVOL_HOME", h.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.mounts.push(dir.clone());
    verify(&files);
    h.unmount(&dir);
    fsck_volume(&h, &vol);
    // Neither the daemon's log nor the CLI's debug lines carry the data key.
    let described = h.json(&["volume", "describe", &vol]);
    let ctx = format!("aws:ebs:id={vol}");
    let dk = h.json(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        described["EncryptedDataKey"].as_str().unwrap(),
        "--encryption-context",
        &ctx,
    ]);
    let dek = unb64(&dk["Plaintext"]);
    let log = std::fs::read_to_string(h.vol_dir().join(format!("{vol}.log"))).unwrap();
    let cli = String::from_utf8_lossy(&out.stderr);
    for text in [&log, &cli.to_string()] {
        for needle in [
            hex::encode(&dek),
            b64(&dek),
            hex::encode(&dek[..16]),
            b64(&dek[..24]),
        ] {
            assert!(!text.contains(&needle), "key bytes in a log");
        }
    }
    assert!(
        log.contains("attach daemon starting") && log.contains("detached"),
        "{log}"
    );
}

// ------------------------------------------------------------------ 11

#[test]
fn debug_lines_go_to_stderr_and_suit_journald() {
    let h = Home::new();
    h.json(&["volume", "describe-volumes"]);
    let quiet = h.run(&["volume", "describe-volumes"]);
    assert!(quiet.stderr.is_empty(), "no log lines without --debug");
    let out = Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .args(["volume", "describe-volumes", "--debug"])
        .env("KEYVOL_HOME", h.path())
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("DEBUG"))
        .expect("a debug line");
    assert!(
        line.trim_start().starts_with("DEBUG"),
        "no timestamp under journald: {line}"
    );
    assert!(!err.contains('\u{1b}'), "no ANSI colours");
}

/// ModifyVolume on a mounted volume: the daemon grows the device online,
/// the loop device under the filesystem sees the new capacity at once,
/// `resize2fs` (the user's step) grows ext4 while mounted, data written
/// before and after survives, and fsck is clean.
#[test]
fn a_mounted_volume_grows_online_and_its_filesystem_can_follow() {
    let Some(_guard) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.create("64MiB");
    let dir = h.mount(&vol);
    std::fs::write(dir.join("before"), vec![7u8; 20 << 20]).unwrap();
    sync_dir(&dir);
    let before_sha = sha(&dir.join("before"));
    let att = h.attachment(&vol);
    let loop_dev = att["LoopDevices"][0].as_str().unwrap().to_string();
    // 60 MiB more does not fit in a 64 MiB filesystem holding 20 MiB.
    assert!(std::fs::write(dir.join("big"), vec![9u8; 60 << 20]).is_err());
    std::fs::remove_file(dir.join("big")).ok();
    let grown = h.json(&["volume", "modify", &vol, "--size", "160MiB"]);
    assert_eq!(grown["SizeInBytes"], 160u64 << 20, "{grown}");
    let blk = Command::new("blockdev")
        .args(["--getsize64", &loop_dev])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&blk.stdout).trim(),
        (160u64 << 20).to_string(),
        "the loop device did not learn the new size"
    );
    assert_eq!(std::fs::metadata(h.device(&vol)).unwrap().len(), 160 << 20);
    // Online ext4 resize needs CAP_SYS_RESOURCE; without it (some
    // containers) the filesystem is grown offline instead, after the same
    // online grow of the device.
    let rs = Command::new("resize2fs").arg(&loop_dev).output().unwrap();
    let dir = if rs.status.success() {
        dir
    } else {
        assert!(
            !has_cap_sys_resource(),
            "resize2fs failed although this process may resize: {}",
            String::from_utf8_lossy(&rs.stderr)
        );
        eprintln!("no CAP_SYS_RESOURCE: growing ext4 offline after the online device grow");
        h.unmount(&dir);
        let dev = h.path().join("dev-grow");
        h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
        let fsck = Command::new("e2fsck")
            .arg("-fy")
            .arg(&dev)
            .output()
            .unwrap();
        assert!(
            fsck.status.code().unwrap_or(8) < 4,
            "e2fsck: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        let rs = Command::new("resize2fs").arg(&dev).output().unwrap();
        assert!(
            rs.status.success(),
            "resize2fs offline: {}",
            String::from_utf8_lossy(&rs.stderr)
        );
        h.json(&["volume", "detach", &vol]);
        h.mount(&vol)
    };
    std::fs::write(dir.join("big"), vec![9u8; 60 << 20]).unwrap();
    sync_dir(&dir);
    let big_sha = sha(&dir.join("big"));
    // Shrinking stays refused, attached or not.
    assert!(h
        .err(&["volume", "modify", &vol, "--size", "128MiB"])
        .contains("InvalidParameterValue"));
    h.unmount(&dir);
    assert_eq!(
        h.json(&["volume", "describe", &vol])["SizeInBytes"],
        160u64 << 20
    );
    fsck_volume(&h, &vol);
    let dir = h.mount(&vol);
    assert_eq!(sha(&dir.join("before")), before_sha);
    assert_eq!(sha(&dir.join("big")), big_sha);
    h.unmount(&dir);
}

/// Makes everything written under `dir` durable (sync(1) of its filesystem).
fn sync_dir(dir: &Path) {
    let st = Command::new("sync").arg("-f").arg(dir).status().unwrap();
    assert!(st.success());
}

/// Does this process hold CAP_SYS_RESOURCE (needed for online resize2fs)?
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << 24) != 0
}
