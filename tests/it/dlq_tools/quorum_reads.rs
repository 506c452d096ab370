//! Quorum queues and the broker's delivery limit: reading the DLQ spends no
//! delivery attempt, and a message the broker dead-lettered itself is
//! reported as `delivery_limit` and replayed like any other.

use std::time::Duration;

use lapin::{
    options::{BasicGetOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};
use serde_json::Value;

use crate::helpers::*;

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}

/// The inbound queue as the worker declares it with `BRIDGE_QUEUE_TYPE=quorum`
/// (built here: topology.rs is the broker code's): the DLQ is its
/// dead-letter target, at least once.
fn quorum_inbound_args(dlq: &str) -> FieldTable {
    let mut args = quorum_args();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text(dlq));
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    args.insert("x-overflow".into(), text("reject-publish"));
    args
}

/// What the tools used to do: get, then hand back. Returns false once the
/// queue has nothing to give.
async fn get_and_requeue(broker: &Broker, queue: &str) -> bool {
    match broker
        .channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        Some(m) => {
            m.delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            true
        }
        None => false,
    }
}

/// Waits until a policy is in force: a message in `probe`, returned more
/// often than the limit, is gone. This also proves that the old way of
/// reading (get, then requeue) loses messages under this policy.
async fn wait_policy_in_force(broker: &Broker, probe: &str) {
    wait_until(
        "the delivery-limit policy drops a requeued message",
        Duration::from_secs(30),
        || async {
            if broker.depth(probe).await == 0 {
                broker
                    .publish_to(probe, b"{\"probe\":true}", BasicProperties::default())
                    .await;
            }
            for _ in 0..3 {
                get_and_requeue(broker, probe).await;
            }
            broker.depth(probe).await == 0
        },
    )
    .await;
}

