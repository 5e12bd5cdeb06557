//! The kit every gatehouse service is built on.
//!
//! A service written with the kit is a handful of axum handlers: the kit gives it the caller's
//! verified identity, errors that render as RFC 9457 problems, a request id, health endpoints,
//! a database pool with migrations, tracing and a graceful shutdown.
//!
//! # Layout
//! - [`problem`]: the one error body every service answers with (`application/problem+json`).
//! - [`extract`]: `Json`, `Path` and `Query` extractors whose rejections are problems, not text.
//! - [`fields`]: request bodies checked field by field, every bad field listed in one 422.
//! - [`pagination`]: the `limit`/`offset` extractor every list takes, and the page it answers.
//! - [`time`]: timestamps as every service stores and shows them (RFC 3339, UTC, fixed width).
//! - [`identity`]: the [`Identity`] extractor; accepts only an identity token signed by the gateway.
//! - [`request_id`]: keeps or makes the `X-Request-Id`, echoes it, and scopes it for logs and problems.
//! - [`health`]: `GET /healthz` (alive) and `GET /readyz` (dependencies reachable).
//! - [`openapi`]: `GET /openapi.json` from the handlers' utoipa annotations, the shared error schema and
//!   the problem responses every operation shares.
//! - [`client`]: [`client::ServiceClient`], calling other services through the gateway with a client token.
//! - [`db`]: one pool type for SQLite and PostgreSQL, with embedded migrations run at start, and
//!   write transactions retried while the database is busy.
//! - [`private_files`]: SQLite files and their folder kept to their owner (0600/0700), or refused.
//! - [`outage`]: a database that cannot be reached → 503 with `Retry-After`, not 500.
//! - [`observe`]: Prometheus metrics and the JSON access log, the same for the gateway and every service.
//! - [`config`]: the loader of every configuration file, and the settings every service shares.
//! - [`telemetry`]: tracing set-up, human-readable by default and JSON on request.
//! - [`trace`]: W3C Trace Context continued across the fleet (the trace id in every log line and
//!   problem), and OpenTelemetry spans exported over OTLP/HTTP when configured.
//! - [`listener`]: the listener every server runs on (the gateway's and each service's):
//!   header-read deadline, connection caps per address and in all, send deadline, drain; TLS
//!   optional.
//! - [`tls`]: TLS at a listener (rustls, ring): certificates by SNI, reloaded when their files
//!   change, client certificates (mTLS) and what a request knows of them.
//! - [`service`]: wires the pieces above around a service's router and serves it until shutdown.
//! - [`shutdown`]: the signal that starts a graceful shutdown.
//! - [`workers`]: the serving threads, one single-threaded runtime per core, that the gateway's
//!   public listener serves on.
//! - `testing` (feature): per-test databases and a stand-in gateway for the services' tests.

pub mod client;
pub mod config;
pub mod db;
pub mod extract;
pub mod fields;
pub mod health;
pub mod identity;
pub mod listener;
pub mod observe;
pub mod openapi;
pub mod outage;
pub mod pagination;
pub mod private_files;
pub mod problem;
pub mod request_id;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod tls;
pub mod trace;
pub mod workers;

pub use identity::{Identity, IdentityVerifier, PrincipalKind};
pub use problem::{FieldError, Problem};
