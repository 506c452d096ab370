//! Conversions between AMQP properties and headers and the domain types: the
//! only place that knows how the contract's values are spelled on the wire.

use bytes::Bytes;
use lapin::{
    protocol::basic::gen_properties,
    types::{
        generation::{gen_short_string, gen_value, SerializeFn},
        AMQPValue, FieldTable, LongString, ShortString,
    },
    BasicProperties,
};

use crate::domain::{
    dead_letter, message::is_header_safe, HeaderValue, InboundMessage, MessageId, TargetSet,
};

/// Persistent, in AMQP's `delivery_mode` terms.
pub const PERSISTENT: u8 = 2;

/// The first of the 256 chars (U+10FF00..=U+10FFFF) that stand for one raw
/// byte of an AMQP short string. A short string (header name, `message_id`,
/// `type`, …) is bytes on the wire; the vendored parser
/// (patches/amq-protocol-types) keeps each byte that is not part of valid
/// UTF-8 as `U+10FF00 + byte`, and lapin writes it back as that byte, so a
/// copy carries the exact bytes.
const ESCAPE_BASE: u32 = 0x10FF00;

/// The raw byte `c` stands for in a parsed short string, if any.
fn escaped_byte(c: char) -> Option<u8> {
    (c as u32).checked_sub(ESCAPE_BASE).map(|b| b as u8)
}

/// Whether the short string `s` was not UTF-8 on the wire (it holds escaped
/// bytes).
pub fn short_string_is_raw(s: &str) -> bool {
    s.chars().any(|c| escaped_byte(c).is_some())
}

/// The bytes of the parsed short string `s` on the wire.
pub fn short_string_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match escaped_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// The parsed short string `s` as readable text: itself when it was UTF-8,
/// otherwise its wire bytes with each byte that is not part of valid UTF-8
/// shown as `\xHH` (readable, not reversible on its own: a backslash is not
/// escaped; [`short_string_hex`] gives the exact bytes).
pub fn short_string_display(s: &str) -> std::borrow::Cow<'_, str> {
    if !short_string_is_raw(s) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for chunk in short_string_bytes(s).utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The wire bytes of the parsed short string `s` in lowercase hex, when it was
