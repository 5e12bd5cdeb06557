//! Authenticate: who is calling. A public route needs nobody; any other needs a verified,
//! unrevoked access token (see [`crate::auth::Verifier`]).

use std::sync::Arc;

use crate::app::AppState;
use crate::auth::tokens::AccessClaims;
use crate::error::GatewayError;
use crate::router::Route;

/// The caller of `route`: `None` on a public route, else the claims of its valid access token.
pub async fn caller(
    app: &AppState,
    route: &Route,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<AccessClaims>>, GatewayError> {
    if !route.settings.auth.needs_identity() {
        return Ok(None);
    }
    let verdict = app.auth.authenticate(headers, app.shared.mirror()).await;
    let outcome = match &verdict {
        Ok(_) => "valid",
        Err(refusal) => refusal.reason(),
    };
    app.observe.gateway.verification(outcome);
    verdict.map(Some)
}
