//! Identity tokens for the services (DESIGN §5): short-lived JWTs with `aud` = the service,
//! carrying who the caller is. They hold no per-request field, so one is minted per caller and
//! service and reused while it is fresh: signing on every request would cost more than proxying.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::Header;
use kit::identity::{IdentityClaims, TOKEN_TTL, TOKEN_TYPE};
use kit::PrincipalKind;

use super::keys::Keys;
use super::tokens::{now_seconds, AccessClaims};
use crate::error::GatewayError;

/// A cached token is handed out only while it has at least this long left to live, so a
/// service never receives one that expires in transit.
const MIN_REMAINING: Duration = Duration::from_secs(15);

pub struct IdentityMinter {
    keys: Arc<Keys>,
    issuer: String,
    cache: moka::sync::Cache<(Arc<str>, Arc<str>), HeaderValue>,
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
        let mut header = Header::new(key.algorithm);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| {
            GatewayError::Internal(anyhow::anyhow!("signing an identity token: {e}"))
        })?;
        HeaderValue::from_str(&token)
            .map_err(|e| GatewayError::Internal(anyhow::anyhow!("identity token header: {e}")))
    }
}
