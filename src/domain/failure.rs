//! Failure groups and filters over dead-lettered messages: what an operator
//! sees instead of a pile. Pure: the broker edge turns a message's headers
//! into a [`Failed`] and the commands decide with these.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use time::{format_description::well_known::Rfc3339, Duration, OffsetDateTime};

/// What the DLQ tools know of one dead-lettered message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failed {
    /// `api_failed`, `invalid_payload`, `delivery_limit` (or another broker
    /// reason), `unknown`.
    pub reason: String,
    /// `x-bridge-failed-targets`, in header order.
    pub failed_targets: Vec<String>,
    /// `x-bridge-error`: one line per failed target, or why the body was
    /// rejected.
    pub error: String,
    /// `x-bridge-dead-lettered-at`, or the broker's `x-death` time.
    pub at: Option<OffsetDateTime>,
    pub message_id: Option<String>,
    /// `x-bridge-replays`: how often it was sent back before.
    pub replays: i64,
}

/// The cause a message failed for: every message is in exactly one group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    /// 8 lowercase hex characters derived from the key alone.
    pub id: String,
    pub reason: String,
    /// The failed targets (sorted), for `api_failed`.
    pub targets: Vec<String>,
    /// Per failed target its error class (`logging: HTTP 503`), or the kind
    /// of JSON error; empty when the reason says it all.
    pub error: String,
    /// e.g. `api_failed · logging: HTTP 503`.
    pub label: String,
}

/// The group of a message.
pub fn group_of(f: &Failed) -> Group {
    let (targets, error) = match f.reason.as_str() {
        "api_failed" => {
            let mut classes: Vec<(String, String)> = f
                .error
                .lines()
                .filter_map(|line| {
                    let (target, rest) = line.split_once(": ")?;
                    Some((target.trim().to_owned(), error_class(rest)))
                })
                .collect();
            let mut targets: Vec<String> = f
                .failed_targets
                .iter()
                .filter(|t| !t.is_empty())
                .cloned()
                .collect();
            targets.sort();
            targets.dedup();
            for t in &targets {
                if !classes.iter().any(|(ct, _)| ct == t) {
                    classes.push((t.clone(), "unknown".to_owned()));
                }
            }
            classes.sort();
            classes.dedup();
            let error = classes
                .iter()
                .map(|(t, c)| format!("{t}: {c}"))
                .collect::<Vec<_>>()
                .join("; ");
            (targets, error)
        }
        "invalid_payload" => (Vec::new(), payload_error_kind(&f.error)),
        _ => (Vec::new(), String::new()),
    };
    let key = format!("{}\n{}\n{}", f.reason, targets.join(","), error);
    let digest = Sha256::digest(key.as_bytes());
    let mut id = String::with_capacity(8);
    for b in &digest[..4] {
        let _ = write!(id, "{b:02x}");
    }
    let label = if error.is_empty() {
        f.reason.clone()
    } else {
        format!("{} · {error}", f.reason)
    };
    Group {
        id,
        reason: f.reason.clone(),
        targets,
        error,
        label,
    }
}

/// The class of one target's last error, from the text after `target: ` in
/// `x-bridge-error` (`HTTP 503 after 3 attempts`): `HTTP <status>`,
/// `timeout`, `tls`, `connection`, or `other`.
pub fn error_class(text: &str) -> String {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("HTTP ") {
        let status: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !status.is_empty() {
            return format!("HTTP {status}");
        }
    }
    if text.starts_with("timed out") || text.contains("timed out") && !text.contains("HTTP") {
        return "timeout".to_owned();
    }
    let lower = text.to_ascii_lowercase();
    if ["certificate", "tls", "handshake", "x509"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return "tls".to_owned();
    }
    if lower.starts_with("connection") || lower.starts_with("request failed") {
        return "connection".to_owned();
    }
    "other".to_owned()
}

