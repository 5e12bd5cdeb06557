//! `GET /time`: the current time, as much of it as the caller's scopes allow.

use axum::extract::State;
use kit::extract::Json;
use kit::openapi::problems;
use kit::Identity;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::domain::{Reading, Time};
use crate::error::Error;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(time))
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
async fn time(State(state): State<AppState>, identity: Identity) -> Result<Json<Time>, Error> {
    let reading = Reading::allowed_to(&identity)?;
    Ok(Json(Time::read(state.now.get(), reading)))
}
