//! Rate limits: named policies (`rate_limits:` in the routes file) that routes take
//! (`rate_limit: [name, …]`), enforced by GCRA as one atomic decision per request.
//!
//! # Layout
//! - [`policy`]: a policy as validated, and its GCRA parameters.
//! - [`gcra`]: the arithmetic, shared by both stores.
//! - [`memory`]: sharded, bounded buckets in this process (the memory state; the fallback).
//! - [`script`]: the Lua script that decides on Redis, by Redis's clock.
//!
//! A bucket's key is `rl:{policy}:{route}|{subject}` — the policy's name, the route's path
//! template, and whom it counts (`user:ID`, `client:ID`, `ip:ADDRESS`, `route`) — the same in
//! memory and on Redis (there behind the state's prefix: `gatehouse:rl:…`). Counts live as long
//! as the process (memory) or Redis, not as long as a configuration: a reload keeps every
//! bucket, and a policy whose numbers changed reads the buckets it left with its new numbers
//! (a reload never hands every client a fresh burst).
//!
//! With Redis, each request runs the script within the state's command timeout and behind its
//! breaker. When Redis does not answer (or the breaker is open, so no request waits on it), the
//! replica decides on its own buckets at its share of each policy — the rate and the burst
//! divided by the replicas Redis last counted live, or `state.replicas` when larger — so the
//! fleet together allows no more than the policy (but see [`Rate::share`] for a burst smaller
//! than the fleet), no request is waved through and none fails; it counts those decisions
//! (`reason="limiter_degraded"`), says so in the log once per [`DEGRADED_LOG_EVERY`], and is
//! back on Redis as soon as the breaker's probe finds it answering.

pub mod gcra;
pub mod memory;
pub mod policy;
pub mod script;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kit::observe::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::state::Replicated;
pub use gcra::{Rate, Verdict};
pub use memory::MemoryBuckets;
pub use policy::{LimitBy, RatePolicy};

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
    /// The buckets of the memory state, or with Redis the fallback's.
    local: MemoryBuckets,
    /// The monotonic clock's origin for the local buckets (µs since it).
    epoch: Instant,
    counters: DecisionCounters,
    /// When the last degraded-mode line was logged (ms since `epoch`, 0: never), and how many
    /// degraded decisions came since.
    degraded_logged_ms: AtomicU64,
    degraded_since_log: AtomicU64,
}

impl Limiter {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            local: MemoryBuckets::default(),
            epoch: Instant::now(),
            counters: DecisionCounters::register(metrics),
            degraded_logged_ms: AtomicU64::new(0),
            degraded_since_log: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Decides one request against `buckets` (each a key from [`bucket_key`] and its policy's
    /// rate), on Redis when the state has it, else (or when Redis does not answer) here.
    pub async fn decide(&self, shared: &Replicated, buckets: &[(String, Rate)]) -> Decision {
        let decision = match shared.redis_prefix() {
            None => self.decide_here(buckets, 1, false),
            Some(prefix) => match self.decide_on_redis(shared, prefix, buckets).await {
                Some(decision) => decision,
                None => {
                    let decision = self.decide_here(buckets, shared.replicas(), true);
                    self.note_degraded();
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
        buckets: &[(String, Rate)],
    ) -> Option<Decision> {
        let prefixed: Vec<(String, Rate)> = buckets
            .iter()
            .map(|(key, rate)| (format!("{prefix}:{key}"), *rate))
            .collect();
        let answer: Vec<i64> = match shared.run_script(&script::invocation(&prefixed)).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(%error, "rate limit decided on this replica");
                return None;
            }
        };
        let Some(used) = script::read_answer(&answer, buckets.len()) else {
            tracing::warn!(?answer, "unexpected answer from the rate-limit script");
            return None;
        };
        Some(Decision {
            verdicts: buckets
                .iter()
                .zip(used)
                .map(|((_, rate), used)| rate.verdict(used))
                .collect(),
            degraded: false,
        })
    }

    /// Decides on this replica's buckets, each rate shared by `replicas`.
    fn decide_here(&self, buckets: &[(String, Rate)], replicas: u64, degraded: bool) -> Decision {
        let shared: Vec<(&str, Rate)> = buckets
            .iter()
            .map(|(key, rate)| (key.as_str(), rate.share(replicas)))
            .collect();
        let used = self.local.decide(&shared, self.now_us());
        Decision {
            verdicts: shared
                .iter()
                .zip(used)
                .map(|((_, rate), used)| rate.verdict(used))
                .collect(),
            degraded,
        }
    }

    /// Logs the degraded mode at most once per [`DEGRADED_LOG_EVERY`], with the count since.
    fn note_degraded(&self) {
        let since = self.degraded_since_log.fetch_add(1, Ordering::AcqRel) + 1;
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.degraded_logged_ms.load(Ordering::Acquire);
        let every = u64::try_from(DEGRADED_LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now_ms.saturating_sub(last) >= every)
            && self
                .degraded_logged_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.degraded_since_log.fetch_sub(since, Ordering::AcqRel);
            tracing::warn!(
                decisions = since,
                "rate limits decided by this replica alone, at its share of each policy: Redis does not answer"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::listener::client_address;

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
