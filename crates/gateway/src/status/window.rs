//! The live window of one route: what its last minute looked like (requests, errors, refusals,
//! latency), fed by the observe phase and read by `/status.json`.
//!
//! It sits on the request path, so recording is a handful of relaxed atomic additions into a
//! ring of 5-second slots owned by the route alone: no lock, no allocation (the ring is
//! allocated on the route's first request, so a table of ten thousand routes that are never
//! called costs ten thousand empty cells), no cache line shared with another route. A slot
//! that the ring comes round to again is claimed by one compare-and-swap of its epoch and
//! cleared; a request recorded by another core in that instant may be lost or land in the
//! cleared slot. Those races blur a count by a request or two, never more: this is a view for
//! people, and `/metrics` keeps the exact counters.
//!
//! Latency goes into a fixed histogram (20 buckets from 250 µs to 10 s); p50 and p99 are
//! interpolated within their bucket, so they are as exact as the buckets are fine: within a
//! third of the value above 1 ms, which is what a glance at a status page needs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The length of one slot (ms): the step of the sparkline.
pub const SLOT_MS: u64 = 5_000;
/// Slots in the window ("the last minute"), besides the one filling now.
pub const WINDOW_SLOTS: u64 = 12;
/// The ring holds the window, the slot filling now, and slack so the oldest slot of the window
/// is never the one being cleared for the next (a power of two: the index is a mask).
const RING: usize = 16;
/// The epoch of a slot that holds no period yet: no reader ever asks for it.
const EMPTY: u64 = u64::MAX;

/// Upper bounds of the latency buckets (µs); one more bucket holds everything slower.
const LATENCY_BOUNDS_US: [u64; 19] = [
    250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 25_000, 50_000, 75_000, 100_000,
    250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// How an answer counts in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Anything below 500 that the gateway did not refuse itself (a service's own 404 included).
    Answered,
    /// A 5xx, from the service or from the gateway (no instance, timeout, bad answer).
    ServerError,
    /// A 4xx the gateway made itself: no token, forbidden, over a rate limit, too large…
    Refused,
    /// The client went away before the answer: counted as a request, neither error nor refusal.
    Abandoned,
}

impl Verdict {
    /// The verdict on an answer with `status` and the reason the gateway gave for making it
    /// itself (None for an answer a service made and the gateway passed on, even where the
    /// metrics name it by its status's meaning).
    pub fn of(status: u16, reason: Option<&str>) -> Self {
        match (status, reason) {
            (500.., _) => Self::ServerError,
            (_, Some("client_closed")) => Self::Abandoned,
            (400..=499, Some(_)) => Self::Refused,
            _ => Self::Answered,
        }
    }
}

/// One route's ring of slots, allocated on its first request.
#[derive(Debug, Default)]
pub struct RouteWindow {
    ring: OnceLock<Box<Ring>>,
}

#[derive(Debug)]
struct Ring {
    /// When the ring was allocated (ms, the reader's clock): before a minute has passed, rates
    /// are over the time the route has been counted, not diluted over a minute it did not exist.
    started_ms: u64,
    slots: [Slot; RING],
}

#[derive(Debug, Default)]
struct Slot {
    /// Which 5-second period (ms / SLOT_MS) the counts are of; a slot whose epoch is not the
    /// one a reader asks for holds nothing of that period.
    epoch: AtomicU64,
    requests: AtomicU32,
    server_errors: AtomicU32,
    refused: AtomicU32,
    latency: [AtomicU32; LATENCY_BUCKETS],
}

impl Slot {
    fn clear(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.server_errors.store(0, Ordering::Relaxed);
        self.refused.store(0, Ordering::Relaxed);
        for bucket in &self.latency {
            bucket.store(0, Ordering::Relaxed);
        }
    }
}

fn bucket_of(duration: Duration) -> usize {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    LATENCY_BOUNDS_US.partition_point(|&bound| bound < micros)
}

