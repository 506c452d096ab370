//! Copies that do not make it, part way through a DLQ command: a message
//! leaves the DLQ only when its own copy is stored (`publish`:
//! publish_returns.rs). lapin hands a `basic.return` to whichever confirm it
//! resolves next, so pipelined commands used to remove (or report as sent)
//! the wrong ones: the count was right, which ones was not.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Connection, ConnectionProperties,
};
use serde_json::Value;

use crate::helpers::*;

/// (message_id, body) of each message taken.
pub type Taken = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Takes every message of a queue as it arrives (no ack), on a connection of
/// its own, and keeps their message ids and bodies.
pub struct Taker {
    conn: Connection,
    pub taken: Taken,
}

impl Taker {
    pub async fn start(queue: &str) -> Taker {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "taker".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let taken: Taken = Arc::default();
        let into = Arc::clone(&taken);
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let id = d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                into.lock().unwrap().push((id, d.data));
            }
        });
        Taker { conn, taken }
    }

    pub fn len(&self) -> usize {
        self.taken.lock().unwrap().len()
    }

    pub fn ids(&self) -> Vec<String> {
        self.taken
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Deletes the queue at a moment it is empty (everything routed to it so
    /// far was taken), so that the deletion itself loses nothing: whatever
    /// is not taken was never stored.
    pub async fn delete_queue_when_empty(&self, queue: &str) {
        wait_until(
            "the queue deleted while empty",
            Duration::from_secs(30),
            || async {
                // A refused delete closes its channel: one channel per try.
                let ch = self.conn.create_channel().await.unwrap();
                ch.queue_delete(
                    queue.into(),
                    QueueDeleteOptions {
                        if_empty: true,
                        ..Default::default()
                    },
                )
                .await
                .is_ok()
            },
        )
        .await;
        // Deliveries already on their way arrive before the cancel.
        let mut last = usize::MAX;
        while self.len() != last {
            last = self.len();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Puts `ids` into `queue` (pipelined, all confirmed), as dead-lettered
/// messages with reason `api_failed`, or `invalid_payload` for an id ending
/// in `-x`.
async fn fill(broker: &Broker, queue: &str, ids: &[String]) {
    let mut confirms = Vec::new();
    for id in ids {
        let reason = if id.ends_with("-x") {
            "invalid_payload"
        } else {
            "api_failed"
        };
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.as_str().into())
            .with_headers(headers(&[("x-bridge-reason", reason)]));
        let body = format!("{{\"id\":\"{id}\"}}");
        confirms.push(
            broker
                .channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body.as_bytes(),
                    props,
                )
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        let c = c.await.unwrap();
        assert!(c.is_ack() && c.take_message().is_none(), "fill not stored");
    }
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn ids_of(deliveries: &[lapin::message::Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.properties.message_id().as_ref().unwrap().to_string())
        .collect()
}

/// How many ids of `all` are in neither `a` nor `b`, and how many in both.
fn compare(all: &[String], a: &[String], b: &[String]) -> (usize, usize) {
    let a: HashSet<&String> = a.iter().collect();
    let b: HashSet<&String> = b.iter().collect();
    let neither = all
        .iter()
        .filter(|id| !a.contains(id) && !b.contains(id))
        .count();
    let both = all
        .iter()
        .filter(|id| a.contains(id) && b.contains(id))
        .count();
    (neither, both)
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[tokio::test]
async fn replay_while_the_inbound_queue_is_deleted_loses_nothing() {
    let broker = Broker::new("retdel").await;
    broker.declare().await;
    let all = numbered("rd", 3000);
    fill(&broker, &broker.dlq, &all).await;
    let taker = Taker::start(&broker.queue).await;

    let vars = broker.vars();
    let replay =
        tokio::spawn(
            async move { run_bin(&["dlq", "replay", "--format", "json"], &vars, b"").await },
        );
    wait_until(
        "some messages replayed",
        Duration::from_secs(30),
        || async { taker.len() >= 300 },
    )
    .await;
    taker.delete_queue_when_empty(&broker.queue).await;
    let (code, stdout, stderr) = replay.await.unwrap();

    assert_eq!(code, 1, "the replay stops when copies come back: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(report["error"].is_string(), "{stdout}");
    let moved = report["moved"].as_u64().unwrap() as usize;
    assert!(moved < all.len(), "the queue went part way: {stdout}");
    let taken = taker.ids();
    let left = ids_of(&broker.drain(&broker.dlq).await);
    // A copy can be confirmed into the inbound queue just as it is deleted
    // (the broker acks a publish whose queue went away under it): that one
    // is neither taken nor in the DLQ, and the replay counted it as moved.
    // Anything else missing would be a loss. A returned copy taken for
    // another one would show as a pair: one message in both places (its
    // copy stored, its original kept) and one in neither (its copy
    // returned, its original removed).
    let (lost, doubled) = compare(&all, &taken, &left);
    assert_eq!(doubled, 0, "a copy stored while its original stayed");
    assert_eq!(
        lost,
        moved - taken.len(),
        "missing, other than copies confirmed into the queue being deleted"
    );
}

#[tokio::test]
async fn replay_by_reason_while_the_inbound_queue_is_deleted_loses_nothing() {
    let broker = Broker::new("retdelr").await;
    broker.declare().await;
    // Every other message is replayed, the others go round to the DLQ's
    // tail: once the inbound queue is gone, returned and stored copies
    // alternate in one batch.
    let all: Vec<String> = (0..3000)
        .map(|i| format!("rr-{i}{}", if i % 2 == 1 { "-x" } else { "" }))
        .collect();
    fill(&broker, &broker.dlq, &all).await;
    let taker = Taker::start(&broker.queue).await;

    let vars = broker.vars();
    let replay = tokio::spawn(async move {
        let args = [
            "dlq",
            "replay",
            "--reason",
            "api_failed",
            "--format",
            "json",
        ];
        run_bin(&args, &vars, b"").await
    });
    wait_until(
        "some messages replayed",
        Duration::from_secs(30),
        || async { taker.len() >= 200 },
    )
    .await;
    taker.delete_queue_when_empty(&broker.queue).await;
    let (code, stdout, stderr) = replay.await.unwrap();

    assert_eq!(code, 1, "the replay stops when copies come back: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    let moved = report["moved"].as_u64().unwrap() as usize;
    assert!(moved < all.len() / 2, "the queue went part way: {stdout}");
    let taken = taker.ids();
    let left = ids_of(&broker.drain(&broker.dlq).await);
    // As above: a pair of one doubled and one missing is a return taken for
    // another copy's; a copy to the tail counted as returned doubles its
    // message in the DLQ.
    let (lost, doubled) = compare(&all, &taken, &left);
    assert_eq!(doubled, 0, "a copy stored while its original stayed");
    assert_eq!(lost, moved - taken.len(), "missing: {lost}");
    let unique_left: HashSet<&String> = left.iter().collect();
    assert_eq!(
        unique_left.len(),
        left.len(),
        "a message twice in the DLQ: its copy to the tail counted as returned"
    );
}

#[tokio::test]
async fn replay_to_a_full_inbound_queue_keeps_the_rest_in_the_dlq() {
    let broker = Broker::new("retfull").await;
    broker.declare().await;
    // The inbound queue as an operator may cap it: past 300 messages the
    // broker nacks a publish.
    recreate_capped(&broker, &broker.queue, 300).await;
    let all = numbered("rf", 1000);
    fill(&broker, &broker.dlq, &all).await;

    let (code, stdout, stderr) =
        run_bin(&["dlq", "replay", "--format", "json"], &broker.vars(), b"").await;
    assert_eq!(code, 1, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["moved"], 300, "{stdout}");
    let moved = ids_of(&broker.drain(&broker.queue).await);
    let left = ids_of(&broker.drain(&broker.dlq).await);
    assert_eq!(moved.len(), 300);
    assert_eq!(left.len(), 700, "the nacked ones stay in the DLQ");
    assert_eq!(compare(&all, &moved, &left), (0, 0), "(lost, doubled)");
}

#[tokio::test]
async fn stats_over_a_dlq_that_refuses_copies_loses_nothing() {
    let broker = Broker::new("retstats").await;
    broker.declare().await;
    // A capped DLQ (reject-publish), full: every message read frees a place
    // that a writer races the copy for, so some copies to the tail are
    // nacked (the broker counts only ready messages against the cap).
    recreate_capped(&broker, &broker.dlq, 600).await;
    let all = numbered("rs", 600);
    fill(&broker, &broker.dlq, &all).await;

    let writer = Broker::new("retstats.writer").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dlq, stopped) = (broker.dlq.clone(), Arc::clone(&stop));
    let filling = tokio::spawn(async move {
        let mut n = 0;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let mut confirms = Vec::new();
            for _ in 0..200 {
                n += 1;
                let props = BasicProperties::default().with_message_id(format!("w-{n}").into());
                let send = writer.channel.basic_publish(
                    "".into(),
                    dlq.as_str().into(),
                    BasicPublishOptions::default(),
                    b"{}",
                    props,
                );
                confirms.push(send.await.unwrap());
            }
            for c in confirms {
                let _ = c.await;
            }
        }
    });
    let (code, _, stderr) =
        run_bin(&["dlq", "stats", "--format", "json"], &broker.vars(), b"").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    filling.await.unwrap();
    assert_eq!(code, 1, "a copy was refused: {stderr}");
    let left: Vec<String> = ids_of(&broker.drain(&broker.dlq).await)
        .into_iter()
        .filter(|id| id.starts_with("rs-"))
        .collect();
    assert_eq!(compare(&all, &left, &[]), (0, 0), "(lost, doubled)");
    assert_eq!(left.len(), all.len(), "none doubled");
}

/// Deletes `queue` and declares it again capped at `max` messages, past
/// which the broker nacks a publish (`reject-publish`).
async fn recreate_capped(broker: &Broker, queue: &str, max: i32) {
    broker.delete(queue).await;
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(max));
    args.insert(ShortString::from("x-overflow"), text("reject-publish"));
    broker.declare_with(queue, args).await;
}
