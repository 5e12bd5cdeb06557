//! The gateway's store out of reach: sign-in and refresh answer 503 with `Retry-After` while it
//! is still out (never a 500, never a wait for it to come back); a logout still takes effect at once,
//! may be repeated, and reaches the store once it is back. SQLite: the store file locked by
//! another process (the default run); PostgreSQL: the connection cut by a TCP proxy (when
//! `GATEHOUSE_TEST_POSTGRES` is set).

use std::time::Duration;

use kit::testing::wait::within_patience;
use kit::testing::{SqliteWriteLock, TcpCut};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::harness::{assert_problem, spawn_app_with, wait_until, TestApp};

/// The acquire timeout these tests configure, so they stay fast (the 2 s default is pinned by
/// the configuration's tests and by the services' outage tests).
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

/// `config` with the store's `store: "URL"` line as `{ url, acquire_timeout }`, the URL passed
/// through `route` first.
fn short_store_timeout(config: &str, route: impl FnOnce(&str) -> String) -> String {
    let start = config.find("store: \"").unwrap();
    let url_start = start + "store: \"".len();
    let url_end = url_start + config[url_start..].find('"').unwrap();
    format!(
        "{}store: {{ url: \"{}\", acquire_timeout: {}ms }}{}",
        &config[..start],
        route(&config[url_start..url_end]),
        ACQUIRE_TIMEOUT.as_millis(),
        &config[url_end + 1..]
    )
}

async fn sign_in(app: &TestApp) -> Value {
    let response = app.login("test", "test").await;
    assert_eq!(response.status(), 200, "sign-in");
    response.json().await.unwrap()
}

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name].as_str().unwrap()
}

async fn refresh(app: &TestApp, session: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/api/token/refresh"))
        .json(&json!({ "refresh_token": field(session, "refresh_token") }))
        .send()
        .await
        .unwrap()
}

async fn logout(app: &TestApp, session: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/api/logout"))
        .bearer_auth(field(session, "access_token"))
        .send()
        .await
        .unwrap()
}

/// Runs `request` while the store is still out of reach: that it answers at all proves it did
/// not wait for the store to come back (the outage lasts until the test ends it).
async fn while_out<T>(what: &str, request: impl std::future::Future<Output = T>) -> T {
    within_patience(what, request).await
}

async fn assert_outage(response: reqwest::Response, what: &str) {
    assert!(
        response.headers().contains_key("retry-after"),
        "{what}: a 503 says when to retry"
    );
    assert_problem(response, 503).await;
}

async fn pending_store_writes(app: &TestApp) -> u64 {
    let ready: Value = app.admin_get("/readyz").await.json().await.unwrap();
    ready["store_writes_pending"].as_u64().unwrap()
}

/// Waits until the writes queued during the outage have landed.
async fn until_the_queue_is_empty(app: &TestApp) {
    wait_until(
        "the queued writes to land once the store is back",
        || async { pending_store_writes(app).await == 0 },
    )
    .await;
}

/// How many sessions the store says were ended by a logout.
async fn sessions_ended_by_logout(store_url: &str) -> i64 {
    let mut connection = sqlx::AnyConnection::connect(store_url).await.unwrap();
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM refresh_families WHERE revoked_reason = 'logout'")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    count
}

#[tokio::test]
async fn with_the_store_locked_sign_in_answers_503_in_time_and_a_logout_holds_and_lands_later() {
    let app = spawn_app_with(|config| short_store_timeout(&config, str::to_owned)).await;
    let Some(path) = app.store_url.strip_prefix("sqlite://") else {
        eprintln!("runs on SQLite; the cut-store test covers PostgreSQL");
        return;
    };
    sqlx::any::install_default_drivers();
    let session = sign_in(&app).await;
    let access = field(&session, "access_token").to_owned();

    // Another process (an operator's `gatehouse clients add` gone wrong) holds the write lock.
    let holder = SqliteWriteLock::take(path).await;

    let login = while_out("a sign-in", app.login("test", "test")).await;
    assert_outage(login, "a sign-in").await;
    let grant = while_out(
        "a password grant",
        app.http
            .post(app.url("/api/oauth/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", "test"),
                ("password", "test"),
            ])
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(
        grant.status(),
        503,
        "the token endpoint says unavailable too"
    );
    assert!(grant.headers().contains_key("retry-after"));
    let body: Value = grant.json().await.unwrap();
    assert_eq!(
        body["error"], "temporarily_unavailable",
        "RFC 6749 §5.2 shape: {body}"
    );

    let logout_answer = while_out("a logout", logout(&app, &session)).await;
    assert_eq!(
        logout_answer.status(),
        204,
        "the logout took effect in the shared state; its store write waits in the queue"
    );
    assert_eq!(
        app.get("/api/users/me", Some(&access)).await.status(),
        401,
        "the token is refused at once"
    );
    let refused = while_out("a refresh", refresh(&app, &session)).await;
    assert_problem(refused, 401).await;
    let again = while_out("a repeated logout", logout(&app, &session)).await;
    assert_eq!(
        again.status(),
        204,
        "a retry with the revoked token is accepted"
    );
    assert!(
        pending_store_writes(&app).await > 0,
        "the store writes wait"
    );

    holder.release().await;
    until_the_queue_is_empty(&app).await;
    assert!(
        sessions_ended_by_logout(&app.store_url).await >= 1,
        "the session's family is revoked in the store once it is back"
    );
    assert_problem(refresh(&app, &session).await, 401).await;
    assert_eq!(app.login("test", "test").await.status(), 200);
}

