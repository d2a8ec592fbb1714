//! Snapshots of volumes whose data is on a volume host on another machine:
//! CreateSnapshot at the control plane waits for the host's cut
//! (`KeyvolDescribeHostRequests`, `KeyvolReportHostSnapshot`), and the
//! host writes the blocks with PutSnapshotBlock and CompleteSnapshot.
//!
//! The first test drives the protocol itself against a real `keyvol
//! serve`, the test standing in for the host, from the attacker's side
//! too: only the registered host of the volume's instance sees the
//! requests, reports cuts and writes blocks. The second runs it end to end
//! with a real attach daemon on a host home, through a real FUSE device
//! (fails under CI=true without FUSE).

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use base64::Engine;
use common::serve::*;
use keyvol::api_error::ApiError;
use keyvol::ids::Region;
use keyvol::secret::SecretBytes;
use keyvol::server::control_plane::XmlReply;
use keyvol::server::ControlPlaneClient;
use serde_json::Value;
use sha2::{Digest, Sha256};

const A: &str = "444455556666";
const BLOCK: usize = 512 * 1024;

fn client(endpoint: &str, key: &Key) -> ControlPlaneClient {
    ControlPlaneClient::new(
        endpoint,
        Region::default_region(),
        &key.id,
        SecretBytes::from_slice(key.secret.as_bytes()),
        None,
    )
    .unwrap()
}

