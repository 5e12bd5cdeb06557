//! Watching the requests a server answers: Prometheus metrics and the access log.
//!
//! The gateway and every service built with the kit use the same metric names and the same
//! access-log line, so one scrape configuration and one log pipeline cover the fleet.

pub mod access_log;

pub use access_log::AccessLogTarget;
