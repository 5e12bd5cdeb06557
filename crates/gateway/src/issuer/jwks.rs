//! `GET /.well-known/jwks.json`: the public keys, so any standard JWT library can verify
//! gatehouse's tokens, and services can verify identity tokens.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::app::App;

/// Where the keys are published (RFC 8414's well-known location).
pub const PATH: &str = "/.well-known/jwks.json";

pub async fn serve(State(state): State<App>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            // Short, so a rotated key is seen soon by those that cache.
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        state.auth.keys.current().jwks_json(),
    )
        .into_response()
}
