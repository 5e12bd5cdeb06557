//! The gateway's credential check at sign-in. The gateway never sees a password hash: it sends
//! what the person typed and learns who they are, or one 401 that never says why.

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use kit::extract::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AppState, Gateway};
use crate::domain::{PasswordHash, Role, Scopes, Username};
use crate::error::Error;

pub fn router() -> Router<AppState> {
    Router::new().route("/internal/credentials", post(check))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// Who the credentials belong to: what the gateway puts in the tokens it issues.
#[derive(Serialize)]
struct Principal {
    id: Uuid,
    username: String,
    role: Role,
    scopes: Scopes,
}

/// Wrong password, unknown username and inactive account answer the same 401, and all three
/// verify one argon2 hash (a dummy when there is no user), so neither the body nor the time
/// tells whether an account exists.
async fn check(
    _: Gateway,
    State(state): State<AppState>,
    Json(credentials): Json<Credentials>,
) -> Result<Json<Principal>, Error> {
    // A username that cannot exist is looked up as one that does not.
    let account = match Username::parse(&credentials.username) {
        Ok(username) => state.users.credentials(&username).await?,
        Err(_) => None,
    };
    let (user, hash) = account.unzip();
    let verified = PasswordHash::verify(hash.as_ref(), credentials.password).await?;
    match user {
        Some(user) if verified && user.is_active => Ok(Json(Principal {
            id: user.id,
            username: user.username,
            role: user.role,
            scopes: user.scopes,
        })),
        _ => Err(Error::InvalidCredentials),
    }
}
