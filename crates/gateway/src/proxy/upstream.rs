//! The services as the proxy sees them: each with its instances, a pool of keep-alive
//! connections per instance ([`super::pool`], with the service's connect timeout), a balancer
//! that only picks instances that are healthy and not ejected, and a retry budget.
//!
//! A reload builds a new [`Upstreams`] from the old one: an unchanged service is the same
//! `Arc<Upstream>` (pools, health, breaker and budget kept); a changed one keeps the pool of
//! every instance it still lists when the connect timeout, protocol and TLS settings (down to the
//! bytes of their files) are the same, and the state of each.
//!
//! The instances' bookkeeping (breaker, back-off, decay, trials, health verdicts) runs on the
//! app's [`Clock`], which every service holds: the system's in a deployed gateway, a test's
//! [`crate::clock::ManualClock`] to cross a back-off without waiting it out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};
use rand::Rng;

use super::instance::{Availability, InFlight, Instance, Pick};
use super::pool::{ConnectionPool, PoolSettings};
use super::retry::RetryBudget;
use crate::clock::Clock;
use crate::config::{Balance, ServiceSettings};
use crate::error::{GatewayError, Unavailability};

/// One service as the proxy sees it.
pub struct Upstream {
    pub name: Arc<str>,
    pub settings: ServiceSettings,
    instances: Vec<Arc<Instance>>,
    /// The `Host` header of each instance, in the order of `instances`: made once here, where
    /// hyper's client would format it (and allocate) for every request.
    hosts: Vec<Option<HeaderValue>>,
    /// The connections to each instance, in the order of `instances`.
    pools: Vec<Arc<ConnectionPool>>,
    next: AtomicUsize,
    /// The service's timeout (a route may override it).
    pub timeout: Duration,
    pub budget: RetryBudget,
    /// Set when a reload dropped or replaced the service: its health checks stop.
    retired: AtomicBool,
    /// Set once its health checks run, so they are started once.
    checked: AtomicBool,
    /// Set once an instance passed a health check since the gateway started (or at once when
    /// there is nothing to wait for); kept across reloads. Until then a required service holds
    /// the gateway's readiness back (see `crate::readiness`).
    proven: AtomicBool,
    /// Where its instances' bookkeeping reads the time (the app's clock).
    clock: Clock,
}

/// How many instances of a service can take requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headcount {
    pub healthy: usize,
    pub instances: usize,
}

/// The `Host` header hyper's client would send to `authority`: the host, and the port unless it
/// is the scheme's default.
fn host_header(authority: &Authority, default_port: u16) -> Option<HeaderValue> {
    match authority.port_u16() {
        None => HeaderValue::from_str(authority.host()).ok(),
        Some(port) if port == default_port => HeaderValue::from_str(authority.host()).ok(),
        Some(port) => HeaderValue::from_str(&format!("{}:{port}", authority.host())).ok(),
    }
}

impl Upstream {
    /// The service `name` with `settings`, its instances' time read from `clock`.
    pub fn new(name: &str, settings: &ServiceSettings, clock: Clock) -> Self {
        Self::succeeding(name, settings, None, clock)
    }

    /// The service `name` with `settings`, taking over what it can from `previous`.
    pub fn succeeding(
        name: &str,
        settings: &ServiceSettings,
        previous: Option<&Upstream>,
        clock: Clock,
    ) -> Self {
        let listed_at = clock.monotonic_ms();
        let instances = settings
            .upstreams
            .iter()
            .filter_map(|uri| uri.authority().cloned())
            .map(|authority| {
                previous
                    .and_then(|old| old.instance_at(&authority))
                    .map_or_else(|| Arc::new(Instance::new(authority, listed_at)), Arc::clone)
            })
            .collect::<Vec<Arc<Instance>>>();
        let default_port = if settings.tls.is_some() { 443 } else { 80 };
        let hosts: Vec<Option<HeaderValue>> = instances
            .iter()
            .map(|instance| host_header(&instance.authority, default_port))
            .collect();
        let pool_settings = PoolSettings::new(settings.connect_timeout)
            .speaking(settings.protocol, settings.tls.clone());
        let pools = instances
            .iter()
            .zip(&hosts)
            .map(|(instance, host)| {
                previous
                    .and_then(|old| old.pool_at(&instance.authority))
                    .filter(|pool| *pool.settings() == pool_settings)
                    .map_or_else(
                        || {
                            Arc::new(ConnectionPool::new(
                                instance.authority.clone(),
                                host.clone(),
                                pool_settings.clone(),
                            ))
                        },
                        Arc::clone,
                    )
            })
            .collect();
        Self {
            name: Arc::from(name),
            settings: settings.clone(),
            instances,
            hosts,
            pools,
            next: AtomicUsize::new(0),
            timeout: settings.timeout,
            budget: RetryBudget::new(settings.retries.budget_percent),
            retired: AtomicBool::new(false),
            checked: AtomicBool::new(false),
            // Without health checks there is no check to wait for: traffic judges it.
            proven: AtomicBool::new(
                settings.health.is_none() || previous.is_some_and(Upstream::is_proven),
            ),
            clock,
        }
    }

