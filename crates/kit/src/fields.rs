//! Request bodies checked field by field with every error kept, so one 422 lists them all and a
//! client fixes its request in one round.
//!
//! A body struct declares each member as a [`Field<T>`], which never fails to deserialize: left
//! out, sent as `null`, of the wanted type, or of another type (with what was wanted) are four
//! values to look at rather than an error that stops at the first. Members the struct does not
//! name are gathered in [`Unknown`], each one more listed error. The handler takes each field
//! through one [`Fields`], which keeps every error against the field's path
//! (`items[2].quantity`) and answers them together:
//!
//! ```
//! use kit::fields::{Field, Fields, Unknown};
//!
//! #[derive(Default, serde::Deserialize)]
//! #[serde(default, expecting = "an object with `name`")]
//! struct Rename {
//!     name: Field<String>,
//!     #[serde(flatten)]
//!     unknown: Unknown,
//! }
//!
//! fn name_of(body: Rename) -> Result<String, kit::Problem> {
//!     let mut fields = Fields::default();
//!     let name = fields
//!         .required("name", body.name)
//!         .and_then(|name| fields.check("name", non_blank(name)));
//!     fields.refuse_unknown("", body.unknown, "`name`");
//!     fields.finish()?; // 422 listing every error, if there is any
//!     Ok(name.unwrap_or_default())
//! }
//!
//! fn non_blank(text: String) -> Result<String, &'static str> {
//!     if text.trim().is_empty() { Err("must not be blank") } else { Ok(text) }
//! }
//! # let body: Rename = serde_json::from_str(r#"{ "name": 5, "colour": "red" }"#).unwrap();
//! # let problem = name_of(body).unwrap_err();
//! # assert_eq!(problem.errors().len(), 2);
//! ```
//!
//! What is not a JSON object is answered before the body reaches the struct, by
//! [`crate::extract::Json`]: malformed JSON 400 (RFC 9457 practice: the request could not be
//! read at all), a body not sent as `application/json` 415, one too large 413, and JSON that is
//! not an object 422 (well-formed, but not the object the operation takes).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::problem::{FieldError, Problem};

/// One member of a JSON object as it was sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    /// Not in the object.
    #[default]
    Absent,
    /// Sent as `null`.
    Null,
    /// A value of the wanted type (which says nothing yet of whether it is acceptable).
    Given(T),
    /// A value of another type: what was wanted, in words for the client (`must be a string`).
    Invalid(String),
}

impl<T> Field<T> {
    /// Whether the member was in the object at all (`null` included).
    pub fn is_sent(&self) -> bool {
        !matches!(self, Field::Absent)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as any JSON first, so a value of the wrong type is kept as an error of this
        // member instead of failing the whole body.
        Ok(match Value::deserialize(deserializer)? {
            Value::Null => Field::Null,
            value => match T::deserialize(value) {
                Ok(value) => Field::Given(value),
                Err(error) => Field::Invalid(wanted(&error)),
            },
        })
    }
}

/// The members of an object that its struct does not name (`#[serde(flatten)]` it), for
/// [`Fields::refuse_unknown`]. Only the names are kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Unknown(BTreeMap<String, IgnoredAny>);

impl Unknown {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// A JSON number with no fractional part (`3`, `3.0` and `3e0` alike, as JSON Schema's
/// `integer`) that fits in 64 bits. One below the range reads as `i64::MIN`, so the caller's
/// own lower bound names the problem; one above it is refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integer(pub i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntegerVisitor)
    }
}

struct IntegerVisitor;

/// 2^63 as a float: the first value past `i64::MAX`.
const PAST_I64: f64 = 9_223_372_036_854_775_808.0;

