//! `/docs` (Swagger UI) and `/redoc` (Redoc): the merged document for people, with every asset
//! inside the binary — no CDN, no font service, nothing fetched from elsewhere, so the pages
//! work where the gateway has no internet (and leak no visit to a third party where it has).
//! Swagger UI comes from `utoipa-swagger-ui` (its `vendored` build embeds the release);
//! Redoc's standalone bundle (MIT, v2.5.4, from the `redoc` npm package) is in `assets/redoc`.
//! Both read `/openapi.json` from the gateway that served them, and "Try it out" calls it.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::app::App;

/// Swagger UI's page; its assets are under `/docs/`.
pub const DOCS: &str = "/docs";
/// Redoc's page, and its script.
pub const REDOC: &str = "/redoc";
const REDOC_SCRIPT: &str = "/redoc/redoc.standalone.js";

static REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

/// The exact paths the pages answer, and the prefix of Swagger UI's assets.
pub fn paths() -> (Vec<String>, &'static str) {
    (
        vec![DOCS.to_owned(), REDOC.to_owned(), REDOC_SCRIPT.to_owned()],
        "/docs/",
    )
}

/// The pages' routes, to merge into the gateway's own endpoints.
pub fn router() -> Router<App> {
    let swagger = SwaggerUi::new(DOCS).config(
        Config::new([super::DOCUMENT_PATH])
            // A token entered in "Authorize" survives a reload of the page.
            .persist_authorization(true)
            .try_it_out_enabled(true),
    );
    Router::from(swagger)
        .route(REDOC, get(redoc_page))
        .route(REDOC_SCRIPT, get(redoc_script))
}

async fn redoc_page() -> Response {
    // No web fonts: Redoc falls back to the system's.
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gatehouse API</title>
</head>
<body>
<redoc spec-url="{document}"></redoc>
<script src="{script}"></script>
</body>
</html>
"#,
        document = super::DOCUMENT_PATH,
        script = REDOC_SCRIPT,
    );
    Html(page).into_response()
}

async fn redoc_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
        .into_response()
}
