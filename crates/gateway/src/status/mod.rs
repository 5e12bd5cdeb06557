//! The status page on the admin listener: `GET /status` (one HTML page for people, inside the
//! binary, nothing fetched from anywhere else) and `GET /status.json` (the same for scripts; the
//! page polls it). An operator with a browser and the admin port sees each service's instances,
//! each route's rate, latency and errors over the last minute, the configuration's generation
//! and last reload, and the signing keys.
//!
//! # Layout
//! - [`window`]: a route's last minute, fed by the observe phase: the only part on the request
//!   path.
//! - [`report`]: the JSON document, read where each part lives when it is asked for.
//! - `page.html`: the page, with its style and script inline (served with a Content Security
//!   Policy that allows exactly those two blocks and requests to this origin).

pub mod report;
pub mod window;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::auth::keys;
use report::{KeyView, KeysView, Report};

/// The page's path on the admin listener.
pub const PAGE: &str = "/status";
/// The document's path on the admin listener.
pub const DOCUMENT: &str = "/status.json";

/// How long a read of the signing keys serves the page: they change when someone rotates, a
/// few times a year, while an open page asks every second or two.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(5);
/// How long the store may take to list the keys before the page shows the last list read.
const KEYS_READ_TIMEOUT: Duration = Duration::from_secs(1);

static PAGE_HTML: &str = include_str!("page.html");

/// The page's Content Security Policy: its one inline style and one inline script by their
/// hashes, requests only to where it came from, no framing. Computed once from the page.
static PAGE_POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; style-src '{style}'; script-src '{script}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        style = inline_hash(PAGE_HTML, "<style>", "</style>"),
        script = inline_hash(PAGE_HTML, "<script>", "</script>"),
    )
});

/// `sha256-…` of the text between `open` and `close` in `page` (of nothing when absent: the
/// block then is not allowed to run, which the page's tests would catch).
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    let block = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(block, _)| block);
    let digest = Sha256::digest(block.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// What the status endpoints keep between requests: the signing keys as last read.
#[derive(Default)]
pub struct StatusState {
    keys: tokio::sync::Mutex<KeysRead>,
}

#[derive(Default)]
struct KeysRead {
    at: Option<Instant>,
    at_unix_ms: Option<u64>,
    keys: Vec<KeyView>,
    error: Option<String>,
}

/// The two routes, to merge into the admin listener's router.
pub fn router() -> Router<App> {
    Router::new()
        .route(PAGE, get(page))
        .route(DOCUMENT, get(document))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE_HTML,
    )
        .into_response()
}

async fn document(State(app): State<App>) -> Response {
    let keys = signing_keys(&app).await;
    let routing = app.routing();
    let clocks = report::Clocks::of(&app.clock);
    let report = Report {
        generated_at: report::now_rfc3339(clocks.unix_ms),
        window_seconds: report::window_seconds(),
        config: report::config(&app.reloads),
        services: report::services(&routing.upstreams, clocks),
        // The observe phase records on the process's monotonic clock (it reads it for the
        // request's duration anyway), not the app's.
        routes: report::routes(&routing.table, crate::clock::monotonic_ms()),
        keys,
    };
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Json(report),
    )
        .into_response()
}

/// The signing keys, read again from the store when the last read is older than
/// [`KEYS_FRESH_FOR`]; when the store does not answer, the last list read and why.
async fn signing_keys(app: &App) -> KeysView {
    let mut read = app.status.keys.lock().await;
    let fresh = read.at.is_some_and(|at| at.elapsed() < KEYS_FRESH_FOR);
    if !fresh {
        let stored = tokio::time::timeout(KEYS_READ_TIMEOUT, app.store.signing_keys()).await;
        read.at = Some(Instant::now());
        match stored {
            Ok(Ok(stored)) => {
                let timing = keys::KeyTiming::of(&app.config());
                read.keys = keys::describe(&stored, timing)
                    .into_iter()
                    .map(KeyView::from)
                    .collect();
                read.at_unix_ms = Some(crate::clock::unix_ms());
                read.error = None;
            }
            Ok(Err(error)) => {
                // Logged once per read, which is at most every few seconds.
                tracing::warn!(error = %format!("{error:#}"), "status: the signing keys could not be read");
                read.error = Some("the store did not list the keys".to_owned());
            }
            Err(_) => {
                read.error = Some(format!(
                    "the store did not list the keys within {KEYS_READ_TIMEOUT:?}"
                ));
            }
        }
    }
    KeysView {
        read_at: read.at_unix_ms.map(report::now_rfc3339),
        error: read.error.clone(),
        keys: read.keys.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_pages_inline_style_and_script() {
        let style = inline_hash(PAGE_HTML, "<style>", "</style>");
        let script = inline_hash(PAGE_HTML, "<script>", "</script>");
        let empty = inline_hash("", "<style>", "</style>");
        assert_ne!(style, empty, "the page has an inline style");
        assert_ne!(script, empty, "the page has an inline script");
        assert_eq!(PAGE_HTML.matches("<script").count(), 1, "one script");
        assert_eq!(PAGE_HTML.matches("<style").count(), 1, "one style");
        assert!(PAGE_POLICY.contains(&format!("script-src '{script}'")));
        assert!(PAGE_POLICY.contains(&format!("style-src '{style}'")));
        assert!(PAGE_POLICY.contains("connect-src 'self'"));
    }

    #[test]
    fn the_page_fetches_nothing_from_elsewhere_and_never_writes_markup_from_data() {
        // SVG's namespace is a name, not an address the browser fetches.
        let page = PAGE_HTML.replace("\"http://www.w3.org/2000/svg\"", "");
        for outside in ["http://", "https://", "//cdn", "@import", "url("] {
            assert!(!page.contains(outside), "the page mentions {outside}");
        }
        // Text from the document goes in with textContent; these would parse it as markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE_HTML.contains(sink), "the page uses {sink}");
        }
        assert!(PAGE_HTML.contains(DOCUMENT), "the page polls {DOCUMENT}");
    }
}
