//! Prometheus metrics: `keyvol serve --metrics` counts KMS requests by
//! operation and outcome with latency histograms, and the attach daemon's
//! `--metrics` counts bytes and operations of its device and the chunks a
//! snapshot reads. Each test scrapes, makes traffic, scrapes again and
//! checks that the counters moved by exactly that traffic.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// `GET /metrics` over plain HTTP/1.1.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.to_string()
}

/// The value of the sample `name` whose labels include all of `labels`
/// (0 when there is none yet).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) of a child this test spawned.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn serve_metrics_count_requests_by_operation_and_outcome() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let acct = keyvol_json(
        h,
        &[
            "iam",
            "create-account",
            "--account-id",
            "444455556666",
            "--profile-name",
            "b",
        ],
    );
    let (id, secret) = (
        acct["AccessKey"]["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_string(),
        acct["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let key = keyvol_json(h, &["--profile", "b", "kms", "create-key"])["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyvol"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .env("KEYVOL_HOME", h)
        .env_remove("KEYVOL_KMS_ENDPOINT")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Killed(child);
    let ready: Value = serde_json::from_str(&line).unwrap();
    let endpoint = ready["Endpoint"].as_str().unwrap().to_string();
    let metrics = ready["Metrics"].as_str().unwrap();
    let maddr = metrics
        .strip_prefix("http://")
        .unwrap()
        .strip_suffix("/metrics")
        .unwrap()
        .to_string();

    let before = scrape(&maddr);
    let ok = [("operation", "Encrypt"), ("outcome", "ok")];
    let bad = [
        ("operation", "Decrypt"),
        ("outcome", "InvalidCiphertextException"),
    ];
    let script = format!(
        "import boto3, botocore\n\
         c = boto3.client('kms', endpoint_url='{endpoint}', region_name='us-east-1', aws_access_key_id='{id}', aws_secret_access_key='{secret}')\n\
         for i in range(3):\n    c.encrypt(KeyId='{key}', Plaintext=b'x' * (i + 1))\n\
         try:\n    c.decrypt(CiphertextBlob=b'\\x01' * 64)\n    raise SystemExit('decrypt of garbage worked')\n\
         except botocore.exceptions.ClientError as e:\n    assert e.response['Error']['Code'] == 'InvalidCiphertextException', e\n"
    );
    let out = Command::new(common::serve::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = scrape(&maddr);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(delta("keyvol_kms_requests_total", &ok), 3.0, "{after}");
    assert_eq!(delta("keyvol_kms_requests_total", &bad), 1.0, "{after}");
    let enc = [("operation", "Encrypt")];
    assert_eq!(
        delta("keyvol_kms_request_duration_seconds_count", &enc),
        3.0
    );
    assert!(delta("keyvol_kms_request_duration_seconds_sum", &enc) > 0.0);
    // The histogram has buckets, and +Inf holds every request.
    let inf = [("operation", "Encrypt"), ("le", "+Inf")];
    assert_eq!(
        delta("keyvol_kms_request_duration_seconds_bucket", &inf),
        3.0
    );
    assert!(
        after.contains("# TYPE keyvol_kms_request_duration_seconds histogram"),
        "{after}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn dd(args: &[String]) {
    let out = Command::new("dd").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "dd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn attach_daemon_metrics_count_device_traffic_and_snapshot_reads() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let vol = keyvol_json(h, &["volume", "create", "--size", "16MiB"])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let dev = h.join("dev");
    let maddr = format!("127.0.0.1:{}", free_port());
    keyvol_json(
        h,
        &[
            "volume",
            "attach",
            &vol,
            "--device",
            dev.to_str().unwrap(),
            "--metrics",
            &maddr,
        ],
    );
    struct Detach<'a>(&'a Path, String);
    impl Drop for Detach<'_> {
        fn drop(&mut self) {
            let _ = keyvol(self.0, &["volume", "detach", &self.1, "--force"]);
        }
    }
    let _detach = Detach(h, vol.clone());
    let label = [("volume_id", vol.as_str())];
    let before = scrape(&maddr);
    let d = dev.display();
    dd(&[
        "if=/dev/urandom".into(),
        format!("of={d}"),
        "bs=1M".into(),
        "count=4".into(),
        "oflag=direct".into(),
        "conv=notrunc".into(),
    ]);
    dd(&[
        format!("if={d}"),
        "of=/dev/null".into(),
        "bs=1M".into(),
        "count=2".into(),
        "iflag=direct".into(),
    ]);
    let after = scrape(&maddr);
    let delta = |name: &str| sample(&after, name, &label) - sample(&before, name, &label);
    assert_eq!(
        delta("keyvol_volume_written_bytes_total"),
        (4 << 20) as f64,
        "{after}"
    );
    assert_eq!(
        delta("keyvol_volume_read_bytes_total"),
        (2 << 20) as f64,
        "{after}"
    );
    assert!(delta("keyvol_volume_write_ops_total") >= 4.0);
    assert!(delta("keyvol_volume_read_ops_total") >= 2.0);
    let errors_before = sample(&after, "keyvol_volume_errors_total", &label);

    // The first snapshot of the attached volume cuts all its 32 chunks of
    // 512 KiB and reads each through the daemon once.
    let snap = Path::new(env!("CARGO_BIN_EXE_keyvol")).with_file_name("keyvol-snap");
    let out = Command::new(&snap)
        .args(["create", &vol, "--wait"])
        .env("KEYVOL_HOME", h)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapped = scrape(&maddr);
    assert_eq!(
        sample(&snapped, "keyvol_volume_snapshot_cut_chunks", &label),
        32.0,
        "{snapped}"
    );
    assert_eq!(
        sample(&snapped, "keyvol_volume_snapshot_chunks_read_total", &label)
            - sample(&after, "keyvol_volume_snapshot_chunks_read_total", &label),
        32.0
    );
    assert_eq!(
        sample(&snapped, "keyvol_volume_errors_total", &label),
        errors_before
    );

    // A volume restored from the snapshot hydrates in the background while
    // attached; its daemon reports the progress.
    let snap_id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = keyvol_json(h, &["volume", "create", "--snapshot-id", &snap_id])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let dev2 = h.join("dev2");
    let maddr2 = format!("127.0.0.1:{}", free_port());
    keyvol_json(
        h,
        &[
            "volume",
            "attach",
            &restored,
            "--device",
            dev2.to_str().unwrap(),
            "--metrics",
            &maddr2,
        ],
    );
    let _detach2 = Detach(h, restored.clone());
    let label2 = [("volume_id", restored.as_str())];
    let mut last = String::new();
    for _ in 0..600 {
        last = scrape(&maddr2);
        let total = sample(&last, "keyvol_volume_hydration_chunks_total", &label2);
        if total > 0.0 && sample(&last, "keyvol_volume_hydration_chunks_done", &label2) == total {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let total = sample(&last, "keyvol_volume_hydration_chunks_total", &label2);
    assert!(total > 0.0, "no hydration reported: {last}");
    assert_eq!(
        sample(&last, "keyvol_volume_hydration_chunks_done", &label2),
        total,
        "{last}"
    );
}
