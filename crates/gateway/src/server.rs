//! The gateway's phases wired together, and serving until shutdown.
//!
//! request id → normalize (Host, framing) → strip client-asserted headers → match route →
//! authenticate + authorize → rewrite headers and path → forward (pick an instance, retry when
//! safe) → respond.
//!
//! The routes, the services and the live part of the configuration form one [`Routing`]
//! snapshot that a reload replaces at once; each request takes the snapshot current when it
//! starts and keeps it to the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kit::shutdown::Shutdown;
use kit::Problem;
use serde_json::json;
use tokio::net::TcpListener;

use crate::auth::device::DeviceTokens;
use crate::auth::identity::IdentityMinter;
use crate::auth::keys::Keys;
use crate::auth::tokens::{AccessClaims, Refusal, Tokens, LEEWAY_SECONDS};
use crate::auth::{self, jwks, login, oauth, own_body, policy, session, upkeep};
use crate::config::{ConfigError, GatewayConfig, Vars};
use crate::error::GatewayError;
use crate::normalize;
use crate::proxy::forward::{self, Outbound};
use crate::proxy::headers::{self, Forwarding};
use crate::proxy::health;
use crate::proxy::upstream::Upstreams;
use crate::reload::{ReloadStatus, Reloaded, Reloader};
use crate::router::{Lookup, RouteTable};
use crate::state::SharedState as Replicated;
use crate::store::Store;

/// What a reload replaces, as one: the configuration, its route table, its services.
pub struct Routing {
    /// Its start-only settings (listen, store, state, tokens, auth) are always those the
    /// gateway started with.
    pub config: Arc<GatewayConfig>,
    pub table: Arc<RouteTable>,
    pub upstreams: Arc<Upstreams>,
}

/// Everything a request needs: the current [`Routing`] and what lives as long as the process.
pub struct GatewayState {
    routing: RwLock<Arc<Routing>>,
    pub keys: Arc<Keys>,
    pub tokens: Tokens,
    pub identities: IdentityMinter,
    pub store: Store,
    /// What every replica shares: revocations, throttle counters.
    pub shared: Replicated,
    /// Password checks in flight (sign-in): bounded, see [`crate::auth::throttle`].
    pub credential_checks: tokio::sync::Semaphore,
    /// The same for devices known to have signed in before: a pool of their own, a few slots
    /// per account at most.
    pub known_device_checks: crate::auth::throttle::KnownDeviceSlots,
    /// Signs and verifies device tokens (see [`crate::auth::device`]).
    pub devices: DeviceTokens,
    pub reloads: ReloadStatus,
    /// One reload at a time (SIGHUP and the file watch may coincide).
    reloading: Mutex<()>,
    /// Set while serving: services a reload adds start their health checks on it.
    serving: OnceLock<Shutdown>,
}

pub type SharedState = Arc<GatewayState>;

/// How long a replaced signing key keeps verifying: the longest a token it signed can live,
/// plus the time other replicas may take to pick up its successor.
pub fn key_timing(config: &GatewayConfig) -> crate::auth::keys::KeyTiming {
    crate::auth::keys::KeyTiming {
        activation: config.tokens.key_activation,
        grace: key_grace(config),
    }
}

/// How long a replaced key keeps verifying; see [`key_timing`].
pub fn key_grace(config: &GatewayConfig) -> std::time::Duration {
    config.tokens.access_ttl
        + kit::identity::TOKEN_TTL
        + upkeep::KEY_RELOAD_INTERVAL
        + std::time::Duration::from_secs(LEEWAY_SECONDS)
}

impl GatewayState {
    /// The routing in force now; a request keeps the one it started with.
    pub fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<GatewayConfig> {
        Arc::clone(&self.routing().config)
    }

    /// The services in force now.
    pub fn upstreams(&self) -> Arc<Upstreams> {
        Arc::clone(&self.routing().upstreams)
    }

