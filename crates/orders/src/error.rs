//! The orders service's errors, and the one place that decides the status code of each.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kit::{FieldError, Problem};

use crate::domain::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Well-formed JSON whose fields are not acceptable; lists every bad field.
    #[error("some fields are invalid")]
    InvalidFields(Vec<FieldError>),
    /// A header the client sent cannot be used; says which and why.
    #[error("{0}")]
    BadHeader(String),
    /// No such order, or one the caller may not see: the two answer alike, so an order's
    /// existence is never revealed to anyone but its owner and admins.
    #[error("No order has this id.")]
    NotFound,
    /// The order is no longer in a status that allows the change.
    #[error("The order is {status}; only a pending order can be {to}.")]
    WrongStatus { status: Status, to: Status },
    /// The `Idempotency-Key` already made an order from a different request.
    #[error(
        "This Idempotency-Key was already used with a different request; send a new key for a new order."
    )]
    KeyReused,
    /// The caller is known but may not do this; the message says why.
    #[error("{0}")]
    Forbidden(String),
    /// A refusal the kit already shaped: no or bad identity (401), …
    #[error(transparent)]
    Refused(#[from] Problem),
    /// Our own fault, or the database out of reach or busy through every retry (503, see
    /// `kit::outage`); the client sees a generic body and the cause is logged once.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        let detail = error.to_string();
        match error {
            Error::InvalidFields(errors) => Problem::invalid_fields(errors),
            Error::BadHeader(_) => Problem::bad_request(detail),
            Error::NotFound => Problem::not_found(detail),
            Error::WrongStatus { .. } => Problem::conflict(detail).with_title("Wrong order status"),
            Error::KeyReused => Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                .with_title("Idempotency key reused")
                .with_detail(detail),
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
