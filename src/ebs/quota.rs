//! The request quotas of the EBS direct APIs, as EBS's service quotas name
//! them: requests per second per account for each action, block requests
//! per second per snapshot, snapshots being written at once per account,
//! and snapshots per region.
//!
//! Rates are token buckets (a bucket holds one second of its rate, and at
//! least one request): a request past its bucket is
//! `RequestThrottledException` (reason `ACCOUNT_THROTTLED` for the
//! account's rate, `RESOURCE_LEVEL_THROTTLE` for the snapshot's), which the
//! SDKs retry with backoff. Counts are checked by StartSnapshot:
//! `ConcurrentLimitExceededException` for too many open uploads,
//! `ServiceQuotaExceededException` (`DEPENDENCY_SERVICE_QUOTA_EXCEEDED`)
//! for too many snapshots in the region. Quotas belong to a home (one
//! `keyvol serve`), set with `--ebs-quota NAME=VALUE`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::snapshot::direct::{DirectError, DirectResult};

/// The quotas of one home. Rates are requests per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Quotas {
    /// Per account and action, in the order of [`ACTIONS`].
    pub per_account: [f64; 6],
    pub put_per_snapshot: f64,
    pub get_per_snapshot: f64,
    /// Uploads of StartSnapshot open at once per account.
    pub open_uploads: u64,
    /// Snapshots an account may own in one region.
    pub snapshots_per_region: u64,
}

/// The actions of [`Quotas::per_account`].
pub const ACTIONS: [&str; 6] = [
    "StartSnapshot",
    "PutSnapshotBlock",
    "CompleteSnapshot",
    "ListSnapshotBlocks",
    "ListChangedBlocks",
    "GetSnapshotBlock",
];

impl Default for Quotas {
    /// EBS's default quotas.
    fn default() -> Self {
        Quotas {
            per_account: [10.0, 5000.0, 10.0, 50.0, 50.0, 5000.0],
            put_per_snapshot: 1000.0,
            get_per_snapshot: 1000.0,
            open_uploads: 100,
            snapshots_per_region: 100_000,
        }
    }
}

impl Quotas {
    /// Sets one quota from `NAME=VALUE`: an action's name (requests per
    /// second per account), `PutSnapshotBlockPerSnapshot`,
    /// `GetSnapshotBlockPerSnapshot`, `OpenUploads` or `SnapshotsPerRegion`.
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("'{spec}' is not NAME=VALUE"))?;
        let bad = || format!("the value of {name} must be a positive number, not '{value}'");
        let rate: f64 = value.trim().parse().map_err(|_| bad())?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(bad());
        }
        let count = || -> Result<u64, String> { value.trim().parse().map_err(|_| bad()) };
        match name.trim() {
            "PutSnapshotBlockPerSnapshot" => self.put_per_snapshot = rate,
            "GetSnapshotBlockPerSnapshot" => self.get_per_snapshot = rate,
            "OpenUploads" => self.open_uploads = count()?,
            "SnapshotsPerRegion" => self.snapshots_per_region = count()?,
            other => match ACTIONS.iter().position(|a| *a == other) {
                Some(i) => self.per_account[i] = rate,
                None => {
                    return Err(format!(
                        "unknown quota '{other}': use one of {}, PutSnapshotBlockPerSnapshot, GetSnapshotBlockPerSnapshot, OpenUploads, SnapshotsPerRegion",
                        ACTIONS.join(", ")
                    ))
                }
            },
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn configured() -> &'static Mutex<HashMap<PathBuf, Quotas>> {
    static Q: OnceLock<Mutex<HashMap<PathBuf, Quotas>>> = OnceLock::new();
    Q.get_or_init(Default::default)
}

/// Sets the quotas of the home at `home` (for this process).
pub fn configure(home: &Path, quotas: Quotas) {
    lock(configured()).insert(home.to_path_buf(), quotas);
}

/// The quotas of the home at `home`: EBS's defaults unless configured.
pub fn of(home: &Path) -> Quotas {
    lock(configured()).get(home).cloned().unwrap_or_default()
}

/// A token bucket: `rate` tokens a second, holding at most one second's.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn capacity(rate: f64) -> f64 {
        rate.max(1.0)
    }

    /// Takes one token at `now` if there is one.
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(Self::capacity(rate));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn full(&self, rate: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate
            >= Self::capacity(rate)
    }
}

