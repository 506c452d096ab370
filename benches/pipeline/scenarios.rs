//! The scenarios, one measured run, and the bare lapin consumers (the
//! ceiling and the "hold 20 ms, then ack" consumer).

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::BasicAckOptions;

use crate::{
    broker::{connect, delete_queues, fresh_queue, prefill},
    config::Cfg,
    http::OtlpCount,
    process::{Split, SplitProbe},
    stats::sorted,
    Res, STALL,
};

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Ceiling,
    /// The bare consumer holding each message 20 ms (sleep) before its ack.
    Ceiling20,
    Fast,
    /// `Fast` with OpenTelemetry export to the in-bench receiver.
    FastOtel,
    /// The Node.js reference worker against the fast APIs.
    Node,
    Slow,
}

pub struct Scenario {
    pub kind: Kind,
    pub prefetch: u16,
    pub messages: usize,
    pub runs: Vec<Run>,
    pub errors: Vec<String>,
    pub latency: Option<Run>,
}

impl Scenario {
    pub fn new(kind: Kind, prefetch: u16, messages: usize) -> Scenario {
        Scenario {
            kind,
            prefetch,
            messages,
            runs: Vec::new(),
            errors: Vec::new(),
            latency: None,
        }
    }
    pub fn name(&self) -> String {
        match self.kind {
            Kind::Ceiling => "ceiling: bare lapin, ack only".into(),
            Kind::Ceiling20 => "bare lapin, sleep 20 ms, ack".into(),
            Kind::Fast => "bridge, APIs answer at once".into(),
            Kind::FastOtel => "bridge, OTel export on, fast".into(),
            Kind::Node => "node reference, fast APIs".into(),
            Kind::Slow => "bridge, APIs answer in 20 ms".into(),
        }
    }
    /// The bare consumers run inside this process.
    pub fn in_bench(&self) -> bool {
        matches!(self.kind, Kind::Ceiling | Kind::Ceiling20)
    }
    pub fn rates(&self) -> Vec<f64> {
        sorted(self.runs.iter().map(Run::rate).collect())
    }
    /// CPU s per 1,000 messages of the process under test, per run.
    pub fn cpu_per_k(&self, clk: f64) -> Vec<f64> {
        sorted(
            self.runs
                .iter()
                .map(|r| {
                    let t = if self.in_bench() {
                        r.split.bench
                    } else {
                        r.split.worker
                    };
                    t as f64 / clk / r.messages as f64 * 1000.0
                })
                .collect(),
        )
    }
}

/// One measured run.
#[derive(Clone, Default)]
pub struct Run {
    pub messages: usize,
    pub seconds: f64,
    /// CPU ticks of the process under test (bench for the ceiling, worker
    /// otherwise) and of the others, over the window.
    pub split: Split,
    pub rss_kib: Option<u64>,
    /// Latency samples (ms, 0.1 ms resolution), latency runs only.
    pub total_ms: Vec<f64>,
    /// Mean of `bridge_messages_in_flight` while the queue still had work
    /// (the first 90 % of the messages).
    pub in_flight: Option<f64>,
    /// TCP connections opened on the machine after the first fifth of the
    /// messages (the HTTP pool's warm-up), the benchmark's own `/metrics`
    /// polls excluded, and the messages settled meanwhile.
    pub tcp_opens: (u64, u64),
    /// OTel scenario: what the OTLP receiver got from start to exit.
    pub otlp: Option<OtlpCount>,
    /// OTel scenario: `bridge_otel_spans_dropped_total` at the last poll.
    pub otel_dropped: Option<f64>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
}

/// A bare lapin consumer over `n` pre-filled messages. Without `hold`, each
/// delivery is acked at once, in the consuming loop. With `hold`, each
/// delivery gets a task that sleeps that long, then acks: a worker whose work
/// costs nothing but takes `hold`, the practical Little's-law bound.
pub async fn ceiling_run(
    cfg: &Cfg,
    broker: &[u32],
    prefetch: u16,
    n: usize,
    hold: Option<Duration>,
) -> Res<Run> {
    let queue = fresh_queue("ceiling");
    let result = async {
        prefill(&cfg.amqp, &queue, n).await?;
        let conn = connect(&cfg.amqp, "ceiling consumer").await?;
        let result = async {
            let (ch, mut consumer) =
                crate::broker::consume(&conn, &queue, prefetch, "bench-ceiling").await?;
            let probe = SplitProbe {
                worker: None,
                api: Vec::new(),
                broker: broker.to_vec(),
            };
            let mut start = None;
            let mut acked = 0;
            let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
            // Sum of delivery → ack times, for the mean messages in flight.
            let mut held = Duration::ZERO;
            while acked < n {
                let next = tokio::select! {
                    d = consumer.next() => Some(d),
                    Some(r) = done_rx.recv() => {
                        let took: Duration = r?;
                        held += took;
                        acked += 1;
                        None
                    }
                    () = tokio::time::sleep(STALL) => return Err(format!("stalled at {acked}/{n}")),
                };
                let Some(d) = next else { continue };
                let d = match d {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(format!("consumer: {e}")),
                    None => return Err("consumer ended".into()),
                };
                if start.is_none() {
                    start = Some((Instant::now(), probe.read()));
                }
                match hold {
                    None => {
                        d.acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| format!("ack: {e}"))?;
                        acked += 1;
                    }
                    Some(hold) => {
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let began = Instant::now();
                            tokio::time::sleep(hold).await;
                            let r = d
                                .acker
                                .ack(BasicAckOptions::default())
                                .await
                                .map(|_| began.elapsed())
                                .map_err(|e| format!("ack: {e}"));
                            let _ = done.send(r);
                        });
                    }
                }
            }
            let (t0, s0) = start.unwrap();
            let seconds = t0.elapsed().as_secs_f64();
            let split = probe.read() - s0;
            let _ = ch.close(200, "done".into()).await;
            Ok(Run {
                messages: n,
                seconds,
                split,
                in_flight: hold.map(|_| held.as_secs_f64() / seconds),
                ..Run::default()
            })
        }
        .await;
        let _ = conn.close(200, "done".into()).await;
        result
    }
    .await;
    delete_queues(&cfg.amqp, Some(std::slice::from_ref(&queue))).await;
    result
}
