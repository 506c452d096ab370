//! Copies that always fit the connection's frame size.

use lapin::{
    protocol::basic::gen_properties,
    types::{
        generation::{gen_short_string, gen_value, SerializeFn},
        AMQPValue, FieldTable, LongString, ShortString,
    },
    BasicProperties,
};

use super::fields::header_text;
use crate::domain::dead_letter;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        broker::fields::{dead_letter_properties, inbound_message},
        domain::DeadLetter,
    };
    use bytes::Bytes;

    fn props_with_headers(pairs: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        BasicProperties::default().with_headers(t)
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
