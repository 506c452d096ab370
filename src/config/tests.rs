//! Unit tests of the settings: defaults, every refusal naming its variable,
//! no secret in a message.

use super::*;
use crate::domain::BodyShape;

fn raw(pairs: &[(&str, &str)]) -> RawConfig {
    RawConfig::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

const URLS: [(&str, &str); 2] = [
    ("BRIDGE_USER_API_URL", "http://127.0.0.1:1/users"),
    ("BRIDGE_LOG_API_URL", "https://logs.example/logs"),
];

#[test]
fn defaults_match_the_contract() {
    let c = raw(&URLS).worker_config().unwrap();
    assert_eq!(c.broker.queue, "bridge.inbound");
    assert_eq!(c.broker.dlq, "bridge.inbound.dlq");
    assert_eq!(c.broker.queue_type, QueueType::Classic);
    assert_eq!(c.broker.uri.0.authority.host, "127.0.0.1");
    assert_eq!(c.broker.uri.0.authority.port, 5672);
    assert_eq!(c.broker.uri.0.vhost, "/");
    assert_eq!(c.broker.uri.0.query.heartbeat, Some(10));
    assert_eq!(c.broker.uri.0.query.frame_max, None, "the broker's");
    assert_eq!(c.broker.nodes.len(), 1);
    assert_eq!(c.prefetch, 64);
    assert_eq!(c.max_in_flight_bytes, 64 * 1024 * 1024);
    assert_eq!(c.http_timeout, Duration::from_secs(10));
    assert_eq!(c.max_attempts.get(), 3);
    assert_eq!(c.retry_backoff, Duration::from_millis(200));
    assert_eq!(c.outage_policy, OutagePolicy::DeadLetter);
    assert_eq!(c.outage_pause, Duration::from_secs(5));
    assert_eq!(c.log_event, "user.registered");
    assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:9464");
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    let names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["user-management", "logging"]);
    assert_eq!(c.targets[0].body, BodyShape::Raw);
    assert_eq!(c.targets[1].body, BodyShape::Envelope);
    assert_eq!(c.targets[0].url.as_str(), "http://127.0.0.1:1/users");
    assert!(c
        .targets
        .iter()
        .all(|t| t.token.is_none() && t.rate_limit.is_none()));
    assert_eq!(raw(&[]).log_format().unwrap(), LogFormat::Text);
}

#[test]
fn missing_urls_are_named() {
    let e = raw(&[]).worker_config().unwrap_err().to_string();
    assert!(e.contains("BRIDGE_USER_API_URL"), "{e}");
    assert!(e.contains("BRIDGE_LOG_API_URL"), "{e}");
}

#[test]
fn every_bad_value_is_named() {
    let cases = [
        ("BRIDGE_PREFETCH", "0"),
        ("BRIDGE_PREFETCH", "abc"),
        ("BRIDGE_PREFETCH", "70000"),
        ("BRIDGE_MAX_IN_FLIGHT_BYTES", "0"),
        ("BRIDGE_MAX_IN_FLIGHT_BYTES", "64MB"),
        ("BRIDGE_MAX_IN_FLIGHT_BYTES", "-1"),
        ("BRIDGE_MAX_IN_FLIGHT_BYTES", "2TiB"),
        ("BRIDGE_MAX_ATTEMPTS", "0"),
        ("BRIDGE_HTTP_TIMEOUT_MS", "-5"),
        ("BRIDGE_RETRY_BACKOFF_MS", "soon"),
        ("BRIDGE_OUTAGE_POLICY", "retry"),
        ("BRIDGE_QUEUE_TYPE", "stream"),
        ("BRIDGE_LOG_FORMAT", "xml"),
        ("BRIDGE_METRICS_ADDR", "nowhere"),
        ("BRIDGE_AMQP_URL", "http://x"),
        ("BRIDGE_USER_API_URL", "not a url"),
        ("BRIDGE_LOG_API_URL", "ftp://x/y"),
        ("BRIDGE_USER_API_RATE_LIMIT", "0"),
        ("BRIDGE_LOG_API_RATE_LIMIT", "100001"),
        ("BRIDGE_LOG_API_TOKEN", "a\u{7f}b"),
        ("BRIDGE_OUTAGE_PAUSE_MS", "1.5"),
        ("BRIDGE_SHUTDOWN_GRACE_MS", "x"),
    ];
    for (name, value) in cases {
        let mut pairs = URLS.to_vec();
        pairs.retain(|(k, _)| *k != name);
        pairs.push((name, value));
        let e = raw(&pairs).worker_config().unwrap_err().to_string();
        assert!(e.contains(name), "{name}={value}: {e}");
    }
}

