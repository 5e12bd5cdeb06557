//! Accounts, for admins: list, create, read, change, delete.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use kit::extract::{Json, Path, Query};
use kit::FieldError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fields::{self, present, Fields};
use super::{Admin, AppState};
use crate::domain::{Email, NewUser, Password, Role, Scopes, User, UserChanges, Username};
use crate::error::Error;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(read).patch(update).delete(remove))
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Deserialize)]
struct ListParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<User>,
    total: i64,
    limit: i64,
    offset: i64,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    full_name: Option<String>,
    role: Option<String>,
    scopes: Option<Vec<String>>,
    is_active: Option<bool>,
}

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

async fn read(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<User>, Error> {
    let user = state.users.get(id).await?.ok_or(Error::NotFound)?;
    Ok(Json(user))
}

/// Any subset of the fields; a field left out stays as it is, `full_name: null` clears the name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    #[serde(default, deserialize_with = "present")]
    username: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    full_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    password: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    role: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    scopes: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    is_active: Option<Option<bool>>,
}

async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<User>, Error> {
    let mut fields = Fields::default();
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
