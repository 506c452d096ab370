//! Integration tests: the real RabbitMQ (BRIDGE_TEST_AMQP_URL, default
//! 127.0.0.1:5672), real HTTP servers playing the two APIs, queue names
//! unique per test.

mod helpers;

mod big_headers;
mod cli;
mod confirms;
mod dead_letter;
mod dlq_gone;
mod fanout;
mod faults;
mod hold;
mod nodes;
mod observability;
mod panics;
mod process;
mod quorum;
mod rate_limit;
mod replay;
mod retry;
mod slow_api;
