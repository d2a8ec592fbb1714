//! IAM roles and STS AssumeRole: trust policies decided with the caller's
//! identity policies, temporary credentials that need their session token
//! and expire, role policies and `aws:PrincipalTag` in KMS decisions, and
//! the audit records of both. boto3 and the aws CLI drive the server
//! (tests/sts_roles.py); expiry and the stored secrets are checked here.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::serve::{aws_cli, cli, create_account, create_user_with_policy, Served};
use keyvol::clock::Clock;
use keyvol::home::Home;
use keyvol::iam::roles::AssumeRoleInput;
use keyvol::iam::{Iam, IamErrorCode};
use keyvol::ids::{AccountId, Region};
use keyvol::kms::{Caller, ErrorCode, RequestContext};
use keyvol::secret::SecretBytes;
use keyvol::server::sigv4::{self, HttpRequest, SigningParams, VerifyPolicy};
use keyvol::server::{HomeKmsService, KmsService};
use serde_json::Value;

const ACCOUNT: &str = "111122223333";
const PARTNER: &str = "444455556666";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    format!("file://{}", p.display())
}

/// The roles of the story: `deployer` trusts alice by ARN and lets her tag
/// sessions; `reader` trusts the whole account (so IAM must allow too);
/// `partner-access` trusts another account.
fn make_roles(home: &Path, dir: &Path) {
    let trust_alice = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/alice"}},"Action":["sts:AssumeRole","sts:TagSession"]}}]}}"#
    );
    let trust_account = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let trust_partner = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{PARTNER}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let role_policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey"],"Resource":"*"},
        {"Effect":"Allow","Action":"kms:GenerateDataKey","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalTag/team":"blue"}}}]}"#;
    for (name, trust, tags) in [
        ("deployer", trust_alice, Some("Key=team,Value=blue")),
        ("reader", trust_account, None),
        ("partner-access", trust_partner, None),
    ] {
        let t = write(dir, &format!("{name}-trust.json"), &trust);
        let mut args = vec![
            "iam",
            "create-role",
            "--role-name",
            name,
            "--assume-role-policy-document",
            &t,
        ];
        if let Some(tags) = tags {
            args.extend(["--tags", tags]);
        }
        let role = cli(home, &args);
        assert_eq!(
            role["Role"]["Arn"],
            format!("arn:aws:iam::{ACCOUNT}:role/{name}")
        );
        assert!(role["Role"]["RoleId"].as_str().unwrap().starts_with("AROA"));
        let p = write(dir, &format!("{name}-policy.json"), role_policy);
        cli(
            home,
            &[
                "iam",
                "put-role-policy",
                "--role-name",
                name,
                "--policy-name",
                "use-keys",
                "--policy-document",
                &p,
            ],
        );
    }
}

#[test]
fn roles_are_assumed_by_whom_they_trust_and_their_sessions_act_as_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let partner = create_account(&home, PARTNER, "partner");
    let alice = create_user_with_policy(
        &home,
        dir.path(),
        "default",
        "alice",
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"arn:aws:iam::{ACCOUNT}:role/*"}}]}}"#
        ),
    );
    let bob = common::serve::create_user(&home, "default", "bob");
    make_roles(&home, dir.path());
    let key = cli(&home, &["kms", "create-key"]);
    let key_id = key["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();

    let srv = Served::start(&home, &["serve"]);
    let report: Value = common::serve::script_report("sts_roles.py", |c| {
        c.env("KV_ENDPOINT", srv.endpoint())
            .env("KV_ACCOUNT", ACCOUNT)
            .env("KV_PARTNER", PARTNER)
            .env("KV_KEY_ID", &key_id)
            .env("KV_AWS", aws_cli())
            .env("KV_ALICE_AKID", &alice.id)
            .env("KV_ALICE_SECRET", &alice.secret)
            .env("KV_BOB_AKID", &bob.id)
            .env("KV_BOB_SECRET", &bob.secret)
            .env("KV_PARTNER_AKID", &partner.id)
            .env("KV_PARTNER_SECRET", &partner.secret);
    });
    for s in [
        "assume-role",
        "session-get-caller-identity",
        "session-uses-role-policy",
        "principal-tag-from-session-overrides-role",
        "session-policy",
        "trust-and-identity-decide",
        "cross-account-assume-role",
        "validation-errors",
        "token-required",
        "aws-cli-session",
    ] {
        assert!(
            report["steps"].as_array().unwrap().iter().any(|x| x == s),
            "step {s} did not run: {report}"
        );
    }
    drop(srv);

    // The audit chain: AssumeRole events from STS, allowed and refused,
    // and the session's KMS events with the role as the session's issuer.
    let events = cli(&home, &["kms", "audit", "list"]);
    let events = events["Events"].as_array().expect("audit events");
    let assume: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventSource"] == "sts.amazonaws.com" && e["eventName"] == "AssumeRole")
        .collect();
    assert!(
        assume.iter().any(|e| e["errorCode"].is_null()
            && e["responseElements"]["assumedRoleUser"]["arn"]
                == format!("arn:aws:sts::{ACCOUNT}:assumed-role/deployer/build-1")),
        "an allowed AssumeRole is recorded"
    );
    assert!(
        assume.iter().any(|e| e["errorCode"] == "AccessDenied"
            && e["userIdentity"]["arn"] == format!("arn:aws:iam::{ACCOUNT}:user/bob")),
        "a refused AssumeRole is recorded"
    );
    for e in &assume {
        let text = e.to_string();
        assert!(!text.contains("SessionToken") && !text.contains("secretAccessKey"));
    }
    let session_event = events
        .iter()
        .find(|e| {
            e["eventSource"] == "kms.amazonaws.com"
                && e["userIdentity"]["arn"]
                    == format!("arn:aws:sts::{ACCOUNT}:assumed-role/deployer/build-1")
        })
        .expect("a KMS event of the session");
    assert_eq!(session_event["userIdentity"]["type"], "AssumedRole");
    assert_eq!(
        session_event["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"],
        format!("arn:aws:iam::{ACCOUNT}:role/deployer")
    );
    assert!(session_event["userIdentity"]["accessKeyId"]
        .as_str()
        .unwrap()
        .starts_with("ASIA"));
    let verify = cli(&home, &["kms", "audit", "verify"]);
    assert_eq!(verify["Valid"], true, "{verify}");
}

