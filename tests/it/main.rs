//! Integration tests: the real RabbitMQ (BRIDGE_TEST_AMQP_URL, default
//! 127.0.0.1:5672), real HTTP servers playing the APIs, the built binary for
//! process tests, queue names unique per test.
//!
//! Where a test goes (by the contract area it checks):
//!
//! - `delivery/`: a message on the happy and retry paths: what each target
//!   receives, retries and their classification, several targets, rate
//!   limits, the `hold` policy, done targets on a replayed message, acks.
//! - `dead_letters/`: what the worker puts in the DLQ and why: bad input,
//!   failed calls, headers and bytes kept, copies that fit the frame, messages
//!   the AMQP client cannot parse, panics.
//! - `dlq_tools/`: the `dlq` commands and the console: groups, filters,
//!   export/import/purge, replay, interruptions, the lock, quorum DLQs.
//! - `broker_faults/`: connections lost, nodes down, quorum queues, process
//!   kills and signals, confirms under churn.
//! - `cli/`: exit codes, settings, `publish`, `check`, `healthcheck`, output
//!   for scripts.
//! - `operations/`: metrics, health, logs, OpenTelemetry.
//! - `network/`: TLS (HTTPS APIs, `amqps://`, mutual TLS) and proxies.
//! - `support/`: fixtures only, no tests: the broker and worker helpers
//!   (`helpers.rs`, whose `TestApp::spawn` starts queues + fake APIs + a
//!   worker in one call, and `assert_dead_lettered` checks a DLQ copy's
//!   headers), a raw AMQP client for bytes lapin would not send
//!   (`raw_amqp.rs`), an API that records arrivals (`slow_api.rs`).
//!
//! A test that disturbs the broker itself (restart, cluster) does not go
//! here: it is its own test binary in `tests/` and runs alone.

mod support;
use support::{helpers, raw_amqp, slow_api};

mod delivery {
    mod acks;
    mod big_messages;
    mod done_targets;
    mod fanout;
    mod hold;
    mod http;
    mod keep_alive;
    mod rate_limit;
    mod retry;
    mod targets;
}

mod dead_letters {
    mod big_headers;
    mod dead_letter;
    mod dlq_gone;
    mod exact_bytes;
    mod panics;
    mod poison;
}

mod dlq_tools {
    mod console;
    pub mod copy_returns;
    mod groups;
    mod interrupt;
    mod quorum_reads;
}

mod broker_faults {
    mod confirms;
    mod faults;
    mod nodes;
    mod process;
    mod quorum;
}

mod cli {
    mod check;
    mod cli_scripts;
    mod exit_codes;
    mod healthcheck;
    mod publish_returns;
    mod settings;
}

mod operations {
    mod observability;
    mod otel;
}

mod network {
    mod proxy;
    pub mod tls;
}
