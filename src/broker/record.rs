//! AMQP properties and header tables as JSON and back: the form `dlq export`
//! writes, `dlq import` reads and the console shows.
//!
//! Natural JSON where it is unambiguous (strings, integers, floats, booleans,
//! arrays, tables as objects); the AMQP values JSON has no word for are
//! tagged objects with one `$` key: `{"$timestamp": 1700000000}`,
//! `{"$bytes": "<base64>"}` (a byte array, or a long string that is not
//! UTF-8), `{"$decimal": {"scale": 2, "value": 1234}}`. A short string that
//! was not UTF-8 (a header name, `message_id`) travels as the parser's
//! reversible text (see [`super::fields::short_string_bytes`]), so an
//! exported and imported message carries the same bytes.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use lapin::{
    types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString, ShortString},
    BasicProperties,
};
use serde_json::{json, Map, Value};

use crate::domain::dead_letter;

/// One header value as JSON.
pub fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!({"$decimal": {"scale": d.scale, "value": d.value}}),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => json!({"$bytes": STANDARD.encode(s.as_bytes())}),
        },
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => json!({"$timestamp": t}),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::ByteArray(b) => json!({"$bytes": STANDARD.encode(b.as_slice())}),
        AMQPValue::Void => Value::Null,
    }
}

/// A header table as a JSON object.
pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
        .collect()
}

/// One header value from JSON (the inverse of [`value_to_json`], up to the
/// integer width: every integer comes back as a 64-bit one).
///
/// # Errors
/// A text naming what cannot be a header value.
pub fn value_from_json(value: &Value) -> Result<AMQPValue, String> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(f)) => AMQPValue::Double(f),
            _ => return Err(format!("the number {n} does not fit a header value")),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(value_from_json)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(map) => match tagged(map)? {
            Some(v) => v,
            None => AMQPValue::FieldTable(table_from_json(map)?),
        },
    })
}

fn tagged(map: &Map<String, Value>) -> Result<Option<AMQPValue>, String> {
    if map.len() != 1 {
        return Ok(None);
    }
    let (key, v) = map.iter().next().expect("one entry");
    Ok(Some(match key.as_str() {
        "$timestamp" => AMQPValue::Timestamp(
            v.as_u64()
                .ok_or_else(|| format!("$timestamp must be a whole number, not {v}"))?,
        ),
        "$bytes" => {
            let text = v.as_str().ok_or("$bytes must be a base64 string")?;
            let bytes = STANDARD
                .decode(text)
                .map_err(|e| format!("$bytes is not base64: {e}"))?;
            AMQPValue::LongString(LongString::from(bytes))
        }
        "$decimal" => {
            let scale = v["scale"].as_u64().and_then(|s| u8::try_from(s).ok());
            let value = v["value"].as_u64().and_then(|s| u32::try_from(s).ok());
            match (scale, value) {
                (Some(scale), Some(value)) => {
                    AMQPValue::DecimalValue(DecimalValue { scale, value })
                }
                _ => return Err("$decimal needs a scale (0-255) and a value (u32)".into()),
            }
        }
        _ => return Ok(None),
    }))
}

/// A header table from a JSON object.
///
/// # Errors
/// A text naming the header that cannot be converted.
pub fn table_from_json(map: &Map<String, Value>) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    for (k, v) in map {
        if super::fields::short_string_bytes(k).len() > 255 {
            return Err(format!("header name {k:?} is longer than 255 bytes"));
        }
        let value = value_from_json(v).map_err(|e| format!("header {k:?}: {e}"))?;
        table.insert(ShortString::from(k.as_str()), value);
    }
    Ok(table)
}

/// The properties as JSON, headers excepted (they are written apart).
pub fn properties_to_json(props: &BasicProperties) -> Map<String, Value> {
    let mut out = Map::new();
    let mut text = |name: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            out.insert(name.to_owned(), Value::String(v.as_str().to_owned()));
        }
    };
    text("content_type", props.content_type());
    text("content_encoding", props.content_encoding());
    text("correlation_id", props.correlation_id());
    text("reply_to", props.reply_to());
    text("expiration", props.expiration());
    text("message_id", props.message_id());
    text("type", props.kind());
    text("user_id", props.user_id());
    text("app_id", props.app_id());
    text("cluster_id", props.cluster_id());
    if let Some(v) = props.delivery_mode() {
        out.insert("delivery_mode".into(), json!(v));
    }
    if let Some(v) = props.priority() {
        out.insert("priority".into(), json!(v));
    }
    if let Some(v) = props.timestamp() {
        out.insert("timestamp".into(), json!(v));
    }
    out
}

