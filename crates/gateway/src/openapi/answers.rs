//! The answers the gateway itself may make to any routed request, as every operation lists
//! them: 401 (with `WWW-Authenticate`) and 403 where the route is protected, 404, 413 where a
//! body is taken, 400/415/422 where the gateway validates the body, 429 (with the RateLimit
//! headers) where the route has a limit, 502/503/504 always — all as problem+json with the one
//! shared `Problem` schema (the kit's, the same type every service answers with).

use serde_json::{json, Map, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

use crate::config::{AuthPolicy, RouteSettings};

/// The shared problem schema's name in the merged document.
pub const PROBLEM: &str = "Problem";

/// The gateway's name for a component the services share with it: the kit's `ProblemDetails`
/// is the gateway's `Problem`; `FieldError` keeps its name.
pub fn shared_name(name: &str) -> &str {
    match name {
        "ProblemDetails" => PROBLEM,
        other => other,
    }
}

/// The components every merged document starts with: the problem schema and the ones it
/// refers to, generated from the kit's types (the services' own are compared against these).
pub fn shared_components() -> Map<String, Value> {
    let mut schemas: Vec<(String, RefOr<Schema>)> = vec![(
        PROBLEM.to_owned(),
        <kit::openapi::ProblemDetails as utoipa::PartialSchema>::schema(),
    )];
    <kit::openapi::ProblemDetails as utoipa::ToSchema>::schemas(&mut schemas);
    let schemas: Map<String, Value> = schemas
        .into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null)))
        .collect();
    let mut components = Map::new();
    components.insert("schemas".to_owned(), Value::Object(schemas));
    components
}

/// A problem+json response.
pub fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { kit::problem::CONTENT_TYPE: { "schema": { "$ref": format!("#/components/schemas/{PROBLEM}") } } },
    })
}

fn header(description: &str, schema: Value) -> Value {
    json!({ "description": description, "schema": schema })
}

/// Adds the gateway's own answers to an operation's `responses`: where the service documents
/// the same status, its response stays (its body is a problem too) and the description says
/// the gateway may answer it as well.
pub fn add_gateway_answers(responses: &mut Value, route: &RouteSettings, takes_body: bool) {
    let mut own: Vec<(&str, Value)> = Vec::new();
    if route.auth.needs_identity() {
        let mut unauthorized = problem(
            "No valid access token: missing, malformed, expired or revoked (the gateway's answer).",
        );
        unauthorized["headers"] = json!({
            "WWW-Authenticate": header("`Bearer realm=\"gatehouse\"`, with `error=\"invalid_token\"` when one was sent.", json!({ "type": "string" })),
        });
        // The service's own 401 is about the gateway's identity token, which a client never
        // sees: the gateway's replaces it.
        own.push(("401", unauthorized));
    }
    if matches!(route.auth, AuthPolicy::Require { .. }) {
        own.push((
            "403",
            problem("The token lacks the role or scope the route requires (the gateway's answer)."),
        ));
    }
    own.push((
        "404",
        problem("No route matches the path (the gateway's answer)."),
    ));
    if takes_body {
        own.push((
            "413",
            problem("The body is larger than the gateway accepts (`limits.max_body`)."),
        ));
    }
    if route.request_checks.validate_body {
        own.push((
            "400",
            problem("The body is not well-formed JSON (checked at the gateway)."),
        ));
        own.push((
            "415",
            problem("The body is not sent as JSON (checked at the gateway)."),
        ));
        own.push((
            "422",
            problem(
                "The body does not match the operation's schema: `errors` lists each field (checked at \
                 the gateway, before the service sees the request).",
            ),
        ));
    }
    if !route.rate_limit.is_empty() {
        let mut limited = problem(
            "A rate limit of the route is exceeded: `violated-policies` names it; retry after `Retry-After` seconds.",
        );
        limited["headers"] = rate_limit_headers(true);
        own.push(("429", limited));
    }
    own.push((
        "502",
        problem("The service answered with something that is not a valid HTTP response."),
    ));
    let mut unavailable = problem("No instance of the service is reachable or healthy.");
    unavailable["headers"] = json!({
        "Retry-After": header("Seconds until an instance may be back.", json!({ "type": "integer" })),
    });
    own.push(("503", unavailable));
    own.push((
        "504",
        problem("The service did not answer within the route's timeout."),
    ));

    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    for (status, answer) in own {
        match responses.get_mut(status) {
            Some(theirs) if status != "401" && theirs.get("$ref").is_none() => {
                let description = theirs["description"].as_str().unwrap_or_default();
                let gateway = answer["description"].as_str().unwrap_or_default();
                theirs["description"] = Value::String(format!("{description} Or: {gateway}"));
                if let Some(headers) = answer.get("headers") {
                    theirs["headers"] = headers.clone();
                }
            }
            _ => {
                responses.insert(status.to_owned(), answer);
            }
        }
    }
    if !route.rate_limit.is_empty() {
        // Every answer on a limited route carries the quota left.
        for (status, response) in responses.iter_mut() {
            if status.starts_with('2') && response.get("$ref").is_none() {
                response["headers"] = rate_limit_headers(false);
            }
        }
    }
}

/// `RateLimit-Policy`, `RateLimit` (draft-ietf-httpapi-ratelimit-headers) and, on a refusal,
/// `Retry-After`.
fn rate_limit_headers(refused: bool) -> Value {
    let string = json!({ "type": "string" });
    let mut headers = json!({
        "RateLimit-Policy": header("The route's policies: `\"name\";q=REQUESTS;w=SECONDS`, one item each.", string.clone()),
        "RateLimit": header("The quota left under each policy: `\"name\";r=REMAINING;t=SECONDS`.", string),
    });
    if refused {
        headers["Retry-After"] = header(
            "Seconds until the request would pass.",
            json!({ "type": "integer" }),
        );
    }
    headers
}
