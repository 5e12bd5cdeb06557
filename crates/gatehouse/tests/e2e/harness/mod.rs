//! The one harness every end-to-end test starts the system with.
//!
//! # Layout
//! - [`system`]: the whole system in this process, as `gatehouse up` starts it ([`spawn_app`],
//!   [`TestApp`]), with test upstreams beside the bundled services.
//! - [`gateway`]: a gateway alone, on a configuration of the test's: in this process ([`Gate`])
//!   or as the real binary ([`Replica`]); both on port 0, both reloadable.
//! - [`replicas`]: several gateway processes on one store and one Redis ([`replicas::Fleet`]).
//! - [`redis`]: a Redis of the test's own on a unix socket, to kill and restart at the same URL.
//! - [`process`]: the `gatehouse` binary as a child process, the addresses it bound read from its
//!   own log.
//! - [`upstreams`]: services a test controls: instances it can kill, hang or slow ([`Instance`]),
//!   an echo, an answer that is not HTTP, a dead address nothing can listen on, and [`Parts`]
//!   (the parts of a composition: records what it was asked, holds what the test holds).
//! - [`load`]: a steady stream of requests and what it saw.
//! - [`tls`]: certificate authorities made in the test, and HTTPS (or h2c) instances.
//!
//! Waiting is polling with a deadline ([`wait_for`], from `kit::testing`), never a fixed sleep;
//! listeners are bound once and handed over, never bound, dropped and bound again; a Redis that
//! must be named before it listens gets a socket path in the test's own directory, not a port.

pub mod gateway;
pub mod load;
pub mod process;
pub mod redis;
pub mod replicas;
pub mod system;
pub mod tls;
pub mod upstreams;

use std::time::Duration;

pub use gateway::{config_head, start_replica, write_atomically, Gate, Replica};
pub use kit::testing::wait::{wait_for, wait_until};
pub use load::Load;
pub use process::Process;
pub use system::{assert_problem, spawn_app, spawn_app_at, spawn_app_with, TestApp};
pub use upstreams::{dead_address, Instance, Mode, Parts};

/// A client that waits long rather than failing a request on a slow machine.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}
