//! `keyvol serve` as the EC2 endpoint for clients no one here wrote: the
//! aws CLI and boto3's ec2 client (tests/ec2_clients.py) drive volumes,
//! snapshots, sharing, a cross-account cross-region copy and a restore,
//! with real FUSE mounts by the keyvol CLI in between.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyvol");
const A: &str = "444455556666";
const B: &str = "777788889999";

fn keyvol(home: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("KEYVOL_PROFILE")
        .env_remove("KEYVOL_REGION")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keyvol {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn key(v: &Value) -> (String, String) {
    (
        v["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string(),
        v["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

struct Served(Child);
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn aws_cli_and_boto3_drive_volumes_and_snapshots_through_keyvol_serve() {
    let Some(_guard) = common::fuse_prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let a = key(&keyvol(
        &home,
        &[
            "iam",
            "create-account",
            "--account-id",
            A,
            "--profile-name",
            "a",
        ],
    ));
    let b = key(&keyvol(
        &home,
        &[
            "iam",
            "create-account",
            "--account-id",
            B,
            "--profile-name",
            "b",
        ],
    ));
    keyvol(
        &home,
        &[
            "--profile",
            "a",
            "iam",
            "create-user",
            "--user-name",
            "nobody",
        ],
    );
    let nobody = key(&keyvol(
        &home,
        &[
            "--profile",
            "a",
            "iam",
            "create-access-key",
            "--user-name",
            "nobody",
        ],
    ));
    let mut child = Command::new(BIN)
        .arg("--home")
        .arg(&home)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _served = Served(child);
    let ready: Value = serde_json::from_str(&line).unwrap();
    let endpoint = ready["Endpoint"].as_str().unwrap().to_string();
    let venv = std::env::var("KEYVOL_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/keyvol-venv", std::env::var("HOME").unwrap()));
    let py = format!("{venv}/bin/python");
    let aws = PathBuf::from(&py).with_file_name("aws");
    assert!(
        aws.exists(),
        "{} is missing: run scripts/setup.sh",
        aws.display()
    );
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ec2_clients.py");
    let out = Command::new(&py)
        .arg(script)
        .env("KV_ENDPOINT", &endpoint)
        .env("KV_A", A)
        .env("KV_B", B)
        .env("KV_A_AKID", &a.0)
        .env("KV_A_SECRET", &a.1)
        .env("KV_B_AKID", &b.0)
        .env("KV_B_SECRET", &b.1)
        .env("KV_NOBODY_AKID", &nobody.0)
        .env("KV_NOBODY_SECRET", &nobody.1)
        .env("KV_AWS", &aws)
        .env("KV_BIN", BIN)
        .env("KV_HOME", &home)
        .env("KV_MNT", &mnt)
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/ec2_clients.py failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    let has = |c: &str, s: &str| report[c].as_array().unwrap().iter().any(|x| x == s);
    for s in [
        "sts-get-caller-identity",
        "create-volume",
        "mounted-in-use",
        "create-volume-kms-key-id",
        "create-snapshot-wait",
        "share",
        "cross-account-cross-region-copy",
        "restore-mount-compare",
        "unshare",
        "cli-errors",
        "data-key-not-for-users",
    ] {
        assert!(has("cli", s), "the aws CLI did not run {s}: {report}");
    }
    for s in [
        "paginate",
        "filters",
        "tags",
        "modify-volume",
        "volume-status",
        "ebs-defaults",
        "regions-zones",
        "errors",
    ] {
        assert!(has("boto3", s), "boto3 did not run {s}: {report}");
    }
    // Every EC2 call is in the audit chain, and the chain verifies.
    let audit = keyvol(&home, &["--profile", "a", "kms", "audit", "verify"]);
    assert_eq!(audit["Valid"], true, "{audit}");
}
