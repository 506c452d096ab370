//! `fanout-bridge dlq stats|peek|replay`: look at the dead-letter queue and
//! move messages back.
//!
//! # Reading costs no delivery attempt
//!
//! A quorum queue counts every message that goes back to it unacked (a
//! nack-requeue, a `basic.recover`, a closed channel) against its delivery
//! limit and drops, or dead-letters, a message past it. So nothing here ever
//! hands a message back on the success path: each message read is
//! *rotated*. It is copied to the DLQ's tail (same body and properties,
//! `mandatory`, confirmed), and only then is the original acked. The copy is
//! a new message with a fresh count. A read of the whole DLQ is one full
//! rotation and leaves the order as it was; a read of the first N moves them
//! behind the others.
//!
//! Every pass reads at most the depth seen when it started: what workers
//! dead-letter meanwhile, and our own copies, land behind that, so a pass
//! always ends and never sees a message twice. When a copy is not confirmed
//! the original is nack-requeued (the one case that spends an attempt, and
//! the alternative would be losing it) and the pass stops with an error.

use std::{collections::BTreeMap, process::ExitCode};

use anyhow::Context;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties, PublisherConfirm,
};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::broker_session::Session;
use crate::{
    broker::{
        self,
        fields::{self, PERSISTENT},
        publisher::PublishError,
        topology, BrokerError,
    },
    cli::OutputFormat,
    config::BrokerConfig,
    domain::dead_letter,
};

/// Messages read before their copies' confirms are awaited: enough to keep
/// the broker busy, few enough to hold in memory.
const BATCH: usize = 256;

/// The reason the tools give a message the broker dead-lettered itself,
/// past a quorum queue's delivery limit.
pub const DELIVERY_LIMIT: &str = "delivery_limit";
/// The reason of a message that carries neither ours nor the broker's.
pub const UNKNOWN: &str = "unknown";

/// Headers the broker writes when it dead-letters a message or delivers it
/// from a quorum queue. A replayed message starts a new history without
/// them; a rotated copy drops only the delivery count (the broker keeps its
/// own, and an old one must not look like a new attempt).
const DEATH_HEADERS: [&str; 1] = ["x-death"];
const DEATH_PREFIXES: [&str; 2] = ["x-first-death-", "x-last-death-"];
const DELIVERY_COUNT: &str = "x-delivery-count";

/// DLQ depth and a count per reason.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The DLQ as configured (`BRIDGE_DLQ`).
    pub dlq: String,
    /// Ready messages when the command started.
    pub depth: u32,
    /// Messages per reason, among those read.
    pub reasons: BTreeMap<String, u64>,
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

/// What a pass does with one message it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// A copy to the DLQ's tail, then the original acked.
    Rotate,
    /// A copy to the inbound queue (replay headers), then the original acked.
    Replay,
}

/// The command-specific part of a pass over the DLQ.
trait Reader {
    /// Called for each message read, in DLQ order, before its copy is sent.
    fn decide(&mut self, delivery: &Delivery) -> Fate;
    /// Checked before each read: true ends the pass before its bound.
    fn done(&self) -> bool {
        false
    }
}

/// What a pass did.
#[derive(Debug, Default)]
struct Pass {
    read: u32,
    rotated: u32,
    replayed: u32,
    /// Why the pass stopped early; every message it had not settled is back
    /// in the DLQ.
    error: Option<anyhow::Error>,
}

