//! `GET /openapi.json`: a service's OpenAPI 3.1 document, generated from its handlers with
//! utoipa (never written by hand), serialized once at start.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::info::{InfoBuilder, LicenseBuilder};
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

/// The project's licence, as the workspace's Cargo metadata states it (an SPDX expression).
pub const LICENSE: &str = env!("CARGO_PKG_LICENSE");

/// Gives `api` the service's own `info` (title, its crate's `version`, description and the
/// project's licence, nothing else), the identity-token security scheme and the problem schema.
///
/// `info` is replaced whole: utoipa fills it from the Cargo metadata of whichever crate built
/// the router (utoipa-axum's own, with its authors' contact, for `OpenApiRouter::new()`), and
/// a service's document must name nobody else.
pub fn finish(mut api: OpenApi, title: &str, version: &str, description: &str) -> OpenApi {
    api.info = InfoBuilder::new()
        .title(title)
        .version(version)
        .description(Some(description))
        .license(Some(
            LicenseBuilder::new()
                .name(LICENSE)
                .identifier(Some(LICENSE))
                .build(),
        ))
        .build();
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
