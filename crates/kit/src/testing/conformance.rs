//! The contract every service built with the kit keeps, checked once here and run by every
//! service's suite: health endpoints that answer without an identity, and an OpenAPI 3.1
//! document that lists exactly the operations the service answers, each with the gateway's
//! identity as its security and its problems as problem+json. A service's own suite adds what
//! is particular to it (its limits, its schemas).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::openapi::{assert_info_is_ours, unbounded_request_strings};
use super::service::SpawnedService;

/// The methods probed on every documented path: each must be documented or answer 405.
pub const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// What a service declares about itself, for [`assert_conforms`].
pub struct Contract<'a> {
    /// The document's `info.title`, say `gatehouse users`.
    pub title: &'a str,
    /// The service crate's version (`env!("CARGO_PKG_VERSION")` in its tests).
    pub version: &'a str,
    /// Every operation the service answers, as (method, path template).
    pub operations: &'a [(&'a str, &'a str)],
    /// What each `{parameter}` of a path template is replaced with when the paths are probed.
    pub path_values: &'a [(&'a str, &'a str)],
    /// The checks `/readyz` reports, each `ok` on a healthy service.
    pub ready_checks: &'a [&'a str],
    /// Request strings the service accepts without a documented bound (each as
    /// `METHOD /path body.field` or `METHOD /path query.name`), with the reason in the caller's
    /// test; any other unbounded string fails the check.
    pub unbounded_strings: &'a [&'a str],
}

/// Runs every check of this module against `service`; returns its OpenAPI document for the
/// service's own assertions.
pub async fn assert_conforms(service: &SpawnedService, contract: &Contract<'_>) -> Value {
    assert_health(service, contract.ready_checks).await;
    let document = served_document(service).await;
    assert_document(&document, contract);
    assert_served_as_documented(service, &document, contract).await;
    document
}

/// `/healthz` and `/readyz` answer 200 to anyone, and `/readyz` reports each of `checks` as
/// `ok`, beside the kit's own `shutdown` (not ready from the shutdown signal on), and nothing
/// else.
pub async fn assert_health(service: &SpawnedService, checks: &[&str]) {
    let alive = service.call(Method::GET, "/healthz").send().await;
    assert_eq!(alive.status, StatusCode::OK, "/healthz: {}", alive.text);
    assert_eq!(alive.json()["status"], "ok", "{}", alive.text);

    let ready = service.call(Method::GET, "/readyz").send().await;
    assert_eq!(ready.status, StatusCode::OK, "/readyz: {}", ready.text);
    let report = ready.json();
    assert_eq!(report["status"], "ready", "{report}");
    let expected: serde_json::Map<String, Value> = checks
        .iter()
        .chain(&["shutdown"])
        .map(|name| ((*name).to_owned(), json!("ok")))
        .collect();
    assert_eq!(report["checks"], Value::Object(expected), "{report}");
}

/// `GET /openapi.json`, checked to be served as JSON to anyone.
pub async fn served_document(service: &SpawnedService) -> Value {
    let response = service.call(Method::GET, "/openapi.json").send().await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()
}

/// Every operation of `document`: (method in upper case, path template, operation).
pub fn operations(document: &Value) -> Vec<(String, String, &Value)> {
    let paths = document["paths"]
        .as_object()
        .expect("the document has paths");
    let mut found: Vec<(String, String, &Value)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item is an object")
                .iter()
                .filter(|(method, _)| METHODS.contains(&method.to_uppercase().as_str()))
                .map(move |(method, operation)| (method.to_uppercase(), path.clone(), operation))
        })
        .collect();
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    found
}

