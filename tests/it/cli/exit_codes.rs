//! The binary's contract: exit codes, configuration errors that name the
//! variable, `publish`, and the `dlq` tools end to end.

use std::time::Duration;

use lapin::{
    types::{AMQPValue, FieldTable},
    BasicProperties,
};

use crate::helpers::*;

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_variable() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![URLS[1]], "BRIDGE_USER_API_URL"),
        (
            vec![URLS[0], ("BRIDGE_LOG_API_URL", "not a url")],
            "BRIDGE_LOG_API_URL",
        ),
        (
            vec![URLS[0], URLS[1], ("BRIDGE_PREFETCH", "0")],
            "BRIDGE_PREFETCH",
        ),
        (
            vec![URLS[0], URLS[1], ("BRIDGE_PREFETCH", "abc")],
            "BRIDGE_PREFETCH",
        ),
        (
            vec![URLS[0], URLS[1], ("BRIDGE_MAX_ATTEMPTS", "0")],
            "BRIDGE_MAX_ATTEMPTS",
        ),
        (
            vec![URLS[0], URLS[1], ("BRIDGE_OUTAGE_POLICY", "retry")],
            "BRIDGE_OUTAGE_POLICY",
        ),
        (
            vec![URLS[0], URLS[1], ("BRIDGE_QUEUE_TYPE", "stream")],
            "BRIDGE_QUEUE_TYPE",
        ),
        (
            vec![URLS[0], URLS[1], ("BRIDGE_LOG_FORMAT", "xml")],
            "BRIDGE_LOG_FORMAT",
        ),
        (
            vec![URLS[0], URLS[1], ("BRIDGE_HTTP_TIMEOUT_MS", "soon")],
            "BRIDGE_HTTP_TIMEOUT_MS",
        ),
    ];
    for (pairs, name) in cases {
        let (code, _, stderr) = run_bin(&["run"], &vars(&pairs), b"").await;
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name} not named in: {stderr}");
    }
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let (code, _, _) = run_bin(&["frobnicate"], &[], b"").await;
    assert_eq!(code, 2);
    let (code, _, _) = run_bin(&["dlq", "peek", "--limit", "x"], &[], b"").await;
    assert_eq!(code, 2);
    let (code, out, _) = run_bin(&["dlq", "replay", "--help"], &[], b"").await;
    assert_eq!(code, 0);
    assert!(out.contains("Example"), "{out}");
}

#[tokio::test]
async fn a_queue_with_other_arguments_exits_2_naming_it() {
    let broker = Broker::new("mismatch").await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    broker.declare_with(&broker.queue, args).await;
    let mut v = broker.vars();
    v.extend(vars(&URLS));
    v.push((
        "BRIDGE_METRICS_ADDR".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    let (code, _, stderr) = run_bin(&["run"], &v, b"").await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&broker.queue), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn publish_reports_bad_lines_by_number_and_sends_the_rest() {
    let broker = Broker::new("publish").await;
    let input = b"{\"a\":1}\n\nnot json\n[2]\n   \n{\"b\":\n";
    let (code, stdout, stderr) = run_bin(&["publish"], &broker.vars(), input).await;
    assert_eq!(code, 1, "a bad line makes the exit code 1");
    assert!(stdout.contains("2 messages confirmed"), "{stdout}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("line 6"), "{stderr}");
    let sent = broker.drain(&broker.queue).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].data, b"{\"a\":1}");
    assert_eq!(sent[0].properties.delivery_mode(), &Some(2));
    let ids: Vec<_> = sent
        .iter()
        .map(|d| d.properties.message_id().clone().unwrap())
        .collect();
    assert_ne!(ids[0], ids[1], "each line gets a fresh message_id");

    let file = std::env::temp_dir().join(format!("{}.jsonl", broker.queue));
    std::fs::write(&file, "{\"c\":3}\n").unwrap();
    let (code, stdout, _) =
        run_bin(&["publish", file.to_str().unwrap()], &broker.vars(), b"").await;
    std::fs::remove_file(&file).unwrap();
    assert_eq!(code, 0);
    assert!(stdout.contains("1 messages confirmed"), "{stdout}");
}

#[tokio::test]
async fn dlq_stats_peek_and_replay_without_calling_the_done_api_again() {
    let broker = Broker::new("dlqtools").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    log.always(Reply::status(503));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    for i in 0..3 {
        broker
            .publish(
                format!("{{\"i\":{i}}}").as_bytes(),
                BasicProperties::default().with_message_id(format!("d-{i}").into()),
            )
            .await;
    }
    worker.wait_settled(3).await;
    broker.publish(b"oops", BasicProperties::default()).await;
    worker.wait_settled(4).await;

    let v = broker.vars();
    let (code, stdout, stderr) = run_bin(&["dlq", "stats"], &v, b"").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("depth: 4"), "{stdout}");
    assert!(stdout.contains("api_failed: 3"), "{stdout}");
    assert!(stdout.contains("invalid_payload: 1"), "{stdout}");

    let (code, stdout, _) = run_bin(&["dlq", "peek", "--limit", "2"], &v, b"").await;
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0]["body"].as_str().unwrap().starts_with("{\"i\":"),
        "{stdout}"
    );
    assert_eq!(lines[0]["headers"]["x-bridge-reason"], "api_failed");
    assert_eq!(
        lines[0]["headers"]["x-bridge-done-targets"],
        "user-management"
    );
    assert_eq!(lines[0]["headers"]["x-bridge-attempts"], 3);
    assert_eq!(broker.depth(&broker.dlq).await, 4, "peek removes nothing");
    // What peek read went to the tail: the next peek shows the other two, and
    // the two together went all the way round, so the order is the old one.
    let (code, stdout, _) = run_bin(&["dlq", "peek", "--limit", "2"], &v, b"").await;
    assert_eq!(code, 0);
    let next: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(next.len(), 2);
    assert_eq!(next[1]["body"], "oops", "{stdout}");
    assert_eq!(next[1]["reason"], "invalid_payload");

    // The logging API recovers; replay moves three messages back.
    log.always(Reply::ok());
    let user_calls_before = user.count();
    let (code, stdout, stderr) = run_bin(&["dlq", "replay", "--limit", "3"], &v, b"").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("3 messages replayed"), "{stdout}");
    wait_until("replayed messages acked", Duration::from_secs(10), || {
        let acked = worker.count(fanout_bridge::metrics::Outcome::Acked);
        async move { acked >= 3 }
    })
    .await;
    worker.stop().await;
    assert_eq!(
        user.count(),
        user_calls_before,
        "user-management had accepted them: not called again"
    );
    let logged: Vec<String> = log
        .received()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(logged.len(), 3);
    assert!(logged.iter().all(|k| k.starts_with("d-")), "{logged:?}");
    let left = broker.drain(&broker.dlq).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        header_text(&left[0], "x-bridge-reason").as_deref(),
        Some("invalid_payload")
    );
}

