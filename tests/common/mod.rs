//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod botocore;
pub mod serve;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use keyvol::clock::Clock;
use keyvol::home::Home;
use keyvol::iam::Iam;
use keyvol::ids::Region;
use keyvol::kms::{ErrorCode, Kms, KmsResult, RequestContext};
use serde_json::{json, Value};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub kms: Kms,
    pub iam: Iam,
    pub clock: Clock,
    pub ctx: RequestContext,
}

pub fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let home = Arc::new(Home::open(dir.path()).unwrap());
    let iam = Iam::open(home.clone(), clock.clone()).unwrap();
    let kms = Kms::open(home, clock.clone()).unwrap();
    let ctx = RequestContext::new(
        iam.profile_caller("default").unwrap(),
        Region::default_region(),
    );
    Env {
        dir,
        kms,
        iam,
        clock,
        ctx,
    }
}

impl Env {
    pub fn call(&self, op: &str, req: Value) -> KmsResult<Value> {
        self.kms.call(&self.ctx, op, req)
    }
    pub fn ok(&self, op: &str, req: Value) -> Value {
        self.call(op, req)
            .unwrap_or_else(|e| panic!("{op} failed: {e}"))
    }
    pub fn code(&self, op: &str, req: Value) -> Option<ErrorCode> {
        self.call(op, req).err().map(|e| e.code)
    }
    pub fn create_key(&self) -> String {
        self.ok("CreateKey", json!({}))["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

pub fn b64(b: &[u8]) -> String {
    keyvol::kms::api::b64_encode(b)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    keyvol::kms::api::b64_decode(v.as_str().unwrap()).unwrap()
}

/// Runs the keyvol binary with a home.
/// The `keyvol-snap` binary built beside the `keyvol` under test.
pub fn snap_bin() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_keyvol")).with_file_name("keyvol-snap");
    assert!(
        p.exists(),
        "{} is missing: build it with cargo build --workspace --bins",
        p.display()
    );
    p
}

/// `keyvol-snap --profile PROFILE create VOL --wait` on `home`: the
/// completed snapshot's description; a failure fails the test.
pub fn snapshot_and_wait(home: &Path, profile: &str, vol: &str) -> Value {
    snap_cli(home, &["--profile", profile, "create", vol, "--wait"])
}

/// Runs `keyvol-snap` on `home` (no profile or region from the
/// environment): its output, parsed; a failure fails the test.
pub fn snap_cli(home: &Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(snap_bin())
        .args(args)
        .env("KEYVOL_HOME", home)
        .env_remove("KEYVOL_PROFILE")
        .env_remove("KEYVOL_REGION")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keyvol-snap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn keyvol(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .args(args)
        .env("KEYVOL_HOME", home)
        .env_remove("KEYVOL_PROFILE")
        .env_remove("KEYVOL_REGION")
        .env_remove("KEYVOL_TIME_OFFSET")
        .output()
        .expect("run keyvol")
}

pub fn keyvol_json(home: &Path, args: &[&str]) -> Value {
    let out = keyvol(home, args);
    assert!(
        out.status.success(),
        "keyvol {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

static FUSE_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Tests that mount volumes need root and /dev/fuse. Under CI=true a
/// missing one fails the test; elsewhere the test says it did not run.
/// Returns a guard that runs such tests of one binary one at a time (loop
/// devices and mounts are machine-wide).
pub fn fuse_prerequisites() -> Option<std::sync::MutexGuard<'static, ()>> {
    // SAFETY: geteuid cannot fail and touches no memory.
    let ok = unsafe { libc::geteuid() } == 0 && Path::new("/dev/fuse").exists();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test mounts volumes: it needs root and /dev/fuse"
        );
        eprintln!("NOT RUN outside CI: this test mounts volumes and needs root and /dev/fuse");
        return None;
    }
    Some(FUSE_SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}
