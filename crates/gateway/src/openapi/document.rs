//! The merged document: the route table read against each service's own document. Every path
//! is the gateway's public one ([`super::paths`]); an operation is listed only when a route
//! exposes it, with the route's methods; its security is the route's policy; its responses add
//! the answers the gateway itself makes ([`super::answers`]). Each service's components are
//! renamed `service.Name` and every reference to them rewritten, so two services' `User`
//! never overwrite each other; a component equal to the gateway's own of the same name (the
//! kit's problem schema every service shares) becomes the gateway's one.

use std::collections::{BTreeMap, BTreeSet};

use http::Method;
use serde_json::{json, Map, Value};

use super::answers;
use super::paths::{self, Exposed};
use super::specs::{Specs, Standing};
use crate::config::{AuthPolicy, GatewayConfig, RouteSettings};

/// The security schemes every protected operation names.
pub const BEARER: &str = "bearerAuth";
pub const OAUTH2: &str = "oauth2";

/// The component kinds whose names are namespaced per service (security schemes are not
/// merged: the gateway's own replace the services' identity-token scheme).
const NAMESPACED: [&str; 8] = [
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "links",
    "callbacks",
];

/// The methods an OpenAPI path item names as members.
const METHODS: [Method; 8] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::OPTIONS,
    Method::HEAD,
    Method::PATCH,
    Method::TRACE,
];

/// The document a client of the gateway reads.
pub fn build(config: &GatewayConfig, specs: &Specs) -> Value {
    let mut components = answers::shared_components();
    let shared = components.clone();
    let renamers: BTreeMap<&str, Renamer> = specs
        .documents
        .iter()
        .map(|(service, spec)| {
            (
                service.as_str(),
                Renamer::new(service, &spec.document, &shared),
            )
        })
        .collect();
    for (service, spec) in &specs.documents {
        if let Some(renamer) = renamers.get(service.as_str()) {
            renamer.merge(&spec.document, &mut components);
        }
    }
    let mut paths = Map::new();
    let mut operation_ids = BTreeSet::new();
    super::own::operations(config, &mut paths);
    for route in config.routes.iter().filter(|route| route.compose.is_none()) {
        let spec = specs
            .documents
            .get(&route.service)
            .map(|spec| &spec.document)
            .zip(renamers.get(route.service.as_str()));
        expose_route(route, spec, &mut paths, &mut operation_ids);
    }
    composed_operations(config, specs, &renamers, &mut paths, &mut operation_ids);
    let schemes = components
        .entry("securitySchemes")
        .or_insert_with(|| json!({}));
    schemes[BEARER] = bearer_scheme(config);
    schemes[OAUTH2] = oauth2_scheme(config);

    let standing: Map<String, Value> = specs
        .standing
        .iter()
        .map(|(service, standing)| {
            let value = match standing {
                Standing::Current => json!({ "status": "current" }),
                Standing::Stale(why) => json!({ "status": "stale", "reason": why }),
                Standing::Missing(why) => json!({ "status": "missing", "reason": why }),
            };
            (service.clone(), value)
        })
        .collect();
    let missing: Vec<&String> = specs
        .standing
        .iter()
        .filter(|(_, standing)| matches!(standing, Standing::Missing(_)))
        .map(|(service, _)| service)
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "gatehouse",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The API as clients of the gateway see it: the services' operations that routes expose, \
                under their public paths, with the gateway's own endpoints and answers. Sign in with \
                the login endpoint (or a client's credentials at the token endpoint) and send the \
                access token as `Authorization: Bearer …`.",
            "license": { "name": kit::openapi::LICENSE, "identifier": kit::openapi::LICENSE },
        },
        // Relative: "Try it out" calls the gateway that served the document, wherever it runs.
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": components,
        "x-gatehouse-services": standing,
        "x-gatehouse-missing-services": missing,
    })
}

