//! Sign-in sessions. A login starts a refresh-token family; each refresh spends the presented
//! token and issues a new pair in the same family; presenting a spent token revokes the whole
//! family (OAuth 2.0 Security BCP §4.14). Logout revokes the family and denylists the access
//! token until it expires. Refresh tokens are 256 random bits, stored only as SHA-256 hashes.
//!
//! Logout holds through outages: the token and the session are refused in the shared state
//! first (this replica at once, the others through Redis or the store), and the store's family
//! row is written or, while the store is down, queued and retried until it lands; refresh
//! refuses a session the shared state has ended even before that row is written. Logout
//! accepts a token that is already revoked, so a retry after a partial failure finishes the job.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kit::extract::Json;
use kit::fields::{Field, Fields, Unknown};
use kit::{PrincipalKind, Problem};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::users;
use crate::app::App;
use crate::auth::tokens::{AccessClaims, IssuedToken, Subject};
use crate::error::GatewayError;
use crate::state::{Reach, Revocation};
use crate::store::StoreWrite;

/// An access token and the refresh token that renews it.
pub struct Session {
    pub access: IssuedToken,
    pub refresh: String,
}

/// Why a refresh token was refused: all answer alike, so a guess learns nothing.
#[derive(Debug)]
pub enum RenewError {
    Refused(&'static str),
    Failed(GatewayError),
}

impl From<GatewayError> for RenewError {
    fn from(error: GatewayError) -> Self {
        Self::Failed(error)
    }
}

impl From<anyhow::Error> for RenewError {
    fn from(error: anyhow::Error) -> Self {
        Self::Failed(GatewayError::from(error))
    }
}

fn new_refresh_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&token);
    (token, hash)
}

fn hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn refresh_expiry(state: &App) -> u64 {
    state.clock.unix_seconds() + state.auth.tokens.settings().refresh_ttl.as_secs()
}

/// Starts a session for a person who just proved who they are. `narrowed` says the subject's
/// scopes are fewer than the account's; refreshes then never widen them (RFC 6749 §6).
pub async fn start(
    state: &App,
    subject: Subject,
    narrowed: bool,
    as_of_ms: u64,
) -> Result<Session, GatewayError> {
    let family = uuid::Uuid::new_v4().to_string();
    let (refresh, hashed) = new_refresh_token();
    let limit = narrowed.then(|| subject.scopes.join(" "));
    state
        .store
        .start_family(
            &family,
            &subject.id,
            limit.as_deref(),
            state.clock.unix_ms(),
            &hashed,
            refresh_expiry(state),
        )
        .await?;
    let access = state
        .auth
        .tokens
        .issue_as_of(subject, Some(family), as_of_ms)?;
    Ok(Session { access, refresh })
}

/// Spends `presented` and issues the next pair of its family.
pub async fn renew(state: &App, presented: &str) -> Result<Session, RenewError> {
    const INVALID: &str = "The refresh token is invalid, expired or revoked.";
    if presented.is_empty() || presented.len() > 512 {
        return Err(RenewError::Refused(INVALID));
    }
    let hashed = hash(presented);
    let Some(record) = state.store.find_refresh(&hashed).await? else {
        return Err(RenewError::Refused(INVALID));
    };
    if record.family_revoked {
        return Err(RenewError::Refused(INVALID));
    }
    if record.spent {
        revoke_reused(state, &record.family_id, &record.subject).await?;
        return Err(RenewError::Refused(INVALID));
    }
    if record.expires_at <= state.clock.unix_seconds() {
        return Err(RenewError::Refused(INVALID));
    }
    if state.store.family_revocation_pending(&record.family_id) {
        // Its end waits in the queue already: nothing more to write.
        return Err(RenewError::Refused(INVALID));
    }
    if state.shared.mirror().is_session_denied(&record.family_id) {
        // Ended (a logout, a reuse) but its store write was lost (a restart): write it again;
        // a family already revoked keeps its first reason.
        state
            .store
            .write_or_queue(StoreWrite::RevokeFamily {
                family: record.family_id.clone(),
                reason: "session ended".to_owned(),
            })
            .await
            .map_err(GatewayError::from)?;
        return Err(RenewError::Refused(INVALID));
    }
    if state
        .shared
        .mirror()
        .cutoff(&record.subject)
        .is_some_and(|cutoff| record.family_created_ms < cutoff)
    {
        state
            .store
            .revoke_family(&record.family_id, "account changed")
            .await?;
        return Err(RenewError::Refused(INVALID));
    }
    // Roles and scopes are read afresh: a session carries the account as it is now. Everything
    // that can fail comes before the token is spent, so a failure leaves it usable for a retry.
    let account = match users::current(state, &record.subject).await? {
        Some(account) if account.is_active => account,
        _ => {
            state
                .store
                .revoke_family(&record.family_id, "account gone or inactive")
                .await?;
            return Err(RenewError::Refused(INVALID));
        }
    };
    let read_at_ms = account.read_at_ms;
    let mut subject = account.into_subject();
    if let Some(limit) = &record.scope {
        let limit: Vec<&str> = limit.split_ascii_whitespace().collect();
        subject
            .scopes
            .retain(|scope| limit.contains(&scope.as_str()));
    }
    let access =
        state
            .auth
            .tokens
            .issue_as_of(subject, Some(record.family_id.clone()), read_at_ms)?;
    let (refresh, next_hash) = new_refresh_token();
    // Spending the old token and storing its successor is one transaction: both or neither.
    if !state
        .store
        .rotate_refresh(
            &hashed,
            &next_hash,
            &record.family_id,
            refresh_expiry(state),
        )
        .await?
    {
        // Spent by a concurrent request between our read and our write: a reuse all the same.
        revoke_reused(state, &record.family_id, &record.subject).await?;
        return Err(RenewError::Refused(INVALID));
    }
    Ok(Session { access, refresh })
}

