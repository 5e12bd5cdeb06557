//! End-to-end tests: the whole system started as `gatehouse up` starts it, on free ports,
//! driven over real HTTP like a client would, with test upstreams beside the bundled services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet;
mod harness;
mod support;

mod browser;
mod cache;
mod cache_bounds;
mod cache_redis;
mod captured_identity;
mod compose;
mod config;
mod deploy;
mod deploy_manifests;
mod devices;
mod drain;
mod gateway_observe;
mod http_conformance;
mod lifecycle;
mod login;
mod oauth;
mod observe;
mod openapi;
mod own_account;
mod own_endpoints;
mod proxy;
mod quickstart;
mod rate_limits;
mod rate_limits_redis;
mod readiness;
mod recovery;
mod reload;
mod replicas;
mod replicas_faults;
mod resilience;
mod secrets_at_rest;
mod services;
mod slow_clients;
mod status;
mod store_outage;
mod tls;
mod tokens;
// `tracing.rs`, named apart from the `tracing` crate.
#[path = "tracing.rs"]
mod tracing_otlp;
mod transforms;
mod upstream_tls;
mod users_through_gateway;
mod websocket;
