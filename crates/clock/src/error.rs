//! The clock's errors, and the one place that decides the status code of each. The clock can
//! only refuse a caller (its identity token or its scopes); a service with more to go wrong
//! adds variants here (see users' and orders' `error.rs`).

use axum::response::{IntoResponse, Response};
use kit::Problem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A refusal the kit shaped: no or bad identity token (401), a missing scope (403).
    #[error(transparent)]
    Refused(#[from] Problem),
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Refused(problem) => problem,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
