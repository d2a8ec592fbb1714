//! The `Kms` handle: `open`, and `run`, which gives every operation body
//! (`ops/`) a transaction, its due work first and its audit record after;
//! the operation table (`dispatch.rs`) calls it.
//!
//! Two paths, both on the one write connection. A state-changing operation
//! runs in a write transaction of its own (due work, body, audit record, a
//! durable commit). A stateless one (`Access::ReadOnly` in the operation
//! table, `operation.rs`) joins the shared transaction: calls run one
//! after the other in one open transaction, each inside a savepoint of its
//! own (due work, body, audit record), and one commit without an fsync
//! acknowledges all of them (`commit.rs`). The bodies of the stateless
//! calls that compute for long (`computes`: Sign, Verify,
//! DeriveSharedSecret, asymmetric Decrypt and ReEncrypt) run on read
//! connections instead (`readers.rs`),
//! side by side, and only their audit records join the shared
//! transaction. A stateless call whose body must write key state
//! (creating the AWS managed key on first use) runs again on the durable
//! path.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use serde_json::{json, Map, Value};

use super::audit::{self, AuditEntry, AuditRecord};
use super::batch;
use super::commit::GroupCommit;
use super::op::{Op, Trace};
use super::operation::is_read_only;
use super::readers::Readers;
use super::state::{Kms, WriteConn};
use super::store::{self, db};
use super::{Caller, KmsError, KmsResult, RequestContext};
use crate::clock::Clock;
use crate::home::Home;
use crate::ids::AccountId;
use crate::secret::Key256;

/// Where a stateless call ended up.
enum Attempt<T> {
    /// Ran and its audit record committed (or the commit failed).
    Done(KmsResult<T>),
    /// Must run on the write path; the request is handed back.
    OnWriter(Value),
}

/// Request fields that are never written to the audit log.
const SECRET_FIELDS: &[&str] = &[
    "Plaintext",
    "CiphertextBlob",
    "Message",
    "Signature",
    "Mac",
    "EncryptedKeyMaterial",
    "ImportToken",
    "PublicKey",
    "PrivateKeyPlaintext",
    "PrivateKeyCiphertextBlob",
    "SharedSecret",
    "SecretAccessKey",
];

/// Does this stateless call's body compute for long (an RSA signature or
/// decryption takes about 0.4 ms, with 4096 bits several ms)? Then it runs
/// on a read connection of its own, side by side with others, rather than
/// holding the write connection, and only its audit record joins the
/// shared transaction: Sign, Verify and DeriveSharedSecret always, Decrypt
/// and ReEncrypt when the request names an asymmetric algorithm (an
/// asymmetric key is used only with one; symmetric ones stay on the
/// shared path, where they are cheap).
pub(super) fn computes(operation: &str, request: &Value) -> bool {
    let asymmetric = |field: &str| {
        request
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|a| a != "SYMMETRIC_DEFAULT")
    };
    match operation {
        "Sign" | "Verify" | "DeriveSharedSecret" => true,
        "Decrypt" => asymmetric("EncryptionAlgorithm"),
        "ReEncrypt" => {
            asymmetric("SourceEncryptionAlgorithm") || asymmetric("DestinationEncryptionAlgorithm")
        }
        _ => false,
    }
}

/// Runs one statement of the transaction frame from the statement cache.
fn cached(conn: &Connection, sql: &str) -> KmsResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute([]))
        .map(drop)
        .map_err(db)
}

/// The statements of one savepoint name.
struct SavepointSql {
    begin: &'static str,
    rollback: &'static str,
    release: &'static str,
}

/// A call's savepoint in the shared transaction.
const CALL: SavepointSql = SavepointSql {
    begin: "SAVEPOINT call",
    rollback: "ROLLBACK TO call",
    release: "RELEASE call",
};

/// An operation body's savepoint: a failed body changes nothing.
const OP: SavepointSql = SavepointSql {
    begin: "SAVEPOINT op",
    rollback: "ROLLBACK TO op",
    release: "RELEASE op",
};

/// An open savepoint. One dropped without `end` (its code returned early
/// or panicked) is rolled back and released, so no half-done call stays
/// in a transaction that other calls go on to commit.
struct Savepoint<'a> {
    conn: &'a Connection,
    sql: &'static SavepointSql,
    ended: bool,
}

impl<'a> Savepoint<'a> {
    fn new(conn: &'a Connection, sql: &'static SavepointSql) -> KmsResult<Savepoint<'a>> {
        cached(conn, sql.begin)?;
        Ok(Savepoint {
            conn,
            sql,
            ended: false,
        })
    }

    /// Keeps (`keep`) or undoes what was done since the savepoint, and
    /// releases it.
    fn end(mut self, keep: bool) -> KmsResult<()> {
        self.ended = true;
        if !keep {
            cached(self.conn, self.sql.rollback)?;
        }
        cached(self.conn, self.sql.release)
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let undone = cached(self.conn, self.sql.rollback)
                .and_then(|()| cached(self.conn, self.sql.release));
            if let Err(e) = undone {
                tracing::warn!("undoing an unfinished call: {e}");
            }
        }
    }
}

