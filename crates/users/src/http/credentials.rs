//! What the gateway alone may ask: the credential check at sign-in (it sends what the person
//! typed and learns who they are, or one 401 that never says why; it never sees a hash), an
//! account as it is now when a session is renewed, and the token cut-offs it must enforce.

use axum::extract::State;
use kit::extract::{Json, Path, Query};
use kit::fields::{Field, Fields, Unknown};
use kit::openapi::problems;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::guesses::{self, Guess};
use super::{AppState, Gateway};
use crate::domain::{PasswordHash, Role, Scopes, Username};
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(check))
        .routes(routes!(account))
        .routes(routes!(cutoffs))
}

/// What a person typed at sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "an object with `username` and `password`")]
struct Credentials {
    #[schema(value_type = String, required = true)]
    #[serde(default)]
    username: Field<String>,
    #[schema(value_type = String, required = true)]
    #[serde(default)]
    password: Field<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Unknown,
}

impl Credentials {
    /// The username and password as typed, or a 422 listing what is missing or not text.
    fn read(self) -> Result<(String, String), Error> {
        let mut fields = Fields::default();
        let username = fields.required("username", self.username);
        let password = fields.required("password", self.password);
        fields.refuse_unknown("", self.unknown, "`username` and `password`");
        match (username, password) {
            (Some(username), Some(password)) if fields.is_empty() => Ok((username, password)),
            _ => Err(fields.into_problem().into()),
        }
    }
}

/// Who the credentials belong to: what the gateway puts in the tokens it issues.
#[derive(Serialize, ToSchema)]
struct Principal {
    id: Uuid,
    username: String,
    role: Role,
    scopes: Scopes,
}

/// Checks a username and password, for the gateway alone.
///
/// Wrong password, unknown username and inactive account answer the same 401, and all three
/// verify one argon2 hash (a dummy when there is no user), so neither the body nor the time
/// tells whether an account exists.
#[utoipa::path(
    post,
    path = "/internal/credentials",
    operation_id = "check_credentials",
    tag = "credentials",
    security(("gateway_identity" = [])),
    request_body = Credentials,
    responses(
        (status = OK, description = "The credentials are right: whose they are.", body = Principal),
        problems::Identified,
        problems::JsonBody,
        problems::Stored,
        (status = UNAUTHORIZED, description = "No valid identity token, or credentials that are wrong, unknown or of an inactive account (one answer for all)."),
        (status = FORBIDDEN, description = "The caller is not the gateway."),
        (status = TOO_MANY_REQUESTS, description = "Too many checks for this username by this caller in the window (30 per 15 minutes); `Retry-After` says when to ask again. The password was not checked."),
        (status = UNPROCESSABLE_ENTITY, description = "A member is missing, not a string, or unknown; `errors` lists each."),
    )
)]
async fn check(
    gateway: Gateway,
    State(state): State<AppState>,
    Json(credentials): Json<Credentials>,
) -> Result<Json<Principal>, Error> {
    let (typed_username, typed_password) = credentials.read()?;
    let username = Username::parse(&typed_username).ok();
    // Counted per caller: the gateway throttles sign-ins before it asks, but whoever holds a
    // copy of its identity token could ask here directly. Names that cannot be usernames
    // share one counter (none of them can succeed).
    let guess = Guess::begin(
        &state.attempts,
        format!(
            "credentials:{}:{}",
            gateway.subject,
            username.as_ref().map_or("", Username::as_str)
        ),
        guesses::CREDENTIAL_CHECKS,
    )
    .await?;
    // A username that cannot exist is looked up as one that does not.
    let account = match &username {
        Some(username) => state.users.credentials(username).await?,
        None => None,
    };
    let (user, hash) = account.unzip();
    let verified = guess
        .settle(PasswordHash::verify(hash.as_ref(), typed_password).await)
        .await?;
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

/// An account as the gateway needs it when it renews a session.
#[derive(Serialize, ToSchema)]
struct Account {
    id: Uuid,
    username: String,
    role: Role,
    scopes: Scopes,
    is_active: bool,
}

/// The account `id` as it is now, for the gateway alone.
#[utoipa::path(
    get,
    path = "/internal/users/{id}",
    operation_id = "account_for_gateway",
    tag = "credentials",
    security(("gateway_identity" = [])),
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = OK, description = "The account.", body = Account),
        problems::Identified,
        problems::Stored,
        (status = FORBIDDEN, description = "The caller is not the gateway."),
        (status = NOT_FOUND, description = "No account has this id."),
    )
)]
async fn account(
    _: Gateway,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Account>, Error> {
    let user = state.users.get(id).await?.ok_or(Error::NotFound)?;
    Ok(Json(Account {
        id: user.id,
        username: user.username,
        role: user.role,
        scopes: user.scopes,
        is_active: user.is_active,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CutoffQuery {
    /// Only cut-offs recorded at or after this moment (Unix milliseconds).
    since: u64,
    /// With `since`: only those after (`since`, `after`), for the next page.
    after: Option<String>,
}

/// Cut-offs per answer; the gateway asks for the next page while one comes back full.
const CUTOFF_PAGE: i64 = 1000;

/// "Tokens issued to `user_id` before `cutoff_ms` are void."
#[derive(Serialize, ToSchema)]
struct Cutoff {
    user_id: String,
    /// Unix milliseconds.
    cutoff_ms: i64,
}

#[derive(Serialize, ToSchema)]
struct Cutoffs {
    cutoffs: Vec<Cutoff>,
}

/// Accounts whose tokens were voided (deactivated, deleted, or role, scopes or password
/// changed), for the gateway alone, which polls this and refuses those tokens.
#[utoipa::path(
    get,
    path = "/internal/token-cutoffs",
    operation_id = "token_cutoffs",
    tag = "credentials",
    security(("gateway_identity" = [])),
    params(CutoffQuery),
    responses(
        (status = OK, description = "A page of cut-offs in (cutoff_ms, user_id) order, at most 1000: ask again after the last one while a page is full.", body = Cutoffs),
        problems::Identified,
        problems::Stored,
        (status = BAD_REQUEST, description = "`since` is not a number."),
        (status = FORBIDDEN, description = "The caller is not the gateway."),
    )
)]
async fn cutoffs(
    _: Gateway,
    State(state): State<AppState>,
    Query(query): Query<CutoffQuery>,
) -> Result<Json<Cutoffs>, Error> {
    let since = i64::try_from(query.since).unwrap_or(i64::MAX);
    let cutoffs = state
        .users
        .cutoffs_page(since, query.after.as_deref(), CUTOFF_PAGE)
        .await?
        .into_iter()
        .map(|(user_id, cutoff_ms)| Cutoff { user_id, cutoff_ms })
        .collect();
    Ok(Json(Cutoffs { cutoffs }))
}
