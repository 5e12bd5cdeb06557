//! `GET /healthz` answers while the process serves; `GET /readyz` also checks what the service
//! needs (its database), so an orchestrator or the gateway stops sending it traffic when not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// A readiness check: `Ok` when the dependency answers, else why not (logged, not sent).
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

pub fn router(checks: Vec<(&'static str, Check)>) -> Router {
    let checks = Arc::new(checks);
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            get(move || {
                let checks = Arc::clone(&checks);
                async move { readiness(&checks).await }
            }),
        )
}

async fn readiness(checks: &[(&'static str, Check)]) -> (StatusCode, Json<serde_json::Value>) {
    let mut report = serde_json::Map::new();
    let mut ready = true;
    for (name, check) in checks {
        let state = match check().await {
            Ok(()) => "ok",
            Err(error) => {
                tracing::warn!(check = name, %error, "readiness check failed");
                ready = false;
                "failing"
            }
        };
        report.insert((*name).to_owned(), json!(state));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if ready { "ready" } else { "not ready" };
    (status, Json(json!({ "status": word, "checks": report })))
}
