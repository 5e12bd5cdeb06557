//! Rate limits: named policies (`rate_limits:` in the routes file) that routes take
//! (`rate_limit: [name, …]`), each a hard cap of `requests` in **every** sliding window of `per`
//! (a sliding-window log), optionally smoothed by GCRA (`burst`), as one atomic decision per
//! request.
//!
//! # Layout
//! - [`policy`]: a policy as validated, and its [`Limit`].
//! - [`window`]: the sliding-window arithmetic and the answer ([`Verdict`]), shared by both
//!   stores.
//! - [`gcra`]: the smoothing a `burst` below `requests` adds.
//! - [`memory`]: sharded logs in this process, bounded by bytes (the memory state; the
//!   fallback).
//! - [`script`]: the Lua script that decides on Redis, by Redis's clock.
//! - [`clock`]: the limiter's clock, injectable for tests.
//!
//! A key is `rl:{policy}:{route}|{subject}` — the policy's name, the route's path template, and
//! whom it counts (`user:ID`, `client:ID`, `ip:ADDRESS`, `route`) — the same in memory and on
//! Redis (there behind the state's prefix: `gatehouse:rl:…`). Counts live as long as the
//! process (memory) or Redis, not as long as a configuration: a reload keeps every log, and a
//! policy whose numbers changed reads it with its new numbers (a reload never hands every
//! client a fresh window, and a relaxed policy holds nobody by the old one).
//!
//! With Redis, each request runs the script within the state's command timeout and behind its
//! breaker. When Redis does not answer (or the breaker is open, so no request waits on it), the
//! replica decides on its own logs at its share of each policy ([`Limit::share`]: `requests`
//! divided by the replicas Redis last counted live, or `state.replicas` when larger, so the
//! fleet together stays within the policy in any window), no request is waved through and none
//! fails; it counts those decisions (`reason="limiter_degraded"`), says so in the log once per
//! [`DEGRADED_LOG_EVERY`], and is back on Redis as soon as the breaker's probe finds it
//! answering.

pub mod clock;
pub mod gcra;
pub mod memory;
pub mod policy;
pub mod script;
pub mod window;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kit::observe::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::state::Replicated;
pub use clock::{Clock, ManualClock};
pub use gcra::Rate;
pub use memory::MemoryBuckets;
pub use policy::{LimitBy, RatePolicy};
pub use window::{Limit, Observed, Verdict};

/// While degraded, at most one log line per this long (with the count since the last).
pub const DEGRADED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Whom a request counts as for one policy.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    User(&'a str),
    Client(&'a str),
    Ip(IpAddr),
    Route,
}

impl Subject<'_> {
    fn push_to(&self, key: &mut String) {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = match self {
            Self::User(id) => write!(key, "user:{id}"),
            Self::Client(id) => write!(key, "client:{id}"),
            Self::Ip(ip) => match ip {
                IpAddr::V4(v4) => write!(key, "ip:{v4}"),
                IpAddr::V6(v6) => write!(key, "ip:{v6}/64"),
            },
            Self::Route => write!(key, "route"),
        };
    }
}

/// A bucket's key, without the state's prefix: `rl:{policy}:{route}|{subject}`. A policy name
/// has no `:` and a path template no `|`, so two buckets never share a key.
pub fn bucket_key(policy: &str, route: &str, subject: Subject<'_>) -> String {
    let mut key = String::with_capacity(4 + policy.len() + route.len() + 48);
    key.push_str("rl:");
    key.push_str(policy);
    key.push(':');
    key.push_str(route);
    key.push('|');
    subject.push_to(&mut key);
    key
}

/// One request's answer: each policy's verdict, in the route's order.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdicts: Vec<Verdict>,
    /// Decided by this replica alone, at its share, because Redis did not answer.
    pub degraded: bool,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdicts.iter().all(|verdict| verdict.allowed)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// `gatehouse_rate_limit_decisions_total{outcome, reason}`, its four series held.
struct DecisionCounters {
    allowed: Counter,
    refused: Counter,
    allowed_degraded: Counter,
    refused_degraded: Counter,
}

impl DecisionCounters {
    fn register(metrics: &Metrics) -> Self {
        let family: Family<DecisionLabels, Counter> = Family::default();
        let series = |outcome, reason| {
            family
                .get_or_create(&DecisionLabels { outcome, reason })
                .clone()
        };
        let counters = Self {
            allowed: series("allowed", ""),
            refused: series("refused", ""),
            allowed_degraded: series("allowed", "limiter_degraded"),
            refused_degraded: series("refused", "limiter_degraded"),
        };
        metrics.register(
            "gatehouse_rate_limit_decisions",
            "Rate-limit decisions, by outcome (allowed, refused); reason limiter_degraded when a replica decided alone at its share because Redis did not answer",
            family,
        );
        counters
    }

