//! The parts of an order line: what (a SKU), how many, and at what unit price in integer cents.

/// A stock-keeping unit as the client names it: 1 to 64 characters, none of them a control
/// character, without surrounding whitespace. Kept exactly as sent: SKUs are opaque here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err("must be at most 64 characters");
        }
        if raw.chars().any(char::is_control) {
            return Err("must contain only printable characters");
        }
        if raw.trim() != raw {
            return Err("must not start or end with whitespace");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many units a line orders: 1 to [`Quantity::MAX`]. With [`Cents::MAX_UNIT_PRICE`] and
/// `NewOrder::MAX_ITEMS`, the bound keeps every order's total within 64 bits, so an order the
/// document calls valid is never refused for its arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 1_000_000;

    pub fn new(value: i64) -> Result<Self, &'static str> {
        if value < 1 {
            return Err("must be at least 1");
        }
        if value > Self::MAX {
            return Err("must be at most 1000000");
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An amount of money in integer cents, never negative (a free item costs 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cents(i64);

impl Cents {
    pub const ZERO: Self = Self(0);
    /// The highest price of one unit: 100 million in cents. See [`Quantity`] for why there is one.
    pub const MAX_UNIT_PRICE: i64 = 10_000_000_000;

    /// A unit price: 0 to [`Cents::MAX_UNIT_PRICE`].
    pub fn unit_price(value: i64) -> Result<Self, &'static str> {
        if value < 0 {
            return Err("must not be negative");
        }
        if value > Self::MAX_UNIT_PRICE {
            return Err("must be at most 10000000000");
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// `self × quantity`, or `None` past the largest amount the store holds.
    pub fn times(self, quantity: Quantity) -> Option<Self> {
        self.0.checked_mul(quantity.0).map(Self)
    }

    /// `self + other`, or `None` past the largest amount the store holds.
    pub fn plus(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_kept_as_sent() {
        assert_eq!(
            Sku::parse("ABC-123 blue/XL").map(|s| s.0),
            Ok("ABC-123 blue/XL".to_owned())
        );
        assert!(
            Sku::parse(&"é".repeat(64)).is_ok(),
            "64 characters, 128 bytes"
        );
    }

    #[test]
    fn bad_skus_are_refused() {
        for (raw, reason) in [
            ("", "empty"),
            (" ", "only a space"),
            (" A1", "a leading space"),
            ("A1\t", "a trailing tab"),
            ("A\n1", "a newline"),
            ("A\u{7f}1", "DEL"),
            ("A\u{0}1", "NUL"),
            (&"a".repeat(65), "65 characters"),
        ] {
            assert!(Sku::parse(raw).is_err(), "accepted a SKU with {reason}");
        }
    }

    #[test]
    fn quantities_run_from_one_to_a_million_and_prices_from_zero_to_their_maximum() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-1).is_err());
        assert_eq!(
            Quantity::new(Quantity::MAX).map(Quantity::get),
            Ok(1_000_000)
        );
        assert!(Quantity::new(Quantity::MAX + 1).is_err());
        assert!(Quantity::new(i64::MAX).is_err());
        assert!(Cents::unit_price(-1).is_err());
        assert_eq!(Cents::unit_price(0), Ok(Cents::ZERO));
        assert_eq!(
            Cents::unit_price(Cents::MAX_UNIT_PRICE).map(Cents::get),
            Ok(10_000_000_000)
        );
        assert!(Cents::unit_price(Cents::MAX_UNIT_PRICE + 1).is_err());
        assert!(Cents::unit_price(i64::MAX).is_err());
    }

    #[test]
    fn arithmetic_past_64_bits_is_refused_not_wrapped() {
        assert_eq!(Cents(i64::MAX).times(Quantity(2)), None);
        assert_eq!(Cents(i64::MAX).plus(Cents(1)), None);
        assert_eq!(
            Cents::unit_price(250)
                .unwrap()
                .times(Quantity::new(3).unwrap()),
            Some(Cents(750))
        );
    }
}
