//! The response cache, over real HTTP: the whole system (memory state) in front of an origin of
//! the test's own that counts every request it gets and answers with the caching headers its
//! path names. What is pinned: one caller's answer is never another's, answers RFC 9111 forbids
//! sharing are not stored, 100 concurrent misses make one upstream call, a failing service is
//! stood in for by a stale answer (and `Cache-Status` says so), a write invalidates, and hostile
//! requests (huge queries, `Vary: *`, bodies over the limit) get a correct answer and no harm.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use gateway::clock::{Clock, ManualClock};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::harness::{spawn_app_at, wait_for};
use crate::support::{spawn_app_with, TestApp};

/// What the origin saw and how it behaves now.
pub struct OriginState {
    /// Requests per path (`/o/...`), every method.
    hits: Mutex<HashMap<String, usize>>,
    /// While set, `flaky` paths answer 503.
    failing: AtomicBool,
    /// `gated` paths (and writes to `held-write` ones) wait for a permit before answering.
    gate: Arc<Semaphore>,
}

/// The test's origin: `/o/{kind}/...` answers JSON naming the request (path, query length, the caller
/// the gateway named, the how-many-th request of its path it is), with the headers `kind` names.
#[derive(Clone)]
pub struct Origin {
    pub address: SocketAddr,
    pub state: Arc<OriginState>,
    /// Stops the origin: no more connections, open ones closed once idle.
    stop: Arc<tokio::sync::Notify>,
}

impl Origin {
    pub async fn start() -> Self {
        let state = Arc::new(OriginState {
            hits: Mutex::default(),
            failing: AtomicBool::new(false),
            gate: Arc::new(Semaphore::new(0)),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.notified().await })
                .await
        });
        Self {
            address,
            state,
            stop,
        }
    }

    /// Takes the origin down: the gateway can no longer reach it.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// Requests the origin got for `path` (as it sees it: `/o/...`).
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Lets `n` held `gated` requests answer.
    pub fn open_gate(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// The service and routes that put the origin behind the gateway: `/cached/...` public,
    /// `/mine/...` per caller, both cached for a minute, with 5 minutes of `stale_if_error` and
    /// a 1 KiB body limit on the public one.
    pub fn config(&self, text: String) -> String {
        let origin = self.address;
        let text = text.replacen(
            "services:\n",
            &format!("services:\n  origin: {{ upstreams: [\"http://{origin}\"], timeout: 10s, required: false, retries: {{ attempts: 0 }} }}\n"),
            1,
        );
        format!(
            "{text}  - {{ path: \"/cached/{{*rest}}\", methods: [GET, POST], service: origin, to: \"/o/{{rest}}\", auth: public, cache: {{ ttl: 60s, stale_if_error: 5m, max_body: 1KiB }} }}\n  \
             - {{ path: \"/mine/{{*rest}}\", methods: [GET, POST], service: origin, to: \"/o/{{rest}}\", auth: authenticated, cache: {{ ttl: 60s }} }}\n"
        )
    }
}