/// Properties from JSON (the inverse of [`properties_to_json`]) with
/// `headers`.
///
/// # Errors
/// A text naming the property that is not of its type, or unknown.
pub fn properties_from_json(
    map: &Map<String, Value>,
    headers: FieldTable,
) -> Result<BasicProperties, String> {
    let mut props = BasicProperties::default().with_headers(headers);
    for (name, v) in map {
        let text = || -> Result<ShortString, String> {
            let s = v
                .as_str()
                .ok_or_else(|| format!("property {name} must be a string"))?;
            if super::fields::short_string_bytes(s).len() > 255 {
                return Err(format!("property {name} is longer than 255 bytes"));
            }
            Ok(ShortString::from(s))
        };
        let number = |max: u64| -> Result<u64, String> {
            v.as_u64()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("property {name} must be a whole number up to {max}"))
        };
        props = match name.as_str() {
            "content_type" => props.with_content_type(text()?),
            "content_encoding" => props.with_content_encoding(text()?),
            "correlation_id" => props.with_correlation_id(text()?),
            "reply_to" => props.with_reply_to(text()?),
            "expiration" => props.with_expiration(text()?),
            "message_id" => props.with_message_id(text()?),
            "type" => props.with_type(text()?),
            "user_id" => props.with_user_id(text()?),
            "app_id" => props.with_app_id(text()?),
            "cluster_id" => props.with_cluster_id(text()?),
            "delivery_mode" => props.with_delivery_mode(number(u64::from(u8::MAX))? as u8),
            "priority" => props.with_priority(number(u64::from(u8::MAX))? as u8),
            "timestamp" => props.with_timestamp(number(u64::MAX)?),
            other => return Err(format!("unknown property {other:?}")),
        };
    }
    Ok(props)
}

/// One message as an export line: `{"message_id", "reason", "group",
/// "replays", "body" (UTF-8) or "body_base64", "properties", "headers"}`.
pub fn record(d: &lapin::message::Delivery, reason: &str, group: &str, replays: i64) -> Value {
    let mut out = json!({
        "message_id": d.properties.message_id().as_ref().map(|s| s.as_str().to_owned()),
        "reason": reason,
        "group": group,
        "replays": replays,
        "properties": properties_to_json(&d.properties),
        "headers": d.properties.headers().as_ref().map(table_to_json).unwrap_or_default(),
    });
    match std::str::from_utf8(&d.data) {
        Ok(text) => out["body"] = Value::String(text.to_owned()),
        Err(_) => out["body_base64"] = Value::String(STANDARD.encode(&d.data)),
    }
    out
}

