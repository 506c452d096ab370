//! `fanout-bridge demo`: the first-run experience. Two stand-in APIs on
//! loopback (logging fails 5 % of the time), the worker against them and the
//! broker, N sample registrations, a progress bar, a tally, then the worker
//! keeps running until Ctrl-C.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;

use crate::{
    app::Worker,
    commands::{demo_api, dlq, publish},
    config::RawConfig,
    metrics::{AttemptResult, Outcome},
    shutdown,
};

/// One sample in this many is deliberately not JSON, to show the DLQ.
const MALFORMED_EVERY: u64 = 100;
/// The logging stand-in's failure rate (contract: 5 %).
const LOGGING_API_FAIL_RATE: f64 = 0.05;

/// The sample registrations: JSON lines, every [`MALFORMED_EVERY`]th broken.
pub fn sample_lines(count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(count as usize * 96);
    for i in 1..=count {
        let line = if i % MALFORMED_EVERY == 0 {
            format!("{{\"user_id\": {i}, \"email\": \"user{i}@example.com\", \"name\": }}\n")
        } else {
            format!(
                "{{\"user_id\":{i},\"email\":\"user{i}@example.com\",\"name\":\"User {i}\",\"plan\":\"{}\"}}\n",
                ["free", "pro", "team"][(i % 3) as usize]
            )
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

async fn stand_in(
    fail_rate: f64,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a stand-in API")?;
    let addr = listener.local_addr()?;
    let behaviour = demo_api::Behaviour {
        latency: Duration::from_millis(2),
        fail_rate,
    };
    tokio::spawn(demo_api::serve(listener, behaviour, async move {
        stop.cancelled().await;
    }));
    Ok(addr)
}

/// # Errors
/// A bad setting (exit 2) or a broker that cannot be reached.
pub async fn run(raw: &RawConfig, count: u64) -> anyhow::Result<ExitCode> {
    let broker = raw.broker_config()?;
    let stop = shutdown::on_signal().context("installing signal handlers")?;
    let user = stand_in(0.0, stop.clone()).await?;
    let logging_api = stand_in(LOGGING_API_FAIL_RATE, stop.clone()).await?;
    let config = raw
        .with_api_urls(
            format!("http://{user}/users"),
            format!("http://{logging_api}/logs"),
        )
        .worker_config()?;
    let ops = match TcpListener::bind(config.metrics_addr).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?,
    };
    let ops_addr = ops.local_addr()?;
    let app = Worker::new(config);
    let metrics = app.metrics().clone();
    let worker = tokio::spawn(app.run(ops, stop.clone()));

    eprintln!(
        "stand-in APIs: user-management http://{user}/users, logging http://{logging_api}/logs (fails 5%)"
    );
    eprintln!("publishing {count} sample registrations to {:?} (1 in {MALFORMED_EVERY} deliberately malformed)", broker.queue);
    let started = Instant::now();
    let sent = publish::publish_lines(&broker, &sample_lines(count)[..], None)
        .await
        .with_context(|| {
            format!(
                "cannot publish to the broker at {:?}; start one with `docker compose up -d rabbitmq`",
                broker.uri
            )
        })?;
    let expected = sent.confirmed;

    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(expected)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} settled ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let settled =
        || metrics.outcome_count(Outcome::Acked) + metrics.outcome_count(Outcome::DeadLettered);
    while settled() < expected && !stop.is_cancelled() && !worker.is_finished() {
        bar.set_position(settled().min(expected));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    if worker.is_finished() {
        return worker
            .await
            .context("worker task")?
            .map(|()| ExitCode::from(1));
    }

    let retried = metrics.attempt_count("logging", AttemptResult::TransientError);
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    println!("  published:      {}", sent.confirmed);
    println!(
        "  acked:          {}",
        metrics.outcome_count(Outcome::Acked)
    );
    println!(
        "  dead-lettered:  {}",
        metrics.outcome_count(Outcome::DeadLettered)
    );
    println!("  retried:        {retried} logging attempts failed with 503 and were retried");
    if let Ok(stats) = dlq::collect_stats(&broker).await {
        println!(
            "  DLQ {:?} now holds {} message(s):",
            broker.dlq, stats.depth
        );
        for (reason, n) in &stats.reasons {
            println!("    {reason}: {n}");
        }
    }
    println!();
    println!("look at the DLQ:   fanout-bridge dlq stats | dlq peek --limit 3 | dlq replay");
    println!("metrics:           curl http://{ops_addr}/metrics");
    println!("the worker keeps running; press Ctrl-C to stop");
    worker.await.context("worker task")??;
    Ok(ExitCode::SUCCESS)
}
