//! How stateless operations run beside the write path: the read
//! connections their bodies run on, and the group commit of their audit
//! records.
//!
//! What the service (`Kms::run`) relies on:
//! 1. A call is acknowledged only after the transaction holding its audit
//!    record committed; a batch that fails to commit fails every call in it,
//!    so no call of it is acknowledged.
//! 2. Records reach the chain in arrival order, which is the commit order:
//!    one leader commits at a time, and each batch is the run of tickets
//!    that arrived since the previous batch was taken.
//! 3. A batch is one transaction on the KMS's one write connection, taken
//!    like any state-changing operation's, so it never interleaves with
//!    one (SQLite would also refuse a second writer).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

use super::audit::AuditRecord;
use super::store::db;
use super::{KmsError, KmsResult};
use crate::home::Home;

/// How much of the database file a read connection maps.
const READER_MMAP_BYTES: i64 = 256 << 20;

/// Read connections of the home, one per concurrent stateless call, kept
/// for reuse (each holds its own statement cache). WAL readers never block
/// the writer nor each other.
pub(crate) struct Readers {
    home: Arc<Home>,
    idle: Mutex<Vec<Connection>>,
}

/// A read connection taken from [`Readers`], returned to them on drop.
pub(crate) struct Reader<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl Readers {
    pub(crate) fn new(home: Arc<Home>) -> Readers {
        Readers {
            home,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn take(&self) -> KmsResult<Reader<'_>> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = self
                    .home
                    .connect()
                    .map_err(|e| KmsError::internal(e.to_string()))?;
                // A body that writes belongs on the write path: here a write
                // fails instead of committing outside any audited
                // transaction.
                c.pragma_update(None, "query_only", true).map_err(db)?;
                // Every commit of the writer empties a reader's page cache
                // (WAL readers keep no pages across a change): with the
                // database file mapped, pages not in the WAL are read in
                // place instead of copied in again by a pread each call.
                c.pragma_update(None, "mmap_size", READER_MMAP_BYTES)
                    .map_err(db)?;
                c
            }
        };
        Ok(Reader {
            readers: self,
            conn: Some(conn),
        })
    }
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Some from `take` until `drop`.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a Reader holds its connection until dropped"),
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        // A connection left inside a transaction (its ROLLBACK failed) would
        // pin an old snapshot for its next user: it is closed instead.
        if let Some(c) = self.conn.take().filter(Connection::is_autocommit) {
            self.readers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(c);
        }
    }
}

/// The queue of audit records waiting for their commit.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    decided: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Records not yet taken by a leader, in arrival order; their tickets
    /// are `decided_below..next`.
    waiting: Vec<AuditRecord>,
    /// The ticket of the next record to arrive.
    next: u64,
    /// Every ticket below this one is committed or failed.
    decided_below: u64,
    /// Tickets of failed batches, until their callers take the error.
    failed: HashMap<u64, KmsError>,
    /// A leader is committing a batch.
    leading: bool,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while the queue is locked; a poisoned lock still
        // holds a consistent queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No record waits and no batch commits.
    pub(crate) fn idle(&self) -> bool {
        let q = self.lock();
        q.waiting.is_empty() && !q.leading
    }

    /// Queues `record` and returns once it committed (or its batch failed).
    /// The caller that finds no commit running becomes the leader: it takes
    /// every waiting record and runs `commit` on them, while later callers
    /// queue up for the next batch.
    pub(crate) fn submit(
        &self,
        record: AuditRecord,
        commit: impl Fn(&[AuditRecord]) -> KmsResult<()>,
    ) -> KmsResult<()> {
        let mut q = self.lock();
        let ticket = q.next;
        q.next += 1;
        q.waiting.push(record);
        loop {
            if ticket < q.decided_below {
                return q.failed.remove(&ticket).map_or(Ok(()), Err);
            }
            if q.leading {
                q = self.decided.wait(q).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            q.leading = true;
            let batch = std::mem::take(&mut q.waiting);
            let mut leader = Leader {
                group: self,
                tickets: q.decided_below..q.next,
                outcome: None,
            };
            drop(q);
            leader.outcome = Some(commit(&batch));
            drop(leader);
            q = self.lock();
        }
    }
}

/// A batch being committed; dropping it decides the batch's tickets, also
/// if `commit` panicked (then as failed), so no caller waits forever.
struct Leader<'a> {
    group: &'a GroupCommit,
    tickets: std::ops::Range<u64>,
    outcome: Option<KmsResult<()>>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut q = self.group.lock();
        let failure = match self.outcome.take() {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e),
            None => Some(KmsError::internal("the audit commit of this call failed")),
        };
        if let Some(e) = failure {
            for t in self.tickets.clone() {
                q.failed.insert(t, e.clone());
            }
        }
        q.decided_below = self.tickets.end;
        q.leading = false;
        self.group.decided.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> AuditRecord {
        AuditRecord {
            event_time: 0,
            account: String::new(),
            caller_account: String::new(),
            principal: String::new(),
            event_name: n.to_string(),
            key_arn: None,
            error_code: None,
            event: String::new(),
        }
    }

    /// Every record is committed exactly once, in one of the batches, and
    /// batches keep the arrival order of each thread.
    #[test]
    fn every_record_commits_once_in_order() {
        let group = GroupCommit::default();
        let committed = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..4 {
                let (group, committed) = (&group, &committed);
                s.spawn(move || {
                    for i in 0..200 {
                        group
                            .submit(record(t * 1000 + i), |batch| {
                                let mut c = committed.lock().unwrap();
                                c.extend(batch.iter().map(|r| r.event_name.clone()));
                                Ok(())
                            })
                            .unwrap();
                    }
                });
            }
        });
        let committed = committed.into_inner().unwrap();
        assert_eq!(committed.len(), 800);
        for t in 0..4 {
            let mine: Vec<usize> = committed
                .iter()
                .map(|n| n.parse::<usize>().unwrap())
                .filter(|n| n / 1000 == t)
                .collect();
            assert_eq!(mine, (t * 1000..t * 1000 + 200).collect::<Vec<_>>());
        }
    }

    /// A failed batch fails its calls and only them.
    #[test]
    fn a_failed_batch_fails_its_calls() {
        let group = GroupCommit::default();
        let fail = |_: &[AuditRecord]| Err(KmsError::internal("disk full"));
        assert!(group.submit(record(1), fail).is_err());
        assert!(group.submit(record(2), |_| Ok(())).is_ok());
        assert!(group.lock().failed.is_empty());
    }
}
