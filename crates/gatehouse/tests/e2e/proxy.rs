//! What the proxy passes, strips and adds, and how it answers when an upstream fails.

use serde_json::Value;

use crate::harness::{assert_problem, spawn_app};

#[tokio::test]
async fn client_sent_identity_and_forwarding_headers_never_reach_the_service_as_sent() {
    let app = spawn_app().await;
    let token = app.token("test", "test").await;
    let me: Value = app
        .get("/api/users/me", Some(&token))
        .await
        .json()
        .await
        .unwrap();

    let echoed: Value = app
        .http
        .get(app.url("/api/echo/whoami"))
        .bearer_auth(&token)
        .header("x-user-id", "00000000-0000-0000-0000-000000000000")
        .header("x-user-role", "admin")
        .header("x-gatehouse-identity", "forged")
        .header("x-forwarded-for", "10.9.8.7")
        .header("forwarded", "for=10.9.8.7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let headers = &echoed["headers"];
    assert_eq!(
        headers["x-user-id"], me["id"],
        "the service learns the real caller"
    );
    assert!(headers.get("x-user-role").is_none());
    let identity = headers["x-gatehouse-identity"].as_str().unwrap();
    assert_ne!(identity, "forged");
    assert_eq!(
        identity.split('.').count(),
        3,
        "a signed identity token replaces the forged one"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(!headers["forwarded"].as_str().unwrap().contains("10.9.8.7"));
    assert!(
        headers.get("authorization").is_none(),
        "the bearer token is not forwarded"
    );
}

#[tokio::test]
async fn path_parameters_query_strings_bodies_and_end_to_end_headers_pass_through() {
    let app = spawn_app().await;
    let token = app.token("test", "test").await;

    let response = app
        .http
        .put(app.url("/api/echo/a/b%2Fc/d?x=1&y=%20z&x=2"))
        .bearer_auth(&token)
        .header("x-custom", "kept")
        .header("x-request-id", "trace-me-123")
        .header("connection", "x-hop")
        .header("x-hop", "dropped")
        .body(vec![7u8; 5000])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["path"], "/echo/a/b%2Fc/d");
    assert_eq!(echoed["query"], "x=1&y=%20z&x=2");
    assert_eq!(echoed["body_len"], 5000);
    assert_eq!(echoed["headers"]["x-custom"], "kept");
    assert_eq!(echoed["headers"]["x-request-id"], "trace-me-123");
    assert!(
        echoed["headers"].get("x-hop").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "http");
    assert!(echoed["headers"]["x-forwarded-host"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn a_hostile_request_id_is_replaced() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/api/public/x"))
        .header("x-request-id", "<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "<script>alert(1)</script>");
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(
        echoed["headers"]["x-request-id"],
        id.as_str(),
        "the service sees the id the client is given"
    );
}

#[tokio::test]
async fn a_public_route_needs_no_token_and_passes_no_identity() {
    let app = spawn_app().await;
    let echoed: Value = app
        .get("/api/public/open", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(echoed["headers"].get("x-gatehouse-identity").is_none());
    assert!(echoed["headers"].get("x-user-id").is_none());
}

#[tokio::test]
async fn unknown_paths_are_404_and_known_paths_with_another_method_405_with_allow() {
    let app = spawn_app().await;
    assert_problem(app.get("/api/nothing-here", None).await, 404).await;

    let response = app.http.delete(app.url("/api/users")).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST");
    assert_problem(response, 405).await;
}

#[tokio::test]
async fn dot_segments_cannot_climb_out_of_a_route() {
    let app = spawn_app().await;
    // Sent over a raw socket: HTTP clients normalise dot segments away before sending.
    for path in [
        "/api/public/../../internal/credentials",
        "/api/public/%2e%2e/internal",
        "/api/public/./x",
        "/api/public/a%2F..%2F..%2Finternal%2Fcredentials",
        "/api/public/..%5C..%5Cinternal",
    ] {
        let status = raw_status(
            &app.gateway,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(
        app.echo_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

/// Sends `request` as written and returns the response's status code.
async fn raw_status(base: &str, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_service_that_refuses_connections_is_503_naming_the_service_not_its_address() {
    let app = spawn_app().await;
    let response = app.get("/api/dead", None).await;
    assert!(response.headers().contains_key("retry-after"));
    let body = assert_problem(response, 503).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("`dead`"), "{detail}");
    assert!(
        !detail.contains("127.0.0.1"),
        "the upstream's address stays internal: {detail}"
    );
}

#[tokio::test]
async fn a_service_slower_than_the_route_timeout_is_504() {
    let app = spawn_app().await;
    let body = assert_problem(app.get("/api/slow", None).await, 504).await;
    assert!(body["detail"].as_str().unwrap().contains("`echo`"));
}

#[tokio::test]
async fn a_malformed_upstream_response_is_502() {
    let app = spawn_app().await;
    assert_problem(app.get("/api/garbage", None).await, 502).await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_whether_declared_or_streamed() {
    let app = spawn_app().await;
    let too_big = vec![b'x'; 2 * 1024 * 1024];

    let declared = app
        .http
        .post(app.url("/api/public/upload"))
        .body(too_big.clone())
        .send()
        .await
        .unwrap();
    assert_problem(declared, 413).await;

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        too_big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let streamed = app
        .http
        .post(app.url("/api/public/upload"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);

    let fits = app
        .http
        .post(app.url("/api/public/upload"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
}

#[tokio::test]
async fn the_gateway_answers_its_own_health_endpoints() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    // The test's `dead` service never answers, but it is not required: the gateway is ready.
    assert_problem(app.get("/api/dead", None).await, 503).await;
    assert_eq!(app.get("/readyz", None).await.status(), 200);
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_off_not_waited_for() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\npartial";
                let _ = socket.write_all(head.as_bytes()).await;
                std::future::pending::<()>().await;
            });
        }
    });
    let app = crate::harness::spawn_app_with(|config| {
        config.replace("services:\n", &format!("services:\n  stall: {{ upstreams: [\"http://{stall}\"], timeout: 1s, required: false }}\n"))
            + "  - { path: /api/stall, methods: [GET], service: stall, to: /, auth: public }\n"
    })
    .await;

    let response = app.get("/api/stall", None).await;
    assert_eq!(response.status(), 200, "the headers came in time");
    let body = tokio::time::timeout(std::time::Duration::from_secs(20), response.bytes()).await;
    assert!(body.is_ok(), "the client is not left hanging");
    assert!(
        body.unwrap().is_err(),
        "the body breaks off rather than pretending to be complete"
    );
}
