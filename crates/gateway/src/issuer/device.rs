//! Device tokens, after OWASP's "Slow Down Online Guessing Attacks with Device Cookies": a
//! client that signed in as a username gets a token saying so, and later sign-ins that present
//! it are throttled on that device's own budget, which strangers guessing the same username
//! cannot spend (see [`super::throttle`]).
//!
//! A token is `gd1.<payload>.<mac>`: the payload is base64url JSON `{"u": folded username,
//! "d": random device id, "exp": Unix seconds}`, the MAC HMAC-SHA256 over `gd1.<payload>` with
//! a 256-bit secret kept in the gateway's store, made by the first replica to start and shared
//! by all. HMAC rather than a JWT signed with the gateway's keys: a device token lives for
//! months, far longer than a signing key, and must not tie key rotation to it; nor does anyone
//! but the gateway need to verify it. Anything that is not such a token for the username
//! being signed in, unexpired and with a valid MAC, is no token at all: the attempt is treated
//! as coming from an unknown device, never as an error.

use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, HeaderValue};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::Clock;
use crate::store::Store;

type HmacSha256 = Hmac<Sha256>;

/// The cookie browsers keep the token in.
pub const COOKIE: &str = "gatehouse_device";
const VERSION: &str = "gd1";
/// Ours are about 150 bytes; anything far longer is not one and is not decoded.
const MAX_TOKEN_BYTES: usize = 512;
const SECRET_BYTES: usize = 32;

/// Signs and verifies device tokens with the store's secret.
pub struct DeviceTokens {
    /// HMAC-SHA256 keyed with the store's secret, cloned for each token.
    key: HmacSha256,
    /// What `exp` is set from and checked against.
    clock: Clock,
}

impl std::fmt::Debug for DeviceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTokens(<secret>)")
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The username as folded for throttling ([`fold`]).
    u: String,
    /// The device: random, so its budget is its own.
    d: String,
    exp: u64,
}

/// A device that signed in as the username now being signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDevice {
    pub id: String,
}

/// The form of a username that throttling and device tokens compare.
pub fn fold(username: &str) -> String {
    username.trim().to_lowercase()
}

impl DeviceTokens {
    /// The store's secret, created (and stored) if this is the first replica to start.
    pub async fn load(store: &Store, clock: Clock) -> anyhow::Result<Self> {
        let mut candidate = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut candidate);
        let stored = store
            .device_secret(&URL_SAFE_NO_PAD.encode(candidate))
            .await?;
        let secret = URL_SAFE_NO_PAD
            .decode(stored.as_bytes())
            .context("the stored device-token secret is not base64url")?;
        anyhow::ensure!(
            secret.len() >= SECRET_BYTES,
            "the stored device-token secret is shorter than {SECRET_BYTES} bytes"
        );
        Self::with_secret(&secret, clock)
    }

    fn with_secret(secret: &[u8], clock: Clock) -> anyhow::Result<Self> {
        let key = <HmacSha256 as Mac>::new_from_slice(secret)
            .context("keying HMAC-SHA256 with the device-token secret")?;
        Ok(Self { key, clock })
    }

    fn mac(&self) -> HmacSha256 {
        self.key.clone()
    }

    /// A new device's token for `username`, valid for `ttl`.
    pub fn issue(&self, username: &str, ttl: Duration) -> String {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let claims = Claims {
            u: fold(username),
            d: URL_SAFE_NO_PAD.encode(id),
            exp: self.clock.unix_seconds().saturating_add(ttl.as_secs()),
        };
        // Serialising three plain fields cannot fail.
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signed = format!("{VERSION}.{payload}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// The device `token` names, if it is a valid, unexpired token for `username`.
    pub fn verify(&self, token: &str, username: &str) -> Option<KnownDevice> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let (signed, tag) = token.rsplit_once('.')?;
        let (version, payload) = signed.split_once('.')?;
        if version != VERSION {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        // Constant-time comparison: the time taken tells nothing about the right tag.
        mac.verify_slice(&tag).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > self.clock.unix_seconds() && claims.u == fold(username))
            .then_some(KnownDevice { id: claims.d })
    }
}

/// The device token a sign-in presents: the body's `device_token`, else the cookie.
pub fn presented<'a>(in_body: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    in_body.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == COOKIE).then_some(value)
            })
    })
}

/// The `Set-Cookie` that keeps `token` in a browser: sent back only to the login path, never
/// to scripts (`HttpOnly`) nor cross-site (`SameSite=Strict`). Always `Secure`: TLS ends in
/// front of the gateway, which therefore cannot tell whether the browser used it, and
/// browsers keep `Secure` cookies from `http://localhost` too.
pub fn cookie(token: &str, login_path: &str, ttl: Duration) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path={login_path}; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        ttl.as_secs()
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> DeviceTokens {
        DeviceTokens::with_secret(&[7; SECRET_BYTES], Clock::System).unwrap()
    }

    #[test]
    fn a_token_names_its_device_for_its_username_only() {
        let tokens = tokens();
        let token = tokens.issue(" Alice ", Duration::from_secs(60));
        let device = tokens.verify(&token, "alice").expect("known");
        assert_eq!(tokens.verify(&token, "ALICE"), Some(device.clone()));
        assert_eq!(tokens.verify(&token, "bob"), None);
        let other = tokens.issue("alice", Duration::from_secs(60));
        assert_ne!(tokens.verify(&other, "alice"), Some(device));
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_no_tokens() {
        let tokens = tokens();
        let expired = tokens.issue("alice", Duration::ZERO);
        assert_eq!(tokens.verify(&expired, "alice"), None);
        let token = tokens.issue("alice", Duration::from_secs(60));
        let (signed, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(tokens.verify(&forged, "alice"), None);
        let foreign = DeviceTokens::with_secret(&[8; SECRET_BYTES], Clock::System).unwrap();
        assert_eq!(foreign.verify(&token, "alice"), None);
        for garbage in ["", ".", "gd1..", "gd1.%%.%%", "x.y.z", &"a".repeat(10_000)] {
            assert_eq!(tokens.verify(garbage, "alice"), None, "{garbage:.20}");
        }
    }

    #[test]
    fn a_token_lives_its_whole_seconds_and_not_one_more() {
        let time = crate::clock::ManualClock::starting_now();
        let tokens = DeviceTokens::with_secret(&[7; SECRET_BYTES], Clock::from(&time)).unwrap();
        // Issued at the very end of a second, the worst case for whole-second lifetimes.
        time.advance(Duration::from_millis(
            999 - Clock::from(&time).unix_ms() % 1000,
        ));
        let token = tokens.issue("alice", Duration::from_secs(2));

        time.advance(Duration::from_millis(1000));
        assert!(
            tokens.verify(&token, "alice").is_some(),
            "a 2 s token lives at least 1 s past its issue"
        );
        time.advance(Duration::from_millis(1));
        assert_eq!(
            tokens.verify(&token, "alice"),
            None,
            "and ends with the second its lifetime names"
        );
    }

    #[test]
    fn the_body_wins_over_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; gatehouse_device=from-cookie"),
        );
        assert_eq!(presented(None, &headers), Some("from-cookie"));
        assert_eq!(presented(Some("from-body"), &headers), Some("from-body"));
        assert_eq!(presented(None, &HeaderMap::new()), None);
    }
}
