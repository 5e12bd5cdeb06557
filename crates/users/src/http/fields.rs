//! Checks a request body field by field and keeps every error, so one 422 lists them all and a
//! client can fix its request in one round.

use kit::FieldError;
use serde::{Deserialize, Deserializer};

use crate::error::Error;

#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    /// The parsed value, or `None` with its error kept.
    pub fn check<T>(&mut self, parsed: Result<T, FieldError>) -> Option<T> {
        parsed.map_err(|error| self.errors.push(error)).ok()
    }

    /// As [`Fields::check`], for parsers that report several errors.
    pub fn check_all<T>(&mut self, parsed: Result<T, Vec<FieldError>>) -> Option<T> {
        parsed.map_err(|errors| self.errors.extend(errors)).ok()
    }

    /// A field a create request must have.
    pub fn required<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.errors.push(FieldError::new(field, "is required"));
        }
        value
    }

    /// A field that must be there because another one is; `why` says which.
    pub fn required_with<T>(&mut self, field: &str, value: Option<T>, why: &str) -> Option<T> {
        if value.is_none() {
            self.errors.push(FieldError::new(field, why));
        }
        value
    }

    /// A field a change request may leave out but not set to `null` (see [`present`]).
    pub fn not_null<T>(&mut self, field: &str, value: Option<Option<T>>) -> Option<T> {
        match value {
            Some(None) => {
                self.errors.push(FieldError::new(field, "must not be null"));
                None
            }
            other => other.flatten(),
        }
    }

    /// `Err` with every error kept, if there is any.
    pub fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }

    /// Every error kept, as the answer to the request.
    pub fn into_error(self) -> Error {
        Error::InvalidFields(self.errors)
    }
}

/// For change (PATCH) bodies, with `#[serde(default, deserialize_with = "present")]`: tells a
/// field left out (`None`) from one sent as `null` (`Some(None)`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A field that every change request treats alike: left out, it stays; `null` or blank, it is
/// cleared; otherwise it is parsed.
pub fn full_name(
    fields: &mut Fields,
    value: Option<Option<String>>,
) -> Option<Option<crate::domain::FullName>> {
    match value {
        None => None,
        Some(None) => Some(None),
        Some(Some(raw)) => fields.check(crate::domain::FullName::parse(&raw)),
    }
}