impl Visitor<'_> for IntegerVisitor {
    type Value = Integer;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a whole number")
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Integer, E> {
        Ok(Integer(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Integer, E> {
        i64::try_from(value)
            .map(Integer)
            .map_err(|_| E::custom(format!("must be at most {}", i64::MAX)))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Integer, E> {
        // Past the 64-bit range serde_json reads integers as f64.
        if !value.is_finite() || value.fract() != 0.0 {
            Err(E::invalid_type(serde::de::Unexpected::Float(value), &self))
        } else if value >= PAST_I64 {
            Err(E::custom(format!("must be at most {}", i64::MAX)))
        } else if value < -PAST_I64 {
            Ok(Integer(i64::MIN))
        } else {
            // Whole and within range, so exact.
            Ok(Integer(value as i64))
        }
    }
}

/// What a parser says of a bad value: a message about the field being checked, or errors that
/// already name their fields (a list parser naming `scopes[1]`, say).
pub trait Rejection {
    fn into_errors(self, field: &str) -> Vec<FieldError>;
}

impl Rejection for &str {
    fn into_errors(self, field: &str) -> Vec<FieldError> {
        vec![FieldError::new(field, self)]
    }
}

impl Rejection for String {
    fn into_errors(self, field: &str) -> Vec<FieldError> {
        vec![FieldError::new(field, self)]
    }
}

impl Rejection for FieldError {
    fn into_errors(self, _: &str) -> Vec<FieldError> {
        vec![self]
    }
}

impl Rejection for Vec<FieldError> {
    fn into_errors(self, _: &str) -> Vec<FieldError> {
        self
    }
}

/// The most errors one answer lists: a body of many thousands of unknown members must not turn
/// a 2 MB request into a much larger answer. The rest are counted in the `detail`.
pub const MAX_LISTED: usize = 100;

/// The errors of one request body, kept in the order the fields were checked.
#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
    /// Errors past [`MAX_LISTED`], counted only.
    unlisted: usize,
}

impl Fields {
    /// A member the request must have; `null` counts as missing.
    pub fn required<T>(&mut self, field: &str, value: Field<T>) -> Option<T> {
        match value {
            Field::Absent | Field::Null => self.refuse(field, "is required"),
            other => self.given(field, other),
        }
    }

    /// A member the request may leave out or send as `null` (both `None`: the default applies).
    pub fn optional<T>(&mut self, field: &str, value: Field<T>) -> Option<T> {
        match value {
            Field::Absent | Field::Null => None,
            other => self.given(field, other),
        }
    }

    /// A member a change request may leave out (`None`: unchanged) but not set to `null`.
    pub fn not_null<T>(&mut self, field: &str, value: Field<T>) -> Option<T> {
        match value {
            Field::Absent => None,
            Field::Null => self.refuse(field, "must not be null"),
            other => self.given(field, other),
        }
    }

    /// A member a change request may leave out (`None`: unchanged) or set to `null`
    /// (`Some(None)`: cleared).
    pub fn nullable<T>(&mut self, field: &str, value: Field<T>) -> Option<Option<T>> {
        match value {
            Field::Absent => None,
            Field::Null => Some(None),
            other => self.given(field, other).map(Some),
        }
    }

    /// An element of an array (`items[2]`): there, `null` is a value of the wrong type.
    pub fn element<T>(&mut self, field: &str, value: Field<T>) -> Option<T> {
        match value {
            Field::Absent | Field::Null => self.refuse(field, "must not be null"),
            other => self.given(field, other),
        }
    }

    /// The parsed value, or `None` with its errors kept against `field`.
    pub fn check<T, E: Rejection>(&mut self, field: &str, parsed: Result<T, E>) -> Option<T> {
        parsed
            .map_err(|rejection| {
                for error in rejection.into_errors(field) {
                    self.keep(error);
                }
            })
            .ok()
    }

    /// Keeps an error found some other way; always `None`, for use in a chain.
    pub fn refuse<T>(&mut self, field: &str, message: impl Into<String>) -> Option<T> {
        self.keep(FieldError::new(field, message));
        None
    }

    /// Every member in `unknown`, each listed as an error at `parent` (`""` for the top level);
    /// `expected` names the members there are.
    pub fn refuse_unknown(&mut self, parent: &str, unknown: Unknown, expected: &str) {
        for name in unknown.names() {
            self.keep(FieldError::new(
                path(parent, name),
                format!("is not a known field (expected {expected})"),
            ));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Err` with the 422 listing every error kept, if there is any.
    pub fn finish(self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.into_problem())
        }
    }

    /// The 422 listing every error kept (the first [`MAX_LISTED`] of them).
    pub fn into_problem(self) -> Problem {
        let problem = Problem::invalid_fields(self.errors);
        if self.unlisted == 0 {
            return problem;
        }
        let listed = problem.detail().unwrap_or_default().to_owned();
        problem.with_detail(format!("{listed}; and {} more not listed", self.unlisted))
    }

    fn keep(&mut self, error: FieldError) {
        if self.errors.len() < MAX_LISTED {
            self.errors.push(error);
        } else {
            self.unlisted += 1;
        }
    }

    fn given<T>(&mut self, field: &str, value: Field<T>) -> Option<T> {
        match value {
            Field::Given(value) => Some(value),
            Field::Invalid(message) => self.refuse(field, message),
            Field::Absent | Field::Null => None,
        }
    }
}

/// The path of member `name` of the object at `parent` (`""` for the top level).
pub fn path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// The longest message a field error repeats from a parser, in characters.
const MAX_MESSAGE_CHARS: usize = 200;

/// What a value of the wrong type should have been, in JSON's words (`must be an array`).
///
/// serde words a mismatch "invalid type: <what was sent>, expected <what was wanted>" (and
/// "invalid value: …" alike): only what was wanted is kept, so the answer never echoes the
/// value back (a password sent as a number, a megabyte of text where a flag was wanted).
/// Other messages (a parser's own) are kept, cut to a bounded length.
fn wanted(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let mismatch = text.starts_with("invalid type: ") || text.starts_with("invalid value: ");
    match text.rsplit_once(", expected ").filter(|_| mismatch) {
        Some((_, wanted)) => format!("must be {}", in_json_words(wanted)),
        None => text.chars().take(MAX_MESSAGE_CHARS).collect(),
    }
}

/// serde's names for what it wanted, as a JSON client knows them.
fn in_json_words(wanted: &str) -> &str {
    match wanted {
        "a sequence" => "an array",
        "a map" => "an object",
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "isize" | "usize" => {
            "a whole number"
        }
        "f32" | "f64" => "a number",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A body with every kind of member: required, optional, nullable, a list, a nested list
    /// of objects with their own members.
    #[derive(Debug, Default, Deserialize)]
    #[serde(
        default,
        expecting = "an object with `name`, `age`, `nickname` and `pets`"
    )]
    struct Person {
        name: Field<String>,
        age: Field<Integer>,
        nickname: Field<String>,
        tags: Field<Vec<String>>,
        pets: Field<Vec<Field<Pet>>>,
        #[serde(flatten)]
        unknown: Unknown,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, expecting = "an object with `kind`")]
    struct Pet {
        kind: Field<String>,
        #[serde(flatten)]
        unknown: Unknown,
    }

    /// Checks `body` as a create would, answering the errors as (field, message) pairs.
    fn errors_of(body: Value) -> Vec<(String, String)> {
        let person: Person = serde_json::from_value(body).expect("a Person never fails");
        let mut fields = Fields::default();
        fields.required("name", person.name);
        fields
            .optional("age", person.age)
            .and_then(|Integer(age)| fields.check("age", adult(age)));
        fields.nullable("nickname", person.nickname);
        fields.optional("tags", person.tags);
        let pets = fields.optional("pets", person.pets).unwrap_or_default();
        for (index, pet) in pets.into_iter().enumerate() {
            let at = format!("pets[{index}]");
            if let Some(pet) = fields.element(&at, pet) {
                fields.required(&path(&at, "kind"), pet.kind);
                fields.refuse_unknown(&at, pet.unknown, "`kind`");
            }
        }
        fields.refuse_unknown("", person.unknown, "`name`, `age`, `nickname` and `pets`");
        match fields.finish() {
            Ok(()) => Vec::new(),
            Err(problem) => listed(&problem)
                .into_iter()
                .map(|(field, message)| (field.to_owned(), message.to_owned()))
                .collect(),
        }
    }

    fn adult(age: i64) -> Result<i64, String> {
        if (18..=150).contains(&age) {
            Ok(age)
        } else {
            Err("must be between 18 and 150".to_owned())
        }
    }

    /// A problem's errors as (field, message) pairs.
    fn listed(problem: &Problem) -> Vec<(&str, &str)> {
        problem
            .errors()
            .iter()
            .map(|error| (error.field.as_str(), error.message.as_str()))
            .collect()
    }

    fn fields_of(body: Value) -> Vec<String> {
        errors_of(body)
            .into_iter()
            .map(|(field, _)| field)
            .collect()
    }

    #[test]
    fn a_good_body_has_no_errors() {
        assert_eq!(errors_of(json!({ "name": "Ada" })), []);
        assert_eq!(
            errors_of(json!({
                "name": "Ada", "age": 36.0, "nickname": null, "tags": [],
                "pets": [{ "kind": "cat" }]
            })),
            []
        );
    }

    #[test]
    fn every_bad_field_of_a_body_is_listed_with_its_path() {
        for (body, expected, reason) in [
            (json!({}), vec!["name"], "a required member left out"),
            (
                json!({ "name": null }),
                vec!["name"],
                "a required member null",
            ),
            (json!({ "name": 5 }), vec!["name"], "a number for a string"),
            (
                json!({ "name": ["Ada"] }),
                vec!["name"],
                "an array for a string",
            ),
            (
                json!({ "name": "Ada", "age": "36" }),
                vec!["age"],
                "a number in a string",
            ),
            (
                json!({ "name": "Ada", "age": 3.5 }),
                vec!["age"],
                "a fraction",
            ),
            (
                json!({ "name": "Ada", "age": 17 }),
                vec!["age"],
                "out of the parser's range",
            ),
            (
                json!({ "name": "Ada", "age": u64::MAX }),
                vec!["age"],
                "past 64 bits",
            ),
            (
                json!({ "name": "Ada", "nickname": 1 }),
                vec!["nickname"],
                "a nullable of the wrong type",
            ),
            (
                json!({ "name": "Ada", "tags": "x" }),
                vec!["tags"],
                "a string for a list",
            ),
            (
                json!({ "name": "Ada", "tags": ["x", 2] }),
                vec!["tags"],
                "a list with a bad element",
            ),
            (
                json!({ "name": "Ada", "pets": {} }),
                vec!["pets"],
                "an object for a list",
            ),
            (
                json!({ "name": "Ada", "pets": [5] }),
                vec!["pets[0]"],
                "an element that is not an object",
            ),
            (
                json!({ "name": "Ada", "pets": [null] }),
                vec!["pets[0]"],
                "a null element",
            ),
            (
                json!({ "name": "Ada", "pets": [{}] }),
                vec!["pets[0].kind"],
                "a nested member left out",
            ),
            (
                json!({ "name": "Ada", "pets": [{ "kind": "cat", "age": 2 }] }),
                vec!["pets[0].age"],
                "a nested unknown member",
            ),
            (
                json!({ "name": "Ada", "colour": "red", "admin": true }),
                vec!["admin", "colour"],
                "unknown members",
            ),
            (
                json!({
                    "name": 1, "age": 12, "tags": 3, "colour": "red",
                    "pets": [{ "kind": "cat" }, { "kind": 7 }, [], { "size": 1 }]
                }),
                vec![
                    "name",
                    "age",
                    "tags",
                    "pets[1].kind",
                    "pets[2]",
                    "pets[3].kind",
                    "pets[3].size",
                    "colour",
                ],
                "everything at once, in the order checked",
            ),
        ] {
            assert_eq!(fields_of(body), expected, "{reason}");
        }
    }

    #[test]
    fn messages_say_what_was_wanted_in_json_words_and_never_echo_the_value() {
        let secret = "hunter2-but-much-longer";
        let errors = errors_of(json!({
            "name": 12345, "age": "1", "tags": secret, "pets": [true], "nickname": [secret]
        }));
        let messages: BTreeMap<String, String> = errors.into_iter().collect();
        assert_eq!(messages["name"], "must be a string");
        assert_eq!(messages["age"], "must be a whole number");
        assert_eq!(messages["tags"], "must be an array");
        assert_eq!(messages["pets[0]"], "must be an object with `kind`");
        assert_eq!(messages["nickname"], "must be a string");
        for message in messages.values() {
            assert!(
                !message.contains("12345") && !message.contains(secret),
                "{message}"
            );
        }
    }

    #[test]
    fn null_means_cleared_for_a_nullable_and_missing_for_a_required_member() {
        let mut fields = Fields::default();
        assert_eq!(fields.nullable::<String>("n", Field::Null), Some(None));
        assert_eq!(fields.nullable::<String>("n", Field::Absent), None);
        assert_eq!(fields.not_null::<String>("n", Field::Absent), None);
        assert!(fields.is_empty(), "leaving out a member is no error");
        assert_eq!(fields.not_null::<String>("m", Field::Null), None);
        assert_eq!(fields.required::<String>("r", Field::Null), None);
        let problem = fields.finish().unwrap_err();
        assert_eq!(
            problem.status(),
            axum::http::StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            listed(&problem),
            [("m", "must not be null"), ("r", "is required")]
        );
    }

    #[test]
    fn a_parser_may_name_its_own_fields() {
        let mut fields = Fields::default();
        let parsed: Result<(), Vec<FieldError>> = Err(vec![
            FieldError::new("scopes[1]", "must be lower case"),
            FieldError::new("scopes[3]", "must not be empty"),
        ]);
        fields.check("scopes", parsed);
        let problem = fields.into_problem();
        let named: Vec<&str> = listed(&problem)
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        assert_eq!(named, ["scopes[1]", "scopes[3]"]);
    }

    #[test]
    fn integers_are_whole_numbers_in_64_bits() {
        let integer = |text: &str| -> Result<i64, String> {
            serde_json::from_str::<Integer>(text)
                .map(|Integer(value)| value)
                .map_err(|e| wanted(&e))
        };
        for (text, expected) in [
            ("3", 3),
            ("3.0", 3),
            ("-4", -4),
            ("1e3", 1000),
            ("9223372036854775807", i64::MAX),
            ("-1e30", i64::MIN),
        ] {
            assert_eq!(integer(text), Ok(expected), "{text}");
        }
        for (text, reason) in [
            ("1.5", "a fraction"),
            ("\"3\"", "a string"),
            ("null", "null"),
            ("[3]", "an array"),
            ("true", "a boolean"),
            ("18446744073709551615", "past i64"),
            ("1e30", "far past i64"),
            ("99999999999999999999999", "a long integer"),
        ] {
            let message = integer(text).expect_err(reason);
            assert!(message.starts_with("must be"), "{reason}: {message}");
        }
    }

    #[test]
    fn a_body_of_thousands_of_bad_members_lists_a_bounded_number() {
        let members: serde_json::Map<String, Value> =
            (0..5000).map(|i| (format!("m{i}"), json!(i))).collect();
        let person: Person = serde_json::from_value(Value::Object(members)).unwrap();
        let mut fields = Fields::default();
        fields.required("name", person.name);
        fields.refuse_unknown("", person.unknown, "`name`");
        let problem = fields.finish().unwrap_err();
        assert_eq!(problem.errors().len(), MAX_LISTED);
        assert_eq!(problem.errors()[0].field, "name", "the first ones are kept");
        let detail = problem.detail().unwrap();
        assert!(detail.ends_with("; and 4901 more not listed"), "{detail}");
    }

    #[test]
    fn a_parsers_long_message_is_cut_short() {
        let error = <serde_json::Error as serde::de::Error>::custom("x".repeat(10_000));
        assert_eq!(wanted(&error).chars().count(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn a_repeated_member_or_a_body_that_is_not_an_object_fails_the_whole_body() {
        // The extractor answers these with 422 before any field is looked at.
        assert!(serde_json::from_str::<Person>(r#"{"name": "a", "name": "b"}"#).is_err());
        for body in ["[]", "null", "17", "\"x\""] {
            let error = serde_json::from_str::<Person>(body).unwrap_err();
            assert!(
                error.to_string().contains("expected an object with `name`"),
                "{body}: {error}"
            );
        }
    }
}
