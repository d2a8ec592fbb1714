//! The `aws-sdk-ec2` crate against `keyvol serve`: volumes, tags, filters,
//! pagination, snapshots, the EBS defaults, attachments to the volume host
//! and EC2's error codes, parsed by
//! the SDK's own deserializers (an XML shape the SDK does not expect fails
//! the call).

mod common;

use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::operation::RequestId;
use aws_sdk_ec2::types::{
    Filter, ResourceType, SnapshotState, Tag, TagSpecification, VolumeState, VolumeType,
};
use common::serve::{create_account, create_user, Key, Served};

const A: &str = "444455556666";

fn client(endpoint: &str, key: &Key) -> aws_sdk_ec2::Client {
    let (id, secret) = (key.id.as_str(), key.secret.as_str());
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(id, secret, None, None, "test"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

fn code<T, E: ProvideErrorMetadata + std::fmt::Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => panic!("the call succeeded; an error was expected"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("no AWS error code in {e:?}"))
            .to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sdk_ec2_crate_against_keyvol_serve() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let root = create_account(home, A, "a");
    let nobody = create_user(home, "a", "nobody");
    let served = Served::start(home, &["serve"]);
    let endpoint = served.endpoint();
    let ec2 = client(&endpoint, &root);

    // Volumes with tags and options, described back through filters.
    let spec = |i: usize| {
        TagSpecification::builder()
            .resource_type(ResourceType::Volume)
            .tags(Tag::builder().key("suite").value("sdk").build())
            .tags(Tag::builder().key("n").value(i.to_string()).build())
            .build()
    };
    let (mut made, mut request_ids) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let v = ec2
            .create_volume()
            .size(1)
            .availability_zone("us-east-1b")
            .volume_type(VolumeType::Io2)
            .iops(1000)
            .encrypted(true)
            .tag_specifications(spec(i))
            .send()
            .await
            .unwrap();
        assert_eq!(v.state(), Some(&VolumeState::Available));
        assert_eq!(v.volume_type(), Some(&VolumeType::Io2));
        assert_eq!(v.iops(), Some(1000));
        assert_eq!(v.availability_zone(), Some("us-east-1b"));
        assert_eq!(v.encrypted(), Some(true));
        assert!(v
            .kms_key_id()
            .unwrap()
            .starts_with(&format!("arn:aws:kms:us-east-1:{A}:key/")));
        made.push(v.volume_id().unwrap().to_string());
        request_ids.push(v.request_id().expect("a request id").to_string());
    }
    // Each CreateVolume's audit event carries the request id its answer
    // named, as CloudTrail's do.
    let events = common::serve::audit_list(home, "a", "CreateVolume");
    let logged: Vec<&str> = events["Events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["requestID"].as_str())
        .collect();
    for id in &request_ids {
        assert_eq!(
            logged.iter().filter(|l| *l == id).count(),
            1,
            "{id}: {events}"
        );
    }
    let by_tag = Filter::builder().name("tag:suite").values("sdk").build();
    let mut pages = ec2
        .describe_volumes()
        .filters(by_tag.clone())
        .max_results(5)
        .into_paginator()
        .send();
    let (mut seen, mut n_pages) = (Vec::new(), 0);
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        n_pages += 1;
        seen.extend(
            page.volumes()
                .iter()
                .map(|v| v.volume_id().unwrap().to_string()),
        );
    }
    seen.sort();
    let mut want = made.clone();
    want.sort();
    assert_eq!((n_pages, seen), (2, want));
    let one = ec2
        .describe_volumes()
        .filters(Filter::builder().name("tag:n").values("4").build())
        .filters(Filter::builder().name("volume-type").values("io*").build())
        .send()
        .await
        .unwrap();
    assert_eq!(one.volumes().len(), 1);
    assert_eq!(one.volumes()[0].volume_id(), Some(made[4].as_str()));
    let tags = one.volumes()[0].tags();
    assert!(
        tags.iter()
            .any(|t| t.key() == Some("n") && t.value() == Some("4")),
        "{tags:?}"
    );

    // A snapshot, waited for by polling as the SDK waiters do.
    let snap = ec2
        .create_snapshot()
        .volume_id(&made[0])
        .description("from the sdk")
        .send()
        .await
        .unwrap();
    let sid = snap.snapshot_id().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = ec2
            .describe_snapshots()
            .snapshot_ids(&sid)
            .send()
            .await
            .unwrap();
        let s = &d.snapshots()[0];
        if s.state() == Some(&SnapshotState::Completed) {
            assert_eq!(s.volume_id(), Some(made[0].as_str()));
            assert_eq!(s.description(), Some("from the sdk"));
            assert_eq!(s.owner_id(), Some(A));
            assert_eq!(s.encrypted(), Some(true));
            break;
        }
        assert!(Instant::now() < deadline, "snapshot still {:?}", s.state());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let own = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert_eq!(own.snapshots().len(), 1);
    let attr = ec2
        .describe_snapshot_attribute()
        .snapshot_id(&sid)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .unwrap();
    assert_eq!(attr.create_volume_permissions().len(), 0);

    // Account defaults and zones.
    let k = ec2.get_ebs_default_kms_key_id().send().await.unwrap();
    assert_eq!(
        k.kms_key_id(),
        Some(format!("arn:aws:kms:us-east-1:{A}:alias/aws/ebs").as_str())
    );
    let zones = ec2.describe_availability_zones().send().await.unwrap();
    assert_eq!(zones.availability_zones().len(), 3);

    // EC2's error codes.
    assert_eq!(
        code(
            ec2.describe_volumes()
                .volume_ids("vol-0123456789abcdef0")
                .send()
                .await
        ),
        "InvalidVolume.NotFound"
    );
    assert_eq!(
        code(
            ec2.create_volume()
                .size(1)
                .availability_zone("us-east-1a")
                .dry_run(true)
                .send()
                .await
        ),
        "DryRunOperation"
    );
    assert_eq!(
        code(
            ec2.create_volume()
                .size(1)
                .availability_zone("eu-west-1a")
                .send()
                .await
        ),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(ec2.delete_volume().volume_id("vol-zz").send().await),
        "InvalidVolumeID.Malformed"
    );
    assert_eq!(
        code(
            ec2.delete_snapshot()
                .snapshot_id("snap-0123456789abcdef0")
                .send()
                .await
        ),
        "InvalidSnapshot.NotFound"
    );
    let denied = client(&endpoint, &nobody);
    assert_eq!(
        code(denied.describe_volumes().send().await),
        "UnauthorizedOperation"
    );
    assert_eq!(
        code(denied.delete_volume().volume_id(&made[1]).send().await),
        "UnauthorizedOperation"
    );

    // AttachVolume and DetachVolume on the control plane's volume host,
    // found by DescribeInstances (needs FUSE: the daemon serves the device;
    // this binary's only test, so its guard need not be held).
    if common::fuse_prerequisites().is_some() {
        let r = ec2.describe_instances().send().await.unwrap();
        let host = &r.reservations()[0].instances()[0];
        let iid = host.instance_id().unwrap().to_string();
        assert_eq!(
            host.state().and_then(|s| s.name()),
            Some(&aws_sdk_ec2::types::InstanceStateName::Running)
        );
        let a = ec2
            .attach_volume()
            .volume_id(&made[0])
            .instance_id(&iid)
            .device("/dev/sdg")
            .send()
            .await
            .unwrap();
        assert_eq!(
            a.state(),
            Some(&aws_sdk_ec2::types::VolumeAttachmentState::Attaching)
        );
        assert!(a.attach_time().is_some());
        let v = ec2
            .describe_volumes()
            .volume_ids(&made[0])
            .send()
            .await
            .unwrap();
        let att = &v.volumes()[0].attachments()[0];
        assert_eq!(att.device(), Some("/dev/sdg"));
        assert_eq!(att.instance_id(), Some(iid.as_str()));
        assert_eq!(v.volumes()[0].state(), Some(&VolumeState::InUse));
        let r = ec2
            .describe_instances()
            .instance_ids(&iid)
            .send()
            .await
            .unwrap();
        let maps = r.reservations()[0].instances()[0].block_device_mappings();
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].device_name(), Some("/dev/sdg"));
        assert_eq!(
            maps[0].ebs().and_then(|e| e.volume_id()),
            Some(made[0].as_str())
        );
        assert_eq!(
            code(
                ec2.attach_volume()
                    .volume_id(&made[0])
                    .instance_id(&iid)
                    .device("/dev/sdh")
                    .send()
                    .await
            ),
            "VolumeInUse"
        );
        let d = ec2
            .detach_volume()
            .volume_id(&made[0])
            .send()
            .await
            .unwrap();
        assert_eq!(
            d.state(),
            Some(&aws_sdk_ec2::types::VolumeAttachmentState::Detaching)
        );
        let v = ec2
            .describe_volumes()
            .volume_ids(&made[0])
            .send()
            .await
            .unwrap();
        assert_eq!(v.volumes()[0].state(), Some(&VolumeState::Available));
    }
    assert_eq!(
        code(
            ec2.describe_instances()
                .instance_ids("i-0123456789abcdef0")
                .send()
                .await
        ),
        "InvalidInstanceID.NotFound"
    );

    // Clean up through the API, and nothing is left.
    ec2.delete_snapshot()
        .snapshot_id(&sid)
        .send()
        .await
        .unwrap();
    for v in &made {
        ec2.delete_volume().volume_id(v).send().await.unwrap();
    }
    let left = ec2.describe_volumes().send().await.unwrap();
    assert!(left.volumes().is_empty(), "{:?}", left.volumes());
}
