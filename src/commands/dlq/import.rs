//! `dlq import`: publishes `dlq export` lines (edited or not) to the inbound
//! queue as `dlq replay` would: edit a message, then retry it.

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;
use base64::{engine::general_purpose::STANDARD, Engine as _};
use lapin::{
    types::{AMQPValue, ShortString},
    BasicProperties,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{print_lines, replay::ensure_inbound_queue, ToolSession};
use crate::{
    broker::{
        dlq_pass::replayed_properties,
        fields,
        record::{properties_from_json, table_from_json},
    },
    cli::OutputFormat,
    config::BrokerConfig,
    domain::dead_letter,
};

/// A line that is not a valid export record.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub line: u64,
    pub error: String,
}

/// What `dlq import` did (the JSON shape of `--format json`).
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub queue: String,
    pub dry_run: bool,
    /// Records read (blank lines are skipped).
    pub read: u64,
    /// Published and confirmed (0 in a dry run).
    pub published: u64,
    /// Valid records that were not confirmed (the broker refused them).
    pub unconfirmed: u64,
    pub rejected: Vec<Rejected>,
    pub error: Option<String>,
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
    if fields::header_int(Some(&headers), dead_letter::REPLAYS).is_none() {
        if let Some(n) = record.get("replays").and_then(Value::as_i64) {
            headers.insert(dead_letter::REPLAYS.into(), AMQPValue::LongLongInt(n));
        }
    }
    let mut props = properties_from_json(&object("properties")?, headers)?;
    match record.get("message_id") {
        Some(Value::String(id)) => {
            if fields::short_string_bytes(id).len() > 255 {
                return Err("\"message_id\" is longer than 255 bytes".into());
            }
            props = props.with_message_id(ShortString::from(id.as_str()));
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err("\"message_id\" must be a string or null".into()),
    }
    Ok((body, replayed_properties(&props)))
}

/// # Errors
/// When the file cannot be read or the broker cannot be reached; bad lines
/// and refused publishes are in the report (exit code 1).
pub async fn import(
    broker_cfg: &BrokerConfig,
    file: &Path,
    dry_run: bool,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    // Line by line: an export of big messages is never all in memory.
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?,
    );
    let mut report = ImportReport {
        queue: broker_cfg.queue.clone(),
        dry_run,
        ..ImportReport::default()
    };
    let session = if dry_run {
        None
    } else {
        let session = ToolSession::open(broker_cfg, "dlq import").await?;
        if let Err(e) = ensure_inbound_queue(&session, broker_cfg).await {
            session.close().await;
            return Err(e);
        }
        Some(session)
    };
    let read = async {
        for (i, line) in std::io::BufRead::lines(reader).enumerate() {
            let line = line.with_context(|| format!("reading {}", file.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            report.read += 1;
            let (body, props) = match parse_record(&line) {
                Ok(m) => m,
                Err(error) => {
                    report.rejected.push(Rejected {
                        line: i as u64 + 1,
                        error,
                    });
                    continue;
                }
            };
            let Some(session) = &session else {
                continue;
            };
            let (props, _) = fields::fit_frame(props, session.publisher.frame_max());
            match session
                .publisher
                .publish(&broker_cfg.queue, &body, props)
                .await
            {
                Ok(()) => report.published += 1,
                Err(e) => {
                    report.unconfirmed += 1;
                    report.error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(session) = session {
        session.close().await;
    }
    read?;
    let mut lines = Vec::new();
    match format {
        OutputFormat::Json => lines.push(serde_json::to_string(&report)?),
        OutputFormat::Text => {
            for r in &report.rejected {
                lines.push(format!("line {}: {}", r.line, r.error));
            }
            let valid = report.read - report.rejected.len() as u64;
            lines.push(if dry_run {
                format!(
                    "dry run: {valid} of {} records would be published to {}",
                    report.read, report.queue
                )
            } else {
                format!(
                    "{} of {} records published to {}",
                    report.published, report.read, report.queue
                )
            });
        }
    }
    print_lines(&lines);
    for r in &report.rejected {
        eprintln!(
            "fanout-bridge: line {}: not a valid export record: {}",
            r.line, r.error
        );
    }
    if let Some(e) = &report.error {
        eprintln!(
            "fanout-bridge: {} records were not confirmed: {e}",
            report.unconfirmed
        );
    }
    if report.rejected.is_empty() && report.error.is_none() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(fields::header_int(Some(h), dead_letter::REPLAYS), Some(2));
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
