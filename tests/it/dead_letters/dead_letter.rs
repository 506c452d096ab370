//! Bad input and failed calls end in the DLQ with their reason, body byte for
//! byte and properties kept (a DLQ deleted under the worker: dlq_gone.rs).

use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn invalid_json_goes_to_the_dlq_without_calling_any_api() {
    let app = TestApp::spawn("badjson").await;

    let body = b"{\"email\": \"ada@example.com\", ";
    app.broker.publish(body, BasicProperties::default()).await;
    app.worker.wait_settled(1).await;

    assert_eq!(
        app.user.count() + app.log.count(),
        0,
        "no API is called for a bad body"
    );
    let dead = app.broker.drain(&app.broker.dlq).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(&d.data[..], &body[..]);
    assert_dead_lettered(
        d,
        &DeadLettered {
            reason: "invalid_payload",
            failed: "",
            done: "",
            // Says where the JSON breaks.
            error: "line 1 column",
            attempts: 0,
        },
    );
    let id = d.properties.message_id().as_ref().unwrap().to_string();
    assert!(id.starts_with("sha256:"), "gains M as message_id: {id}");
    app.worker.stop().await;
}

#[tokio::test]
async fn non_utf8_and_empty_bodies_are_invalid_payloads() {
    let broker = Broker::new("notutf8").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    broker
        .publish(b"{\"a\":\"\xff\xfe\"}", BasicProperties::default())
        .await;
    broker.publish(b"", BasicProperties::default()).await;
    worker.wait_settled(2).await;
    worker.stop().await;

    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(dead.len(), 2);
    let errors: Vec<String> = dead
        .iter()
        .map(|d| header_text(d, "x-bridge-error").unwrap())
        .collect();
    assert!(errors.iter().any(|e| e.contains("not UTF-8")), "{errors:?}");
    assert!(
        dead.iter().any(|d| d.data == b"{\"a\":\"\xff\xfe\"}"),
        "body kept byte for byte"
    );
    assert_eq!(user.count() + log.count(), 0);
}

#[tokio::test]
async fn dead_lettered_copy_keeps_the_properties() {
    let broker = Broker::new("props").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    log.always(Reply::status(422));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    let props = BasicProperties::default()
        .with_message_id("keep-1".into())
        .with_correlation_id("corr-9".into())
        .with_type("user.updated".into())
        .with_content_type("application/json".into())
        .with_headers(headers(&[("tenant", "acme")]));
    broker.publish(b"{\"id\":9}", props).await;
    worker.wait_settled(1).await;
    worker.stop().await;

    let d = &broker.drain(&broker.dlq).await[0];
    let p = &d.properties;
    assert_eq!(p.message_id().as_ref().unwrap().as_str(), "keep-1");
    assert_eq!(p.correlation_id().as_ref().unwrap().as_str(), "corr-9");
    assert_eq!(p.kind().as_ref().unwrap().as_str(), "user.updated");
    assert_eq!(
        p.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(header_text(d, "tenant").as_deref(), Some("acme"));
    assert_eq!(
        header_text(d, "x-bridge-done-targets").as_deref(),
        Some("user-management")
    );
    assert_eq!(
        header_text(d, "x-bridge-error").as_deref(),
        Some("logging: HTTP 422 after 1 attempt")
    );
}

#[tokio::test]
async fn a_message_id_that_cannot_be_a_header_is_keyed_by_its_bytes() {
    let broker = Broker::new("badid").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    // The body is valid: invalid_payload is for bodies, so the message goes
    // through under a key derived from the id's bytes.
    broker
        .publish(
            b"{}",
            BasicProperties::default().with_message_id("a\r\nb".into()),
        )
        .await;
    worker.wait_settled(1).await;
    worker.stop().await;

    assert_eq!((user.count(), log.count()), (1, 1));
    let key = fanout_bridge::domain::MessageId::of_raw_id(b"a\r\nb");
    assert_eq!(user.keys(), [key.as_str().to_owned()].into());
    assert_eq!(log.keys(), [key.as_str().to_owned()].into());
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}
