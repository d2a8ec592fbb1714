//! Volumes through the `keyvol` CLI as a user runs them: a filesystem
//! mounted and remounted across detach/attach, crash recovery after
//! kill -9 of the daemon with keyvol commands alone, independent decryption of the backing file with
//! Python `cryptography`, and the KMS key states against volumes. Need
//! root and /dev/fuse; under CI=true a missing one is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

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
    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "keyvol {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).to_string()
    }
    fn create(&mut self, size: &str, key: Option<&str>) -> String {
        let mut args = vec!["volume", "create", "--size", size];
        if let Some(k) = key {
            args.extend(["--kms-key-id", k]);
        }
        let v = self.json(&args)["VolumeId"].as_str().unwrap().to_string();
        self.volumes.push(v.clone());
        v
    }
    fn mount(&mut self, vol: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("mnt-{vol}"));
        let out = self.json(&["volume", "mount", vol, dir.to_str().unwrap()]);
        assert_eq!(out["State"], "in-use");
        self.mounts.push(dir.clone());
        dir
    }
    fn unmount(&mut self, dir: &Path) {
        let out = self.json(&["volume", "unmount", dir.to_str().unwrap()]);
        assert_eq!(out["Unmounted"], true);
        self.mounts.retain(|m| m != dir);
    }
    fn key(&self) -> String {
        self.json(&["kms", "create-key"])["KeyMetadata"]["Arn"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Leave no mount, loop device or daemon behind, whatever failed.
        for m in self.mounts.clone() {
            let _ = self.run(&["volume", "unmount", m.to_str().unwrap()]);
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        for v in self.volumes.clone() {
            let _ = self.run(&["volume", "detach", &v, "--force"]);
        }
    }
}

fn sha(p: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

fn write_tree(root: &Path, seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sizes = [
        0usize,
        1,
        511,
        4096,
        4097,
        65536,
        100_000,
        1 << 20,
        3 * (1 << 20) + 17,
    ];
    let mut out = Vec::new();
    for (i, size) in sizes.iter().cycle().take(60).enumerate() {
        let dir = root.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("f{i}.bin"));
        let mut data = vec![0u8; *size];
        rng.fill_bytes(&mut data);
        std::fs::write(&p, &data).unwrap();
        out.push((p, Sha256::digest(&data).to_vec()));
    }
    out
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

#[test]
fn filesystem_survives_unmount_detach_and_reattach() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let key = h.key();
    let vol = h.create("256MiB", Some(&key));
    let dir = h.mount(&vol);
    let files = write_tree(&dir, 7);
    // One attachment at a time; no delete while attached.
    assert!(h.err(&["volume", "attach", &vol]).contains("VolumeInUse"));
    assert!(h.err(&["volume", "delete", &vol]).contains("VolumeInUse"));
    assert!(h
        .err(&["volume", "detach", &vol])
        .contains("still in use by loop device"));
    let status = h.json(&["volume", "status"]);
    assert_eq!(status["Attachments"][0]["VolumeId"], vol.as_str());
    assert_eq!(
        status["Attachments"][0]["Mounts"][0]["MountPoint"],
        dir.to_str().unwrap()
    );
    h.unmount(&dir);
    assert_eq!(h.json(&["volume", "describe", &vol])["State"], "available");
    // The filesystem checks clean through a plain attach of the device.
    let dev = h.dir.path().join("dev-file");
    let att = h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    assert_eq!(att["Attachments"][0]["Device"], dev.to_str().unwrap());
    e2fsck_clean(&dev);
    h.json(&["volume", "detach", &vol]);
    let dir = h.mount(&vol);
    for (p, want) in &files {
        assert_eq!(&sha(p), want, "{p:?}");
    }
    h.unmount(&dir);
    // Grow the volume: the device grows, the filesystem is the user's to grow.
    let m = h.json(&["volume", "modify", &vol, "--size", "384MiB"]);
    assert_eq!(m["SizeInBytes"], 384u64 << 20);
    assert!(h
        .err(&["volume", "modify", &vol, "--size", "128MiB"])
        .contains("only grow"));
    let att = h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&dev).unwrap().len(), 384 << 20);
    assert_eq!(att["State"], "in-use");
    h.json(&["volume", "detach", &vol]);
    h.json(&["volume", "delete", &vol]);
    h.volumes.clear();
    assert!(h
        .err(&["volume", "describe", &vol])
        .contains("InvalidVolume.NotFound"));
}

#[test]
fn backing_file_decrypts_with_an_independent_xts_and_holds_no_plaintext() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let key = h.key();
    let vol = h.create("64MiB", Some(&key));
    let dev = h.dir.path().join("dev");
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    // Distinctive plaintext at known sectors.
    let marker = b"KEYVOL-PLAINTEXT-MARKER-0123456789abcdef".repeat(100);
    let mut pattern = Vec::new();
    while pattern.len() < 3 * 4096 {
        pattern.extend_from_slice(&marker);
    }
    pattern.truncate(3 * 4096);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&pattern, 5 * 4096).unwrap();
        f.sync_all().unwrap();
    }
    h.json(&["volume", "detach", &vol]);
    let backing = h.dir.path().join(format!("volumes/us-east-1/{vol}.img"));
    let raw = std::fs::read(&backing).unwrap();
    assert!(
        !contains(&raw, &marker[..40]),
        "plaintext in the backing file"
    );
    // Unwrap the data key as its owner may (customer key: the default policy allows the root).
    let v = h.json(&["volume", "describe", &vol]);
    let ctx = format!("aws:ebs:id={vol}");
    let dk = h.json(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        v["EncryptedDataKey"].as_str().unwrap(),
        "--encryption-context",
        &ctx,
    ]);
    let dk = unb64(&dk["Plaintext"]);
    assert_eq!(dk.len(), 64);
    let venv = std::env::var("KEYVOL_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/keyvol-venv", std::env::var("HOME").unwrap()));
    let script = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex(sys.argv[1]); path = sys.argv[2]; first = int(sys.argv[3]); n = int(sys.argv[4])