/// Composition routes (`compose:`): one GET whose 200 answer is the composed object, each part's
/// member described by the schema of the service operation it calls (found by its target's
/// path in that service's document, `{}` where no document or operation says).
fn composed_operations(
    config: &GatewayConfig,
    specs: &Specs,
    renamers: &BTreeMap<&str, Renamer>,
    paths: &mut Map<String, Value>,
    operation_ids: &mut BTreeSet<String>,
) {
    for route in &config.routes {
        let Some(plan) = route.compose.as_deref() else {
            continue;
        };
        let schema = crate::compose::schema(plan, |part| {
            let spec = &specs.documents.get(&*part.service)?.document;
            let renamer = renamers.get(&*part.service)?;
            let service_paths = spec["paths"].as_object()?;
            let shape = part.to.path_shape();
            let template = paths::template_of(service_paths.keys().map(String::as_str), &shape)?;
            let mut answer = service_paths[template]["get"]["responses"]["200"]["content"]
                ["application/json"]["schema"]
                .clone();
            if answer.is_null() {
                return None;
            }
            renamer.rewrite(&mut answer);
            Some(answer)
        });
        let parts: Vec<&str> = plan.parts.iter().map(|part| &*part.name).collect();
        let operation = json!({
            "summary": format!("One answer composed of {}", parts.join(", ")),
            "description": "Composed by the gateway: one member per part. A failed optional part is `null`, with its problem under `errors` and its name in the `Gatehouse-Partial` header; a failed required part fails the whole answer (502, 503 or 504 naming the part).",
            "responses": {
                "200": {
                    "description": "Every required part answered.",
                    "headers": {
                        "Gatehouse-Partial": {
                            "description": "The optional parts that failed, comma-separated.",
                            "schema": { "type": "string" },
                        },
                    },
                    "content": { "application/json": { "schema": schema } },
                },
            },
        });
        let exposed = as_written(route);
        add(
            route,
            &exposed,
            &Method::GET,
            operation,
            paths,
            operation_ids,
        );
    }
}

fn bearer_scheme(config: &GatewayConfig) -> Value {
    json!({
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": format!(
            "An access token from `POST {}` (or the token endpoint), as `Authorization: Bearer …`. \
             Its signature verifies against the keys at `{}` (issuer `{}`, audience `{}`).",
            config.auth.login_path,
            crate::issuer::jwks::PATH,
            config.tokens.issuer,
            config.tokens.audience,
        ),
    })
}

fn oauth2_scheme(config: &GatewayConfig) -> Value {
    let scopes: BTreeMap<&str, String> = config
        .routes
        .iter()
        .flat_map(|route| match &route.auth {
            AuthPolicy::Require { scopes, .. } => scopes.as_slice(),
            _ => &[],
        })
        .map(|scope| {
            (
                scope.as_str(),
                format!("Required by routes that name `{scope}`."),
            )
        })
        .collect();
    json!({
        "type": "oauth2",
        "description": "OAuth 2.0 client credentials (RFC 6749 §4.4): a registered client's id and secret \
            exchanged at the token endpoint for an access token.",
        "flows": { "clientCredentials": { "tokenUrl": config.auth.token_path, "scopes": scopes } },
    })
}

/// `security` of an operation behind `auth`, and the sentence naming its roles.
pub fn security(auth: &AuthPolicy) -> (Value, Option<String>) {
    match auth {
        AuthPolicy::Public => (json!([]), None),
        AuthPolicy::Authenticated => (json!([{ BEARER: [] }, { OAUTH2: [] }]), None),
        AuthPolicy::Require { roles, scopes } if roles.is_empty() => {
            (json!([{ BEARER: scopes }, { OAUTH2: scopes }]), None)
        }
        // Roles are a user's: a client's token has none, so only a user's bearer token can pass.
        AuthPolicy::Require { roles, scopes } => {
            let names: Vec<String> = roles.iter().map(|role| format!("`{role}`")).collect();
            let mut sentence = format!(
                "Requires a signed-in user with the role {}",
                names.join(" or ")
            );
            if !scopes.is_empty() {
                let scopes: Vec<String> = scopes.iter().map(|s| format!("`{s}`")).collect();
                sentence.push_str(&format!(" and the scopes {}", scopes.join(", ")));
            }
            sentence.push('.');
            (json!([{ BEARER: scopes }]), Some(sentence))
        }
    }
}