#[test]
fn session_keys_need_their_token_and_expire_and_their_secrets_stay_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let home = Arc::new(Home::open(dir.path()).unwrap());
    let iam = Iam::open(home.clone(), clock.clone()).unwrap();
    let acct: AccountId = ACCOUNT.parse().unwrap();
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ACCOUNT}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    iam.create_role(&acct, "ops", &trust, None, Some(7200), &[])
        .unwrap();
    // Names are taken once: a second role or user of the name is refused.
    let e = iam
        .create_role(&acct, "OPS", &trust, None, None, &[])
        .unwrap_err();
    assert_eq!(e.code, IamErrorCode::EntityAlreadyExists, "{e}");
    assert!(e.message.contains("OPS already exists"), "{e}");
    iam.create_user(&acct, "carol", None).unwrap();
    let e = iam.create_user(&acct, "carol", None).unwrap_err();
    assert_eq!(e.code, IamErrorCode::EntityAlreadyExists, "{e}");
    // Bad trust policies are refused, and no role is left.
    for bad in [
        r#"{"Statement":[{"Effect":"Allow","Action":"sts:AssumeRole"}]}"#.to_string(),
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ACCOUNT}"}},"Action":"kms:Decrypt"}}]}}"#
        ),
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ACCOUNT}"}},"Action":"sts:AssumeRole","Resource":"*"}}]}}"#
        ),
        "not json".to_string(),
    ] {
        let e = iam
            .create_role(&acct, "bad", &bad, None, None, &[])
            .unwrap_err();
        assert_eq!(e.code, IamErrorCode::MalformedPolicyDocument, "{bad}: {e}");
    }
    assert_eq!(
        iam.get_role(&acct, "bad").unwrap_err().code,
        IamErrorCode::NoSuchEntity
    );

    let ctx = RequestContext::new(Caller::root(acct.clone()), Region::default_region());
    let s = iam
        .assume_role(
            &ctx,
            &AssumeRoleInput {
                role_arn: format!("arn:aws:iam::{ACCOUNT}:role/ops"),
                role_session_name: "night-job".into(),
                duration_seconds: Some(3600),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(s.expiration - clock.now(), 3600);
    // Longer than the role's MaxSessionDuration: refused.
    let e = iam
        .assume_role(
            &ctx,
            &AssumeRoleInput {
                role_arn: format!("arn:aws:iam::{ACCOUNT}:role/ops"),
                role_session_name: "too-long".into(),
                duration_seconds: Some(7201),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code, IamErrorCode::ValidationError, "{e}");

    // Neither the secret nor the token is in any file of the home.
    let secret = s.secret_access_key.expose().to_vec();
    let token = s.session_token.expose().to_vec();
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in [&secret, &token] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{} holds a session secret",
                entry.display()
            );
        }
    }

    // SigV4 with the session key: good with the token until it expires.
    let svc = HomeKmsService::new(
        Arc::new(keyvol::kms::Kms::open(home.clone(), clock.clone()).unwrap()),
        Iam::open(home.clone(), clock.clone()).unwrap(),
    );
    let verify_at = |at: i64, token: Option<&str>| {
        let now = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
        let date = sigv4::format_amz_date(now);
        let mut headers = vec![
            (
                "Host".to_string(),
                "kms.us-east-1.amazonaws.com".to_string(),
            ),
            ("X-Amz-Date".to_string(), date),
            (
                "X-Amz-Target".to_string(),
                "TrentService.ListKeys".to_string(),
            ),
        ];
        if let Some(t) = token {
            headers.push(("X-Amz-Security-Token".to_string(), t.to_string()));
        }
        let secret = SecretBytes::from_slice(s.secret_access_key.expose());
        let params = SigningParams {
            access_key_id: &s.access_key_id,
            secret_access_key: &secret,
            region: "us-east-1",
            service: "kms",
        };
        let auth = sigv4::sign_request(&list_keys(&headers), &params).unwrap();
        headers.push(("Authorization".to_string(), auth));
        let req = list_keys(&headers);
        let policy = VerifyPolicy {
            service: "kms",
            regions: &[],
            now,
        };
        sigv4::verify(&req, &policy, |id| svc.credentials(id)).map(|v| v.credentials.caller)
    };
    let token_text = String::from_utf8(token.clone()).unwrap();
    let caller = verify_at(clock.now() + 60, Some(&token_text)).unwrap();
    assert_eq!(
        caller.principal_arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/ops/night-job")
    );
    let e = verify_at(clock.now() + 60, None).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnrecognizedClientException);
    let e = verify_at(clock.now() + 60, Some("forged-token")).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnrecognizedClientException);
    let e = verify_at(s.expiration, Some(&token_text)).unwrap_err();
    assert_eq!(e.code, ErrorCode::ExpiredTokenException, "{e}");

    // Deleting the role (after its policies) ends its sessions.
    iam.delete_role(&acct, "ops").unwrap();
    assert!(svc.credentials(&s.access_key_id).is_none());
}

fn list_keys(headers: &[(String, String)]) -> HttpRequest<'_> {
    HttpRequest {
        method: "POST",
        path: "/",
        query: "",
        headers,
        body: b"{}",
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
