//! Which failures are worth another attempt, and how long a server asked us to
//! wait. Pure functions of a status, a header and the clock.

use std::time::{Duration, SystemTime};

use crate::domain::FailureKind;

/// The longest wait a `Retry-After` header can impose.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(30);

/// How one HTTP status is treated: `None` is success.
pub fn classify_status(status: u16) -> Option<FailureKind> {
    match status {
        200..=299 => None,
        408 | 429 | 500..=599 => Some(FailureKind::Transient),
        _ => Some(FailureKind::Permanent),
    }
}

/// Whether a status's `Retry-After` header is honoured (contract: 429, 503).
pub fn honours_retry_after(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// Parses `Retry-After` (delay-seconds or an HTTP date) into a wait, capped at
/// [`RETRY_AFTER_CAP`]. A malformed value gives `None` and is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Long digit strings overflow u64: that is "very long", so the cap.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify_status(s), None, "{s}");
        }
        for s in [408, 429, 500, 501, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), Some(FailureKind::Transient), "{s}");
        }
        for s in [100, 301, 304, 400, 401, 403, 404, 409, 410, 413, 422] {
            assert_eq!(classify_status(s), Some(FailureKind::Permanent), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_cap() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("120", now), Some(RETRY_AFTER_CAP));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(RETRY_AFTER_CAP)
        );
    }

    #[test]
    fn retry_after_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let in_5s = httpdate::fmt_http_date(now + Duration::from_secs(5));
        assert_eq!(parse_retry_after(&in_5s, now), Some(Duration::from_secs(5)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(3600));
        assert_eq!(parse_retry_after(&far, now), Some(RETRY_AFTER_CAP));
    }

    #[test]
    fn malformed_retry_after_is_ignored() {
        let now = SystemTime::now();
        for bad in ["", "-1", "1.5", "soon", "Mon, 99 Foo 2020"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert!(honours_retry_after(429) && honours_retry_after(503));
        assert!(!honours_retry_after(500));
    }
}