/// The operations `route` exposes, added under their public paths.
fn expose_route(
    route: &RouteSettings,
    spec: Option<(&Value, &Renamer)>,
    paths: &mut Map<String, Value>,
    operation_ids: &mut BTreeSet<String>,
) {
    let Some((spec, renamer)) = spec else {
        // The service's document is missing: the route is still there to call, described by
        // what the gateway knows of it.
        let exposed = as_written(route);
        for method in documented_methods(route) {
            let operation = json!({
                "summary": format!("{} {} (the `{}` service's description is unavailable)", method, route.path, route.service),
                "responses": { "default": { "description": "The service's answer." } },
            });
            add(route, &exposed, &method, operation, paths, operation_ids);
        }
        return;
    };
    let Some(service_paths) = spec["paths"].as_object() else {
        return;
    };
    let reached = paths::exposed_by(
        &route.path,
        &route.to,
        service_paths.keys().map(String::as_str),
    );
    for (service_path, exposed) in reached {
        let item = &service_paths[service_path];
        for method in documented_methods(route) {
            let key = method.as_str().to_ascii_lowercase();
            let Some(operation) = item.get(&key) else {
                continue;
            };
            let mut operation = operation.clone();
            inherit_parameters(&mut operation, item);
            renamer.rewrite(&mut operation);
            add(route, &exposed, &method, operation, paths, operation_ids);
        }
    }
}

/// The route's public path as the file writes it, every parameter its own (no service path
/// to map it onto: a missing document, or a composition).
fn as_written(route: &RouteSettings) -> Exposed {
    Exposed {
        public: route.path.replace("{*", "{"),
        renamed: Vec::new(),
        fixed: Vec::new(),
        unused: paths::public_parameters(&route.path)
            .into_iter()
            .map(str::to_owned)
            .collect(),
    }
}

/// The route's methods a document lists: HEAD only when routed on its own (it is answered
/// like GET otherwise, and OpenAPI documents it with GET).
fn documented_methods(route: &RouteSettings) -> Vec<Method> {
    METHODS
        .into_iter()
        .filter(|method| route.methods.contains(method))
        .collect()
}

/// Puts `operation` (already in the merged document's names) under `exposed.public`, with the
/// route's parameters, security and the gateway's answers.
fn add(
    route: &RouteSettings,
    exposed: &Exposed,
    method: &Method,
    mut operation: Value,
    paths: &mut Map<String, Value>,
    operation_ids: &mut BTreeSet<String>,
) {
    let takes_body = operation.get("requestBody").is_some();
    let Some(members) = operation.as_object_mut() else {
        return;
    };
    fix_path_parameters(members, exposed);
    // A composition route has no one service: its operations are the gateway's own.
    let owner = match route.compose {
        Some(_) => "compose",
        None => route.service.as_str(),
    };
    let base = members
        .get("operationId")
        .and_then(Value::as_str)
        .map(|id| format!("{owner}.{id}"))
        .unwrap_or_else(|| {
            format!(
                "{owner}.{}{}",
                method.as_str().to_ascii_lowercase(),
                exposed.public
            )
        });
    let mut id = base.clone();
    let mut n = 2;
    while !operation_ids.insert(id.clone()) {
        id = format!("{base}.{n}");
        n += 1;
    }
    members.insert("operationId".to_owned(), Value::String(id));
    let (security, roles) = security(&route.auth);
    members.insert("security".to_owned(), security);
    if let Some(roles) = roles {
        let description = match members.get("description").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => format!("{text}\n\n{roles}"),
            _ => roles,
        };
        members.insert("description".to_owned(), Value::String(description));
    }
    let responses = members.entry("responses").or_insert_with(|| json!({}));
    answers::add_gateway_answers(responses, route, takes_body);
    let item = paths
        .entry(exposed.public.clone())
        .or_insert_with(|| json!({}));
    item[method.as_str().to_ascii_lowercase()] = operation;
}

/// Path-item parameters (shared by its operations) moved into the operation, which may
/// override them (same name and `in`).
fn inherit_parameters(operation: &mut Value, item: &Value) {
    let Some(inherited) = item.get("parameters").and_then(Value::as_array) else {
        return;
    };
    let own = operation
        .as_object_mut()
        .map(|members| members.entry("parameters").or_insert_with(|| json!([])));
    let Some(Value::Array(own)) = own else {
        return;
    };
    for parameter in inherited {
        let overridden = own.iter().any(|mine| {
            mine.get("name") == parameter.get("name") && mine.get("in") == parameter.get("in")
        });
        if !overridden {
            own.push(parameter.clone());
        }
    }
}