#[test]
fn all_problems_reported_together() {
    let e = raw(&[("BRIDGE_PREFETCH", "0"), ("BRIDGE_MAX_ATTEMPTS", "x")])
        .worker_config()
        .unwrap_err();
    assert_eq!(e.problems.len(), 4, "{e}");
}

#[test]
fn tokens_are_redacted_and_heartbeat_kept_when_set() {
    let mut pairs = URLS.to_vec();
    pairs.push(("BRIDGE_USER_API_TOKEN", "s3cret"));
    pairs.push(("BRIDGE_AMQP_URL", "amqps://u:pw@broker:5671/v?heartbeat=3"));
    pairs.push(("BRIDGE_QUEUE_TYPE", "quorum"));
    let c = raw(&pairs).worker_config().unwrap();
    assert_eq!(c.targets[0].token.as_ref().unwrap().expose(), "s3cret");
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("pw"),
        "{debug}"
    );
    assert_eq!(c.broker.uri.0.query.heartbeat, Some(3));
    assert_eq!(c.broker.queue_type, QueueType::Quorum);
}

fn problems(pairs: &[(&str, &str)]) -> String {
    raw(pairs).worker_config().unwrap_err().to_string()
}

#[test]
fn any_number_of_targets_with_their_own_settings() {
    let c = raw(&[
        ("BRIDGE_TARGETS", " crm , audit-2,logging"),
        ("BRIDGE_TARGET_CRM_URL", "https://crm.example/hook"),
        ("BRIDGE_TARGET_CRM_TOKEN", "crm-token"),
        ("BRIDGE_TARGET_CRM_RATE_LIMIT", "5"),
        ("BRIDGE_TARGET_AUDIT_2_URL", "http://audit/x"),
        ("BRIDGE_TARGET_AUDIT_2_BODY", "envelope"),
        ("BRIDGE_LOG_API_URL", "http://logs/x"),
        ("BRIDGE_TARGET_LOGGING_BODY", "raw"),
    ])
    .worker_config()
    .unwrap();
    let t = &c.targets;
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].name.as_str(), "crm");
    assert_eq!(t[0].token.as_ref().unwrap().expose(), "crm-token");
    assert_eq!(t[0].rate_limit.unwrap().get(), 5);
    assert_eq!(t[0].body, BodyShape::Raw, "_BODY defaults to raw");
    assert_eq!(t[1].name.as_str(), "audit-2");
    assert_eq!(t[1].body, BodyShape::Envelope);
    assert_eq!(
        t[2].body,
        BodyShape::Raw,
        "_BODY overrides the default shape"
    );
    assert_eq!(t[2].url.as_str(), "http://logs/x");
}

#[test]
fn default_targets_take_either_spelling_but_not_both() {
    let c = raw(&[
        ("BRIDGE_TARGET_USER_MANAGEMENT_URL", "http://u/x"),
        ("BRIDGE_LOG_API_URL", "http://l/x"),
        ("BRIDGE_TARGET_LOGGING_TOKEN", "t"),
    ])
    .worker_config()
    .unwrap();
    assert_eq!(c.targets[0].url.as_str(), "http://u/x");
    assert_eq!(c.targets[1].token.as_ref().unwrap().expose(), "t");

    for (old, new) in [
        ("BRIDGE_USER_API_URL", "BRIDGE_TARGET_USER_MANAGEMENT_URL"),
        ("BRIDGE_LOG_API_URL", "BRIDGE_TARGET_LOGGING_URL"),
        (
            "BRIDGE_USER_API_TOKEN",
            "BRIDGE_TARGET_USER_MANAGEMENT_TOKEN",
        ),
        (
            "BRIDGE_LOG_API_RATE_LIMIT",
            "BRIDGE_TARGET_LOGGING_RATE_LIMIT",
        ),
    ] {
        let mut pairs = URLS.to_vec();
        pairs.extend([(old, "http://a/b"), (new, "http://a/b")]);
        let e = problems(&pairs);
        assert!(e.contains(old) && e.contains(new), "{e}");
        assert!(e.contains("both set"), "{e}");
    }
}

