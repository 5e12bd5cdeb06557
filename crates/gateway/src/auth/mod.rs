//! Authentication and authorization: keys and JWKS, access tokens, identity tokens for the
//! services, the login endpoint, and route policies.

pub mod accounts;
pub mod clients;
pub mod device;
pub mod identity;
pub mod jwks;
pub mod keys;
pub mod login;
pub mod oauth;
pub mod own_body;
pub mod policy;
pub mod session;
pub mod throttle;
pub mod tokens;
pub mod upkeep;

use http::HeaderMap;

use crate::error::GatewayError;

/// Tokens longer than this are refused before any parsing: ours are well under 1 KiB.
const MAX_TOKEN_BYTES: usize = 4096;

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
