//! How the gateway takes requests that bend HTTP/1.1 (RFC 9112): where they are addressed (`Host`,
//! absolute form) and how their bodies are framed (`Transfer-Encoding`, `Content-Length`). Sent
//! over raw sockets: HTTP clients never send these.

use std::time::Duration;

use crate::harness::{spawn_app, TestApp};
use crate::slow_clients::{read_answer, send_raw, RawAnswer};

async fn exchange(app: &TestApp, request: &str) -> RawAnswer {
    let mut socket = send_raw(app, request).await;
    read_answer(&mut socket, Duration::from_secs(5)).await
}

fn assert_refused_by_us(answer: &RawAnswer, status: u16, why: &str) {
    assert_eq!(answer.status, status, "{why}: {}", answer.head);
    assert!(answer.is_problem(), "{why}: {}", answer.head);
    assert_eq!(answer.json()["status"], status, "{why}");
}

#[tokio::test]
async fn a_request_without_a_single_valid_host_is_400() {
    let app = spawn_app().await;
    let cases = [
        ("GET /api/public/x HTTP/1.1\r\n\r\n", "no Host"),
        (
            "GET /api/public/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            "two Host headers",
        ),
        (
            "GET /api/public/x HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
            "user info in Host",
        ),
        (
            "GET /api/public/x HTTP/1.1\r\nHost: a.example:http\r\n\r\n",
            "a port that is not a number",
        ),
        (
            "GET /api/public/x HTTP/1.1\r\nHost: a.example/evil\r\n\r\n",
            "a path in Host",
        ),
        (
            "GET /healthz HTTP/1.1\r\n\r\n",
            "no Host, on the gateway's own endpoint",
        ),
        (
            "POST /api/login HTTP/1.1\r\nHost: a b\r\nContent-Length: 0\r\n\r\n",
            "a space in Host, on login",
        ),
    ];
    for (request, why) in cases {
        let answer = exchange(&app, request).await;
        assert_refused_by_us(&answer, 400, why);
    }
    assert_eq!(app.echo_hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    let old = exchange(&app, "GET /api/public/x HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.status, 200, "HTTP/1.0 needs no Host: {}", old.head);
}

#[tokio::test]
async fn in_absolute_form_the_targets_authority_wins_and_is_what_the_upstream_is_told() {
    let app = spawn_app().await;
    let answer = exchange(
        &app,
        "GET http://public.example:8443/api/public/x HTTP/1.1\r\nHost: other.example\r\n\
         X-Forwarded-Host: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let seen = answer.json();
    assert_eq!(seen["headers"]["x-forwarded-host"], "public.example:8443");
    assert!(
        seen["headers"]["forwarded"]
            .as_str()
            .unwrap()
            .contains("host=public.example:8443"),
        "{seen}"
    );

    let answer = exchange(
        &app,
        "GET http://user@public.example/api/public/x HTTP/1.1\r\nHost: public.example\r\n\r\n",
    )
    .await;
    assert_refused_by_us(&answer, 400, "user info in the target's authority");
}

#[tokio::test]
async fn the_upstream_is_told_the_validated_host_and_never_a_client_sent_forwarded_host() {
    let app = spawn_app().await;
    let answer = exchange(
        &app,
        "GET /api/public/x HTTP/1.1\r\nHost: api.example:8001\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(
        answer.json()["headers"]["x-forwarded-host"],
        "api.example:8001"
    );
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_alone_is_501_never_dropped() {
    let app = spawn_app().await;
    for (codings, why) in [
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            "gzip before chunked",
        ),
        ("Transfer-Encoding: chunked, chunked\r\n", "chunked twice"),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "two header lines",
        ),
    ] {
        let answer = exchange(
            &app,
            &format!(
                "POST /api/public/x HTTP/1.1\r\nHost: gatehouse\r\n{codings}\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
        )
        .await;
        assert_refused_by_us(&answer, 501, why);
    }
    assert_eq!(app.echo_hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    let chunked = exchange(
        &app,
        "POST /api/public/x HTTP/1.1\r\nHost: gatehouse\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(chunked.status, 200, "{}", chunked.head);
    assert_eq!(chunked.json()["body_len"], 5);

    // Both framings: hyper takes the chunked one and drops the length (RFC 9112 §6.3), so the
    // upstream is never told a length that disagrees with the body.
    let both = exchange(
        &app,
        "POST /api/public/x HTTP/1.1\r\nHost: gatehouse\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(both.status, 200, "{}", both.head);
    let seen = both.json();
    assert_eq!(seen["body_len"], 5);
    assert_ne!(seen["headers"]["content-length"], "100", "{seen}");
}

/// What hyper refuses before the gateway sees the request: a 400 without a body.
#[tokio::test]
async fn framing_that_hyper_refuses_never_reaches_a_service() {
    let app = spawn_app().await;
    for (framing, why) in [
        (
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "two different lengths",
        ),
        (
            "Transfer-Encoding: gzip\r\n",
            "a last coding other than chunked",
        ),
        ("Content-Length: -5\r\n", "a negative length"),
    ] {
        let answer = exchange(
            &app,
            &format!("POST /api/public/x HTTP/1.1\r\nHost: gatehouse\r\n{framing}\r\nhello"),
        )
        .await;
        assert_eq!(answer.status, 400, "{why}: {}", answer.head);
    }
    assert_eq!(app.echo_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
