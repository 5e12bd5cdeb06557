//! Micro-benchmarks of the gateway's per-request work: route match, access-token verification,
//! identity-token minting, header rewriting and the status window's recording.
//! `cargo bench -p gateway`; the whole-gateway numbers come from `bench/run` (docs/BENCHMARKS.md). Nothing here asserts a time.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gateway::auth::identity::IdentityMinter;
use gateway::auth::keys::Keys;
use gateway::auth::tokens::{AccessClaims, Subject, Tokens};
use gateway::clock::Clock;
use gateway::config::{self, GatewayConfig, Vars};
use gateway::proxy::headers::{self, Forwarding};
use gateway::router::{Lookup, RouteTable};
use gateway::store::Store;
use http::{HeaderMap, HeaderValue, Method};
use kit::PrincipalKind;

/// A configuration with `routes` routes, the last of which is `GET /api/last/items/{id}`.
fn config(routes: usize, store: &str) -> GatewayConfig {
    let mut yaml = format!(
        "store: \"{store}\"\n\
         services:\n  users: {{ upstreams: [\"http://127.0.0.1:9\"] }}\n\
         routes:\n"
    );
    for i in 0..routes.saturating_sub(1) {
        // The shapes of a real table: static paths and paths with a parameter.
        if i % 2 == 0 {
            yaml.push_str(&format!(
                "  - {{ path: /api/r{i:05}/items, methods: [GET], service: users, auth: public }}\n"
            ));
        } else {
            yaml.push_str(&format!(
                "  - {{ path: \"/api/r{i:05}/items/{{id}}\", methods: [GET, POST], service: users, to: \"/items/{{id}}\", auth: authenticated }}\n"
            ));
        }
    }
    yaml.push_str(
        "  - { path: \"/api/last/items/{id}\", methods: [GET], service: users, to: \"/items/{id}\", auth: authenticated }\n",
    );
    config::parse(&yaml, "bench.yaml", &Vars::new()).expect("a valid benchmark configuration")
}

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route match");
    for routes in [10, 10_000] {
        let table = RouteTable::build(&config(routes, "sqlite::memory:").routes)
            .expect("a valid route table");
        group.bench_function(format!("{routes} routes"), |b| {
            b.iter(
                || match table.lookup(&Method::GET, black_box("/api/last/items/42")) {
                    Lookup::Found { route, params } => {
                        black_box((route, params));
                    }
                    _ => panic!("the last route must match"),
                },
            );
        });
    }
    group.finish();
}

/// The caller every benchmark's access token is issued to.
fn subject() -> Subject {
    Subject {
        id: "0190f3c2-7d2e-7a51-9b7e-3c1d2a4b5c6d".to_owned(),
        kind: PrincipalKind::User,
        username: Some("alice".to_owned()),
        roles: vec!["user".to_owned()],
        scopes: vec!["orders:read".to_owned(), "time:read".to_owned()],
    }
}

