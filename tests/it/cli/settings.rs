//! Stricter settings, checked on the built binary: a setting the worker
//! cannot honour exits 2 naming it, before anything binds or connects, and no
//! secret (token, URL password) is ever printed.

use std::time::Duration;

use lapin::BasicProperties;

use crate::helpers::*;

/// Runs `run` with the two URLs and `extra` (replacing a URL of the same
/// name); asserts exit 2 naming `variable` and not showing `secret`.
async fn refused(extra: &[(&str, &str)], variable: &str, secret: &str) {
    let mut pairs: Vec<(&str, &str)> = URLS
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .copied()
        .collect();
    pairs.extend_from_slice(extra);
    let (code, stdout, stderr) = run_bin(&["run"], &vars(&pairs), b"").await;
    assert_eq!(code, 2, "{extra:?}: {stderr}");
    assert!(
        stderr.contains(variable),
        "{variable} not named in: {stderr}"
    );
    if !secret.is_empty() {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "secret printed: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_token_that_cannot_be_a_header_exits_2_before_binding_or_connecting() {
    // The metrics port is taken and the broker unreachable: had the worker
    // bound or connected first, it would exit 1 or keep retrying.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let closed = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    for (variable, token) in [
        ("BRIDGE_USER_API_TOKEN", "abc\ndef-hunter2"),
        ("BRIDGE_LOG_API_TOKEN", "abc\r\nX-Injected: hunter2"),
        ("BRIDGE_USER_API_TOKEN", "del\u{7f}hunter2"),
    ] {
        refused(
            &[
                (variable, token),
                ("BRIDGE_METRICS_ADDR", &addr),
                ("BRIDGE_AMQP_URL", &closed),
            ],
            variable,
            "hunter2",
        )
        .await;
    }
    refused(
        &[
            ("BRIDGE_TARGETS", "crm"),
            ("BRIDGE_TARGET_CRM_URL", "http://127.0.0.1:9/"),
            ("BRIDGE_TARGET_CRM_TOKEN", "x\ny-hunter2"),
            ("BRIDGE_METRICS_ADDR", &addr),
        ],
        "BRIDGE_TARGET_CRM_TOKEN",
        "hunter2",
    )
    .await;
}

#[tokio::test]
async fn a_url_password_is_never_in_a_configuration_error() {
    for (variable, value) in [
        ("BRIDGE_USER_API_URL", "ftp://user:hunter2@host/x"),
        ("BRIDGE_USER_API_URL", "http://user:hunter2@/x"),
        ("BRIDGE_LOG_API_URL", "http://user:hunter2@host:99999/x"),
        (
            "BRIDGE_AMQP_URL",
            "amqp://user:hunter2@127.0.0.1/?heartbeat=ten",
        ),
        ("BRIDGE_AMQP_URL", "amqp:user:hunter2@host"),
    ] {
        refused(&[(variable, value)], variable, "hunter2").await;
    }
}

