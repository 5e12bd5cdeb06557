//! Identity tokens for the services (DESIGN §5): short-lived JWTs with `aud` = the service,
//! carrying who the caller is. They hold no per-request field, so one is minted per caller and
//! service and reused while it is fresh: signing on every request would cost more than proxying.
//! The reuse is per access token: a caller's identities are kept with the verified token's
//! claims ([`MintedIdentities`], inside the entry the token cache keeps for that exact token),
//! so an authenticated request finds its identity without a second cache look-up. A `jti` is
//! only a claim, and two tokens naming the same one never share an identity (issue 9): they are
//! two entries.
//!
//! Whether a kept identity is still handed out is decided on the app's [`Clock`] (monotonic),
//! so a test crosses its reuse window by moving a manual clock. The `iat` and `exp` it carries
//! stay on the system's wall clock: the services check them against theirs, and an `iat` from a
//! test's clock moved ahead would be refused as issued in the future.
//!
//! A new one is signed with the identity key parsed once ([`Ed25519Signer`]): jsonwebtoken's
//! `encode` parses the PKCS#8 key and derives its public half on every call, which doubles the
//! cost of each signature (docs/BENCHMARKS.md). The tokens are the same, byte for byte.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer as _;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, Header};
use kit::identity::{IdentityClaims, TOKEN_TTL, TOKEN_TYPE};
use kit::PrincipalKind;

use super::keys::{Keys, SigningKey};
use super::tokens::AccessClaims;
use crate::clock::Clock;
use crate::error::GatewayError;

/// A cached token is handed out only while it has at least this long left to live, so a
/// service never receives one that expires in transit.
const MIN_REMAINING: Duration = Duration::from_secs(15);

pub struct IdentityMinter {
    keys: Arc<Keys>,
    issuer: String,
    /// The gateway's own identity, by service (a caller's are kept with its claims); they
    /// expire by moka's time-to-live, on moka's clock, which takes no other (no test waits one
    /// out).
    own: moka::sync::Cache<Arc<str>, HeaderValue>,
    /// The current identity key, parsed; replaced when a rotation brings another.
    signer: Mutex<Option<Arc<Ed25519Signer>>>,
    /// The app's: when a caller's kept identity stops being handed out.
    clock: Clock,
}

/// The identity tokens minted for one verified access token, by service, and its `X-User-Id`
/// value: kept with its claims (the token cache's entry for that exact token), so every request
/// presenting the token reuses them. Claims that are not the cache's (a clone, a token just
/// issued) start with none.
#[derive(Default)]
pub struct MintedIdentities {
    /// One per service the caller has called (few: the configured services bound it).
    by_service: RwLock<Vec<Minted>>,
    /// `sub` as a header value; `None` when it cannot be one.
    user_id: OnceLock<Option<HeaderValue>>,
}

struct Minted {
    service: Arc<str>,
    token: HeaderValue,
    /// Handed out until then (ms, [`Clock::monotonic_ms`] of the minter's clock):
    /// [`MIN_REMAINING`] before it expires.
    usable_until: u64,
}

impl MintedIdentities {
    fn get(&self, service: &str, now: u64) -> Option<HeaderValue> {
        let minted = self
            .by_service
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        minted
            .iter()
            .find(|kept| &*kept.service == service && now < kept.usable_until)
            .map(|kept| kept.token.clone())
    }

    fn put(&self, service: &Arc<str>, token: HeaderValue, usable_until: u64) {
        let mut minted = self
            .by_service
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match minted.iter_mut().find(|kept| kept.service == *service) {
            Some(kept) => {
                kept.token = token;
                kept.usable_until = usable_until;
            }
            None => minted.push(Minted {
                service: Arc::clone(service),
                token,
                usable_until,
            }),
        }
    }

