//! `keyvol serve` as the EBS direct API endpoint for the aws CLI and
//! boto3's ebs client (tests/ebs_clients.py): a raw ext4 image uploaded as
//! an encrypted snapshot (with a server restart in the middle of the
//! upload), restored and mounted with the keyvol CLI, a keyvol snapshot
//! downloaded block by block and checked with e2fsck, incremental children
//! and ListChangedBlocks, and the refusals.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{cli, create_account, create_user, create_user_with_policy, Served, BIN};
use serde_json::Value;

const A: &str = "444455556666";
const B: &str = "777788889999";

#[test]
fn aws_cli_and_boto3_upload_restore_and_download_snapshots_through_the_ebs_direct_apis() {
    let Some(_guard) = common::fuse_prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let a = create_account(&home, A, "a");
    let b = create_account(&home, B, "b");
    let nobody = create_user(&home, "a", "nobody");
    let reader = create_user_with_policy(
        &home,
        dir.path(),
        "a",
        "reader",
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["ebs:ListSnapshotBlocks","ebs:GetSnapshotBlock"],"Resource":"arn:aws:ec2:*::snapshot/*",
             "Condition":{"StringEquals":{"aws:ResourceTag/team":"db"}}},
            {"Effect":"Allow","Action":["kms:Decrypt"],"Resource":"*"}]}"#,
    );
    let served = Served::start(&home, &["serve"]);
    let endpoint = served.endpoint();
    let listen = served.addr().to_string();
    let py = common::serve::python();
    let aws = common::serve::aws_cli();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let restart = dir.path().join("restart");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ebs_clients.py");
    let mut cmd = Command::new(&py);
    for (name, key) in [
        ("A", &a),
        ("B", &b),
        ("NOBODY", &nobody),
        ("READER", &reader),
    ] {
        common::serve::key_env(&mut cmd, name, key);
    }
    let mut script = cmd
        .arg(script)
        .env("KV_ENDPOINT", &endpoint)
        .env("KV_A", A)
        .env("KV_B", B)
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
            served = Some(Served::spawn(&home, ["serve", "--listen", listen.as_str()]));
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
        "copy-uploaded-snapshot",
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
    let events = cli(
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
    let audit = cli(&home, &["--profile", "a", "kms", "audit", "verify"]);
    assert_eq!(audit["Valid"], true, "{audit}");
}
