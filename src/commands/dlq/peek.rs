//! `dlq peek`: the first messages of the DLQ as JSON lines.

use std::process::ExitCode;

use lapin::{
    message::Delivery,
    types::{AMQPValue, ShortString},
};
use serde_json::{json, Map, Value};

use super::{
    dlq_depth, interrupted,
    reasons::{failed_of, reason_of},
    select, stop_on_signals, Output, ToolSession,
};
use crate::{
    broker::{
        dlq_pass::{pass, replays_of, Fate, Reader},
        fields::{short_string_display, short_string_hex},
    },
    config::BrokerConfig,
    domain::{
        dead_letter,
        failure::{group_of, Filter},
    },
};

// === peek ===

struct Printer<'a> {
    out: Output,
    filter: &'a Filter,
    limit: u32,
    printed: u32,
}

impl Reader for Printer<'_> {
    fn decide(&mut self, d: &Delivery) -> Fate {
        if self.printed < self.limit && select(self.filter, d).0 {
            self.printed += 1;
            self.out.line(&describe(d).to_string());
        }
        Fate::Rotate
    }

    /// Without a filter the messages read are the ones printed: stop at the
    /// limit. With one, the pass goes round the whole DLQ so that the
    /// messages it skipped keep their order.
    fn done(&self) -> bool {
        self.filter.is_empty() && self.printed >= self.limit
    }
}

/// Prints the first `limit` messages as JSON lines; they move to the DLQ's
/// tail, behind the others (a limit of at least the depth reads them all and
/// leaves the order as it was). Going round the rest just to restore the
/// order would make a peek at one message cost a pass over the whole DLQ.
///
/// A reader that closes the pipe (`dlq peek | head -n 1`) ends the peek
/// early, with every message read back in the DLQ, and exit code 0.
///
/// # Errors
/// When the broker cannot be reached, a copy is not confirmed, or a signal
/// interrupted it.
pub async fn peek(
    broker_cfg: &BrokerConfig,
    limit: u32,
    filter: &Filter,
) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signals()?;
    in_session!(broker_cfg, "dlq peek", |session| async {
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(ExitCode::SUCCESS);
        };
        let mut printer = Printer {
            out: Output::new(stop.clone()),
            filter,
            limit,
            printed: 0,
        };
        let done = pass(&mut session, broker_cfg, depth, &mut printer, &stop).await;
        match done.error {
            Some(e) => Err(e),
            None if done.stopped && !printer.out.closed() => Err(interrupted(done.read)),
            None => Ok(ExitCode::SUCCESS),
        }
    })
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
