//! `/readyz` is the gateway's own ability to serve: a required service holds it back only until
//! it is first seen healthy after start; a service that goes down later (or one a reload adds)
//! shows in the detail and leaves the gateway ready, so a readiness probe never takes every
//! replica out because one backend is down.

use crate::harness::assert_problem;
use crate::harness::{config_head, wait_for, write_atomically, Gate, Instance, Mode};

/// The required service `pool` (one instance, fast health checks) behind `/api/pool/{*rest}`;
/// `extra` is added to the services as written.
fn checked_pool(instance: &Instance, extra: &str) -> String {
    format!(
        "{head}  pool: {{ upstreams: [\"{url}\"], timeout: 2s, health: {{ path: /healthz, interval: 100ms, timeout: 200ms, healthy: 1, unhealthy: 1 }} }}\n{extra}\
         routes:\n  - {{ path: \"/api/pool/{{*rest}}\", methods: [GET], service: pool, to: \"/{{rest}}\", auth: public }}\n",
        head = config_head("off"),
        url = instance.url(),
    )
}

#[tokio::test]
async fn at_start_a_required_service_holds_readiness_back_until_its_first_healthy_check() {
    let a = Instance::start("a").await;
    // Its health checks get no answer: it has not been seen healthy.
    a.set_mode(Mode::Hang);
    let gate = Gate::start(&checked_pool(&a, "")).await;

    let (status, ready) = gate.readiness().await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "not ready");
    assert_eq!(ready["checks"]["services"], "failing", "{ready}");
    assert!(
        ready["reasons"]["services"]
            .as_str()
            .unwrap()
            .contains("pool"),
        "{ready}"
    );
    assert_eq!(ready["checks"]["store"], "ok", "{ready}");
    assert_eq!(ready["services"]["pool"]["seen_healthy"], false, "{ready}");

    a.set_mode(Mode::Serving);
    let ready = wait_for("the first healthy check", || async {
        let (status, ready) = gate.readiness().await;
        (status == 200).then_some(ready)
    })
    .await;
    assert_eq!(ready["services"]["pool"]["seen_healthy"], true, "{ready}");
}

#[tokio::test]
async fn a_required_service_that_goes_down_after_start_leaves_the_gateway_ready_and_shows_it() {
    let mut a = Instance::start("a").await;
    let gate = Gate::start(&checked_pool(&a, "")).await;
    wait_for("the first healthy check", || async {
        (gate.readiness().await.0 == 200).then_some(())
    })
    .await;

    a.kill().await;
    let ready = wait_for("the health checks to take the instance out", || async {
        let (status, ready) = gate.readiness().await;
        assert_eq!(status, 200, "{ready}");
        (ready["services"]["pool"]["healthy"] == 0).then_some(ready)
    })
    .await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["services"], "ok", "{ready}");
    assert_eq!(ready["services"]["pool"]["required"], true, "{ready}");
    assert_eq!(ready["services"]["pool"]["instances"], 1, "{ready}");
    // Its routes answer for it, at once.
    assert_problem(gate.get("/api/pool/x").await, 503).await;

    // A reload that changes the service, and adds another that is down, changes nothing: the
    // first was seen healthy since start, and the new one arrived on every replica at once.
    let dead = "  extra: { upstreams: [\"http://127.0.0.1:9\"], health: { path: /healthz, interval: 100ms, timeout: 200ms, unhealthy: 1 } }\n";
    let reloaded = checked_pool(&a, dead).replace("timeout: 2s", "timeout: 3s")
        + "  - { path: /api/extra, methods: [GET], service: extra, to: /, auth: public }\n";
    write_atomically(&gate.config, &reloaded);
    let mut changed = gate.reloader.reload("test").unwrap().services_changed;
    changed.sort();
    assert_eq!(changed, vec!["extra", "pool"]);
    let ready = wait_for("the new service's checks to fail", || async {
        let (status, ready) = gate.readiness().await;
        assert_eq!(status, 200, "{ready}");
        (ready["services"]["extra"]["healthy"] == 0).then_some(ready)
    })
    .await;
    assert_eq!(ready["services"]["pool"]["healthy"], 0, "{ready}");
    assert_eq!(ready["services"]["extra"]["required"], true, "{ready}");

    a.restart().await;
    wait_for("the instance back in the detail", || async {
        let (_, ready) = gate.readiness().await;
        (ready["services"]["pool"]["healthy"] == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_public_readiness_says_ready_or_not_and_the_detail_is_only_on_the_admin_listener() {
    let a = Instance::start("a").await;
    a.set_mode(Mode::Hang);
    let gate = Gate::start(&checked_pool(&a, "")).await;

    let public = gate.get("/readyz").await;
    assert_eq!(public.status(), 503);
    let body: serde_json::Value = public.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "status": "not ready" }),
        "the public port names no service, check or reason"
    );
    let (status, detail) = gate.readiness().await;
    assert_eq!(status, 503);
    assert_eq!(detail["checks"]["services"], "failing", "{detail}");

    a.set_mode(Mode::Serving);
    wait_for("the pool to be seen healthy", || async {
        (gate.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    let body: serde_json::Value = gate.get("/readyz").await.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "status": "ready" }));
}
