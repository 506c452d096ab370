//! `BRIDGE_AMQP_URL` as a list of nodes: a dead node is skipped, the metrics
//! name the node, and a bad URL never prints its password.

use std::time::Duration;

use crate::helpers::*;

/// A URL of a node where nothing listens, then the real broker.
fn dead_then_real() -> String {
    let mut dead = url::Url::parse(&amqp_url()).unwrap();
    dead.set_port(Some(free_port())).unwrap();
    format!("{dead},{}", amqp_url())
}

fn real_node() -> String {
    let url = url::Url::parse(&amqp_url()).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672))
}

#[tokio::test]
async fn a_dead_node_in_the_list_is_skipped_and_the_metrics_name_the_node() {
    let broker = Broker::new("nodes").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_AMQP_URL".into(), dead_then_real()));
    // Several starts: each picks a random first node, so both orders occur.
    for round in 0..3 {
        let worker = Worker::start(&broker, settings.clone()).await;
        let text = worker.metrics.render();
        let series = format!("bridge_broker_node_info{{node=\"{}\"}} 1", real_node());
        assert!(text.contains(&series), "round {round}: {text}");
        assert_eq!(text.matches("bridge_broker_node_info{").count(), 1);
        assert!(text.contains("bridge_build_info{version=\""), "{text}");
        broker
            .publish(
                format!("{{\"round\":{round}}}").as_bytes(),
                Default::default(),
            )
            .await;
        worker.wait_settled(1).await;
        worker.stop().await;
    }
    assert_eq!(user.count(), 3);

    // The CLI commands go through the same connect.
    let mut vars = broker.vars();
    vars.push(("BRIDGE_AMQP_URL".into(), dead_then_real()));
    for _ in 0..3 {
        let (code, out, err) = run_bin(&["publish"], &vars, b"{\"cli\":1}\n").await;
        assert_eq!(code, 0, "{out}{err}");
    }
    broker
        .wait_depth(&broker.queue, 3, Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn the_connect_log_line_names_the_node_without_the_password() {
    let broker = Broker::new("nodelog").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_AMQP_URL".into(), dead_then_real()));
    let worker = Process::start(&broker, settings).await;
    let text = worker.log_text();
    let line = text
        .lines()
        .find(|l| l.contains("connected to the broker"))
        .unwrap_or_else(|| panic!("no connect line in {text}"));
    assert!(line.contains(&real_node()), "{line}");
    assert!(!text.contains("guest:guest"), "{text}");
    assert_eq!(worker.metric("bridge_broker_node_info").await, 1.0);
}

#[tokio::test]
async fn a_bad_amqp_url_exits_2_without_printing_the_password() {
    for url in [
        "amqp://u:secret@127.0.0.1/?heartbeat=ten",
        "amqp://guest:guest@127.0.0.1:5672/%2f,amqp://u:secret@h:5672/%2f?frame_max=big",
        "amqp://u:secret@h/%2f,",
    ] {
        let vars = vec![
            ("BRIDGE_AMQP_URL".to_owned(), url.to_owned()),
            (
                "BRIDGE_USER_API_URL".to_owned(),
                "http://127.0.0.1:1/u".to_owned(),
            ),
            (
                "BRIDGE_LOG_API_URL".to_owned(),
                "http://127.0.0.1:1/l".to_owned(),
            ),
            ("BRIDGE_METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        for args in [&["run"][..], &["dlq", "stats"], &["publish"]] {
            let (code, out, err) = run_bin(args, &vars, b"").await;
            assert_eq!(code, 2, "{args:?} {url}: {out}{err}");
            assert!(err.contains("BRIDGE_AMQP_URL"), "{err}");
            assert!(!err.contains("secret") && !out.contains("secret"), "{err}");
        }
    }
}
