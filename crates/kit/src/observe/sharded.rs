//! The series recorded on every request, kept per serving worker ([`crate::workers`]) and summed
//! when scraped.
//!
//! prometheus-client's counter is one atomic and its histogram one mutex: every request on every
//! worker wrote the same cache lines, so each write waited for the line to come over from the
//! other core (and a histogram's mutex, contended, could put a worker to sleep). Here each worker
//! writes a shard of its own, on cache lines no other worker writes; threads off the workers
//! share one more shard. A scrape adds the shards up, so the exposition is the same text as
//! prometheus-client's own types give.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// One writer's part, alone on its cache lines (128 bytes: adjacent lines are fetched in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard<T>(T);

/// The most shards a series has for the workers: on a machine with more cores, workers share
/// shards (`worker % MAX_WORKER_SHARDS`), so a series stays a few KiB however many cores there
/// are (a route's histogram is 9 × 256 bytes at most), at the price of some sharing there.
const MAX_WORKER_SHARDS: usize = 8;

/// One shard per serving worker (up to [`MAX_WORKER_SHARDS`]), and one for every other thread.
fn shards<T: Default>() -> Box<[Shard<T>]> {
    (0..crate::workers::count().clamp(1, MAX_WORKER_SHARDS) + 1)
        .map(|_| Shard::default())
        .collect()
}

/// A counter (prometheus-client's `Counter` API, as far as the servers use it).
#[derive(Clone, Debug)]
pub struct Counter {
    shards: Arc<[Shard<AtomicU64>]>,
}

impl Default for Counter {
    fn default() -> Self {
        Self {
            shards: shards().into(),
        }
    }
}

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, by: u64) {
        let shard = &self.shards[crate::workers::slot(self.shards.len())];
        shard.0.fetch_add(by, Ordering::Relaxed);
    }

    /// The count, all shards added.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The most buckets a [`Histogram`] has, `+Inf` included: a shard's are inline, so that they
/// share no cache line with another shard's.
const MAX_BUCKETS: usize = 24;

/// A histogram with fixed buckets (prometheus-client's classic `Histogram`, as far as the
/// servers use it). Its count is the sum of its buckets, so a scrape never sees the two disagree;
/// the sum can miss an observation being made while it is read.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// The finite upper bounds, ascending, then `+Inf`.
    bounds: Box<[f64]>,
    shards: Box<[Shard<Observations>]>,
}

#[derive(Debug, Default)]
struct Observations {
    /// An `f64`'s bits.
    sum: AtomicU64,
    /// Observations by the first bucket whose bound holds them (not cumulative).
    buckets: [AtomicU64; MAX_BUCKETS],
}

impl Histogram {
    /// Buckets up to each of `bounds` (ascending; those that are not finite are left out) and
    /// `+Inf`.
    ///
    /// # Panics
    /// With more than [`MAX_BUCKETS`] − 1 finite bounds: the buckets are the code's constants,
    /// and silently dropping some would change the series.
    pub fn new(bounds: &[f64]) -> Self {
        let bounds: Box<[f64]> = bounds
            .iter()
            .copied()
            .filter(|bound| bound.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        assert!(
            bounds.len() <= MAX_BUCKETS,
            "a histogram has at most {} bounds",
            MAX_BUCKETS - 1
        );
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                shards: shards(),
            }),
        }
    }

    pub fn observe(&self, value: f64) {
        let inner = &*self.inner;
        let shard = &inner.shards[crate::workers::slot(inner.shards.len())].0;
        // NaN is held by no bound: it goes to `+Inf`, as prometheus-client puts it.
        let last = inner.bounds.len() - 1;
        let bucket = inner
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(last);
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // Uncontended on a worker (its shard is its own): the first exchange succeeds.
        let mut seen = shard.sum.load(Ordering::Relaxed);
        loop {
            let sum = (f64::from_bits(seen) + value).to_bits();
            match shard
                .sum
                .compare_exchange_weak(seen, sum, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
    }

    /// The sum, the count and each bucket's own count (not cumulative), all shards added.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let mut buckets: Vec<(f64, u64)> = inner.bounds.iter().map(|&bound| (bound, 0)).collect();
        let mut sum = 0.0;
        for shard in inner.shards.iter() {
            sum += f64::from_bits(shard.0.sum.load(Ordering::Relaxed));
            for (bucket, observed) in buckets.iter_mut().zip(shard.0.buckets.iter()) {
                bucket.1 = bucket.1.wrapping_add(observed.load(Ordering::Relaxed));
            }
        }
        let count = buckets
            .iter()
            .map(|bucket| bucket.1)
            .fold(0, u64::wrapping_add);
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    const BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];

    /// The text a registry holding `metric` (as `name`) gives, and prometheus-client's own type
    /// fed the same values.
    fn exposition(
        name: &str,
        metric: impl EncodeMetric + Send + Sync + std::fmt::Debug + 'static,
    ) -> String {
        let mut registry = Registry::default();
        registry.register(name, "help", metric);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn a_histogram_writes_what_prometheus_clients_own_writes_for_the_same_values() {
        let ours = Histogram::new(&BOUNDS);
        let theirs = prometheus_client::metrics::histogram::Histogram::new(BOUNDS);
        for value in [0.05, 0.1, 0.5, 2.0, 20.0, f64::NAN, 0.0] {
            ours.observe(value);
            theirs.observe(value);
        }
        // NaN makes both sums NaN; compare the buckets and the count by their text.
        let (ours, theirs) = (exposition("d", ours), exposition("d", theirs));
        let without_sum = |text: &str| {
            text.lines()
                .filter(|line| !line.starts_with("d_sum"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(without_sum(&ours), without_sum(&theirs), "{ours}\n{theirs}");
    }

    #[test]
    fn a_histogram_sums_and_counts_exactly() {
        let ours = Histogram::new(&BOUNDS);
        let theirs = prometheus_client::metrics::histogram::Histogram::new(BOUNDS);
        for value in [0.25, 0.5, 3.0, 12.0] {
            ours.observe(value);
            theirs.observe(value);
        }
        assert_eq!(exposition("d", ours), exposition("d", theirs));
    }

    #[test]
    fn observations_from_many_threads_and_the_workers_are_all_counted() {
        let histogram = Histogram::new(&BOUNDS);
        let counter = Counter::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (histogram, counter) = (histogram.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        histogram.observe(0.5);
                        counter.inc();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let on_workers: Vec<_> = crate::workers::handles()
            .unwrap()
            .iter()
            .map(|worker| {
                let (histogram, counter) = (histogram.clone(), counter.clone());
                worker.spawn(async move {
                    histogram.observe(0.5);
                    counter.inc_by(2);
                })
            })
            .collect();
        let workers = on_workers.len() as u64;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for task in on_workers {
            runtime.block_on(task).unwrap();
        }
        let (sum, count, _) = histogram.snapshot();
        assert_eq!(count, 4_000 + workers);
        assert_eq!(sum, 0.5 * (4_000 + workers) as f64);
        assert_eq!(counter.get(), 4_000 + 2 * workers);
    }

    #[test]
    fn a_counter_writes_what_prometheus_clients_own_writes() {
        let ours = Counter::default();
        let theirs = prometheus_client::metrics::counter::Counter::<u64>::default();
        ours.inc_by(41);
        ours.inc();
        theirs.inc_by(41);
        theirs.inc();
        assert_eq!(exposition("c", ours), exposition("c", theirs));
    }
}
