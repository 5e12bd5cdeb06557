//! `GET /openapi.json`: a service's OpenAPI 3.1 document, generated from its handlers with
//! utoipa (never written by hand), serialized once at start.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa::ToSchema;

use crate::problem::FieldError;

/// An RFC 9457 problem: the shape of every error body.
#[derive(Serialize, ToSchema)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: Option<String>,
    /// The path of the request this answers.
    pub instance: Option<String>,
    /// The `X-Request-Id` of the request, to find it in the logs.
    pub request_id: Option<String>,
    /// One entry per invalid field, on 422.
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
}

/// The security scheme every service shares: the gateway's identity token.
pub const SECURITY_SCHEME: &str = "gateway_identity";

/// Adds the identity-token security scheme and the problem schema to `api`.
pub fn finish(mut api: OpenApi, title: &str, description: &str) -> OpenApi {
    api.info.title = title.to_owned();
    api.info.description = Some(description.to_owned());
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SECURITY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            crate::identity::HEADER.as_str(),
            "The identity token the gateway signs for this service; services are reached through the gateway.",
        ))),
    );
    let (name, schema) = (
        String::from("ProblemDetails"),
        <ProblemDetails as utoipa::PartialSchema>::schema(),
    );
    components.schemas.insert(name, schema);
    api
}

/// Serves `api` at `/openapi.json`, serialized once.
pub fn router(api: &OpenApi) -> Router {
    let json = axum::body::Bytes::from(serde_json::to_vec(api).unwrap_or_default());
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], json).into_response() }
        }),
    )
}
