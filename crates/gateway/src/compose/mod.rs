//! Composition: a route with `compose:` instead of `service:` answers one JSON object built from
//! several services' answers, one member per part, by the part's name.
//!
//! # Layout
//! - [`plan`]: the parts as the configuration gives them, checked and ordered at load (cycles,
//!   unknown parts and parameters, fields of optional parts are refused there); each part's
//!   `to` parsed so that every value put in it is encoded for its place.
//! - [`run`]: execution: parts in parallel, a part that takes a field of another as soon as
//!   that one answered, each through the proxy with its own deadline and identity.
//! - [`answer`]: the composed object, `errors` and `Gatehouse-Partial` for optional parts
//!   that failed.
//! - [`schema`]: the composed answer's JSON schema from the parts' own, for the OpenAPI document.
//!
//! The pipeline's phase is [`crate::pipeline::compose`]; it takes the place of forward.

pub mod answer;
pub mod plan;
pub mod run;

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Map, Value};

pub use plan::{Part, Plan};

/// Why a part has no answer: its `errors` entry, or for a required part the whole answer's
/// problem. `status` is the gateway's (503 unreachable, breaker open or the service's own 503;
/// 504 no answer in time; 502 any other bad answer), never the service's 4xx passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFailure {
    pub status: StatusCode,
    /// The same closed set of words as the gateway's other answers (metrics, access log).
    pub reason: &'static str,
    pub detail: String,
    /// For a 503: when the service may be back.
    pub retry_after: Option<Duration>,
}

/// The JSON schema of a composition's 200 answer, from the schemas of its parts' answers
/// (`part_schema` gives one, or `None` when unknown: any JSON value then). Every part is a
/// member; an optional one may be `null`, and `errors` then holds its problem.
pub fn schema(plan: &Plan, mut part_schema: impl FnMut(&Part) -> Option<Value>) -> Value {
    let mut properties = Map::new();
    let mut errors = Map::new();
    let mut required = Vec::new();
    for part in &plan.parts {
        let own = part_schema(part).unwrap_or_else(|| json!({}));
        let member = if part.required {
            own
        } else {
            errors.insert(part.name.to_string(), error_entry_schema());
            json!({ "anyOf": [own, { "type": "null" }] })
        };
        properties.insert(part.name.to_string(), member);
        required.push(Value::from(part.name.to_string()));
    }
    if !errors.is_empty() {
        properties.insert(
            "errors".to_owned(),
            json!({
                "type": "object",
                "description": "The optional parts that failed (their member is null), each with its problem.",
                "properties": errors,
                "additionalProperties": false,
            }),
        );
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// An `errors` entry: see [`PartFailure::entry`].
fn error_entry_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "status": { "type": "integer", "enum": [502, 503, 504] },
            "type": { "type": "string" },
            "title": { "type": "string" },
            "reason": { "type": "string" },
            "detail": { "type": "string" },
        },
        "required": ["status", "type", "title", "reason", "detail"],
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::plan::{PartSpec, DEFAULT_MAX_BODY};
    use super::*;

    fn summary() -> Plan {
        let spec = |service, to, required| PartSpec {
            service,
            to,
            required,
            timeout: None,
            max_body: DEFAULT_MAX_BODY,
        };
        let parts: BTreeMap<String, PartSpec<'_>> = [
            ("user".to_owned(), spec("users", "/users/{id}", true)),
            (
                "orders".to_owned(),
                spec("orders", "/orders?user_id={id}", false),
            ),
            ("time".to_owned(), spec("clock", "/time", false)),
        ]
        .into_iter()
        .collect();
        Plan::build("/api/users/{id}/summary", &parts).unwrap()
    }

    #[test]
    fn the_composed_schema_has_every_part_with_optional_ones_nullable_and_their_errors() {
        let user = json!({ "type": "object", "properties": { "id": { "type": "string" } } });
        let schema = schema(&summary(), |part| match &*part.service {
            "users" => Some(user.clone()),
            "orders" => Some(json!({ "type": "array" })),
            _ => None,
        });
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["orders", "time", "user"]));
        assert_eq!(
            schema["properties"]["user"], user,
            "a required part is never null"
        );
        assert_eq!(
            schema["properties"]["orders"],
            json!({ "anyOf": [{ "type": "array" }, { "type": "null" }] })
        );
        assert_eq!(
            schema["properties"]["time"]["anyOf"][0],
            json!({}),
            "an unknown schema is any value"
        );
        let errors = &schema["properties"]["errors"];
        let named: Vec<&String> = errors["properties"].as_object().unwrap().keys().collect();
        assert_eq!(
            named,
            ["orders", "time"],
            "only optional parts can be in errors"
        );
        assert_eq!(errors["additionalProperties"], false);
        assert_eq!(
            errors["properties"]["orders"]["required"],
            json!(["status", "type", "title", "reason", "detail"])
        );
    }

    #[test]
    fn a_composition_of_required_parts_only_has_no_errors_member() {
        let parts: BTreeMap<String, PartSpec<'_>> = [(
            "a".to_owned(),
            PartSpec {
                service: "s",
                to: "/a",
                required: true,
                timeout: None,
                max_body: DEFAULT_MAX_BODY,
            },
        )]
        .into_iter()
        .collect();
        let plan = Plan::build("/x", &parts).unwrap();
        let schema = schema(&plan, |_| None);
        assert!(schema["properties"].get("errors").is_none(), "{schema}");
    }

    #[test]
    fn an_errors_entry_is_a_problem_with_the_gateway_reason() {
        let failure = PartFailure {
            status: StatusCode::GATEWAY_TIMEOUT,
            reason: "upstream_timeout",
            detail: "the service `orders` did not answer in time".to_owned(),
            retry_after: None,
        };
        assert_eq!(
            failure.entry(),
            json!({
                "status": 504,
                "type": "about:blank",
                "title": "Gateway Timeout",
                "reason": "upstream_timeout",
                "detail": "the service `orders` did not answer in time",
            })
        );
    }
}
