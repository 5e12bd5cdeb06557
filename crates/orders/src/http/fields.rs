//! Checks a request body field by field and keeps every error, so one 422 lists them all and a
//! client can fix its request in one round. Fields arrive as raw JSON values, so a value of the
//! wrong type is one more listed error rather than a refusal of the whole body.

use std::collections::BTreeMap;

use kit::FieldError;
use serde_json::Value;

use crate::error::Error;

#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    /// The parsed value, or `None` with its error kept against `field`.
    pub fn check<T, M: Into<String>>(&mut self, field: &str, parsed: Result<T, M>) -> Option<T> {
        parsed
            .map_err(|message| self.errors.push(FieldError::new(field, message)))
            .ok()
    }

    /// A field the request must have (`null` counts as missing).
    pub fn required(&mut self, field: &str, value: Option<Value>) -> Option<Value> {
        self.check(field, value.ok_or("is required"))
    }

    /// Every field of `unknown` (the members of an object at `parent` that are not among
    /// `expected`), each listed as an error.
    pub fn refuse_unknown(
        &mut self,
        parent: &str,
        unknown: &BTreeMap<String, Value>,
        expected: &str,
    ) {
        for name in unknown.keys() {
            let field = if parent.is_empty() {
                name.clone()
            } else {
                format!("{parent}.{name}")
            };
            self.errors.push(FieldError::new(
                field,
                format!("is not a known field (expected {expected})"),
            ));
        }
    }

    /// `Err` with every error kept, if there is any.
    pub fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidFields(self.errors))
        }
    }
}

/// A JSON string.
pub fn string(value: Value) -> Result<String, &'static str> {
    match value {
        Value::String(text) => Ok(text),
        _ => Err("must be a string"),
    }
}

/// A JSON number with no fractional part (`3`, `3.0` and `3e0` alike, as JSON Schema's
/// `integer`) that fits in 64 bits. One below the range reads as `i64::MIN`, so the caller's
/// own lower bound names the problem.
pub fn integer(value: &Value) -> Result<i64, String> {
    let Value::Number(number) = value else {
        return Err("must be a whole number".to_owned());
    };
    if let Some(integer) = number.as_i64() {
        return Ok(integer);
    }
    let too_large = || format!("must be at most {}", i64::MAX);
    if number.is_u64() {
        return Err(too_large());
    }
    // Past the 64-bit range serde_json reads integers as f64.
    let float = number.as_f64().unwrap_or(f64::NAN);
    if !float.is_finite() || float.fract() != 0.0 {
        Err("must be a whole number".to_owned())
    } else if float >= 9_223_372_036_854_775_808.0 {
        Err(too_large())
    } else if float < -9_223_372_036_854_775_808.0 {
        Ok(i64::MIN)
    } else {
        // Whole and within range, so exact.
        Ok(float as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_are_whole_numbers_in_64_bits() {
        for (value, expected) in [
            (json!(3), Ok(3)),
            (json!(3.0), Ok(3)),
            (json!(-4), Ok(-4)),
            (json!(i64::MAX), Ok(i64::MAX)),
            (serde_json::from_str("1e3").unwrap(), Ok(1000)),
            (serde_json::from_str("-1e30").unwrap(), Ok(i64::MIN)),
        ] {
            assert_eq!(integer(&value), expected, "{value}");
        }
        for (value, reason) in [
            (json!(1.5), "a fraction"),
            (json!("3"), "a string"),
            (json!(null), "null"),
            (json!([3]), "an array"),
            (json!(true), "a boolean"),
            (json!(u64::MAX), "past i64"),
            (serde_json::from_str("1e30").unwrap(), "far past i64"),
            (
                serde_json::from_str("99999999999999999999999").unwrap(),
                "a long integer",
            ),
        ] {
            assert!(integer(&value).is_err(), "accepted {reason}: {value}");
        }
    }
}
