//! No single message can stop the queue: messages that RabbitMQ accepts and
//! forwards but that lapin's parser used to refuse (short strings that are
//! not UTF-8) or could not survive (tables nested thousands deep) are
//! published byte by byte with the raw client; each is taken by the running
//! worker (acked, or dead-lettered with its reason when its body is bad) and
//! the messages behind it are acked, on the same connection.
//!
//! Each test publishes, per poison class, one poison message with a valid
//! body (delivered and acked) and one with a body that is not JSON
//! (dead-lettered `invalid_payload`, which proves that lapin can serialise
//! what it parsed), then normal messages.

use std::{collections::HashSet, time::Duration};

use fanout_bridge::metrics::Outcome;
use lapin::{message::Delivery, types::AMQPValue};

use crate::{
    helpers::*,
    raw_amqp::{wire, Props, RawConnection},
};

const NORMAL: usize = 3;
const DEADLINE: Duration = Duration::from_secs(20);

/// A running worker on fresh queues, watched for reconnects.
struct Case {
    broker: Broker,
    user: FakeApi,
    log: FakeApi,
    worker: Worker,
    watch: ConnectionWatch,
    raw: RawConnection,
}

impl Case {
    async fn start(name: &str) -> Case {
        Case::start_with(name, Vec::new()).await
    }

    async fn start_with(name: &str, settings: Vec<(String, String)>) -> Case {
        let broker = Broker::new(name).await;
        let (user, log) = (FakeApi::start().await, FakeApi::start().await);
        let mut vars = fast_settings(&user, &log);
        vars.extend(settings);
        let worker = Worker::start(&broker, vars).await;
        let watch = ConnectionWatch::start(&worker.metrics);
        let raw = RawConnection::connect().await;
        Case {
            broker,
            user,
            log,
            worker,
            watch,
            raw,
        }
    }

    /// Publishes the poison message twice (a valid body, then one that is not
    /// JSON) with `props`, to the inbound queue.
    async fn publish_poison(&mut self, props: &Props) {
        let queue = self.broker.queue.clone();
        self.raw
            .publish_to_queue(&queue, props, b"{\"poison\":1}")
            .await;
        self.raw
            .publish_to_queue(&queue, props, b"{\"poison\":")
            .await;
    }

    /// Publishes the normal messages behind the poison ones, waits until
    /// everything is settled, and checks that nothing reconnected. `poison_key`
    /// is the Idempotency-Key the valid poison message reaches the APIs with.
    /// Returns the DLQ copy of the invalid one.
    async fn finish(self, name: &str, poison_key: &str) -> Delivery {
        let mut dead = self.settle(name, poison_key).await;
        assert_eq!(dead.len(), 1, "one DLQ copy");
        let d = dead.pop().unwrap();
        assert_eq!(&d.data[..], b"{\"poison\":");
        d
    }

    async fn settle(self, name: &str, poison_key: &str) -> Vec<Delivery> {
        let Case {
            broker,
            user,
            log,
            worker,
            watch,
            raw,
        } = self;
        raw.close().await;
        let mut ids = broker.publish_numbered(name, 0..NORMAL).await;
        ids.insert(poison_key.to_owned());
        wait_until("every message reached both APIs", DEADLINE, || {
            assert!(
                !watch.dropped(),
                "the worker lost its broker connection (bridge_broker_connected left 1)"
            );
            let done = keys(&user) == ids && keys(&log) == ids;
            async move { done }
        })
        .await;
        wait_until("every message settled", DEADLINE, || {
            let settled = worker.settled();
            async move { settled == NORMAL as u64 + 2 }
        })
        .await;
        assert_eq!(
            (
                worker.count(Outcome::Acked),
                worker.count(Outcome::DeadLettered),
                worker.count(Outcome::Requeued)
            ),
            (NORMAL as u64 + 1, 1, 0),
            "the normal ones and the valid poison message acked, the invalid one dead-lettered"
        );
        assert!(
            !watch.dropped(),
            "the worker kept its broker connection (bridge_broker_connected never left 1)"
        );
        assert_eq!(worker.metrics.broker_connected.get(), 1, "still connected");
        worker.stop().await;
        assert_eq!(
            broker.depth(&broker.queue).await,
            0,
            "the inbound queue is empty"
        );
        let dead = broker.drain(&broker.dlq).await;
        for d in &dead {
            assert_eq!(
                header_text(d, "x-bridge-reason").as_deref(),
                Some("invalid_payload")
            );
            assert!(header_text(d, "x-bridge-error").is_some());
        }
        dead
    }
}

