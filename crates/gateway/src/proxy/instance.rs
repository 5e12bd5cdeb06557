//! One instance of a service and what the proxy knows about it: the requests in flight (for
//! `least_requests`), the passive breaker (failures in a row eject it for a back-off, then one
//! trial request decides), and the verdict of the active health checks.
//!
//! Everything is atomics: an instance is consulted on every request, and a lock there would
//! serialise the whole proxy. Races only blur counts by a request or two, never the outcome.
//!
//! Nothing here reads a clock: every function takes the time it means (ms on the service's
//! [`Clock`]'s monotonic reading), so the breaker's tests cross a back-off to the millisecond.
//! Only [`InFlight`], which reports an attempt long after it was picked, holds the clock itself.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;

use crate::clock::Clock;
use crate::config::BreakerSettings;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 4)
}

/// What an attempt on an instance says about the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered below 500.
    Success,
    /// It failed: a 5xx, no connection, no answer in time, or a broken answer.
    Failure(&'static str),
    /// Nothing about the instance (the client's body failed, or the request was abandoned).
    Neutral,
}

/// May a request go to the instance now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// Its back-off is over: one trial request may go.
    TrialDue,
    /// Ejected or failing its health checks; `retry_in` when the back-off is known.
    Unavailable {
        retry_in: Option<Duration>,
    },
}

/// One instance (`host:port`) of a service. Kept across reloads while the service still lists it,
/// so its health survives a change of routes.
#[derive(Debug)]
pub struct Instance {
    pub authority: Authority,
    /// `host[:port]` of `authority`, shared: what metrics and the access log name the instance
    /// by. Never its user info, which may hold a password.
    pub name: Arc<str>,
    in_flight: AtomicUsize,
    /// Failures in a row since the last success.
    failures: AtomicU32,
    /// While ejected, when the back-off ends (ms, [`Clock::monotonic_ms`]); 0 when it is not ejected.
    ejected_until: AtomicU64,
    /// Ejections in a row: each doubles the back-off.
    ejections: AtomicU32,
    /// When the instance last came back from an ejection (ms); in rotation long enough since
    /// (`breaker.decay`), the doubling starts over.
    rejoined_at: AtomicU64,
    /// The back-off of the last ejection (ms): how long it must stay in rotation to be forgiven
    /// when `breaker.decay` is not set.
    last_backoff: AtomicU64,
    /// While a trial request runs, until when it holds the instance (ms); 0 when none runs.
    /// The hold expires by itself, so a trial that is never reported cannot lock it out.
    trial_until: AtomicU64,
    /// The active health checks' verdict; true until they say otherwise.
    healthy: AtomicBool,
    /// Health checks passed (positive) or failed (negative) in a row.
    streak: AtomicI32,
    /// When the health checks' verdict last changed (ms), or the instance was first listed.
    health_since: AtomicU64,
    /// When the instance was first listed (ms): its breaker has been closed since, until the
    /// first ejection.
    listed_at: u64,
}

/// The passive breaker's state, in the words operators know from other proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// In rotation.
    Closed,
    /// Ejected, its back-off running.
    Open,
    /// The back-off is over: a trial request decides (or is deciding) whether it is back.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

impl Instance {
    /// The instance at `authority`, first listed at `now` (ms).
    pub fn new(authority: Authority, now: u64) -> Self {
        Self {
            name: Arc::from(match authority.port() {
                Some(port) => format!("{}:{port}", authority.host()),
                None => authority.host().to_owned(),
            }),
            authority,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            rejoined_at: AtomicU64::new(0),
            last_backoff: AtomicU64::new(0),
            trial_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            streak: AtomicI32::new(0),
            health_since: AtomicU64::new(now),
            listed_at: now,
        }
    }

