//! The group commit of stateless operations: their calls run one after
//! the other in one open write transaction of the KMS's write connection
//! (the shared transaction, `service::Kms::in_shared`), and one commit
//! acknowledges all of them.
//!
//! What the service relies on:
//! 1. A call is acknowledged only after the transaction holding its audit
//!    record committed; a transaction that fails to commit fails every
//!    call in it, so no call of it is acknowledged.
//! 2. Records reach the chain in the order the calls took the write
//!    connection, which is the commit order: tickets are handed out under
//!    the connection's lock, and a commit decides every ticket issued
//!    since the previous one.
//! 3. One caller commits at a time (the leader), and it waits while other
//!    calls are about to join the transaction, up to [`MAX_BATCH`] calls:
//!    a commit (its WAL write and locks) then serves all of them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::{KmsError, KmsResult};

/// The most calls a leader waits for before it commits.
pub(crate) const MAX_BATCH: usize = 256;

/// Who is joining the shared transaction, and how its tickets were decided.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<Decisions>,
    changed: Condvar,
}

#[derive(Default)]
struct Decisions {
    /// Every ticket below this one is committed or failed.
    decided_below: u64,
    /// Tickets of failed transactions, until their callers take the error.
    failed: HashMap<u64, KmsError>,
    /// A leader is committing.
    leading: bool,
    /// Calls between announcing themselves and having joined (or given up).
    joining: usize,
    /// Calls that joined the open transaction since its last commit.
    pending: usize,
    /// The highest ticket a caller waits for: wake-ups go only where a
    /// caller can act on them (each one costs a futex wake).
    highest_waiting: Option<u64>,
    /// Callers in `wait`.
    waiters: usize,
}

impl Decisions {
    /// Some caller waits for a ticket not yet decided.
    fn undecided_waiting(&self) -> bool {
        self.highest_waiting
            .is_some_and(|t| t >= self.decided_below)
    }
}

/// A call about to join the shared transaction: while it lives, a leader
/// waits for it (its record would otherwise need a commit of its own).
pub(crate) struct Joining<'a> {
    group: &'a GroupCommit,
    joined: bool,
}

impl Joining<'_> {
    /// The call's record is in the open transaction.
    pub(crate) fn joined(mut self) {
        self.joined = true;
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        let mut d = self.group.lock();
        d.joining -= 1;
        if self.joined {
            d.pending += 1;
        }
        // Only a would-be leader waits for joiners, and only for the last
        // of them or a full batch.
        let wake =
            !d.leading && d.undecided_waiting() && (d.joining == 0 || d.pending >= MAX_BATCH);
        drop(d);
        if wake {
            self.group.changed.notify_all();
        }
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Decisions> {
        // Nothing panics while the state is locked; a poisoned lock still
        // holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Announces a call that is about to join the shared transaction.
    pub(crate) fn joining(&self) -> Joining<'_> {
        self.lock().joining += 1;
        Joining {
            group: self,
            joined: false,
        }
    }

    /// Decides `tickets`: committed, or failed with `failure`. Called by
    /// whoever ends the shared transaction, under the write connection's
    /// lock.
    pub(crate) fn decide(&self, tickets: Range<u64>, failure: Option<KmsError>) {
        let mut d = self.lock();
        if let Some(e) = failure {
            for t in tickets.clone() {
                d.failed.insert(t, e.clone());
            }
        }
        d.decided_below = d.decided_below.max(tickets.end);
        d.pending = 0;
        let wake = d.waiters > 0;
        drop(d);
        if wake {
            self.changed.notify_all();
        }
    }

    /// Returns once `ticket` is decided, with its outcome. The caller that
    /// finds no leader, and no call about to join, becomes the leader and
    /// runs `settle`, which must end the shared transaction (and `decide`
    /// its tickets) if one is open.
    pub(crate) fn wait(&self, ticket: u64, settle: impl Fn()) -> KmsResult<()> {
        let mut d = self.lock();
        d.highest_waiting = d.highest_waiting.max(Some(ticket));
        d.waiters += 1;
        loop {
            if ticket < d.decided_below {
                d.waiters -= 1;
                return d.failed.remove(&ticket).map_or(Ok(()), Err);
            }
            if d.leading || (d.joining > 0 && d.pending < MAX_BATCH) {
                d = self.changed.wait(d).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            d.leading = true;
            drop(d);
            {
                let _lead = Lead(self);
                settle();
            }
            d = self.lock();
        }
    }
}

/// A leader's turn; dropping it (also when `settle` panicked) lets the
/// next caller lead.
struct Lead<'a>(&'a GroupCommit);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut d = self.0.lock();
        d.leading = false;
        // Callers whose tickets the commit decided were woken by `decide`;
        // the others wait for a leader.
        let wake = d.undecided_waiting();
        drop(d);
        if wake {
            self.0.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the write connection: records join an open batch
    /// under its lock, and settling commits the batch.
    #[derive(Default)]
    struct Log {
        open: Vec<usize>,
        first: u64,
        next: u64,
        committed: Vec<usize>,
        fail_next: bool,
    }

    fn call(group: &GroupCommit, log: &Mutex<Log>, n: usize) -> KmsResult<()> {
        let joining = group.joining();
        let ticket = {
            let mut l = log.lock().unwrap();
            l.open.push(n);
            l.next += 1;
            l.next - 1
        };
        joining.joined();
        group.wait(ticket, || settle(group, log))
    }

    fn settle(group: &GroupCommit, log: &Mutex<Log>) {
        let mut l = log.lock().unwrap();
        let batch = std::mem::take(&mut l.open);
        let tickets = l.first..l.next;
        l.first = l.next;
        if std::mem::take(&mut l.fail_next) {
            group.decide(tickets, Some(KmsError::internal("disk full")));
        } else {
            l.committed.extend(batch);
            group.decide(tickets, None);
        }
    }

    /// Every call commits exactly once, and each thread's calls keep their
    /// order.
    #[test]
    fn every_call_commits_once_in_order() {
        let group = GroupCommit::default();
        let log = Mutex::new(Log::default());
        std::thread::scope(|s| {
            for t in 0..4 {
                let (group, log) = (&group, &log);
                s.spawn(move || {
                    for i in 0..200 {
                        call(group, log, t * 1000 + i).unwrap();
                    }
                });
            }
        });
        let committed = log.into_inner().unwrap().committed;
        assert_eq!(committed.len(), 800);
        for t in 0..4 {
            let mine: Vec<usize> = committed
                .iter()
                .copied()
                .filter(|n| n / 1000 == t)
                .collect();
            assert_eq!(mine, (t * 1000..t * 1000 + 200).collect::<Vec<_>>());
        }
        let d = group.lock();
        assert_eq!((d.joining, d.leading), (0, false));
    }

    /// A failed commit fails its calls and only them.
    #[test]
    fn a_failed_commit_fails_its_calls() {
        let group = GroupCommit::default();
        let log = Mutex::new(Log::default());
        log.lock().unwrap().fail_next = true;
        assert!(call(&group, &log, 1).is_err());
        assert!(call(&group, &log, 2).is_ok());
        assert_eq!(log.into_inner().unwrap().committed, vec![2]);
        assert!(group.lock().failed.is_empty());
    }

    /// A call that gave up before joining does not hold a leader back.
    #[test]
    fn a_call_that_gives_up_releases_the_leader() {
        let group = GroupCommit::default();
        let log = Mutex::new(Log::default());
        drop(group.joining());
        call(&group, &log, 7).unwrap();
        assert_eq!(log.into_inner().unwrap().committed, vec![7]);
    }
}
