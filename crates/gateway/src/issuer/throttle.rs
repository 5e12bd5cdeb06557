//! Login throttling: after too many failed sign-ins within a window, further attempts answer
//! 429 with `Retry-After` before any password is checked. Counting is the same whether the
//! user exists, so the answer reveals nothing.
//!
//! Following OWASP's device-cookie scheme (see [`super::device`]), guesses never lock the
//! owner out: an attempt from a device that has signed in as this username before (a valid
//! device token) is counted only against that device's own budget (`per_device`), which
//! nobody without the token can spend; past it, the device counts as unknown until the window
//! ends. Attempts from unknown devices are counted per username (one budget shared by all of
//! them) and per client IP.
//!
//! An attempt is counted *before* its password is checked (one atomic increment), so a burst
//! of concurrent guesses is limited like a sequence; a success clears the count it was made
//! under (and takes the attempt back from the IP's), and a check that could not be made is
//! taken back. At most `concurrent` password checks from unknown devices run at once across a
//! replica: past that, sign-in answers 503 at once instead of queueing work that would time out
//! and take the credentials service down for everyone. Known devices have a pool of the same
//! size of their own, and wait their turn in it (first come, first served) for up to
//! [`KNOWN_DEVICE_WAIT`]: a flood of sign-ins without a device token, even with the right
//! password, cannot keep the owner's device out. One account holds at most
//! [`KNOWN_DEVICE_SLOTS_PER_ACCOUNT`] of those slots at once, so a user flooding correct
//! sign-ins with device tokens of their own cannot fill the pool and keep others' devices out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::device::{fold, KnownDevice};
use crate::app::App;
use crate::error::GatewayError;

/// How long a known device waits for a free check slot before 503.
pub const KNOWN_DEVICE_WAIT: Duration = Duration::from_secs(5);

/// How many of the known devices' check slots one account may hold at once: enough for a person
/// signing in from two places at the same moment, too few to crowd anyone else out.
pub const KNOWN_DEVICE_SLOTS_PER_ACCOUNT: u32 = 2;

/// The check slots of known devices: a pool, and the share each account holds of it now.
pub struct KnownDeviceSlots {
    pool: Semaphore,
    /// Slots held per folded username; an account holding none has no entry.
    held: Mutex<HashMap<String, u32>>,
}

impl KnownDeviceSlots {
    pub fn new(size: usize) -> Self {
        Self {
            pool: Semaphore::new(size),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `account`, waiting up to [`KNOWN_DEVICE_WAIT`] for the pool; `None` when the
    /// account already holds its share or the pool stayed full.
    async fn acquire(&self, account: &str) -> Option<KnownDeviceSlot<'_>> {
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let count = held.entry(account.to_owned()).or_insert(0);
            if *count >= KNOWN_DEVICE_SLOTS_PER_ACCOUNT {
                return None;
            }
            *count += 1;
        }
        let share = AccountShare {
            slots: self,
            account: account.to_owned(),
        };
        match tokio::time::timeout(KNOWN_DEVICE_WAIT, self.pool.acquire()).await {
            Ok(Ok(permit)) => Some(KnownDeviceSlot {
                _share: share,
                _permit: permit,
            }),
            _ => None,
        }
    }
}

/// An account's hold on one of its slots, given back when dropped.
struct AccountShare<'a> {
    slots: &'a KnownDeviceSlots,
    account: String,
}

impl Drop for AccountShare<'_> {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.account);
            }
        }
    }
}

/// A known device's check slot, held while its password is checked.
struct KnownDeviceSlot<'a> {
    _share: AccountShare<'a>,
    _permit: SemaphorePermit<'a>,
}

/// The check slot an attempt holds: from the unknown devices' pool or the known ones'. Only
/// held, for its `Drop`, never read.
#[allow(dead_code)]
enum Slot<'a> {
    Unknown(SemaphorePermit<'a>),
    Known(KnownDeviceSlot<'a>),
}

/// One sign-in attempt under the throttle, counted from [`Attempt::begin`].
pub struct Attempt<'a> {
    state: &'a App,
    /// The presented device's counter, when it was a valid token for this username.
    device_key: Option<String>,
    /// Counted against the device's own budget alone (it was within it).
    trusted: bool,
    username_key: String,
    ip_key: String,
    _slot: Slot<'a>,
}

