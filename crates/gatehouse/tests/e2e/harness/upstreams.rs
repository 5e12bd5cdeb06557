//! Upstreams a test controls.
//!
//! An [`Instance`] is a small HTTP/1.1 server written here on a raw socket, so that a test
//! controls exactly what a real outage does: `kill` closes the listener and every connection at
//! once (requests in flight see their connection reset), `stop` is a graceful stop (no more
//! accepting, requests in flight finish, idle keep-alive connections close), `Mode::Hang`
//! accepts requests and never answers. Each instance counts the requests and connections it
//! received. Beside it: an echo of what the gateway sent, an answer that is not HTTP, and a dead
//! address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An address where connections are refused for as long as the tests run: bound (so nothing
/// else can take the port) and never listening. One for the whole test binary.
pub fn dead_address() -> SocketAddr {
    static DEAD: OnceLock<(TcpSocket, SocketAddr)> = OnceLock::new();
    DEAD.get_or_init(|| {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = socket.local_addr().unwrap();
        (socket, address)
    })
    .1
}

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
    /// Holds the address for the instance's whole life, listening or not: bound with
    /// `SO_REUSEPORT` and never listening, so while the instance is down connections are refused
    /// and no other test can be given its port, and a restart listens on it again at once.
    _claim: TcpSocket,
    counters: Arc<Counters>,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// A socket that shares its address with the instance's other sockets (`SO_REUSEPORT`).
fn shared_socket() -> TcpSocket {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.set_reuseport(true).unwrap();
    socket
}

impl Instance {
    pub async fn start(name: &'static str) -> Self {
        let claim = shared_socket();
        claim.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut instance = Self {
            name,
            address: claim.local_addr().unwrap(),
            _claim: claim,
            counters: Arc::new(Counters::default()),
            running: None,
        };
        instance.serve(instance.listen());
        instance
    }

    /// A listener on the instance's own address, beside its claim.
    fn listen(&self) -> TcpListener {
        let socket = shared_socket();
        socket.bind(self.address).unwrap();
        socket.listen(1024).unwrap()
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

    /// Listens again on the same address (which its claim kept while it was down).
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "{} is running", self.name);
        let listener = self.listen();
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

/// An upstream that answers with what it received: method, path, query, headers, body.
pub async fn spawn_echo(hits: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/slow",
            // A slow service, not a dead one: later than a route's timeout and than the
            // gateway's header deadline, and then it answers.
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .fallback(move |request: Request| {
            let hits = Arc::clone(&hits);
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let headers: serde_json::Map<String, Value> = parts
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.to_string(),
                            json!(value.to_str().unwrap_or("<binary>")),
                        )
                    })
                    .collect();
                Json(json!({
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "query": parts.uri.query(),
                    "headers": headers,
                    "body_len": body.len(),
                }))
            }
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// An upstream that reads a request and answers with something that is not HTTP.
pub async fn spawn_garbage() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(b"this is not http at all\r\n\r\n").await;
            });
        }
    });
    address
}

#[tokio::test]
async fn the_dead_address_refuses_connections_and_no_parallel_test_can_listen_on_it() {
    let dead = dead_address();
    let refused = TcpStream::connect(dead).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // tokio binds listeners with SO_REUSEADDR, as a test's own listener would be.
    let taken = TcpListener::bind(dead).await.unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(dead_address(), dead, "one for the whole test binary");
}

/// The body of every answer [`spawn_json`] gives on `/items`: a list whose elements hold a
/// `secret` and an owner with an e-mail address, and a `meta` member.
pub fn items_json() -> Value {
    json!({
        "items": [
            { "id": 1, "name": "one", "secret": "s1", "internal_notes": "n1", "owner": { "email": "a@example.com", "name": "A" } },
            { "id": 2, "name": "two", "secret": "s2", "owner": { "email": "b@example.com", "name": "B" } },
            { "id": 3, "name": "three", "secret": "s3", "cust_id": 7 },
        ],
        "meta": { "total": 3, "owner": { "email": "ops@example.com" } },
    })
}

/// `data` in `coding` (`gzip`, `br`, `zstd`, anything else: as it is).
pub fn encoded(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    match coding {
        "gzip" => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                encoder.write_all(data).unwrap();
            }
            out
        }
        "zstd" => zstd::stream::encode_all(data, 3).unwrap(),
        _ => data.to_vec(),
    }
}

/// 16 MiB of JSON in 16 KiB of gzip (made once per test binary).
pub fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let mut plain = b"{\"a\":\"".to_vec();
        plain.resize(16 << 20, b'x');
        plain.extend_from_slice(b"\"}");
        encoded("gzip", &plain)
    })
}

