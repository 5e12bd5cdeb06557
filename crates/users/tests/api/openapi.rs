//! `GET /openapi.json`: the contract every service keeps (kit::testing::conformance: exactly the
//! routes it answers, each with its problems, `info` the project's own, health endpoints), and
//! what is the users service's own: no schema describes a password hash, and every limit the
//! domain types enforce is a schema keyword.

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use kit::testing::conformance::{assert_conforms, operations, served_document, Contract};
use kit::testing::openapi::{is_string, property};
use users::domain::{Email, FullName, Password, Scopes, Username};

use crate::helpers::{spawn_app, ROUTES};

#[tokio::test]
async fn the_service_keeps_the_contract_every_service_keeps() {
    let app = spawn_app().await;
    let someone = Uuid::new_v4().to_string();

    let document = assert_conforms(
        app.service(),
        &Contract {
            title: "gatehouse users",
            version: env!("CARGO_PKG_VERSION"),
            operations: &ROUTES,
            path_values: &[("id", &someone)],
            ready_checks: &["database"],
            // The credential check takes any text (a username that cannot exist is checked as an
            // unknown one), and the cut-off feed parses its cursor.
            unbounded_strings: &[
                "POST /internal/credentials body.username",
                "POST /internal/credentials body.password",
                "GET /internal/token-cutoffs query.after",
            ],
        },
    )
    .await;

    for (method, path, operation) in operations(&document) {
        if method == "POST" || method == "PATCH" {
            assert!(
                operation["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{method} {path} documents no JSON body"
            );
        }
    }
}

#[tokio::test]
async fn no_schema_describes_a_password_hash() {
    let app = spawn_app().await;
    let spec = served_document(app.service()).await;

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
    assert!(schemas.contains_key("User"), "no User schema");
}

/// What the document must state of a string field that a domain type limits.
struct Limit {
    field: &'static str,
    min_length: Option<usize>,
    max_length: usize,
    has_pattern: bool,
}

/// Each request field with a limit in the domain types, the limit taken from the type.
fn limited_fields() -> [Limit; 4] {
    [
        Limit {
            field: "username",
            min_length: Some(1),
            max_length: Username::MAX_CHARS,
            has_pattern: true,
        },
        Limit {
            field: "email",
            min_length: None,
            max_length: Email::MAX_CHARS,
            has_pattern: true,
        },
        Limit {
            field: "password",
            min_length: Some(1),
            max_length: Password::MAX_CHARS,
            has_pattern: false,
        },
        Limit {
            field: "full_name",
            min_length: None,
            max_length: FullName::MAX_CHARS,
            has_pattern: true,
        },
    ]
}

#[tokio::test]
async fn every_limit_the_domain_types_enforce_is_stated_as_a_schema_keyword() {
    let app = spawn_app().await;
    let spec = served_document(app.service()).await;

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
            // No `format`: the service checks an address's shape (the pattern), not RFC 5322's
            // grammar, so a format checker would call addresses it accepts invalid.
            assert!(schema["format"].is_null(), "{name}");
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
    let spec = served_document(app.service()).await;
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

#[tokio::test]
async fn the_document_requires_the_current_password_beside_a_new_password_or_email() {
    let app = spawn_app().await;
    let spec = served_document(app.service()).await;

    let body = &spec["paths"]["/users/me"]["patch"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        body["allOf"][0]["$ref"], "#/components/schemas/UpdateMe",
        "{body}"
    );
    let rule = &body["allOf"][1]["anyOf"];
    assert_eq!(
        rule[0]["required"],
        serde_json::json!(["current_password"]),
        "{body}"
    );
    assert_eq!(
        rule[1]["propertyNames"]["enum"],
        serde_json::json!(["full_name"]),
        "without current_password, no member but full_name: {body}"
    );
    assert_eq!(
        spec["components"]["schemas"]["UpdateMe"]["additionalProperties"], false,
        "the members themselves are still UpdateMe's alone"
    );
}
