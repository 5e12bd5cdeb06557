//! The gatehouse gateway: the only public entrance to the services.
//!
//! # Layout
//! The request path is [`pipeline`], its phases in the order a request meets them: accept →
//! normalize → route → authenticate → authorize → cache → forward → respond → observe. The rest is what
//! those phases use:
//! - [`app`]: what the gateway holds while it runs; [`routing`]: the snapshot a reload swaps.
//! - [`router`]: the route table (radix tree) and upstream path templates.
//! - [`auth`]: the hot-path verifier: keys, access tokens, identity tokens, route policies.
//! - [`issuer`]: the token issuer, off the hot path: login, refresh and logout, the OAuth token
//!   endpoint, clients, device tokens, sign-in throttling, the users service's client, JWKS.
//! - [`proxy`]: services and their instances, balancing, health checks, breaker, retries,
//!   header rewriting and the forwarding itself.
//! - [`store`]: the durable store (SQLite or PostgreSQL): keys, clients, refresh tokens,
//!   revocations, the device-token secret, and the writes waiting out a store outage.
//! - [`limit`]: rate limits (GCRA): policies, memory buckets, the Redis script, the fallback.
//! - [`state`]: what replicas share (memory or Redis, behind a breaker): revocations and
//!   login-throttle counters.
//! - [`transform`]: per-route request and response edits: headers, query, JSON fields.
//! - [`cache`]: the response cache (RFC 9111 shared-cache rules, memory or Redis, coalescing).
//! - [`compose`]: composition routes: several services' answers as one object, by part name.
//! - [`config`]: the YAML file, `${VAR}` substitution, validation with errors naming the field.
//! - [`reload`]: hot reload of the configuration file (watch and SIGHUP).
//! - [`entrance`]: TLS at the public listener: certificates kept current, HSTS, the plain-HTTP
//!   listener that redirects to HTTPS.
//! - `settle`: how both file watches wait for a change to settle, on the app's clock.
//! - [`openapi`]: the merged OpenAPI document (`/openapi.json`), `/docs` and `/redoc`, and the
//!   request-body validation against the services' own documents.
//! - [`readiness`]: `/readyz`, the gateway's own ability to serve, with upstream health as detail.
//! - [`status`]: `/status` and `/status.json` on the admin listener: instances, each route's
//!   last minute (fed by the observe phase), the configuration's generation, the signing keys.
//! - [`clock`]: the wall clock and the monotonic clock, in one place.
//! - [`error`]: every answer the gateway makes itself, as problem+json.
//! - [`trace`]: the request's W3C trace, the `traceparent` sent to services, the phases' spans.
//! - [`server`]: the gateway assembled and served.

pub mod app;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod compose;
pub mod config;
pub mod entrance;
pub mod error;
pub mod issuer;
pub mod limit;
pub mod openapi;
pub mod pipeline;
pub mod proxy;
pub mod readiness;
pub mod reload;
pub mod router;
pub mod routing;
pub mod server;
mod settle;
pub mod state;
pub mod status;
pub mod store;
pub mod trace;
pub mod transform;

pub use server::Gateway;