#[tokio::test]
async fn demo_api_answers_posts_on_any_path_and_fails_on_command() {
    let port = free_port();
    let mut ok = tokio::process::Command::new(bin())
        .args(["demo-api", "--listen", &format!("127.0.0.1:{port}")])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let fail_port = free_port();
    let mut failing = tokio::process::Command::new(bin())
        .args([
            "demo-api",
            "--listen",
            &format!("127.0.0.1:{fail_port}"),
            "--fail-rate",
            "1",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let post = |port: u16, path: &'static str| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://127.0.0.1:{port}{path}"))
                .body("{}")
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    wait_until("demo-api listens", Duration::from_secs(10), || async {
        post(port, "/users").await == 200
    })
    .await;
    assert_eq!(post(port, "/logs").await, 200);
    assert_eq!(post(port, "/anything/else").await, 200);
    wait_until(
        "failing demo-api listens",
        Duration::from_secs(10),
        || async { post(fail_port, "/users").await != 0 },
    )
    .await;
    assert_eq!(post(fail_port, "/logs").await, 503);
    ok.kill().await.unwrap();
    failing.kill().await.unwrap();
}

#[tokio::test]
async fn demo_prints_a_tally_and_runs_until_ctrl_c() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let broker = Broker::new("demo").await;
    let mut child = tokio::process::Command::new(bin())
        .args(["demo", "--count", "200"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(broker.vars())
        .env("BRIDGE_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push_str(&line);
            out.push('\n');
            if line.contains("press Ctrl-C") {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no tally within 60 s: {out}"));
    let number = |label: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("{label}: {out}"));
        line[line.find(':').unwrap() + 1..].trim().parse().unwrap()
    };
    // Two samples in 200 are malformed; a logging call may (rarely) fail three
    // times in a row at the stand-in's 5 %, so only the sum is exact.
    assert_eq!(number("acked:") + number("dead-lettered:"), 200, "{out}");
    assert!(number("dead-lettered:") >= 2, "{out}");
    assert!(out.contains("invalid_payload: 2"), "{out}");
    assert!(out.contains("dlq peek"), "{out}");

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A first run with no broker ends in one clear sentence, exit 1, and no
/// backtrace (lapin's I/O thread used to panic as the process ended) or
/// repeated cause.
#[tokio::test]
async fn no_broker_is_one_clear_line_and_exit_1() {
    let unreachable = vec![(
        "BRIDGE_AMQP_URL".to_owned(),
        format!("amqp://guest:guest@127.0.0.1:{CLOSED_PORT}/%2f"),
    )];
    for args in [
        vec!["demo", "--count", "5"],
        vec!["dlq", "stats"],
        vec!["publish"],
    ] {
        let (code, _, stderr) = run_bin(&args, &unreachable, b"{}\n").await;
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{args:?}: {stderr}");
        assert_eq!(
            stderr.matches("Connection refused").count(),
            1,
            "{args:?}: the cause once: {stderr}"
        );
    }
}
