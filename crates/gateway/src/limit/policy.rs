//! A rate-limit policy as the gateway enforces it: at most `requests` in any window `per`,
//! smoothed by `burst`, counted per user, client, address or route; and its [`Limit`] in
//! microseconds (the unit Redis's `TIME` gives and Lua's numbers hold exactly).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::window::Limit;

/// Whom a policy counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitBy {
    /// The verified caller (a user's id; a machine client's id for a client token).
    User,
    /// The OAuth client that called: a machine client's id. User tokens carry no client id,
    /// so a user counts as its own client (one user never spends another's quota).
    Client,
    /// The client address the gateway sees (IPv6 by its /64, like the connection cap).
    Ip,
    /// One bucket for the whole route.
    Route,
}

impl LimitBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Client => "client",
            Self::Ip => "ip",
            Self::Route => "route",
        }
    }

    /// Whether counting needs a verified caller (so the route cannot be public).
    pub fn needs_caller(self) -> bool {
        matches!(self, Self::User | Self::Client)
    }
}

/// The longest window a policy may have: its arithmetic must stay exact in Lua's doubles
/// (2^53 µs is 285 years; a year leaves room for the clock).
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// The most requests a policy may allow per window. The limiter keeps the time of each
/// admission still in the window (8 bytes in memory, about 20 on Redis, per key), so a policy's
/// `requests` is what one caller's key may weigh: 100,000 is under a megabyte in memory, and
/// more than any per-caller policy needs (for a higher rate, a shorter window says the same).
pub const MAX_REQUESTS: u64 = 100_000;

/// A named policy, validated: `requests` from 1 to [`MAX_REQUESTS`] in a whole number of
/// seconds `per` (the headers' `w` has no fractions), `burst` from 1 to `requests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatePolicy {
    pub name: Arc<str>,
    pub requests: u64,
    pub per: Duration,
    pub burst: u64,
    pub by: LimitBy,
}

impl RatePolicy {
    /// What a decision needs: `requests` in any window of `per`, and GCRA smoothing when
    /// `burst` is below `requests`.
    pub fn limit(&self) -> Limit {
        let window_us = u64::try_from(self.per.as_micros()).unwrap_or(u64::MAX);
        Limit::new(self.requests, window_us, self.burst)
    }

    /// This policy's item of `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-11 §3.1):
    /// `"name";q=requests;w=seconds`.
    pub fn header_item(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.requests,
            self.per.as_secs()
        )
    }
}

/// `RateLimit-Policy` for `policies` (draft-11 §3: a list of their items), `None` for none.
pub fn policy_header(policies: &[Arc<RatePolicy>]) -> Option<http::HeaderValue> {
    if policies.is_empty() {
        return None;
    }
    let items: Vec<String> = policies.iter().map(|policy| policy.header_item()).collect();
    // Policy names are letters, digits, `-` and `_`: always a valid header value.
    http::HeaderValue::from_str(&items.join(", ")).ok()
}

impl fmt::Display for RatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} per {}s, burst {}, by {}",
            self.name,
            self.requests,
            self.per.as_secs(),
            self.burst,
            self.by.as_str()
        )
    }
}
