//! Clients that are slow or silent, by accident or on purpose, over raw sockets: a request body
//! the client stops sending is its own fault (408, the service is not blamed), while an upstream
//! that stops reading a body is the upstream's (504, counted against it); connections that send
//! nothing are closed at the header deadline, and one address holds only its share of them; a
//! client that stops reading its answer is dropped at the send deadline, freeing the upstream.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{spawn_app_with, wait_until, TestApp};

/// An answer read off a raw socket.
pub struct RawAnswer {
    pub status: u16,
    /// The header lines, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn is_problem(&self) -> bool {
        self.head.contains("content-type: application/problem+json")
    }
}

/// Reads one HTTP/1.1 answer (with a Content-Length body) within `within`.
pub async fn read_answer(socket: &mut TcpStream, within: Duration) -> RawAnswer {
    tokio::time::timeout(within, async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let read = socket
                .read(&mut buffer)
                .await
                .expect("the answer can be read");
            assert!(
                read > 0,
                "the connection closed before an answer: {received:?}"
            );
            received.extend_from_slice(&buffer[..read]);
        };
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        let status = head[9..12].parse().expect("a status code");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        let mut body = received[head_end + 4..].to_vec();
        while body.len() < length {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the body broke off");
            body.extend_from_slice(&buffer[..read]);
        }
        RawAnswer { status, head, body }
    })
    .await
    .expect("an answer in time")
}

/// Writes `request` on a new connection to the gateway and returns the connection.
pub async fn send_raw(app: &TestApp, request: &str) -> TcpStream {
    let address = app.gateway.trim_start_matches("http://");
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
}

/// The bundled configuration with the users service judged harshly: one failure ejects it for a
/// minute, and it must answer within 1 s. A client's stalled body counted against it would show.
fn harsh_users(config: String) -> String {
    let harsh = config.replacen(
        "\"], timeout: 10s, connect_timeout: 2s }",
        "\"], timeout: 1s, connect_timeout: 2s, breaker: { failures: 1, backoff: 1m, max_backoff: 1m } }",
        1,
    );
    assert_ne!(
        harsh, config,
        "the users service line changed; update this test"
    );
    let quick = harsh.replace(
        "limits: { max_body: 1MiB }",
        "limits: { max_body: 1MiB, body_idle_timeout: 300ms }",
    );
    assert_ne!(quick, harsh, "the limits line changed; update this test");
    quick
}

#[tokio::test]
async fn stalled_request_bodies_are_408_and_never_count_against_the_service() {
    let app = spawn_app_with(harsh_users).await;
    let token = app.token("test", "test").await;

    let stalls = (0..20).map(|_| {
        let request = format!(
            "PATCH /api/users/me HTTP/1.1\r\nHost: gatehouse\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        let app = &app;
        async move {
            let mut socket = send_raw(app, &request).await;
            read_answer(&mut socket, Duration::from_secs(5)).await
        }
    });
    for answer in futures_util::future::join_all(stalls).await {
        assert_eq!(answer.status, 408, "{}", answer.head);
        assert!(answer.is_problem(), "{}", answer.head);
        assert!(answer.head.contains("connection: close"), "{}", answer.head);
        assert_eq!(answer.json()["status"], 408);
    }

    // Had any stall counted, the single failure allowed would have ejected users for a minute:
    // sign-in and the users routes would answer 503, and readiness with them.
    assert_eq!(app.login("admin", "a").await.status(), 200);
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    let whole = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/users/me",
            &token,
            &json!({ "full_name": "Patient Tester" }),
        )
        .await;
    assert_eq!(whole.status(), 200, "a whole body still goes through");
}

#[tokio::test]
async fn a_body_sent_slowly_but_steadily_is_not_cut_off() {
    let app = spawn_app_with(harsh_users).await;
    let token = app.token("test", "test").await;
    let body = br#"{"full_name":"Slow Typist"}"#;
    let mut socket = send_raw(
        &app,
        &format!(
            "PATCH /api/users/me HTTP/1.1\r\nHost: gatehouse\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
    )
    .await;
    // The pauses are the scenario's input (a slow typist), not waits for anything: each is
    // under the idle timeout (300 ms); together they exceed the service's 1 s.
    for chunk in body.chunks(4) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        socket.write_all(chunk).await.unwrap();
    }
    let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.json()["full_name"], "Slow Typist");
}

