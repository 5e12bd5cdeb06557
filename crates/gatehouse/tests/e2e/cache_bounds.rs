//! The in-memory cache's byte bound, seen as an operator sees it: `/metrics` parsed by an
//! exposition parser while real requests fill a small cache past its bound. What is pinned: what
//! the store holds never passes `cache.memory`, what it lets go of is counted, an answer over the
//! body limit passes through whole and is never stored, a client flooding a cached route with
//! distinct queries cannot push out the answers others keep using, and a key keeps at most 8
//! `Vary` answers however many values clients send.

use kit::testing::observe::value;

use crate::cache::{cache_status, Origin};
use crate::harness::wait_for;
use crate::support::{spawn_app_with, TestApp};

/// The bundled configuration's cache section, which the tests shrink.
const BUNDLED_BOUNDS: &str = "cache: { memory: 64MiB, max_body: 1MiB }";

/// The system in front of the cache tests' origin, its cache bounded to `memory` (`48KiB`).
async fn spawn_bounded(memory: &str) -> (TestApp, Origin) {
    let origin = Origin::start().await;
    let routes = origin.clone();
    let bounds = format!("cache: {{ memory: {memory}, max_body: 1KiB }}");
    let app = spawn_app_with(move |text| {
        assert!(
            text.contains(BUNDLED_BOUNDS),
            "the bundled configuration states the cache's bounds"
        );
        routes.config(text.replacen(BUNDLED_BOUNDS, &bounds, 1))
    })
    .await;
    (app, origin)
}

