//! The CLI as scripts use it: one JSON object per command with
//! `--format json` (shapes in docs/cli.md), `dlq replay --reason` and
//! `--dry-run`, exit codes, completions, the man page, `run --help`, and log
//! lines without colour off a terminal.

use std::time::Duration;

use lapin::BasicProperties;
use serde_json::{json, Value};

use crate::helpers::*;

fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

fn message_ids(deliveries: &[lapin::message::Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.properties.message_id().as_ref().unwrap().to_string())
        .collect()
}

/// Puts messages straight into the DLQ, as the worker would have, with the
/// given (message_id, reason) in order.
async fn fill_dlq(broker: &Broker, messages: &[(&str, &str)]) {
    broker.declare().await;
    for (id, reason) in messages {
        let props = BasicProperties::default()
            .with_message_id((*id).into())
            .with_headers(headers(&[
                ("x-bridge-reason", reason),
                ("x-bridge-done-targets", ""),
            ]));
        broker
            .publish_to(
                &broker.dlq,
                format!("{{\"id\":\"{id}\"}}").as_bytes(),
                props,
            )
            .await;
    }
}

#[tokio::test]
async fn publish_json_reports_counts_and_rejected_lines() {
    let broker = Broker::new("pubjson").await;
    let input = b"{\"a\":1}\nnot json\n\n[2]\n";
    let (code, stdout, stderr) =
        run_bin(&["publish", "--format", "json"], &broker.vars(), input).await;
    assert_eq!(code, 1, "a bad line makes the exit code 1: {stderr}");
    let report = parse(&stdout);
    assert_eq!(report["queue"], broker.queue.as_str());
    assert_eq!(report["confirmed"], 2);
    assert_eq!(report["unconfirmed"], 0);
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{stdout}");
    assert_eq!(rejected[0]["line"], 2);
    assert!(rejected[0]["error"].as_str().unwrap().len() > 3);
    assert_eq!(broker.depth(&broker.queue).await, 2);

    let (code, stdout, _) =
        run_bin(&["publish", "--format", "json"], &broker.vars(), b"{}\n").await;
    assert_eq!(code, 0);
    assert_eq!(
        parse(&stdout),
        json!({"queue": broker.queue, "confirmed": 1, "unconfirmed": 0, "rejected": [], "unconfirmed_lines": []})
    );
}

#[tokio::test]
async fn dlq_stats_json_shape() {
    let broker = Broker::new("statsjson").await;
    // No DLQ yet: depth 0, nothing counted, and it is not created.
    let (code, stdout, stderr) =
        run_bin(&["dlq", "stats", "--format", "json"], &broker.vars(), b"").await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        parse(&stdout),
        json!({"dlq": broker.dlq, "depth": 0, "reasons": {}})
    );
    fill_dlq(
        &broker,
        &[
            ("s-1", "api_failed"),
            ("s-2", "invalid_payload"),
            ("s-3", "api_failed"),
        ],
    )
    .await;
    let (code, stdout, _) =
        run_bin(&["dlq", "stats", "--format", "json"], &broker.vars(), b"").await;
    assert_eq!(code, 0);
    assert_eq!(
        parse(&stdout),
        json!({"dlq": broker.dlq, "depth": 3, "reasons": {"api_failed": 2, "invalid_payload": 1}})
    );
    let (code, stdout, _) = run_bin(&["dlq", "stats"], &broker.vars(), b"").await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("depth: 3\napi_failed: 2\ninvalid_payload: 1"),
        "{stdout}"
    );
    assert_eq!(
        message_ids(&broker.drain(&broker.dlq).await),
        ["s-1", "s-2", "s-3"],
        "a full read keeps the order"
    );
}