/// The operation's path parameters in the route's names: renamed, dropped when `to` fills
/// them, and declared for the public ones the service does not take.
fn fix_path_parameters(members: &mut Map<String, Value>, exposed: &Exposed) {
    let parameters = members.entry("parameters").or_insert_with(|| json!([]));
    let Value::Array(parameters) = parameters else {
        return;
    };
    parameters.retain(|parameter| {
        !(parameter["in"] == "path"
            && parameter["name"]
                .as_str()
                .is_some_and(|name| exposed.fixed.iter().any(|fixed| fixed == name)))
    });
    for parameter in parameters.iter_mut() {
        if parameter["in"] != "path" {
            continue;
        }
        let Some(name) = parameter["name"].as_str() else {
            continue;
        };
        if let Some((_, public)) = exposed.renamed.iter().find(|(theirs, _)| theirs == name) {
            parameter["name"] = Value::String(public.clone());
        }
    }
    for name in &exposed.unused {
        parameters.push(json!({
            "name": name,
            "in": "path",
            "required": true,
            "description": "Matched by the gateway's route; not passed to the service.",
            "schema": { "type": "string" },
        }));
    }
    if parameters.is_empty() {
        members.remove("parameters");
    }
}

/// Every namespaced component of a service document: (kind, name, component).
fn components_of(spec: &Value) -> impl Iterator<Item = (&'static str, &String, &Value)> {
    NAMESPACED.into_iter().flat_map(move |kind| {
        spec["components"]
            .get(kind)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(move |(name, component)| (kind, name, component))
    })
}

/// How one service's component names read in the merged document.
pub struct Renamer<'a> {
    service: &'a str,
    /// `kind/Name` of the service's components equal to the gateway's shared ones.
    shared: BTreeSet<String>,
}

impl<'a> Renamer<'a> {
    pub fn new(service: &'a str, spec: &Value, ours: &Map<String, Value>) -> Self {
        let shared = components_of(spec)
            .filter(|(kind, name, component)| {
                ours.get(*kind)
                    .and_then(|section| section.get(answers::shared_name(name)))
                    .is_some_and(|mine| mine == *component)
            })
            .map(|(kind, name, _)| format!("{kind}/{name}"))
            .collect();
        Self { service, shared }
    }

