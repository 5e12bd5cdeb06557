//! The merged OpenAPI document at the gateway, its pages, and request-body validation against
//! the services' own documents — over real HTTP, with the bundled services and a test service
//! whose document the test controls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::routing::get;
use axum::{Json, Router};
use gateway::clock::{Clock, ManualClock};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::harness::{config_head, wait_for, Gate};
use crate::support::{assert_problem, spawn_app, spawn_app_with, TestApp};

/// The merged document once every bundled service's own document is in it.
async fn merged(app: &TestApp) -> Value {
    wait_for(
        "the bundled services' documents in the merged one",
        || async {
            let document: Value = app
                .http
                .get(app.url("/openapi.json"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let standing = &document["x-gatehouse-services"];
            ["users", "orders", "clock"]
                .iter()
                .all(|service| standing[service]["status"] == "current")
                .then_some(document)
        },
    )
    .await
}

/// Every `$ref` in `value`.
fn references(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                match (key.as_str(), member) {
                    ("$ref", Value::String(reference)) => into.push(reference.clone()),
                    _ => references(member, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, into)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_lists_the_public_paths_with_the_routes_methods_and_nothing_internal() {
    let app = spawn_app().await;
    let document = merged(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();

    let user = &paths["/api/users/{id}"];
    for method in ["get", "patch", "delete"] {
        assert!(user[method].is_object(), "{method} /api/users/{{id}}");
    }
    assert!(user["put"].is_null(), "no route allows PUT");
    assert_eq!(user["get"]["parameters"][0]["name"], "id");
    assert!(paths["/api/orders/{id}/cancel"]["post"].is_object());
    assert!(paths["/api/time"]["get"].is_object());
    assert!(paths["/api/login"]["post"].is_object(), "the gateway's own");
    assert!(paths["/api/oauth/token"]["post"]["requestBody"]["content"]
        ["application/x-www-form-urlencoded"]
        .is_object());
    assert!(paths["/.well-known/jwks.json"]["get"].is_object());
    for path in paths.keys() {
        assert!(
            !path.starts_with("/users")
                && !path.starts_with("/orders")
                && !path.starts_with("/internal"),
            "{path} is the service's path, not the gateway's"
        );
    }
    assert!(
        !serde_json::to_string(&document)
            .unwrap()
            .contains("/internal/"),
        "no internal operation, not even in a description"
    );
}

#[tokio::test]
async fn security_follows_each_routes_policy_and_names_its_roles() {
    let app = spawn_app().await;
    let document = merged(&app).await;
    let paths = &document["paths"];

    let admin_only = &paths["/api/users"]["get"];
    assert_eq!(admin_only["security"], json!([{ "bearerAuth": [] }]));
    assert!(admin_only["description"]
        .as_str()
        .unwrap()
        .contains("`admin`"));
    assert!(admin_only["responses"]["403"].is_object());
    assert!(admin_only["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());

    let signed_in = &paths["/api/orders"]["get"];
    assert_eq!(
        signed_in["security"],
        json!([{ "bearerAuth": [] }, { "oauth2": [] }])
    );

    let scoped = &paths["/api/precise-echo"]["get"];
    assert_eq!(
        scoped["security"],
        json!([{ "bearerAuth": ["time:precise"] }, { "oauth2": ["time:precise"] }])
    );
    let public = &paths["/api/public/{rest}"]["get"];
    assert_eq!(public["security"], json!([]));
    assert!(
        public["responses"]["401"].is_null(),
        "a public route never answers 401 itself"
    );

    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["bearerFormat"], "JWT");
    assert!(schemes["bearerAuth"]["description"]
        .as_str()
        .unwrap()
        .contains("/.well-known/jwks.json"));
    assert_eq!(
        schemes["oauth2"]["flows"]["clientCredentials"]["tokenUrl"],
        "/api/oauth/token"
    );
    assert!(schemes["oauth2"]["flows"]["clientCredentials"]["scopes"]["time:precise"].is_string());
    for answer in ["502", "503", "504"] {
        assert_eq!(
            signed_in["responses"][answer]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem",
            "{answer}"
        );
    }
}

#[tokio::test]
async fn components_are_namespaced_by_service_and_every_reference_resolves() {
    let app = spawn_app().await;
    let document = merged(&app).await;
    let schemas = document["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("users.User"), "{:?}", schemas.keys());
    assert!(schemas.contains_key("orders.Order"));
    assert!(
        schemas.contains_key("Problem"),
        "the one shared problem schema"
    );
    assert!(
        !schemas.contains_key("users.ProblemDetails"),
        "the services' problem schema is the gateway's, not a copy per service"
    );
    for name in schemas.keys() {
        assert!(
            name.contains('.') || name == "Problem" || name == "FieldError",
            "{name} is not namespaced"
        );
    }
    let mut all = Vec::new();
    references(&document, &mut all);
    assert!(!all.is_empty());
    for reference in all {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        assert!(document.pointer(pointer).is_some(), "{reference} resolves");
    }
}

#[tokio::test]
async fn a_limited_route_lists_429_with_the_ratelimit_headers_and_an_unlimited_one_does_not() {
    let app = spawn_app_with(|config| {
        let config = config
            .replace(
                "service: clock,  to: /time,                    auth: authenticated }",
                "service: clock,  to: /time,                    auth: authenticated, rate_limit: [per-user] }",
            )
            .replacen(
                "routes:\n",
                "rate_limits:\n  per-user: { requests: 100, per: 1m, by: user }\nroutes:\n",
                1,
            );
        assert!(config.contains("rate_limit: [per-user]"));
        config
    })
    .await;
    let document = merged(&app).await;
    let limited = &document["paths"]["/api/time"]["get"]["responses"];
    for header in ["RateLimit", "RateLimit-Policy", "Retry-After"] {
        assert!(
            limited["429"]["headers"][header].is_object(),
            "429 {header}"
        );
    }
    assert!(limited["200"]["headers"]["RateLimit"].is_object());
    assert!(document["paths"]["/api/orders"]["get"]["responses"]["429"].is_null());
}

#[tokio::test]
async fn a_route_naming_its_parameter_differently_maps_it_to_the_services_path() {
    let app = spawn_app_with(|config| {
        config.replacen(
            "routes:\n",
            "routes:\n  - { path: \"/api/people/{pid}\", methods: [GET], service: users, to: \"/users/{pid}\", auth: { roles: [admin] } }\n",
            1,
        )
    })
    .await;
    let document = merged(&app).await;
    let person = &document["paths"]["/api/people/{pid}"]["get"];
    assert_eq!(person["parameters"][0]["name"], "pid");
    assert_eq!(person["parameters"][0]["in"], "path");
    assert!(
        document["paths"]["/api/people/me"].is_null(),
        "`/users/me` is not under `/users/{{pid}}`"
    );
}

#[tokio::test]
async fn a_composition_route_is_documented_with_its_composed_answer() {
    let app = spawn_app_with(|config| {
        format!(
            "{config}  - path: \"/api/people/{{id}}/summary\"\n    methods: [GET]\n    auth: {{ roles: [admin] }}\n    compose:\n      \
             user: {{ service: users, to: \"/users/{{id}}\", required: true }}\n      \
             time: {{ service: clock, to: /time, required: false }}\n"
        )
    })
    .await;
    let document = merged(&app).await;

    let operation = &document["paths"]["/api/people/{id}/summary"]["get"];
    assert!(operation.is_object(), "{:#}", document["paths"]);
    let answer = &operation["responses"]["200"];
    let schema = &answer["content"]["application/json"]["schema"];
    assert_eq!(schema["required"], json!(["time", "user"]));
    assert_eq!(
        schema["properties"]["user"]["$ref"], "#/components/schemas/users.User",
        "the required part: the users service's own answer, never null"
    );
    let time = schema["properties"]["time"]["anyOf"].as_array().unwrap();
    assert_eq!(
        time[1],
        json!({ "type": "null" }),
        "the optional part may be null"
    );
    assert!(
        time[0]["properties"]["iso"].is_object() || time[0]["$ref"].is_string(),
        "the clock's answer schema: {:#}",
        time[0]
    );
    assert!(schema["properties"]["errors"]["properties"]["time"].is_object());
    assert!(schema["properties"]["errors"]["properties"]["user"].is_null());
    assert!(answer["headers"]["Gatehouse-Partial"].is_object());
    for status in ["502", "503", "504"] {
        assert_eq!(
            operation["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem",
            "{status}"
        );
    }
}

#[tokio::test]
async fn patch_me_carries_the_services_rule_that_a_new_password_needs_the_current_one() {
    let app = spawn_app().await;
    let document = merged(&app).await;
    let operation = &document["paths"]["/api/users/me"]["patch"];
    assert_eq!(
        operation["operationId"], "users.update_me",
        "not /users/{{id}}'s"
    );
    let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        schema["allOf"][0]["$ref"],
        "#/components/schemas/users.UpdateMe"
    );
    assert_eq!(
        schema["allOf"][1]["anyOf"][0]["required"],
        json!(["current_password"]),
        "{schema:#}"
    );
}

#[tokio::test]
async fn the_document_names_services_without_one_and_still_lists_their_routes() {
    let app = spawn_app().await;
    let document = merged(&app).await;
    let missing = document["x-gatehouse-missing-services"].as_array().unwrap();
    assert!(missing.contains(&json!("dead")), "{missing:?}");
    assert!(
        missing.contains(&json!("echo")),
        "the echo answers no OpenAPI document"
    );
    assert!(document["paths"]["/api/dead"]["get"].is_object());
}

#[tokio::test]
async fn docs_and_redoc_are_served_from_the_binary_with_no_address_elsewhere() {
    let app = spawn_app().await;
    for page in ["/docs/", "/redoc"] {
        let response = app.http.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{page}");
        let html = response.text().await.unwrap();
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{page} names no other site:\n{html}"
        );
    }
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/swagger-initializer.js",
        "/redoc/redoc.standalone.js",
    ] {
        let response = app.http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
    }
    let initializer = app
        .http
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        initializer.contains("/openapi.json"),
        "Swagger UI reads the gateway's document"
    );
}

/// Writes the merged document where `GATEHOUSE_OPENAPI_OUT` says (CI validates it with
/// `openapi-spec-validator`); without it, checks only that there is one.
#[tokio::test]
async fn the_merged_document_is_written_for_the_validator() {
    let app = spawn_app().await;
    let document = merged(&app).await;
    if let Ok(path) = std::env::var("GATEHOUSE_OPENAPI_OUT") {
        std::fs::write(&path, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
        println!("the merged document written to {path}");
    }
    assert!(document["paths"].as_object().unwrap().len() > 10);
}

// ---- a service whose document the test controls ----

/// A service with `POST /things` (a `name` is required) and `GET /things/{id}`, counting the
/// requests that reach it; its document can change, and `/openapi.json` can fail.
struct Things {
    url: String,
    arrived: Arc<AtomicUsize>,
    document: Arc<Mutex<Value>>,
    failing: Arc<AtomicBool>,
}

fn things_document(extra_path: bool) -> Value {
    let mut document = json!({
        "openapi": "3.1.0",
        "info": { "title": "things", "version": "1" },
        "paths": {
            "/things": { "post": {
                "operationId": "create_thing",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewThing" } } } },
                "responses": { "201": { "description": "Created." } },
            } },
            "/things/{id}": { "get": {
                "operationId": "get_thing",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "The thing." } },
            } },
        },
        "components": { "schemas": { "NewThing": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": { "name": { "type": "string", "minLength": 1 }, "size": { "type": "integer", "minimum": 1 } },
        } } },
    });
    if extra_path {
        document["paths"]["/things/{id}/archive"] = json!({ "post": {
            "operationId": "archive_thing",
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": { "204": { "description": "Archived." } },
        } });
    }
    document
}

impl Things {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let arrived = Arc::new(AtomicUsize::new(0));
        let document = Arc::new(Mutex::new(things_document(false)));
        let failing = Arc::new(AtomicBool::new(false));
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/openapi.json",
                get({
                    let document = Arc::clone(&document);
                    let failing = Arc::clone(&failing);
                    move || async move {
                        if failing.load(Ordering::SeqCst) {
                            return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                        }
                        Ok(Json(document.lock().unwrap().clone()))
                    }
                }),
            )
            .fallback({
                let arrived = Arc::clone(&arrived);
                move |request: Request| async move {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    Json(json!({ "path": request.uri().path() }))
                }
            });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            arrived,
            document,
            failing,
        }
    }

    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}

