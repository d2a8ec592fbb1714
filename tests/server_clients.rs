//! `keyvol kms serve` with clients no one here wrote: the `aws-sdk-kms`
//! crate, boto3 and the aws CLI (tests/server_clients.py) run the KMS
//! operations and error cases against a server on 127.0.0.1 with a fresh
//! home; the audit log names the access key and source address; and two
//! homes share one KMS through the server (`configure set kms-endpoint`).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region as SdkRegion};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeySpec, GrantOperation, KeyState, MessageType, SigningAlgorithmSpec,
};
use common::serve::{
    aws_cli, cli as keyvol, cli_raw as keyvol_raw, create_account, create_user, Key, Served, BIN,
};
use keyvol::clock::Clock;
use keyvol::home::Home;
use keyvol::iam::Iam;
use keyvol::ids::{AccountId, Region};
use keyvol::kms::{ErrorCode, Kms, RequestContext};
use keyvol::session::{Session, SessionOptions};
use serde_json::{json, Value};

/// The account the tests' principals live in (not the home's default).
const ACCOUNT: &str = "444455556666";

/// A fresh home with account ACCOUNT (profile `admin`, its root key) and
/// user `nobody` of that account with an access key and no policy.
struct Fixture {
    dir: tempfile::TempDir,
    root: Key,
    nobody: Key,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = create_account(dir.path(), ACCOUNT, "admin");
        let nobody = create_user(dir.path(), "admin", "nobody");
        Fixture { dir, root, nobody }
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Asymmetric signing keys work on this build, so the Sign/Verify
    /// cases run (they never skip: a failure to create the key fails the
    /// test).
    fn sign_verify_available(&self) -> bool {
        if let Err((_, err)) = keyvol_raw(
            self.home(),
            &[
                "--profile",
                "admin",
                "kms",
                "create-key",
                "--key-spec",
                "RSA_2048",
                "--key-usage",
                "SIGN_VERIFY",
            ],
        ) {
            panic!(
                "`keyvol kms create-key --key-spec RSA_2048 --key-usage SIGN_VERIFY` failed: {}",
                err.trim()
            );
        }
        true
    }
}

fn sdk(endpoint: &str, key: &Key) -> aws_sdk_kms::Client {
    sdk_in(endpoint, key, "us-east-1")
}

