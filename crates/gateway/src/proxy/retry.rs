//! When a failed attempt may be tried again on another instance, and how many retries a service
//! may cost: a retry budget, so that during an outage retries add at most a fixed share of the
//! traffic instead of multiplying it.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, Method};

/// Retries a service may make at once after a quiet spell, before the budget has filled.
const BURST: u64 = 10;
/// The budget counts in thousandths of a retry.
const ONE: u64 = 1000;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether sending the request twice does no more than sending it once: an idempotent method
/// (RFC 9110 §9.2.2), or a request the service deduplicates by its `Idempotency-Key`.
pub fn may_repeat(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// Every request adds `percent`% of a retry, up to [`BURST`]; every retry spends one. Over
/// time, retries stay under `percent`% of the requests (plus the burst).
#[derive(Debug)]
pub struct RetryBudget {
    deposit: u64,
    balance: AtomicU64,
}

impl RetryBudget {
    pub fn new(percent: u32) -> Self {
        let deposit = u64::from(percent.min(100)) * ONE / 100;
        Self {
            deposit,
            balance: AtomicU64::new(if deposit == 0 { 0 } else { BURST * ONE }),
        }
    }

    /// Called once per request.
    pub fn deposit(&self) {
        if self.deposit > 0 {
            self.balance.fetch_add(self.deposit, Ordering::Relaxed);
            self.balance.fetch_min(BURST * ONE, Ordering::Relaxed);
        }
    }

    /// The retries left, in thousandths of a retry: read-only, for tests that pin what spends it.
    #[cfg(test)]
    pub fn balance(&self) -> u64 {
        self.balance.load(Ordering::Acquire)
    }

    /// Spends one retry; false when the budget is exhausted.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |balance| {
                balance.checked_sub(ONE)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_or_keyed_requests_repeat() {
        let none = HeaderMap::new();
        let mut keyed = HeaderMap::new();
        keyed.insert(IDEMPOTENCY_KEY, "k-1".parse().unwrap());
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(may_repeat(&method, &none), "{method}");
        }
        assert!(!may_repeat(&Method::POST, &none));
        assert!(!may_repeat(&Method::PATCH, &none));
        assert!(may_repeat(&Method::POST, &keyed));
    }

    #[test]
    fn retries_stay_within_the_share_of_requests() {
        let budget = RetryBudget::new(20);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            // Every request fails and wants a retry.
            if budget.withdraw() {
                retries += 1;
            }
        }
        assert!(
            (200..=210).contains(&retries),
            "{retries} retries for 1000 requests"
        );
    }

    #[test]
    fn a_zero_budget_never_retries() {
        let budget = RetryBudget::new(0);
        budget.deposit();
        assert!(!budget.withdraw());
    }
}