    /// `sub` as the `X-User-Id` value, made once.
    pub fn user_id(&self, sub: &str) -> Option<HeaderValue> {
        self.user_id
            .get_or_init(|| HeaderValue::from_str(sub).ok())
            .clone()
    }
}

/// Copies start empty: a clone is other claims, and what was minted for a token stays its own.
impl Clone for MintedIdentities {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Not part of what the claims say: two equal claims are equal whatever was minted for them.
impl PartialEq for MintedIdentities {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for MintedIdentities {}

impl std::fmt::Debug for MintedIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self
            .by_service
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        write!(f, "MintedIdentities({count})")
    }
}

/// An Ed25519 identity key ready to sign, with the JOSE header every token it signs carries.
struct Ed25519Signer {
    kid: String,
    key: ed25519_dalek::SigningKey,
    /// `base64url(header) + "."`.
    header: String,
}

impl Ed25519Signer {
    fn new(key: &SigningKey) -> Result<Self, GatewayError> {
        let secret = ed25519_dalek::SigningKey::from_pkcs8_der(key.encoding.as_bytes())
            .map_err(|e| internal("reading the identity key", e))?;
        let mut header = String::new();
        URL_SAFE_NO_PAD.encode_string(
            serde_json::to_vec(&jose_header(key))
                .map_err(|e| internal("serializing a JOSE header", e))?,
            &mut header,
        );
        header.push('.');
        Ok(Self {
            kid: key.kid.clone(),
            key: secret,
            header,
        })
    }

    /// A compact JWS of `claims`, as `jsonwebtoken::encode` would make it.
    fn sign(&self, claims: &IdentityClaims) -> Result<String, GatewayError> {
        let payload =
            serde_json::to_vec(claims).map_err(|e| internal("serializing identity claims", e))?;
        let mut token = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 90);
        token.push_str(&self.header);
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

fn jose_header(key: &SigningKey) -> Header {
    let mut header = Header::new(key.algorithm);
    header.typ = Some(TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid.clone());
    header
}

fn internal(doing: &str, error: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(anyhow::anyhow!("{doing}: {error}"))
}

impl IdentityMinter {
    /// Signing with `keys`' identity key as `issuer`; a caller's identities reused while
    /// `clock` says they have [`MIN_REMAINING`] left.
    pub fn new(keys: Arc<Keys>, issuer: String, clock: Clock) -> Self {
        let own = moka::sync::Cache::builder()
            .max_capacity(1_000)
            .time_to_live(TOKEN_TTL.saturating_sub(MIN_REMAINING))
            .build();
        Self {
            keys,
            issuer,
            own,
            signer: Mutex::new(None),
            clock,
        }
    }

    /// The identity of the caller whose verified access token has the claims `access`, for
    /// `service`: the one minted for this token before while it has [`MIN_REMAINING`] to live,
    /// else a new one, kept with the claims.
    pub fn for_caller(
        &self,
        access: &AccessClaims,
        service: &Arc<str>,
    ) -> Result<HeaderValue, GatewayError> {
        let now = self.clock.monotonic_ms();
        if let Some(value) = access.minted.get(service, now) {
            return Ok(value);
        }
        let value = self.mint(IdentityClaims {
            iss: self.issuer.clone(),
            aud: service.to_string(),
            sub: access.sub.clone(),
            kind: access.kind,
            username: access.username.clone(),
            roles: access.roles.clone(),
            scope: access.scope.clone(),
            iat: 0,
            exp: 0,
            jti: String::new(),
        })?;
        let lifetime = TOKEN_TTL.saturating_sub(MIN_REMAINING);
        access.minted.put(
            service,
            value.clone(),
            now + u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX / 4),
        );
        Ok(value)
    }