/// How often the checkpointer thread copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The WAL size (in pages) at which a commit of the KMS checkpoints by
/// itself: a safety net well above what the checkpointer thread lets the
/// WAL reach (SQLite's default is 1,000 pages).
const COMMIT_CHECKPOINT_PAGES: i64 = 16_000;

/// The WAL length (in frames, 16 MiB of 4 KiB pages) past which the
/// checkpointer, after its passive pass, also restarts the log.
///
/// SQLite restarts the WAL from its beginning only when a write
/// transaction starts with every frame already copied into the database.
/// A passive checkpoint runs beside the writer, and while calls commit
/// back to back some frames always land during its pass, so the log never
/// restarted on its own: it grew to [`COMMIT_CHECKPOINT_PAGES`], and from
/// then on the commits themselves checkpointed, copy and fsyncs included,
/// inside a request's commit. Under a steady load of Encrypt calls that
/// stalled batches for 50–110 ms (p99 at 16 clients 14–110 ms, against
/// 5.3–5.4 ms with the restart). A RESTART checkpoint takes the write lock,
/// copies what the passive pass left (little), syncs and waits for readers
/// to leave the log, so the next writer starts it over: the writer waits
/// for that short copy and its fsyncs once per this many frames.
const RESTART_FRAMES: i64 = 4_000;

/// Copies committed WAL frames into the database file from a thread of its
/// own (a passive checkpoint every [`CHECKPOINT_EVERY`] after commits, and
/// a restart of the log past [`RESTART_FRAMES`]), so a request's commit
/// does not pay for the copy and its fsync. The thread ends when the KMS
/// is dropped (its channel disconnects).
fn spawn_checkpointer(
    home: &Home,
    commits: Arc<std::sync::atomic::AtomicU64>,
) -> Option<std::sync::mpsc::Sender<()>> {
    let mut conn = home.connect().ok()?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("kms-checkpoint".into())
        .spawn(move || {
            // A process that waits for its stop signals (the attach daemon,
            // the server) blocks them only after the KMS opens: this thread
            // must not take one, or its default action ends the process.
            if let Err(e) = crate::sys::StopSignals::new().block() {
                tracing::debug!("checkpointer: blocking stop signals: {e}");
            }
            let mut seen = 0;
            // Rounds to wait before the next RESTART after one that found
            // a reader in the log.
            let mut hold_off = 0u32;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(CHECKPOINT_EVERY)
            {
                let now = commits.load(std::sync::atomic::Ordering::Relaxed);
                if now == seen {
                    continue;
                }
                seen = now;
                // Busy (another checkpoint runs) or failing: the commits'
                // own checkpoint at COMMIT_CHECKPOINT_PAGES stays.
                let passive = match checkpoint(&conn, "PASSIVE") {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!("background WAL checkpoint: {e}");
                        continue;
                    }
                };
                hold_off = hold_off.saturating_sub(1);
                // Only once the passive pass copied every frame: a reader
                // that kept it from doing so would hold the restart too.
                if passive.complete() && passive.frames >= RESTART_FRAMES && hold_off == 0 {
                    let restart = conn
                        .busy_handler(Some(restart_wait))
                        .and_then(|()| checkpoint(&conn, "RESTART"));
                    match restart {
                        Ok(r) if r.busy => hold_off = RESTART_HOLD_OFF,
                        Ok(_) => {}
                        Err(e) => tracing::debug!("background WAL restart: {e}"),
                    }
                    if let Err(e) = conn.busy_handler(Some(crate::home::busy_wait)) {
                        tracing::debug!("checkpointer: restoring its busy handler: {e}");
                    }
                }
            }
        });
    spawned.ok().map(|_| tx)
}

/// The busy handler of the checkpointer's RESTART, which holds the write
/// lock while it waits for readers to leave the log: it gives up after
/// about 20 ms (a reader of another process in a long read transaction)
/// rather than stall every writer, and the next round tries again.
fn restart_wait(attempt: i32) -> bool {
    if attempt >= 400 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_micros(50));
    true
}

/// Rounds of [`CHECKPOINT_EVERY`] without a RESTART after one that gave
/// up on a reader (about a second): while another process reads for long,
/// the writers wait for a RESTART's 20 ms at most once a second.
const RESTART_HOLD_OFF: u32 = 20;

