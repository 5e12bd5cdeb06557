//! `GET /openapi.json`: a service's OpenAPI 3.1 document, generated from its handlers with
//! utoipa (never written by hand), serialized once at start; and the problem responses every
//! operation shares, defined once here.
//!
//! An operation lists what it answers in `responses(...)`: its success, the shared problems by
//! name from [`problems`] (`problems::Identified`, `problems::JsonBody`, …), and its own
//! problems in its own words with no body given: `(status = FORBIDDEN, description = "The
//! caller is not an admin.")`. [`finish`] gives every 4xx and 5xx response without a body the
//! `application/problem+json` [`ProblemDetails`] body, so no handler repeats it. A response
//! listed after a shared one, for the same status, replaces it.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::info::{InfoBuilder, LicenseBuilder};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
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
    /// The W3C trace id of the request (32 lowercase hex digits), to follow it across services.
    #[schema(required = false, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
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
    // The problem schema and the ones it refers to (`FieldError`): every problem response
    // refers to it by name.
    let mut schemas = vec![(
        String::from(PROBLEM_SCHEMA),
        <ProblemDetails as utoipa::PartialSchema>::schema(),
    )];
    <ProblemDetails as ToSchema>::schemas(&mut schemas);
    components.schemas.extend(schemas);
    for item in api.paths.paths.values_mut() {
        for operation in operations(item) {
            give_problems_their_body(operation);
        }
    }
    refuse_unknown_members(&mut api);
    api
}

/// Marks every object schema a request body reaches `additionalProperties: false`: services
/// read bodies with [`crate::fields`], which lists each unknown member as an error, and a
/// client generated from the document should know. (utoipa states it only for
/// `deny_unknown_fields`, which stops at the first unknown member.)
fn refuse_unknown_members(api: &mut OpenApi) {
    let mut pending = Vec::new();
    for item in api.paths.paths.values_mut() {
        for operation in operations(item) {
            if let Some(body) = &operation.request_body {
                references(
                    &serde_json::to_value(body).unwrap_or_default(),
                    &mut pending,
                );
            }
        }
    }
    let Some(components) = api.components.as_mut() else {
        return;
    };
    let mut reached = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if let Some(schema) = components.schemas.get(&name) {
            if reached.insert(name) {
                references(
                    &serde_json::to_value(schema).unwrap_or_default(),
                    &mut pending,
                );
            }
        }
    }
    for name in reached {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
            if !object.properties.is_empty() {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

/// The component schemas `value` refers to, by name.
fn references(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                match (key.as_str(), member) {
                    ("$ref", serde_json::Value::String(reference)) => {
                        if let Some(name) = reference.strip_prefix("#/components/schemas/") {
                            into.push(name.to_owned());
                        }
                    }
                    _ => references(member, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| references(item, into)),
        _ => {}
    }
}

const PROBLEM_SCHEMA: &str = "ProblemDetails";

/// Every operation of a path item.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
        &mut item.query,
    ]
    .into_iter()
    .flatten()
    .chain(item.additional_operations.values_mut())
}

/// Each 4xx and 5xx response the operation states without a body gets the problem body.
fn give_problems_their_body(operation: &mut Operation) {
    for (status, response) in &mut operation.responses.responses {
        let RefOr::T(response) = response else {
            continue;
        };
        if (status.starts_with('4') || status.starts_with('5')) && response.content.is_empty() {
            response.content.insert(
                crate::problem::CONTENT_TYPE.to_owned(),
                problem_content().into(),
            );
        }
    }
}

/// The problem responses operations share, each defined once; list them by name in an
/// operation's `responses(...)`.
pub mod problems {
    use std::collections::BTreeMap;

    use utoipa::openapi::response::{Response, ResponseBuilder};
    use utoipa::openapi::RefOr;
    use utoipa::IntoResponses;

    /// `(status, description)` pairs as the responses of a set.
    fn set(responses: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
        responses
            .iter()
            .map(|(status, description)| {
                let response = ResponseBuilder::new()
                    .description(*description)
                    .content(crate::problem::CONTENT_TYPE, super::problem_content())
                    .build();
                ((*status).to_owned(), RefOr::T(response))
            })
            .collect()
    }

    /// What every operation behind the gateway's identity token may answer: 401 without a
    /// valid token, and 500 for a fault of ours.
    pub struct Identified;

    impl IntoResponses for Identified {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            set(&[
                (
                    "401",
                    "No valid identity token from the gateway: the service is reached through the gateway.",
                ),
                (
                    "500",
                    "An unexpected error; the `request_id` identifies it in the logs.",
                ),
            ])
        }
    }

    /// What an operation that takes a JSON body may answer about it (see [`crate::fields`]).
    pub struct JsonBody;

    impl IntoResponses for JsonBody {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            set(&[
                ("400", "The body is not well-formed JSON."),
                ("413", "The body is larger than the service accepts."),
                ("415", "The body is not sent as `application/json`."),
                (
                    "422",
                    "The body is not a JSON object, or members of it are missing, of the wrong type, \
                     unknown or invalid: `errors` lists each by its path (`items[2].quantity`).",
                ),
            ])
        }
    }

    /// What a list taking [`crate::pagination::Pagination`] may answer about it.
    pub struct Paged;

    impl IntoResponses for Paged {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            set(&[
                (
                    "400",
                    "A query parameter is malformed (a `limit` that is not a whole number, say); \
                     `errors` lists each.",
                ),
                (
                    "422",
                    "`limit` or `offset` out of range; `errors` lists each.",
                ),
            ])
        }
    }

    /// What an operation that reads or writes the service's database may answer when the
    /// database cannot take it (see [`crate::outage`]).
    pub struct Stored;

    impl IntoResponses for Stored {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            set(&[(
                "503",
                "The database is unavailable or stayed busy; retry after `Retry-After` seconds.",
            )])
        }
    }
}

/// The body of every problem response.
fn problem_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(PROBLEM_SCHEMA)))
        .build()
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

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi as _;

    /// A request body, read only for its schema.
    #[derive(serde::Deserialize, ToSchema)]
    #[allow(dead_code)]
    struct Rename {
        name: String,
    }

    #[utoipa::path(
        post,
        path = "/things",
        request_body = Rename,
        responses(
            (status = 200, description = "Renamed."),
            problems::Identified,
            problems::JsonBody,
            (status = 403, description = "Not yours."),
            (status = 422, description = "The name is taken."),
        )
    )]
    #[allow(dead_code)]
    async fn rename() {}

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(rename), components(schemas(Rename)))]
    struct Document;

    #[test]
    fn every_problem_response_has_the_problem_body_in_the_operations_own_words_where_it_has_them() {
        let api = finish(Document::openapi(), "things", "1.0.0", "Things.");
        let json = serde_json::to_value(&api).unwrap();
        let responses = &json["paths"]["/things"]["post"]["responses"];
        for status in ["400", "401", "403", "413", "415", "422", "500"] {
            assert_eq!(
                responses[status]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/ProblemDetails",
                "{status}"
            );
        }
        assert_eq!(responses["403"]["description"], "Not yours.");
        assert_eq!(
            responses["422"]["description"], "The name is taken.",
            "listed after the shared one, the operation's own replaces it"
        );
        assert!(
            responses["200"]["content"].is_null(),
            "a success is left alone"
        );
        let schemas = &json["components"]["schemas"];
        assert!(schemas["FieldError"].is_object(), "the problem's own parts");
        assert_eq!(
            schemas["Rename"]["additionalProperties"], false,
            "a request body refuses unknown members"
        );
        assert!(schemas["ProblemDetails"]["additionalProperties"].is_null());
    }
}