/// not UTF-8 on the wire.
pub fn short_string_hex(s: &str) -> Option<String> {
    short_string_is_raw(s).then(|| {
        short_string_bytes(s)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

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

/// What every content-header frame carries besides its properties: the
/// frame's type, channel and payload size (7 bytes) and end octet (1), and
/// the content header's class id (2), weight (2) and body size (8).
const HEADER_FRAME_OVERHEAD: usize = 8 + 12;

/// The bytes `gen` writes: lapin's own serialisation, so a name read
/// lossily from bytes that were not UTF-8 counts as the longer string lapin
/// will write, not as what came in.
fn encoded_len(gen: impl SerializeFn<Vec<u8>>) -> usize {
    gen(Vec::new().into()).map_or(usize::MAX, |out| {
        usize::try_from(out.position).unwrap_or(usize::MAX)
    })
}

/// The size of the content-header frame lapin sends for `props`.
pub fn header_frame_len(props: &BasicProperties) -> usize {
    HEADER_FRAME_OVERHEAD.saturating_add(encoded_len(gen_properties(props)))
}

fn entry_len(name: &ShortString, value: &AMQPValue) -> usize {
    encoded_len(gen_short_string(name.as_str())).saturating_add(encoded_len(gen_value(value)))
}

/// Makes a copy this program publishes fit the publishing connection's
/// `frame_max` (0: no limit). RabbitMQ never splits a header frame and
/// closes the connection on one over its frame size, so a message whose
/// headers nearly filled the frame on the way in would otherwise cost the
/// worker its connection with every copy (and come back, and again). The
/// largest original headers are left out until the frame fits, never an
/// `x-bridge-*` one (nor the body or `message_id`, which are not headers),
/// and `x-bridge-headers-dropped` names them (after any names an earlier copy
/// listed). Returns the names left out.
pub fn fit_frame(props: BasicProperties, frame_max: u32) -> (BasicProperties, Vec<String>) {
    let limit = match usize::try_from(frame_max) {
        Ok(0) | Err(_) => return (props, Vec::new()),
        Ok(n) => n,
    };
    let full = header_frame_len(&props);
    if full <= limit {
        return (props, Vec::new());
    }
    let Some(headers) = props.headers().clone() else {
        return (props, Vec::new());
    };
    let earlier = header_text(Some(&headers), dead_letter::HEADERS_DROPPED)
        .map(|v| v.into_owned())
        .filter(|v| !v.is_empty());
    let mut candidates: Vec<(usize, &ShortString)> = headers
        .inner()
        .iter()
        .filter(|(name, _)| !name.as_str().starts_with(dead_letter::PREFIX))
        .map(|(name, value)| (entry_len(name, value), name))
        .collect();
    // Largest first; equal sizes by name, so the choice is reproducible.
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    // The table's encoding is its length and then its entries, so leaving
    // an entry out takes exactly its own bytes off the frame.
    let previous_list = headers
        .inner()
        .get(dead_letter::HEADERS_DROPPED)
        .map_or(0, |v| {
            entry_len(&ShortString::from(dead_letter::HEADERS_DROPPED), v)
        });
    let list_name = ShortString::from(dead_letter::HEADERS_DROPPED);
    let empty_list = entry_len(
        &list_name,
        &AMQPValue::LongString(LongString::from(String::new())),
    );
    let mut list_len = earlier.as_ref().map_or(0, String::len);
    let mut dropped: std::collections::BTreeSet<&ShortString> = Default::default();
    let mut order: Vec<&str> = earlier.iter().map(String::as_str).collect();
    let first_new = order.len();
    let mut saved = 0usize;
    for (len, name) in candidates {
        if list_len > 0 {
            list_len += 1; // the comma
        }
        list_len += name.as_str().len();
        dropped.insert(name);
        order.push(name.as_str());
        saved += len;
        let estimate = (full + empty_list + list_len).saturating_sub(saved + previous_list);
        if estimate <= limit {
            break;
        }
    }
    if dropped.is_empty() {
        return (props, Vec::new());
    }
    let mut table = FieldTable::default();
    for (name, value) in headers.inner() {
        if !dropped.contains(name) {
            table.insert(name.clone(), value.clone());
        }
    }
    table.insert(
        list_name,
        AMQPValue::LongString(LongString::from(order.join(","))),
    );
    let names = order[first_new..].iter().map(|n| (*n).to_owned()).collect();
    (props.with_headers(table), names)
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
    fn short_strings_that_were_not_utf8_are_shown_readably_and_exactly() {
        // What the vendored parser makes of b"id-\xff\xc3(\\".
        let parsed = "id-\u{10FFFF}\u{10FFC3}(\\";
        assert!(short_string_is_raw(parsed));
        assert_eq!(short_string_bytes(parsed), b"id-\xff\xc3(\\");
        assert_eq!(short_string_display(parsed), "id-\\xFF\\xC3(\\");
        assert_eq!(short_string_hex(parsed).as_deref(), Some("69642dffc3285c"));
        // A valid char in the escape range arrives escaped byte by byte.
        let literal = "\u{10FFF4}\u{10FF8F}\u{10FFBD}\u{10FF81}";
        assert_eq!(short_string_display(literal), "\u{10FF41}");
        // UTF-8 (U+FFFD included) is shown as it is, without hex.
        assert!(!short_string_is_raw("é\u{FFFD}"));
        assert_eq!(short_string_display("é\u{FFFD}"), "é\u{FFFD}");
        assert_eq!(short_string_hex("é"), None);
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

    fn big_props(baggage: usize) -> BasicProperties {
        props_with_headers(&[
            (
                "x-baggage",
                AMQPValue::LongString("b".repeat(baggage).into()),
            ),
            ("x-small", AMQPValue::LongString("s".repeat(1000).into())),
            ("tenant", AMQPValue::LongString("acme".into())),
        ])
        .with_message_id("m-1".into())
    }

    #[test]
    fn a_copy_that_fits_is_left_alone() {
        let props = big_props(1000);
        let (out, dropped) = fit_frame(props.clone(), 131_072);
        assert!(dropped.is_empty());
        assert_eq!(out, props);
        let (out, dropped) = fit_frame(big_props(200_000), 0);
        assert!(dropped.is_empty(), "0: no limit");
        assert_eq!(out, big_props(200_000));
    }

    #[test]
    fn the_largest_original_headers_are_left_out_until_the_frame_fits() {
        let (msg, _) = inbound_message(&big_props(130_900), Bytes::from_static(b"{}"));
        let dl = DeadLetter::invalid_payload("bad".into());
        let copy = dead_letter_properties(
            &big_props(130_900),
            &msg,
            crate::domain::dead_letter::headers(&dl, time::OffsetDateTime::UNIX_EPOCH),
        );
        assert!(header_frame_len(&copy) > 131_072);
        let (out, dropped) = fit_frame(copy, 131_072);
        assert_eq!(dropped, ["x-baggage"]);
        assert!(header_frame_len(&out) <= 131_072);
        let h = out.headers().as_ref();
        assert!(header_text(h, "x-baggage").is_none());
        assert_eq!(header_text(h, "tenant").as_deref(), Some("acme"));
        assert_eq!(header_text(h, "x-small").map(|v| v.len()), Some(1000));
        assert_eq!(
            header_text(h, "x-bridge-headers-dropped").as_deref(),
            Some("x-baggage")
        );
        assert_eq!(
            header_text(h, "x-bridge-reason").as_deref(),
            Some("invalid_payload")
        );
        assert_eq!(out.message_id().as_ref().unwrap().as_str(), "m-1");
    }

    #[test]
    fn the_frame_is_measured_as_written_and_bridge_headers_are_never_dropped() {
        // A name read lossily (3 bytes of U+FFFD per bad byte) is measured
        // as the longer string lapin writes; x-bridge-* headers stay even
        // when large, and earlier dropped names are kept in the list.
        let props = props_with_headers(&[
            (
                "x-\u{FFFD}\u{FFFD}",
                AMQPValue::LongString("v".repeat(3000).into()),
            ),
            ("a", AMQPValue::LongString("a".repeat(2000).into())),
            ("b", AMQPValue::LongString("b".repeat(10).into())),
            (
                "x-bridge-error",
                AMQPValue::LongString("e".repeat(3000).into()),
            ),
            (
                "x-bridge-headers-dropped",
                AMQPValue::LongString("old".into()),
            ),
        ]);
        let limit = 4096;
        assert!(header_frame_len(&props) > limit);
        let (out, dropped) = fit_frame(props.clone(), u32::try_from(limit).unwrap());
        assert_eq!(dropped, ["x-\u{FFFD}\u{FFFD}", "a"]);
        let len = header_frame_len(&out);
        assert!(len <= limit, "{len}");
        let h = out.headers().as_ref();
        assert_eq!(
            header_text(h, "x-bridge-error").map(|v| v.len()),
            Some(3000)
        );
        assert_eq!(header_text(h, "b").as_deref(), Some("bbbbbbbbbb"));
        assert_eq!(
            header_text(h, "x-bridge-headers-dropped").as_deref(),
            Some("old,x-\u{FFFD}\u{FFFD},a")
        );
        // The size is lapin's: headers, flags and the 20 bytes around them.
        let mut table = FieldTable::default();
        table.insert("k".into(), AMQPValue::LongString("v".into()));
        let one = BasicProperties::default().with_headers(table);
        // flags 2, table length 4, name 1+1, type 1, string length 4 + 1.
        assert_eq!(header_frame_len(&one), 20 + 2 + 4 + 2 + 1 + 4 + 1);
    }
}
