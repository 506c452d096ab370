//! Failures an operator can understand and repair: failure groups, filters,
//! export, import, purge, a paced replay and the one-operation-at-a-time
//! lock, against the real broker and the built binary.

use std::time::{Duration, Instant};

use lapin::{options::QueueDeclareOptions, types::FieldTable, BasicProperties};
use serde_json::Value;

use crate::helpers::*;

/// 5 logging 503s (one replayed before), 2 user-management 400s, 3 bodies
/// that are not JSON, interleaved, with times from 2026-12-01 to 12-03.
async fn realistic_dlq(broker: &Broker) {
    broker.declare().await;
    for i in 0..10 {
        let id = format!("m-{i}");
        match i % 10 {
            0 | 2 | 4 | 6 | 8 => {
                let at = format!("2026-12-0{}T10:00:00Z", 1 + i / 4);
                let f = api_failed_fields("logging", "logging: HTTP 503 after 3 attempts", &at);
                put_dead_letter(
                    broker,
                    &id,
                    &format!("{{\"customer\":\"c-{i}\"}}"),
                    &f,
                    i64::from(i == 8),
                )
                .await;
            }
            1 | 5 => {
                let f = api_failed_fields(
                    "user-management",
                    "user-management: HTTP 400 after 1 attempt",
                    "2026-12-02T10:00:00Z",
                );
                put_dead_letter(broker, &id, "{\"customer\":\"bad\"}", &f, 0).await;
            }
            _ => {
                let f = [
                    ("x-bridge-reason", "invalid_payload"),
                    ("x-bridge-failed-targets", ""),
                    ("x-bridge-done-targets", ""),
                    (
                        "x-bridge-error",
                        "body is not valid JSON: EOF while parsing an object at line 1 column 5",
                    ),
                    ("x-bridge-dead-lettered-at", "2026-12-03T10:00:00Z"),
                ];
                put_dead_letter(broker, &id, "{\"a\":", &f, 0).await;
            }
        }
    }
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn ids_of(deliveries: &[lapin::message::Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| {
            d.properties
                .message_id()
                .as_ref()
                .unwrap()
                .as_str()
                .to_owned()
        })
        .collect()
}

async fn groups(broker: &Broker, extra: &[&str]) -> Value {
    let mut args = vec!["dlq", "groups", "--format", "json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run_bin(&args, &broker.vars(), b"").await;
    assert_eq!(code, 0, "{stderr}");
    json(&stdout)
}

fn group_id(g: &Value, label: &str) -> String {
    g["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["label"] == label)
        .unwrap_or_else(|| panic!("no group {label}: {g}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn groups_name_each_cause_with_a_stable_id_and_keep_the_order() {
    let broker = Broker::new("dlq-groups").await;
    realistic_dlq(&broker).await;
    let g = groups(&broker, &[]).await;
    assert_eq!(g["depth"], 10);
    let list = g["groups"].as_array().unwrap();
    let labels: Vec<_> = list.iter().map(|x| x["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        [
            "api_failed · logging: HTTP 503",
            "invalid_payload · JSON: EOF while parsing an object",
            "api_failed · user-management: HTTP 400",
        ]
    );
    let logging = &list[0];
    assert_eq!(logging["count"], 5);
    assert_eq!(logging["reason"], "api_failed");
    assert_eq!(logging["targets"], serde_json::json!(["logging"]));
    assert_eq!(logging["error"], "logging: HTTP 503");
    assert_eq!(logging["first"], "2026-12-01T10:00:00Z");
    assert_eq!(logging["last"], "2026-12-03T10:00:00Z");
    assert_eq!(logging["replayed"], 1);
    let id = logging["id"].as_str().unwrap();
    assert!(
        id.len() == 8
            && id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    // The same cause, the same id, whatever the read.
    let again = groups(&broker, &["--since", "2026-12-02T00:00:00Z"]).await;
    assert_eq!(group_id(&again, "api_failed · logging: HTTP 503"), id);
    assert_eq!(again["groups"][0]["count"], 3, "{again}");
    // Text too: one line per group with its id.
    let (_, text, _) = run_bin(&["dlq", "groups"], &broker.vars(), b"").await;
    assert!(
        text.lines()
            .any(|l| l.starts_with(id) && l.contains("failed again after a replay")),
        "{text}"
    );
    // Reading leaves the DLQ as it was.
    let left = broker.drain(&broker.dlq).await;
    assert_eq!(
        ids_of(&left),
        (0..10).map(|i| format!("m-{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn filters_select_by_reason_target_group_id_time_and_text() {
    let broker = Broker::new("dlq-filters").await;
    realistic_dlq(&broker).await;
    let v = broker.vars();
    let count = |stdout: &str| json(stdout)["matched"].as_u64().unwrap();
    for (args, want) in [
        (vec!["--reason", "invalid_payload"], 3),
        (vec!["--target", "user-management"], 2),
        (vec!["--id", "m-3", "--id", "m-4"], 2),
        (
            vec![
                "--since",
                "2026-12-02T00:00:00Z",
                "--until",
                "2026-12-02T23:59:59Z",
            ],
            4,
        ),
        (vec!["--grep", "c-4"], 1),
        (vec!["--grep", "HTTP 400"], 2),
        (vec!["--reason", "api_failed", "--grep", "c-"], 5),
        (vec!["--since", "1h"], 0),
    ] {
        let mut cmd = vec!["dlq", "stats", "--format", "json"];
        cmd.extend_from_slice(&args);
        let (code, stdout, stderr) = run_bin(&cmd, &v, b"").await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(count(&stdout), want, "{args:?}: {stdout}");
    }
    let g = groups(&broker, &[]).await;
    let bad_request = group_id(&g, "api_failed · user-management: HTTP 400");
    let (_, stdout, _) = run_bin(
        &["dlq", "peek", "--group", &bad_request, "--limit", "10"],
        &v,
        b"",
    )
    .await;
    let peeked: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(peeked.len(), 2);
    assert!(peeked.iter().all(|p| p["group"] == bad_request.as_str()));
    let (code, _, stderr) = run_bin(&["dlq", "stats", "--since", "yesterday"], &v, b"").await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--since"), "{stderr}");
    // Filtered reads leave the others where they were.
    let left = broker.drain(&broker.dlq).await;
    assert_eq!(
        ids_of(&left),
        (0..10).map(|i| format!("m-{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn replay_one_group_at_a_rate_and_leave_the_others() {
    let broker = Broker::new("dlq-replay-group").await;
    realistic_dlq(&broker).await;
    let v = broker.vars();
    let g = groups(&broker, &[]).await;
    let logging = group_id(&g, "api_failed · logging: HTTP 503");
    let started = Instant::now();
    let (code, stdout, stderr) = run_bin(
        &[
            "dlq", "replay", "--group", &logging, "--rate", "10", "--format", "json",
        ],
        &v,
        b"",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(code, 0, "{stderr}");
    let report = json(&stdout);
    assert_eq!(report["moved"], 5, "{report}");
    // Five copies at 10 per second: four gaps of 100 ms at least.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    let moved = broker.drain(&broker.queue).await;
    assert_eq!(ids_of(&moved), ["m-0", "m-2", "m-4", "m-6", "m-8"]);
    let replays: Vec<_> = moved
        .iter()
        .map(|d| header_int(d, "x-bridge-replays").unwrap())
        .collect();
    assert_eq!(replays, [1, 1, 1, 1, 2]);
    assert!(moved
        .iter()
        .all(|d| header_text(d, "x-bridge-reason").is_none()));
    assert!(moved
        .iter()
        .all(|d| header_text(d, "tenant").as_deref() == Some("acme")));
    let left = broker.drain(&broker.dlq).await;
    assert_eq!(ids_of(&left), ["m-1", "m-3", "m-5", "m-7", "m-9"]);
}

#[tokio::test]
async fn export_edit_import_then_purge_the_originals() {
    let broker = Broker::new("dlq-export").await;
    realistic_dlq(&broker).await;
    let v = broker.vars();
    let dir = std::env::temp_dir().join(unique("export"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.jsonl");
    let (code, _, stderr) = run_bin(
        &[
            "dlq",
            "export",
            "--reason",
            "invalid_payload",
            "--out",
            file.to_str().unwrap(),
        ],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    let r = &records[0];
    assert_eq!(r["message_id"], "m-3");
    assert_eq!(r["reason"], "invalid_payload");
    assert_eq!(r["body"], "{\"a\":");
    assert_eq!(r["replays"], 0);
    assert_eq!(r["properties"]["content_type"], "application/json");
    assert_eq!(r["headers"]["tenant"], "acme");
    assert_eq!(r["group"].as_str().unwrap().len(), 8);
    // Nothing was removed.
    assert_eq!(broker.depth(&broker.dlq).await, 10);

    // Fix the bodies, add a line that is not a record, import.
    let mut fixed = String::new();
    for mut r in records {
        r["body"] = Value::String("{\"a\":1}".into());
        fixed.push_str(&r.to_string());
        fixed.push('\n');
    }
    fixed.push_str("{\"body\":\"x\"}\n");
    std::fs::write(&file, &fixed).unwrap();
    let (code, stdout, stderr) = run_bin(
        &["dlq", "import", file.to_str().unwrap(), "--format", "json"],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    let report = json(&stdout);
    assert_eq!(report["published"], 3, "{report}");
    let imported = broker.drain(&broker.queue).await;
    assert_eq!(ids_of(&imported), ["m-3", "m-7", "m-9"]);
    assert!(imported.iter().all(|d| d.data == b"{\"a\":1}"));
    assert!(imported
        .iter()
        .all(|d| header_int(d, "x-bridge-replays") == Some(1)));

    // Purge needs --yes (or --dry-run), and a filter or --all.
    let (code, _, _) = run_bin(&["dlq", "purge", "--reason", "invalid_payload"], &v, b"").await;
    assert_eq!(code, 2);
    let (code, _, _) = run_bin(&["dlq", "purge", "--yes"], &v, b"").await;
    assert_eq!(code, 2);
    let (code, stdout, _) = run_bin(
        &[
            "dlq",
            "purge",
            "--reason",
            "invalid_payload",
            "--dry-run",
            "--format",
            "json",
        ],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(json(&stdout)["matched"], 3);
    assert_eq!(broker.depth(&broker.dlq).await, 10);
    let (code, stdout, stderr) = run_bin(
        &["dlq", "purge", "--reason", "invalid_payload", "--yes"],
        &v,
        b"",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed 3 messages"), "{stdout}");
    let left = broker.drain(&broker.dlq).await;
    assert_eq!(
        ids_of(&left),
        ["m-0", "m-1", "m-2", "m-4", "m-5", "m-6", "m-8"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_second_dlq_operation_is_told_another_one_is_running() {
    let broker = Broker::new("dlq-lock").await;
    realistic_dlq(&broker).await;
    // Hold the lock as a running command would.
    broker
        .channel
        .queue_declare(
            format!("{}.lock", broker.dlq).as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for args in [
        vec!["dlq", "stats"],
        vec!["dlq", "peek"],
        vec!["dlq", "groups"],
        vec!["dlq", "replay"],
        vec!["dlq", "export"],
        vec!["dlq", "purge", "--all", "--yes"],
    ] {
        let (code, stdout, stderr) = run_bin(&args, &broker.vars(), b"").await;
        assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("another DLQ operation is running"),
            "{stderr}"
        );
    }
    assert_eq!(broker.depth(&broker.dlq).await, 10);
    assert_eq!(broker.depth(&broker.queue).await, 0);
}

#[tokio::test]
async fn the_worker_dead_letters_into_groups_by_cause() {
    let broker = Broker::new("dlq-groups-worker").await;
    broker.declare().await;
    let user = FakeApi::start().await;
    let log = FakeApi::start().await;
    log.always(Reply::status(503));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "2".into()));
    let worker = Worker::start(&broker, settings).await;
    broker.publish_numbered("w", 0..3).await;
    broker
        .publish(b"{not json", BasicProperties::default())
        .await;
    broker
        .wait_depth(&broker.dlq, 4, Duration::from_secs(20))
        .await;
    worker.stop().await;
    let g = groups(&broker, &[]).await;
    let list = g["groups"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{g}");
    assert_eq!(list[0]["label"], "api_failed · logging: HTTP 503");
    assert_eq!(list[0]["count"], 3);
    assert!(
        list[1]["label"]
            .as_str()
            .unwrap()
            .starts_with("invalid_payload · JSON: "),
        "{g}"
    );
}

/// An empty filter value is no filter: `purge --grep "" --yes` would
/// otherwise match every message without `--all`.
#[tokio::test]
async fn an_empty_filter_value_is_no_filter() {
    let broker = Broker::new("dlq-empty-filter").await;
    realistic_dlq(&broker).await;
    for flag in ["--grep", "--reason", "--group", "--target"] {
        let (code, _, stderr) =
            run_bin(&["dlq", "purge", flag, "", "--yes"], &broker.vars(), b"").await;
        assert_eq!(code, 2, "{flag}: {stderr}");
    }
    assert_eq!(broker.depth(&broker.dlq).await, 10);
}
