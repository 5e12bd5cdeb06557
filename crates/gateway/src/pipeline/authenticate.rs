//! Authenticate: who is calling. A public route needs nobody; any other needs a verified,
//! unrevoked access token (see [`crate::auth::Verifier`]). A route with `client_cert` also
//! needs the connection's verified client certificate (mTLS) to be one it admits; with
//! `auth: public` the certificate alone authenticates a machine client.

use std::sync::Arc;

use crate::app::AppState;
use crate::auth::tokens::AccessClaims;
use crate::error::GatewayError;
use crate::router::Route;

/// `Ok` when `route` asks for no client certificate, or the connection's (verified by the
/// listener against the client CA) is one it admits: none → 401, another → 403.
pub fn certificate(route: &Route, extensions: &http::Extensions) -> Result<(), GatewayError> {
    let Some(rule) = &route.settings.client_cert else {
        return Ok(());
    };
    let presented = extensions
        .get::<kit::tls::TlsSession>()
        .and_then(|session| session.client_certificate.as_deref());
    match presented {
        None => Err(GatewayError::ClientCertificateMissing),
        Some(certificate) if rule.admits(certificate) => Ok(()),
        Some(certificate) => {
            tracing::debug!(subject = %certificate.subject, "client certificate not admitted by the route");
            Err(GatewayError::ClientCertificateRefused)
        }
    }
}

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
