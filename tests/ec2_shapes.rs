//! Every EC2 action of `keyvol serve`, sent as signed Query requests,
//! against botocore's output shape of its operation: the XML text of each
//! response (volumes with tags, completed snapshots and their copies,
//! modifications, a snapshot shared with another account, the EBS default
//! key, regions and zones) is read element by element against the model,
//! and every error body against the shape EC2 sends.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::botocore::{
    botocore_parse_ec2, check_ec2_error_xml, json_leaves, xml_leaves, Model, Xml,
};
use common::serve::{cli, cli_raw, create_account, create_user, Ec2Query, Key, Served};

const A: &str = "444455556666";
const B: &str = "777788889999";

/// Sends requests, checks every answer, and keeps the problems and the
/// actions and error codes seen.
struct Checked<'m> {
    model: &'m Model,
    problems: Vec<String>,
    actions: BTreeSet<String>,
    errors: BTreeSet<String>,
    /// Every successful response with an output shape, for botocore.
    bodies: Vec<(String, String)>,
}

impl Checked<'_> {
    /// A call that must succeed; its parsed response.
    fn ok(&mut self, q: &Ec2Query, action: &str, params: &[(&str, &str)]) -> Xml {
        let (status, body) = q.call(action, params);
        assert_eq!(status, 200, "{action} {params:?} failed: {body}");
        self.problems.extend(
            self.model
                .check_ec2_xml(action, &body)
                .into_iter()
                .map(|p| format!("{p}\n    in {body}")),
        );
        self.actions.insert(action.to_string());
        if self.model.json["operations"][action]["output"].is_object() {
            self.bodies.push((action.to_string(), body.clone()));
        }
        Xml::parse(&body).unwrap()
    }

    /// A call that must fail with `code`; the error's message.
    fn err(&mut self, q: &Ec2Query, action: &str, params: &[(&str, &str)], code: &str) -> String {
        let (status, body) = q.call(action, params);
        self.error_body(status, &body, code)
    }

    fn error_body(&mut self, status: u16, body: &str, code: &str) -> String {
        assert_ne!(status, 200, "{body}");
        self.problems.extend(
            check_ec2_error_xml(body)
                .into_iter()
                .map(|p| format!("{p}\n    in {body}")),
        );
        let x = Xml::parse(body).unwrap();
        assert_eq!(
            x.text_at(&["Errors", "Error", "Code"]),
            Some(code),
            "{body}"
        );
        self.errors.insert(code.to_string());
        x.text_at(&["Errors", "Error", "Message"])
            .unwrap_or_default()
            .to_string()
    }
}

fn items<'x>(x: &'x Xml, list: &str) -> Vec<&'x Xml> {
    x.child(list)
        .map(|l| l.children.iter().collect())
        .unwrap_or_default()
}

fn text<'x>(x: &'x Xml, path: &[&str]) -> &'x str {
    x.text_at(path)
        .unwrap_or_else(|| panic!("no {path:?} in {x:?}"))
}

