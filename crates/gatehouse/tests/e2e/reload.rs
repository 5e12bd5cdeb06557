//! Hot reload: a changed routes file is swapped in while requests stream, with none dropped; an
//! invalid one is refused and counted and changes nothing; SIGHUP reloads a running process.

use std::io::Write;
use std::time::Duration;

use gateway::clock::{Clock, ManualClock};
use gateway::reload::Look;
use serde_json::Value;

use crate::harness::{config_head, wait_for, write_atomically, Gate, Instance, Load, Replica};

/// The settle time the torn-write test configures.
const SETTLE: Duration = Duration::from_secs(3);

/// Services `x` and `y`, and `/api/target` routed to `target`.
fn two_targets(watch: &str, x: &Instance, y: &Instance, target: &str) -> String {
    format!(
        "{head}  x: {{ upstreams: [\"{x}\"] }}\n  y: {{ upstreams: [\"{y}\"] }}\n\
         routes:\n  - {{ path: /api/target, methods: [GET], service: {target}, to: /target, auth: public }}\n",
        head = config_head(watch),
        x = x.url(),
        y = y.url(),
    )
}

#[tokio::test]
async fn a_route_retargeted_50_times_under_load_drops_no_request_and_an_invalid_file_changes_nothing(
) {
    let x = Instance::start("x").await;
    let y = Instance::start("y").await;
    let gate = Gate::start(&two_targets("off", &x, &y, "x")).await;
    let load = Load::start(format!("{}/api/target", gate.url), 4);
    wait_for("the stream of requests", || async {
        (x.hits() >= 20).then_some(())
    })
    .await;

    let mut target = "x";
    for round in 1..=50 {
        if round == 25 {
            let (_, ready) = gate.readiness().await;
            let before = ready["config"]["generation"].clone();
            write_atomically(&gate.config, &two_targets("off", &x, &y, "nowhere"));
            let error = gate.reloader.reload("test").unwrap_err().to_string();
            assert!(error.contains("routes[0].service"), "{error}");
            assert!(error.contains("nowhere"), "{error}");
            assert_eq!(
                gate.answered_by("/api/target").await,
                target,
                "the old table stays"
            );
            let (status, ready) = gate.readiness().await;
            assert_eq!(status, 200, "{ready}");
            assert_eq!(ready["config"]["reloads_refused"], 1, "{ready}");
            assert_eq!(ready["config"]["generation"], before, "{ready}");
            assert!(
                ready["config"]["last_refusal"]
                    .as_str()
                    .unwrap()
                    .contains("nowhere"),
                "{ready}"
            );
        }
        target = if target == "x" { "y" } else { "x" };
        write_atomically(&gate.config, &two_targets("off", &x, &y, target));
        let reloaded = gate.reloader.reload("test").unwrap();
        assert!(
            reloaded.services_changed.is_empty(),
            "only the route changed: {reloaded:?}"
        );
        // The swap is complete when `reload` returns: every request from now on is on it.
        assert_eq!(
            gate.answered_by("/api/target").await,
            target,
            "round {round}"
        );
    }
    let tally = load.finish().await;

    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed across 50 reloads: {:?}",
        tally.failures.len(),
        tally.ok + tally.failures.len(),
        tally.failures
    );
    eprintln!(
        "reload under load: 0 failed requests of {} (x {}, y {})",
        tally.ok,
        tally.by_instance.get("x").unwrap_or(&0),
        tally.by_instance.get("y").unwrap_or(&0)
    );
    // Unchanged services keep their connection pools: a new pool per reload would have opened
    // at least one connection per round to each instance.
    assert!(
        x.connections() <= 20 && y.connections() <= 20,
        "connections opened: x {}, y {}",
        x.connections(),
        y.connections()
    );
}

#[tokio::test]
async fn an_edited_file_is_picked_up_by_the_watch_and_start_only_settings_wait_for_a_restart() {
    let x = Instance::start("x").await;
    let y = Instance::start("y").await;
    let gate = Gate::start(&two_targets("100ms", &x, &y, "x")).await;
    assert_eq!(gate.answered_by("/api/target").await, "x");

    let edited = two_targets("100ms", &x, &y, "y")
        .replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:1")
        .replace(
            "drain_timeout: 20s",
            "drain_timeout: 20s\ntokens: { access_ttl: 5m }",
        );
    write_atomically(&gate.config, &edited);
    wait_for("the watch to apply the edit", || async {
        let response = gate.get("/api/target").await;
        let body: Value = response.json().await.ok()?;
        (body["instance"] == "y").then_some(())
    })
    .await;
    let (status, ready) = gate.readiness().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["config"]["generation"], 2, "{ready}");
    assert_eq!(
        ready["config"]["needs_restart"],
        serde_json::json!(["listen", "tokens"]),
        "{ready}"
    );

    write_atomically(&gate.config, "routes: [ this is not yaml");
    wait_for("the watch to refuse the broken file", || async {
        let (_, ready) = gate.readiness().await;
        (ready["config"]["reloads_refused"] == 1).then_some(())
    })
    .await;
    assert_eq!(gate.answered_by("/api/target").await, "y");
    // Refused once, not at every look: five more looks at the same file, taken here rather
    // than waited for, change nothing.
    for _ in 0..5 {
        assert_eq!(gate.reloader.look().await.unwrap(), Look::Unchanged);
    }
    let (_, ready) = gate.readiness().await;
    assert_eq!(ready["config"]["reloads_refused"], 1, "{ready}");
}

