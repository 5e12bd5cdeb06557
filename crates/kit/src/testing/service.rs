//! Starting a service for one test: whatever builds a [`Service`] (users, orders, clock, a test's
//! own routes) is served on loopback listeners bound here, with its metrics and access log
//! watched, and stopped when the test drops it. Every service suite starts its service this way,
//! so they all test the same wiring the binaries serve.

use std::sync::Arc;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use tokio::net::TcpListener;

use super::observe::{request_counts, RequestCount, Watch};
use super::{FakeGateway, TestDatabase, TestResponse};
use crate::db::Database;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::IdentityVerifier;

/// A service serving on loopback for one test; stopped (drained) when dropped.
pub struct SpawnedService {
    /// `http://127.0.0.1:PORT` of the public listener.
    pub address: String,
    /// `http://127.0.0.1:PORT` of the admin listener, where `/metrics` is served.
    pub admin: String,
    /// The service's metrics registry and access log, read back.
    pub watch: Watch,
    /// A client for the test's own requests (connection reuse, as a gateway would).
    pub http: reqwest::Client,
    shutdown: Shutdown,
}

impl Drop for SpawnedService {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Serves `service` on fresh loopback listeners (bound here and handed over, so there is no
/// window in which another test could take the port) until the returned value is dropped.
pub async fn spawn_service(service: Service) -> SpawnedService {
    let public = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the service");
    let admin = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the admin listener");
    let address = format!("http://{}", public.local_addr().expect("its address"));
    let admin_address = format!("http://{}", admin.local_addr().expect("its address"));
    let watch = Watch::new();
    let shutdown = Shutdown::new();
    let service = service
        .with_observe(watch.metrics.clone(), watch.access_log.clone())
        .with_admin_listener(admin);
    tokio::spawn(service.serve(public, shutdown.clone()));
    SpawnedService {
        address,
        admin: admin_address,
        watch,
        http: reqwest::Client::new(),
        shutdown,
    }
}

/// Where a service under test answers, owned and cheap to clone: what a caller moved into a
/// spawned task holds (the [`SpawnedService`] itself stays with the test, which stops it).
#[derive(Clone)]
pub struct ServiceClient {
    address: String,
    http: reqwest::Client,
}

impl ServiceClient {
    /// A request to `path`, anonymous and without a body until told otherwise.
    pub fn call(&self, method: Method, path: &str) -> Call {
        Call {
            http: self.http.clone(),
            method,
            url: format!("{}{path}", self.address),
            identity: None,
            body: None,
            headers: Vec::new(),
        }
    }
}

/// One request to a service under test, built up and then [`Call::send`]: the identity token
/// the gateway would add, a body with its content type, extra headers.
#[must_use = "a call does nothing until sent"]
pub struct Call {
    http: reqwest::Client,
    method: Method,
    url: String,
    identity: Option<String>,
    body: Option<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Call {
    /// The identity token the gateway sends (`None`: an anonymous call).
    pub fn identity(mut self, token: Option<&str>) -> Self {
        self.identity = token.map(str::to_owned);
        self
    }

    /// `bytes` as the body, sent as they are under `content_type`.
    pub fn body(mut self, content_type: &str, bytes: impl Into<String>) -> Self {
        self.body = Some((content_type.to_owned(), bytes.into()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends the call and reads the whole answer.
    pub async fn send(self) -> TestResponse {
        let mut request = self.http.request(self.method, self.url);
        if let Some(token) = &self.identity {
            request = request.header(crate::identity::HEADER, token);
        }
        if let Some((content_type, bytes)) = self.body {
            request = request.header(CONTENT_TYPE, content_type).body(bytes);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        TestResponse {
            status,
            headers,
            text,
        }
    }
}

impl SpawnedService {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request to `path`, anonymous and without a body until told otherwise.
    pub fn call(&self, method: Method, path: &str) -> Call {
        self.client().call(method, path)
    }

    /// A handle on the service that can move into spawned tasks.
    pub fn client(&self) -> ServiceClient {
        ServiceClient {
            address: self.address.clone(),
            http: self.http.clone(),
        }
    }

    /// `/metrics` from the admin listener.
    pub async fn scrape(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("the admin listener answers");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("a readable exposition")
    }

    /// The request series of `/metrics`, once their total reaches `expected`: an answer is
    /// counted when its body has ended, a moment after the client read it. Gives up after the
    /// tests' patience and returns what there is, for the test to show.
    pub async fn request_counts(&self, expected: u64) -> Vec<RequestCount> {
        super::wait::read_until(
            || async { request_counts(&self.scrape().await) },
            |series| series.iter().map(|s| s.count).sum::<u64>() >= expected,
        )
        .await
    }
}

/// A service suite's app on a database of its own: `build` (the crate's `service` function)
/// given `db` and a verifier that trusts a [`FakeGateway`] named for the service, served by
/// [`spawn_service`]. Checks first that `db` runs on the backend `database` was asked for.
pub async fn spawn_on_database(
    database: &TestDatabase,
    db: &Database,
    name: &str,
    build: impl FnOnce(Database, Arc<IdentityVerifier>) -> Service,
) -> (FakeGateway, SpawnedService) {
    database.assert_backend_of(db);
    let gateway = FakeGateway::for_service(name);
    let service = spawn_service(build(db.clone(), Arc::new(gateway.verifier()))).await;
    (gateway, service)
}
