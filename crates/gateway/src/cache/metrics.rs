//! What the cache tells `/metrics` beside the outcomes the pipeline counts
//! (`gatehouse_cache_total`): how much the in-memory store holds, read from the store itself at
//! each scrape (nothing on the request path keeps a copy), what left it and why, and how the
//! background refreshes of `stale-while-revalidate` went. Every label is a word of the code's.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;

use super::memory::MemoryStore;
use crate::pipeline::observe::OutcomeLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: &'static str,
}

/// How a background refresh ended (a closed set: the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The service's new answer replaced the stale entry.
    Refreshed,
    /// The service answered 5xx or not at all: the stale entry keeps answering.
    Failed,
    /// The service answered, but the answer may not be stored (`no-store`, too large, cut
    /// short, …): the stale entry keeps answering until its windows end.
    NotStorable,
}

impl RefreshOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refreshed => "refreshed",
            Self::Failed => "failed",
            Self::NotStorable => "not_storable",
        }
    }
}

/// The cache's own families; clones record into the same series.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// `gatehouse_cache_evictions_total{cause}`: answers the in-memory store let go of before
    /// anyone asked: `size` (evicted, or refused admission, to stay within `cache.memory`) and
    /// `expired` (past their last stale window).
    evictions: Family<CauseLabels, Counter>,
    /// `gatehouse_cache_refreshes_total{outcome}`: `refreshed`, `failed`, `not_storable`.
    refreshes: Family<OutcomeLabels, Counter>,
}

impl CacheMetrics {
    /// Registers the families in `metrics`; with `memory`, the in-memory store's gauges too
    /// (a Redis store's size is Redis's to report: `INFO memory`, `evicted_keys`). The store is
    /// built first, counting into these families (they are handles: clones share the series).
    pub fn register(&self, metrics: &kit::observe::Metrics, memory: Option<(&MemoryStore, u64)>) {
        let families = self;
        if let Some((store, bound)) = memory {
            metrics.register(
                "gatehouse_cache_bytes",
                "What the in-memory response cache holds, in bytes (bodies, headers and bookkeeping, as counted against cache.memory)",
                Occupancy {
                    store: store.clone(),
                    measure: Measure::Bytes,
                },
            );
            metrics.register(
                "gatehouse_cache_entries",
                "Keys the in-memory response cache holds (each with up to 8 Vary variants)",
                Occupancy {
                    store: store.clone(),
                    measure: Measure::Keys,
                },
            );
            let capacity = Gauge::<i64>::default();
            capacity.set(i64::try_from(bound).unwrap_or(i64::MAX));
            metrics.register(
                "gatehouse_cache_capacity_bytes",
                "The in-memory response cache's bound (cache.memory), in bytes",
                capacity,
            );
        }
        metrics.register(
            "gatehouse_cache_evictions",
            "Answers the in-memory response cache let go of, by cause (size: to stay within cache.memory, evicted or refused admission; expired: past their last stale window)",
            families.evictions.clone(),
        );
        metrics.register(
            "gatehouse_cache_refreshes",
            "Background refreshes of stale entries (stale-while-revalidate), by outcome (refreshed, failed, not_storable)",
            families.refreshes.clone(),
        );
    }

    /// The counter of evictions for `cause` (`size`, `expired`), for the store's listener.
    pub fn evictions(&self, cause: &'static str) -> Counter {
        self.evictions.get_or_create(&CauseLabels { cause }).clone()
    }

    pub fn refresh(&self, outcome: RefreshOutcome) {
        self.refreshes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }
}

#[derive(Clone, Copy, Debug)]
enum Measure {
    Bytes,
    Keys,
}

/// A gauge read from the store when `/metrics` is rendered.
struct Occupancy {
    store: MemoryStore,
    measure: Measure,
}

impl fmt::Debug for Occupancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Occupancy")
            .field("measure", &self.measure)
            .finish_non_exhaustive()
    }
}

impl EncodeMetric for Occupancy {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let value = match self.measure {
            Measure::Bytes => self.store.weighted_bytes(),
            Measure::Keys => self.store.keys(),
        };
        encoder.encode_gauge(&value)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}
