//! The API as the gateway's clients see it: one OpenAPI 3.1 document at `GET /openapi.json`,
//! merged from the route table and the services' own documents, and the pages that show it
//! (`/docs`, Swagger UI; `/redoc`, Redoc), their assets inside the binary. The same service
//! documents drive the optional request-body validation of routes (`request:
//! { validate_body: true }`).
//!
//! # Layout
//! - [`specs`]: each routed service's `/openapi.json`, fetched through the service client,
//!   kept, refreshed; the last good copy when a service is down.
//! - [`paths`]: which service paths a route's `to` reaches, under which public path.
//! - [`document`]: the merge: paths, methods, security, namespaced components.
//! - [`answers`]: the gateway's own answers every operation lists, and the shared `Problem`.
//! - [`own`]: the gateway's own endpoints (sign-in, tokens, keys).
//! - [`body`]: a request body checked against its operation's schema before it is forwarded.
//! - [`pages`]: `/docs` and `/redoc`.

pub mod answers;
pub mod body;
pub mod document;
pub mod own;
pub mod pages;
pub mod paths;
pub mod specs;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::config::GatewayConfig;

/// Where the merged document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";

/// The merged document, serialized, for the configuration and service documents it was built
/// from: rebuilt only when either changed (a reload, a service's new document).
struct Built {
    config: Arc<GatewayConfig>,
    generation: u64,
    json: Bytes,
}

/// The services' documents and the merged one, for as long as the gateway runs.
#[derive(Default)]
pub struct ApiDocs {
    pub specs: specs::SpecCache,
    built: Mutex<Option<Arc<Built>>>,
    /// Compiled request-body validators (see [`body`]).
    pub validators: body::Validators,
}

impl ApiDocs {
    /// The merged document for the configuration in force, built now if it changed.
    pub async fn document(&self, app: &App) -> Bytes {
        let specs = self.specs.ready(app).await;
        let config = app.config();
        {
            let built = self
                .built
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(built) = built
                .as_ref()
                .filter(|b| Arc::ptr_eq(&b.config, &config) && b.generation == specs.generation)
            {
                return built.json.clone();
            }
        }
        let document = document::build(&config, &specs);
        let json = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
        *self
            .built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Built {
            config,
            generation: specs.generation,
            json: json.clone(),
        }));
        json
    }
}

/// `GET /openapi.json`.
pub async fn serve_document(State(app): State<App>) -> Response {
    let json = app.docs.document(&app).await;
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // It follows reloads and the services' deployments: always asked for again.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        json,
    )
        .into_response()
}
