//! HTTP proxies from the environment: an `http://` target through
//! `HTTP_PROXY` (the request in absolute form, with the proxy's
//! credentials), `NO_PROXY` going direct. The `https://` tunnel is in
//! `tls.rs`, next to the HTTPS APIs it needs.

use fanout_bridge::metrics::Outcome;
use lapin::BasicProperties;

use crate::helpers::*;

fn message(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(id.into())
}

#[tokio::test]
async fn http_apis_behind_http_proxy_get_their_requests_through_it() {
    let broker = Broker::new("proxy.forward").await;
    // One fake plays the proxy: it receives both targets' requests.
    let (proxy, unused) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&unused, &unused);
    settings.retain(|(k, _)| !k.ends_with("_API_URL"));
    settings.extend(vars(&[
        ("BRIDGE_USER_API_URL", "http://users.invalid/v1/users"),
        ("BRIDGE_LOG_API_URL", "http://logs.invalid:8081/v1/logs"),
        ("BRIDGE_USER_API_TOKEN", "user-token"),
    ]));
    settings.push(("http_proxy".into(), format!("http://fwd:pw@{}", proxy.addr)));
    let worker = Worker::start(&broker, settings).await;
    broker.publish(br#"{"a":1}"#, message("fwd-1")).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!(unused.count(), 0);
    let mut got: Vec<String> = proxy
        .received()
        .iter()
        .map(|r| {
            format!(
                "{} host={:?} proxy-auth={:?} auth={:?}",
                r.path,
                r.header("host"),
                r.header("proxy-authorization"),
                r.header("authorization")
            )
        })
        .collect();
    got.sort();
    // base64("fwd:pw"); the target's own token travels beside it.
    assert_eq!(
        got,
        [
            r#"/v1/logs host=Some("logs.invalid:8081") proxy-auth=Some("Basic ZndkOnB3") auth=None"#,
            r#"/v1/users host=Some("users.invalid") proxy-auth=Some("Basic ZndkOnB3") auth=Some("Bearer user-token")"#,
        ]
    );
    worker.stop().await;
}

/// A worker whose `HTTP_PROXY` refuses connections, with `extra` settings,
/// after one message.
async fn one_message_behind_a_dead_proxy(
    name: &str,
    extra: &[(&str, &str)],
) -> (Broker, FakeApi, FakeApi, Worker) {
    let broker = Broker::new(name).await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.push((
        "HTTP_PROXY".into(),
        format!("http://127.0.0.1:{CLOSED_PORT}"),
    ));
    settings.extend(vars(extra));
    let worker = Worker::start(&broker, settings).await;
    broker.publish(br#"{"a":1}"#, message(name)).await;
    worker.wait_settled(1).await;
    (broker, user, log, worker)
}

#[tokio::test]
async fn no_proxy_hosts_are_called_directly() {
    // Only NO_PROXY lets the calls through.
    let (_broker, user, log, worker) = one_message_behind_a_dead_proxy(
        "proxy.bypass",
        &[
            ("NO_PROXY", "example.test, 127.0.0.1"),
            ("BRIDGE_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!((user.count(), log.count()), (1, 1));
    worker.stop().await;
}

#[tokio::test]
async fn a_proxy_that_refuses_is_a_connection_failure_and_the_message_goes_to_the_dlq() {
    let (broker, user, log, worker) =
        one_message_behind_a_dead_proxy("proxy.down", &[("BRIDGE_MAX_ATTEMPTS", "2")]).await;
    assert_eq!(worker.count(Outcome::DeadLettered), 1);
    assert_eq!((user.count(), log.count()), (0, 0));
    let dead = broker.drain(&broker.dlq).await;
    let error = header_text(&dead[0], "x-bridge-error").unwrap();
    assert!(error.contains("connection failed"), "{error}");
    worker.stop().await;
}
