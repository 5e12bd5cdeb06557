//! End-to-end tests: the whole system started as `gatehouse up` starts it, on free ports,
//! driven over real HTTP like a client would, with test upstreams beside the bundled services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet;
mod support;

mod config;
mod drain;
mod lifecycle;
mod login;
mod oauth;
mod proxy;
mod quickstart;
mod reload;
mod replicas;
mod replicas_faults;
mod resilience;
mod services;
mod store_outage;
mod tokens;
mod users_through_gateway;