/// An upstream that accepts connections and never reads from them.
async fn spawn_deaf() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address
}

#[tokio::test]
async fn an_upstream_that_stops_reading_a_body_is_504_and_counted_against_it() {
    let deaf = spawn_deaf().await;
    let app = spawn_app_with(|config| {
        config
            .replace(
                "limits: { max_body: 1MiB }",
                "limits: { max_body: 64MiB, body_idle_timeout: 300ms }",
            )
            .replace(
                "services:\n",
                &format!(
                    "services:\n  deaf: {{ upstreams: [\"http://{deaf}\"], timeout: 500ms, required: false, breaker: {{ failures: 1, backoff: 1m, max_backoff: 1m }} }}\n"
                ),
            )
            + "  - { path: /api/deaf, methods: [POST], service: deaf, to: /, auth: public }\n"
    })
    .await;

    let mut socket = send_raw(
        &app,
        "POST /api/deaf HTTP/1.1\r\nHost: gatehouse\r\nContent-Length: 67108864\r\n\r\n",
    )
    .await;
    let (mut reader, mut writer) = socket.split();
    // The client keeps sending as fast as it can: the only one not keeping up is the upstream.
    let sending = async {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1024 {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    let answer = tokio::select! {
        () = sending => unreachable!("sending never ends by itself"),
        answer = status_line(&mut reader) => answer,
    };
    assert_eq!(answer.status, 504, "{}", answer.head);

    let next = app
        .http
        .post(app.url("/api/deaf"))
        .body("small")
        .send()
        .await
        .unwrap();
    assert_eq!(
        next.status(),
        503,
        "the silent upstream was counted: one failure ejects it"
    );
}

/// The head of the answer on `reader`, within 10 s.
async fn status_line(reader: &mut tokio::net::tcp::ReadHalf<'_>) -> RawAnswer {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = reader.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the connection closed before an answer");
            received.extend_from_slice(&buffer[..read]);
        }
        let head = String::from_utf8_lossy(&received).to_ascii_lowercase();
        RawAnswer {
            status: head[9..12].parse().unwrap(),
            head,
            body: Vec::new(),
        }
    })
    .await
    .expect("an answer in time, never a hang")
}

/// How many silent sockets this process can open beside everything else: 2,000, fewer when the
/// file-descriptor limit (`ulimit -n`) is low, as on some CI machines.
fn silent_sockets_affordable() -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3)?.parse::<usize>().ok())
        })
        .unwrap_or(4096);
    // The gateway's side of each accepted socket, the services and the test's own files.
    let affordable = 2000.min(soft_limit.saturating_sub(600));
    if affordable < 2000 {
        eprintln!("ulimit -n is {soft_limit}: opening {affordable} silent sockets, not 2000");
    }
    affordable
}

/// Whether the gateway has closed `socket` (it never sends a silent socket anything).
async fn is_closed(socket: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(5), socket.read(&mut buffer)).await {
        Err(_still_open) => false,
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("a silent socket was sent {n} bytes"),
    }
}

async fn count_open(sockets: &mut [TcpStream]) -> usize {
    let mut open = 0;
    for socket in sockets.iter_mut() {
        if !is_closed(socket).await {
            open += 1;
        }
    }
    open
}

/// The system with `limits` added to the bundled `limits: { max_body: 1MiB }`.
async fn spawn_with_limits(limits: &str) -> TestApp {
    spawn_app_with(|config| {
        config.replace(
            "limits: { max_body: 1MiB }",
            &format!("limits: {{ max_body: 1MiB, {limits} }}"),
        )
    })
    .await
}

/// A client from 127.0.0.2 that opens a new connection for each request.
fn another_address() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `count` connections to the gateway that never send a byte.
async fn open_silent(app: &TestApp, count: usize) -> Vec<TcpStream> {
    let address = app.gateway.trim_start_matches("http://").to_owned();
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        silent.push(TcpStream::connect(&address).await.unwrap());
    }
    silent
}