type BucketKey = (PathBuf, String);

fn buckets() -> &'static Mutex<HashMap<BucketKey, (Bucket, f64)>> {
    static B: OnceLock<Mutex<HashMap<BucketKey, (Bucket, f64)>>> = OnceLock::new();
    B.get_or_init(Default::default)
}

/// Buckets kept before full ones are dropped (a full bucket is the same as
/// none).
const MAX_BUCKETS: usize = 4096;

fn take(home: &Path, key: String, rate: f64, now: Instant) -> bool {
    let mut b = lock(buckets());
    if b.len() >= MAX_BUCKETS {
        b.retain(|_, (bucket, r)| !bucket.full(*r, now));
    }
    let (bucket, r) = b.entry((home.to_path_buf(), key)).or_insert((
        Bucket {
            tokens: Bucket::capacity(rate),
            at: now,
        },
        rate,
    ));
    if *r != rate {
        // The quota was changed: a new, full bucket.
        *bucket = Bucket {
            tokens: Bucket::capacity(rate),
            at: now,
        };
        *r = rate;
    }
    bucket.take(rate, now)
}

/// Admits one request of `action` by `account` (on `snapshot` for block
/// requests), or refuses it as EBS throttles.
pub fn admit(
    home: &Path,
    account: &str,
    action: &'static str,
    snapshot: Option<&str>,
) -> DirectResult<()> {
    let q = of(home);
    let now = Instant::now();
    let Some(i) = ACTIONS.iter().position(|a| *a == action) else {
        return Ok(());
    };
    if !take(home, format!("{account}/{action}"), q.per_account[i], now) {
        return Err(DirectError::new(
            "RequestThrottledException",
            Some("ACCOUNT_THROTTLED"),
            format!(
                "The account's {action} requests exceed {} per second; retry with backoff",
                q.per_account[i]
            ),
        ));
    }
    let per_snapshot = match action {
        "PutSnapshotBlock" => Some(q.put_per_snapshot),
        "GetSnapshotBlock" => Some(q.get_per_snapshot),
        _ => None,
    };
    if let (Some(rate), Some(id)) = (per_snapshot, snapshot) {
        if !take(home, format!("{id}/{action}"), rate, now) {
            return Err(DirectError::new(
                "RequestThrottledException",
                Some("RESOURCE_LEVEL_THROTTLE"),
                format!(
                    "{action} requests on snapshot {id} exceed {rate} per second; retry with backoff"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_holds_one_second_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: Bucket::capacity(4.0),
            at: t0,
        };
        for _ in 0..4 {
            assert!(b.take(4.0, t0));
        }
        assert!(!b.take(4.0, t0), "a fifth request in the same instant");
        assert!(!b.take(4.0, t0 + Duration::from_millis(200)));
        assert!(b.take(4.0, t0 + Duration::from_millis(500)), "refilled");
        // Never more than one second's worth, however long it waited.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..4 {
            assert!(b.take(4.0, later));
        }
        assert!(!b.take(4.0, later));
        // A rate under one a second still admits one request.
        let mut slow = Bucket {
            tokens: Bucket::capacity(0.01),
            at: t0,
        };
        assert!(slow.take(0.01, t0));
        assert!(!slow.take(0.01, t0 + Duration::from_secs(50)));
        assert!(slow.take(0.01, t0 + Duration::from_secs(101)));
    }

    #[test]
    fn quotas_parse_by_name_and_refuse_what_is_not_a_quota() {
        let mut q = Quotas::default();
        q.set("StartSnapshot=2").unwrap();
        q.set("PutSnapshotBlockPerSnapshot=0.5").unwrap();
        q.set("OpenUploads=3").unwrap();
        assert_eq!(q.per_account[0], 2.0);
        assert_eq!(q.put_per_snapshot, 0.5);
        assert_eq!(q.open_uploads, 3);
        for bad in [
            "StartSnapshot",
            "StartSnapshot=0",
            "StartSnapshot=-1",
            "StartSnapshot=inf",
            "OpenUploads=1.5",
            "Nope=3",
        ] {
            let before = q.clone();
            assert!(q.set(bad).is_err(), "{bad}");
            assert_eq!(q, before, "{bad} changed nothing");
        }
    }
}