/// What one checkpoint did, as `PRAGMA wal_checkpoint` reports it.
struct Checkpointed {
    /// It could not finish (another checkpoint, a writer or a reader was
    /// in the way).
    busy: bool,
    /// The WAL's length in frames (-1 when not in WAL mode).
    frames: i64,
    /// Frames copied into the database, of those.
    copied: i64,
}

impl Checkpointed {
    fn complete(&self) -> bool {
        !self.busy && self.frames >= 0 && self.copied == self.frames
    }
}

/// Runs one checkpoint of `mode`.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Checkpointed {
            busy: r.get::<_, i64>(0)? != 0,
            frames: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

impl Kms {
    pub fn open(home: Arc<Home>, clock: Clock) -> KmsResult<Kms> {
        let conn = home
            .connect()
            .map_err(|e| KmsError::internal(e.to_string()))?;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {} {} {} {}",
            crate::iam::SCHEMA,
            store::SCHEMA,
            audit::SCHEMA,
            super::grants::SCHEMA
        ))
        .map_err(db)?;
        // Schema and migration commit together or not at all.
        let migrated =
            store::migrate(&conn).and_then(|()| conn.execute_batch("COMMIT;").map_err(db));
        if let Err(e) = migrated {
            // Leaves the home as it was; the error is the one to report.
            let _ = conn.execute_batch("ROLLBACK;");
            return Err(e);
        }
        let audit_key = derive_audit_key(&home);
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let checkpointer = spawn_checkpointer(&home, commits.clone());
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", COMMIT_CHECKPOINT_PAGES)
                .map_err(db)?;
        }
        Ok(Kms {
            group: GroupCommit::default(),
            readers: Readers::new(home.clone()),
            home,
            conn: Mutex::new(WriteConn {
                conn,
                synchronous: None,
                open: None,
                next_ticket: 0,
            }),
            commits,
            _checkpointer: checkpointer,
            clock,
            audit_key,
            private_keys: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Runs one operation and writes one audit record for it whether it
    /// succeeded or failed; a failed body changes nothing but the audit
    /// log. A stateless operation whose body finds it must write runs
    /// again on the durable path (the first outcome dropped unseen), so
    /// the body is `FnMut`.
    pub(crate) fn run<T>(
        &self,
        ctx: &RequestContext,
        operation: &str,
        request: Value,
        mut body: impl FnMut(&mut Op<'_>) -> KmsResult<T>,
    ) -> KmsResult<T> {
        let request = if is_read_only(operation) {
            let attempt = if computes(operation, &request) {
                self.run_on_reader(ctx, operation, request, &mut body)?
            } else {
                self.in_shared(|tx| self.audited(tx, ctx, operation, request, &mut body, false))?
            };
            match attempt {
                Attempt::Done(result) => return result,
                Attempt::OnWriter(request) => request,
            }
        } else {
            request
        };
        let mut conn = self.conn();
        // The durable path: everything that changes keys, aliases, grants
        // or policies commits with synchronous=FULL, which also makes every
        // earlier commit durable (the shared transaction commits without an
        // fsync: a process crash loses nothing, a power loss at most the
        // latest stateless calls' records).
        conn.set_synchronous(true)?;
        // BEGIN IMMEDIATE takes the write lock up front (waiting up to the
        // busy timeout): operations are short, and a deferred transaction
        // that upgrades to a writer could fail at once with SQLITE_BUSY.
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let result = match self.audited(&tx, ctx, operation, request, &mut body, true)? {
            Attempt::Done(result) => result,
            // On the write path a body may write.
            Attempt::OnWriter(_) => Err(KmsError::internal("the operation could not run")),
        };
        tx.commit().map_err(db)?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// A stateless operation on a read connection: the body sees the
    /// latest committed state (a state change that returned is visible),
    /// and the call is acknowledged once its audit record committed in the
    /// shared transaction. With scheduled work due (a key whose deletion
    /// date passed must not sign), or a body that must write, the call is
    /// handed back to run in the shared transaction or the durable path.
    fn run_on_reader<T>(
        &self,
        ctx: &RequestContext,
        operation: &str,
        request: Value,
        body: &mut impl FnMut(&mut Op<'_>) -> KmsResult<T>,
    ) -> KmsResult<Attempt<T>> {
        let reader = self.readers.take()?;
        let now = self.clock.now();
        cached(&reader, "BEGIN")?;
        // Asked in the snapshot the body reads, so due work of other
        // processes of the home counts too.
        let due = store::work_due(&reader, now);
        let mut trace = Trace::default();
        let (result, needs_writer) = match due {
            Ok(false) => {
                let mut op = Op {
                    tx: &reader,
                    now,
                    ctx,
                    trace: &mut trace,
                    on_writer: false,
                    needs_writer: false,
                    needs_managed_key: false,
                };
                let result = body(&mut op);
                (Some(result), op.needs_writer)
            }
            Ok(true) => (None, true),
            Err(e) => (Some(Err(e)), false),
        };
        // Nothing was written: ending the read transaction releases its
        // snapshot (a failure drops the connection, see `Reader`).
        cached(&reader, "ROLLBACK")?;
        drop(reader);
        let result = match result {
            Some(r) if !needs_writer => r,
            _ => {
                return self.in_shared(|tx| self.audited(tx, ctx, operation, request, body, false));
            }
        };
        let record = self.audit_record(ctx, operation, request, &trace, result.as_ref().err(), now);
        self.in_shared(|tx| audit::append_all(tx, &self.audit_key, &[record]))?;
        Ok(Attempt::Done(result))
    }

    /// Runs `f` in the shared transaction, inside a savepoint of its own,
    /// and returns once the transaction committed: `f`'s changes are undone
    /// if it fails, and every call of a transaction that fails to commit
    /// fails.
    fn in_shared<T>(&self, f: impl FnOnce(&Connection) -> KmsResult<T>) -> KmsResult<T> {
        let joining = self.group.joining();
        let mut w = self.shared_conn();
        if w.open.is_none() {
            // As every stateless operation committed before: no fsync (a
            // process crash loses none of these records, a power loss at
            // most the latest, until the next durable commit).
            w.set_synchronous(false)?;
            cached(&w, "BEGIN IMMEDIATE")?;
            w.open = Some(w.next_ticket);
        }
        // Begun by hand rather than by `Savepoint::new`: the failure arm
        // needs `w` mutably, which a `Result` holding the savepoint's
        // borrow of it would not allow.
        let begun = cached(&w, CALL.begin);
        if let Err(e) = begun {
            self.abandon(&mut w);
            return Err(e);
        }
        let savepoint = Savepoint {
            conn: &w,
            sql: &CALL,
            ended: false,
        };
        let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&w))) {
            Ok(out) => out,
            Err(panic) => {
                // The call is undone (its savepoint rolled back) and the
                // transaction ended before the panic goes on.
                drop(savepoint);
                self.settle(&mut w);
                std::panic::resume_unwind(panic);
            }
        };
        if let Err(e) = savepoint.end(out.is_ok()) {
            // A savepoint that cannot be rolled back or released leaves the
            // transaction in doubt: none of its calls is acknowledged.
            self.abandon(&mut w);
            return Err(e);
        }
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // Undone, and no commit of this call is awaited: the
                // transaction must not stay open (holding SQLite's write
                // lock) for want of a caller who ends it.
                self.settle(&mut w);
                return Err(e);
            }
        };
        let ticket = w.next_ticket;
        w.next_ticket += 1;
        drop(w);
        joining.joined();
        if batch::defer(ticket) {
            // In `call_batch`: its caller waits for the commit.
            return Ok(out);
        }
        self.group.wait(ticket, || drop(self.conn()))?;
        Ok(out)
    }

    /// Runs `calls` one after the other on this thread and returns their
    /// outcomes in order, each acknowledged like a lone call: a stateless
    /// call's result is returned only once the shared transaction holding
    /// its audit record committed, and fails if that commit failed. Unlike
    /// lone calls, the calls of a batch do not each wait for a commit (and
    /// for the thread that leads it): one commit after the last of them
    /// serves all, so a server that queues cheap calls for one thread pays
    /// neither the handover of the write connection between threads nor a
    /// wake-up per call. A call that panics fails alone.
    pub fn call_batch(&self, calls: Vec<batch::Call>) -> Vec<KmsResult<Value>> {
        let ran: Vec<(KmsResult<Value>, Vec<u64>)> = calls
            .into_iter()
            .map(|c| {
                let deferring = batch::Deferring::start();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.call(&c.ctx, &c.operation, c.request)
                }))
                .unwrap_or_else(|_| {
                    Err(KmsError::internal(format!(
                        "the KMS failed while running {}",
                        c.operation
                    )))
                });
                (result, deferring.tickets())
            })
            .collect();
        ran.into_iter()
            .map(|(result, tickets)| {
                // The first wait commits the open transaction (or finds it
                // committed by another thread); the others find their
                // tickets decided.
                for t in tickets {
                    self.group.wait(t, || drop(self.conn()))?;
                }
                result
            })
            .collect()
    }

    /// Commits the shared transaction if one is open and decides its calls.
    pub(super) fn settle(&self, w: &mut WriteConn) {
        let Some(first) = w.open else {
            return;
        };
        match cached(w, "COMMIT") {
            Ok(()) => {
                self.commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                w.open = None;
                self.group.decide(first..w.next_ticket, None);
            }
            Err(e) => {
                tracing::warn!("commit of stateless calls failed: {e}");
                self.abandon(w);
            }
        }
    }

    /// Rolls the shared transaction back and fails its calls.
    fn abandon(&self, w: &mut WriteConn) {
        let Some(first) = w.open.take() else {
            return;
        };
        if !w.is_autocommit() {
            if let Err(e) = cached(w, "ROLLBACK") {
                tracing::warn!("rollback of stateless calls failed: {e}");
            }
        }
        let failure = KmsError::internal("the audit commit of this call failed");
        self.group.decide(first..w.next_ticket, Some(failure));
    }

    /// One call in `tx`, a write transaction: due scheduled work first, the
    /// body in a savepoint (undone if it fails), then its audit record.
    /// `on_writer` is false in the shared transaction, where a body that
    /// must write key state is handed back for the durable path.
    fn audited<T>(
        &self,
        tx: &Connection,
        ctx: &RequestContext,
        operation: &str,
        request: Value,
        body: &mut impl FnMut(&mut Op<'_>) -> KmsResult<T>,
        on_writer: bool,
    ) -> KmsResult<Attempt<T>> {
        let now = self.clock.now();
        // Due work first and outside the savepoint: it stands even when the
        // operation that triggered it fails.
        self.run_due_work(tx, now)?;
        let op_savepoint = Savepoint::new(tx, &OP)?;
        let mut trace = Trace::default();
        let mut made_managed_key = false;
        let result = loop {
            let mut op = Op {
                tx,
                now,
                ctx,
                trace: &mut trace,
                on_writer,
                needs_writer: false,
                needs_managed_key: false,
            };
            let result = body(&mut op);
            if op.needs_writer {
                op_savepoint.end(false)?;
                return Ok(Attempt::OnWriter(request));
            }
            if !op.needs_managed_key || made_managed_key {
                break result;
            }
            // The body named the account's AWS managed key before it
            // existed: undo what the body did, make the key, run it again.
            made_managed_key = true;
            cached(tx, OP.rollback)?;
            *op.trace = Trace::default();
            if let Err(e) = super::ops::create_aws_managed_ebs_key(self, &mut op) {
                break Err(e);
            }
        };
        op_savepoint.end(result.is_ok())?;
        let record = self.audit_record(ctx, operation, request, &trace, result.as_ref().err(), now);
        audit::append_all(tx, &self.audit_key, &[record])?;
        Ok(Attempt::Done(result))
    }

    /// The CloudTrail record of one call.
    fn audit_record(
        &self,
        ctx: &RequestContext,
        operation: &str,
        request: Value,
        trace: &Trace,
        error: Option<&KmsError>,
        now: i64,
    ) -> AuditRecord {
        let caller = &ctx.caller;
        let (key_arn, recipient) = match &trace.key {
            Some((arn, acct)) => (Some(arn.as_str()), acct.to_string()),
            None => (None, caller.account.to_string()),
        };
        let mut event = json!({
            "eventVersion": "1.08",
            "userIdentity": user_identity(caller),
            "eventTime": crate::clock::to_rfc3339(now),
            "eventSource": "kms.amazonaws.com",
            "eventName": operation,
            "awsRegion": ctx.region,
            // A call the control plane makes on a caller's behalf shows the
            // caller's own address, with `invokedBy` naming the service.
            "sourceIPAddress": match (&ctx.source_ip, &ctx.via_service) {
                (Some(ip), _) => ip.clone(),
                (None, Some(_)) => "AWS Internal".to_string(),
                (None, None) => "keyvol-cli".to_string(),
            },
            "userAgent": ctx.user_agent.clone().unwrap_or_else(|| "keyvol".into()),
            "requestParameters": redact(request),
            "responseElements": trace.response_elements,
            "requestID": ctx.audit_request_id(),
            "eventID": uuid::Uuid::new_v4().to_string(),
            "readOnly": is_read_only(operation),
            "resources": key_arn.map(|a| json!([{"accountId": recipient, "type": "AWS::KMS::Key", "ARN": a}])),
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": recipient,
            "eventCategory": "Management",
        });
        if let Some(via) = &ctx.via_service {
            event["invokedBy"] = json!(via.replace(&format!(".{}", ctx.region), ""));
        }
        if let Some(e) = error {
            event["errorCode"] = json!(e.code.to_string());
            event["errorMessage"] = json!(e.message);
        }
        let code = error.map(|e| e.code.to_string());
        AuditRecord::of(&AuditEntry {
            event_time: now,
            account: &recipient,
            caller_account: caller.account.as_str(),
            principal: &caller.principal_arn,
            event_name: operation,
            key_arn,
            error_code: code.as_deref(),
            event: &event,
        })
    }

    /// Appends an event of another service of the control plane (EC2,
    /// EBS) to the same hash chain, in a transaction of its own: durable
    /// (synchronous=FULL) for management events; data events (block reads
    /// and writes) commit as the KMS's own cryptographic operations do,
    /// without an fsync of their own (a process crash loses none, a power
    /// loss at most the latest, until the next durable commit).
    pub fn record_foreign_event(
        &self,
        account: &str,
        caller: &crate::kms::Caller,
        event_name: &str,
        error_code: Option<&str>,
        event: &Value,
        durable: bool,
    ) -> KmsResult<()> {
        let record = AuditRecord::of(&AuditEntry {
            event_time: self.clock.now(),
            account,
            caller_account: caller.account.as_str(),
            principal: &caller.principal_arn,
            event_name,
            key_arn: None,
            error_code,
            event,
        });
        if !durable {
            // Committed as the KMS's stateless calls are: in the shared
            // transaction.
            return self.in_shared(|tx| audit::append_all(tx, &self.audit_key, &[record]));
        }
        let mut conn = self.conn();
        conn.set_synchronous(durable)?;
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        audit::append_all(&tx, &self.audit_key, &[record])?;
        tx.commit().map_err(db)?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Deletes keys whose window has passed, rotates keys whose period has
    /// passed and expires imported material, each logged as a service event.
    fn run_due_work(&self, tx: &Connection, now: i64) -> KmsResult<()> {
        self.expire_imported_material(tx, now)?;
        for mut k in store::due_keys(tx, now)? {
            if k.state == super::model::KeyState::PendingDeletion
                && k.deletion_date.is_some_and(|d| d <= now)
            {
                store::destroy_key(tx, &k, now)?;
                self.record_service_event(tx, &k, "DeleteKey", now, json!({}))?;
                super::ops::multi_region::after_replica_destroyed(tx, &k, now)?;
                continue;
            }
            if k.rotation_enabled {
                while let Some(next) = k.next_rotation.filter(|n| *n <= now) {
                    super::ops::add_material(self, tx, &k, next, "AUTOMATIC")?;
                    k.next_rotation =
                        Some(next + k.rotation_period.unwrap_or(365) * crate::clock::DAY);
                    self.record_service_event(
                        tx,
                        &k,
                        "RotateKey",
                        now,
                        json!({"keyId": k.key_id.to_string(), "rotationType": "AUTOMATIC"}),
                    )?;
                }
                store::update_key(tx, &k)?;
            }
        }
        Ok(())
    }

    /// Deletes imported key material whose ValidTo has passed: material
    /// pending rotation is forgotten; material of the key stays known
    /// (PENDING_IMPORT) and the key waits for it (PendingImport).
    fn expire_imported_material(&self, tx: &Connection, now: i64) -> KmsResult<()> {
        for (key_id, row) in store::expired_imports(tx, now)? {
            let Some(mut k) = store::get_key(tx, &key_id)? else {
                continue;
            };
            super::ops::import::forget_material(tx, &mut k, &row)?;
            store::update_key(tx, &k)?;
            let event = json!({"keyMaterialId": row.material_id});
            self.record_service_event(tx, &k, "DeleteExpiredKeyMaterial", now, event)?;
        }
        Ok(())
    }

    /// Verifies the audit chain.
    pub fn audit_verify(&self) -> KmsResult<audit::VerifyReport> {
        audit::verify(&self.conn(), &self.audit_key)
    }

    /// Audit events matching `filter`, oldest first.
    pub fn audit_list(&self, filter: &audit::AuditFilter) -> KmsResult<Vec<Value>> {
        audit::list(&self.conn(), filter)
    }

    /// Runs due scheduled work (deletions, rotations) now, outside any call.
    pub fn tick(&self) -> KmsResult<()> {
        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        self.run_due_work(&tx, self.clock.now())?;
        tx.commit().map_err(db)
    }

    pub(crate) fn request_count(&self, account: &AccountId, from: i64, to: i64) -> KmsResult<i64> {
        audit::request_count(&self.conn(), account.as_str(), from, to)
    }
}

fn derive_audit_key(home: &Home) -> Key256 {
    // A deterministic function of the root key, so every process of the
    // home extends the same chain.
    let tag = zeroize::Zeroizing::new(home.derive_tag("keyvol audit chain v1"));
    Key256::from_slice(&tag[..]).unwrap_or_else(Key256::random)
}

/// CloudTrail's `userIdentity` of a caller; an assumed-role session also
/// names the role that issued it (`sessionContext.sessionIssuer`).
pub(crate) fn user_identity(caller: &Caller) -> Value {
    let mut v = json!({
        "type": caller.principal_type,
        "principalId": principal_id(&caller.principal_arn, &caller.account),
        "arn": caller.principal_arn,
        "accountId": caller.account,
        "accessKeyId": caller.access_key_id,
    });
    if let Some((role, _)) = caller.session_role() {
        let name = role.rsplit('/').next().unwrap_or_default().to_string();
        v["sessionContext"] = json!({
            "sessionIssuer": {
                "type": "Role",
                "principalId": format!("AROA{}", name.to_uppercase()),
                "arn": role,
                "accountId": caller.account,
                "userName": name,
            },
            "attributes": {"mfaAuthenticated": "false"},
        });
    }
    v
}

pub(crate) fn principal_id(arn: &str, account: &AccountId) -> String {
    if let Some((_, rest)) = arn.split_once(":assumed-role/") {
        let (role, session) = rest.split_once('/').unwrap_or((rest, ""));
        return format!("AROA{}:{session}", role.to_uppercase());
    }
    match arn.rsplit_once('/') {
        Some((_, name)) => format!("AIDA{}", name.to_uppercase()),
        None => account.to_string(),
    }
}

fn redact(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if SECRET_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                out.insert(lower_first(&k), redact(v));
            }
            Value::Object(out)
        }
        other => other,
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Region;

    fn kms() -> (tempfile::TempDir, Kms, RequestContext, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Clock::system();
        let home = Arc::new(Home::open(dir.path()).expect("home"));
        let iam = crate::iam::Iam::open(home.clone(), clock.clone()).expect("iam");
        let kms = Kms::open(home, clock).expect("kms");
        let ctx = RequestContext::new(
            iam.profile_caller("default").expect("caller"),
            Region::default_region(),
        );
        let key = kms
            .create_key(&ctx, Default::default())
            .expect("key")
            .key_metadata["KeyId"]
            .as_str()
            .expect("key id")
            .to_string();
        (dir, kms, ctx, key)
    }

    /// Schedules `key`'s deletion and moves the clock past its date.
    fn pass_deletion_date(kms: &Kms, ctx: &RequestContext, key: &str) {
        kms.call(
            ctx,
            "ScheduleKeyDeletion",
            json!({"KeyId": key, "PendingWindowInDays": 7}),
        )
        .expect("schedule");
        kms.clock.advance(8 * crate::clock::DAY);
    }

    fn audited(kms: &Kms) -> usize {
        kms.audit_list(&Default::default()).expect("audit").len()
    }

    #[test]
    fn a_stateless_call_is_audited_once() {
        let (_dir, kms, ctx, key) = kms();
        let before = audited(&kms);
        kms.call(&ctx, "DescribeKey", json!({"KeyId": key}))
            .expect("describe");
        assert_eq!(audited(&kms), before + 1);
        // The shared transaction is committed, not left open.
        assert!(kms.shared_conn().open.is_none());
        assert!(kms.audit_verify().expect("verify").valid);
    }

    #[test]
    fn a_failed_stateless_call_leaves_only_its_record() {
        let (_dir, kms, ctx, _) = kms();
        let before = audited(&kms);
        let missing = "11111111-2222-3333-4444-555555555555";
        let err = kms
            .call(
                &ctx,
                "Encrypt",
                json!({"KeyId": missing, "Plaintext": "aGk="}),
            )
            .expect_err("no such key");
        assert_eq!(err.code, super::super::ErrorCode::NotFoundException);
        let events = kms.audit_list(&Default::default()).expect("audit");
        assert_eq!(events.len(), before + 1);
        let last = events.last().expect("record");
        assert_eq!(last["eventName"], "Encrypt");
        assert_eq!(last["errorCode"], "NotFoundException");
    }

    #[test]
    fn due_work_runs_before_a_stateless_call() {
        let (_dir, kms, ctx, key) = kms();
        pass_deletion_date(&kms, &ctx, &key);
        let err = kms
            .call(&ctx, "Encrypt", json!({"KeyId": key, "Plaintext": "aGk="}))
            .expect_err("the key's deletion date passed");
        assert_eq!(err.code, super::super::ErrorCode::NotFoundException);
        let names: Vec<String> = kms
            .audit_list(&Default::default())
            .expect("audit")
            .iter()
            .map(|e| e["eventName"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(names[names.len() - 2..], ["DeleteKey", "Encrypt"]);
        assert!(kms.audit_verify().expect("verify").valid);
    }

    #[test]
    fn a_body_that_must_write_runs_on_the_durable_path() {
        let (_dir, kms, ctx, _) = kms();
        let attempt = kms
            .in_shared(|tx| {
                kms.audited(
                    tx,
                    &ctx,
                    "DescribeKey",
                    json!({}),
                    &mut |op| {
                        op.resolve(Some(super::super::ops::EBS_ALIAS), true)
                            .map(|k| k.key_id)
                    },
                    false,
                )
            })
            .expect("attempt");
        assert!(matches!(attempt, Attempt::OnWriter(_)));
        let alias = store::alias(
            &kms.conn(),
            &ctx.caller.account,
            &ctx.region,
            super::super::ops::EBS_ALIAS,
        )
        .expect("alias");
        assert!(
            alias.is_none(),
            "the shared transaction created the managed key"
        );
        // Through `run`, the call goes on to the durable path and succeeds.
        let described = kms
            .call(
                &ctx,
                "DescribeKey",
                json!({"KeyId": super::super::ops::EBS_ALIAS}),
            )
            .expect("describe");
        assert_eq!(described["KeyMetadata"]["KeyManager"], "AWS");
    }

    /// A call whose audit record cannot be written fails, is not
    /// acknowledged and leaves nothing behind; the calls after it run.
    #[test]
    fn a_call_whose_record_fails_is_not_acknowledged() {
        let (_dir, kms, ctx, key) = kms();
        kms.conn()
            .execute_batch(
                "CREATE TEMP TRIGGER refuse_decrypt BEFORE INSERT ON audit \
                 WHEN NEW.event_name = 'Decrypt' BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            )
            .expect("trigger");
        let blob = kms
            .call(&ctx, "Encrypt", json!({"KeyId": key, "Plaintext": "aGk="}))
            .expect("encrypt")["CiphertextBlob"]
            .clone();
        let before = audited(&kms);
        kms.call(&ctx, "Decrypt", json!({"CiphertextBlob": blob}))
            .expect_err("its record could not be written");
        assert!(
            kms.shared_conn().open.is_none(),
            "the transaction was ended"
        );
        assert_eq!(audited(&kms), before);
        kms.call(&ctx, "Encrypt", json!({"KeyId": key, "Plaintext": "aGk="}))
            .expect("a later call");
        assert_eq!(audited(&kms), before + 1);
        assert!(kms.audit_verify().expect("verify").valid);
    }

    /// A call that panics in the shared transaction is undone and does not
    /// leave the transaction (and SQLite's write lock) open.
    #[test]
    fn a_panicking_call_ends_the_shared_transaction() {
        let (_dir, kms, ctx, key) = kms();
        let before = audited(&kms);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = kms.in_shared(|tx| -> KmsResult<()> {
                audit::append(
                    tx,
                    &kms.audit_key,
                    &AuditEntry {
                        event_time: 0,
                        account: "111122223333",
                        caller_account: "111122223333",
                        principal: "p",
                        event_name: "Half",
                        key_arn: None,
                        error_code: None,
                        event: &json!({}),
                    },
                )?;
                panic!("a body that panics");
            });
        }));
        assert!(panicked.is_err());
        assert!(kms.shared_conn().open.is_none());
        assert_eq!(audited(&kms), before, "the half-done call was undone");
        kms.call(&ctx, "Encrypt", json!({"KeyId": key, "Plaintext": "aGk="}))
            .expect("a later call");
        assert!(kms.audit_verify().expect("verify").valid);
    }

    #[test]
    fn readers_refuse_writes() {
        let (_dir, kms, _, _) = kms();
        let reader = kms.readers.take().expect("reader");
        assert!(reader.execute("DELETE FROM audit_head", []).is_err());
    }

    /// A Sign runs its body on a reader and its record joins the shared
    /// transaction: audited once, the chain whole; with the key's deletion
    /// due, the due work runs first and the Sign fails as AWS's would.
    #[test]
    fn a_sign_on_a_reader_is_audited_once() {
        let (_dir, kms, ctx, _) = kms();
        let key = kms
            .call(
                &ctx,
                "CreateKey",
                json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
            )
            .expect("key")["KeyMetadata"]["KeyId"]
            .as_str()
            .expect("key id")
            .to_string();
        let sign = json!({"KeyId": key, "Message": "aGk=", "SigningAlgorithm": "ECDSA_SHA_256"});
        let before = audited(&kms);
        kms.call(&ctx, "Sign", sign.clone()).expect("sign");
        assert_eq!(audited(&kms), before + 1);
        pass_deletion_date(&kms, &ctx, &key);
        let err = kms.call(&ctx, "Sign", sign).expect_err("deleted");
        assert_eq!(err.code, super::super::ErrorCode::NotFoundException);
        assert!(kms.audit_verify().expect("verify").valid);
    }

    /// Concurrent stateless calls all commit, each audited once, and the
    /// chain stays whole.
    #[test]
    fn concurrent_stateless_calls_are_all_audited() {
        let (_dir, kms, ctx, key) = kms();
        let before = audited(&kms);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        kms.call(&ctx, "Encrypt", json!({"KeyId": key, "Plaintext": "aGk="}))
                            .expect("encrypt");
                    }
                });
            }
        });
        assert_eq!(audited(&kms), before + 200);
        assert!(kms.audit_verify().expect("verify").valid);
    }
}
