//! The gateway's phases wired together, and serving until shutdown.
//!
//! request id → strip client-asserted headers → match route → authenticate + authorize →
//! rewrite headers and path → forward → respond.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::Limited;
use kit::shutdown::Shutdown;
use kit::Problem;
use tokio::net::TcpListener;

use crate::auth::identity::IdentityMinter;
use crate::auth::keys::Keys;
use crate::auth::tokens::{AccessClaims, Refusal, Tokens, LEEWAY_SECONDS};
use crate::auth::{self, jwks, login, oauth, policy, session, upkeep};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::proxy::forward;
use crate::proxy::headers::{self, Forwarding};
use crate::proxy::upstream::Upstreams;
use crate::router::{Lookup, RouteTable};
use crate::state::SharedState as Replicated;
use crate::store::Store;

/// Everything a request needs, built once at start.
pub struct GatewayState {
    pub config: GatewayConfig,
    pub table: RouteTable,
    pub upstreams: Upstreams,
    pub keys: Arc<Keys>,
    pub tokens: Tokens,
    pub identities: IdentityMinter,
    pub store: Store,
    /// What every replica shares: revocations, throttle counters.
    pub shared: Replicated,
    service_names: HashMap<String, Arc<str>>,
}

pub type SharedState = Arc<GatewayState>;

/// How long a replaced signing key keeps verifying: the longest a token it signed can live,
/// plus the time other replicas may take to pick up its successor.
pub fn key_grace(config: &GatewayConfig) -> std::time::Duration {
    config.tokens.access_ttl
        + kit::identity::TOKEN_TTL
        + upkeep::KEY_RELOAD_INTERVAL
        + std::time::Duration::from_secs(LEEWAY_SECONDS)
}

impl GatewayState {
    /// The verified, unrevoked access token of a request.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<AccessClaims, GatewayError> {
        let token = auth::bearer_token(headers)?;
        let claims = match self.tokens.verify(token) {
            // Perhaps a key another replica rotated in since our last reload.
            Err(Refusal::UnknownKey)
                if self
                    .keys
                    .reload_if_older_than(std::time::Duration::from_secs(1))
                    .await? =>
            {
                self.tokens.verify(token)?
            }
            other => other?,
        };
        if self
            .shared
            .mirror()
            .is_revoked(&claims.jti, &claims.sub, claims.issued_ms())
        {
            return Err(GatewayError::InvalidToken("the token has been revoked"));
        }
        Ok(claims)
    }
}

pub struct Gateway {
    state: SharedState,
}

impl Gateway {
    /// Opens the store (creating the first signing key if needed) and builds the route table.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let store = Store::connect(&config.store).await?;
        let shared = Replicated::connect(&config.state).await?;
        let keys =
            Arc::new(Keys::load(store.clone(), config.tokens.algorithm, key_grace(&config)).await?);
        let table = RouteTable::build(&config.routes)?;
        let upstreams = Upstreams::new(&config.services);
        let tokens = Tokens::new(Arc::clone(&keys), config.tokens.clone());
        let identities = IdentityMinter::new(Arc::clone(&keys), config.tokens.issuer.clone());
        let service_names = config
            .services
            .keys()
            .map(|name| (name.clone(), Arc::from(name.as_str())))
            .collect();
        let state = GatewayState {
            config,
            table,
            upstreams,
            keys,
            tokens,
            identities,
            store,
            shared,
            service_names,
        };
        Ok(Self {
            state: Arc::new(state),
        })
    }

    pub fn state(&self) -> &SharedState {
        &self.state
    }

    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.state);
        let readiness =
            kit::health::router(vec![("store", state.store.database().readiness_check())]);
        Router::new()
            .route(&state.config.auth.login_path, post(login::login))
            .route(&state.config.auth.token_path, post(oauth::token))
            .route(&state.config.auth.refresh_path, post(session::refresh))
            .route(&state.config.auth.logout_path, post(session::logout))
            .route("/.well-known/jwks.json", get(jwks::serve))
            .fallback(proxy)
            .method_not_allowed_fallback(|| async { Problem::new(StatusCode::METHOD_NOT_ALLOWED) })
            .with_state(state)
            .merge(readiness)
            .layer(axum::middleware::from_fn(kit::request_id::middleware))
    }

    /// Serves on `listener` until `shutdown` fires, then finishes the requests in flight.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
        let address = listener.local_addr()?;
        tracing::info!(%address, routes = self.state.config.routes.len(), "gateway listening");
        let upkeep = tokio::spawn(upkeep::run(Arc::clone(&self.state), shutdown.clone()));
        axum::serve(
            listener,
            self.router()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
        upkeep.abort();
        tracing::info!("gateway stopped");
        Ok(())
    }
}

