//! The gateway's own endpoints as the merged document lists them: sign-in, refresh, logout,
//! the OAuth 2.0 token endpoint (form-encoded, RFC 6749 errors), the public keys, health. Their
//! paths are the configured ones (`auth.*`); their bodies are those `crate::issuer` reads and
//! writes.

use serde_json::{json, Map, Value};

use super::answers::problem;
use super::document::BEARER;
use crate::config::GatewayConfig;

/// Adds the gateway's own operations and the schemas they use to the document's paths.
pub fn operations(config: &GatewayConfig, paths: &mut Map<String, Value>) {
    let auth = &config.auth;
    let session = session_schema();
    let json_body = |schema: Value| json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    let signed_in = json!({
        "description": "Signed in: an access token and the refresh token that renews it (`Cache-Control: no-store`).",
        "content": { "application/json": { "schema": session } },
    });
    let invalid_fields =
        problem("A member is missing, of the wrong type or too long: `errors` lists each.");
    let unavailable = problem(
        "The credentials service or the store is unavailable; retry after `Retry-After` seconds.",
    );
    let too_many = problem("Too many failed sign-ins (per username, address or device), or too many at once; retry after `Retry-After` seconds.");

    paths.insert(auth.login_path.clone(), json!({ "post": {
        "tags": ["gateway"],
        "operationId": "gateway.login",
        "summary": "Sign in with a username and password",
        "description": "Checks the password with the credentials service and starts a session. The answer carries a device token (and sets it as a cookie for browsers): presenting it at the next sign-in keeps that device's own failed-attempt budget.",
        "security": [],
        "requestBody": json_body(json!({
            "type": "object",
            "required": ["username", "password"],
            "properties": {
                "username": { "type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S", "description": "Not all blanks." },
                "password": { "type": "string", "minLength": 1, "maxLength": 1024, "format": "password" },
                "device_token": { "type": "string", "description": "The device token of an earlier sign-in." },
            },
        })),
        "responses": {
            "200": signed_in,
            "400": problem("The body is not well-formed JSON."),
            "401": problem("Invalid username or password (the same answer for an unknown user)."),
            "413": problem("The body is larger than the gateway accepts."),
            "415": problem("The body is not sent as `application/json`."),
            "422": invalid_fields,
            "429": too_many,
            "503": unavailable,
        },
    }}));
    paths.insert(auth.refresh_path.clone(), json!({ "post": {
        "tags": ["gateway"],
        "operationId": "gateway.refresh",
        "summary": "Renew a session with its refresh token",
        "description": "The refresh token is rotated: the one presented stops working, the answer carries the next. A refresh token presented twice ends the session (it was stolen or replayed).",
        "security": [],
        "requestBody": json_body(json!({
            "type": "object",
            "required": ["refresh_token"],
            "additionalProperties": false,
            "properties": { "refresh_token": { "type": "string" } },
        })),
        "responses": {
            "200": signed_in,
            "400": problem("The body is not well-formed JSON."),
            "401": problem("The refresh token is unknown, expired, already used or revoked."),
            "413": problem("The body is larger than the gateway accepts."),
            "415": problem("The body is not sent as `application/json`."),
            "422": problem("`refresh_token` is missing or not a string, or another member is sent: `errors` lists each."),
            "503": unavailable,
        },
    }}));
    paths.insert(
        auth.logout_path.clone(),
        json!({ "post": {
            "tags": ["gateway"],
            "operationId": "gateway.logout",
            "summary": "End a session",
            "description": "Revokes the access token presented and, when given, the refresh token.",
            "security": [{ BEARER: [] }],
            "requestBody": { "required": false, "content": { "application/json": { "schema": {
                "type": "object",
                "additionalProperties": false,
                "properties": { "refresh_token": { "type": "string" } },
            } } } },
            "responses": {
                "204": { "description": "Signed out." },
                "400": problem("The body is not well-formed JSON, or a machine client's token came with a `refresh_token` (clients hold none)."),
                "401": problem("No valid access token."),
                "413": problem("The body is larger than the gateway accepts."),
                "415": problem("A body is sent, but not as `application/json`."),
                "422": problem("The body is not an object, `refresh_token` is not a string (`null` included), or another member is sent: `errors` lists each."),
                "503": unavailable,
            },
        }}),
    );
    let oauth_error = json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": { "type": "string", "enum": ["invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type", "invalid_scope", "server_error", "temporarily_unavailable"] },
            "error_description": { "type": "string" },
        },
    });
    let oauth_failure = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": oauth_error } } });
    paths.insert(auth.token_path.clone(), json!({ "post": {
        "tags": ["gateway"],
        "operationId": "gateway.token",
        "summary": "OAuth 2.0 token endpoint (client credentials, password, refresh token)",
        "description": "RFC 6749's grants, each parameter at most once: `client_credentials` (§4.4): a registered client's credentials, in the form or as HTTP Basic, for an access token with the scopes asked for (at most the client's), no refresh token; `password` (§4.3): `username` and `password` (and the `device_token` of an earlier sign-in) for a session like the login endpoint's, its scopes narrowed by `scope`; `refresh_token` (§6): the session's refresh token, rotated, without `scope`. A client that sends credentials with the last two must send the right ones. Errors are RFC 6749 §5.2 JSON, not problems.",
        "security": [],
        "requestBody": { "required": true, "content": { "application/x-www-form-urlencoded": { "schema": token_form() } } },
        "responses": {
            "200": {
                "description": "The access token (`Cache-Control: no-store`); after a `password` or `refresh_token` grant, with the session's next refresh token.",
                "content": { "application/json": { "schema": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in", "scope"],
                    "properties": {
                        "access_token": { "type": "string" },
                        "token_type": { "type": "string", "enum": ["bearer"] },
                        "expires_in": { "type": "integer", "minimum": 0 },
                        "scope": { "type": "string" },
                        "refresh_token": { "type": "string" },
                        "device_token": { "type": "string" },
                    },
                } } },
            },
            "400": oauth_failure("`invalid_request`, `unsupported_grant_type`, `invalid_scope` or `invalid_grant`."),
            "401": with_header(
                oauth_failure("`invalid_client`: the client's credentials are wrong (with `WWW-Authenticate: Basic` when sent as Basic)."),
                "WWW-Authenticate",
                "string",
            ),
            "408": oauth_failure("`invalid_request`: the body stalled."),
            "413": oauth_failure("`invalid_request`: the body is larger than the gateway accepts."),
            "429": with_header(
                oauth_failure("`invalid_grant`: too many failed sign-ins (`password` grant); retry after `Retry-After` seconds."),
                "Retry-After",
                "integer",
            ),
            "503": oauth_failure("`temporarily_unavailable`: the store or the credentials service is unavailable."),
        },
    }}));
    paths.insert(crate::issuer::jwks::PATH.to_owned(), json!({ "get": {
        "tags": ["gateway"],
        "operationId": "gateway.jwks",
        "summary": "The public keys that verify the gateway's tokens (JWKS, RFC 7517)",
        "security": [],
        "responses": { "200": {
            "description": "The key set, with the keys being rotated in and out.",
            "content": { "application/jwk-set+json": { "schema": {
                "type": "object",
                "required": ["keys"],
                "properties": { "keys": { "type": "array", "items": { "type": "object", "required": ["kty", "kid"], "properties": {
                    "kty": { "type": "string" }, "kid": { "type": "string" }, "alg": { "type": "string" }, "use": { "type": "string" },
                } } } },
            } } },
        } },
    }}));
    let status = json!({ "type": "object", "properties": { "status": { "type": "string" } } });
    paths.insert("/healthz".to_owned(), json!({ "get": {
        "tags": ["gateway"], "operationId": "gateway.healthz", "summary": "Liveness", "security": [],
        "responses": { "200": { "description": "The gateway runs.", "content": { "application/json": { "schema": status } } } },
    }}));
    paths.insert("/readyz".to_owned(), json!({ "get": {
        "tags": ["gateway"], "operationId": "gateway.readyz", "summary": "Readiness", "security": [],
        "responses": {
            "200": { "description": "Ready to serve.", "content": { "application/json": { "schema": status } } },
            "503": { "description": "Not ready (yet, or any more).", "content": { "application/json": { "schema": status } } },
        },
    }}));
}

