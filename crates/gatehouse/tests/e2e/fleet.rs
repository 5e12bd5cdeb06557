//! Service instances a test can kill, restart, hang or make fail, a gateway in front of them
//! (in this process, or the real binary as a process), and a steady stream of requests.
//!
//! An instance is a small HTTP/1.1 server written here on a raw socket, so that a test controls
//! exactly what a real outage does: `kill` closes the listener and every connection at once
//! (requests in flight see their connection reset), `stop` is a graceful stop (no more accepting,
//! requests in flight finish, idle keep-alive connections close), `Mode::Hang` accepts requests
//! and never answers. Each instance counts the requests and connections it received.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::config::Vars;
use gateway::reload::Reloader;
use kit::shutdown::Shutdown;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How an instance misbehaves; until told, it answers 200 with `{"instance": NAME, …}` (and its
/// `/healthz` answers 200 unless it hangs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Answers 200, as it does until told otherwise.
    Serving = 0,
    /// 503 to everything but `/healthz`.
    Unavailable = 1,
    /// Reads the request and never answers (health checks included).
    Hang = 2,
}

#[derive(Default)]
struct Counters {
    mode: AtomicU8,
    /// Requests other than health checks.
    hits: AtomicUsize,
    posts: AtomicUsize,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    delay_ms: AtomicU64,
}

pub struct Instance {
    pub name: &'static str,
    pub address: SocketAddr,
    counters: Arc<Counters>,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Instance {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut instance = Self {
            name,
            address: listener.local_addr().unwrap(),
            counters: Arc::new(Counters::default()),
            running: None,
        };
        instance.serve(listener);
        instance
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn hits(&self) -> usize {
        self.counters.hits.load(Ordering::SeqCst)
    }

    pub fn posts(&self) -> usize {
        self.counters.posts.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.counters.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Each answer waits this long first (a slow service).
    pub fn set_delay(&self, delay: Duration) {
        self.counters
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Closes the listener and every connection at once, as a crash would.
    pub async fn kill(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stops accepting, lets the requests in flight finish, closes idle connections: what a
    /// service does on SIGTERM.
    pub async fn stop(&mut self) {
        if let Some((stopping, task)) = self.running.take() {
            stopping.send_replace(true);
            let _ = task.await;
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "{} is running", self.name);
        let listener = wait_for("the address to be free again", || async {
            TcpListener::bind(self.address).await.ok()
        })
        .await;
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stopping, stop_signal) = watch::channel(false);
        let counters = Arc::clone(&self.counters);
        let name = self.name;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            let mut stop = stop_signal.clone();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        counters.connections.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(connection(stream, name, Arc::clone(&counters), stop_signal.clone()));
                    }
                    _ = stop.wait_for(|stopping| *stopping) => break,
                }
            }
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
        self.running = Some((stopping, task));
    }
}

/// One keep-alive connection: requests with a `Content-Length` body or none.
async fn connection(
    stream: TcpStream,
    name: &'static str,
    counters: Arc<Counters>,
    mut stopping: watch::Receiver<bool>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let mut request_line = String::new();
        tokio::select! {
            read = reader.read_line(&mut request_line) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
            // Idle and told to stop: close, as a server shutting down gracefully does.
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if !matches!(reader.read_line(&mut line).await, Ok(n) if n > 0) {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((header, value)) = line.split_once(':') {
                match header.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "connection" => close |= value.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }

        let health_check = path == "/healthz";
        if !health_check {
            counters.hits.fetch_add(1, Ordering::SeqCst);
            if method == "POST" {
                counters.posts.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mode = counters.mode.load(Ordering::SeqCst);
        if mode == Mode::Hang as u8 {
            std::future::pending::<()>().await;
        }
        counters.in_flight.fetch_add(1, Ordering::SeqCst);
        let (status, answer) = if health_check {
            ("200 OK", r#"{"status":"ok"}"#.to_owned())
        } else {
            let delay = counters.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if mode == Mode::Unavailable as u8 {
                ("503 Service Unavailable", r#"{"status":503}"#.to_owned())
            } else {
                (
                    "200 OK",
                    serde_json::json!({ "instance": name, "method": method, "path": path })
                        .to_string(),
                )
            }
        };
        let close = close || *stopping.borrow();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{answer}",
            answer.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        let written = writer.write_all(response.as_bytes()).await;
        counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        if written.is_err() || close {
            return;
        }
    }
}

/// Polls `probe` until it gives a value; fails after a minute (generous: CI machines are slow).
pub async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on right now (for a process that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
         services:\n  users: {{ upstreams: [\"http://127.0.0.1:9\"], required: false }}\n"
    )
}

/// A gateway in this process, serving on a free port, reloadable by hand.
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
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, config_text).unwrap();
        let vars = Vars::new().set("DATA", dir.path().join("data").display().to_string());
        let config = gateway::config::load_file(&config_path, &vars).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gateway = gateway::Gateway::build(config)
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

/// A client that waits long rather than failing a request on a slow machine.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What the stream of requests saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: usize,
    /// (status or error, instance) of each request that did not get a 200.
    pub failures: Vec<String>,
    pub by_instance: std::collections::BTreeMap<String, usize>,
    /// The longest time between two successful answers.
    pub longest_silence: Duration,
    last_ok: Option<Instant>,
}

/// `workers` loops of `GET url` until stopped.
pub struct Load {
    stop: watch::Sender<bool>,
    tally: Arc<Mutex<Tally>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, workers: usize) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tally = Arc::new(Mutex::new(Tally::default()));
        let http = client();
        let workers = (0..workers)
            .map(|_| {
                let (url, http, tally, stopped) = (
                    url.clone(),
                    http.clone(),
                    Arc::clone(&tally),
                    stopped.clone(),
                );
                tokio::spawn(async move {
                    while !*stopped.borrow() {
                        let outcome = match http.get(&url).send().await {
                            Ok(response) if response.status() == 200 => {
                                match response.json::<Value>().await {
                                    Ok(body) => {
                                        Ok(body["instance"].as_str().unwrap_or("?").to_owned())
                                    }
                                    Err(error) => Err(format!("body: {error}")),
                                }
                            }
                            Ok(response) => Err(format!("status {}", response.status())),
                            Err(error) => Err(format!("error: {error}")),
                        };
                        let mut tally = tally.lock().unwrap();
                        match outcome {
                            Ok(instance) => {
                                tally.ok += 1;
                                let now = Instant::now();
                                if let Some(last) = tally.last_ok {
                                    tally.longest_silence = tally.longest_silence.max(now - last);
                                }
                                tally.last_ok = Some(now);
                                *tally.by_instance.entry(instance).or_default() += 1;
                            }
                            Err(failure) => tally.failures.push(failure),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            tally,
            workers,
        }
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    pub async fn finish(self) -> Tally {
        self.stop.send_replace(true);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let tally = self.tally.lock().unwrap().clone();
        tally
    }
}
