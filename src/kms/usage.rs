//! The monthly bill of an account by AWS KMS pricing: $1 per customer
//! managed or imported key-month (prorated hourly; AWS managed keys and keys
//! pending deletion are free; the first two rotations of a key add $1 each
//! per month), and $0.03 per 10,000 requests after 20,000 free per month.

use serde::Serialize;

use super::store::db;
use super::{Kms, KmsError, KmsResult};
use crate::ids::AccountId;

const KEY_MONTH_USD: f64 = 1.0;
const FREE_REQUESTS: i64 = 20_000;
const USD_PER_10K_REQUESTS: f64 = 0.03;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UsageReport {
    pub account_id: String,
    pub month: String,
    pub key_hours: f64,
    pub key_months: f64,
    pub rotation_charges: i64,
    pub keys_usd: f64,
    pub requests: i64,
    pub billable_requests: i64,
    pub requests_usd: f64,
    pub total_usd: f64,
}

/// `YYYY-MM` -> (start, end) in epoch seconds, UTC.
pub fn month_bounds(month: &str) -> KmsResult<(i64, i64)> {
    let bad = || KmsError::validation(format!("month '{month}' must be YYYY-MM"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (i32, u8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let start_month = time::Month::try_from(m).map_err(|_| bad())?;
    let start = time::Date::from_calendar_date(y, start_month, 1).map_err(|_| bad())?;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = time::Date::from_calendar_date(ny, time::Month::try_from(nm).map_err(|_| bad())?, 1)
        .map_err(|_| bad())?;
    Ok((
        start.midnight().assume_utc().unix_timestamp(),
        end.midnight().assume_utc().unix_timestamp(),
    ))
}

impl Kms {
    /// The bill of `account` for `month` (YYYY-MM; the current month when None).
    pub fn usage(&self, account: &AccountId, month: Option<&str>) -> KmsResult<UsageReport> {
        let now = self.clock.now();
        let month = match month {
            Some(m) => m.to_string(),
            None => {
                let d = time::OffsetDateTime::from_unix_timestamp(now)
                    .map_err(|_| KmsError::internal("bad clock"))?;
                format!("{:04}-{:02}", d.year(), d.month() as u8)
            }
        };
        let (start, end) = month_bounds(&month)?;
        let until = end.min(now.max(start));
        let conn = self.conn();
        // Billable key time: customer managed keys that exist in the month,
        // from creation (or month start) until deletion was scheduled (or
        // the month's end / now).
        let mut st = conn
            .prepare(
                "SELECT key_id, created, deletion_date, pending_window, state FROM keys \
                 WHERE account = ?1 AND key_manager = 'CUSTOMER' AND created <= ?2",
            )
            .map_err(db)?;
        let rows = st
            .query_map(rusqlite::params![account.as_str(), until], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(db)?;
        let mut secs = 0i64;
        let mut rotations = 0i64;
        for row in rows {
            let (key_id, created, deletion, window, state) = row.map_err(db)?;
            let from = created.max(start);
            let stop = match (state.as_str(), deletion, window) {
                ("PendingDeletion", Some(d), Some(w)) => until.min(d - w * crate::clock::DAY),
                _ => until,
            };
            secs += (stop - from).max(0);
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM key_material WHERE key_id = ?1 AND version > 1 AND created <= ?2",
                    rusqlite::params![key_id, until],
                    |r| r.get(0),
                )
                .map_err(db)?;
            rotations += n.min(2);
        }
        drop(st);
        drop(conn);
        let month_secs = (end - start) as f64;
        let key_hours = (secs as f64 / 3600.0).ceil();
        let key_months = secs as f64 / month_secs;
        let requests = self.request_count(account, start, end)?;
        let billable = (requests - FREE_REQUESTS).max(0);
        let keys_usd = key_months * KEY_MONTH_USD + rotations as f64 * KEY_MONTH_USD;
        let requests_usd = billable as f64 / 10_000.0 * USD_PER_10K_REQUESTS;
        let round = |x: f64| (x * 10_000.0).round() / 10_000.0;
        Ok(UsageReport {
            account_id: account.to_string(),
            month,
            key_hours,
            key_months: round(key_months),
            rotation_charges: rotations,
            keys_usd: round(keys_usd),
            requests,
            billable_requests: billable,
            requests_usd: round(requests_usd),
            total_usd: round(keys_usd + requests_usd),
        })
    }
}