/// The Idempotency-Keys an API received (as text, lossily: a key may carry
/// U+FFFD as its UTF-8 bytes).
fn keys(api: &FakeApi) -> HashSet<String> {
    api.received()
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key"))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn header<'a>(d: &'a Delivery, name: &str) -> &'a AMQPValue {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
        .unwrap_or_else(|| panic!("header {name:?} in {:?}", d.properties.headers()))
}

#[tokio::test]
async fn a_header_name_that_is_not_utf8_is_taken_and_the_queue_moves_on() {
    let mut case = Case::start("poison.name").await;
    // What pika sends for headers={b"x-\xff\xfe": "v"}.
    let props = Props {
        headers: Some(wire::table(&[
            (b"x-\xff\xfe", wire::long_string_value(b"v")),
            (b"tenant", wire::long_string_value(b"acme")),
        ])),
        ..Props::with_id("poison-name")
    };
    case.publish_poison(&props).await;
    let d = case.finish("name", "poison-name").await;
    // The name's bytes are kept (each byte that is not UTF-8 as U+10FF00 +
    // byte, see patches/README.md); its value and the other headers too.
    assert_eq!(
        header(&d, "x-\u{10FFFF}\u{10FFFE}"),
        &AMQPValue::LongString("v".into())
    );
    assert_eq!(header_text(&d, "tenant").as_deref(), Some("acme"));
}

/// The Idempotency-Key of a `message_id` whose bytes are not UTF-8.
fn raw_key(id: &[u8]) -> String {
    use sha2::Digest;
    format!("raw-sha256:{:x}", sha2::Sha256::digest(id))
}

#[tokio::test]
async fn property_values_that_are_not_utf8_are_taken_and_a_message_id_among_them_is_a_key() {
    let mut case = Case::start("poison.props").await;
    let props = Props {
        content_type: Some(b"application/json; charset=\xff".to_vec()),
        content_encoding: Some(b"\xfe".to_vec()),
        correlation_id: Some(b"corr-\xff".to_vec()),
        reply_to: Some(b"reply-\xff".to_vec()),
        message_id: Some(b"poison-\xff".to_vec()),
        kind: Some(b"user.\xffregistered".to_vec()),
        app_id: Some(b"app-\xc3".to_vec()),
        ..Props::default()
    };
    case.publish_poison(&props).await;
    // A message_id that is not UTF-8 is keyed by its exact bytes (its text
    // form is not what the publisher sent); the valid body is delivered
    // under that key, and X-Correlation-Id, which could only be sent
    // changed, is left out.
    let user = case.user.clone();
    let d = case.finish("props", &raw_key(b"poison-\xff")).await;
    let sent = user.received();
    assert!(
        sent.iter()
            .all(|r| !r.headers.contains_key("x-correlation-id")),
        "{sent:?}"
    );
    // The DLQ copy keeps their bytes, so it can be replayed.
    let p = &d.properties;
    let s = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.to_string());
    assert_eq!(s(p.message_id()).as_deref(), Some("poison-\u{10FFFF}"));
    assert_eq!(s(p.kind()).as_deref(), Some("user.\u{10FFFF}registered"));
    assert_eq!(s(p.correlation_id()).as_deref(), Some("corr-\u{10FFFF}"));
    assert_eq!(
        s(p.content_type()).as_deref(),
        Some("application/json; charset=\u{10FFFF}")
    );
    assert_eq!(s(p.content_encoding()).as_deref(), Some("\u{10FFFE}"));
    assert_eq!(s(p.reply_to()).as_deref(), Some("reply-\u{10FFFF}"));
    assert_eq!(s(p.app_id()).as_deref(), Some("app-\u{10FFC3}"));
}

