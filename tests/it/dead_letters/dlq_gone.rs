//! The DLQ deleted under a running worker: the worker declares it again and
//! dead-letters, instead of cycling the message through the inbound queue
//! (calling the APIs again each time) and logging its body.

use std::time::Duration;

use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn a_dlq_deleted_under_the_worker_is_declared_again_and_no_body_is_logged() {
    let broker = Broker::new("dlqgone").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    log.always(Reply::status(422));
    let mut settings = fast_settings(&user, &log);
    // Ask for lapin's returned-message log explicitly: it must stay silent.
    settings.push((
        "RUST_LOG".into(),
        "info,lapin=warn,lapin::returned_messages=trace".into(),
    ));
    let worker = Process::start(&broker, settings).await;
    broker.delete(&broker.dlq).await;

    let marker = format!("body-marker-{}", uuid::Uuid::new_v4().simple());
    let body = format!("{{\"secret_payload\":\"{marker}\"}}");
    broker
        .publish(
            body.as_bytes(),
            BasicProperties::default().with_message_id("gone-1".into()),
        )
        .await;
    broker
        .wait_depth(&broker.dlq, 1, Duration::from_secs(20))
        .await;
    let d = &broker.drain(&broker.dlq).await[0];
    assert_eq!(d.data, body.as_bytes());
    assert_eq!(
        header_text(d, "x-bridge-failed-targets").as_deref(),
        Some("logging")
    );
    assert_eq!(user.count(), 1, "the API that accepted it was called once");
    assert_eq!(log.count(), 1);
    assert_eq!(broker.depth(&broker.queue).await, 0);
    let text = worker.log_text();
    assert!(text.contains("declaring it again"), "{text}");
    // lapin's Debug of a returned message prints the body as a byte list.
    let as_bytes = format!("{:?}", marker.as_bytes());
    let as_bytes = as_bytes.trim_matches(['[', ']']);
    assert!(
        !text.contains(&marker) && !text.contains(as_bytes),
        "a body reached the log:\n{text}"
    );
    assert!(!text.contains("Server returned us a message"), "{text}");
}
