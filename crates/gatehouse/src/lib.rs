//! Wiring of the gatehouse parts into runnable processes; `main.rs` only parses the command line.
//!
//! # Layout
//! - [`up`]: the whole system in one process, each part on its own port, talking real HTTP.
//! - [`standalone`]: one part per process, as deployed.

pub mod standalone;
pub mod up;

/// The routes of the bundled services, for `up` when no configuration file is at hand.
pub const EMBEDDED_CONFIG: &str = include_str!("../../../config/gateway.yaml");