fn session_schema() -> Value {
    json!({
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "refresh_token", "scope"],
        "properties": {
            "access_token": { "type": "string", "description": "A JWT; send it as `Authorization: Bearer …`." },
            "token_type": { "type": "string", "enum": ["bearer"] },
            "expires_in": { "type": "integer", "minimum": 0, "description": "Seconds." },
            "refresh_token": { "type": "string" },
            "scope": { "type": "string" },
            "device_token": { "type": "string" },
        },
    })
}

/// `response` with the header `name`, of JSON type `kind`.
fn with_header(mut response: Value, name: &str, kind: &str) -> Value {
    response["headers"] = json!({ name: { "schema": { "type": kind } } });
    response
}

/// The token endpoint's form: one shape per grant, told apart by `grant_type`. An empty value
/// counts as left out, as the endpoint reads it; parameters it does not know are ignored
/// (RFC 6749 §3.2), so none is forbidden except `scope` on a refresh.
fn token_form() -> Value {
    let client = json!({
        "client_id": { "type": "string", "minLength": 1, "description": "With `client_secret`, unless sent as HTTP Basic." },
        "client_secret": { "type": "string", "format": "password" },
    });
    let grant = |name: &str, required: &[&str], own: Value, description: &str| {
        let mut properties = client.clone();
        properties["grant_type"] = json!({ "type": "string", "enum": [name] });
        if let (Some(properties), Value::Object(own)) = (properties.as_object_mut(), own) {
            properties.extend(own);
        }
        let mut required = required.to_vec();
        required.insert(0, "grant_type");
        json!({
            "title": name,
            "description": description,
            "type": "object",
            "required": required,
            "properties": properties,
            "dependentRequired": { "client_secret": ["client_id"] },
        })
    };
    let scope = json!({ "type": "string", "description": "Space-separated scopes." });
    let mut refresh = grant(
        "refresh_token",
        &["refresh_token"],
        json!({ "refresh_token": { "type": "string", "minLength": 1 } }),
        "RFC 6749 §6: the session's refresh token, rotated; its scopes are kept (no `scope`).",
    );
    refresh["not"] = json!({ "required": ["scope"] });
    json!({ "oneOf": [
        grant(
            "client_credentials",
            &[],
            json!({ "scope": scope }),
            "RFC 6749 §4.4: a registered client's credentials (in the form or as HTTP Basic) for an access token with the scopes asked for, at most the client's; no refresh token.",
        ),
        grant(
            "password",
            &["username", "password"],
            json!({
                "username": { "type": "string", "minLength": 1 },
                "password": { "type": "string", "minLength": 1, "format": "password" },
                "device_token": { "type": "string", "description": "The device token of an earlier sign-in." },
                "scope": scope,
            }),
            "RFC 6749 §4.3: a user's username and password for a session like the login endpoint's, its scopes narrowed by `scope`.",
        ),
        refresh,
    ] })
}
