//! What makes a create request safe to retry: the client's `Idempotency-Key`, and a hash of the
//! request it came with, so the key sent again with another request is told apart.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::NewOrder;

/// An `Idempotency-Key` header value: 1 to 255 visible ASCII characters (`!` to `~`), as the
/// IETF draft and the common APIs take them (a UUID is typical).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &[u8]) -> Result<Self, &'static str> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err("must be 1 to 255 characters");
        }
        if !raw.iter().all(|b| b.is_ascii_graphic()) {
            return Err("may contain only visible ASCII characters, no spaces");
        }
        // All ASCII, so always UTF-8.
        String::from_utf8(raw.to_vec())
            .map(Self)
            .map_err(|_| "may contain only visible ASCII characters, no spaces")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The hex SHA-256 of a create request in canonical form: the parsed lines, in order, as JSON
/// with fixed field order. Two bodies that differ only in spacing or key order hash alike; any
/// difference in what is ordered does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHash(String);

#[derive(Serialize)]
struct Canonical<'a> {
    items: Vec<CanonicalItem<'a>>,
}

#[derive(Serialize)]
struct CanonicalItem<'a> {
    sku: &'a str,
    quantity: i64,
    unit_price_cents: i64,
}

impl RequestHash {
    pub fn of(order: &NewOrder) -> Self {
        let canonical = Canonical {
            items: order
                .lines()
                .map(|(item, _)| CanonicalItem {
                    sku: item.sku.as_str(),
                    quantity: item.quantity.get(),
                    unit_price_cents: item.unit_price.get(),
                })
                .collect(),
        };
        // Strings and integers always serialize.
        let json = serde_json::to_vec(&canonical).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(b"POST /orders\n");
        hasher.update(&json);
        Self(format!("{:x}", hasher.finalize()))
    }

    /// A hash read back from the store.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cents, NewItem, Quantity, Sku};

    #[test]
    fn keys_are_1_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse(b"0190a6f4-7c1e-7000-8000-000000000001").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        for (raw, reason) in [
            (&b""[..], "empty"),
            (&[b'k'; 256][..], "256 characters"),
            (b"a key", "a space"),
            (b"tab\tkey", "a tab"),
            ("clé".as_bytes(), "non-ASCII"),
        ] {
            assert!(
                IdempotencyKey::parse(raw).is_err(),
                "accepted a key with {reason}"
            );
        }
    }

    fn order(items: &[(&str, i64, i64)]) -> NewOrder {
        NewOrder::new(
            items
                .iter()
                .map(|(sku, quantity, price)| NewItem {
                    sku: Sku::parse(sku).unwrap(),
                    quantity: Quantity::new(*quantity).unwrap(),
                    unit_price: Cents::unit_price(*price).unwrap(),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn the_hash_tells_requests_apart_by_what_they_order() {
        let base = RequestHash::of(&order(&[("A", 1, 100), ("B", 2, 50)]));
        assert_eq!(
            base,
            RequestHash::of(&order(&[("A", 1, 100), ("B", 2, 50)]))
        );
        assert_eq!(base.as_str().len(), 64);
        for (other, reason) in [
            (order(&[("B", 2, 50), ("A", 1, 100)]), "lines swapped"),
            (order(&[("A", 1, 100), ("B", 3, 50)]), "another quantity"),
            (order(&[("A", 1, 100), ("B", 2, 51)]), "another price"),
            (order(&[("A", 1, 100), ("b", 2, 50)]), "another SKU"),
            (order(&[("A", 1, 100)]), "a line fewer"),
        ] {
            assert_ne!(base, RequestHash::of(&other), "{reason}");
        }
    }
}