#[tokio::test]
async fn silent_sockets_from_one_address_hold_only_its_share_and_never_crowd_out_another() {
    // A header deadline no test waits out: whatever closes a silent socket here is the share.
    let app = spawn_with_limits("header_read_timeout: 1h, max_connections_per_ip: 100").await;
    let flood = silent_sockets_affordable();
    assert!(flood > 200, "too few file descriptors for this test");
    let silent = tokio::sync::Mutex::new(open_silent(&app, flood).await);

    // Another address, a new connection each time, while the flood is open.
    let other = another_address();
    for _ in 0..10 {
        let response = other.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // Closing the sockets past the share is the gateway's to do as it accepts them; nothing
    // else can close them here (the header deadline is an hour), so the count only falls.
    wait_until(
        "the address to hold no more than its share of 100",
        || async { count_open(&mut silent.lock().await).await <= 100 },
    )
    .await;
    let response = other.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn silent_sockets_are_closed_at_the_header_deadline() {
    let app = spawn_with_limits("header_read_timeout: 1s").await;
    let silent = tokio::sync::Mutex::new(open_silent(&app, 50).await);
    wait_until("every silent socket to be closed", || async {
        count_open(&mut silent.lock().await).await == 0
    })
    .await;
    let response = another_address()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_silent_but_not_while_its_request_is_answered() {
    let app = spawn_app_with(|config| {
        config.replace(
            "limits: { max_body: 1MiB }",
            "limits: { max_body: 1MiB, header_read_timeout: 1s }",
        ) + "  - { path: /api/patient, methods: [GET], service: echo, to: /slow, auth: public }\n"
    })
    .await;
    // The echo service takes 3 s for /slow: longer than the header deadline.
    let mut socket = send_raw(&app, "GET /api/patient HTTP/1.1\r\nHost: gatehouse\r\n\r\n").await;
    let answer = read_answer(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.body, b"late");

    // Kept alive past the deadline's second, counted from the end of the exchange rather than
    // from the connection's start: a second request on it is answered.
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n\r\n")
        .await
        .unwrap();
    let again = read_answer(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(again.status, 200, "{}", again.head);

    // Then silent: closed by the deadline (the timeout only guards against a hang).
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buffer))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// An instance that answers `GET /who` with `name`, and anything else with an endless chunked
/// body, written as fast as the gateway takes it; `closed` is notified when the gateway drops a
/// connection to it mid-answer.
async fn spawn_endless(
    name: &'static str,
    closed: std::sync::Arc<tokio::sync::Notify>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let closed = std::sync::Arc::clone(&closed);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                if head.starts_with(b"GET /who ") {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{name}",
                        name.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                               Transfer-Encoding: chunked\r\n\r\n";
                let mut chunk = b"10000\r\n".to_vec();
                chunk.extend(std::iter::repeat_n(b'x', 0x10000));
                chunk.extend_from_slice(b"\r\n");
                let mut writing = socket.write_all(answer).await;
                while writing.is_ok() {
                    writing = socket.write_all(&chunk).await;
                }
                closed.notify_one();
            });
        }
    });
    address
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_is_dropped_and_frees_the_upstream() {
    let closed = std::sync::Arc::new(tokio::sync::Notify::new());
    let one = spawn_endless("one", std::sync::Arc::clone(&closed)).await;
    let two = spawn_endless("two", std::sync::Arc::clone(&closed)).await;
    let app = spawn_app_with(|config| {
        config
            .replace(
                "limits: { max_body: 1MiB }",
                "limits: { max_body: 1MiB, header_read_timeout: 1s, send_timeout: 500ms }",
            )
            .replace(
                "services:\n",
                &format!(
                    "services:\n  endless: {{ upstreams: [\"http://{one}\", \"http://{two}\"], balance: least_requests, timeout: 2s, required: false }}\n"
                ),
            )
            + "  - { path: /api/endless, methods: [GET], service: endless, to: /, auth: public }\n"
            + "  - { path: /api/who, methods: [GET], service: endless, to: /who, auth: public }\n"
    })
    .await;

    // Asks for an answer far larger than the socket buffers, and never reads a byte of it.
    let mut socket = send_raw(&app, "GET /api/endless HTTP/1.1\r\nHost: gatehouse\r\n\r\n").await;

    tokio::time::timeout(Duration::from_secs(5), closed.notified())
        .await
        .expect("the gateway drops the upstream's answer once the client stops reading");

    // The client's connection is closed too: what the buffers held, then the end.
    let mut buffer = vec![0u8; 1 << 16];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the client's connection is closed, not left streaming");

    // The instance that streamed no longer counts the request as in flight: least_requests
    // sends it its share again (a request still counted would send every one to the other).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let response = app.get("/api/who", None).await;
        assert_eq!(response.status(), 200);
        seen.insert(response.text().await.unwrap());
    }
    assert_eq!(seen.len(), 2, "only {seen:?} answered");
}

