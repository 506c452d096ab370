//! `fanout-bridge healthcheck`: 0 when the worker's /readyz answers 200, 1
//! otherwise (503, nothing listening, no answer in time).

use std::time::{Duration, Instant};

use crate::helpers::*;

async fn healthcheck(args: &[&str], metrics_addr: Option<String>) -> (i32, String, String) {
    let mut all = vec!["healthcheck"];
    all.extend_from_slice(args);
    let v: Vec<(String, String)> = metrics_addr
        .map(|a| ("BRIDGE_METRICS_ADDR".to_owned(), a))
        .into_iter()
        .collect();
    run_bin(&all, &v, b"").await
}

#[tokio::test]
async fn healthcheck_is_0_for_a_ready_worker_and_1_once_it_stopped() {
    let broker = Broker::new("healthcheck").await;
    let mut worker = Process::start(&broker, vars(&URLS)).await;
    let port = worker.ops.port();

    // The worker's own setting, as a container would have it: 0.0.0.0 is
    // asked on loopback.
    let (code, stdout, stderr) = healthcheck(&[], Some(format!("0.0.0.0:{port}"))).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, stderr) = healthcheck(&["--url", &format!("http://{}", worker.ops)], None).await;
    assert_eq!(code, 0, "{stderr}");

    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(20)).await, Some(0));
    let (code, _, stderr) = healthcheck(&[], Some(format!("127.0.0.1:{port}"))).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not ready"), "{stderr}");
}

#[tokio::test]
async fn healthcheck_is_1_for_a_503_a_closed_port_and_a_silent_server() {
    let api = FakeApi::start().await;
    api.always(Reply::status(503));
    let (code, _, stderr) = healthcheck(&["--url", &format!("http://{}", api.addr)], None).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("503"), "{stderr}");
    let readyz = api.received();
    assert_eq!(readyz.len(), 1);
    assert_eq!(readyz[0].path, "/readyz");

    let (code, _, _) = healthcheck(&[], Some(format!("127.0.0.1:{CLOSED_PORT}"))).await;
    assert_eq!(code, 1);

    // Accepts connections (the backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let (code, _, stderr) =
        healthcheck(&["--url", &silent.local_addr().unwrap().to_string()], None).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded by its timeout"
    );
    drop(silent);
}

#[tokio::test]
async fn healthcheck_with_a_bad_address_exits_2_naming_it() {
    let (code, _, stderr) = healthcheck(&[], Some("nowhere".into())).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("BRIDGE_METRICS_ADDR"), "{stderr}");
    let (code, _, stderr) = healthcheck(&["--url", "https://127.0.0.1:9464/"], None).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--url"), "{stderr}");
}
