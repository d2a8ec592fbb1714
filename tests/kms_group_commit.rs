//! Stateless KMS calls in the shared transaction, committed as a group:
//! exactly one audit event per call under concurrency, no stale reads
//! after a state change returned, due work applied before a stateless
//! call sees a key, and no acknowledged call lost to a kill -9; batches
//! of calls on one thread (`Kms::call_batch`, how the HTTP server runs
//! cheap calls) answer and audit each call as if it ran alone.

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
use keyvol::kms::batch::Call;
use keyvol::kms::ErrorCode::{DisabledException, NotFoundException};
use keyvol::kms::{ErrorCode, Kms, RequestContext};
use keyvol::server::RemoteKms;
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
    let encrypt = |key: &str, n: &str| json!({"KeyId": key, "Plaintext": b64(b"p"), "EncryptionContext": {"n": n}});
    // Straight to the pipe (not through the test harness's capture), one
    // line per acknowledged call.
    let ack = |n: &str| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ACK {n}").unwrap();
        out.flush().unwrap();
    };
    std::thread::scope(|s| {
        // Two threads call alone, two in batches of 8.
        for t in 0..4 {
            let (kms, ctx, key) = (&kms, &ctx, &key);
            s.spawn(move || {
                for i in 0.. {
                    if t < 2 {
                        let n = format!("{t}-{i}");
                        kms.call(ctx, "Encrypt", encrypt(key, &n)).unwrap();
                        ack(&n);
                        continue;
                    }
                    let names: Vec<String> = (0..8).map(|j| format!("{t}-{i}-{j}")).collect();
                    let calls = names
                        .iter()
                        .map(|n| Call {
                            ctx: ctx.clone(),
                            operation: "Encrypt".into(),
                            request: encrypt(key, n),
                        })
                        .collect();
                    for (n, r) in names.iter().zip(kms.call_batch(calls)) {
                        r.unwrap();
                        ack(n);
                    }
                }
            });
        }
    });
}

/// kill -9 of a process in the middle of concurrent Encrypts, alone and in
/// batches: every call it acknowledged is in the audit log, and the chain
/// verifies.
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
    let batched = acked.iter().filter(|n| n.matches('-').count() == 2).count();
    assert!(
        batched > 0 && batched < acked.len(),
        "{batched} of {} acknowledged calls were batched",
        acked.len()
    );
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

/// A batch mixing calls that succeed and fail: each outcome is what the
/// call alone answers, each call has one audit event, in the batch's
/// order, committed (seen by another connection) when the batch returns.
#[test]
fn a_batch_answers_and_audits_each_call_as_alone() {
    let e = env();
    let key = e.create_key();
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"alone"), "EncryptionContext": {"n": "x"}}),
    )["CiphertextBlob"]
        .clone();
    let before = audit_seqs(e.dir.path()).len();
    let call = |operation: &str, request: serde_json::Value| Call {
        ctx: e.ctx.clone(),
        operation: operation.into(),
        request,
    };
    let missing = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000";
    let out = e.kms.call_batch(vec![
        call(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"one"), "EncryptionContext": {"n": "b0"}}),
        ),
        call(
            "Encrypt",
            json!({"KeyId": missing, "Plaintext": b64(b"two"), "EncryptionContext": {"n": "b1"}}),
        ),
        call(
            "Decrypt",
            json!({"CiphertextBlob": ct, "EncryptionContext": {"n": "x"}}),
        ),
        call("Encrypt", json!(["not", "an", "object"])),
        call(
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256"}),
        ),
        call("NoSuchOperation", json!({})),
    ]);
    assert_eq!(out.len(), 6);
    let first = out[0].as_ref().unwrap();
    assert_eq!(
        first["KeyId"].as_str().unwrap().rsplit('/').next(),
        Some(key.as_str())
    );
    let plain = e.ok(
        "Decrypt",
        json!({"CiphertextBlob": first["CiphertextBlob"], "EncryptionContext": {"n": "b0"}}),
    );
    assert_eq!(plain["Plaintext"], b64(b"one"));
    assert_eq!(out[1].as_ref().unwrap_err().code, NotFoundException);
    assert_eq!(out[2].as_ref().unwrap()["Plaintext"], b64(b"alone"));
    assert_eq!(
        out[3].as_ref().unwrap_err().code,
        ErrorCode::SerializationException
    );
    assert_eq!(
        out[4].as_ref().unwrap()["Plaintext"].as_str().map(str::len),
        Some(44)
    );
    assert_eq!(
        out[5].as_ref().unwrap_err().code,
        ErrorCode::UnknownOperationException
    );
    // Audited as alone: the four calls that reached an operation (the
    // malformed and the unknown one are refused before, as alone), plus
    // the Decrypt above, each in a fresh connection's view.
    let seqs = audit_seqs(e.dir.path());
    assert_eq!(seqs.len(), before + 5, "{seqs:?}");
    assert_eq!(context_values(&e.kms, "Encrypt"), ["x", "b0", "b1"]);
    let report = e.kms.audit_verify().unwrap();
    assert!(report.valid, "{report:?}");
}

