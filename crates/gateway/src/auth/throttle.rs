//! Login throttling: after too many failed sign-ins for one username, or from one client IP,
//! within a window, further attempts answer 429 with `Retry-After` before any password is
//! checked. Counting is the same whether the user exists, so the answer reveals nothing.
//!
//! An attempt is counted *before* its password is checked (one atomic increment), so a burst
//! of concurrent guesses is limited like a sequence; a success then clears the username's
//! count and takes the attempt back from the IP's, and a check that could not be made is taken
//! back from both. At most `concurrent` password checks run at
//! once across a replica: past that, sign-in answers 503 at once instead of queueing work that
//! would time out and take the credentials service down for everyone.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::SemaphorePermit;

use crate::error::GatewayError;
use crate::server::SharedState;

/// One sign-in attempt under the throttle, counted from [`Attempt::begin`].
pub struct Attempt<'a> {
    state: &'a SharedState,
    username_key: String,
    ip_key: String,
    _slot: SemaphorePermit<'a>,
}

impl<'a> Attempt<'a> {
    /// Counts the attempt; `Err(TooManyAttempts)` when it goes over either limit, `Err(Busy)`
    /// when too many checks are in flight.
    pub async fn begin(
        state: &'a SharedState,
        username: &str,
        ip: IpAddr,
    ) -> Result<Self, GatewayError> {
        let slot = state.credential_checks.try_acquire().map_err(|_| {
            tracing::warn!("too many concurrent sign-ins; refusing one");
            GatewayError::Busy
        })?;
        let settings = state.config().auth.throttle.clone();
        let attempt = Self {
            state,
            username_key: format!("login:user:{}", username.trim().to_lowercase()),
            ip_key: format!("login:ip:{ip}"),
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

    /// On success clears the username's count and takes the attempt back from the IP's; a
    /// wrong password stays counted; an attempt whose check could not be made (the credentials
    /// service failing) is taken back from both, so an outage locks nobody out afterwards.
    pub async fn outcome<T>(self, result: Result<T, GatewayError>) -> Result<T, GatewayError> {
        let shared = &self.state.shared;
        match &result {
            Ok(_) => {
                shared.clear_failures(&self.username_key).await;
                shared.forgive_failure(&self.ip_key).await;
            }
            Err(GatewayError::InvalidCredentials) => {}
            Err(_) => {
                shared.forgive_failure(&self.username_key).await;
                shared.forgive_failure(&self.ip_key).await;
            }
        }
        result
    }
}
