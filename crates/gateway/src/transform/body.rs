//! A JSON answer's body rewritten: decoded from the service's coding (at most the route's
//! `max_body` of it), its fields filtered and renamed, encoded again in that coding when the
//! client takes it and sent as it is otherwise.

use http::HeaderValue;

use super::coding::{Coding, DecodeError};
use super::json::JsonRules;

/// What became of a body.
#[derive(Debug)]
pub enum Rewritten {
    /// The new body, in `coding`.
    Body { bytes: Vec<u8>, coding: Coding },
    /// Left as the service sent it; the reason is the metric's label.
    Untouched(Skip),
}

/// Why a body goes out untouched (`gatehouse_transform_skipped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Larger than the route's `max_body` as it came.
    TooLarge,
    /// Larger than `max_body` once decoded (a bomb looks like this).
    DecodedTooLarge,
}

impl Skip {
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::DecodedTooLarge => "decoded_too_large",
        }
    }
}

/// Why a service's answer cannot be rewritten: it is not what its headers say.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error(transparent)]
    Coding(DecodeError),
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("encoding the rewritten body failed: {0}")]
    Encode(std::io::Error),
}

/// `body` (in `coding`) with `rules` applied, for a client that sent `accept`.
pub fn rewrite(
    rules: &JsonRules,
    coding: Coding,
    body: &[u8],
    accept: Option<&HeaderValue>,
    max_body: u64,
) -> Result<Rewritten, Broken> {
    let decoded = match coding.decode(body, max_body) {
        Ok(decoded) => decoded,
        Err(DecodeError::TooLarge { .. }) => {
            return Ok(Rewritten::Untouched(Skip::DecodedTooLarge))
        }
        Err(corrupt) => return Err(Broken::Coding(corrupt)),
    };
    // serde_json refuses nesting deeper than 128 levels: a hostile answer cannot exhaust the
    // stack here.
    let mut value: serde_json::Value = serde_json::from_slice(&decoded).map_err(Broken::NotJson)?;
    rules.apply(&mut value);
    let plain = serde_json::to_vec(&value).map_err(|error| Broken::Encode(error.into()))?;
    let coding = if coding.accepted_by(accept) {
        coding
    } else {
        Coding::Identity
    };
    let bytes = coding.encode(plain).map_err(Broken::Encode)?;
    Ok(Rewritten::Body { bytes, coding })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::transform::json::Filter;
    use crate::transform::path::{FieldPath, FieldSet};

    fn deny_secret() -> JsonRules {
        JsonRules {
            filter: Some(Filter::Deny(FieldSet::new(&[FieldPath::parse(
                "items[*].secret",
            )
            .unwrap()]))),
            rename: Vec::new(),
        }
    }

    fn answer() -> Vec<u8> {
        json!({ "items": [{ "id": 1, "secret": "s" }, { "id": 2, "secret": "t" }] })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_gzip_answer_is_rewritten_and_sent_in_gzip_or_plain_as_the_client_takes() {
        let gzip = Coding::Gzip.encode(answer()).unwrap();
        let accept = HeaderValue::from_static("gzip, br");
        let Rewritten::Body { bytes, coding } =
            rewrite(&deny_secret(), Coding::Gzip, &gzip, Some(&accept), 1 << 20).unwrap()
        else {
            panic!("rewritten");
        };
        assert_eq!(coding, Coding::Gzip);
        let plain = Coding::Gzip.decode(&bytes, 1 << 20).unwrap();
        let value: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(value, json!({ "items": [{ "id": 1 }, { "id": 2 }] }));

        let Rewritten::Body { bytes, coding } =
            rewrite(&deny_secret(), Coding::Gzip, &gzip, None, 1 << 20).unwrap()
        else {
            panic!("rewritten");
        };
        assert_eq!(coding, Coding::Identity);
        assert_eq!(bytes, br#"{"items":[{"id":1},{"id":2}]}"#);
    }

    #[test]
    fn a_bomb_is_left_untouched_and_a_lie_is_broken() {
        let bomb = Coding::Zstd.encode(vec![b' '; 8 << 20]).unwrap();
        assert!(matches!(
            rewrite(&deny_secret(), Coding::Zstd, &bomb, None, 1 << 20),
            Ok(Rewritten::Untouched(Skip::DecodedTooLarge))
        ));
        assert!(matches!(
            rewrite(&deny_secret(), Coding::Gzip, &answer(), None, 1 << 20),
            Err(Broken::Coding(_))
        ));
        assert!(matches!(
            rewrite(
                &deny_secret(),
                Coding::Identity,
                b"{\"items\": [",
                None,
                1 << 20
            ),
            Err(Broken::NotJson(_))
        ));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(matches!(
            rewrite(
                &deny_secret(),
                Coding::Identity,
                deep.as_bytes(),
                None,
                1 << 20
            ),
            Err(Broken::NotJson(_))
        ));
    }
}
