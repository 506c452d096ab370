//! Integration tests: the real RabbitMQ (BRIDGE_TEST_AMQP_URL, default
//! 127.0.0.1:5672), real HTTP servers playing the APIs, queue names unique
//! per test.

mod helpers;

mod acks;
mod big_headers;
mod big_messages;
mod check;
mod cli;
mod cli_scripts;
mod confirms;
mod copy_returns;
mod dead_letter;
mod dlq_gone;
mod dlq_groups;
mod dlq_interrupt;
mod dlq_quorum;
mod exact_bytes;
mod fanout;
mod faults;
mod healthcheck;
mod hold;
mod http;
mod keep_alive;
mod nodes;
mod observability;
mod otel;
mod panics;
mod poison;
mod process;
mod proxy;
mod publish_returns;
mod quorum;
mod rate_limit;
mod raw_amqp;
mod replay;
mod retry;
mod settings;
mod slow_api;
mod targets;
mod tls;
