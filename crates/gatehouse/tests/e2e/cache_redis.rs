//! The response cache on Redis: replicas share it (an answer one stored is a hit on the other,
//! a write on either invalidates it for both), and a Redis that stops answering costs a cached
//! route nothing but its hits: the requests go to the service, never a 500; a write made while
//! Redis was down drops the shared entries when it returns, so none from before the write is
//! served. Runs when
//! `GATEHOUSE_TEST_REDIS` names a Redis (CI sets it), like the other Redis tests; the outage test
//! tests start a Redis of their own on a free port and stop it.

use serde_json::Value;

use crate::cache::{cache_status, Origin};
use crate::harness::redis::TestRedis;
use crate::harness::{config_head, wait_for, Gate};

const REDIS_ENV: &str = "GATEHOUSE_TEST_REDIS";

fn redis_url() -> Option<String> {
    let url = std::env::var(REDIS_ENV).ok().filter(|url| !url.is_empty());
    if url.is_none() {
        eprintln!("{REDIS_ENV} is not set: the shared-cache test checks nothing");
    }
    url
}

/// A replica's configuration: the origin's cached routes, the state on `redis` under `prefix`.
fn config(origin: &Origin, redis: &str, prefix: &str) -> String {
    let text = format!(
        "{}state: {{ redis: \"{redis}\", prefix: \"{prefix}\", probe_interval: 200ms }}\nroutes:\n",
        config_head("off")
    );
    origin.config(text)
}

/// A gateway on its own Redis (`redis`), in front of a new origin, with an entry stored at
/// `path` (a hit already).
async fn stored_on(redis: &TestRedis, prefix: &str, path: &str) -> (Origin, Gate) {
    let origin = Origin::start().await;
    let url = redis.url();
    let gate = Gate::start(&config(&origin, &url, prefix)).await;
    until_hit(&gate, path).await;
    (origin, gate)
}

