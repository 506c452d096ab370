//! fanout-bridge: consumes JSON messages from a RabbitMQ queue and, for each,
//! calls every configured target (by default a user-management API and a
//! logging API) at the same time; acks when all accepted it, otherwise moves
//! it to a dead-letter queue with the reason.
//!
//! How the modules fit together, and where a change goes: `ARCHITECTURE.md`
//! at the repository root (the one picture; this list of modules is
//! rustdoc's).

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
