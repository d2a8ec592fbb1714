//! `keyvol serve` as the EBS direct API endpoint for the aws CLI and
//! boto3's ebs client (tests/ebs_clients.py): a raw ext4 image uploaded as
//! an encrypted snapshot (with a server restart in the middle of the
//! upload), restored and mounted with the keyvol CLI, a keyvol snapshot
//! downloaded block by block and checked with e2fsck, incremental children
//! and ListChangedBlocks, and the refusals.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// `keyvol serve` on `listen`; returns the server and its endpoint.
fn serve(home: &Path, listen: &str) -> (Served, String) {
    let mut child = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(["serve", "--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("keyvol serve did not start: {e}: {line:?}"));
    (
        Served(child),
        ready["Endpoint"].as_str().unwrap().to_string(),
    )
}

fn user_with_policy(home: &Path, dir: &Path, name: &str, policy: &str) -> (String, String) {
    keyvol(
        home,
        &["--profile", "a", "iam", "create-user", "--user-name", name],
    );
    if !policy.is_empty() {
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, policy).unwrap();
        keyvol(
            home,
            &[
                "--profile",
                "a",
                "iam",
                "put-user-policy",
                "--user-name",
                name,
                "--policy-name",
                "p",
                "--policy-document",
                &format!("file://{}", file.display()),
            ],
        );
    }
    key(&keyvol(
        home,
        &[
            "--profile",
            "a",
            "iam",
            "create-access-key",
            "--user-name",
            name,
        ],
    ))
}

#[test]
fn aws_cli_and_boto3_upload_restore_and_download_snapshots_through_the_ebs_direct_apis() {
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
    let nobody = user_with_policy(&home, dir.path(), "nobody", "");
    let reader = user_with_policy(
        &home,
        dir.path(),
        "reader",
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["ebs:ListSnapshotBlocks","ebs:GetSnapshotBlock"],"Resource":"arn:aws:ec2:*::snapshot/*",
             "Condition":{"StringEquals":{"aws:ResourceTag/team":"db"}}},
            {"Effect":"Allow","Action":["kms:Decrypt"],"Resource":"*"}]}"#,
    );
    let (served, endpoint) = serve(&home, "127.0.0.1:0");
    let listen = endpoint.trim_start_matches("http://").to_string();
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
    let restart = dir.path().join("restart");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ebs_clients.py");
    let mut script = Command::new(&py)
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
        .env("KV_READER_AKID", &reader.0)
        .env("KV_READER_SECRET", &reader.1)
        .env("KV_AWS", &aws)
        .env("KV_BIN", BIN)
        .env("KV_HOME", &home)
        .env("KV_MNT", &mnt)
        .env("KV_RESTART", &restart)
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The script asks for one restart of the server in the middle of an
    // upload: the server is killed (no clean shutdown) and started again
    // on the same address.
    let mut served = Some(served);
    let started = Instant::now();
    let status = loop {
        if let Some(st) = script.try_wait().unwrap() {
            break st;
        }
        if restart.exists() && served.is_some() {
            drop(served.take());
            let (again, _) = serve(&home, &listen);
            served = Some(again);
            std::fs::remove_file(&restart).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "tests/ebs_clients.py ran for 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = script.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success(),
        "tests/ebs_clients.py failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    let has = |c: &str, s: &str| report[c].as_array().unwrap().iter().any(|x| x == s);
    for s in [
        "start-snapshot-idempotent",
        "server-restart-mid-upload",
        "checksum-mismatch-refused",
        "complete-refusals",
        "upload-image",
        "restore-mount-compare",
        "download-image-fsck-compare",
        "wrong-token-refused",
    ] {
        assert!(has("cli", s), "the aws CLI did not run {s}: {report}");
    }
    for s in [
        "sparse-upload-download",
        "incremental-child-changed-blocks",
        "pagination-lineage",
        "foreign-account-refused",
        "permissions",
        "start-refusals",
        "delete-pending-upload",
    ] {
        assert!(has("boto3", s), "boto3 did not run {s}: {report}");
    }
    drop(served);
    // Every EBS call is an event of the audit chain, which verifies.
    let events = keyvol(
        &home,
        &[
            "--profile",
            "a",
            "kms",
            "audit",
            "list",
            "--max-items",
            "100000",
        ],
    );
    let events = events["Events"].as_array().cloned().unwrap_or_default();
    let ebs: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventSource"] == "ebs.amazonaws.com")
        .collect();
    for name in [
        "StartSnapshot",
        "PutSnapshotBlock",
        "CompleteSnapshot",
        "ListSnapshotBlocks",
        "ListChangedBlocks",
        "GetSnapshotBlock",
    ] {
        assert!(
            ebs.iter().any(|e| e["eventName"] == name),
            "no {name} event in the audit log"
        );
    }
    let put = ebs
        .iter()
        .find(|e| e["eventName"] == "PutSnapshotBlock" && e.get("errorCode").is_none())
        .unwrap();
    assert_eq!(put["managementEvent"], false, "{put}");
    assert_eq!(put["eventCategory"], "Data", "{put}");
    assert!(
        ebs.iter().any(|e| e["errorCode"] == "AccessDeniedException"
            && e["userIdentity"]["arn"]
                .as_str()
                .unwrap_or("")
                .ends_with(":user/nobody")),
        "the refused calls of nobody are not audited"
    );
    let audit = keyvol(&home, &["--profile", "a", "kms", "audit", "verify"]);
    assert_eq!(audit["Valid"], true, "{audit}");
}