async fn scrape(app: &TestApp) -> String {
    let response = app.admin_get("/metrics").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// A gauge the cache always exports (a panic when it is missing).
fn gauge(exposition: &str, family: &str) -> f64 {
    value(exposition, family, &[])
        .unwrap_or_else(|| panic!("no {family} in the exposition:\n{exposition}"))
}

/// A counter's series (0 before its first count).
fn counter(exposition: &str, family: &str, label: (&str, &str)) -> f64 {
    value(exposition, family, &[label]).unwrap_or(0.0)
}

/// `Cache-Status` of a GET of `path` (which must answer 200), `headers` sent with it.
async fn status_of(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = app.http.get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let status = cache_status(&response);
    // Read to the end: an answer is stored once its body is complete.
    response.bytes().await.unwrap();
    status
}

#[tokio::test]
async fn a_cache_filled_past_its_bound_holds_no_more_than_its_bytes_and_counts_what_it_let_go() {
    let (app, _origin) = spawn_bounded("48KiB").await;
    let bound = 48.0 * 1024.0;
    let exposition = scrape(&app).await;
    assert_eq!(gauge(&exposition, "gatehouse_cache_capacity_bytes"), bound);
    assert_eq!(gauge(&exposition, "gatehouse_cache_bytes"), 0.0);
    assert_eq!(gauge(&exposition, "gatehouse_cache_entries"), 0.0);

    // Each answer weighs a few hundred bytes: 300 distinct ones offer several times the bound.
    let offered = 300;
    for n in 0..offered {
        let status = status_of(&app, &format!("/cached/plain/fill?n={n}"), &[]).await;
        assert_eq!(status, "gatehouse; fwd=uri-miss; stored", "request {n}");
        if n % 50 == 49 {
            let bytes = gauge(&scrape(&app).await, "gatehouse_cache_bytes");
            assert!(bytes <= bound, "after {n} answers: {bytes} bytes held");
        }
    }

    let exposition = scrape(&app).await;
    let bytes = gauge(&exposition, "gatehouse_cache_bytes");
    assert!(bytes <= bound, "{bytes} bytes held");
    assert!(
        bytes > bound / 2.0,
        "the bound is used, not emptied: {bytes}"
    );
    let stored = counter(&exposition, "gatehouse_cache", ("outcome", "stored"));
    let evicted = counter(&exposition, "gatehouse_cache_evictions", ("cause", "size"));
    assert_eq!(stored, f64::from(offered));
    assert!(evicted > 0.0, "what did not fit was counted");
    assert_eq!(
        gauge(&exposition, "gatehouse_cache_entries"),
        stored - evicted,
        "every answer stored is held, or counted as evicted"
    );
    assert_eq!(
        counter(
            &exposition,
            "gatehouse_cache_evictions",
            ("cause", "expired")
        ),
        0.0,
        "nothing expired: a minute's ttl"
    );
}

#[tokio::test]
async fn an_answer_over_the_body_limit_passes_through_whole_and_is_never_stored() {
    let (app, origin) = spawn_bounded("48KiB").await;
    // 4 KiB each, over the route's 1 KiB: one says its length up front, one streams it.
    for (kind, status) in [
        ("big", "gatehouse; fwd=uri-miss; detail=too-large"),
        // Admitted on its headers; the recording stops at the limit and stores nothing.
        ("big-stream", "gatehouse; fwd=uri-miss; stored"),
    ] {
        let path = format!("/cached/{kind}/blob");
        for _ in 0..2 {
            let response = app.get(&path, None).await;
            assert_eq!(response.status(), 200);
            assert_eq!(cache_status(&response), status, "{kind}");
            assert_eq!(
                response.bytes().await.unwrap().len(),
                4096,
                "{kind}: all of it"
            );
        }
        assert_eq!(
            origin.hits(&format!("/o/{kind}/blob")),
            2,
            "{kind}: not stored"
        );
    }
    let exposition = wait_for("the streamed answers' recordings to end", || async {
        let exposition = scrape(&app).await;
        (counter(&exposition, "gatehouse_cache", ("outcome", "too_large")) == 4.0)
            .then_some(exposition)
    })
    .await;
    assert_eq!(
        counter(&exposition, "gatehouse_cache", ("outcome", "stored")),
        0.0
    );
    assert_eq!(gauge(&exposition, "gatehouse_cache_bytes"), 0.0);
    assert_eq!(gauge(&exposition, "gatehouse_cache_entries"), 0.0);
}

#[tokio::test]
async fn a_flood_of_distinct_queries_cannot_push_out_the_answers_others_keep_using() {
    let (app, origin) = spawn_bounded("64KiB").await;
    let bound = 64.0 * 1024.0;
    let used: Vec<String> = (0..4)
        .map(|n| format!("/cached/plain/popular?page={n}"))
        .collect();
    for path in &used {
        assert_eq!(
            status_of(&app, path, &[]).await,
            "gatehouse; fwd=uri-miss; stored"
        );
    }
    // The attacker: 600 queries never asked twice, about five times the bound in answers.
    // Between every 20 of them, the other clients ask for what they use.
    let flood: u32 = 600;
    for n in 0..flood {
        let status = status_of(&app, &format!("/cached/plain/popular?junk={n}"), &[]).await;
        assert!(status.starts_with("gatehouse; fwd=uri-miss"), "{status}");
        if n % 20 == 19 {
            for path in &used {
                let status = status_of(&app, path, &[]).await;
                assert!(
                    status.starts_with("gatehouse; hit"),
                    "{path} after {n} flooding requests: {status}"
                );
            }
            let bytes = gauge(&scrape(&app).await, "gatehouse_cache_bytes");
            assert!(bytes <= bound, "after {n} flooding requests: {bytes} bytes");
        }
    }
    assert_eq!(
        origin.hits("/o/plain/popular"),
        used.len() + flood as usize,
        "the answers in use were never fetched again"
    );
    let exposition = scrape(&app).await;
    let held = gauge(&exposition, "gatehouse_cache_entries");
    assert!(
        held < f64::from(flood) / 2.0,
        "the flood did not fit: {held} keys"
    );
    assert!(counter(&exposition, "gatehouse_cache_evictions", ("cause", "size")) > 0.0);
}

#[tokio::test]
async fn a_key_keeps_at_most_eight_vary_answers_however_many_values_clients_send() {
    let (app, origin) = spawn_bounded("64KiB").await;
    let path = "/cached/vary-lang/page";
    let languages: Vec<String> = (0..40).map(|n| format!("x-lang-{n}")).collect();
    let mut one_answer = 0.0;
    for (n, language) in languages.iter().enumerate() {
        let status = status_of(&app, path, &[("accept-language", language)]).await;
        let expected = if n == 0 { "uri-miss" } else { "vary-miss" };
        assert_eq!(status, format!("gatehouse; fwd={expected}; stored"));
        if n == 0 {
            one_answer = gauge(&scrape(&app).await, "gatehouse_cache_bytes");
        }
    }
    let exposition = scrape(&app).await;
    assert_eq!(gauge(&exposition, "gatehouse_cache_entries"), 1.0);
    let bytes = gauge(&exposition, "gatehouse_cache_bytes");
    // Later answers count to two digits: a few bytes more each.
    assert!(
        (8.0 * one_answer..=8.0 * (one_answer + 16.0)).contains(&bytes),
        "eight answers of about {one_answer} bytes, not forty: {bytes}"
    );
    for language in &languages[32..] {
        let status = status_of(&app, path, &[("accept-language", language)]).await;
        assert!(status.starts_with("gatehouse; hit"), "{language}: {status}");
    }
    // The ninth most recent went to make room.
    let status = status_of(&app, path, &[("accept-language", &languages[31])]).await;
    assert_eq!(status, "gatehouse; fwd=vary-miss; stored");
    assert_eq!(origin.hits("/o/vary-lang/page"), languages.len() + 1);
}