    /// The breaker's state at `now` (ms) and since when (ms, the same clock). Read off the
    /// request path (the status page): the times come from what the breaker keeps anyway.
    pub fn breaker(&self, now: u64) -> (BreakerState, u64) {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            let rejoined = self.rejoined_at.load(Ordering::Relaxed);
            let since = if rejoined == 0 {
                self.listed_at
            } else {
                rejoined
            };
            return (BreakerState::Closed, since);
        }
        if now < until {
            let opened = until.saturating_sub(self.last_backoff.load(Ordering::Relaxed));
            (BreakerState::Open, opened)
        } else {
            (BreakerState::HalfOpen, until)
        }
    }

    /// When the breaker opened (ms), while it is open or half-open.
    pub fn ejected_since(&self) -> Option<u64> {
        let until = self.ejected_until.load(Ordering::Acquire);
        (until != 0).then(|| until.saturating_sub(self.last_backoff.load(Ordering::Relaxed)))
    }

    /// When the health checks' verdict last changed (ms), or the instance was first listed.
    pub fn health_since(&self) -> u64 {
        self.health_since.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn availability(&self, now: u64) -> Availability {
        if !self.healthy.load(Ordering::Acquire) {
            return Availability::Unavailable { retry_in: None };
        }
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return Availability::Ready;
        }
        if now < until {
            return Availability::Unavailable {
                retry_in: Some(Duration::from_millis(until - now)),
            };
        }
        if self.trial_until.load(Ordering::Acquire) > now {
            return Availability::Unavailable {
                retry_in: Some(Duration::from_secs(1)),
            };
        }
        Availability::TrialDue
    }

    /// Healthy and not ejected, or due a trial: what readiness counts.
    pub fn is_available(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Acquire) && {
            let until = self.ejected_until.load(Ordering::Acquire);
            until == 0 || now >= until
        }
    }

    /// Whether its active health checks pass (always, without checks).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Acquire) != 0
    }

    /// Takes the trial slot for `hold`; false when another request took it first.
    pub fn start_trial(&self, now: u64, hold: Duration) -> bool {
        let current = self.trial_until.load(Ordering::Acquire);
        current <= now
            && self
                .trial_until
                .compare_exchange(
                    current,
                    now + millis(hold),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Whether a trial is running: its outcome decides whether the instance is back.
    pub fn trial_running(&self, now: u64) -> bool {
        self.is_ejected() && self.trial_until.load(Ordering::Acquire) > now
    }

    fn end_trial(&self) {
        self.trial_until.store(0, Ordering::Release);
    }

    /// Counts `outcome` for the breaker at the time `now` reads (the service's clock in the
    /// proxy, the instant a test means in its tests); `trial` when the attempt was the
    /// instance's trial. `now` is read only when the outcome moves the breaker, so a plain
    /// success costs no clock read.
    pub fn record(
        &self,
        now: impl Fn() -> u64,
        outcome: Outcome,
        trial: bool,
        breaker: &BreakerSettings,
        service: &str,
    ) {
        match outcome {
            Outcome::Success => {
                self.failures.store(0, Ordering::Relaxed);
                if trial {
                    self.ejected_until.store(0, Ordering::Release);
                    self.rejoined_at.store(now(), Ordering::Relaxed);
                    self.end_trial();
                    tracing::info!(service, instance = %self.authority, "instance passed its trial request; back in rotation");
                }
            }
            Outcome::Failure(reason) => {
                let until = self.ejected_until.load(Ordering::Acquire);
                if trial {
                    self.eject(now(), until, breaker, service, reason);
                    self.end_trial();
                } else if until == 0 {
                    let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                    if failures >= breaker.failures {
                        self.eject(now(), 0, breaker, service, reason);
                    }
                }
                // Already ejected and not the trial: a straggler sent before; its back-off runs.
            }
            Outcome::Neutral => {
                if trial {
                    self.end_trial();
                }
            }
        }
    }

    /// Ejects the instance unless another failure did it first (`expected` no longer holds).
    ///
    /// The back-off doubles with each ejection in a row, as Envoy's outlier detection does, and
    /// decays as Envoy's does too: an instance that served in rotation for `breaker.decay` (by
    /// default as long as its last back-off) since it came back is ejected for `backoff` again.
    /// Without the decay an instance that had a few unrelated incidents over a day would sit
    /// out minutes after a blip. A failed trial (`expected` is its ejection) never decays: the
    /// instance has not been back.
    fn eject(
        &self,
        now: u64,
        expected: u64,
        breaker: &BreakerSettings,
        service: &str,
        reason: &str,
    ) {
        let mut in_a_row = self.ejections.load(Ordering::Relaxed);
        if expected == 0 && in_a_row > 0 {
            let rejoined = self.rejoined_at.load(Ordering::Relaxed);
            let forgiven_after = breaker
                .decay
                .map_or_else(|| self.last_backoff.load(Ordering::Relaxed), millis);
            if rejoined != 0 && now.saturating_sub(rejoined) >= forgiven_after {
                in_a_row = 0;
            }
        }
        let backoff = breaker
            .backoff
            .saturating_mul(1 << in_a_row.min(16))
            .min(breaker.max_backoff);
        if self
            .ejected_until
            .compare_exchange(
                expected,
                now + millis(backoff),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.ejections.store(in_a_row + 1, Ordering::Relaxed);
            self.last_backoff.store(millis(backoff), Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(
                service,
                instance = %self.authority,
                reason,
                backoff_ms = millis(backoff),
                "instance ejected after failing requests"
            );
        }
    }

    /// In rotation by the health checks, but its last check failed: not yet out, perhaps soon.
    pub fn failing_checks(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && self.streak.load(Ordering::Acquire) < 0
    }

    /// Counts an active health check ending at `now` (ms); returns the new verdict when it
    /// changed.
    pub fn record_check(
        &self,
        now: u64,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        let streak = if passed {
            self.streak
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    Some(s.max(0).saturating_add(1))
                })
                .map_or(1, |s| s.max(0).saturating_add(1))
        } else {
            self.streak
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    Some(s.min(0).saturating_sub(1))
                })
                .map_or(-1, |s| s.min(0).saturating_sub(1))
        };
        let healthy = self.healthy.load(Ordering::Acquire);
        let threshold = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        if !healthy && streak >= threshold(healthy_after) {
            // A passing health check also ends a passive ejection: the instance is back.
            if self.ejected_until.load(Ordering::Acquire) != 0 {
                self.rejoined_at.store(now, Ordering::Relaxed);
            }
            self.health_since.store(now, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Release);
            self.failures.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
            self.end_trial();
            self.healthy.store(true, Ordering::Release);
            Some(true)
        } else if healthy && -streak >= threshold(unhealthy_after) {
            self.health_since.store(now, Ordering::Relaxed);
            self.healthy.store(false, Ordering::Release);
            Some(false)
        } else {
            None
        }
    }
}