async fn answer(State(state): State<Arc<OriginState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let count = {
        let mut hits = state.hits.lock().unwrap();
        let count = hits.entry(path.clone()).or_default();
        *count += 1;
        *count
    };
    let kind = path
        .trim_start_matches("/o/")
        .split('/')
        .next()
        .unwrap_or("");
    if request.method() != axum::http::Method::GET && request.method() != axum::http::Method::HEAD {
        if kind == "held-write" {
            state.gate.acquire().await.unwrap().forget();
        }
        if kind == "located" {
            // A write whose answer names what it changed: one path on our host, one elsewhere.
            return (
                axum::http::StatusCode::CREATED,
                [
                    ("location", "/cached/plain/listing"),
                    ("content-location", "//other.example/cached/plain/foreign"),
                ],
            )
                .into_response();
        }
        return axum::http::StatusCode::NO_CONTENT.into_response();
    }
    let body = json!({
        "path": path,
        // Its length only: a huge query must not make the answer too large to store.
        "query_length": request.uri().query().map_or(0, str::len),
        "user": request.headers().get("x-user-id").and_then(|v| v.to_str().ok()),
        // What a service building absolute links would build them from.
        "host": request.headers().get("x-forwarded-host").and_then(|v| v.to_str().ok()),
        "count": count,
    })
    .to_string();
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let mut set = |name: &'static str, value: &'static str| {
        response
            .headers_mut()
            .append(name, axum::http::HeaderValue::from_static(value));
    };
    match kind {
        "private" => set("cache-control", "private, max-age=60"),
        "no-store" => set("cache-control", "no-store"),
        "cookie" => set("set-cookie", "session=s3cr3t; HttpOnly"),
        "vary-star" => set("vary", "*"),
        "vary-lang" => set("vary", "Accept-Language"),
        "vary-hop" => set("vary", "Connection, TE, Keep-Alive"),
        "vary-client-address" => set("vary", "X-Forwarded-For"),
        "vary-credentials" => {
            set("vary", "Authorization");
            set("cache-control", "public, max-age=60");
        }
        "vary-huge" => {
            let names: Vec<String> = (0..2000).map(|n| format!("x-h{n}")).collect();
            response.headers_mut().insert(
                "vary",
                axum::http::HeaderValue::from_str(&names.join(", ")).unwrap(),
            );
        }
        "garbage-cc" => set("cache-control", "max-age=soon, public"),
        "overflow" => set("cache-control", "max-age=99999999999999999999999999"),
        "swr" | "swr-free" | "swr-flaky" => {
            set("cache-control", "max-age=1, stale-while-revalidate=60");
        }
        // Storable once; every refresh's answer is not.
        "swr-then-no-store" if count == 1 => {
            set("cache-control", "max-age=1, stale-while-revalidate=60");
        }
        "swr-then-no-store" => set("cache-control", "no-store"),
        "short" | "flaky" | "stall" => set("cache-control", "max-age=1"),
        "tagged" => set("etag", "\"v1\""),
        "big" => {
            *response.body_mut() = Body::from("x".repeat(4096));
        }
        "big-stream" => {
            let chunks = (0..8).map(|_| Ok::<_, std::io::Error>("y".repeat(512)));
            *response.body_mut() = Body::from_stream(futures_util::stream::iter(chunks));
        }
        "slow-body" => {
            // The first half at once, the second once the gate lets it.
            let gate = Arc::clone(&state.gate);
            let halves = futures_util::stream::unfold(0, move |half| {
                let gate = Arc::clone(&gate);
                async move {
                    match half {
                        0 => Some((Ok::<_, std::io::Error>("a".repeat(100)), 1)),
                        1 => {
                            gate.acquire().await.unwrap().forget();
                            Some((Ok("b".repeat(100)), 2))
                        }
                        _ => None,
                    }
                }
            });
            *response.body_mut() = Body::from_stream(halves);
        }
        _ => {}
    }
    if (kind == "flaky" || kind == "swr-flaky") && state.failing.load(Ordering::SeqCst) {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    // Fails slowly: held until the gate opens, then 503 (stale-if-error with waiters).
    if kind == "stall" && state.failing.load(Ordering::SeqCst) {
        state.gate.acquire().await.unwrap().forget();
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    // Each refresh after the first answer is held until the gate opens.
    if kind == "swr" && count > 1 {
        state.gate.acquire().await.unwrap().forget();
    }
    if kind == "gated" {
        state.gate.acquire().await.unwrap().forget();
    }
    response
}

/// The system with the origin behind it.
async fn spawn() -> (TestApp, Origin) {
    let origin = Origin::start().await;
    let routes = origin.clone();
    let app = spawn_app_with(move |text| routes.config(text)).await;
    (app, origin)
}

/// As [`spawn`], the gateway on a clock the test moves: an entry's time in the store (its
/// freshness, its `Age`) is read from it, so a lifetime is crossed by moving it, not waited
/// out. (The origin's `Date` is read only against its own `Expires`, which it never sends.)
async fn spawn_on_manual_clock() -> (TestApp, Origin, Arc<ManualClock>) {
    let time = ManualClock::starting_now();
    let origin = Origin::start().await;
    let routes = origin.clone();
    let app = spawn_app_at(Clock::from(&time), move |text| routes.config(text)).await;
    (app, origin, time)
}

/// A second past the `max-age=1` the origin's short-lived kinds answer with.
const PAST_MAX_AGE: Duration = Duration::from_secs(2);

/// `Cache-Status` of `response`, or "" without one.
pub fn cache_status(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// `method path` on the gateway with `headers`, no credentials.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    headers: &[(&'static str, &'static str)],
) -> reqwest::Response {
    let mut request = app.http.request(method, app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (String, Value) {
    let response = app.get(path, token).await;
    assert_eq!(response.status(), 200, "GET {path}");
    let status = cache_status(&response);
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_stored_answer_is_served_again_with_its_age_until_a_write_on_its_path() {
    let (app, origin, time) = spawn_on_manual_clock().await;
    let (first, body) = get(&app, "/cached/plain/item?a=1&b=2", None).await;
    assert_eq!(first, "gatehouse; fwd=uri-miss; stored");
    assert_eq!(body["count"], 1);

    let (second, again) = get(&app, "/cached/plain/item?b=2&a=1", None).await;
    assert!(
        second.starts_with("gatehouse; hit"),
        "query order is irrelevant: {second}"
    );
    assert_eq!(again, body, "the stored answer, byte for byte");
    assert_eq!(origin.hits("/o/plain/item"), 1);

    // Age grows while it is stored, in whole seconds.
    let age = |response: &reqwest::Response| response.headers()["age"].to_str().unwrap().to_owned();
    time.advance(Duration::from_millis(999));
    assert_eq!(age(&app.get("/cached/plain/item?a=1&b=2", None).await), "0");
    time.advance(Duration::from_millis(1));
    assert_eq!(age(&app.get("/cached/plain/item?a=1&b=2", None).await), "1");
    assert_eq!(
        origin.hits("/o/plain/item"),
        1,
        "every one of those was a hit"
    );

    let write = send(&app, reqwest::Method::POST, "/cached/plain/item", &[]).await;
    assert_eq!(write.status(), 204);
    let (after, fresh) = get(&app, "/cached/plain/item?a=1&b=2", None).await;
    assert_eq!(
        after, "gatehouse; fwd=uri-miss; stored",
        "a POST invalidates every query of its path"
    );
    assert_eq!(fresh["count"], 3, "GET, POST, GET reached the origin");
}

#[tokio::test]
async fn an_answer_built_for_one_host_is_never_served_to_another() {
    let (app, origin) = spawn().await;
    let (ours, _) = get(&app, "/cached/plain/hosted", None).await;
    assert_eq!(ours, "gatehouse; fwd=uri-miss; stored");

    let poisoned = send(
        &app,
        reqwest::Method::GET,
        "/cached/plain/hosted",
        &[("host", "evil.example")],
    )
    .await;
    assert_eq!(cache_status(&poisoned), "gatehouse; fwd=uri-miss; stored");
    let body: Value = poisoned.json().await.unwrap();
    assert_eq!(body["host"], "evil.example");

    let (again, body) = get(&app, "/cached/plain/hosted", None).await;
    assert!(again.starts_with("gatehouse; hit"), "{again}");
    assert_ne!(
        body["host"], "evil.example",
        "links built from another Host never reach our clients"
    );
    assert_eq!(origin.hits("/o/plain/hosted"), 2, "one entry per host");
}

#[tokio::test]
async fn a_write_whose_client_hangs_up_at_the_service_still_invalidates() {
    let (app, origin) = spawn().await;
    let (first, _) = get(&app, "/cached/held-write/doc", None).await;
    assert_eq!(first, "gatehouse; fwd=uri-miss; stored");

    let (http, url) = (app.http.clone(), app.url("/cached/held-write/doc"));
    let write = tokio::spawn(async move { http.post(url).send().await });
    wait_for("the write to reach the service", || async {
        (origin.hits("/o/held-write/doc") == 2).then_some(())
    })
    .await;
    // The client hangs up while the service applies the write: the gateway drops the request.
    write.abort();
    let _ = write.await;

    let (after, body) = get(&app, "/cached/held-write/doc", None).await;
    assert_eq!(
        after, "gatehouse; fwd=uri-miss; stored",
        "the entry from before the write is gone"
    );
    assert_eq!(body["count"], 3);
    origin.open_gate(1);
}

#[tokio::test]
async fn a_leader_whose_client_hangs_up_still_fills_the_entry_for_the_others() {
    let (app, origin) = spawn().await;
    let leader = app.get("/cached/slow-body/report", None).await;
    assert_eq!(leader.status(), 200);
    // Its client leaves after the headers, the service's body half sent.
    drop(leader);

    let (http, url) = (app.http.clone(), app.url("/cached/slow-body/report"));
    let other = tokio::spawn(async move { http.get(url).send().await.unwrap() });
    origin.open_gate(10);
    let other = other.await.unwrap();
    assert_eq!(other.status(), 200);
    let status = cache_status(&other);
    assert_eq!(
        other.text().await.unwrap(),
        "a".repeat(100) + &"b".repeat(100),
        "{status}"
    );
    assert_eq!(
        origin.hits("/o/slow-body/report"),
        1,
        "the service's answer was read to its end and stored, not asked for again: {status}"
    );
}

#[tokio::test]
async fn a_client_whose_copy_is_current_gets_304_from_the_cache() {
    let (app, origin) = spawn().await;
    let (first, _) = get(&app, "/cached/tagged/doc", None).await;
    assert_eq!(first, "gatehouse; fwd=uri-miss; stored");

    let current = send(
        &app,
        reqwest::Method::GET,
        "/cached/tagged/doc",
        &[("if-none-match", "\"v1\"")],
    )
    .await;
    assert_eq!(current.status(), 304);
    assert!(cache_status(&current).starts_with("gatehouse; hit"));
    assert_eq!(current.headers()["etag"], "\"v1\"");
    assert!(current.text().await.unwrap().is_empty());

    let outdated = send(
        &app,
        reqwest::Method::GET,
        "/cached/tagged/doc",
        &[("if-none-match", "\"v0\"")],
    )
    .await;
    assert_eq!(outdated.status(), 200, "another tag gets the stored answer");
    assert_eq!(
        origin.hits("/o/tagged/doc"),
        1,
        "both answered by the cache"
    );
}

#[tokio::test]
async fn one_users_answer_is_never_served_to_another() {
    let (app, origin) = spawn().await;
    let admin = app.admin().await;
    app.create_user(&admin, "alice", "alice-password-1").await;
    app.create_user(&admin, "bob", "bob-password-12").await;
    let alice = app.token("alice", "alice-password-1").await;
    let bob = app.token("bob", "bob-password-12").await;

    let (stored, for_alice) = get(&app, "/mine/plain/profile", Some(&alice)).await;
    assert_eq!(stored, "gatehouse; fwd=uri-miss; stored");
    let (status, for_bob) = get(&app, "/mine/plain/profile", Some(&bob)).await;
    assert_eq!(
        status, "gatehouse; fwd=uri-miss; stored",
        "bob's request is not alice's entry"
    );
    assert_ne!(for_bob["user"], for_alice["user"]);
    let (hit, again) = get(&app, "/mine/plain/profile", Some(&alice)).await;
    assert!(hit.starts_with("gatehouse; hit"), "{hit}");
    assert_eq!(again["user"], for_alice["user"]);
    assert_eq!(origin.hits("/o/plain/profile"), 2);

    // `private` may be stored in the caller's own entry, and only there.
    get(&app, "/mine/private/profile", Some(&alice)).await;
    let (hit, _) = get(&app, "/mine/private/profile", Some(&alice)).await;
    assert!(hit.starts_with("gatehouse; hit"), "{hit}");
    let (miss, body) = get(&app, "/mine/private/profile", Some(&bob)).await;
    assert!(miss.starts_with("gatehouse; fwd=uri-miss"), "{miss}");
    assert_eq!(body["user"], for_bob["user"]);

    let anonymous = app.get("/mine/plain/profile", None).await;
    assert_eq!(
        anonymous.status(),
        401,
        "the cache comes after authentication"
    );
}

#[tokio::test]
async fn answers_rfc_9111_forbids_sharing_are_not_stored() {
    let (app, origin) = spawn().await;
    for (kind, detail) in [
        ("private", "private"),
        ("no-store", "no-store"),
        ("cookie", "set-cookie"),
        ("vary-star", "vary-star"),
    ] {
        let path = format!("/cached/{kind}/x");
        for _ in 0..2 {
            let response = app.get(&path, None).await;
            assert_eq!(response.status(), 200, "{kind}");
            assert_eq!(
                cache_status(&response),
                format!("gatehouse; fwd=uri-miss; detail={detail}"),
                "{kind}"
            );
        }
        assert_eq!(
            origin.hits(&format!("/o/{kind}/x")),
            2,
            "{kind}: both reached the origin"
        );
    }
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_one_upstream_call() {
    let (app, origin) = spawn().await;
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let (http, url) = (app.http.clone(), app.url("/cached/gated/report"));
            tokio::spawn(async move {
                let response = http.get(url).send().await.unwrap();
                let status = cache_status(&response);
                (
                    response.status().as_u16(),
                    status,
                    response.text().await.unwrap(),
                )
            })
        })
        .collect();
    // The first request holds at the origin until the others are at the gateway (or answered).
    wait_for("the leader to reach the origin", || async {
        (origin.hits("/o/gated/report") == 1).then_some(())
    })
    .await;
    origin.open_gate(1);
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    assert_eq!(
        origin.hits("/o/gated/report"),
        1,
        "exactly one upstream call"
    );
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    let body = &answers[0].2;
    assert!(
        answers.iter().all(|(_, _, b)| b == body),
        "everyone got the same answer"
    );
    let stored = answers
        .iter()
        .filter(|(_, s, _)| s.ends_with("stored"))
        .count();
    let shared = answers
        .iter()
        .filter(|(_, s, _)| s.ends_with("collapsed") || s.starts_with("gatehouse; hit"))
        .count();
    assert_eq!(
        (stored, shared),
        (1, 99),
        "one leader, 99 served its answer"
    );
    eprintln!(
        "coalescing: {} of 100 waited for the leader",
        answers
            .iter()
            .filter(|(_, s, _)| s.ends_with("collapsed"))
            .count()
    );
}

/// Moves the gateway's clock past `path`'s `max-age=1` and GETs it: a 200, never the service's
/// failure. That answer's `Cache-Status` and body.
async fn answer_once_stale(app: &TestApp, time: &ManualClock, path: &str) -> (String, Value) {
    time.advance(PAST_MAX_AGE);
    let response = app.get(path, None).await;
    assert_eq!(response.status(), 200, "never the service's failure");
    (cache_status(&response), response.json().await.unwrap())
}

#[tokio::test]
async fn a_failing_service_is_stood_in_for_by_a_stale_answer_that_says_so() {
    let (app, origin, time) = spawn_on_manual_clock().await;
    let (stored, body) = get(&app, "/cached/flaky/feed", None).await;
    assert_eq!(stored, "gatehouse; fwd=uri-miss; stored");
    origin.fail(true);
    // `max-age=1`, shorter than the route's minute, wins: the entry is soon stale.
    let (status, stale) = answer_once_stale(&app, &time, "/cached/flaky/feed").await;
    assert!(
        status.starts_with("gatehouse; fwd=stale; fwd-status=503; ttl=-"),
        "{status}"
    );
    assert_eq!(stale, body);

    origin.fail(false);
    let (status, fresh) = get(&app, "/cached/flaky/feed", None).await;
    assert_eq!(
        status, "gatehouse; fwd=stale; stored",
        "back, and stored anew"
    );
    assert_ne!(fresh["count"], body["count"]);
}

#[tokio::test]
async fn an_unreachable_service_is_stood_in_for_by_a_stale_answer_that_says_why() {
    let (app, origin, time) = spawn_on_manual_clock().await;
    let (_, body) = get(&app, "/cached/short/down", None).await;
    origin.stop();
    let (status, stale) = answer_once_stale(&app, &time, "/cached/short/down").await;
    // No answer, so no `fwd-status`: the gateway's reason for the failure instead.
    assert!(
        status.starts_with("gatehouse; fwd=stale; detail=upstream_"),
        "{status}"
    );
    assert_eq!(stale, body);
}

#[tokio::test]
async fn a_shorter_max_age_than_the_routes_ttl_wins() {
    let (app, origin, time) = spawn_on_manual_clock().await;
    get(&app, "/cached/short/clock", None).await;
    time.advance(Duration::from_millis(999));
    let (status, _) = get(&app, "/cached/short/clock", None).await;
    assert!(
        status.starts_with("gatehouse; hit"),
        "fresh for max-age=1: {status}"
    );
    time.advance(Duration::from_millis(1));
    let (status, _) = get(&app, "/cached/short/clock", None).await;
    assert_eq!(
        status, "gatehouse; fwd=stale; stored",
        "not the route's 60 s"
    );
    assert_eq!(origin.hits("/o/short/clock"), 2);
}

#[tokio::test]
async fn head_is_answered_from_the_get_entry_and_a_head_miss_stores_nothing() {
    let (app, origin) = spawn().await;
    let get_response = app.get("/cached/plain/doc", None).await;
    let length = get_response.headers()["content-length"].clone();
    let head = send(&app, reqwest::Method::HEAD, "/cached/plain/doc", &[]).await;
    assert_eq!(head.status(), 200);
    assert!(
        cache_status(&head).starts_with("gatehouse; hit"),
        "{}",
        cache_status(&head)
    );
    assert_eq!(head.headers()["content-length"], length);
    assert!(head.bytes().await.unwrap().is_empty());

    let head = send(&app, reqwest::Method::HEAD, "/cached/plain/other", &[]).await;
    assert_eq!(
        cache_status(&head),
        "gatehouse; fwd=uri-miss; detail=not-stored"
    );
    let (status, _) = get(&app, "/cached/plain/other", None).await;
    assert_eq!(status, "gatehouse; fwd=uri-miss; stored");
    assert_eq!(origin.hits("/o/plain/other"), 2);
}

#[tokio::test]
async fn vary_selects_the_stored_answer_by_the_named_request_headers() {
    let (app, origin) = spawn().await;
    let send = |language: &'static str| {
        let app = &app;
        async move {
            let headers = [("accept-language", language)];
            cache_status(
                &send(
                    app,
                    reqwest::Method::GET,
                    "/cached/vary-lang/page",
                    &headers,
                )
                .await,
            )
        }
    };
    assert_eq!(send("en").await, "gatehouse; fwd=uri-miss; stored");
    assert!(send("en").await.starts_with("gatehouse; hit"));
    assert_eq!(send("fr").await, "gatehouse; fwd=vary-miss; stored");
    assert_eq!(send("de").await, "gatehouse; fwd=vary-miss; stored");
    for language in ["en", "fr", "de"] {
        let status = send(language).await;
        assert!(
            status.starts_with("gatehouse; hit"),
            "{language}: a new variant does not evict the others: {status}"
        );
    }
    assert_eq!(origin.hits("/o/vary-lang/page"), 3);
}

#[tokio::test]
async fn hostile_vary_lists_are_refused_or_cannot_split_the_cache() {
    let (app, origin) = spawn().await;
    // Two thousand names: refused at once, the answer passes through.
    let response = app.get("/cached/vary-huge/x", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        cache_status(&response),
        "gatehouse; fwd=uri-miss; detail=vary-too-many"
    );
    // The service saw the gateway's X-Forwarded-For, not the client's: never stored.
    let response = app.get("/cached/vary-client-address/x", None).await;
    assert_eq!(
        cache_status(&response),
        "gatehouse; fwd=uri-miss; detail=vary-gateway-header"
    );

    // Hop-by-hop headers never reach the service: whatever a client sends, one entry.
    let (stored, body) = get(&app, "/cached/vary-hop/x", None).await;
    assert_eq!(stored, "gatehouse; fwd=uri-miss; stored");
    for headers in [
        [("connection", "close"), ("te", "trailers")],
        [("connection", "keep-alive"), ("keep-alive", "timeout=5")],
    ] {
        let response = send(&app, reqwest::Method::GET, "/cached/vary-hop/x", &headers).await;
        let status = cache_status(&response);
        assert!(
            status.starts_with("gatehouse; hit"),
            "{headers:?}: {status}"
        );
        assert_eq!(response.json::<Value>().await.unwrap(), body);
    }
    assert_eq!(origin.hits("/o/vary-hop/x"), 1);

    // `Vary: Authorization` with `public`: one caller's answer is never another's.
    let alice = [("authorization", "Bearer alice-not-a-jwt")];
    let bob = [("authorization", "Bearer bob-not-a-jwt")];
    let first = send(
        &app,
        reqwest::Method::GET,
        "/cached/vary-credentials/x",
        &alice,
    )
    .await;
    assert_eq!(cache_status(&first), "gatehouse; fwd=uri-miss; stored");
    let other = send(
        &app,
        reqwest::Method::GET,
        "/cached/vary-credentials/x",
        &bob,
    )
    .await;
    assert_eq!(cache_status(&other), "gatehouse; fwd=vary-miss; stored");
    let again = send(
        &app,
        reqwest::Method::GET,
        "/cached/vary-credentials/x",
        &alice,
    )
    .await;
    assert!(cache_status(&again).starts_with("gatehouse; hit"));
    assert_eq!(again.json::<Value>().await.unwrap()["count"], 1);
}

#[tokio::test]
async fn garbage_and_overflowing_cache_control_are_read_as_rfc_9111_says() {
    let (app, origin) = spawn().await;
    for _ in 0..2 {
        let response = app.get("/cached/garbage-cc/x", None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            cache_status(&response),
            "gatehouse; fwd=uri-miss; detail=cache-control-unreadable"
        );
    }
    assert_eq!(origin.hits("/o/garbage-cc/x"), 2, "not stored, never a 5xx");

    // A max-age past any integer is 2^31 s, capped by the route's minute: stored.
    let (stored, _) = get(&app, "/cached/overflow/x", None).await;
    assert_eq!(stored, "gatehouse; fwd=uri-miss; stored");
    let (hit, _) = get(&app, "/cached/overflow/x", None).await;
    assert!(hit.starts_with("gatehouse; hit; ttl="), "{hit}");
    let ttl: i64 = hit.rsplit('=').next().unwrap().parse().unwrap();
    assert!(ttl <= 60, "the route's ttl caps it: {hit}");
}

#[tokio::test]
async fn a_write_invalidates_the_location_it_names_on_its_host_and_never_another_hosts() {
    let (app, origin) = spawn().await;
    get(&app, "/cached/plain/listing", None).await;
    get(&app, "/cached/plain/foreign", None).await;

    let write = send(&app, reqwest::Method::POST, "/cached/located/new", &[]).await;
    assert_eq!(write.status(), 201);

    let (listing, _) = get(&app, "/cached/plain/listing", None).await;
    assert_eq!(
        listing, "gatehouse; fwd=uri-miss; stored",
        "Location on our host: invalidated"
    );
    let (foreign, _) = get(&app, "/cached/plain/foreign", None).await;
    assert!(
        foreign.starts_with("gatehouse; hit"),
        "Content-Location on another host: untouched: {foreign}"
    );
    assert_eq!(origin.hits("/o/plain/listing"), 2);
    assert_eq!(origin.hits("/o/plain/foreign"), 1);
}

#[tokio::test]
async fn requests_waiting_on_a_failing_service_get_the_stale_answer_not_a_turn_each() {
    let (app, origin, time) = spawn_on_manual_clock().await;
    let (_, body) = get(&app, "/cached/stall/feed", None).await;
    origin.fail(true);
    // The first GET to find the entry stale leads, held at the failing service.
    time.advance(PAST_MAX_AGE);
    let (http, url) = (app.http.clone(), app.url("/cached/stall/feed"));
    let leader = tokio::spawn(async move { http.get(url).send().await.unwrap() });
    wait_for("the leader at the failing service", || async {
        (origin.hits("/o/stall/feed") == 2).then_some(())
    })
    .await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (app.http.clone(), app.url("/cached/stall/feed"));
            tokio::spawn(async move { http.get(url).send().await.unwrap() })
        })
        .collect();
    // Waiting on the leader's flight, not merely connected: a waiter still on its way when the
    // leader lands would go to the service on its own.
    wait_for("every waiter on the leader's flight", || async {
        let metrics = app.admin_get("/metrics").await.text().await.unwrap();
        let waiting = metrics
            .lines()
            .find_map(|line| line.strip_prefix("gatehouse_cache_collapsed_waiting "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        (waiting == 20).then_some(())
    })
    .await;
    origin.open_gate(100);

    let leader = leader.await.unwrap();
    assert_eq!(leader.status(), 200);
    assert!(
        cache_status(&leader).starts_with("gatehouse; fwd=stale; fwd-status=503; ttl=-"),
        "{}",
        cache_status(&leader)
    );
    for waiter in waiters {
        let response = waiter.await.unwrap();
        assert_eq!(response.status(), 200, "never the service's failure");
        let status = cache_status(&response);
        assert!(
            status.starts_with("gatehouse; fwd=stale; fwd-status=503; ttl=-")
                && status.ends_with("; collapsed"),
            "{status}"
        );
        assert_eq!(response.json::<Value>().await.unwrap(), body);
    }
    assert_eq!(
        origin.hits("/o/stall/feed"),
        2,
        "the waiters did not go to the failing service one by one"
    );
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let (app, origin, time) = spawn_on_manual_clock().await;
    let (_, first) = get(&app, "/cached/swr/news", None).await;
    assert_eq!(first["count"], 1);
    // `max-age=1, stale-while-revalidate=60`: soon stale, and answered at once all the same.
    time.advance(PAST_MAX_AGE);
    let (status, stale) = get(&app, "/cached/swr/news", None).await;
    assert!(
        status.starts_with("gatehouse; hit; ttl=-")
            && status.ends_with("; detail=stale-while-revalidate"),
        "{status}"
    );
    assert_eq!(stale, first, "the stale answer, at once");
    // The refresh is held at the service: every request meanwhile is answered stale, at once,
    // and none starts another refresh.
    wait_for("the refresh at the service", || async {
        (origin.hits("/o/swr/news") == 2).then_some(())
    })
    .await;
    for _ in 0..10 {
        let (status, body) = get(&app, "/cached/swr/news", None).await;
        assert!(
            status.ends_with("detail=stale-while-revalidate"),
            "{status}"
        );
        assert_eq!(body, first);
    }
    assert_eq!(origin.hits("/o/swr/news"), 2, "one refresh");

    origin.open_gate(1);
    let refreshed = wait_for("the refreshed answer", || async {
        let (status, body) = get(&app, "/cached/swr/news", None).await;
        (status.starts_with("gatehouse; hit") && body["count"] == 2).then_some(body)
    })
    .await;
    assert_eq!(refreshed["count"], 2);
}

/// The access-log lines `wanted` picks, once there are `count` of them (a line is written a
/// moment after its answer's body has gone out).
async fn logged(app: &TestApp, count: usize, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let log = app.data.path().join("access.log");
    wait_for(&format!("{count} lines in the access log"), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|line| wanted(line))
            .collect();
        (lines.len() == count).then_some(lines)
    })
    .await
}

/// Moves the gateway's clock past `path`'s `max-age=1` and GETs it as `token`'s caller: the
/// stale entry answers while it is refreshed, so that request started the refresh. Its
/// request id.
async fn stale_starts_a_refresh(
    app: &TestApp,
    time: &ManualClock,
    path: &str,
    token: &str,
) -> String {
    time.advance(PAST_MAX_AGE);
    let response = app.get(path, Some(token)).await;
    assert_eq!(response.status(), 200);
    let status = cache_status(&response);
    assert!(
        status.ends_with("detail=stale-while-revalidate"),
        "{status}"
    );
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Waits for `gatehouse_cache_refreshes_total{outcome}` to reach `count`.
async fn refreshes_counted(app: &TestApp, outcome: &str, count: f64) {
    wait_for(&format!("{count} refreshes counted {outcome}"), || async {
        let exposition = app.admin_get("/metrics").await.text().await.unwrap();
        let counted = kit::testing::observe::value(
            &exposition,
            "gatehouse_cache_refreshes",
            &[("outcome", outcome)],
        );
        (counted == Some(count)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn background_refreshes_are_counted_by_outcome_and_logged_on_a_line_of_their_own() {
    let (app, origin, time) = spawn_on_manual_clock().await;
    let admin = app.admin().await;
    app.create_user(&admin, "carol", "carol-password-1").await;
    let token = app.token("carol", "carol-password-1").await;
    // A query value that must never reach the log.
    let path = |kind: &str| format!("/mine/{kind}/feed?secret=hunter2-query-value");

    // Each path: stored (`max-age=1, stale-while-revalidate=60`), then stale, which starts
    // exactly one refresh (no request follows it).
    let (_, first) = get(&app, &path("swr-free"), Some(&token)).await;
    let carol = first["user"].as_str().unwrap().to_owned();
    let refreshed = stale_starts_a_refresh(&app, &time, &path("swr-free"), &token).await;
    refreshes_counted(&app, "refreshed", 1.0).await;

    get(&app, &path("swr-flaky"), Some(&token)).await;
    origin.fail(true);
    let failed = stale_starts_a_refresh(&app, &time, &path("swr-flaky"), &token).await;
    refreshes_counted(&app, "failed", 1.0).await;

    get(&app, &path("swr-then-no-store"), Some(&token)).await;
    let refused = stale_starts_a_refresh(&app, &time, &path("swr-then-no-store"), &token).await;
    refreshes_counted(&app, "not_storable", 1.0).await;
    assert_eq!(origin.hits("/o/swr-free/feed"), 2);
    assert_eq!(origin.hits("/o/swr-flaky/feed"), 2);
    assert_eq!(origin.hits("/o/swr-then-no-store/feed"), 2);

    let lines = logged(&app, 3, |line| line["reason"] == "background_refresh").await;
    // In the order they ended, each under the id of the request that started it.
    for (line, (request_id, status)) in
        lines
            .iter()
            .zip([(&refreshed, 200), (&failed, 503), (&refused, 200)])
    {
        kit::testing::observe::assert_every_field(line);
        assert_eq!(line["request_id"], request_id.as_str(), "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["route"], "/mine/{*rest}", "{line}");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["server"], "gateway");
        assert_eq!(line["principal"], carol.as_str());
        assert!(line["upstream_ms"].as_f64().is_some(), "{line}");
        assert_eq!(line["bytes_in"], 0);
    }
    let text = std::fs::read_to_string(app.data.path().join("access.log")).unwrap();
    assert!(!text.contains("hunter2"), "no query value in the log");
    assert!(!text.contains(&token), "no token in the log");
}

#[tokio::test]
async fn hostile_requests_get_a_correct_answer_and_cost_the_cache_nothing() {
    let (app, origin) = spawn().await;
    // A query of 6 KiB is a key of 32 bytes like any other.
    let huge = format!("/cached/plain/search?q={}", "z".repeat(6 * 1024));
    let (stored, body) = get(&app, &huge, None).await;
    assert_eq!(stored, "gatehouse; fwd=uri-miss; stored");
    let (hit, again) = get(&app, &huge, None).await;
    assert!(hit.starts_with("gatehouse; hit"));
    assert_eq!(again, body);

    // Bodies over the route's 1 KiB pass through whole, and are not stored.
    for (kind, size) in [("big", 4096), ("big-stream", 8 * 512)] {
        let path = format!("/cached/{kind}/blob");
        for _ in 0..2 {
            let response = app.get(&path, None).await;
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.bytes().await.unwrap().len(),
                size,
                "{kind}: all of it"
            );
        }
        assert_eq!(
            origin.hits(&format!("/o/{kind}/blob")),
            2,
            "{kind}: not stored"
        );
    }

    // A client's `no-cache` does not take the shield down; its `no-store` stores nothing.
    let response = send(
        &app,
        reqwest::Method::GET,
        "/cached/plain/search?q=1",
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(
        cache_status(&response),
        "gatehouse; fwd=uri-miss; detail=not-stored"
    );
    get(&app, "/cached/plain/search?q=2", None).await;
    let response = send(
        &app,
        reqwest::Method::GET,
        "/cached/plain/search?q=2",
        &[("cache-control", "no-cache, max-age=0")],
    )
    .await;
    assert!(cache_status(&response).starts_with("gatehouse; hit"));
}

#[tokio::test]
async fn hits_are_counted_and_logged_like_any_answer() {
    let (app, _origin) = spawn().await;
    get(&app, "/cached/plain/metered", None).await;
    get(&app, "/cached/plain/metered", None).await;
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("gatehouse_cache_total{outcome=\"hit\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("gatehouse_cache_total{outcome=\"stored\"} 1"));
    let lines = logged(&app, 2, |line| line["route"] == "/cached/{*rest}").await;
    assert!(lines.iter().all(|line| line["status"] == 200));
}