/// A JSON service that compresses whatever the client says (a careless one): `/{coding}/items`
/// answers [`items_json`] in `coding` (`gzip`, `br`, `zstd`, `identity`) with a strong ETag and
/// the `Accept-Encoding` it was sent in `x-seen-accept-encoding`; `/identity/problem` a 404
/// problem+json that holds a `secret`; `/identity/text` plain text; `/identity/big` a JSON
/// answer of 4 KiB, `/identity/big-stream` the same in chunks without a length;
/// `/gzip/bomb` [`gzip_bomb`]; `/gzip/liar` plain JSON labelled gzip;
/// `/identity/broken` text labelled JSON; `/deflate/items` a coding the gateway does not decode.
pub async fn spawn_json() -> SocketAddr {
    use axum::body::Body;
    use axum::extract::Path;
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};

    async fn answer(Path((coding, kind)): Path<(String, String)>, request: HeaderMap) -> Response {
        let mut content_type = "application/json";
        let mut status = StatusCode::OK;
        let (coding, body): (String, Body) = match kind.as_str() {
            "items" => {
                let plain = items_json().to_string();
                (
                    coding.clone(),
                    Body::from(encoded(&coding, plain.as_bytes())),
                )
            }
            "problem" => {
                content_type = "application/problem+json";
                status = StatusCode::NOT_FOUND;
                let problem = json!({ "type": "about:blank", "title": "Not Found", "status": 404, "secret": "kept" });
                ("identity".into(), Body::from(problem.to_string()))
            }
            "text" => {
                content_type = "text/plain";
                ("identity".into(), Body::from("secret: plain text"))
            }
            "big" => {
                let big = json!({ "secret": "s", "padding": "x".repeat(4096) }).to_string();
                ("identity".into(), Body::from(big))
            }
            "big-stream" => {
                let big = json!({ "secret": "s", "padding": "x".repeat(4096) }).to_string();
                let chunks: Vec<Result<String, std::io::Error>> = big
                    .as_bytes()
                    .chunks(512)
                    .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
                    .collect();
                (
                    "identity".into(),
                    Body::from_stream(futures_util::stream::iter(chunks)),
                )
            }
            "bomb" => ("gzip".into(), Body::from(gzip_bomb())),
            "liar" => ("gzip".into(), Body::from(items_json().to_string())),
            "broken" => ("identity".into(), Body::from("<html>not json</html>")),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(content_type));
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        headers.insert("server", HeaderValue::from_static("json-upstream/1.0"));
        headers.insert("x-internal-trace", HeaderValue::from_static("abc"));
        if coding != "identity" {
            headers.insert("content-encoding", HeaderValue::from_str(&coding).unwrap());
        }
        if let Some(seen) = request.get("accept-encoding") {
            headers.insert("x-seen-accept-encoding", seen.clone());
        }
        response
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().route("/{coding}/{kind}", get(answer));
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// What [`Parts`] saw and how it answers now.
pub struct PartsState {
    /// What `/people/{id}` answers as `last_order_id` (any JSON value, hostile ones included).
    last_order_id: std::sync::Mutex<Value>,
    /// Every request target as it arrived (path and query, still encoded), with the audience
    /// of its identity token (`-` without one).
    seen: std::sync::Mutex<Vec<(String, String)>>,
    /// `/held` waits for a permit before answering.
    gate: tokio::sync::Semaphore,
    /// Requests waiting at `/held`.
    held: AtomicUsize,
}

/// A service for compositions, on one address that the gateway may know under several service
/// names: `/people/{id}` answers `{"id", "last_order_id"}`; `/ledger/...` answers the target it
/// was asked (`{"target": "/ledger/7?x=1"}`); `/held` waits until the test releases it; `/text`
/// answers 200 `text/plain`; `/missing` 404; `/huge` 200 JSON of 4 MiB.
#[derive(Clone)]
pub struct Parts {
    pub address: SocketAddr,
    pub state: Arc<PartsState>,
}

impl Parts {
    pub async fn start() -> Self {
        let state = Arc::new(PartsState {
            last_order_id: std::sync::Mutex::new(json!(42)),
            seen: std::sync::Mutex::default(),
            gate: tokio::sync::Semaphore::new(0),
            held: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(parts_answer)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set_last_order_id(&self, value: Value) {
        *self.state.last_order_id.lock().unwrap() = value;
    }

    /// The targets asked so far, as they arrived, with their identity's audience.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Lets `n` requests waiting at `/held` answer.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }
}

async fn parts_answer(
    axum::extract::State(state): axum::extract::State<Arc<PartsState>>,
    request: Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let target = request
        .uri()
        .path_and_query()
        .map(|target| target.as_str().to_owned())
        .unwrap_or_default();
    let audience = request
        .headers()
        .get("x-gatehouse-identity")
        .and_then(|token| token.to_str().ok())
        .and_then(identity_audience)
        .unwrap_or_else(|| "-".to_owned());
    state.seen.lock().unwrap().push((target.clone(), audience));
    let path = request.uri().path().to_owned();
    if let Some(id) = path.strip_prefix("/people/") {
        let last = state.last_order_id.lock().unwrap().clone();
        return Json(json!({ "id": id, "last_order_id": last })).into_response();
    }
    match path.as_str() {
        "/held" => {
            state.held.fetch_add(1, Ordering::SeqCst);
            let _permit = state.gate.acquire().await;
            state.held.fetch_sub(1, Ordering::SeqCst);
            Json(json!({ "late": true })).into_response()
        }
        "/text" => "not json".into_response(),
        "/missing" => (axum::http::StatusCode::NOT_FOUND, Json(json!({}))).into_response(),
        "/huge" => {
            let filler = "x".repeat(4 * 1024 * 1024);
            Json(json!({ "filler": filler })).into_response()
        }
        _ => Json(json!({ "target": target })).into_response(),
    }
}

/// The `aud` of an identity token (its payload read, not verified: the services verify it).
fn identity_audience(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["aud"].as_str().map(str::to_owned)
}