/// A request in flight on an instance; counted until dropped (with the response body, so a
/// streaming answer still counts for `least_requests`).
#[derive(Debug)]
pub struct InFlight {
    pub instance: Arc<Instance>,
    breaker: BreakerSettings,
    service: Arc<str>,
    /// The service's clock: the outcome is recorded when it is known, after the attempt (or
    /// mid-body, for a break-off), not when the instance was picked.
    clock: Clock,
}

impl InFlight {
    pub fn start(
        instance: Arc<Instance>,
        breaker: BreakerSettings,
        service: Arc<str>,
        clock: Clock,
    ) -> Self {
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            instance,
            breaker,
            service,
            clock,
        }
    }

    /// Counts `outcome` for the instance, at the clock's time now.
    fn record(&self, outcome: Outcome, trial: bool) {
        self.instance.record(
            || self.clock.monotonic_ms(),
            outcome,
            trial,
            &self.breaker,
            &self.service,
        );
    }

    /// Counts a failure seen after the answer began (the body broke off).
    pub fn broke_off(&self) {
        self.record(Outcome::Failure("answer broke off"), false);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An instance chosen for one attempt. Its outcome must be [`Pick::report`]ed; dropped without,
/// it counts as neutral (the request was abandoned).
#[derive(Debug)]
pub struct Pick {
    pub index: usize,
    pub trial: bool,
    flight: Option<InFlight>,
}

impl Pick {
    pub fn new(index: usize, trial: bool, flight: InFlight) -> Self {
        Self {
            index,
            trial,
            flight: Some(flight),
        }
    }

    pub fn instance(&self) -> Option<&Arc<Instance>> {
        self.flight.as_ref().map(|flight| &flight.instance)
    }

    /// Stops counting the request here; a trial keeps its slot until its outcome is recorded by
    /// whoever makes the call (or the slot expires).
    pub fn detach(mut self) {
        self.flight.take();
    }

    /// Records `outcome`; the returned guard keeps the request counted while its body streams.
    pub fn report(mut self, outcome: Outcome) -> Option<InFlight> {
        let flight = self.flight.take()?;
        flight.record(outcome, self.trial);
        Some(flight)
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if let Some(flight) = &self.flight {
            if self.trial {
                flight.instance.end_trial();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BREAKER: BreakerSettings = BreakerSettings {
        failures: 3,
        backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(60),
        decay: None,
    };

    /// The monotonic time the tests pass in (ms): it moves only when a test moves it, so a
    /// back-off is crossed exactly and at once instead of slept through.
    struct Timeline(std::cell::Cell<u64>);

    impl Timeline {
        fn start() -> Self {
            Self(std::cell::Cell::new(1))
        }

        fn now(&self) -> u64 {
            self.0.get()
        }

        fn pass(&self, by: Duration) {
            self.0.set(self.0.get() + millis(by));
        }
    }

    /// Out of rotation, a trial due in `backoff`.
    fn ejected_for(backoff: Duration) -> Availability {
        Availability::Unavailable {
            retry_in: Some(backoff),
        }
    }

    fn record(
        instance: &Instance,
        at: &Timeline,
        outcome: Outcome,
        trial: bool,
        breaker: &BreakerSettings,
    ) {
        instance.record(|| at.now(), outcome, trial, breaker, "s");
    }

    #[test]
    fn an_instance_is_named_without_the_user_info_of_its_address() {
        let instance = Instance::new(Authority::from_static("user:s3cret@10.0.0.1:8080"), 1);
        assert_eq!(&*instance.name, "10.0.0.1:8080");
        let bare = Instance::new(Authority::from_static("users.internal"), 1);
        assert_eq!(&*bare.name, "users.internal");
    }

    /// An instance listed when a [`Timeline`] starts.
    fn instance() -> Instance {
        Instance::new(
            Authority::from_static("127.0.0.1:1"),
            Timeline::start().now(),
        )
    }

    #[test]
    fn the_breaker_reads_open_then_half_open_then_closed_each_since_its_change() {
        let (instance, at) = (instance(), Timeline::start());
        assert_eq!(instance.breaker(at.now()).0, BreakerState::Closed);
        at.pass(Duration::from_millis(10));
        for _ in 0..3 {
            record(&instance, &at, Outcome::Failure("x"), false, &BREAKER);
        }
        assert_eq!(instance.breaker(at.now()), (BreakerState::Open, 11));
        assert_eq!(instance.ejected_since(), Some(11));
        at.pass(Duration::from_millis(199));
        assert_eq!(instance.breaker(at.now()), (BreakerState::Open, 11));
        at.pass(Duration::from_millis(1));
        assert_eq!(
            instance.breaker(at.now()),
            (BreakerState::HalfOpen, 211),
            "the back-off ended at 211"
        );
        at.pass(Duration::from_millis(5));
        assert!(instance.start_trial(at.now(), Duration::from_secs(1)));
        record(&instance, &at, Outcome::Success, true, &BREAKER);
        assert_eq!(instance.breaker(at.now()), (BreakerState::Closed, 216));
        assert_eq!(instance.ejected_since(), None);
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_between_them_resets_the_count() {
        let (instance, at) = (instance(), Timeline::start());
        let failure = Outcome::Failure("5xx");
        record(&instance, &at, failure, false, &BREAKER);
        record(&instance, &at, failure, false, &BREAKER);
        record(&instance, &at, Outcome::Success, false, &BREAKER);
        record(&instance, &at, failure, false, &BREAKER);
        record(&instance, &at, failure, false, &BREAKER);
        assert_eq!(instance.availability(at.now()), Availability::Ready);
        record(&instance, &at, failure, false, &BREAKER);
        assert_eq!(
            instance.availability(at.now()),
            ejected_for(BREAKER.backoff)
        );
    }

    #[test]
    fn an_attempt_is_recorded_at_the_time_of_the_clock_it_was_started_with() {
        let time = crate::clock::ManualClock::starting_now();
        let clock = Clock::from(&time);
        let instance = Arc::new(instance());
        let attempt = |outcome| {
            let flight = InFlight::start(Arc::clone(&instance), QUICK, "s".into(), clock.clone());
            Pick::new(0, false, flight).report(outcome);
        };
        time.advance(Duration::from_secs(30));
        attempt(Outcome::Failure("connect"));
        assert_eq!(
            instance.availability(clock.monotonic_ms()),
            ejected_for(QUICK.backoff),
            "ejected at the clock's time, not the process's"
        );
        time.advance(QUICK.backoff);
        assert_eq!(
            instance.availability(clock.monotonic_ms()),
            Availability::TrialDue
        );
    }

    #[test]
    fn after_the_backoff_one_trial_decides() {
        let (instance, at) = (instance(), Timeline::start());
        for _ in 0..3 {
            record(&instance, &at, Outcome::Failure("connect"), false, &BREAKER);
        }
        at.pass(BREAKER.backoff - Duration::from_millis(1));
        assert_eq!(
            instance.availability(at.now()),
            ejected_for(Duration::from_millis(1)),
            "not a millisecond early"
        );
        at.pass(Duration::from_millis(1));
        assert_eq!(instance.availability(at.now()), Availability::TrialDue);
        assert!(instance.start_trial(at.now(), Duration::from_secs(5)));
        assert!(
            !instance.start_trial(at.now(), Duration::from_secs(5)),
            "one trial at a time"
        );
        assert!(matches!(
            instance.availability(at.now()),
            Availability::Unavailable { .. }
        ));

        // A failed trial ejects again, for twice as long.
        record(&instance, &at, Outcome::Failure("connect"), true, &BREAKER);
        assert_eq!(
            instance.availability(at.now()),
            ejected_for(BREAKER.backoff * 2),
            "the back-off doubled"
        );
        at.pass(BREAKER.backoff * 2);
        assert_eq!(instance.availability(at.now()), Availability::TrialDue);
        assert!(instance.start_trial(at.now(), Duration::from_secs(5)));
        record(&instance, &at, Outcome::Success, true, &BREAKER);
        assert_eq!(instance.availability(at.now()), Availability::Ready);
    }

    #[test]
    fn a_trial_never_reported_frees_the_slot_when_its_hold_ends() {
        let (instance, at) = (instance(), Timeline::start());
        for _ in 0..3 {
            record(&instance, &at, Outcome::Failure("timeout"), false, &BREAKER);
        }
        at.pass(BREAKER.backoff);
        assert!(instance.start_trial(at.now(), Duration::from_secs(5)));
        at.pass(Duration::from_secs(5) - Duration::from_millis(1));
        assert!(instance.trial_running(at.now()));
        at.pass(Duration::from_millis(1));
        assert!(!instance.trial_running(at.now()));
        assert_eq!(instance.availability(at.now()), Availability::TrialDue);
    }

    #[test]
    fn an_abandoned_trial_frees_the_slot() {
        let (instance, at) = (Arc::new(instance()), Timeline::start());
        for _ in 0..3 {
            record(&instance, &at, Outcome::Failure("timeout"), false, &BREAKER);
        }
        at.pass(BREAKER.backoff);
        assert!(instance.start_trial(at.now(), Duration::from_secs(5)));
        let pick = Pick::new(
            0,
            true,
            InFlight::start(Arc::clone(&instance), BREAKER, "s".into(), Clock::System),
        );
        assert_eq!(instance.in_flight(), 1);
        drop(pick);
        assert_eq!(instance.in_flight(), 0);
        assert_eq!(instance.availability(at.now()), Availability::TrialDue);
    }

    const QUICK: BreakerSettings = BreakerSettings {
        failures: 1,
        backoff: Duration::from_millis(40),
        max_backoff: Duration::from_secs(60),
        decay: None,
    };

    /// Fails once with `breaker` (ejecting a ready instance) and returns the back-off it got.
    fn incident(instance: &Instance, at: &Timeline, breaker: &BreakerSettings) -> Duration {
        record(instance, at, Outcome::Failure("5xx"), false, breaker);
        match instance.availability(at.now()) {
            Availability::Unavailable {
                retry_in: Some(retry_in),
            } => retry_in,
            other => panic!("ejected: {other:?}"),
        }
    }

    /// Waits out the back-off and lets the trial succeed: the instance is back in rotation.
    fn rejoin(instance: &Instance, at: &Timeline, breaker: &BreakerSettings, backoff: Duration) {
        at.pass(backoff);
        assert!(instance.start_trial(at.now(), Duration::from_secs(5)));
        record(instance, at, Outcome::Success, true, breaker);
        assert_eq!(instance.availability(at.now()), Availability::Ready);
    }

    #[test]
    fn incidents_separated_by_healthy_periods_are_each_ejected_for_the_base_backoff() {
        let (instance, at) = (instance(), Timeline::start());
        for round in 1..=5 {
            let backoff = incident(&instance, &at, &QUICK);
            assert_eq!(backoff, QUICK.backoff, "incident {round}");
            rejoin(&instance, &at, &QUICK, backoff);
            // In rotation for as long as the last back-off: forgiven.
            at.pass(QUICK.backoff);
        }
    }

    #[test]
    fn incidents_close_together_still_double() {
        let (instance, at) = (instance(), Timeline::start());
        let first = incident(&instance, &at, &QUICK);
        rejoin(&instance, &at, &QUICK, first);
        // In rotation a millisecond short of the last back-off: not yet forgiven.
        at.pass(QUICK.backoff - Duration::from_millis(1));
        let second = incident(&instance, &at, &QUICK);
        assert_eq!(second, QUICK.backoff * 2, "doubled");
        rejoin(&instance, &at, &QUICK, second);
        let third = incident(&instance, &at, &QUICK);
        assert_eq!(third, QUICK.backoff * 4, "doubled again");
    }

    #[test]
    fn the_backoff_doubles_up_to_its_maximum() {
        let capped = BreakerSettings {
            max_backoff: Duration::from_millis(100),
            ..QUICK
        };
        let (instance, at) = (instance(), Timeline::start());
        let mut backoffs = Vec::new();
        for _ in 0..4 {
            let backoff = incident(&instance, &at, &capped);
            backoffs.push(backoff);
            rejoin(&instance, &at, &capped, backoff);
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(backoffs, [ms(40), ms(80), ms(100), ms(100)]);
    }

    #[test]
    fn a_configured_decay_decides_how_long_the_instance_must_stay_in_rotation() {
        let patient = BreakerSettings {
            decay: Some(Duration::from_secs(60)),
            ..QUICK
        };
        let (instance, at) = (instance(), Timeline::start());
        let first = incident(&instance, &at, &patient);
        rejoin(&instance, &at, &patient, first);
        at.pass(Duration::from_secs(60) - Duration::from_millis(1));
        assert_eq!(
            incident(&instance, &at, &patient),
            QUICK.backoff * 2,
            "not in rotation for a minute yet: still doubles"
        );
        rejoin(&instance, &at, &patient, QUICK.backoff * 2);
        at.pass(Duration::from_secs(60));
        assert_eq!(
            incident(&instance, &at, &patient),
            QUICK.backoff,
            "a minute in rotation: forgiven"
        );
    }

    #[test]
    fn failed_trials_keep_doubling_however_long_ago_the_instance_was_last_back() {
        let forgiving = BreakerSettings {
            decay: Some(Duration::from_millis(1)),
            ..QUICK
        };
        let (instance, at) = (instance(), Timeline::start());
        let first = incident(&instance, &at, &forgiving);
        rejoin(&instance, &at, &forgiving, first);
        at.pass(Duration::from_millis(1));
        let backoff = incident(&instance, &at, &forgiving);
        assert_eq!(backoff, QUICK.backoff, "forgiven");

        // A long outage: the trials fail; the back-off grows, as it has not been back since.
        at.pass(backoff);
        assert!(instance.start_trial(at.now(), Duration::from_secs(5)));
        record(&instance, &at, Outcome::Failure("5xx"), true, &forgiving);
        assert_eq!(
            instance.availability(at.now()),
            ejected_for(QUICK.backoff * 2),
            "doubled"
        );
    }

    #[test]
    fn health_checks_take_an_instance_out_and_bring_it_back_each_since_its_verdict() {
        let (instance, at) = (instance(), Timeline::start());
        let check = |passed| instance.record_check(at.now(), passed, 2, 2);
        assert_eq!(check(false), None);
        at.pass(Duration::from_millis(100));
        assert_eq!(check(false), Some(false));
        assert!(matches!(
            instance.availability(at.now()),
            Availability::Unavailable { retry_in: None }
        ));
        assert_eq!(instance.health_since(), 101, "out since the second failure");
        at.pass(Duration::from_millis(100));
        assert_eq!(check(true), None);
        assert_eq!(check(false), None, "the streak starts over");
        assert_eq!(check(true), None);
        at.pass(Duration::from_millis(100));
        assert_eq!(check(true), Some(true));
        assert_eq!(instance.availability(at.now()), Availability::Ready);
        assert_eq!(instance.health_since(), 301, "back since the second pass");
    }
}