/// 16 HTTP clients Encrypt at once through the server, whose batch
/// thread runs the calls: every answered call decrypts to what was sent
/// and has one audit event, in each client's order.
#[test]
fn concurrent_http_calls_run_in_batches_and_each_is_audited_once() {
    const CLIENTS: usize = 16;
    const CALLS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (kms, ctx) = open(dir.path());
    let key = kms.call(&ctx, "CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let home = Arc::new(Home::open(dir.path()).unwrap());
    let iam = Iam::open(home, Clock::system()).unwrap();
    let (akid, secret) = iam.profile_credentials("default").unwrap();
    let kms = Arc::new(kms);
    let (srv, endpoint) = common::serve::serve_in_process(kms.clone(), dir.path());
    let answered: Vec<Vec<(String, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (endpoint, akid, secret, key) = (&endpoint, &akid, &secret, &key);
                s.spawn(move || {
                    let client =
                        RemoteKms::new(endpoint, Region::default_region(), akid, secret.clone())
                            .unwrap();
                    (0..CALLS)
                        .map(|i| {
                            let n = format!("{c:02}-{i:03}");
                            let r = client
                                .call(
                                    "Encrypt",
                                    json!({"KeyId": key, "Plaintext": b64(n.as_bytes()), "EncryptionContext": {"n": n}}),
                                )
                                .unwrap();
                            (n, r["CiphertextBlob"].as_str().unwrap().to_string())
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let logged = context_values(&kms, "Encrypt");
    assert_eq!(logged.len(), CLIENTS * CALLS);
    for (c, calls) in answered.iter().enumerate() {
        let prefix = format!("{c:02}-");
        let mine: Vec<&String> = logged.iter().filter(|n| n.starts_with(&prefix)).collect();
        let sent: Vec<&String> = calls.iter().map(|(n, _)| n).collect();
        assert_eq!(mine, sent, "client {c}'s calls out of order or missing");
        for (n, ct) in calls.iter().step_by(7) {
            let plain = kms
                .call(
                    &ctx,
                    "Decrypt",
                    json!({"CiphertextBlob": ct, "EncryptionContext": {"n": n}}),
                )
                .unwrap();
            assert_eq!(plain["Plaintext"], b64(n.as_bytes()));
        }
    }
    drop(srv);
    let report = kms.audit_verify().unwrap();
    assert!(report.valid, "{report:?}");
}

/// The WAL's length in frames (`mxFrame` of the WAL-index header in the
/// `-shm` file: bytes 16..20, native byte order), 0 before it exists.
fn wal_frames(db: &std::path::Path) -> u32 {
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    match std::fs::read(&shm) {
        Ok(b) if b.len() >= 20 => u32::from_ne_bytes([b[16], b[17], b[18], b[19]]),
        _ => 0,
    }
}

/// Calls committing back to back (two threads of Encrypts, as a busy
/// server's batches) keep the WAL short: the checkpointer restarts the log
/// past 4,000 frames, where a passive checkpoint alone let it grow to the
/// 16,000 frames at which the calls' own commits checkpoint, fsyncs and
/// all. Runs until 24,000 frames were written in all.
#[test]
fn the_wal_restarts_while_calls_commit_back_to_back() {
    let e = env();
    let key = e.create_key();
    let db = Home::open(e.dir.path()).unwrap().db_path();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (written, longest, restarts) = std::thread::scope(|s| {
        for _ in 0..2 {
            let (e, key, stop) = (&e, &key, &stop);
            s.spawn(move || {
                let pt = b64(&[7u8; 2048]);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    e.ok("Encrypt", json!({"KeyId": key, "Plaintext": pt}));
                }
            });
        }
        let (mut written, mut longest, mut restarts, mut last) = (0u64, 0u32, 0u32, 0u32);
        let began = std::time::Instant::now();
        while written < 24_000 && began.elapsed() < std::time::Duration::from_secs(240) {
            let now = wal_frames(&db);
            if now < last {
                restarts += 1;
                written += u64::from(now);
            } else {
                written += u64::from(now - last);
            }
            longest = longest.max(now);
            last = now;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (written, longest, restarts)
    });
    assert!(written >= 24_000, "only {written} WAL frames in 240 s");
    assert!(
        restarts >= 2,
        "the WAL restarted {restarts} times in {written} frames"
    );
    assert!(
        longest < 12_000,
        "the WAL reached {longest} frames ({restarts} restarts in {written} frames)"
    );
}
