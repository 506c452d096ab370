//! Reading the DLQ is safe to interrupt: a closed pipe, SIGINT, SIGTERM or
//! `kill -9` at any moment loses no message, on a quorum DLQ with a small
//! delivery limit; a graceful interruption hands nothing back (no message
//! gains an `x-delivery-count`); memory is bounded by bytes.

use std::{
    collections::{HashMap, HashSet},
    process::Stdio,
    time::Duration,
};

use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

/// A quorum DLQ whose messages the broker drops after `limit` hand-backs,
/// as RabbitMQ 4's default of 20 does after a few more.
fn quorum_with_limit(limit: i64) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args.insert(
        ShortString::from("x-delivery-limit"),
        AMQPValue::LongLongInt(limit),
    );
    args
}

async fn fill_dlq(broker: &Broker, n: usize) -> HashSet<String> {
    let mut ids = HashSet::new();
    for i in 0..n {
        let id = format!("m-{i}");
        let props = BasicProperties::default()
            .with_message_id(id.clone().into())
            .with_headers(headers(&[("x-bridge-reason", "api_failed")]));
        broker
            .publish_to(&broker.dlq, format!("{{\"i\":{i}}}").as_bytes(), props)
            .await;
        ids.insert(id);
    }
    ids
}

/// Every message of the DLQ by id, with the broker's delivery count (0 when
/// it never went back), read without handing anything back. A killed reader
/// may leave a duplicate (its copy was stored, the original came back).
async fn contents(broker: &Broker, duplicates_allowed: bool) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for d in broker.drain(&broker.dlq).await {
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        let count = header_int(&d, "x-delivery-count").unwrap_or(0);
        assert!(
            out.insert(id.clone(), count).is_none() || duplicates_allowed,
            "{id} is in the DLQ twice"
        );
    }
    out
}

