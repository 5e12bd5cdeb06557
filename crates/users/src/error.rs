//! The users service's errors, and the one place that decides the status code of each.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kit::{FieldError, Problem};

/// The problem type of a wrong `current_password`.
pub const WRONG_CURRENT_PASSWORD: &str = "urn:gatehouse:problem:wrong-current-password";
/// The problem type of an admin's own password or email changed through the admin API without
/// `current_password`.
pub const CURRENT_PASSWORD_REQUIRED: &str = "urn:gatehouse:problem:current-password-required";
/// The problem type of a password guess refused because too many came before it.
pub const TOO_MANY_ATTEMPTS: &str = "urn:gatehouse:problem:too-many-attempts";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Well-formed JSON whose fields are not acceptable; lists every bad field.
    #[error("some fields are invalid")]
    InvalidFields(Vec<FieldError>),
    #[error("No user has this id.")]
    NotFound,
    /// A unique field (`username` or `email`) already belongs to another user.
    #[error("Another user already has this {field}.")]
    Conflict { field: &'static str },
    /// The change would leave no active admin: nobody could manage accounts any more.
    #[error("This is the last active admin: make another user an active admin first.")]
    LastAdmin,
    /// `current_password` is not the account's password.
    #[error("The current password is incorrect.")]
    WrongCurrentPassword,
    /// An admin changing their own password or email through `/users/{id}` sent no
    /// `current_password`. 403 rather than 422: the body is valid for any other account, and the
    /// document cannot know whose account the caller is.
    #[error("Changing your own password or email needs `current_password`, as through /users/me.")]
    CurrentPasswordRequired,
    /// Too many password guesses under one key (an account, a caller and a username) in the
    /// window; the next may come after `retry_after`.
    #[error("Too many password attempts; try again later.")]
    TooManyAttempts { retry_after: std::time::Duration },
    /// Wrong password, unknown user or inactive account: one answer for all three, so the
    /// answer never tells which.
    #[error("The username or password is incorrect.")]
    InvalidCredentials,
    /// The caller is known but may not do this; the message says what they may do instead.
    #[error("{0}")]
    Forbidden(String),
    /// A refusal the kit already shaped: no or bad identity (401), missing role (403), …
    #[error(transparent)]
    Refused(#[from] Problem),
    /// Our own fault; the client sees a generic 500 and the cause is logged once.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        let detail = error.to_string();
        match error {
            Error::InvalidFields(errors) => Problem::invalid_fields(errors),
            Error::NotFound => Problem::not_found(detail),
            Error::Conflict { .. } | Error::LastAdmin => Problem::conflict(detail),
            Error::InvalidCredentials => Problem::unauthorized(detail)
                .with_title("Invalid credentials")
                .with_type(kit::problem::INVALID_CREDENTIALS),
            Error::Forbidden(_) => Problem::forbidden(detail),
            // 403, not 401: the caller's token is fine, and a 401 would tell clients to drop
            // or refresh it.
            Error::WrongCurrentPassword => Problem::forbidden(detail)
                .with_title("Wrong current password")
                .with_type(WRONG_CURRENT_PASSWORD),
            Error::CurrentPasswordRequired => Problem::forbidden(detail)
                .with_title("Current password required")
                .with_type(CURRENT_PASSWORD_REQUIRED),
            Error::TooManyAttempts { retry_after } => {
                // Whole seconds, rounded up, so a client waiting that long is never early.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Problem::new(StatusCode::TOO_MANY_REQUESTS)
                    .with_detail(detail)
                    .with_type(TOO_MANY_ATTEMPTS)
                    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
            }
            Error::Refused(problem) => problem,
            Error::Unexpected(cause) => kit::outage::unexpected(&cause),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