/// A gateway in front of `things`, reading the time from `clock`.
async fn gate_with_things(things: &Things, clock: Clock) -> Gate {
    let config = format!(
        "{head}  things: {{ upstreams: [\"{url}\"], timeout: 5s, health: {{ path: /healthz, interval: 200ms, healthy: 1 }} }}\n\
         routes:\n\
         \x20 - {{ path: /api/things, methods: [POST], service: things, to: /things, auth: public, request: {{ validate_body: true }} }}\n\
         \x20 - {{ path: \"/api/things/{{tid}}\", methods: [GET], service: things, to: \"/things/{{tid}}\", auth: public }}\n\
         \x20 - {{ path: \"/api/things/{{tid}}/archive\", methods: [POST], service: things, to: \"/things/{{tid}}/archive\", auth: public }}\n",
        head = config_head("off"),
        url = things.url,
    );
    Gate::start_at(clock, &config).await
}

async fn document_of(gate: &Gate) -> Value {
    gate.get("/openapi.json").await.json().await.unwrap()
}

async fn post_thing(gate: &Gate, content_type: &str, body: &str) -> reqwest::Response {
    gate.http
        .post(format!("{}/api/things", gate.url))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_body_missing_a_required_field_is_refused_at_the_gateway_and_never_arrives() {
    let things = Things::start().await;
    let gate = gate_with_things(&things, Clock::System).await;

    let refused = post_thing(&gate, "application/json", r#"{"size": 0, "colour": "red"}"#).await;
    let problem = assert_problem(refused, 422).await;
    let errors = problem["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"name"), "{errors:?}");
    assert!(fields.contains(&"size"), "{errors:?}");
    assert!(fields.contains(&"colour"), "{errors:?}");
    assert_eq!(
        things.arrived(),
        0,
        "the service never saw the refused body"
    );

    let malformed = post_thing(&gate, "application/json", r#"{"name": "#).await;
    assert_problem(malformed, 400).await;
    let not_json = post_thing(&gate, "text/plain", "name=a").await;
    assert_problem(not_json, 415).await;
    assert_eq!(things.arrived(), 0);

    let valid = post_thing(&gate, "application/json", r#"{"name": "lamp", "size": 2}"#).await;
    assert_eq!(valid.status(), 200);
    assert_eq!(things.arrived(), 1, "a valid body is forwarded");
}

#[tokio::test]
async fn a_changed_service_document_is_picked_up_and_a_failing_one_keeps_its_last_copy() {
    let things = Things::start().await;
    let time = ManualClock::starting_now();
    let gate = gate_with_things(&things, Clock::from(&time)).await;

    let first = document_of(&gate).await;
    assert_eq!(first["x-gatehouse-services"]["things"]["status"], "current");
    assert!(first["paths"]["/api/things/{tid}"]["get"].is_object());
    assert!(
        first["paths"]["/api/things"]["post"]["responses"]["422"].is_object(),
        "validated"
    );
    assert!(
        first["paths"]["/api/things/{tid}/archive"].is_null(),
        "routed, but the service does not have it yet"
    );
    assert!(first["components"]["schemas"]["things.NewThing"].is_object());

    // The documents are fetched again every health-check interval (200 ms) of the gateway's
    // clock, counted from the first fetch: moved past one, not waited for.
    *things.document.lock().unwrap() = things_document(true);
    time.advance(Duration::from_millis(200));
    wait_for(
        "the service's new operation in the merged document",
        || async {
            document_of(&gate).await["paths"]["/api/things/{tid}/archive"]["post"]
                .is_object()
                .then_some(())
        },
    )
    .await;

    things.failing.store(true, Ordering::SeqCst);
    time.advance(Duration::from_millis(200));
    let stale = wait_for("the document marked stale", || async {
        let document = document_of(&gate).await;
        (document["x-gatehouse-services"]["things"]["status"] == "stale").then_some(document)
    })
    .await;
    assert!(
        stale["paths"]["/api/things/{tid}/archive"]["post"].is_object(),
        "the last good copy is still used"
    );
    assert_eq!(
        stale["x-gatehouse-missing-services"],
        json!([]),
        "stale is not missing: the service has a copy"
    );
}
