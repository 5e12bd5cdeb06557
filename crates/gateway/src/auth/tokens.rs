//! Access tokens: JWTs signed by the gateway's current access key (`typ: at+jwt`, RFC 9068),
//! verified with the algorithm pinned per key, never the one the token claims.
//!
//! Checking an EdDSA signature costs more than proxying a request (docs/BENCHMARKS.md), and a
//! client sends the same token for its whole life, so a verified token's claims are kept until
//! the token would be refused as expired. Entries are found by the token's signature segment
//! (short, and as unique as the token) and used only when the whole text is the same. A kept
//! verdict is used only while it still holds: a token whose key has since been removed is
//! checked again (and refused). Revocation is not a property of the token: the caller checks it
//! after [`Tokens::verify`], on every request, so a logout takes effect at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Header, Validation};
use kit::PrincipalKind;
use serde::{Deserialize, Serialize};

use super::identity::MintedIdentities;
use super::keys::Keys;
use crate::config::TokenSettings;
use crate::error::GatewayError;

pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub kind: PrincipalKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scope: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    /// The refresh-token family (sign-in session) the token belongs to, if any: logout ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// `iat` in milliseconds: a per-user cut-off refuses tokens issued even a moment before it.
    #[serde(default)]
    pub iat_ms: u64,
    /// Not a claim: the identity tokens minted for this token, kept with the verified entry
    /// (see [`super::identity`]).
    #[serde(skip)]
    pub minted: MintedIdentities,
}

impl AccessClaims {
    pub fn issued_ms(&self) -> u64 {
        if self.iat_ms > 0 {
            self.iat_ms
        } else {
            self.iat.saturating_mul(1000)
        }
    }
}

/// Whom a new token is for.
#[derive(Debug, Clone)]
pub struct Subject {
    pub id: String,
    pub kind: PrincipalKind,
    pub username: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub claims: AccessClaims,
}

/// Why a token was refused. An unknown key may be one another replica just rotated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownKey,
    Invalid(&'static str),
}

impl From<Refusal> for GatewayError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownKey => {
                GatewayError::InvalidToken("the token is signed by an unknown key")
            }
            Refusal::Invalid(reason) => GatewayError::InvalidToken(reason),
        }
    }
}

/// Memory the verified tokens may take, in bytes; an entry takes about a kilobyte (the token,
/// its claims and the cache's own bookkeeping). Past it the least useful entries are dropped
/// and their tokens verified again when they come back.
const VERIFIED_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;
/// A rough count of what an entry costs beyond its strings.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// A token that passed verification, and what its verdict depends on.
struct Verified {
    /// The whole token: an entry is found by the signature alone but used only for this text.
    token: Box<str>,
    /// Shared with every request that presents the token: a cache hit copies no string.
    claims: Arc<AccessClaims>,
    /// The key that signed it: if the key leaves the key set, the verdict no longer holds.
    kid: String,
    /// The last second (Unix) at which verification accepts it: `exp` plus the leeway.
    valid_through: u64,
}

impl Verified {
    fn weight(&self) -> u32 {
        let claims = &self.claims;
        let strings = claims.iss.len()
            + claims.aud.len()
            + claims.sub.len()
            + claims.username.as_ref().map_or(0, String::len)
            + claims.roles.iter().map(String::len).sum::<usize>()
            + claims.scope.len()
            + claims.jti.len()
            + claims.sid.as_ref().map_or(0, String::len);
        // The token is counted twice: generous for the signature that keys the entry.
        let bytes = 2 * self.token.len() + strings + self.kid.len() + ENTRY_OVERHEAD_BYTES;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// Drops each entry when its token expires.
struct UntilTokenExpiry;

impl moka::Expiry<Box<str>, Arc<Verified>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _signature: &Box<str>,
        verified: &Arc<Verified>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            (verified.valid_through + 1).saturating_sub(crate::clock::unix_seconds()),
        ))
    }
}

pub struct Tokens {
    keys: Arc<Keys>,
    settings: TokenSettings,
    /// Verified tokens by their signature segment: see the module documentation.
    verified: moka::sync::Cache<Box<str>, Arc<Verified>>,
}

/// The signature segment of a compact JWS (the text after the last `.`), or all of `token`.
fn signature_of(token: &str) -> &str {
    token
        .rsplit_once('.')
        .map_or(token, |(_, signature)| signature)
}

impl Tokens {
    pub fn new(keys: Arc<Keys>, settings: TokenSettings) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(VERIFIED_CAPACITY_BYTES)
            .weigher(|_, verified: &Arc<Verified>| verified.weight())
            .expire_after(UntilTokenExpiry)
            .build();
        Self {
            keys,
            settings,
            verified,
        }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn issue(
        &self,
        subject: Subject,
        session: Option<String>,
    ) -> Result<IssuedToken, GatewayError> {
        self.issue_as_of(subject, session, u64::MAX)
    }

