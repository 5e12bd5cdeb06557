//! The services' instances and the pooled HTTP client that reaches them: one client per service
//! (its own connect timeout), keep-alive connections reused across requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::ServiceSettings;
use crate::error::GatewayError;

pub type HttpClient = Client<HttpConnector, Body>;

/// One service as the proxy sees it.
pub struct Upstream {
    pub name: Arc<str>,
    instances: Vec<Authority>,
    next: AtomicUsize,
    pub client: HttpClient,
    pub timeout: Duration,
}

impl Upstream {
    pub fn new(name: &str, settings: &ServiceSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let instances = settings
            .upstreams
            .iter()
            .filter_map(|uri| uri.authority().cloned())
            .collect();
        Self {
            name: Arc::from(name),
            instances,
            next: AtomicUsize::new(0),
            client,
            timeout: settings.timeout,
        }
    }

    /// The URI of `path_and_query` on the next instance, in turn.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let authority = self
            .instances
            .get(turn % self.instances.len().max(1))
            .cloned()
            .ok_or_else(|| GatewayError::Unavailable {
                service: self.name.to_string(),
            })?;
        let path_and_query = PathAndQuery::try_from(path_and_query).map_err(|_| {
            GatewayError::BadRequest("The request path cannot be forwarded.".to_owned())
        })?;
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| GatewayError::Internal(anyhow::anyhow!("building an upstream URI: {e}")))
    }
}

/// Every configured service, by name.
pub struct Upstreams(HashMap<String, Arc<Upstream>>);

impl Upstreams {
    pub fn new(services: &std::collections::BTreeMap<String, ServiceSettings>) -> Self {
        Self(
            services
                .iter()
                .map(|(name, settings)| (name.clone(), Arc::new(Upstream::new(name, settings))))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.0.get(name)
    }
}
