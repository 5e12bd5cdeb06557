//! Extractors whose rejections are problems: a malformed body or path answers with a 4xx
//! `application/problem+json` a client can act on, never axum's plain-text default.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

use crate::problem::Problem;

/// A JSON body. A body that is not JSON at all answers 400, well-formed JSON of the wrong shape
/// (not an object, a missing field, a wrong type) 422, a missing `Content-Type:
/// application/json` 415, an oversized body 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await?;
        // The content type and the syntax first, as axum judges them, so every syntax error is
        // a 400 however the body starts: read straight into `T`, a truncated `[` fails as "not
        // an object" (422) before the end of the input is seen. Then `T` from the same bytes,
        // not from a parsed map, so a member sent twice is refused rather than silently the
        // last one.
        let checked = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
        let axum::Json(IgnoredAny) = axum::Json::<IgnoredAny>::from_request(checked, state).await?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Json(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a value of the wrong form (say, not a UUID) is a 404: no such resource.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

/// Query parameters; a malformed query string is a 400 naming the parameter.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let status = match &rejection {
            JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
            JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            other => other.status(),
        };
        Problem::new(status).with_detail(rejection.body_text())
    }
}

impl From<BytesRejection> for Problem {
    fn from(rejection: BytesRejection) -> Self {
        Problem::new(rejection.status()).with_detail(rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        match rejection {
            PathRejection::FailedToDeserializePathParams(_) => {
                Problem::not_found("No resource has this identifier.")
            }
            other => Problem::new(other.status()).with_detail(other.body_text()),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Problem::bad_request(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // read only to see whether the body parses
    struct Rename {
        name: String,
    }

    async fn status_of(content_type: Option<&str>, body: &'static str) -> StatusCode {
        let mut request = axum::http::Request::post("/");
        if let Some(content_type) = content_type {
            request = request.header(axum::http::header::CONTENT_TYPE, content_type);
        }
        let request = request.body(axum::body::Body::from(body)).unwrap();
        match Json::<Rename>::from_request(request, &()).await {
            Ok(_) => StatusCode::OK,
            Err(problem) => problem.status(),
        }
    }

    #[tokio::test]
    async fn malformed_json_is_400_however_it_starts_and_the_wrong_shape_is_422() {
        let json = Some("application/json");
        for (content_type, body, status, reason) in [
            (json, r#"{"name": "a"}"#, StatusCode::OK, "a good body"),
            (json, "[", StatusCode::BAD_REQUEST, "a truncated array"),
            (
                json,
                r#"{"name": "#,
                StatusCode::BAD_REQUEST,
                "a truncated object",
            ),
            (json, "", StatusCode::BAD_REQUEST, "nothing"),
            (json, "[]", StatusCode::UNPROCESSABLE_ENTITY, "an array"),
            (
                json,
                "{}",
                StatusCode::UNPROCESSABLE_ENTITY,
                "a missing member",
            ),
            (
                json,
                r#"{"name": "a", "name": "b"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "a member sent twice",
            ),
            (
                Some("text/plain"),
                r#"{"name": "a"}"#,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not sent as JSON",
            ),
            (
                None,
                "",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "no content type",
            ),
        ] {
            assert_eq!(status_of(content_type, body).await, status, "{reason}");
        }
    }
}