out = b''
with open(path, 'rb') as f:
    for s in range(first, first + n):
        f.seek(s * 4096); ct = f.read(4096)
        d = Cipher(algorithms.AES(key), modes.XTS(s.to_bytes(16, 'little'))).decryptor()
        out += d.update(ct) + d.finalize()
sys.stdout.buffer.write(out)
"#;
    let out = Command::new(format!("{venv}/bin/python"))
        .args([
            "-c",
            script,
            &hex::encode(&dk),
            backing.to_str().unwrap(),
            "5",
            "3",
        ])
        .output()
        .expect("python from the venv (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout, pattern,
        "python's AES-XTS (tweak = sector LE) must decrypt the volume"
    );
}

#[test]
fn key_states_against_create_attach_and_an_attached_volume() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let key = h.key();
    let vol = h.create("32MiB", Some(&key));
    let dev = h.dir.path().join("dev");
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    h.json(&["kms", "disable-key", "--key-id", &key]);
    // Create and attach fail with the KMS error; the attached volume keeps working.
    assert!(h
        .err(&["volume", "create", "--size", "16MiB", "--kms-key-id", &key])
        .contains("(DisabledException)"));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .unwrap();
        f.write_all_at(b"still writable", 8192).unwrap();
        f.sync_all().unwrap();
        let mut buf = [0u8; 14];
        f.read_exact_at(&mut buf, 8192).unwrap();
        assert_eq!(&buf, b"still writable");
    }
    h.json(&["volume", "detach", &vol]);
    assert!(h
        .err(&["volume", "attach", &vol])
        .contains("(DisabledException)"));
    h.json(&["kms", "enable-key", "--key-id", &key]);
    h.json(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &key,
        "--pending-window-in-days",
        "7",
    ]);
    assert!(h
        .err(&["volume", "attach", &vol])
        .contains("(KMSInvalidStateException)"));
    assert!(h
        .err(&["volume", "create", "--size", "16MiB", "--kms-key-id", &key])
        .contains("(KMSInvalidStateException)"));
    // When the window has passed the key is destroyed: the volume is crypto-shredded.
    let out = Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .args(["volume", "attach", &vol])
        .env("KEYVOL_HOME", h.dir.path())
        .env("KEYVOL_TIME_OFFSET", "8d")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("can never be read again") && msg.contains("crypto-shredded"),
        "{msg}"
    );
    // The default key alias/aws/ebs is created on first use and works through EC2.
    let v2 = h.create("16MiB", None);
    let d = h.json(&["volume", "describe", &v2]);
    let ebs = h.json(&["kms", "describe-key", "--key-id", "alias/aws/ebs"]);
    assert_eq!(d["KmsKeyId"], ebs["KeyMetadata"]["Arn"]);
    assert_eq!(ebs["KeyMetadata"]["KeyManager"], "AWS");
}

#[test]
fn kill_9_of_the_daemon_loses_nothing_fsynced() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let key = h.key();
    let vol = h.create("256MiB", Some(&key));
    let dir = h.mount(&vol);
    // A writer that fsyncs each file and then records it as durable.
    let log = h.dir.path().join("durable.log");
    let script = format!(
        "i=0; while true; do head -c $((37000 + i * 4099)) /dev/urandom > {d}/f$i; sync -d {d}/f$i && sha256sum {d}/f$i >> {l} || exit 0; i=$((i+1)); done",
        d = dir.display(),
        l = log.display()
    );
    let mut writer = Command::new("bash").args(["-c", &script]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let status = h.json(&["volume", "status"]);
    let pid = status["Attachments"][0]["Pid"].as_i64().unwrap();
    let loop_dev = status["Attachments"][0]["LoopDevices"][0]
        .as_str()
        .unwrap()
        .to_string();
    // SAFETY: kill of the daemon's pid, as a crash would.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = writer.kill();
    let _ = writer.wait();
    let durable = std::fs::read_to_string(&log).unwrap();
    let n = durable.lines().count();
    assert!(n >= 3, "the writer made too little progress ({n} files)");
    // No manual step: status shows the dead attachment and its stack, and
    // mounting again clears it.
    let st = h.json(&["volume", "status"]);
    assert_eq!(st["Attachments"][0]["State"], "dead", "{st}");
    assert_eq!(st["Attachments"][0]["LoopDevices"][0], loop_dev.as_str());
    h.mounts.clear();
    assert_eq!(
        h.json(&["volume", "describe", &vol])["State"],
        "available",
        "the lock died with the daemon"
    );
    // Re-attach: journal replay by a read-write mount, then fsck and verify.
    let dir = h.mount(&vol);
    for line in durable.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        let got = hex::encode(sha(Path::new(path)));
        assert_eq!(
            got, sum,
            "{path} was fsync'd before the crash and must read back intact"
        );
    }
    h.unmount(&dir);
    let dev = h.dir.path().join("dev-check");
    h.json(&["volume", "attach", &vol, "--device", dev.to_str().unwrap()]);
    e2fsck_clean(&dev);
    h.json(&["volume", "detach", &vol]);
    // After an unclean stop every chunk counts as changed for the next snapshot.
    let changes = std::fs::read(
        h.dir
            .path()
            .join(format!("volumes/us-east-1/{vol}.changes")),
    )
    .unwrap();
    assert!(!changes.is_empty());
}
