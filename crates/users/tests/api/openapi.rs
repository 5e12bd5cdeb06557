//! `GET /openapi.json` documents exactly the routes the service answers, each with the problems
//! it can answer, and no schema in it describes a password hash.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp, ROUTES};

/// The methods probed on every documented path: each must be documented or answer 405.
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

async fn document(app: &TestApp) -> Value {
    let response = app.anonymous().get("/openapi.json").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()
}

/// Every operation of the document: (method in upper case, path template, operation).
fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
    let paths = spec["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item is an object")
                .iter()
                .filter(|(method, _)| METHODS.contains(&method.to_uppercase().as_str()))
                .map(move |(method, operation)| (method.to_uppercase(), path.clone(), operation))
        })
        .collect()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_routes_the_service_answers() {
    let app = spawn_app().await;
    let spec = document(&app).await;

    let version = spec["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert_eq!(spec["info"]["title"], "gatehouse users");

    let documented: BTreeSet<(String, String)> = operations(&spec)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(
        routes.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes the service registers but the document leaves out"
    );
    assert_eq!(
        documented.difference(&routes).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations the document lists that the tests do not know"
    );

    // The service answers what the document says, and nothing else on those paths: a listed
    // operation asks for an identity (401), any other method is 405.
    let someone = Uuid::new_v4().to_string();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    for template in paths {
        let path = template.replace("{id}", &someone);
        for method in METHODS {
            let response = app
                .anonymous()
                .send(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &path,
                    Some(("application/json", "{}".to_owned())),
                )
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
        }
    }
}

#[tokio::test]
async fn every_operation_documents_its_security_its_success_and_its_problems() {
    let app = spawn_app().await;
    let spec = document(&app).await;

    let mut operation_ids = BTreeSet::new();
    for (method, path, operation) in operations(&spec) {
        let name = format!("{method} {path}");
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            operation_ids.insert(id.to_owned()),
            "{name}: the operationId {id:?} is missing or not unique"
        );
        assert_eq!(
            operation["security"],
            serde_json::json!([{ "gateway_identity": [] }]),
            "{name}"
        );
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{name} documents no success"
        );
        let problems: Vec<&String> = responses
            .keys()
            .filter(|status| status.starts_with('4'))
            .collect();
        assert!(!problems.is_empty(), "{name} documents no 4xx");
        for status in problems {
            assert_eq!(
                responses[status]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/ProblemDetails",
                "{name} {status}"
            );
        }
        for status in ["401", "403"] {
            assert!(
                responses.contains_key(status),
                "{name} documents no {status}"
            );
        }
        if method == "POST" || method == "PATCH" {
            assert!(
                operation["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{name} documents no JSON body"
            );
        }
    }
}

#[tokio::test]
async fn no_schema_describes_a_password_hash_and_every_reference_resolves() {
    let app = spawn_app().await;
    let spec = document(&app).await;

    let schemas = spec["components"]["schemas"].as_object().unwrap();
    for (name, schema) in schemas {
        let text = schema.to_string().to_lowercase();
        assert!(!text.contains("hashed_password"), "{name}: {text}");
        if let Some(properties) = schema["properties"].as_object() {
            for property in properties.keys() {
                assert!(
                    !property.to_lowercase().contains("hash"),
                    "{name}.{property}"
                );
            }
        }
    }
    for expected in ["User", "ProblemDetails"] {
        assert!(schemas.contains_key(expected), "no {expected} schema");
    }

    let mut references = Vec::new();
    collect_references(&spec, &mut references);
    assert!(!references.is_empty());
    for reference in references {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("an unexpected reference {reference}"));
        assert!(
            schemas.contains_key(name),
            "{reference} resolves to nothing"
        );
    }
}

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
