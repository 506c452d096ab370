//! What the DLQ tools read off a message: why it is there, which group, its
//! time, id and replays (for filters and groups), and the JSON line `dlq
//! peek` prints.

use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable, ShortString},
};
use serde_json::{json, Map, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    dlq_copies::replays_of,
    fields::{self, short_string_display, short_string_hex},
};
use crate::domain::{
    dead_letter,
    failure::{group_of, Failed},
};

/// The reason the tools give a message the broker dead-lettered itself,
/// past a quorum queue's delivery limit.
pub const DELIVERY_LIMIT: &str = "delivery_limit";
/// The reason of a message that carries neither ours nor the broker's.
pub const UNKNOWN: &str = "unknown";

/// Why a message is in the DLQ, as the tools report it: its
/// `x-bridge-reason`, or `delivery_limit` (or the broker's other reason,
/// e.g. `expired`) from the newest `x-death` entry when the broker
/// dead-lettered it, or `unknown`.
pub fn reason_of(headers: Option<&FieldTable>) -> String {
    if let Some(reason) = fields::header_text(headers, dead_letter::REASON) {
        return reason.into_owned();
    }
    broker_death_reason(headers).unwrap_or_else(|| UNKNOWN.to_owned())
}

/// What the DLQ tools know of a message, from its headers: reason, failed
/// targets, error, when it was dead-lettered, id and replays.
pub fn failed_of(d: &Delivery) -> Failed {
    let headers = d.properties.headers().as_ref();
    let text = |key: &str| fields::header_text(headers, key).map(|t| t.into_owned());
    let at = text(dead_letter::DEAD_LETTERED_AT)
        .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
        .or_else(|| death_time(headers));
    Failed {
        reason: reason_of(headers),
        failed_targets: text(dead_letter::FAILED_TARGETS)
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        error: text(dead_letter::ERROR).unwrap_or_default(),
        at,
        message_id: d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        replays: replays_of(headers),
    }
}

/// The `time` of the newest `x-death` entry: when the broker dead-lettered
/// it.
fn death_time(headers: Option<&FieldTable>) -> Option<OffsetDateTime> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else {
        return None;
    };
    match newest.inner().get("time")? {
        AMQPValue::Timestamp(t) => {
            OffsetDateTime::from_unix_timestamp(i64::try_from(*t).ok()?).ok()
        }
        _ => None,
    }
}

/// The `reason` of the newest `x-death` entry (the broker puts it first).
/// RabbitMQ ≥ 3.10 writes `delivery_limit` for a quorum queue's message past
/// its limit; older brokers wrote `rejected`, which is reported as it is.
fn broker_death_reason(headers: Option<&FieldTable>) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else {
        return None;
    };
    fields::header_text(Some(newest), "reason").map(|r| r.into_owned())
}

/// One dead-lettered message as a JSON object: its body (text, or hex when it
/// is not UTF-8), identifying properties, its reason and `x-bridge-*`
/// headers. A short string (property or header name) that was not UTF-8 on
/// the wire is shown with `\xHH` for each such byte, and its exact bytes in
/// hex beside it: `message_id_hex`, `correlation_id_hex`, `type_hex`, and
/// `header_names_hex` (shown name → hex).
pub fn describe(d: &Delivery) -> Value {
    let props = &d.properties;
    let mut headers = Map::new();
    let mut names_hex = Map::new();
    if let Some(table) = props.headers() {
        for (key, value) in table {
            if key.as_str().starts_with(dead_letter::PREFIX) {
                let name = short_string_display(key.as_str()).into_owned();
                if let Some(hex) = short_string_hex(key.as_str()) {
                    names_hex.insert(name.clone(), Value::String(hex));
                }
                headers.insert(name, amqp_to_json(value));
            }
        }
    }
    let text = |v: &Option<ShortString>| {
        v.as_ref()
            .map(|s| short_string_display(s.as_str()).into_owned())
    };
    let mut out = json!({
        "message_id": text(props.message_id()),
        "correlation_id": text(props.correlation_id()),
        "type": text(props.kind()),
        "reason": reason_of(props.headers().as_ref()),
        "group": group_of(&failed_of(d)).id,
        "replays": replays_of(props.headers().as_ref()),
        "headers": headers,
    });
    for (field, value) in [
        ("message_id", props.message_id()),
        ("correlation_id", props.correlation_id()),
        ("type", props.kind()),
    ] {
        if let Some(hex) = value.as_ref().and_then(|s| short_string_hex(s.as_str())) {
            out[format!("{field}_hex")] = Value::String(hex);
        }
    }
    if !names_hex.is_empty() {
        out["header_names_hex"] = Value::Object(names_hex);
    }
    match std::str::from_utf8(&d.data) {
        Ok(body) => out["body"] = Value::String(body.to_owned()),
        Err(_) => {
            let hex: String = d.data.iter().map(|b| format!("{b:02x}")).collect();
            out["body_hex"] = Value::String(hex);
        }
    }
    out
}

fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(s) => Value::String(short_string_display(s.as_str()).into_owned()),
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::Timestamp(t) => json!(t),
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    pub(crate) fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    pub(crate) fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    pub(crate) fn death(reason: &str) -> AMQPValue {
        AMQPValue::FieldTable(table(&[
            ("reason", text(reason)),
            ("queue", text("inbound")),
            ("count", AMQPValue::LongLongInt(1)),
        ]))
    }

    #[test]
    fn reason_prefers_ours_then_the_newest_death() {
        let ours = table(&[
            ("x-bridge-reason", text("api_failed")),
            (
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit")])),
            ),
        ]);
        assert_eq!(reason_of(Some(&ours)), "api_failed");
        let broker = table(&[(
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![
                death("delivery_limit"),
                death("expired"),
            ])),
        )]);
        assert_eq!(reason_of(Some(&broker)), DELIVERY_LIMIT);
        assert_eq!(reason_of(Some(&table(&[]))), UNKNOWN);
        assert_eq!(reason_of(None), UNKNOWN);
    }
}
