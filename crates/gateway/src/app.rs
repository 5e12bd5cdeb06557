//! What the gateway holds while it runs, shared by every request: the routing in force, the
//! verifier, the store, the replicas' shared state, and what sign-in needs.

use std::sync::{Arc, Mutex, OnceLock};

use kit::shutdown::Shutdown;

use crate::auth::identity::IdentityMinter;
use crate::auth::keys::{KeyTiming, Keys};
use crate::auth::tokens::Tokens;
use crate::auth::Verifier;
use crate::cache::ResponseCache;
use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::issuer::device::DeviceTokens;
use crate::issuer::throttle::KnownDeviceSlots;
use crate::pipeline::observe::Observe;
use crate::reload::ReloadStatus;
use crate::routing::{CurrentRouting, Routing};
use crate::state::Replicated;
use crate::store::Store;

/// Everything a request needs: the current [`Routing`] and what lives as long as the process.
pub struct AppState {
    routing: CurrentRouting,
    /// Access tokens verified, identity tokens minted: the hot path's part of authentication.
    pub auth: Verifier,
    pub store: Store,
    /// What every replica shares: revocations, throttle counters.
    pub shared: Replicated,
    /// Password checks in flight (sign-in): bounded, see [`crate::issuer::throttle`].
    pub credential_checks: tokio::sync::Semaphore,
    /// The same for devices known to have signed in before: a pool of their own, a few slots
    /// per account at most.
    pub known_device_checks: KnownDeviceSlots,
    /// Signs and verifies device tokens (see [`crate::issuer::device`]).
    pub devices: DeviceTokens,
    pub reloads: ReloadStatus,
    /// One reload at a time (SIGHUP and the file watch may coincide).
    pub(crate) reloading: Mutex<()>,
    /// Set while serving: services a reload adds start their health checks on it.
    pub(crate) serving: OnceLock<Shutdown>,
    /// Metrics and the access log.
    pub observe: Observe,
    /// Rate limits: the buckets (memory, or the fallback while Redis is down) outlive reloads.
    pub limiter: crate::limit::Limiter,
    /// Stored answers of the routes with `cache:` (in Redis when the state is).
    pub cache: ResponseCache,
    /// Where the gateway reads the time where it decides behaviour: device-token and
    /// refresh-token lifetimes, the proxy's per-instance bookkeeping (breaker, back-off,
    /// decay, trials, health verdicts; every service holds a clone), the response cache's
    /// freshness, the reuse of callers' identity tokens and the file watch's settle time
    /// (the cache and the minter hold clones). The system's, or a test's manual clock.
    pub clock: Clock,
    /// The services' OpenAPI documents and the merged one (see [`crate::openapi`]).
    pub docs: crate::openapi::ApiDocs,
    /// What the status page keeps between its requests (see [`crate::status`]).
    pub status: crate::status::StatusState,
}

/// The gateway's state as requests and background tasks hold it.
pub type App = Arc<AppState>;

impl AppState {
    /// Opens the store (creating the first signing key if needed) and builds the first routing.
    pub async fn open(
        config: GatewayConfig,
        observe: Observe,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let store = Store::connect_with(config.store.expose_secret(), config.store_pool).await?;
        let shared = Replicated::connect_with_store(&config.state, store.clone()).await?;
        let keys = Arc::new(
            Keys::load(
                store.clone(),
                config.tokens.algorithm,
                KeyTiming::of(&config),
            )
            .await?,
        );
        let devices = DeviceTokens::load(&store, clock.clone()).await?;
        let auth = Verifier {
            tokens: Tokens::new(Arc::clone(&keys), config.tokens.clone()),
            identities: IdentityMinter::new(
                Arc::clone(&keys),
                config.tokens.issuer.clone(),
                clock.clone(),
            ),
            keys,
        };
        // Read once: a reload cannot resize the semaphore (the setting then needs a restart).
        let concurrent_checks = config.auth.throttle.concurrent;
        let cache = ResponseCache::new(
            &config.cache,
            shared.is_redis(),
            &observe.metrics,
            clock.clone(),
        );
        Ok(Self {
            routing: CurrentRouting::new(Routing::first(config, clock.clone())?),
            auth,
            store,
            shared,
            credential_checks: tokio::sync::Semaphore::new(concurrent_checks),
            known_device_checks: KnownDeviceSlots::new(concurrent_checks),
            devices,
            reloads: ReloadStatus::starting(),
            reloading: Mutex::new(()),
            serving: OnceLock::new(),
            limiter: crate::limit::Limiter::new(&observe.metrics),
            observe,
            cache,
            clock,
            docs: crate::openapi::ApiDocs::default(),
            status: crate::status::StatusState::default(),
        })
    }

    /// The routing in force now; a request keeps the one it started with.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load()
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<GatewayConfig> {
        Arc::clone(&self.routing().config)
    }

    /// The services in force now.
    pub fn upstreams(&self) -> Arc<crate::proxy::upstream::Upstreams> {
        Arc::clone(&self.routing().upstreams)
    }

    /// Puts `next` in force: see [`crate::reload::apply`].
    pub(crate) fn replace_routing(&self, next: Arc<Routing>) {
        self.routing.replace(next);
    }
}