#[tokio::test]
async fn a_url_password_is_never_logged() {
    let broker = Broker::new("urlpw").await;
    let log = FakeApi::start().await;
    let settings = vars(&[
        (
            "BRIDGE_USER_API_URL",
            &format!("http://user:hunter2@127.0.0.1:{CLOSED_PORT}/x"),
        ),
        ("BRIDGE_LOG_API_URL", &log.url()),
        ("BRIDGE_MAX_ATTEMPTS", "2"),
        ("BRIDGE_RETRY_BACKOFF_MS", "10"),
        ("RUST_LOG", "debug"),
    ]);
    let process = Process::start(&broker, settings).await;
    broker.publish(b"{}", BasicProperties::default()).await;
    broker
        .wait_depth(&broker.dlq, 1, Duration::from_secs(15))
        .await;
    let d = &broker.drain(&broker.dlq).await[0];
    let error = header_text(d, "x-bridge-error").unwrap();
    assert!(error.contains("connection failed"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    let text = process.log_text();
    assert!(text.contains("API attempt failed"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn the_dlq_equal_to_the_queue_exits_2() {
    refused(
        &[("BRIDGE_QUEUE", "same.q"), ("BRIDGE_DLQ", "same.q")],
        "BRIDGE_DLQ",
        "",
    )
    .await;
    // The broker tools refuse it too.
    let pairs = vars(&[("BRIDGE_DLQ", "bridge.inbound")]);
    let (code, _, stderr) = run_bin(&["dlq", "stats"], &pairs, b"").await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("BRIDGE_DLQ"), "{stderr}");
}

#[tokio::test]
async fn a_duration_the_worker_cannot_honour_exits_2() {
    for (variable, value) in [
        ("BRIDGE_OUTAGE_PAUSE_MS", "18446744073709551615"),
        ("BRIDGE_OUTAGE_PAUSE_MS", "86400001"),
        ("BRIDGE_SHUTDOWN_GRACE_MS", "18446744073709551615"),
        ("BRIDGE_HTTP_TIMEOUT_MS", "600001"),
        ("BRIDGE_HTTP_TIMEOUT_MS", "0"),
        ("BRIDGE_RETRY_BACKOFF_MS", "18446744073709551615"),
        ("BRIDGE_USER_API_RATE_LIMIT", "4294967295"),
    ] {
        refused(&[(variable, value)], variable, "").await;
    }
}

/// The settings table under `heading` in the document `path` (relative to
/// the repository): each variable named in a row's first cell, with that
/// row's default cell (backticks and bold dropped).
fn documented_settings(path: &str, heading: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let section = text
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("a {heading:?} section in {path}"));
    let mut rows = Vec::new();
    for line in section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let default = cells[2].replace(['`', '*'], "");
        for name in cells[1].split(',') {
            rows.push((name.trim().trim_matches('`').to_owned(), default.clone()));
        }
    }
    rows
}

/// Differences between a documented table and the settings table that
/// drives parsing and `run --help`: a wrong default, a variable the code does
/// not have, and (when `complete`) a variable the document lacks.
fn settings_problems(path: &str, rows: &[(String, String)], complete: bool) -> Vec<String> {
    use fanout_bridge::config::table::{WhenUnset, OTEL_SETTINGS, PROXY_SETTINGS, SETTINGS};
    let mut problems = Vec::new();
    // RUST_LOG has no row of its own (BRIDGE_LOG_FORMAT's says it).
    let documented = SETTINGS.iter().filter(|d| d.name.starts_with("BRIDGE_"));
    for doc in documented.chain(OTEL_SETTINGS).chain(PROXY_SETTINGS) {
        let Some((_, shown)) = rows.iter().find(|(name, _)| name == doc.name) else {
            if complete {
                problems.push(format!("{} is not in {path}'s settings table", doc.name));
            }
            continue;
        };
        let same = match doc.default {
            WhenUnset::Default(value) => shown == value,
            WhenUnset::Unset => shown == "unset",
            // "required", or "required per target" for a pattern row.
            WhenUnset::Required => shown.split_whitespace().next() == Some("required"),
        };
        if !same {
            problems.push(format!(
                "{}: {path} says {shown:?}, the settings table {}",
                doc.name, doc.default
            ));
        }
    }
    for (name, _) in rows.iter().filter(|(n, _)| n.starts_with("BRIDGE_")) {
        if !SETTINGS.iter().any(|d| d.name == name) {
            problems.push(format!("{path} lists {name}, the settings table does not"));
        }
    }
    problems
}

/// docs/settings.md lists every `BRIDGE_*` (and `OTEL_*`, proxy) setting with
/// its default; the README's short table ("the settings that matter") agrees
/// with the code on every row it has.
#[test]
fn the_documented_settings_match_the_settings_table() {
    let reference = documented_settings("docs/settings.md", "## Settings");
    let readme = documented_settings("README.md", "## Settings that matter");
    let mut problems = settings_problems("docs/settings.md", &reference, true);
    problems.extend(settings_problems("README.md", &readme, false));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(reference.len() > 20, "the table was found: {reference:?}");
    assert!(readme.len() > 8, "the table was found: {readme:?}");
}