    /// The time on its clock (ms, [`Clock::monotonic_ms`]): what its instances' functions
    /// take as `now`.
    #[inline]
    pub fn now(&self) -> u64 {
        self.clock.monotonic_ms()
    }

    /// Whether it has been seen healthy since the gateway started (see the field).
    pub fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Acquire)
    }

    /// An instance passed a health check.
    pub fn seen_healthy(&self) {
        if !self.proven.swap(true, Ordering::AcqRel) {
            tracing::info!(service = %self.name, "first healthy check since start");
        }
    }

    pub fn instances(&self) -> &[Arc<Instance>] {
        &self.instances
    }

    /// The `Host` header for the instance at `index` (as [`Pick::index`] names it).
    pub fn host_header(&self, index: usize) -> Option<&HeaderValue> {
        self.hosts.get(index).and_then(Option::as_ref)
    }

    pub fn instance_at(&self, authority: &Authority) -> Option<&Arc<Instance>> {
        self.instances.iter().find(|i| i.authority == *authority)
    }

    /// The connections to the instance at `index` (as [`Pick::index`] names it).
    pub fn pool(&self, index: usize) -> Option<&Arc<ConnectionPool>> {
        self.pools.get(index)
    }

    /// The connections to the instance at `authority`.
    pub fn pool_at(&self, authority: &Authority) -> Option<&Arc<ConnectionPool>> {
        let index = self
            .instances
            .iter()
            .position(|i| i.authority == *authority)?;
        self.pools.get(index)
    }

    pub fn headcount(&self) -> Headcount {
        let now = self.now();
        Headcount {
            healthy: self
                .instances
                .iter()
                .filter(|i| i.is_available(now))
                .count(),
            instances: self.instances.len(),
        }
    }

    /// An instance for the next attempt, not one of `tried`: first one whose back-off is over
    /// (its trial request), else one ready by the service's balancing. None: 503 at once.
    pub fn pick(&self, tried: &[usize]) -> Result<Pick, GatewayError> {
        let now = self.now();
        let hold = self.timeout + Duration::from_secs(1);
        let candidates = || {
            self.instances
                .iter()
                .enumerate()
                .filter(|(index, _)| !tried.contains(index))
        };
        for (index, instance) in candidates() {
            if instance.availability(now) == Availability::TrialDue
                && instance.start_trial(now, hold)
            {
                tracing::info!(service = %self.name, instance = %instance.authority, "trial request after the back-off");
                return Ok(self.start(index, true));
            }
        }
        let ready = |instance: &Instance| instance.availability(now) == Availability::Ready;
        let chosen = match self.settings.balance {
            Balance::RoundRobin => {
                let count = self.instances.len().max(1);
                // A retry goes on from the instance that failed; only a request's first pick
                // takes a turn, or every retry would hand the failing instance the next one too.
                let start = match tried.last() {
                    Some(failed) => failed + 1,
                    None => self.next.fetch_add(1, Ordering::Relaxed),
                };
                (0..count).find_map(|skipped| {
                    let index = start.wrapping_add(skipped) % count;
                    if tried.contains(&index) || !ready(&self.instances[index]) {
                        return None;
                    }
                    if skipped > 0 && tried.is_empty() {
                        // The turn moves past the skipped instances, or the one after an
                        // ejected instance would get its share too.
                        let _ = self.next.compare_exchange(
                            start.wrapping_add(1),
                            start.wrapping_add(1 + skipped),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    Some(index)
                })
            }
            Balance::LeastRequests => {
                // Two distinct ready instances at random (by their rank among the ready ones,
                // so nothing is allocated), and the less busy of the two.
                let ready_ones = || candidates().filter(|(_, instance)| ready(instance));
                let nth = |rank: usize| ready_ones().nth(rank).map(|(index, _)| index);
                match ready_ones().count() {
                    0 => None,
                    1 => nth(0),
                    n => {
                        let mut random = rand::thread_rng();
                        let first = random.gen_range(0..n);
                        let second = (first + random.gen_range(1..n)) % n;
                        match (nth(first), nth(second)) {
                            (Some(a), Some(b))
                                if self.instances[b].in_flight()
                                    < self.instances[a].in_flight() =>
                            {
                                Some(b)
                            }
                            (a, b) => a.or(b),
                        }
                    }
                }
            }
        };
        match chosen {
            Some(index) => Ok(self.start(index, false)),
            None => Err(GatewayError::Unavailable {
                service: self.name.to_string(),
                retry_after: self.retry_after(now),
                why: if self.instances.iter().any(|i| i.is_healthy()) {
                    Unavailability::BreakerOpen
                } else {
                    Unavailability::NoHealthyInstance
                },
            }),
        }
    }

    /// Counts a call already addressed to `authority` (by [`Upstream::uri_for`]); when the
    /// instance is on trial, this call's outcome decides it.
    pub fn track(&self, authority: &Authority) -> Option<Pick> {
        let index = self
            .instances
            .iter()
            .position(|i| i.authority == *authority)?;
        let trial = self.instances[index].trial_running(self.now());
        Some(self.start(index, trial))
    }

    fn start(&self, index: usize, trial: bool) -> Pick {
        let flight = InFlight::start(
            Arc::clone(&self.instances[index]),
            self.settings.breaker,
            Arc::clone(&self.name),
            self.clock.clone(),
        );
        Pick::new(index, trial, flight)
    }

    /// When an instance may take requests again: the nearest end of a back-off, else the next
    /// health check.
    fn retry_after(&self, now: u64) -> Duration {
        let nearest = self
            .instances
            .iter()
            .filter_map(|instance| match instance.availability(now) {
                Availability::Unavailable { retry_in } => retry_in,
                _ => None,
            })
            .min();
        let fallback = self
            .settings
            .health
            .as_ref()
            .map_or(Duration::from_secs(1), |health| health.interval);
        nearest.unwrap_or(fallback).max(Duration::from_secs(1))
    }

    /// The URI of `path_and_query` on a healthy instance (by the service's balancing), for a
    /// one-off call that [`super::forward::send`] then makes and reports.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        let pick = self.pick(&[])?;
        let authority = self.instances[pick.index].authority.clone();
        // The call is counted again by `send`; a trial keeps its slot until `send` reports.
        pick.detach();
        self.uri_on(&authority, path_and_query)
    }

    pub fn uri_on(&self, authority: &Authority, path_and_query: &str) -> Result<Uri, GatewayError> {
        let path_and_query = bytes::Bytes::copy_from_slice(path_and_query.as_bytes());
        self.uri_at(authority, path_and_query_of(path_and_query)?)
    }

    /// The URI of `path_and_query` on the instance at `authority`; nothing is copied (both are
    /// reference-counted), so an attempt and each retry pay only for the `Uri` itself.
    pub fn uri_at(
        &self,
        authority: &Authority,
        path_and_query: PathAndQuery,
    ) -> Result<Uri, GatewayError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.settings.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts)
            .map_err(|e| GatewayError::Internal(anyhow::anyhow!("building an upstream URI: {e}")))
    }

    /// Stops its health checks: a reload replaced or dropped the service.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// True the first time only: whoever gets it starts the health checks.
    pub fn claim_health_checks(&self) -> bool {
        !self.checked.swap(true, Ordering::AcqRel)
    }
}

