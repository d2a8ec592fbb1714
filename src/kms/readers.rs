//! Read connections for the bodies of CPU-heavy stateless operations
//! (asymmetric signing, verification, key agreement): such a body runs in
//! a read transaction beside the shared transaction instead of holding
//! the write connection while it computes, and only its audit record
//! joins the shared transaction (`service::Kms::run_on_reader`).

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

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