    /// The gateway's own identity, for its calls to services (the credential check).
    pub fn for_gateway(&self, service: &str) -> Result<HeaderValue, GatewayError> {
        let key: Arc<str> = Arc::from(service);
        if let Some(value) = self.own.get(&key) {
            return Ok(value);
        }
        let value = self.mint(IdentityClaims {
            iss: self.issuer.clone(),
            aud: service.to_owned(),
            sub: "gateway".to_owned(),
            kind: PrincipalKind::Gateway,
            username: None,
            roles: Vec::new(),
            scope: String::new(),
            iat: 0,
            exp: 0,
            jti: String::new(),
        })?;
        self.own.insert(key, value.clone());
        Ok(value)
    }

    fn mint(&self, mut claims: IdentityClaims) -> Result<HeaderValue, GatewayError> {
        let now = crate::clock::unix_seconds();
        claims.iat = now;
        claims.exp = now + TOKEN_TTL.as_secs();
        // Its own id, never the access token's: nothing downstream can confuse the two.
        claims.jti = uuid::Uuid::new_v4().to_string();
        let keys = self.keys.current();
        let key = keys.identity();
        let token = if key.algorithm == Algorithm::EdDSA {
            self.signer(key)?.sign(&claims)?
        } else {
            jsonwebtoken::encode(&jose_header(key), &claims, &key.encoding)
                .map_err(|e| internal("signing an identity token", e))?
        };
        HeaderValue::try_from(token).map_err(|e| internal("identity token header", e))
    }