    /// Swaps in `config` (already validated, from `file`): see [`crate::reload`].
    pub fn apply(&self, config: GatewayConfig, file: &str) -> Result<Reloaded, ConfigError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.routing();
        let needs_restart = config.needs_restart(&current.config);
        let config = config.keeping_start_settings_of(&current.config);
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            field: field.to_owned(),
            message,
        };
        if !config
            .services
            .contains_key(&config.auth.credentials_service)
        {
            return Err(invalid(
                "services",
                format!(
                    "the running gateway checks passwords with the service `{}`; keep it (changing auth.credentials needs a restart)",
                    config.auth.credentials_service
                ),
            ));
        }
        let table = RouteTable::build(&config.routes)
            .map_err(|error| invalid("routes", error.to_string()))?;
        let upstreams = Upstreams::succeeding(&config.services, Some(&current.upstreams));
        let services_changed = upstreams
            .iter()
            .filter(|(_, upstream)| !current.upstreams.holds(upstream))
            .map(|(name, _)| name.clone())
            .collect();
        let routes = config.routes.len();
        let next = Arc::new(Routing {
            config: Arc::new(config),
            table: Arc::new(table),
            upstreams: Arc::new(upstreams),
        });
        *self.routing.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&next);

        for (_, old) in current.upstreams.iter() {
            if !next.upstreams.holds(old) {
                old.retire();
            }
        }
        if let Some(shutdown) = self.serving.get() {
            for (_, upstream) in next.upstreams.iter() {
                health::start(upstream, shutdown);
            }
        }
        let generation = self.reloads.applied(needs_restart.clone());
        Ok(Reloaded {
            generation,
            needs_restart,
            services_changed,
            routes,
        })
    }

    /// The verified, unrevoked access token of a request.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<AccessClaims, GatewayError> {
        let claims = self.verify_even_if_revoked(headers).await?;
        if self.shared.mirror().is_revoked(
            &claims.jti,
            claims.sid.as_deref(),
            &claims.sub,
            claims.issued_ms(),
        ) {
            return Err(GatewayError::InvalidToken("the token has been revoked"));
        }
        Ok(claims)
    }

    /// The verified access token of a request, revoked or not: for logout only, so a logout
    /// retried after a partial failure (its token already refused) can finish the job.
    pub async fn verify_even_if_revoked(
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
        Ok(claims)
    }
}

pub struct Gateway {
    state: SharedState,
    reloader: Option<Reloader>,
}