    /// Issues a token whose `iat_ms` is `as_of_ms` (when earlier than now): the moment the
    /// subject's account was read, so a cut-off recorded since refuses the token.
    pub fn issue_as_of(
        &self,
        subject: Subject,
        session: Option<String>,
        as_of_ms: u64,
    ) -> Result<IssuedToken, GatewayError> {
        let now_ms = crate::clock::unix_ms();
        let now = now_ms / 1000;
        let issued_ms = as_of_ms.min(now_ms);
        let expires_in = self.settings.access_ttl.as_secs();
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: subject.id,
            kind: subject.kind,
            username: subject.username,
            roles: subject.roles,
            scope: subject.scopes.join(" "),
            iat: now,
            nbf: now,
            exp: now + expires_in,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session,
            iat_ms: issued_ms,
            minted: MintedIdentities::default(),
        };
        let keys = self.keys.current();
        let key = keys.access();
        let mut header = Header::new(key.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| GatewayError::Internal(anyhow::anyhow!("signing an access token: {e}")))?;
        Ok(IssuedToken {
            token,
            expires_in,
            claims,
        })
    }

    /// The claims of a valid access token: from the cache when this token was verified before
    /// and its verdict still holds, else by [`Tokens::verify_uncached`]. Revocation is the
    /// caller's to check.
    pub fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, Refusal> {
        let signature = signature_of(token);
        if let Some(verified) = self.verified.get(signature) {
            // Not a secret comparison: both texts are tokens their holders can read.
            if *verified.token == *token {
                if crate::clock::unix_seconds() <= verified.valid_through
                    && self.keys.current().verifying(&verified.kid).is_some()
                {
                    return Ok(Arc::clone(&verified.claims));
                }
                self.verified.invalidate(signature);
            }
        }
        let (claims, kid) = self.check(token)?;
        let claims = Arc::new(claims);
        self.verified.insert(
            Box::from(signature),
            Arc::new(Verified {
                token: Box::from(token),
                valid_through: claims.exp.saturating_add(LEEWAY_SECONDS),
                claims: Arc::clone(&claims),
                kid,
            }),
        );
        Ok(claims)
    }

    /// Verifies `token` from scratch: header, key, signature, claims. What [`Tokens::verify`]
    /// does on a cache miss; public for the benchmarks.
    pub fn verify_uncached(&self, token: &str) -> Result<AccessClaims, Refusal> {
        self.check(token).map(|(claims, _kid)| claims)
    }

    /// The claims of a valid token, and the id of the key that signed it.
    fn check(&self, token: &str) -> Result<(AccessClaims, String), Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::Invalid("the token is malformed"))?;
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(Refusal::Invalid("the token is not an access token"));
        }
        let kid = header
            .kid
            .ok_or(Refusal::Invalid("the token names no key"))?;
        let keys = self.keys.current();
        let key = keys.verifying(&kid).ok_or(Refusal::UnknownKey)?;
        // Every field of `validation` comes from the key and the settings, never the token.
        let mut validation = Validation::new(key.algorithm);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &key.key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                Refusal::Invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => crate::error::TOKEN_EXPIRED,
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidAudience => "the token is for another audience",
                    ErrorKind::InvalidIssuer => "the token is from another issuer",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not its key's",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is invalid",
                })
            })?;
        Ok((data.claims, kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::KeyTiming;
    use crate::config::SigningAlgorithm;
    use crate::store::Store;

    /// Keys that sign as soon as they exist, and verify for an hour once replaced.
    fn timing() -> KeyTiming {
        KeyTiming {
            activation: Duration::ZERO,
            grace: Duration::from_secs(3600),
        }
    }

    struct Fixture {
        tokens: Tokens,
        keys: Arc<Keys>,
        store: Store,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!(
            "sqlite://{}/data/gateway.db",
            dir.path().display()
        ))
        .await
        .unwrap();
        let keys = Arc::new(
            Keys::load(store.clone(), SigningAlgorithm::EdDSA, timing())
                .await
                .unwrap(),
        );
        let settings = TokenSettings {
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
            key_activation: Duration::ZERO,
            issuer: "gatehouse".into(),
            audience: "gatehouse-api".into(),
            algorithm: SigningAlgorithm::EdDSA,
        };
        Fixture {
            tokens: Tokens::new(Arc::clone(&keys), settings),
            keys,
            store,
            _dir: dir,
        }
    }

    fn alice() -> Subject {
        Subject {
            id: "alice".into(),
            kind: PrincipalKind::User,
            username: Some("alice".into()),
            roles: vec!["user".into()],
            scopes: vec![],
        }
    }

    fn cached(tokens: &Tokens, token: &str) -> bool {
        tokens
            .verified
            .get(signature_of(token))
            .is_some_and(|verified| *verified.token == *token)
    }

    #[tokio::test]
    async fn a_verified_token_is_kept_and_a_cached_verdict_is_used_only_while_the_token_lives() {
        let f = fixture().await;
        let issued = f.tokens.issue(alice(), None).unwrap();
        assert_eq!(*f.tokens.verify(&issued.token).unwrap(), issued.claims);
        assert!(cached(&f.tokens, &issued.token));

        // A verdict planted for a string that is no token at all shows which path answered.
        let kid = f.keys.current().access().kid.clone();
        let plant = |valid_through| {
            f.tokens.verified.insert(
                Box::from("planted"),
                Arc::new(Verified {
                    token: Box::from("planted"),
                    claims: Arc::new(issued.claims.clone()),
                    kid: kid.clone(),
                    valid_through,
                }),
            );
        };
        plant(crate::clock::unix_seconds() + 60);
        assert!(f.tokens.verify("planted").is_ok(), "served from the cache");
        plant(crate::clock::unix_seconds() - 1);
        assert_eq!(
            f.tokens.verify("planted"),
            Err(Refusal::Invalid("the token is malformed")),
            "past its expiry a cached verdict is not used"
        );
    }

    #[tokio::test]
    async fn a_cached_token_is_refused_once_its_key_is_removed() {
        let f = fixture().await;
        let issued = f.tokens.issue(alice(), None).unwrap();
        f.tokens.verify(&issued.token).unwrap();

        let old = f.keys.current().access().kid.clone();
        super::super::keys::rotate(&f.store, SigningAlgorithm::EdDSA, timing())
            .await
            .unwrap();
        f.store.delete_signing_key(&old).await.unwrap();
        f.keys.reload().await.unwrap();

        assert_eq!(
            f.tokens.verify(&issued.token),
            Err(Refusal::UnknownKey),
            "a removed key's tokens are refused even when verified before"
        );
    }

    #[tokio::test]
    async fn the_identity_minted_for_a_token_is_kept_with_its_cached_entry_and_no_other() {
        let f = fixture().await;
        let minter = crate::auth::identity::IdentityMinter::new(
            Arc::clone(&f.keys),
            "gatehouse".into(),
            crate::clock::Clock::System,
        );
        let orders: Arc<str> = Arc::from("orders");
        let token = f.tokens.issue(alice(), None).unwrap().token;
        let first = minter
            .for_caller(&f.tokens.verify(&token).unwrap(), &orders)
            .unwrap();

        // The same token again: the same entry, so the same identity, not a new signature.
        let again = f.tokens.verify(&token).unwrap();
        assert_eq!(minter.for_caller(&again, &orders).unwrap(), first);
        // Claims copied out of the entry keep nothing of it.
        let copied = (*again).clone();
        assert_ne!(minter.for_caller(&copied, &orders).unwrap(), first);
        // Another token of the same caller is another entry.
        let other = f.tokens.issue(alice(), None).unwrap().token;
        let other = f.tokens.verify(&other).unwrap();
        assert_ne!(minter.for_caller(&other, &orders).unwrap(), first);
        assert_eq!(
            again.minted.user_id(&again.sub),
            Some(http::HeaderValue::from_static("alice"))
        );
    }

    #[tokio::test]
    async fn a_refused_token_is_not_kept() {
        let f = fixture().await;
        let issued = f.tokens.issue(alice(), None).unwrap();
        let forged = format!("{}x", issued.token);
        assert!(f.tokens.verify(&forged).is_err());
        assert!(!cached(&f.tokens, &forged));
    }

    #[tokio::test]
    async fn a_kept_signature_does_not_vouch_for_other_claims() {
        let f = fixture().await;
        let issued = f.tokens.issue(alice(), None).unwrap();
        f.tokens.verify(&issued.token).unwrap();

        // Alice's signature under claims that make her an admin: same cache key, other text.
        let (header, rest) = issued.token.split_once('.').unwrap();
        let (_, signature) = rest.rsplit_once('.').unwrap();
        let mut claims = serde_json::to_value(&issued.claims).unwrap();
        claims["roles"] = serde_json::json!(["admin"]);
        let payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&claims).unwrap(),
        );
        let forged = format!("{header}.{payload}.{signature}");
        assert_eq!(
            f.tokens.verify(&forged),
            Err(Refusal::Invalid("the token's signature is invalid"))
        );
        assert_eq!(
            *f.tokens.verify(&issued.token).unwrap(),
            issued.claims,
            "the genuine token is still accepted"
        );
    }

    #[tokio::test]
    async fn a_token_is_issued_as_of_the_moment_its_account_was_read() {
        let f = fixture().await;
        let read_at = crate::clock::unix_ms() - 5_000;
        let issued = f.tokens.issue_as_of(alice(), None, read_at).unwrap();
        assert_eq!(
            issued.claims.iat_ms, read_at,
            "a cut-off after the read refuses it"
        );
        let later = f.tokens.issue_as_of(alice(), None, u64::MAX).unwrap();
        assert!(
            later.claims.iat_ms <= crate::clock::unix_ms(),
            "never issued in the future"
        );
    }
}
