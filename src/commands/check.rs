//! `fanout-bridge check`: the configuration of `run`, then every dependency
//! tried once (each broker node, the inbound queue and the DLQ, each
//! target's host), one line per check. For a deploy pipeline or an operator
//! who wants to know, before starting workers, what they would run into.
//!
//! Nothing is published, consumed or created: a queue is compared with the
//! worker's declaration only when it exists (a passive declare first), so a
//! check leaves no queue behind. A queue that does not exist yet passes, since
//! the worker declares it.

use std::{process::ExitCode, time::Duration};

use crate::{
    api::probe,
    broker::{
        self,
        topology::{self, Role},
        BrokerError,
    },
    cli::OutputFormat,
    config::{BrokerConfig, QueueType, RawConfig, WorkerConfig},
};

/// Each network step (a broker connection, a queue declare, a TCP connect,
/// a TLS handshake) gets this long: enough for a healthy dependency across a
/// data centre, short enough that a check of a dead one ends in seconds.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
    /// Passwords and tokens of the configuration, replaced in every detail
    /// should a library's error text ever quote one.
    secrets: Vec<String>,
}

impl Report {
    fn push(&mut self, name: impl Into<String>, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        let mut detail = detail;
        for secret in &self.secrets {
            if !secret.is_empty() && detail.contains(secret.as_str()) {
                detail = detail.replace(secret.as_str(), "***");
            }
        }
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
        });
    }

    fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn print(&self, format: OutputFormat) {
        match format {
            OutputFormat::Text => {
                for c in &self.checks {
                    let status = if c.ok { "ok" } else { "FAIL" };
                    println!("{status:<4}  {}: {}", c.name, c.detail);
                }
            }
            OutputFormat::Json => {
                let checks: Vec<_> = self
                    .checks
                    .iter()
                    .map(|c| serde_json::json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
                    .collect();
                println!("{}", serde_json::json!({"ok": self.ok(), "checks": checks}));
            }
        }
    }
}

/// # Errors
/// A bad setting (exit 2, after the report); a failed dependency is exit 1
/// through the returned code.
pub async fn run(raw: &RawConfig, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let mut report = Report::default();
    let cfg = match raw.worker_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            // The problems name variables, never their secret values.
            report.push("configuration", Err(e.to_string()));
            report.print(format);
            return Err(e.into());
        }
    };
    report.secrets = secrets(&cfg);
    report.push("configuration", Ok(summary(&cfg)));

    let conn = check_nodes(&cfg.broker, &mut report).await;
    check_queues(conn.as_ref(), &cfg.broker, &mut report).await;
    if let Some(conn) = &conn {
        broker::close(conn).await;
    }
    check_targets(&cfg, &mut report).await;

    report.print(format);
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn summary(cfg: &WorkerConfig) -> String {
    let targets: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
    format!(
        "valid; {} broker node(s), queue {:?}, DLQ {:?} ({}), targets {}",
        cfg.broker.nodes.len(),
        cfg.broker.queue,
        cfg.broker.dlq,
        type_name(cfg.broker.queue_type),
        targets.join(", ")
    )
}

fn type_name(t: QueueType) -> &'static str {
    match t {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    }
}

fn secrets(cfg: &WorkerConfig) -> Vec<String> {
    let mut secrets: Vec<String> = cfg
        .broker
        .nodes
        .iter()
        .map(|n| n.0.authority.userinfo.password.clone())
        .collect();
    for t in &cfg.targets {
        secrets.extend(t.url.password().map(str::to_owned));
        secrets.extend(t.token.as_ref().map(|s| s.expose().to_owned()));
    }
    // Too short to replace without mangling words ("guest" stays: it is the
    // well-known default, and replacing it would hide the user name too).
    secrets.retain(|s| s.len() >= 6);
    secrets
}