fn sdk_in(endpoint: &str, key: &Key, region: &'static str) -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(SdkRegion::new(region))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(&key.id, &key.secret, None, None, "test"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// The AWS error code an SDK call failed with.
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
async fn aws_sdk_kms_crate_against_keyvol_serve() {
    let fx = Fixture::new();
    let sign_verify = fx.sign_verify_available();
    let srv = Served::start(fx.home(), &["kms", "serve"]);
    let kms = sdk(&srv.endpoint(), &fx.root);
    let nobody = sdk(&srv.endpoint(), &fx.nobody);

    // Keys.
    let k1 = kms
        .create_key()
        .description("sdk key one")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(k1.aws_account_id(), Some(ACCOUNT));
    assert!(k1.enabled());
    let k1_arn = k1.arn().unwrap().to_string();
    let k1_id = k1.key_id().to_string();
    let d = kms.describe_key().key_id(&k1_id).send().await.unwrap();
    let md = d.key_metadata.unwrap();
    assert_eq!(md.description(), Some("sdk key one"));
    assert_eq!(md.key_state(), Some(&KeyState::Enabled));
    assert!(md.creation_date().is_some());

    // Encrypt / decrypt with an encryption context.
    let enc = kms
        .encrypt()
        .key_id(&k1_id)
        .plaintext(Blob::new(b"attack at dawn".to_vec()))
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(enc.key_id(), Some(k1_arn.as_str()));
    // The audit event of a call carries the request id it was answered
    // with (x-amzn-RequestId), as CloudTrail's events do.
    let encrypt_request_id = enc
        .request_id()
        .expect("the answer names its request id")
        .to_string();
    let ct = enc.ciphertext_blob.unwrap();
    let dec = kms
        .decrypt()
        .ciphertext_blob(ct.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"attack at dawn");
    assert_eq!(dec.key_id(), Some(k1_arn.as_str()));
    // The wrong encryption context is InvalidCiphertextException.
    assert_eq!(
        code(
            kms.decrypt()
                .ciphertext_blob(ct.clone())
                .encryption_context("purpose", "other")
                .send()
                .await
        ),
        "InvalidCiphertextException"
    );

    // Re-encrypt under a second key.
    let k2 = kms.create_key().send().await.unwrap().key_metadata.unwrap();
    let k2_id = k2.key_id().to_string();
    let re = kms
        .re_encrypt()
        .ciphertext_blob(ct.clone())
        .source_encryption_context("purpose", "test")
        .destination_key_id(&k2_id)
        .send()
        .await
        .unwrap();
    assert_eq!(re.source_key_id(), Some(k1_arn.as_str()));
    assert_eq!(re.key_id(), k2.arn());
    let k2_ct = re.ciphertext_blob.clone().unwrap();
    let dec2 = kms
        .decrypt()
        .ciphertext_blob(k2_ct.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(dec2.plaintext().unwrap().as_ref(), b"attack at dawn");
    assert_eq!(dec2.key_id(), k2.arn());

    // Data keys.
    let dk = kms
        .generate_data_key()
        .key_id(&k1_id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let dk_plain = dk.plaintext().unwrap().as_ref().to_vec();
    assert_eq!(dk_plain.len(), 32);
    let back = kms
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext().unwrap().as_ref(), dk_plain.as_slice());
    let nop = kms
        .generate_data_key_without_plaintext()
        .key_id(&k1_id)
        .number_of_bytes(64)
        .send()
        .await
        .unwrap();
    assert!(nop.ciphertext_blob().is_some());
    let rnd = kms
        .generate_random()
        .number_of_bytes(48)
        .send()
        .await
        .unwrap();
    assert_eq!(rnd.plaintext().unwrap().as_ref().len(), 48);

    // Aliases.
    kms.create_alias()
        .alias_name("alias/sdk-app")
        .target_key_id(&k1_id)
        .send()
        .await
        .unwrap();
    let aliases = kms.list_aliases().send().await.unwrap();
    let alias = aliases
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some("alias/sdk-app"))
        .expect("alias/sdk-app is listed");
    assert_eq!(alias.target_key_id(), Some(k1_id.as_str()));
    let via_alias = kms
        .encrypt()
        .key_id("alias/sdk-app")
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(via_alias.key_id(), Some(k1_arn.as_str()));

    // Rotation.
    kms.enable_key_rotation()
        .key_id(&k1_id)
        .send()
        .await
        .unwrap();
    let st = kms
        .get_key_rotation_status()
        .key_id(&k1_id)
        .send()
        .await
        .unwrap();
    assert!(st.key_rotation_enabled());
    kms.rotate_key_on_demand()
        .key_id(&k1_id)
        .send()
        .await
        .unwrap();
    let rots = kms
        .list_key_rotations()
        .key_id(&k1_id)
        .send()
        .await
        .unwrap();
    assert_eq!(rots.rotations().len(), 1, "{rots:?}");
    // Ciphertext from before the rotation still decrypts.
    let old = kms
        .decrypt()
        .ciphertext_blob(ct.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(old.plaintext().unwrap().as_ref(), b"attack at dawn");

    // Authorization: a user without any policy is denied...
    let nobody_arn = format!("arn:aws:iam::{ACCOUNT}:user/nobody");
    assert_eq!(
        code(
            nobody
                .encrypt()
                .key_id(&k1_id)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "AccessDeniedException"
    );
    // ... until the key policy allows it (get/put key policy).
    let pol = kms
        .get_key_policy()
        .key_id(&k1_id)
        .policy_name("default")
        .send()
        .await
        .unwrap();
    let mut doc: Value = serde_json::from_str(pol.policy().unwrap()).unwrap();
    doc["Statement"].as_array_mut().unwrap().push(json!({
        "Sid": "AllowNobodyToEncrypt",
        "Effect": "Allow",
        "Principal": {"AWS": nobody_arn},
        "Action": "kms:Encrypt",
        "Resource": "*"
    }));
    kms.put_key_policy()
        .key_id(&k1_id)
        .policy_name("default")
        .policy(doc.to_string())
        .send()
        .await
        .unwrap();
    let pol2 = kms.get_key_policy().key_id(&k1_id).send().await.unwrap();
    assert!(pol2.policy().unwrap().contains("AllowNobodyToEncrypt"));
    let by_nobody = nobody
        .encrypt()
        .key_id(&k1_id)
        .plaintext(Blob::new(b"from nobody".to_vec()))
        .send()
        .await
        .unwrap();
    let by_nobody_ct = by_nobody.ciphertext_blob.unwrap();
    // Encrypt only: decrypting is still denied...
    assert_eq!(
        code(
            nobody
                .decrypt()
                .ciphertext_blob(by_nobody_ct.clone())
                .send()
                .await
        ),
        "AccessDeniedException"
    );

    // ... until a grant allows it; retiring the grant takes it back.
    let grant = kms
        .create_grant()
        .key_id(&k1_id)
        .grantee_principal(&nobody_arn)
        .operations(GrantOperation::Decrypt)
        .name("sdk-grant")
        .send()
        .await
        .unwrap();
    let grant_id = grant.grant_id().unwrap().to_string();
    let grants = kms.list_grants().key_id(&k1_id).send().await.unwrap();
    let listed = grants
        .grants()
        .iter()
        .find(|g| g.grant_id() == Some(grant_id.as_str()))
        .expect("the grant is listed");
    assert_eq!(listed.grantee_principal(), Some(nobody_arn.as_str()));
    assert_eq!(listed.operations(), &[GrantOperation::Decrypt]);
    let granted = nobody
        .decrypt()
        .ciphertext_blob(by_nobody_ct.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(granted.plaintext().unwrap().as_ref(), b"from nobody");
    kms.retire_grant()
        .key_id(&k1_arn)
        .grant_id(&grant_id)
        .send()
        .await
        .unwrap();
    assert!(kms
        .list_grants()
        .key_id(&k1_id)
        .send()
        .await
        .unwrap()
        .grants()
        .is_empty());
    assert_eq!(
        code(nobody.decrypt().ciphertext_blob(by_nobody_ct).send().await),
        "AccessDeniedException"
    );

    // Error cases the SDK must see with their AWS names.
    assert_eq!(
        code(
            kms.describe_key()
                .key_id("alias/no-such-alias")
                .send()
                .await
        ),
        "NotFoundException"
    );
    assert_eq!(
        code(
            kms.describe_key()
                .key_id("11111111-2222-3333-4444-555555555555")
                .send()
                .await
        ),
        "NotFoundException"
    );
    assert_eq!(
        code(
            kms.decrypt()
                .ciphertext_blob(Blob::new(vec![7u8; 80]))
                .send()
                .await
        ),
        "InvalidCiphertextException"
    );
    kms.disable_key().key_id(&k2_id).send().await.unwrap();
    assert_eq!(
        code(
            kms.encrypt()
                .key_id(&k2_id)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "DisabledException"
    );
    assert_eq!(
        code(
            kms.create_alias()
                .alias_name("alias/sdk-app")
                .target_key_id(&k2_id)
                .send()
                .await
        ),
        "AlreadyExistsException"
    );

    // Scheduled deletion.
    let del = kms
        .schedule_key_deletion()
        .key_id(&k2_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(del.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(del.pending_window_in_days(), Some(7));
    assert!(del.deletion_date().is_some());
    let md2 = kms
        .describe_key()
        .key_id(&k2_id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md2.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(
        code(
            kms.decrypt()
                .ciphertext_blob(k2_ct)
                .key_id(&k2_id)
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );

    if sign_verify {
        let sk = kms
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::Rsa2048)
            .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        let sig = kms
            .sign()
            .key_id(sk.key_id())
            .message(Blob::new(b"signed message".to_vec()))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
            .send()
            .await
            .unwrap();
        let signature = sig.signature.unwrap();
        let ok = kms
            .verify()
            .key_id(sk.key_id())
            .message(Blob::new(b"signed message".to_vec()))
            .signature(signature.clone())
            .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
            .send()
            .await
            .unwrap();
        assert!(ok.signature_valid());
        assert_eq!(
            code(
                kms.verify()
                    .key_id(sk.key_id())
                    .message(Blob::new(b"another message".to_vec()))
                    .signature(signature)
                    .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
                    .send()
                    .await
            ),
            "KMSInvalidSignatureException"
        );
    }

    // The audit log names the access key and the source address.
    let events = keyvol(
        fx.home(),
        &[
            "--profile",
            "admin",
            "kms",
            "audit",
            "list",
            "--event-name",
            "Encrypt",
        ],
    );
    let events = events["Events"].as_array().unwrap();
    let ours = |akid: &str| {
        events.iter().any(|e| {
            e["userIdentity"]["accessKeyId"] == akid && e["sourceIPAddress"] == "127.0.0.1"
        })
    };
    assert!(
        ours(&fx.root.id),
        "no Encrypt event of the root key from 127.0.0.1: {events:?}"
    );
    let answered: Vec<&Value> = events
        .iter()
        .filter(|e| e["requestID"] == encrypt_request_id.as_str())
        .collect();
    assert_eq!(answered.len(), 1, "{encrypt_request_id}: {events:?}");
    assert_eq!(answered[0]["requestParameters"]["keyId"], k1_id.as_str());
    let ids: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["requestID"].as_str())
        .collect();
    assert_eq!(ids.len(), events.len(), "request ids repeat: {events:?}");
    assert!(
        events.iter().any(
            |e| e["userIdentity"]["accessKeyId"] == fx.nobody.id.as_str()
                && e["errorCode"] == "AccessDeniedException"
                && e["sourceIPAddress"] == "127.0.0.1"
        ),
        "the denied Encrypt of nobody is not audited: {events:?}"
    );
    assert!(events.iter().any(|e| e["userAgent"]
        .as_str()
        .unwrap_or("")
        .contains("aws-sdk-rust")));

    // A multi-Region key replicated to us-west-2 opens there what the
    // primary sealed in us-east-1.
    let mrk = kms
        .create_key()
        .multi_region(true)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let mrk_id = mrk.key_id().to_string();
    assert!(mrk_id.starts_with("mrk-"), "{mrk_id}");
    let replica = kms
        .replicate_key()
        .key_id(&mrk_id)
        .replica_region("us-west-2")
        .send()
        .await
        .unwrap()
        .replica_key_metadata
        .unwrap();
    assert_eq!(replica.key_id(), mrk_id);
    let cfg = replica.multi_region_configuration().unwrap();
    assert_eq!(
        cfg.multi_region_key_type(),
        Some(&aws_sdk_kms::types::MultiRegionKeyType::Replica)
    );
    let sealed = kms
        .encrypt()
        .key_id(&mrk_id)
        .plaintext(Blob::new(b"sdk across regions".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let west = sdk_in(&srv.endpoint(), &fx.root, "us-west-2");
    let opened = west.decrypt().ciphertext_blob(sealed).send().await.unwrap();
    assert_eq!(opened.plaintext().unwrap().as_ref(), b"sdk across regions");
    assert_eq!(opened.key_id(), replica.arn());

    let mut srv = srv;
    assert!(srv.stop().success(), "kms serve exits 0 on SIGTERM");
}

#[test]
fn boto3_and_aws_cli_against_keyvol_serve() {
    let fx = Fixture::new();
    let sign_verify = fx.sign_verify_available();
    let srv = Served::start(fx.home(), &["kms", "serve"]);
    let aws = aws_cli();
    let report: Value = common::serve::script_report("server_clients.py", |c| {
        c.env("KV_ENDPOINT", srv.endpoint())
            .env("KV_ACCOUNT", ACCOUNT)
            .env("KV_ROOT_AKID", &fx.root.id)
            .env("KV_ROOT_SECRET", &fx.root.secret)
            .env("KV_NOBODY_AKID", &fx.nobody.id)
            .env("KV_NOBODY_SECRET", &fx.nobody.secret)
            .env("KV_SIGN_VERIFY", if sign_verify { "1" } else { "0" })
            .env("KV_AWS", &aws)
            .env_remove("AWS_CONFIG_FILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE");
    });
    let has =
        |client: &str, step: &str| report[client].as_array().unwrap().iter().any(|s| s == step);
    for step in [
        "create-key",
        "describe-key",
        "encrypt-decrypt",
        "re-encrypt",
        "re-encrypt-rsa",
        "generate-data-key",
        "aliases",
        "rotation",
        "key-policy",
        "grants",
        "schedule-key-deletion",
        "multi-region",
        "NotFoundException",
        "InvalidCiphertextException",
        "DisabledException",
        "AccessDeniedException",
        "sts-get-caller-identity",
    ] {
        assert!(has("boto3", step), "boto3 did not run {step}: {report}");
    }
    assert!(
        has("cli", "sts-get-caller-identity"),
        "the aws CLI did not run sts get-caller-identity: {report}"
    );
    for step in [
        "create-key",
        "encrypt-decrypt",
        "generate-data-key",
        "aliases",
        "multi-region",
        "NotFoundException",
        "AccessDeniedException",
    ] {
        assert!(has("cli", step), "the aws CLI did not run {step}: {report}");
    }
    assert_eq!(has("boto3", "sign-verify"), sign_verify, "{report}");
    assert_eq!(has("cli", "sign-verify"), sign_verify, "{report}");

    // boto3's calls are audited with their access key and address.
    let events = keyvol(
        fx.home(),
        &[
            "--profile",
            "admin",
            "kms",
            "audit",
            "list",
            "--event-name",
            "GenerateDataKey",
        ],
    );
    assert!(
        events["Events"].as_array().unwrap().iter().any(|e| {
            e["userIdentity"]["accessKeyId"] == fx.root.id.as_str()
                && e["sourceIPAddress"] == "127.0.0.1"
                && e["userAgent"].as_str().unwrap_or("").contains("Boto3")
        }),
        "{events}"
    );
}

/// A home opened in-process, as a volume host's session would be.
fn open_home(dir: &Path) -> (Arc<Home>, Arc<Kms>, Iam) {
    let home = Arc::new(Home::open(dir).unwrap());
    let kms = Arc::new(Kms::open(home.clone(), Clock::system()).unwrap());
    let iam = Iam::open(home.clone(), Clock::system()).unwrap();
    (home, kms, iam)
}

/// Home A serves its KMS; home B points `kms-endpoint` at it and holds an
/// imported profile of a user of A: B's `Session::kms_client()` is the
/// remote KMS, what B encrypts A decrypts, the EBS key is usable only
/// through EC2, and with A stopped B's calls fail naming the endpoint.
#[test]
fn two_homes_share_a_kms_through_the_server() {
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_home, a_kms, a_iam) = open_home(a_dir.path());
    let account: AccountId = ACCOUNT.parse().unwrap();
    a_iam.create_account(&account, "admin").unwrap();
    let (_, alice_key) = a_iam.create_user(&account, "alice", None).unwrap();
    let alice_key =
        alice_key.unwrap_or_else(|| a_iam.create_access_key(&account, "alice", None).unwrap());
    a_iam
        .put_user_policy(
            &account,
            "alice",
            "kms-use",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"}]}"#,
        )
        .unwrap();
    let a_root = RequestContext::new(
        a_iam.profile_caller("admin").unwrap(),
        Region::default_region(),
    );
    let key_arn = a_kms
        .call(&a_root, "CreateKey", json!({"Description": "shared"}))
        .unwrap()["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let (srv, endpoint) = common::serve::serve_in_process(a_kms.clone(), a_dir.path());

    // Home B: the setting and the imported profile, as `keyvol configure` stores them.
    let b_dir = tempfile::tempdir().unwrap();
    {
        let (b_home, _, b_iam) = open_home(b_dir.path());
        keyvol::config::set(&b_home, "kms-endpoint", &endpoint).unwrap();
        b_iam
            .import_profile(
                "alice-at-a",
                &account,
                Some("alice"),
                &alice_key.access_key_id,
                &alice_key.secret_access_key,
            )
            .unwrap();
    }
    let b = Session::open(&SessionOptions {
        home: b_dir.path().to_path_buf(),
        profile: "alice-at-a".into(),
        region: Region::default_region(),
    })
    .unwrap();
    assert_eq!(
        b.ctx.caller.principal_arn,
        format!("arn:aws:iam::{ACCOUNT}:user/alice")
    );
    let client = b.kms_client().unwrap();
    assert_eq!(client.describe(), format!("remote KMS at {endpoint}"));

    // B encrypts with A's key; A decrypts.
    let ct = client
        .call(
            &b.ctx,
            "Encrypt",
            json!({"KeyId": key_arn, "Plaintext": "c2hhcmVk", "EncryptionContext": {"host": "b"}}),
        )
        .unwrap();
    assert_eq!(ct["KeyId"], key_arn.as_str());
    let pt = a_kms
        .call(
            &a_root,
            "Decrypt",
            json!({"CiphertextBlob": ct["CiphertextBlob"], "EncryptionContext": {"host": "b"}}),
        )
        .unwrap();
    assert_eq!(pt["Plaintext"], "c2hhcmVk");
    // And the other way round: A's ciphertext, B decrypts through the server.
    let a_ct = a_kms
        .call(
            &a_root,
            "Encrypt",
            json!({"KeyId": key_arn, "Plaintext": "ZnJvbSBh"}),
        )
        .unwrap();
    let b_pt = client
        .call(
            &b.ctx,
            "Decrypt",
            json!({"CiphertextBlob": a_ct["CiphertextBlob"]}),
        )
        .unwrap();
    assert_eq!(b_pt["Plaintext"], "ZnJvbSBh");

    // The AWS managed EBS key of A's account: only through EC2, and only
    // the control plane's own calls act through EC2. B's volume code
    // claiming it (ctx.via_ec2()) gets no via-service effect remotely.
    let direct = client
        .call(
            &b.ctx,
            "GenerateDataKey",
            json!({"KeyId": "alias/aws/ebs", "NumberOfBytes": 64}),
        )
        .unwrap_err();
    assert_eq!(direct.code, ErrorCode::AccessDeniedException, "{direct}");
    let claimed = client
        .call(
            &b.ctx.via_ec2(),
            "GenerateDataKey",
            json!({"KeyId": "alias/aws/ebs", "NumberOfBytes": 64}),
        )
        .unwrap_err();
    assert_eq!(claimed.code, ErrorCode::AccessDeniedException, "{claimed}");
    // Grants on aws/ebs (CreateGrant takes its key ARN, not the alias)
    // need kms:GrantIsForAWSResource, which no request can claim either.
    let ebs_arn = a_kms
        .call(&a_root, "DescribeKey", json!({"KeyId": "alias/aws/ebs"}))
        .unwrap()["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let grant = client
        .call(
            &b.ctx.via_ec2(),
            "CreateGrant",
            json!({"KeyId": ebs_arn, "GranteePrincipal": format!("arn:aws:iam::{ACCOUNT}:user/alice"), "Operations": ["Decrypt"]}),
        )
        .unwrap_err();
    assert_eq!(grant.code, ErrorCode::AccessDeniedException, "{grant}");
    // Registered as a volume host, alice gets no more: a host obtains data
    // keys only of volumes attached to it (KeyvolReleaseVolumeKey).
    a_iam.register_volume_host(&account, Some("alice")).unwrap();
    let still = client
        .call(
            &b.ctx.via_ec2(),
            "GenerateDataKey",
            json!({"KeyId": "alias/aws/ebs", "NumberOfBytes": 64}),
        )
        .unwrap_err();
    assert_eq!(still.code, ErrorCode::AccessDeniedException, "{still}");

    // A's server stopped: B's calls fail with DependencyTimeoutException
    // naming the endpoint.
    srv.shutdown().unwrap();
    let e = client
        .call(
            &b.ctx,
            "Encrypt",
            json!({"KeyId": key_arn, "Plaintext": "eA=="}),
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::DependencyTimeoutException, "{e}");
    assert!(e.message.contains(&endpoint), "{}", e.message);
    // A fresh client (a new command on host B) fails the same way.
    let e = b
        .kms_client()
        .unwrap()
        .call(
            &b.ctx,
            "Decrypt",
            json!({"CiphertextBlob": ct["CiphertextBlob"]}),
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::DependencyTimeoutException, "{e}");
    assert!(e.message.contains(&endpoint), "{}", e.message);
}

#[test]
fn configure_cli_settings_and_imported_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let list = keyvol(home, &["configure", "list"]);
    let names: Vec<&str> = list["Settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"kms-endpoint"), "{list}");
    let got = keyvol(home, &["configure", "get", "kms-endpoint"]);
    assert_eq!(got["Value"], Value::Null);
    assert_eq!(got["Source"], "default");

    let set = keyvol(
        home,
        &["configure", "set", "kms-endpoint", "http://127.0.0.1:9"],
    );
    assert_eq!(set["Value"], "http://127.0.0.1:9");
    assert_eq!(set["Source"], "home");
    assert_eq!(
        keyvol(home, &["configure", "get", "kms-endpoint"])["Value"],
        "http://127.0.0.1:9"
    );
    // The environment variable wins over the stored value.
    let out = Command::new(BIN)
        .args(["--home"])
        .arg(home)
        .args(["configure", "get", "kms-endpoint"])
        .env("KEYVOL_KMS_ENDPOINT", "http://10.0.0.1:8090")
        .output()
        .unwrap();
    let env_v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(env_v["Value"], "http://10.0.0.1:8090");
    assert_eq!(env_v["Source"], "environment");

    // Bad values and names are refused with what to fix.
    let (code, err) =
        keyvol_raw(home, &["configure", "set", "kms-endpoint", "ftp://x"]).unwrap_err();
    assert_ne!(code, 0);
    assert!(err.contains("http://HOST:PORT"), "{err}");
    let (_, err) = keyvol_raw(home, &["configure", "get", "kms-endpoit"]).unwrap_err();
    assert!(err.contains("known settings are kms-endpoint"), "{err}");

    let unset = keyvol(home, &["configure", "unset", "kms-endpoint"]);
    assert_eq!(unset["Value"], Value::Null);

    // An imported profile acts as the principal of the other home's key.
    let imported = keyvol(
        home,
        &[
            "configure",
            "import-profile",
            "--profile-name",
            "remote",
            "--account-id",
            ACCOUNT,
            "--user-name",
            "alice",
            "--access-key-id",
            "AKIAIMPORTED00000001",
            "--secret-access-key",
            "c2VjcmV0c2VjcmV0c2VjcmV0",
        ],
    );
    assert_eq!(
        imported["Profile"]["Arn"],
        format!("arn:aws:iam::{ACCOUNT}:user/alice")
    );
    assert!(!imported.to_string().contains("c2VjcmV0c2VjcmV0c2VjcmV0"));
    let who = keyvol(home, &["--profile", "remote", "iam", "get-caller-identity"]);
    assert_eq!(who["Arn"], format!("arn:aws:iam::{ACCOUNT}:user/alice"));
    let profiles = keyvol(home, &["iam", "list-profiles"]);
    assert!(
        profiles.to_string().contains("AKIAIMPORTED00000001"),
        "{profiles}"
    );
    let (_, err) = keyvol_raw(
        home,
        &[
            "configure",
            "import-profile",
            "--profile-name",
            "x",
            "--account-id",
            "12",
            "--access-key-id",
            "AKIA1",
            "--secret-access-key",
            "s",
        ],
    )
    .unwrap_err();
    assert!(err.contains("--account-id"), "{err}");
}

#[test]
fn serve_cli_refuses_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) =
        keyvol_raw(dir.path(), &["kms", "serve", "--listen", "localhost"]).unwrap_err();
    assert_ne!(code, 0);
    assert!(err.contains("expected ADDR:PORT"), "{err}");
    let (_, err) = keyvol_raw(
        dir.path(),
        &[
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ],
    )
    .unwrap_err();
    assert!(err.contains("/nonexistent.pem"), "{err}");
    // Taken port: a clear error, not a panic.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (_, err) = keyvol_raw(dir.path(), &["kms", "serve", "--listen", &addr]).unwrap_err();
    assert!(err.contains(&addr), "{err}");
}

/// `kms serve --tls-cert --tls-key`: HTTPS with a private CA, reached by
/// RemoteKms trusting that CA and by the aws CLI with `--ca-bundle`.
#[test]
fn serve_cli_over_tls() {
    let fx = Fixture::new();
    let pki = tempfile::tempdir().unwrap();
    let openssl = |args: &str| {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(pki.path())
            .output()
            .expect("openssl is missing: run scripts/setup.sh");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        pki.path().join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=keyvol-test-CA"
    ));
    openssl(&format!(
        "req {ec} -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1"
    ));
    openssl("x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile ext.cnf");

    let leaf = pki.path().join("leaf.pem");
    let leaf_key = pki.path().join("leaf.key");
    let mut srv = Served::spawn(
        fx.home(),
        [
            "kms".as_ref(),
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--tls-cert".as_ref(),
            leaf.as_os_str(),
            "--tls-key".as_ref(),
            leaf_key.as_os_str(),
        ],
    );
    let ready = srv.ready.clone();
    assert_eq!(ready["Tls"], true);
    let endpoint = ready["Endpoint"].as_str().unwrap().to_string();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");

    let ca = std::fs::read(pki.path().join("ca.pem")).unwrap();
    let client = keyvol::server::RemoteKms::with_ca_pem(
        &endpoint,
        Region::default_region(),
        &fx.root.id,
        keyvol::secret::SecretBytes::from_slice(fx.root.secret.as_bytes()),
        Some(&ca),
    )
    .unwrap();
    let key = client.call("CreateKey", json!({})).unwrap();
    assert_eq!(key["KeyMetadata"]["AWSAccountId"], ACCOUNT);
    // Without the CA the handshake fails: the client names the endpoint.
    let untrusting = keyvol::server::RemoteKms::with_ca_pem(
        &endpoint,
        Region::default_region(),
        &fx.root.id,
        keyvol::secret::SecretBytes::from_slice(fx.root.secret.as_bytes()),
        Some(&std::fs::read(pki.path().join("leaf.pem")).unwrap()),
    )
    .unwrap();
    let e = untrusting.call("ListKeys", json!({})).unwrap_err();
    assert_eq!(e.code, ErrorCode::DependencyTimeoutException, "{e}");
    assert!(e.message.contains(&endpoint), "{}", e.message);
    assert!(srv.stop().success());
}