/// An HTTP/2 frame header: length, type, flags, stream 0.
fn h2_frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn an_http2_connection_that_only_pings_is_closed_at_the_header_deadline() {
    let app = spawn_with_limits("header_read_timeout: 1s").await;
    let address = app.gateway.trim_start_matches("http://");
    let mut socket = TcpStream::connect(address).await.unwrap();
    // The client preface and an empty SETTINGS frame: a valid HTTP/2 connection, no request.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(0x4, 0, &[]));
    socket.write_all(&hello).await.unwrap();

    // Bytes keep arriving (a PING every 200 ms, the client's pace: the scenario's input), but
    // no request: that is silence, and the deadline closes it.
    let (mut reader, mut writer) = socket.into_split();
    let pinging = tokio::spawn(async move {
        for round in 0u8..=u8::MAX {
            let ping = h2_frame(0x6, 0, &[round; 8]);
            if writer.write_all(&ping).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = vec![0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    pinging.abort();
    assert!(closed.is_ok(), "a connection that only pings was left open");
    // Not refused as it opened: it spoke HTTP/2 and answered a PING before the deadline.
    assert!(
        h2_frames(&received).any(|(kind, flags)| kind == 0x6 && flags & 0x1 != 0),
        "no PING was acknowledged: {} bytes received",
        received.len()
    );
}

/// The (type, flags) of each whole HTTP/2 frame in `bytes`.
fn h2_frames(bytes: &[u8]) -> impl Iterator<Item = (u8, u8)> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let header = rest.get(..9)?;
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let frame = (header[3], header[4]);
        rest = rest.get(9 + length..)?;
        Some(frame)
    })
}

#[tokio::test]
async fn a_download_longer_than_the_header_deadline_is_not_cut_while_the_client_reads() {
    let closed = std::sync::Arc::new(tokio::sync::Notify::new());
    let endless = spawn_endless("endless", std::sync::Arc::clone(&closed)).await;
    let app = spawn_app_with(|config| {
        config
            .replace(
                "limits: { max_body: 1MiB }",
                "limits: { max_body: 1MiB, header_read_timeout: 1s }",
            )
            .replace(
                "services:\n",
                &format!(
                    "services:\n  endless: {{ upstreams: [\"http://{endless}\"], timeout: 2s, required: false }}\n"
                ),
            )
            + "  - { path: /api/endless, methods: [GET], service: endless, to: /, auth: public }\n"
    })
    .await;
    let mut socket = send_raw(&app, "GET /api/endless HTTP/1.1\r\nHost: gatehouse\r\n\r\n").await;

    // A silent connection opened after the download started: once the header deadline has
    // closed it, the download has outlived a deadline, and must still be coming.
    let address = app.gateway.trim_start_matches("http://");
    let mut silent = TcpStream::connect(address).await.unwrap();
    let mut buffer = vec![0u8; 1 << 16];
    let mut deadline_passed = false;
    let mut after_the_deadline = 0usize;
    while after_the_deadline < 1 << 20 {
        let read = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buffer))
            .await
            .expect("the download keeps coming")
            .unwrap();
        assert!(
            read > 0,
            "the download was cut (the header deadline passed: {deadline_passed})"
        );
        if deadline_passed {
            after_the_deadline += read;
        } else {
            deadline_passed = is_closed(&mut silent).await;
        }
        // A slow reader, by choice (the scenario's input, and it leaves the machine to other
        // tests): the download takes its time.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