impl<'a> Attempt<'a> {
    /// Counts the attempt; `Err(TooManyAttempts)` when it goes over a limit, `Err(Busy)` when
    /// too many checks are in flight. `device` is the device token's, when it presented a
    /// valid one for `username`.
    pub async fn begin(
        state: &'a App,
        username: &str,
        ip: IpAddr,
        device: Option<KnownDevice>,
    ) -> Result<Self, GatewayError> {
        let settings = state.config().auth.throttle.clone();
        let shared = &state.shared;
        let account = fold(username);
        let username_key = format!("login:user:{account}");
        let ip_key = format!("login:ip:{ip}");
        if let Some(device) = device {
            let device_key = format!("login:device:{}", device.id);
            let by_device = shared.record_failure(&device_key, settings.window).await;
            if !by_device.exceeds(settings.per_device) {
                let Some(slot) = state.known_device_checks.acquire(&account).await else {
                    shared.forgive_failure(&device_key).await;
                    // Debug, not warn: anyone can cause these at will; the 503/429 is the answer.
                    tracing::debug!("no sign-in slot for a known device in time; refusing one");
                    return Err(GatewayError::Busy);
                };
                return Ok(Self {
                    state,
                    device_key: Some(device_key),
                    trusted: true,
                    username_key,
                    ip_key,
                    _slot: Slot::Known(slot),
                });
            }
            tracing::warn!(
                by_device = by_device.count,
                "a known device spent its sign-in budget; it counts as unknown until the window ends"
            );
            return Self::unknown(state, Some(device_key), username_key, ip_key).await;
        }
        Self::unknown(state, None, username_key, ip_key).await
    }

    /// Counts an attempt from a device not known to have signed in as this username.
    async fn unknown(
        state: &'a App,
        device_key: Option<String>,
        username_key: String,
        ip_key: String,
    ) -> Result<Self, GatewayError> {
        let slot = state.credential_checks.try_acquire().map_err(|_| {
            tracing::debug!("too many concurrent sign-ins; refusing one");
            GatewayError::Busy
        })?;
        let settings = state.config().auth.throttle.clone();
        let attempt = Self {
            state,
            device_key,
            trusted: false,
            username_key,
            ip_key,
            _slot: Slot::Unknown(slot),
        };
        let shared = &state.shared;
        let by_user = shared
            .record_failure(&attempt.username_key, settings.window)
            .await;
        let by_ip = shared
            .record_failure(&attempt.ip_key, settings.window)
            .await;
        let mut wait = Duration::ZERO;
        if by_user.exceeds(settings.per_username) {
            wait = wait.max(by_user.resets_in);
        }
        if by_ip.exceeds(settings.per_ip) {
            wait = wait.max(by_ip.resets_in);
        }
        if wait.is_zero() {
            Ok(attempt)
        } else {
            // Debug: every refused guess of a flood would be a line otherwise.
            tracing::debug!(
                by_user = by_user.count,
                by_ip = by_ip.count,
                "sign-in throttled"
            );
            Err(GatewayError::TooManyAttempts { retry_after: wait })
        }
    }

    /// On success clears the presented device's count and, for an attempt counted as from an
    /// unknown device, the username's, and takes the attempt back from the IP's; a wrong
    /// password stays counted; an attempt whose check could not be made (the credentials
    /// service failing) is taken back from all, so an outage locks nobody out afterwards.
    pub async fn outcome<T>(self, result: Result<T, GatewayError>) -> Result<T, GatewayError> {
        let shared = &self.state.shared;
        match &result {
            Ok(_) => {
                if let Some(device_key) = &self.device_key {
                    shared.clear_failures(device_key).await;
                }
                if !self.trusted {
                    shared.clear_failures(&self.username_key).await;
                    shared.forgive_failure(&self.ip_key).await;
                }
            }
            Err(GatewayError::InvalidCredentials) => {}
            Err(_) => {
                if let Some(device_key) = &self.device_key {
                    shared.forgive_failure(device_key).await;
                }
                if !self.trusted {
                    shared.forgive_failure(&self.username_key).await;
                    shared.forgive_failure(&self.ip_key).await;
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_account_holds_at_most_its_share_of_the_known_devices_pool() {
        let slots = KnownDeviceSlots::new(4);
        let mut mallory = Vec::new();
        for _ in 0..KNOWN_DEVICE_SLOTS_PER_ACCOUNT {
            mallory.push(slots.acquire("mallory").await.expect("within the share"));
        }
        assert!(
            slots.acquire("mallory").await.is_none(),
            "a third sign-in of the same account at once gets no slot"
        );
        let alice = slots.acquire("alice").await;
        assert!(alice.is_some(), "another account still gets one");

        mallory.pop();
        assert!(
            slots.acquire("mallory").await.is_some(),
            "a slot given back is the account's again"
        );
    }

    #[tokio::test]
    async fn an_account_holding_nothing_leaves_no_entry_behind() {
        let slots = KnownDeviceSlots::new(2);
        drop(slots.acquire("alice").await);
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