async fn proxy(State(state): State<SharedState>, request: Request) -> Response {
    match route_and_forward(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn route_and_forward(
    state: &SharedState,
    request: Request,
) -> Result<Response, GatewayError> {
    let (mut parts, body) = request.into_parts();
    let client_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());

    let path = parts.uri.path();
    if has_dot_segments(path) {
        return Err(GatewayError::BadRequest(
            "Paths with `.` or `..` segments are not accepted.".to_owned(),
        ));
    }
    let (route, mut target) = match state.table.lookup(&parts.method, path) {
        Lookup::Found { route, params } => (Arc::clone(route), route.to.render(&params)),
        Lookup::MethodNotAllowed { allow } => {
            return Err(GatewayError::MethodNotAllowed {
                allow: allow.clone(),
            })
        }
        Lookup::NotFound => return Err(GatewayError::NoRoute),
    };

    let caller = if route.settings.auth.needs_identity() {
        let claims = state.authenticate(&parts.headers).await?;
        policy::authorize(&route.settings.auth, &claims)?;
        Some(claims)
    } else {
        None
    };

    let limit = state.config.limits.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }

    let service = state
        .service_names
        .get(&route.settings.service)
        .ok_or_else(|| GatewayError::Internal(anyhow::anyhow!("route to an unknown service")))?;
    let upstream = state.upstreams.get(service).ok_or_else(|| {
        GatewayError::Internal(anyhow::anyhow!("no upstream for service {service}"))
    })?;

    if let Some(query) = parts.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    let original_host = parts.headers.get(header::HOST).cloned();
    headers::sanitize_request(&mut parts.headers);
    headers::add_forwarding(
        &mut parts.headers,
        &Forwarding {
            client_ip,
            host: original_host.as_ref(),
            proto: "http",
        },
    );
    if let Some(claims) = &caller {
        // Services get the identity, not the bearer token: they cannot replay it elsewhere.
        parts.headers.remove(header::AUTHORIZATION);
        parts.headers.insert(
            kit::identity::HEADER,
            state.identities.for_caller(claims, service)?,
        );
        if let Ok(id) = HeaderValue::from_str(&claims.sub) {
            parts.headers.insert(headers::X_USER_ID, id);
        }
    }
    parts.uri = upstream.uri_for(&target)?;
    parts.version = http::Version::HTTP_11;

    let body = Body::new(Limited::new(
        body,
        usize::try_from(limit).unwrap_or(usize::MAX),
    ));
    let timeout = route.settings.timeout.unwrap_or(upstream.timeout);
    forward::send(upstream, Request::from_parts(parts, body), timeout)
        .await
        .map_err(|error| match error {
            GatewayError::PayloadTooLarge { .. } => GatewayError::PayloadTooLarge { limit },
            other => other,
        })
}

/// `.` and `..` segments (also percent-encoded) could climb out of a route's prefix upstream.
fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::has_dot_segments;

    #[test]
    fn dot_segments_are_found_even_when_encoded() {
        assert!(has_dot_segments("/api/users/../internal"));
        assert!(has_dot_segments("/api/%2E%2e/x"));
        assert!(has_dot_segments("/api/."));
        assert!(!has_dot_segments("/api/users/a.b"));
        assert!(!has_dot_segments("/api/users/..."));
    }
}
