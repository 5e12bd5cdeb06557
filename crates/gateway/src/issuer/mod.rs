//! The token issuer: everything that signs someone in or hands out a token, off the hot path.
//!
//! - [`login`]: `POST` login, username and password → access and refresh tokens.
//! - [`session`]: refresh (rotation with reuse detection) and logout.
//! - [`oauth`]: the OAuth 2.0 token endpoint (client credentials, password, refresh grants).
//! - [`clients`]: OAuth clients and their secrets.
//! - [`device`]: device tokens, so a known device is not locked out by someone else's guesses.
//! - [`throttle`]: sign-in throttling and the bounded pool of password checks.
//! - [`users`]: the client of the users service that checks passwords and reads accounts.
//! - [`jwks`]: the public keys, published.
//! - [`own_body`]: the bodies of these endpoints, read within their own limits.
//! - [`upkeep`]: background work: key reloads, cut-offs from the users service, purges.

pub mod clients;
pub mod device;
pub mod jwks;
pub mod login;
pub mod oauth;
pub mod own_body;
pub mod session;
pub mod throttle;
pub mod upkeep;
pub mod users;

/// A 422's errors as `member: message` lines, for the body-checking tests of each endpoint.
#[cfg(test)]
fn listed_errors(problem: &kit::Problem) -> Vec<String> {
    assert_eq!(
        problem.status(),
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    );
    problem
        .errors()
        .iter()
        .map(|error| format!("{}: {}", error.field, error.message))
        .collect()
}
