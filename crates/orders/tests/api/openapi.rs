//! `GET /openapi.json`: the contract every service keeps (kit::testing::conformance: an OpenAPI
//! 3.1 document of exactly the routes the service serves, each with its problem responses and
//! the gateway's identity as its security; health endpoints), and what is the orders service's
//! own: its schemas, its limits, its idempotency header.

use kit::testing::conformance::{assert_conforms, operations, served_document, Contract};
use kit::testing::openapi::property;
use orders::domain::{Cents, IdempotencyKey, NewOrder, Quantity, Sku};
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

#[tokio::test]
async fn the_service_keeps_the_contract_every_service_keeps() {
    let app = spawn_app().await;
    let someone = uuid::Uuid::now_v7().to_string();

    let document = assert_conforms(
        &app.service,
        &Contract {
            title: "gatehouse orders",
            version: env!("CARGO_PKG_VERSION"),
            operations: &OPERATIONS,
            path_values: &[("id", &someone)],
            ready_checks: &["database"],
            unbounded_strings: &[],
        },
    )
    .await;

    assert_eq!(
        document,
        serde_json::to_value(orders::openapi()).unwrap(),
        "the served document is the one the crate builds"
    );
}

#[tokio::test]
async fn every_documented_route_does_its_work_for_a_caller_it_allows() {
    let app = spawn_app().await;
    let order = app.user().create_order(&two_items()).await;
    let document = served_document(&app.service).await;

    for (method, template, _) in operations(&document) {
        let path = template.replace("{id}", id_of(&order));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
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
async fn every_operation_documents_its_json_answer_and_the_create_its_idempotency() {
    let app = spawn_app().await;
    let document = served_document(&app.service).await;

    for (method, path, operation) in operations(&document) {
        let name = format!("{method} {path}");
        let responses = operation["responses"].as_object().unwrap();
        let problems = responses.keys().filter(|s| s.starts_with('4')).count();
        assert!(problems >= 2, "{name}: {problems} problems");
        let success = responses
            .iter()
            .find(|(status, _)| status.starts_with('2'))
            .unwrap_or_else(|| panic!("{name} documents its success"));
        assert!(
            success.1["content"]["application/json"]["schema"].is_object(),
            "{name} documents its body"
        );
    }

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
async fn the_document_describes_every_schema_of_the_service() {
    let app = spawn_app().await;
    let document = served_document(&app.service).await;

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

#[tokio::test]
async fn every_limit_the_domain_types_enforce_is_stated_as_a_schema_keyword() {
    let app = spawn_app().await;
    let document = served_document(&app.service).await;

    let items = property(&document, "NewOrderRequest", "items");
    assert_eq!(items["minItems"], 1, "{items}");
    assert_eq!(items["maxItems"], NewOrder::MAX_ITEMS, "{items}");
    let sku = property(&document, "NewOrderItem", "sku");
    assert_eq!(sku["minLength"], 1, "{sku}");
    assert_eq!(sku["maxLength"], Sku::MAX_CHARS, "{sku}");
    assert!(sku["pattern"].is_string(), "{sku}");
    let quantity = property(&document, "NewOrderItem", "quantity");
    assert_eq!(quantity["minimum"], 1, "{quantity}");
    assert_eq!(quantity["maximum"], Quantity::MAX, "{quantity}");
    let price = property(&document, "NewOrderItem", "unit_price_cents");
    assert_eq!(price["minimum"], 0, "{price}");
    assert_eq!(price["maximum"], Cents::MAX_UNIT_PRICE, "{price}");
    let key = &document["paths"]["/orders"]["post"]["parameters"][0]["schema"];
    assert_eq!(key["maxLength"], IdempotencyKey::MAX_LEN, "{key}");
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
    let document = served_document(&app.service).await;
    let count =
        |schema: &Value, keyword: &str| usize::try_from(schema[keyword].as_u64().unwrap()).unwrap();
    let most_items = count(property(&document, "NewOrderRequest", "items"), "maxItems");
    let sku_length = count(property(&document, "NewOrderItem", "sku"), "maxLength");
    let least_quantity = property(&document, "NewOrderItem", "quantity")["minimum"].clone();
    let least_price = property(&document, "NewOrderItem", "unit_price_cents")["minimum"].clone();
    let most_quantity = property(&document, "NewOrderItem", "quantity")["maximum"].clone();
    let most_price = property(&document, "NewOrderItem", "unit_price_cents")["maximum"].clone();
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
    // The largest order the document allows: its total fits, so it is never refused for it.
    let mut largest = order(most_items, 1);
    for line in largest["items"].as_array_mut().unwrap() {
        line["quantity"] = most_quantity.clone();
        line["unit_price_cents"] = most_price.clone();
    }
    let created = alice.post("/orders", &largest).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    for (field, most) in [
        ("quantity", &most_quantity),
        ("unit_price_cents", &most_price),
    ] {
        let mut body = order(1, 1);
        body["items"][0][field] = (most.as_i64().unwrap() + 1).into();
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
