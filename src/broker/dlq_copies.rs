//! The properties of the copies a DLQ pass publishes: a rotation keeps the
//! message as it is; a replay starts a new history.

use lapin::{
    types::{AMQPValue, FieldTable},
    BasicProperties,
};

use super::fields;
use crate::domain::dead_letter;

/// The broker's delivery count of a quorum queue's message: a copy drops it
/// (the broker keeps its own, and an old one must not look like a new
/// attempt).
pub const DELIVERY_COUNT: &str = "x-delivery-count";

/// Headers the broker writes when it dead-letters a message. A replayed
/// message starts a new history without them.
const DEATH_HEADERS: [&str; 1] = ["x-death"];
const DEATH_PREFIXES: [&str; 2] = ["x-first-death-", "x-last-death-"];

/// The properties of a rotated copy: the original's, persistent, without
/// `user_id` (the broker refuses a publish whose `user_id` is not the
/// publishing user's, and the tool may run as another user) and without the
/// broker's delivery count.
pub fn rotated_properties(props: &BasicProperties) -> BasicProperties {
    let headers = filtered_headers(props.headers().as_ref(), |k| k != DELIVERY_COUNT);
    fields::copied_properties(props, headers)
}

/// The properties of a replayed message: `x-bridge-done-targets` and the
/// message's own headers are kept (see [`fields::replay_properties`]),
/// `x-bridge-replays` counts this replay; the broker's dead-lettering history
/// goes, so a replayed message is a new start and a later dead-lettering is
/// not mistaken for an old one.
pub fn replayed_properties(props: &BasicProperties) -> BasicProperties {
    let replays = replays_of(props.headers().as_ref());
    let replayed = fields::replay_properties(props);
    let mut headers = filtered_headers(replayed.headers().as_ref(), |k| {
        k != DELIVERY_COUNT
            && !DEATH_HEADERS.contains(&k)
            && !DEATH_PREFIXES.iter().any(|p| k.starts_with(p))
    });
    headers.insert(
        dead_letter::REPLAYS.into(),
        AMQPValue::LongLongInt(replays + 1),
    );
    replayed.with_headers(headers)
}

/// How many times a message was replayed (or imported) before.
pub fn replays_of(headers: Option<&FieldTable>) -> i64 {
    fields::header_int(headers, dead_letter::REPLAYS)
        .unwrap_or(0)
        .max(0)
}

pub fn filtered_headers(headers: Option<&FieldTable>, keep: impl Fn(&str) -> bool) -> FieldTable {
    let mut out = FieldTable::default();
    for (key, value) in headers.into_iter().flatten() {
        if keep(key.as_str()) {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    fn death(reason: &str) -> AMQPValue {
        AMQPValue::FieldTable(table(&[
            ("reason", text(reason)),
            ("queue", text("inbound")),
            ("count", AMQPValue::LongLongInt(1)),
        ]))
    }

    #[test]
    fn a_rotated_copy_keeps_everything_but_user_id_and_the_delivery_count() {
        let props = BasicProperties::default()
            .with_message_id("m".into())
            .with_correlation_id("c".into())
            .with_type("t".into())
            .with_content_type("application/json".into())
            .with_user_id("someone".into())
            .with_timestamp(7)
            .with_headers(table(&[
                ("x-bridge-reason", text("api_failed")),
                ("x-delivery-count", AMQPValue::LongInt(1)),
                (
                    "x-death",
                    AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit")])),
                ),
            ]));
        let out = rotated_properties(&props);
        assert!(out.user_id().is_none());
        assert_eq!(out.delivery_mode(), &Some(fields::PERSISTENT));
        assert_eq!(out.message_id(), props.message_id());
        assert_eq!(out.correlation_id(), props.correlation_id());
        assert_eq!(out.kind(), props.kind());
        assert_eq!(out.content_type(), props.content_type());
        assert_eq!(out.timestamp(), &Some(7));
        let h = out.headers().as_ref().unwrap();
        assert!(h.contains_key("x-bridge-reason") && h.contains_key("x-death"));
        assert!(!h.contains_key("x-delivery-count"));
    }

    #[test]
    fn replay_drops_the_broker_history_keeps_done_targets_and_counts_replays() {
        let props = BasicProperties::default()
            .with_message_id("m".into())
            .with_headers(table(&[
                (
                    "x-death",
                    AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit")])),
                ),
                ("x-first-death-reason", text("delivery_limit")),
                ("x-first-death-queue", text("inbound")),
                ("x-last-death-reason", text("delivery_limit")),
                ("x-delivery-count", AMQPValue::LongInt(3)),
                ("x-bridge-done-targets", text("logging")),
                ("x-bridge-reason", text("api_failed")),
                ("x-bridge-replays", AMQPValue::LongInt(2)),
                ("tenant", text("acme")),
            ]));
        let out = replayed_properties(&props);
        let h = out.headers().as_ref().unwrap();
        let mut keys: Vec<_> = h.inner().keys().map(|k| k.as_str().to_owned()).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["tenant", "x-bridge-done-targets", "x-bridge-replays"]
        );
        assert_eq!(replays_of(Some(h)), 3);
        assert_eq!(out.message_id().as_ref().unwrap().as_str(), "m");
        let first = replayed_properties(&BasicProperties::default());
        assert_eq!(replays_of(first.headers().as_ref()), 1);
    }
}
