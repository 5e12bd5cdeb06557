//! The caller's identity, as the gateway vouches for it.
//!
//! The gateway authenticates the client, then signs a short-lived identity token for the one
//! service it forwards to (`aud` = that service's name) and sends it as `X-Gatehouse-Identity`.
//! [`Identity`] accepts a request only when that token verifies against the gateway's keys: a
//! request that reaches a service without the gateway, or with a token minted for another
//! service, answers 401. Headers such as `X-User-Id` are informational and never trusted here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderName;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::problem::Problem;

/// The header that carries the identity token from the gateway to a service.
pub const HEADER: HeaderName = HeaderName::from_static("x-gatehouse-identity");
/// The JOSE `typ` of identity tokens; access tokens carry another, so one is never taken for the other.
pub const TOKEN_TYPE: &str = "gatehouse-identity+jwt";
/// How long an identity token lives: long enough to be reused across a burst of requests.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Clock skew tolerated between the gateway and a service.
const LEEWAY_SECONDS: u64 = 5;
/// An unknown `kid` refetches the JWKS at most this often, so random kids cannot flood the
/// gateway. The gateway publishes a new key well before it signs with it (its key activation),
/// so a service normally meets a new `kid` long after its last fetch.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// The keys held are renewed this often: the gateway serves its JWKS with `max-age=60`.
const JWKS_MAX_AGE: Duration = Duration::from_secs(60);

/// Who the caller is: a person signed in, a machine client, or the gateway itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    User,
    Client,
    Gateway,
}

/// The claims of an identity token; the gateway mints them, services verify them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub kind: PrincipalKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Space-separated, as in OAuth 2.0.
    #[serde(default)]
    pub scope: String,
    pub iat: u64,
    pub exp: u64,
    /// The token's own id, unique per token the gateway signs (RFC 7519 §4.1.7).
    pub jti: String,
}

/// The verified caller of the current request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub kind: PrincipalKind,
    pub username: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
}

impl Identity {
    pub fn from_claims(claims: IdentityClaims) -> Self {
        Self {
            subject: claims.sub,
            kind: claims.kind,
            username: claims.username,
            roles: claims.roles,
            scopes: claims
                .scope
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn is_admin(&self) -> bool {
        self.kind == PrincipalKind::User && self.has_role("admin")
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The caller's user id; a machine client or the gateway has none (403).
    pub fn user_id(&self) -> Result<uuid::Uuid, Problem> {
        match self.kind {
            PrincipalKind::User => uuid::Uuid::parse_str(&self.subject)
                .map_err(|_| Problem::forbidden("The caller's identity names no user.")),
            _ => Err(Problem::forbidden(
                "This operation is for signed-in users only.",
            )),
        }
    }

    pub fn require_role(&self, role: &str) -> Result<(), Problem> {
        if self.kind == PrincipalKind::User && self.has_role(role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "This operation requires the role `{role}`."
            )))
        }
    }

    pub fn require_scope(&self, scope: &str) -> Result<(), Problem> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "This operation requires the scope `{scope}`."
            )))
        }
    }

    pub fn require_kind(&self, kind: PrincipalKind) -> Result<(), Problem> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(Problem::forbidden(
                "This operation is not open to this kind of caller.",
            ))
        }
    }
}

/// Why an identity token was refused; all of them answer the same 401.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity token: this service is reached through the gateway")]
    Missing,
    #[error("the identity token is malformed")]
    Malformed,
    #[error("the identity token is signed by an unknown key")]
    UnknownKey,
    #[error("the identity token is invalid: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    /// Signed by a trusted key but not shaped as the gateway shapes them: a lifetime longer
    /// than identity tokens have, or no `jti`. Only a leaked key could make one.
    #[error("the identity token {0}")]
    Unacceptable(&'static str),
    #[error("the gateway's keys cannot be fetched: {0}")]
    KeysUnavailable(String),
}

impl From<IdentityError> for Problem {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::KeysUnavailable(cause) => {
                tracing::error!(%cause, "cannot fetch the gateway's JWKS");
                Problem::new(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                    .with_detail("The gateway's keys cannot be fetched to verify the caller.")
                    .with_reason("keys_unavailable")
            }
            other => {
                tracing::debug!(error = %other, "identity refused");
                let reason = match &other {
                    IdentityError::Missing => "token_missing",
                    IdentityError::Invalid(cause)
                        if matches!(
                            cause.kind(),
                            jsonwebtoken::errors::ErrorKind::ExpiredSignature
                        ) =>
                    {
                        "token_expired"
                    }
                    _ => "token_invalid",
                };
                Problem::unauthorized(other.to_string()).with_reason(reason)
            }
        }
    }
}

/// A key that verifies identity tokens, pinned to one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

type KeyMap = HashMap<String, VerifyingKey>;

enum KeySource {
    Static(KeyMap),
    Jwks(JwksCache),
}

struct JwksCache {
    url: String,
    /// How long a fetched key set is trusted before it is renewed.
    max_age: Duration,
    client: reqwest::Client,
    keys: RwLock<Arc<KeyMap>>,
    last_fetch: Mutex<Option<Instant>>,
}

/// Verifies identity tokens for one service.
pub struct IdentityVerifier {
    audience: String,
    issuer: String,
    keys: KeySource,
    /// Tokens already verified, until they expire: the gateway reuses one token per caller for
    /// its minute of life, so a signature is checked once, not on every request.
    verified: moka::sync::Cache<String, (Identity, u64)>,
}

