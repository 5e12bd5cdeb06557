//! Instances that fail and recover: a breaker that forgives an instance that served well since
//! its last incident, and still backs off from one that keeps failing.

use std::time::Duration;

use crate::fleet::{config_head, wait_for, Gate, Instance, Mode};
use crate::support::assert_problem;

/// The service `pool` of one instance behind `/api/pool/{*rest}`, `service` settings added.
fn one_instance(instance: &Instance, service: &str) -> String {
    format!(
        "{head}  pool: {{ upstreams: [\"{url}\"], timeout: 5s{service} }}\n\
         routes:\n  - {{ path: \"/api/pool/{{*rest}}\", methods: [GET], service: pool, to: \"/{{rest}}\", auth: public }}\n",
        head = config_head("off"),
        url = instance.url(),
    )
}

/// One incident: the instance fails a request and is ejected; returns the gateway's
/// `Retry-After` while it is out. The instance is serving again when this returns.
async fn incident(gate: &Gate, instance: &Instance) -> u64 {
    instance.set_mode(Mode::Unavailable);
    assert_eq!(
        gate.get("/api/pool/x").await.status(),
        503,
        "the instance's own 503"
    );
    let response = gate.get("/api/pool/x").await;
    let retry_after = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = assert_problem(response, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("`pool`"),
        "the gateway's own 503: {body}"
    );
    instance.set_mode(Mode::Serving);
    retry_after
}

/// Waits until the trial after the back-off has put the instance back.
async fn back_in_rotation(gate: &Gate) {
    wait_for("the trial request to bring the instance back", || async {
        (gate.get("/api/pool/x").await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn incidents_separated_by_healthy_periods_each_back_off_for_the_base_time() {
    let a = Instance::start("a").await;
    let gate = Gate::start(&one_instance(&a, ", breaker: { failures: 1, backoff: 1s }")).await;

    let mut retry_afters = Vec::new();
    for _ in 0..5 {
        retry_afters.push(incident(&gate, &a).await);
        back_in_rotation(&gate).await;
        // Healthy for as long as the last back-off (the default decay): forgiven.
        let healthy_until = tokio::time::Instant::now() + Duration::from_millis(1100);
        while tokio::time::Instant::now() < healthy_until {
            assert_eq!(gate.get("/api/pool/x").await.status(), 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(retry_afters, vec![1, 1, 1, 1, 1]);

    // Incidents close together are one trouble: the back-off still doubles.
    let first = incident(&gate, &a).await;
    back_in_rotation(&gate).await;
    let second = incident(&gate, &a).await;
    assert_eq!((first, second), (1, 2));
}
