//! The Rust parts of the benchmark harness (`bench/run`, documented in docs/BENCHMARKS.md).
//!
//! # Layout
//! - `bench-upstream` (src/bin): the fixed upstream every scenario ends at, a bare hyper server
//!   with a small JSON answer and a 64 KiB one, so the numbers measure the proxy, not a service.
//! - `bench-token` (src/bin): an access token for the authenticated scenario, signed by the
//!   gateway's own code with the key in the gateway's store, as a login would return it.
//! - [`bodies`]: the answers of the upstream, shared so the harness can check what came back.

pub mod bodies;
