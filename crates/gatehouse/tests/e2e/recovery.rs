//! Instances that fail and recover: a breaker that forgives an instance that served well since
//! its last incident, and still backs off from one that keeps failing; an instance frozen by
//! SIGSTOP that the others cover for at once and the health checks take out.

use std::time::Duration;

use gateway::clock::{Clock, ManualClock};

use crate::harness::assert_problem;
use crate::harness::process::StandaloneClock;
use crate::harness::{config_head, wait_for, Gate, Instance, Load, Mode};

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

/// Moves the gateway's clock past the back-off of `retry_after` seconds: the next request is
/// the trial, and its success puts the instance back.
async fn back_in_rotation(gate: &Gate, time: &ManualClock, retry_after: u64) {
    time.advance(Duration::from_secs(retry_after));
    assert_eq!(
        gate.get("/api/pool/x").await.status(),
        200,
        "the trial request after the back-off brings the instance back"
    );
}

/// The instance in rotation while the gateway's clock moves `span` forward: it answers at the
/// start of the span and at its end.
async fn in_rotation_for(gate: &Gate, time: &ManualClock, span: Duration) {
    assert_eq!(gate.get("/api/pool/x").await.status(), 200, "in rotation");
    time.advance(span);
    assert_eq!(
        gate.get("/api/pool/x").await.status(),
        200,
        "still in rotation"
    );
}

#[tokio::test]
async fn incidents_separated_by_healthy_periods_each_back_off_for_the_base_time() {
    let a = Instance::start("a").await;
    // The breaker runs on a clock the test moves: back-offs and the time in rotation since are
    // the scenario's input, crossed exactly instead of waited out.
    let time = ManualClock::starting_now();
    let gate = Gate::start_at(
        Clock::from(&time),
        &one_instance(&a, ", breaker: { failures: 1, backoff: 1s }"),
    )
    .await;

    let mut retry_afters = Vec::new();
    for _ in 0..5 {
        let retry_after = incident(&gate, &a).await;
        retry_afters.push(retry_after);
        back_in_rotation(&gate, &time, retry_after).await;
        // In rotation for as long as the last back-off (the default decay): forgiven.
        in_rotation_for(&gate, &time, Duration::from_secs(1)).await;
    }
    assert_eq!(retry_afters, vec![1, 1, 1, 1, 1]);

    // Incidents close together are one trouble: the back-off still doubles.
    let first = incident(&gate, &a).await;
    back_in_rotation(&gate, &time, first).await;
    let second = incident(&gate, &a).await;
    assert_eq!((first, second), (1, 2));
}

/// A service as its own process (`gatehouse clock`), which a test can freeze with SIGSTOP as
/// an overloaded or swapping machine freezes: connections are still accepted by the kernel, and
/// nothing answers. Dropped, it is killed (SIGKILL ends a stopped process too), so a failing
/// test leaves nothing stopped.
struct Process {
    clock: StandaloneClock,
    url: String,
}

impl Process {
    async fn start() -> Self {
        // Several instances run at once: no access log.
        let clock = StandaloneClock::start("off").await;
        let process = Self {
            url: clock.url.clone(),
            clock,
        };
        let http = crate::harness::client();
        wait_for("the service process to listen", || async {
            let response = http.get(format!("{}/healthz", process.url)).send().await;
            response.ok().filter(|r| r.status() == 200).map(|_| ())
        })
        .await;
        process
    }

    fn freeze(&self) {
        self.clock.process.signal("STOP");
    }

    fn thaw(&self) {
        self.clock.process.signal("CONT");
    }
}

/// Requests the gateway is waiting on `instance` (`host:port`) for now, from its metrics.
async fn in_flight_on(gate: &Gate, instance: &str) -> u64 {
    gate.metrics()
        .await
        .lines()
        .find(|line| {
            line.starts_with("gatehouse_instance_in_flight{")
                && line.contains(&format!("instance=\"{instance}\""))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_frozen_instance_under_steady_load_is_covered_for_at_once_and_taken_out_by_its_checks() {
    let a = Process::start().await;
    let b = Process::start().await;
    // The default balance; health checks every 500 ms with their own short timeout. The
    // request timeout is far past the test's patience: a request sent to the frozen instance
    // hangs until it thaws, so whatever is answered meanwhile was never held up by it, and
    // only the health checks (not timeouts tripping the breaker) can take it out.
    let gate = Gate::start(&format!(
        "{head}  pool: {{ upstreams: [\"{a}\", \"{b}\"], timeout: 1h, connect_timeout: 1s, health: {{ path: /healthz, interval: 500ms, timeout: 250ms, healthy: 1, unhealthy: 2 }}, breaker: {{ failures: 3, backoff: 2s }} }}\n\
         routes:\n  - {{ path: \"/api/pool/{{*rest}}\", methods: [GET], service: pool, to: \"/{{rest}}\", auth: public }}\n",
        head = config_head("off"),
        a = a.url,
        b = b.url,
    ))
    .await;
    wait_for("both instances healthy", || async {
        let (status, ready) = gate.readiness().await;
        (status == 200 && ready["services"]["pool"]["healthy"] == 2).then_some(())
    })
    .await;
    let load = Load::start(format!("{}/api/pool/healthz", gate.url), 4);
    wait_for("a steady stream of answers", || async {
        (load.tally().ok >= 200).then_some(())
    })
    .await;

    a.freeze();
    let frozen = a.url.trim_start_matches("http://").to_owned();
    let served_before = load.tally().ok;
    wait_for("the load to go on being served", || async {
        (load.tally().ok >= served_before + 200).then_some(())
    })
    .await;
    wait_for(
        "the health checks to take the frozen instance out",
        || async {
            let (_, ready) = gate.readiness().await;
            (ready["services"]["pool"]["healthy"] == 1).then_some(())
        },
    )
    .await;
    let hanging = in_flight_on(&gate, &frozen).await;
    assert!(
        (1..=2).contains(&hanging),
        "requests did reach the frozen instance, and no more than two of the four workers \
         (fewest in flight wins) were held there while the rest were served: {hanging}"
    );
    a.thaw();
    let tally = load.finish().await;
    assert!(
        tally.failures.is_empty(),
        "the requests held by the frozen instance were answered once it thawed: {:?}",
        tally.failures
    );
}