#[tokio::test]
async fn replay_reason_moves_only_that_reason_and_the_others_keep_their_order() {
    let broker = Broker::new("reason").await;
    fill_dlq(
        &broker,
        &[
            ("a-1", "api_failed"),
            ("b-1", "invalid_payload"),
            ("a-2", "api_failed"),
            ("b-2", "invalid_payload"),
            ("a-3", "api_failed"),
        ],
    )
    .await;
    let v = broker.vars();
    let (code, stdout, stderr) = run_bin(
        &[
            "dlq",
            "replay",
            "--reason",
            "invalid_payload",
            "--format",
            "json",
        ],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        parse(&stdout),
        json!({
            "dlq": broker.dlq,
            "queue": broker.queue,
            "dry_run": false,
            "reason": "invalid_payload",
            "limit": null,
            "matched": 2,
            "moved": 2,
            "kept": 3,
            "messages": [
                {"message_id": "b-1", "reason": "invalid_payload"},
                {"message_id": "b-2", "reason": "invalid_payload"}
            ],
            "error": null
        })
    );
    assert_eq!(
        message_ids(&broker.drain(&broker.queue).await),
        ["b-1", "b-2"]
    );

    // With a limit: the first match moves, the others stay in order.
    let (code, stdout, _) = run_bin(
        &["dlq", "replay", "--reason", "api_failed", "--limit", "1"],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("1 messages replayed"), "{stdout}");
    assert_eq!(message_ids(&broker.drain(&broker.queue).await), ["a-1"]);
    // A reason nothing has moves nothing.
    let (code, stdout, _) = run_bin(
        &[
            "dlq",
            "replay",
            "--reason",
            "delivery_limit",
            "--limit",
            "5",
        ],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("0 messages replayed"), "{stdout}");
    assert_eq!(
        message_ids(&broker.drain(&broker.dlq).await),
        ["a-2", "a-3"]
    );
}

#[tokio::test]
async fn replay_dry_run_moves_nothing_and_says_what_would_move() {
    let broker = Broker::new("dryrun").await;
    let all = [
        ("d-1", "api_failed"),
        ("d-2", "invalid_payload"),
        ("d-3", "api_failed"),
    ];
    fill_dlq(&broker, &all).await;
    let v = broker.vars();
    let (code, stdout, stderr) = run_bin(
        &["dlq", "replay", "--dry-run", "--reason", "api_failed"],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "would replay message_id=d-1 reason=api_failed\n\
             would replay message_id=d-3 reason=api_failed\n\
             dry run: 2 messages would be replayed from {} to {}; nothing moved\n",
            broker.dlq, broker.queue
        )
    );
    let (code, stdout, _) = run_bin(
        &[
            "dlq",
            "replay",
            "--dry-run",
            "--limit",
            "2",
            "--format",
            "json",
        ],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0);
    let report = parse(&stdout);
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["matched"], 2);
    assert_eq!(report["moved"], 0);
    assert_eq!(report["messages"][1]["message_id"], "d-2");
    assert_eq!(broker.depth(&broker.queue).await, 0, "nothing moved");
    assert_eq!(
        message_ids(&broker.drain(&broker.dlq).await),
        ["d-1", "d-2", "d-3"],
        "the DLQ is as it was, in order"
    );
}

