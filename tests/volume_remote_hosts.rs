//! Volume hosts on other machines, from the attacker's side: the keyvol
//! extension `KeyvolReleaseVolumeKey` hands a volume's data key only to
//! the registered host of the instance an authorized AttachVolume attached
//! it to, only over TLS or loopback; the retired `x-keyvol-via-service`
//! header gives no one `kms:ViaService`. Against real `keyvol serve`
//! processes: one over plain HTTP on 0.0.0.0 (reached over loopback and
//! over the machine's non-loopback address), one over HTTPS.

mod common;

use std::process::Command;

use common::serve::*;
use keyvol::api_error::ApiError;
use keyvol::ids::Region;
use keyvol::secret::SecretBytes;
use keyvol::server::ControlPlaneClient;
use keyvol::volume::service::host_instance_id;
use serde_json::Value;

const A: &str = "444455556666";
const B: &str = "777788889999";

fn client(endpoint: &str, key: &Key, ca: Option<&[u8]>) -> ControlPlaneClient {
    ControlPlaneClient::new(
        endpoint,
        Region::default_region(),
        &key.id,
        SecretBytes::from_slice(key.secret.as_bytes()),
        ca,
    )
    .unwrap()
}

/// The machine's first non-loopback IPv4 address (`hostname -I`). A
/// machine without one cannot run this test: it fails, never skips.
fn non_loopback_ip() -> String {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I: needed to find this machine's non-loopback address");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
        .expect("this machine has no non-loopback IPv4 address (hostname -I): the plain-HTTP refusal cannot be tested")
}

#[track_caller]
fn code(r: Result<impl Sized, ApiError>) -> ApiError {
    match r {
        Ok(_) => panic!("the call should have been refused"),
        Err(e) => e,
    }
}

/// A CA and a server certificate for `ip` under `dir` (openssl).
fn pki(dir: &std::path::Path, ip: &str) {
    let openssl = |args: &str| {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("openssl is missing: run scripts/setup.sh");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=keyvol-test-CA"
    ));
    openssl(&format!(
        "req {ec} -keyout leaf.key -out leaf.csr -subj /CN={ip}"
    ));
    openssl("x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile ext.cnf");
}

/// `keyvol iam register-volume-host --user-name USER`: its instance id.
fn register(home: &std::path::Path, profile: &str, user: &str) -> String {
    let reg = cli(
        home,
        &[
            "--profile",
            profile,
            "iam",
            "register-volume-host",
            "--user-name",
            user,
        ],
    );
    reg["InstanceId"].as_str().unwrap().to_string()
}

fn new_volume(home: &std::path::Path, profile: &str, args: &[&str]) -> Value {
    let mut all = vec!["--profile", profile, "volume", "create", "--size", "16MiB"];
    all.extend_from_slice(args);
    cli(home, &all)
}

