//! Request coalescing: of the concurrent misses for one key, the first (the leader) goes to the
//! service and the others wait for what it brings back. When the answer is stored the waiters
//! are answered with it. When the service failed, the leader says how, so a waiter holding a
//! stale answer it may stand in with answers with that at once, instead of each trying the
//! failing service in turn. When it is not stored otherwise (not storable, too large, the
//! leader's client went away), the leader says so as it is dropped, and each waiter goes to the
//! service on its own. A waiter never waits longer than its bound either, so none can hang.
//!
//! Per replica: replicas sharing Redis each send at most one request per key at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::key::Digest32;
use super::Entry;

/// How a leader's request ended, as its waiters see it.
#[derive(Clone)]
pub enum Landing {
    InFlight,
    Stored(Arc<Entry>),
    /// The service failed: the `Cache-Status` member that says how (`fwd-status=503`,
    /// `detail=upstream_timeout`).
    Failed(Arc<str>),
    /// Nothing to share: each waiter asks the service itself.
    Abandoned,
}

type InFlight = Arc<Mutex<HashMap<Digest32, watch::Receiver<Landing>>>>;

/// The keys with a request at the service now.
#[derive(Default)]
pub struct Flights {
    in_flight: InFlight,
    /// Requests waiting on another's now (`gatehouse_cache_collapsed_waiting`): how much a
    /// slow service is being spared, and what a test waits for before the leader lands.
    waiting: Gauge,
}

/// Where a miss stands.
pub enum Seat {
    Leader(Leader),
    Waiter(Waiter),
}

impl Flights {
    /// The leader's seat if no request for `key` is in flight, else a waiter's.
    pub fn board(&self, key: Digest32) -> Seat {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(landing) = in_flight.get(&key) {
            return Seat::Waiter(Waiter::on(landing, &self.waiting));
        }
        let (sender, receiver) = watch::channel(Landing::InFlight);
        in_flight.insert(key, receiver);
        Seat::Leader(Leader {
            key,
            sender,
            in_flight: Arc::clone(&self.in_flight),
        })
    }

    /// A seat as a waiter on the request in flight for `key`, if there is one; never a lead.
    /// For a request whose own answer would not be recorded (HEAD, `no-store`): it may take
    /// the entry another request fetches, but must not make others wait on an answer that
    /// will not be kept.
    pub fn join(&self, key: Digest32) -> Option<Waiter> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .map(|landing| Waiter::on(landing, &self.waiting))
    }

    /// The gauge of requests waiting on another's (shared: clones count the same requests).
    pub fn waiting(&self) -> Gauge {
        self.waiting.clone()
    }

    /// Requests in flight now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request the others wait for. Dropped without [`Leader::land`], its waiters are told
/// [`Landing::Abandoned`].
pub struct Leader {
    key: Digest32,
    sender: watch::Sender<Landing>,
    in_flight: InFlight,
}

impl Leader {
    /// Hands `entry` to the waiters.
    pub fn land(self, entry: Arc<Entry>) {
        self.sender.send_replace(Landing::Stored(entry));
    }

    /// Tells the waiters the service failed, and how (see [`Landing::Failed`]).
    pub fn fail(self, failure: Arc<str>) {
        self.sender.send_replace(Landing::Failed(failure));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Out of the map first: a request arriving from now on finds the store (or leads).
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        self.sender.send_if_modified(|landing| {
            if matches!(landing, Landing::InFlight) {
                *landing = Landing::Abandoned;
                true
            } else {
                false
            }
        });
    }
}

pub struct Waiter {
    landing: watch::Receiver<Landing>,
    /// Counted in the waiting gauge until the waiter is dropped, however its wait ended.
    waiting: Gauge,
}

impl Waiter {
    fn on(landing: &watch::Receiver<Landing>, waiting: &Gauge) -> Self {
        waiting.inc();
        Self {
            landing: landing.clone(),
            waiting: waiting.clone(),
        }
    }

    /// How the leader's request ended; [`Landing::Abandoned`] when it did not within `bound`.
    pub async fn wait(mut self, bound: Duration) -> Landing {
        let landed = tokio::time::timeout(
            bound,
            self.landing
                .wait_for(|landing| !matches!(landing, Landing::InFlight)),
        )
        .await;
        match landed {
            Ok(Ok(landing)) => landing.clone(),
            // Timed out, or the leader is gone without a word (it always says one).
            _ => Landing::Abandoned,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.waiting.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_counted_while_they_wait_and_not_after() {
        let flights = Flights::default();
        let waiting = flights.waiting();
        let Seat::Leader(leader) = flights.board([4; 32]) else {
            panic!("the first request leads");
        };
        assert_eq!(waiting.get(), 0, "a leader is not waiting");
        let first = flights.join([4; 32]).unwrap();
        let Seat::Waiter(second) = flights.board([4; 32]) else {
            panic!("the second request waits");
        };
        assert_eq!(waiting.get(), 2);
        drop(first);
        assert_eq!(waiting.get(), 1);
        drop(leader);
        drop(second);
        assert_eq!(waiting.get(), 0);
    }

    #[test]
    fn joining_never_leads() {
        let flights = Flights::default();
        assert!(
            flights.join([2; 32]).is_none(),
            "nothing in flight: go alone"
        );
        assert!(flights.is_empty(), "and no flight was started");
        let Seat::Leader(_leader) = flights.board([2; 32]) else {
            panic!("the first miss leads");
        };
        assert!(flights.join([2; 32]).is_some(), "in flight: wait for it");
    }

    #[tokio::test]
    async fn a_waiter_of_a_leader_that_gives_up_is_released_at_once() {
        let flights = Flights::default();
        let Seat::Leader(leader) = flights.board([1; 32]) else {
            panic!("the first miss leads");
        };
        let Seat::Waiter(waiter) = flights.board([1; 32]) else {
            panic!("the second waits");
        };
        drop(leader);
        // A bound far beyond the test's: only the leader's word can end the wait in time.
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            waiter.wait(Duration::from_secs(3600)),
        )
        .await;
        assert!(
            matches!(waited, Ok(Landing::Abandoned)),
            "released without an entry"
        );
        assert!(flights.is_empty(), "the key is free for the next miss");
    }

    #[tokio::test]
    async fn a_waiter_stops_waiting_at_its_bound() {
        let flights = Flights::default();
        let _leader = flights.board([2; 32]);
        let Seat::Waiter(waiter) = flights.board([2; 32]) else {
            panic!("the second waits");
        };
        assert!(matches!(
            waiter.wait(Duration::from_millis(10)).await,
            Landing::Abandoned
        ));
    }

    #[tokio::test]
    async fn waiters_learn_how_the_service_failed() {
        let flights = Flights::default();
        let Seat::Leader(leader) = flights.board([3; 32]) else {
            panic!("the first miss leads");
        };
        let waiters: Vec<Waiter> = (0..3).filter_map(|_| flights.join([3; 32])).collect();
        leader.fail(Arc::from("fwd-status=503"));
        for waiter in waiters {
            let Landing::Failed(failure) = waiter.wait(Duration::from_secs(3600)).await else {
                panic!("each waiter is told");
            };
            assert_eq!(&*failure, "fwd-status=503");
        }
        assert!(flights.is_empty());
    }
}
