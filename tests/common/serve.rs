//! A real server for the client tests: the keyvol CLI run on a home,
//! access keys as `keyvol iam` prints them, `keyvol serve` / `keyvol kms
//! serve` as a child process, the venv of scripts/setup.sh, and a SigV4
//! signed EC2 Query client that returns the XML text of a response.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keyvol::secret::SecretBytes;
use keyvol::server::sigv4::{self, HttpRequest, SigningParams};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_keyvol");

/// The environment a child keyvol must not inherit from the developer's
/// shell: it would point the test at another KMS, profile, region or time.
const SCRUBBED: &[&str] = &[
    "KEYVOL_KMS_ENDPOINT",
    "KEYVOL_PROFILE",
    "KEYVOL_REGION",
    "KEYVOL_TIME_OFFSET",
];

fn command(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--home").arg(home);
    for v in SCRUBBED {
        c.env_remove(v);
    }
    c
}

/// The server of this process on loopback, serving `kms` and the IAM of
/// the home at `dir` (the server runs in the test process, on threads of
/// its own), and its endpoint URL.
pub fn serve_in_process(
    kms: std::sync::Arc<keyvol::kms::Kms>,
    dir: &Path,
) -> (keyvol::server::ServerHandle, String) {
    let home = std::sync::Arc::new(keyvol::home::Home::open(dir).unwrap());
    let iam = keyvol::iam::Iam::open(home, keyvol::clock::Clock::system()).unwrap();
    let service = keyvol::server::HomeKmsService::new(kms, iam);
    let srv = keyvol::server::start(
        std::sync::Arc::new(service),
        "127.0.0.1:0".parse().unwrap(),
        keyvol::server::ServeOptions::default(),
    )
    .unwrap();
    let endpoint = format!("http://{}", srv.local_addr());
    (srv, endpoint)
}

/// `keyvol kms audit list --event-name EVENT` on `home` as `profile`: the
/// listing (its `Events`).
pub fn audit_list(home: &Path, profile: &str, event: &str) -> Value {
    cli(
        home,
        &[
            "--profile",
            profile,
            "kms",
            "audit",
            "list",
            "--event-name",
            event,
        ],
    )
}

/// CreateVolume in us-east-1a with `params` (a Size or a SnapshotId, ...)
/// through the control plane: the new volume's id.
pub fn create_volume(c: &keyvol::server::ControlPlaneClient, params: &[(&str, &str)]) -> String {
    let mut all = params.to_vec();
    all.push(("AvailabilityZone", "us-east-1a"));
    c.ec2("CreateVolume", &all)
        .unwrap()
        .text("volumeId")
        .unwrap()
}

