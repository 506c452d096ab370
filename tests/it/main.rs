//! Integration tests: the real RabbitMQ (BRIDGE_TEST_AMQP_URL, default
//! 127.0.0.1:5672), real HTTP servers playing the two APIs, queue names
//! unique per test.

mod helpers;

mod cli;
mod cli_scripts;
mod dead_letter;
mod dlq_quorum;
mod fanout;
mod faults;
mod hold;
mod http;
mod observability;
mod otel;
mod poison;
mod process;
mod rate_limit;
mod raw_amqp;
mod replay;
mod retry;
mod settings;
mod targets;
mod tls;