/// A request target as the upstream gets it; a target that is no valid path and query is 400.
pub fn path_and_query_of(target: impl Into<bytes::Bytes>) -> Result<PathAndQuery, GatewayError> {
    PathAndQuery::from_maybe_shared(target.into())
        .map_err(|_| GatewayError::BadRequest("The request path cannot be forwarded.".to_owned()))
}

/// Every configured service, by name.
pub struct Upstreams {
    services: HashMap<String, Arc<Upstream>>,
    /// The app's clock, which every service reads and a reload hands on.
    clock: Clock,
}

impl Upstreams {
    /// The services of the first configuration, their time read from `clock`.
    pub fn new(services: &BTreeMap<String, ServiceSettings>, clock: Clock) -> Self {
        Self::build(services, None, clock)
    }

    /// The services of a new configuration, reusing what `previous` had (see the module docs),
    /// on its clock.
    pub fn succeeding(services: &BTreeMap<String, ServiceSettings>, previous: &Upstreams) -> Self {
        Self::build(services, Some(previous), previous.clock.clone())
    }

    fn build(
        services: &BTreeMap<String, ServiceSettings>,
        previous: Option<&Upstreams>,
        clock: Clock,
    ) -> Self {
        let services = services
            .iter()
            .map(|(name, settings)| {
                let old = previous.and_then(|p| p.get(name));
                let upstream = match old {
                    Some(old) if old.settings == *settings => Arc::clone(old),
                    _ => Arc::new(Upstream::succeeding(
                        name,
                        settings,
                        old.map(Arc::as_ref),
                        clock.clone(),
                    )),
                };
                if previous.is_some() && old.is_none() {
                    // Added by a reload, which reaches every replica at once: were it down,
                    // waiting for it would take them all out of service together.
                    upstream.proven.store(true, Ordering::Release);
                }
                (name.clone(), upstream)
            })
            .collect();
        Self { services, clock }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.services.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Upstream>)> {
        self.services.iter()
    }

