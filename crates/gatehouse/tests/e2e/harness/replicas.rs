//! Gateway replicas as a deployment runs them: several `gatehouse gateway` processes on one
//! store and one Redis, in front of a users service in this process that trusts their keys.

use std::sync::Arc;

use kit::shutdown::Shutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{start_replica, Replica};

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

/// The users service (in this process) and a configuration for replicas on `redis`.
pub struct Fleet {
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
    /// A fleet whose shared state is the Redis at `redis` (it need not run yet), with `options`
    /// added to the `state` section (`, probe_interval: 200ms`, say).
    pub async fn new(redis: &str, options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let users_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let users_address = users_listener.local_addr().unwrap();
        let users_db = users::connect(&format!("sqlite://{}/data/users.db", dir.path().display()))
            .await
            .unwrap();
        users::seed_demo_accounts(&users_db).await.unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            replica_head(&dir.path().join("data"), redis, options)
                + &format!(
                    r#"services:
  users: {{ upstreams: ["http://{users_address}"], timeout: 10s }}
routes:
  - {{ path: /api/users/me, methods: [GET], service: users, to: /users/me, auth: authenticated }}
"#
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

    pub async fn replica(&mut self) -> Replica {
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

    pub async fn login(&self, replica: &Replica, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/login", replica.url))
            .json(&json!({ "username": "test", "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// The status of `GET /api/users/me` with `access`.
    pub async fn me(&self, replica: &Replica, access: &str) -> u16 {
        let url = format!("{}/api/users/me", replica.url);
        self.status_of(self.http.get(url), access).await
    }

    /// The status of `POST /api/logout` with `access`.
    pub async fn logout(&self, replica: &Replica, access: &str) -> u16 {
        let url = format!("{}/api/logout", replica.url);
        self.status_of(self.http.post(url), access).await
    }

    async fn status_of(&self, request: reqwest::RequestBuilder, access: &str) -> u16 {
        let response = request.bearer_auth(access).send().await.unwrap();
        response.status().as_u16()
    }

    pub async fn state_detail(&self, replica: &Replica) -> (u16, String) {
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
