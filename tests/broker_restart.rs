//! The broker restarts under a running worker (`rabbitmqctl stop_app` /
//! `start_app`). This disturbs the broker itself, so it is its own test
//! binary: cargo runs test binaries one at a time, so nothing else runs
//! against the broker meanwhile. The broker is started again even when the
//! test fails.

#[path = "it/support/helpers.rs"]
mod helpers;

use std::{collections::HashSet, process::Command, time::Duration};

use helpers::*;

/// Starts the broker's application again however the test ends.
struct RestartGuard;

impl RestartGuard {
    fn stop_app() -> RestartGuard {
        let ok = Command::new("rabbitmqctl")
            .arg("stop_app")
            .status()
            .map(|s| s.success());
        assert!(
            matches!(ok, Ok(true)),
            "rabbitmqctl stop_app failed (needs root): {ok:?}"
        );
        RestartGuard
    }
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
        let _ = Command::new("rabbitmqctl")
            .args(["await_startup", "--timeout", "60"])
            .status();
    }
}

fn rabbitmqctl_available() -> bool {
    Command::new("rabbitmqctl")
        .arg("status")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_worker_survives_a_broker_restart_and_loses_nothing() {
    if !rabbitmqctl_available() {
        // CI's .ci/run makes sure rabbitmqctl works; a developer's machine
        // with a remote broker cannot restart it.
        eprintln!("skipping: rabbitmqctl cannot reach the local broker");
        return;
    }
    let mut broker = Broker::new("restart").await;
    broker.declare().await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::ok().delay(Duration::from_millis(100)));
    let worker = Process::start(&broker, fast_settings(&user, &log)).await;

    let mut ids = HashSet::new();
    ids.extend(broker.publish_numbered("before", 0..30).await);
    wait_until("work under way", Duration::from_secs(10), || {
        let n = user.count();
        async move { n >= 5 }
    })
    .await;

    {
        let _restart = RestartGuard::stop_app();
        wait_until("readyz turns 503", Duration::from_secs(30), || async {
            !worker.ready().await
        })
        .await;
        assert_eq!(worker.metric("bridge_broker_connected").await, 0.0);
    }
    // The guard started the broker again.
    wait_until("the worker reconnects", Duration::from_secs(60), || {
        worker.ready()
    })
    .await;
    assert_eq!(worker.metric("bridge_broker_connected").await, 1.0);

    broker.reconnect().await;
    ids.extend(broker.publish_numbered("after", 0..10).await);
    wait_delivered(&user, &log, &ids, Duration::from_secs(60)).await;
    broker
        .wait_depth(&broker.queue, 0, Duration::from_secs(20))
        .await;
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}