    /// Whether `upstream` is one of these (the same object, not merely the same name).
    pub fn holds(&self, upstream: &Arc<Upstream>) -> bool {
        self.services
            .get(upstream.name.as_ref())
            .is_some_and(|mine| Arc::ptr_eq(mine, upstream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{BreakerSettings, RetrySettings};
    use crate::proxy::instance::Outcome;

    fn settings(instances: usize, balance: Balance) -> ServiceSettings {
        ServiceSettings {
            upstreams: (0..instances)
                .map(|i| format!("http://127.0.0.1:{}", 10_000 + i).parse().unwrap())
                .collect(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            balance,
            health: None,
            protocol: crate::config::UpstreamProtocol::Http1,
            tls: None,
            breaker: BreakerSettings {
                failures: 1,
                backoff: Duration::from_secs(60),
                max_backoff: Duration::from_secs(60),
                decay: None,
            },
            retries: RetrySettings {
                attempts: 2,
                budget_percent: 20,
            },
            required: true,
        }
    }

    #[tokio::test]
    async fn each_instance_has_the_host_header_hyper_would_send_it() {
        let mut settings = settings(1, Balance::RoundRobin);
        settings.upstreams = vec![
            "http://127.0.0.1:10000".parse().unwrap(),
            "http://users.internal".parse().unwrap(),
            "http://users.internal:80".parse().unwrap(),
            "http://[::1]:8080".parse().unwrap(),
        ];
        let upstream = Upstream::new("s", &settings, Clock::System);
        let hosts: Vec<_> = (0..5).map(|i| upstream.host_header(i).cloned()).collect();
        assert_eq!(
            hosts,
            vec![
                Some(HeaderValue::from_static("127.0.0.1:10000")),
                Some(HeaderValue::from_static("users.internal")),
                Some(HeaderValue::from_static("users.internal")),
                Some(HeaderValue::from_static("[::1]:8080")),
                None,
            ]
        );
    }

    #[tokio::test]
    async fn an_upstream_uri_takes_the_target_as_it_is_and_refuses_one_that_is_no_path() {
        let upstream = Upstream::new("s", &settings(1, Balance::RoundRobin), Clock::System);
        let authority = upstream.instances()[0].authority.clone();
        let target = path_and_query_of("/a/b?c=d%20e").unwrap();
        assert_eq!(
            upstream.uri_at(&authority, target).unwrap(),
            "http://127.0.0.1:10000/a/b?c=d%20e"
        );
        for bad in ["/a b", "/\u{7f}", "/a\r\nx-injected: 1"] {
            let error = path_and_query_of(bad.to_owned()).unwrap_err();
            assert_eq!(error.status(), 400, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn round_robin_takes_each_instance_in_turn_and_skips_ejected_ones() {
        let upstream = Upstream::new("s", &settings(3, Balance::RoundRobin), Clock::System);
        let turns: Vec<usize> = (0..6).map(|_| upstream.pick(&[]).unwrap().index).collect();
        assert_eq!(turns, vec![0, 1, 2, 0, 1, 2]);

        upstream
            .pick(&[])
            .unwrap()
            .report(Outcome::Failure("connect"));
        let turns: Vec<usize> = (0..4).map(|_| upstream.pick(&[]).unwrap().index).collect();
        assert_eq!(turns, vec![1, 2, 1, 2], "instance 0 is ejected");
        assert_eq!(upstream.pick(&[1, 2]).unwrap_err().status(), 503);
    }

    #[tokio::test]
    async fn a_retry_does_not_take_a_turn() {
        let upstream = Upstream::new("s", &settings(3, Balance::RoundRobin), Clock::System);
        for _ in 0..3 {
            let first = upstream.pick(&[]).unwrap().index;
            let retry = upstream.pick(&[first]).unwrap().index;
            assert_eq!(retry, (first + 1) % 3);
        }
        let turns: Vec<usize> = (0..3).map(|_| upstream.pick(&[]).unwrap().index).collect();
        assert_eq!(turns, vec![0, 1, 2], "first picks still go round");
    }

    #[tokio::test]
    async fn least_requests_prefers_the_less_busy_instance() {
        let upstream = Upstream::new("s", &settings(2, Balance::LeastRequests), Clock::System);
        let busy = upstream.pick(&[1]).unwrap();
        assert_eq!(busy.index, 0);
        for _ in 0..20 {
            assert_eq!(
                upstream.pick(&[]).unwrap().index,
                1,
                "instance 0 has a request in flight"
            );
        }
    }

    #[tokio::test]
    async fn no_healthy_instance_is_503_at_once_with_the_time_to_the_next_trial() {
        let time = ManualClock::starting_now();
        let upstream = Upstream::new("s", &settings(1, Balance::RoundRobin), Clock::from(&time));
        upstream.pick(&[]).unwrap().report(Outcome::Failure("5xx"));
        time.advance(Duration::from_secs(15));
        match upstream.pick(&[]) {
            Err(GatewayError::Unavailable {
                service,
                retry_after,
                why: Unavailability::BreakerOpen,
            }) => {
                assert_eq!(service, "s");
                assert_eq!(retry_after, Duration::from_secs(45), "a minute's back-off");
            }
            other => panic!("{other:?}"),
        }
        time.advance(Duration::from_secs(45));
        let trial = upstream.pick(&[]).unwrap();
        assert!(trial.trial, "the back-off is over on the service's clock");
    }

    #[tokio::test]
    async fn a_reload_keeps_the_connections_of_kept_instances_unless_the_connect_timeout_changed() {
        let mut services = BTreeMap::new();
        services.insert("a".to_owned(), settings(2, Balance::RoundRobin));
        let before = Upstreams::new(&services, Clock::System);
        let kept = Arc::clone(before.get("a").unwrap().pool(1).unwrap());

        // Instance 0 leaves, instance 1 stays: its pool moves to its new position.
        let a = services.get_mut("a").unwrap();
        a.upstreams.remove(0);
        let after = Upstreams::succeeding(&services, &before);
        let a = after.get("a").unwrap();
        assert!(Arc::ptr_eq(a.pool(0).unwrap(), &kept));
        assert!(a.pool(1).is_none());

        services.get_mut("a").unwrap().connect_timeout = Duration::from_secs(2);
        let slower = Upstreams::succeeding(&services, &after);
        let pool = slower.get("a").unwrap().pool(0).unwrap();
        assert!(
            !Arc::ptr_eq(pool, &kept),
            "new connections get the new timeout"
        );
        assert_eq!(pool.settings().connect_timeout, Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_reload_keeps_unchanged_services_and_the_state_of_kept_instances() {
        let mut services = BTreeMap::new();
        services.insert("a".to_owned(), settings(2, Balance::RoundRobin));
        services.insert("b".to_owned(), settings(1, Balance::RoundRobin));
        let before = Upstreams::new(&services, Clock::System);
        before
            .get("a")
            .unwrap()
            .pick(&[1])
            .unwrap()
            .report(Outcome::Failure("5xx"));

        services.get_mut("b").unwrap().timeout = Duration::from_secs(9);
        let after = Upstreams::succeeding(&services, &before);
        assert!(Arc::ptr_eq(
            before.get("a").unwrap(),
            after.get("a").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            before.get("b").unwrap(),
            after.get("b").unwrap()
        ));
        assert!(before.holds(before.get("b").unwrap()));
        assert!(!after.holds(before.get("b").unwrap()));

        services.get_mut("a").unwrap().balance = Balance::LeastRequests;
        let changed = Upstreams::succeeding(&services, &after);
        let a = changed.get("a").unwrap();
        assert!(!Arc::ptr_eq(after.get("a").unwrap(), a));
        assert!(
            a.instances()[0].is_ejected(),
            "the instance keeps its ejection"
        );
    }
}