/// A spent refresh token came back: someone holds a copy. The whole family ends, and so do the
/// access tokens issued in it, everywhere.
async fn revoke_reused(state: &App, family: &str, subject: &str) -> Result<(), RenewError> {
    tracing::warn!(family = %family, subject = %subject, "refresh token reused: revoking its family");
    let ended = end_session_tokens(state, family).await?;
    state
        .store
        .write_or_queue(StoreWrite::RevokeFamily {
            family: family.to_owned(),
            reason: "refresh token reused".to_owned(),
        })
        .await
        .map_err(GatewayError::from)?;
    if !ended.shared() {
        return Err(not_shared().into());
    }
    Ok(())
}

/// Refuses every access token of session `family` from now until the last could expire.
async fn end_session_tokens(state: &App, family: &str) -> Result<Reach, GatewayError> {
    let until = crate::clock::unix_seconds()
        + state.auth.tokens.settings().access_ttl.as_secs()
        + crate::auth::tokens::LEEWAY_SECONDS;
    Ok(state
        .shared
        .revoke(Revocation::Session {
            sid: family.to_owned(),
            until,
        })
        .await?)
}

fn not_shared() -> GatewayError {
    GatewayError::StateUnavailable(
        "neither Redis nor the store answered: the logout holds on this replica and is queued for the store".to_owned(),
    )
}

/// Ends the session of `claims`: the access token itself and its session everywhere at once
/// (shared state first), then its family and the family of `refresh` when it is the caller's
/// in the store (queued while the store is down). Safe to repeat.
///
/// `Ok` once every replica refuses the token or will when it loads from the store; an error
/// (503) when neither Redis nor the store answered: this replica refuses the token already, the
/// writes are queued, and a retry with the same token is accepted.
pub async fn end(
    state: &App,
    claims: &AccessClaims,
    refresh: Option<&str>,
) -> Result<(), GatewayError> {
    if already_ended(state, claims, refresh)? {
        return Ok(());
    }
    let mut shared = state
        .shared
        .revoke(Revocation::Token {
            jti: claims.jti.clone(),
            until: claims.exp + crate::auth::tokens::LEEWAY_SECONDS,
        })
        .await?
        .shared();
    if let Some(family) = &claims.sid {
        shared &= end_session_tokens(state, family).await?.shared();
        state
            .store
            .write_or_queue(StoreWrite::RevokeFamily {
                family: family.clone(),
                reason: "logout".to_owned(),
            })
            .await?;
    }
    if let Some(presented) = refresh.filter(|r| !r.is_empty() && r.len() <= 512) {
        state
            .store
            .write_or_queue(StoreWrite::RevokeFamilyOfToken {
                hash: hash(presented),
                subject: claims.sub.clone(),
                reason: "logout".to_owned(),
            })
            .await?;
    }
    if shared {
        Ok(())
    } else {
        Err(not_shared())
    }
}

