//! A gateway alone, on a configuration of the test's: in this process ([`Gate`]), or the real
//! binary as a process ([`Replica`], what a deployment runs: signals, exit codes, several
//! replicas on one store). Both listen on port 0 and say where.

use std::path::{Path, PathBuf};

use gateway::clock::Clock;
use gateway::config::Vars;
use gateway::reload::Reloader;
use kit::shutdown::Shutdown;
use serde_json::Value;
use tokio::net::TcpListener;

use super::{client, dead_address, Process};

/// Writes `text` to `path` at once (write aside, then rename), as config tools should.
pub fn write_atomically(path: &Path, text: &str) {
    let aside = path.with_extension("yaml.new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The start of a gateway configuration: the store under `${DATA}`, no login service to speak
/// of (an address where nothing listens, not required for readiness).
pub fn config_head(watch: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\n\
         admin_listen: \"127.0.0.1:0\"\n\
         access_log: \"off\"\n\
         store: \"sqlite://${{DATA}}/gateway.db\"\n\
         watch: {watch}\n\
         drain_timeout: 20s\n\
         services:\n  users: {{ upstreams: [\"http://{dead}\"], required: false }}\n",
        dead = dead_address(),
    )
}

/// A gateway in this process on listeners bound here (port 0), reloadable by hand.
pub struct Gate {
    pub url: String,
    /// The admin listener: the detailed `/readyz`.
    pub admin_url: String,
    pub config: PathBuf,
    pub reloader: Reloader,
    pub http: reqwest::Client,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Gate {
    pub async fn start(config_text: &str) -> Self {
        Self::start_at(Clock::System, config_text).await
    }

    /// As [`Gate::start`], the gateway reading the time from `clock` (a test's
    /// [`gateway::clock::ManualClock`], to cross a back-off without waiting it out).
    pub async fn start_at(clock: Clock, config_text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, config_text).unwrap();
        let vars = Vars::new().set("DATA", dir.path().join("data").display().to_string());
        let config = gateway::config::load_file(&config_path, &vars).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gateway = gateway::Gateway::build_at(config, clock)
            .await
            .unwrap()
            .watch_file(&config_path, vars);
        let reloader = gateway.reloader().unwrap();
        let shutdown = Shutdown::new();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        tokio::spawn(gateway.serve_admin(admin, shutdown.clone()));
        tokio::spawn(gateway.serve(listener, shutdown.clone()));
        Self {
            url,
            admin_url,
            config: config_path,
            reloader,
            http: client(),
            shutdown,
            _dir: dir,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// The instance that answered a GET of `path` (its status must be 200).
    pub async fn answered_by(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let body: Value = response.json().await.unwrap();
        body["instance"].as_str().unwrap().to_owned()
    }

    /// The exposition of `/metrics`, from the admin listener.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The detailed readiness, from the admin listener.
    pub async fn readiness(&self) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/readyz", self.admin_url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// A gateway process; killed when dropped.
pub struct Replica {
    pub process: Process,
    /// `http://` and the address it listens on.
    pub url: String,
    /// Its admin listener: `/metrics`, the detailed `/readyz`.
    pub admin: String,
}

impl Replica {
    /// `gatehouse gateway --config CONFIG`, its listeners on port 0 (a configuration that reads
    /// `${GATEHOUSE_LISTEN}` and `${GATEHOUSE_ADMIN_LISTEN}` gets `127.0.0.1:0`, and so does one
    /// that says `127.0.0.1:0` itself), with `env` beside; once it has said where it listens.
    pub async fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let config = config.display().to_string();
        let mut all_env = vec![
            ("GATEHOUSE_LISTEN", "127.0.0.1:0"),
            ("GATEHOUSE_ADMIN_LISTEN", "127.0.0.1:0"),
        ];
        all_env.extend_from_slice(env);
        let process = Process::start(&["gateway", "--config", &config], &all_env);
        let url = format!("http://{}", process.listening("gateway listening").await);
        let admin = format!(
            "http://{}",
            process.listening("gateway admin listening").await
        );
        Self {
            process,
            url,
            admin,
        }
    }
}

/// A replica on `config`, once it answers `/healthz`.
pub async fn start_replica(config: &Path, http: &reqwest::Client) -> Replica {
    let replica = Replica::start(config, &[]).await;
    super::wait_until("the replica to answer /healthz", || async {
        http.get(format!("{}/healthz", replica.url))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
    replica
}
