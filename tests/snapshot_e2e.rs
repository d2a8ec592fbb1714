//! Snapshots end to end through the `keyvol` and `keyvol-snap` CLIs: the
//! cross-account, cross-region story on a moto S3 store (snapshot while
//! mounted, share, key policy grant, re-encrypting copy, restore, source key
//! destroyed, restored volume still mounts and fscks clean); incremental
//! snapshots measured in store bytes; point-in-time under a busy writer;
//! refusals; tampering with the store. FUSE tests need root and /dev/fuse;
//! under CI=true a missing prerequisite is a failure. `keyvol-snap` must be
//! built (`cargo build --workspace --bins`, as scripts/test.sh does).

mod common;

use common::snap_bin;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

const B: &str = "444455556666";
const A: &str = "111122223333";
const CHUNK: u64 = 512 * 1024;

static SERIAL: Mutex<()> = Mutex::new(());

fn fuse_prerequisites() -> Option<MutexGuard<'static, ()>> {
    // SAFETY: geteuid cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/fuse").exists();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "snapshot tests need root and /dev/fuse"
        );
        eprintln!("NOT RUN outside CI: snapshot FUSE tests need root and /dev/fuse");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A home with extra environment (snapshot store, clock offset) for every
/// command, cleaning up mounts and attachments when dropped.
struct Home {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, Vec<String>)>,
    volumes: Vec<(String, Vec<String>)>,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
            mounts: Vec::new(),
            volumes: Vec::new(),
        }
    }

    fn cmd(&self, bin: &Path, args: &[&str]) -> Output {
        let mut c = Command::new(bin);
        c.args(args)
            .env("KEYVOL_HOME", self.dir.path())
            .env_remove("KEYVOL_PROFILE")
            .env_remove("KEYVOL_REGION")
            .env_remove("KEYVOL_TIME_OFFSET")
            .env_remove("KEYVOL_SNAPSHOT_STORE");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn ok(out: Output, what: &str) -> Value {
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn kv(&self, args: &[&str]) -> Value {
        Self::ok(
            self.cmd(Path::new(env!("CARGO_BIN_EXE_keyvol")), args),
            &format!("keyvol {args:?}"),
        )
    }

    fn snap(&self, args: &[&str]) -> Value {
        Self::ok(
            self.cmd(&snap_bin(), args),
            &format!("keyvol-snap {args:?}"),
        )
    }

    fn snap_err(&self, args: &[&str]) -> String {
        let out = self.cmd(&snap_bin(), args);
        assert!(
            !out.status.success(),
            "keyvol-snap {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    fn key(&self, extra: &[&str]) -> String {
        let mut args = vec!["kms", "create-key"];
        args.extend(extra);
        self.kv(&args)["KeyMetadata"]["Arn"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn volume(&mut self, size: &str, key: Option<&str>, extra: &[&str]) -> String {
        let mut args = vec!["volume", "create", "--size", size];
        if let Some(k) = key {
            args.extend(["--kms-key-id", k]);
        }
        args.extend(extra);
        let v = self.kv(&args)["VolumeId"].as_str().unwrap().to_string();
        self.volumes
            .push((v.clone(), extra.iter().map(|s| s.to_string()).collect()));
        v
    }

    fn track(&mut self, vol: &str, extra: &[&str]) {
        self.volumes.push((
            vol.to_string(),
            extra.iter().map(|s| s.to_string()).collect(),
        ));
    }

    /// Attaches and returns the device file.
    fn attach(&self, vol: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec!["volume", "attach", vol];
        args.extend(extra);
        let v = self.kv(&args);
        PathBuf::from(v["Attachments"][0]["Device"].as_str().unwrap())
    }

    fn detach(&self, vol: &str, extra: &[&str]) {
        let mut args = vec!["volume", "detach", vol];
        args.extend(extra);
        self.kv(&args);
    }

    fn mount(&mut self, vol: &str, extra: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(format!("mnt-{vol}"));
        let mut args = vec!["volume", "mount", vol, dir.to_str().unwrap()];
        args.extend(extra);
        let out = self.kv(&args);
        assert_eq!(out["State"], "in-use");
        self.mounts
            .push((dir.clone(), extra.iter().map(|s| s.to_string()).collect()));
        dir
    }

    fn unmount(&mut self, dir: &Path, extra: &[&str]) {
        let mut args = vec!["volume", "unmount", dir.to_str().unwrap()];
        args.extend(extra);
        self.kv(&args);
        self.mounts.retain(|(m, _)| m != dir);
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let kv = Path::new(env!("CARGO_BIN_EXE_keyvol"));
        for (m, extra) in self.mounts.clone() {
            let mut args = vec![
                "volume".to_string(),
                "unmount".into(),
                m.display().to_string(),
            ];
            args.extend(extra);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = self.cmd(kv, &a);
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        for (v, extra) in self.volumes.clone() {
            let mut args = vec![
                "volume".to_string(),
                "detach".into(),
                v.clone(),
                "--force".into(),
            ];
            args.extend(extra);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = self.cmd(kv, &a);
        }
    }
}

fn write_tree(root: &Path, seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sizes = [0usize, 1, 4097, 65536, 100_000, 1 << 20, 3 * (1 << 20) + 17];
    let mut out = Vec::new();
    for (i, size) in sizes.iter().cycle().take(28).enumerate() {
        let dir = root.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("f{i}.bin"));
        let mut data = vec![0u8; *size];
        rng.fill_bytes(&mut data);
        std::fs::write(&p, &data).unwrap();
        out.push((
            p.strip_prefix(root).unwrap().to_path_buf(),
            Sha256::digest(&data).to_vec(),
        ));
    }
    out
}

fn e2fsck_clean(device: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
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

fn sync() {
    assert!(Command::new("sync").status().unwrap().success());
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Total bytes of chunk objects in a local store (all regions).
fn chunk_bytes(store: &Path) -> u64 {
    common::all_files(store)
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "chunks"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

// ------------------------------------------------------------------ moto

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, method: &str, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn start_moto(bucket: &str) -> Moto {
    let bin = std::env::var("KEYVOL_MOTO_SERVER").unwrap_or_else(|_| {
        format!(
            "{}/.cache/keyvol-venv/bin/moto_server",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        Path::new(&bin).exists(),
        "moto_server not found at {bin}: run scripts/setup.sh or set KEYVOL_MOTO_SERVER"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/") != 200 {
        assert!(
            moto.child.try_wait().unwrap().is_none(),
            "moto_server exited"
        );
        assert!(
            Instant::now() < deadline,
            "moto_server did not start in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http(port, "PUT", &format!("/{bucket}")),
        200,
        "create bucket"
    );
    moto
}

// ------------------------------------------------------------------ tests

/// The story, on an S3 store.
#[test]
fn shared_snapshot_copied_across_accounts_and_regions_outlives_the_source_key() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let moto = start_moto("keyvol-e2e");
    let mut h = Home::new();
    h.env = vec![
        (
            "KEYVOL_SNAPSHOT_STORE".into(),
            format!(
                "s3://keyvol-e2e/snaps?endpoint=http://127.0.0.1:{}",
                moto.port
            ),
        ),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
    ];
    h.kv(&[
        "iam",
        "create-account",
        "--account-id",
        B,
        "--profile-name",
        "b",
    ]);
    // Account A: a CMK, a volume with files, a snapshot while mounted.
    let key_a = h.key(&[]);
    let vol = h.volume("128MiB", Some(&key_a), &[]);
    let dir = h.mount(&vol, &[]);
    let files = write_tree(&dir, 11);
    sync();
    let snap = h.snap(&[
        "create",
        &vol,
        "--description",
        "e2e",
        "--freeze",
        dir.to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(snap["State"], "completed", "{snap}");
    assert_eq!(snap["Progress"], "100%");
    assert_eq!(snap["OwnerId"], A);
    assert_eq!(snap["KmsKeyId"], key_a.as_str());
    assert_eq!(snap["Encrypted"], true);
    let snap_id = snap["SnapshotId"].as_str().unwrap().to_string();
    h.unmount(&dir, &[]);
    // Share with B and grant B in the key policy.
    let attr = h.snap(&["share", &snap_id, "--account", B]);
    assert_eq!(attr["CreateVolumePermissions"][0]["UserId"], B);
    assert_eq!(
        h.snap(&["describe-attribute", &snap_id])["CreateVolumePermissions"],
        serde_json::json!([{"UserId": B}])
    );
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Owner", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{A}:root")},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "SharedSnapshotReaders", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{B}:root")},
             "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}
        ]
    });
    let pfile = h.dir.path().join("policy.json");
    std::fs::write(&pfile, policy.to_string()).unwrap();
    h.kv(&[
        "kms",
        "put-key-policy",
        "--key-id",
        &key_a,
        "--policy-name",
        "default",
        "--policy",
        &format!("file://{}", pfile.display()),
    ]);
    // B sees it, copies it under its own key in another region, restores it.
    let b_west = ["--profile", "b", "--region", "us-west-2"];
    let shared = h.snap(&[
        "describe-snapshots",
        "--restorable-by",
        "self",
        "--profile",
        "b",
    ]);
    assert!(
        shared["Snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["SnapshotId"] == snap_id.as_str()),
        "{shared}"
    );
    assert!(
        h.snap(&["describe-snapshots", "--profile", "b"])["Snapshots"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let mut args = vec!["kms", "create-key"];
    args.extend(b_west);
    let key_b = h.kv(&args)["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec![
        "copy",
        &snap_id,
        "--source-region",
        "us-east-1",
        "--kms-key-id",
        &key_b,
        "--wait",
    ];
    args.extend(b_west);
    let copy = h.snap(&args);
    assert_eq!(copy["State"], "completed", "{copy}");
    assert_eq!(copy["OwnerId"], B);
    assert_eq!(copy["KmsKeyId"], key_b.as_str());
    assert_eq!(copy["SourceSnapshotId"], snap_id.as_str());
    let copy_id = copy["SnapshotId"].as_str().unwrap().to_string();
    let mut args = vec!["restore", &copy_id];
    args.extend(b_west);
    let restored = h.snap(&args);
    assert_eq!(restored["OwnerId"], B);
    assert_eq!(restored["SnapshotId"], copy_id.as_str());
    assert_eq!(restored["KmsKeyId"], key_b.as_str());
    let vol_b = restored["VolumeId"].as_str().unwrap().to_string();
    h.track(&vol_b, &b_west);
    // A schedules its key for deletion; eight days later it is destroyed.
    h.kv(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &key_a,
        "--pending-window-in-days",
        "7",
    ]);
    h.env.push(("KEYVOL_TIME_OFFSET".into(), "8d".into()));
    let out = h.cmd(
        Path::new(env!("CARGO_BIN_EXE_keyvol")),
        &["volume", "attach", &vol],
    );
    assert!(!out.status.success(), "A's volume must be crypto-shredded");
    assert!(String::from_utf8_lossy(&out.stderr).contains("crypto-shredded"));
    // B's restored volume is independent of A's key: fsck clean, files match.
    let dev = h.attach(&vol_b, &b_west);
    e2fsck_clean(&dev);
    let dir_b = h.mount(&vol_b, &b_west);
    for (rel, digest) in &files {
        let data = std::fs::read(dir_b.join(rel)).unwrap();
        assert_eq!(&Sha256::digest(&data).to_vec(), digest, "{}", rel.display());
    }
    h.unmount(&dir_b, &b_west);
}

/// About 1% of a 1 GiB volume changed: the second snapshot stores about
/// that many bytes, and list-changed-blocks names exactly those blocks.
#[test]
fn incremental_snapshot_stores_only_changed_chunks() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.volume("1GiB", None, &[]);
    let dev = h.attach(&vol, &[]);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        let data = random(100 << 20, 1);
        f.write_all_at(&data, 0).unwrap();
        f.sync_all().unwrap();
    }
    let s1 = h.snap(&["create", &vol, "--wait"]);
    assert_eq!(s1["State"], "completed");
    let after_first = chunk_bytes(&h.store_dir());
    assert_eq!(after_first, 200 * CHUNK, "100 MiB of data = 200 chunks");
    // 20 scattered chunks (10 MiB, ~1% of 1 GiB), some beyond the data.
    let changed: BTreeSet<u64> = (0..20u64).map(|i| i * 101 + 7).collect();
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        for (n, c) in changed.iter().enumerate() {
            f.write_all_at(&random(4096, 100 + n as u64), c * CHUNK + 8192)
                .unwrap();
        }
        f.sync_all().unwrap();
    }
    let s2 = h.snap(&["create", &vol, "--wait"]);
    assert_eq!(s2["State"], "completed");
    assert_eq!(s2["ParentSnapshotId"], s1["SnapshotId"]);
    let added = chunk_bytes(&h.store_dir()) - after_first;
    assert_eq!(
        added,
        20 * CHUNK,
        "the second snapshot stores the 20 changed chunks"
    );
    assert!(added * 100 / (1 << 30) <= 1);
    let diff = h.snap(&[
        "list-changed-blocks",
        s1["SnapshotId"].as_str().unwrap(),
        s2["SnapshotId"].as_str().unwrap(),
    ]);
    let got: BTreeSet<u64> = diff["ChangedBlocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["BlockIndex"].as_u64().unwrap())
        .collect();
    assert_eq!(got, changed);
    let blocks = h.snap(&["list-blocks", s2["SnapshotId"].as_str().unwrap()]);
    assert_eq!(blocks["BlockSize"], 524288);
    assert_eq!(blocks["VolumeSize"], 1);
    let n = blocks["Blocks"].as_array().unwrap().len();
    let beyond = changed.iter().filter(|c| **c >= 200).count();
    assert_eq!(n, 200 + beyond);
    // Nothing changed: a third snapshot stores nothing new.
    let before = chunk_bytes(&h.store_dir());
    h.snap(&["create", &vol, "--wait"]);
    assert_eq!(chunk_bytes(&h.store_dir()), before);
    h.detach(&vol, &[]);
    // Copies of the lineage into another region under one key: the second
    // copy re-encrypts and stores only the changed chunks.
    let west = h.store_dir().join("us-west-2");
    let key_w = h.key(&["--region", "us-west-2"]);
    let copy = |snap: &Value| {
        let c = h.snap(&[
            "copy",
            snap["SnapshotId"].as_str().unwrap(),
            "--source-region",
            "us-east-1",
            "--region",
            "us-west-2",
            "--kms-key-id",
            &key_w,
            "--wait",
        ]);
        assert_eq!(c["State"], "completed", "{c}");
        c
    };
    let c1 = copy(&s1);
    assert_eq!(chunk_bytes(&west), 200 * CHUNK);
    let c2 = copy(&s2);
    assert_eq!(c2["ParentSnapshotId"], c1["SnapshotId"]);
    assert_eq!(chunk_bytes(&west), 200 * CHUNK + 20 * CHUNK);
    let diff = h.snap(&[
        "list-changed-blocks",
        c1["SnapshotId"].as_str().unwrap(),
        c2["SnapshotId"].as_str().unwrap(),
        "--region",
        "us-west-2",
    ]);
    assert_eq!(
        diff["ChangedBlocks"].as_array().unwrap().len(),
        changed.len()
    );
}

/// A writer keeps writing (each write fsynced) during create: the snapshot
/// holds exactly a prefix of the write sequence that includes every write
/// acknowledged before create started.
#[test]
fn snapshot_of_a_busy_volume_is_point_in_time() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.volume("128MiB", None, &[]);
    let dev = h.attach(&vol, &[]);
    const SLOTS: u64 = 2048;
    let stride = (128u64 << 20) / SLOTS;
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        for i in 0..2u64 {
            f.write_all_at(&random(64 << 20, 40 + i), i * (64 << 20))
                .unwrap();
        }
        let zero = vec![0u8; 4096];
        for s in 0..SLOTS {
            f.write_all_at(&zero, s * stride).unwrap();
        }
        f.sync_all().unwrap();
    }
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, dev) = (acked.clone(), stop.clone(), dev.clone());
        std::thread::spawn(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
            let mut seq = 1u64;
            while !stop.load(Ordering::Acquire) {
                let block: Vec<u8> = seq.to_le_bytes().repeat(512);
                f.write_all_at(&block, (seq % SLOTS) * stride).unwrap();
                f.sync_data().unwrap();
                acked.store(seq, Ordering::Release);
                seq += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = acked.load(Ordering::Acquire);
    let snap = h.snap(&["create", &vol, "--wait"]);
    let after = acked.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    assert_eq!(snap["State"], "completed");
    eprintln!("writes acknowledged during create: {}", after - before);
    let restored = h.snap(&["restore", snap["SnapshotId"].as_str().unwrap()]);
    let rvol = restored["VolumeId"].as_str().unwrap().to_string();
    h.track(&rvol, &[]);
    let rdev = h.attach(&rvol, &[]);
    let f = std::fs::File::open(&rdev).unwrap();
    let mut seen = Vec::new();
    for s in 0..SLOTS {
        let mut b = vec![0u8; 4096];
        f.read_exact_at(&mut b, s * stride).unwrap();
        let v = u64::from_le_bytes(b[..8].try_into().unwrap());
        assert_eq!(b, v.to_le_bytes().repeat(512), "slot {s} is torn");
        seen.push(v);
    }
    let cut = *seen.iter().max().unwrap();
    assert!(
        cut >= before,
        "the cut ({cut}) lost acknowledged writes (up to {before})"
    );
    assert!(
        cut <= after + 1,
        "the cut ({cut}) holds writes after create returned ({after})"
    );
    for (s, v) in seen.iter().enumerate() {
        // The newest write to slot s at or before the cut.
        let s = s as u64;
        let expect = if cut >= s { cut - (cut - s) % SLOTS } else { 0 };
        assert_eq!(*v, expect, "slot {s} is not the state at the cut {cut}");
    }
    // The daemon refuses to stop while a file on its device is open.
    drop(f);
    h.detach(&rvol, &[]);
    h.detach(&vol, &[]);
}

/// Refusals: AWS managed key share, public sharing, copy without key
/// access (error state), copy to a key of another region, unshared copy.
#[test]
fn refusals() {
    let mut h = Home::new();
    h.kv(&[
        "iam",
        "create-account",
        "--account-id",
        B,
        "--profile-name",
        "b",
    ]);
    // alias/aws/ebs snapshot: not shareable.
    let v_ebs = h.volume("16MiB", None, &[]);
    let s_ebs = h.snap(&["create", &v_ebs, "--wait"]);
    let id_ebs = s_ebs["SnapshotId"].as_str().unwrap();
    let e = h.snap_err(&["share", id_ebs, "--account", B]);
    assert!(
        e.contains("(OperationNotPermitted)") && e.contains("AWS managed keys cannot be shared"),
        "{e}"
    );
    // A CMK snapshot: never public.
    let key_a = h.key(&[]);
    let v = h.volume("16MiB", Some(&key_a), &[]);
    let s = h.snap(&["create", &v, "--wait"]);
    let id = s["SnapshotId"].as_str().unwrap().to_string();
    let e = h.snap_err(&["share", &id, "--group", "all"]);
    assert!(
        e.contains("(OperationNotPermitted)") && e.contains("public"),
        "{e}"
    );
    // Not shared: B cannot see or copy it.
    let e = h.snap_err(&[
        "copy",
        &id,
        "--source-region",
        "us-east-1",
        "--wait",
        "--profile",
        "b",
    ]);
    assert!(e.contains("(InvalidSnapshot.NotFound)"), "{e}");
    // Shared, but the key policy does not let B decrypt: the copy ends in
    // error, and copy --wait fails (254) with the StateMessage.
    h.snap(&["share", &id, "--account", B]);
    let out = h.cmd(
        &snap_bin(),
        &[
            "copy",
            &id,
            "--source-region",
            "us-east-1",
            "--wait",
            "--profile",
            "b",
        ],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{e}");
    assert!(out.stdout.is_empty(), "a failed copy printed a result");
    assert!(
        e.contains(
            "An error occurred (ResourceNotReady) when calling the CopySnapshot operation: "
        ) && e.contains("is in state error: Given key ID is not accessible"),
        "{e}"
    );
    let failed = h.snap(&["describe-snapshots", "--profile", "b"]);
    let failed = &failed["Snapshots"][0];
    assert_eq!(failed["State"], "error", "{failed}");
    assert_eq!(failed["StateMessage"], "Given key ID is not accessible");
    assert!(e.contains(failed["SnapshotId"].as_str().unwrap()), "{e}");
    // wait on it: the same exit status and message.
    let out = h.cmd(
        &snap_bin(),
        &[
            "wait",
            failed["SnapshotId"].as_str().unwrap(),
            "--profile",
            "b",
        ],
    );
    assert_eq!(out.status.code(), Some(254));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "An error occurred (ResourceNotReady) when calling the DescribeSnapshots operation: "
    ));
    // Without --wait the pending copy comes back at once and ends the same.
    let c = h.snap(&[
        "copy",
        &id,
        "--source-region",
        "us-east-1",
        "--profile",
        "b",
    ]);
    assert_eq!(c["State"], "pending", "{c}");
    let out = h.cmd(
        &snap_bin(),
        &["wait", c["SnapshotId"].as_str().unwrap(), "--profile", "b"],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{e}");
    assert!(e.contains("Given key ID is not accessible"), "{e}");
    // A key of another region is refused for a copy into us-west-2.
    let key_b_east = h.key(&["--profile", "b"]);
    let e = h.snap_err(&[
        "copy",
        &id,
        "--source-region",
        "us-east-1",
        "--region",
        "us-west-2",
        "--kms-key-id",
        &key_b_east,
        "--wait",
        "--profile",
        "b",
    ]);
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("us-west-2"),
        "{e}"
    );
    // Unshare: B no longer sees it.
    h.snap(&["unshare", &id, "--account", B]);
    assert!(h.snap(&[
        "describe-snapshots",
        "--restorable-by",
        "self",
        "--profile",
        "b"
    ])["Snapshots"]
        .as_array()
        .unwrap()
        .is_empty());
    // Delete: own only; afterwards gone.
    let e = h.snap_err(&["delete", &id, "--profile", "b"]);
    assert!(e.contains("InvalidSnapshot.NotFound"), "{e}");
    h.snap(&["delete", &id]);
    let e = h.snap_err(&["describe", &id]);
    assert!(e.contains("(InvalidSnapshot.NotFound)"), "{e}");
}

/// The I/O errors `keyvol volume status` reports for an attached volume.
fn io_errors(h: &Home, vol: &str) -> Option<u64> {
    let st = h.kv(&["volume", "status"]);
    st["Attachments"]
        .as_array()?
        .iter()
        .find(|e| e["VolumeId"] == vol)?["IoErrors"]
        .as_u64()
}

/// DescribeVolumeStatus of one volume, as the control plane answers it to
/// the home's root.
fn volume_status(h: &Home, vol: &str) -> Value {
    let s = keyvol::session::Session::open(&keyvol::session::SessionOptions {
        home: h.dir.path().to_path_buf(),
        profile: "default".into(),
        region: keyvol::ids::Region::default_region(),
    })
    .unwrap();
    let params = keyvol::ec2::Params::new(
        [
            ("Action", "DescribeVolumeStatus"),
            ("Version", "2016-11-15"),
            ("VolumeId.1", vol),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
    );
    let v = keyvol::ec2::call(&s, &params).unwrap();
    v["volumeStatusSet"][0].clone()
}

/// Tampering with chunks and manifests is an error naming the snapshot and
/// block; a failed restore leaves no volume behind.
#[test]
fn tampered_store_is_detected() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.volume("32MiB", None, &[]);
    let dev = h.attach(&vol, &[]);
    let data = random(8 << 20, 9);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&data, 4 << 20).unwrap();
        f.sync_all().unwrap();
    }
    h.detach(&vol, &[]);
    // Snapshot of the detached volume, restored and hydrated: identical.
    let s = h.snap(&["create", &vol, "--wait"]);
    let id = s["SnapshotId"].as_str().unwrap().to_string();
    let r = h.snap(&["restore", &id, "--hydrate"]);
    let rvol = r["VolumeId"].as_str().unwrap().to_string();
    h.track(&rvol, &[]);
    let rdev = h.attach(&rvol, &[]);
    let mut back = vec![0u8; 8 << 20];
    std::fs::File::open(&rdev)
        .unwrap()
        .read_exact_at(&mut back, 4 << 20)
        .unwrap();
    assert!(back == data, "restored data differs");
    h.detach(&rvol, &[]);
    let n_volumes = |h: &Home| {
        h.kv(&["volume", "describe-volumes"])["Volumes"]
            .as_array()
            .map(Vec::len)
    };
    let volumes_before = n_volumes(&h);
    let blocks = h.snap(&["list-blocks", &id]);
    let first = &blocks["Blocks"][0];
    let (idx, token) = (
        first["BlockIndex"].as_u64().unwrap(),
        first["BlockToken"].as_str().unwrap().to_string(),
    );
    let chunk = h
        .store_dir()
        .join("us-east-1/chunks")
        .join(&token[..2])
        .join(&token);
    let orig = std::fs::read(&chunk).unwrap();
    // A flipped byte.
    let mut bad = orig.clone();
    bad[1000] ^= 1;
    std::fs::write(&chunk, &bad).unwrap();
    let e = h.snap_err(&["restore", &id, "--hydrate"]);
    assert!(
        e.contains(&id) && e.contains(&format!("block {idx}")) && e.contains("corrupt"),
        "{e}"
    );
    // The same chunk read lazily through an attached restored volume: EIO.
    let lazy = h.snap(&["restore", &id]);
    let lvol = lazy["VolumeId"].as_str().unwrap().to_string();
    h.track(&lvol, &[]);
    let ldev = h.attach(&lvol, &[]);
    assert_eq!(io_errors(&h, &lvol), Some(0));
    assert_eq!(volume_status(&h, &lvol)["volumeStatus"]["status"], "ok");
    let mut buf = vec![0u8; 4096];
    let err = std::fs::File::open(&ldev)
        .unwrap()
        .read_exact_at(&mut buf, idx * CHUNK)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The failed read is counted by the daemon, and DescribeVolumeStatus
    // reports the volume impaired with EBS's event for it.
    assert!(io_errors(&h, &lvol).unwrap() >= 1);
    let st = volume_status(&h, &lvol);
    assert_eq!(st["volumeStatus"]["status"], "impaired", "{st}");
    let events = st["eventsSet"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["eventType"] == "potential-data-inconsistency" && e["notBefore"].is_string()),
        "{st}"
    );
    h.detach(&lvol, &[]);
    h.kv(&["volume", "delete", &lvol]);
    // A missing chunk.
    std::fs::remove_file(&chunk).unwrap();
    let e = h.snap_err(&["restore", &id]);
    assert!(
        e.contains(&id) && e.contains(&format!("block {idx}")) && e.contains("missing"),
        "{e}"
    );
    std::fs::write(&chunk, &orig).unwrap();
    // An edited manifest.
    let mpath = h.store_dir().join(format!("us-east-1/manifests/{id}.json"));
    let text = std::fs::read_to_string(&mpath).unwrap();
    let edited = text.replacen(&token, &"0".repeat(64), 1);
    assert_ne!(edited, text);
    std::fs::write(&mpath, edited).unwrap();
    for args in [
        vec!["restore", id.as_str()],
        vec!["list-blocks", id.as_str()],
    ] {
        let e = h.snap_err(&args);
        assert!(e.contains(&id) && e.contains("authentication"), "{e}");
    }
    assert_eq!(
        n_volumes(&h),
        volumes_before,
        "a failed restore left a volume"
    );
    std::fs::write(&mpath, text).unwrap();
    h.snap(&["restore", &id, "--hydrate"]);
}

// ------------------------------------------- crash recovery and memory bound

/// The metrics text of an attach daemon started with `--metrics ADDR`.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The sum of the samples `name` of volume `vol` (0 when there is none).
fn sample(text: &str, name: &str, vol: &str) -> f64 {
    let label = format!("volume_id=\"{vol}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && rest.contains(&label)).then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

fn daemon_pid(h: &Home, vol: &str) -> i32 {
    let st = h.kv(&["volume", "status"]);
    st["Attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["VolumeId"] == vol)
        .unwrap_or_else(|| panic!("{vol} is not attached: {st}"))["Pid"]
        .as_i64()
        .unwrap() as i32
}

/// SHA-256 of a whole device file, read in 4 MiB pieces.
fn sha_of(path: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_vec()
}

/// Restores `snap`, attaches the new volume and returns its hash.
fn restored_sha(h: &mut Home, snap: &Value) -> Vec<u8> {
    restore_and_hash(h, snap["SnapshotId"].as_str().unwrap(), &[], &[])
}

/// Restores `snap` (with `flags` for the restore and `extra` for every
/// command, `--region`), attaches the new volume and returns its hash.
fn restore_and_hash(h: &mut Home, snap: &str, flags: &[&str], extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["restore", snap];
    args.extend(flags);
    args.extend(extra);
    let r = h.snap(&args);
    let rvol = r["VolumeId"].as_str().unwrap().to_string();
    h.track(&rvol, extra);
    let rdev = h.attach(&rvol, extra);
    let sum = sha_of(&rdev);
    h.detach(&rvol, extra);
    sum
}

/// kill -9 of the attach daemon while a writer writes to five chunks (some
/// writes fsynced, some not): the next snapshot cuts and reads only the
/// chunks the change log marked durably (their groups of MARK_GROUP), not
/// the whole volume; every acknowledged write is in the volume, and the
/// snapshot restores to exactly the volume's content.
#[test]
fn snapshot_after_sigkill_reads_only_the_marked_chunks() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.volume("1GiB", None, &[]);
    let n_chunks = (1u64 << 30) / CHUNK;
    let dev = h.attach(&vol, &["--metrics", &free_addr()]);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&random(32 << 20, 7), 0).unwrap();
        f.sync_all().unwrap();
    }
    let s1 = h.snap(&["create", &vol, "--wait"]);
    assert_eq!(s1["State"], "completed");

    const SLOTS: [u64; 5] = [3, 300, 301, 1200, 2047];
    let acked = Arc::new(Mutex::new([0u64; 5]));
    let writer = {
        let (acked, dev) = (acked.clone(), dev.clone());
        std::thread::spawn(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
            let mut seq = 0u64;
            loop {
                seq += 1;
                let slot = (seq % 5) as usize;
                let block = seq.to_le_bytes().repeat(512);
                let off = SLOTS[slot] * CHUNK + 8192;
                // Every other write is fsynced; the others are acknowledged
                // only (possibly not yet on disk).
                let done = f.write_all_at(&block, off).and_then(|()| {
                    if seq.is_multiple_of(2) {
                        f.sync_data()
                    } else {
                        Ok(())
                    }
                });
                if done.is_err() {
                    return seq; // the daemon is gone
                }
                acked.lock().unwrap()[slot] = seq;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let pid = daemon_pid(&h, &vol);
    // SAFETY: kill(2) of the attach daemon's pid, as a crash would.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let last = writer.join().unwrap();
    let acked = *acked.lock().unwrap();
    assert!(last > 10, "the writer made too little progress ({last})");
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.kv(&["volume", "describe", &vol])["State"] != "available" {
        assert!(Instant::now() < deadline, "the daemon of {vol} did not die");
        std::thread::sleep(Duration::from_millis(25));
    }

    let maddr = free_addr();
    let dev = h.attach(&vol, &["--metrics", &maddr]);
    let t0 = Instant::now();
    let s2 = h.snap(&["create", &vol, "--wait"]);
    let took = t0.elapsed();
    assert_eq!(s2["State"], "completed");
    assert_eq!(s2["ParentSnapshotId"], s1["SnapshotId"]);
    let m = scrape(&maddr);
    let cut = sample(&m, "keyvol_volume_snapshot_cut_chunks", &vol) as u64;
    let read = sample(&m, "keyvol_volume_snapshot_chunks_read_total", &vol) as u64;
    eprintln!(
        "after kill -9: the snapshot cut {cut} of {n_chunks} chunks, read {read}, in {took:?}"
    );
    let group = keyvol::volume::changes::MARK_GROUP;
    let groups: BTreeSet<u64> = SLOTS.iter().map(|c| c / group).collect();
    assert!(
        cut >= SLOTS.len() as u64 && cut <= groups.len() as u64 * group,
        "the snapshot after the crash cut {cut} chunks; the writer touched {} chunks in {} groups of {group}",
        SLOTS.len(),
        groups.len()
    );
    assert!(
        cut * 20 < n_chunks,
        "{cut} chunks is not small next to {n_chunks}"
    );
    assert_eq!(read, cut, "each cut chunk is read once");

    // Every acknowledged write is on the volume (or a later one in flight).
    {
        let f = std::fs::File::open(&dev).unwrap();
        for (slot, &c) in SLOTS.iter().enumerate() {
            let mut b = vec![0u8; 4096];
            f.read_exact_at(&mut b, c * CHUNK + 8192).unwrap();
            let v = u64::from_le_bytes(b[..8].try_into().unwrap());
            assert_eq!(b, v.to_le_bytes().repeat(512), "chunk {c} is torn");
            assert!(
                v >= acked[slot] && (v == 0 || v % 5 == slot as u64),
                "chunk {c} holds write {v}, but write {} was acknowledged",
                acked[slot]
            );
        }
    }
    let live = sha_of(&dev);
    h.detach(&vol, &[]);
    assert!(
        restored_sha(&mut h, &s2) == live,
        "the snapshot after the crash differs from the volume"
    );
}

/// The whole volume is overwritten while its snapshot uploads: the daemon
/// stashes the old ciphertext of every chunk not yet read, within its
/// memory bound (spilling the rest to a file), so its peak RSS stays under
/// 64 MiB, and the snapshot restores to the volume as it was at the cut.
#[test]
fn snapshot_of_a_volume_overwritten_during_it_stays_in_its_memory_bound() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    const SIZE: usize = 512 << 20;
    const PIECE: usize = 8 << 20;
    let mut h = Home::new();
    let vol = h.volume("512MiB", None, &[]);
    let dev = h.attach(&vol, &[]);
    // The overwrite runs from the end of the volume back, against the
    // snapshot's reads from the start: every piece it writes before the two
    // meet is stashed, however fast either side runs.
    let fill = |seed: u64, backwards: bool| {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        for n in 0..SIZE / PIECE {
            let i = if backwards { SIZE / PIECE - 1 - n } else { n };
            f.write_all_at(&random(PIECE, seed + i as u64), (i * PIECE) as u64)
                .unwrap();
        }
        f.sync_all().unwrap();
    };
    fill(1000, false);
    let at_cut = sha_of(&dev);
    let pid = daemon_pid(&h, &vol);
    // create without --wait returns once the snapshot is cut (pending).
    let snap = h.snap(&["create", &vol]);
    let id = snap["SnapshotId"].as_str().unwrap().to_string();
    assert_eq!(snap["State"], "pending");
    fill(2000, true);
    let state = h.snap(&["describe", &id])["State"].clone();
    let done = h.snap(&["wait", &id]);
    assert_eq!(done["State"], "completed", "{done}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let log = std::fs::read_to_string(h.dir.path().join(format!("volumes/us-east-1/{vol}.log")))
        .unwrap_or_default();
    let spilled = log
        .lines()
        .any(|l| l.contains(&id) && l.contains("copy-before-write spilled"));
    eprintln!(
        "overwrite of {} MiB during the snapshot: state after it {state}, daemon VmHWM {} MiB, spilled: {spilled}",
        SIZE >> 20,
        hwm_kib >> 10
    );
    assert!(
        spilled,
        "the overwrite did not reach the memory bound (state after it: {state}); log:\n{log}"
    );
    assert!(
        hwm_kib < 64 << 10,
        "the daemon's peak RSS was {} MiB",
        hwm_kib >> 10
    );
    // No spill file is left in the volume's directory.
    let names: Vec<String> = std::fs::read_dir(h.dir.path().join("volumes/us-east-1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".cbw-")), "{names:?}");
    let now = sha_of(&dev);
    assert_ne!(now, at_cut);
    h.detach(&vol, &[]);
    assert!(
        restored_sha(&mut h, &done) == at_cut,
        "the snapshot is not the volume at the cut"
    );
}

// ------------------------------------------------------------ pipelines

/// What the sequential snapshot stored for a volume's backing file (the
/// XTS ciphertext, chunk by chunk): every chunk that is not all zeros,
/// named by its SHA-256. The pipelined snapshot must store exactly this.
fn expected_blocks(backing: &Path) -> std::collections::BTreeMap<u64, String> {
    let data = std::fs::read(backing).unwrap();
    data.chunks(CHUNK as usize)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, c)| (i as u64, hex::encode(Sha256::digest(c))))
        .collect()
}

fn listed_blocks(h: &Home, snap: &str, extra: &[&str]) -> std::collections::BTreeMap<u64, String> {
    let mut args = vec!["list-blocks", snap];
    args.extend(extra);
    h.snap(&args)["Blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["BlockIndex"].as_u64().unwrap(),
                b["BlockToken"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every chunk a manifest names is in the store and hashes to its name.
fn assert_chunks_stored(region: &Path, blocks: &std::collections::BTreeMap<u64, String>) {
    for (i, name) in blocks {
        let path = region.join("chunks").join(&name[..2]).join(name);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("block {i}: chunk {} missing: {e}", path.display()));
        assert_eq!(&hex::encode(Sha256::digest(&bytes)), name, "block {i}");
    }
}

/// Restores `snap` with `--hydrate` (the hydration pipeline) and returns
/// the restored device's hash.
fn hydrated_sha(h: &mut Home, snap: &str, extra: &[&str]) -> Vec<u8> {
    restore_and_hash(h, snap, &["--hydrate"], extra)
}

/// The pipelined snapshot, copy and hydration (workers reading over their
/// own control connections, hashing, re-encrypting and storing in
/// parallel) store exactly the chunks the sequential code stored — every
/// non-zero ciphertext chunk of the volume under its SHA-256, holes left
/// out — for a full and an incremental snapshot; restores of both and of a
/// copy are byte-identical to the volume; and a store failure in the middle
/// of a snapshot leaves it in `error`, never completed, with the lineage's
/// parent unchanged.
#[test]
fn pipelined_snapshots_store_the_same_chunks_and_restore_identically() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.volume("64MiB", None, &[]);
    let backing = h
        .dir
        .path()
        .join("volumes/us-east-1")
        .join(format!("{vol}.img"));
    let region = h.store_dir().join("us-east-1");
    let dev = h.attach(&vol, &[]);
    // 128 chunks: random data, with holes (never written, and one written
    // with zeros) and a chunk with data in one sector only.
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&random(40 * CHUNK as usize, 7), 0).unwrap();
        f.write_all_at(&random(60 * CHUNK as usize, 8), 50 * CHUNK)
            .unwrap();
        f.write_all_at(&vec![0u8; CHUNK as usize], 20 * CHUNK)
            .unwrap();
        f.write_all_at(&random(4096, 9), 120 * CHUNK + 3 * 4096)
            .unwrap();
        f.sync_all().unwrap();
    }
    let source_sha = sha_of(&dev);
    let s1 = h.snap(&["create", &vol, "--wait"]);
    assert_eq!(s1["State"], "completed", "{s1}");
    let s1 = s1["SnapshotId"].as_str().unwrap().to_string();
    h.detach(&vol, &[]);
    let want = expected_blocks(&backing);
    assert_eq!(want.len(), 39 + 60 + 1, "data chunks of the volume");
    let got = listed_blocks(&h, &s1, &[]);
    assert_eq!(
        got, want,
        "the full snapshot names every data chunk by its hash"
    );
    assert_chunks_stored(&region, &got);
    assert_eq!(hydrated_sha(&mut h, &s1, &[]), source_sha);

    // Incremental: some chunks changed, one emptied (a hole now), one new.
    let dev = h.attach(&vol, &[]);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        for (n, c) in [3u64, 33, 55, 99].iter().enumerate() {
            f.write_all_at(&random(8192, 20 + n as u64), c * CHUNK + 4096)
                .unwrap();
        }
        f.write_all_at(&vec![0u8; CHUNK as usize], 70 * CHUNK)
            .unwrap();
        f.write_all_at(&random(CHUNK as usize, 30), 127 * CHUNK)
            .unwrap();
        f.sync_all().unwrap();
    }
    let source_sha = sha_of(&dev);
    let s2 = h.snap(&["create", &vol, "--wait"]);
    assert_eq!(s2["State"], "completed", "{s2}");
    assert_eq!(s2["ParentSnapshotId"], s1.as_str());
    let s2 = s2["SnapshotId"].as_str().unwrap().to_string();
    h.detach(&vol, &[]);
    let want = expected_blocks(&backing);
    assert!(!want.contains_key(&70) && want.contains_key(&127));
    let got = listed_blocks(&h, &s2, &[]);
    assert_eq!(
        got, want,
        "the incremental snapshot names the volume's chunks"
    );
    assert_chunks_stored(&region, &got);
    assert_eq!(hydrated_sha(&mut h, &s2, &[]), source_sha);

    // The copy pipeline: re-encrypted into another region, restored the same.
    let key_w = h.key(&["--region", "us-west-2"]);
    let c = h.snap(&[
        "copy",
        &s2,
        "--source-region",
        "us-east-1",
        "--region",
        "us-west-2",
        "--kms-key-id",
        &key_w,
        "--wait",
    ]);
    assert_eq!(c["State"], "completed", "{c}");
    let c = c["SnapshotId"].as_str().unwrap().to_string();
    let copied = listed_blocks(&h, &c, &["--region", "us-west-2"]);
    assert_eq!(
        copied.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "a copy keeps the holes and the data blocks"
    );
    assert_chunks_stored(&h.store_dir().join("us-west-2"), &copied);
    assert_eq!(
        hydrated_sha(&mut h, &c, &["--region", "us-west-2"]),
        source_sha
    );

    // A store failure in the middle: every chunk directory not made yet is
    // taken by a file, so the chunks hashing there cannot be stored while
    // others are.
    let dev = h.attach(&vol, &[]);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&random(64 * CHUNK as usize, 40), 0).unwrap();
        f.sync_all().unwrap();
    }
    let chunks = region.join("chunks");
    let mut blocked = Vec::new();
    for p in 0..=255u8 {
        let d = chunks.join(hex::encode([p]));
        if !d.exists() {
            std::fs::write(&d, b"not a directory").unwrap();
            blocked.push(d);
        }
    }
    assert!(blocked.len() > 64, "{} prefixes free", blocked.len());
    let err = h.snap_err(&["create", &vol, "--wait"]);
    // The store fails at the chunk's existence check or at its write,
    // whichever a worker reaches first.
    assert!(
        err.contains("snapshot store put") || err.contains("snapshot store head"),
        "{err}"
    );
    let snaps = h.snap(&["describe-snapshots"]);
    let failed: Vec<&Value> = snaps["Snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["SnapshotId"] != s1.as_str() && s["SnapshotId"] != s2.as_str())
        .filter(|s| s["VolumeId"] == vol.as_str())
        .collect();
    assert_eq!(failed.len(), 1, "{snaps}");
    assert_eq!(failed[0]["State"], "error", "{}", failed[0]);
    for d in &blocked {
        std::fs::remove_file(d).unwrap();
    }
    // The lineage still ends at s2: the next snapshot is its child, holds
    // every change since s2 and restores to the volume.
    let source_sha = sha_of(&dev);
    let s3 = h.snap(&["create", &vol, "--wait"]);
    assert_eq!(s3["State"], "completed", "{s3}");
    assert_eq!(s3["ParentSnapshotId"], s2.as_str());
    let s3 = s3["SnapshotId"].as_str().unwrap().to_string();
    h.detach(&vol, &[]);
    let got = listed_blocks(&h, &s3, &[]);
    assert_eq!(got, expected_blocks(&backing));
    assert_chunks_stored(&region, &got);
    assert_eq!(hydrated_sha(&mut h, &s3, &[]), source_sha);
}
