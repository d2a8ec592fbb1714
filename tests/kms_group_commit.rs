//! Stateless KMS calls in the shared transaction, committed as a group:
//! exactly one audit event per call under concurrency, no stale reads
//! after a state change returned, due work applied before a stateless
//! call sees a key, and no acknowledged call lost to a kill -9.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{b64, env};
use keyvol::clock::Clock;
use keyvol::home::Home;
use keyvol::iam::Iam;
use keyvol::ids::Region;
use keyvol::kms::audit::AuditFilter;
use keyvol::kms::ErrorCode::{DisabledException, NotFoundException};
use keyvol::kms::{Kms, RequestContext};
use serde_json::json;

/// The `n` encryption-context value of every audit event of `name`.
fn context_values(kms: &Kms, name: &str) -> Vec<String> {
    kms.audit_list(&AuditFilter {
        event_name: Some(name.into()),
        ..Default::default()
    })
    .unwrap()
    .iter()
    .filter_map(|e| {
        e["requestParameters"]["encryptionContext"]["n"]
            .as_str()
            .map(str::to_string)
    })
    .collect()
}

fn audit_seqs(home: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(Home::open(home).unwrap().db_path()).unwrap();
    let mut st = conn
        .prepare("SELECT seq FROM audit ORDER BY rowid")
        .unwrap();
    let seqs = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    seqs
}

/// Four threads Encrypt and Decrypt while a fifth creates aliases and
/// disables and enables a key, checking after each DisableKey returned
/// that a Decrypt under that key fails.
#[test]
fn concurrent_calls_each_have_one_audit_event() {
    const CRYPTO_THREADS: usize = 4;
    const ROUNDS: usize = 60;
    let e = env();
    let key = e.create_key();
    let toggled = e.create_key();
    let toggled_ct = e.ok(
        "Encrypt",
        json!({"KeyId": toggled, "Plaintext": b64(b"t"), "EncryptionContext": {"n": "setup"}}),
    )["CiphertextBlob"]
        .clone();
    let decrypt_toggled = || {
        e.call(
            "Decrypt",
            json!({"CiphertextBlob": toggled_ct, "EncryptionContext": {"n": "setup"}}),
        )
    };
    let changes = std::thread::scope(|s| {
        for t in 0..CRYPTO_THREADS {
            let (e, key) = (&e, &key);
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let n = format!("{t}-{i}");
                    let ct = e.ok(
                        "Encrypt",
                        json!({"KeyId": key, "Plaintext": b64(n.as_bytes()), "EncryptionContext": {"n": n}}),
                    )["CiphertextBlob"]
                        .clone();
                    let pt = e.ok(
                        "Decrypt",
                        json!({"CiphertextBlob": ct, "EncryptionContext": {"n": n}}),
                    );
                    assert_eq!(common::unb64(&pt["Plaintext"]), n.as_bytes());
                }
            });
        }
        let mut changes = BTreeMap::<&str, usize>::new();
        for i in 0..ROUNDS / 4 {
            e.ok(
                "CreateAlias",
                json!({"AliasName": format!("alias/a{i}"), "TargetKeyId": key}),
            );
            e.ok("DisableKey", json!({"KeyId": toggled}));
            // Read after the state change returned: never the old state.
            assert_eq!(
                decrypt_toggled().err().map(|e| e.code),
                Some(DisabledException)
            );
            e.ok("EnableKey", json!({"KeyId": toggled}));
            decrypt_toggled().unwrap();
            for name in ["CreateAlias", "DisableKey", "EnableKey"] {
                *changes.entry(name).or_default() += 1;
            }
            *changes.entry("Decrypt").or_default() += 2;
        }
        changes
    });

    let report = e.kms.audit_verify().unwrap();
    assert!(report.valid, "{report:?}");
    let seqs = audit_seqs(e.dir.path());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq not increasing");
    assert_eq!(seqs.len() as u64, report.events_checked);

    // Every crypto call exactly once, whatever batch it committed in.
    let want: BTreeSet<String> = (0..CRYPTO_THREADS)
        .flat_map(|t| (0..ROUNDS).map(move |i| format!("{t}-{i}")))
        .collect();
    for name in ["Encrypt", "Decrypt"] {
        let mut got = context_values(&e.kms, name);
        got.retain(|n| n != "setup");
        assert_eq!(got.len(), want.len(), "{name}: one event per call");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want, "{name}");
    }
    assert_eq!(
        context_values(&e.kms, "Decrypt")
            .iter()
            .filter(|n| *n == "setup")
            .count(),
        changes["Decrypt"]
    );
    for name in ["CreateAlias", "DisableKey", "EnableKey"] {
        let n = e
            .kms
            .audit_list(&AuditFilter {
                event_name: Some(name.into()),
                ..Default::default()
            })
            .unwrap()
            .len();
        assert_eq!(n, changes[name], "{name}");
    }
    // Failed calls are audited too, with their error.
    let denied = e
        .kms
        .audit_list(&AuditFilter {
            errors_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(denied.len(), ROUNDS / 4);
    assert!(denied.iter().all(|d| d["errorCode"] == "DisabledException"));
}

/// A key whose deletion date passed is deleted before a stateless call
/// sees it, also when the deletion was scheduled by another process of the
/// home (here: another `Kms` on it), whose schedule this one never saw.
#[test]
fn due_deletion_applies_before_a_stateless_call() {
    let e = env();
    let key = e.create_key();
    let ct =
        e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"x")}))["CiphertextBlob"].clone();
    {
        let other =
            Kms::open(Arc::new(Home::open(e.dir.path()).unwrap()), e.clock.clone()).unwrap();
        other
            .call(
                &e.ctx,
                "ScheduleKeyDeletion",
                json!({"KeyId": key, "PendingWindowInDays": 7}),
            )
            .unwrap();
    }
    e.clock.advance(7 * keyvol::clock::DAY + 60);
    assert_eq!(
        e.code("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"y")})),
        Some(NotFoundException)
    );
    assert_eq!(
        e.code("Decrypt", json!({"CiphertextBlob": ct})),
        Some(keyvol::kms::ErrorCode::InvalidCiphertextException)
    );
    let names: Vec<String> = e
        .kms
        .audit_list(&Default::default())
        .unwrap()
        .iter()
        .map(|ev| ev["eventName"].as_str().unwrap_or_default().to_string())
        .collect();
    let deleted = names.iter().position(|n| n == "DeleteKey").unwrap();
    let last_encrypt = names.iter().rposition(|n| n == "Encrypt").unwrap();
    assert!(deleted < last_encrypt, "{names:?}");
    assert!(e.kms.audit_verify().unwrap().valid);
}

