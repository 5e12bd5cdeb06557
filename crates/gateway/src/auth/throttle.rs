//! Login throttling: after too many failed sign-ins for one username, or from one client IP,
//! within a window, further attempts answer 429 with `Retry-After` before any password is
//! checked. Counting is the same whether the user exists, so the answer reveals nothing.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::GatewayError;
use crate::server::SharedState;

/// One sign-in attempt under the throttle.
pub struct Attempt<'a> {
    state: &'a SharedState,
    username_key: String,
    ip_key: String,
}

impl<'a> Attempt<'a> {
    pub fn new(state: &'a SharedState, username: &str, ip: IpAddr) -> Self {
        Self {
            state,
            username_key: format!("login:user:{}", username.trim().to_lowercase()),
            ip_key: format!("login:ip:{ip}"),
        }
    }

    /// `Err(TooManyAttempts)` while either limit is reached.
    pub async fn allowed(&self) -> Result<(), GatewayError> {
        let settings = self.state.config().auth.throttle.clone();
        let shared = &self.state.shared;
        let by_user = shared.failures(&self.username_key).await;
        let by_ip = shared.failures(&self.ip_key).await;
        let mut wait = Duration::ZERO;
        if by_user.count >= settings.per_username {
            wait = wait.max(by_user.resets_in);
        }
        if by_ip.count >= settings.per_ip {
            wait = wait.max(by_ip.resets_in);
        }
        if wait.is_zero() {
            Ok(())
        } else {
            tracing::warn!(
                by_user = by_user.count,
                by_ip = by_ip.count,
                "sign-in throttled"
            );
            Err(GatewayError::TooManyAttempts { retry_after: wait })
        }
    }

    /// Counts a failure, or clears the username's count on success; passes `result` on.
    pub async fn outcome<T>(&self, result: Result<T, GatewayError>) -> Result<T, GatewayError> {
        let shared = &self.state.shared;
        match &result {
            Ok(_) => shared.clear_failures(&self.username_key).await,
            Err(GatewayError::InvalidCredentials) => {
                let window = self.state.config().auth.throttle.window;
                shared.record_failure(&self.username_key, window).await;
                shared.record_failure(&self.ip_key, window).await;
            }
            Err(_) => {}
        }
        result
    }
}