/// Whether the logout of `claims` was done before and its writes are in the store or queued for
/// it: then a repeat writes nothing, so one token repeated during a store outage cannot fill the
/// queue that everyone's logout needs. Only while writes queue: otherwise a repeat simply writes
/// again (cheap, and it finishes a logout whose first attempt failed half-way).
fn already_ended(
    state: &App,
    claims: &AccessClaims,
    refresh: Option<&str>,
) -> Result<bool, GatewayError> {
    if state.store.pending_writes() == 0 || !state.shared.mirror().is_denied(&claims.jti) {
        return Ok(false);
    }
    // `end` writes the token's denial, then the session's, then the family's end: the last one
    // queued means the others are queued or stored.
    let done = match &claims.sid {
        Some(family) => {
            state.shared.mirror().is_session_denied(family)
                && state.store.family_revocation_pending(family)
        }
        None => state.store.token_denial_pending(&claims.jti),
    };
    if !done {
        return Ok(false);
    }
    match refresh.filter(|r| !r.is_empty() && r.len() <= 512) {
        None => Ok(true),
        Some(presented)
            if state
                .store
                .family_of_token_pending(&hash(presented), &claims.sub) =>
        {
            Ok(true)
        }
        // A refresh token not seen before, with a token already logged out, while the store is
        // down: refused rather than queued, or a stream of made-up ones would fill the queue.
        Some(_) => Err(GatewayError::StoreUnavailable(anyhow::anyhow!(
            "the store is unavailable: a logout with a new refresh token waits until it is back"
        ))),
    }
}

#[derive(Serialize)]
struct SessionBody {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    scope: String,
    /// After a sign-in with a password: the device token to present at the next one.
    #[serde(skip_serializing_if = "Option::is_none")]
    device_token: Option<String>,
}

/// The token response (RFC 6749 §5.1), never cached.
pub fn respond(session: Session) -> Response {
    respond_signed_in(session, None)
}

