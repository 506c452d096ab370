//! The `x-bridge-*` headers of a dead-lettered message, as plain values; the
//! broker edge turns them into an AMQP field table.

use std::fmt;

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::DeadLetter;

pub const REASON: &str = "x-bridge-reason";
pub const FAILED_TARGETS: &str = "x-bridge-failed-targets";
pub const DONE_TARGETS: &str = "x-bridge-done-targets";
pub const ERROR: &str = "x-bridge-error";
pub const ATTEMPTS: &str = "x-bridge-attempts";
pub const DEAD_LETTERED_AT: &str = "x-bridge-dead-lettered-at";
/// How many times `dlq replay` or `dlq import` sent the message back before;
/// the worker keeps it on a new DLQ copy, so a repeated failure stands out.
pub const REPLAYS: &str = "x-bridge-replays";
/// On a DLQ or hold copy: the original headers left out so that the copy
/// fits the connection's frame size (comma-separated names).
pub const HEADERS_DROPPED: &str = "x-bridge-headers-dropped";

/// Prefix shared by every header this program writes.
pub const PREFIX: &str = "x-bridge-";

/// Why a message is in the DLQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    ApiFailed,
    InvalidPayload,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::ApiFailed => "api_failed",
            Reason::InvalidPayload => "invalid_payload",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header value as the contract types it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    Text(String),
    Int(i32),
}

/// The headers a dead-lettered message gains, in a fixed order.
pub fn headers(dl: &DeadLetter, at: OffsetDateTime) -> Vec<(&'static str, HeaderValue)> {
    let attempts = i32::try_from(dl.attempts).unwrap_or(i32::MAX);
    vec![
        (REASON, HeaderValue::Text(dl.reason.as_str().to_owned())),
        (FAILED_TARGETS, HeaderValue::Text(dl.failed.to_string())),
        (DONE_TARGETS, HeaderValue::Text(dl.done.to_string())),
        (ERROR, HeaderValue::Text(dl.errors.join("\n"))),
        (ATTEMPTS, HeaderValue::Int(attempts)),
        (DEAD_LETTERED_AT, HeaderValue::Text(rfc3339_utc(at))),
    ]
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-26T07:01:02.345Z`.
pub fn rfc3339_utc(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at
        .replace_nanosecond(at.millisecond() as u32 * 1_000_000)
        .unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TargetSet;

    #[test]
    fn api_failed_headers() {
        let dl = DeadLetter {
            reason: Reason::ApiFailed,
            failed: TargetSet::parse_lenient("logging").0,
            done: TargetSet::parse_lenient("user-management").0,
            errors: vec!["logging: HTTP 503 after 3 attempts".into()],
            attempts: 3,
        };
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let h = headers(&dl, at);
        assert_eq!(h[0], (REASON, HeaderValue::Text("api_failed".into())));
        assert_eq!(h[1], (FAILED_TARGETS, HeaderValue::Text("logging".into())));
        assert_eq!(
            h[2],
            (DONE_TARGETS, HeaderValue::Text("user-management".into()))
        );
        assert_eq!(h[4], (ATTEMPTS, HeaderValue::Int(3)));
        assert_eq!(
            h[5],
            (
                DEAD_LETTERED_AT,
                HeaderValue::Text("2027-01-15T08:00:00Z".into())
            )
        );
    }

    #[test]
    fn invalid_payload_headers_are_empty_targets_and_zero_attempts() {
        let dl = DeadLetter::invalid_payload("body is not valid JSON: EOF".into());
        let h = headers(&dl, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(h[0].1, HeaderValue::Text("invalid_payload".into()));
        assert_eq!(h[1].1, HeaderValue::Text(String::new()));
        assert_eq!(h[2].1, HeaderValue::Text(TargetSet::empty().to_string()));
        assert_eq!(h[4].1, HeaderValue::Int(0));
    }

    #[test]
    fn timestamps_are_utc_millis() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_789).unwrap();
        assert_eq!(rfc3339_utc(at), "2027-01-15T08:00:00.123Z");
    }
}
