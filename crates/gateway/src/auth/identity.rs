//! Identity tokens for the services (DESIGN §5): short-lived JWTs with `aud` = the service,
//! carrying who the caller is. They hold no per-request field, so one is minted per caller and
//! service and reused while it is fresh: signing on every request would cost more than proxying.
//!
//! A new one is signed with the identity key parsed once ([`Ed25519Signer`]): jsonwebtoken's
//! `encode` parses the PKCS#8 key and derives its public half on every call, which doubles the
//! cost of each signature (docs/BENCHMARKS.md). The tokens are the same, byte for byte.

use std::sync::{Arc, Mutex, PoisonError};
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
use super::tokens::{now_seconds, AccessClaims};
use crate::error::GatewayError;

/// A cached token is handed out only while it has at least this long left to live, so a
/// service never receives one that expires in transit.
const MIN_REMAINING: Duration = Duration::from_secs(15);

pub struct IdentityMinter {
    keys: Arc<Keys>,
    issuer: String,
    cache: moka::sync::Cache<(Arc<str>, Arc<str>), HeaderValue>,
    /// The current identity key, parsed; replaced when a rotation brings another.
    signer: Mutex<Option<Arc<Ed25519Signer>>>,
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
    pub fn new(keys: Arc<Keys>, issuer: String) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(TOKEN_TTL.saturating_sub(MIN_REMAINING))
            .build();
        Self {
            keys,
            issuer,
            cache,
            signer: Mutex::new(None),
        }
    }

    /// The identity of a caller who presented `access`, for `service`.
    pub fn for_caller(
        &self,
        access: &AccessClaims,
        service: &Arc<str>,
    ) -> Result<HeaderValue, GatewayError> {
        let key = (Arc::from(access.jti.as_str()), Arc::clone(service));
        if let Some(value) = self.cache.get(&key) {
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
        })?;
        self.cache.insert(key, value.clone());
        Ok(value)
    }

    /// The gateway's own identity, for its calls to services (the credential check).
    pub fn for_gateway(&self, service: &str) -> Result<HeaderValue, GatewayError> {
        let key = (Arc::from("gateway"), Arc::from(service));
        if let Some(value) = self.cache.get(&key) {
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
        })?;
        self.cache.insert(key, value.clone());
        Ok(value)
    }

    fn mint(&self, mut claims: IdentityClaims) -> Result<HeaderValue, GatewayError> {
        let now = now_seconds();
        claims.iat = now;
        claims.exp = now + TOKEN_TTL.as_secs();
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
        let store = Store::connect(&format!("sqlite://{}/gateway.db", dir.path().display()))
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
        let minter = IdentityMinter::new(Arc::clone(&keys), "gatehouse".into());
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
}
