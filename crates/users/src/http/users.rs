//! Accounts, for admins: list, create, read, change, delete.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use kit::extract::{Json, Path, Query};
use kit::openapi::ProblemDetails;
use kit::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::fields::{self, present, Fields};
use super::{Admin, AppState};
use crate::domain::{Email, NewUser, Password, Role, Scopes, User, UserChanges, Username};
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(read, update, remove))
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// How many users to answer, 1 to 200.
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
    /// How many users to skip.
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
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
    params(ListParams),
    responses(
        (status = OK, description = "A page of users.", body = Page),
        (status = BAD_REQUEST, description = "The query string is malformed.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid identity token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The caller is not an admin.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "`limit` or `offset` out of range; `errors` lists each.", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
async fn list(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page>, Error> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let offset = params.offset.unwrap_or(0);
    let mut errors = Vec::new();
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if offset < 0 {
        errors.push(FieldError::new("offset", "must not be negative"));
    }
    if !errors.is_empty() {
        return Err(Error::InvalidFields(errors));
    }
    let (items, total) = state.users.list(limit, offset).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

// Every field is read as optional, so that one 422 lists every error, a missing required field
// included; the document says which are required.
/// A new account: `username`, `email` and `password` are required, the rest have defaults.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    /// 1 to 64 characters of a-z, 0-9, '.', '_', '-' (trimmed and lower-cased when read);
    /// unique, compared case-insensitively.
    #[schema(value_type = String, example = "alice", min_length = 1, max_length = 64, pattern = r"^[a-z0-9._-]+$")]
    username: Option<String>,
    /// An address like name@example.com, at most 254 characters; unique, compared
    /// case-insensitively.
    #[schema(value_type = String, example = "alice@example.com", format = Email, max_length = 254, pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]+(\.[^@\s.\x00-\x1f\x7f-\x9f]+)+$")]
    email: Option<String>,
    /// 1 to 1024 characters, taken as typed, kept only as an argon2id hash.
    #[schema(value_type = String, write_only, min_length = 1, max_length = 1024)]
    password: Option<String>,
    /// At most 200 characters, no control characters; blank means no name.
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    full_name: Option<String>,
    /// Default `user`.
    #[schema(value_type = Role, required = false)]
    role: Option<String>,
    /// Default `["time:read"]`.
    #[schema(value_type = Scopes, required = false)]
    scopes: Option<Vec<String>>,
    /// Default `true`.
    #[schema(value_type = bool, required = false)]
    is_active: Option<bool>,
}

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
        (status = BAD_REQUEST, description = "The body is not JSON.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid identity token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The caller is not an admin.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = CONFLICT, description = "Another user already has this username or email.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "The body is not `application/json`.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Invalid or missing fields (`errors` lists each), or a field unknown or of the wrong type.", body = ProblemDetails, content_type = "application/problem+json"),
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
        .and_then(|raw| fields.check(Username::parse(&raw)));
    let email = fields
        .required("email", body.email)
        .and_then(|raw| fields.check(Email::parse(&raw)));
    let password = fields
        .required("password", body.password)
        .and_then(|raw| fields.check(Password::parse(raw)));
    let full_name = fields::full_name(&mut fields, Some(body.full_name));
    let role = body
        .role
        .map_or(Some(Role::User), |raw| fields.check(Role::parse(&raw)));
    let scopes = body
        .scopes
        .map_or(Some(Scopes::default_for_new_user()), |raw| {
            fields.check_all(Scopes::parse(&raw))
        });
    // Each is `None` exactly when its field had an error, so all present means all valid.
    let (Some(username), Some(email), Some(password), Some(full_name), Some(role), Some(scopes)) =
        (username, email, password, full_name, role, scopes)
    else {
        return Err(fields.into_error());
    };

    let new = NewUser {
        username,
        email,
        full_name,
        password_hash: password.hash().await?,
        role,
        scopes,
        is_active: body.is_active.unwrap_or(true),
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
        (status = UNAUTHORIZED, description = "No valid identity token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The caller is not an admin.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No user has this id (or it is not a UUID).", body = ProblemDetails, content_type = "application/problem+json"),
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
#[serde(deny_unknown_fields)]
struct UpdateUser {
    /// As when created: 1 to 64 characters of a-z, 0-9, '.', '_', '-'.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 64, pattern = r"^[a-z0-9._-]+$")]
    username: Option<Option<String>>,
    /// An address like name@example.com, at most 254 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false, format = Email, max_length = 254, pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]+(\.[^@\s.\x00-\x1f\x7f-\x9f]+)+$")]
    email: Option<Option<String>>,
    /// At most 200 characters, no control characters; `null` or blank clears the name.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    full_name: Option<Option<String>>,
    /// 1 to 1024 characters, taken as typed.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false, write_only, min_length = 1, max_length = 1024)]
    password: Option<Option<String>>,
    /// The caller's own password as it is now: required only when an admin changes their own
    /// password or email here, as through `/users/me`, so a stolen token cannot take the
    /// account over; not needed for another user's account.
    #[schema(value_type = String, required = false, write_only, max_length = 1024)]
    current_password: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Role, required = false)]
    role: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Scopes, required = false)]
    scopes: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool, required = false)]
    is_active: Option<Option<bool>>,
}

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
        (status = BAD_REQUEST, description = "The body is not JSON.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid identity token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The caller is not an admin.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No user has this id (or it is not a UUID).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = CONFLICT, description = "Another user already has this username or email, or the change would leave no active admin (the last one cannot be demoted or deactivated).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "The body is not `application/json`.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Invalid fields (`errors` lists each), or a field unknown, `null` where not allowed, or of the wrong type.", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
async fn update(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<User>, Error> {
    let mut fields = Fields::default();
    let own_secret = admin.0 == Some(id) && (body.email.is_some() || body.password.is_some());
    let current_password =
        super::me::current_password_for(&mut fields, own_secret, body.current_password);
    let username = fields
        .not_null("username", body.username)
        .and_then(|raw| fields.check(Username::parse(&raw)));
    let email = fields
        .not_null("email", body.email)
        .and_then(|raw| fields.check(Email::parse(&raw)));
    let full_name = fields::full_name(&mut fields, body.full_name);
    let password = fields
        .not_null("password", body.password)
        .and_then(|raw| fields.check(Password::parse(raw)));
    let role = fields
        .not_null("role", body.role)
        .and_then(|raw| fields.check(Role::parse(&raw)));
    let scopes = fields
        .not_null("scopes", body.scopes)
        .and_then(|raw| fields.check_all(Scopes::parse(&raw)));
    let is_active = fields.not_null("is_active", body.is_active);
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
        (status = UNAUTHORIZED, description = "No valid identity token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The caller is not an admin.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No user has this id (or it is not a UUID).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The user is the last active admin; make another user an active admin first.", body = ProblemDetails, content_type = "application/problem+json"),
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
