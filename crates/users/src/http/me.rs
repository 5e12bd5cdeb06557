//! The signed-in user's own account: read it, change the email, name or password.

use axum::extract::State;
use kit::extract::Json;
use kit::openapi::ProblemDetails;
use kit::FieldError;
use serde::de::IgnoredAny;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::fields::{self, present, Fields};
use super::guesses::{self, Guess};
use super::{AppState, SignedInUser};
use crate::domain::{Email, Password, PasswordHash, User, UserChanges};
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(read, update))
}

/// The signed-in user's own account.
#[utoipa::path(
    get,
    path = "/users/me",
    operation_id = "read_me",
    tag = "me",
    security(("gateway_identity" = [])),
    responses(
        (status = OK, description = "The caller's account.", body = User),
        (status = UNAUTHORIZED, description = "No valid identity token.",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The caller is not a signed-in user (a machine client, say).",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "The caller's account no longer exists.",
            body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
async fn read(
    SignedInUser(id): SignedInUser,
    State(state): State<AppState>,
) -> Result<Json<User>, Error> {
    let user = state.users.get(id).await?.ok_or(Error::NotFound)?;
    Ok(Json(user))
}

/// Any subset of these fields; a field left out stays as it is, `full_name: null` clears the name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateMe {
    /// An address like name@example.com, at most 254 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false, format = Email, max_length = 254, pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]+(\.[^@\s.\x00-\x1f\x7f-\x9f]+)+$")]
    email: Option<Option<String>>,
    /// At most 200 characters, no control characters; `null` or blank clears the name.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    full_name: Option<Option<String>>,
    /// The new password, 1 to 1024 characters, taken as typed.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false, write_only, min_length = 1, max_length = 1024)]
    password: Option<Option<String>>,
    /// The account's password as it is now: required with `password` or `email`, so that a
    /// stolen access token alone cannot take the account over. Wrong ones are limited to 5 per
    /// 15 minutes per account.
    #[schema(value_type = String, required = false, write_only, max_length = 1024)]
    current_password: Option<String>,
    // Fields only an admin may change. They are read (and their values ignored) so the answer
    // can say so with a 403, rather than call them unknown; the document leaves them out.
    #[serde(default, deserialize_with = "present")]
    #[schema(ignore)]
    username: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(ignore)]
    role: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(ignore)]
    scopes: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(ignore)]
    is_active: Option<Option<IgnoredAny>>,
}

/// Changes the signed-in user's email, full name or password; nothing else. Changing the
/// password or email needs `current_password` too.
#[utoipa::path(
    patch,
    path = "/users/me",
    operation_id = "update_me",
    tag = "me",
    security(("gateway_identity" = [])),
    request_body = UpdateMe,
    responses(
        (status = OK, description = "The account as changed.", body = User),
        (status = BAD_REQUEST, description = "The body is not JSON.",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid identity token.",
            body = ProblemDetails, content_type = "application/problem+json"),
        // One entry per status: a second 403 would replace this one in the document.
        (status = FORBIDDEN, description = "The caller is not a signed-in user, or sent a field only an admin may change (`username`, `role`, `scopes`, `is_active`), or `current_password` is wrong (type `urn:gatehouse:problem:wrong-current-password`).",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "The caller's account no longer exists.",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Too many wrong current passwords for this account (5 per 15 minutes); `Retry-After` says when to try again. The password was not checked.",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = CONFLICT, description = "Another user already has this email.",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "The body is not `application/json`.",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Invalid fields (`errors` lists each), or a field unknown or of the wrong type.",
            body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
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

    let changes_a_secret = body.email.is_some() || body.password.is_some();
    let mut fields = Fields::default();
    let email = fields
        .not_null("email", body.email)
        .and_then(|raw| fields.check(Email::parse(&raw)));
    let full_name = fields::full_name(&mut fields, body.full_name);
    let password = fields
        .not_null("password", body.password)
        .and_then(|raw| fields.check(Password::parse(raw)));
    let current_password =
        current_password_for(&mut fields, changes_a_secret, body.current_password);
    fields.finish()?;
    if let Some(current_password) = current_password {
        confirm_current_password(&state, id, current_password).await?;
    }

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

/// `current_password` as sent, checked for shape: required when the change touches the password
/// or email (`changes_a_secret`), ignored otherwise.
pub(super) fn current_password_for(
    fields: &mut Fields,
    changes_a_secret: bool,
    sent: Option<String>,
) -> Option<String> {
    if !changes_a_secret {
        return None;
    }
    fields
        .required_with(
            "current_password",
            sent,
            "is required to change the password or email",
        )
        .and_then(|raw| {
            // Bounded like a new password: argon2's cost grows with the input.
            fields.check(if raw.chars().count() > Password::MAX_CHARS {
                Err(FieldError::new(
                    "current_password",
                    format!("must be at most {} characters", Password::MAX_CHARS),
                ))
            } else {
                Ok(raw)
            })
        })
}

/// Checks that `candidate` is the password of account `id`, counted against the account's
/// budget of wrong ones (argon2 on the blocking pool, as at sign-in).
pub(super) async fn confirm_current_password(
    state: &AppState,
    id: uuid::Uuid,
    candidate: String,
) -> Result<(), Error> {
    let guess = Guess::begin(
        &state.attempts,
        format!("current-password:{id}"),
        guesses::CURRENT_PASSWORD,
    )
    .await?;
    let stored = state
        .users
        .password_hash(id)
        .await?
        .ok_or(Error::NotFound)?;
    if guess
        .settle(PasswordHash::verify(Some(&stored), candidate).await)
        .await?
    {
        Ok(())
    } else {
        Err(Error::WrongCurrentPassword)
    }
}
