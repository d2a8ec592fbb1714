//! Two homes on one machine standing in for two volume hosts on other
//! machines that share one control plane (a third home serving `keyvol
//! kms serve`, the alias of `keyvol serve`): the volume's record is at the
//! control plane, its backing file on the host. A volume created and
//! attached on host 1 (AttachVolume to host 1's instance; the daemon's
//! data key from KeyvolReleaseVolumeKey) is attached on host 2 once its
//! backing file is there; with the control plane stopped the attached
//! volume keeps working and a new attach fails with a clear error. Needs
//! root and /dev/fuse (fails under CI=true without them).

mod common;

use std::io::BufRead;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn kv(home: &Path, args: &[&str]) -> Value {
    keyvol_json(home, args)
}

fn kv_err(home: &Path, args: &[&str]) -> String {
    let out = keyvol(home, args);
    assert!(!out.status.success(), "keyvol {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Points `host` at the control plane and stores the remote principal as
/// profile `acct`.
fn configure_host(host: &Path, endpoint: &str, akid: &str, secret: &str) {
    configure_host_of(host, endpoint, akid, secret, "444455556666");
}

/// [`configure_host`] for a principal of `account`.
fn configure_host_of(host: &Path, endpoint: &str, akid: &str, secret: &str, account: &str) {
    let key = common::serve::Key {
        id: akid.to_string(),
        secret: secret.to_string(),
    };
    common::serve::configure_host(host, endpoint, account, &key);
}

/// The control plane's process, killed when the test ends early.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Account 444455556666 at the control plane's home `k`, its root key
/// stored there as profile `acct`: the access key id and secret.
fn account(k: &Path) -> (String, String) {
    let acct = kv(
        k,
        &[
            "iam",
            "create-account",
            "--account-id",
            "444455556666",
            "--profile-name",
            "acct",
        ],
    );
    let field = |f: &str| acct["AccessKey"][f].as_str().unwrap().to_string();
    (field("AccessKeyId"), field("SecretAccessKey"))
}

/// `keyvol serve` on the home `k`, on loopback: the process and its endpoint.
fn serve(k: &Path) -> (Server, String) {
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_keyvol"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("KEYVOL_HOME", k)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = serde_json::from_str::<Value>(&line).unwrap()["Endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    (server, endpoint)
}

#[test]
fn volume_hosts_share_a_remote_control_plane() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let cp_home = tempfile::tempdir().unwrap();
    let host1 = tempfile::tempdir().unwrap();
    let host2 = tempfile::tempdir().unwrap();
    let (k, h1, h2) = (cp_home.path(), host1.path(), host2.path());
    let (akid, secret) = account(k);
    // The hosts sign as the account root, registered as a volume host: an
    // instance of the account at the control plane.
    let reg = kv(
        k,
        &[
            "--profile",
            "acct",
            "iam",
            "register-volume-host",
            "--account-root",
        ],
    );
    assert_eq!(reg["VolumeHost"], "arn:aws:iam::444455556666:root", "{reg}");
    let instance = reg["InstanceId"].as_str().unwrap().to_string();
    assert!(instance.starts_with("i-") && instance.len() == 19, "{reg}");
    let key = kv(k, &["--profile", "acct", "kms", "create-key"])["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();

    let (mut server, endpoint) = serve(k);
    configure_host(h1, &endpoint, &akid, &secret);
    configure_host(h2, &endpoint, &akid, &secret);

    // Host 1 creates volumes at the control plane (CreateVolume: the
    // control plane makes and keeps the wrapped key, via EC2): under a
    // named key, and under the account's alias/aws/ebs, usable only via
    // EC2. The backing files are on host 1.
    let created = kv(
        h1,
        &[
            "--profile",
            "acct",
            "volume",
            "create",
            "--size",
            "32MiB",
            "--kms-key-id",
            &key,
        ],
    );
    let vol = created["VolumeId"].as_str().unwrap().to_string();
    assert_eq!(created["SizeInBytes"], 32 << 20, "{created}");
    assert_eq!(created["KmsKeyId"], key.as_str(), "{created}");
    let ebs_vol = kv(
        h1,
        &["--profile", "acct", "volume", "create", "--size", "16MiB"],
    );
    assert!(ebs_vol["KmsKeyId"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:kms:us-east-1:444455556666:key/"));
    let backing = h1.join(format!("volumes/us-east-1/{vol}.img"));
    assert_eq!(std::fs::metadata(&backing).unwrap().len(), 32 << 20);
    // The record (and its wrapped key) is the control plane's.
    let record = kv(k, &["--profile", "acct", "volume", "describe", &vol]);
    assert!(!record["EncryptedDataKey"].as_str().unwrap().is_empty());
    let on_host = kv(h1, &["--profile", "acct", "volume", "describe", &vol]);
    assert!(on_host.get("EncryptedDataKey").is_none(), "{on_host}");
    let audit = kv(
        k,
        &[
            "--profile",
            "acct",
            "kms",
            "audit",
            "list",
            "--event-name",
            "GenerateDataKeyWithoutPlaintext",
        ],
    );
    assert!(audit["Events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["userIdentity"]["accessKeyId"] == akid.as_str()
            && e["invokedBy"] == "ec2.amazonaws.com"));

    // Attached on host 1: AttachVolume to host 1's instance, then the
    // daemon's one key release. Data written through the FUSE device.
    let dev1 = h1.join("dev");
    let attached = kv(
        h1,
        &[
            "--profile",
            "acct",
            "volume",
            "attach",
            &vol,
            "--device",
            dev1.to_str().unwrap(),
        ],
    );
    assert_eq!(
        attached["Attachments"][0]["InstanceId"],
        instance.as_str(),
        "{attached}"
    );
    let shown = kv(h1, &["--profile", "acct", "volume", "describe", &vol]);
    assert_eq!(shown["State"], "in-use", "{shown}");
    assert_eq!(
        shown["Attachments"][0]["InstanceId"],
        instance.as_str(),
        "{shown}"
    );
    assert_eq!(shown["Attachments"][0]["State"], "attached", "{shown}");
    // The control plane's own view: in use by host 1's instance; its own
    // CLI cannot attach it too, nor delete it.
    let cp_view = kv(k, &["--profile", "acct", "volume", "describe", &vol]);
    assert_eq!(cp_view["State"], "in-use", "{cp_view}");
    assert_eq!(
        cp_view["Attachments"][0]["InstanceId"],
        instance.as_str(),
        "{cp_view}"
    );
    let err = kv_err(k, &["--profile", "acct", "volume", "attach", &vol]);
    assert!(err.contains("VolumeInUse"), "{err}");
    let err = kv_err(k, &["--profile", "acct", "volume", "delete", &vol]);
    assert!(err.contains("VolumeInUse"), "{err}");
    let pattern: Vec<u8> = (0..3 * 4096).map(|i| (i * 7 % 251) as u8).collect();
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev1).unwrap();
        f.write_all_at(&pattern, 1 << 20).unwrap();
        f.sync_all().unwrap();
    }
    // The KMS audit shows the unwrap: by EC2, as the AttachVolume caller.
    let audit = kv(
        k,
        &[
            "--profile",
            "acct",
            "kms",
            "audit",
            "list",
            "--event-name",
            "Decrypt",
        ],
    );
    assert!(
        audit["Events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["userIdentity"]["accessKeyId"] == akid.as_str()
                && e["invokedBy"] == "ec2.amazonaws.com"
                && e.get("errorCode").is_none()),
        "{audit}"
    );
    let described = kv(h1, &["--profile", "acct", "volume", "detach", &vol]);
    let desc_path = h1.join("vol.json");
    std::fs::write(&desc_path, described.to_string()).unwrap();
    let shown = kv(h1, &["--profile", "acct", "volume", "describe", &vol]);
    assert_eq!(shown["State"], "available", "{shown}");

    // A file system on the aws/ebs volume: mount attaches it (AttachVolume,
    // key release), unmount detaches it (daemon stopped, DetachVolume).
    let ebs_id = ebs_vol["VolumeId"].as_str().unwrap().to_string();
    let mnt = h1.join("mnt");
    let mounted = kv(
        h1,
        &[
            "--profile",
            "acct",
            "volume",
            "mount",
            &ebs_id,
            mnt.to_str().unwrap(),
        ],
    );
    assert_eq!(mounted["Mount"]["FileSystem"], "ext4", "{mounted}");
    std::fs::write(mnt.join("hello.txt"), b"on a remote host").unwrap();
    let shown = kv(h1, &["--profile", "acct", "volume", "describe", &ebs_id]);
    assert_eq!(
        shown["Attachments"][0]["InstanceId"],
        instance.as_str(),
        "{shown}"
    );
    kv(
        h1,
        &[
            "--profile",
            "acct",
            "volume",
            "unmount",
            mnt.to_str().unwrap(),
        ],
    );
    let shown = kv(h1, &["--profile", "acct", "volume", "describe", &ebs_id]);
    assert_eq!(shown["State"], "available", "{shown}");
    let remounted = kv(
        h1,
        &[
            "--profile",
            "acct",
            "volume",
            "mount",
            &ebs_id,
            mnt.to_str().unwrap(),
        ],
    );
    assert_eq!(remounted["Mount"]["Formatted"], false, "{remounted}");
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"on a remote host"
    );
    kv(
        h1,
        &[
            "--profile",
            "acct",
            "volume",
            "unmount",
            mnt.to_str().unwrap(),
        ],
    );

    // The daemon in the foreground, as keyvol-attach@.service runs it:
    // AttachVolume, the key release, serving; stopped by `detach`, it
    // exits cleanly and the volume is available again.
    let fg_dev = h1.join("fg.dev");
    let mut fg = Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .args([
            "--profile",
            "acct",
            "volume",
            "attach",
            &ebs_id,
            "--foreground",
        ])
        .arg("--device")
        .arg(&fg_dev)
        .env("KEYVOL_HOME", h1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(fg.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["State"], "attached", "{ready}");
    let shown = kv(h1, &["--profile", "acct", "volume", "describe", &ebs_id]);
    assert_eq!(
        shown["Attachments"][0]["InstanceId"],
        instance.as_str(),
        "{shown}"
    );
    assert_eq!(shown["Attachments"][0]["State"], "attached", "{shown}");
    kv(h1, &["--profile", "acct", "volume", "detach", &ebs_id]);
    assert!(fg.wait().unwrap().success(), "the daemon exits cleanly");
    let shown = kv(h1, &["--profile", "acct", "volume", "describe", &ebs_id]);
    assert_eq!(shown["State"], "available", "{shown}");

    // Grown at the control plane while detached (`volume modify` on the
    // host is ModifyVolume there), the backing file here grows to the new
    // size at the next attach.
    kv(
        h1,
        &[
            "--profile",
            "acct",
            "volume",
            "modify",
            &ebs_id,
            "--size",
            "2GiB",
        ],
    );
    let ebs_backing = h1.join(format!("volumes/us-east-1/{ebs_id}.img"));
    assert!(std::fs::metadata(&ebs_backing).unwrap().len() < 2 << 30);
    // A DetachVolume made elsewhere (here: a client of the control plane
    // as the account root) stops the host's daemon: it polls.
    kv(h1, &["--profile", "acct", "volume", "attach", &ebs_id]);
    assert_eq!(std::fs::metadata(&ebs_backing).unwrap().len(), 2 << 30);
    let elsewhere = keyvol::server::ControlPlaneClient::new(
        &endpoint,
        "us-east-1".parse().unwrap(),
        &akid,
        keyvol::secret::SecretBytes::from_slice(secret.as_bytes()),
        None,
    )
    .unwrap();
    elsewhere
        .ec2("DetachVolume", &[("VolumeId", &ebs_id)])
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = kv(h1, &["--profile", "acct", "volume", "status"]);
        if status["Attachments"] == serde_json::json!([]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon of {ebs_id} still serves after DetachVolume: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // Snapshots are the control plane's, which cannot read host 1's data.
    let snap = Command::new(snap_bin())
        .args(["--profile", "acct", "create", &vol])
        .env("KEYVOL_HOME", h1)
        .output()
        .unwrap();
    assert!(!snap.status.success());
    let err = String::from_utf8_lossy(&snap.stderr);
    assert!(
        err.contains("IncorrectState") && err.contains("control plane"),
        "{err}"
    );

    // Host 2 has no backing file yet: the attach says how to bring it.
    let err = kv_err(h2, &["--profile", "acct", "volume", "attach", &vol]);
    assert!(
        err.contains("InvalidVolume.DataMissing") && err.contains("volume import"),
        "{err}"
    );
    // Host 2 takes the volume over: the same volume id from the control
    // plane's records, its backing file brought over.
    let imported = kv(
        h2,
        &[
            "--profile",
            "acct",
            "volume",
            "import",
            "--volume-json",
            &format!("file://{}", desc_path.display()),
            "--backing-file",
            backing.to_str().unwrap(),
        ],
    );
    assert_eq!(imported["VolumeId"], vol.as_str());
    let dev2 = h2.join("dev");
    kv(
        h2,
        &[
            "--profile",
            "acct",
            "volume",
            "attach",
            &vol,
            "--device",
            dev2.to_str().unwrap(),
        ],
    );
    let f2 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev2)
        .unwrap();
    let mut back = vec![0u8; pattern.len()];
    f2.read_exact_at(&mut back, 1 << 20).unwrap();
    assert_eq!(back, pattern, "host 2 reads what host 1 wrote");
    // One attachment at a time: host 1 cannot attach it meanwhile.
    let err = kv_err(h1, &["--profile", "acct", "volume", "attach", &vol]);
    assert!(err.contains("VolumeInUse"), "{err}");

    // The control plane stops: the attached volume keeps working...
    // SAFETY: SIGTERM to the server we started.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    assert!(
        server.0.wait().unwrap().success(),
        "the server stops gracefully on SIGTERM"
    );
    f2.write_all_at(b"written while the CP is down", 5 << 20)
        .unwrap();
    f2.sync_all().unwrap();
    let mut buf = [0u8; 28];
    f2.read_exact_at(&mut buf, 5 << 20).unwrap();
    assert_eq!(&buf, b"written while the CP is down");
    drop(f2);
    // ...and a new attach fails, naming the unreachable control plane.
    let err = kv_err(h1, &["--profile", "acct", "volume", "attach", &ebs_id]);
    assert!(
        err.contains("ServiceUnavailable")
            && err.contains("cannot reach the control plane at")
            && err.contains(&endpoint),
        "{err}"
    );
    // Detach stops the daemon here, then says the control plane still
    // has to hear of it.
    let err = kv_err(h2, &["--profile", "acct", "volume", "detach", &vol]);
    assert!(
        err.contains("cannot reach the control plane at") && err.contains("detached on this host"),
        "{err}"
    );
    let status = kv(h2, &["--profile", "acct", "volume", "status"]);
    assert_eq!(status["Attachments"], serde_json::json!([]), "{status}");
}

/// A host whose records are at a control plane tags its volumes at
/// creation (`--tag-specifications`) and lists them with `--filters`, both
/// answered by the control plane's CreateVolume and DescribeVolumes; a
/// malformed filter is a usage error that creates nothing.
#[test]
fn a_remote_host_tags_and_filters_its_volumes() {
    let cp_home = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let (k, h) = (cp_home.path(), host.path());
    let (akid, secret) = account(k);
    kv(
        k,
        &[
            "--profile",
            "acct",
            "iam",
            "register-volume-host",
            "--account-root",
        ],
    );
    let (_server, endpoint) = serve(k);
    configure_host(h, &endpoint, &akid, &secret);
    let create = |team: &str| {
        kv(
            h,
            &[
                "--profile",
                "acct",
                "volume",
                "create",
                "--size",
                "16MiB",
                "--tag-specifications",
                &format!(
                    "ResourceType=volume,Tags=[{{Key=team,Value={team}}},{{Key=env,Value=test}}]"
                ),
            ],
        )["VolumeId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let red = create("red");
    let blue = create("blue");
    let listed = |filter: &str| -> Vec<String> {
        let mut ids: Vec<String> = kv(
            h,
            &[
                "--profile",
                "acct",
                "volume",
                "describe-volumes",
                "--filters",
                filter,
            ],
        )["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["VolumeId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(listed("Name=tag:team,Values=red"), vec![red.clone()]);
    assert_eq!(listed("Name=tag:team,Values=blue"), vec![blue.clone()]);
    let mut both = vec![red.clone(), blue.clone()];
    both.sort();
    assert_eq!(listed("Name=tag:env,Values=test"), both);
    assert!(listed("Name=tag:team,Values=green").is_empty());
    // The control plane holds the tags: its own CLI filters by them too.
    let cp = kv(
        k,
        &[
            "--profile",
            "acct",
            "volume",
            "describe-volumes",
            "--filters",
            "Name=tag:team,Values=red",
        ],
    );
    let ids: Vec<&str> = cp["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["VolumeId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![red.as_str()], "{cp}");
    // Bad input: a usage error, and no third volume.
    let err = kv_err(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "describe-volumes",
            "--filters",
            "tag:team=red",
        ],
    );
    assert!(err.contains("filters"), "{err}");
    let err = kv_err(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "create",
            "--size",
            "16MiB",
            "--tag-specifications",
            "ResourceType=snapshot,Tags=[{Key=a,Value=b}]",
        ],
    );
    assert!(err.contains("ResourceType"), "{err}");
    assert_eq!(listed("Name=tag:env,Values=test").len(), 2);
    let all = kv(h, &["--profile", "acct", "volume", "describe-volumes"]);
    assert_eq!(all["Volumes"].as_array().unwrap().len(), 2, "{all}");

    // volume modify is ModifyVolume there, in whole GiB.
    let err = kv_err(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "modify",
            &red,
            "--size",
            "48MiB",
        ],
    );
    assert!(
        err.contains("(InvalidParameterValue)") && err.contains("whole number of GiB"),
        "{err}"
    );
    let cp_size = || kv(k, &["--profile", "acct", "volume", "describe", &red])["Size"].clone();
    assert_eq!(cp_size(), 1, "16 MiB shows as 1 GiB");
    kv(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "modify",
            &red,
            "--size",
            "2GiB",
        ],
    );
    assert_eq!(cp_size(), 2);
    let at_cp = kv(k, &["--profile", "acct", "volume", "describe", &red]);
    assert_eq!(at_cp["SizeInBytes"], 2u64 << 30, "{at_cp}");
}

/// Waits (up to 30 s) until `host` has no live attachment left, then
/// returns how long it took.
fn wait_until_host_detached(host: &Path, vol: &str) -> std::time::Duration {
    let start = std::time::Instant::now();
    let deadline = start + std::time::Duration::from_secs(30);
    loop {
        let status = kv(host, &["--profile", "acct", "volume", "status"]);
        if status["Attachments"] == serde_json::json!([]) {
            return start.elapsed();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon of {vol} still serves on the host: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// On the control plane's own machine, `keyvol volume detach` of a volume
/// attached to a volume host on another machine is the control plane's
/// DetachVolume: authorized as `ec2:DetachVolume` (a principal without it
/// changes nothing), audited, the attachment forgotten; the host's daemon
/// learns it from its long poll and stops. While the volume is mounted on
/// the host the daemon refuses to stop; `detach --force` (DetachVolume
/// with `Force`) makes it undo the mount first, and the data written
/// before is there at the next mount.
#[test]
fn the_control_plane_detaches_a_volume_of_a_remote_host() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let cp_home = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let (k, h) = (cp_home.path(), host.path());
    let (akid, secret) = account(k);
    let instance = kv(
        k,
        &[
            "--profile",
            "acct",
            "iam",
            "register-volume-host",
            "--account-root",
        ],
    )["InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    // A principal of the account with no EC2 permission at all.
    kv(
        k,
        &[
            "--profile",
            "acct",
            "iam",
            "create-user",
            "--user-name",
            "viewer",
            "--profile-name",
            "viewer",
        ],
    );
    let (_server, endpoint) = serve(k);
    configure_host(h, &endpoint, &akid, &secret);
    let vol = kv(
        h,
        &["--profile", "acct", "volume", "create", "--size", "16MiB"],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let dev = h.join("dev");
    kv(
        h,
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
    let cp_state = || kv(k, &["--profile", "acct", "volume", "describe", &vol]);
    assert_eq!(cp_state()["State"], "in-use");

    // Not authorized: refused, and the host keeps its attachment.
    let err = kv_err(k, &["--profile", "viewer", "volume", "detach", &vol]);
    assert!(err.contains("(UnauthorizedOperation)"), "{err}");
    assert_eq!(
        cp_state()["Attachments"][0]["InstanceId"],
        instance.as_str()
    );

    let out = kv(k, &["--profile", "acct", "volume", "detach", &vol]);
    assert_eq!(out["State"], "available", "{out}");
    assert_eq!(
        out["DetachedFrom"]["InstanceId"],
        instance.as_str(),
        "{out}"
    );
    assert_eq!(out["DetachedFrom"]["State"], "detaching", "{out}");
    let took = wait_until_host_detached(h, &vol);
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    // DescribeVolumes, from the host and from a client of the control plane.
    let shown = kv(h, &["--profile", "acct", "volume", "describe", &vol]);
    assert_eq!(shown["State"], "available", "{shown}");
    assert_eq!(shown["Attachments"], serde_json::json!([]), "{shown}");
    let client = keyvol::server::ControlPlaneClient::new(
        &endpoint,
        "us-east-1".parse().unwrap(),
        &akid,
        keyvol::secret::SecretBytes::from_slice(secret.as_bytes()),
        None,
    )
    .unwrap();
    let x = client
        .ec2("DescribeVolumes", &[("VolumeId.1", &vol)])
        .unwrap();
    assert_eq!(
        x.items("volumeSet")[0]
            .without("attachmentSet")
            .text("status")
            .as_deref(),
        Some("available")
    );
    // One allowed DetachVolume by the account root and one refused one by
    // the viewer are in the control plane's audit chain.
    let audit = kv(
        k,
        &[
            "--profile",
            "acct",
            "kms",
            "audit",
            "list",
            "--event-name",
            "DetachVolume",
        ],
    );
    let events = audit["Events"].as_array().unwrap();
    let of = |user: &str, refused: bool| {
        events
            .iter()
            .filter(|e| {
                e["eventSource"] == "ec2.amazonaws.com"
                    && e["userIdentity"]["arn"]
                        .as_str()
                        .is_some_and(|a| a.ends_with(user))
                    && e.get("errorCode").is_some() == refused
            })
            .count()
    };
    assert_eq!(of(":root", false), 1, "{audit}");
    assert_eq!(of(":user/viewer", true), 1, "{audit}");
    // Detached: detach again is EC2's IncorrectState, and the host can
    // attach the volume again.
    let err = kv_err(k, &["--profile", "acct", "volume", "detach", &vol]);
    assert!(err.contains("(IncorrectState)"), "{err}");

    // Mounted on the host: its device is in use, so after a DetachVolume
    // the daemon keeps serving (the mount stays usable)...
    let mnt = h.join("mnt");
    let m = mnt.to_str().unwrap();
    kv(h, &["--profile", "acct", "volume", "mount", &vol, m]);
    std::fs::write(mnt.join("kept.txt"), b"written before the forced detach\n").unwrap();
    let out = kv(k, &["--profile", "acct", "volume", "detach", &vol]);
    assert_eq!(out["State"], "available", "{out}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status = kv(h, &["--profile", "acct", "volume", "status"]);
    assert_eq!(
        status["Attachments"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert!(mnt.join("kept.txt").exists());
    // ... until a forced detach: the daemon unmounts the filesystem, then
    // stops.
    let out = kv(
        k,
        &["--profile", "acct", "volume", "detach", &vol, "--force"],
    );
    assert_eq!(
        out["DetachedFrom"]["InstanceId"],
        instance.as_str(),
        "{out}"
    );
    let took = wait_until_host_detached(h, &vol);
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    assert!(
        !mnt.join("kept.txt").exists(),
        "the filesystem is still mounted"
    );
    // Nothing written before is lost: mounted again, the file is there.
    kv(h, &["--profile", "acct", "volume", "mount", &vol, m]);
    assert_eq!(
        std::fs::read(mnt.join("kept.txt")).unwrap(),
        b"written before the forced detach\n"
    );
    kv(h, &["--profile", "acct", "volume", "unmount", m]);
    assert_eq!(cp_state()["State"], "available");
}

/// The boot table of a host whose records are at a control plane is the
/// host's own: `enable` records a volume held here, `mount --all` attaches
/// it at the control plane (AttachVolume, key release) and mounts it,
/// `unmount --all` unmounts it and detaches it there (DetachVolume), and
/// the data is there at the next `mount --all`.
#[test]
fn a_remote_host_brings_its_volumes_up_at_boot() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let cp_home = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let (k, h) = (cp_home.path(), host.path());
    let (akid, secret) = account(k);
    let instance = kv(
        k,
        &[
            "--profile",
            "acct",
            "iam",
            "register-volume-host",
            "--account-root",
        ],
    )["InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let (_server, endpoint) = serve(k);
    configure_host(h, &endpoint, &akid, &secret);
    let vol = kv(
        h,
        &["--profile", "acct", "volume", "create", "--size", "32MiB"],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let mnt = h.join("srv");
    let mnt_s = mnt.to_str().unwrap();

    // Only a volume of the control plane whose data is on this host.
    let cp_only = kv(
        k,
        &["--profile", "acct", "volume", "create", "--size", "16MiB"],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let err = kv_err(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "enable",
            &cp_only,
            "--mount",
            mnt_s,
        ],
    );
    assert!(
        err.contains("(InvalidVolume.DataMissing)") && err.contains("volume import"),
        "{err}"
    );
    let err = kv_err(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "enable",
            "vol-0123456789abcdef0",
            "--mount",
            mnt_s,
        ],
    );
    assert!(err.contains("(InvalidVolume.NotFound)"), "{err}");

    let enabled = kv(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "enable",
            &vol,
            "--mount",
            mnt_s,
        ],
    );
    assert_eq!(enabled["BootVolume"]["VolumeId"], vol.as_str(), "{enabled}");
    let boot_status = || kv(h, &["--profile", "acct", "volume", "status"]);
    let st = boot_status();
    assert_eq!(st["BootVolumes"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["BootVolumes"][0]["VolumeId"], vol.as_str(), "{st}");
    assert_eq!(st["BootVolumes"][0]["Up"], false, "{st}");

    let cp_view = || kv(k, &["--profile", "acct", "volume", "describe", &vol]);
    let up = kv(h, &["--profile", "acct", "volume", "mount", "--all"]);
    assert_eq!(up["Volumes"][0]["Action"], "mounted", "{up}");
    assert_eq!(boot_status()["BootVolumes"][0]["Up"], true);
    let seen = cp_view();
    assert_eq!(seen["State"], "in-use", "{seen}");
    assert_eq!(
        seen["Attachments"][0]["InstanceId"],
        instance.as_str(),
        "{seen}"
    );
    // Up already: left alone.
    let again = kv(h, &["--profile", "acct", "volume", "mount", "--all"]);
    assert_eq!(again["Volumes"][0]["Action"], "already-mounted", "{again}");
    std::fs::write(mnt.join("boot.txt"), b"survives a reboot").unwrap();

    let down = kv(h, &["--profile", "acct", "volume", "unmount", "--all"]);
    assert_eq!(down["Volumes"][0]["Action"], "unmounted", "{down}");
    assert_eq!(cp_view()["State"], "available");
    assert_eq!(cp_view()["Attachments"], serde_json::json!([]));
    let st = boot_status();
    assert_eq!(st["Attachments"], serde_json::json!([]), "{st}");
    assert_eq!(st["BootVolumes"][0]["Up"], false, "{st}");

    let up = kv(h, &["--profile", "acct", "volume", "mount", "--all"]);
    assert_eq!(up["Volumes"][0]["Action"], "mounted", "{up}");
    assert_eq!(
        std::fs::read(mnt.join("boot.txt")).unwrap(),
        b"survives a reboot"
    );
    kv(h, &["--profile", "acct", "volume", "unmount", "--all"]);
    assert_eq!(cp_view()["State"], "available");

    let off = kv(h, &["--profile", "acct", "volume", "disable", &vol]);
    assert_eq!(off["Disabled"], true, "{off}");
    assert_eq!(boot_status()["BootVolumes"], serde_json::json!([]));
    let err = kv_err(h, &["--profile", "acct", "volume", "disable", &vol]);
    assert!(err.contains("not enabled for boot"), "{err}");
}

/// The files of `vol` under `home` (backing file, change log, map, ...).
fn files_of(home: &Path, vol: &str) -> Vec<std::path::PathBuf> {
    all_files(home)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(vol))
        })
        .collect()
}

/// The control plane makes a volume's backing file only when the volume
/// is first used on its own machine: a volume a remote host created and
/// holds leaves no file in the control plane's home, and one created by
/// CreateVolume there gets its file at its first attach (or snapshot),
/// at the size it has by then, reading as zeros.
#[test]
fn the_control_plane_makes_a_backing_file_only_where_the_data_is() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let cp_home = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let (k, h) = (cp_home.path(), host.path());
    let (akid, secret) = account(k);
    kv(
        k,
        &[
            "--profile",
            "acct",
            "iam",
            "register-volume-host",
            "--account-root",
        ],
    );
    let (_server, endpoint) = serve(k);
    configure_host(h, &endpoint, &akid, &secret);

    // The host's volume: its file is the host's only.
    let vol = kv(
        h,
        &["--profile", "acct", "volume", "create", "--size", "16MiB"],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let dev = h.join("dev");
    kv(
        h,
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
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&[0x77; 8192], 4096).unwrap();
        f.sync_all().unwrap();
    }
    kv(h, &["--profile", "acct", "volume", "detach", &vol]);
    assert!(files_of(k, &vol).is_empty(), "{:?}", files_of(k, &vol));
    let held = h.join(format!("volumes/us-east-1/{vol}.img"));
    assert_eq!(std::fs::metadata(&held).unwrap().len(), 16 << 20);

    // CreateVolume at the control plane (as the aws CLI would): no file
    // until its first use there, a ModifyVolume meanwhile is just the
    // record's.
    let client = keyvol::server::ControlPlaneClient::new(
        &endpoint,
        "us-east-1".parse().unwrap(),
        &akid,
        keyvol::secret::SecretBytes::from_slice(secret.as_bytes()),
        None,
    )
    .unwrap();
    let create = || common::serve::create_volume(&client, &[("Size", "1")]);
    let lazy = create();
    assert!(files_of(k, &lazy).is_empty(), "{:?}", files_of(k, &lazy));
    client
        .ec2("ModifyVolume", &[("VolumeId", &lazy), ("Size", "2")])
        .unwrap();
    assert!(files_of(k, &lazy).is_empty());
    let cp_dev = k.join("dev");
    kv(
        k,
        &[
            "--profile",
            "acct",
            "volume",
            "attach",
            &lazy,
            "--device",
            cp_dev.to_str().unwrap(),
        ],
    );
    let backing = k.join(format!("volumes/us-east-1/{lazy}.img"));
    assert_eq!(std::fs::metadata(&backing).unwrap().len(), 2 << 30);
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cp_dev)
            .unwrap();
        let mut first = vec![0xffu8; 65536];
        f.read_exact_at(&mut first, (2 << 30) - 65536).unwrap();
        assert!(first.iter().all(|&b| b == 0), "a new volume reads as zeros");
        f.write_all_at(b"made at first use", 1 << 20).unwrap();
        f.sync_all().unwrap();
    }
    kv(k, &["--profile", "acct", "volume", "detach", &lazy]);
    kv(
        k,
        &[
            "--profile",
            "acct",
            "volume",
            "attach",
            &lazy,
            "--device",
            cp_dev.to_str().unwrap(),
        ],
    );
    {
        let f = std::fs::File::open(&cp_dev).unwrap();
        let mut back = [0u8; 17];
        f.read_exact_at(&mut back, 1 << 20).unwrap();
        assert_eq!(&back, b"made at first use");
    }
    kv(k, &["--profile", "acct", "volume", "detach", &lazy]);

    // A snapshot of a volume never used: its file is made then, and the
    // snapshot holds no block.
    let unused = create();
    let snap = snapshot_and_wait(k, "acct", &unused);
    assert_eq!(snap["State"], "completed", "{snap}");
    assert!(k.join(format!("volumes/us-east-1/{unused}.img")).exists());
    // Deleting a volume never used removes what there is.
    let never = create();
    client.ec2("DeleteVolume", &[("VolumeId", &never)]).unwrap();
    assert!(files_of(k, &never).is_empty());
}

/// The keyvol extension parameter of DescribeVolumes that answers where a
/// volume's data is (`dataHostInstanceId`).
const DETAILS: (&str, &str) = (keyvol::volume::remote::KEYVOL_DETAILS, "true");

/// SHA-256 (hex) of every regular file under `dir`, by name.
fn tree_digests(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    all_files(dir)
        .into_iter()
        .filter(|p| !p.starts_with(dir.join("lost+found")))
        .map(|p| {
            let name = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (
                name,
                hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap())),
            )
        })
        .collect()
}

/// A client of the control plane at `endpoint` signing as `akid`.
fn client_of(endpoint: &str, akid: &str, secret: &str) -> keyvol::server::ControlPlaneClient {
    keyvol::server::ControlPlaneClient::new(
        endpoint,
        "us-east-1".parse().unwrap(),
        akid,
        keyvol::secret::SecretBytes::from_slice(secret.as_bytes()),
        None,
    )
    .unwrap()
}

/// Mounts `vol` on `host` at `dir`, returns the digests of its files and
/// unmounts it again (the unmount detaches it).
fn mounted_digests(
    host: &Path,
    vol: &str,
    dir: &Path,
) -> std::collections::BTreeMap<String, String> {
    let d = dir.to_str().unwrap();
    let m = kv(host, &["--profile", "acct", "volume", "mount", vol, d]);
    assert_eq!(m["Mount"]["Formatted"], false, "{m}");
    let digests = tree_digests(dir);
    kv(host, &["--profile", "acct", "volume", "unmount", d]);
    digests
}

/// Restores on a host whose records are at a control plane: `volume
/// create --snapshot-id` is CreateVolume there, then a sparse copy here
/// that hydrates from the snapshot through the EBS direct APIs (lazily,
/// and in the attach daemon's background; at once with `--hydrate`); a
/// restore someone else made at the control plane and no machine used is
/// taken up at its first mount; one whose data is elsewhere is not.
#[test]
fn a_remote_host_restores_snapshots_through_the_ebs_direct_apis() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let cp_home = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let (k, h) = (cp_home.path(), host.path());
    let (akid, secret) = account(k);
    let instance = kv(
        k,
        &[
            "--profile",
            "acct",
            "iam",
            "register-volume-host",
            "--account-root",
        ],
    )["InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let (_server, endpoint) = serve(k);
    configure_host(h, &endpoint, &akid, &secret);
    let client = client_of(&endpoint, &akid, &secret);

    // Files on a volume of the control plane's own machine, snapshotted
    // there.
    let src = kv(
        k,
        &["--profile", "acct", "volume", "create", "--size", "32MiB"],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let cp_mnt = k.join("mnt");
    kv(
        k,
        &[
            "--profile",
            "acct",
            "volume",
            "mount",
            &src,
            cp_mnt.to_str().unwrap(),
        ],
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..(5 << 20) + 123)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(cp_mnt.join("big.bin"), &big).unwrap();
    std::fs::create_dir(cp_mnt.join("etc")).unwrap();
    std::fs::write(cp_mnt.join("etc/small.txt"), b"restored on a remote host\n").unwrap();
    let want = tree_digests(&cp_mnt);
    assert_eq!(want.len(), 2, "{want:?}");
    kv(
        k,
        &[
            "--profile",
            "acct",
            "volume",
            "unmount",
            cp_mnt.to_str().unwrap(),
        ],
    );
    let snap = snapshot_and_wait(k, "acct", &src)["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();

    // A lazy restore: its blocks come on first read, then in the
    // background while attached.
    let r1 = kv(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "create",
            "--snapshot-id",
            &snap,
        ],
    );
    let v1 = r1["VolumeId"].as_str().unwrap().to_string();
    assert_eq!(r1["SnapshotId"], snap.as_str(), "{r1}");
    assert_eq!(r1["SizeInBytes"], 32 << 20, "{r1}");
    assert_eq!(r1["HeldOnThisHost"], true, "{r1}");
    assert!(r1["HydrationPendingChunks"].as_u64().unwrap() > 0, "{r1}");
    assert!(
        !k.join(format!("volumes/us-east-1/{v1}.img")).exists(),
        "the control plane makes no backing file for a host's restore"
    );
    let m1 = h.join("m1");
    assert_eq!(mounted_digests(h, &v1, &m1), want);
    // Those blocks came through GetSnapshotBlock, as the host's principal.
    let gets = kv(
        k,
        &[
            "--profile",
            "acct",
            "kms",
            "audit",
            "list",
            "--event-name",
            "GetSnapshotBlock",
        ],
    );
    assert!(
        gets["Events"].as_array().unwrap().iter().any(|e| {
            e["userIdentity"]["accessKeyId"] == akid.as_str() && e.get("errorCode").is_none()
        }),
        "{gets}"
    );
    let cp_view = |v: &str| kv(k, &["--profile", "acct", "volume", "describe", v]);
    assert_eq!(cp_view(&v1)["State"], "available");
    // Attached, the daemon fetches the rest.
    kv(h, &["--profile", "acct", "volume", "attach", &v1]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let d = kv(h, &["--profile", "acct", "volume", "describe", &v1]);
        if d["HydrationPendingChunks"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still hydrating: {d}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    kv(h, &["--profile", "acct", "volume", "detach", &v1]);
    assert_eq!(mounted_digests(h, &v1, &m1), want, "after full hydration");
    // The control plane now says where the data is.
    let x1 = client
        .ec2("DescribeVolumes", &[("VolumeId.1", &v1), DETAILS])
        .unwrap();
    assert_eq!(
        x1.text("dataHostInstanceId").as_deref(),
        Some(instance.as_str())
    );

    // --hydrate, larger than the snapshot: every block now.
    let r2 = kv(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "create",
            "--snapshot-id",
            &snap,
            "--size",
            "64MiB",
            "--hydrate",
        ],
    );
    let v2 = r2["VolumeId"].as_str().unwrap().to_string();
    assert_eq!(r2["HydrationPendingChunks"], 0, "{r2}");
    assert_eq!(r2["SizeInBytes"], 64 << 20, "{r2}");
    assert_eq!(r2["State"], "available", "{r2}");
    assert_eq!(cp_view(&v2)["SizeInBytes"], 64 << 20);
    assert_eq!(mounted_digests(h, &v2, &h.join("m2")), want);
    // Both hydrated on the host, which said so (KeyvolReportHostHydrated):
    // the control plane keeps no pending hydration of them, which would
    // hold the snapshot in use.
    for v in [&v1, &v2] {
        let map = k.join(format!("volumes/us-east-1/{v}.hydrate"));
        assert!(!map.exists(), "{} is still there", map.display());
    }

    // CreateVolume --snapshot-id by another client, never used anywhere:
    // the host takes it up at its first mount, no `volume import`.
    let v3 = common::serve::create_volume(&client, &[("SnapshotId", &snap)]);
    let x3 = client
        .ec2("DescribeVolumes", &[("VolumeId.1", &v3), DETAILS])
        .unwrap();
    assert_eq!(x3.text("dataHostInstanceId"), None);
    assert_eq!(x3.text("sizeInBytes").as_deref(), Some("33554432"));
    // Without the extension parameter, EC2's Volume only.
    let plain = client
        .ec2("DescribeVolumes", &[("VolumeId.1", &v1)])
        .unwrap();
    assert_eq!(plain.text("sizeInBytes"), None);
    assert_eq!(plain.text("dataHostInstanceId"), None);
    assert_eq!(mounted_digests(h, &v3, &h.join("m3")), want);
    let d3 = kv(h, &["--profile", "acct", "volume", "describe", &v3]);
    assert_eq!(d3["HeldOnThisHost"], true, "{d3}");
    // Such a restore can be enabled for boot too: `mount --all` takes it up.
    let v5 = common::serve::create_volume(&client, &[("SnapshotId", &snap)]);
    let m5 = h.join("m5");
    kv(
        h,
        &[
            "--profile",
            "acct",
            "volume",
            "enable",
            &v5,
            "--mount",
            m5.to_str().unwrap(),
        ],
    );
    let up = kv(h, &["--profile", "acct", "volume", "mount", "--all"]);
    assert_eq!(up["Volumes"][0]["Action"], "mounted", "{up}");
    assert_eq!(tree_digests(&m5), want);
    kv(h, &["--profile", "acct", "volume", "unmount", "--all"]);
    kv(h, &["--profile", "acct", "volume", "disable", &v5]);

    // A restore the control plane's machine used holds its data there: a
    // host does not take it up from the snapshot.
    let v4 = kv(
        k,
        &[
            "--profile",
            "acct",
            "volume",
            "create",
            "--snapshot-id",
            &snap,
        ],
    )["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    kv(k, &["--profile", "acct", "volume", "attach", &v4]);
    kv(k, &["--profile", "acct", "volume", "detach", &v4]);
    let err = kv_err(h, &["--profile", "acct", "volume", "attach", &v4]);
    let cp_instance = keyvol::volume::service::host_instance_id("444455556666", "us-east-1");
    assert!(
        err.contains("(InvalidVolume.DataMissing)")
            && err.contains(&format!("its data is on instance {cp_instance}")),
        "{err}"
    );
    assert!(files_of(h, &v4).is_empty(), "{:?}", files_of(h, &v4));
}

/// A host principal of another account cannot hydrate from a snapshot
/// that is not (or no longer) shared with it: the EBS calls are refused,
/// so the attach of its restored volume fails, saying why, and nothing is
/// made on the host or at the control plane; a block token of the owner's
/// is no good to it either.
#[test]
fn a_host_of_another_account_cannot_hydrate_from_an_unshared_snapshot() {
    use base64::Engine;
    use sha2::Digest;
    let cp_home = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let (k, hb) = (cp_home.path(), host.path());
    let (akid, secret) = account(k);
    let b = kv(
        k,
        &[
            "iam",
            "create-account",
            "--account-id",
            "777788889999",
            "--profile-name",
            "b",
        ],
    );
    let b_akid = b["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string();
    let b_secret = b["AccessKey"]["SecretAccessKey"]
        .as_str()
        .unwrap()
        .to_string();
    kv(
        k,
        &[
            "--profile",
            "b",
            "iam",
            "register-volume-host",
            "--account-root",
        ],
    );
    // A's key, usable by B (so that a share can be restored).
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::777788889999:root"},
         "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"], "Resource": "*"}]});
    let policy_path = k.join("policy.json");
    std::fs::write(&policy_path, policy.to_string()).unwrap();
    let key = kv(
        k,
        &[
            "--profile",
            "acct",
            "kms",
            "create-key",
            "--policy",
            &format!("file://{}", policy_path.display()),
        ],
    )["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let (_server, endpoint) = serve(k);
    configure_host_of(hb, &endpoint, &b_akid, &b_secret, "777788889999");
    let a = client_of(&endpoint, &akid, &secret);
    let bc = client_of(&endpoint, &b_akid, &b_secret);

    // A's snapshot of one block, written with the EBS direct APIs.
    let started = a
        .ebs(
            "POST",
            "/snapshots",
            "",
            &[("content-type".to_string(), "application/json".to_string())],
            serde_json::json!({"VolumeSize": 1, "KmsKeyArn": key, "Encrypted": true})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
        .json();
    let snap = started["SnapshotId"].as_str().unwrap().to_string();
    let block = vec![0x5au8; 512 * 1024];
    let b64 = base64::engine::general_purpose::STANDARD;
    let sum = b64.encode(sha2::Sha256::digest(&block));
    a.ebs(
        "PUT",
        &format!("/snapshots/{snap}/blocks/0"),
        "",
        &[
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
            ("x-amz-data-length".to_string(), block.len().to_string()),
            ("x-amz-checksum".to_string(), sum),
            ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
        ],
        &block,
    )
    .unwrap();
    a.ebs(
        "POST",
        &format!("/snapshots/completion/{snap}"),
        "",
        &[("x-amz-changedblockscount".to_string(), "1".to_string())],
        b"",
    )
    .unwrap();
    let share = |op: &str| {
        a.ec2(
            "ModifySnapshotAttribute",
            &[
                ("SnapshotId", &snap),
                ("Attribute", "createVolumePermission"),
                ("OperationType", op),
                ("UserId.1", "777788889999"),
            ],
        )
        .unwrap();
    };
    let blocks = |c: &keyvol::server::ControlPlaneClient| {
        c.ebs("GET", &format!("/snapshots/{snap}/blocks"), "", &[], b"")
    };
    // Shared, B restores it at the control plane (as the aws CLI would)
    // and may read it.
    share("add");
    let vol = common::serve::create_volume(&bc, &[("SnapshotId", &snap)]);
    assert_eq!(
        blocks(&bc).unwrap().json()["Blocks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let token = blocks(&a).unwrap().json()["Blocks"][0]["BlockToken"]
        .as_str()
        .unwrap()
        .to_string();
    // No longer shared: B's host cannot hydrate the restore.
    share("remove");
    let refused = blocks(&bc).unwrap_err();
    assert!(
        ["ResourceNotFoundException", "AccessDeniedException"].contains(&refused.code.as_str()),
        "{refused:?}"
    );
    let enc: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect();
    let leaked = bc.ebs(
        "GET",
        &format!("/snapshots/{snap}/blocks/0"),
        &format!("blockToken={enc}"),
        &[],
        b"",
    );
    assert!(leaked.is_err(), "B read A's block with A's token");
    // The owner's token is good for the owner.
    assert_eq!(
        a.ebs(
            "GET",
            &format!("/snapshots/{snap}/blocks/0"),
            &format!("blockToken={enc}"),
            &[],
            b"",
        )
        .unwrap()
        .body
        .len(),
        block.len()
    );

    let mnt = hb.join("mnt");
    for args in [
        vec!["--profile", "acct", "volume", "attach", vol.as_str()],
        vec![
            "--profile",
            "acct",
            "volume",
            "mount",
            vol.as_str(),
            mnt.to_str().unwrap(),
        ],
    ] {
        let err = kv_err(hb, &args);
        assert!(
            err.contains(&format!(
                "cannot be restored on this host from snapshot {snap}"
            )) && err.contains("ListSnapshotBlocks")
                && (err.contains("(ResourceNotFoundException)")
                    || err.contains("(AccessDeniedException)")),
            "{args:?}: {err}"
        );
    }
    assert!(files_of(hb, &vol).is_empty(), "{:?}", files_of(hb, &vol));
    assert!(!mnt.exists());
    let shown = kv(hb, &["--profile", "acct", "volume", "describe", &vol]);
    assert_eq!(shown["HeldOnThisHost"], false, "{shown}");
    assert_eq!(shown["State"], "available", "{shown}");
    assert_eq!(shown["Attachments"], serde_json::json!([]), "{shown}");
    let x = bc
        .ec2("DescribeVolumes", &[("VolumeId.1", &vol), DETAILS])
        .unwrap();
    assert_eq!(x.text("dataHostInstanceId"), None);
    assert!(x.text("sizeInBytes").is_some());
    // A new restore of it from B's host is CreateVolume's refusal, and
    // leaves no volume behind.
    let err = kv_err(
        hb,
        &[
            "--profile",
            "acct",
            "volume",
            "create",
            "--snapshot-id",
            &snap,
        ],
    );
    assert!(err.contains("CreateVolume"), "{err}");
    let all = kv(hb, &["--profile", "acct", "volume", "describe-volumes"]);
    assert_eq!(all["Volumes"].as_array().unwrap().len(), 1, "{all}");
}
