//! Two gateway processes sharing one store and one Redis: what one replica revokes, the other
//! refuses, and throttle counts are shared. Runs when `GATEHOUSE_TEST_REDIS` names a Redis
//! (CI always gives it); without it the test says so and checks nothing.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::shutdown::Shutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const REDIS_ENV: &str = "GATEHOUSE_TEST_REDIS";

/// A gateway process, killed when dropped.
pub struct Replica {
    child: Child,
    pub url: String,
    /// Its admin listener: `/metrics`, the detailed `/readyz`.
    pub admin: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The start of a replica's configuration: its addresses from the environment
/// [`start_replica`] sets, access log off, the store in `data`, and Redis at `redis` under a
/// prefix of its own (so tests sharing a Redis never meet), with `state_options` added
/// (`", probe_interval: 200ms"`).
pub fn replica_head(data: &std::path::Path, redis: &str, state_options: &str) -> String {
    let prefix = format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple());
    format!(
        r#"
listen: ${{GATEHOUSE_LISTEN}}
admin_listen: ${{GATEHOUSE_ADMIN_LISTEN}}
access_log: "off"
store: "sqlite://{data}/gateway.db"
state: {{ redis: "{redis}", prefix: "{prefix}"{state_options} }}
"#,
        data = data.display()
    )
}

pub async fn start_replica(config: &std::path::Path, http: &reqwest::Client) -> Replica {
    let port = free_port();
    let admin_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["gateway", "--config"])
        .arg(config)
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let replica = Replica {
        child,
        url: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{}/healthz", replica.url)).send().await {
            if response.status() == 200 {
                return replica;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gateway replica did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_logout_through_one_replica_is_refused_by_the_other_and_throttles_are_shared() {
    let Some(redis) = std::env::var(REDIS_ENV).ok().filter(|url| !url.is_empty()) else {
        eprintln!("{REDIS_ENV} is not set: the two-replica Redis test checks nothing");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // The users service, in this process; both replicas call it.
    let users_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let users_address = users_listener.local_addr().unwrap();
    let users_db = users::connect(&format!("sqlite://{}/data/users.db", dir.path().display()))
        .await
        .unwrap();
    users::seed_demo_accounts(&users_db).await.unwrap();

    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        replica_head(&dir.path().join("data"), &redis, "")
            + &format!(
                r#"services:
  users: {{ upstreams: ["http://{users_address}"], timeout: 10s }}
routes:
  - {{ path: /api/users/me, methods: [GET], service: users, to: /users/me, auth: authenticated }}
"#
            ),
    )
    .unwrap();

    let first = start_replica(&config, &http).await;
    // The second starts once the first has made the signing keys, which both then share.
    let second = start_replica(&config, &http).await;
    let verifier = kit::IdentityVerifier::with_jwks(
        users::NAME,
        "gatehouse",
        format!("{}/.well-known/jwks.json", first.url),
    );
    let shutdown = Shutdown::new();
    tokio::spawn(
        users::service(users_db, Arc::new(verifier)).serve(users_listener, shutdown.clone()),
    );

    let session: Value = http
        .post(format!("{}/api/login", first.url))
        .json(&json!({ "username": "test", "password": "test" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = session["access_token"].as_str().unwrap();
    let me = |replica: &Replica| {
        http.get(format!("{}/api/users/me", replica.url))
            .bearer_auth(access)
            .send()
    };
    assert_eq!(
        me(&second).await.unwrap().status(),
        200,
        "a token of one replica is good at the other"
    );

    let logout = http
        .post(format!("{}/api/logout", first.url))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let logged_out = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if me(&second).await.unwrap().status() == 401 {
            break;
        }
        assert!(
            logged_out.elapsed() < Duration::from_secs(2),
            "the other replica still accepts the token"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "the other replica refused the token after {:?} ({attempts} request(s))",
        logged_out.elapsed()
    );
    assert!(
        attempts <= 2,
        "the other replica refused the token at its {attempts}th request after the logout"
    );

    for _ in 0..10 {
        let failed = http
            .post(format!("{}/api/login", first.url))
            .json(&json!({ "username": "test", "password": "no" }))
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 401);
    }
    let throttled = http
        .post(format!("{}/api/login", second.url))
        .json(&json!({ "username": "test", "password": "no" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        throttled.status(),
        429,
        "failures counted at one replica throttle the other"
    );
    shutdown.trigger();
}
