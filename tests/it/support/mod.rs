//! Fixtures shared by the integration tests; no tests here.

pub mod helpers;
pub mod raw_amqp;
pub mod slow_api;
