//! Conversions between AMQP properties and headers and the domain types: the
//! only place that knows how the contract's values are spelled on the wire.

use bytes::Bytes;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
/// A message's AMQP properties (headers included).
pub use lapin::BasicProperties;

use crate::domain::{
    dead_letter, message::is_header_safe, HeaderValue, InboundMessage, MessageId, TargetSet,
};

/// Persistent, in AMQP's `delivery_mode` terms.
pub const PERSISTENT: u8 = 2;

pub use super::frame_fit::{fit_frame, header_frame_len};
pub use super::short_string::{
    short_string_bytes, short_string_display, short_string_hex, short_string_is_raw,
};

/// A text header value, whether sent as a long or a (deprecated) short string.
pub fn header_text<'a>(
    headers: Option<&'a FieldTable>,
    key: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        _ => None,
    }
}

/// An integer header value, whatever its AMQP width.
pub fn header_int(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    match headers?.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

/// Reads what the worker needs from a delivery's properties. Unknown names in
/// `x-bridge-done-targets` are returned for logging.
pub fn inbound_message(props: &BasicProperties, body: Bytes) -> (InboundMessage, Vec<String>) {
    let headers = props.headers().as_ref();
    let message_id_property = props.message_id().as_ref().map(ShortString::as_str);
    let message_id = match message_id_property {
        // Keyed by its exact bytes (not UTF-8, or control characters that
        // cannot be a header value: the body may be fine, so this is not an
        // invalid payload); the property itself stays as it came on every
        // copy (`message_id_from_property`), so a replay gets the same key.
        Some(id) if short_string_is_raw(id) || !is_header_safe(id) => {
            MessageId::of_raw_id(&short_string_bytes(id))
        }
        _ => MessageId::resolve(message_id_property, &body),
    };
    let (done, unknown) = header_text(headers, dead_letter::DONE_TARGETS)
        .map(|v| TargetSet::parse_lenient(&v))
        .unwrap_or_default();
    let text = |key: &str| header_text(headers, key).map(|v| v.into_owned());
    let msg = InboundMessage {
        message_id_from_property: message_id_property.is_some_and(|s| !s.is_empty()),
        message_id,
        kind: props.kind().as_ref().map(|s| s.as_str().to_owned()),
        correlation_id: props
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        traceparent: text("traceparent"),
        tracestate: text("tracestate"),
        done,
        body,
    };
    (msg, unknown)
}

fn to_amqp(value: HeaderValue) -> AMQPValue {
    match value {
        HeaderValue::Text(s) => AMQPValue::LongString(LongString::from(s)),
        HeaderValue::Int(i) => AMQPValue::LongInt(i),
    }
}

/// The properties of a copy republished by this program: the original's, made
/// persistent, with `message_id` set to the key `M` when it had none (so the
/// key survives a replay), and without `user_id`, which the broker checks
/// against the publishing user and would refuse.
fn republished(
    props: &BasicProperties,
    msg: &InboundMessage,
    headers: FieldTable,
    keep: Keep,
) -> BasicProperties {
    let out = rebuilt(props, headers, keep);
    if msg.message_id_from_property {
        out
    } else {
        out.with_message_id(ShortString::from(msg.message_id.as_str()))
    }
}

#[derive(PartialEq)]
enum Keep {
    Expiration,
    NoExpiration,
}

/// The properties `fanout-bridge publish` gives a line: persistent, JSON,
/// a fresh `message_id`.
pub fn published_properties(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id))
}

