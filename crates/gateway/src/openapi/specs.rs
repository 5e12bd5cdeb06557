//! The services' own documents: each routed service's `GET /openapi.json`, fetched through the
//! service client the proxy uses (its instances, balancing and breaker, with the gateway's
//! identity token for that service), kept, and fetched again on the services' health-check
//! cadence (every [`DEFAULT_REFRESH`] for a service without checks) and after a reload. A
//! document is replaced only when its bytes change (`If-None-Match` with the service's `ETag`,
//! and a SHA-256 of the body either way); a service that cannot be reached keeps its last good
//! copy, marked stale, and one never fetched is missing — the merged document says which,
//! rather than failing.
//!
//! Nothing is fetched until a document or a body validation is first asked for: a gateway whose
//! clients never read its API description does not poll its services for one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::clock::Every;
use crate::config::GatewayConfig;
use crate::proxy::forward;

/// Where every service serves its document.
pub const SPEC_PATH: &str = "/openapi.json";
/// How often a service without health checks is asked for its document again.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);
/// The longest a fetch may take (the service's own timeout when shorter): the first validated
/// request after a reload waits for the fetch, and a frozen service must not hold it long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A document larger than this is not one the gateway merges (the bundled ones are ~30 KiB).
const MAX_SPEC_BYTES: usize = 8 * 1024 * 1024;

/// One service's document as last fetched.
#[derive(Debug)]
pub struct ServiceSpec {
    pub document: Value,
    /// SHA-256 of the body, hex: what tells a changed document from the same one again.
    pub digest: String,
    etag: Option<HeaderValue>,
}

impl ServiceSpec {
    /// A document known by other means than a fetch (its digest given), for tests.
    #[cfg(test)]
    pub fn new(document: Value, digest: String) -> Self {
        Self {
            document,
            digest,
            etag: None,
        }
    }
}

/// How a service's document stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Current,
    /// The last fetch failed (the reason); the copy before it is used.
    Stale(String),
    /// Never fetched (the reason): the service's routes are listed without its schemas.
    Missing(String),
}

/// The documents of the routed services at one moment; replaced whole.
#[derive(Debug, Default)]
pub struct Specs {
    pub documents: BTreeMap<String, Arc<ServiceSpec>>,
    pub standing: BTreeMap<String, Standing>,
    /// Changes whenever a document or a standing does: the merged document is rebuilt then.
    pub generation: u64,
    /// The configuration these were fetched for (its address; a reload makes a new one).
    pub(super) config: usize,
}

/// The services' documents, shared by the merged document and the body validation.
#[derive(Default)]
pub struct SpecCache {
    current: ArcSwap<Specs>,
    /// One refresh at a time (the timer and a request after a reload may coincide).
    refreshing: tokio::sync::Mutex<()>,
    started: AtomicBool,
}

fn address_of(config: &Arc<GatewayConfig>) -> usize {
    Arc::as_ptr(config) as usize
}

impl SpecCache {
    /// The documents as they are now, without waiting.
    pub fn current(&self) -> Arc<Specs> {
        self.current.load_full()
    }

    /// The documents for the configuration in force: fetched now when they never were or a
    /// reload changed the routes since; the periodic refresh started on first use.
    pub async fn ready(&self, app: &App) -> Arc<Specs> {
        let config = app.config();
        if self.current().config != address_of(&config) {
            let _one = self.refreshing.lock().await;
            // Requests that waited for the one that fetched find the documents there.
            if self.current().config != address_of(&config) {
                self.fetch_all(app).await;
            }
        }
        if !self.started.swap(true, Ordering::SeqCst) {
            start(app);
        }
        self.current()
    }

    /// Fetches every routed service's document again; keeps what did not change.
    pub async fn refresh(&self, app: &App) {
        let _one = self.refreshing.lock().await;
        self.fetch_all(app).await;
    }

