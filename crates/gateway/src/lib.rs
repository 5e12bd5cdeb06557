//! The gatehouse gateway: the only public entrance to the services.
//!
//! A request is taken through named phases: request id, strip client-asserted headers, match a
//! route, authenticate and authorize by the route's policy, then proxy to the service with a
//! signed identity, mapping upstream failures to honest 502/503/504 problems.
//!
//! # Layout
//! - [`config`]: the YAML file, `${VAR}` substitution, validation with errors naming the field.
//! - [`normalize`]: what a request must be before anything reads it: its Host, its framing.
//! - [`router`]: the route table (radix tree) and upstream path templates.
//! - [`auth`]: signing keys and JWKS, access tokens, identity tokens for services, login, policies.
//! - [`proxy`]: services and their instances, balancing, health checks, breaker, retries,
//!   header rewriting and the forwarding itself.
//! - [`store`]: the durable store (SQLite or PostgreSQL): keys, clients, refresh tokens,
//!   revocations, the device-token secret, and the writes waiting out a store outage.
//! - [`state`]: what replicas share (memory or Redis, behind a breaker): revocations and
//!   login-throttle counters.
//! - [`server`]: the phases wired together over a swappable routing snapshot.
//! - [`readiness`]: `/readyz`, the gateway's own ability to serve, with upstream health as detail.
//! - [`reload`]: hot reload of the configuration file (watch and SIGHUP).
//! - [`drain`]: serving connections (caps per address, header and send deadlines), and draining
//!   them on shutdown without losing a request.
//! - [`error`]: every answer the gateway makes itself, as problem+json.

pub mod auth;
pub mod config;
pub mod drain;
pub mod error;
pub mod normalize;
pub mod proxy;
pub mod readiness;
pub mod reload;
pub mod router;
pub mod server;
pub mod state;
pub mod store;

pub use server::Gateway;
