//! fanout-bridge: consumes JSON messages from a RabbitMQ queue and, for each,
//! calls a user-management API and a logging API at the same time; acks when
//! both accepted it, otherwise moves it to a dead-letter queue with the reason.
//!
//! # Layout
//!
//! - [`config`]: `BRIDGE_*` settings, validated before anything connects.
//! - [`domain`]: the pure core: message id, targets, outcomes, the
//!   disposition of a message, DLQ header values. No I/O.
//! - [`api`]: the HTTP edge: one shared client, the two requests, retry,
//!   classification, backoff, rate limits.
//! - [`broker`]: the RabbitMQ edge: connections, topology, confirmed
//!   publishing, and the supervisor that reconnects and consumes.
//! - [`worker`]: one delivery from parse to settle; the only place that acks.
//! - [`app`]: wires a worker together; [`ops`] serves metrics and health;
//!   [`metrics`] holds the Prometheus handles.
//! - [`cli`] and [`commands`]: the subcommands of the binary.
//! - [`shutdown`], [`telemetry`]: signals and logging.
//! - [`otel`]: OpenTelemetry traces over OTLP/HTTP, when configured.
//! - [`tls`]: extra CAs and the client certificate (mutual TLS).

#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, clippy::unwrap_in_result)]

pub mod api;
pub mod app;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod ops;
pub mod otel;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod worker;