#[test]
fn bad_target_lists_are_named() {
    for list in ["Billing", "crm,crm", "crm,,logging", "a_b", "crm,"] {
        let e = problems(&[
            ("BRIDGE_TARGETS", list),
            ("BRIDGE_TARGET_CRM_URL", "http://c/"),
        ]);
        assert!(e.contains("BRIDGE_TARGETS"), "{list}: {e}");
    }
    assert!(problems(&[("BRIDGE_TARGETS", "crm,crm")]).contains("listed twice"));
    let e = problems(&[("BRIDGE_TARGETS", "crm")]);
    assert!(e.contains("BRIDGE_TARGET_CRM_URL is required"), "{e}");
    let e = problems(&[
        ("BRIDGE_TARGETS", "crm"),
        ("BRIDGE_TARGET_CRM_URL", "http://c/"),
        ("BRIDGE_TARGET_CRM_BODY", "json"),
        ("BRIDGE_TARGET_CRM_RATE_LIMIT", "4294967296"),
    ]);
    assert!(e.contains("BRIDGE_TARGET_CRM_BODY"), "{e}");
    assert!(e.contains("BRIDGE_TARGET_CRM_RATE_LIMIT"), "{e}");
}

#[test]
fn unlisted_targets_settings_are_not_required() {
    let c = raw(&[
        ("BRIDGE_TARGETS", "solo"),
        ("BRIDGE_TARGET_SOLO_URL", "http://s/"),
    ])
    .worker_config()
    .unwrap();
    assert_eq!(c.targets.len(), 1);
}