impl RouteWindow {
    /// Counts one answer, finished at `now_ms` (the monotonic clock the reader also uses) after
    /// `duration`.
    pub fn record(&self, now_ms: u64, duration: Duration, verdict: Verdict) {
        let ring = self.ring.get_or_init(|| Box::new(Ring::new(now_ms)));
        let epoch = now_ms / SLOT_MS;
        let slot = &ring.slots[slot_index(epoch)];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch {
            // The ring came round: one recorder claims the slot and clears it. A request whose
            // clock read an instant earlier than the claimer's (seen > epoch) adds to the newer
            // period: a blur of one request.
            if (seen < epoch || seen == EMPTY)
                && slot
                    .epoch
                    .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                slot.clear();
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        match verdict {
            Verdict::ServerError => {
                slot.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Refused => {
                slot.refused.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Answered | Verdict::Abandoned => {}
        }
        slot.latency[bucket_of(duration)].fetch_add(1, Ordering::Relaxed);
    }

    /// The last minute as of `now_ms`: the twelve finished slots and the one filling now.
    pub fn summary(&self, now_ms: u64) -> Summary {
        let mut summary = Summary::default();
        let Some(ring) = self.ring.get() else {
            return summary;
        };
        let current = now_ms / SLOT_MS;
        let mut latency = [0u64; LATENCY_BUCKETS];
        for epoch in current.saturating_sub(WINDOW_SLOTS)..=current {
            let slot = &ring.slots[slot_index(epoch)];
            let (requests, server_errors, refused) = if slot.epoch.load(Ordering::Acquire) == epoch
            {
                for (total, bucket) in latency.iter_mut().zip(&slot.latency) {
                    *total += u64::from(bucket.load(Ordering::Relaxed));
                }
                (
                    u64::from(slot.requests.load(Ordering::Relaxed)),
                    u64::from(slot.server_errors.load(Ordering::Relaxed)),
                    u64::from(slot.refused.load(Ordering::Relaxed)),
                )
            } else {
                (0, 0, 0)
            };
            summary.requests += requests;
            summary.server_errors += server_errors;
            summary.refused += refused;
            if epoch < current {
                summary.series.push(SeriesPoint {
                    requests,
                    errors: server_errors,
                });
            }
        }
        // The series always has WINDOW_SLOTS points, the oldest first (zeros before the
        // gateway's clock reached them).
        let missing = usize::try_from(WINDOW_SLOTS)
            .unwrap_or(0)
            .saturating_sub(summary.series.len());
        summary
            .series
            .splice(0..0, std::iter::repeat_n(SeriesPoint::default(), missing));

        // The time the window covers: a minute and the current slot's part so far, or less
        // when the route has not been counted that long (never under a second, so one early
        // request does not read as a thousand a second).
        let span_ms = WINDOW_SLOTS * SLOT_MS + (now_ms - current * SLOT_MS);
        let covered_ms = span_ms
            .min(now_ms.saturating_sub(ring.started_ms))
            .max(1_000);
        summary.seconds = covered_ms as f64 / 1_000.0;
        summary.p50 = quantile(&latency, 0.50);
        summary.p99 = quantile(&latency, 0.99);
        summary
    }
}

impl Ring {
    fn new(now_ms: u64) -> Self {
        let current = now_ms / SLOT_MS;
        let slots: [Slot; RING] = std::array::from_fn(|_| Slot::default());
        for slot in &slots {
            slot.epoch.store(EMPTY, Ordering::Relaxed);
        }
        slots[slot_index(current)]
            .epoch
            .store(current, Ordering::Relaxed);
        Self {
            started_ms: now_ms,
            slots,
        }
    }
}

fn slot_index(epoch: u64) -> usize {
    // RING is a power of two: the mask keeps the low bits, which fit any usize.
    usize::try_from(epoch & (RING as u64 - 1)).unwrap_or(0)
}

/// The `q` quantile of the counts in `buckets`, interpolated linearly within its bucket; None
/// with no requests. A quantile in the last, unbounded bucket reads as its lower bound.
fn quantile(buckets: &[u64; LATENCY_BUCKETS], q: f64) -> Option<Duration> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = if index == 0 {
                0
            } else {
                LATENCY_BOUNDS_US[index - 1]
            };
            let Some(&upper) = LATENCY_BOUNDS_US.get(index) else {
                return Some(Duration::from_micros(lower));
            };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            let micros = lower as f64 + within * (upper - lower) as f64;
            return Some(Duration::from_secs_f64(micros / 1_000_000.0));
        }
        below += count;
    }
    None
}

