//! Time, injectable: scheduled deletion, rotation and expiry read the clock
//! through [`Clock`], so tests (and `KEYVOL_TIME_OFFSET`) can move it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub type EpochSecs = i64;

pub const DAY: EpochSecs = 86_400;

/// A source of the current time. The offset lets tests and the
/// `KEYVOL_TIME_OFFSET` environment variable run the service "in the future".
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Clock::default()
    }

    /// The system clock shifted by `KEYVOL_TIME_OFFSET` (seconds, or with a
    /// suffix `s`, `m`, `h`, `d`), for demonstrations and tests of what
    /// happens when a deletion window or rotation period has passed.
    pub fn from_env() -> Result<Self, String> {
        let clock = Clock::system();
        if let Ok(v) = std::env::var("KEYVOL_TIME_OFFSET") {
            clock.advance(parse_duration_secs(&v).ok_or_else(|| {
                format!("KEYVOL_TIME_OFFSET '{v}' is not a duration such as 3600, 90m, 31d")
            })?);
        }
        Ok(clock)
    }

    pub fn now(&self) -> EpochSecs {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        sys + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward by `secs`.
    pub fn advance(&self, secs: EpochSecs) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

/// `90`, `90s`, `15m`, `2h`, `31d` -> seconds.
pub fn parse_duration_secs(s: &str) -> Option<EpochSecs> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        's' => (&s[..s.len() - 1], 1),
        'm' => (&s[..s.len() - 1], 60),
        'h' => (&s[..s.len() - 1], 3600),
        'd' => (&s[..s.len() - 1], DAY),
        _ => (s, 1),
    };
    num.parse::<i64>().ok()?.checked_mul(mult)
}

/// RFC 3339 rendering of an epoch time (UTC), as the aws CLI prints dates.
pub fn to_rfc3339(t: EpochSecs) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_all_clones() {
        let c = Clock::system();
        let d = c.clone();
        let before = d.now();
        c.advance(10 * DAY);
        assert!(d.now() >= before + 10 * DAY);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("31d"), Some(31 * DAY));
        assert_eq!(parse_duration_secs("90"), Some(90));
        assert_eq!(parse_duration_secs("2h"), Some(7200));
        assert_eq!(parse_duration_secs("x"), None);
        assert_eq!(to_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