/// Reads up to `max` messages from the head of the DLQ and settles each as
/// `reader` decides: copy confirmed, then the original acked; copy not
/// confirmed, the original nack-requeued and the pass ends.
async fn pass(
    session: &Session,
    broker_cfg: &BrokerConfig,
    max: u32,
    reader: &mut dyn Reader,
) -> Pass {
    let mut out = Pass::default();
    let mut empty = false;
    while !empty && out.read < max && !reader.done() {
        let mut batch: Vec<(Delivery, Fate, Result<PublisherConfirm, PublishError>)> =
            Vec::with_capacity(BATCH);
        while batch.len() < BATCH && out.read < max && !reader.done() {
            let got = match session
                .channel
                .basic_get(
                    broker_cfg.dlq.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
            {
                Ok(got) => got,
                Err(e) => {
                    out.error = Some(anyhow::Error::from(e).context("reading from the DLQ"));
                    break;
                }
            };
            // Someone else emptied it meanwhile: nothing more to read.
            let Some(got) = got else {
                empty = true;
                break;
            };
            let delivery = got.delivery;
            out.read += 1;
            let fate = reader.decide(&delivery);
            let sent = match fate {
                Fate::Rotate => {
                    let props = rotated_properties(&delivery.properties);
                    session
                        .publisher
                        .send(&broker_cfg.dlq, &delivery.data, props)
                        .await
                }
                Fate::Replay => {
                    let props = replayed_properties(&delivery.properties);
                    session
                        .publisher
                        .send(&broker_cfg.queue, &delivery.data, props)
                        .await
                }
            };
            batch.push((delivery, fate, sent));
        }
        for (delivery, fate, sent) in batch {
            let confirmed = match sent {
                Ok(confirm) => session.publisher.confirmed(confirm).await,
                Err(e) => Err(e),
            };
            match confirmed {
                Ok(()) => match delivery.acker.ack(BasicAckOptions::default()).await {
                    Ok(true) => match fate {
                        Fate::Rotate => out.rotated += 1,
                        Fate::Replay => out.replayed += 1,
                    },
                    // Not sent (channel gone) or refused: the copy is stored
                    // and the original comes back to the DLQ: a duplicate,
                    // never a loss.
                    Ok(false) => {
                        out.error.get_or_insert_with(|| {
                            anyhow::anyhow!("the channel closed before a read message was removed")
                        });
                    }
                    Err(e) => {
                        out.error.get_or_insert_with(|| {
                            anyhow::Error::from(e).context("acking a message read from the DLQ")
                        });
                    }
                },
                Err(e) => {
                    // Not stored: the original must stay. This is the one
                    // return to the queue, and only on failure.
                    let _ = delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                    let target = match fate {
                        Fate::Rotate => "the DLQ's tail",
                        Fate::Replay => "the inbound queue",
                    };
                    out.error.get_or_insert_with(|| {
                        anyhow::Error::from(e).context(format!("copying a message to {target}"))
                    });
                }
            }
        }
        if out.error.is_some() {
            break;
        }
    }
    out
}

/// The properties of a rotated copy: the original's, persistent, without
/// `user_id` (the broker refuses a publish whose `user_id` is not the
/// publishing user's, and the tool may run as another user) and without the
/// broker's delivery count.
fn rotated_properties(props: &BasicProperties) -> BasicProperties {
    let headers = filtered_headers(props.headers().as_ref(), |k| k != DELIVERY_COUNT);
    copy_properties(props, headers)
}

/// The properties of a replayed message: `x-bridge-done-targets` and the
/// message's own headers are kept (see [`fields::replay_properties`]); the
/// broker's dead-lettering history goes too, so a replayed message is a new
/// start and a later dead-lettering is not mistaken for an old one.
fn replayed_properties(props: &BasicProperties) -> BasicProperties {
    let replayed = fields::replay_properties(props);
    let headers = filtered_headers(replayed.headers().as_ref(), |k| {
        k != DELIVERY_COUNT
            && !DEATH_HEADERS.contains(&k)
            && !DEATH_PREFIXES.iter().any(|p| k.starts_with(p))
    });
    replayed.with_headers(headers)
}

fn filtered_headers(headers: Option<&FieldTable>, keep: impl Fn(&str) -> bool) -> FieldTable {
    let mut out = FieldTable::default();
    for (key, value) in headers.into_iter().flatten() {
        if keep(key.as_str()) {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

/// Every property of `props` but `user_id`, with `headers`, persistent
/// (BasicProperties has no "unset", so the copy is built field by field).
fn copy_properties(props: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut out = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    let short = |v: &Option<ShortString>| v.clone();
    if let Some(v) = short(props.content_type()) {
        out = out.with_content_type(v);
    }
    if let Some(v) = short(props.content_encoding()) {
        out = out.with_content_encoding(v);
    }
    if let Some(v) = props.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = short(props.correlation_id()) {
        out = out.with_correlation_id(v);
    }
    if let Some(v) = short(props.reply_to()) {
        out = out.with_reply_to(v);
    }
    if let Some(v) = short(props.expiration()) {
        out = out.with_expiration(v);
    }
    if let Some(v) = short(props.message_id()) {
        out = out.with_message_id(v);
    }
    if let Some(v) = props.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = short(props.kind()) {
        out = out.with_type(v);
    }
    if let Some(v) = short(props.app_id()) {
        out = out.with_app_id(v);
    }
    if let Some(v) = short(props.cluster_id()) {
        out = out.with_cluster_id(v);
    }
    out
}

/// The DLQ's depth, or `None` when it does not exist (nothing to read; the
/// broker has then closed the channel).
async fn dlq_depth(session: &Session, broker_cfg: &BrokerConfig) -> anyhow::Result<Option<u32>> {
    match topology::depth(&session.channel, &broker_cfg.dlq).await {
        Ok(d) => Ok(Some(d)),
        Err(BrokerError::QueueMissing(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens a session, runs `work`, closes the session whatever happened.
macro_rules! in_session {
    ($broker:expr, $role:expr, |$session:ident| $work:expr) => {{
        let $session = Session::open($broker, $role).await?;
        let result = $work.await;
        $session.close().await;
        result
    }};
}

// === stats ===

/// # Errors
/// When the broker cannot be reached or a read message cannot be put back
/// at the tail (it then stays in the DLQ).
pub async fn stats(broker_cfg: &BrokerConfig, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let s = collect_stats(broker_cfg).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string(&s)?),
        OutputFormat::Text => {
            println!("queue: {}", s.dlq);
            println!("depth: {}", s.depth);
            for (reason, count) in &s.reasons {
                println!("{reason}: {count}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Counter(BTreeMap<String, u64>);

impl Reader for Counter {
    fn decide(&mut self, d: &Delivery) -> Fate {
        *self
            .0
            .entry(reason_of(d.properties.headers().as_ref()))
            .or_default() += 1;
        Fate::Rotate
    }
}

/// Reads every message once (a full rotation: the order stays) to count
/// reasons.
///
/// # Errors
/// When the broker cannot be reached or a copy is not confirmed.
pub async fn collect_stats(broker_cfg: &BrokerConfig) -> anyhow::Result<Stats> {
    in_session!(broker_cfg, "dlq stats", |session| async {
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(Stats {
                dlq: broker_cfg.dlq.clone(),
                ..Stats::default()
            });
        };
        let mut counter = Counter(BTreeMap::new());
        let done = pass(&session, broker_cfg, depth, &mut counter).await;
        if let Some(e) = done.error {
            return Err(e.context("counting the DLQ's reasons"));
        }
        Ok(Stats {
            dlq: broker_cfg.dlq.clone(),
            depth,
            reasons: counter.0,
        })
    })
}

// === peek ===

struct Printer;

impl Reader for Printer {
    fn decide(&mut self, d: &Delivery) -> Fate {
        println!("{}", describe(d));
        Fate::Rotate
    }
}

/// Prints the first `limit` messages as JSON lines; they move to the DLQ's
/// tail, behind the others (a limit of at least the depth reads them all and
/// leaves the order as it was). Going round the rest just to restore the
/// order would make a peek at one message cost a pass over the whole DLQ.
///
/// # Errors
/// When the broker cannot be reached or a copy is not confirmed.
pub async fn peek(broker_cfg: &BrokerConfig, limit: u32) -> anyhow::Result<ExitCode> {
    in_session!(broker_cfg, "dlq peek", |session| async {
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(ExitCode::SUCCESS);
        };
        let done = pass(&session, broker_cfg, depth.min(limit), &mut Printer).await;
        match done.error {
            Some(e) => Err(e),
            None => Ok(ExitCode::SUCCESS),
        }
    })
}

/// One dead-lettered message as a JSON object: its body (text, or hex when it
/// is not UTF-8), identifying properties, its reason and `x-bridge-*`
/// headers.
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
    let text = |v: &Option<ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    let mut out = json!({
        "message_id": text(props.message_id()),
        "correlation_id": text(props.correlation_id()),
        "type": text(props.kind()),
        "reason": reason_of(props.headers().as_ref()),
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

// === replay ===

/// Which messages `dlq replay` moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayRequest {
    /// At most this many (default: every one there at start).
    pub limit: Option<u32>,
    /// Only those whose reason (as [`reason_of`] reports it) is this.
    pub reason: Option<String>,
    /// Move nothing; report what would move.
    pub dry_run: bool,
}

/// One message chosen for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chosen {
    pub message_id: Option<String>,
    pub reason: String,
}

/// What `dlq replay` did (the JSON shape of `--format json`).
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub dlq: String,
    pub queue: String,
    pub dry_run: bool,
    pub reason: Option<String>,
    pub limit: Option<u32>,
    /// Messages that matched: moved, or in a dry run would move.
    pub matched: u64,
    /// Messages moved to the inbound queue (0 in a dry run).
    pub moved: u64,
    /// Messages read that stay in the DLQ (another reason, past the limit, a
    /// dry run).
    pub kept: u64,
    /// The matched messages, in DLQ order.
    pub messages: Vec<Chosen>,
    /// Why the replay stopped early, if it did (then exit code 1).
    pub error: Option<String>,
}

struct Chooser<'a> {
    request: &'a ReplayRequest,
    chosen: Vec<Chosen>,
    rotated: u64,
}

impl Reader for Chooser<'_> {
    fn decide(&mut self, d: &Delivery) -> Fate {
        let reason = reason_of(d.properties.headers().as_ref());
        let wanted = self.request.reason.as_ref().is_none_or(|r| *r == reason)
            && self
                .request
                .limit
                .is_none_or(|l| self.chosen.len() < l as usize);
        if wanted {
            self.chosen.push(Chosen {
                message_id: d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned()),
                reason,
            });
        }
        if wanted && !self.request.dry_run {
            Fate::Replay
        } else {
            self.rotated += 1;
            Fate::Rotate
        }
    }

    /// Stops once the limit is reached, but only while nothing has been
    /// rotated: once a message went to the tail, the pass goes round the
    /// whole DLQ so that those left behind are in their old order again.
    fn done(&self) -> bool {
        self.rotated == 0
            && self
                .request
                .limit
                .is_some_and(|l| self.chosen.len() >= l as usize)
    }
}

/// # Errors
/// When the broker cannot be reached. A replay that stops part way prints
/// its report and exits 1.
pub async fn replay(
    broker_cfg: &BrokerConfig,
    request: &ReplayRequest,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let report = replay_messages(broker_cfg, request).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
        OutputFormat::Text if report.dry_run => {
            for m in &report.messages {
                println!(
                    "would replay message_id={} reason={}",
                    m.message_id.as_deref().unwrap_or("-"),
                    m.reason
                );
            }
            println!(
                "dry run: {} messages would be replayed from {} to {}; nothing moved",
                report.matched, report.dlq, report.queue
            );
        }
        OutputFormat::Text => {
            println!(
                "{} messages replayed from {} to {}",
                report.moved, report.dlq, report.queue
            );
            if report.kept > 0 {
                println!("{} messages read stay in the DLQ, in order", report.kept);
            }
        }
    }
    match &report.error {
        Some(e) => {
            eprintln!("fanout-bridge: replay stopped: {e}; the rest stay in the DLQ");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Makes sure the inbound queue exists before messages are moved to it. One
/// that exists is used as it is, whatever its arguments (the worker, not
/// this tool, is the judge of those); a missing one is declared as the worker
/// would declare it.
async fn ensure_inbound_queue(session: &Session, broker_cfg: &BrokerConfig) -> anyhow::Result<()> {
    let scratch = session.scratch_channel().await?;
    let exists = match topology::depth(&scratch, &broker_cfg.queue).await {
        Ok(_) => true,
        Err(BrokerError::QueueMissing(_)) => false,
        Err(e) => return Err(e.into()),
    };
    broker::close_channel(&scratch).await;
    if !exists {
        topology::declare_inbound(&session.channel, broker_cfg)
            .await
            .context("declaring the inbound queue to replay to")?;
    }
    Ok(())
}

/// Moves the requested messages to the inbound queue; each is removed from
/// the DLQ only after its publish is confirmed. With a reason or a dry run
/// the others read go round to the tail, so that after the pass they are in
/// their old order.
///
/// # Errors
/// When the broker cannot be reached or the inbound queue cannot be
/// declared; a failure part way is in the report's `error`.
pub async fn replay_messages(
    broker_cfg: &BrokerConfig,
    request: &ReplayRequest,
) -> anyhow::Result<ReplayReport> {
    in_session!(broker_cfg, "dlq replay", |session| async {
        let mut report = ReplayReport {
            dlq: broker_cfg.dlq.clone(),
            queue: broker_cfg.queue.clone(),
            dry_run: request.dry_run,
            reason: request.reason.clone(),
            limit: request.limit,
            ..ReplayReport::default()
        };
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(report);
        };
        if !request.dry_run {
            ensure_inbound_queue(&session, broker_cfg).await?;
        }
        let mut chooser = Chooser {
            request,
            chosen: Vec::new(),
            rotated: 0,
        };
        let done = pass(&session, broker_cfg, depth, &mut chooser).await;
        report.matched = chooser.chosen.len() as u64;
        report.moved = u64::from(done.replayed);
        report.kept = u64::from(done.rotated);
        report.messages = chooser.chosen;
        report.error = done.error.map(|e| format!("{e:#}"));
        Ok(report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

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

    #[test]
    fn replay_drops_the_broker_history_and_keeps_done_targets() {
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
                ("tenant", text("acme")),
            ]));
        let out = replayed_properties(&props);
        let h = out.headers().as_ref().unwrap();
        let mut keys: Vec<_> = h.inner().keys().map(|k| k.as_str().to_owned()).collect();
        keys.sort();
        assert_eq!(keys, ["tenant", "x-bridge-done-targets"]);
        assert_eq!(out.message_id().as_ref().unwrap().as_str(), "m");
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
        assert_eq!(out.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(out.message_id(), props.message_id());
        assert_eq!(out.correlation_id(), props.correlation_id());
        assert_eq!(out.kind(), props.kind());
        assert_eq!(out.content_type(), props.content_type());
        assert_eq!(out.timestamp(), &Some(7));
        let h = out.headers().as_ref().unwrap();
        assert!(h.contains_key("x-bridge-reason") && h.contains_key("x-death"));
        assert!(!h.contains_key("x-delivery-count"));
    }
}