    /// The refresh itself; the caller holds `refreshing`.
    async fn fetch_all(&self, app: &App) {
        let config = app.config();
        let before = self.current();
        let services: Vec<String> = described_services(&config)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let fetches = services.iter().map(|service| {
            let previous = before.documents.get(service).cloned();
            async move {
                // The whole fetch, body included: a service that stalls mid-document must not
                // hold the refresh (and the requests waiting for it).
                let fetched =
                    tokio::time::timeout(FETCH_TIMEOUT, fetch(app, service, previous.as_deref()))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("no whole document within {FETCH_TIMEOUT:?}"))
                        });
                (service, fetched)
            }
        });
        let results = futures_util::future::join_all(fetches).await;
        let mut documents = BTreeMap::new();
        let mut standing = BTreeMap::new();
        for (service, result) in results {
            let previous = before.documents.get(service);
            match (result, previous) {
                (Ok(Some(fresh)), _) => {
                    documents.insert(service.clone(), Arc::new(fresh));
                    standing.insert(service.clone(), Standing::Current);
                }
                (Ok(None), Some(same)) => {
                    documents.insert(service.clone(), Arc::clone(same));
                    standing.insert(service.clone(), Standing::Current);
                }
                (Ok(None), None) => {
                    standing.insert(
                        service.clone(),
                        Standing::Missing("not modified, but never fetched".to_owned()),
                    );
                }
                (Err(why), Some(last)) => {
                    documents.insert(service.clone(), Arc::clone(last));
                    standing.insert(service.clone(), Standing::Stale(why));
                }
                (Err(why), None) => {
                    standing.insert(service.clone(), Standing::Missing(why));
                }
            }
        }
        let unchanged = standing == before.standing
            && documents.len() == before.documents.len()
            && documents.iter().all(|(name, spec)| {
                before
                    .documents
                    .get(name)
                    .is_some_and(|old| old.digest == spec.digest)
            });
        let generation = if unchanged {
            before.generation
        } else {
            before.generation + 1
        };
        self.current.store(Arc::new(Specs {
            documents,
            standing,
            generation,
            config: address_of(&config),
        }));
    }
}

/// The periodic refresh: on the shortest health-check interval of the routed services (at
/// most [`DEFAULT_REFRESH`]) of the app's clock, until the gateway stops.
fn start(app: &App) {
    let Some(shutdown) = app.serving.get().cloned() else {
        // Not serving (a test building documents by hand): fetched on demand only.
        return;
    };
    // Counted from here, on the app's clock: a test moves its manual clock past a period
    // instead of waiting for one, even before this task first waits.
    let mut every = Every::new(app.clock.clone(), cadence(&app.config()));
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        loop {
            let then = match app.upgrade() {
                Some(app) => cadence(&app.config()),
                None => break,
            };
            tokio::select! {
                () = every.tick(then) => {}
                () = shutdown.wait() => break,
            }
            let Some(app) = app.upgrade() else { break };
            app.docs.specs.refresh(&app).await;
        }
    });
}

/// The services whose documents the merged one reads: each route's, and for a composition
/// route each part's (its member's schema is the part's answer).
fn described_services(config: &GatewayConfig) -> std::collections::BTreeSet<&str> {
    config
        .routes
        .iter()
        .flat_map(|route| match route.compose.as_deref() {
            Some(plan) => plan.services().collect::<Vec<_>>(),
            None => vec![route.service.as_str()],
        })
        .collect()
}

fn cadence(config: &GatewayConfig) -> Duration {
    described_services(config)
        .into_iter()
        .filter_map(|service| config.services.get(service))
        .filter_map(|service| service.health.as_ref().map(|health| health.interval))
        .min()
        .unwrap_or(DEFAULT_REFRESH)
        .min(DEFAULT_REFRESH)
}

/// `service`'s document: `Ok(None)` when it is the same as `previous`, `Err` saying why none.
async fn fetch(
    app: &App,
    service: &str,
    previous: Option<&ServiceSpec>,
) -> Result<Option<ServiceSpec>, String> {
    let upstreams = app.upstreams();
    let upstream = upstreams
        .get(service)
        .ok_or_else(|| "the service is not configured".to_owned())?;
    let identity = app
        .auth
        .identities
        .for_gateway(&upstream.name)
        .map_err(|error| format!("no identity token: {error}"))?;
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(upstream.uri_for(SPEC_PATH).map_err(|e| e.to_string())?)
        .header(kit::identity::HEADER, identity)
        .header(header::ACCEPT, "application/json");
    if let Some(etag) = previous.and_then(|spec| spec.etag.clone()) {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let request = request.body(Body::empty()).map_err(|e| e.to_string())?;
    let response = forward::send(upstream, request, upstream.timeout.min(FETCH_TIMEOUT))
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED && previous.is_some() {
        return Ok(None);
    }
    if status != StatusCode::OK {
        return Err(format!("GET {SPEC_PATH} answered {}", status.as_u16()));
    }
    let etag = response.headers().get(header::ETAG).cloned();
    let bytes = Limited::new(response.into_body(), MAX_SPEC_BYTES)
        .collect()
        .await
        .map_err(|error| format!("reading {SPEC_PATH}: {error}"))?
        .to_bytes();
    let digest = hex(&Sha256::digest(&bytes));
    if previous.is_some_and(|spec| spec.digest == digest) {
        return Ok(None);
    }
    let document: Value = serde_json::from_slice(&bytes)
        .map_err(|error| format!("{SPEC_PATH} is not JSON: {error}"))?;
    let version = document["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.") || !document["paths"].is_object() {
        return Err(format!("{SPEC_PATH} is not an OpenAPI 3 document"));
    }
    tracing::info!(service, digest = %digest, "service OpenAPI document fetched");
    Ok(Some(ServiceSpec {
        document,
        digest,
        etag,
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
