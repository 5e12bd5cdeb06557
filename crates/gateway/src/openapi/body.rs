//! Request-body validation (a route's `request: { validate_body: true }`): the JSON body is
//! checked against the `requestBody` schema of the operation it reaches, in the service's own
//! document (its `$ref`s resolved within that document), before the request leaves the gateway.
//! Not JSON → 415; malformed JSON → 400; a body that does not match → 422 listing each field
//! the way the services do (`items[2].quantity`, kit::fields' shape). The service never sees
//! a refused request.
//!
//! When the service's document is unavailable (never fetched, not an OpenAPI document, no
//! operation for the request), the body is forwarded unchecked: the service validates every
//! body itself, so the gateway's check is an early refusal, never the only one, and a spec
//! outage must not become an outage of the route. The choice is logged once per validator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::header;
use http::request::Parts;
use kit::problem::FieldError;
use serde_json::{json, Value};

use super::paths;
use crate::app::App;
use crate::error::GatewayError;
use crate::proxy::forward;
use crate::router::Route;

/// The most field errors listed in one 422 (a huge invalid array must not make a huge answer).
const MAX_ERRORS: usize = 50;

/// A compiled schema per (service document, operation); `None`: that operation takes no JSON
/// body the gateway can check.
type Compiled = Option<Arc<jsonschema::Validator>>;

#[derive(Default)]
pub struct Validators {
    compiled: Mutex<HashMap<(String, String, String, String), Compiled>>,
}

/// The request's body, read and checked when the route asks for it; the same bytes go on.
pub async fn check(
    app: &App,
    route: &Route,
    parts: &Parts,
    target: &str,
    body: Body,
) -> Result<Body, GatewayError> {
    if !route.settings.request_checks.validate_body {
        return Ok(body);
    }
    let Some(validator) = validator_for(app, route, parts, target).await else {
        return Ok(body);
    };
    let declared_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(is_json);
    let limits = &app.config().limits;
    let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let bytes = forward::read_whole(body, limit, limits.body_idle_timeout)
        .await
        .map_err(|error| error.into_gateway_error(limits))?;
    if bytes.is_empty() && declared_json.is_none() {
        // No body at all: whether one is required is the service's to say.
        return Ok(Body::from(bytes));
    }
    if declared_json != Some(true) {
        return Err(GatewayError::UnsupportedMediaType(
            "This route takes a JSON body: send it as `Content-Type: application/json`.",
        ));
    }
    let instance: Value = serde_json::from_slice(&bytes).map_err(|error| {
        GatewayError::BadRequest(format!("The body is not well-formed JSON: {error}."))
    })?;
    let errors: Vec<FieldError> = validator
        .iter_errors(&instance)
        .take(MAX_ERRORS)
        .map(|error| field_error(&error))
        .collect();
    if !errors.is_empty() {
        return Err(GatewayError::InvalidBody(errors));
    }
    Ok(Body::from(bytes))
}

/// `application/json`, or any `+json` type (also what a composition part must answer).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The validator of the operation `target` reaches, compiled once per service document.
async fn validator_for(
    app: &App,
    route: &Route,
    parts: &Parts,
    target: &str,
) -> Option<Arc<jsonschema::Validator>> {
    let specs = app.docs.specs.ready(app).await;
    let Some(spec) = specs.documents.get(route.service.as_ref()) else {
        tracing::debug!(service = %route.service, "no OpenAPI document: the body goes on unchecked");
        return None;
    };
    let path = target.split('?').next().unwrap_or(target);
    let templates = spec.document["paths"].as_object()?;
    let template = paths::template_of(templates.keys().map(String::as_str), path)?;
    let method = parts.method.as_str().to_ascii_lowercase();
    let key = (
        route.service.to_string(),
        spec.digest.clone(),
        template.to_owned(),
        method.clone(),
    );
    let mut compiled = app
        .docs
        .validators
        .compiled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = compiled.get(&key) {
        return known.clone();
    }
    // Validators of older documents are dropped with them.
    compiled.retain(|(service, digest, _, _), _| {
        service != route.service.as_ref() || *digest == spec.digest
    });
    let operation = &spec.document["paths"][template][&method];
    let validator = schema_of(&spec.document, operation).and_then(|schema| {
        // The operation's schema under `allOf`, beside the document's components, so
        // `#/components/schemas/…` references resolve within the service's own document.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": spec.document["components"],
        });
        match jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
        {
            Ok(validator) => Some(Arc::new(validator)),
            Err(error) => {
                tracing::warn!(service = %route.service, path = template, %error, "the operation's body schema does not compile: bodies go on unchecked");
                None
            }
        }
    });
    compiled.insert(key, validator.clone());
    validator
}

/// The JSON schema of `operation`'s request body (a `$ref`ed request body followed).
fn schema_of(document: &Value, operation: &Value) -> Option<Value> {
    let mut body = operation.get("requestBody")?;
    if let Some(reference) = body.get("$ref").and_then(Value::as_str) {
        body = document.pointer(reference.strip_prefix('#')?)?;
    }
    let content = body.get("content")?.as_object()?;
    content
        .iter()
        .find(|(media, _)| is_json(media))
        .and_then(|(_, media)| media.get("schema"))
        .cloned()
}

/// A validation error as the services word theirs: the field's path, and what is wrong.
fn field_error(error: &jsonschema::ValidationError<'_>) -> FieldError {
    let mut field = String::new();
    for segment in error.instance_path().as_str().split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            field.push_str(&format!("[{segment}]"));
        } else {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(&segment);
        }
    }
    if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
        let name = property.as_str().unwrap_or_default();
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(name);
        return FieldError::new(field, "is required");
    }
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
        error.kind()
    {
        let names = unexpected.join(", ");
        return FieldError::new(
            if field.is_empty() {
                names.clone()
            } else {
                format!("{field}.{names}")
            },
            "is not a member this operation takes",
        );
    }
    FieldError::new(field, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_are_recognised_with_parameters_and_suffixes() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }

    #[test]
    fn errors_name_fields_as_the_services_do() {
        let schema = json!({
            "type": "object",
            "required": ["items"],
            "properties": { "items": { "type": "array", "items": {
                "type": "object", "required": ["sku"],
                "properties": { "quantity": { "type": "integer", "minimum": 1 }, "sku": { "type": "string" } },
            } } },
        });
        let validator = jsonschema::validator_for(&schema).unwrap();
        let body = json!({ "items": [{ "sku": "a", "quantity": 1 }, { "quantity": 0 }] });
        let mut fields: Vec<String> = validator
            .iter_errors(&body)
            .map(|error| field_error(&error).field)
            .collect();
        fields.sort();
        assert_eq!(fields, vec!["items[1].quantity", "items[1].sku"]);
        let missing = validator
            .iter_errors(&json!({}))
            .map(|e| field_error(&e))
            .collect::<Vec<_>>();
        assert_eq!(missing, vec![FieldError::new("items", "is required")]);
    }
}