/// Runs the keyvol CLI on `home`: stdout parsed as JSON, or the exit code
/// and stderr.
pub fn cli_raw(home: &Path, args: &[&str]) -> Result<Value, (i32, String)> {
    let out = command(home).args(args).output().unwrap();
    if !out.status.success() {
        return Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "keyvol {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

/// Runs the keyvol CLI on `home`; a failure fails the test.
pub fn cli(home: &Path, args: &[&str]) -> Value {
    cli_raw(home, args).unwrap_or_else(|(code, err)| panic!("keyvol {args:?} exit {code}: {err}"))
}

/// An access key as `keyvol iam` prints it.
#[derive(Clone, Debug)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

pub fn key_of(v: &Value) -> Key {
    Key {
        id: v["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string(),
        secret: v["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

/// `keyvol iam create-account`: the account's root key, under profile
/// `profile`.
pub fn create_account(home: &Path, account: &str, profile: &str) -> Key {
    key_of(&cli(
        home,
        &[
            "iam",
            "create-account",
            "--account-id",
            account,
            "--profile-name",
            profile,
        ],
    ))
}

/// Points the host home `host` at the control plane `endpoint` and stores
/// `key` of `account` as its profile `acct`.
pub fn configure_host(host: &Path, endpoint: &str, account: &str, key: &Key) {
    cli(host, &["configure", "set", "kms-endpoint", endpoint]);
    let mut child = command(host)
        .args(["configure", "import-profile", "--profile-name", "acct"])
        .args(["--account-id", account, "--access-key-id", &key.id])
        .args(["--secret-access-key", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.secret.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A user of `profile`'s account with an access key and no policy.
pub fn create_user(home: &Path, profile: &str, user: &str) -> Key {
    cli(
        home,
        &[
            "--profile",
            profile,
            "iam",
            "create-user",
            "--user-name",
            user,
        ],
    );
    key_of(&cli(
        home,
        &[
            "--profile",
            profile,
            "iam",
            "create-access-key",
            "--user-name",
            user,
        ],
    ))
}

/// A user of `profile`'s account with the inline policy `policy` (named
/// `p`, written to a file in `dir`) and an access key.
pub fn create_user_with_policy(
    home: &Path,
    dir: &Path,
    profile: &str,
    user: &str,
    policy: &str,
) -> Key {
    let key = create_user(home, profile, user);
    let file = dir.join(format!("{user}.json"));
    std::fs::write(&file, policy).unwrap();
    cli(
        home,
        &[
            "--profile",
            profile,
            "iam",
            "put-user-policy",
            "--user-name",
            user,
            "--policy-name",
            "p",
            "--policy-document",
            &format!("file://{}", file.display()),
        ],
    );
    key
}

/// A keyvol server as a child process, killed on drop.
pub struct Served {
    pub child: Child,
    /// The line the server prints when it listens (`Listening`,
    /// `Endpoint`, `Tls`, ...).
    pub ready: Value,
}

impl Served {
    /// Runs `keyvol --home HOME ARGS...` and waits for its ready line.
    pub fn spawn<I, S>(home: &Path, args: I) -> Served
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Served::spawn_with_env(home, args, &[])
    }

    /// [`Served::spawn`] with extra environment variables.
    pub fn spawn_with_env<I, S>(home: &Path, args: I, env: &[(&str, &str)]) -> Served
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = command(home)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Killed on drop even when the line is not what was expected.
        let mut served = Served {
            child,
            ready: Value::Null,
        };
        served.ready = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the server printed {line:?} ({e}) instead of its address"));
        served
    }

    /// `keyvol serve` (`cmd` = `["serve"]`) or `keyvol kms serve`
    /// (`["kms", "serve"]`) over plain HTTP on a free port of 127.0.0.1.
    pub fn start(home: &Path, cmd: &[&str]) -> Served {
        let s = Served::spawn(
            home,
            cmd.iter()
                .copied()
                .chain(["--listen", "127.0.0.1:0"].iter().copied()),
        );
        assert_eq!(s.ready["Tls"], false, "{}", s.ready);
        let addr = s.addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(s.ready["Endpoint"], format!("http://{addr}"));
        s
    }

    pub fn addr(&self) -> SocketAddr {
        self.ready["Listening"].as_str().unwrap().parse().unwrap()
    }

    pub fn endpoint(&self) -> String {
        self.ready["Endpoint"].as_str().unwrap().to_string()
    }

    /// SIGTERM; the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of a child this test spawned.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The venv scripts/setup.sh creates (boto3, botocore, awscli):
/// `$KEYVOL_VENV`, else `~/.cache/keyvol-venv`.
pub fn venv() -> PathBuf {
    match std::env::var("KEYVOL_VENV") {
        Ok(v) => PathBuf::from(v),
        Err(_) => {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            PathBuf::from(format!("{home}/.cache/keyvol-venv"))
        }
    }
}

/// Sets `KV_<NAME>_AKID` and `KV_<NAME>_SECRET`, the way the client
/// scripts take a principal's access key.
pub fn key_env<'c>(cmd: &'c mut Command, name: &str, key: &Key) -> &'c mut Command {
    cmd.env(format!("KV_{name}_AKID"), &key.id)
        .env(format!("KV_{name}_SECRET"), &key.secret)
}

/// Runs the client script `tests/<name>` with the venv's python and the
/// environment `configure` sets, and returns the JSON report it prints as
/// its last line. A failing script fails the test with its output.
pub fn script_report(name: &str, configure: impl FnOnce(&mut Command)) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(format!("{}/tests/{name}", env!("CARGO_MANIFEST_DIR")))
        .env_remove("AWS_PROFILE");
    configure(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/{name} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON report from tests/{name} ({e}):\n{stdout}\n{stderr}"))
}

/// The venv's python; missing is a failure, not a skip.
pub fn python() -> PathBuf {
    let p = venv().join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it creates the venv with boto3 and awscli)",
        p.display()
    );
    p
}

/// The venv's aws CLI.
pub fn aws_cli() -> PathBuf {
    let p = venv().join("bin/aws");
    assert!(
        p.exists(),
        "{} is missing: scripts/setup.sh installs awscli",
        p.display()
    );
    p
}

/// An EC2 Query-protocol client signing with SigV4 (service `ec2`): a
/// response is its HTTP status and XML text, unparsed.
pub struct Ec2Query {
    agent: ureq::Agent,
    endpoint: String,
    authority: String,
    key: Key,
    pub region: String,
}

impl Ec2Query {
    /// A client of `endpoint` (`http://host:port`) in us-east-1.
    pub fn new(endpoint: &str, key: &Key) -> Ec2Query {
        let authority = endpoint
            .split_once("://")
            .map(|(_, a)| a)
            .unwrap_or(endpoint)
            .trim_end_matches('/')
            .to_string();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(120)))
            .build();
        Ec2Query {
            agent: ureq::Agent::new_with_config(config),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            authority,
            key: key.clone(),
            region: "us-east-1".into(),
        }
    }

    /// The same client in another region.
    pub fn in_region(&self, region: &str) -> Ec2Query {
        let mut c = Ec2Query::new(&self.endpoint, &self.key);
        c.region = region.to_string();
        c
    }

    /// `Action` with `params` (Version 2016-11-15 added): status and body.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> (u16, String) {
        let mut pairs = vec![("Action", action), ("Version", keyvol::ec2::EC2_VERSION)];
        pairs.extend_from_slice(params);
        self.send(&pairs)
    }

    /// POSTs exactly `pairs` as the form body.
    pub fn send(&self, pairs: &[(&str, &str)]) -> (u16, String) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes();
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), self.authority.clone()),
            (
                "x-amz-date".to_string(),
                sigv4::format_amz_date(time::OffsetDateTime::now_utc()),
            ),
        ];
        let secret = SecretBytes::from_slice(self.key.secret.as_bytes());
        let authorization = sigv4::sign_request(
            &HttpRequest {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body: &body,
            },
            &SigningParams {
                access_key_id: &self.key.id,
                secret_access_key: &secret,
                region: &self.region,
                service: keyvol::ec2::EC2_SERVICE,
            },
        )
        .unwrap();
        let mut builder = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/", self.endpoint));
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let req = builder
            .header("authorization", authorization)
            .body(body)
            .unwrap();
        let mut resp = self.agent.run(req).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (status, text)
    }
}

/// Runs a Python script of the venv with `input` on stdin and returns its
/// stdout; a failing script fails the test with its stderr.
pub fn python_script(script: &str, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