/// The first use of `alias/aws/ebs` creates the AWS managed key, a write:
/// the stateless call runs on the write path then, and is audited once.
#[test]
fn first_use_of_the_aws_managed_key_is_audited_once() {
    let e = env();
    let r = e.call("DescribeKey", json!({"KeyId": "alias/aws/ebs"}));
    assert!(r.is_ok(), "{r:?}");
    let events = e
        .kms
        .audit_list(&AuditFilter {
            event_name: Some("DescribeKey".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(events.len(), 1);
    assert!(events[0]["errorCode"].is_null(), "{}", events[0]);
}

const CHILD_HOME: &str = "KEYVOL_TEST_GROUP_COMMIT_CHILD_HOME";

fn open(dir: &std::path::Path) -> (Kms, RequestContext) {
    let clock = Clock::system();
    let home = Arc::new(Home::open(dir).unwrap());
    let iam = Iam::open(home.clone(), clock.clone()).unwrap();
    let kms = Kms::open(home, clock).unwrap();
    let ctx = RequestContext::new(
        iam.profile_caller("default").unwrap(),
        Region::default_region(),
    );
    (kms, ctx)
}

/// The child of `acknowledged_calls_survive_a_kill`: run only with
/// `CHILD_HOME` set, it Encrypts from four threads forever and prints
/// `ACK <n>` for each call that returned.
#[test]
fn group_commit_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_HOME) else {
        return;
    };
    let (kms, ctx) = open(std::path::Path::new(&dir));
    let key = std::env::var("KEYVOL_TEST_KEY").unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (kms, ctx, key) = (&kms, &ctx, &key);
            s.spawn(move || {
                for i in 0.. {
                    let n = format!("{t}-{i}");
                    kms.call(
                        ctx,
                        "Encrypt",
                        json!({"KeyId": key, "Plaintext": b64(b"p"), "EncryptionContext": {"n": n}}),
                    )
                    .unwrap();
                    // Straight to the pipe (not through the test harness's
                    // capture), one line per acknowledged call.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {n}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

/// kill -9 of a process in the middle of concurrent Encrypts: every call
/// it acknowledged is in the audit log, and the chain verifies.
#[test]
fn acknowledged_calls_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let (kms, ctx) = open(dir.path());
        kms.call(&ctx, "CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "group_commit_crash_child", "--nocapture"])
        .env(CHILD_HOME, dir.path())
        .env("KEYVOL_TEST_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = BTreeSet::new();
    while acked.len() < 400 {
        match lines.next() {
            Some(line) => {
                if let Some(n) = line.unwrap().strip_prefix("ACK ") {
                    acked.insert(n.to_string());
                }
            }
            None => panic!("the child ended after {} calls", acked.len()),
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already in the pipe were acknowledged before the kill too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("ACK ") {
            acked.insert(n.to_string());
        }
    }
    let (kms, _) = open(dir.path());
    let logged: BTreeSet<String> = context_values(&kms, "Encrypt").into_iter().collect();
    let missing: Vec<&String> = acked.difference(&logged).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not audited: {missing:?}"
    );
    let report = kms.audit_verify().unwrap();
    assert!(report.valid, "{report:?}");
}