#[tokio::test]
async fn sighup_reloads_the_file_of_a_running_gateway_process() {
    let x = Instance::start("x").await;
    let y = Instance::start("y").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    let text = |target: &str| {
        two_targets("off", &x, &y, target)
            .replace("${DATA}", &dir.path().join("data").display().to_string())
    };
    std::fs::write(&config, text("x")).unwrap();
    let gateway = Replica::start(&config, &[]).await;
    let url = format!("{}/api/target", gateway.url);
    let http = crate::harness::client();
    let answered_by = || async {
        let response = http.get(&url).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        body["instance"].as_str().map(str::to_owned)
    };
    assert_eq!(wait_for("the gateway process", answered_by).await, "x");

    write_atomically(&config, &text("y"));
    gateway.process.signal("HUP");
    wait_for("SIGHUP to apply the file", || async {
        (answered_by().await? == "y").then_some(())
    })
    .await;
}

/// The configuration `gate` started with is still in force, whole: `/api/second` on `x`.
async fn still_the_first(gate: &Gate, when: &str) {
    let (_, ready) = gate.readiness().await;
    assert_eq!(ready["config"]["generation"], 1, "{when}: {ready}");
    assert_eq!(gate.answered_by("/api/second").await, "x", "{when}");
}

#[tokio::test]
async fn a_file_written_in_two_halves_with_a_pause_is_applied_once_whole_never_torn() {
    let x = Instance::start("x").await;
    let y = Instance::start("y").await;
    // Two routes to `target`; the first half of the file, cut before the second route, is a
    // valid configuration on its own: applied, it would answer 404 on /api/second.
    let routes_to = |target: &str| {
        format!(
            "{head}  x: {{ upstreams: [\"{x}\"] }}\n  y: {{ upstreams: [\"{y}\"] }}\n\
             routes:\n  - {{ path: /api/first, methods: [GET], service: {target}, to: /first, auth: public }}\n  \
             - {{ path: /api/second, methods: [GET], service: {target}, to: /second, auth: public }}\n",
            head = config_head("off").replace("watch: off\n", "watch: off\nwatch_settle: 3s\n"),
            x = x.url(),
            y = y.url(),
        )
    };
    // The watch's timer is off: the test takes its looks and moves the gateway's clock between
    // them, so the writer's pause is exactly as long as the scenario says.
    let time = ManualClock::starting_now();
    let gate = Gate::start_at(Clock::from(&time), &routes_to("x")).await;

    let text = routes_to("y");
    let cut = text.find("  - { path: /api/second").unwrap();
    let mut file = std::fs::File::create(&gate.config).unwrap();
    file.write_all(&text.as_bytes()[..cut]).unwrap();
    file.flush().unwrap();
    assert_eq!(gate.reloader.look().await.unwrap(), Look::Settling(SETTLE));
    time.advance(Duration::from_secs(2));
    assert_eq!(
        gate.reloader.look().await.unwrap(),
        Look::Settling(Duration::from_secs(1))
    );
    still_the_first(&gate, "the half file, 2 s into its settle time").await;

    // The writer finishes after 2.5 s: past the half's settle time by the next look, which finds
    // other contents and starts the settle time over.
    time.advance(Duration::from_millis(500));
    file.write_all(&text.as_bytes()[cut..]).unwrap();
    file.flush().unwrap();
    time.advance(Duration::from_millis(1000));
    assert_eq!(gate.reloader.look().await.unwrap(), Look::Settling(SETTLE));
    still_the_first(&gate, "the whole file just found, the half one 3.5 s old").await;

    time.advance(SETTLE - Duration::from_millis(1));
    assert_eq!(
        gate.reloader.look().await.unwrap(),
        Look::Settling(Duration::from_millis(1))
    );
    still_the_first(&gate, "a millisecond before the whole file settles").await;

    time.advance(Duration::from_millis(1));
    assert_eq!(gate.reloader.look().await.unwrap(), Look::Reloaded);
    let (status, ready) = gate.readiness().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["config"]["generation"], 2,
        "one reload, of the whole file: {ready}"
    );
    assert_eq!(ready["config"]["reloads_refused"], 0, "{ready}");
    assert_eq!(gate.answered_by("/api/first").await, "y");
    assert_eq!(gate.answered_by("/api/second").await, "y");
    assert_eq!(gate.reloader.look().await.unwrap(), Look::Unchanged);
}