impl Gateway {
    /// Opens the store (creating the first signing key if needed) and builds the route table.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let store = Store::connect_with(config.store.expose_secret(), config.store_pool).await?;
        let shared = Replicated::connect_with_store(&config.state, store.clone()).await?;
        let keys = Arc::new(
            Keys::load(store.clone(), config.tokens.algorithm, key_timing(&config)).await?,
        );
        let devices = DeviceTokens::load(&store).await?;
        let table = RouteTable::build(&config.routes)?;
        let upstreams = Upstreams::new(&config.services);
        let tokens = Tokens::new(Arc::clone(&keys), config.tokens.clone());
        let identities = IdentityMinter::new(Arc::clone(&keys), config.tokens.issuer.clone());
        // Read once: a reload cannot resize the semaphore (the setting then needs a restart).
        let concurrent_checks = config.auth.throttle.concurrent;
        let state = GatewayState {
            routing: RwLock::new(Arc::new(Routing {
                config: Arc::new(config),
                table: Arc::new(table),
                upstreams: Arc::new(upstreams),
            })),
            keys,
            tokens,
            identities,
            store,
            shared,
            credential_checks: tokio::sync::Semaphore::new(concurrent_checks),
            known_device_checks: crate::auth::throttle::KnownDeviceSlots::new(concurrent_checks),
            devices,
            reloads: ReloadStatus::starting(),
            reloading: Mutex::new(()),
            serving: OnceLock::new(),
        };
        Ok(Self {
            state: Arc::new(state),
            reloader: None,
        })
    }

    /// Reloads the configuration from `path` while serving: when its contents change (checked
    /// every `watch`) and on SIGHUP. `vars` are the `${VAR}` values the gateway started with.
    pub fn watch_file(mut self, path: impl Into<PathBuf>, vars: Vars) -> Self {
        self.reloader = Some(Reloader::new(Arc::clone(&self.state), path.into(), vars));
        self
    }

    /// The reloader of the watched file, to reload on demand.
    pub fn reloader(&self) -> Option<Reloader> {
        self.reloader.clone()
    }

    pub fn state(&self) -> &SharedState {
        &self.state
    }

    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.state);
        // The gateway's own paths are fixed at start (`auth` needs a restart to change).
        let config = state.config();
        // The gateway's own endpoints read their bodies within the live limits (auth::own_body).
        let json_body = || from_fn_with_state(Arc::clone(&state), own_body::json);
        let own = Router::new()
            .route(&config.auth.login_path, post(login::login))
            .route(&config.auth.refresh_path, post(session::refresh))
            .route(&config.auth.logout_path, post(session::logout))
            .route_layer(json_body())
            .route(
                &config.auth.token_path,
                post(oauth::token)
                    .route_layer(from_fn_with_state(Arc::clone(&state), own_body::form)),
            )
            .layer(DefaultBodyLimit::disable());
        Router::new()
            .merge(own)
            .route("/.well-known/jwks.json", get(jwks::serve))
            .route(
                "/healthz",
                get(|| async { Json(json!({ "status": "ok" })) }),
            )
            .route("/readyz", get(crate::readiness::readiness))
            // Every route above; the proxy (the hot path) calls it itself, without a layer.
            .route_layer(axum::middleware::from_fn(normalize::request_layer))
            .fallback(proxy)
            .method_not_allowed_fallback(|| async { Problem::new(StatusCode::METHOD_NOT_ALLOWED) })
            .with_state(state)
            .layer(axum::middleware::from_fn(kit::request_id::middleware))
    }

    /// Serves on `listener` until `shutdown` fires, then finishes the requests in flight (for
    /// at most the configured `drain_timeout`).
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
        let address = listener.local_addr()?;
        let state = Arc::clone(&self.state);
        tracing::info!(%address, routes = state.config().routes.len(), "gateway listening");
        let _ = state.serving.set(shutdown.clone());
        for (_, upstream) in state.upstreams().iter() {
            health::start(upstream, &shutdown);
        }
        let upkeep = tokio::spawn(upkeep::run(Arc::clone(&state), shutdown.clone()));
        let stopping = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.wait().await;
                std::time::Instant::now()
            })
        };
        let watch = self
            .reloader
            .clone()
            .map(|reloader| tokio::spawn(reloader.run(shutdown.clone())));
        let router = self.router();
        crate::drain::serve(
            listener,
            router,
            shutdown,
            || state.config().limits.clone(),
            || state.config().drain_timeout,
        )
        .await?;
        upkeep.abort();
        // Store writes still queued get what is left of the drain deadline, then are logged.
        let stopped_at = stopping.await.unwrap_or_else(|_| std::time::Instant::now());
        let left = state
            .config()
            .drain_timeout
            .saturating_sub(stopped_at.elapsed());
        state.store.flush_pending(left).await;
        if let Some(watch) = watch {
            watch.abort();
        }
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
    let routing = state.routing();
    let (mut parts, body) = request.into_parts();
    let host = normalize::request(&parts)?;
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
    let (route, mut target) = match routing.table.lookup(&parts.method, path) {
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

    let limit = routing.config.limits.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }

    let upstream = routing
        .upstreams
        .get(&route.settings.service)
        .ok_or_else(|| {
            GatewayError::Internal(anyhow::anyhow!(
                "no upstream for service {}",
                route.settings.service
            ))
        })?;

    if let Some(query) = parts.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    headers::sanitize_request(&mut parts.headers);
    headers::add_forwarding(
        &mut parts.headers,
        &Forwarding {
            client_ip,
            host: host.as_ref(),
            proto: "http",
        },
    );
    if let Some(claims) = &caller {
        // Services get the identity, not the bearer token: they cannot replay it elsewhere.
        let identity = state.identities.for_caller(
            auth::bearer_token(&parts.headers)?,
            claims,
            &upstream.name,
        )?;
        parts.headers.remove(header::AUTHORIZATION);
        parts.headers.insert(kit::identity::HEADER, identity);
        if let Ok(id) = HeaderValue::from_str(&claims.sub) {
            parts.headers.insert(headers::X_USER_ID, id);
        }
    }

    let timeout = route.settings.timeout.unwrap_or(upstream.timeout);
    let outbound = Outbound {
        method: parts.method,
        target,
        headers: parts.headers,
        body,
    };
    forward::forward(upstream, outbound, timeout, &routing.config.limits).await
}

/// `.` and `..` segments (also percent-encoded) could climb out of a route's prefix upstream.
///
/// An upstream may decode `%2F` or `%5C` into a separator, or take `\` for one, before it
/// resolves dot segments, so those count as separators here: `a%2F..%2Fb` is refused while
/// `a%2Fb` (an encoded slash inside a segment) passes.
fn has_dot_segments(path: &str) -> bool {
    // Most paths hold no dot, escape or backslash at all: answer those without allocating.
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return false;
    }
    let lowered = path.to_ascii_lowercase();
    let separated = lowered
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    separated.split('/').any(|segment| {
        let decoded = segment.replace("%2e", ".");
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
        assert!(has_dot_segments(
            "/files/a%2F..%2F..%2Finternal%2Fcredentials"
        ));
        assert!(has_dot_segments("/files/..%5C..%5Cinternal"));
        assert!(has_dot_segments("/files/a\\..\\b"));
        assert!(
            !has_dot_segments("/files/a%2Fb"),
            "an encoded slash alone is data"
        );
    }
}
