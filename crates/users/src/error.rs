//! The users service's errors, and the one place that decides the status code of each.

use axum::response::{IntoResponse, Response};
use kit::{FieldError, Problem};

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
            Error::Conflict { .. } => Problem::conflict(detail),
            Error::InvalidCredentials => Problem::unauthorized(detail)
                .with_title("Invalid credentials")
                .with_type(kit::problem::INVALID_CREDENTIALS),
            Error::Forbidden(_) => Problem::forbidden(detail),
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