    /// Every `$ref` to one of the service's own components, rewritten to its merged name.
    pub fn rewrite(&self, value: &mut Value) {
        match value {
            Value::Object(members) => {
                for (key, member) in members.iter_mut() {
                    match (key.as_str(), member) {
                        ("$ref", Value::String(reference)) => {
                            *reference = self.reference(reference)
                        }
                        (_, member) => self.rewrite(member),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.rewrite(item)),
            _ => {}
        }
    }

    fn reference(&self, reference: &str) -> String {
        let Some((kind, name)) = reference
            .strip_prefix("#/components/")
            .and_then(|rest| rest.split_once('/'))
        else {
            return reference.to_owned();
        };
        if !NAMESPACED.contains(&kind) {
            return reference.to_owned();
        }
        if self.shared.contains(&format!("{kind}/{name}")) {
            return format!("#/components/{kind}/{}", answers::shared_name(name));
        }
        format!("#/components/{kind}/{}.{name}", self.service)
    }

    /// Adds the service's components to `into` under their merged names (the shared ones are
    /// there already).
    fn merge(&self, spec: &Value, into: &mut Map<String, Value>) {
        for (kind, name, component) in components_of(spec) {
            if self.shared.contains(&format!("{kind}/{name}")) {
                continue;
            }
            let mut component = component.clone();
            self.rewrite(&mut component);
            let section = into.entry(kind).or_insert_with(|| json!({}));
            section[format!("{}.{name}", self.service)] = component;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{parse, Vars};
    use crate::openapi::specs::ServiceSpec;

    fn config() -> GatewayConfig {
        let text = "store: \"sqlite::memory:\"\n\
            services:\n\
            \x20 users: { upstreams: [\"http://127.0.0.1:1\"] }\n\
            \x20 shop: { upstreams: [\"http://127.0.0.1:2\"] }\n\
            routes:\n\
            \x20 - { path: \"/api/u/{uid}\", methods: [GET, DELETE], service: users, to: \"/users/{uid}\", auth: { roles: [admin] } }\n\
            \x20 - { path: /api/items, methods: [POST], service: shop, to: /items, auth: { scopes: [shop] } }\n";
        parse(text, "test.yaml", &Vars::new()).unwrap()
    }

    /// A service document with one `Thing` component, different per service.
    fn spec(path: &str, method: &str, thing: Value) -> Value {
        json!({
            "openapi": "3.1.0",
            "paths": {
                path: { method: {
                    "operationId": "op",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": { "200": { "description": "ok", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Thing" } } } } },
                } },
                "/internal/secret": { "get": { "responses": { "200": { "description": "no" } } } },
            },
            "components": { "schemas": { "Thing": thing } },
        })
    }

    fn specs(documents: Vec<(&str, Value)>) -> Specs {
        Specs {
            documents: documents
                .into_iter()
                .map(|(name, document)| {
                    let spec = ServiceSpec::new(document, name.to_owned());
                    (name.to_owned(), Arc::new(spec))
                })
                .collect(),
            ..Specs::default()
        }
    }

    /// A service document with one GET operation answering `schema`.
    fn answering(path: &str, schema: Value, components: Value) -> Value {
        json!({
            "openapi": "3.1.0",
            "paths": { path: { "get": {
                "operationId": "read",
                "responses": { "200": { "description": "ok", "content": { "application/json": { "schema": schema } } } },
            } } },
            "components": { "schemas": components },
        })
    }

    #[test]
    fn a_composition_route_documents_its_composed_object_partial_header_and_failures() {
        let text = "store: \"sqlite::memory:\"\n\
            services:\n\
            \x20 users: { upstreams: [\"http://127.0.0.1:1\"] }\n\
            \x20 orders: { upstreams: [\"http://127.0.0.1:2\"] }\n\
            \x20 clock: { upstreams: [\"http://127.0.0.1:3\"] }\n\
            routes:\n\
            \x20 - path: \"/api/users/{id}/summary\"\n\
            \x20   methods: [GET]\n\
            \x20   auth: { roles: [admin] }\n\
            \x20   compose:\n\
            \x20     user: { service: users, to: \"/users/{id}\", required: true }\n\
            \x20     orders: { service: orders, to: \"/orders?user_id={id}\", required: false, timeout: 2s }\n\
            \x20     time: { service: clock, to: /time, required: false }\n";
        let config = parse(text, "test.yaml", &Vars::new()).unwrap();
        let user = json!({ "type": "object", "required": ["id"], "properties": { "id": { "type": "string" } } });
        let orders = json!({ "type": "array", "items": { "$ref": "#/components/schemas/Order" } });
        let order =
            json!({ "type": "object", "properties": { "total_cents": { "type": "integer" } } });
        let document = build(
            &config,
            &specs(vec![
                (
                    "users",
                    answering(
                        "/users/{id}",
                        json!({ "$ref": "#/components/schemas/User" }),
                        json!({ "User": user }),
                    ),
                ),
                (
                    "orders",
                    answering("/orders", orders, json!({ "Order": order })),
                ),
                // The clock's document is missing: its member can be anything, or null.
            ]),
        );

        let operation = &document["paths"]["/api/users/{id}/summary"]["get"];
        assert!(operation.is_object(), "{:#}", document["paths"]);
        assert_eq!(operation["parameters"][0]["name"], "id");
        assert_eq!(operation["parameters"][0]["in"], "path");
        assert_eq!(operation["security"], json!([{ BEARER: [] }]));

        let answer = &operation["responses"]["200"];
        let schema = &answer["content"]["application/json"]["schema"];
        assert_eq!(schema["type"], "object");
        assert_eq!(
            schema["required"],
            json!(["orders", "time", "user"]),
            "one member per part, always there (an optional one may be null)"
        );
        assert_eq!(schema["additionalProperties"], false);
        let members = &schema["properties"];
        assert_eq!(
            members["user"],
            json!({ "$ref": "#/components/schemas/users.User" }),
            "a required part is its service's answer, never null"
        );
        assert_eq!(
            members["orders"],
            json!({ "anyOf": [
                { "type": "array", "items": { "$ref": "#/components/schemas/orders.Order" } },
                { "type": "null" },
            ] }),
            "an optional part is its service's answer or null"
        );
        assert_eq!(
            members["time"],
            json!({ "anyOf": [{}, { "type": "null" }] })
        );
        assert_eq!(
            document["components"]["schemas"]["users.User"]["required"],
            json!(["id"]),
            "the part's schema is in the document, under its service's name"
        );

        let errors = &members["errors"];
        assert_eq!(errors["type"], "object");
        let failed: Vec<&String> = errors["properties"].as_object().unwrap().keys().collect();
        assert_eq!(
            failed,
            ["orders", "time"],
            "only optional parts fail into `errors`"
        );
        assert_eq!(
            errors["properties"]["orders"]["required"],
            json!(["status", "type", "title", "reason", "detail"])
        );
        assert!(
            !schema["required"]
                .as_array()
                .unwrap()
                .contains(&json!("errors")),
            "`errors` only when a part failed"
        );

        assert_eq!(
            answer["headers"]["Gatehouse-Partial"]["schema"]["type"],
            "string"
        );
        for status in ["502", "503", "504", "401", "403"] {
            assert_eq!(
                operation["responses"][status]["content"]["application/problem+json"]["schema"]
                    ["$ref"],
                "#/components/schemas/Problem",
                "{status}"
            );
        }
        assert!(operation["operationId"]
            .as_str()
            .unwrap()
            .starts_with("compose."));
        assert!(
            document["paths"].get("/users/{id}").is_none()
                && document["paths"].get("/api/orders").is_none(),
            "the parts' own operations are not exposed by the composition"
        );
    }

    #[test]
    fn a_route_to_a_literal_path_documents_that_operation_not_the_parameter_one_beside_it() {
        let text = "store: \"sqlite::memory:\"\n\
            services:\n\
            \x20 users: { upstreams: [\"http://127.0.0.1:1\"] }\n\
            routes:\n\
            \x20 - { path: /api/users/me, methods: [PATCH], service: users, to: /users/me, auth: authenticated }\n";
        let config = parse(text, "test.yaml", &Vars::new()).unwrap();
        let body = |schema: Value| json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        let mine = json!({ "allOf": [
            { "$ref": "#/components/schemas/UpdateMe" },
            { "anyOf": [{ "required": ["current_password"] }, { "propertyNames": { "enum": ["full_name"] } }] },
        ] });
        let users = json!({
            "openapi": "3.1.0",
            "paths": {
                "/users/me": { "patch": { "operationId": "update_me", "requestBody": body(mine), "responses": { "200": { "description": "ok" } } } },
                "/users/{id}": { "patch": {
                    "operationId": "update_user",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "requestBody": body(json!({ "$ref": "#/components/schemas/UpdateUser" })),
                    "responses": { "200": { "description": "ok" } },
                } },
            },
            "components": { "schemas": { "UpdateMe": { "type": "object" }, "UpdateUser": { "type": "object" } } },
        });

        let document = build(&config, &specs(vec![("users", users)]));

        let operation = &document["paths"]["/api/users/me"]["patch"];
        assert_eq!(operation["operationId"], "users.update_me");
        let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            schema["allOf"][0]["$ref"], "#/components/schemas/users.UpdateMe",
            "the service's schema, whole: {schema:#}"
        );
        assert_eq!(
            schema["allOf"][1]["anyOf"][0]["required"],
            json!(["current_password"])
        );
        assert!(operation.get("parameters").is_none(), "{operation:#}");
    }

    #[test]
    fn components_sharing_a_name_are_namespaced_and_each_reference_follows_its_own() {
        let document = build(
            &config(),
            &specs(vec![
                (
                    "users",
                    spec("/users/{id}", "get", json!({ "type": "string" })),
                ),
                ("shop", spec("/items", "post", json!({ "type": "integer" }))),
            ]),
        );
        let schemas = &document["components"]["schemas"];
        assert_eq!(schemas["users.Thing"]["type"], "string");
        assert_eq!(schemas["shop.Thing"]["type"], "integer");
        assert!(schemas["Thing"].is_null());
        let user = &document["paths"]["/api/u/{uid}"]["get"];
        assert_eq!(
            user["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/users.Thing"
        );
        assert_eq!(user["parameters"][0]["name"], "uid");
        assert_eq!(user["operationId"], "users.op");
        assert!(
            document["paths"]["/api/u/{uid}"]["delete"].is_null(),
            "the service has no DELETE"
        );
        assert!(document["paths"].get("/internal/secret").is_none());
        let items = &document["paths"]["/api/items"]["post"];
        assert_eq!(
            items["security"],
            json!([{ BEARER: ["shop"] }, { OAUTH2: ["shop"] }])
        );
    }
}