fn command(args: &[&str], vars: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits until the DLQ shows a pass under way: messages taken and not yet
/// settled make the ready count drop below the total.
async fn wait_reading(broker: &Broker, total: u32) {
    wait_until(
        "the command is reading the DLQ",
        Duration::from_secs(20),
        || async { broker.depth(&broker.dlq).await < total },
    )
    .await;
}

#[tokio::test]
async fn interrupting_dlq_reads_hands_nothing_back_and_loses_nothing() {
    let broker = Broker::new("dlq-interrupt").await;
    broker.declare_with(&broker.dlq, quorum_with_limit(2)).await;
    let ids = fill_dlq(&broker, 300).await;
    let v = broker.vars();
    let mut interrupted = 0;

    // `dlq peek | head -n 1`: the reader goes away after one line.
    for _ in 0..3 {
        let mut child = command(&["dlq", "peek", "--limit", "300"], &v)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().expect("one line");
        assert!(first.contains("\"message_id\""), "{first}");
        drop(lines);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("peek ends once its reader is gone")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // Ctrl-C and SIGTERM in the middle of a pass.
    for signal in ["INT", "TERM", "INT", "TERM"] {
        let child = command(&["dlq", "stats"], &v).spawn().unwrap();
        let pid = child.id().unwrap();
        wait_reading(&broker, 300).await;
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("stats ends after the signal")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(1) => {
                assert!(stderr.contains("interrupted"), "{stderr}");
                interrupted += 1;
            }
            // It finished before the signal arrived.
            Some(0) => {}
            other => panic!("stats exited {other:?} on SIG{signal}: {stderr}"),
        }
    }
    assert!(
        interrupted > 0,
        "no pass was interrupted: the test proved nothing"
    );

    let left = contents(&broker, false).await;
    let missing: Vec<_> = ids.iter().filter(|id| !left.contains_key(*id)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let handed_back: Vec<_> = left.iter().filter(|(_, n)| **n > 0).collect();
    assert!(
        handed_back.is_empty(),
        "handed back (each spent a delivery attempt): {handed_back:?}"
    );
}

/// A `kill -9` hands back what the reader held (at most one window), and a
/// quorum queue drops a message handed back past its limit. With the policy
/// the README prescribes (the DLQ's own dead-letter target, a parking queue)
/// nothing is lost even with a limit of 1, where every hand-back is past it.
#[tokio::test]
async fn kill_9_during_dlq_reads_loses_nothing_with_the_parking_policy() {
    let broker = Broker::new("dlq-kill9").await;
    let parked = format!("{}.parked", broker.dlq);
    broker.declare_with(&broker.dlq, quorum_with_limit(1)).await;
    broker.declare_with(&parked, FieldTable::default()).await;
    let policy = DeliveryLimit::definition(
        &[&broker.dlq],
        &format!(r#"{{"dead-letter-exchange":"","dead-letter-routing-key":"{parked}"}}"#),
    );
    policy.wait_applied(&broker.dlq).await;
    // The parking queue goes too, even when the test fails.
    let _parked = QueueGuard(parked.clone());
    let ids = fill_dlq(&broker, 300).await;
    let v = broker.vars();
    // Killed at moments spread over a pass: while the first messages are
    // held, and deeper into it. No moment may cost a message.
    for (round, after_ms) in [0u64, 40, 80, 120, 0, 160].into_iter().enumerate() {
        let args: &[&str] = if round % 2 == 0 {
            &["dlq", "stats"]
        } else {
            &["dlq", "peek", "--limit", "300"]
        };
        let before = broker.depth(&broker.dlq).await + broker.depth(&parked).await;
        let mut child = command(args, &v).spawn().unwrap();
        wait_reading(&broker, broker.depth(&broker.dlq).await).await;
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        child.start_kill().unwrap();
        let _ = child.wait().await;
        // What the killed reader held is back, or parked (perhaps with a
        // duplicate: its copy was stored, its ack was not).
        wait_until(
            "the killed reader's messages are back",
            Duration::from_secs(20),
            || async { broker.depth(&broker.dlq).await + broker.depth(&parked).await >= before },
        )
        .await;
    }
    let mut left = contents(&broker, true).await;
    let mut handed_back = left.values().filter(|n| **n > 0).count();
    for d in broker.drain(&parked).await {
        let id = d
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str()
            .to_owned();
        left.insert(id, 2);
        handed_back += 1;
    }
    broker.delete(&parked).await;
    let missing: Vec<_> = ids.iter().filter(|id| !left.contains_key(*id)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    // A later round's rotation resets the count of what an earlier kill
    // handed back, so how many were handed back is only a hint here.
    eprintln!("handed back and still marked, or parked: {handed_back}");
}

/// Peak resident memory of a process, polled until it exits.
async fn peak_rss_kib(child: &mut tokio::process::Child) -> u64 {
    let pid = child.id().unwrap();
    let mut peak = 0;
    loop {
        if let Some(bytes) = peak_rss(pid) {
            peak = peak.max(bytes as u64 / 1024);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return peak;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn reading_a_dlq_of_big_messages_takes_memory_bounded_by_bytes() {
    let broker = Broker::new("dlq-big").await;
    broker.declare().await;
    let body = {
        let mut b = b"{\"pad\":\"".to_vec();
        b.resize(8 * 1024 * 1024 - 2, b'x');
        b.extend_from_slice(b"\"}");
        b
    };
    for i in 0..24 {
        let props = BasicProperties::default()
            .with_message_id(format!("big-{i}").into())
            .with_headers(headers(&[("x-bridge-reason", "api_failed")]));
        broker.publish_to(&broker.dlq, &body, props).await;
    }
    let mut child = command(&["dlq", "stats", "--format", "json"], &broker.vars())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let peak = peak_rss_kib(&mut child).await;
    let status = child.wait().await.unwrap();
    assert!(status.success());
    // 24 bodies of 8 MiB are 192 MiB; a pass holds a window of 8 MiB.
    assert!(peak < 120 * 1024, "peak RSS {} MiB", peak / 1024);
    broker
        .wait_depth(&broker.dlq, 24, Duration::from_secs(20))
        .await;
    let left = broker.drain(&broker.dlq).await;
    assert_eq!(left.len(), 24);
    assert!(left.iter().all(|d| d.data == body));
}

/// A replay whose copies the inbound queue refuses (full, `reject-publish`)
/// keeps the messages in the DLQ, in order, without handing any back.
#[tokio::test]
async fn a_refused_replay_keeps_the_messages_in_the_dlq_without_spending_attempts() {
    let broker = Broker::new("dlq-refused").await;
    broker.declare_with(&broker.dlq, quorum_with_limit(1)).await;
    let mut full = FieldTable::default();
    full.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    full.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    broker.declare_with(&broker.queue, full).await;
    let ids = fill_dlq(&broker, 5).await;
    let (code, stdout, stderr) =
        run_bin(&["dlq", "replay", "--format", "json"], &broker.vars(), b"").await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["moved"], 0, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("stay in the DLQ"),
        "{report}"
    );
    let left = broker.drain(&broker.dlq).await;
    let order: Vec<_> = left
        .iter()
        .map(|d| {
            d.properties
                .message_id()
                .as_ref()
                .unwrap()
                .as_str()
                .to_owned()
        })
        .collect();
    assert_eq!(order, (0..5).map(|i| format!("m-{i}")).collect::<Vec<_>>());
    assert_eq!(order.iter().cloned().collect::<HashSet<_>>(), ids);
    for d in &left {
        assert_eq!(
            header_int(d, "x-delivery-count").unwrap_or(0),
            0,
            "handed back"
        );
    }
}

/// Deletes a queue of the test's when dropped.
struct QueueGuard(String);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_queue", "-p", "/", &self.0])
            .output();
    }
}
