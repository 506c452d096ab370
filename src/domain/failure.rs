//! Failure groups over dead-lettered messages: what an operator sees instead
//! of a pile. Pure: the broker edge turns a message's headers into a
//! [`Failed`]; [`super::filter`] selects among them.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

pub use super::filter::{parse_time, Filter};
use time::OffsetDateTime;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn api_failed(targets: &[&str], error: &str) -> Failed {
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
}