#[test]
fn a_token_that_is_no_header_value_is_named_not_shown() {
    for (var, token) in [
        ("BRIDGE_USER_API_TOKEN", "abc\ndef-secret"),
        ("BRIDGE_TARGET_LOGGING_TOKEN", "x\r\nInjected: secret"),
        ("BRIDGE_USER_API_TOKEN", "nul\0secret"),
    ] {
        let mut pairs = URLS.to_vec();
        pairs.push((var, token));
        let e = problems(&pairs);
        assert!(e.contains(var), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}

#[test]
fn url_credentials_never_appear_in_errors_or_debug() {
    let cases = [
        ("BRIDGE_USER_API_URL", "ftp://user:hunter2@host/x"),
        ("BRIDGE_USER_API_URL", "http://user:hunter2@/x"),
        ("BRIDGE_USER_API_URL", "http://user:hunter2@host:99999/x"),
        ("BRIDGE_AMQP_URL", "amqp://u:hunter2@h/?heartbeat=ten"),
        ("BRIDGE_AMQP_URL", "amqp:u:hunter2@h"),
        ("BRIDGE_AMQP_URL", "http://u:hunter2@h/"),
    ];
    for (var, value) in cases {
        let mut pairs = URLS.to_vec();
        pairs.retain(|(k, _)| *k != var);
        pairs.push((var, value));
        let e = problems(&pairs);
        assert!(e.contains(var), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    let c = raw(&[
        ("BRIDGE_USER_API_URL", "http://user:hunter2@host/x"),
        ("BRIDGE_LOG_API_URL", "http://tokenonly@host/x"),
    ])
    .worker_config()
    .unwrap();
    let debug = format!("{c:?} {:?}", raw(&[("BRIDGE_USER_API_TOKEN", "hunter2")]));
    assert!(
        !debug.contains("hunter2") && !debug.contains("tokenonly"),
        "{debug}"
    );
    assert_eq!(c.targets[0].url.password(), Some("hunter2"), "still used");
}

#[test]
fn a_token_and_url_credentials_are_one_too_many() {
    let e = problems(&[
        ("BRIDGE_USER_API_URL", "http://u:hunter2@h/x"),
        ("BRIDGE_USER_API_TOKEN", "tok-secret"),
        URLS[1],
    ]);
    assert!(e.contains("BRIDGE_USER_API_TOKEN") && e.contains("BRIDGE_USER_API_URL"));
    assert!(!e.contains("hunter2") && !e.contains("tok-secret"), "{e}");
}

#[test]
fn the_dlq_must_differ_from_the_queue() {
    let mut pairs = URLS.to_vec();
    pairs.extend([("BRIDGE_QUEUE", "q"), ("BRIDGE_DLQ", "q")]);
    let e = problems(&pairs);
    assert!(
        e.contains("BRIDGE_DLQ") && e.contains("BRIDGE_QUEUE"),
        "{e}"
    );
    let e = raw(&[("BRIDGE_DLQ", "bridge.inbound")])
        .broker_config()
        .unwrap_err();
    assert!(e.to_string().contains("BRIDGE_DLQ"), "{e}");
}

#[test]
fn durations_are_bounded() {
    for (var, bad, good) in [
        ("BRIDGE_OUTAGE_PAUSE_MS", "18446744073709551615", "86400000"),
        ("BRIDGE_OUTAGE_PAUSE_MS", "86400001", "0"),
        (
            "BRIDGE_SHUTDOWN_GRACE_MS",
            "99999999999999999999999",
            "86400000",
        ),
        ("BRIDGE_SHUTDOWN_GRACE_MS", "86400001", "0"),
        ("BRIDGE_HTTP_TIMEOUT_MS", "600001", "600000"),
        ("BRIDGE_HTTP_TIMEOUT_MS", "0", "1"),
        ("BRIDGE_RETRY_BACKOFF_MS", "30001", "30000"),
        ("BRIDGE_RETRY_BACKOFF_MS", "18446744073709551615", "0"),
    ] {
        let mut pairs = URLS.to_vec();
        pairs.push((var, bad));
        let e = problems(&pairs);
        assert!(e.contains(var) && e.contains("at "), "{var}={bad}: {e}");
        pairs.pop();
        pairs.push((var, good));
        assert!(raw(&pairs).worker_config().is_ok(), "{var}={good}");
    }
}

#[test]
fn amqp_url_lists_and_redaction() {
    let c = raw(&[(
        "BRIDGE_AMQP_URL",
        "amqp://u:p1@a:5681/%2f, amqp://u:p2@b:5682/%2f?frame_max=65536",
    )])
    .broker_config()
    .unwrap();
    let nodes: Vec<_> = c.nodes.iter().map(AmqpUri::node).collect();
    assert_eq!(nodes, ["a:5681", "b:5682"]);
    assert_eq!(c.nodes[1].0.query.frame_max, Some(65536));
    assert_eq!(c.nodes[1].0.query.heartbeat, Some(10));
    for bad in [
        "amqp://u:secret@h/?heartbeat=ten",
        "amqp://guest:guest@h/,amqp://u:secret@h2/?frame_max=x",
        "amqp://u:secret@h/,",
        "http://u:secret@h/",
    ] {
        let e = raw(&[("BRIDGE_AMQP_URL", bad)])
            .broker_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("BRIDGE_AMQP_URL"), "{e}");
        assert!(!e.contains("secret"), "{bad}: {e}");
    }
}

#[test]
fn later_values_override_earlier_ones() {
    let c = raw(&[
        URLS[0],
        URLS[1],
        ("BRIDGE_PREFETCH", "5"),
        ("BRIDGE_PREFETCH", "7"),
    ])
    .worker_config()
    .unwrap();
    assert_eq!(c.prefetch, 7);
}

#[test]
fn broker_config_does_not_need_api_urls() {
    assert!(raw(&[]).broker_config().is_ok());
    let e = raw(&[("BRIDGE_QUEUE_TYPE", "x")])
        .broker_config()
        .unwrap_err();
    assert!(e.to_string().contains("BRIDGE_QUEUE_TYPE"));
}

#[test]
fn tls_files_are_checked_for_every_command() {
    let mut pairs = URLS.to_vec();
    pairs.push(("BRIDGE_CA_FILE", "/nonexistent/ca.pem"));
    pairs.push(("BRIDGE_TLS_KEY_FILE", "/nonexistent/client.key"));
    let e = raw(&pairs).worker_config().unwrap_err().to_string();
    assert!(
        e.contains("BRIDGE_CA_FILE") && e.contains("BRIDGE_TLS_CERT_FILE"),
        "{e}"
    );
    let e = raw(&pairs[2..]).broker_config().unwrap_err().to_string();
    assert!(e.contains("BRIDGE_CA_FILE"), "{e}");
    assert!(raw(&URLS).worker_config().unwrap().broker.tls.is_default());
}

#[test]
fn the_byte_budget_takes_bytes_or_binary_units() {
    for (value, bytes) in [
        ("1", 1u64),
        ("4194304", 4 << 20),
        ("512KiB", 512 << 10),
        ("64MiB", 64 << 20),
        ("2 GiB", 2 << 30),
        ("1TiB", 1 << 40),
    ] {
        let c = raw(&[
            ("BRIDGE_USER_API_URL", "http://127.0.0.1:9/u"),
            ("BRIDGE_LOG_API_URL", "http://127.0.0.1:9/l"),
            ("BRIDGE_MAX_IN_FLIGHT_BYTES", value),
        ])
        .worker_config()
        .unwrap();
        assert_eq!(c.max_in_flight_bytes, bytes, "{value}");
    }
}