#[tokio::test]
async fn a_full_length_short_string_that_is_not_utf8_still_fits_when_republished() {
    let mut case = Case::start("poison.long-short").await;
    // 255 bytes that are not UTF-8 are a String of 1,020 bytes (255 chars in
    // U+10FF00..=U+10FFFF), written back as the 255 bytes.
    let props = Props {
        message_id: Some(vec![0xff; 255]),
        headers: Some(wire::table(&[(
            &[0xfe; 255],
            wire::long_string_value(b"v"),
        )])),
        ..Props::default()
    };
    case.publish_poison(&props).await;
    let d = case.finish("long-short", &raw_key(&[0xff; 255])).await;
    assert_eq!(
        d.properties.message_id().as_ref().unwrap().as_str(),
        "\u{10FFFF}".repeat(255)
    );
    assert_eq!(
        header(&d, &"\u{10FFFE}".repeat(255)),
        &AMQPValue::LongString("v".into())
    );
}

/// A `message_id` that is not UTF-8 is still the publisher's id: both APIs
/// get the same key, derived from its exact bytes, on every delivery, and
/// another id (even one that would read the same lossily) gets another key.
#[tokio::test]
async fn a_message_id_that_is_not_utf8_is_one_stable_key_for_both_apis() {
    let case = Case::start("poison.rawid").await;
    let Case {
        broker,
        user,
        log,
        worker,
        watch,
        mut raw,
    } = case;
    let props = |id: &[u8]| Props {
        message_id: Some(id.to_vec()),
        ..Props::default()
    };
    // The same message twice (a redelivery or a replay looks like this),
    // then one whose id differs only in a byte that is not UTF-8.
    for id in [&b"id-\xff\xfe"[..], b"id-\xff\xfe", b"id-\xff\xfd"] {
        raw.publish_to_queue(&broker.queue, &props(id), b"{\"a\":1}")
            .await;
    }
    raw.close().await;
    worker.wait_settled(3).await;
    assert_eq!(
        (
            worker.count(Outcome::Acked),
            worker.count(Outcome::DeadLettered)
        ),
        (3, 0)
    );
    assert!(!watch.dropped());
    worker.stop().await;

    let (key, other) = (raw_key(b"id-\xff\xfe"), raw_key(b"id-\xff\xfd"));
    for api in [&user, &log] {
        let per_key = api.per_key();
        assert_eq!(
            (per_key.get(&key), per_key.get(&other), per_key.len()),
            (Some(&2), Some(&1), 2),
            "{per_key:?}"
        );
    }
    for r in log.received() {
        let envelope = r.json();
        assert_eq!(
            envelope["message_id"].as_str(),
            r.header("idempotency-key").as_deref(),
            "the envelope names the message by its key"
        );
        assert_eq!(envelope["data"], serde_json::json!({"a": 1}));
    }
    assert_eq!(broker.depth(&broker.queue).await, 0);
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

#[tokio::test]
async fn a_routing_key_that_is_not_utf8_is_taken_and_the_queue_moves_on() {
    // Basic.Deliver carries the routing key the message was published with;
    // through a fanout exchange it can be any bytes. (The broker refuses
    // exchange and queue names that are not UTF-8.)
    let mut case = Case::start("poison.rk").await;
    let exchange = format!("{}.fanout", case.broker.queue);
    case.raw
        .exchange_declare(exchange.as_bytes(), "fanout")
        .await;
    let queue = case.broker.queue.clone();
    case.raw.queue_bind(&queue, exchange.as_bytes(), b"").await;
    let props = Props::with_id("poison-rk");
    for body in [&b"{\"poison\":1}"[..], b"{\"poison\":"] {
        let confirm = case
            .raw
            .publish(exchange.as_bytes(), b"rk-\xff\xfe", &props, body)
            .await;
        assert_eq!(confirm, crate::raw_amqp::Confirm::Ack);
    }
    case.raw.exchange_delete(exchange.as_bytes()).await;
    let d = case.finish("rk", "poison-rk").await;
    assert_eq!(
        d.properties.message_id().as_ref().unwrap().as_str(),
        "poison-rk"
    );
}

#[tokio::test]
async fn long_string_header_values_that_are_not_utf8_travel_byte_for_byte() {
    // Long strings are bytes in lapin (they always parsed); the worker must
    // not choke on one where it reads text (trace context, done targets).
    let mut case = Case::start("poison.longstr").await;
    let props = Props {
        headers: Some(wire::table(&[
            (b"blob", wire::long_string_value(b"\xff\xfe\x00bytes")),
            (b"traceparent", wire::long_string_value(b"00-\xff-\xfe-01")),
            (b"tracestate", wire::long_string_value(b"k=\xff")),
            (
                b"x-bridge-done-targets",
                wire::long_string_value(b"log\xffging"),
            ),
        ])),
        ..Props::with_id("poison-longstr")
    };
    case.publish_poison(&props).await;
    let user = case.user.clone();
    let d = case.finish("longstr", "poison-longstr").await;
    assert!(
        keys(&user).contains("poison-longstr"),
        "an unknown done target is ignored: the API is called"
    );
    // Read lossily (U+FFFD), they are no trace context the publisher sent:
    // left out, not passed on changed.
    for r in user.received() {
        assert!(
            !r.headers.contains_key("traceparent") && !r.headers.contains_key("tracestate"),
            "{:?}",
            r.headers
        );
    }
    assert_eq!(
        header(&d, "blob"),
        &AMQPValue::LongString(b"\xff\xfe\x00bytes".to_vec().into())
    );
    assert_eq!(
        header(&d, "traceparent"),
        &AMQPValue::LongString(b"00-\xff-\xfe-01".to_vec().into())
    );
}

/// Every field-value type RabbitMQ accepts in a header table (and forwards
/// unchanged), with its encoding and what lapin reads it as.
fn every_field_type() -> Vec<(&'static [u8], Vec<u8>, AMQPValue)> {
    use lapin::types::{DecimalValue, FieldArray, FieldTable};
    let mut inner = FieldTable::default();
    inner.insert("n".into(), AMQPValue::LongInt(1));
    vec![
        (b"t", wire::value(b't', &[1]), AMQPValue::Boolean(true)),
        (
            b"b",
            wire::value(b'b', &[0xff]),
            AMQPValue::ShortShortInt(-1),
        ),
        (
            b"B",
            wire::value(b'B', &[0xff]),
            AMQPValue::ShortShortUInt(255),
        ),
        (
            b"s",
            wire::value(b's', &[0xff, 0xfe]),
            AMQPValue::ShortInt(-2),
        ),
        (
            b"u",
            wire::value(b'u', &[0xff, 0xfe]),
            AMQPValue::ShortUInt(65534),
        ),
        (
            b"I",
            wire::value(b'I', &(-5i32).to_be_bytes()),
            AMQPValue::LongInt(-5),
        ),
        (
            b"i",
            wire::value(b'i', &u32::MAX.to_be_bytes()),
            AMQPValue::LongUInt(u32::MAX),
        ),
        (
            b"l",
            wire::value(b'l', &i64::MIN.to_be_bytes()),
            AMQPValue::LongLongInt(i64::MIN),
        ),
        // Not RabbitMQ's own tag for it, but accepted and forwarded.
        (
            b"L",
            wire::value(b'L', &7i64.to_be_bytes()),
            AMQPValue::LongLongInt(7),
        ),
        (
            b"f",
            wire::value(b'f', &1.5f32.to_be_bytes()),
            AMQPValue::Float(1.5),
        ),
        (
            b"d",
            wire::value(b'd', &(-2.25f64).to_be_bytes()),
            AMQPValue::Double(-2.25),
        ),
        (
            b"D",
            wire::value(b'D', &[2, 0, 0, 0x30, 0x39]),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        (
            b"T",
            wire::value(b'T', &u64::MAX.to_be_bytes()),
            AMQPValue::Timestamp(u64::MAX),
        ),
        (b"V", wire::value(b'V', &[]), AMQPValue::Void),
        (
            b"x",
            wire::value(b'x', &wire::long(b"\x00\xff\xfe")),
            AMQPValue::ByteArray(vec![0, 0xff, 0xfe].into()),
        ),
        (
            b"A",
            wire::value(
                b'A',
                &wire::long(
                    &[
                        wire::value(b'x', &wire::long(b"\xff")),
                        wire::value(b'V', &[]),
                    ]
                    .concat(),
                ),
            ),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::ByteArray(vec![0xff].into()),
                AMQPValue::Void,
            ])),
        ),
        (
            b"F",
            wire::value(
                b'F',
                &wire::table(&[(b"n", wire::value(b'I', &1i32.to_be_bytes()))]),
            ),
            AMQPValue::FieldTable(inner),
        ),
    ]
}

