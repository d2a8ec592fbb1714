//! The state of the `Kms` handle (its home, write connection, group
//! commit, readers and audit key) and what operation bodies may use of it:
//! the sealing of key material at rest and the records of what the KMS did
//! by itself. Below the operations; `service.rs` opens the handle and runs
//! operations with it.

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use serde_json::{json, Value};

use super::audit::{self, AuditEntry};
use super::commit::GroupCommit;
use super::model::KeyRecord;
use super::readers::Readers;
use super::store::db;
use super::{KmsError, KmsResult};
use crate::clock::Clock;
use crate::home::Home;
use crate::ids::KeyId;
use crate::secret::{Key256, SecretBytes};

/// The embedded KMS over one home.
pub struct Kms {
    pub(crate) home: Arc<Home>,
    pub(super) conn: Mutex<WriteConn>,
    /// Stateless calls waiting for the commit of the shared transaction.
    pub(super) group: GroupCommit,
    /// Read connections of CPU-heavy stateless bodies.
    pub(super) readers: Readers,
    /// Commits of `conn`, for the checkpointer thread.
    pub(super) commits: Arc<std::sync::atomic::AtomicU64>,
    /// Dropped with the KMS, which ends the checkpointer thread.
    pub(super) _checkpointer: Option<std::sync::mpsc::Sender<()>>,
    pub(crate) clock: Clock,
    pub(super) audit_key: Key256,
    /// Parsed asymmetric and HMAC private keys by (key id, material
    /// version), so Sign/Decrypt/MAC calls skip unsealing and parsing.
    /// Material of a version never changes and key ids are never reused;
    /// entries are zeroized when dropped.
    pub(crate) private_keys:
        Mutex<std::collections::HashMap<(KeyId, u32), super::asym::PrivateKeyMaterial>>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms")
            .field("home", &self.home.dir())
            .finish()
    }
}

/// The KMS's write connection, with the `synchronous` level it is set to
/// and the shared transaction of stateless calls, if one is open.
pub(crate) struct WriteConn {
    pub(super) conn: Connection,
    pub(super) synchronous: Option<bool>,
    /// The first ticket of the open shared transaction: the calls of
    /// tickets `open..next_ticket` joined it and wait for its commit.
    pub(super) open: Option<u64>,
    pub(super) next_ticket: u64,
}

impl std::ops::Deref for WriteConn {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl WriteConn {
    /// `synchronous = FULL` (the commit is durable, and so is every earlier
    /// one) or `NORMAL` (durable at the next FULL commit or checkpoint), set
    /// only when it changes: the pragma is parsed anew each time (never
    /// from a cached statement: SQLite applies it when the statement is
    /// prepared, not when it runs, so a cached one would set nothing).
    pub(super) fn set_synchronous(&mut self, durable: bool) -> KmsResult<()> {
        if self.synchronous == Some(durable) {
            return Ok(());
        }
        self.synchronous = None;
        self.conn
            .pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })
            .map_err(db)?;
        self.synchronous = Some(durable);
        Ok(())
    }
}

impl Kms {
    pub fn home_arc(&self) -> Arc<Home> {
        self.home.clone()
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The write connection outside any transaction: a shared
    /// transaction still open is committed first (its calls decided).
    pub(crate) fn conn(&self) -> MutexGuard<'_, WriteConn> {
        let mut w = self.shared_conn();
        self.settle(&mut w);
        w
    }

    /// The write connection as it is, possibly inside the shared
    /// transaction.
    pub(super) fn shared_conn(&self) -> MutexGuard<'_, WriteConn> {
        // A poisoned lock only means another thread panicked mid-operation;
        // a failed call's changes were rolled back to its savepoint, so the
        // connection is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event the KMS did by itself (RotateKey, DeleteKey).
    pub(crate) fn record_service_event(
        &self,
        tx: &Connection,
        k: &KeyRecord,
        event_name: &str,
        now: i64,
        extra: Value,
    ) -> KmsResult<()> {
        let arn = k.arn();
        let event = json!({
            "eventVersion": "1.08",
            "userIdentity": {"accountId": k.account, "invokedBy": "kms.amazonaws.com"},
            "eventTime": crate::clock::to_rfc3339(now),
            "eventSource": "kms.amazonaws.com",
            "eventName": event_name,
            "awsRegion": k.region,
            "sourceIPAddress": "kms.amazonaws.com",
            "userAgent": "kms.amazonaws.com",
            "requestParameters": null,
            "responseElements": null,
            "additionalEventData": extra,
            "eventID": uuid::Uuid::new_v4().to_string(),
            "readOnly": false,
            "resources": [{"accountId": k.account, "type": "AWS::KMS::Key", "ARN": arn}],
            "eventType": "AwsServiceEvent",
            "managementEvent": true,
            "recipientAccountId": k.account,
            "eventCategory": "Management",
        });
        audit::append(
            tx,
            &self.audit_key,
            &AuditEntry {
                event_time: now,
                account: k.account.as_str(),
                caller_account: k.account.as_str(),
                principal: "kms.amazonaws.com",
                event_name,
                key_arn: Some(&arn),
                error_code: None,
                event: &event,
            },
        )
    }

    pub(crate) fn seal_material(&self, id: &KeyId, version: u32, m: &[u8]) -> Vec<u8> {
        self.home.seal(&material_label(id, version), m)
    }

    pub(crate) fn unseal_material(
        &self,
        id: &KeyId,
        version: u32,
        sealed: &[u8],
    ) -> KmsResult<SecretBytes> {
        self.home
            .unseal(&material_label(id, version), sealed)
            .map_err(|e| KmsError::internal(e.to_string()))
    }
}

fn material_label(id: &KeyId, version: u32) -> String {
    format!("kms-key-material/{id}/{version}")
}