/// One export line as a message to publish: body and properties, with the
/// replay rules applied (`x-bridge-done-targets` kept, `x-bridge-replays`
/// counted, the other `x-bridge-*` and the broker's history dropped).
///
/// # Errors
/// A text saying why the line is not a valid export record.
pub fn parse_record(line: &str) -> Result<(Vec<u8>, BasicProperties), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(record) = value else {
        return Err("not a JSON object".into());
    };
    let object = |name: &str| -> Result<Map<String, Value>, String> {
        match record.get(name) {
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(format!("\"{name}\" must be an object")),
            None => Err(format!("no \"{name}\"")),
        }
    };
    let body = match (record.get("body"), record.get("body_base64")) {
        (Some(Value::String(text)), None) => text.as_bytes().to_vec(),
        (None, Some(Value::String(b64))) => STANDARD
            .decode(b64)
            .map_err(|e| format!("\"body_base64\" is not base64: {e}"))?,
        (Some(_), Some(_)) => return Err("both \"body\" and \"body_base64\"".into()),
        (None, None) => return Err("no \"body\" or \"body_base64\"".into()),
        _ => return Err("the body must be a string".into()),
    };
    let mut headers = table_from_json(&object("headers")?)?;
    if super::fields::header_int(Some(&headers), dead_letter::REPLAYS).is_none() {
        if let Some(n) = record.get("replays").and_then(Value::as_i64) {
            headers.insert(dead_letter::REPLAYS.into(), AMQPValue::LongLongInt(n));
        }
    }
    let mut props = properties_from_json(&object("properties")?, headers)?;
    match record.get("message_id") {
        Some(Value::String(id)) => {
            if super::fields::short_string_bytes(id).len() > 255 {
                return Err("\"message_id\" is longer than 255 bytes".into());
            }
            props = props.with_message_id(ShortString::from(id.as_str()));
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err("\"message_id\" must be a string or null".into()),
    }
    Ok((body, super::dlq_copies::replayed_properties(&props)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_json() {
        let mut nested = FieldTable::default();
        nested.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        nested.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        let mut t = FieldTable::default();
        t.insert("s".into(), AMQPValue::LongString("text".into()));
        t.insert("n".into(), AMQPValue::LongLongInt(-3));
        t.insert("f".into(), AMQPValue::Double(1.5));
        t.insert("b".into(), AMQPValue::Boolean(true));
        t.insert("raw".into(), AMQPValue::LongString(vec![0xff, 0x00].into()));
        t.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(nested)])),
        );
        t.insert(
            "d".into(),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1234,
            }),
        );
        let json = table_to_json(&t);
        let text = serde_json::to_string(&json).unwrap();
        let back: Map<String, Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(table_from_json(&back).unwrap(), t);
    }

    #[test]
    fn properties_round_trip_through_json() {
        let props = BasicProperties::default()
            .with_message_id("m".into())
            .with_correlation_id("c".into())
            .with_type("t".into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_priority(3)
            .with_timestamp(7)
            .with_app_id("a".into());
        let json = properties_to_json(&props);
        let back = properties_from_json(&json, FieldTable::default()).unwrap();
        assert_eq!(back, props.with_headers(FieldTable::default()));
        let mut bad = json.clone();
        bad.insert("priority".into(), json!("high"));
        assert!(properties_from_json(&bad, FieldTable::default())
            .unwrap_err()
            .contains("priority"));
        bad = json;
        bad.insert("colour".into(), json!("red"));
        assert!(properties_from_json(&bad, FieldTable::default()).is_err());
    }

    #[test]
    fn an_export_line_becomes_a_replayed_message() {
        let line = r#"{"message_id":"m-1","reason":"api_failed","group":"abcd0123","replays":1,
            "body":"{\"a\":1}","properties":{"content_type":"application/json","user_id":"guest"},
            "headers":{"x-bridge-reason":"api_failed","x-bridge-done-targets":"user-management",
            "x-bridge-replays":1,"tenant":"acme","x-death":[{"reason":"delivery_limit"}]}}"#
            .replace('\n', "");
        let (body, props) = parse_record(&line).unwrap();
        assert_eq!(body, br#"{"a":1}"#);
        assert_eq!(props.message_id().as_ref().unwrap().as_str(), "m-1");
        assert!(props.user_id().is_none());
        let h = props.headers().as_ref().unwrap();
        let mut keys: Vec<_> = h.inner().keys().map(|k| k.as_str().to_owned()).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["tenant", "x-bridge-done-targets", "x-bridge-replays"]
        );
        assert_eq!(
            super::super::fields::header_int(Some(h), dead_letter::REPLAYS),
            Some(2)
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"properties":{},"headers":{}}"#, "no \"body\""),
            (r#"{"body":"x","headers":{}}"#, "no \"properties\""),
            (
                r#"{"body":"x","properties":{},"headers":[]}"#,
                "\"headers\" must be an object",
            ),
            (
                r#"{"body_base64":"%%","properties":{},"headers":{}}"#,
                "not base64",
            ),
            (
                r#"{"body":"x","properties":{"priority":"hi"},"headers":{}}"#,
                "priority",
            ),
        ];
        for (line, want) in cases {
            let e = parse_record(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
        let (body, _) =
            parse_record(r#"{"body_base64":"/wA=","properties":{},"headers":{}}"#).unwrap();
        assert_eq!(body, [0xff, 0x00]);
    }
}
