//! Per-route request pre-processing and response post-processing (issue 14): the rules a
//! route's `request:` and `response:` keys give, checked as the file is read, and the pure
//! logic that applies them. The pipeline phases that call it are `pipeline::prepare` (before
//! forward) and `pipeline::transform` (after it, before the cache stores the answer).
//!
//! # Layout
//! - [`headers`]: header edits, and the names a route may never touch (the gateway's own).
//! - [`query`]: query-parameter edits that keep the client's bytes for what they do not name.
//! - [`path`]: field paths (`items[*].secret`) and the tree one `allow` or `deny` list makes.
//! - [`json`]: `allow` / `deny` and `rename` on a parsed answer.
//! - [`coding`]: gzip, br and zstd: negotiation, decoding with a cap, encoding.
//! - [`body`]: one answer's body rewritten, or why it is left alone or refused.
//!
//! A route without `request:` or `response:` holds `None` for each, and the phases return at
//! once on `None`: it pays one branch per phase.

pub mod body;
pub mod coding;
pub mod headers;
pub mod json;
pub mod path;
pub mod query;

use std::sync::Arc;

pub use headers::{RequestHeaderEdits, ResponseHeaderEdits};
pub use json::JsonRules;
pub use query::QueryEdits;

/// A route's transforms; `None` where it has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTransform {
    pub request: Option<Arc<RequestRules>>,
    pub response: Option<Arc<ResponseRules>>,
}

/// What a route does to a request before it is forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRules {
    pub headers: RequestHeaderEdits,
    pub query: QueryEdits,
    // Body validation against the service's OpenAPI schema (`request: { validate_body: true }`)
    // is the next rule here; it runs in `pipeline::prepare`, after these edits.
}

/// What a route does to its service's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRules {
    pub headers: ResponseHeaderEdits,
    /// `None`: bodies are never read, only headers edited.
    pub json: Option<JsonRules>,
    /// The largest body rewritten, as it comes and once decoded; larger ones pass untouched.
    pub max_body: u64,
}

/// `response.max_body` when a route does not say.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// The largest `response.max_body`: each answer being rewritten is held whole, twice.
pub const MAX_MAX_BODY: u64 = 16 * 1024 * 1024;
