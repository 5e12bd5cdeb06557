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
//! password, cannot keep the owner's device out.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::SemaphorePermit;

use super::device::{fold, KnownDevice};
use crate::error::GatewayError;
use crate::server::SharedState;

/// How long a known device waits for a free check slot before 503.
pub const KNOWN_DEVICE_WAIT: Duration = Duration::from_secs(5);

/// One sign-in attempt under the throttle, counted from [`Attempt::begin`].
pub struct Attempt<'a> {
    state: &'a SharedState,
    /// The presented device's counter, when it was a valid token for this username.
    device_key: Option<String>,
    /// Counted against the device's own budget alone (it was within it).
    trusted: bool,
    username_key: String,
    ip_key: String,
    _slot: SemaphorePermit<'a>,
}

impl<'a> Attempt<'a> {
    /// Counts the attempt; `Err(TooManyAttempts)` when it goes over a limit, `Err(Busy)` when
    /// too many checks are in flight. `device` is the device token's, when it presented a
    /// valid one for `username`.
    pub async fn begin(
        state: &'a SharedState,
        username: &str,
        ip: IpAddr,
        device: Option<KnownDevice>,
    ) -> Result<Self, GatewayError> {
        let settings = state.config().auth.throttle.clone();
        let shared = &state.shared;
        let username_key = format!("login:user:{}", fold(username));
        let ip_key = format!("login:ip:{ip}");
        if let Some(device) = device {
            let device_key = format!("login:device:{}", device.id);
            let by_device = shared.record_failure(&device_key, settings.window).await;
            if by_device.count <= settings.per_device {
                let slot =
                    tokio::time::timeout(KNOWN_DEVICE_WAIT, state.known_device_checks.acquire())
                        .await;
                let Ok(Ok(slot)) = slot else {
                    shared.forgive_failure(&device_key).await;
                    tracing::warn!("no sign-in slot for a known device in time; refusing one");
                    return Err(GatewayError::Busy);
                };
                return Ok(Self {
                    state,
                    device_key: Some(device_key),
                    trusted: true,
                    username_key,
                    ip_key,
                    _slot: slot,
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
        state: &'a SharedState,
        device_key: Option<String>,
        username_key: String,
        ip_key: String,
    ) -> Result<Self, GatewayError> {
        let slot = state.credential_checks.try_acquire().map_err(|_| {
            tracing::warn!("too many concurrent sign-ins; refusing one");
            GatewayError::Busy
        })?;
        let settings = state.config().auth.throttle.clone();
        let attempt = Self {
            state,
            device_key,
            trusted: false,
            username_key,
            ip_key,
            _slot: slot,
        };
        let shared = &state.shared;
        let by_user = shared
            .record_failure(&attempt.username_key, settings.window)
            .await;
        let by_ip = shared
            .record_failure(&attempt.ip_key, settings.window)
            .await;
        let mut wait = Duration::ZERO;
        if by_user.count > settings.per_username {
            wait = wait.max(by_user.resets_in);
        }
        if by_ip.count > settings.per_ip {
            wait = wait.max(by_ip.resets_in);
        }
        if wait.is_zero() {
            Ok(attempt)
        } else {
            tracing::warn!(
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