/// The kind of a body's rejection, without where it happened: `not UTF-8`,
/// or `JSON: <serde_json's category>` (`EOF while parsing an object`).
pub fn payload_error_kind(text: &str) -> String {
    let text = text.trim();
    if text.contains("not UTF-8") {
        return "not UTF-8".to_owned();
    }
    if let Some(rest) = text.split_once("not valid JSON: ").map(|(_, r)| r) {
        let kind = rest.split(" at line ").next().unwrap_or(rest).trim();
        return format!("JSON: {kind}");
    }
    if text.is_empty() {
        String::new()
    } else {
        "other".to_owned()
    }
}

/// Which messages a DLQ command acts on; an empty filter matches all. The
/// conditions combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub reason: Option<String>,
    /// Among the failed targets.
    pub target: Option<String>,
    pub group: Option<String>,
    /// Any of these message ids.
    pub ids: Vec<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// A substring of the body or of `x-bridge-error`.
    pub grep: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether the message matches. `group` is its group (computed once by
    /// the caller), `body` its bytes.
    pub fn matches(&self, f: &Failed, group: &Group, body: &[u8]) -> bool {
        if self.reason.as_ref().is_some_and(|r| *r != f.reason) {
            return false;
        }
        if self
            .target
            .as_ref()
            .is_some_and(|t| !f.failed_targets.iter().any(|ft| ft == t))
        {
            return false;
        }
        if self.group.as_ref().is_some_and(|g| *g != group.id) {
            return false;
        }
        if !self.ids.is_empty()
            && !f
                .message_id
                .as_ref()
                .is_some_and(|id| self.ids.iter().any(|want| want == id))
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(at) = f.at else {
                return false;
            };
            if self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at > u) {
                return false;
            }
        }
        if let Some(needle) = &self.grep {
            let in_body = contains(body, needle.as_bytes());
            if !in_body && !f.error.contains(needle.as_str()) {
                return false;
            }
        }
        true
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A `--since`/`--until` value: RFC 3339, or a duration back from `now`
/// (`45s`, `30m`, `2h`, `7d`).
///
/// # Errors
/// A text saying what is wrong, for the flag's error message.
pub fn parse_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time nor a duration such as 30m, 2h or 7d")
    })?;
    let back = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => {
            return Err(format!(
                "{text:?} is neither an RFC 3339 time nor a duration such as 30m, 2h or 7d"
            ))
        }
    };
    if n < 0 {
        return Err(format!(
            "{text:?}: a duration back from now cannot be negative"
        ));
    }
    now.checked_sub(back)
        .ok_or_else(|| format!("{text:?} reaches too far back"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_failed(targets: &[&str], error: &str) -> Failed {
        Failed {
            reason: "api_failed".into(),
            failed_targets: targets.iter().map(|s| (*s).to_owned()).collect(),
            error: error.into(),
            ..Failed::default()
        }
    }

    #[test]
    fn the_same_cause_is_one_group_whatever_the_counts_and_text() {
        let a = group_of(&api_failed(
            &["logging"],
            "logging: HTTP 503 after 3 attempts",
        ));
        let b = group_of(&api_failed(
            &["logging"],
            "logging: HTTP 503 after 1 attempt",
        ));
        assert_eq!(a, b);
        assert_eq!(a.label, "api_failed · logging: HTTP 503");
        assert_eq!(a.id.len(), 8);
        assert!(a
            .id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let other = group_of(&api_failed(
            &["user-management"],
            "user-management: HTTP 400 after 1 attempt",
        ));
        assert_ne!(a.id, other.id);
    }

    #[test]
    fn the_id_is_derived_from_the_key_only() {
        // Fixed, so the same cause has the same id on every machine and in
        // every version that keeps the key.
        let g = group_of(&api_failed(
            &["logging"],
            "logging: HTTP 503 after 3 attempts",
        ));
        let key = "api_failed\nlogging\nlogging: HTTP 503";
        let digest = Sha256::digest(key.as_bytes());
        assert_eq!(
            g.id,
            format!(
                "{:02x}{:02x}{:02x}{:02x}",
                digest[0], digest[1], digest[2], digest[3]
            )
        );
    }

    #[test]
    fn error_classes() {
        assert_eq!(error_class("HTTP 503 after 3 attempts"), "HTTP 503");
        assert_eq!(
            error_class("timed out after 10000 ms after 3 attempts"),
            "timeout"
        );
        assert_eq!(
            error_class("connection failed (Connection refused (os error 111)) after 3 attempts"),
            "connection"
        );
        assert_eq!(
            error_class(
                "connection failed (invalid peer certificate: UnknownIssuer) after 1 attempt"
            ),
            "tls"
        );
        assert_eq!(
            error_class("request failed: connection closed before message completed"),
            "connection"
        );
    }

    #[test]
    fn two_failed_targets_are_one_group_in_any_order() {
        let a = group_of(&api_failed(
            &["logging", "user-management"],
            "logging: HTTP 503 after 3 attempts\nuser-management: timed out after 10 ms after 3 attempts",
        ));
        let b = group_of(&api_failed(
            &["user-management", "logging"],
            "user-management: timed out after 10 ms after 3 attempts\nlogging: HTTP 503 after 3 attempts",
        ));
        assert_eq!(a, b);
        assert_eq!(a.targets, ["logging", "user-management"]);
        assert_eq!(a.error, "logging: HTTP 503; user-management: timeout");
    }

    #[test]
    fn invalid_payloads_group_by_the_kind_of_json_error() {
        let f = |e: &str| Failed {
            reason: "invalid_payload".into(),
            error: e.into(),
            ..Failed::default()
        };
        let a = group_of(&f(
            "body is not valid JSON: EOF while parsing an object at line 1 column 9",
        ));
        let b = group_of(&f(
            "body is not valid JSON: EOF while parsing an object at line 3 column 1",
        ));
        assert_eq!(a, b);
        assert_eq!(
            a.label,
            "invalid_payload · JSON: EOF while parsing an object"
        );
        let c = group_of(&f("body is not UTF-8: invalid byte at offset 3"));
        assert_eq!(c.error, "not UTF-8");
        let limit = group_of(&Failed {
            reason: "delivery_limit".into(),
            ..Failed::default()
        });
        assert_eq!(limit.label, "delivery_limit");
    }

    #[test]
    fn filters_combine_with_and() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut f = api_failed(&["logging"], "logging: HTTP 503 after 3 attempts");
        f.message_id = Some("m-1".into());
        f.at = Some(now - Duration::minutes(10));
        let g = group_of(&f);
        let body = br#"{"customer":"acme"}"#;
        assert!(Filter::default().matches(&f, &g, body));
        let only = |filter: Filter| filter.matches(&f, &g, body);
        assert!(only(Filter {
            reason: Some("api_failed".into()),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            reason: Some("invalid_payload".into()),
            ..Filter::default()
        }));
        assert!(only(Filter {
            target: Some("logging".into()),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            target: Some("user-management".into()),
            ..Filter::default()
        }));
        assert!(only(Filter {
            group: Some(g.id.clone()),
            ..Filter::default()
        }));
        assert!(only(Filter {
            ids: vec!["x".into(), "m-1".into()],
            ..Filter::default()
        }));
        assert!(!only(Filter {
            ids: vec!["x".into()],
            ..Filter::default()
        }));
        assert!(only(Filter {
            since: Some(now - Duration::hours(1)),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            since: Some(now - Duration::minutes(5)),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            until: Some(now - Duration::hours(1)),
            ..Filter::default()
        }));
        assert!(only(Filter {
            grep: Some("acme".into()),
            ..Filter::default()
        }));
        assert!(only(Filter {
            grep: Some("HTTP 503".into()),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            grep: Some("zzz".into()),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            reason: Some("api_failed".into()),
            grep: Some("zzz".into()),
            ..Filter::default()
        }));
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_back() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(parse_time("30m", now).unwrap(), now - Duration::minutes(30));
        assert_eq!(parse_time("2h", now).unwrap(), now - Duration::hours(2));
        assert_eq!(parse_time("7d", now).unwrap(), now - Duration::days(7));
        assert_eq!(
            parse_time("2027-01-15T08:00:00Z", now).unwrap(),
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("5w", now).is_err());
        assert!(parse_time("", now).is_err());
    }
}
