//! Scopes: fine-grained grants (`time:read`) the gateway copies into tokens, OAuth 2.0 style.

use kit::FieldError;
use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// At most 32 distinct scope tokens, each 1 to 64 characters of `a-z`, `0-9`, `:`, `.`, `_`, `-`.
/// Scopes grant access, so they are never silently rewritten: a token in upper case is refused,
/// not folded. Duplicates are dropped, keeping the first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Scopes(Vec<String>);

impl Scopes {
    pub const MAX_COUNT: usize = 32;
    pub const MAX_CHARS: usize = 64;
    /// What [`Scopes::parse`] accepts of one scope, as a JSON Schema (ECMA-262) pattern.
    pub const PATTERN: &'static str = "^[a-z0-9:._-]+$";
    const FIELD: &'static str = "scopes";

    /// Every bad token is reported, as `scopes[i]`.
    pub fn parse(raw: &[String]) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut scopes: Vec<String> = Vec::with_capacity(raw.len());
        for (i, scope) in raw.iter().enumerate() {
            let field = format!("{}[{i}]", Self::FIELD);
            if scope.is_empty() {
                errors.push(FieldError::new(field, "must not be empty"));
            } else if scope.chars().count() > Self::MAX_CHARS {
                errors.push(FieldError::new(
                    field,
                    format!("must be at most {} characters", Self::MAX_CHARS),
                ));
            } else if !scope.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b':' | b'.' | b'_' | b'-')
            }) {
                errors.push(FieldError::new(
                    field,
                    "may contain only letters a-z, digits, ':', '.', '_' and '-'",
                ));
            } else if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        if scopes.len() > Self::MAX_COUNT {
            errors.push(FieldError::new(
                Self::FIELD,
                format!("must hold at most {} scopes", Self::MAX_COUNT),
            ));
        }
        if errors.is_empty() {
            Ok(Self(scopes))
        } else {
            Err(errors)
        }
    }

    /// What a new user gets when the admin names no scopes.
    pub fn default_for_new_user() -> Self {
        Self(vec!["time:read".to_owned()])
    }

    /// Scopes as stored: space-separated, the way OAuth 2.0 writes a `scope`.
    pub fn from_stored(stored: &str) -> Self {
        Self(stored.split_ascii_whitespace().map(str::to_owned).collect())
    }

    pub fn to_stored(&self) -> String {
        self.0.join(" ")
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Written by hand, not derived, so the document's limits are the constants [`Scopes::parse`]
/// checks against.
impl utoipa::PartialSchema for Scopes {
    fn schema() -> RefOr<Schema> {
        let scope = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(Self::MAX_CHARS))
            .pattern(Some(Self::PATTERN));
        ArrayBuilder::new()
            .items(scope)
            .max_items(Some(Self::MAX_COUNT))
            .description(Some(format!(
                "Grants the gateway copies into tokens, OAuth 2.0 style: at most {}, each 1 to {} \
                 characters of a-z, 0-9, ':', '.', '_', '-'. Duplicates are dropped.",
                Self::MAX_COUNT,
                Self::MAX_CHARS
            )))
            .examples([serde_json::json!(["time:read"])])
            .into()
    }
}

impl utoipa::ToSchema for Scopes {}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn duplicates_are_dropped_and_order_kept() {
        let scopes = Scopes::parse(&strings(&["time:read", "orders.write", "time:read"]));
        assert_eq!(scopes, Ok(Scopes(strings(&["time:read", "orders.write"]))));
    }

    #[test]
    fn every_bad_scope_is_named() {
        let errors = Scopes::parse(&strings(&["ok", "", "Time:Read", "has space"]))
            .err()
            .unwrap_or_default();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["scopes[1]", "scopes[2]", "scopes[3]"]);
    }

    #[test]
    fn too_many_scopes_are_refused() {
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        assert!(Scopes::parse(&many).is_err());
        assert!(Scopes::parse(&many[..32]).is_ok());
    }

    #[test]
    fn stored_form_round_trips() {
        let scopes = Scopes(strings(&["time:read", "time:precise"]));
        assert_eq!(Scopes::from_stored(&scopes.to_stored()), scopes);
    }
}
