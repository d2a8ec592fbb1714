//! `--output text` against the aws CLI's own text formatter
//! (`awscli.text.format_text` from the venv of scripts/setup.sh): the same
//! JSON through both must print the same lines.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

/// What `aws --output text` prints for `v`.
fn aws_text(v: &Value) -> String {
    let mut child = Command::new(common::serve::python())
        .args([
            "-c",
            "import json, sys\nfrom awscli.text import format_text\nformat_text(json.load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(v.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ours(v: &Value) -> String {
    let lines = keyvol::output::render(v.clone(), "text", None).unwrap();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn text_output_matches_the_aws_cli_formatter() {
    let cases = [
        json!({"KeyId": "1234", "Arn": "arn:aws:kms:us-east-1:111122223333:key/1234"}),
        json!({"Keys": [{"KeyId": "a", "KeyArn": "arn:a"}, {"KeyId": "b", "KeyArn": "arn:b"}], "Truncated": false}),
        json!({"Volumes": [
            {"VolumeId": "vol-1", "Size": 1, "Encrypted": true,
             "Attachments": [{"Device": "/dev/x", "State": "attached", "InstanceId": null}],
             "Tags": []},
            {"VolumeId": "vol-2", "Size": 2, "SnapshotId": "snap-1", "Attachments": []}
        ]}),
        json!({"GrantTokens": ["t1", "t2"], "Operations": ["Encrypt", "Decrypt"]}),
        json!(["a", "b", 3, true, null]),
        json!([["x", "y"], ["z"], "w"]),
        json!({"Policy": {"Statement": [{"Effect": "Allow", "Action": ["kms:*"], "Resource": "*"}], "Version": "2012-10-17"}}),
        json!({"Mixed": [{"A": 1, "B": {"C": 2}}, {"A": 3, "B": 4}]}),
        json!({"Float": 1.5, "Neg": -3, "Empty": "", "Nested": {"Deep": {"Deeper": ["q"]}}}),
        json!("just a string"),
        json!({"Quote": [{"K": "it's"}], "Obj": [{"Inner": [1, 2], "Name": "n"}]}),
    ];
    for v in cases {
        assert_eq!(ours(&v), aws_text(&v), "for {v}");
    }
}

#[test]
fn keyvol_text_output_is_the_aws_cli_text_of_its_json() {
    let home = tempfile::tempdir().unwrap();
    let key = keyvol_json(
        home.path(),
        &["kms", "create-key", "--description", "text test"],
    );
    let id = key["KeyMetadata"]["KeyId"].as_str().unwrap();
    keyvol_json(
        home.path(),
        &[
            "kms",
            "tag-resource",
            "--key-id",
            id,
            "--tags",
            "TagKey=a,TagValue=1",
            "TagKey=b,TagValue=2",
        ],
    );
    keyvol_json(home.path(), &["volume", "create", "--size", "8MiB"]);
    for args in [
        vec!["kms", "describe-key", "--key-id", id],
        vec!["kms", "list-resource-tags", "--key-id", id],
        vec!["kms", "list-keys"],
        vec!["volume", "describe-volumes"],
    ] {
        let json_out = keyvol_json(home.path(), &args);
        let mut text_args = args.clone();
        text_args.extend(["--output", "text"]);
        let out = keyvol(home.path(), &text_args);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            aws_text(&json_out),
            "keyvol {args:?}"
        );
    }
    // A query result prints as the aws CLI prints it too.
    let out = keyvol(
        home.path(),
        &[
            "kms",
            "describe-key",
            "--key-id",
            id,
            "--query",
            "KeyMetadata.KeyId",
            "--output",
            "text",
        ],
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), id);
}
