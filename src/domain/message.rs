//! An inbound message as the worker sees it: the body, the idempotency key, the
//! event name and the trace headers, plus JSON validation and the logging
//! envelope, all without I/O.

use std::{fmt, ops::Range};

use bytes::Bytes;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::TargetSet;

/// The idempotency key `M` of the contract: the AMQP `message_id` if set (a
/// hash of its bytes when they are not UTF-8), else a stable hash of the
/// body, so a redelivery or a replay is recognisable by the APIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageId(String);

impl MessageId {
    /// Takes the `message_id` property when it is set and non-empty, else
    /// hashes the body (`sha256:` + hex digest).
    pub fn resolve(property: Option<&str>, body: &[u8]) -> MessageId {
        match property {
            Some(id) if !id.is_empty() => MessageId(id.to_owned()),
            _ => MessageId::of_body(body),
        }
    }

    pub fn of_body(body: &[u8]) -> MessageId {
        MessageId(format!("sha256:{:x}", Sha256::digest(body)))
    }

    /// The key of a `message_id` property whose wire bytes are not UTF-8:
    /// `raw-sha256:` + the hex SHA-256 of those bytes. Such an id has no
    /// faithful text form for an HTTP header, but it is still the
    /// publisher's id: hashing its exact bytes keeps every redelivery and
    /// replay of the message under one key, and distinct ids under distinct
    /// keys (a lossy text form could merge two of them).
    pub fn of_raw_id(wire: &[u8]) -> MessageId {
        MessageId(format!("raw-sha256:{:x}", Sha256::digest(wire)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `s` can be an HTTP field value as is (RFC 9110: visible ASCII,
/// space, tab, and obs-text).
pub fn is_header_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
}

/// Why a body was rejected, as one human line for `x-bridge-error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidPayload(pub String);

impl fmt::Display for InvalidPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates that `body` is UTF-8 JSON (RFC 8259, any value) and returns the
/// byte range of the JSON text with surrounding whitespace trimmed.
///
/// The value is checked as a [`RawValue`]: no tree is built, so numbers beyond
/// f64, `1e400` and key order are never touched.
pub fn validate_json(body: &[u8]) -> Result<Range<usize>, InvalidPayload> {
    let text = std::str::from_utf8(body).map_err(|e| {
        InvalidPayload(format!(
            "body is not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str::<&RawValue>(text)
        .map_err(|e| InvalidPayload(format!("body is not valid JSON: {e}")))?;
    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let start = text.len() - text.trim_start_matches(is_ws).len();
    let end = text.trim_end_matches(is_ws).len();
    Ok(start..end)
}

/// Writes the logging API's body around the message's JSON text, verbatim:
/// `{"event":E,"data":<json>,"message_id":M}`.
pub fn logging_api_envelope(event: &str, json: &[u8], message_id: &MessageId) -> Vec<u8> {
    let (head, tail) = logging_api_envelope_around(event, message_id);
    [&head[..], json, &tail[..]].concat()
}

/// What the logging API's body holds before and after the message's JSON
/// text (`{"event":E,"data":` and `,"message_id":M}`), so that the body can
/// be sent as these two around the delivery's own buffer, without copying it.
pub fn logging_api_envelope_around(event: &str, message_id: &MessageId) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(event.len() + 20);
    head.extend_from_slice(b"{\"event\":");
    write_json_string(&mut head, event);
    head.extend_from_slice(b",\"data\":");
    let mut tail = Vec::with_capacity(message_id.0.len() + 20);
    tail.extend_from_slice(b",\"message_id\":");
    write_json_string(&mut tail, &message_id.0);
    tail.push(b'}');
    (head, tail)
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Everything the worker needs from one delivery, taken from its properties and
/// headers at the edge.
#[derive(Clone, Debug)]
pub struct InboundMessage {
    pub body: Bytes,
    pub message_id: MessageId,
    /// Whether `message_id` came from the property (else it is the body hash and
    /// is written onto a dead-lettered copy so the key survives a replay).
    pub message_id_from_property: bool,
    /// The AMQP `type` property, if any.
    pub kind: Option<String>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Targets that accepted this message on an earlier delivery
    /// (`x-bridge-done-targets`); they are not called again. It may name
    /// targets that are not configured (any more).
    pub done: TargetSet,
}

impl InboundMessage {
    /// The logging event name: the AMQP `type`, else the configured default.
    pub fn event<'a>(&'a self, default: &'a str) -> &'a str {
        match self.kind.as_deref() {
            Some(t) if !t.is_empty() => t,
            _ => default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_prefers_property_and_hashes_stably() {
        assert_eq!(MessageId::resolve(Some("abc"), b"{}").as_str(), "abc");
        let a = MessageId::resolve(None, b"{\"a\":1}");
        let b = MessageId::resolve(Some(""), b"{\"a\":1}");
        assert_eq!(a, b);
        assert!(a.as_str().starts_with("sha256:"));
        assert_eq!(a.as_str().len(), 7 + 64);
        assert_ne!(a, MessageId::resolve(None, b"{\"a\":2}"));
    }

    #[test]
    fn a_raw_id_is_keyed_by_its_exact_bytes() {
        let a = MessageId::of_raw_id(b"id-\xff\xfe");
        assert_eq!(a, MessageId::of_raw_id(b"id-\xff\xfe"));
        assert_eq!(
            a.as_str(),
            "raw-sha256:7a57e4a525f9cf6fdc1bf0e1dcb51d2573db9c168afeab5a1e87f0296c1ead54"
        );
        assert_ne!(a, MessageId::of_raw_id(b"id-\xff\xfd"));
        assert!(is_header_safe(a.as_str()));
    }

    #[test]
    fn header_safety() {
        assert!(is_header_safe("id-1 é"));
        assert!(!is_header_safe("a\nb"));
        assert!(!is_header_safe("a\u{7f}"));
    }

    #[test]
    fn accepts_any_json_value_and_trims() {
        let body = b"  \n{\"b\":1,\"a\":2}\r\n";
        let r = validate_json(body).unwrap();
        assert_eq!(&body[r], b"{\"b\":1,\"a\":2}");
        for ok in [
            "[1,2]",
            "\"s\"",
            "3",
            "null",
            "true",
            "1e400",
            "123456789012345678901234567890",
        ] {
            assert!(validate_json(ok.as_bytes()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_bodies_with_reason() {
        let e = validate_json(b"{\"a\":").unwrap_err();
        assert!(e.0.contains("not valid JSON"), "{e}");
        assert!(e.0.contains("line 1"), "{e}");
        let e = validate_json(b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(e.0.contains("not UTF-8"), "{e}");
        assert!(validate_json(b"").is_err());
        assert!(validate_json(b"{} {}").is_err());
        assert!(validate_json(b"NaN").is_err());
    }

    #[test]
    fn envelope_keeps_json_verbatim() {
        let id = MessageId::resolve(Some("m\"1"), b"");
        let out = logging_api_envelope("user.registered", b"{\"z\":1e400,\"a\":1}", &id);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"event":"user.registered","data":{"z":1e400,"a":1},"message_id":"m\"1"}"#
        );
    }
}
