//! `--cli-input-json` and `--generate-cli-skeleton` of the volume and
//! snapshot commands, through the real binaries.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn snap(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(snap_bin())
        .args(args)
        .env("KEYVOL_HOME", home)
        .env_remove("KEYVOL_PROFILE")
        .env_remove("KEYVOL_REGION")
        .output()
        .unwrap()
}

fn ok_json(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn volume_skeleton_and_input_json() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let skel = keyvol_json(h, &["volume", "create", "--generate-cli-skeleton"]);
    assert_eq!(
        skel,
        json!({"Size": "", "KmsKeyId": "", "SnapshotId": "", "Hydrate": false,
               "Encrypted": false, "AvailabilityZone": "", "TagSpecifications": [""]})
    );
    let skel = keyvol_json(h, &["volume", "mount", "--generate-cli-skeleton"]);
    assert_eq!(skel["VolumeId"], "");
    assert_eq!(skel["Dir"], "");
    assert_eq!(skel["Fs"], "ext4", "defaults fill the skeleton");
    assert_eq!(skel["All"], false);
    // The skeleton ran nothing.
    assert_eq!(keyvol_json(h, &["volume", "list"])["Volumes"], json!([]));

    let v = keyvol_json(
        h,
        &[
            "volume",
            "create",
            "--cli-input-json",
            r#"{"Size": "2GiB"}"#,
        ],
    );
    assert_eq!(v["Size"], 2);
    let vol = v["VolumeId"].as_str().unwrap().to_string();
    // From a file, with a positional argument.
    let file = h.join("modify.json");
    std::fs::write(&file, json!({"VolumeId": vol, "Size": "3GiB"}).to_string()).unwrap();
    let arg = format!("file://{}", file.display());
    let m = keyvol_json(h, &["volume", "modify", "--cli-input-json", &arg]);
    assert_eq!(
        (m["VolumeId"].as_str(), m["Size"].as_i64()),
        (Some(vol.as_str()), Some(3))
    );
    // The command line wins over the JSON.
    let v = keyvol_json(
        h,
        &[
            "volume",
            "create",
            "--size",
            "1GiB",
            "--cli-input-json",
            r#"{"Size": "4GiB"}"#,
        ],
    );
    assert_eq!(v["Size"], 1);
    let d = keyvol_json(
        h,
        &[
            "volume",
            "describe-volumes",
            "--cli-input-json",
            &json!({"VolumeIds": [vol]}).to_string(),
        ],
    );
    assert_eq!(d["Volumes"].as_array().unwrap().len(), 1);

    // Mistakes are usage errors that change nothing.
    let before = keyvol_json(h, &["volume", "list"])["Volumes"]
        .as_array()
        .unwrap()
        .len();
    for bad in [
        r#"{"Sise": "1GiB"}"#,
        "[1]",
        "{not json",
        r#"{"Hydrate": "yes"}"#,
    ] {
        let out = keyvol(h, &["volume", "create", "--cli-input-json", bad]);
        assert_eq!(
            out.status.code(),
            Some(252),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = keyvol(
        h,
        &[
            "volume",
            "create",
            "--cli-input-json",
            r#"{"Sise": "1GiB"}"#,
        ],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("Unknown parameter") && e.contains("Size, KmsKeyId"),
        "{e}"
    );
    let after = keyvol_json(h, &["volume", "list"])["Volumes"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);

    // The kms commands keep their own --cli-input-json (the request body).
    let key = keyvol_json(h, &["kms", "create-key"])["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let d = keyvol_json(
        h,
        &[
            "kms",
            "describe-key",
            "--cli-input-json",
            &json!({"KeyId": key}).to_string(),
        ],
    );
    assert_eq!(d["KeyMetadata"]["KeyId"], key.as_str());
}

#[test]
fn snapshot_skeleton_and_input_json() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let skel = ok_json(snap(h, &["create", "--generate-cli-skeleton"]));
    assert_eq!(
        skel,
        json!({"VolumeId": "", "Description": "", "Freeze": "", "Wait": false})
    );
    let skel = ok_json(snap(h, &["share", "--generate-cli-skeleton"]));
    assert_eq!(
        skel,
        json!({"SnapshotId": "", "Accounts": [""], "Group": ""})
    );

    let key = keyvol_json(h, &["kms", "create-key"])["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = keyvol_json(
        h,
        &["volume", "create", "--size", "8MiB", "--kms-key-id", &key],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let input = json!({"VolumeId": vol, "Description": "from json", "Wait": true}).to_string();
    let s = ok_json(snap(h, &["create", "--cli-input-json", &input]));
    assert_eq!(s["State"], "completed");
    assert_eq!(s["Description"], "from json");
    let id = s["SnapshotId"].as_str().unwrap().to_string();
    let shared = ok_json(snap(
        h,
        &[
            "share",
            "--cli-input-json",
            &json!({"SnapshotId": id, "Accounts": ["444455556666", "777788889999"]}).to_string(),
        ],
    ));
    let perms = ok_json(snap(h, &["describe-attribute", &id]));
    let ids: Vec<&str> = perms["CreateVolumePermissions"]
        .as_array()
        .unwrap_or_else(|| panic!("{perms} after {shared}"))
        .iter()
        .map(|p| p["UserId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["444455556666", "777788889999"]);
    let out = snap(h, &["describe", "--cli-input-json", r#"{"Snapshot": "x"}"#]);
    assert_eq!(out.status.code(), Some(252));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SnapshotId"));
}
