//! Gateway replicas while their Redis fails: each test starts its own Redis (no persistence) on
//! a free port and kills it. Redis down must cost no request a wait (login answers within 1 s,
//! throttling counts on each replica, `/readyz` says `down-degraded` and stays ready), a logout
//! holds on its replica at once and on the others once Redis is back, and a replica started
//! after Redis lost everything still refuses a logged-out token (the store is the source of
//! truth). Runs when `GATEHOUSE_TEST_REDIS` is set (CI sets it), like the other Redis tests.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::shutdown::Shutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::replicas::{free_port, start_replica, Replica};

const REDIS_ENV: &str = "GATEHOUSE_TEST_REDIS";

/// A Redis of the test's own, without persistence unless asked: killing it loses everything it
/// held.
pub(crate) struct TestRedis {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRedis {
    pub(crate) async fn start(port: u16) -> Self {
        Self::start_with(port, &["--save", "", "--appendonly", "no"]).await
    }

    /// A Redis started with `persistence` (no persistence, or an RDB file of the test's).
    pub(crate) async fn start_with(port: u16, persistence: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(persistence)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port }
    }

    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stops it as an operator would, saving what it holds first (to its RDB file, if any).
    pub(crate) fn shut_down_saving(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "save"])
            .stdout(Stdio::null())
            .status();
        self.child.wait().unwrap();
    }
}

/// The users service (in this process) and a configuration for replicas on `redis`.
struct Fleet {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    http: reqwest::Client,
    users: Option<(kit::db::Database, TcpListener)>,
    shutdown: Shutdown,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Fleet {
    async fn new(redis: &TestRedis) -> Self {
        Self::on_port(redis.port).await
    }

    /// A fleet whose Redis is to listen on `port` (it need not run yet).
    async fn on_port(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let users_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let users_address = users_listener.local_addr().unwrap();
        let users_db = users::connect(&format!("sqlite://{}/data/users.db", dir.path().display()))
            .await
            .unwrap();
        users::seed_demo_accounts(&users_db).await.unwrap();
        let prefix = format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple());
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            format!(
                r#"
listen: ${{GATEHOUSE_LISTEN}}
admin_listen: ${{GATEHOUSE_ADMIN_LISTEN}}
access_log: "off"
store: "sqlite://{data}/gateway.db"
state: {{ redis: "redis://127.0.0.1:{port}", prefix: "{prefix}", probe_interval: 200ms, store_sync: 1h }}
services:
  users: {{ upstreams: ["http://{users_address}"], timeout: 10s }}
routes:
  - {{ path: /api/users/me, methods: [GET], service: users, to: /users/me, auth: authenticated }}
"#,
                // `store_sync: 1h`: no replica reads the store's new revocations on a timer
                // here, so what reaches another replica came through Redis (its republication,
                // or the reload when its subscription returns).
                data = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            http: reqwest::Client::new(),
            users: Some((users_db, users_listener)),
            shutdown: Shutdown::new(),
        }
    }

    async fn replica(&mut self) -> Replica {
        let replica = start_replica(&self.config, &self.http).await;
        // The users service trusts the identity keys of the first replica (all share them).
        if let Some((db, listener)) = self.users.take() {
            let verifier = kit::IdentityVerifier::with_jwks(
                users::NAME,
                "gatehouse",
                format!("{}/.well-known/jwks.json", replica.url),
            );
            tokio::spawn(
                users::service(db, Arc::new(verifier)).serve(listener, self.shutdown.clone()),
            );
        }
        let _ = &self.dir;
        replica
    }

    async fn login(&self, replica: &Replica, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/login", replica.url))
            .json(&json!({ "username": "test", "password": password }))
            .send()
            .await
            .unwrap()
    }

    async fn me(&self, replica: &Replica, access: &str) -> u16 {
        self.http
            .get(format!("{}/api/users/me", replica.url))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn logout(&self, replica: &Replica, access: &str) -> u16 {
        self.http
            .post(format!("{}/api/logout", replica.url))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn state_detail(&self, replica: &Replica) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}/readyz", replica.admin))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body["state"].as_str().unwrap_or("").to_owned())
    }
}

fn redis_tests_enabled() -> bool {
    let enabled = std::env::var(REDIS_ENV).is_ok_and(|url| !url.is_empty());
    if !enabled {
        eprintln!("{REDIS_ENV} is not set: the Redis fault tests check nothing");
    }
    enabled
}

async fn within_a_second<T>(what: &str, request: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let answer = request.await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{what} took {:?} while Redis is down",
        started.elapsed()
    );
    answer
}