#[tokio::test]
async fn every_field_value_type_the_broker_forwards_is_taken_and_republished() {
    let mut case = Case::start("poison.types").await;
    let types = every_field_type();
    let entries: Vec<(&[u8], Vec<u8>)> = types.iter().map(|(k, v, _)| (*k, v.clone())).collect();
    let props = Props {
        headers: Some(wire::table(&entries)),
        ..Props::with_id("poison-types")
    };
    case.publish_poison(&props).await;
    let d = case.finish("types", "poison-types").await;
    // The DLQ copy, as lapin wrote it and the broker forwarded it, reads back
    // as the same values.
    for (name, _, value) in &types {
        assert_eq!(header(&d, std::str::from_utf8(name).unwrap()), value);
    }
}

#[tokio::test]
async fn a_header_table_nested_thousands_deep_is_taken_and_the_queue_moves_on() {
    // The broker forwards a table nested as deep as a frame allows; parsing
    // it recursively overflowed the stack and aborted the whole process.
    // Such a header frame is ~105 KB: take RabbitMQ's default frame size.
    let mut url = url::Url::parse(&amqp_url()).unwrap();
    url.query_pairs_mut().append_pair("frame_max", "131072");
    let settings = vec![("BRIDGE_AMQP_URL".to_owned(), url.to_string())];
    let mut case = Case::start_with("poison.deep", settings).await;
    let mut value = wire::long_string_value(b"bottom");
    for _ in 0..15_000 {
        value = wire::value(b'F', &wire::table(&[(b"k", value)]));
    }
    let props = Props {
        headers: Some(wire::table(&[
            (b"deep", value),
            (b"tenant", wire::long_string_value(b"acme")),
        ])),
        ..Props::with_id("poison-deep")
    };
    case.publish_poison(&props).await;
    let d = case.finish("deep", "poison-deep").await;
    assert_eq!(header_text(&d, "tenant").as_deref(), Some("acme"));
    // 64 levels are tables; what is below is kept as bytes.
    let mut v = header(&d, "deep");
    let mut levels = 0;
    while let AMQPValue::FieldTable(t) = v {
        v = &t.inner()["k"];
        levels += 1;
    }
    assert_eq!(levels, 64);
    assert!(matches!(v, AMQPValue::ByteArray(b) if b.as_slice().ends_with(b"bottom")));
}

/// The broker refuses a field-value type it does not know (the spec's 'U',
/// any other byte): such a message never reaches a queue, so the worker
/// never meets one.
#[tokio::test]
async fn the_broker_refuses_field_types_it_does_not_know() {
    let broker = Broker::new("poison.unknown").await;
    broker.declare().await;
    for tag in [b'U', b'Z'] {
        let queue = broker.queue.clone();
        let props = Props {
            headers: Some(wire::table(&[(b"u", wire::value(tag, &[0, 1]))])),
            ..Props::with_id("unknown")
        };
        let published = tokio::spawn(async move {
            let mut raw = RawConnection::connect().await;
            raw.publish(b"", queue.as_bytes(), &props, b"{}").await
        })
        .await;
        assert!(
            published.is_err(),
            "the broker closed the connection on type {}",
            tag as char
        );
    }
    assert_eq!(broker.depth(&broker.queue).await, 0);
}
