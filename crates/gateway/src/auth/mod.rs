//! The hot-path verifier: who is calling, and may they call this route.
//!
//! Everything a proxied request needs to be authenticated and authorized, and nothing that
//! issues a token (that is [`crate::issuer`]): the signing keys and their timing ([`keys`]), the
//! access-token verifier with its cache ([`tokens`]), the identity tokens minted for the services
//! ([`identity`]), route policies ([`policy`]), and [`Verifier`], which ties them to the
//! revocation mirror. Nothing here imports the server or the pipeline.

pub mod identity;
pub mod keys;
pub mod policy;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::error::GatewayError;
use crate::state::mirror::Mirror;
use identity::IdentityMinter;
use keys::Keys;
use tokens::{AccessClaims, Refusal, Tokens};

/// Tokens longer than this are refused before any parsing: ours are well under 1 KiB.
const MAX_TOKEN_BYTES: usize = 4096;

/// How stale the key set may be before a token signed by an unknown key makes us reload it:
/// the key may be one another replica rotated in since our last reload.
const UNKNOWN_KEY_RELOAD: Duration = Duration::from_secs(1);

/// The bearer token of a request (RFC 6750 §2.1), if it sent one.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(GatewayError::MissingToken)?;
    let value = value
        .to_str()
        .map_err(|_| GatewayError::InvalidToken("the Authorization header is not text"))?;
    let (scheme, token) = value.split_once(' ').ok_or(GatewayError::InvalidToken(
        "the Authorization header is not `Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(GatewayError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(GatewayError::InvalidToken("the token is empty or too long"));
    }
    Ok(token)
}

/// Verifies access tokens and mints the identity tokens the services get.
pub struct Verifier {
    pub keys: Arc<Keys>,
    pub tokens: Tokens,
    pub identities: IdentityMinter,
}

impl Verifier {
    /// The verified, unrevoked access token of a request.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        revocations: &Mirror,
    ) -> Result<Arc<AccessClaims>, GatewayError> {
        let claims = self.verify_even_if_revoked(headers).await?;
        if revocations.is_revoked(
            &claims.jti,
            claims.sid.as_deref(),
            &claims.sub,
            claims.issued_ms(),
        ) {
            return Err(GatewayError::InvalidToken(crate::error::TOKEN_REVOKED));
        }
        Ok(claims)
    }

    /// The verified access token of a request, revoked or not: for logout only, so a logout
    /// retried after a partial failure (its token already refused) can finish the job.
    pub async fn verify_even_if_revoked(
        &self,
        headers: &HeaderMap,
    ) -> Result<Arc<AccessClaims>, GatewayError> {
        let token = bearer_token(headers)?;
        let claims = match self.tokens.verify(token) {
            Err(Refusal::UnknownKey)
                if self.keys.reload_if_older_than(UNKNOWN_KEY_RELOAD).await? =>
            {
                self.tokens.verify(token)?
            }
            other => other?,
        };
        Ok(claims)
    }
}