#[track_caller]
fn refused(r: Result<impl std::fmt::Debug, ApiError>) -> ApiError {
    match r {
        Ok(v) => panic!("the call should have been refused: {v:?}"),
        Err(e) => e,
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// PutSnapshotBlock of `data` (one whole block) at `index`.
fn put_block(
    cp: &ControlPlaneClient,
    snap: &str,
    index: u64,
    data: &[u8],
) -> Result<[u8; 32], ApiError> {
    let digest: [u8; 32] = Sha256::digest(data).into();
    let headers = [
        (
            "content-type".to_string(),
            "application/octet-stream".to_string(),
        ),
        ("x-amz-data-length".to_string(), data.len().to_string()),
        ("x-amz-checksum".to_string(), b64(&digest)),
        ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
    ];
    cp.ebs(
        "PUT",
        &format!("/snapshots/{snap}/blocks/{index}"),
        "",
        &headers,
        data,
    )
    .map(|_| digest)
}

fn complete(cp: &ControlPlaneClient, snap: &str, digests: &[[u8; 32]]) -> Result<Value, ApiError> {
    let headers = [
        (
            "x-amz-changedblockscount".to_string(),
            digests.len().to_string(),
        ),
        (
            "x-amz-checksum".to_string(),
            b64(&keyvol::snapshot::direct::linear_checksum(
                digests.iter().copied(),
            )),
        ),
        ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
        (
            "x-amz-checksum-aggregation-method".to_string(),
            "LINEAR".to_string(),
        ),
    ];
    cp.ebs(
        "POST",
        &format!("/snapshots/completion/{snap}"),
        "",
        &headers,
        b"",
    )
    .map(|r| r.json())
}

/// Every block of `snap` the snapshot holds: index → bytes (each checked
/// against its `x-amz-Checksum`).
fn blocks_of(cp: &ControlPlaneClient, snap: &str) -> std::collections::BTreeMap<u64, Vec<u8>> {
    let listed = cp
        .ebs("GET", &format!("/snapshots/{snap}/blocks"), "", &[], b"")
        .unwrap()
        .json();
    let mut out = std::collections::BTreeMap::new();
    for b in listed["Blocks"].as_array().unwrap() {
        let i = b["BlockIndex"].as_u64().unwrap();
        let token = b["BlockToken"].as_str().unwrap();
        let got = cp
            .ebs(
                "GET",
                &format!("/snapshots/{snap}/blocks/{i}"),
                &format!(
                    "blockToken={}",
                    keyvol::server::control_plane::percent_encode(token)
                ),
                &[],
                b"",
            )
            .unwrap();
        let sum = got.header("x-amz-checksum").unwrap().to_string();
        assert_eq!(sum, b64(&Sha256::digest(&got.body[..])), "block {i}");
        out.insert(i, got.body.to_vec());
    }
    out
}

fn snapshot_state(cp: &ControlPlaneClient, snap: &str) -> (String, String) {
    let d = cp
        .ec2("DescribeSnapshots", &[("SnapshotId.1", snap)])
        .unwrap();
    let s = d.items("snapshotSet").into_iter().next().unwrap();
    (
        s.text("status").unwrap_or_default(),
        s.text("statusMessage").unwrap_or_default(),
    )
}

fn wait_completed(cp: &ControlPlaneClient, snap: &str) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let (state, message) = snapshot_state(cp, snap);
        match state.as_str() {
            "completed" => return,
            "error" => panic!("snapshot {snap} failed: {message}"),
            _ if Instant::now() > until => panic!("snapshot {snap} still {state} after 120 s"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `KeyvolDescribeHostRequests` of `instance`, waiting up to `wait` s.
fn ask(c: &ControlPlaneClient, instance: &str, wait: &str) -> Result<XmlReply, ApiError> {
    c.ec2(
        "KeyvolDescribeHostRequests",
        &[("InstanceId", instance), ("WaitSeconds", wait)],
    )
}

/// `KeyvolReportHostSnapshot` of `snap` with `status`.
fn report(
    c: &ControlPlaneClient,
    instance: &str,
    snap: &str,
    status: &str,
) -> Result<XmlReply, ApiError> {
    c.ec2(
        "KeyvolReportHostSnapshot",
        &[
            ("InstanceId", instance),
            ("SnapshotId", snap),
            ("Status", status),
        ],
    )
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| ((i as u64 * 31 + seed as u64 * 7) % 251) as u8)
        .collect()
}

#[test]
fn only_the_volumes_host_takes_and_writes_its_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cp");
    std::fs::create_dir(&home).unwrap();
    let root = create_account(&home, A, "a");
    let host1 = create_user_with_policy(
        &home,
        dir.path(),
        "a",
        "host1",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ebs:PutSnapshotBlock","ebs:CompleteSnapshot"],"Resource":"*"}]}"#,
    );
    let host2 = create_user_with_policy(
        &home,
        dir.path(),
        "a",
        "host2",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ebs:*","ec2:*","kms:*"],"Resource":"*"}]}"#,
    );
    let alice = create_user_with_policy(
        &home,
        dir.path(),
        "a",
        "alice",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ebs:*","ec2:*","kms:*"],"Resource":"*"}]}"#,
    );
    let reg = |user: &str| {
        cli(
            &home,
            &[
                "--profile",
                "a",
                "iam",
                "register-volume-host",
                "--user-name",
                user,
            ],
        )["InstanceId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let i1 = reg("host1");
    let i2 = reg("host2");
    let mut served = Served::spawn_with_env(
        &home,
        ["serve", "--listen", "127.0.0.1:0"],
        &[("KEYVOL_HOST_SNAPSHOT_WAIT_SECS", "10")],
    );
    let endpoint = served.endpoint();
    let (root_c, h1, h2, al) = (
        client(&endpoint, &root),
        client(&endpoint, &host1),
        client(&endpoint, &host2),
        client(&endpoint, &alice),
    );

    let vol = common::serve::create_volume(&root_c, &[("Size", "1")]);
    // Attached to host 1 and its key released there: the volume's data is
    // on host 1 now.
    root_c
        .ec2(
            "AttachVolume",
            &[
                ("VolumeId", &vol),
                ("InstanceId", &i1),
                ("Device", "/dev/sdf"),
            ],
        )
        .unwrap();
    // Still attaching (no key released yet): no snapshot can be cut.
    let e = refused(root_c.ec2("CreateSnapshot", &[("VolumeId", &vol)]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    h1.release_volume_key(&vol, &i1).unwrap();

    // Nobody answers: CreateSnapshot fails after the wait, the snapshot
    // is in error and says why.
    let e = refused(root_c.ec2("CreateSnapshot", &[("VolumeId", &vol)]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    assert!(
        e.message.contains(&i1) && e.message.contains("did not take"),
        "{e:?}"
    );
    let errored = root_c
        .ec2(
            "DescribeSnapshots",
            &[("Filter.1.Name", "volume-id"), ("Filter.1.Value.1", &vol)],
        )
        .unwrap()
        .items("snapshotSet");
    assert_eq!(errored.len(), 1);
    assert_eq!(errored[0].text("status").as_deref(), Some("error"));
    // ... and the host is not asked for it any more.
    let asked = h1
        .ec2("KeyvolDescribeHostRequests", &[("InstanceId", &i1)])
        .unwrap();
    assert!(asked.items("snapshotSet").is_empty(), "{asked:?}");

    // CreateSnapshot in the background; the test is host 1.
    let take = |c: ControlPlaneClient, v: String| {
        std::thread::spawn(move || {
            c.ec2("CreateSnapshot", &[("VolumeId", &v), ("Description", "d")])
        })
    };
    let pending = take(client(&endpoint, &root), vol.clone());
    // Not a volume host; another host's instance; another host's own
    // instance has nothing to take.
    let e = refused(ask(&al, &i1, "1"));
    assert_eq!(e.code, "UnauthorizedOperation", "{e:?}");
    let e = refused(ask(&h2, &i1, "1"));
    assert_eq!(e.code, "UnauthorizedOperation", "{e:?}");
    let none = ask(&h2, &i2, "1").unwrap();
    assert!(none.items("snapshotSet").is_empty());
    let e = refused(ask(&h1, &i1, "11"));
    assert_eq!(e.code, "InvalidParameterValue", "{e:?}");
    let asked = ask(&h1, &i1, "10").unwrap();
    let items = asked.items("snapshotSet");
    assert_eq!(items.len(), 1, "{asked:?}");
    let snap = items[0].text("snapshotId").unwrap();
    assert_eq!(items[0].text("volumeId").as_deref(), Some(vol.as_str()));
    assert_eq!(items[0].text("volumeSize").as_deref(), Some("1073741824"));
    assert!(items[0].text("parentSnapshotId").is_none(), "{asked:?}");
    // Only host 1 reports on it.
    for (c, inst) in [(&h2, &i2), (&al, &i1)] {
        let e = refused(report(c, inst, &snap, "cut"));
        assert!(
            ["InvalidSnapshot.NotFound", "UnauthorizedOperation"].contains(&e.code.as_str()),
            "{e:?}"
        );
    }
    let e = refused(report(&h1, &i1, &snap, "done"));
    assert_eq!(e.code, "InvalidParameterValue", "{e:?}");
    report(&h1, &i1, &snap, "cut").unwrap();
    let created = pending.join().unwrap().unwrap();
    assert_eq!(created.text("snapshotId").as_deref(), Some(snap.as_str()));
    assert_eq!(created.text("status").as_deref(), Some("pending"));
    assert_eq!(created.text("volumeId").as_deref(), Some(vol.as_str()));
    // A second cut report is refused: the point in time is fixed.
    let e = refused(report(&h1, &i1, &snap, "cut"));
    assert_eq!(e.code, "IncorrectState", "{e:?}");

    // Only host 1 writes its blocks: not another principal allowed ebs:*,
    // not the account root.
    let data = pattern(1);
    for c in [&al, &root_c, &h2] {
        let e = refused(put_block(c, &snap, 3, &data));
        assert_eq!(e.code, "AccessDeniedException", "{e:?}");
        let e = refused(complete(c, &snap, &[]));
        assert_eq!(e.code, "AccessDeniedException", "{e:?}");
    }
    let d3 = put_block(&h1, &snap, 3, &data).unwrap();
    let d7 = put_block(&h1, &snap, 7, &pattern(2)).unwrap();
    assert_eq!(
        complete(&h1, &snap, &[d3, d7]).unwrap()["Status"],
        "completed"
    );
    assert_eq!(snapshot_state(&root_c, &snap).0, "completed");
    let blocks = blocks_of(&root_c, &snap);
    assert_eq!(blocks.keys().copied().collect::<Vec<_>>(), vec![3, 7]);
    assert_eq!(blocks[&3], data);
    assert_eq!(blocks[&7], pattern(2));

    // The next snapshot is incremental from it: the host is told the
    // parent, sends one changed block, and the rest is the parent's.
    let pending = take(client(&endpoint, &root), vol.clone());
    let asked = ask(&h1, &i1, "10").unwrap();
    let items = asked.items("snapshotSet");
    assert_eq!(items.len(), 1, "{asked:?}");
    let snap2 = items[0].text("snapshotId").unwrap();
    assert_eq!(
        items[0].text("parentSnapshotId").as_deref(),
        Some(snap.as_str())
    );
    report(&h1, &i1, &snap2, "cut").unwrap();
    pending.join().unwrap().unwrap();
    let d7b = put_block(&h1, &snap2, 7, &pattern(9)).unwrap();
    complete(&h1, &snap2, &[d7b]).unwrap();
    let blocks = blocks_of(&root_c, &snap2);
    assert_eq!(blocks[&3], data);
    assert_eq!(blocks[&7], pattern(9));
    let changed = root_c
        .ebs(
            "GET",
            &format!("/snapshots/{snap2}/changedblocks"),
            &format!("firstSnapshotId={snap}"),
            &[],
            b"",
        )
        .unwrap()
        .json();
    let idx: Vec<u64> = changed["ChangedBlocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["BlockIndex"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![7], "{changed}");

    // A host that fails says so: the snapshot ends in error with its
    // message, and the next one starts again from the last completed.
    let pending = take(client(&endpoint, &root), vol.clone());
    let asked = ask(&h1, &i1, "10").unwrap();
    let snap3 = asked.items("snapshotSet")[0].text("snapshotId").unwrap();
    report(&h1, &i1, &snap3, "cut").unwrap();
    pending.join().unwrap().unwrap();
    h1.ec2(
        "KeyvolReportHostSnapshot",
        &[
            ("InstanceId", &i1),
            ("SnapshotId", &snap3),
            ("Status", "failed"),
            ("Message", "disk on fire"),
        ],
    )
    .unwrap();
    let (state, message) = snapshot_state(&root_c, &snap3);
    assert_eq!(state, "error");
    assert!(message.contains("disk on fire"), "{message}");
    let e = refused(put_block(&h1, &snap3, 1, &data));
    assert_ne!(e.code, "AccessDeniedException", "{e:?}");

    // Only the host that holds a volume's data reports its hydration.
    let e = refused(h2.ec2(
        "KeyvolReportHostHydrated",
        &[("InstanceId", &i2), ("VolumeId", &vol)],
    ));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    let e = refused(al.ec2(
        "KeyvolReportHostHydrated",
        &[("InstanceId", &i1), ("VolumeId", &vol)],
    ));
    assert_eq!(e.code, "UnauthorizedOperation", "{e:?}");

    // Host 1's daemon restarts while it sends one (its key is released
    // again): the new daemon has not that cut, so the snapshot ends in
    // error at once, rather than pending until the upload's timeout; one
    // still waiting for its cut is taken by the new daemon.
    let pending = take(client(&endpoint, &root), vol.clone());
    let asked = ask(&h1, &i1, "10").unwrap();
    let snap_r = asked.items("snapshotSet")[0].text("snapshotId").unwrap();
    report(&h1, &i1, &snap_r, "cut").unwrap();
    pending.join().unwrap().unwrap();
    assert_eq!(snapshot_state(&root_c, &snap_r).0, "pending");
    h1.release_volume_key(&vol, &i1).unwrap();
    let (state, message) = snapshot_state(&root_c, &snap_r);
    assert_eq!(state, "error");
    assert!(message.contains("restarted"), "{message}");
    let e = refused(put_block(&h1, &snap_r, 1, &data));
    assert_eq!(e.code, "ValidationException", "{e:?}");

    // Detached while host 1 is still sending one: that snapshot cannot
    // complete, and says why.
    let pending = take(client(&endpoint, &root), vol.clone());
    let asked = ask(&h1, &i1, "10").unwrap();
    let snap4 = asked.items("snapshotSet")[0].text("snapshotId").unwrap();
    report(&h1, &i1, &snap4, "cut").unwrap();
    pending.join().unwrap().unwrap();
    root_c
        .ec2("DetachVolume", &[("VolumeId", &vol), ("InstanceId", &i1)])
        .unwrap();
    let (state, message) = snapshot_state(&root_c, &snap4);
    assert_eq!(state, "error");
    assert!(message.contains("detached"), "{message}");
    let e = refused(put_block(&h1, &snap4, 1, &data));
    assert_eq!(e.code, "ValidationException", "{e:?}");

    // Detached: its data stays on host 1, which the control plane cannot
    // read; CreateSnapshot says where to snapshot it.
    let e = refused(root_c.ec2("CreateSnapshot", &[("VolumeId", &vol)]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    assert!(e.message.contains("attach it on that host"), "{e:?}");
    // Every call above is audited, the refused ones too.
    let _ = served.stop();
    let audit = common::serve::audit_list(&home, "a", "KeyvolReportHostSnapshot");
    let events = audit["Events"].as_array().unwrap();
    assert!(events.len() >= 8, "{audit}");
    assert!(events
        .iter()
        .any(|e| e["errorCode"] == "UnauthorizedOperation"));
    let verify = cli(&home, &["--profile", "a", "kms", "audit", "verify"]);
    assert_eq!(verify["Valid"], true, "{verify}");
}

/// Reads all of `path` (a device of `len` bytes).
fn read_device(path: &std::path::Path, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn a_remote_hosts_volume_is_snapshotted_where_its_data_is() {
    let Some(_g) = common::fuse_prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (k, h) = (dir.path().join("cp"), dir.path().join("host"));
    std::fs::create_dir(&k).unwrap();
    std::fs::create_dir(&h).unwrap();
    let root = create_account(&k, A, "acct");
    let reg = cli(
        &k,
        &[
            "--profile",
            "acct",
            "iam",
            "register-volume-host",
            "--account-root",
        ],
    );
    assert!(
        reg["InstanceId"].as_str().unwrap().starts_with("i-"),
        "{reg}"
    );
    let served = Served::start(&k, &["serve"]);
    let endpoint = served.endpoint();
    configure_host(&h, &endpoint, A, &root);
    let cp = client(&endpoint, &root);

    // A volume of the host, attached there: its data exists only on the
    // host, written through the FUSE device.
    const SIZE: usize = 8 << 20;
    let created = cli(
        &h,
        &["--profile", "acct", "volume", "create", "--size", "8MiB"],
    );
    let vol = created["VolumeId"].as_str().unwrap().to_string();
    let dev = h.join("dev");
    cli(
        &h,
        &[
            "--profile",
            "acct",
            "volume",
            "attach",
            &vol,
            "--device",
            dev.to_str().unwrap(),
        ],
    );
    let write = |index: u64, seed: u8| {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&pattern(seed), index * BLOCK as u64)
            .unwrap();
        f.sync_all().unwrap();
    };
    write(0, 1);
    write(5, 2);
    write(13, 3);
    // Part of a block: the rest of it is the zeros it held.
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(b"tail of block 15", 15 * BLOCK as u64 + 4096)
            .unwrap();
        f.sync_all().unwrap();
    }
    let at_first = read_device(&dev, SIZE);

    // aws ec2 create-snapshot, at the control plane: pending as soon as
    // the host's daemon has cut, completed once it has sent the blocks.
    let started = Instant::now();
    let x = cp
        .ec2(
            "CreateSnapshot",
            &[("VolumeId", &vol), ("Description", "first")],
        )
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(25));
    let snap1 = x.text("snapshotId").unwrap();
    assert_eq!(x.text("volumeId").as_deref(), Some(vol.as_str()));
    // Written after the cut: not in the snapshot.
    write(5, 4);
    wait_completed(&cp, &snap1);
    let blocks = blocks_of(&cp, &snap1);
    assert_eq!(
        blocks.keys().copied().collect::<Vec<_>>(),
        vec![0, 5, 13, 15],
        "only the written blocks are stored"
    );
    for (i, b) in &blocks {
        let at = *i as usize * BLOCK;
        assert_eq!(b[..], at_first[at..at + BLOCK], "block {i}");
    }

    // keyvol-snap on the host: the control plane's CreateSnapshot, and
    // incremental: only what changed since the first is sent.
    write(9, 5);
    let now = read_device(&dev, SIZE);
    let second = common::snap_cli(
        &h,
        &[
            "--profile",
            "acct",
            "create",
            &vol,
            "--description",
            "second",
            "--wait",
        ],
    );
    assert_eq!(second["State"], "completed", "{second}");
    assert_eq!(second["VolumeId"], vol.as_str(), "{second}");
    let snap2 = second["SnapshotId"].as_str().unwrap().to_string();
    let changed = common::snap_cli(
        &h,
        &["--profile", "acct", "list-changed-blocks", &snap1, &snap2],
    );
    let idx: Vec<u64> = changed["ChangedBlocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["BlockIndex"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![5, 9], "{changed}");
    // The host's keyvol-snap reads the control plane's records.
    let listed = common::snap_cli(&h, &["--profile", "acct", "describe-snapshots"]);
    let ids: Vec<&str> = listed["Snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SnapshotId"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&snap1.as_str()) && ids.contains(&snap2.as_str()),
        "{listed}"
    );

    // ModifyVolume at the control plane while it is attached on the host:
    // the host's daemon grows the device online, the data unchanged.
    let modified = cp
        .ec2("ModifyVolume", &[("VolumeId", &vol), ("Size", "2")])
        .unwrap();
    assert_eq!(
        modified.text("targetSize").as_deref(),
        Some("2"),
        "{modified:?}"
    );
    let until = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&dev).unwrap().len() != 2 << 30 {
        assert!(Instant::now() < until, "the device did not grow to 2 GiB");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(read_device(&dev, SIZE) == now, "growing changed the data");
    let shown = cli(&h, &["--profile", "acct", "volume", "describe", &vol]);
    assert_eq!(shown["SizeInBytes"], 2u64 << 30, "{shown}");

    // Detached: the data stays on the host, and the control plane says to
    // attach it there to snapshot it.
    cli(&h, &["--profile", "acct", "volume", "detach", &vol]);
    let e = refused(cp.ec2("CreateSnapshot", &[("VolumeId", &vol)]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");

    // Restored on the control plane's own machine: the device is the
    // volume as it was at the second cut, byte for byte.
    let restored = cli(
        &k,
        &[
            "--profile",
            "acct",
            "volume",
            "create",
            "--snapshot-id",
            &snap2,
        ],
    );
    let vol2 = restored["VolumeId"].as_str().unwrap().to_string();
    let dev2 = k.join("dev2");
    cli(
        &k,
        &[
            "--profile",
            "acct",
            "volume",
            "attach",
            &vol2,
            "--device",
            dev2.to_str().unwrap(),
        ],
    );
    let back = read_device(&dev2, SIZE);
    cli(&k, &["--profile", "acct", "volume", "detach", &vol2]);
    assert!(
        back == now,
        "the restore differs from the volume at its cut"
    );
    // The daemon's writes are the host's: audited as PutSnapshotBlock data
    // events of the host's principal, and the chain verifies.
    let audit = common::serve::audit_list(&k, "acct", "PutSnapshotBlock");
    let puts = audit["Events"].as_array().unwrap();
    assert_eq!(puts.len(), 4 + 2, "{audit}");
    assert!(puts
        .iter()
        .all(|e| e["eventSource"] == "ebs.amazonaws.com" && e.get("errorCode").is_none()));
    let verify = cli(&k, &["--profile", "acct", "kms", "audit", "verify"]);
    assert_eq!(verify["Valid"], true, "{verify}");
}
