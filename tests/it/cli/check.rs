//! `fanout-bridge check`: one line per check, exit 0 / 1 / 2, a queue with
//! other arguments named, nothing left behind, no password printed.

use lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};
use serde_json::Value;

use crate::helpers::*;

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

/// The check named `name` in a `--format json` report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report}"))
}

async fn exists(broker: &Broker, queue: &str) -> bool {
    // A channel of its own: a passive declare of an absent queue closes it.
    let channel = broker.conn.create_channel().await.unwrap();
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn check_passes_with_every_dependency_up_and_creates_no_queue() {
    let broker = Broker::new("check.ok").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut v = broker.vars();
    v.extend(fast_settings(&user, &log));

    let (code, stdout, stderr) = run_bin(&["check"], &v, b"").await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // configuration, the node, two queues, one TCP check per http:// target.
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines.iter().all(|l| l.starts_with("ok ")), "{stdout}");
    let queue_line = lines
        .iter()
        .find(|l| l.contains(&format!("queue {}:", broker.queue)))
        .unwrap();
    assert!(queue_line.contains("absent"), "{queue_line}");
    assert!(
        !exists(&broker, &broker.queue).await && !exists(&broker, &broker.dlq).await,
        "check declared no queue"
    );
    assert_eq!(user.count() + log.count(), 0, "no request was sent");
    // (stderr may hold lapin's line about the channel the passive declare of
    // an absent queue closed: the tests run with RUST_LOG=warn.)
    assert!(!stderr.contains("panicked"), "{stderr}");

    broker.declare().await;
    let (code, stdout, stderr) = run_bin(&["check", "--format", "json"], &v, b"").await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report = json(&stdout);
    assert_eq!(report["ok"], true, "{report}");
    let queue = check(&report, &format!("queue {}", broker.queue));
    assert_eq!(queue["ok"], true);
    assert!(
        queue["detail"]
            .as_str()
            .unwrap()
            .contains("arguments match"),
        "{queue}"
    );
    assert_eq!(check(&report, "target logging tcp")["ok"], true);
    for c in report["checks"].as_array().unwrap() {
        assert!(c["name"].is_string() && c["detail"].is_string(), "{c}");
        assert!(c["ok"].is_boolean(), "{c}");
    }
}

#[tokio::test]
async fn check_fails_with_exit_1_naming_a_queue_with_other_arguments() {
    let broker = Broker::new("check.mismatch").await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    broker.declare_with(&broker.dlq, args).await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut v = broker.vars();
    v.extend(fast_settings(&user, &log));

    let (code, stdout, _) = run_bin(&["check"], &v, b"").await;
    assert_eq!(code, 1, "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line: {stdout}"));
    assert!(line.contains(&broker.dlq), "{line}");
    assert!(line.contains("other arguments"), "{line}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("FAIL")).count(), 1);

    let (code, stdout, _) = run_bin(&["check", "--format", "json"], &v, b"").await;
    assert_eq!(code, 1);
    let report = json(&stdout);
    assert_eq!(report["ok"], false);
    assert_eq!(check(&report, &format!("dlq {}", broker.dlq))["ok"], false);
    assert_eq!(
        check(&report, &format!("queue {}", broker.queue))["ok"],
        true
    );
    assert!(
        !exists(&broker, &broker.queue).await,
        "the absent inbound queue was not created"
    );
}

#[tokio::test]
async fn check_reports_every_unreachable_dependency_without_its_password() {
    let url = |port: u16| format!("amqp://guest:secret-pw@127.0.0.1:{port}/%2f");
    let with_password = format!("http://user:api-secret@127.0.0.1:{CLOSED_PORT}/x");
    let plain = format!("http://127.0.0.1:{CLOSED_PORT}/y");
    let v = vars(&[
        (
            "BRIDGE_AMQP_URL",
            &format!("{},{}", url(CLOSED_PORT), url(free_port())),
        ),
        ("BRIDGE_USER_API_URL", &with_password),
        ("BRIDGE_LOG_API_URL", &plain),
        ("BRIDGE_LOG_API_TOKEN", "token-secret"),
    ]);
    let (code, stdout, stderr) = run_bin(&["check", "--format", "json"], &v, b"").await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let report = json(&stdout);
    assert_eq!(report["ok"], false);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // Both nodes, both queues (not checkable), both targets.
    assert_eq!(failed.len(), 6, "{report}");
    assert!(failed.contains(&format!("broker 127.0.0.1:{CLOSED_PORT}").as_str()));
    assert!(failed.contains(&"target user-management tcp"));
    for secret in ["secret-pw", "api-secret", "token-secret"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret}: {stdout}{stderr}"
        );
    }
}

#[tokio::test]
async fn check_with_a_bad_setting_exits_2_naming_it() {
    for format in ["text", "json"] {
        let v = vars(&[URLS[0], URLS[1], ("BRIDGE_PREFETCH", "0")]);
        let (code, stdout, stderr) = run_bin(&["check", "--format", format], &v, b"").await;
        assert_eq!(code, 2, "{stdout}{stderr}");
        assert!(stderr.contains("BRIDGE_PREFETCH"), "{stderr}");
        assert!(stdout.contains("BRIDGE_PREFETCH"), "{stdout}");
    }
    let (code, stdout, _) = run_bin(&["check", "--format", "json"], &vars(&[URLS[0]]), b"").await;
    assert_eq!(code, 2);
    let report = json(&stdout);
    assert_eq!(report["ok"], false);
    let configuration = check(&report, "configuration");
    assert!(
        configuration["detail"]
            .as_str()
            .unwrap()
            .contains("BRIDGE_LOG_API_URL"),
        "{report}"
    );
}
