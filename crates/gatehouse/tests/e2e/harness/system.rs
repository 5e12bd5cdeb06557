//! The whole system in this process, as `gatehouse up` starts it, and typed helpers to talk
//! to it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use gatehouse::up::{self, UpOptions};
use gateway::clock::Clock;
use kit::shutdown::Shutdown;
use serde_json::{json, Value};

use super::upstreams::{dead_address, spawn_echo, spawn_garbage};

pub struct TestApp {
    pub gateway: String,
    pub users: String,
    pub orders: String,
    pub clock: String,
    /// The gateway's admin listener: `/metrics`, the detailed `/readyz`.
    pub admin: String,
    pub data: tempfile::TempDir,
    /// The gateway's store: SQLite under `data`, or a PostgreSQL schema when asked for.
    pub store_url: String,
    _store: kit::testing::TestDatabase,
    pub http: reqwest::Client,
    pub echo_hits: Arc<AtomicUsize>,
    /// The registry every part of the system records into.
    pub metrics: kit::observe::Metrics,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The bundled routes plus test upstreams: `echo` answers what it received, `dead` refuses
/// connections, `garbage` answers bytes that are not HTTP.
fn config_text(echo: SocketAddr, dead: SocketAddr, garbage: SocketAddr) -> String {
    let bundled = gatehouse::EMBEDDED_CONFIG;
    let (head, routes) = bundled
        .split_once("routes:\n")
        .expect("the bundled config has routes");
    // Cut-offs are followed quickly, so tests of revocation need not wait long.
    let head = head.replace("cutoff_poll: 2s", "cutoff_poll: 100ms");
    // A rotated-in key signs after 1 s instead of 70 s, so the rotation test need not wait.
    let head = head.replace(
        "algorithm: EdDSA }",
        "algorithm: EdDSA, key_activation: 1s }",
    );
    let head = head.replace(
        "services:\n",
        &format!(
            "services:\n  echo: {{ upstreams: [\"http://{echo}\"], timeout: 5s }}\n  dead: {{ upstreams: [\"http://{dead}\"], timeout: 5s, connect_timeout: 1s, required: false }}\n  garbage: {{ upstreams: [\"http://{garbage}\"], timeout: 5s, required: false }}\n"
        ),
    );
    let test_routes = [
        r#"{ path: "/api/echo/{*rest}", methods: [GET, POST, PUT, DELETE], service: echo, to: "/echo/{rest}", auth: authenticated }"#,
        r#"{ path: "/api/public/{*rest}", methods: [GET, POST], service: echo, to: "/echo/{rest}", auth: public }"#,
        r#"{ path: /api/admin-echo, methods: [GET], service: echo, to: /echo/admin, auth: { roles: [admin] } }"#,
        r#"{ path: /api/precise-echo, methods: [GET], service: echo, to: /echo/precise, auth: { scopes: ["time:precise"] } }"#,
        r#"{ path: /api/slow, methods: [GET], service: echo, to: /slow, auth: public, timeout: 300ms }"#,
        r#"{ path: /api/dead, methods: [GET, POST], service: dead, to: /, auth: public }"#,
        r#"{ path: /api/garbage, methods: [GET], service: garbage, to: /, auth: public }"#,
    ];
    let mut text = format!("{head}routes:\n{routes}");
    for route in test_routes {
        text.push_str("  - ");
        text.push_str(route);
        text.push('\n');
    }
    text
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|config| config).await
}

/// The system with its gateway configuration passed through `edit` first.
pub async fn spawn_app_with(edit: impl FnOnce(String) -> String) -> TestApp {
    spawn_app_at(Clock::System, edit).await
}

/// As [`spawn_app_with`], the gateway reading the time from `clock` (a test's
/// [`gateway::clock::ManualClock`], to cross a lifetime without waiting it out).
pub async fn spawn_app_at(clock: Clock, edit: impl FnOnce(String) -> String) -> TestApp {
    let data = tempfile::tempdir().unwrap();
    let echo_hits = Arc::new(AtomicUsize::new(0));
    let echo = spawn_echo(Arc::clone(&echo_hits)).await;
    let dead = dead_address();
    let garbage = spawn_garbage().await;
    let config = data.path().join("gateway.yaml");
    let store = kit::testing::TestDatabase::create("gateway").await;
    let mut text = config_text(echo, dead, garbage);
    let store_url = if store.is_postgres() {
        text = text.replace(
            "\"sqlite://${GATEHOUSE_DATA_DIR:-data}/gateway.db\"",
            &format!("\"{}\"", store.url),
        );
        store.url.clone()
    } else {
        format!("sqlite://{}/data/gateway.db", data.path().display())
    };
    // The access log goes to a file of the test's, not to the test runner's stdout.
    let text = text.replace(
        "access_log: ${GATEHOUSE_ACCESS_LOG:-stdout}",
        &format!(
            "access_log: \"{}\"",
            data.path().join("access.log").display()
        ),
    );
    assert!(
        text.contains("access.log"),
        "the bundled config names its access log"
    );
    std::fs::write(&config, edit(text)).unwrap();

    let shutdown = Shutdown::new();
    let options = UpOptions {
        host: "127.0.0.1".parse().unwrap(),
        gateway_port: 0,
        users_port: 0,
        orders_port: 0,
        clock_port: 0,
        admin_port: Some(0),
        data_dir: data.path().join("data"),
        config: Some(config),
        clock,
        tls: false,
    };
    let running = up::start(options, shutdown.clone())
        .await
        .expect("the system starts");
    let gateway = format!("http://{}", running.gateway);
    let users = format!("http://{}", running.users);
    let orders = format!("http://{}", running.orders);
    let clock = format!("http://{}", running.clock);
    let admin = format!("http://{}", running.admin);
    let metrics = running.metrics.clone();
    tokio::spawn(running.wait());
    TestApp {
        gateway,
        users,
        orders,
        clock,
        admin,
        data,
        http: reqwest::Client::new(),
        echo_hits,
        metrics,
        store_url,
        _store: store,
        shutdown,
    }
}

impl TestApp {
    /// Stops the system as a signal would (it drains first).
    pub fn stop(&self) {
        self.shutdown.trigger();
    }

    /// Runs `gatehouse ARGS --config … --data-dir …` against this system's store, as an
    /// operator would beside the running gateway; returns (success, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .arg("--config")
            .arg(self.data.path().join("gateway.yaml"))
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    }

    /// Registers a machine client with the CLI and returns its secret.
    pub fn add_client(&self, name: &str, scopes: &str) -> String {
        let (ok, output) = self.cli(&["clients", "add", name, "--scopes", scopes]);
        assert!(ok, "{output}");
        output
            .lines()
            .find_map(|line| line.strip_prefix("client_secret:"))
            .map(|secret| secret.trim().to_owned())
            .expect("the secret is printed")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    pub async fn token(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "login of {username} failed");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn admin(&self) -> String {
        self.token("admin", "a").await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// A GET on the gateway's admin listener (`/metrics`, the detailed `/readyz`).
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap()
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a user through the gateway as admin and returns its JSON.
    pub async fn create_user(&self, admin: &str, username: &str, password: &str) -> Value {
        let response = self
            .send_json(
                reqwest::Method::POST,
                "/api/users",
                admin,
                &json!({ "username": username, "email": format!("{username}@example.com"), "password": password }),
            )
            .await;
        assert_eq!(response.status(), 201, "creating {username}");
        response.json().await.unwrap()
    }
}

/// Asserts `response` is a problem with `status`, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["request_id"].is_string(),
        "a problem carries the request id: {body}"
    );
    body
}