    /// The parsed form of `key`, parsed at its first use.
    fn signer(&self, key: &SigningKey) -> Result<Arc<Ed25519Signer>, GatewayError> {
        let mut slot = self.signer.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            Some(signer) if signer.kid == key.kid => Ok(Arc::clone(signer)),
            _ => {
                let signer = Arc::new(Ed25519Signer::new(key)?);
                *slot = Some(Arc::clone(&signer));
                Ok(signer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlgorithm;
    use crate::store::Store;

    async fn keys() -> (Arc<Keys>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!(
            "sqlite://{}/data/gateway.db",
            dir.path().display()
        ))
        .await
        .unwrap();
        let keys = Keys::load(store, SigningAlgorithm::EdDSA, Duration::from_secs(3600))
            .await
            .unwrap();
        (Arc::new(keys), dir)
    }

    fn claims() -> IdentityClaims {
        IdentityClaims {
            iss: "gatehouse".into(),
            aud: "orders".into(),
            sub: "0190f3c2-7d2e-7a51-9b7e-3c1d2a4b5c6d".into(),
            kind: PrincipalKind::User,
            username: Some("alice".into()),
            roles: vec!["user".into()],
            scope: "orders:read".into(),
            iat: 1_700_000_000,
            exp: 1_700_000_060,
            jti: "0190f3c2-7d2e-7a51-9b7e-000000000001".into(),
        }
    }

    #[tokio::test]
    async fn the_parsed_key_signs_exactly_what_jsonwebtoken_would() {
        let (keys, _dir) = keys().await;
        let set = keys.current();
        let key = set.identity();
        let expected = jsonwebtoken::encode(&jose_header(key), &claims(), &key.encoding).unwrap();
        assert_eq!(
            Ed25519Signer::new(key).unwrap().sign(&claims()).unwrap(),
            expected
        );
    }

    #[tokio::test]
    async fn a_minted_identity_verifies_with_the_published_key_for_its_service() {
        let (keys, _dir) = keys().await;
        let minter = IdentityMinter::new(Arc::clone(&keys), "gatehouse".into(), Clock::System);
        let token = minter.for_gateway("orders").unwrap();
        let token = token.to_str().unwrap();

        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some(TOKEN_TYPE));
        let set = keys.current();
        let key = set.verifying(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["orders"]);
        validation.set_issuer(&["gatehouse"]);
        let verified = jsonwebtoken::decode::<IdentityClaims>(token, &key.key, &validation)
            .unwrap()
            .claims;
        assert_eq!(verified.kind, PrincipalKind::Gateway);
        assert_eq!(verified.exp - verified.iat, TOKEN_TTL.as_secs());
    }

    /// An access token signed with the gateway's access key for `sub`, naming `jti`.
    fn access_token(keys: &Keys, sub: &str, jti: &str) -> (String, AccessClaims) {
        let claims = AccessClaims {
            iss: "gatehouse".into(),
            aud: "gatehouse".into(),
            sub: sub.into(),
            kind: PrincipalKind::User,
            username: Some(sub.into()),
            roles: vec!["user".into()],
            scope: String::new(),
            iat: crate::clock::unix_seconds(),
            nbf: crate::clock::unix_seconds(),
            exp: crate::clock::unix_seconds() + 900,
            jti: jti.into(),
            sid: None,
            iat_ms: 0,
            minted: MintedIdentities::default(),
        };
        let set = keys.current();
        let key = set.access();
        let mut header = Header::new(key.algorithm);
        header.typ = Some(crate::auth::tokens::ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
        (token, claims)
    }

    fn identity_claims(token: &HeaderValue) -> IdentityClaims {
        let token = token.to_str().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn two_access_tokens_naming_the_same_jti_do_not_share_an_identity() {
        let (keys, _dir) = keys().await;
        let minter = IdentityMinter::new(Arc::clone(&keys), "gatehouse".into(), Clock::System);
        let service: Arc<str> = Arc::from("orders");
        let (_, alice) = access_token(&keys, "alice", "one-and-the-same");
        let (_, mallory) = access_token(&keys, "mallory", "one-and-the-same");

        let for_alice = minter.for_caller(&alice, &service).unwrap();
        let for_mallory = minter.for_caller(&mallory, &service).unwrap();

        assert_eq!(identity_claims(&for_alice).sub, "alice");
        assert_eq!(identity_claims(&for_mallory).sub, "mallory");
        assert_eq!(
            minter.for_caller(&alice, &service).unwrap(),
            for_alice,
            "the same access token reuses its identity"
        );
    }

    #[tokio::test]
    async fn a_callers_identity_is_reused_until_fifteen_seconds_before_it_expires_then_minted_anew()
    {
        let (keys, _dir) = keys().await;
        let time = crate::clock::ManualClock::starting_now();
        let minter = IdentityMinter::new(Arc::clone(&keys), "gatehouse".into(), (&time).into());
        let service: Arc<str> = Arc::from("orders");
        let (_, access) = access_token(&keys, "alice", "the-access-jti");
        let first = minter.for_caller(&access, &service).unwrap();

        time.advance(TOKEN_TTL - MIN_REMAINING - Duration::from_millis(1));
        assert_eq!(
            minter.for_caller(&access, &service).unwrap(),
            first,
            "a millisecond more than the margin left: still handed out"
        );

        time.advance(Duration::from_millis(1));
        let second = minter.for_caller(&access, &service).unwrap();
        assert_ne!(
            identity_claims(&second).jti,
            identity_claims(&first).jti,
            "only the margin left: a new one, so none expires in transit"
        );
        assert_eq!(minter.for_caller(&access, &service).unwrap(), second);
    }

    #[tokio::test]
    async fn every_identity_token_has_its_own_jti_and_a_lifetime_of_one_minute() {
        let (keys, _dir) = keys().await;
        let minter = IdentityMinter::new(Arc::clone(&keys), "gatehouse".into(), Clock::System);
        let (_, access) = access_token(&keys, "alice", "the-access-jti");

        let for_orders =
            identity_claims(&minter.for_caller(&access, &Arc::from("orders")).unwrap());
        let for_users = identity_claims(&minter.for_caller(&access, &Arc::from("users")).unwrap());

        assert!(!for_orders.jti.is_empty());
        assert_ne!(for_orders.jti, for_users.jti);
        assert_ne!(for_orders.jti, access.jti);
        assert_eq!(for_orders.exp - for_orders.iat, TOKEN_TTL.as_secs());
    }
}
