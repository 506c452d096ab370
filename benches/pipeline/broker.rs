//! The broker side: fresh queues, pre-filling with confirms, cleanup.

use std::sync::Mutex;

use lapin::{
    options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    PublisherConfirm,
};

use crate::Res;

/// Publisher confirms outstanding while pre-filling.
const CONFIRM_WINDOW: usize = 2000;

/// Queues created by this process and not yet deleted.
static QUEUES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn body(i: usize) -> Vec<u8> {
    // ≈150 bytes, a typical registration event.
    format!(
        "{{\"user_id\":{i},\"email\":\"user{i:07}@example.com\",\"name\":\"Bench User {i:07}\",\
         \"plan\":\"pro\",\"locale\":\"en-GB\",\"signup_at\":\"2024-05-01T12:00:00Z\",\"source\":\"bench\"}}"
    )
    .into_bytes()
}

pub async fn connect(amqp: &str, role: &str) -> Res<Connection> {
    Connection::connect(
        amqp,
        ConnectionProperties::default()
            .with_connection_name(format!("fanout-bridge bench {role}").into()),
    )
    .await
    .map_err(|e| format!("connecting to {amqp}: {e}"))
}

/// A channel on `conn` with `prefetch` and a consumer `tag` of `queue` on
/// it: the bare consumers' set-up.
pub async fn consume(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    tag: &str,
) -> Res<(Channel, Consumer)> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.basic_qos(prefetch, BasicQosOptions { global: false })
        .await
        .map_err(|e| e.to_string())?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((ch, consumer))
}

/// A fresh queue name, remembered for the final cleanup.
pub fn fresh_queue(kind: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("bench.pipeline.{kind}.{}", &id[..12]);
    QUEUES.lock().unwrap().push(name.clone());
    name
}

/// Messages in `queue` now (passive declare), for the "nothing lost" check.
pub async fn depth(amqp: &str, queue: &str) -> Res<u32> {
    let conn = connect(amqp, "depth").await?;
    let r = async {
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("passive declare of {queue}: {e}"))?;
        let _ = ch.close(200, "done".into()).await;
        Ok(q.message_count())
    }
    .await;
    let _ = conn.close(200, "done".into()).await;
    r
}

/// Declared the way the worker declares it: durable, classic, no arguments.
async fn declare(ch: &Channel, queue: &str) -> Res<u32> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|q| q.message_count())
    .map_err(|e| format!("declaring {queue}: {e}"))
}

/// A JSON body of exactly `size` bytes (`{"i":N,"pad":"xxx…"}`), for the
/// size sweep; at least as long as its head.
pub fn sized_body(i: usize, size: usize) -> Vec<u8> {
    let mut b = format!("{{\"i\":{i},\"pad\":\"").into_bytes();
    let pad = size.saturating_sub(b.len() + 2);
    b.resize(b.len() + pad, b'x');
    b.extend_from_slice(b"\"}");
    b
}

/// Publishes `n` persistent messages with confirms, and checks the depth.
pub async fn prefill(amqp: &str, queue: &str, n: usize) -> Res<()> {
    prefill_sized(amqp, queue, n, 0).await
}

/// As [`prefill`], with bodies of `size` bytes (0: the usual ≈157-byte
/// event). Big bodies keep fewer confirms outstanding (≈ 256 MiB at most).
pub async fn prefill_sized(amqp: &str, queue: &str, n: usize, size: usize) -> Res<()> {
    let window = if size == 0 {
        CONFIRM_WINDOW
    } else {
        (256 << 20) / size.max(1)
    }
    .clamp(1, CONFIRM_WINDOW);
    let conn = connect(amqp, "prefill").await?;
    let result = async {
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        declare(&ch, queue).await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut pending: std::collections::VecDeque<PublisherConfirm> = Default::default();
        let check = |c: Result<Confirmation, lapin::Error>| match c {
            Ok(Confirmation::Ack(None)) => Ok(()),
            other => Err(format!("pre-fill publish not confirmed: {other:?}")),
        };
        for i in 0..n {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(uuid::Uuid::new_v4().to_string().into());
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &if size == 0 {
                        body(i)
                    } else {
                        sized_body(i, size)
                    },
                    props,
                )
                .await
                .map_err(|e| format!("publishing: {e}"))?;
            pending.push_back(confirm);
            if pending.len() >= window {
                check(pending.pop_front().unwrap().await)?;
            }
        }
        while let Some(c) = pending.pop_front() {
            check(c.await)?;
        }
        let depth = declare(&ch, queue).await?;
        if depth as usize != n {
            return Err(format!(
                "{queue} holds {depth} messages after pre-filling {n}"
            ));
        }
        let _ = ch.close(200, "done".into()).await;
        Ok(())
    }
    .await;
    let _ = conn.close(200, "done".into()).await;
    result
}

/// Deletes the given queues (or all remembered ones), each on its own channel
/// so one failure does not stop the others.
pub async fn delete_queues(amqp: &str, names: Option<&[String]>) {
    let names: Vec<String> = match names {
        Some(n) => n.to_vec(),
        None => QUEUES.lock().unwrap().clone(),
    };
    if names.is_empty() {
        return;
    }
    let Ok(conn) = connect(amqp, "cleanup").await else {
        eprintln!("cleanup: cannot connect; queues left behind: {names:?}");
        return;
    };
    for q in &names {
        let deleted = match conn.create_channel().await {
            Ok(ch) => {
                let r = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = ch.close(200, "done".into()).await;
                r.is_ok()
            }
            Err(_) => false,
        };
        if deleted {
            QUEUES.lock().unwrap().retain(|x| x != q);
        } else {
            eprintln!("cleanup: could not delete queue {q}");
        }
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Remembers a queue the worker declares (its DLQ) for the final cleanup.
pub fn remember_queue(name: &str) {
    QUEUES.lock().unwrap().push(name.to_owned());
}
