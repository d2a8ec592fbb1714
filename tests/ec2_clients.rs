//! `keyvol serve` as the EC2 endpoint for clients no one here wrote: the
//! aws CLI and boto3's ec2 client (tests/ec2_clients.py) drive volumes,
//! snapshots, sharing, a cross-account cross-region copy and a restore,
//! with real FUSE mounts by the keyvol CLI in between.

mod common;

use common::serve::{
    aws_cli, cli, create_account, create_user, create_user_with_policy, key_env, Served, BIN,
};
use serde_json::Value;

const A: &str = "444455556666";
const B: &str = "777788889999";

#[test]
fn aws_cli_and_boto3_drive_volumes_and_snapshots_through_keyvol_serve() {
    let Some(_guard) = common::fuse_prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let a = create_account(&home, A, "a");
    let b = create_account(&home, B, "b");
    let nobody = create_user(&home, "a", "nobody");
    let ops = create_user_with_policy(
        &home,
        dir.path(),
        "a",
        "ops",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:*","Resource":"*"}]}"#,
    );
    let served = Served::start(&home, &["serve"]);
    let endpoint = served.endpoint();
    let aws = aws_cli();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let report: Value = common::serve::script_report("ec2_clients.py", |c| {
        for (name, key) in [("A", &a), ("B", &b), ("NOBODY", &nobody), ("OPS", &ops)] {
            key_env(c, name, key);
        }
        c.env("KV_ENDPOINT", &endpoint)
            .env("KV_A", A)
            .env("KV_B", B)
            .env("KV_AWS", &aws)
            .env("KV_BIN", BIN)
            .env("KV_HOME", &home)
            .env("KV_MNT", &mnt);
    });
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
        "attach-refusals",
        "attach-volume-wait-in-use",
        "detach-volume-wait-available",
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
    let audit = cli(&home, &["--profile", "a", "kms", "audit", "verify"]);
    assert_eq!(audit["Valid"], true, "{audit}");
}