/// A persistent copy of `props` with `headers`, without `user_id` and, if
/// asked, without `expiration` (BasicProperties has no "unset").
fn rebuilt(props: &BasicProperties, headers: FieldTable, keep: Keep) -> BasicProperties {
    let mut out = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    if let Some(v) = props.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = props.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = props.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = props.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = props.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = props
        .expiration()
        .as_ref()
        .filter(|_| keep == Keep::Expiration)
    {
        out = out.with_expiration(v.clone());
    }
    if let Some(v) = props.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = props.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = props.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = props.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = props.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// The original headers with the given `x-bridge-*` ones set on top.
fn headers_with(props: &BasicProperties, extra: Vec<(&'static str, HeaderValue)>) -> FieldTable {
    let mut table = props.headers().clone().unwrap_or_default();
    for (key, value) in extra {
        table.insert(ShortString::from(key), to_amqp(value));
    }
    table
}

/// Properties of the DLQ copy. `expiration` is dropped too: a per-message TTL
/// must not silently empty the DLQ.
pub fn dead_letter_properties(
    props: &BasicProperties,
    msg: &InboundMessage,
    dl_headers: Vec<(&'static str, HeaderValue)>,
) -> BasicProperties {
    republished(
        props,
        msg,
        headers_with(props, dl_headers),
        Keep::NoExpiration,
    )
}

/// Properties of a message held back into the inbound queue under the `hold`
/// policy: it carries the APIs that already accepted it.
pub fn held_properties(
    props: &BasicProperties,
    msg: &InboundMessage,
    done: TargetSet,
) -> BasicProperties {
    let headers = headers_with(
        props,
        vec![(
            dead_letter::DONE_TARGETS,
            HeaderValue::Text(done.to_string()),
        )],
    );
    republished(props, msg, headers, Keep::Expiration)
}

/// A persistent copy of `props` (expiration included) with other headers and
/// without `user_id`: the broker refuses a publish whose `user_id` is not the
/// publishing user's, and a tool may run as another user.
pub fn copied_properties(props: &BasicProperties, headers: FieldTable) -> BasicProperties {
    rebuilt(props, headers, Keep::Expiration)
}

/// Properties of a message replayed from the DLQ: `x-bridge-done-targets` is
/// kept so the APIs that accepted it are not called again; the other
/// `x-bridge-*` headers are dropped.
pub fn replay_properties(props: &BasicProperties) -> BasicProperties {
    let mut table = FieldTable::default();
    if let Some(headers) = props.headers() {
        for (key, value) in headers {
            let k = key.as_str();
            if !k.starts_with(dead_letter::PREFIX) || k == dead_letter::DONE_TARGETS {
                table.insert(key.clone(), value.clone());
            }
        }
    }
    rebuilt(props, table, Keep::Expiration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeadLetter;

    fn props_with_headers(pairs: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        BasicProperties::default().with_headers(t)
    }

    #[test]
    fn a_message_id_that_was_not_utf8_is_keyed_by_its_bytes_and_kept_on_copies() {
        // What the vendored parser makes of b"id-\xff\xfe".
        let raw = "id-\u{10FFFF}\u{10FFFE}";
        let props = BasicProperties::default().with_message_id(raw.into());
        let (msg, _) = inbound_message(&props, Bytes::from_static(b"{}"));
        assert_eq!(msg.message_id, MessageId::of_raw_id(b"id-\xff\xfe"));
        assert!(msg.message_id_from_property);
        let dl = crate::domain::DeadLetter::invalid_payload("bad".into());
        let copy = dead_letter_properties(
            &props,
            &msg,
            crate::domain::dead_letter::headers(&dl, time::OffsetDateTime::UNIX_EPOCH),
        );
        assert_eq!(copy.message_id().as_ref().unwrap().as_str(), raw);
        let held = held_properties(&props, &msg, TargetSet::empty());
        assert_eq!(held.message_id().as_ref().unwrap().as_str(), raw);
    }

    #[test]
    fn reads_done_targets_and_trace_headers() {
        let props = props_with_headers(&[
            (
                "x-bridge-done-targets",
                AMQPValue::LongString("user-management".into()),
            ),
            ("traceparent", AMQPValue::LongString("00-abc-def-01".into())),
        ])
        .with_correlation_id("c-1".into())
        .with_type("user.deleted".into());
        let (msg, unknown) = inbound_message(&props, Bytes::from_static(b"{}"));
        assert!(msg.done.contains("user-management"));
        assert!(!msg.done.contains("logging"));
        assert!(unknown.is_empty());
        assert_eq!(msg.traceparent.as_deref(), Some("00-abc-def-01"));
        assert_eq!(msg.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(msg.event("x"), "user.deleted");
        assert!(!msg.message_id_from_property);
    }

    #[test]
    fn dead_letter_copy_keeps_properties_and_adds_id() {
        let props = props_with_headers(&[("tenant", AMQPValue::LongString("acme".into()))])
            .with_content_type("application/json".into())
            .with_expiration("60000".into())
            .with_user_id("guest".into());
        let (msg, _) = inbound_message(&props, Bytes::from_static(b"{}"));
        let dl = DeadLetter::invalid_payload("bad".into());
        let out = dead_letter_properties(
            &props,
            &msg,
            crate::domain::dead_letter::headers(&dl, time::OffsetDateTime::UNIX_EPOCH),
        );
        assert_eq!(out.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(
            out.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(
            out.message_id().as_ref().unwrap().as_str(),
            msg.message_id.as_str()
        );
        assert!(out.expiration().is_none() && out.user_id().is_none());
        let h = out.headers().as_ref();
        assert_eq!(header_text(h, "tenant").as_deref(), Some("acme"));
        assert_eq!(
            header_text(h, "x-bridge-reason").as_deref(),
            Some("invalid_payload")
        );
        assert_eq!(header_int(h, "x-bridge-attempts"), Some(0));
    }

    #[test]
    fn replay_keeps_only_done_targets_of_ours() {
        let props = props_with_headers(&[
            (
                "x-bridge-reason",
                AMQPValue::LongString("api_failed".into()),
            ),
            (
                "x-bridge-done-targets",
                AMQPValue::LongString("logging".into()),
            ),
            ("x-bridge-attempts", AMQPValue::LongInt(3)),
            ("tenant", AMQPValue::LongString("acme".into())),
        ])
        .with_message_id("m-1".into());
        let out = replay_properties(&props);
        let h = out.headers().as_ref().unwrap();
        assert!(h.contains_key("x-bridge-done-targets") && h.contains_key("tenant"));
        assert!(!h.contains_key("x-bridge-reason") && !h.contains_key("x-bridge-attempts"));
        assert_eq!(out.message_id().as_ref().unwrap().as_str(), "m-1");
    }
}
