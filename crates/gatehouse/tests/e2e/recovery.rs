//! Instances that fail and recover: a breaker that forgives an instance that served well since
//! its last incident, and still backs off from one that keeps failing; an instance frozen by
//! SIGSTOP that the others cover for at once and the health checks soon take out.

use std::time::Duration;

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
        // Healthy for as long as the last back-off (the default decay): forgiven. This span of
        // real time is the scenario's input (the breaker reads the real clock), not a wait for
        // something: the instance must answer throughout it.
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

#[tokio::test]
async fn a_frozen_instance_under_steady_load_costs_no_second_of_service_and_few_timeouts() {
    let a = Process::start().await;
    let b = Process::start().await;
    // The default balance; health checks every 500 ms with their own short timeout.
    let gate = Gate::start(&format!(
        "{head}  pool: {{ upstreams: [\"{a}\", \"{b}\"], timeout: 2s, connect_timeout: 1s, health: {{ path: /healthz, interval: 500ms, timeout: 250ms, healthy: 1, unhealthy: 2 }}, breaker: {{ failures: 3, backoff: 2s }} }}\n\
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
    let frozen_at = tokio::time::Instant::now();
    wait_for(
        "the health checks to take the frozen instance out",
        || async {
            let (_, ready) = gate.readiness().await;
            (ready["services"]["pool"]["healthy"] == 1).then_some(())
        },
    )
    .await;
    let out_after = frozen_at.elapsed();
    // The pool goes on serving on the other instance: a stream of answers, counted, not timed.
    let served_before = load.tally().ok;
    wait_for("the load to go on being served", || async {
        (load.tally().ok >= served_before + 200).then_some(())
    })
    .await;
    let tally = load.finish().await;
    a.thaw();

    eprintln!(
        "frozen instance: out after {out_after:?}; {} answered, {} failed, longest without an answer {:?}",
        tally.ok,
        tally.failures.len(),
        tally.longest_silence
    );
    assert!(
        tally.longest_silence < Duration::from_secs(1),
        "a whole second without a successful answer: {:?}",
        tally.longest_silence
    );
    assert!(
        tally.failures.len() <= 8 && tally.failures.iter().all(|failure| failure.contains("504")),
        "at most a handful of timeouts: {:?}",
        tally.failures
    );
    // How soon the health checks take a frozen instance out is the behaviour under test, so a
    // bound stays: the configured interval plus two check timeouts (`unhealthy: 2`), times a
    // generous factor for a loaded machine. It catches a frozen instance left in rotation
    // until a request timeout trips the breaker, not a slow check.
    let detection = Duration::from_millis(500) + 2 * Duration::from_millis(250);
    assert!(
        out_after < detection * 4,
        "the frozen instance was out only after {out_after:?}, not within a few health intervals"
    );
}
