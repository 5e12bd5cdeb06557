//! The signed-in user's own account: read it, change the email, name or password.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use kit::extract::Json;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::fields::{self, present, Fields};
use super::{AppState, SignedInUser};
use crate::domain::{Email, Password, User, UserChanges};
use crate::error::Error;

pub fn router() -> Router<AppState> {
    Router::new().route("/users/me", get(read).patch(update))
}

async fn read(
    SignedInUser(id): SignedInUser,
    State(state): State<AppState>,
) -> Result<Json<User>, Error> {
    let user = state.users.get(id).await?.ok_or(Error::NotFound)?;
    Ok(Json(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateMe {
    #[serde(default, deserialize_with = "present")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    full_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    password: Option<Option<String>>,
    // Fields only an admin may change. They are read (and their values ignored) so the answer
    // can say so with a 403, rather than call them unknown.
    #[serde(default, deserialize_with = "present")]
    username: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    role: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    scopes: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    is_active: Option<Option<IgnoredAny>>,
}

async fn update(
    SignedInUser(id): SignedInUser,
    State(state): State<AppState>,
    Json(body): Json<UpdateMe>,
) -> Result<Json<User>, Error> {
    let admin_only: Vec<&str> = [
        ("username", body.username.is_some()),
        ("role", body.role.is_some()),
        ("scopes", body.scopes.is_some()),
        ("is_active", body.is_active.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, sent)| sent.then_some(field))
    .collect();
    if !admin_only.is_empty() {
        return Err(Error::Forbidden(format!(
            "Only an admin can change {}; you may change email, full_name and password.",
            admin_only.join(", ")
        )));
    }

    let mut fields = Fields::default();
    let email = fields
        .not_null("email", body.email)
        .and_then(|raw| fields.check(Email::parse(&raw)));
    let full_name = fields::full_name(&mut fields, body.full_name);
    let password = fields
        .not_null("password", body.password)
        .and_then(|raw| fields.check(Password::parse(raw)));
    fields.finish()?;

    let password_hash = match password {
        Some(password) => Some(password.hash().await?),
        None => None,
    };
    let changes = UserChanges {
        email,
        full_name,
        password_hash,
        ..UserChanges::default()
    };
    let user = super::users::apply(&state, id, changes).await?;
    tracing::info!(user.id = %user.id, "user changed their account");
    Ok(Json(user))
}
