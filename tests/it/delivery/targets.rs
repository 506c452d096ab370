//! Targets as configuration: any number of them, each called at once and
//! retried on its own, named in the DLQ headers, the metrics and the log line;
//! a replay after a target was added reaches only the new one.

use std::time::Duration;

use fanout_bridge::metrics::Outcome;
use lapin::BasicProperties;

use crate::helpers::*;

fn s(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// Fast retries and the given targets, each `(name, api)` at its own URL.
fn target_settings(targets: &[(&str, &FakeApi)]) -> Vec<(String, String)> {
    let names: Vec<&str> = targets.iter().map(|(n, _)| *n).collect();
    let mut out = vec![
        s("BRIDGE_TARGETS", &names.join(",")),
        s("BRIDGE_RETRY_BACKOFF_MS", "20"),
        s("BRIDGE_HTTP_TIMEOUT_MS", "2000"),
        s("BRIDGE_SHUTDOWN_GRACE_MS", "5000"),
    ];
    for (name, api) in targets {
        let key = name.to_uppercase().replace('-', "_");
        out.push(s(&format!("BRIDGE_TARGET_{key}_URL"), &api.url()));
    }
    out
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

#[tokio::test]
async fn three_targets_one_failing_is_named_in_the_dlq() {
    let broker = Broker::new("three").await;
    let (crm, billing, audit) = (
        FakeApi::start().await,
        FakeApi::start().await,
        FakeApi::start().await,
    );
    for api in [&crm, &billing, &audit] {
        api.always(Reply::ok().delay(Duration::from_millis(300)));
    }
    billing.always(Reply::status(503).delay(Duration::from_millis(300)));
    let mut settings =
        target_settings(&[("crm", &crm), ("billing", &billing), ("audit-2", &audit)]);
    settings.push(s("BRIDGE_TARGET_AUDIT_2_BODY", "envelope"));
    settings.push(s("BRIDGE_TARGET_CRM_TOKEN", "crm-secret"));
    settings.push(s("BRIDGE_MAX_ATTEMPTS", "2"));
    let worker = Worker::start(&broker, settings).await;

    let props = BasicProperties::default().with_message_id("three-1".into());
    broker.publish(b" {\"user\":7} ", props).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::DeadLettered), 1);

    // Every target got the message once (billing twice: it was retried),
    // each in its own shape, and the first attempts overlapped.
    assert_eq!((crm.count(), billing.count(), audit.count()), (1, 2, 1));
    let (c, b, a) = (
        &crm.received()[0],
        &billing.received()[0],
        &audit.received()[0],
    );
    assert_eq!(&c.body[..], b" {\"user\":7} ", "raw by default");
    assert_eq!(&b.body[..], b" {\"user\":7} ");
    assert_eq!(
        std::str::from_utf8(&a.body).unwrap(),
        r#"{"event":"user.registered","data":{"user":7},"message_id":"three-1"}"#
    );
    assert_eq!(
        c.header("authorization").as_deref(),
        Some("Bearer crm-secret")
    );
    assert_eq!(b.header("authorization"), None);
    for r in [c, b, a] {
        assert_eq!(r.header("idempotency-key").as_deref(), Some("three-1"));
    }
    let latest_start = [c.started, b.started, a.started].into_iter().max().unwrap();
    let first_answer = [c.answered, b.answered, a.answered]
        .into_iter()
        .min()
        .unwrap();
    assert!(
        latest_start < first_answer,
        "the calls ran one after another"
    );

    let d = &broker.drain(&broker.dlq).await[0];
    assert_eq!(
        header_text(d, "x-bridge-reason").as_deref(),
        Some("api_failed")
    );
    assert_eq!(
        header_text(d, "x-bridge-failed-targets").as_deref(),
        Some("billing")
    );
    assert_eq!(
        header_text(d, "x-bridge-done-targets").as_deref(),
        Some("crm,audit-2")
    );
    assert_eq!(
        header_text(d, "x-bridge-error").as_deref(),
        Some("billing: HTTP 503 after 2 attempts")
    );
    assert_eq!(header_int(d, "x-bridge-attempts"), Some(2));

    let (_, text) = http_get(worker.ops, "/metrics").await;
    for (series, value) in [
        (
            "bridge_api_requests_total{result=\"success\",target=\"crm\"}",
            1.0,
        ),
        (
            "bridge_api_requests_total{result=\"transient_error\",target=\"billing\"}",
            2.0,
        ),
        (
            "bridge_api_requests_total{result=\"success\",target=\"audit-2\"}",
            1.0,
        ),
        (
            "bridge_api_request_duration_seconds_count{target=\"billing\"}",
            2.0,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(
        !text.contains("target=\"user-management\""),
        "only configured targets have series"
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_single_target_is_enough() {
    let broker = Broker::new("single").await;
    let solo = FakeApi::start().await;
    let worker = Worker::start(&broker, target_settings(&[("solo", &solo)])).await;

    broker.publish(b"[1,2]", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!(solo.count(), 1);
    assert_eq!(&solo.received()[0].body[..], b"[1,2]");

    solo.then(Reply::status(422));
    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(2).await;
    worker.stop().await;
    let d = &broker.drain(&broker.dlq).await[0];
    assert_eq!(
        header_text(d, "x-bridge-failed-targets").as_deref(),
        Some("solo")
    );
    assert_eq!(header_text(d, "x-bridge-done-targets").as_deref(), Some(""));
}

#[tokio::test]
async fn a_replay_after_a_target_was_added_reaches_only_the_new_one() {
    let broker = Broker::new("added").await;
    let (user, log, crm) = (
        FakeApi::start().await,
        FakeApi::start().await,
        FakeApi::start().await,
    );
    // Before: the two default targets; logging fails, so the DLQ copy says
    // user-management accepted it.
    let before = Worker::start(&broker, fast_settings(&user, &log)).await;
    log.then(Reply::status(400));
    let props = BasicProperties::default().with_message_id("added-1".into());
    broker.publish(b"{\"a\":1}", props).await;
    before.wait_settled(1).await;
    before.stop().await;
    let d = &broker.drain(&broker.dlq).await[0];
    let done = header_text(d, "x-bridge-done-targets").unwrap();
    assert_eq!(done, "user-management");

    // After: crm is added. The replayed message (done: user-management,
    // and say logging accepted it on a later try) goes to crm alone.
    let mut settings = fast_settings(&user, &log);
    settings.push(s("BRIDGE_TARGETS", "user-management,logging,crm"));
    settings.push(s("BRIDGE_TARGET_CRM_URL", &crm.url()));
    let after = Worker::start(&broker, settings).await;
    let props = BasicProperties::default()
        .with_message_id("added-1".into())
        .with_headers(headers(&[(
            "x-bridge-done-targets",
            "user-management,logging",
        )]));
    broker.publish(b"{\"a\":1}", props).await;
    after.wait_settled(1).await;
    after.stop().await;

    assert_eq!(crm.count(), 1);
    assert_eq!(
        crm.received()[0].header("idempotency-key").as_deref(),
        Some("added-1")
    );
    assert_eq!(user.count(), 1, "user-management only from the first run");
    assert_eq!(log.count(), 1, "logging only from the first run");
    assert_eq!(broker.depth(&broker.dlq).await, 0);
    assert_eq!(broker.depth(&broker.queue).await, 0);
}

#[tokio::test]
async fn an_unconfigured_done_name_is_ignored_with_a_warning() {
    let broker = Broker::new("unknown").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // A process, to read its log.
    let mut settings = fast_settings(&user, &log);
    settings.push(s("BRIDGE_LOG_FORMAT", "json"));
    let process = Process::start(&broker, settings).await;

    let props = BasicProperties::default()
        .with_message_id("unknown-1".into())
        .with_headers(headers(&[(
            "x-bridge-done-targets",
            "retired,user-management",
        )]));
    broker.publish(b"{}", props).await;
    wait_until("logging called", Duration::from_secs(10), || {
        let n = log.count();
        async move { n == 1 }
    })
    .await;
    // Logging fails the next one too, so the record of what is done shows.
    log.then(Reply::status(400));
    let props = BasicProperties::default()
        .with_message_id("unknown-2".into())
        .with_headers(headers(&[("x-bridge-done-targets", "retired")]));
    broker.publish(b"{}", props).await;
    broker
        .wait_depth(&broker.dlq, 1, Duration::from_secs(10))
        .await;

    let text = process.log_text();
    assert!(
        text.contains("not configured targets") && text.contains("retired"),
        "{text}"
    );
    assert!(
        text.contains("\"latency_ms\":\"user-management=done logging="),
        "{text}"
    );
    assert_eq!(user.count(), 1, "only unknown-2 needed user-management");
    let d = &broker.drain(&broker.dlq).await[0];
    assert_eq!(
        header_text(d, "x-bridge-done-targets").as_deref(),
        Some("user-management,retired"),
        "the record keeps what accepted it, configured or not"
    );
    assert_eq!(
        header_text(d, "x-bridge-failed-targets").as_deref(),
        Some("logging")
    );
}

#[tokio::test]
async fn both_spellings_of_one_setting_exit_2_naming_both() {
    let vars = vec![
        s("BRIDGE_USER_API_URL", "http://127.0.0.1:9/users"),
        s("BRIDGE_TARGET_USER_MANAGEMENT_URL", "http://127.0.0.1:9/u"),
        s("BRIDGE_LOG_API_URL", "http://127.0.0.1:9/logs"),
        s("BRIDGE_LOG_API_TOKEN", "t1"),
        s("BRIDGE_TARGET_LOGGING_TOKEN", "t2"),
    ];
    let (code, _, stderr) = run_bin(&["run"], &vars, b"").await;
    assert_eq!(code, 2, "{stderr}");
    for name in [
        "BRIDGE_USER_API_URL",
        "BRIDGE_TARGET_USER_MANAGEMENT_URL",
        "BRIDGE_LOG_API_TOKEN",
        "BRIDGE_TARGET_LOGGING_TOKEN",
    ] {
        assert!(stderr.contains(name), "{name} not named in: {stderr}");
    }
    assert!(!stderr.contains("t1") && !stderr.contains("t2"), "{stderr}");
}

#[tokio::test]
async fn bad_target_lists_exit_2() {
    for (list, needle) in [
        ("Billing", "BRIDGE_TARGETS"),
        ("crm,crm", "listed twice"),
        ("crm,,audit", "BRIDGE_TARGETS"),
        ("crm_2", "BRIDGE_TARGETS"),
        ("crm", "BRIDGE_TARGET_CRM_URL"),
    ] {
        let vars = vec![s("BRIDGE_TARGETS", list)];
        let (code, _, stderr) = run_bin(&["run"], &vars, b"").await;
        assert_eq!(code, 2, "{list}: {stderr}");
        assert!(stderr.contains(needle), "{list}: {needle} not in {stderr}");
    }
}
