//! The gateway's own endpoints (login, refresh, logout, the OAuth token endpoint) take bodies
//! within `limits.max_body` (and never over 16 KiB) and the client's idle timeout, and refuse anything else in their own
//! shape: a problem on the JSON endpoints, an RFC 6749 error on the token endpoint.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{assert_problem, spawn_app, spawn_app_with, TestApp};
use crate::slow_clients::{read_answer, send_raw};

const JSON_ENDPOINTS: [&str; 3] = ["/api/login", "/api/token/refresh", "/api/logout"];

async fn app_with_small_limit() -> TestApp {
    spawn_app_with(|config| {
        let small = config.replace(
            "limits: { max_body: 1MiB }",
            "limits: { max_body: 1KiB, body_idle_timeout: 300ms }",
        );
        assert_ne!(small, config, "the limits line changed; update this test");
        small
    })
    .await
}

/// A JSON body of about 2 KiB: twice the limit.
fn oversized_json() -> Value {
    json!({ "username": "admin", "password": "p".repeat(2000), "refresh_token": "r".repeat(10) })
}

async fn assert_oauth_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "an RFC 6749 error body"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_in_each_endpoints_own_shape() {
    let app = app_with_small_limit().await;
    for path in JSON_ENDPOINTS {
        let response = app
            .http
            .post(app.url(path))
            .json(&oversized_json())
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 413).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("1024"),
            "{path}: {problem}"
        );
    }

    let form = format!(
        "grant_type=password&username=admin&password={}",
        "p".repeat(2000)
    );
    let response = app
        .http
        .post(app.url("/api/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, 413).await;
}

#[tokio::test]
async fn a_body_over_16_kib_is_413_even_when_max_body_allows_far_more() {
    // The bundled configuration: max_body 1 MiB for proxied requests.
    let app = spawn_app().await;
    let large = json!({ "username": "admin", "password": "p".repeat(17 * 1024) });
    for path in JSON_ENDPOINTS {
        let response = app
            .http
            .post(app.url(path))
            .json(&large)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 413).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("16384"),
            "{path}: {problem}"
        );
    }
    let form = format!(
        "grant_type=password&username=admin&password={}",
        "p".repeat(17 * 1024)
    );
    let response = app
        .http
        .post(app.url("/api/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, 413).await;

    // A real sign-in with a password at the users service's own limit still fits.
    let response = app
        .http
        .post(app.url("/api/login"))
        .json(&json!({ "username": "admin", "password": "p".repeat(1024) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "checked, not refused for its size");
}

#[tokio::test]
async fn a_streamed_body_that_grows_over_the_limit_is_413_too() {
    let app = app_with_small_limit().await;
    // No Content-Length: the body is counted as it arrives.
    let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(vec![b' '; 512]));
    let response = app
        .http
        .post(app.url("/api/login"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_problem(response, 413).await;
}

/// Reads `socket` to its end: the gateway closes it (within a deadline far above what it takes).
async fn assert_closed_after_the_answer(socket: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after the answer"
    );
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_sent() {
    let app = app_with_small_limit().await;
    let mut socket = send_raw(
        &app,
        "POST /api/login HTTP/1.1\r\nHost: gatehouse\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n",
    )
    .await;
    let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert!(answer.is_problem(), "{}", answer.head);
    // The body is not read: the connection ends with the answer, and the answer says so.
    assert!(answer.head.contains("connection: close"), "{}", answer.head);
    assert_closed_after_the_answer(&mut socket).await;

    let mut socket = send_raw(
        &app,
        "POST /api/oauth/token HTTP/1.1\r\nHost: gatehouse\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000000\r\n\r\n",
    )
    .await;
    let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert_eq!(answer.json()["error"], "invalid_request");
    assert!(answer.head.contains("connection: close"), "{}", answer.head);
    assert_closed_after_the_answer(&mut socket).await;
}

#[tokio::test]
async fn a_stalled_body_on_an_own_endpoint_is_408() {
    let app = app_with_small_limit().await;
    for path in ["/api/login", "/api/oauth/token"] {
        let mut socket = send_raw(
            &app,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: gatehouse\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            ),
        )
        .await;
        let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
        assert_eq!(answer.status, 408, "{path}: {}", answer.head);
        assert!(answer.head.contains("connection: close"), "{}", answer.head);
    }
}

#[tokio::test]
async fn malformed_or_mistyped_bodies_are_4xx_in_each_endpoints_own_shape() {
    let app = app_with_small_limit().await;
    let token = app.admin().await;
    // (path, content type, body, status, why)
    let cases = [
        ("/api/login", "application/json", "{not json", 400, "syntax"),
        (
            "/api/login",
            "text/plain",
            r#"{"username":"a","password":"b"}"#,
            415,
            "not JSON",
        ),
        (
            "/api/login",
            "application/json",
            r#"{"username":1}"#,
            422,
            "wrong shape",
        ),
        ("/api/token/refresh", "application/json", "[", 400, "syntax"),
        (
            "/api/token/refresh",
            "application/x-www-form-urlencoded",
            "refresh_token=x",
            415,
            "a form",
        ),
        (
            "/api/token/refresh",
            "application/json",
            "{}",
            422,
            "no refresh_token",
        ),
        (
            "/api/logout",
            "text/plain",
            r#"{"refresh_token":"x"}"#,
            415,
            "not JSON",
        ),
        ("/api/logout", "application/json", "{nope", 400, "syntax"),
    ];
    for (path, content_type, body, status, why) in cases {
        let response = app
            .http
            .post(app.url(path))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path} {why}");
        assert_problem(response, status).await;
    }

    let response = app
        .http
        .post(app.url("/api/oauth/token"))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"password"}"#)
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, 400).await;

    // Within the limit, everything still works.
    assert_eq!(app.login("admin", "a").await.status(), 200);
}