/// The token response after a password sign-in: with the device token in the body (for API
/// clients) and as its cookie (for browsers).
pub fn respond_signed_in(session: Session, device: Option<DeviceGrant>) -> Response {
    let (device_token, cookie) = device.map(|d| (d.token, d.cookie)).unzip();
    let body = SessionBody {
        scope: session.access.claims.scope.clone(),
        access_token: session.access.token,
        token_type: "bearer",
        expires_in: session.access.expires_in,
        refresh_token: session.refresh,
        device_token,
    };
    let mut response = (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response();
    if let Some(cookie) = cookie.flatten() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A device token issued at sign-in, and the cookie that carries it.
pub struct DeviceGrant {
    pub token: String,
    pub cookie: Option<HeaderValue>,
}

impl DeviceGrant {
    /// A new device's token for `username`, with its cookie for the login path.
    pub fn issue(state: &App, username: &str) -> Self {
        let config = state.config();
        let ttl = config.auth.throttle.device_ttl;
        let token = state.devices.issue(username, ttl);
        let cookie = super::device::cookie(&token, &config.auth.login_path, ttl);
        Self { token, cookie }
    }
}

/// `{"refresh_token"}` as sent, to refresh (where it is required) or to log out (where it is
/// optional): every member is read, so one 422 lists every bad one, unknown members included.
#[derive(Default, Deserialize)]
#[serde(default, expecting = "an object with `refresh_token`")]
pub struct RefreshRequest {
    refresh_token: Field<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl RefreshRequest {
    /// The refresh token a refresh must carry, or the 422 naming every bad member.
    fn required(self) -> Result<String, Problem> {
        let mut fields = Fields::default();
        let token = fields.required("refresh_token", self.refresh_token);
        fields.refuse_unknown("", self.unknown, REFRESH_MEMBERS);
        // `None` exactly when it had an error.
        let Some(token) = token else {
            return Err(fields.into_problem());
        };
        fields.finish()?;
        Ok(token)
    }

    /// The refresh token a logout may carry, or the 422 naming every bad member. Left out is
    /// none; `null` is refused like any other value that is not a string, as the document says.
    fn optional(self) -> Result<Option<String>, Problem> {
        let mut fields = Fields::default();
        let token = fields.not_null("refresh_token", self.refresh_token);
        fields.refuse_unknown("", self.unknown, REFRESH_MEMBERS);
        fields.finish()?;
        Ok(token)
    }
}

/// The members of a refresh or logout body, for the error naming one that is not.
const REFRESH_MEMBERS: &str = "`refresh_token`";

/// `POST /api/token/refresh` `{"refresh_token"}` → a new pair.
pub async fn refresh(State(state): State<App>, Json(request): Json<RefreshRequest>) -> Response {
    let presented = match request.required() {
        Ok(token) => token,
        Err(problem) => return problem.into_response(),
    };
    match renew(&state, &presented).await {
        Ok(session) => respond(session),
        Err(RenewError::Refused(reason)) => Problem::unauthorized(reason).into_response(),
        Err(RenewError::Failed(error)) => error.into_response(),
    }
}

/// The refresh token of a logout's optional body: none when the body is empty. Not JSON is 400,
/// JSON of the wrong shape 422 listing every bad member, as on the other JSON endpoints.
fn logout_body(body: &Bytes) -> Result<Option<String>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let axum::Json(request) = axum::Json::<RefreshRequest>::from_bytes(body)?;
    request.optional()
}

/// `POST /api/logout` with the access token, and optionally `{"refresh_token"}` → 204.
pub async fn logout(State(state): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    // A revoked token is accepted here: a retry finishes a logout that partly failed.
    let claims = match state.auth.verify_even_if_revoked(&headers).await {
        Ok(claims) => claims,
        Err(error) => return error.into_response(),
    };
    let refresh_token = match logout_body(&body) {
        Ok(token) => token,
        Err(problem) => return problem.into_response(),
    };
    if claims.kind != PrincipalKind::User && refresh_token.is_some() {
        return GatewayError::BadRequest("Machine clients hold no refresh token.".to_owned())
            .into_response();
    }
    match end(&state, &claims, refresh_token.as_deref()).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::listed_errors as listed;
    use super::*;

    #[test]
    fn one_refusal_lists_every_bad_member_of_a_refresh() {
        let unknown = "is not a known field (expected `refresh_token`)";
        let cases: [(&str, Vec<String>); 4] = [
            ("{}", vec!["refresh_token: is required".to_owned()]),
            (
                r#"{"refresh_token": null}"#,
                vec!["refresh_token: is required".to_owned()],
            ),
            (
                r#"{"refresh_token": 7, "access_token": "a", "scope": "x"}"#,
                vec![
                    "refresh_token: must be a string".to_owned(),
                    format!("access_token: {unknown}"),
                    format!("scope: {unknown}"),
                ],
            ),
            (
                r#"{"token": "r"}"#,
                vec![
                    "refresh_token: is required".to_owned(),
                    format!("token: {unknown}"),
                ],
            ),
        ];
        for (body, expected) in cases {
            let request: RefreshRequest = serde_json::from_str(body).unwrap();
            let problem = request.required().expect_err(body);
            assert_eq!(listed(&problem), expected, "{body}");
        }
    }

    #[test]
    fn a_logout_body_is_optional_but_when_sent_every_bad_member_is_listed() {
        let body = |text: &'static str| logout_body(&Bytes::from_static(text.as_bytes()));

        assert_eq!(body("").unwrap(), None, "no body");
        assert_eq!(body(" \n").unwrap(), None, "only blanks");
        assert_eq!(body("{}").unwrap(), None, "no token");
        assert_eq!(
            body(r#"{"refresh_token": "r"}"#).unwrap().as_deref(),
            Some("r")
        );

        for wrong in [
            r#"{"refresh_token": null}"#,
            r#"{"refresh_token": 7}"#,
            r#"{"refresh_token": false}"#,
            r#"{"refresh_token": {"token": "r"}}"#,
        ] {
            let problem = body(wrong).expect_err(wrong);
            assert_eq!(listed(&problem).len(), 1, "{wrong}");
            assert!(
                listed(&problem)[0].starts_with("refresh_token: must"),
                "{wrong}"
            );
        }

        let problem = body(r#"{"refresh_token": [], "everywhere": true}"#).unwrap_err();
        assert_eq!(
            listed(&problem),
            [
                "refresh_token: must be a string",
                "everywhere: is not a known field (expected `refresh_token`)",
            ]
        );
        assert_eq!(body("{nope").unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body("[1]").unwrap_err().status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "JSON, but not an object"
        );
    }
}
