//! Why a message is in the DLQ, and `dlq stats`: a count per reason.

use std::{collections::BTreeMap, process::ExitCode};

use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;

use super::{dlq_depth, interrupted, print_lines, select, stop_on_signals, ToolSession};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    broker::{
        dlq_pass::{pass, replays_of, Fate, Reader, Stop},
        fields,
    },
    cli::OutputFormat,
    config::BrokerConfig,
    domain::{
        dead_letter,
        failure::{Failed, Filter},
    },
};

/// The reason the tools give a message the broker dead-lettered itself,
/// past a quorum queue's delivery limit.
pub const DELIVERY_LIMIT: &str = "delivery_limit";
/// The reason of a message that carries neither ours nor the broker's.
pub const UNKNOWN: &str = "unknown";

/// DLQ depth and a count per reason.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The DLQ as configured (`BRIDGE_DLQ`).
    pub dlq: String,
    /// Ready messages when the command started.
    pub depth: u32,
    /// Messages per reason, among those read that match the filters.
    pub reasons: BTreeMap<String, u64>,
    /// With filters: the messages read that match them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
}

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

/// # Errors
/// When the broker cannot be reached or a read message cannot be put back
/// at the tail (it then stays in the DLQ).
pub async fn stats(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signals()?;
    let s = collect_stats_until(broker_cfg, filter, &stop).await?;
    let lines = match format {
        OutputFormat::Json => vec![serde_json::to_string(&s)?],
        OutputFormat::Text => {
            let mut lines = vec![format!("queue: {}", s.dlq), format!("depth: {}", s.depth)];
            lines.extend(s.reasons.iter().map(|(r, n)| format!("{r}: {n}")));
            lines
        }
    };
    print_lines(&lines);
    Ok(ExitCode::SUCCESS)
}

struct Counter<'a> {
    filter: &'a Filter,
    reasons: BTreeMap<String, u64>,
    matched: u64,
}

impl Reader for Counter<'_> {
    fn decide(&mut self, d: &Delivery) -> Fate {
        let (wanted, failed, _) = select(self.filter, d);
        if wanted {
            self.matched += 1;
            *self.reasons.entry(failed.reason).or_default() += 1;
        }
        Fate::Rotate
    }
}

/// Reads every message once (a full rotation: the order stays) to count
/// reasons.
///
/// # Errors
/// When the broker cannot be reached or a copy is not confirmed.
pub async fn collect_stats(broker_cfg: &BrokerConfig) -> anyhow::Result<Stats> {
    collect_stats_until(broker_cfg, &Filter::default(), &Stop::new()).await
}

async fn collect_stats_until(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    stop: &Stop,
) -> anyhow::Result<Stats> {
    in_session!(broker_cfg, "dlq stats", |session| async {
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(Stats {
                dlq: broker_cfg.dlq.clone(),
                ..Stats::default()
            });
        };
        let mut counter = Counter {
            filter,
            reasons: BTreeMap::new(),
            matched: 0,
        };
        let done = pass(&mut session, broker_cfg, depth, &mut counter, stop).await;
        if let Some(e) = done.error {
            return Err(e.context("counting the DLQ's reasons"));
        }
        if done.stopped {
            return Err(interrupted(done.read));
        }
        Ok(Stats {
            dlq: broker_cfg.dlq.clone(),
            depth,
            reasons: counter.reasons,
            matched: (!filter.is_empty()).then_some(counter.matched),
        })
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    pub(in crate::commands::dlq) fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    pub(in crate::commands::dlq) fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    pub(in crate::commands::dlq) fn death(reason: &str) -> AMQPValue {
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