/// POSTs to `path` on `gate`: its status.
async fn write(gate: &Gate, path: &str) -> u16 {
    let response = gate
        .http
        .post(format!("{}{path}", gate.url))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// GETs `path` on `gate` until the answer is a hit; its body.
async fn until_hit(gate: &Gate, path: &str) -> Value {
    wait_for("a hit from Redis", || async {
        let response = gate.get(path).await;
        assert_eq!(response.status(), 200);
        let hit = cache_status(&response).starts_with("gatehouse; hit");
        let body: Value = response.json().await.unwrap();
        hit.then_some(body)
    })
    .await
}

#[tokio::test]
async fn with_redis_an_answer_stored_by_one_replica_is_a_hit_on_the_other_until_a_write() {
    let Some(redis) = redis_url() else { return };
    let origin = Origin::start().await;
    let prefix = format!("gatehouse-cache-{}", uuid::Uuid::new_v4().simple());
    let text = config(&origin, &redis, &prefix);
    let one = Gate::start(&text).await;
    let two = Gate::start(&text).await;

    let stored = until_hit(&one, "/cached/plain/shared?x=1").await;
    // Replicas behind one load balancer are addressed by one public host (the key holds it).
    let public_host = one.url.trim_start_matches("http://");
    let response = two
        .http
        .get(format!("{}/cached/plain/shared?x=1", two.url))
        .header("host", public_host)
        .send()
        .await
        .unwrap();
    let status = cache_status(&response);
    assert!(
        status.starts_with("gatehouse; hit"),
        "the other replica: {status}"
    );
    assert_eq!(response.json::<Value>().await.unwrap(), stored);
    eprintln!("the other replica served the entry the first stored in Redis");

    assert_eq!(write(&two, "/cached/plain/shared").await, 204);
    let response = one.get("/cached/plain/shared?x=1").await;
    assert_eq!(
        cache_status(&response),
        "gatehouse; fwd=uri-miss; stored",
        "a write on one replica invalidates the entry for the other"
    );
    eprintln!("a write on one replica invalidated the shared entry for the other");
}

/// `redis-cli -u redis args…`: its output.
fn redis_cli(redis: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-u")
        .arg(redis)
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The keys under `prefix` matching `pattern` (after the prefix).
fn scan(redis: &str, prefix: &str, pattern: &str) -> Vec<String> {
    let pattern = format!("{prefix}:{pattern}");
    redis_cli(redis, &["--scan", "--pattern", &pattern])
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What Redis does to keys under `maxmemory`: every invalidation mark under `prefix` forgotten.
fn evict_marks(redis: &str, prefix: &str) {
    let marks = scan(redis, prefix, "cache:path:*");
    assert!(!marks.is_empty(), "the path has a mark to evict");
    for mark in marks {
        redis_cli(redis, &["DEL", &mark]);
    }
}

#[tokio::test]
async fn with_redis_an_entry_lives_by_redis_ttl_and_keeps_each_variant() {
    let Some(redis) = redis_url() else { return };
    let origin = Origin::start().await;
    let prefix = format!("gatehouse-cache-{}", uuid::Uuid::new_v4().simple());
    let gate = Gate::start(&config(&origin, &redis, &prefix)).await;

    until_hit(&gate, "/cached/plain/ttl").await;
    let entries = scan(&redis, &prefix, "cache:entry:*");
    assert_eq!(entries.len(), 1, "{entries:?}");
    // The route: fresh for 60 s, then 5 minutes of stale-if-error.
    let ttl_ms: i64 = redis_cli(&redis, &["PTTL", &entries[0]])
        .trim()
        .parse()
        .unwrap();
    assert!(
        (300_000..=360_000).contains(&ttl_ms),
        "Redis expires it when its stale window ends: {ttl_ms} ms"
    );
    let fields = redis_cli(&redis, &["HKEYS", &entries[0]]);
    let fields: Vec<&str> = fields.lines().collect();
    for field in ["n", "o", "g"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    for kind in ["m:", "b:", "t:"] {
        assert_eq!(
            fields.iter().filter(|f| f.starts_with(kind)).count(),
            1,
            "one variant: {fields:?}"
        );
    }

    // Scripts go by EVALSHA: flushed from Redis, they are loaded again on NOSCRIPT.
    redis_cli(&redis, &["SCRIPT", "FLUSH"]);
    until_hit(&gate, "/cached/plain/ttl").await;

    let language = |value: &'static str| {
        let gate = &gate;
        async move {
            let response = gate
                .http
                .get(format!("{}/cached/vary-lang/page", gate.url))
                .header("accept-language", value)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            cache_status(&response)
        }
    };
    for value in ["en", "fr", "de"] {
        wait_for("the variant stored", || async {
            language(value)
                .await
                .starts_with("gatehouse; hit")
                .then_some(())
        })
        .await;
    }
    for value in ["en", "fr", "de"] {
        let status = language(value).await;
        assert!(
            status.starts_with("gatehouse; hit"),
            "{value}: kept beside the others: {status}"
        );
    }
    assert_eq!(origin.hits("/o/vary-lang/page"), 3);
    eprintln!("with Redis each variant of a key was kept, and the entry expires by Redis's TTL");
}

#[tokio::test]
async fn with_redis_an_evicted_invalidation_mark_brings_back_no_entry_from_before_a_write() {
    let Some(redis) = redis_url() else { return };
    let origin = Origin::start().await;
    let prefix = format!("gatehouse-cache-{}", uuid::Uuid::new_v4().simple());
    let gate = Gate::start(&config(&origin, &redis, &prefix)).await;

    let before = until_hit(&gate, "/cached/plain/evicted?v=1").await;
    assert_eq!(write(&gate, "/cached/plain/evicted").await, 204);
    evict_marks(&redis, &prefix);

    let response = gate.get("/cached/plain/evicted?v=1").await;
    assert_eq!(
        cache_status(&response),
        "gatehouse; fwd=uri-miss; stored",
        "a forgotten mark is not read as \"never written\""
    );
    let after: Value = response.json().await.unwrap();
    assert_ne!(after["count"], before["count"]);
}

#[tokio::test]
async fn with_redis_down_a_cached_route_answers_from_the_service_never_a_500() {
    if redis_url().is_none() {
        return;
    }
    let mut redis = TestRedis::started().await;
    let (origin, gate) = stored_on(&redis, "gatehouse-cache-outage", "/cached/plain/outage").await;
    let before = origin.hits("/o/plain/outage");

    redis.kill();
    for _ in 0..5 {
        let response = gate.get("/cached/plain/outage").await;
        assert_eq!(response.status(), 200, "never a 5xx while Redis is down");
        assert_eq!(
            cache_status(&response),
            "gatehouse; fwd=uri-miss; detail=not-stored"
        );
    }
    assert_eq!(
        origin.hits("/o/plain/outage"),
        before + 5,
        "the service answered"
    );

    // Concurrent misses still make one request at a time to the service: its answer is handed
    // to the waiting ones, though nothing can be stored.
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (
                gate.http.clone(),
                format!("{}/cached/gated/outage", gate.url),
            );
            tokio::spawn(async move { http.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    wait_for(
        "the leader at the origin and every request at the gateway",
        || async {
            let metrics = gate
                .http
                .get(format!("{}/metrics", gate.admin_url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let open = metrics
                .lines()
                .find_map(|line| line.strip_prefix("gatehouse_open_connections "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            (origin.hits("/o/gated/outage") == 1 && open >= 20).then_some(())
        },
    )
    .await;
    origin.open_gate(20);
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let calls = origin.hits("/o/gated/outage");
    assert!(
        calls < 20,
        "the misses were coalesced: {calls} calls for 20 requests"
    );
    eprintln!("with Redis down the cached route answered from the service ({calls} call for 20 concurrent misses)");
}

#[tokio::test]
async fn a_write_made_while_redis_was_down_drops_the_shared_entries_when_it_returns() {
    if redis_url().is_none() {
        return;
    }
    // Saved at shutdown and loaded at start: the entry outlives the outage, as it would in a
    // Redis with persistence, or one the gateway only lost sight of.
    let mut redis = TestRedis::started_persistent().await;
    let (_origin, gate) = stored_on(&redis, "gatehouse-cache-owed", "/cached/plain/owed").await;

    redis.shut_down_saving();
    assert_eq!(
        write(&gate, "/cached/plain/owed").await,
        204,
        "the write is not held up by Redis"
    );
    redis.start().await;

    // Until the breaker's probe finds Redis back, lookups are misses that store nothing.
    let status = wait_for("the cache to use Redis again", || async {
        let response = gate.get("/cached/plain/owed").await;
        assert_eq!(response.status(), 200);
        let status = cache_status(&response);
        (status != "gatehouse; fwd=uri-miss; detail=not-stored").then_some(status)
    })
    .await;
    assert_eq!(
        status, "gatehouse; fwd=uri-miss; stored",
        "the entry from before the write is not served"
    );
    eprintln!("a write made while Redis was down dropped the shared entry when it came back");
}
