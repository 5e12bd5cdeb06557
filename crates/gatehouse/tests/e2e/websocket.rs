//! WebSockets and server-sent events through the gateway (issue 16): the upgrade meets the
//! same checks as any request, the instance gets the caller's identity and never the token,
//! frames pass both ways, and the gateway closes a socket at its idle timeout, at logout, and
//! counts it against its client's connection cap. Real sockets throughout: a tokio-tungstenite
//! echo server behind the gateway, a tokio-tungstenite client in front of it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::response::sse::{Event, Sse};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{self, HeaderMap, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::harness::{assert_problem, spawn_app_with, wait_for, wait_until, TestApp};

/// What the echo server saw of each upgrade it accepted or refused.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<HeaderMap>>>);

impl Seen {
    fn last(&self) -> HeaderMap {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("an upgrade reached the server")
    }
}

/// A WebSocket echo server: it refuses upgrades to `/refuse` with 403, chooses the `chat`
/// subprotocol when offered, and sends every message back as it came.
async fn spawn_echo_server(seen: Seen) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // tungstenite's callback type: its refusal is a whole response.
                #[allow(clippy::result_large_err)]
                let answer = |request: &Request, mut response: Response| {
                    seen.0.lock().unwrap().push(request.headers().clone());
                    if request.uri().path() == "/refuse" {
                        let mut refusal = ErrorResponse::new(Some("not you".to_owned()));
                        *refusal.status_mut() = http::StatusCode::FORBIDDEN;
                        return Err(refusal);
                    }
                    let offers_chat = request
                        .headers()
                        .get_all("sec-websocket-protocol")
                        .iter()
                        .any(|v| v.to_str().unwrap().split(',').any(|p| p.trim() == "chat"));
                    if offers_chat {
                        response
                            .headers_mut()
                            .insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
                    }
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, answer).await
                else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() {
                        break;
                    }
                    if (message.is_text() || message.is_binary())
                        && socket.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    address
}

/// The system with the echo server as service `ws`, behind WebSocket routes.
async fn spawn_with_websockets(limits: &str) -> (TestApp, Seen) {
    let seen = Seen::default();
    let server = spawn_echo_server(seen.clone()).await;
    let limits = limits.to_owned();
    let app = spawn_app_with(move |config| {
        let config = config.replace(
            "services:\n",
            &format!("services:\n  ws: {{ upstreams: [\"http://{server}\"], timeout: 5s }}\n"),
        );
        let config = config.replace(
            "limits: { max_body: 1MiB }",
            &format!("limits: {{ max_body: 1MiB{limits} }}"),
        );
        let routes = [
            r#"{ path: /api/ws, methods: [GET, POST], service: ws, to: /ws, auth: authenticated, websocket: {} }"#,
            r#"{ path: /api/ws/admin, methods: [GET], service: ws, to: /ws, auth: { roles: [admin] }, websocket: {} }"#,
            r#"{ path: /api/ws/quiet, methods: [GET], service: ws, to: /ws, auth: authenticated, websocket: { idle_timeout: 1s } }"#,
            r#"{ path: /api/ws/refused, methods: [GET], service: ws, to: /refuse, auth: authenticated, websocket: {} }"#,
            r#"{ path: /api/ws/public, methods: [GET], service: ws, to: /ws, auth: public, websocket: {} }"#,
            r#"{ path: /api/ws/echo, methods: [GET], service: echo, to: /echo/ws, auth: public, websocket: {} }"#,
        ];
        let mut config = config;
        for route in routes {
            config.push_str("  - ");
            config.push_str(route);
            config.push('\n');
        }
        config
    })
    .await;
    (app, seen)
}

type Socket = WebSocketStream<TcpStream>;
/// The client's socket and the 101, or why the upgrade failed.
type Opening = Result<(Socket, http::Response<Option<Vec<u8>>>), WsError>;