fn verified_cache() -> moka::sync::Cache<String, (Identity, u64)> {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(TOKEN_TTL)
        .build()
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the signature alone does not vouch for: the gateway mints every identity token with
/// a `jti` and for [`TOKEN_TTL`] from `iat`, so a token claiming a longer life, or issued in
/// the future, was not minted by a gateway following the rules (a leaked key, a bug) and is
/// refused rather than honoured for as long as it says. `iat` itself is required by the type.
fn check_shape(claims: &IdentityClaims, now: u64) -> Result<(), IdentityError> {
    if claims.jti.trim().is_empty() {
        return Err(IdentityError::Unacceptable("has no jti"));
    }
    if claims.iat > now + LEEWAY_SECONDS {
        return Err(IdentityError::Unacceptable("is issued in the future"));
    }
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if claims.exp < claims.iat || lifetime > TOKEN_TTL.as_secs() + LEEWAY_SECONDS {
        return Err(IdentityError::Unacceptable(
            "claims a longer life than identity tokens have",
        ));
    }
    Ok(())
}

impl IdentityVerifier {
    /// Keys known up front (a configured key, or the gateway's keys in the same process).
    pub fn with_keys(
        audience: impl Into<String>,
        issuer: impl Into<String>,
        keys: impl IntoIterator<Item = (String, VerifyingKey)>,
    ) -> Self {
        Self {
            audience: audience.into(),
            issuer: issuer.into(),
            keys: KeySource::Static(keys.into_iter().collect()),
            verified: verified_cache(),
        }
    }

    /// Keys fetched from the gateway's JWKS, refetched when a token names a key not seen yet
    /// (so a rotated key is picked up without a restart).
    pub fn with_jwks(
        audience: impl Into<String>,
        issuer: impl Into<String>,
        url: impl Into<String>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            audience: audience.into(),
            issuer: issuer.into(),
            keys: KeySource::Jwks(JwksCache {
                url: url.into(),
                max_age: JWKS_MAX_AGE,
                client,
                keys: RwLock::new(Arc::new(HashMap::new())),
                last_fetch: Mutex::new(None),
            }),
            verified: verified_cache(),
        }
    }

    /// Renews the JWKS this often instead of every minute (tests, or a gateway serving another
    /// `max-age`); no effect on a verifier with fixed keys.
    pub fn renewing_keys_every(mut self, max_age: Duration) -> Self {
        if let KeySource::Jwks(cache) = &mut self.keys {
            cache.max_age = max_age;
        }
        self
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        if let Some((identity, expires_at)) = self.verified.get(token) {
            if now_seconds() < expires_at + LEEWAY_SECONDS {
                return Ok(identity);
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| IdentityError::Malformed)?;
        if header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(IdentityError::Malformed);
        }
        let kid = header.kid.ok_or(IdentityError::UnknownKey)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(key.algorithm);
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<IdentityClaims>(token, &key.key, &validation)
            .map_err(IdentityError::Invalid)?;
        check_shape(&data.claims, now_seconds())?;
        let expires_at = data.claims.exp;
        let identity = Identity::from_claims(data.claims);
        self.verified
            .insert(token.to_owned(), (identity.clone(), expires_at));
        Ok(identity)
    }

    async fn key(&self, kid: &str) -> Result<VerifyingKey, IdentityError> {
        match &self.keys {
            KeySource::Static(keys) => keys.get(kid).cloned().ok_or(IdentityError::UnknownKey),
            KeySource::Jwks(cache) => {
                // The key set is renewed as often as the JWKS may be cached, so a key the
                // gateway retired stops verifying here too; a failed renewal keeps the old set.
                if cache.is_stale().await {
                    if let Err(error) = cache.refresh(cache.max_age).await {
                        tracing::warn!(%error, "cannot renew the gateway's keys; using the ones held");
                    }
                }
                if let Some(key) = cache.keys.read().await.get(kid) {
                    return Ok(key.clone());
                }
                cache.refresh(JWKS_REFRESH_INTERVAL).await?;
                cache
                    .keys
                    .read()
                    .await
                    .get(kid)
                    .cloned()
                    .ok_or(IdentityError::UnknownKey)
            }
        }
    }
}

impl JwksCache {
    /// Whether the keys held are older than the JWKS's cache lifetime (or were never fetched).
    async fn is_stale(&self) -> bool {
        self.last_fetch
            .lock()
            .await
            .is_none_or(|at| at.elapsed() >= self.max_age)
    }

    /// Fetches the JWKS unless it was fetched less than `min_interval` ago.
    async fn refresh(&self, min_interval: Duration) -> Result<(), IdentityError> {
        let mut last_fetch = self.last_fetch.lock().await;
        if last_fetch.is_some_and(|at| at.elapsed() < min_interval) {
            return Ok(());
        }
        let set: JwkSet = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| IdentityError::KeysUnavailable(e.to_string()))?
            .json()
            .await
            .map_err(|e| IdentityError::KeysUnavailable(e.to_string()))?;
        *self.keys.write().await = Arc::new(keys_from_jwks(&set));
        *last_fetch = Some(Instant::now());
        Ok(())
    }
}

/// The verifying keys of a JWKS, each pinned to the algorithm its key type allows.
pub fn keys_from_jwks(set: &JwkSet) -> KeyMap {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                // Symmetric or curves we never issue: not ours, never trusted.
                _ => return None,
            };
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, VerifyingKey { key, algorithm }))
        })
        .collect()
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let verifier = parts
            .extensions
            .get::<Arc<IdentityVerifier>>()
            .cloned()
            .ok_or_else(|| {
                Problem::internal(&"the service was built without an identity verifier")
            })?;
        let token = parts
            .headers
            .get(HEADER)
            .and_then(|value| value.to_str().ok())
            .ok_or(IdentityError::Missing)?;
        let identity = verifier.verify(token).await?;
        crate::observe::note_principal(&parts.extensions, &identity.subject);
        Ok(identity)
    }
}
