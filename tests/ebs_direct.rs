//! The EBS direct APIs in process through `keyvol::ebs::handle` (the code
//! path `keyvol serve` runs for every request signed for `ebs`): an
//! authorization matrix of actions x principals x conditions, block tokens
//! that expire, uploads that time out into `error`, sharing with another
//! account and unsharing, and bounded audit records of refused calls.

mod common;

use base64::Engine;
use keyvol::ebs::{self, Body, Request, Response};
use keyvol::ec2::{self, Params};
use keyvol::ids::{AccountId, Region};
use keyvol::kms::{Caller, RequestContext};
use keyvol::session::{Session, SessionOptions};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const A: &str = "444455556666";
const B: &str = "777788889999";
const BLOCK: usize = 512 * 1024;

struct World {
    _dir: tempfile::TempDir,
    base: Session,
}

fn caller(account: &str, user: Option<&str>) -> Caller {
    let acct: AccountId = account.parse().unwrap();
    match user {
        None => Caller::root(acct),
        Some(u) => Caller::user(acct, u),
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn block(seed: u8) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect()
}

type Who = (&'static str, Option<&'static str>);
const ROOT_A: Who = (A, None);
const ROOT_B: Who = (B, None);

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let base = Session::open(&SessionOptions {
            home: dir.path().to_path_buf(),
            profile: "default".into(),
            region: Region::default_region(),
        })
        .unwrap();
        for (acct, profile) in [(A, "a"), (B, "b")] {
            base.iam
                .create_account(&acct.parse().unwrap(), profile)
                .unwrap();
        }
        let a: AccountId = A.parse().unwrap();
        let policies = [
            // writer: may write snapshots tagged team=db (tags required at
            // start), and use keys.
            (
                "writer",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ebs:StartSnapshot","Resource":"arn:aws:ec2:*::snapshot/*",
                 "Condition":{"StringEquals":{"aws:RequestTag/team":"db"}}},
                {"Effect":"Allow","Action":["ebs:PutSnapshotBlock","ebs:CompleteSnapshot"],"Resource":"arn:aws:ec2:*::snapshot/*",
                 "Condition":{"StringEquals":{"aws:ResourceTag/team":"db"}}},
                {"Effect":"Allow","Action":["kms:GenerateDataKeyWithoutPlaintext","kms:DescribeKey","kms:Decrypt"],"Resource":"*"}]}"#,
            ),
            // reader: reads only, any snapshot.
            (
                "reader",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":["ebs:List*","ebs:GetSnapshotBlock"],"Resource":"*"},
                {"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#,
            ),
            // lister: may list but is explicitly denied block reads.
            (
                "lister",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":["ebs:*","kms:*"],"Resource":"*"},
                {"Effect":"Deny","Action":"ebs:GetSnapshotBlock","Resource":"*"}]}"#,
            ),
            // nokms: every ebs action but no KMS permission at all.
            (
                "nokms",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ebs:*","Resource":"*"}]}"#,
            ),
        ];
        for (user, doc) in policies {
            base.iam.create_user(&a, user, None).unwrap();
            base.iam.put_user_policy(&a, user, "p", doc).unwrap();
        }
        base.iam.create_user(&a, "nobody", None).unwrap();
        // The matrix starts more snapshots a second than EBS's quota of 10
        // (a client would retry the throttled ones): raised for this home,
        // as an account's quota increase would.
        let mut q = keyvol::ebs::quota::Quotas::default();
        q.set("StartSnapshot=1000").unwrap();
        q.set("CompleteSnapshot=1000").unwrap();
        keyvol::ebs::quota::configure(base.home.dir(), q);
        World { _dir: dir, base }
    }

    fn session(&self, who: Who) -> Session {
        let mut ctx = RequestContext::new(caller(who.0, who.1), "us-east-1".parse().unwrap());
        ctx.source_ip = Some("198.51.100.9".into());
        self.base.for_caller(ctx)
    }

    fn send(
        &self,
        who: Who,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Response {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        ebs::handle(
            &self.session(who),
            &Request {
                method,
                path,
                query,
                headers: &headers,
                body,
            },
        )
    }

    fn start(&self, who: Who, body: Value) -> Result<Value, (u16, String, String)> {
        let r = self.send(
            who,
            "POST",
            "/snapshots",
            "",
            &[],
            body.to_string().as_bytes(),
        );
        json_or_error(r)
    }

    fn put(
        &self,
        who: Who,
        sid: &str,
        i: u64,
        data: &[u8],
    ) -> Result<Value, (u16, String, String)> {
        let r = self.send(
            who,
            "PUT",
            &format!("/snapshots/{sid}/blocks/{i}"),
            "",
            &[
                ("x-amz-Data-Length", data.len().to_string()),
                ("x-amz-Checksum", b64(&Sha256::digest(data))),
                ("x-amz-Checksum-Algorithm", "SHA256".into()),
            ],
            data,
        );
        json_or_error(r)
    }

    fn complete(&self, who: Who, sid: &str, n: usize) -> Result<Value, (u16, String, String)> {
        let r = self.send(
            who,
            "POST",
            &format!("/snapshots/completion/{sid}"),
            "",
            &[("x-amz-ChangedBlocksCount", n.to_string())],
            b"",
        );
        json_or_error(r)
    }

    fn list(&self, who: Who, sid: &str) -> Result<Value, (u16, String, String)> {
        json_or_error(self.send(
            who,
            "GET",
            &format!("/snapshots/{sid}/blocks"),
            "",
            &[],
            b"",
        ))
    }

    fn get_response(&self, who: Who, sid: &str, i: u64, token: &str) -> Response {
        let q = format!("blockToken={}", urlencode(token));
        self.send(
            who,
            "GET",
            &format!("/snapshots/{sid}/blocks/{i}"),
            &q,
            &[],
            b"",
        )
    }

    fn get(
        &self,
        who: Who,
        sid: &str,
        i: u64,
        token: &str,
    ) -> Result<Vec<u8>, (u16, String, String)> {
        let r = self.get_response(who, sid, i, token);
        match r.body {
            Body::Block(b) if r.status == 200 => Ok(b.to_vec()),
            _ => Err(json_or_error(r).unwrap_err()),
        }
    }

    /// GetSnapshotBlock's body and its `x-amz-Checksum` header.
    fn get_with_sum(&self, who: Who, sid: &str, i: u64, token: &str) -> (Vec<u8>, String) {
        let r = self.get_response(who, sid, i, token);
        let sum = r
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-Checksum"))
            .map(|(_, v)| v.clone())
            .expect("GetSnapshotBlock answers x-amz-Checksum");
        match r.body {
            Body::Block(b) if r.status == 200 => (b.to_vec(), sum),
            _ => panic!("GetSnapshotBlock {sid}/{i}: {:?}", json_or_error(r).err()),
        }
    }

    fn checksum_rows(&self) -> i64 {
        rusqlite::Connection::open(self._dir.path().join("state.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM ebs_block_checksums", [], |r| r.get(0))
            .unwrap()
    }

    fn ec2(&self, who: Who, action: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut pairs = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), "2016-11-15".to_string()),
        ];
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ec2::call(&self.session(who), &Params::new(pairs)).map_err(|e| e.code)
    }

    /// A completed snapshot of A tagged team=db with blocks 0 and 5.
    fn completed(&self) -> String {
        let s = self
            .start(
                ROOT_A,
                json!({"VolumeSize": 1, "Tags": [{"Key": "team", "Value": "db"}]}),
            )
            .unwrap();
        let sid = s["SnapshotId"].as_str().unwrap().to_string();
        self.put(ROOT_A, &sid, 0, &block(1)).unwrap();
        self.put(ROOT_A, &sid, 5, &block(2)).unwrap();
        self.complete(ROOT_A, &sid, 2).unwrap();
        sid
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JSON of a success, or (status, error type, reason) of a failure.
fn json_or_error(r: Response) -> Result<Value, (u16, String, String)> {
    let error_type = r
        .headers
        .iter()
        .find(|(k, _)| *k == "x-amzn-ErrorType")
        .map(|(_, v)| v.clone());
    match (error_type, r.body) {
        (None, Body::Json(v)) => Ok(v),
        (None, _) => Ok(Value::Null),
        (Some(t), Body::Json(v)) => {
            if r.status == 500 {
                eprintln!("internal error: {v}");
            }
            Err((
                r.status,
                t,
                v["Reason"].as_str().unwrap_or_default().to_string(),
            ))
        }
        (Some(t), _) => Err((r.status, t, String::new())),
    }
}

fn kind(r: Result<impl std::fmt::Debug, (u16, String, String)>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}")
            .chars()
            .take(3)
            .collect::<String>()
            .trim()
            .to_string(),
        Err((_, t, _)) => t,
    }
}

#[test]
fn authorization_matrix_of_the_ebs_actions_has_no_wrong_allow() {
    let w = World::new();
    let writer: Who = (A, Some("writer"));
    let reader: Who = (A, Some("reader"));
    let lister: Who = (A, Some("lister"));
    let nokms: Who = (A, Some("nokms"));
    let nobody: Who = (A, Some("nobody"));
    let tagged = json!({"VolumeSize": 1, "Tags": [{"Key": "team", "Value": "db"}]});
    let untagged = json!({"VolumeSize": 1});
    let other_tag = json!({"VolumeSize": 1, "Tags": [{"Key": "team", "Value": "web"}]});
    let done = w.completed();
    // The same under a customer key whose policy leaves use to IAM.
    let s = w.session(ROOT_A);
    let cmk = s.kms.call(&s.ctx, "CreateKey", json!({})).unwrap()["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let under_cmk = json!({"VolumeSize": 1, "KmsKeyArn": cmk});
    let done_cmk = w.start(ROOT_A, under_cmk.clone()).unwrap()["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    w.put(ROOT_A, &done_cmk, 3, &block(7)).unwrap();
    w.complete(ROOT_A, &done_cmk, 1).unwrap();
    let pend_cmk = w.start(ROOT_A, under_cmk.clone()).unwrap()["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    let cmk_token = w.list(ROOT_A, &done_cmk).unwrap()["Blocks"][0]["BlockToken"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = w.list(ROOT_A, &done).unwrap();
    let token = listed["Blocks"][0]["BlockToken"]
        .as_str()
        .unwrap()
        .to_string();
    // A pending snapshot tagged team=db and one tagged team=web, by root.
    let pend_db = w.start(ROOT_A, tagged.clone()).unwrap()["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    let pend_web = w.start(ROOT_A, other_tag.clone()).unwrap()["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    let data = block(9);
    let cases: Vec<(&str, String, String)> = vec![
        // StartSnapshot
        (
            "root start",
            kind(w.start(ROOT_A, untagged.clone())),
            "ok".into(),
        ),
        (
            "writer start tagged",
            kind(w.start(writer, tagged.clone())),
            "ok".into(),
        ),
        (
            "writer start untagged",
            kind(w.start(writer, untagged.clone())),
            "AccessDeniedException".into(),
        ),
        (
            "writer start other tag",
            kind(w.start(writer, other_tag.clone())),
            "AccessDeniedException".into(),
        ),
        (
            "reader start",
            kind(w.start(reader, tagged.clone())),
            "AccessDeniedException".into(),
        ),
        (
            "nobody start",
            kind(w.start(nobody, tagged.clone())),
            "AccessDeniedException".into(),
        ),
        // The KMS decides too: ebs:StartSnapshot without kms permissions
        // is refused under a customer key; aws/ebs lets every principal of
        // the account that EBS authorized use it through EBS, as in AWS.
        (
            "nokms start cmk",
            kind(w.start(nokms, under_cmk.clone())),
            "AccessDeniedException".into(),
        ),
        (
            "nokms start aws/ebs",
            kind(w.start(nokms, untagged.clone())),
            "ok".into(),
        ),
        (
            "reader get cmk",
            kind(w.get(reader, &done_cmk, 3, &cmk_token)),
            "ok".into(),
        ),
        (
            "nokms get cmk",
            kind(w.get(nokms, &done_cmk, 3, &cmk_token)),
            "AccessDeniedException".into(),
        ),
        (
            "nokms list cmk",
            kind(w.list(nokms, &done_cmk)),
            "AccessDeniedException".into(),
        ),
        // Writes to a started upload use the data key the service made at
        // StartSnapshot for it (as EBS holds a grant): IAM decides.
        (
            "nokms put cmk",
            kind(w.put(nokms, &pend_cmk, 0, &data)),
            "ok".into(),
        ),
        (
            "nokms list aws/ebs",
            kind(w.list(nokms, &done)),
            "ok".into(),
        ),
        (
            "root B start",
            kind(w.start(ROOT_B, untagged.clone())),
            "ok".into(),
        ),
        // PutSnapshotBlock
        (
            "writer put db",
            kind(w.put(writer, &pend_db, 1, &data)),
            "ok".into(),
        ),
        (
            "writer put web",
            kind(w.put(writer, &pend_web, 1, &data)),
            "AccessDeniedException".into(),
        ),
        (
            "reader put",
            kind(w.put(reader, &pend_db, 2, &data)),
            "AccessDeniedException".into(),
        ),
        (
            "nobody put",
            kind(w.put(nobody, &pend_db, 2, &data)),
            "AccessDeniedException".into(),
        ),
        (
            "B put A's",
            kind(w.put(ROOT_B, &pend_db, 2, &data)),
            "ResourceNotFoundException".into(),
        ),
        (
            "put completed",
            kind(w.put(ROOT_A, &done, 2, &data)),
            "ValidationException".into(),
        ),
        // ListSnapshotBlocks / GetSnapshotBlock
        ("reader list", kind(w.list(reader, &done)), "ok".into()),
        ("lister list", kind(w.list(lister, &done)), "ok".into()),
        (
            "writer list",
            kind(w.list(writer, &done)),
            "AccessDeniedException".into(),
        ),
        (
            "nobody list",
            kind(w.list(nobody, &done)),
            "AccessDeniedException".into(),
        ),
        (
            "B list A's",
            kind(w.list(ROOT_B, &done)),
            "ResourceNotFoundException".into(),
        ),
        (
            "reader get",
            kind(w.get(reader, &done, 0, &token)),
            "ok".into(),
        ),
        (
            "lister get",
            kind(w.get(lister, &done, 0, &token)),
            "AccessDeniedException".into(),
        ),
        (
            "nobody get",
            kind(w.get(nobody, &done, 0, &token)),
            "AccessDeniedException".into(),
        ),
        (
            "B get A's",
            kind(w.get(ROOT_B, &done, 0, &token)),
            "ResourceNotFoundException".into(),
        ),
        // CompleteSnapshot
        (
            "reader complete",
            kind(w.complete(reader, &pend_db, 1)),
            "AccessDeniedException".into(),
        ),
        (
            "B complete A's",
            kind(w.complete(ROOT_B, &pend_db, 1)),
            "ResourceNotFoundException".into(),
        ),
        (
            "writer complete web",
            kind(w.complete(writer, &pend_web, 0)),
            "AccessDeniedException".into(),
        ),
        (
            "writer complete db",
            kind(w.complete(writer, &pend_db, 1)),
            "ok".into(),
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(name, got, want)| format!("{name}: got {got}, want {want}"))
        .collect();
    assert!(cases.len() >= 33, "{}", cases.len());
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The block written by writer is in the completed snapshot.
    let l = w.list(ROOT_A, &pend_db).unwrap();
    assert_eq!(l["Blocks"][0]["BlockIndex"], 1, "{l}");
}

#[test]
fn block_tokens_expire_and_idle_uploads_end_in_error() {
    let w = World::new();
    let sid = w.completed();
    let l = w.list(ROOT_A, &sid).unwrap();
    let token = l["Blocks"][1]["BlockToken"].as_str().unwrap().to_string();
    assert_eq!(w.get(ROOT_A, &sid, 5, &token).unwrap(), block(2));
    let expiry = l["ExpiryTime"].as_i64().unwrap();
    let now = w.base.kms.clock().now();
    assert!(
        expiry > now + 3600 && expiry <= now + 13 * 3600,
        "{expiry} vs {now}"
    );
    // An upload that starts now, with a 10-minute timeout.
    let pend = w
        .start(ROOT_A, json!({"VolumeSize": 1, "Timeout": 10}))
        .unwrap();
    let pend = pend["SnapshotId"].as_str().unwrap().to_string();
    w.put(ROOT_A, &pend, 0, &block(3)).unwrap();
    let idle = w
        .start(ROOT_A, json!({"VolumeSize": 1, "Timeout": 10}))
        .unwrap();
    let idle = idle["SnapshotId"].as_str().unwrap().to_string();
    w.base.kms.clock().advance(11 * 60);
    // Past the timeout: the next write is refused, the snapshot is error.
    let e = w.put(ROOT_A, &pend, 1, &block(4)).unwrap_err();
    assert_eq!(
        (e.1.as_str(), e.2.as_str()),
        ("ValidationException", "WRITE_REQUEST_TIMEOUT")
    );
    for id in [&pend, &idle] {
        let d = w
            .ec2(ROOT_A, "DescribeSnapshots", &[("SnapshotId.1", id)])
            .unwrap();
        let snap = &d["snapshotSet"][0];
        assert_eq!(snap["status"], "error", "{d}");
        assert!(
            snap["statusMessage"]
                .as_str()
                .unwrap()
                .contains("Timeout of 10 minutes"),
            "{d}"
        );
    }
    // An error snapshot can be deleted.
    w.ec2(ROOT_A, "DeleteSnapshot", &[("SnapshotId", &pend)])
        .unwrap();
    // 13 hours on, the tokens listed before have expired.
    w.base.kms.clock().advance(13 * 3600);
    let e = w.get(ROOT_A, &sid, 5, &token).unwrap_err();
    assert_eq!(
        (e.1.as_str(), e.2.as_str()),
        ("ValidationException", "INVALID_BLOCK_TOKEN")
    );
    // A fresh list gives fresh tokens that work.
    let l = w.list(ROOT_A, &sid).unwrap();
    let fresh = l["Blocks"][1]["BlockToken"].as_str().unwrap();
    assert_eq!(w.get(ROOT_A, &sid, 5, fresh).unwrap(), block(2));
}

#[test]
fn a_shared_snapshot_is_readable_by_the_other_account_until_unshared() {
    let w = World::new();
    let s = w.session(ROOT_A);
    // A key B may use, as sharing an encrypted snapshot needs.
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{A}:root")}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{B}:root")},
         "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}]});
    let key = s
        .kms
        .call(&s.ctx, "CreateKey", json!({"Policy": policy.to_string()}))
        .unwrap();
    let arn = key["KeyMetadata"]["Arn"].as_str().unwrap().to_string();
    let sid = w
        .start(
            ROOT_A,
            json!({"VolumeSize": 1, "KmsKeyArn": arn, "Encrypted": true}),
        )
        .unwrap()["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    w.put(ROOT_A, &sid, 7, &block(5)).unwrap();
    w.complete(ROOT_A, &sid, 1).unwrap();
    assert_eq!(
        w.list(ROOT_B, &sid).unwrap_err().1,
        "ResourceNotFoundException"
    );
    w.ec2(
        ROOT_A,
        "ModifySnapshotAttribute",
        &[
            ("SnapshotId", &sid),
            ("Attribute", "createVolumePermission"),
            ("OperationType", "add"),
            ("UserId.1", B),
        ],
    )
    .unwrap();
    let l = w.list(ROOT_B, &sid).unwrap();
    let token = l["Blocks"][0]["BlockToken"].as_str().unwrap().to_string();
    assert_eq!(w.get(ROOT_B, &sid, 7, &token).unwrap(), block(5));
    // B may not write to it or build on it.
    assert_eq!(
        w.start(ROOT_B, json!({"VolumeSize": 1, "ParentSnapshotId": sid}))
            .unwrap_err()
            .1,
        "ResourceNotFoundException"
    );
    w.ec2(
        ROOT_A,
        "ResetSnapshotAttribute",
        &[
            ("SnapshotId", &sid),
            ("Attribute", "createVolumePermission"),
        ],
    )
    .unwrap();
    assert_eq!(
        w.list(ROOT_B, &sid).unwrap_err().1,
        "ResourceNotFoundException"
    );
    assert_eq!(
        w.get(ROOT_B, &sid, 7, &token).unwrap_err().1,
        "ResourceNotFoundException"
    );
}

#[test]
fn every_call_is_audited_and_refused_calls_are_bounded() {
    let w = World::new();
    let nobody: Who = (A, Some("nobody"));
    let huge = "x".repeat(200_000);
    let tags: Vec<Value> = (0..500)
        .map(|i| json!({"Key": format!("k{i}{huge}"), "Value": huge}))
        .collect();
    let r = w.start(
        nobody,
        json!({"VolumeSize": 1, "Description": huge, "Tags": tags}),
    );
    assert!(r.is_err());
    let sid = w.completed();
    let _ = w.list((A, Some("nobody")), &sid);
    let events = keyvol_audit(&w);
    let ebs_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventSource"] == "ebs.amazonaws.com")
        .collect();
    // completed(): start, 2 puts, complete; plus nobody's start and list.
    assert_eq!(ebs_events.len(), 6, "{ebs_events:#?}");
    for e in &ebs_events {
        let text = e.to_string();
        assert!(
            text.len() < 64 * 1024,
            "an audit record of {} bytes",
            text.len()
        );
    }
    let denied: Vec<&&Value> = ebs_events
        .iter()
        .filter(|e| e["errorCode"].is_string())
        .collect();
    assert_eq!(denied.len(), 2, "{denied:#?}");
    assert!(denied
        .iter()
        .all(|e| e["userIdentity"]["arn"] == format!("arn:aws:iam::{A}:user/nobody")));
    assert!(denied
        .iter()
        .all(|e| e["sourceIPAddress"] == "198.51.100.9"));
}

/// The audit events of account A as `keyvol kms audit list` shows them.
fn keyvol_audit(w: &World) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .arg("--home")
        .arg(w.base.home.dir())
        .args([
            "--profile",
            "a",
            "kms",
            "audit",
            "list",
            "--max-items",
            "100000",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Events"].as_array().cloned().unwrap()
}

/// Every EBS response of keyvol against botocore's `ebs` model: JSON bodies
/// against the operation's output shape, header members by their wire
/// names, and error bodies against the error's shape.
#[test]
fn every_ebs_response_matches_the_botocore_model() {
    let model = common::botocore::Model::load("ebs");
    let w = World::new();
    let mut problems = Vec::new();
    let mut check = |op: &str, r: &Response| {
        match &r.body {
            Body::Json(v) if r.headers.iter().any(|(k, _)| *k == "x-amzn-ErrorType") => {
                let code = &r
                    .headers
                    .iter()
                    .find(|(k, _)| *k == "x-amzn-ErrorType")
                    .unwrap()
                    .1;
                assert!(
                    model.errors(op).contains(code),
                    "{op} may not answer {code}"
                );
                problems.extend(model.check_shape(code, v));
            }
            Body::Json(v) => problems.extend(model.check_output(op, v)),
            _ => {}
        }
        let allowed = model.output_headers(op);
        for (name, _) in &r.headers {
            let lower = name.to_ascii_lowercase();
            if lower != "x-amzn-errortype" && !allowed.contains(&lower) {
                problems.push(format!("{op}: header {name} is not a member of its output"));
            }
        }
    };
    let start = w.send(
        ROOT_A,
        "POST",
        "/snapshots",
        "",
        &[],
        json!({"VolumeSize": 1, "Description": "shapes", "Tags": [{"Key": "k", "Value": "v"}]})
            .to_string()
            .as_bytes(),
    );
    check("StartSnapshot", &start);
    let sid = match &start.body {
        Body::Json(v) => v["SnapshotId"].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    let data = block(3);
    let put = w.send(
        ROOT_A,
        "PUT",
        &format!("/snapshots/{sid}/blocks/2"),
        "",
        &[
            ("x-amz-Data-Length", BLOCK.to_string()),
            ("x-amz-Checksum", b64(&Sha256::digest(&data))),
            ("x-amz-Checksum-Algorithm", "SHA256".into()),
        ],
        &data,
    );
    assert_eq!(put.status, 201);
    assert_eq!(put.headers.len(), 2, "{:?}", put.headers);
    check("PutSnapshotBlock", &put);
    let done = w.send(
        ROOT_A,
        "POST",
        &format!("/snapshots/completion/{sid}"),
        "",
        &[("x-amz-ChangedBlocksCount", "1".into())],
        b"",
    );
    assert_eq!(done.status, 202);
    check("CompleteSnapshot", &done);
    let list = w.send(
        ROOT_A,
        "GET",
        &format!("/snapshots/{sid}/blocks"),
        "",
        &[],
        b"",
    );
    check("ListSnapshotBlocks", &list);
    let token = match &list.body {
        Body::Json(v) => v["Blocks"][0]["BlockToken"].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    let changed = w.send(
        ROOT_A,
        "GET",
        &format!("/snapshots/{sid}/changedblocks"),
        "",
        &[],
        b"",
    );
    check("ListChangedBlocks", &changed);
    let get = w.send(
        ROOT_A,
        "GET",
        &format!("/snapshots/{sid}/blocks/2"),
        &format!("blockToken={}", urlencode(&token)),
        &[],
        b"",
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.headers.len(), 3, "{:?}", get.headers);
    check("GetSnapshotBlock", &get);
    // Errors: each a declared error of its operation, in its shape.
    let errors = [
        (
            "StartSnapshot",
            w.send(
                ROOT_A,
                "POST",
                "/snapshots",
                "",
                &[],
                br#"{"VolumeSize": 0}"#,
            ),
        ),
        (
            "StartSnapshot",
            w.send(
                (A, Some("nobody")),
                "POST",
                "/snapshots",
                "",
                &[],
                br#"{"VolumeSize": 1}"#,
            ),
        ),
        (
            "ListSnapshotBlocks",
            w.send(
                ROOT_A,
                "GET",
                "/snapshots/snap-0123456789abcdef0/blocks",
                "",
                &[],
                b"",
            ),
        ),
        (
            "ListSnapshotBlocks",
            w.send(
                ROOT_A,
                "GET",
                &format!("/snapshots/{sid}/blocks"),
                "pageToken=Z2FyYmFnZQ%3D%3D",
                &[],
                b"",
            ),
        ),
        (
            "GetSnapshotBlock",
            w.send(
                ROOT_A,
                "GET",
                &format!("/snapshots/{sid}/blocks/3"),
                &format!("blockToken={}", urlencode(&token)),
                &[],
                b"",
            ),
        ),
        (
            "CompleteSnapshot",
            w.send(
                ROOT_A,
                "POST",
                &format!("/snapshots/completion/{sid}"),
                "",
                &[("x-amz-ChangedBlocksCount", "1".into())],
                b"",
            ),
        ),
    ];
    for (op, r) in &errors {
        assert!(r.status >= 400, "{op}: {r:?}");
        check(op, r);
    }
    // The quota errors, each a declared error of StartSnapshot in its shape.
    let quotas = |specs: &[&str]| {
        let mut q = keyvol::ebs::quota::Quotas::default();
        for s in specs {
            q.set(s).unwrap();
        }
        keyvol::ebs::quota::configure(w.base.home.dir(), q);
    };
    let start_one = || {
        w.send(
            ROOT_A,
            "POST",
            "/snapshots",
            "",
            &[],
            br#"{"VolumeSize": 1}"#,
        )
    };
    quotas(&["StartSnapshot=0.001"]);
    let _ = start_one();
    let throttled = start_one();
    quotas(&["OpenUploads=1"]);
    let concurrent = start_one();
    quotas(&["SnapshotsPerRegion=1"]);
    let quota = start_one();
    for (want, r) in [
        ("RequestThrottledException", &throttled),
        ("ConcurrentLimitExceededException", &concurrent),
        ("ServiceQuotaExceededException", &quota),
    ] {
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == "x-amzn-ErrorType" && v == want),
            "{want}: {r:?}"
        );
        check("StartSnapshot", r);
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The checker sees what is off.
    assert!(!model
        .check_output(
            "ListSnapshotBlocks",
            &json!({"Blocks": [{"BlockIndex": "x"}]})
        )
        .is_empty());
    assert!(!model
        .check_shape("ValidationException", &json!({"Reason": "NOT_A_REASON"}))
        .is_empty());
}

/// GetSnapshotBlock answers the digest recorded when the block was uploaded
/// (no second hash of the block): for a parent's block read through its
/// child, for a block the child replaced, and the recorded digests go when
/// their chunks are deleted.
#[test]
fn recorded_block_checksums_follow_chunks_through_children_and_deletes() {
    let w = World::new();
    let parent = w.completed();
    assert_eq!(w.checksum_rows(), 2, "blocks 0 and 5 of the parent");
    let c = w
        .start(
            ROOT_A,
            json!({"VolumeSize": 1, "ParentSnapshotId": parent, "Tags": [{"Key": "team", "Value": "db"}]}),
        )
        .unwrap();
    let child = c["SnapshotId"].as_str().unwrap().to_string();
    w.put(ROOT_A, &child, 5, &block(3)).unwrap();
    w.put(ROOT_A, &child, 7, &block(4)).unwrap();
    w.complete(ROOT_A, &child, 2).unwrap();
    assert_eq!(w.checksum_rows(), 4, "the child's blocks 5 and 7 added");
    let expect = [
        (&parent, vec![(0u64, block(1)), (5, block(2))]),
        (&child, vec![(0, block(1)), (5, block(3)), (7, block(4))]),
    ];
    for (sid, blocks) in &expect {
        let listed = w.list(ROOT_A, sid).unwrap();
        let listed = listed["Blocks"].as_array().unwrap();
        assert_eq!(listed.len(), blocks.len(), "{sid}: {listed:?}");
        for ((i, data), b) in blocks.iter().zip(listed) {
            assert_eq!(b["BlockIndex"].as_u64(), Some(*i));
            let (got, sum) = w.get_with_sum(ROOT_A, sid, *i, b["BlockToken"].as_str().unwrap());
            assert!(&got == data, "{sid} block {i}: wrong bytes");
            assert_eq!(
                sum,
                b64(&Sha256::digest(data)),
                "{sid} block {i}: wrong checksum"
            );
        }
    }
    // Deleting the child frees the two chunks only it names.
    w.ec2(ROOT_A, "DeleteSnapshot", &[("SnapshotId", &child)])
        .unwrap();
    assert_eq!(w.checksum_rows(), 2);
    w.ec2(ROOT_A, "DeleteSnapshot", &[("SnapshotId", &parent)])
        .unwrap();
    assert_eq!(w.checksum_rows(), 0);
}

fn own_snapshots(w: &World, who: Who) -> usize {
    let d = w
        .ec2(who, "DescribeSnapshots", &[("Owner.1", "self")])
        .unwrap();
    d["snapshotSet"].as_array().map_or(0, Vec::len)
}

/// EBS's quotas, set low for this home: each refusal carries EBS's error
/// name and reason and changes nothing; another account or another
/// snapshot is not held back by them.
#[test]
fn quotas_refuse_with_ebs_errors_and_change_nothing() {
    use keyvol::ebs::quota::{self, Quotas};
    let w = World::new();
    let home = w.base.home.dir().to_path_buf();
    let set = |specs: &[&str]| {
        let mut q = Quotas::default();
        for s in specs {
            q.set(s).unwrap();
        }
        quota::configure(&home, q);
    };
    let start = |who: Who| w.start(who, json!({"VolumeSize": 1}));
    // One StartSnapshot per 100 s per account.
    set(&["StartSnapshot=0.01"]);
    let first = start(ROOT_A).unwrap()["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    let e = start(ROOT_A).unwrap_err();
    assert_eq!(
        e,
        (
            400,
            "RequestThrottledException".into(),
            "ACCOUNT_THROTTLED".into()
        )
    );
    assert_eq!(
        own_snapshots(&w, ROOT_A),
        1,
        "the throttled start made nothing"
    );
    start(ROOT_B).expect("another account has its own bucket");

    // One PutSnapshotBlock per 100 s per snapshot.
    set(&["PutSnapshotBlockPerSnapshot=0.01"]);
    let second = start(ROOT_A).unwrap()["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    w.put(ROOT_A, &first, 0, &block(1)).unwrap();
    let e = w.put(ROOT_A, &first, 1, &block(2)).unwrap_err();
    assert_eq!(
        e,
        (
            400,
            "RequestThrottledException".into(),
            "RESOURCE_LEVEL_THROTTLE".into()
        )
    );
    w.put(ROOT_A, &second, 1, &block(2))
        .expect("another snapshot has its own bucket");
    // The refused block was not stored: one block completes the upload.
    w.complete(ROOT_A, &first, 1).unwrap();
    let listed = w.list(ROOT_A, &first).unwrap();
    assert_eq!(listed["Blocks"].as_array().unwrap().len(), 1, "{listed}");

    // Open uploads: `second` is still open.
    set(&["OpenUploads=1"]);
    let e = start(ROOT_A).unwrap_err();
    assert_eq!(
        e,
        (
            400,
            "ConcurrentLimitExceededException".into(),
            String::new()
        )
    );
    assert_eq!(own_snapshots(&w, ROOT_A), 2);
    w.complete(ROOT_A, &second, 1).unwrap();
    start(ROOT_A).expect("the completed upload no longer counts");

    // Snapshots per region: A owns 3.
    set(&["SnapshotsPerRegion=3"]);
    let e = start(ROOT_A).unwrap_err();
    assert_eq!(
        e,
        (
            402,
            "ServiceQuotaExceededException".into(),
            "DEPENDENCY_SERVICE_QUOTA_EXCEEDED".into()
        )
    );
    assert_eq!(own_snapshots(&w, ROOT_A), 3);
    w.ec2(ROOT_A, "DeleteSnapshot", &[("SnapshotId", &first)])
        .unwrap();
    start(ROOT_A).expect("under the quota again");
}
