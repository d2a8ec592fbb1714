//! The EC2 control plane's authorization, audit and sharing, in process
//! through `keyvol::ec2::call` (the code path `keyvol serve` runs for every
//! EC2 request): an authorization matrix of actions x principals x
//! conditions with no wrong allow, the audit events of EC2 calls and the
//! KMS calls made under them, bounded audit records of denied requests,
//! and snapshot visibility across accounts.

mod common;

use keyvol::ec2::{self, Params};
use keyvol::ids::{AccountId, Region};
use keyvol::kms::{Caller, RequestContext};
use keyvol::session::{Session, SessionOptions};
use serde_json::{json, Value};

const A: &str = "444455556666";
const B: &str = "777788889999";

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
            // alice: everything on volumes tagged team=db, creating only
            // with that tag, describing anything.
            (
                "alice",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":["ec2:Describe*"],"Resource":"*"},
                {"Effect":"Allow","Action":["ec2:CreateVolume","ec2:CreateTags"],"Resource":"arn:aws:ec2:*:*:volume/*",
                 "Condition":{"StringEquals":{"aws:RequestTag/team":"db"},"ForAllValues:StringEquals":{"aws:TagKeys":["team","name"]}}},
                {"Effect":"Allow","Action":["ec2:DeleteVolume","ec2:ModifyVolume","ec2:CreateSnapshot"],"Resource":"arn:aws:ec2:*:*:volume/*",
                 "Condition":{"StringEquals":{"ec2:ResourceTag/team":"db"}}},
                {"Effect":"Allow","Action":["ec2:CreateSnapshot"],"Resource":"arn:aws:ec2:*::snapshot/*"},
                {"Effect":"Allow","Action":["kms:GenerateDataKeyWithoutPlaintext","kms:DescribeKey","kms:Decrypt","kms:CreateGrant"],"Resource":"*"}]}"#,
            ),
            // dave: small volumes only (ec2:VolumeSize), no tags needed.
            (
                "dave",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"*","Condition":{"NumericLessThanEquals":{"ec2:VolumeSize":"2"}}},
                {"Effect":"Allow","Action":["kms:GenerateDataKeyWithoutPlaintext","kms:DescribeKey"],"Resource":"*"}]}"#,
            ),
            // carol: everything, but an explicit deny of deletes.
            (
                "carol",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":["ec2:*","kms:*"],"Resource":"*"},
                {"Effect":"Deny","Action":["ec2:DeleteVolume","ec2:DeleteSnapshot"],"Resource":"*"}]}"#,
            ),
            // frank: attach and detach volumes tagged team=db, on any
            // instance (both resources of the action are authorized).
            (
                "frank",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":["ec2:AttachVolume","ec2:DetachVolume"],"Resource":"arn:aws:ec2:*:*:volume/*",
                 "Condition":{"StringEquals":{"ec2:ResourceTag/team":"db"}}},
                {"Effect":"Allow","Action":["ec2:AttachVolume","ec2:DetachVolume"],"Resource":"arn:aws:ec2:*:*:instance/*"}]}"#,
            ),
            // gina: attach volumes, but no instance is allowed.
            (
                "gina",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ec2:AttachVolume","Resource":"arn:aws:ec2:*:*:volume/*"}]}"#,
            ),
            // erin: describe only, and only in us-west-2 (ec2:Region).
            (
                "erin",
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ec2:Describe*","Resource":"*","Condition":{"StringEquals":{"ec2:Region":"us-west-2"}}}]}"#,
            ),
        ];
        for (user, doc) in policies {
            base.iam.create_user(&a, user, None).unwrap();
            base.iam.put_user_policy(&a, user, "p", doc).unwrap();
        }
        base.iam.create_user(&a, "nobody", None).unwrap();
        World { _dir: dir, base }
    }

    fn session(&self, account: &str, user: Option<&str>, region: &str) -> Session {
        let mut ctx = RequestContext::new(caller(account, user), region.parse().unwrap());
        ctx.source_ip = Some("198.51.100.7".into());
        self.base.for_caller(ctx)
    }

    fn call(
        &self,
        who: (&str, Option<&str>),
        region: &str,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, String> {
        let s = self.session(who.0, who.1, region);
        let mut pairs = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".into(), "2016-11-15".into()),
        ];
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ec2::call(&s, &Params::new(pairs)).map_err(|e| e.code)
    }
}

const ROOT_A: (&str, Option<&str>) = (A, None);
const ROOT_B: (&str, Option<&str>) = (B, None);
const ALICE: (&str, Option<&str>) = (A, Some("alice"));
const DAVE: (&str, Option<&str>) = (A, Some("dave"));
const CAROL: (&str, Option<&str>) = (A, Some("carol"));
const ERIN: (&str, Option<&str>) = (A, Some("erin"));
const FRANK: (&str, Option<&str>) = (A, Some("frank"));
const GINA: (&str, Option<&str>) = (A, Some("gina"));
const NOBODY: (&str, Option<&str>) = (A, Some("nobody"));
const EAST: &str = "us-east-1";

fn vol_of(v: &Value) -> String {
    v["volumeId"].as_str().unwrap().to_string()
}

fn wait_completed(w: &World, who: (&str, Option<&str>), region: &str, snap: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let v = w
            .call(who, region, "DescribeSnapshots", &[("SnapshotId.1", snap)])
            .unwrap();
        let s = v["snapshotSet"][0].clone();
        match s["status"].as_str() {
            Some("completed") => return s,
            Some("error") => panic!("snapshot {snap} failed: {s}"),
            _ => assert!(
                std::time::Instant::now() < deadline,
                "snapshot {snap} still pending"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn authorization_matrix_has_no_wrong_allow() {
    let w = World::new();
    let create = [("Size", "1"), ("AvailabilityZone", "us-east-1a")];
    let tagged = [
        ("Size", "1"),
        ("AvailabilityZone", "us-east-1a"),
        ("TagSpecification.1.ResourceType", "volume"),
        ("TagSpecification.1.Tag.1.Key", "team"),
        ("TagSpecification.1.Tag.1.Value", "db"),
    ];
    let web = [
        ("Size", "1"),
        ("AvailabilityZone", "us-east-1a"),
        ("TagSpecification.1.ResourceType", "volume"),
        ("TagSpecification.1.Tag.1.Key", "team"),
        ("TagSpecification.1.Tag.1.Value", "web"),
    ];
    let extra_key = [
        ("Size", "1"),
        ("AvailabilityZone", "us-east-1a"),
        ("TagSpecification.1.ResourceType", "volume"),
        ("TagSpecification.1.Tag.1.Key", "team"),
        ("TagSpecification.1.Tag.1.Value", "db"),
        ("TagSpecification.1.Tag.2.Key", "cost"),
        ("TagSpecification.1.Tag.2.Value", "x"),
    ];
    // Volumes to act on: one tagged team=db, one team=web, made by the root.
    let db_vol = vol_of(&w.call(ROOT_A, EAST, "CreateVolume", &tagged).unwrap());
    let web_vol = vol_of(&w.call(ROOT_A, EAST, "CreateVolume", &web).unwrap());
    let b_vol = vol_of(&w.call(ROOT_B, EAST, "CreateVolume", &create).unwrap());

    let big = [("Size", "3"), ("AvailabilityZone", "us-east-1a")];
    let two = [("Size", "2"), ("AvailabilityZone", "us-east-1a")];
    let dry_tagged: Vec<(&str, &str)> =
        tagged.iter().copied().chain([("DryRun", "true")]).collect();
    let dry_plain: Vec<(&str, &str)> = create.iter().copied().chain([("DryRun", "true")]).collect();
    let grow = |v: &str| vec![("VolumeId", v.to_string()), ("Size", "2".to_string())];
    let _ = grow;

    type Case<'a> = (
        &'a str,
        (&'a str, Option<&'a str>),
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Result<(), &'a str>,
    );
    let host_a = keyvol::volume::service::host_instance_id(A, EAST);
    let attach = |v: &str, dry: bool| -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("VolumeId", v.to_string()),
            ("InstanceId", host_a.clone()),
            ("Device", "/dev/sdf".to_string()),
        ];
        if dry {
            p.push(("DryRun", "true".to_string()));
        }
        p
    };
    let owned = [
        attach(&db_vol, true),
        attach(&web_vol, true),
        attach(&b_vol, true),
        attach(&db_vol, false),
    ];
    let borrowed = |i: usize| -> Vec<(&str, &str)> {
        owned[i].iter().map(|(k, v)| (*k, v.as_str())).collect()
    };
    let cases: Vec<Case> = vec![
        // AttachVolume / DetachVolume: the volume and the instance.
        (
            "frank dry-run attach team=db",
            FRANK,
            EAST,
            "AttachVolume",
            borrowed(0),
            Err("DryRunOperation"),
        ),
        (
            "frank attach team=web",
            FRANK,
            EAST,
            "AttachVolume",
            borrowed(1),
            Err("UnauthorizedOperation"),
        ),
        (
            "gina attach without the instance",
            GINA,
            EAST,
            "AttachVolume",
            borrowed(0),
            Err("UnauthorizedOperation"),
        ),
        (
            "nobody dry-run attach",
            NOBODY,
            EAST,
            "AttachVolume",
            borrowed(0),
            Err("UnauthorizedOperation"),
        ),
        (
            "root of A attaches B's volume",
            ROOT_A,
            EAST,
            "AttachVolume",
            borrowed(2),
            Err("InvalidVolume.NotFound"),
        ),
        (
            "root of B on A's host",
            ROOT_B,
            EAST,
            "AttachVolume",
            vec![
                ("VolumeId", b_vol.as_str()),
                ("InstanceId", host_a.as_str()),
                ("Device", "/dev/sdf"),
            ],
            Err("InvalidInstanceID.NotFound"),
        ),
        (
            "carol detach of an available volume",
            CAROL,
            EAST,
            "DetachVolume",
            vec![("VolumeId", db_vol.as_str())],
            Err("IncorrectState"),
        ),
        (
            "frank detach team=web",
            FRANK,
            EAST,
            "DetachVolume",
            vec![("VolumeId", web_vol.as_str())],
            Err("UnauthorizedOperation"),
        ),
        (
            "frank dry-run detach team=db",
            FRANK,
            EAST,
            "DetachVolume",
            vec![("VolumeId", db_vol.as_str()), ("DryRun", "true")],
            Err("DryRunOperation"),
        ),
        (
            "erin attach (describe only)",
            ERIN,
            EAST,
            "AttachVolume",
            borrowed(3),
            Err("UnauthorizedOperation"),
        ),
        (
            "alice describes instances",
            ALICE,
            EAST,
            "DescribeInstances",
            vec![],
            Ok(()),
        ),
        (
            "nobody describes instances",
            NOBODY,
            EAST,
            "DescribeInstances",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        // CreateVolume: root, tags, sizes, dry runs.
        (
            "root creates",
            ROOT_A,
            EAST,
            "CreateVolume",
            create.to_vec(),
            Ok(()),
        ),
        (
            "nobody creates",
            NOBODY,
            EAST,
            "CreateVolume",
            create.to_vec(),
            Err("UnauthorizedOperation"),
        ),
        (
            "nobody dry-run create",
            NOBODY,
            EAST,
            "CreateVolume",
            dry_plain.clone(),
            Err("UnauthorizedOperation"),
        ),
        (
            "root dry-run create",
            ROOT_A,
            EAST,
            "CreateVolume",
            dry_plain.clone(),
            Err("DryRunOperation"),
        ),
        (
            "alice creates untagged",
            ALICE,
            EAST,
            "CreateVolume",
            create.to_vec(),
            Err("UnauthorizedOperation"),
        ),
        (
            "alice creates team=db",
            ALICE,
            EAST,
            "CreateVolume",
            tagged.to_vec(),
            Ok(()),
        ),
        (
            "alice dry-run team=db",
            ALICE,
            EAST,
            "CreateVolume",
            dry_tagged.clone(),
            Err("DryRunOperation"),
        ),
        (
            "alice creates team=web",
            ALICE,
            EAST,
            "CreateVolume",
            web.to_vec(),
            Err("UnauthorizedOperation"),
        ),
        (
            "alice creates with extra tag key",
            ALICE,
            EAST,
            "CreateVolume",
            extra_key.to_vec(),
            Err("UnauthorizedOperation"),
        ),
        (
            "dave creates 1 GiB",
            DAVE,
            EAST,
            "CreateVolume",
            create.to_vec(),
            Ok(()),
        ),
        (
            "dave creates 2 GiB",
            DAVE,
            EAST,
            "CreateVolume",
            two.to_vec(),
            Ok(()),
        ),
        (
            "dave creates 3 GiB",
            DAVE,
            EAST,
            "CreateVolume",
            big.to_vec(),
            Err("UnauthorizedOperation"),
        ),
        (
            "dave creates tagged (no CreateTags)",
            DAVE,
            EAST,
            "CreateVolume",
            tagged.to_vec(),
            Err("UnauthorizedOperation"),
        ),
        (
            "carol creates",
            CAROL,
            EAST,
            "CreateVolume",
            create.to_vec(),
            Ok(()),
        ),
        (
            "erin creates",
            ERIN,
            EAST,
            "CreateVolume",
            create.to_vec(),
            Err("UnauthorizedOperation"),
        ),
        // Describe: identity policies, regions.
        (
            "root describes",
            ROOT_A,
            EAST,
            "DescribeVolumes",
            vec![],
            Ok(()),
        ),
        (
            "nobody describes",
            NOBODY,
            EAST,
            "DescribeVolumes",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        (
            "alice describes",
            ALICE,
            EAST,
            "DescribeVolumes",
            vec![],
            Ok(()),
        ),
        (
            "dave describes",
            DAVE,
            EAST,
            "DescribeVolumes",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        (
            "erin describes in us-east-1",
            ERIN,
            EAST,
            "DescribeVolumes",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        (
            "erin describes in us-west-2",
            ERIN,
            "us-west-2",
            "DescribeVolumes",
            vec![],
            Ok(()),
        ),
        (
            "erin snapshots in us-west-2",
            ERIN,
            "us-west-2",
            "DescribeSnapshots",
            vec![],
            Ok(()),
        ),
        (
            "nobody describes snapshots",
            NOBODY,
            EAST,
            "DescribeSnapshots",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        (
            "nobody describes tags",
            NOBODY,
            EAST,
            "DescribeTags",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        (
            "nobody reads the EBS default key",
            NOBODY,
            EAST,
            "GetEbsDefaultKmsKeyId",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        (
            "nobody enables encryption by default",
            NOBODY,
            EAST,
            "EnableEbsEncryptionByDefault",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        (
            "carol enables encryption by default",
            CAROL,
            EAST,
            "EnableEbsEncryptionByDefault",
            vec![],
            Ok(()),
        ),
        (
            "nobody describes zones",
            NOBODY,
            EAST,
            "DescribeAvailabilityZones",
            vec![],
            Err("UnauthorizedOperation"),
        ),
        (
            "alice describes zones",
            ALICE,
            EAST,
            "DescribeAvailabilityZones",
            vec![],
            Ok(()),
        ),
        // Resource tags decide actions on existing volumes.
        (
            "alice modifies team=web",
            ALICE,
            EAST,
            "ModifyVolume",
            vec![("VolumeId", web_vol.as_str()), ("Size", "2")],
            Err("UnauthorizedOperation"),
        ),
        (
            "alice modifies team=db",
            ALICE,
            EAST,
            "ModifyVolume",
            vec![("VolumeId", db_vol.as_str()), ("Size", "2")],
            Ok(()),
        ),
        (
            "alice tags with team=ops",
            ALICE,
            EAST,
            "CreateTags",
            vec![
                ("ResourceId.1", web_vol.as_str()),
                ("Tag.1.Key", "team"),
                ("Tag.1.Value", "ops"),
            ],
            Err("UnauthorizedOperation"),
        ),
        (
            "nobody deletes team=web",
            NOBODY,
            EAST,
            "DeleteVolume",
            vec![("VolumeId", web_vol.as_str())],
            Err("UnauthorizedOperation"),
        ),
        (
            "carol deletes (explicit deny)",
            CAROL,
            EAST,
            "DeleteVolume",
            vec![("VolumeId", web_vol.as_str())],
            Err("UnauthorizedOperation"),
        ),
        (
            "alice deletes team=web",
            ALICE,
            EAST,
            "DeleteVolume",
            vec![("VolumeId", web_vol.as_str())],
            Err("UnauthorizedOperation"),
        ),
        (
            "alice dry-run delete team=db",
            ALICE,
            EAST,
            "DeleteVolume",
            vec![("VolumeId", db_vol.as_str()), ("DryRun", "true")],
            Err("DryRunOperation"),
        ),
        // Other accounts' volumes do not exist for the caller.
        (
            "B root describes A's volume",
            ROOT_B,
            EAST,
            "DescribeVolumes",
            vec![("VolumeId.1", db_vol.as_str())],
            Err("InvalidVolume.NotFound"),
        ),
        (
            "B root deletes A's volume",
            ROOT_B,
            EAST,
            "DeleteVolume",
            vec![("VolumeId", db_vol.as_str())],
            Err("InvalidVolume.NotFound"),
        ),
        (
            "B root modifies A's volume",
            ROOT_B,
            EAST,
            "ModifyVolume",
            vec![("VolumeId", db_vol.as_str()), ("Size", "5")],
            Err("InvalidVolume.NotFound"),
        ),
        (
            "B root tags A's volume",
            ROOT_B,
            EAST,
            "CreateTags",
            vec![
                ("ResourceId.1", db_vol.as_str()),
                ("Tag.1.Key", "x"),
                ("Tag.1.Value", "y"),
            ],
            Err("InvalidVolume.NotFound"),
        ),
        (
            "A root snapshots B's volume",
            ROOT_A,
            EAST,
            "CreateSnapshot",
            vec![("VolumeId", b_vol.as_str())],
            Err("InvalidVolume.NotFound"),
        ),
        (
            "carol deletes B's volume",
            CAROL,
            EAST,
            "DeleteVolume",
            vec![("VolumeId", b_vol.as_str())],
            Err("InvalidVolume.NotFound"),
        ),
        // Bad input: EC2's codes, nothing made.
        (
            "size 0",
            ROOT_A,
            EAST,
            "CreateVolume",
            vec![("Size", "0"), ("AvailabilityZone", "us-east-1a")],
            Err("InvalidParameterValue"),
        ),
        (
            "no zone",
            ROOT_A,
            EAST,
            "CreateVolume",
            vec![("Size", "1")],
            Err("MissingParameter"),
        ),
        (
            "zone of another region",
            ROOT_A,
            EAST,
            "CreateVolume",
            vec![("Size", "1"), ("AvailabilityZone", "us-west-2a")],
            Err("InvalidParameterValue"),
        ),
        (
            "unknown action",
            ROOT_A,
            EAST,
            "RunInstances",
            vec![],
            Err("InvalidAction"),
        ),
        (
            "malformed volume id",
            ROOT_A,
            EAST,
            "DeleteVolume",
            vec![("VolumeId", "vol-zz")],
            Err("InvalidVolumeID.Malformed"),
        ),
        (
            "unknown snapshot",
            ROOT_A,
            EAST,
            "DeleteSnapshot",
            vec![("SnapshotId", "snap-0123456789abcdef0")],
            Err("InvalidSnapshot.NotFound"),
        ),
        (
            "gp2 with iops",
            ROOT_A,
            EAST,
            "CreateVolume",
            vec![
                ("Size", "1"),
                ("AvailabilityZone", "us-east-1a"),
                ("VolumeType", "gp2"),
                ("Iops", "3000"),
            ],
            Err("InvalidParameterCombination"),
        ),
        (
            "io2 without iops",
            ROOT_A,
            EAST,
            "CreateVolume",
            vec![
                ("Size", "1"),
                ("AvailabilityZone", "us-east-1a"),
                ("VolumeType", "io2"),
            ],
            Err("MissingParameter"),
        ),
        (
            "shrink",
            ROOT_A,
            EAST,
            "ModifyVolume",
            vec![("VolumeId", db_vol.as_str()), ("Size", "1")],
            Err("InvalidParameterValue"),
        ),
        (
            "aws: tag key",
            ROOT_A,
            EAST,
            "CreateTags",
            vec![
                ("ResourceId.1", db_vol.as_str()),
                ("Tag.1.Key", "aws:x"),
                ("Tag.1.Value", "y"),
            ],
            Err("InvalidParameterValue"),
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for (name, who, region, action, params, want) in &cases {
        let before = w.call(ROOT_A, EAST, "DescribeVolumes", &[]).unwrap()["volumeSet"]
            .as_array()
            .unwrap()
            .len();
        let got = w.call(*who, region, action, params).map(|_| ());
        let after = w.call(ROOT_A, EAST, "DescribeVolumes", &[]).unwrap()["volumeSet"]
            .as_array()
            .unwrap()
            .len();
        let got_code = got.as_ref().map_err(|e| e.as_str()).map(|_| ());
        if got_code != *want {
            wrong.push(format!(
                "{name}: {action} as {who:?} gave {got:?}, expected {want:?}"
            ));
        }
        // A refused CreateVolume makes nothing.
        if *action == "CreateVolume" && got.is_err() && after != before {
            wrong.push(format!(
                "{name}: a refused CreateVolume left a volume behind"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The volume alice was refused to delete is still there, with its tag.
    let v = w
        .call(ROOT_A, EAST, "DescribeVolumes", &[("VolumeId.1", &web_vol)])
        .unwrap();
    assert_eq!(v["volumeSet"][0]["tagSet"][0]["value"], "web");
    // alice's grow of the team=db volume took effect.
    let v = w
        .call(ROOT_A, EAST, "DescribeVolumes", &[("VolumeId.1", &db_vol)])
        .unwrap();
    assert_eq!(v["volumeSet"][0]["size"], 2);
}

#[test]
fn every_ec2_call_is_audited_with_the_kms_calls_under_it() {
    let w = World::new();
    let before = w.base.kms.audit_list(&Default::default()).unwrap().len();
    let v = w
        .call(
            ROOT_A,
            EAST,
            "CreateVolume",
            &[("Size", "1"), ("AvailabilityZone", "us-east-1a")],
        )
        .unwrap();
    let vol = vol_of(&v);
    assert_eq!(
        w.call(NOBODY, EAST, "DeleteVolume", &[("VolumeId", &vol)])
            .unwrap_err(),
        "UnauthorizedOperation"
    );
    let events = w.base.kms.audit_list(&Default::default()).unwrap();
    let new: Vec<&Value> = events.iter().skip(before).collect();
    let ec2_events: Vec<&&Value> = new
        .iter()
        .filter(|e| e["eventSource"] == "ec2.amazonaws.com")
        .collect();
    assert_eq!(
        ec2_events.len(),
        2,
        "one event per EC2 call: {ec2_events:?}"
    );
    let created = ec2_events
        .iter()
        .find(|e| e["eventName"] == "CreateVolume")
        .unwrap();
    assert_eq!(
        created["userIdentity"]["arn"],
        format!("arn:aws:iam::{A}:root")
    );
    assert_eq!(created["sourceIPAddress"], "198.51.100.7");
    assert_eq!(created["responseElements"]["volumeId"], vol.as_str());
    assert_eq!(created["requestParameters"]["Size"], "1");
    let denied = ec2_events
        .iter()
        .find(|e| e["eventName"] == "DeleteVolume")
        .unwrap();
    assert_eq!(denied["errorCode"], "UnauthorizedOperation");
    assert_eq!(
        denied["userIdentity"]["arn"],
        format!("arn:aws:iam::{A}:user/nobody")
    );
    // The data key was made on the caller's behalf via EC2, and the KMS
    // event shows the caller's address, not "AWS Internal".
    let gdk = new
        .iter()
        .find(|e| e["eventName"] == "GenerateDataKeyWithoutPlaintext")
        .expect("the KMS event of the volume's data key");
    assert_eq!(gdk["invokedBy"], "ec2.amazonaws.com");
    assert_eq!(gdk["sourceIPAddress"], "198.51.100.7");
    assert!(events.len() > before);
    let report = w.base.kms.audit_verify().unwrap();
    assert!(report.valid, "{report:?}");
}

#[test]
fn denied_requests_cannot_grow_the_audit_log_without_bound() {
    let w = World::new();
    let huge = "x".repeat(200_000);
    let mut params: Vec<(String, String)> = (1..=900)
        .map(|i| (format!("Filter.{i}.Name"), huge[..200].to_string()))
        .collect();
    params.push(("Description".into(), huge.clone()));
    let p: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        w.call(NOBODY, EAST, "DescribeVolumes", &p).unwrap_err(),
        "UnauthorizedOperation"
    );
    assert!(w
        .call(NOBODY, EAST, &huge[..5000], &[("Description", &huge)])
        .is_err());
    let events = w.base.kms.audit_list(&Default::default()).unwrap();
    let last: Vec<String> = events
        .iter()
        .filter(|e| e["eventSource"] == "ec2.amazonaws.com")
        .map(|e| e.to_string())
        .collect();
    assert_eq!(last.len(), 2);
    for e in &last {
        assert!(e.len() < 32 * 1024, "an audit record of {} bytes", e.len());
        assert!(!e.contains(&huge[..1000]));
    }
}

#[test]
fn snapshots_are_visible_only_to_their_owner_and_the_accounts_they_are_shared_with() {
    let w = World::new();
    // A customer managed key A shares with B (aws/ebs snapshots cannot be shared).
    let a = w.session(A, None, EAST);
    let key = a
        .kms
        .call(&a.ctx, "CreateKey", json!({"Policy": json!({"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":{"AWS":format!("arn:aws:iam::{A}:root")},"Action":"kms:*","Resource":"*"},
            {"Effect":"Allow","Principal":{"AWS":format!("arn:aws:iam::{B}:root")},"Action":["kms:Decrypt","kms:DescribeKey","kms:CreateGrant","kms:ReEncrypt*","kms:GenerateDataKey*"],"Resource":"*"}]}).to_string()}))
        .unwrap()["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = vol_of(
        &w.call(
            ROOT_A,
            EAST,
            "CreateVolume",
            &[
                ("Size", "1"),
                ("AvailabilityZone", "us-east-1a"),
                ("Encrypted", "true"),
                ("KmsKeyId", &key),
            ],
        )
        .unwrap(),
    );
    let s1 = w
        .call(
            ROOT_A,
            EAST,
            "CreateSnapshot",
            &[("VolumeId", &vol), ("Description", "parent")],
        )
        .unwrap();
    let s1 = s1["snapshotId"].as_str().unwrap().to_string();
    wait_completed(&w, ROOT_A, EAST, &s1);
    let s2 = w
        .call(
            ROOT_A,
            EAST,
            "CreateSnapshot",
            &[("VolumeId", &vol), ("Description", "child")],
        )
        .unwrap();
    let s2 = s2["snapshotId"].as_str().unwrap().to_string();
    wait_completed(&w, ROOT_A, EAST, &s2);
    // Never shared: B sees nothing of it.
    let seen = w
        .call(
            ROOT_B,
            EAST,
            "DescribeSnapshots",
            &[("RestorableBy.1", "self")],
        )
        .unwrap();
    assert_eq!(seen["snapshotSet"], json!([]), "{seen}");
    assert_eq!(
        w.call(ROOT_B, EAST, "DescribeSnapshots", &[("SnapshotId.1", &s2)])
            .unwrap_err(),
        "InvalidSnapshot.NotFound"
    );
    assert_eq!(
        w.call(
            ROOT_B,
            EAST,
            "CreateVolume",
            &[("SnapshotId", &s2), ("AvailabilityZone", "us-east-1a")]
        )
        .unwrap_err(),
        "InvalidSnapshot.NotFound"
    );
    // Shared: B sees the child, and nothing names its (unshared) parent.
    w.call(
        ROOT_A,
        EAST,
        "ModifySnapshotAttribute",
        &[
            ("SnapshotId", &s2),
            ("Attribute", "createVolumePermission"),
            ("OperationType", "add"),
            ("UserId.1", B),
        ],
    )
    .unwrap();
    let seen = w
        .call(
            ROOT_B,
            EAST,
            "DescribeSnapshots",
            &[("RestorableBy.1", "self")],
        )
        .unwrap();
    let list = seen["snapshotSet"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{seen}");
    assert_eq!(list[0]["snapshotId"], s2.as_str());
    assert!(
        !seen.to_string().contains(&s1),
        "B learned the unshared parent id: {seen}"
    );
    assert_eq!(
        w.call(ROOT_B, EAST, "DescribeSnapshots", &[("SnapshotId.1", &s1)])
            .unwrap_err(),
        "InvalidSnapshot.NotFound"
    );
    // B may not change or read the sharing of A's snapshot.
    assert_eq!(
        w.call(
            ROOT_B,
            EAST,
            "ModifySnapshotAttribute",
            &[
                ("SnapshotId", &s2),
                ("OperationType", "add"),
                ("UserId.1", "111122223333")
            ]
        )
        .unwrap_err(),
        "UnauthorizedOperation"
    );
    assert_eq!(
        w.call(
            ROOT_B,
            EAST,
            "DescribeSnapshotAttribute",
            &[("SnapshotId", &s2), ("Attribute", "createVolumePermission")]
        )
        .unwrap_err(),
        "UnauthorizedOperation"
    );
    assert_eq!(
        w.call(ROOT_B, EAST, "DeleteSnapshot", &[("SnapshotId", &s2)])
            .unwrap_err(),
        "UnauthorizedOperation"
    );
    // The shared manifest as it is in the store, for the rollback below.
    let manifest = w
        ._dir
        .path()
        .join("snapshots")
        .join(EAST)
        .join("manifests")
        .join(format!("{s2}.json"));
    let shared_bytes = std::fs::read(&manifest).unwrap();
    // Unshared again (reset): gone for B.
    let attr = w
        .call(
            ROOT_A,
            EAST,
            "DescribeSnapshotAttribute",
            &[("SnapshotId", &s2), ("Attribute", "createVolumePermission")],
        )
        .unwrap();
    assert_eq!(attr["createVolumePermission"][0]["userId"], B);
    w.call(
        ROOT_A,
        EAST,
        "ResetSnapshotAttribute",
        &[("SnapshotId", &s2), ("Attribute", "createVolumePermission")],
    )
    .unwrap();
    let seen = w
        .call(
            ROOT_B,
            EAST,
            "DescribeSnapshots",
            &[("RestorableBy.1", "self")],
        )
        .unwrap();
    assert_eq!(seen["snapshotSet"], json!([]), "{seen}");
    // The attack: a store writer puts back the manifest from when B was
    // listed. Sharing is the control plane's record, so nothing changes.
    std::fs::write(&manifest, &shared_bytes).unwrap();
    let seen = w
        .call(
            ROOT_B,
            EAST,
            "DescribeSnapshots",
            &[("RestorableBy.1", "self")],
        )
        .unwrap();
    assert_eq!(
        seen["snapshotSet"],
        json!([]),
        "rolled-back manifest re-shared: {seen}"
    );
    assert_eq!(
        w.call(
            ROOT_B,
            EAST,
            "CreateVolume",
            &[("SnapshotId", &s2), ("AvailabilityZone", "us-east-1a")]
        )
        .unwrap_err(),
        "InvalidSnapshot.NotFound"
    );
    let attr = w
        .call(
            ROOT_A,
            EAST,
            "DescribeSnapshotAttribute",
            &[("SnapshotId", &s2), ("Attribute", "createVolumePermission")],
        )
        .unwrap();
    assert_eq!(attr["createVolumePermission"], json!([]), "{attr}");
    // A manifest edited to name B as its owner is seen by nobody.
    let forged = String::from_utf8(shared_bytes.clone())
        .unwrap()
        .replace(A, B);
    std::fs::write(&manifest, forged).unwrap();
    for who in [ROOT_A, ROOT_B] {
        let seen = w.call(who, EAST, "DescribeSnapshots", &[]).unwrap();
        assert!(
            !seen.to_string().contains(&s2),
            "a forged owner was believed: {seen}"
        );
    }
    std::fs::write(&manifest, &shared_bytes).unwrap();
    // Owner filters: A's own with Owner=self, tags visible to A only.
    w.call(
        ROOT_A,
        EAST,
        "CreateTags",
        &[
            ("ResourceId.1", &s2),
            ("Tag.1.Key", "stage"),
            ("Tag.1.Value", "child"),
        ],
    )
    .unwrap();
    let own = w.call(
        ROOT_A,
        EAST,
        "DescribeSnapshots",
        &[
            ("Owner.1", "self"),
            ("Filter.1.Name", "tag:stage"),
            ("Filter.1.Values.1", "x"),
        ],
    );
    assert!(own.is_ok());
    let own = w
        .call(
            ROOT_A,
            EAST,
            "DescribeSnapshots",
            &[
                ("Owner.1", "self"),
                ("Filter.1.Name", "tag:stage"),
                ("Filter.1.Value.1", "child"),
            ],
        )
        .unwrap();
    assert_eq!(own["snapshotSet"].as_array().unwrap().len(), 1, "{own}");
}

/// The keyvol CLIs are clients of the same control plane: a user without
/// an ec2 policy can neither list, delete nor snapshot the account's
/// volumes through `keyvol volume` / `keyvol-snap`, each refusal is an
/// audit event, and a policy that allows the action lets it through.
#[test]
fn the_cli_commands_are_authorized_and_audited_by_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path();
    let vol = common::keyvol_json(h, &["volume", "create", "--size", "16MiB"])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    common::keyvol_json(
        h,
        &[
            "iam",
            "create-user",
            "--user-name",
            "u",
            "--profile-name",
            "u",
        ],
    );
    let refused = |args: &[&str], snap: bool| {
        let out = if snap {
            std::process::Command::new(common::snap_bin())
                .args(args)
                .env("KEYVOL_HOME", h)
                .env_remove("KEYVOL_PROFILE")
                .output()
                .unwrap()
        } else {
            common::keyvol(h, args)
        };
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(254), "{args:?}: {err}");
        assert!(err.contains("(UnauthorizedOperation)"), "{args:?}: {err}");
    };
    refused(&["--profile", "u", "volume", "list"], false);
    refused(&["--profile", "u", "volume", "describe", &vol], false);
    refused(&["--profile", "u", "volume", "delete", &vol], false);
    refused(
        &[
            "--profile",
            "u",
            "volume",
            "modify",
            &vol,
            "--size",
            "32MiB",
        ],
        false,
    );
    refused(&["--profile", "u", "volume", "attach", &vol], false);
    refused(&["--profile", "u", "describe-snapshots"], true);
    refused(&["--profile", "u", "create", &vol, "--wait"], true);
    // Nothing changed: the volume is there, unattached, 16 MiB.
    let d = common::keyvol_json(h, &["volume", "describe", &vol]);
    assert_eq!(d["SizeInBytes"], 16 << 20, "{d}");
    assert_eq!(d["State"], "available", "{d}");
    // Each refusal is one EC2 event of user u, and the chain verifies.
    let events = common::keyvol_json(h, &["kms", "audit", "list", "--errors-only"]);
    let denied: Vec<&Value> = events["Events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["errorCode"] == "UnauthorizedOperation"
                && e["userIdentity"]["arn"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(":user/u")
        })
        .collect();
    assert_eq!(denied.len(), 7, "{events}");
    assert!(denied
        .iter()
        .all(|e| e["eventSource"] == "ec2.amazonaws.com"));
    assert_eq!(
        common::keyvol_json(h, &["kms", "audit", "verify"])["Valid"],
        true
    );
    // A policy for describe lets u list, and only list.
    let policy = dir.path().join("p.json");
    std::fs::write(&policy, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeVolumes","Resource":"*"}]}"#).unwrap();
    common::keyvol_json(
        h,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "u",
            "--policy-name",
            "d",
            "--policy-document",
            &format!("file://{}", policy.display()),
        ],
    );
    let listed = common::keyvol_json(h, &["--profile", "u", "volume", "list"]);
    assert_eq!(listed["Volumes"][0]["VolumeId"], vol.as_str(), "{listed}");
    refused(&["--profile", "u", "volume", "delete", &vol], false);
}

/// As EBS: a volume B restored from A's shared snapshot stays readable
/// until it is hydrated even when A narrows its key policy, through a grant
/// made at restore time and retired once nothing is left to fetch.
#[test]
fn a_restore_from_a_shared_snapshot_outlives_a_narrowed_key_policy() {
    use keyvol::volume::service::Volumes;
    let w = World::new();
    let a = w.session(A, None, EAST);
    let owner_only = json!({"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Principal":{"AWS":format!("arn:aws:iam::{A}:root")},"Action":"kms:*","Resource":"*"}]});
    let mut shared = owner_only.clone();
    shared["Statement"].as_array_mut().unwrap().push(json!(
        {"Effect":"Allow","Principal":{"AWS":format!("arn:aws:iam::{B}:root")},"Action":["kms:Decrypt","kms:DescribeKey","kms:CreateGrant"],"Resource":"*"}));
    let key = a
        .kms
        .call(&a.ctx, "CreateKey", json!({"Policy": shared.to_string()}))
        .unwrap()["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = vol_of(
        &w.call(
            ROOT_A,
            EAST,
            "CreateVolume",
            &[
                ("Size", "1"),
                ("AvailabilityZone", "us-east-1a"),
                ("Encrypted", "true"),
                ("KmsKeyId", &key),
            ],
        )
        .unwrap(),
    );
    // Some data in the volume, so the restore has chunks to fetch.
    {
        let vols = Volumes::open(&a).unwrap();
        let r = vols.get(&vol).unwrap();
        let dev = vols.open_device(&r).unwrap();
        dev.write_at(&vec![0x5a; 4 << 20], 0).unwrap();
        dev.close().unwrap();
    }
    let snap = w
        .call(ROOT_A, EAST, "CreateSnapshot", &[("VolumeId", &vol)])
        .unwrap();
    let snap = snap["snapshotId"].as_str().unwrap().to_string();
    wait_completed(&w, ROOT_A, EAST, &snap);
    w.call(
        ROOT_A,
        EAST,
        "ModifySnapshotAttribute",
        &[
            ("SnapshotId", &snap),
            ("OperationType", "add"),
            ("UserId.1", B),
        ],
    )
    .unwrap();
    let restored = vol_of(
        &w.call(
            ROOT_B,
            EAST,
            "CreateVolume",
            &[("SnapshotId", &snap), ("AvailabilityZone", "us-east-1a")],
        )
        .unwrap(),
    );
    let grants = |who: &Session| {
        who.kms
            .call(&who.ctx, "ListGrants", json!({"KeyId": key}))
            .unwrap()["Grants"]
            .as_array()
            .unwrap()
            .clone()
    };
    let g = grants(&a);
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["GranteePrincipal"], format!("arn:aws:iam::{B}:root"));
    assert_eq!(g[0]["Operations"], json!(["Decrypt"]));
    // A restore by one principal of B deleted by another, who is not the
    // grant's retiring principal: the control plane still retires its
    // grant, as the principal who restored.
    let b_acct: keyvol::ids::AccountId = B.parse().unwrap();
    for (user, doc) in [
        (
            "bob",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","kms:*"],"Resource":"*"}]}"#,
        ),
        (
            "cleo",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:DeleteVolume","ec2:Describe*"],"Resource":"*"}]}"#,
        ),
    ] {
        w.base.iam.create_user(&b_acct, user, None).unwrap();
        w.base.iam.put_user_policy(&b_acct, user, "p", doc).unwrap();
    }
    let by_bob = vol_of(
        &w.call(
            (B, Some("bob")),
            EAST,
            "CreateVolume",
            &[("SnapshotId", &snap), ("AvailabilityZone", "us-east-1a")],
        )
        .unwrap(),
    );
    let g = grants(&a);
    assert_eq!(g.len(), 2, "{g:?}");
    assert!(
        g.iter()
            .any(|g| g["RetiringPrincipal"] == format!("arn:aws:iam::{B}:user/bob")),
        "{g:?}"
    );
    w.call(
        (B, Some("cleo")),
        EAST,
        "DeleteVolume",
        &[("VolumeId", &by_bob)],
    )
    .unwrap();
    let g = grants(&a);
    assert_eq!(g.len(), 1, "bob's restore grant was not retired: {g:?}");
    assert_eq!(g[0]["GranteePrincipal"], format!("arn:aws:iam::{B}:root"));
    // A narrows its key policy: B is no longer in it.
    a.kms
        .call(
            &a.ctx,
            "PutKeyPolicy",
            json!({"KeyId": key, "PolicyName": "default", "Policy": owner_only.to_string()}),
        )
        .unwrap();
    // The narrowing holds: B cannot restore the snapshot again.
    let again = w.call(
        ROOT_B,
        EAST,
        "CreateVolume",
        &[("SnapshotId", &snap), ("AvailabilityZone", "us-east-1a")],
    );
    assert_eq!(again.unwrap_err(), "AccessDeniedException");
    // B's restored volume still hydrates and reads A's data.
    let b = w.session(B, None, EAST);
    let vols = Volumes::open(&b)
        .unwrap()
        .with_snapshot_source(keyvol::snapshot::ops::SNAPSHOT_SOURCE);
    let r = vols.get(&restored).unwrap();
    let dev = vols.open_device(&r).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    dev.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|b| *b == 0x5a), "restored data differs");
    dev.hydrate_all(&mut |_, _| {}).unwrap();
    dev.close().unwrap();
    // Hydrated: the next attach retires the grant.
    vols.open_device(&r).unwrap().close().unwrap();
    assert_eq!(
        grants(&a),
        Vec::<Value>::new(),
        "the restore grant was not retired"
    );
}

/// The keyvol CLIs take the aws CLI's spellings too: `--volume-id`,
/// `--snapshot-id`, `--source-snapshot-id`, `--encrypted`,
/// `--availability-zone`, `--tag-specifications` and `--filters`, and the
/// tags go through the control plane (visible to its filters).
#[test]
fn the_cli_takes_the_aws_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path();
    let snap = |args: &[&str]| -> Value { common::snap_cli(h, args) };
    let tagged = common::keyvol_json(
        h,
        &[
            "volume",
            "create",
            "--size",
            "16MiB",
            "--encrypted",
            "--availability-zone",
            "us-east-1b",
            "--tag-specifications",
            "ResourceType=volume,Tags=[{Key=team,Value=db},{Key=env,Value=prod}]",
        ],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let plain = common::keyvol_json(h, &["volume", "create", "--size", "16MiB"])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let found = common::keyvol_json(
        h,
        &[
            "volume",
            "describe-volumes",
            "--filters",
            "Name=tag:env,Values=prod",
        ],
    );
    let ids: Vec<&str> = found["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["VolumeId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [tagged.as_str()], "{found}");
    let json_filter = common::keyvol_json(
        h,
        &[
            "volume",
            "describe-volumes",
            "--filters",
            r#"[{"Name":"tag-key","Values":["team"]}]"#,
        ],
    );
    assert_eq!(json_filter["Volumes"].as_array().unwrap().len(), 1);
    let all = common::keyvol_json(h, &["volume", "describe-volumes"]);
    assert_eq!(all["Volumes"].as_array().unwrap().len(), 2);
    assert_eq!(
        common::keyvol_json(h, &["volume", "describe", "--volume-id", &plain])["VolumeId"],
        plain.as_str()
    );
    let s = snap(&["create", "--volume-id", &tagged, "--wait"]);
    let sid = s["SnapshotId"].as_str().unwrap().to_string();
    assert_eq!(
        snap(&["describe", "--snapshot-id", &sid])["State"],
        "completed"
    );
    let c = snap(&[
        "--region",
        "us-west-2",
        "copy",
        "--source-snapshot-id",
        &sid,
        "--source-region",
        "us-east-1",
        "--wait",
    ]);
    assert_eq!(c["State"], "completed", "{c}");
    // Bad spellings name what to fix and make nothing.
    let out = common::keyvol(
        h,
        &[
            "volume",
            "create",
            "--size",
            "16MiB",
            "--availability-zone",
            "eu-west-1a",
        ],
    );
    assert_eq!(out.status.code(), Some(254));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid availability zone"));
    let out = common::keyvol(
        h,
        &[
            "volume",
            "describe-volumes",
            "--filters",
            "status=available",
        ],
    );
    assert_eq!(out.status.code(), Some(252));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Name=NAME,Values="));
    assert_eq!(
        common::keyvol_json(h, &["volume", "describe-volumes"])["Volumes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// A session policy bounds the EC2 actions of its session as it bounds
/// the KMS's: carol may do everything, her session only what its policy
/// also allows, and nothing it denies.
#[test]
fn a_session_policy_bounds_ec2_actions() {
    let w = World::new();
    let call = |policy: &str, action: &str, params: &[(&str, &str)]| {
        let mut c = caller(A, Some("carol"));
        c.session_policy = Some(policy.to_string());
        let s = w
            .base
            .for_caller(RequestContext::new(c, EAST.parse().unwrap()));
        let mut pairs = vec![("Action".to_string(), action.to_string())];
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ec2::call(&s, &Params::new(pairs))
    };
    let describe_only = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}"#;
    call(describe_only, "DescribeVolumes", &[]).unwrap();
    let create = [("Size", "1"), ("AvailabilityZone", "us-east-1a")];
    let e = call(describe_only, "CreateVolume", &create).unwrap_err();
    assert_eq!(e.code, "UnauthorizedOperation");
    assert!(
        e.message.contains("no session policy allows"),
        "{}",
        e.message
    );
    let deny_create = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"ec2:CreateVolume","Resource":"*"}]}"#;
    let e = call(deny_create, "CreateVolume", &create).unwrap_err();
    assert!(
        e.message.contains("explicit deny in a session policy"),
        "{}",
        e.message
    );
    let volumes = w.call(ROOT_A, EAST, "DescribeVolumes", &[]).unwrap();
    assert!(
        volumes["volumeSet"].as_array().unwrap().is_empty(),
        "{volumes}"
    );
    // Without the session policy carol creates the volume.
    let everything =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    call(everything, "CreateVolume", &create).unwrap();
}