#[test]
fn only_the_attached_host_gets_the_key_over_tls_or_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cp");
    std::fs::create_dir(&home).unwrap();
    let root_a = create_account(&home, A, "a");
    let root_b = create_account(&home, B, "b");
    let host1 = create_user(&home, "a", "host1");
    let host2 = create_user(&home, "a", "host2");
    let host_b = create_user(&home, "b", "hostb");
    let alice = create_user_with_policy(
        &home,
        dir.path(),
        "a",
        "alice",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","kms:*"],"Resource":"*"}]}"#,
    );
    let i1 = register(&home, "a", "host1");
    let i2 = register(&home, "a", "host2");
    let ib = register(&home, "b", "hostb");
    assert_ne!(i1, i2);
    // Volumes of account A at the control plane: one under alias/aws/ebs.
    let ebs = new_volume(&home, "a", &[]);
    let vol = ebs["VolumeId"].as_str().unwrap().to_string();
    let other = new_volume(&home, "a", &[])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();

    let ip = non_loopback_ip();
    let mut plain = Served::spawn_with_env(
        &home,
        ["serve", "--listen", "0.0.0.0:0"],
        &[("KEYVOL_HOST_SNAPSHOT_WAIT_SECS", "2")],
    );
    let port = plain.addr().port();
    let lo = format!("http://127.0.0.1:{port}");
    let off = format!("http://{ip}:{port}");

    // The registered hosts are instances, next to the control plane's own.
    let described = client(&lo, &root_a, None)
        .ec2("DescribeInstances", &[])
        .unwrap();
    let ids = described.texts("instanceId");
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&i1) && ids.contains(&i2), "{ids:?}");
    assert!(!ids.contains(&ib), "{ids:?}");

    // AttachVolume to host 1's instance, by the account root: authorized
    // on the volume and instance ARNs, recorded as attaching.
    let att = client(&lo, &root_a, None)
        .ec2(
            "AttachVolume",
            &[
                ("VolumeId", &vol),
                ("InstanceId", &i1),
                ("Device", "/dev/sdf"),
            ],
        )
        .unwrap();
    assert_eq!(att.text("status").as_deref(), Some("attaching"));
    assert_eq!(att.text("instanceId").as_deref(), Some(i1.as_str()));
    let inst = client(&lo, &root_a, None)
        .ec2("DescribeInstances", &[("InstanceId.1", &i1)])
        .unwrap();
    assert_eq!(inst.texts("volumeId"), vec![vol.clone()]);
    // Host 1 over loopback: the key (64 bytes), then attached.
    let k1 = client(&lo, &host1, None)
        .release_volume_key(&vol, &i1)
        .unwrap();
    assert_eq!(k1.expose().len(), 64);
    let v = client(&lo, &root_a, None)
        .ec2("DescribeVolumes", &[("VolumeId.1", &vol)])
        .unwrap();
    let a = &v.items("volumeSet")[0].items("attachmentSet")[0];
    assert_eq!(a.text("status").as_deref(), Some("attached"));
    assert_eq!(a.text("instanceId").as_deref(), Some(i1.as_str()));
    // The control plane cannot read host 1's data: host 1 is asked for
    // the snapshot, and with no daemon there to answer, none is made.
    let e = code(client(&lo, &root_a, None).ec2("CreateSnapshot", &[("VolumeId", &vol)]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    assert!(
        e.message.contains(&i1) && e.message.contains("did not take"),
        "{e:?}"
    );
    // A grow while attached there is recorded here, and host 1 (only
    // host 1) learns the size at once from its long poll, to grow its
    // device online; the control plane's own unused copy stays as it was.
    let img = std::path::Path::new(&home).join(format!("volumes/us-east-1/{vol}.img"));
    let img_len = std::fs::metadata(&img).map(|m| m.len()).ok();
    let grown = client(&lo, &root_a, None)
        .ec2("ModifyVolume", &[("VolumeId", &vol), ("Size", "2")])
        .unwrap();
    assert_eq!(grown.text("targetSize").as_deref(), Some("2"), "{grown:?}");
    assert_eq!(std::fs::metadata(&img).map(|m| m.len()).ok(), img_len);
    let started = std::time::Instant::now();
    let asked = client(&lo, &host1, None)
        .ec2(
            "KeyvolDescribeHostRequests",
            &[
                ("InstanceId", &i1),
                ("VolumeId", &vol),
                ("SizeInBytes", "16777216"),
                ("WaitSeconds", "10"),
            ],
        )
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        asked.items("volumeSet")[0].text("sizeInBytes").as_deref(),
        Some("2147483648"),
        "{asked:?}"
    );
    let not_its = client(&lo, &host2, None)
        .ec2(
            "KeyvolDescribeHostRequests",
            &[
                ("InstanceId", &i2),
                ("VolumeId", &vol),
                ("SizeInBytes", "0"),
            ],
        )
        .unwrap();
    assert!(not_its.items("volumeSet").is_empty(), "{not_its:?}");
    // Nor a detach from another instance.
    let e = code(
        client(&lo, &root_a, None).ec2("DetachVolume", &[("VolumeId", &vol), ("InstanceId", &i2)]),
    );
    assert_eq!(e.code, "InvalidAttachment.NotFound", "{e:?}");
    // Nor a second attachment, nor a delete.
    let e = code(client(&lo, &root_a, None).ec2(
        "AttachVolume",
        &[
            ("VolumeId", &vol),
            ("InstanceId", &i2),
            ("Device", "/dev/sdg"),
        ],
    ));
    assert_eq!(e.code, "VolumeInUse", "{e:?}");
    let e = code(client(&lo, &root_a, None).ec2("DeleteVolume", &[("VolumeId", &vol)]));
    assert_eq!(e.code, "VolumeInUse", "{e:?}");

    // The audit: the KMS Decrypt made by EC2 as the attacher (A's root),
    // and the release itself as host 1, without the key.
    let audit = common::serve::audit_list(&home, "a", "Decrypt");
    let events = audit["Events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["invokedBy"] == "ec2.amazonaws.com"
            && e["userIdentity"]["accessKeyId"] == root_a.id.as_str()
            && e["userIdentity"]["arn"] == format!("arn:aws:iam::{A}:root")
            && e.get("errorCode").is_none()),
        "{audit}"
    );
    let releases = common::serve::audit_list(&home, "a", "KeyvolReleaseVolumeKey");
    let text = releases.to_string();
    assert!(text.contains(&host1.id), "{text}");
    assert!(
        !text.contains(&keyvol::kms::api::b64_encode(k1.expose())),
        "the audit holds no key"
    );

    // Host 1, a volume not attached to it.
    let e = code(client(&lo, &host1, None).release_volume_key(&other, &i1));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    // Host 2, the volume attached to host 1: as itself, and claiming
    // host 1's instance.
    let e = code(client(&lo, &host2, None).release_volume_key(&vol, &i2));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    let e = code(client(&lo, &host2, None).release_volume_key(&vol, &i1));
    assert_eq!(e.code, "UnauthorizedOperation", "{e:?}");
    // Account B's registered host: A's volume does not exist for it.
    let e = code(client(&lo, &host_b, None).release_volume_key(&vol, &ib));
    assert_eq!(e.code, "InvalidVolume.NotFound", "{e:?}");
    let e = code(client(&lo, &root_b, None).release_volume_key(&vol, &i1));
    assert_eq!(e.code, "UnauthorizedOperation", "{e:?}");
    // A plain IAM user (no host), even one allowed ec2:* and kms:*.
    let e = code(client(&lo, &alice, None).release_volume_key(&vol, &i1));
    assert_eq!(e.code, "UnauthorizedOperation", "{e:?}");
    assert!(e.message.contains("not a registered volume host"), "{e:?}");
    // Host 1 itself over plain HTTP off loopback: refused, naming TLS.
    let e = code(client(&off, &host1, None).release_volume_key(&vol, &i1));
    assert_eq!(e.code, "UnauthorizedOperation", "{e:?}");
    assert!(e.message.contains("TLS"), "{e:?}");

    // The retired header: alice's Decrypt of the aws/ebs volume's wrapped
    // key gets no kms:ViaService: refused with it, and without it.
    let record = cli(&home, &["--profile", "a", "volume", "describe", &vol]);
    let body = serde_json::json!({
        "CiphertextBlob": record["EncryptedDataKey"],
        "EncryptionContext": record["EncryptionContext"],
    });
    let with = kms_with_header(&lo, &alice, &body, true);
    assert_eq!(with.0, 400, "{}", with.1);
    assert!(with.1.contains("ValidationException"), "{}", with.1);
    let without = kms_with_header(&lo, &alice, &body, false);
    assert_eq!(without.0, 400, "{}", without.1);
    assert!(without.1.contains("AccessDeniedException"), "{}", without.1);

    // After DetachVolume the right is gone.
    client(&lo, &root_a, None)
        .ec2("DetachVolume", &[("VolumeId", &vol)])
        .unwrap();
    let e = code(client(&lo, &host1, None).release_volume_key(&vol, &i1));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    // Its data stays on host 1: the control plane's own host cannot
    // attach it, nor snapshot it.
    let own = client(&lo, &root_a, None)
        .ec2("DescribeInstances", &[])
        .unwrap()
        .texts("instanceId")
        .into_iter()
        .find(|i| *i != i1 && *i != i2)
        .unwrap();
    let e = code(client(&lo, &root_a, None).ec2(
        "AttachVolume",
        &[
            ("VolumeId", &vol),
            ("InstanceId", &own),
            ("Device", "/dev/sdf"),
        ],
    ));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    let e = code(client(&lo, &root_a, None).ec2("CreateSnapshot", &[("VolumeId", &vol)]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");

    // Over TLS off loopback: the release works.
    let certs = tempfile::tempdir().unwrap();
    pki(certs.path(), &ip);
    let (leaf, leaf_key) = (certs.path().join("leaf.pem"), certs.path().join("leaf.key"));
    let mut tls = Served::spawn(
        &home,
        [
            "serve".as_ref(),
            "--listen".as_ref(),
            "0.0.0.0:0".as_ref(),
            "--tls-cert".as_ref(),
            leaf.as_os_str(),
            "--tls-key".as_ref(),
            leaf_key.as_os_str(),
        ],
    );
    assert_eq!(tls.ready["Tls"], true);
    let https = format!("https://{ip}:{}", tls.addr().port());
    let ca = std::fs::read(certs.path().join("ca.pem")).unwrap();
    client(&https, &root_a, Some(&ca))
        .ec2(
            "AttachVolume",
            &[
                ("VolumeId", &vol),
                ("InstanceId", &i1),
                ("Device", "/dev/sdf"),
            ],
        )
        .unwrap();
    let k2 = client(&https, &host1, Some(&ca))
        .release_volume_key(&vol, &i1)
        .unwrap();
    assert_eq!(k1.expose(), k2.expose(), "the same volume key");
    assert!(tls.stop().success());
    assert!(plain.stop().success());
}

/// A KMS Decrypt signed as `key`, with the retired header when `header`:
/// the HTTP status and body.
fn kms_with_header(endpoint: &str, key: &Key, body: &Value, header: bool) -> (u16, String) {
    use keyvol::server::sigv4::{self, HttpRequest, SigningParams};
    let authority = endpoint.trim_start_matches("http://").to_string();
    let body = body.to_string();
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        ("host".to_string(), authority),
        (
            "x-amz-date".to_string(),
            sigv4::format_amz_date(time::OffsetDateTime::now_utc()),
        ),
        (
            "x-amz-target".to_string(),
            "TrentService.Decrypt".to_string(),
        ),
    ];
    if header {
        headers.push((
            "x-keyvol-via-service".to_string(),
            "ec2.us-east-1.amazonaws.com".to_string(),
        ));
    }
    let secret = SecretBytes::from_slice(key.secret.as_bytes());
    let auth = sigv4::sign_request(
        &HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
        &SigningParams {
            access_key_id: &key.id,
            secret_access_key: &secret,
            region: "us-east-1",
            service: "kms",
        },
    )
    .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(format!("{endpoint}/"));
    for (k, v) in &headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    let mut resp = req.header("authorization", auth).send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// Where a volume's data is, the control plane knows from the moment a
/// host makes its copy (`KeyvolClaimVolumeData`), not only from its first
/// attach: no second machine takes up a copy of its own, and no host
/// whose copy is stale attaches it, so no write made where the data is
/// goes missing. Moving the data is `volume import` on the new host.
/// From the attacker's side: a principal that is no volume host, a host
/// claiming for another's instance, a host without `ec2:AttachVolume`, a
/// claim of a volume attached elsewhere, a release of another's claim,
/// and AttachVolume of a volume held elsewhere are each refused and change
/// nothing.
#[test]
fn the_control_plane_knows_where_a_volumes_data_is_before_its_first_attach() {
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    std::fs::create_dir(&cp).unwrap();
    let root = create_account(&cp, A, "a");
    let all = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","ebs:*","kms:*"],"Resource":"*"}]}"#;
    let k1 = create_user_with_policy(&cp, dir.path(), "a", "host1", all);
    let k2 = create_user_with_policy(&cp, dir.path(), "a", "host2", all);
    let k3 = create_user_with_policy(
        &cp,
        dir.path(),
        "a",
        "host3",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:Describe*","ebs:*"],"Resource":"*"}]}"#,
    );
    let alice = create_user_with_policy(&cp, dir.path(), "a", "alice", all);
    let (i1, i2, i3) = (
        register(&cp, "a", "host1"),
        register(&cp, "a", "host2"),
        register(&cp, "a", "host3"),
    );
    let served = Served::spawn(&cp, ["serve", "--listen", "127.0.0.1:0"]);
    let endpoint = served.ready["Endpoint"].as_str().unwrap().to_string();
    let (rc, h1, h2, h3, al) = (
        client(&endpoint, &root, None),
        client(&endpoint, &k1, None),
        client(&endpoint, &k2, None),
        client(&endpoint, &k3, None),
        client(&endpoint, &alice, None),
    );
    let holder = |v: &str| {
        rc.ec2(
            "DescribeVolumes",
            &[("VolumeId.1", v), ("IncludeKeyvolDetails", "true")],
        )
        .unwrap()
        .text("dataHostInstanceId")
    };
    let claim = |c: &ControlPlaneClient, i: &str, v: &str, extra: &[(&str, &str)]| {
        let mut p = vec![("InstanceId", i), ("VolumeId", v)];
        p.extend_from_slice(extra);
        c.ec2("KeyvolClaimVolumeData", &p)
    };
    let attach = |c: &ControlPlaneClient, v: &str, i: &str| {
        c.ec2(
            "AttachVolume",
            &[("VolumeId", v), ("InstanceId", i), ("Device", "/dev/sdf")],
        )
    };

    // The protocol, the test standing in for the hosts.
    let v = common::serve::create_volume(&rc, &[("Size", "1")]);
    assert_eq!(holder(&v), None, "never used anywhere");
    for (who, c, i, want) in [
        ("a user who is no host", &al, &i1, "UnauthorizedOperation"),
        (
            "host 1 for host 2's instance",
            &h1,
            &i2,
            "UnauthorizedOperation",
        ),
        (
            "a host without ec2:AttachVolume",
            &h3,
            &i3,
            "UnauthorizedOperation",
        ),
    ] {
        let e = code(claim(c, i, &v, &[]));
        assert_eq!(e.code, want, "{who}: {e:?}");
        assert_eq!(holder(&v), None, "{who} changed nothing");
    }
    let e = code(claim(
        &h1,
        &i1,
        &v,
        &[("Import", "true"), ("Release", "true")],
    ));
    assert_eq!(e.code, "InvalidParameterValue", "{e:?}");
    let e = code(claim(&h1, &i1, &v, &[("Import", "maybe")]));
    assert_eq!(e.code, "InvalidParameterValue", "{e:?}");
    let e = code(claim(&h1, &i1, "vol-0123456789abcdef0", &[]));
    assert_eq!(e.code, "InvalidVolume.NotFound", "{e:?}");
    claim(&h1, &i1, &v, &[]).unwrap();
    claim(&h1, &i1, &v, &[]).unwrap(); // again: nothing changes
    assert_eq!(holder(&v).as_deref(), Some(i1.as_str()));
    // Held by host 1: host 2 may not make a copy of its own, nobody may
    // attach it to host 2 or to the control plane's own machine, and host
    // 2 may not release host 1's claim.
    let e = code(claim(&h2, &i2, &v, &[]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    assert!(e.message.contains(&i1), "{e:?}");
    for c in [&rc, &h2] {
        let e = code(attach(c, &v, &i2));
        assert_eq!(e.code, "IncorrectState", "{e:?}");
        assert!(e.message.contains(&i1), "{e:?}");
    }
    let e = code(attach(&rc, &v, &host_instance_id(A, "us-east-1")));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    let e = code(claim(&h2, &i2, &v, &[("Release", "true")]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    assert_eq!(holder(&v).as_deref(), Some(i1.as_str()));
    // Attached to host 1: no claim by another host, not even an import,
    // and no release.
    attach(&h1, &v, &i1).unwrap();
    let e = code(claim(&h2, &i2, &v, &[("Import", "true")]));
    assert_eq!(e.code, "VolumeInUse", "{e:?}");
    let e = code(claim(&h1, &i1, &v, &[("Release", "true")]));
    assert_eq!(e.code, "VolumeInUse", "{e:?}");
    rc.ec2("DetachVolume", &[("VolumeId", &v)]).unwrap();
    // Detached: host 1's long poll answers at once that it is (not
    // forced); host 2, which does not hold its data, is told nothing.
    let poll = |c: &ControlPlaneClient, i: &str, wait: &str| {
        c.ec2(
            "KeyvolDescribeHostRequests",
            &[("InstanceId", i), ("VolumeId", &v), ("WaitSeconds", wait)],
        )
        .unwrap()
        .items("detachSet")
    };
    let started = std::time::Instant::now();
    let d = poll(&h1, &i1, "10");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].text("force").as_deref(), Some("false"), "{d:?}");
    assert!(poll(&h2, &i2, "0").is_empty());
    // Detached already, DetachVolume is EC2's IncorrectState; forced, it
    // reaches host 1, whose daemon may still serve the volume (it refuses
    // to stop while its device is in use).
    let e = code(rc.ec2("DetachVolume", &[("VolumeId", &v)]));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    let forced = rc
        .ec2("DetachVolume", &[("VolumeId", &v), ("Force", "true")])
        .unwrap();
    assert_eq!(forced.text("instanceId").as_deref(), Some(i1.as_str()));
    assert_eq!(forced.text("status").as_deref(), Some("detaching"));
    let d = poll(&h1, &i1, "0");
    assert_eq!(d[0].text("force").as_deref(), Some("true"), "{d:?}");
    // Moved to host 2 (its backing file imported there): host 1's copy is
    // stale now, and host 1 may not attach it.
    claim(&h2, &i2, &v, &[("Import", "true")]).unwrap();
    assert_eq!(holder(&v).as_deref(), Some(i2.as_str()));
    let e = code(attach(&h1, &v, &i1));
    assert_eq!(e.code, "IncorrectState", "{e:?}");
    assert!(e.message.contains(&i2), "{e:?}");
    attach(&h2, &v, &i2).unwrap();
    rc.ec2("DetachVolume", &[("VolumeId", &v)]).unwrap();
    // A release by the holder makes the volume free again.
    claim(&h2, &i2, &v, &[("Release", "true")]).unwrap();
    assert_eq!(holder(&v), None);
    // Each claim was audited, the refusals with their error.
    let events = common::serve::audit_list(&cp, "a", "KeyvolClaimVolumeData")["Events"]
        .as_array()
        .unwrap()
        .clone();
    let refused = events
        .iter()
        .filter(|e| e.get("errorCode").is_some())
        .count();
    assert_eq!((events.len(), refused), (14, 10), "{events:?}");

    // The same through the host CLI: two host homes.
    let (x, y) = (dir.path().join("host1"), dir.path().join("host2"));
    for (h, k) in [(&x, &k1), (&y, &k2)] {
        std::fs::create_dir(h).unwrap();
        configure_host(h, &endpoint, A, k);
    }
    // A volume made on host 1 is held there from its creation.
    let made = cli(
        &x,
        &["--profile", "acct", "volume", "create", "--size", "8MiB"],
    );
    let vx = made["VolumeId"].as_str().unwrap().to_string();
    assert_eq!(holder(&vx).as_deref(), Some(i1.as_str()));
    // A lazy restore made on host 1 and never attached: host 2 does not
    // take it up from the snapshot (its copy would miss what host 1
    // writes), it is told where the data is, and nothing is left on it.
    let src = cli(
        &cp,
        &["--profile", "a", "volume", "create", "--size", "8MiB"],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = common::snapshot_and_wait(&cp, "a", &src)["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = cli(
        &x,
        &[
            "--profile",
            "acct",
            "volume",
            "create",
            "--snapshot-id",
            &snap,
        ],
    );
    let vr = restored["VolumeId"].as_str().unwrap().to_string();
    assert_eq!(holder(&vr).as_deref(), Some(i1.as_str()));
    let (_, err) = cli_raw(&y, &["--profile", "acct", "volume", "attach", &vr]).unwrap_err();
    assert!(
        err.contains("InvalidVolume.DataMissing") && err.contains(&i1),
        "{err}"
    );
    let volumes_y = y.join("volumes");
    let left = if volumes_y.exists() {
        common::all_files(&volumes_y)
    } else {
        Vec::new()
    };
    assert!(left.is_empty(), "{left:?}");
    // Moving host 1's volume to host 2 with `volume import`: host 1's
    // copy may not be attached any more.
    let backing = x.join(format!("volumes/us-east-1/{vx}.img"));
    assert!(backing.exists(), "{}", backing.display());
    cli(
        &y,
        &[
            "--profile",
            "acct",
            "volume",
            "import",
            "--volume-id",
            &vx,
            "--backing-file",
            backing.to_str().unwrap(),
        ],
    );
    assert_eq!(holder(&vx).as_deref(), Some(i2.as_str()));
    let (_, err) = cli_raw(&x, &["--profile", "acct", "volume", "attach", &vx]).unwrap_err();
    assert!(err.contains("IncorrectState") && err.contains(&i2), "{err}");
    let d = rc
        .ec2("DescribeVolumes", &[("VolumeId.1", &vx)])
        .unwrap()
        .items("volumeSet");
    assert_eq!(d[0].text("status").as_deref(), Some("available"));
}
