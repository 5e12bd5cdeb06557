//! Access tokens: JWTs signed by the gateway's current access key (`typ: at+jwt`, RFC 9068),
//! verified with the algorithm pinned per key, never the one the token claims.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Header, Validation};
use kit::PrincipalKind;
use serde::{Deserialize, Serialize};

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

pub struct Tokens {
    keys: Arc<Keys>,
    settings: TokenSettings,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn now_seconds() -> u64 {
    now_ms() / 1000
}

impl Tokens {
    pub fn new(keys: Arc<Keys>, settings: TokenSettings) -> Self {
        Self { keys, settings }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn issue(
        &self,
        subject: Subject,
        session: Option<String>,
    ) -> Result<IssuedToken, GatewayError> {
        let now_ms = now_ms();
        let now = now_ms / 1000;
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
            iat_ms: now_ms,
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

    pub fn verify(&self, token: &str) -> Result<AccessClaims, Refusal> {
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
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidAudience => "the token is for another audience",
                    ErrorKind::InvalidIssuer => "the token is from another issuer",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not its key's",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is invalid",
                })
            })?;
        Ok(data.claims)
    }
}