fn reason_headers(reason: &str) -> FieldTable {
    headers(&[
        ("x-bridge-reason", reason),
        ("x-bridge-done-targets", "user-management"),
    ])
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["message_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn reading_a_quorum_dlq_spends_no_delivery_attempt_and_keeps_its_order() {
    let broker = Broker::new("qread").await;
    // A queue of its own (deleted with it) to see the policy bite.
    let probe = Broker::new("qread.probe").await;
    broker.declare_with(&broker.dlq, quorum_args()).await;
    probe.declare_with(&probe.queue, quorum_args()).await;
    let _policy = DeliveryLimit::set(&[&broker.dlq, &probe.queue], 2);
    wait_policy_in_force(&probe, &probe.queue).await;

    let expected: Vec<String> = (0..6).map(|i| format!("q-{i}")).collect();
    for (i, id) in expected.iter().enumerate() {
        let reason = if i % 3 == 2 {
            "invalid_payload"
        } else {
            "api_failed"
        };
        let props = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_correlation_id(format!("c-{i}").as_str().into())
            .with_headers(reason_headers(reason));
        broker
            .publish_to(&broker.dlq, format!("{{\"i\":{i}}}").as_bytes(), props)
            .await;
    }

    let mut v = broker.vars();
    v.push(("BRIDGE_QUEUE_TYPE".into(), "quorum".into()));
    // Five rounds of every reading command: with the old get + requeue, the
    // first three reads already emptied the DLQ.
    for round in 0..5 {
        let (code, stdout, stderr) = run_bin(&["dlq", "stats", "--format", "json"], &v, b"").await;
        assert_eq!(code, 0, "round {round}: {stderr}");
        let stats: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(stats["depth"], 6, "round {round}: {stdout}");
        assert_eq!(stats["reasons"]["api_failed"], 4, "{stdout}");
        assert_eq!(stats["reasons"]["invalid_payload"], 2, "{stdout}");

        let (code, stdout, stderr) = run_bin(&["dlq", "peek", "--limit", "100"], &v, b"").await;
        assert_eq!(code, 0, "round {round}: {stderr}");
        let lines = json_lines(&stdout);
        assert_eq!(
            ids(&lines),
            expected,
            "round {round}: a full read keeps the order"
        );
        assert_eq!(lines[0]["reason"], "api_failed");
        assert_eq!(lines[0]["correlation_id"], "c-0");

        let (code, stdout, stderr) =
            run_bin(&["dlq", "replay", "--dry-run", "--format", "json"], &v, b"").await;
        assert_eq!(code, 0, "round {round}: {stderr}");
        let report: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(report["dry_run"], true);
        assert_eq!(report["matched"], 6, "{stdout}");
        assert_eq!(report["moved"], 0, "{stdout}");
        assert_eq!(broker.depth(&broker.dlq).await, 6, "round {round}");
    }
    assert_eq!(
        broker.depth(&broker.queue).await,
        0,
        "a dry run moves nothing"
    );

    // A partial read moves what it read to the tail.
    let (code, stdout, _) = run_bin(&["dlq", "peek", "--limit", "2"], &v, b"").await;
    assert_eq!(code, 0);
    assert_eq!(ids(&json_lines(&stdout)), expected[..2]);
    let (_, stdout, _) = run_bin(&["dlq", "peek", "--limit", "6"], &v, b"").await;
    let rotated: Vec<String> = expected[2..]
        .iter()
        .chain(&expected[..2])
        .cloned()
        .collect();
    assert_eq!(ids(&json_lines(&stdout)), rotated);
    // A dry run with a limit still goes round the whole DLQ: the order stays.
    let (code, stdout, _) = run_bin(&["dlq", "replay", "--dry-run", "--limit", "1"], &v, b"").await;
    assert_eq!(code, 0);
    assert!(stdout.contains("would replay message_id=q-2"), "{stdout}");
    assert!(
        stdout.contains("dry run: 1 messages would be replayed"),
        "{stdout}"
    );

    let left = broker.drain(&broker.dlq).await;
    let left_ids: Vec<String> = left
        .iter()
        .map(|d| d.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(left_ids, rotated, "every message is still there, in order");
    for d in &left {
        assert_eq!(
            header_text(d, "x-bridge-done-targets").as_deref(),
            Some("user-management"),
            "headers survive the rotations"
        );
        assert!(d.properties.correlation_id().is_some());
    }
}

#[tokio::test]
async fn a_message_past_the_delivery_limit_is_reported_and_replayed() {
    let broker = Broker::new("qlimit").await;
    broker.declare_with(&broker.dlq, quorum_args()).await;
    broker
        .declare_with(&broker.queue, quorum_inbound_args(&broker.dlq))
        .await;
    let _policy = DeliveryLimit::set(&[&broker.queue], 2);

    // A consumer that keeps giving the message back, until the broker gives
    // up on it and dead-letters it into the DLQ. (The policy may take a
    // moment to apply: a fresh message each time the queue is empty.)
    let props = BasicProperties::default()
        .with_message_id("limit-1".into())
        .with_headers(headers(&[
            ("x-bridge-done-targets", "logging"),
            ("tenant", "acme"),
        ]));
    broker.publish(b"{\"n\":1}", props).await;
    wait_until(
        "the broker dead-letters the message past its limit",
        Duration::from_secs(30),
        || async {
            get_and_requeue(&broker, &broker.queue).await;
            broker.depth(&broker.dlq).await == 1
        },
    )
    .await;
    assert_eq!(broker.depth(&broker.queue).await, 0);

    let mut v = broker.vars();
    v.push(("BRIDGE_QUEUE_TYPE".into(), "quorum".into()));
    let (code, stdout, stderr) = run_bin(&["dlq", "stats", "--format", "json"], &v, b"").await;
    assert_eq!(code, 0, "{stderr}");
    let stats: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(stats["depth"], 1, "{stdout}");
    assert_eq!(stats["reasons"], serde_json::json!({"delivery_limit": 1}));
    let (_, stdout, _) = run_bin(&["dlq", "stats"], &v, b"").await;
    assert!(stdout.contains("delivery_limit: 1"), "{stdout}");

    let (code, stdout, _) = run_bin(&["dlq", "peek"], &v, b"").await;
    assert_eq!(code, 0);
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["reason"], "delivery_limit");
    assert_eq!(lines[0]["message_id"], "limit-1");
    assert_eq!(lines[0]["body"], "{\"n\":1}");

    // Another reason first, to show --reason leaves it where it is.
    broker
        .publish_to(
            &broker.dlq,
            b"{\"other\":true}",
            BasicProperties::default()
                .with_message_id("other-1".into())
                .with_headers(reason_headers("api_failed")),
        )
        .await;
    let (code, stdout, stderr) = run_bin(
        &[
            "dlq",
            "replay",
            "--reason",
            "delivery_limit",
            "--format",
            "json",
        ],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["moved"], 1, "{stdout}");
    assert_eq!(report["kept"], 1, "{stdout}");
    assert_eq!(
        report["messages"],
        serde_json::json!([{"message_id": "limit-1", "reason": "delivery_limit"}])
    );

    let back = broker.drain(&broker.queue).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].data, b"{\"n\":1}");
    assert_eq!(
        back[0].properties.message_id().as_ref().unwrap().as_str(),
        "limit-1"
    );
    let h = back[0].properties.headers().as_ref().unwrap();
    assert!(
        !h.contains_key("x-death") && !h.contains_key("x-first-death-reason"),
        "a replayed message starts a new history: {h:?}"
    );
    assert_eq!(
        header_text(&back[0], "x-bridge-done-targets").as_deref(),
        Some("logging")
    );
    assert_eq!(header_text(&back[0], "tenant").as_deref(), Some("acme"));
    let left = broker.drain(&broker.dlq).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].properties.message_id().as_ref().unwrap().as_str(),
        "other-1"
    );
}