/// A route's last minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Answers in the window (every kind).
    pub requests: u64,
    /// Of which 5xx.
    pub server_errors: u64,
    /// Of which 4xx the gateway made itself.
    pub refused: u64,
    /// The seconds the counts are over (see [`RouteWindow::summary`]).
    pub seconds: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// One point per finished slot, the oldest first.
    pub series: Vec<SeriesPoint>,
}

/// One slot of the sparkline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesPoint {
    pub requests: u64,
    pub errors: u64,
}

impl Summary {
    /// Requests a second over the window.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Share of requests answered 5xx (0 with none).
    pub fn error_rate(&self) -> f64 {
        share(self.server_errors, self.requests)
    }

    /// Share of requests the gateway refused with a 4xx (0 with none).
    pub fn refusal_rate(&self) -> f64 {
        share(self.refused, self.requests)
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A time well past zero, at the start of a slot, so the tests' arithmetic reads plainly.
    const T0: u64 = 1_000 * SLOT_MS;

    fn ms(n: u64) -> Duration {
        MS * u32::try_from(n).unwrap()
    }

    #[test]
    fn an_unused_route_reads_as_nothing_and_allocates_nothing() {
        let window = RouteWindow::default();
        let summary = window.summary(T0);
        assert_eq!(summary.requests, 0);
        assert_eq!(summary.rate(), 0.0);
        assert_eq!(summary.error_rate(), 0.0);
        assert_eq!(summary.p50, None);
        assert!(summary.series.is_empty(), "no ring, no series");
        assert!(window.ring.get().is_none());
    }

    #[test]
    fn a_steady_minute_reads_as_its_rate_and_its_errors_and_refusals_apart() {
        let window = RouteWindow::default();
        // 10 requests a second for 60 s: each second 8 answered, 1 server error, 1 refused.
        for second in 0..60 {
            for i in 0..10 {
                let verdict = match i {
                    0 => Verdict::ServerError,
                    1 => Verdict::Refused,
                    _ => Verdict::Answered,
                };
                window.record(T0 + second * 1_000 + i * 10, ms(4), verdict);
            }
        }
        // At the first instant of the next slot: twelve full slots, nothing in the current one.
        let summary = window.summary(T0 + 60_000);
        assert_eq!(summary.requests, 600);
        assert_eq!(summary.server_errors, 60);
        assert_eq!(summary.refused, 60);
        assert!((summary.rate() - 10.0).abs() < 1e-9, "{}", summary.rate());
        assert!((summary.error_rate() - 0.1).abs() < 1e-9);
        assert!((summary.refusal_rate() - 0.1).abs() < 1e-9);
        assert_eq!(summary.series.len(), 12);
        assert!(summary.series.iter().all(|point| *point
            == SeriesPoint {
                requests: 50,
                errors: 5
            }));
    }

    #[test]
    fn requests_older_than_a_minute_fall_out_of_the_window() {
        let window = RouteWindow::default();
        for i in 0..100 {
            window.record(T0 + i, ms(1), Verdict::Answered);
        }
        window.record(T0 + 30_000, ms(1), Verdict::Answered);
        assert_eq!(window.summary(T0 + 64_999).requests, 101);
        // The first slot leaves the window once twelve newer slots have finished.
        let later = window.summary(T0 + 65_000);
        assert_eq!(later.requests, 1);
        assert_eq!(later.series.iter().map(|p| p.requests).sum::<u64>(), 1);
        // And a minute of silence empties it.
        assert_eq!(window.summary(T0 + 200_000).requests, 0);
    }

    #[test]
    fn a_slot_reused_by_the_ring_starts_from_zero() {
        let window = RouteWindow::default();
        window.record(T0, ms(1), Verdict::ServerError);
        // The same ring slot, 16 slots later.
        let again = T0 + 16 * SLOT_MS;
        window.record(again, ms(1), Verdict::Answered);
        let summary = window.summary(again);
        assert_eq!(summary.requests, 1);
        assert_eq!(summary.server_errors, 0, "the old period's error is gone");
    }

    #[test]
    fn a_route_counted_for_less_than_a_minute_is_rated_over_the_time_it_was_counted() {
        let window = RouteWindow::default();
        for i in 0..20 {
            window.record(T0 + i * 100, ms(1), Verdict::Answered);
        }
        // 20 requests in the 2 s since the first.
        let summary = window.summary(T0 + 2_000);
        assert!((summary.rate() - 10.0).abs() < 1e-9, "{}", summary.rate());
        // Never over less than a second.
        let early = RouteWindow::default();
        early.record(T0, ms(1), Verdict::Answered);
        assert!((early.summary(T0 + 1).rate() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn quantiles_come_from_the_latency_histogram() {
        let window = RouteWindow::default();
        // 98 fast answers (about 4 ms), 2 slow ones (about 800 ms).
        for i in 0..98 {
            window.record(T0 + i, ms(4), Verdict::Answered);
        }
        window.record(T0 + 200, ms(800), Verdict::Answered);
        window.record(T0 + 201, ms(800), Verdict::Answered);
        let summary = window.summary(T0 + 1_000);
        let p50 = summary.p50.unwrap();
        let p99 = summary.p99.unwrap();
        // 4 ms lies in the (3 ms, 5 ms] bucket; 800 ms in (500 ms, 1 s].
        assert!(p50 > ms(3) && p50 <= ms(5), "p50 {p50:?}");
        assert!(p99 > ms(500) && p99 <= ms(1_000), "p99 {p99:?}");
    }

    #[test]
    fn a_quantile_in_the_unbounded_bucket_reads_as_its_lower_bound() {
        let window = RouteWindow::default();
        window.record(T0, Duration::from_secs(45), Verdict::ServerError);
        let summary = window.summary(T0 + 1_000);
        assert_eq!(summary.p99, Some(Duration::from_secs(10)));
    }

    #[test]
    fn verdicts_separate_server_errors_from_the_gateways_refusals() {
        assert_eq!(Verdict::of(200, None), Verdict::Answered);
        assert_eq!(
            Verdict::of(404, None),
            Verdict::Answered,
            "the service's own 404"
        );
        assert_eq!(Verdict::of(401, Some("token_missing")), Verdict::Refused);
        assert_eq!(Verdict::of(429, Some("quota_exceeded")), Verdict::Refused);
        assert_eq!(Verdict::of(499, Some("client_closed")), Verdict::Abandoned);
        assert_eq!(
            Verdict::of(503, Some("no_healthy_instance")),
            Verdict::ServerError
        );
        assert_eq!(
            Verdict::of(500, None),
            Verdict::ServerError,
            "the service's own 500"
        );
    }

    #[test]
    fn recording_from_many_threads_loses_nothing_within_one_slot() {
        let window = std::sync::Arc::new(RouteWindow::default());
        window.record(T0, ms(1), Verdict::Answered);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let window = std::sync::Arc::clone(&window);
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        window.record(T0 + 1 + i % 4_000, ms(2), Verdict::Answered);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(window.summary(T0 + 4_999).requests, 4_001);
    }
}