/// Workers dead-lettering while a tool reads: the pass ends, reads each
/// message that was there at start exactly once, and loses or doubles none.
#[tokio::test]
async fn reading_while_workers_dead_letter_ends_and_loses_nothing() {
    let broker = Broker::new("concurrent").await;
    let before: Vec<String> = (0..300).map(|i| format!("old-{i}")).collect();
    let pairs: Vec<(&str, &str)> = before
        .iter()
        .map(|id| (id.as_str(), "api_failed"))
        .collect();
    fill_dlq(&broker, &pairs).await;

    let writer = Broker::new("concurrent.writer").await;
    let dlq = broker.dlq.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..300 {
            let props = BasicProperties::default()
                .with_message_id(format!("new-{i}").into())
                .with_headers(headers(&[("x-bridge-reason", "invalid_payload")]));
            writer.publish_to(&dlq, b"{}", props).await;
        }
    });
    let (code, stdout, stderr) =
        run_bin(&["dlq", "stats", "--format", "json"], &broker.vars(), b"").await;
    publishing.await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let stats = parse(&stdout);
    let depth = stats["depth"].as_u64().unwrap();
    let counted: u64 = stats["reasons"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(depth >= 300, "{stdout}");
    assert_eq!(counted, depth, "each message there at start read once");

    let left = message_ids(&broker.drain(&broker.dlq).await);
    assert_eq!(left.len(), 600, "none lost, none doubled");
    // The first `depth` published were there at start and were read (each
    // went round to the tail); the others arrived later and were not. Each
    // group keeps its order.
    let all: Vec<String> = before
        .iter()
        .cloned()
        .chain((0..300).map(|i| format!("new-{i}")))
        .collect();
    let (read, unread) = all.split_at(depth as usize);
    let in_left = |group: &[String]| -> Vec<String> {
        left.iter()
            .filter(|id| group.contains(id))
            .cloned()
            .collect()
    };
    assert_eq!(in_left(read), read, "the messages read keep their order");
    assert_eq!(in_left(unread), unread, "the others keep theirs");
}

#[tokio::test]
async fn exit_codes_for_usage_configuration_and_broker_failures() {
    for args in [
        &["dlq", "stats", "--format", "xml"][..],
        &["dlq", "replay", "--limit", "0"],
        &["dlq", "replay", "--dry-run=maybe"],
        &["publish", "--format"],
        &["completions"],
        &["completions", "tcsh"],
    ] {
        let (code, _, stderr) = run_bin(args, &[], b"").await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
    let (code, _, stderr) = run_bin(
        &["dlq", "stats"],
        &[("BRIDGE_QUEUE_TYPE".into(), "stream".into())],
        b"",
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("BRIDGE_QUEUE_TYPE"), "{stderr}");
    // Nobody listens there: a failure that is not the operator's setting.
    let url = format!("amqp://guest:secret-pw@127.0.0.1:{}/%2f", free_port());
    for args in [
        &["dlq", "stats", "--format", "json"][..],
        &["dlq", "replay", "--dry-run"],
    ] {
        let (code, stdout, stderr) =
            run_bin(args, &[("BRIDGE_AMQP_URL".into(), url.clone())], b"").await;
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(!stderr.contains("secret-pw"), "{stderr}");
    }
}

#[tokio::test]
async fn completions_for_every_shell_and_a_man_page() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, stdout, stderr) = run_bin(&["completions", shell], &[], b"").await;
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(stdout.contains("fanout-bridge"), "{shell}");
        assert!(stdout.contains("replay"), "{shell}: subcommands complete");
    }
    let (_, bash, _) = run_bin(&["completions", "bash"], &[], b"").await;
    assert!(bash.contains("--dry-run") && bash.contains("--reason"));
    let (code, man, _) = run_bin(&["man"], &[], b"").await;
    assert_eq!(code, 0);
    assert!(
        man.starts_with(".ie") || man.contains(".TH fanout-bridge"),
        "{man}"
    );
    assert!(man.contains("completions"));
    let dir = std::env::temp_dir().join(unique("man"));
    let (code, _, stderr) = run_bin(&["man", "--dir", dir.to_str().unwrap()], &[], b"").await;
    assert_eq!(code, 0, "{stderr}");
    let run_page = std::fs::read_to_string(dir.join("fanout-bridge-run.1"));
    let replay_page = std::fs::read_to_string(dir.join("fanout-bridge-dlq-replay.1"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        run_page.unwrap().contains("BRIDGE_PREFETCH"),
        "settings in run's page"
    );
    assert!(replay_page.unwrap().contains("dry\\-run"));
    let (_, help, _) = run_bin(&["--help"], &[], b"").await;
    assert!(
        !help.contains("\n  man "),
        "the man command is hidden: {help}"
    );
}