    fn count(&self, decision: &Decision) {
        let counter = match (decision.allowed(), decision.degraded) {
            (true, false) => &self.allowed,
            (false, false) => &self.refused,
            (true, true) => &self.allowed_degraded,
            (false, true) => &self.refused_degraded,
        };
        counter.inc();
    }
}

/// The gateway's rate limiter: lives as long as the process, across reloads.
pub struct Limiter {
    /// The logs of the memory state, or with Redis the fallback's.
    local: MemoryBuckets,
    clock: Arc<dyn Clock>,
    counters: DecisionCounters,
    degraded: DegradedLog,
}

impl Limiter {
    pub fn new(metrics: &Metrics) -> Self {
        Self::with_clock(metrics, Arc::new(clock::Monotonic::default()))
    }

    /// A limiter reading `clock` (tests pin instants with a [`ManualClock`]).
    pub fn with_clock(metrics: &Metrics, clock: Arc<dyn Clock>) -> Self {
        Self {
            local: MemoryBuckets::default(),
            clock,
            counters: DecisionCounters::register(metrics),
            degraded: DegradedLog::every(DEGRADED_LOG_EVERY),
        }
    }

    /// Decides one request against `buckets` (each a key from [`bucket_key`] and its policy's
    /// limit), on Redis when the state has it, else (or when Redis does not answer) here.
    pub async fn decide(&self, shared: &Replicated, buckets: &[(String, Limit)]) -> Decision {
        let decision = match shared.redis_prefix() {
            None => self.decide_here(buckets, 1, false),
            Some(prefix) => match self.decide_on_redis(shared, prefix, buckets).await {
                Some(decision) => decision,
                None => {
                    let decision = self.decide_here(buckets, shared.replicas(), true);
                    if let Some(decisions) = self.degraded.note(self.clock.now_us()) {
                        tracing::warn!(
                            decisions,
                            "rate limits decided by this replica alone, at its share of each policy: Redis does not answer"
                        );
                    }
                    decision
                }
            },
        };
        self.counters.count(&decision);
        decision
    }

    async fn decide_on_redis(
        &self,
        shared: &Replicated,
        prefix: &str,
        buckets: &[(String, Limit)],
    ) -> Option<Decision> {
        let prefixed: Vec<(String, Limit)> = buckets
            .iter()
            .map(|(key, limit)| (format!("{prefix}:{key}"), *limit))
            .collect();
        let answer: Vec<i64> = match shared.run_script(&script::invocation(&prefixed)).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(%error, "rate limit decided on this replica");
                return None;
            }
        };
        let Some(observed) = script::read_answer(&answer, buckets.len()) else {
            tracing::warn!(?answer, "unexpected answer from the rate-limit script");
            return None;
        };
        Some(Decision {
            verdicts: buckets
                .iter()
                .zip(observed)
                .map(|((_, limit), observed)| limit.verdict(observed))
                .collect(),
            degraded: false,
        })
    }

    /// Decides on this replica's logs, each limit shared by `replicas`.
    fn decide_here(&self, buckets: &[(String, Limit)], replicas: u64, degraded: bool) -> Decision {
        let shared: Vec<(&str, Limit)> = buckets
            .iter()
            .map(|(key, limit)| (key.as_str(), limit.share(replicas)))
            .collect();
        let observed = self.local.decide(&shared, self.clock.now_us());
        Decision {
            verdicts: shared
                .iter()
                .zip(observed)
                .map(|((_, limit), observed)| limit.verdict(observed))
                .collect(),
            degraded,
        }
    }
}

/// The degraded mode's log line, at most once per interval, with the count of degraded
/// decisions since the last (a dead Redis must not turn every request into a log line).
struct DegradedLog {
    every_us: u64,
    /// When the last line was written (µs on the limiter's clock; `None`: never), and the
    /// degraded decisions since.
    state: Mutex<(Option<u64>, u64)>,
}