/// The gateway's keys and token machinery on a throwaway SQLite store.
struct Auth {
    tokens: Tokens,
    identities: IdentityMinter,
    token: String,
    claims: AccessClaims,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn auth() -> Auth {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store_url = format!("sqlite://{}/data/gateway.db", dir.path().display());
    let config = config(1, &store_url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let keys = runtime
        .block_on(async {
            let store = Store::connect(config.store.expose_secret()).await?;
            Keys::load(
                store,
                config.tokens.algorithm,
                gateway::auth::keys::KeyTiming::of(&config),
            )
            .await
        })
        .expect("signing keys");
    let keys = Arc::new(keys);
    let tokens = Tokens::new(Arc::clone(&keys), config.tokens.clone());
    let identities = IdentityMinter::new(keys, config.tokens.issuer.clone(), Clock::System);
    let issued = tokens.issue(subject(), None).expect("an access token");
    Auth {
        tokens,
        identities,
        token: issued.token,
        claims: issued.claims,
        _runtime: runtime,
        _dir: dir,
    }
}

fn access_token(c: &mut Criterion) {
    let auth = auth();
    let mut group = c.benchmark_group("access token");
    group.bench_function("verify, signature checked (cache miss)", |b| {
        b.iter(|| {
            auth.tokens
                .verify_uncached(black_box(&auth.token))
                .expect("a valid token")
        });
    });
    group.bench_function("verify, cache hit", |b| {
        b.iter(|| {
            auth.tokens
                .verify(black_box(&auth.token))
                .expect("a valid token")
        });
    });
    group.finish();
}

fn identity_token(c: &mut Criterion) {
    let auth = auth();
    let service: Arc<str> = Arc::from("users");
    let mut group = c.benchmark_group("identity token");
    group.bench_function("cache hit", |b| {
        b.iter(|| {
            auth.identities
                .for_caller(black_box(&auth.claims), &service)
                .expect("an identity token")
        });
    });
    group.bench_function("cache miss (minted)", |b| {
        b.iter_batched(
            || {
                // Another access token of the same caller: its identity is not cached yet.
                let issued = auth.tokens.issue(subject(), None).expect("an access token");
                issued.claims
            },
            |claims| {
                auth.identities
                    .for_caller(&claims, &service)
                    .expect("an identity token")
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// What a browser-like client sends, with a spoofing attempt thrown in.
fn client_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("authorization", "Bearer eyJhbGciOiJFZERTQSJ9.e30.c2ln"),
        ("connection", "keep-alive"),
        ("x-request-id", "0190f3c2-7d2e-7a51-9b7e-3c1d2a4b5c6d"),
        ("x-user-id", "spoofed"),
        ("cookie", "theme=dark"),
    ] {
        headers.insert(
            http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

fn header_rewriting(c: &mut Criterion) {
    let template = client_headers();
    c.bench_function("headers: sanitize and add forwarding", |b| {
        b.iter_batched(
            || template.clone(),
            |mut headers| {
                let host = headers.get(http::header::HOST).cloned();
                headers::sanitize_request(&mut headers);
                headers::add_forwarding(
                    &mut headers,
                    &Forwarding {
                        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
                        host: host.as_ref(),
                        proto: "http",
                    },
                );
                headers
            },
            BatchSize::SmallInput,
        );
    });
}

/// What the observe phase adds for the status page: one answer recorded into its route's window
/// (from the clock reading the phase takes anyway for the request's duration), and the same from every core (up to 4) on one route at once, where
/// they contend for the slot's cache lines (the worst case: all traffic on one route).
fn status_window(c: &mut Criterion) {
    use gateway::status::window::{RouteWindow, Verdict};
    let mut group = c.benchmark_group("status window");
    let window = RouteWindow::default();
    let reading = std::time::Instant::now();
    group.bench_function("record one answer", |b| {
        b.iter(|| {
            window.record(
                gateway::clock::monotonic_ms_at(black_box(reading)),
                black_box(Duration::from_micros(850)),
                black_box(Verdict::Answered),
            );
        });
    });
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    group.bench_function(format!("record, {cores} cores on one route"), |b| {
        b.iter_custom(|iterations| {
            let window = Arc::new(RouteWindow::default());
            let started = std::time::Instant::now();
            let threads: Vec<_> = (0..cores)
                .map(|_| {
                    let window = Arc::clone(&window);
                    std::thread::spawn(move || {
                        for _ in 0..iterations {
                            window.record(
                                gateway::clock::monotonic_ms_at(black_box(reading)),
                                black_box(Duration::from_micros(850)),
                                black_box(Verdict::Answered),
                            );
                        }
                    })
                })
                .collect();
            for thread in threads {
                let _ = thread.join();
            }
            // Each core recorded `iterations` answers in this time: the cost one answer pays
            // while the other cores record on the same route.
            started.elapsed()
        });
    });
    group.finish();
}

criterion_group! {
    name = hot_path;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = route_match, access_token, identity_token, header_rewriting, status_window
}
criterion_main!(hot_path);
