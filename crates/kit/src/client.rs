//! [`ServiceClient`]: how a service (or any machine) calls other services through the gateway
//! as an OAuth 2.0 client: it obtains a client-credentials token, caches it, renews it before it
//! expires (or at once when the gateway refuses it), and sends requests with it.
//!
//! A request sent while handling one continues its trace: `traceparent` (and `tracestate`) name
//! the handling request's span as the parent (see [`crate::trace`]).

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

/// A token is renewed when this little of its life is left, so none expires in flight.
const RENEW_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the gateway refused the client's credentials: {0}")]
    Refused(String),
    #[error("the gateway cannot be reached: {0}")]
    Transport(#[from] reqwest::Error),
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

struct CachedToken {
    value: String,
    renew_at: Instant,
}

pub struct ServiceClient {
    http: reqwest::Client,
    gateway: String,
    token_path: String,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    token: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("gateway", &self.gateway)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client of the gateway at `gateway` (e.g. `http://127.0.0.1:8001`).
    pub fn new(
        gateway: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            gateway: gateway.into().trim_end_matches('/').to_owned(),
            token_path: "/api/oauth/token".to_owned(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: None,
            token: Mutex::new(None),
        }
    }

    /// Asks for these scopes only (space-separated) instead of all the client may have.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// When the gateway's token endpoint is not at the default path.
    pub fn with_token_path(mut self, path: impl Into<String>) -> Self {
        self.token_path = path.into();
        self
    }

    /// A valid access token: the cached one, or a new one when it is near its end. Concurrent
    /// callers wait for a single request to the gateway.
    pub async fn token(&self) -> Result<String, ClientError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<CachedToken, ClientError> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let response = self
            .http
            .post(format!("{}{}", self.gateway, self.token_path))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&form)
            .send()
            .await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::Refused(format!("{status}: {body}")));
        }
        let answer: TokenAnswer = response.json().await?;
        let lifetime = Duration::from_secs(answer.expires_in);
        Ok(CachedToken {
            value: answer.access_token,
            renew_at: Instant::now() + lifetime.saturating_sub(RENEW_MARGIN.min(lifetime / 2)),
        })
    }

    async fn forget(&self, stale: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == stale) {
            *cached = None;
        }
    }

    /// Sends `method path` through the gateway; `build` adds a body, headers or a query. A 401
    /// (the token was revoked, or keys rotated) is retried once with a new token.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let url = format!("{}{path}", self.gateway);
        let trace = trace_headers();
        let request = |method: Method, token: &str| {
            build(self.http.request(method, &url).bearer_auth(token)).headers(trace.clone())
        };
        let token = self.token().await?;
        let response = request(method.clone(), &token).send().await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        self.forget(&token).await;
        let token = self.token().await?;
        Ok(request(method, &token).send().await?)
    }

    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.send(Method::GET, path, |request| request).await
    }
}

/// `traceparent` and `tracestate` continuing the trace of the request being handled on this task,
/// with its server span as the parent; empty outside a request.
fn trace_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(trace) = crate::request_id::current().and_then(|context| context.trace) {
        trace.propagate(&mut headers, trace.span_id);
    }
    headers
}
