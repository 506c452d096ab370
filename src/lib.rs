//! fanout-bridge: consumes JSON messages from a RabbitMQ queue and, for each,
//! calls every configured target (by default a user-management API and a
//! logging API) at the same time; acks when all accepted it, otherwise moves
//! it to a dead-letter queue with the reason.
//!
//! # Layout
//!
//! - [`config`]: `BRIDGE_*` settings, validated before anything connects.
//! - [`cli`] and [`commands`]: the subcommands of the binary.
//! - [`console`]: the DLQ web console (`fanout-bridge console`), on the same
//!   DLQ commands.
//! - [`app`]: the [`app::Worker`]: wires metrics, health, the delivery
//!   handler, the supervisor and the ops listener, and runs them.
//! - [`supervisor`]: orchestration: broker sessions, the consumer loop,
//!   delivery tasks and readiness, across broker faults.
//! - [`delivery`]: the [`delivery::DeliveryHandler`]: one delivery from parse
//!   to settle; the only place that acks.
//! - Edges, which import no other edge and nothing above them:
//!   [`api`] (the HTTP edge: one shared client, the requests, retry,
//!   classification, rate limits), [`broker`] (the RabbitMQ edge:
//!   connections, topology, confirmed publishing), [`ops`] (serves metrics
//!   and health).
//! - Shared tools: [`health`] (readiness, written by the supervisor, read by
//!   ops), [`in_flight`] (a delivery's in-flight slot), [`backoff`],
//!   [`metrics`] (the Prometheus handles).
//! - [`domain`]: the pure core: message id, targets, outcomes, the
//!   disposition of a message, DLQ header values. No I/O.
//! - [`shutdown`], [`telemetry`]: signals and our own log output.
//! - [`otel`]: OpenTelemetry traces over OTLP/HTTP, when configured.
//! - [`tls`]: extra CAs and the client certificate (mutual TLS).

#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, clippy::unwrap_in_result)]

pub mod api;
pub mod app;
pub mod backoff;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod delivery;
pub mod domain;
pub mod health;
pub mod in_flight;
pub mod metrics;
pub mod ops;
pub mod otel;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