/// The document alone: OpenAPI 3.1, `info` the project's own, exactly the contract's
/// operations, each with a unique id, the gateway's identity as its security, a success, 401 and
/// 403 among its problems and every problem as `ProblemDetails`; every reference resolves, and no
/// request string is unbounded but those the contract names.
pub fn assert_document(document: &Value, contract: &Contract<'_>) {
    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "OpenAPI {version:?}");
    assert_info_is_ours(document, contract.title, contract.version);

    let documented: BTreeSet<(String, String)> = operations(document)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let declared: BTreeSet<(String, String)> = contract
        .operations
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(
        declared.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations the service answers but the document leaves out"
    );
    assert_eq!(
        documented.difference(&declared).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations the document lists that the service does not declare"
    );

    let mut operation_ids = BTreeSet::new();
    for (method, path, operation) in operations(document) {
        let name = format!("{method} {path}");
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            operation_ids.insert(id.to_owned()),
            "{name}: the operationId {id:?} is missing or not unique"
        );
        assert_eq!(
            operation["security"],
            json!([{ "gateway_identity": [] }]),
            "{name}"
        );
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} documents no responses"));
        let success: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
        assert!(!success.is_empty(), "{name} documents no success");
        for status in success {
            if let Some(content) = responses[status]["content"].as_object() {
                assert!(
                    content["application/json"]["schema"].is_object(),
                    "{name} {status}: a body other than JSON"
                );
            }
        }
        for status in ["401", "403"] {
            assert!(
                responses.contains_key(status),
                "{name} documents no {status}"
            );
        }
        for status in responses.keys().filter(|s| s.starts_with('4')) {
            assert_eq!(
                responses[status]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/ProblemDetails",
                "{name} {status}"
            );
        }
        if let Some(content) = operation["requestBody"]["content"].as_object() {
            assert!(
                content["application/json"]["schema"].is_object(),
                "{name}: a request body other than JSON"
            );
        }
    }
    assert!(
        document["components"]["securitySchemes"]["gateway_identity"].is_object(),
        "the gateway's identity is not a security scheme"
    );

    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("the document has component schemas");
    assert!(schemas.contains_key("ProblemDetails"), "no ProblemDetails");
    let mut references = Vec::new();
    collect_references(document, &mut references);
    for reference in references {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("an unexpected reference {reference}"));
        assert!(
            schemas.contains_key(name),
            "{reference} resolves to nothing"
        );
    }

    let unbounded: BTreeSet<String> = unbounded_request_strings(document).into_iter().collect();
    let allowed: BTreeSet<String> = contract
        .unbounded_strings
        .iter()
        .map(|place| (*place).to_owned())
        .collect();
    assert_eq!(unbounded, allowed, "request strings without a bound");
}

/// Every `$ref` in `value`.
fn collect_references(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => into.push(reference.clone()),
                    _ => collect_references(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, into)),
        _ => {}
    }
}

/// The service answers what the document says and nothing else on those paths: without an
/// identity a documented operation answers 401 (it asks who is calling before anything else),
/// another method 405, and a path nobody documents 404, each as problem+json.
pub async fn assert_served_as_documented(
    service: &SpawnedService,
    document: &Value,
    contract: &Contract<'_>,
) {
    let documented: BTreeSet<(String, String)> = operations(document)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let templates: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    for template in templates {
        let path = contract
            .path_values
            .iter()
            .fold(template.clone(), |path, (name, value)| {
                path.replace(&format!("{{{name}}}"), value)
            });
        assert!(
            !path.contains('{'),
            "no value for a parameter of {template}"
        );
        for method in METHODS {
            let response = service
                .call(
                    Method::from_bytes(method.as_bytes()).expect("a method"),
                    &path,
                )
                .body("application/json", "{}")
                .send()
                .await;
            let expected = if documented.contains(&(method.to_owned(), template.clone())) {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::METHOD_NOT_ALLOWED
            };
            assert_eq!(
                response.status, expected,
                "{method} {template}: {}",
                response.text
            );
            response.problem();
        }
    }
    let nowhere = service.call(Method::GET, "/no/such/resource").send().await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND, "{}", nowhere.text);
    nowhere.problem();
}