/// Connects to every node once; keeps the first connection for the queue
/// checks (queues are cluster-wide: one node answers for all).
async fn check_nodes(cfg: &BrokerConfig, report: &mut Report) -> Option<broker::Connection> {
    let mut kept = None;
    for (index, node) in cfg.nodes.iter().enumerate() {
        let name = format!("broker {}", node.node());
        let attempt = tokio::time::timeout(STEP_TIMEOUT, broker::connect_node(cfg, index, "check"));
        match attempt.await {
            Err(_) => report.push(
                name,
                Err(format!("no connection within {} s", STEP_TIMEOUT.as_secs())),
            ),
            Ok(Err(e)) => report.push(name, Err(error_chain(&e))),
            Ok(Ok(conn)) => {
                let tls = if node.is_tls() { " over TLS" } else { "" };
                report.push(
                    name,
                    Ok(format!("connected{tls}, vhost {:?}", node.0.vhost)),
                );
                if kept.is_none() {
                    kept = Some(conn);
                } else {
                    broker::close(&conn).await;
                }
            }
        }
    }
    kept
}

async fn check_queues(conn: Option<&broker::Connection>, cfg: &BrokerConfig, report: &mut Report) {
    let queues = [
        ("queue", cfg.queue.as_str(), Role::Inbound { dlq: &cfg.dlq }),
        ("dlq", cfg.dlq.as_str(), Role::Dlq),
    ];
    for (label, queue, role) in queues {
        let name = format!("{label} {queue}");
        let Some(conn) = conn else {
            report.push(
                name,
                Err("not checked: no broker node reachable".to_owned()),
            );
            continue;
        };
        let result =
            tokio::time::timeout(STEP_TIMEOUT, check_queue(conn, queue, cfg.queue_type, role))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", STEP_TIMEOUT.as_secs())));
        report.push(name, result);
    }
}

/// Absent passes; present must take the worker's own declaration (same
/// durability and arguments), which then changes nothing.
async fn check_queue(
    conn: &broker::Connection,
    queue: &str,
    queue_type: QueueType,
    role: Role<'_>,
) -> Result<String, String> {
    // A channel per queue: a failed declare closes its channel.
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    let result = async {
        let depth = match topology::depth(&channel, queue).await {
            Ok(depth) => depth,
            Err(BrokerError::QueueMissing(_)) => {
                return Ok("absent (the worker declares it)".to_owned())
            }
            Err(e) => return Err(error_chain(&e)),
        };
        // Declared only because it exists: this creates nothing. (Should it
        // be deleted in between, the worker would have declared it anyway,
        // with these same arguments.)
        match topology::declare(&channel, queue, queue_type, role).await {
            Ok(_) => Ok(format!(
                "present, {depth} message(s) ready, arguments match ({})",
                type_name(queue_type)
            )),
            Err(BrokerError::QueueMismatch { detail, .. }) => Err(format!(
                "exists with other arguments than the worker declares ({detail}); \
                 `run` would exit 2: delete the queue or set BRIDGE_QUEUE_TYPE to match it"
            )),
            Err(e) => Err(error_chain(&e)),
        }
    }
    .await;
    broker::close_channel(&channel).await;
    result
}

async fn check_targets(cfg: &WorkerConfig, report: &mut Report) {
    let tls = match cfg.broker.tls.http() {
        Ok(tls) => tls,
        Err(e) => {
            for t in &cfg.targets {
                report.push(
                    format!("target {} tcp", t.name),
                    Err(format!("not tried: the TLS settings are not usable ({e})")),
                );
            }
            return;
        }
    };
    // At once: one slow target must not add its timeout to the others'.
    let probes = futures::future::join_all(
        cfg.targets
            .iter()
            .map(|t| probe::probe(t, tls.clone(), &cfg.proxy, STEP_TIMEOUT)),
    )
    .await;
    for (t, p) in cfg.targets.iter().zip(probes) {
        report.push(format!("target {} tcp", t.name), p.tcp);
        if let Some(tls) = p.tls {
            report.push(format!("target {} tls", t.name), tls);
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}