impl DegradedLog {
    fn every(interval: Duration) -> Self {
        Self {
            every_us: u64::try_from(interval.as_micros()).unwrap_or(u64::MAX),
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one degraded decision at `now`; the count to log when a line is due.
    fn note(&self, now: u64) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, since) = &mut *state;
        *since += 1;
        let due = last.is_none_or(|last| now.saturating_sub(last) >= self.every_us);
        if !due {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{RedisOptions, StateSettings};
    use kit::listener::client_address;

    const SECOND: Duration = Duration::from_secs(1);

    fn limiter(clock: &Arc<ManualClock>) -> Limiter {
        Limiter::with_clock(&Metrics::default(), Arc::clone(clock) as Arc<dyn Clock>)
    }

    #[tokio::test]
    async fn on_the_memory_state_a_window_refills_exactly_when_its_oldest_admission_leaves() {
        let clock = Arc::new(ManualClock::default());
        let limiter = limiter(&clock);
        let memory = Replicated::connect(&StateSettings::Memory).await.unwrap();
        let policy = [(
            bucket_key("p", "/api/time", Subject::User("alice")),
            Limit::new(10, 1_000_000, 10),
        )];
        let mut remaining = Vec::new();
        for _ in 0..30 {
            let decision = limiter.decide(&memory, &policy).await;
            if decision.allowed() {
                remaining.push(decision.verdicts[0].remaining);
            }
            clock.advance(Duration::from_millis(20));
        }
        assert_eq!(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        // 600 ms in: the first admission (at 0) leaves at 1 s.
        let refused = limiter.decide(&memory, &policy).await;
        assert_eq!(refused.verdicts[0].window_us, 400_000);
        clock.advance(Duration::from_micros(399_999));
        assert!(
            !limiter.decide(&memory, &policy).await.allowed(),
            "1 µs early"
        );
        clock.advance(Duration::from_micros(1));
        assert!(limiter.decide(&memory, &policy).await.allowed());
        assert!(!limiter.decide(&memory, &policy).await.allowed());
    }

    /// What a test's thread logs, as the fmt layer writes it.
    #[derive(Clone, Default)]
    struct Logged(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logged {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logged {
        fn lines_saying(&self, what: &str) -> usize {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().filter(|line| line.contains(what)).count()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn with_redis_unreachable_the_degraded_mode_is_logged_once_per_interval_and_decided_at_the_share(
    ) {
        // Nothing listens on port 1: every decision is this replica's, at a quarter.
        let dead = Replicated::connect(&StateSettings::Redis {
            url: "redis://127.0.0.1:1".into(),
            prefix: "never".to_owned(),
            options: RedisOptions {
                expected_replicas: 4,
                ..RedisOptions::default()
            },
        })
        .await
        .unwrap();
        let clock = Arc::new(ManualClock::default());
        let limiter = limiter(&clock);
        let policy = [(
            bucket_key("p", "/api/time", Subject::Route),
            Limit::new(20, 10_000_000, 20),
        )];
        let logged = Logged::default();
        let writer = logged.clone();
        let _logging = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        );
        let mut passed_per_window = Vec::new();
        // 25 s of a request every 100 ms: windows of 10 s at 0, 10 and 20 s.
        for window in 0..3 {
            let mut passed = 0;
            for _ in 0..100 {
                let decision = limiter.decide(&dead, &policy).await;
                assert!(decision.degraded);
                passed += usize::from(decision.allowed());
                clock.advance(SECOND / 10);
            }
            passed_per_window.push(passed);
            assert_eq!(
                logged.lines_saying("rate limits decided by this replica alone"),
                window + 1,
                "one line per 10 s, however many decisions"
            );
        }
        assert_eq!(passed_per_window, [5, 5, 5], "20 ÷ 4 replicas per window");
    }

    #[test]
    fn the_degraded_line_carries_the_decisions_since_the_last_one() {
        let log = DegradedLog::every(Duration::from_secs(10));
        let ms = 1_000;
        let lines: Vec<(u64, u64)> = (0..25_000u64)
            .filter_map(|at| log.note(at * ms).map(|count| (at, count)))
            .collect();
        assert_eq!(lines, [(0, 1), (10_000, 10_000), (20_000, 10_000)]);
    }

    #[test]
    fn a_bucket_key_names_policy_route_and_subject_unambiguously() {
        assert_eq!(
            bucket_key("per-user", "/api/time", Subject::User("0190-abc")),
            "rl:per-user:/api/time|user:0190-abc"
        );
        assert_eq!(
            bucket_key("per-client", "/api/time", Subject::Client("billing")),
            "rl:per-client:/api/time|client:billing"
        );
        assert_eq!(
            bucket_key("whole", "/api/orders/{id}", Subject::Route),
            "rl:whole:/api/orders/{id}|route"
        );
        assert_ne!(
            bucket_key("p", "/a", Subject::User("x")),
            bucket_key("p", "/a", Subject::Client("x")),
            "a user and a machine client of the same name are two callers"
        );
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket_and_mapped_ipv4_is_ipv4() {
        let key = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            bucket_key("per-ip", "/login", Subject::Ip(client_address(ip)))
        };
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(
            key("2001:db8:1:2::1"),
            "rl:per-ip:/login|ip:2001:db8:1:2::/64"
        );
        assert_ne!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:3::1"),
            "another /64"
        );
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("192.0.2.7"), "rl:per-ip:/login|ip:192.0.2.7");
    }
}