/// Polls `check` for up to `deadline`; whether it came to hold.
async fn eventually<Fut: std::future::Future<Output = bool>>(
    deadline: Duration,
    mut check: impl FnMut() -> Fut,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn with_redis_killed_login_answers_at_once_and_a_logout_holds_on_every_replica() {
    if !redis_tests_enabled() {
        return;
    }
    let port = free_port();
    let mut redis = TestRedis::start(port).await;
    let mut fleet = Fleet::new(&redis).await;
    let first = fleet.replica().await;
    let second = fleet.replica().await;
    let session: Value = fleet.login(&first, "test").await.json().await.unwrap();
    let access = session["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fleet.me(&second, &access).await, 200);
    assert_eq!(fleet.state_detail(&first).await.1, "up");

    redis.kill();
    for replica in [&first, &second, &first] {
        let login = within_a_second("a sign-in", fleet.login(replica, "test")).await;
        assert_eq!(login.status(), 200, "sign-in works without Redis");
    }
    let (status, state) = fleet.state_detail(&first).await;
    assert_eq!(status, 200, "Redis down does not make the gateway unready");
    assert_eq!(state, "down-degraded", "/readyz tells Redis's state");

    // Without Redis each of the two replicas allows its half of `per_username` (10 by default),
    // so together they allow no more than the limit.
    let mut wrong = 0;
    loop {
        let guess = within_a_second("a wrong password", fleet.login(&second, "wrong")).await;
        if guess.status() == 429 {
            break;
        }
        assert_eq!(guess.status(), 401);
        wrong += 1;
        assert!(wrong <= 10, "without Redis, guesses are still throttled");
    }
    assert_eq!(
        wrong, 5,
        "a replica of two allows half the username's limit while Redis is down"
    );

    let logout = within_a_second("a logout", fleet.logout(&first, &access)).await;
    assert_eq!(
        logout, 204,
        "the logout is recorded locally and in the store"
    );
    assert_eq!(
        fleet.me(&first, &access).await,
        401,
        "refused at once where it was made"
    );

    let _redis = TestRedis::start(port).await;
    let returned = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            fleet.me(&second, &access).await == 401
        })
        .await,
        "the other replica refuses the token once Redis is back"
    );
    eprintln!(
        "the other replica refused the token {:?} after Redis came back",
        returned.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            fleet.state_detail(&first).await.1 == "up"
        })
        .await,
        "/readyz tells Redis is back"
    );
}

#[tokio::test]
async fn a_replica_started_after_redis_restarted_empty_refuses_a_logged_out_token() {
    if !redis_tests_enabled() {
        return;
    }
    let port = free_port();
    let mut redis = TestRedis::start(port).await;
    let mut fleet = Fleet::new(&redis).await;
    let first = fleet.replica().await;
    let session: Value = fleet.login(&first, "test").await.json().await.unwrap();
    let access = session["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fleet.logout(&first, &access).await, 204);

    redis.kill();
    let _redis = TestRedis::start(port).await;
    let late = fleet.replica().await;
    assert_eq!(
        fleet.me(&late, &access).await,
        401,
        "a replica started after Redis forgot everything loads the revocation from the store"
    );
    eprintln!("the replica started after the Redis restart refused the logged-out token");
}

#[tokio::test]
async fn a_replica_started_while_redis_is_down_serves_and_joins_when_redis_comes_up() {
    if !redis_tests_enabled() {
        return;
    }
    let port = free_port();
    let mut fleet = Fleet::on_port(port).await;
    let early = fleet.replica().await;
    let (status, state) = fleet.state_detail(&early).await;
    assert_eq!(status, 200, "a replica started without Redis is ready");
    assert_eq!(state, "down-degraded", "and says why it is degraded");
    let login = within_a_second("a sign-in", fleet.login(&early, "test")).await;
    assert_eq!(
        login.status(),
        200,
        "sign-in works on local throttle counts"
    );

    let _redis = TestRedis::start(port).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            fleet.state_detail(&early).await.1 == "up"
        })
        .await,
        "the replica takes Redis up once it answers"
    );
    let later = fleet.replica().await;
    let session: Value = fleet.login(&later, "test").await.json().await.unwrap();
    let access = session["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fleet.me(&early, &access).await, 200);
    assert_eq!(fleet.logout(&later, &access).await, 204);
    assert!(
        eventually(Duration::from_secs(2), || async {
            fleet.me(&early, &access).await == 401
        })
        .await,
        "the replica that started without Redis has subscribed to revocations since"
    );
}