/// Polls DescribeSnapshots (each answer checked) until `id` is completed.
fn wait_completed(c: &mut Checked<'_>, q: &Ec2Query, id: &str) -> Xml {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = c.ok(q, "DescribeSnapshots", &[("SnapshotId.1", id)]);
        let s = items(&d, "snapshotSet")[0].clone();
        match text(&s, &["status"]) {
            "completed" => return s,
            "pending" => {}
            other => panic!("snapshot {id} is {other}: {d:?}"),
        }
        assert!(Instant::now() < deadline, "{id} still pending");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_ec2_response_matches_its_botocore_output_shape() {
    let model = Model::load("ec2");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let a = create_account(home, A, "a");
    let b = create_account(home, B, "b");
    let nobody = create_user(home, "a", "nobody");
    let key = cli(
        home,
        &[
            "--profile",
            "a",
            "kms",
            "create-key",
            "--description",
            "ebs",
        ],
    )["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let served = Served::start(home, &["serve"]);
    let q = Ec2Query::new(&served.endpoint(), &a);
    let qb = Ec2Query::new(&served.endpoint(), &b);
    let mut c = Checked {
        model: &model,
        problems: Vec::new(),
        actions: BTreeSet::new(),
        errors: BTreeSet::new(),
        bodies: Vec::new(),
    };

    // Regions and zones.
    let r = c.ok(&q, "DescribeRegions", &[]);
    assert!(
        items(&r, "regionInfo")
            .iter()
            .any(|i| text(i, &["regionName"]) == "us-east-1"
                && text(i, &["regionEndpoint"]) == "ec2.us-east-1.amazonaws.com"),
        "{r:?}"
    );
    c.ok(&q, "DescribeRegions", &[("RegionName.1", "eu-west-1")]);
    let z = c.ok(&q, "DescribeAvailabilityZones", &[]);
    let zones = items(&z, "availabilityZoneInfo");
    assert_eq!(zones.len(), 3);
    assert_eq!(text(zones[0], &["zoneName"]), "us-east-1a");
    assert_eq!(text(zones[0], &["zoneState"]), "available");

    // The account's EBS defaults, with a default key of its own.
    let e = c.ok(&q, "GetEbsEncryptionByDefault", &[]);
    assert_eq!(text(&e, &["ebsEncryptionByDefault"]), "false");
    let e = c.ok(&q, "EnableEbsEncryptionByDefault", &[]);
    assert_eq!(text(&e, &["ebsEncryptionByDefault"]), "true");
    c.ok(&q, "GetEbsEncryptionByDefault", &[]);
    let e = c.ok(&q, "DisableEbsEncryptionByDefault", &[]);
    assert_eq!(text(&e, &["ebsEncryptionByDefault"]), "false");
    let k = c.ok(&q, "ModifyEbsDefaultKmsKeyId", &[("KmsKeyId", &key)]);
    assert_eq!(text(&k, &["kmsKeyId"]), key);
    let k = c.ok(&q, "GetEbsDefaultKmsKeyId", &[]);
    assert_eq!(text(&k, &["kmsKeyId"]), key);

    // Volumes with tags and options.
    let v1 = c.ok(
        &q,
        "CreateVolume",
        &[
            ("Size", "2"),
            ("AvailabilityZone", "us-east-1a"),
            ("VolumeType", "gp3"),
            ("Encrypted", "true"),
            ("TagSpecification.1.ResourceType", "volume"),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", "shapes"),
            ("TagSpecification.1.Tag.2.Key", "empty"),
            ("TagSpecification.1.Tag.2.Value", ""),
        ],
    );
    assert_eq!(text(&v1, &["status"]), "available");
    assert_eq!(text(&v1, &["size"]), "2");
    assert_eq!(text(&v1, &["kmsKeyId"]), key, "the EBS default key");
    assert_eq!(items(&v1, "tagSet").len(), 2);
    let vol = text(&v1, &["volumeId"]).to_string();
    let v2 = c.ok(
        &q,
        "CreateVolume",
        &[
            ("Size", "1"),
            ("AvailabilityZoneId", "use1-az2"),
            ("VolumeType", "io2"),
            ("Iops", "1000"),
        ],
    );
    assert_eq!(text(&v2, &["iops"]), "1000");
    // The zone named at create is the volume's zone from then on.
    assert_eq!(text(&v2, &["availabilityZone"]), "us-east-1b");
    let vol2 = text(&v2, &["volumeId"]).to_string();
    let d = c.ok(&q, "DescribeVolumes", &[]);
    assert_eq!(items(&d, "volumeSet").len(), 2);
    let d = c.ok(
        &q,
        "DescribeVolumes",
        &[
            ("Filter.1.Name", "tag:Name"),
            ("Filter.1.Value.1", "shapes"),
        ],
    );
    let found = items(&d, "volumeSet");
    assert_eq!(found.len(), 1);
    assert_eq!(text(found[0], &["volumeId"]), vol);
    assert_eq!(text(found[0], &["tagSet", "item", "key"]), "Name");
    c.ok(&q, "DescribeVolumes", &[("VolumeId.1", &vol2)]);
    c.ok(&q, "DescribeVolumes", &[("MaxResults", "5")]);

    // A modification and the volumes' status.
    let m = c.ok(
        &q,
        "ModifyVolume",
        &[("VolumeId", &vol), ("Size", "3"), ("Iops", "4000")],
    );
    assert_eq!(
        text(&m, &["volumeModification", "modificationState"]),
        "completed"
    );
    assert_eq!(text(&m, &["volumeModification", "targetSize"]), "3");
    let m = c.ok(&q, "DescribeVolumesModifications", &[]);
    assert_eq!(items(&m, "volumeModificationSet").len(), 1);
    c.ok(&q, "DescribeVolumesModifications", &[("VolumeId.1", &vol)]);
    let s = c.ok(&q, "DescribeVolumeStatus", &[]);
    let statuses = items(&s, "volumeStatusSet");
    assert_eq!(statuses.len(), 2);
    assert_eq!(text(statuses[0], &["volumeStatus", "status"]), "ok");
    // An impaired volume, with its event, in the same shape: the volume's
    // key disabled.
    cli(
        home,
        &["--profile", "a", "kms", "disable-key", "--key-id", &key],
    );
    let s = c.ok(&q, "DescribeVolumeStatus", &[("VolumeId.1", &vol)]);
    let statuses = items(&s, "volumeStatusSet");
    assert_eq!(text(statuses[0], &["volumeStatus", "status"]), "impaired");
    let events = items(statuses[0], "eventsSet");
    assert_eq!(text(events[0], &["eventType"]), "kms-key-unusable");
    cli(
        home,
        &["--profile", "a", "kms", "enable-key", "--key-id", &key],
    );

    // Tags.
    c.ok(
        &q,
        "CreateTags",
        &[
            ("ResourceId.1", &vol),
            ("ResourceId.2", &vol2),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "db"),
        ],
    );
    let t = c.ok(
        &q,
        "DescribeTags",
        &[("Filter.1.Name", "key"), ("Filter.1.Value.1", "team")],
    );
    let tags = items(&t, "tagSet");
    assert_eq!(tags.len(), 2);
    assert_eq!(text(tags[0], &["resourceType"]), "volume");
    c.ok(
        &q,
        "DeleteTags",
        &[("ResourceId.1", &vol2), ("Tag.1.Key", "team")],
    );
    c.ok(&q, "DescribeTags", &[]);

    // A completed snapshot, shared with account B, and a copy.
    let sn = c.ok(
        &q,
        "CreateSnapshot",
        &[
            ("VolumeId", &vol),
            ("Description", "shapes <&> snapshot"),
            ("TagSpecification.1.ResourceType", "snapshot"),
            ("TagSpecification.1.Tag.1.Key", "kind"),
            ("TagSpecification.1.Tag.1.Value", "test"),
        ],
    );
    let snap = text(&sn, &["snapshotId"]).to_string();
    let done = wait_completed(&mut c, &q, &snap);
    assert_eq!(text(&done, &["volumeId"]), vol);
    assert_eq!(text(&done, &["ownerId"]), A);
    assert_eq!(text(&done, &["description"]), "shapes <&> snapshot");
    assert_eq!(text(&done, &["progress"]), "100%");
    assert_eq!(text(&done, &["tagSet", "item", "value"]), "test");
    c.ok(
        &q,
        "ModifySnapshotAttribute",
        &[
            ("SnapshotId", &snap),
            ("Attribute", "createVolumePermission"),
            ("CreateVolumePermission.Add.1.UserId", B),
        ],
    );
    let at = c.ok(
        &q,
        "DescribeSnapshotAttribute",
        &[
            ("SnapshotId", &snap),
            ("Attribute", "createVolumePermission"),
        ],
    );
    assert_eq!(text(&at, &["snapshotId"]), snap);
    assert_eq!(text(&at, &["createVolumePermission", "item", "userId"]), B);
    let shared = c.ok(&qb, "DescribeSnapshots", &[("Owner.1", A)]);
    let shared = items(&shared, "snapshotSet");
    assert_eq!(shared.len(), 1);
    assert_eq!(text(shared[0], &["snapshotId"]), snap);
    c.ok(&q, "DescribeSnapshots", &[("RestorableBy.1", B)]);
    c.ok(
        &q,
        "DescribeSnapshots",
        &[("Owner.1", "self"), ("MaxResults", "5")],
    );
    let cp = c.ok(
        &q,
        "CopySnapshot",
        &[
            ("SourceRegion", "us-east-1"),
            ("SourceSnapshotId", &snap),
            ("Description", "copy"),
            ("TagSpecification.1.ResourceType", "snapshot"),
            ("TagSpecification.1.Tag.1.Key", "copy"),
            ("TagSpecification.1.Tag.1.Value", "yes"),
        ],
    );
    let copy = text(&cp, &["snapshotId"]).to_string();
    assert_eq!(text(&cp, &["tagSet", "item", "key"]), "copy");
    let done = wait_completed(&mut c, &q, &copy);
    assert_eq!(text(&done, &["description"]), "copy");
    c.ok(&q, "DescribeSnapshots", &[]);
    c.ok(
        &q,
        "ResetSnapshotAttribute",
        &[
            ("SnapshotId", &snap),
            ("Attribute", "createVolumePermission"),
        ],
    );
    let at = c.ok(
        &q,
        "DescribeSnapshotAttribute",
        &[
            ("SnapshotId", &snap),
            ("Attribute", "createVolumePermission"),
        ],
    );
    assert!(items(&at, "createVolumePermission").is_empty(), "{at:?}");

    // A volume restored from the snapshot names it.
    let rv = c.ok(
        &q,
        "CreateVolume",
        &[
            ("SnapshotId", &snap),
            ("AvailabilityZone", "us-east-1c"),
            ("VolumeType", "standard"),
        ],
    );
    assert_eq!(text(&rv, &["snapshotId"]), snap);
    let restored = text(&rv, &["volumeId"]).to_string();
    c.ok(&q, "DescribeVolumes", &[("VolumeId.1", &restored)]);

    // An attached volume (a FUSE mount by the keyvol CLI), where mounts
    // can be made.
    let mut fuse = false;
    if let Some(_guard) = common::fuse_prerequisites() {
        fuse = true;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mnt_s = mnt.to_str().unwrap();
        cli(home, &["--profile", "a", "volume", "mount", &vol2, mnt_s]);
        let d = c.ok(&q, "DescribeVolumes", &[("VolumeId.1", &vol2)]);
        let v = items(&d, "volumeSet")[0].clone();
        let i = c.ok(&q, "DescribeInstances", &[]);
        let unmounted = cli_raw(home, &["--profile", "a", "volume", "unmount", mnt_s]);
        assert_eq!(text(&v, &["status"]), "in-use", "{v:?}");
        assert_eq!(text(&v, &["attachmentSet", "item", "status"]), "attached");
        assert_eq!(text(&v, &["attachmentSet", "item", "volumeId"]), vol2);
        let host = text(&v, &["attachmentSet", "item", "instanceId"]).to_string();
        assert_eq!(
            text(
                &i,
                &[
                    "reservationSet",
                    "item",
                    "instancesSet",
                    "item",
                    "instanceId"
                ]
            ),
            host
        );
        unmounted.unwrap();
        // AttachVolume and DetachVolume through the API.
        let att = [
            ("VolumeId", vol2.as_str()),
            ("InstanceId", host.as_str()),
            ("Device", "/dev/sdh"),
        ];
        let a = c.ok(&q, "AttachVolume", &att);
        assert_eq!(text(&a, &["status"]), "attaching");
        assert_eq!(text(&a, &["device"]), "/dev/sdh");
        c.err(&q, "AttachVolume", &att, "VolumeInUse");
        let d = c.ok(&q, "DetachVolume", &[("VolumeId", &vol2)]);
        assert_eq!(text(&d, &["status"]), "detaching");
        c.err(&q, "DetachVolume", &[("VolumeId", &vol2)], "IncorrectState");
    }
    c.err(
        &q,
        "DescribeInstances",
        &[("InstanceId.1", "i-0123456789abcdef0")],
        "InvalidInstanceID.NotFound",
    );
    c.ok(&q, "DescribeInstances", &[("MaxResults", "5")]);

    let k = c.ok(&q, "ResetEbsDefaultKmsKeyId", &[]);
    assert_eq!(
        text(&k, &["kmsKeyId"]),
        format!("arn:aws:kms:us-east-1:{A}:alias/aws/ebs")
    );

    // Errors, as EC2 sends them.
    c.err(
        &q,
        "DescribeVolumes",
        &[("VolumeId.1", "vol-0123456789abcdef0")],
        "InvalidVolume.NotFound",
    );
    c.err(
        &q,
        "CreateVolume",
        &[
            ("Size", "1"),
            ("AvailabilityZone", "us-east-1a"),
            ("DryRun", "true"),
        ],
        "DryRunOperation",
    );
    c.err(
        &q,
        "CreateVolume",
        &[("Size", "1"), ("AvailabilityZone", "eu-west-1a")],
        "InvalidParameterValue",
    );
    c.err(&q, "CreateSnapshot", &[], "MissingParameter");
    c.err(
        &q,
        "DeleteVolume",
        &[("VolumeId", "vol-zz")],
        "InvalidVolumeID.Malformed",
    );
    c.err(
        &q,
        "DeleteSnapshot",
        &[("SnapshotId", "snap-0123456789abcdef0")],
        "InvalidSnapshot.NotFound",
    );
    c.err(&q, "RunInstances", &[], "InvalidAction");
    let (status, body) = q.send(&[("Action", "DescribeVolumes"), ("Version", "2014-01-01")]);
    c.error_body(status, &body, "InvalidParameterValue");
    let denied = c.err(
        &Ec2Query::new(&served.endpoint(), &nobody),
        "DescribeVolumes",
        &[],
        "UnauthorizedOperation",
    );
    assert!(denied.contains("ec2:DescribeVolumes"), "{denied}");
    let forged = Key {
        secret: format!("{}x", a.secret),
        ..a.clone()
    };
    let (status, body) = Ec2Query::new(&served.endpoint(), &forged).call("DescribeVolumes", &[]);
    assert_eq!(status, 401, "{body}");
    c.error_body(status, &body, "SignatureDoesNotMatch");

    // Everything deleted through the API.
    for s in [&copy, &snap] {
        c.ok(&q, "DeleteSnapshot", &[("SnapshotId", s)]);
    }
    for v in [&vol, &vol2, &restored] {
        c.ok(&q, "DeleteVolume", &[("VolumeId", v)]);
    }
    let left = c.ok(&q, "DescribeVolumes", &[]);
    assert!(items(&left, "volumeSet").is_empty(), "{left:?}");

    assert!(
        c.problems.is_empty(),
        "{} problem(s) of responses against the botocore ec2 model:\n{}",
        c.problems.len(),
        c.problems.join("\n")
    );
    // botocore itself reads every element of every response: none is
    // dropped as unknown (its leaves are the XML's leaves).
    let parsed = botocore_parse_ec2(&c.bodies);
    assert_eq!(parsed.len(), c.bodies.len());
    for ((op, body), v) in c.bodies.iter().zip(&parsed) {
        let x = Xml::parse(body).unwrap();
        assert_eq!(
            json_leaves(v),
            xml_leaves(&x, &["requestId"]),
            "botocore read {op} as {v} from {body}"
        );
    }
    assert!(
        parsed[0]["Regions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["RegionName"] == "us-east-1"),
        "{}",
        parsed[0]
    );
    // Attaching needs FUSE (outside CI a machine without it skips that part).
    let unchecked: Vec<&str> = keyvol::ec2::action_names()
        .filter(|a| !c.actions.contains(*a))
        .filter(|a| fuse || !["AttachVolume", "DetachVolume"].contains(a))
        .collect();
    assert!(
        unchecked.is_empty(),
        "actions without a shape check: {unchecked:?}"
    );
    for a in &c.actions {
        assert!(
            model.json["operations"][a.as_str()].is_object(),
            "{a} is not an operation of the ec2 model"
        );
    }
    assert_eq!(c.errors.len(), if fuse { 12 } else { 10 }, "{:?}", c.errors);
}

/// The checker is not vacuous: a response keyvol's own XML writer makes
/// passes, and each corruption of it is reported.
#[test]
fn the_xml_check_finds_what_is_off() {
    use keyvol::ec2::xml;
    use serde_json::json;
    let model = Model::load("ec2");
    let volume = json!({
        "volumeId": "vol-0123456789abcdef0", "size": 8, "status": "available",
        "createTime": "2026-01-02T03:04:05Z", "encrypted": true, "volumeType": "gp3",
        "iops": 3000, "tagSet": [{"key": "a", "value": "b"}], "attachmentSet": [],
    });
    let good = xml::response("DescribeVolumes", &json!({"volumeSet": [volume]}), "rid");
    assert_eq!(
        model.check_ec2_xml("DescribeVolumes", &good),
        Vec::<String>::new()
    );
    let off = |from: &str, to: &str| {
        assert!(good.contains(from), "{from} not in {good}");
        model.check_ec2_xml("DescribeVolumes", &good.replacen(from, to, 1))
    };
    let one = |from: &str, to: &str, what: &str| {
        let p = off(from, to);
        assert!(p.len() == 1 && p[0].contains(what), "{from} -> {to}: {p:?}");
    };
    one(
        "<size>8</size>",
        "<size>8</size><sizeInGiB>8</sizeInGiB>",
        "sizeInGiB: not a member of Volume",
    );
    one(
        "<status>available</status>",
        "<status>ready</status>",
        "'ready' is not in enum VolumeState",
    );
    one("<size>8</size>", "<size>8.0</size>", "not a 32-bit integer");
    one(
        "<size>8</size>",
        "<size>4294967296</size>",
        "not a 32-bit integer",
    );
    one(
        "<encrypted>true</encrypted>",
        "<encrypted>True</encrypted>",
        "not a boolean",
    );
    one(
        "<createTime>2026-01-02T03:04:05Z</createTime>",
        "<createTime>1767323045</createTime>",
        "iso8601 timestamp",
    );
    one(
        "<item><key>a</key><value>b</value></item>",
        "<tag><key>a</key><value>b</value></tag>",
        "whose items are <item>",
    );
    one(
        "<tagSet><item><key>a</key><value>b</value></item></tagSet>",
        "<tagSet>a=b</tagSet>",
        "text \"a=b\"",
    );
    one(
        "<iops>3000</iops>",
        "<iops><item>3000</item></iops>",
        "holds elements",
    );
    one(
        "<size>8</size>",
        "<size>8</size><size>9</size>",
        "repeated in Volume",
    );
    one(
        "<requestId>rid</requestId>",
        "",
        "one non-empty <requestId>",
    );
    one("http://ec2.amazonaws.com/doc/2016-11-15/", "urn:x", "xmlns");
    let renamed = good.replace("volumeSet>", "volumes>");
    let p = model.check_ec2_xml("DescribeVolumes", &renamed);
    assert!(
        p.len() == 1 && p[0].contains("volumes: not a member"),
        "{p:?}"
    );
    assert!(model.check_ec2_xml("DescribeSnapshots", &good)[0]
        .contains("not <DescribeSnapshotsResponse>"));
    assert!(model.check_ec2_xml("DescribeVolumes", "<a><b></a>")[0].contains("not well-formed"));
    // An action without output: only <return>.
    let ret = xml::response("DeleteVolume", &json!({"return": true}), "r");
    assert!(model.check_ec2_xml("DeleteVolume", &ret).is_empty());
    let extra = xml::response(
        "DeleteVolume",
        &json!({"return": true, "volumeId": "v"}),
        "r",
    );
    assert_eq!(model.check_ec2_xml("DeleteVolume", &extra).len(), 1);

    let err = xml::error(
        &keyvol::api_error::ApiError::new("InvalidVolume.NotFound", "no <such> volume"),
        "rid",
    );
    assert!(check_ec2_error_xml(&err).is_empty(), "{err}");
    let x = Xml::parse(&err).unwrap();
    assert_eq!(
        x.text_at(&["Errors", "Error", "Message"]),
        Some("no <such> volume")
    );
    for (from, to) in [
        ("<RequestID>rid</RequestID>", ""),
        ("<Message>no &lt;such&gt; volume</Message>", ""),
        ("<Response>", "<ErrorResponse>"),
        ("<Code>InvalidVolume.NotFound</Code>", "<Code></Code>"),
        ("<Errors><Error>", "<Errors><Fault>"),
    ] {
        assert!(err.contains(from), "{from} not in {err}");
        let p = check_ec2_error_xml(&err.replacen(from, to, 1));
        assert!(!p.is_empty(), "{from} -> {to} passed");
    }
}
