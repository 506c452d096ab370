//! A read never silently changes a message (issue 17): short strings that are
//! not UTF-8 (header names, `message_id`, `type`, `correlation_id`, …) are
//! carried byte for byte by every copy this program publishes. They are
//! published with the raw client and read back raw (`basic.get`), so the
//! comparison is of the bytes on the wire, not of what lapin makes of them.
//! On the old, lossy decoding (U+FFFD) both tests fail: the copies carry
//! U+FFFD, and the two names below merge into one.

use sha2::Digest;

use crate::{
    helpers::*,
    raw_amqp::{wire, Props, RawConnection},
};

/// Two header names that differ only in bytes that are not UTF-8, among
/// others. In the order lapin writes a table (sorted by the parsed names; a
/// byte that is not UTF-8 sorts after any text), so that a copy's table is
/// the same bytes.
fn headers(extra: &[(&'static [u8], Vec<u8>)]) -> Vec<(&'static [u8], Vec<u8>)> {
    let mut h = vec![(&b"tenant"[..], wire::long_string_value(b"acme"))];
    h.extend(extra.iter().cloned());
    h.push((b"x-\xff\xfd", wire::long_string_value(b"first")));
    h.push((b"x-\xff\xfe", wire::long_string_value(b"second")));
    h
}

#[tokio::test]
async fn dlq_stats_and_peek_rotate_short_strings_that_are_not_utf8_byte_for_byte() {
    let broker = Broker::new("bytes.rotate").await;
    broker.declare().await;
    let mut raw = RawConnection::connect().await;
    let props = Props {
        content_type: Some(b"application/json; charset=\xff".to_vec()),
        headers: Some(wire::table(&headers(&[
            (b"x-bridge-reason", wire::long_string_value(b"api_failed")),
            (b"x-bridge-\xfe", wire::long_string_value(b"v")),
        ]))),
        delivery_mode: Some(2),
        correlation_id: Some(b"corr-\xfe".to_vec()),
        reply_to: Some(b"reply-\xc3".to_vec()),
        message_id: Some(b"id-\xff!".to_vec()),
        kind: Some(b"user.\xffregistered".to_vec()),
        // U+10FF41 as valid UTF-8: a char in the parser's escape range.
        app_id: Some("app-\u{10FF41}".as_bytes().to_vec()),
        ..Props::default()
    };
    let body = b"{\"x\":1}";
    raw.publish_to_queue(&broker.dlq, &props, body).await;

    let v = broker.vars();
    let (code, stdout, stderr) = run_bin(&["dlq", "stats"], &v, b"").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("depth: 1"), "{stdout}");
    assert!(stdout.contains("api_failed: 1"), "{stdout}");

    // peek shows them readably (\xHH) and exactly (hex), and rotates too.
    let (code, stdout, stderr) = run_bin(&["dlq", "peek"], &v, b"").await;
    assert_eq!(code, 0, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["message_id"], "id-\\xFF!");
    assert_eq!(line["message_id_hex"], "69642dff21");
    assert_eq!(line["correlation_id"], "corr-\\xFE");
    assert_eq!(line["correlation_id_hex"], "636f72722dfe");
    assert_eq!(line["type"], "user.\\xFFregistered");
    assert_eq!(line["headers"]["x-bridge-\\xFE"], "v");
    assert_eq!(
        line["header_names_hex"]["x-bridge-\\xFE"],
        "782d6272696467652dfe"
    );
    assert_eq!(line["headers"]["x-bridge-reason"], "api_failed");
    assert!(line.get("type_hex").is_some());

    let got = raw.get(&broker.dlq).await.expect("the rotated copy");
    assert_eq!(&got.body[..], &body[..]);
    assert_eq!(
        Props::decode(&got.properties)
            .headers
            .map(|t| wire::entries(&t)),
        props.headers.as_deref().map(wire::entries),
        "the header table, entry by entry"
    );
    assert_eq!(
        got.properties,
        props.encode(),
        "the copy's properties are the bytes that were published"
    );
    assert!(raw.get(&broker.dlq).await.is_none(), "one message");
    raw.close().await;
}

#[tokio::test]
async fn the_workers_dead_letter_copy_keeps_short_strings_that_are_not_utf8_byte_for_byte() {
    let broker = Broker::new("bytes.deadletter").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::status(400));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    let mut raw = RawConnection::connect().await;
    let props = Props {
        headers: Some(wire::table(&headers(&[]))),
        delivery_mode: Some(2),
        correlation_id: Some(b"corr-\xfe".to_vec()),
        // Now that a binary id no longer stops the message, the copy of one
        // that an API refused must keep it byte for byte too.
        message_id: Some(b"bytes-dl-\xff\xfe".to_vec()),
        kind: Some(b"user.\xffregistered".to_vec()),
        app_id: Some(b"app-\xc3".to_vec()),
        ..Props::default()
    };
    raw.publish_to_queue(&broker.queue, &props, b"{\"x\":1}")
        .await;
    worker.wait_settled(1).await;
    worker.stop().await;
    let key = format!(
        "raw-sha256:{:x}",
        sha2::Sha256::digest(b"bytes-dl-\xff\xfe")
    );
    assert_eq!(user.keys(), [key].into(), "called under the id's key");

    let got = raw.get(&broker.dlq).await.expect("the dead-letter copy");
    assert_eq!(&got.body[..], b"{\"x\":1}");
    let copy = Props::decode(&got.properties);
    let entries = wire::entries(copy.headers.as_deref().unwrap());
    let sent = wire::entries(props.headers.as_deref().unwrap());
    for (name, value) in &sent {
        assert!(
            entries.contains(&(name.clone(), value.clone())),
            "header {name:x?} kept with its exact bytes in {entries:x?}"
        );
    }
    let reason = entries
        .iter()
        .find(|(n, _)| n == b"x-bridge-reason")
        .map(|(_, v)| v.clone());
    assert_eq!(reason, Some(wire::long_string_value(b"api_failed")));
    assert_eq!(copy.correlation_id, props.correlation_id);
    assert_eq!(copy.message_id, props.message_id);
    assert_eq!(copy.kind, props.kind);
    assert_eq!(copy.app_id, props.app_id);
    raw.close().await;
}
