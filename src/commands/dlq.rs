//! `fanout-bridge dlq stats|peek|replay`: look at the dead-letter queue and
//! move messages back. Looking never removes: messages are fetched unacked
//! and handed back with a nack-requeue, which keeps their order.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use anyhow::Context;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::AMQPValue,
    Channel,
};
use serde_json::{json, Map, Value};

use crate::{
    broker::{self, fields, publisher::Publisher, topology, BrokerError},
    config::BrokerConfig,
    domain::dead_letter,
};

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Replayed messages in flight before their confirms are awaited.
const REPLAY_BATCH: usize = 256;

/// DLQ depth and a count per `x-bridge-reason`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub depth: u32,
    pub reasons: BTreeMap<String, u64>,
}

/// # Errors
/// When the broker cannot be reached.
pub async fn stats(broker: &BrokerConfig) -> anyhow::Result<ExitCode> {
    let s = collect_stats(broker).await?;
    println!("queue: {}", broker.dlq);
    println!("depth: {}", s.depth);
    for (reason, count) in &s.reasons {
        println!("{reason}: {count}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads every message once (unacked) to count reasons, then hands them back.
///
/// # Errors
/// When the broker cannot be reached.
pub async fn collect_stats(broker: &BrokerConfig) -> anyhow::Result<Stats> {
    with_channel(broker, |channel| async move {
        let depth = match topology::depth(&channel, &broker.dlq).await {
            Ok(d) => d,
            Err(BrokerError::QueueMissing(_)) => return Ok(Stats::default()),
            Err(e) => return Err(e.into()),
        };
        let mut stats = Stats {
            depth,
            reasons: BTreeMap::new(),
        };
        let fetched = fetch_unacked(&channel, &broker.dlq, depth, |d| {
            let reason = fields::header_text(d.properties.headers().as_ref(), dead_letter::REASON)
                .map_or_else(|| "unknown".to_owned(), |r| r.into_owned());
            *stats.reasons.entry(reason).or_default() += 1;
        })
        .await;
        hand_back(&channel).await;
        fetched?;
        Ok(stats)
    })
    .await
}

/// # Errors
/// When the broker cannot be reached.
pub async fn peek(broker: &BrokerConfig, limit: u32) -> anyhow::Result<ExitCode> {
    with_channel(broker, |channel| async move {
        match topology::depth(&channel, &broker.dlq).await {
            Ok(_) => {}
            Err(BrokerError::QueueMissing(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let fetched = fetch_unacked(&channel, &broker.dlq, limit, |d| {
            println!("{}", describe(d));
        })
        .await;
        hand_back(&channel).await;
        fetched.map(|_| ())
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// One dead-lettered message as a JSON object: its body (text, or hex when it
/// is not UTF-8), identifying properties and `x-bridge-*` headers.
pub fn describe(d: &Delivery) -> Value {
    let props = &d.properties;
    let mut headers = Map::new();
    if let Some(table) = props.headers() {
        for (key, value) in table {
            if key.as_str().starts_with(dead_letter::PREFIX) {
                headers.insert(key.as_str().to_owned(), amqp_to_json(value));
            }
        }
    }
    let text = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    let mut out = json!({
        "message_id": text(props.message_id()),
        "correlation_id": text(props.correlation_id()),
        "type": text(props.kind()),
        "headers": headers,
    });
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
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
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

/// # Errors
/// When the broker cannot be reached or a replayed message is not confirmed
/// (it then stays in the DLQ).
pub async fn replay(broker: &BrokerConfig, limit: Option<u32>) -> anyhow::Result<ExitCode> {
    let moved = replay_messages(broker, limit).await?;
    println!(
        "{moved} messages replayed from {} to {}",
        broker.dlq, broker.queue
    );
    Ok(ExitCode::SUCCESS)
}

/// Moves up to `limit` messages (default: the DLQ depth at start) to the
/// inbound queue; each is removed from the DLQ only after its publish is
/// confirmed. Returns how many moved.
///
/// # Errors
/// When the broker cannot be reached or a publish is not confirmed.
pub async fn replay_messages(broker: &BrokerConfig, limit: Option<u32>) -> anyhow::Result<u64> {
    let conn = broker::connect(broker, "dlq replay").await?;
    let result = async {
        let channel = conn.create_channel().await.context("opening a channel")?;
        let depth = match topology::depth(&channel, &broker.dlq).await {
            Ok(d) => d,
            Err(BrokerError::QueueMissing(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        topology::declare_inbound(&channel, broker).await?;
        let publisher = Publisher::open(&conn, CONFIRM_TIMEOUT).await?;
        let limit = limit.unwrap_or(depth) as usize;
        let mut moved = 0u64;
        let mut remaining = limit;
        while remaining > 0 {
            let mut batch = Vec::new();
            while batch.len() < remaining.min(REPLAY_BATCH) {
                match get(&channel, &broker.dlq).await? {
                    Some(d) => batch.push(d),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            remaining -= batch.len();
            let mut confirms = Vec::with_capacity(batch.len());
            for d in &batch {
                let props = fields::replay_properties(&d.properties);
                confirms.push(publisher.send(&broker.queue, &d.data, props).await);
            }
            let mut failure = None;
            for (d, sent) in batch.iter().zip(confirms) {
                let confirmed = match sent {
                    Ok(c) => publisher.confirmed(c).await,
                    Err(e) => Err(e),
                };
                match confirmed {
                    Ok(()) => {
                        d.acker
                            .ack(BasicAckOptions::default())
                            .await
                            .context("removing a replayed message from the DLQ")?;
                        moved += 1;
                    }
                    Err(e) => {
                        let _ = d
                            .acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await;
                        failure.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failure {
                broker::close_channel(publisher.channel()).await;
                broker::close_channel(&channel).await;
                return Err(anyhow::Error::from(e).context(format!(
                    "replay stopped after {moved} messages; the rest stay in the DLQ"
                )));
            }
        }
        broker::close_channel(publisher.channel()).await;
        broker::close_channel(&channel).await;
        Ok(moved)
    }
    .await;
    broker::close(&conn).await;
    result
}

async fn get(channel: &Channel, queue: &str) -> anyhow::Result<Option<Delivery>> {
    let got = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .context("reading from the DLQ")?;
    Ok(got.map(|m| m.delivery))
}

/// Fetches up to `limit` messages without acking them.
async fn fetch_unacked(
    channel: &Channel,
    queue: &str,
    limit: u32,
    mut each: impl FnMut(&Delivery),
) -> anyhow::Result<u32> {
    let mut n = 0;
    while n < limit {
        match get(channel, queue).await? {
            Some(d) => {
                each(&d);
                n += 1;
            }
            None => break,
        }
    }
    Ok(n)
}

/// Returns every unacked message of the channel to its queue, in order.
async fn hand_back(channel: &Channel) {
    let _ = channel
        .basic_recover(lapin::options::BasicRecoverOptions { requeue: true })
        .await;
}

async fn with_channel<T, F, Fut>(broker: &BrokerConfig, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let conn = broker::connect(broker, "dlq").await?;
    let result = match conn.create_channel().await {
        Ok(channel) => {
            let result = f(channel.clone()).await;
            broker::close_channel(&channel).await;
            result
        }
        Err(e) => Err(anyhow::Error::from(e).context("opening a channel")),
    };
    broker::close(&conn).await;
    result
}
