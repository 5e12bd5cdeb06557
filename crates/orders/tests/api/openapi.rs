//! `GET /openapi.json`: an OpenAPI 3.1 document of exactly the routes the service serves, each
//! with its problem responses and the gateway's identity as its security.

use kit::testing::openapi::{property, unbounded_request_strings};
use orders::domain::{IdempotencyKey, NewOrder, Sku};
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

#[tokio::test]
async fn the_documents_info_is_the_projects_own() {
    let app = spawn_app().await;
    let document = served_document(&app).await;

    kit::testing::openapi::assert_info_is_ours(
        &document,
        "gatehouse orders",
        env!("CARGO_PKG_VERSION"),
    );
}

#[tokio::test]
async fn every_limit_the_domain_types_enforce_is_stated_as_a_schema_keyword() {
    let app = spawn_app().await;
    let document = served_document(&app).await;

    let items = property(&document, "NewOrderRequest", "items");
    assert_eq!(items["minItems"], 1, "{items}");
    assert_eq!(items["maxItems"], NewOrder::MAX_ITEMS, "{items}");
    let sku = property(&document, "NewOrderItem", "sku");
    assert_eq!(sku["minLength"], 1, "{sku}");
    assert_eq!(sku["maxLength"], Sku::MAX_CHARS, "{sku}");
    assert!(sku["pattern"].is_string(), "{sku}");
    let quantity = property(&document, "NewOrderItem", "quantity");
    assert_eq!(quantity["minimum"], 1, "{quantity}");
    let price = property(&document, "NewOrderItem", "unit_price_cents");
    assert_eq!(price["minimum"], 0, "{price}");
    let key = &document["paths"]["/orders"]["post"]["parameters"][0]["schema"];
    assert_eq!(key["maxLength"], IdempotencyKey::MAX_LEN, "{key}");

    assert_eq!(
        unbounded_request_strings(&document),
        Vec::<String>::new(),
        "every string a client sends is bounded"
    );
}

/// The `minimum`/`maximum` of the query parameter `name` of `GET /orders`.
fn query_bound(document: &Value, name: &str, bound: &str) -> i64 {
    document["paths"]["/orders"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))["schema"][bound]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no {bound}"))
}

#[tokio::test]
async fn a_request_at_every_limit_the_document_states_is_accepted_and_one_past_it_is_not() {
    let app = spawn_app().await;
    let document = served_document(&app).await;
    let count =
        |schema: &Value, keyword: &str| usize::try_from(schema[keyword].as_u64().unwrap()).unwrap();
    let most_items = count(property(&document, "NewOrderRequest", "items"), "maxItems");
    let sku_length = count(property(&document, "NewOrderItem", "sku"), "maxLength");
    let least_quantity = property(&document, "NewOrderItem", "quantity")["minimum"].clone();
    let least_price = property(&document, "NewOrderItem", "unit_price_cents")["minimum"].clone();
    let key_length = count(
        &document["paths"]["/orders"]["post"]["parameters"][0]["schema"],
        "maxLength",
    );
    let order = |lines: usize, sku_length: usize| {
        let items: Vec<Value> = (0..lines)
            .map(|i| {
                serde_json::json!({
                    "sku": format!("S{i:0>width$}", width = sku_length - 1),
                    "quantity": least_quantity,
                    "unit_price_cents": least_price,
                })
            })
            .collect();
        serde_json::json!({ "items": items })
    };
    let alice = app.user();

    let created = alice
        .post_idempotent(&order(most_items, sku_length), &"k".repeat(key_length))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    let response = alice.post("/orders", &order(most_items + 1, 1)).await;
    assert_eq!(response.invalid_fields(), ["items"]);
    let response = alice.post("/orders", &order(1, sku_length + 1)).await;
    assert_eq!(response.invalid_fields(), ["items[0].sku"]);
    for (field, below) in [
        ("quantity", &least_quantity),
        ("unit_price_cents", &least_price),
    ] {
        let mut body = order(1, 1);
        body["items"][0][field] = (below.as_i64().unwrap() - 1).into();
        let response = alice.post("/orders", &body).await;
        assert_eq!(response.invalid_fields(), [format!("items[0].{field}")]);
    }
    let response = alice
        .post_idempotent(&order(1, 1), &"k".repeat(key_length + 1))
        .await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{}",
        response.text
    );

    let most = query_bound(&document, "limit", "maximum");
    assert_eq!(
        alice.get(&format!("/orders?limit={most}")).await.status,
        StatusCode::OK
    );
    let response = alice.get(&format!("/orders?limit={}", most + 1)).await;
    assert_eq!(response.invalid_fields(), ["limit"]);
    let least = query_bound(&document, "offset", "minimum");
    let response = alice.get(&format!("/orders?offset={}", least - 1)).await;
    assert_eq!(response.invalid_fields(), ["offset"]);
}
