//! `GET /openapi.json`: an OpenAPI 3.1 document of exactly the routes the service serves, each
//! with its problem responses and the gateway's identity as its security.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{id_of, spawn_app, two_items};

/// Every operation the service serves, sorted. The crate's unit test pins the same list to the
/// router the service is built from.
const OPERATIONS: [(&str, &str); 4] = [
    ("GET", "/orders"),
    ("GET", "/orders/{id}"),
    ("POST", "/orders"),
    ("POST", "/orders/{id}/cancel"),
];

fn operations(document: &Value) -> Vec<(String, String)> {
    let mut operations: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    operations.sort();
    operations
}

async fn served_document(app: &crate::helpers::TestApp) -> Value {
    let response = app.anonymous().get("/openapi.json").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_for_this_service() {
    let app = spawn_app().await;

    let document = served_document(&app).await;

    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "gatehouse orders");
    assert!(document["info"]["description"].as_str().is_some());
    assert_eq!(
        document,
        serde_json::to_value(orders::openapi()).unwrap(),
        "the served document is the one the crate builds"
    );
}

#[tokio::test]
async fn every_documented_route_is_served_and_nothing_else_is() {
    let app = spawn_app().await;
    let order = app.user().create_order(&two_items()).await;
    let document = served_document(&app).await;

    let documented = operations(&document);
    assert_eq!(
        documented,
        OPERATIONS.map(|(method, path)| (method.to_owned(), path.to_owned()))
    );

    for (method, template) in &documented {
        let path = template.replace("{id}", id_of(&order));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        // Without an identity a handler answers 401; a route that is not there answers 404
        // or 405 without asking who is calling.
        let response = app.anonymous().send(method.clone(), &path, None, &[]).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{method} {template} is documented but not served: {}",
            response.text
        );
        // And with one, the handler does its work.
        let response = app
            .admin()
            .send(
                method.clone(),
                &path,
                Some(("application/json", two_items().to_string())),
                &[],
            )
            .await;
        assert!(
            response.status.is_success(),
            "{method} {template}: {}",
            response.text
        );
    }

    // Methods not documented on a documented path are not served.
    let templates: std::collections::BTreeSet<&String> =
        documented.iter().map(|(_, path)| path).collect();
    for template in templates {
        let path = template.replace("{id}", id_of(&order));
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if documented.contains(&(method.to_string(), template.clone())) {
                continue;
            }
            let response = app.admin().send(method.clone(), &path, None, &[]).await;
            assert_eq!(
                response.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template} is served but not documented"
            );
        }
    }
    for path in [
        "/order",
        "/orders/",
        "/orders/{id}/pay",
        "/orders/{id}/items",
    ] {
        let path = path.replace("{id}", id_of(&order));
        let response = app.admin().get(&path).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
        let response = app.admin().post(&path, &two_items()).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn every_operation_documents_its_problems_and_the_gateways_identity() {
    let app = spawn_app().await;
    let document = served_document(&app).await;

    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let name = format!("{method} {path}");
            assert_eq!(
                operation["security"],
                serde_json::json!([{ "gateway_identity": [] }]),
                "{name}"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{name} documents 401");
            let problems: Vec<&String> = responses
                .iter()
                .filter(|(status, _)| status.starts_with('4'))
                .map(|(status, response)| {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/ProblemDetails",
                        "{name} {status}"
                    );
                    status
                })
                .collect();
            assert!(problems.len() >= 2, "{name}: {problems:?}");
            let success = responses
                .iter()
                .find(|(status, _)| status.starts_with('2'))
                .unwrap_or_else(|| panic!("{name} documents its success"));
            assert!(
                success.1["content"]["application/json"]["schema"].is_object(),
                "{name} documents its body"
            );
        }
    }

    assert!(document["components"]["securitySchemes"]["gateway_identity"].is_object());
    let create = &document["paths"]["/orders"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewOrderRequest"
    );
    assert_eq!(
        create["parameters"],
        serde_json::json!([{
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": create["parameters"][0]["description"],
            "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]{1,255}$" },
        }])
    );
    let headers = create["responses"]["201"]["headers"].as_object().unwrap();
    assert!(headers.contains_key("Location") && headers.contains_key("Idempotent-Replayed"));
    let request = &document["components"]["schemas"]["NewOrderRequest"];
    assert_eq!(
        request["required"],
        serde_json::json!(["items"]),
        "{request}"
    );
}

#[tokio::test]
async fn every_reference_in_the_document_resolves() {
    let app = spawn_app().await;
    let document = served_document(&app).await;

    let mut references = Vec::new();
    collect_references(&document, &mut references);

    assert!(!references.is_empty());
    for reference in references {
        let pointer = reference.strip_prefix('#').unwrap();
        assert!(
            document.pointer(pointer).is_some(),
            "{reference} points at nothing"
        );
    }
    for schema in [
        "Order",
        "OrderItem",
        "Status",
        "OrderPage",
        "NewOrderItem",
        "ProblemDetails",
        "FieldError",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema} is in the document"
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
        Value::Array(values) => values
            .iter()
            .for_each(|value| collect_references(value, into)),
        _ => {}
    }
}