/// Every variable of the contract's settings table, in `run --help`.
#[tokio::test]
async fn run_help_lists_every_setting_with_its_default() {
    let (code, help, _) = run_bin(&["run", "--help"], &[], b"").await;
    assert_eq!(code, 0);
    for (var, default) in [
        ("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("BRIDGE_QUEUE", "bridge.inbound"),
        ("BRIDGE_DLQ", "bridge.inbound.dlq"),
        ("BRIDGE_QUEUE_TYPE", "classic"),
        ("BRIDGE_USER_API_URL", "required"),
        ("BRIDGE_LOG_API_URL", "required"),
        ("BRIDGE_USER_API_TOKEN", "unset"),
        ("BRIDGE_LOG_API_TOKEN", "unset"),
        ("BRIDGE_TARGETS", "user-management,logging"),
        ("BRIDGE_TARGET_<N>_URL", "required"),
        ("BRIDGE_TARGET_<N>_TOKEN", "unset"),
        ("BRIDGE_TARGET_<N>_RATE_LIMIT", "unset"),
        ("BRIDGE_TARGET_<N>_BODY", "raw"),
        ("BRIDGE_CA_FILE", "unset"),
        ("BRIDGE_TLS_CERT_FILE", "unset"),
        ("BRIDGE_TLS_KEY_FILE", "unset"),
        ("BRIDGE_USER_API_RATE_LIMIT", "unset"),
        ("BRIDGE_LOG_API_RATE_LIMIT", "unset"),
        ("BRIDGE_PREFETCH", "64"),
        ("BRIDGE_HTTP_TIMEOUT_MS", "10000"),
        ("BRIDGE_MAX_ATTEMPTS", "3"),
        ("BRIDGE_RETRY_BACKOFF_MS", "200"),
        ("BRIDGE_OUTAGE_POLICY", "dead-letter"),
        ("BRIDGE_OUTAGE_PAUSE_MS", "5000"),
        ("BRIDGE_LOG_EVENT", "user.registered"),
        ("BRIDGE_METRICS_ADDR", "0.0.0.0:9464"),
        ("BRIDGE_SHUTDOWN_GRACE_MS", "30000"),
        ("BRIDGE_LOG_FORMAT", "text"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "unset"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "unset"),
        ("OTEL_SERVICE_NAME", ""),
    ] {
        // The line that names the variable first: "  NAME[, NAME]  default D".
        let line = help
            .lines()
            .find(|l| {
                let l = l.trim_start();
                (l.starts_with("BRIDGE_") || l.starts_with("OTEL_"))
                    && l.split([',', ' ']).any(|word| word == var)
            })
            .unwrap_or_else(|| panic!("{var} missing from run --help:\n{help}"));
        assert!(
            line.contains(default),
            "{var}: default {default} not on its line {line:?}"
        );
    }
    assert!(help.contains("PER WORKER"), "rate limits are per worker");
}

#[tokio::test]
async fn text_logs_have_no_colour_off_a_terminal() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let port = free_port();
    let mut child = tokio::process::Command::new(bin())
        .args(["demo-api", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a log line within 10 s")
        .unwrap()
        .unwrap();
    child.kill().await.unwrap();
    assert!(line.contains("listening"), "{line}");
    assert!(
        !line.contains('\u{1b}'),
        "no escape codes in a pipe: {line:?}"
    );
}

/// Every command `--help` lists has its row in the README's command table,
/// so a new command is documented where users look for it.
#[tokio::test]
async fn every_command_in_help_is_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md at the repository root");
    let (code, help, _) = run_bin(&["--help"], &[], b"").await;
    assert_eq!(code, 0);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(
        commands.contains(&"check") && commands.contains(&"healthcheck"),
        "{help}"
    );
    for command in commands {
        assert!(
            readme.contains(&format!("| `fanout-bridge {command}")),
            "README.md's command table has no row for {command}"
        );
    }
}