fn gateway_address(app: &TestApp) -> String {
    app.gateway.trim_start_matches("http://").to_owned()
}

/// An upgrade request to `path` with `headers` added.
fn upgrade(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Request {
    let mut request = format!("ws://{}{path}", gateway_address(app))
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    request
}

/// Opens the socket over `stream`: the client's socket and the gateway's 101.
async fn open_over(stream: TcpStream, request: Request) -> Opening {
    tokio_tungstenite::client_async(request, stream).await
}

async fn open(app: &TestApp, request: Request) -> Opening {
    let stream = TcpStream::connect(gateway_address(app)).await.unwrap();
    open_over(stream, request).await
}

/// The status of an upgrade the gateway (or the instance) refused.
fn refused_with(result: Opening) -> http::Response<Option<Vec<u8>>> {
    match result {
        Err(WsError::Http(response)) => *response,
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok((_, response)) => panic!("expected a refusal, got {}", response.status()),
    }
}

fn problem_of(response: &http::Response<Option<Vec<u8>>>) -> Value {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{response:?}"
    );
    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap()
}

/// Waits until the gateway closes `socket` (its stream ends or fails).
async fn closed_by_gateway(socket: &mut Socket, what: &str) {
    let ended = tokio::time::timeout(kit::testing::wait::PATIENCE, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the gateway did not close the socket: {what}"
    );
}

