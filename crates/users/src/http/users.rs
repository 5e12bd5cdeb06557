//! Accounts, for admins: list, create, read, change, delete.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use kit::extract::{Json, Path};
use kit::fields::{Field, Fields, Unknown};
use kit::openapi::problems;
use kit::pagination::Pagination;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Admin, AppState};
use crate::domain::{
    Email, FullName, NewUser, Password, Role, Scopes, User, UserChanges, Username,
};
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(read, update, remove))
}

/// One page of users, oldest first.
#[derive(Serialize, ToSchema)]
struct Page {
    items: Vec<User>,
    /// How many users there are in all.
    total: i64,
    limit: i64,
    offset: i64,
}

/// Lists users, a page at a time. Admins only.
#[utoipa::path(
    get,
    path = "/users",
    operation_id = "list_users",
    tag = "users",
    security(("gateway_identity" = [])),
    params(Pagination),
    responses(
        (status = OK, description = "A page of users.", body = Page),
        problems::Identified,
        problems::Paged,
        problems::Stored,
        (status = FORBIDDEN, description = "The caller is not an admin."),
    )
)]
async fn list(
    _: Admin,
    State(state): State<AppState>,
    page: Pagination,
) -> Result<Json<Page>, Error> {
    let (items, total) = state.users.list(page.limit, page.offset).await?;
    Ok(Json(Page {
        items,
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

// Every member is read as sent (see `kit::fields`), so that one 422 lists every error, a
// missing required field, a wrong type or an unknown member included; the document says which
// are required.
/// A new account: `username`, `email` and `password` are required, the rest have defaults.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "an object describing a user")]
struct CreateUser {
    /// 1 to 64 characters of a-z, 0-9, '.', '_', '-' (trimmed and lower-cased when read);
    /// unique, compared case-insensitively.
    #[schema(value_type = String, required = true, example = "alice", min_length = 1, max_length = 64, pattern = r"^[a-z0-9._-]+$")]
    #[serde(default)]
    username: Field<String>,
    /// An address like name@example.com, at most 254 characters; unique, compared
    /// case-insensitively.
    #[schema(value_type = String, required = true, example = "alice@example.com", max_length = 254, pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]+(\.[^@\s.\x00-\x1f\x7f-\x9f]+)+$")]
    #[serde(default)]
    email: Field<String>,
    /// 1 to 1024 characters, taken as typed, kept only as an argon2id hash.
    #[schema(value_type = String, required = true, write_only, min_length = 1, max_length = 1024)]
    #[serde(default)]
    password: Field<String>,
    /// At most 200 characters, no control characters; blank means no name.
    #[schema(value_type = Option<String>, required = false, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    #[serde(default)]
    full_name: Field<String>,
    /// Default `user`.
    #[schema(value_type = Role, required = false)]
    #[serde(default)]
    role: Field<String>,
    /// Default `["time:read"]`.
    #[schema(value_type = Scopes, required = false)]
    #[serde(default)]
    scopes: Field<Vec<String>>,
    /// Default `true`.
    #[schema(value_type = bool, required = false)]
    #[serde(default)]
    is_active: Field<bool>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Unknown,
}

const CREATE_MEMBERS: &str =
    "`username`, `email`, `password`, `full_name`, `role`, `scopes` and `is_active`";

/// Creates a user. Admins only.
#[utoipa::path(
    post,
    path = "/users",
    operation_id = "create_user",
    tag = "users",
    security(("gateway_identity" = [])),
    request_body = CreateUser,
    responses(
        (status = CREATED, description = "The user, as created.", body = User,
            headers(("Location" = String, description = "The new user's path, `/users/{id}`."))),
        problems::Identified,
        problems::JsonBody,
        problems::Stored,
        (status = FORBIDDEN, description = "The caller is not an admin."),
        (status = CONFLICT, description = "Another user already has this username or email."),
    )
)]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<CreateUser>,
) -> Result<impl IntoResponse, Error> {
    let mut fields = Fields::default();
    let username = fields
        .required("username", body.username)
        .and_then(|raw| fields.check("username", Username::parse(&raw)));
    let email = fields
        .required("email", body.email)
        .and_then(|raw| fields.check("email", Email::parse(&raw)));
    let password = fields
        .required("password", body.password)
        .and_then(|raw| fields.check("password", Password::parse(raw)));
    let full_name = fields
        .optional("full_name", body.full_name)
        .and_then(|raw| fields.check("full_name", FullName::parse(&raw)))
        .flatten();
    // Left out, these take their defaults; `null` is refused, as the document types them.
    let role = fields
        .not_null("role", body.role)
        .and_then(|raw| fields.check("role", Role::parse(&raw)));
    let scopes = fields
        .not_null("scopes", body.scopes)
        .and_then(|raw| fields.check("scopes", Scopes::parse(&raw)));
    let is_active = fields.not_null("is_active", body.is_active);
    fields.refuse_unknown("", body.unknown, CREATE_MEMBERS);
    // Each required one is `None` exactly when it had an error, and the rest are checked by
    // `finish`: past both, every value is valid.
    let (Some(username), Some(email), Some(password)) = (username, email, password) else {
        return Err(fields.into_problem().into());
    };
    fields.finish()?;

    let new = NewUser {
        username,
        email,
        full_name,
        password_hash: password.hash().await?,
        role: role.unwrap_or(Role::User),
        scopes: scopes.unwrap_or_else(Scopes::default_for_new_user),
        is_active: is_active.unwrap_or(true),
    };
    let user = state.users.insert(new).await?;
    tracing::info!(user.id = %user.id, "user created");
    let location = format!("/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    ))
}

/// One user. Admins only.
#[utoipa::path(
    get,
    path = "/users/{id}",
    operation_id = "read_user",
    tag = "users",
    security(("gateway_identity" = [])),
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = OK, description = "The user.", body = User),
        problems::Identified,
        problems::Stored,
        (status = FORBIDDEN, description = "The caller is not an admin."),
        (status = NOT_FOUND, description = "No user has this id (or it is not a UUID)."),
    )
)]
async fn read(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<User>, Error> {
    let user = state.users.get(id).await?.ok_or(Error::NotFound)?;
    Ok(Json(user))
}

/// Any subset of the fields; a field left out stays as it is, `full_name: null` clears the name.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "an object of the fields to change")]
struct UpdateUser {
    /// As when created: 1 to 64 characters of a-z, 0-9, '.', '_', '-'.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 64, pattern = r"^[a-z0-9._-]+$")]
    #[serde(default)]
    username: Field<String>,
    /// An address like name@example.com, at most 254 characters.
    #[schema(value_type = String, required = false, max_length = 254, pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]+(\.[^@\s.\x00-\x1f\x7f-\x9f]+)+$")]
    #[serde(default)]
    email: Field<String>,
    /// At most 200 characters, no control characters; `null` or blank clears the name.
    #[schema(value_type = Option<String>, required = false, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    #[serde(default)]
    full_name: Field<String>,
    /// 1 to 1024 characters, taken as typed.
    #[schema(value_type = String, required = false, write_only, min_length = 1, max_length = 1024)]
    #[serde(default)]
    password: Field<String>,
    /// The caller's own password as it is now: required only when an admin changes their own
    /// password or email here, as through `/users/me`, so a stolen token cannot take the
    /// account over (without it, 403 `current-password-required`); not needed for another
    /// user's account.
    #[schema(value_type = String, required = false, write_only, max_length = 1024)]
    #[serde(default)]
    current_password: Field<String>,
    #[schema(value_type = Role, required = false)]
    #[serde(default)]
    role: Field<String>,
    #[schema(value_type = Scopes, required = false)]
    #[serde(default)]
    scopes: Field<Vec<String>>,
    #[schema(value_type = bool, required = false)]
    #[serde(default)]
    is_active: Field<bool>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Unknown,
}

const UPDATE_MEMBERS: &str = "`username`, `email`, `full_name`, `password`, `current_password`, `role`, `scopes` and `is_active`";

/// Changes any fields of a user. Admins only.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    operation_id = "update_user",
    tag = "users",
    security(("gateway_identity" = [])),
    params(("id" = Uuid, Path, description = "The user's id.")),
    request_body = UpdateUser,
    responses(
        (status = OK, description = "The user as changed.", body = User),
        problems::Identified,
        problems::JsonBody,
        problems::Stored,
        (status = FORBIDDEN, description = "The caller is not an admin, or is changing their own password or email without `current_password` (type `urn:gatehouse:problem:current-password-required`) or with a wrong one (type `urn:gatehouse:problem:wrong-current-password`)."),
        (status = NOT_FOUND, description = "No user has this id (or it is not a UUID)."),
        (status = CONFLICT, description = "Another user already has this username or email, or the change would leave no active admin (the last one cannot be demoted or deactivated)."),
        (status = TOO_MANY_REQUESTS, description = "Too many wrong current passwords for this account (5 per 15 minutes); `Retry-After` says when to try again. The password was not checked."),
    )
)]
async fn update(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<User>, Error> {
    let mut fields = Fields::default();
    let own_secret = admin.0 == Some(id) && (body.email.is_sent() || body.password.is_sent());
    if own_secret && matches!(body.current_password, Field::Absent) {
        return Err(Error::CurrentPasswordRequired);
    }
    let current_password =
        super::me::current_password_for(&mut fields, own_secret, body.current_password);
    let username = fields
        .not_null("username", body.username)
        .and_then(|raw| fields.check("username", Username::parse(&raw)));
    let email = fields
        .not_null("email", body.email)
        .and_then(|raw| fields.check("email", Email::parse(&raw)));
    let full_name = full_name_change(&mut fields, body.full_name);
    let password = fields
        .not_null("password", body.password)
        .and_then(|raw| fields.check("password", Password::parse(raw)));
    let role = fields
        .not_null("role", body.role)
        .and_then(|raw| fields.check("role", Role::parse(&raw)));
    let scopes = fields
        .not_null("scopes", body.scopes)
        .and_then(|raw| fields.check("scopes", Scopes::parse(&raw)));
    let is_active = fields.not_null("is_active", body.is_active);
    fields.refuse_unknown("", body.unknown, UPDATE_MEMBERS);
    fields.finish()?;
    if let Some(current_password) = current_password {
        super::me::confirm_current_password(&state, id, current_password).await?;
    }

    let password_hash = match password {
        Some(password) => Some(password.hash().await?),
        None => None,
    };
    let changes = UserChanges {
        username,
        email,
        full_name,
        password_hash,
        role,
        scopes,
        is_active,
    };
    let user = apply(&state, id, changes).await?;
    tracing::info!(user.id = %user.id, "user changed");
    Ok(Json(user))
}

/// A change of `full_name`: left out, it stays (`None`); `null` or blank, it is cleared
/// (`Some(None)`); otherwise it is parsed.
pub(super) fn full_name_change(
    fields: &mut Fields,
    value: Field<String>,
) -> Option<Option<FullName>> {
    match fields.nullable("full_name", value)? {
        None => Some(None),
        Some(raw) => fields.check("full_name", FullName::parse(&raw)),
    }
}

/// Applies `changes` to user `id`; with none, answers the user as is.
pub(super) async fn apply(state: &AppState, id: Uuid, changes: UserChanges) -> Result<User, Error> {
    let user = if changes.is_empty() {
        state.users.get(id).await?
    } else {
        state.users.update(id, changes).await?
    };
    user.ok_or(Error::NotFound)
}

/// Deletes a user. Admins only.
#[utoipa::path(
    delete,
    path = "/users/{id}",
    operation_id = "delete_user",
    tag = "users",
    security(("gateway_identity" = [])),
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = NO_CONTENT, description = "The user is deleted."),
        problems::Identified,
        problems::Stored,
        (status = FORBIDDEN, description = "The caller is not an admin."),
        (status = NOT_FOUND, description = "No user has this id (or it is not a UUID)."),
        (status = CONFLICT, description = "The user is the last active admin; make another user an active admin first."),
    )
)]
async fn remove(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    if state.users.delete(id).await? {
        tracing::info!(user.id = %id, "user deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound)
    }
}
