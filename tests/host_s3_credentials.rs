//! The S3 snapshot store takes credentials from the AWS chain: a profile
//! of a shared credentials file with a session token, and the environment
//! with AWS_SESSION_TOKEN. The test S3 server (moto) runs with IAM
//! authentication on (INITIAL_NO_AUTH_ACTION_COUNT): it checks every
//! request's SigV4 signature and, for the temporary credentials of an
//! assumed role, that X-Amz-Security-Token is that role session's token,
//! so a snapshot that completes shows the server saw the right token, and
//! a wrong token is refused.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BUCKET: &str = "keyvol-creds";

fn venv() -> String {
    std::env::var("KEYVOL_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/keyvol-venv", std::env::var("HOME").unwrap()))
}

struct Moto(Child, u16);
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto with authentication on after the set-up calls of [`setup`].
fn start_moto() -> Moto {
    let bin = format!("{}/bin/moto_server", venv());
    assert!(
        Path::new(&bin).exists(),
        "{bin} missing: run scripts/setup.sh"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// The four unauthenticated calls: a bucket, a role allowed s3:*, and
/// AssumeRole for its temporary credentials (ASIA..., secret, token).
fn setup(port: u16) -> (String, String, String) {
    let script = format!(
        "import boto3, json\n\
         kw = dict(endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='setup', aws_secret_access_key='setup')\n\
         boto3.client('s3', **kw).create_bucket(Bucket='{BUCKET}')\n\
         iam = boto3.client('iam', **kw)\n\
         trust = {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Principal': {{'AWS': '*'}}, 'Action': 'sts:AssumeRole'}}]}}\n\
         iam.create_role(RoleName='snapper', AssumeRolePolicyDocument=json.dumps(trust))\n\
         allow = {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}}]}}\n\
         iam.put_role_policy(RoleName='snapper', PolicyName='s3', PolicyDocument=json.dumps(allow))\n\
         c = boto3.client('sts', **kw).assume_role(RoleArn='arn:aws:iam::123456789012:role/snapper', RoleSessionName='keyvol')['Credentials']\n\
         print(c['AccessKeyId']); print(c['SecretAccessKey']); print(c['SessionToken'])\n"
    );
    let out = Command::new(format!("{}/bin/python", venv()))
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let l: Vec<&str> = text.lines().collect();
    assert!(
        l[0].starts_with("ASIA"),
        "temporary credentials expected: {}",
        l[0]
    );
    (l[0].into(), l[1].into(), l[2].into())
}

/// `keyvol-snap create VOL --wait` with exactly `env` as the AWS environment.
fn snapshot(home: &Path, vol: &str, env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(snap_bin());
    cmd.args(["create", vol, "--wait"]).env("KEYVOL_HOME", home);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.output().unwrap()
}

#[test]
fn profile_with_session_token_and_environment_chain_against_s3() {
    let moto = start_moto();
    let (id, secret, token) = setup(moto.1);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let store = format!("s3://{BUCKET}/snaps?endpoint=http://127.0.0.1:{}", moto.1);
    keyvol_json(h, &["configure", "set", "snapshot-store", &store]);
    let vol = keyvol_json(h, &["volume", "create", "--size", "4MiB"])["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();

    // A profile in the shared credentials file, with its session token.
    let creds = h.join("aws-credentials");
    let config = h.join("aws-config");
    std::fs::write(
        &creds,
        format!("[snapper]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\naws_session_token = {token}\n"),
    )
    .unwrap();
    std::fs::write(&config, "[profile snapper]\nregion = us-east-1\n").unwrap();
    let files = vec![
        ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
        ("AWS_CONFIG_FILE", config.display().to_string()),
        ("AWS_PROFILE", "snapper".to_string()),
    ];
    let out = snapshot(h, &vol, &files);
    assert!(
        out.status.success(),
        "with the profile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["State"], "completed");

    // The same profile with another token is refused by the server.
    std::fs::write(
        &creds,
        format!("[snapper]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\naws_session_token = not-{token}\n"),
    )
    .unwrap();
    let out = snapshot(h, &vol, &files);
    assert!(!out.status.success(), "a wrong session token was accepted");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !e.contains(&secret) && !e.contains(&token),
        "a secret in the error: {e}"
    );

    // The environment: key, secret and AWS_SESSION_TOKEN.
    let env = vec![
        ("AWS_ACCESS_KEY_ID", id.clone()),
        ("AWS_SECRET_ACCESS_KEY", secret.clone()),
        ("AWS_SESSION_TOKEN", token.clone()),
    ];
    let out = snapshot(h, &vol, &env);
    assert!(
        out.status.success(),
        "with the environment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut no_token = env.clone();
    no_token.pop();
    let out = snapshot(h, &vol, &no_token);
    assert!(
        !out.status.success(),
        "temporary credentials without their token were accepted"
    );

    // No credentials anywhere: a clear error naming the chain.
    let out = snapshot(h, &vol, &[]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("no AWS credentials") && e.contains("AWS_PROFILE"),
        "{e}"
    );
}