async fn metric(app: &TestApp, line_start: &str) -> Option<f64> {
    let text = app.admin_get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn messages_pass_both_ways_text_binary_and_a_large_frame() {
    let (app, seen) = spawn_with_websockets("").await;
    let token = app.token("test", "test").await;
    let bearer = format!("Bearer {token}");
    let (mut socket, answer) = open(
        &app,
        upgrade(&app, "/api/ws", &[("authorization", &bearer)]),
    )
    .await
    .expect("the upgrade succeeds");
    assert_eq!(answer.status(), 101);
    assert!(answer.headers().contains_key("x-request-id"));

    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("hello")
    );
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    let large: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    socket.send(Message::binary(large.clone())).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(large)
    );

    let upstream = seen.last();
    assert!(
        upstream.contains_key(kit::identity::HEADER),
        "the identity went along"
    );
    assert!(
        !upstream.contains_key("authorization"),
        "the bearer token did not"
    );
    assert_eq!(
        metric(&app, "gatehouse_websockets_open ").await,
        Some(1.0),
        "the socket is counted while open"
    );
    assert_eq!(
        metric(
            &app,
            "gatehouse_websocket_upgrades_total{outcome=\"upgraded\"}"
        )
        .await,
        Some(1.0)
    );

    socket.close(None).await.unwrap();
    closed_by_gateway(&mut socket, "after the closing handshake").await;
    let log = app.data.path().join("access.log");
    let line = wait_for(
        "the socket's access-log line, written when it closed",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!text.contains(&token), "no access token in the log");
            text.lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .find(|line| line["status"] == 101)
        },
    )
    .await;
    assert_eq!(line["route"], "/api/ws");
    assert_eq!(line["reason"], "closed");
    assert!(
        line["bytes_in"].as_u64().unwrap() > 2 * 1024 * 1024,
        "{line}"
    );
    assert!(
        line["bytes_out"].as_u64().unwrap() > 2 * 1024 * 1024,
        "{line}"
    );
    wait_until("the open-sockets gauge to fall back to 0", || async {
        metric(&app, "gatehouse_websockets_open ").await == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn a_token_in_the_subprotocols_opens_the_socket_and_goes_no_further() {
    let (app, seen) = spawn_with_websockets("").await;
    let token = app.token("test", "test").await;

    // A browser's `new WebSocket(url, ["chat", "bearer", token])`.
    let offer = format!("chat, bearer, {token}");
    let (mut socket, answer) = open(
        &app,
        upgrade(&app, "/api/ws", &[("sec-websocket-protocol", &offer)]),
    )
    .await
    .expect("the upgrade succeeds");
    assert_eq!(
        answer.headers()["sec-websocket-protocol"],
        "chat",
        "the instance's choice"
    );
    let upstream = seen.last();
    assert_eq!(
        upstream["sec-websocket-protocol"], "chat",
        "only the real subprotocol"
    );
    assert!(upstream.contains_key(kit::identity::HEADER));
    assert!(!upstream.contains_key("authorization"));
    socket.send(Message::text("through")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("through")
    );

    // `new WebSocket(url, ["bearer", token])`: the instance chooses none, and the 101 names
    // `bearer` (a browser fails a handshake that offered subprotocols and got none).
    let offer = format!("bearer, {token}");
    let (_socket, answer) = open(
        &app,
        upgrade(&app, "/api/ws", &[("sec-websocket-protocol", &offer)]),
    )
    .await
    .expect("the upgrade succeeds");
    assert_eq!(answer.headers()["sec-websocket-protocol"], "bearer");
    let upstream = seen.last();
    assert!(
        !upstream.contains_key("sec-websocket-protocol"),
        "{upstream:?}"
    );
    for (name, value) in answer.headers().iter().chain(upstream.iter()) {
        assert!(
            !value
                .as_bytes()
                .windows(token.len())
                .any(|w| w == token.as_bytes()),
            "the token is in {name}"
        );
    }
}

#[tokio::test]
async fn an_upgrade_without_a_valid_token_or_role_is_refused_before_the_instance() {
    let (app, seen) = spawn_with_websockets("").await;

    let refusal = refused_with(open(&app, upgrade(&app, "/api/ws", &[])).await);
    assert_eq!(refusal.status(), 401);
    assert!(refusal.headers().contains_key("www-authenticate"));
    assert_eq!(problem_of(&refusal)["reason"], "token_missing");

    let forged = upgrade(
        &app,
        "/api/ws",
        &[("sec-websocket-protocol", "bearer, not.a.token")],
    );
    let refusal = refused_with(open(&app, forged).await);
    assert_eq!(refusal.status(), 401);
    assert_eq!(problem_of(&refusal)["reason"], "token_invalid");

    let user = app.token("test", "test").await;
    let bearer = format!("Bearer {user}");
    let refusal = refused_with(
        open(
            &app,
            upgrade(&app, "/api/ws/admin", &[("authorization", &bearer)]),
        )
        .await,
    );
    assert_eq!(refusal.status(), 403);
    assert!(
        seen.0.lock().unwrap().is_empty(),
        "no refused upgrade reached the instance"
    );

    // A public WebSocket route needs no token, and drops one offered in the subprotocols.
    let offer = format!("bearer, {user}");
    let (_socket, _) = open(
        &app,
        upgrade(
            &app,
            "/api/ws/public",
            &[("sec-websocket-protocol", &offer)],
        ),
    )
    .await
    .expect("a public route opens without checks");
    assert!(!seen.last().contains_key("sec-websocket-protocol"));
}

#[tokio::test]
async fn an_instance_refusing_the_upgrade_is_answered_as_it_answered() {
    let (app, seen) = spawn_with_websockets("").await;
    let bearer = format!("Bearer {}", app.token("test", "test").await);
    let refusal = refused_with(
        open(
            &app,
            upgrade(&app, "/api/ws/refused", &[("authorization", &bearer)]),
        )
        .await,
    );
    assert_eq!(
        refusal.status(),
        403,
        "the instance's answer, not a 101 nor a 502"
    );
    let body = refusal.body().clone().unwrap_or_default();
    assert!(
        body.windows(7).any(|w| w == b"not you"),
        "the instance's own body"
    );
    assert_eq!(seen.0.lock().unwrap().len(), 1);
    assert_eq!(
        metric(
            &app,
            "gatehouse_websocket_upgrades_total{outcome=\"refused_by_upstream\"}"
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn logout_closes_the_open_socket() {
    let (app, _) = spawn_with_websockets("").await;
    let session: Value = app.login("test", "test").await.json().await.unwrap();
    let access = session["access_token"].as_str().unwrap();
    let bearer = format!("Bearer {access}");
    let (mut socket, _) = open(
        &app,
        upgrade(&app, "/api/ws", &[("authorization", &bearer)]),
    )
    .await
    .expect("the upgrade succeeds");
    socket.send(Message::text("before")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("before")
    );

    let logout = app
        .http
        .post(app.url("/api/logout"))
        .bearer_auth(access)
        .json(&json!({ "refresh_token": session["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    closed_by_gateway(&mut socket, "after its session's logout").await;
    assert_eq!(
        metric(
            &app,
            "gatehouse_websocket_closes_total{outcome=\"token_revoked\"}"
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_silent_socket_is_closed_at_the_routes_idle_timeout() {
    let (app, _) = spawn_with_websockets("").await;
    let bearer = format!("Bearer {}", app.token("test", "test").await);
    let (mut socket, _) = open(
        &app,
        upgrade(&app, "/api/ws/quiet", &[("authorization", &bearer)]),
    )
    .await
    .expect("the upgrade succeeds");
    closed_by_gateway(&mut socket, "after a second of silence").await;
    assert_eq!(
        metric(
            &app,
            "gatehouse_websocket_closes_total{outcome=\"idle_timeout\"}"
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_route_without_websocket_strips_the_upgrade() {
    let (app, seen) = spawn_with_websockets("").await;
    let token = app.token("test", "test").await;
    let response = app
        .http
        .get(app.url("/api/echo/ws"))
        .bearer_auth(&token)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "an ordinary request");
    let echoed: Value = response.json().await.unwrap();
    assert!(echoed["headers"].get("upgrade").is_none(), "{echoed}");
    assert!(echoed["headers"].get("connection").is_none(), "{echoed}");
    assert!(seen.0.lock().unwrap().is_empty());

    // Nor does an h2c upgrade pass on a WebSocket route: it is no WebSocket.
    let response = app
        .http
        .get(app.url("/api/ws/echo"))
        .header("connection", "upgrade, http2-settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "an ordinary request");
    let echoed: Value = response.json().await.unwrap();
    assert!(echoed["headers"].get("upgrade").is_none(), "{echoed}");
    assert!(
        echoed["headers"].get("http2-settings").is_none(),
        "{echoed}"
    );
}

#[tokio::test]
async fn malformed_upgrades_are_refused_with_a_problem() {
    let (app, seen) = spawn_with_websockets("").await;
    let token = app.token("test", "test").await;
    let valid = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let with = |changes: &[(&'static str, Option<&'static str>)]| {
        let mut headers: Vec<(&str, &str)> = valid.to_vec();
        for (name, value) in changes {
            headers.retain(|(n, _)| n != name);
            if let Some(value) = value {
                headers.push((name, value));
            }
        }
        headers
    };
    type Changes = &'static [(&'static str, Option<&'static str>)];
    let cases: [(&str, Changes, u16, &str); 9] = [
        ("POST", &[], 400, "an upgrade on POST"),
        ("GET", &[("sec-websocket-key", None)], 400, "no key"),
        (
            "GET",
            &[("sec-websocket-key", Some("c2hvcnQ="))],
            400,
            "a key of 5 bytes",
        ),
        (
            "GET",
            &[("sec-websocket-key", Some("%%%"))],
            400,
            "a key that is not base64",
        ),
        (
            "GET",
            &[("sec-websocket-version", Some("8"))],
            400,
            "version 8",
        ),
        ("GET", &[("sec-websocket-version", None)], 400, "no version"),
        (
            "GET",
            &[("connection", Some("keep-alive"))],
            400,
            "no Connection: upgrade",
        ),
        (
            "GET",
            &[("sec-websocket-protocol", Some("chat, bearer"))],
            401,
            "bearer, no token",
        ),
        (
            "GET",
            &[("sec-websocket-protocol", Some("ch at"))],
            400,
            "not a token",
        ),
    ];
    for (method, changes, status, why) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.http.request(method, app.url("/api/ws"));
        for (name, value) in with(changes) {
            request = request.header(name, value);
        }
        if status != 401 {
            request = request.bearer_auth(&token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{why}");
        let problem = assert_problem(response, status).await;
        assert!(problem["detail"].is_string(), "{why}: {problem}");
    }
    let both = app
        .http
        .get(app.url("/api/ws"))
        .headers(
            valid
                .iter()
                .map(|(n, v)| {
                    (
                        http::HeaderName::from_static(n),
                        HeaderValue::from_static(v),
                    )
                })
                .collect(),
        )
        .bearer_auth(&token)
        .header("sec-websocket-protocol", format!("bearer, {token}"))
        .send()
        .await
        .unwrap();
    assert_problem(both, 400).await;
    assert!(
        seen.0.lock().unwrap().is_empty(),
        "none reached the instance"
    );
}

/// A connection to the gateway from `127.0.0.2`.
async fn connect_from_second_address(app: &TestApp) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    socket
        .connect(gateway_address(app).parse().unwrap())
        .await
        .unwrap()
}

/// Whether the gateway answers a request on a new connection from `127.0.0.2`.
async fn second_address_is_served(app: &TestApp) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect_from_second_address(app).await;
    let request = "GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn spliced_sockets_count_against_their_addresss_connection_cap() {
    let (app, _) = spawn_with_websockets(", max_connections_per_ip: 2").await;
    let bearer = format!("Bearer {}", app.token("test", "test").await);
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let stream = connect_from_second_address(&app).await;
        let request = upgrade(&app, "/api/ws", &[("authorization", &bearer)]);
        let (socket, _) = open_over(stream, request).await.expect("within the cap");
        sockets.push(socket);
    }
    assert!(
        !second_address_is_served(&app).await,
        "two open sockets fill the address's cap"
    );
    let mut first = sockets.remove(0);
    first.close(None).await.unwrap();
    closed_by_gateway(&mut first, "after the client closed it").await;
    wait_until("a closed socket to free its place", || {
        second_address_is_served(&app)
    })
    .await;
}

/// An event stream that sends its first event at once, then holds the stream open until the
/// test lets it finish.
async fn spawn_event_source(release: Arc<tokio::sync::Notify>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let release = Arc::clone(&release);
        async move {
            let events = futures_util::stream::once(async {
                Ok::<_, std::convert::Infallible>(Event::default().data("first"))
            })
            .chain(futures_util::stream::once(async move {
                release.notified().await;
                Ok(Event::default().data("last"))
            }));
            Sse::new(events)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test]
async fn server_sent_events_stream_through_unbuffered_on_plain_and_cached_routes() {
    let release = Arc::new(tokio::sync::Notify::new());
    let source = spawn_event_source(Arc::clone(&release)).await;
    let app = spawn_app_with(move |config| {
        let mut config = config.replace(
            "services:\n",
            &format!("services:\n  events: {{ upstreams: [\"http://{source}\"], timeout: 5s }}\n"),
        );
        config.push_str("  - { path: /api/events, methods: [GET], service: events, to: /events, auth: public }\n");
        config.push_str("  - { path: /api/events/cached, methods: [GET], service: events, to: /events, auth: public, cache: { ttl: 60s } }\n");
        config
    })
    .await;
    for path in ["/api/events", "/api/events/cached"] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{path}"
        );
        let mut body = response.bytes_stream();
        // The source holds the stream open until released: the first event must arrive first.
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"data: first\n\n", "{path}");
        release.notify_one();
        let mut rest = Vec::new();
        while let Some(chunk) = body.next().await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(rest, b"data: last\n\n", "{path}");
    }
}
