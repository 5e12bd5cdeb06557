//! `GET /openapi.json` documents exactly the routes the service answers, each with the problems
//! it can answer, and no schema in it describes a password hash; every limit the domain types
//! enforce is a schema keyword, and `info` is the project's own.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use kit::testing::openapi::{is_string, property, unbounded_request_strings};
use users::domain::{Email, FullName, Password, Scopes, Username};

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

#[tokio::test]
async fn the_documents_info_is_the_projects_own() {
    let app = spawn_app().await;
    let spec = document(&app).await;

    kit::testing::openapi::assert_info_is_ours(&spec, "gatehouse users", env!("CARGO_PKG_VERSION"));
}

/// What the document must state of a string field that a domain type limits.
struct Limit {
    field: &'static str,
    min_length: Option<usize>,
    max_length: usize,
    has_pattern: bool,
    format: Option<&'static str>,
}

/// Each request field with a limit in the domain types, the limit taken from the type.
fn limited_fields() -> [Limit; 4] {
    [
        Limit {
            field: "username",
            min_length: Some(1),
            max_length: Username::MAX_CHARS,
            has_pattern: true,
            format: None,
        },
        Limit {
            field: "email",
            min_length: None,
            max_length: Email::MAX_CHARS,
            has_pattern: true,
            format: Some("email"),
        },
        Limit {
            field: "password",
            min_length: Some(1),
            max_length: Password::MAX_CHARS,
            has_pattern: false,
            format: None,
        },
        Limit {
            field: "full_name",
            min_length: None,
            max_length: FullName::MAX_CHARS,
            has_pattern: true,
            format: None,
        },
    ]
}

#[tokio::test]
async fn every_limit_the_domain_types_enforce_is_stated_as_a_schema_keyword() {
    let app = spawn_app().await;
    let spec = document(&app).await;

    for component in ["CreateUser", "UpdateUser", "UpdateMe"] {
        for limit in limited_fields() {
            if component == "UpdateMe" && limit.field == "username" {
                continue; // only an admin changes a username
            }
            let schema = property(&spec, component, limit.field);
            let name = format!("{component}.{}: {schema}", limit.field);
            assert!(is_string(schema), "{name}");
            assert_eq!(
                schema["maxLength"].as_u64(),
                Some(limit.max_length as u64),
                "{name}"
            );
            assert_eq!(
                schema["minLength"].as_u64(),
                limit.min_length.map(|m| m as u64),
                "{name}"
            );
            assert_eq!(schema["pattern"].is_string(), limit.has_pattern, "{name}");
            assert_eq!(schema["format"].as_str(), limit.format, "{name}");
        }
        if component != "UpdateMe" {
            let scopes = property(&spec, component, "scopes");
            let name = format!("{component}.scopes: {scopes}");
            assert_eq!(
                scopes["maxItems"].as_u64(),
                Some(Scopes::MAX_COUNT as u64),
                "{name}"
            );
            let scope = &scopes["items"];
            assert_eq!(
                scope["maxLength"].as_u64(),
                Some(Scopes::MAX_CHARS as u64),
                "{name}"
            );
            assert_eq!(scope["minLength"], 1, "{name}");
            assert_eq!(scope["pattern"], Scopes::PATTERN, "{name}");
        }
    }

    // And no other string a client sends is unbounded, but the credential check's: it takes
    // any text, and a username that cannot exist is checked as an unknown one.
    let unbounded: BTreeSet<String> = unbounded_request_strings(&spec).into_iter().collect();
    assert_eq!(
        unbounded,
        BTreeSet::from(
            [
                "POST /internal/credentials body.username",
                "POST /internal/credentials body.password",
                "GET /internal/token-cutoffs query.after",
            ]
            .map(String::from)
        )
    );
    let list = spec["paths"]["/users"]["get"]["parameters"]
        .as_array()
        .unwrap();
    for (name, minimum) in [("limit", 1), ("offset", 0)] {
        let parameter = list.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(parameter["schema"]["minimum"], minimum, "{parameter}");
    }
}

/// A string of exactly `length` characters that a schema's `maxLength` allows, for `field`.
fn at_length(field: &str, length: usize) -> String {
    match field {
        // name@domain: the local part at its 64, the domain in labels of at most 63.
        "email" => {
            let local = "a".repeat(64);
            let mut domain = String::new();
            let mut remaining = length - local.len() - 1;
            while remaining > 0 {
                if !domain.is_empty() {
                    domain.push('.');
                    remaining -= 1;
                }
                let label = remaining.min(63);
                domain.push_str(&"b".repeat(label));
                remaining -= label;
            }
            assert!(domain.contains('.') && !domain.ends_with('.'));
            format!("{local}@{domain}")
        }
        _ => "n".repeat(length),
    }
}

fn max_length(schema: &Value) -> usize {
    usize::try_from(schema["maxLength"].as_u64().expect("a maxLength")).unwrap()
}

#[tokio::test]
async fn a_request_at_every_limit_the_document_states_is_accepted_and_one_past_it_is_not() {
    let app = spawn_app().await;
    let spec = document(&app).await;
    let limit = |field: &str| max_length(property(&spec, "CreateUser", field));
    let scopes = property(&spec, "CreateUser", "scopes");
    let scope_length = max_length(&scopes["items"]);
    let scope_count = usize::try_from(scopes["maxItems"].as_u64().unwrap()).unwrap();
    let scopes_of = |count: usize, length: usize| -> Vec<String> {
        (0..count)
            .map(|i| format!("s{i:0>width$}", width = length - 1))
            .collect()
    };

    let at_limits = serde_json::json!({
        "username": at_length("username", limit("username")),
        "email": at_length("email", limit("email")),
        "password": at_length("password", limit("password")),
        "full_name": at_length("full_name", limit("full_name")),
        "scopes": scopes_of(scope_count, scope_length),
    });
    let created = app.admin().post("/users", &at_limits).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let changed = app.admin().patch(&format!("/users/{id}"), &at_limits).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);

    for field in ["username", "email", "password", "full_name"] {
        let mut body = crate::helpers::new_user("past");
        body[field] = at_length(field, limit(field) + 1).into();
        let response = app.admin().post("/users", &body).await;
        assert_eq!(
            response.invalid_fields(),
            [field],
            "{field} one past its maxLength"
        );
    }
    for (scopes, field) in [
        (scopes_of(scope_count + 1, scope_length), "scopes"),
        (scopes_of(1, scope_length + 1), "scopes[0]"),
    ] {
        let mut body = crate::helpers::new_user("past");
        body["scopes"] = scopes.into();
        let response = app.admin().post("/users", &body).await;
        assert_eq!(response.invalid_fields(), [field]);
    }

    let list = spec["paths"]["/users"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let most = list.iter().find(|p| p["name"] == "limit").unwrap()["schema"]["maximum"]
        .as_u64()
        .unwrap();
    let response = app.admin().get(&format!("/users?limit={most}")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let response = app.admin().get(&format!("/users?limit={}", most + 1)).await;
    assert_eq!(response.invalid_fields(), ["limit"]);
    let response = app.admin().get("/users?offset=-1").await;
    assert_eq!(response.invalid_fields(), ["offset"]);
}
