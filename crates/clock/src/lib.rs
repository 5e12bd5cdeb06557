//! The clock service: the time, for callers with the scope to read it.
//!
//! It is the kit's proof: one handler, and everything else (the verified caller, problem
//! errors, request ids, health, `/openapi.json`, graceful shutdown) comes from [`kit`].
//!
//! # Layout
//! Everything is here: [`service`] builds the routes, [`Time`] is the one response, and the
//! handler of `GET /time` decides what a caller sees from the scopes of its [`Identity`].

use std::sync::Arc;

use chrono::Utc;
use kit::extract::Json;
use kit::openapi::problems;
use kit::{Identity, Problem};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The service's name: the audience of its identity tokens, and its name in logs.
pub const NAME: &str = "clock";

/// The service (routes, `/openapi.json` and the kit's layers), ready for
/// `.serve(listener, shutdown)` or `.into_router()`. It keeps no state, so it needs no database.
pub fn service(verifier: Arc<kit::IdentityVerifier>) -> kit::service::Service {
    // `default()`, not `new()`: `new()` fills the document's info from utoipa-axum's own package.
    let (router, api) = OpenApiRouter::default()
        .routes(routes!(time))
        .split_for_parts();
    let api = kit::openapi::finish(
        api,
        "gatehouse clock",
        env!("CARGO_PKG_VERSION"),
        "The current time in UTC, for callers with the scope `time:read`; `time:precise` adds \
         the Unix time in milliseconds.",
    );
    kit::service::Service::new(NAME, router, verifier).with_openapi(api)
}

/// The current time.
#[derive(Debug, Serialize, ToSchema)]
pub struct Time {
    /// RFC 3339 in UTC, to the millisecond.
    #[schema(format = DateTime, example = "2026-11-26T12:00:00.123Z")]
    pub iso: String,
    /// Milliseconds since the Unix epoch, the same instant as `iso`; only with `time:precise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = 1_795_694_400_123_i64)]
    pub unix_ms: Option<i64>,
}

/// The current time in UTC. Needs the scope `time:read`; `time:precise` adds `unix_ms`.
///
/// `time:precise` refines `time:read` and does not replace it: a caller with only
/// `time:precise` is refused (403) like a caller with no scope. Users and machine clients are
/// treated alike: only the scopes count.
#[utoipa::path(
    get,
    path = "/time",
    tag = "clock",
    security(("gateway_identity" = [])),
    responses(
        (status = OK, description = "The current time.", body = Time),
        problems::Identified,
        (status = FORBIDDEN, description = "The caller lacks the scope `time:read`."),
    )
)]
async fn time(identity: Identity) -> Result<Json<Time>, Problem> {
    identity.require_scope("time:read")?;
    let now = Utc::now();
    Ok(Json(Time {
        iso: kit::time::format_millis(&now),
        unix_ms: identity
            .has_scope("time:precise")
            .then(|| now.timestamp_millis()),
    }))
}
