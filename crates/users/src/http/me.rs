//! The signed-in user's own account: read it, change the email, name or password.

use axum::extract::State;
use kit::extract::Json;
use kit::fields::{Field, Fields, Unknown};
use kit::openapi::problems;
use serde::de::IgnoredAny;
use serde::Deserialize;
use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, Ref, RefOr};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
        problems::Identified,
        problems::Stored,
        (status = FORBIDDEN, description = "The caller is not a signed-in user (a machine client, say)."),
        (status = NOT_FOUND, description = "The caller's account no longer exists."),
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
#[serde(expecting = "an object of the fields to change")]
struct UpdateMe {
    /// An address like name@example.com, at most 254 characters.
    #[schema(value_type = String, required = false, max_length = 254, pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]+(\.[^@\s.\x00-\x1f\x7f-\x9f]+)+$")]
    #[serde(default)]
    email: Field<String>,
    /// At most 200 characters, no control characters; `null` or blank clears the name.
    #[schema(value_type = Option<String>, required = false, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    #[serde(default)]
    full_name: Field<String>,
    /// The new password, 1 to 1024 characters, taken as typed.
    #[schema(value_type = String, required = false, write_only, min_length = 1, max_length = 1024)]
    #[serde(default)]
    password: Field<String>,
    /// The account's password as it is now: required with `password` or `email`, so that a
    /// stolen access token alone cannot take the account over. Wrong ones are limited to 5 per
    /// 15 minutes per account.
    #[schema(value_type = String, required = false, write_only, max_length = 1024)]
    #[serde(default)]
    current_password: Field<String>,
    // Fields only an admin may change. They are read (and their values ignored) so the answer
    // can say so with a 403, rather than call them unknown; the document leaves them out.
    #[schema(ignore)]
    #[serde(default)]
    username: Field<IgnoredAny>,
    #[schema(ignore)]
    #[serde(default)]
    role: Field<IgnoredAny>,
    #[schema(ignore)]
    #[serde(default)]
    scopes: Field<IgnoredAny>,
    #[schema(ignore)]
    #[serde(default)]
    is_active: Field<IgnoredAny>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Unknown,
}

const ME_MEMBERS: &str = "`email`, `full_name`, `password` and `current_password`";

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
        problems::Identified,
        problems::JsonBody,
        problems::Stored,
        // One entry per status: a second 403 would replace this one in the document.
        (status = FORBIDDEN, description = "The caller is not a signed-in user, or sent a field only an admin may change (`username`, `role`, `scopes`, `is_active`), or `current_password` is wrong (type `urn:gatehouse:problem:wrong-current-password`)."),
        (status = NOT_FOUND, description = "The caller's account no longer exists."),
        (status = TOO_MANY_REQUESTS, description = "Too many wrong current passwords for this account (5 per 15 minutes); `Retry-After` says when to try again. The password was not checked."),
        (status = CONFLICT, description = "Another user already has this email."),
    )
)]
async fn update(
    SignedInUser(id): SignedInUser,
    State(state): State<AppState>,
    Json(body): Json<UpdateMe>,
) -> Result<Json<User>, Error> {
    let admin_only: Vec<&str> = [
        ("username", body.username.is_sent()),
        ("role", body.role.is_sent()),
        ("scopes", body.scopes.is_sent()),
        ("is_active", body.is_active.is_sent()),
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

    let changes_a_secret = body.email.is_sent() || body.password.is_sent();
    let mut fields = Fields::default();
    let email = fields
        .not_null("email", body.email)
        .and_then(|raw| fields.check("email", Email::parse(&raw)));
    let full_name = super::users::full_name_change(&mut fields, body.full_name);
    let password = fields
        .not_null("password", body.password)
        .and_then(|raw| fields.check("password", Password::parse(raw)));
    let current_password =
        current_password_for(&mut fields, changes_a_secret, body.current_password);
    fields.refuse_unknown("", body.unknown, ME_MEMBERS);
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

/// The members whose change needs `current_password` beside them.
const SECRETS: [&str; 2] = ["email", "password"];

/// States in the document what [`current_password_for`] enforces, so a client (or a fuzzer)
/// generated from it sends `current_password` with `email` or `password`. That is JSON Schema's
/// `dependentRequired`, which utoipa's types cannot state, so it is said with keywords they can:
/// the body of `PATCH /users/me` is an `UpdateMe` that also either has `current_password` or
/// names no member but the others (`propertyNames`: `full_name`).
pub(super) fn state_that_secrets_need_the_current_password(api: &mut OpenApi) {
    const SCHEMA: &str = "UpdateMe";
    const FIELD: &str = "current_password";
    let others: Vec<String> = match api
        .components
        .as_ref()
        .and_then(|components| components.schemas.get(SCHEMA))
    {
        Some(RefOr::T(Schema::Object(object))) => object
            .properties
            .keys()
            .filter(|name| *name != FIELD && !SECRETS.contains(&name.as_str()))
            .cloned()
            .collect(),
        _ => return,
    };
    let Some(RefOr::T(content)) = api
        .paths
        .paths
        .get_mut("/users/me")
        .and_then(|item| item.patch.as_mut())
        .and_then(|operation| match operation.request_body.as_mut() {
            Some(RefOr::T(body)) => body.content.get_mut("application/json"),
            _ => None,
        })
    else {
        return;
    };
    let with_current_password = ObjectBuilder::new()
        .schema_type(Type::Object)
        .required(FIELD)
        .build();
    let without_secrets = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(others)),
        ))
        .build();
    let rule = AnyOfBuilder::new()
        .description(Some(
            "`current_password` is required with `email` or `password`.",
        ))
        .item(with_current_password)
        .item(without_secrets);
    content.schema = Some(RefOr::T(Schema::AllOf(
        AllOfBuilder::new()
            .item(Ref::from_schema_name(SCHEMA))
            .item(rule)
            .build(),
    )));
}

/// `current_password` as sent, checked for shape: required when the change touches the password
/// or email (`changes_a_secret`); when it does not, still refused if it breaks the shape the
/// document gives it (a string of at most 1024 characters), but not compared with anything.
pub(super) fn current_password_for(
    fields: &mut Fields,
    changes_a_secret: bool,
    sent: Field<String>,
) -> Option<String> {
    const FIELD: &str = "current_password";
    if changes_a_secret && !matches!(sent, Field::Given(_) | Field::Invalid(_)) {
        return fields.refuse(FIELD, "is required to change the password or email");
    }
    // Never `null`: the document states it as a string wherever it is sent.
    let raw = fields.not_null(FIELD, sent)?;
    // Bounded like a new password: argon2's cost grows with the input.
    let raw = fields.check(
        FIELD,
        if raw.chars().count() > Password::MAX_CHARS {
            Err(format!(
                "must be at most {} characters",
                Password::MAX_CHARS
            ))
        } else {
            Ok(raw)
        },
    )?;
    changes_a_secret.then_some(raw)
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
