//! Waiting for a watched file to settle before acting on it: the configuration file
//! ([`crate::reload`]) and the certificate files ([`crate::entrance`]) share it.
//!
//! A writer that edits a file in place and pauses mid-way, or replaces a certificate and then
//! its key, leaves contents that may well load and are still wrong. So a change is acted on only
//! once looks have found the same contents for the whole settle time: a look that finds a
//! change starts it, one that finds other contents starts it over, and the first that finds the
//! same contents once it is over hands them back (the contents that settled, never a later
//! read). The time is the app's [`Clock`](crate::clock::Clock) (its monotonic reading), taken by
//! the caller at each look, so a test takes the looks and moves a manual clock between them.

use std::time::Duration;

/// A change a look found that has not settled yet.
pub(crate) struct Settling<T> {
    /// What is watched, for the log.
    what: String,
    /// The contents, and when a look first found them (ms, the app clock's monotonic reading).
    pending: Option<(T, u64)>,
}

/// What a look that found a change makes of it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settled<T> {
    /// Not the same for the settle time yet: a look this much later acts if they stay so.
    Left(Duration),
    /// The same for the whole settle time: act on these.
    Now(T),
}

impl<T: PartialEq> Settling<T> {
    /// Nothing pending yet, for `what` (named in the log).
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            pending: None,
        }
    }

    /// A look found nothing to act on (the contents in force, or refused already): a change
    /// pending is gone, so one found later starts its settle time afresh.
    pub(crate) fn unchanged(&mut self) {
        self.pending = None;
    }

    /// A look found `contents`, a change, at `now` (ms, the app clock's monotonic reading);
    /// `settle` is how long they must stay the same.
    pub(crate) fn found(&mut self, contents: T, now: u64, settle: Duration) -> Settled<T> {
        match self.pending.take() {
            Some((pending, since)) if pending == contents => {
                let left = settle.saturating_sub(Duration::from_millis(now.saturating_sub(since)));
                if left.is_zero() {
                    return Settled::Now(contents);
                }
                self.pending = Some((contents, since));
                Settled::Left(left)
            }
            other => {
                if other.is_some() {
                    tracing::debug!(file = %self.what, "still being written; the settle time starts over");
                }
                self.pending = Some((contents, now));
                Settled::Left(settle)
            }
        }
    }
}

/// How long a watch sleeps before its next look: `every`, or sooner when a change found is due
/// to settle before then.
pub(crate) fn next_look(every: Duration, settling: Option<Duration>) -> Duration {
    settling.map_or(every, |left| left.min(every))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(3);

    #[test]
    fn a_change_is_handed_back_once_found_the_same_for_the_whole_settle_time() {
        let mut settling = Settling::new("gateway.yaml");
        assert_eq!(
            settling.found("whole", 1_000, SETTLE),
            Settled::Left(SETTLE)
        );
        assert_eq!(
            settling.found("whole", 3_999, SETTLE),
            Settled::Left(Duration::from_millis(1))
        );
        assert_eq!(
            settling.found("whole", 4_000, SETTLE),
            Settled::Now("whole")
        );
        assert_eq!(
            settling.found("whole", 4_000, SETTLE),
            Settled::Left(SETTLE),
            "handed back once: the same contents found again start over"
        );
    }

    #[test]
    fn other_contents_start_the_settle_time_over() {
        let mut settling = Settling::new("gateway.yaml");
        settling.found("half", 1_000, SETTLE);
        assert_eq!(
            settling.found("whole", 3_500, SETTLE),
            Settled::Left(SETTLE)
        );
        assert_eq!(
            settling.found("whole", 5_000, SETTLE),
            Settled::Left(Duration::from_millis(1_500)),
            "counted from when the whole contents were first found"
        );
    }

    #[test]
    fn a_look_that_finds_no_change_forgets_the_pending_one() {
        let mut settling = Settling::new("gateway.yaml");
        settling.found("new", 1_000, SETTLE);
        settling.unchanged();
        assert_eq!(settling.found("new", 9_000, SETTLE), Settled::Left(SETTLE));
    }

    #[test]
    fn the_next_look_comes_when_a_change_settles_if_sooner_than_the_interval() {
        let every = Duration::from_secs(1);
        assert_eq!(next_look(every, None), every);
        assert_eq!(next_look(every, Some(SETTLE)), every);
        assert_eq!(
            next_look(every, Some(Duration::from_millis(200))),
            Duration::from_millis(200)
        );
    }
}
