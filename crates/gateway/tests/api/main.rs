//! The gateway tested as a library: its request pipeline called without a socket
//! (`tower::ServiceExt::oneshot`), and its shared state backends (memory, and Redis when
//! `GATEHOUSE_TEST_REDIS` names one). The whole system over real sockets is the e2e suite's.
#![allow(clippy::unwrap_used)]

mod limits;
mod policy;
mod state;