#[tokio::test]
async fn one_token_repeating_its_logout_during_an_outage_cannot_fill_the_queue_for_everyone() {
    let app = spawn_app_with(|config| short_store_timeout(&config, str::to_owned)).await;
    let Some(path) = app.store_url.strip_prefix("sqlite://") else {
        eprintln!("runs on SQLite (the store locked by another process)");
        return;
    };
    sqlx::any::install_default_drivers();
    let repeater = sign_in(&app).await;
    let other = sign_in(&app).await;
    let holder = SqliteWriteLock::take(path).await;

    assert_eq!(logout(&app, &repeater).await.status(), 204);
    let queued = pending_store_writes(&app).await;
    assert!(
        (1..=3).contains(&queued),
        "one logout queues its token, its session and its family: {queued}"
    );
    for _ in 0..50 {
        assert_eq!(
            logout(&app, &repeater).await.status(),
            204,
            "a repeated logout is still accepted"
        );
        assert_problem(refresh(&app, &repeater).await, 401).await;
    }
    for attempt in 0..10 {
        let made_up = app
            .http
            .post(app.url("/api/logout"))
            .bearer_auth(field(&repeater, "access_token"))
            .json(&json!({ "refresh_token": format!("made-up-{attempt}") }))
            .send()
            .await
            .unwrap();
        assert_outage(made_up, "a logged-out token with a new refresh token").await;
    }
    assert_eq!(
        pending_store_writes(&app).await,
        queued,
        "repeats of one logout and refreshes of its ended session add nothing to the queue"
    );
    assert_eq!(
        logout(&app, &other).await.status(),
        204,
        "another session's logout is still taken"
    );

    holder.release().await;
    until_the_queue_is_empty(&app).await;
    assert_eq!(
        sessions_ended_by_logout(&app.store_url).await,
        2,
        "both sessions are ended in the store once it is back"
    );
}

#[tokio::test]
async fn a_logout_queued_when_the_gateway_stops_lands_if_the_store_returns_within_the_drain_deadline(
) {
    let app = spawn_app_with(|config| {
        format!(
            "drain_timeout: 5s\n{}",
            short_store_timeout(&config, str::to_owned)
        )
    })
    .await;
    let Some(path) = app.store_url.strip_prefix("sqlite://") else {
        eprintln!("runs on SQLite (the store locked by another process)");
        return;
    };
    sqlx::any::install_default_drivers();
    let session = sign_in(&app).await;
    let holder = SqliteWriteLock::take(path).await;
    assert_eq!(logout(&app, &session).await.status(), 204);
    assert!(pending_store_writes(&app).await > 0);

    app.stop();
    // The store comes back once the gateway is stopping (no longer taking connections).
    let gateway = app.gateway.trim_start_matches("http://").to_owned();
    wait_until("the gateway to stop listening", || async {
        tokio::net::TcpStream::connect(&gateway).await.is_err()
    })
    .await;
    holder.release().await;
    wait_until(
        "the stopping gateway to retry its queued logout until the store took it",
        || async { sessions_ended_by_logout(&app.store_url).await > 0 },
    )
    .await;
}

#[tokio::test]
async fn with_the_store_cut_sign_in_and_readiness_answer_503_in_time_and_a_logout_lands_when_it_is_back(
) {
    let Some(server) = std::env::var(kit::testing::POSTGRES_ENV)
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("GATEHOUSE_TEST_POSTGRES is not set: the cut-store test checks nothing (the locked-store test covers SQLite)");
        return;
    };
    let (cut, _) = TcpCut::in_front_of(&server).await;
    let app = spawn_app_with(|config| short_store_timeout(&config, |url| cut.route(url))).await;
    sqlx::any::install_default_drivers();
    let session = sign_in(&app).await;
    let access = field(&session, "access_token").to_owned();

    cut.cut();
    let login = while_out("a sign-in", app.login("test", "test")).await;
    assert_outage(login, "a sign-in").await;
    let ready = while_out("/readyz", app.get("/readyz", None)).await;
    assert_eq!(
        ready.status(),
        503,
        "the gateway cannot serve without its store"
    );
    let logout_answer = while_out("a logout", logout(&app, &session)).await;
    assert_eq!(logout_answer.status(), 204);
    assert_eq!(
        app.get("/api/users/me", Some(&access)).await.status(),
        401,
        "the token is refused at once"
    );
    let refreshing = while_out("a refresh", refresh(&app, &session)).await;
    assert!(
        matches!(refreshing.status().as_u16(), 401 | 503),
        "a refresh is refused or unavailable, never granted: {}",
        refreshing.status()
    );
    assert_eq!(sessions_ended_by_logout(&app.store_url).await, 0);

    cut.restore();
    until_the_queue_is_empty(&app).await;
    assert_eq!(
        sessions_ended_by_logout(&app.store_url).await,
        1,
        "the logout reached the store once it was back"
    );
    assert_problem(refresh(&app, &session).await, 401).await;
    assert_eq!(app.login("test", "test").await.status(), 200);
}

#[tokio::test]
async fn a_credentials_service_whose_database_is_down_makes_sign_in_503_not_502() {
    // A users service that answers as the kit does while its database is unreachable.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let unavailable = axum::Router::new().fallback(|| async {
        kit::outage::unavailable(&anyhow::anyhow!("the test's database is down"))
    });
    tokio::spawn(async move { axum::serve(listener, unavailable).await });
    let app = spawn_app_with(|config| {
        config.replace(
            "${GATEHOUSE_USERS_URL:-http://127.0.0.1:8101}",
            &format!("http://{address}"),
        )
    })
    .await;

    let login = while_out("a sign-in", app.login("test", "test")).await;
    assert_outage(login, "a sign-in").await;
}
