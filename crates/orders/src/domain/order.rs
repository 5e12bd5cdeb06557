//! An order as the service shows it, and a new order with its totals computed.

use chrono::{DateTime, Utc};
use kit::FieldError;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Cents, Quantity, Sku, Status};

/// An order as every response shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    /// UUID v7: ids sort in creation order.
    pub id: Uuid,
    /// Who created the order (from the gateway's identity, never from a request body).
    pub user_id: Uuid,
    pub status: Status,
    /// The lines, in the order they were sent.
    pub items: Vec<OrderItem>,
    /// The sum of the lines' totals, in integer cents.
    pub total_cents: i64,
    /// RFC 3339 UTC, to the microsecond.
    #[serde(serialize_with = "kit::time::serialize")]
    pub created_at: DateTime<Utc>,
    /// When the status last changed (the creation time until then).
    #[serde(serialize_with = "kit::time::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderItem {
    pub sku: String,
    #[schema(minimum = 1)]
    pub quantity: i64,
    #[schema(minimum = 0)]
    pub unit_price_cents: i64,
    /// `quantity × unit_price_cents`.
    #[schema(minimum = 0)]
    pub line_total_cents: i64,
}

/// A line of an order about to be created; every part already valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Cents,
}

/// An order about to be created: 1 to [`NewOrder::MAX_ITEMS`] lines, with each line's total
/// and the order's total computed here, with checked arithmetic, so neither can wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    lines: Vec<(NewItem, Cents)>,
    total: Cents,
}

impl NewOrder {
    pub const MAX_ITEMS: usize = 100;

    /// The order of `items`, or every reason it cannot be one, each naming its field as the
    /// request does (`items`, `items[2].quantity`).
    pub fn new(items: Vec<NewItem>) -> Result<Self, Vec<FieldError>> {
        if let Some(message) = Self::count_error(items.len()) {
            return Err(vec![FieldError::new("items", message)]);
        }
        let mut errors = Vec::new();
        let mut lines = Vec::with_capacity(items.len());
        let mut total = Some(Cents::ZERO);
        for (index, item) in items.into_iter().enumerate() {
            match item.unit_price.times(item.quantity) {
                Some(line_total) => {
                    total = total.and_then(|sum| sum.plus(line_total));
                    lines.push((item, line_total));
                }
                None => errors.push(FieldError::new(
                    format!("items[{index}].quantity"),
                    format!(
                        "times unit_price_cents exceeds the largest line total, {} cents",
                        i64::MAX
                    ),
                )),
            }
        }
        match total {
            Some(total) if errors.is_empty() => Ok(Self { lines, total }),
            Some(_) => Err(errors),
            None => {
                errors.push(FieldError::new(
                    "items",
                    format!(
                        "the lines add up to more than the largest order total, {} cents",
                        i64::MAX
                    ),
                ));
                Err(errors)
            }
        }
    }

    /// Why an order of `count` lines cannot be made, if it cannot.
    pub fn count_error(count: usize) -> Option<String> {
        if count == 0 {
            Some("must hold at least 1 item".to_owned())
        } else if count > Self::MAX_ITEMS {
            Some(format!("must hold at most {} items", Self::MAX_ITEMS))
        } else {
            None
        }
    }

    /// Each line with its total.
    pub fn lines(&self) -> impl Iterator<Item = (&NewItem, Cents)> {
        self.lines.iter().map(|(item, total)| (item, *total))
    }

    pub fn total(&self) -> Cents {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: i64, unit_price: i64) -> NewItem {
        NewItem {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::new(quantity).unwrap(),
            unit_price: Cents::unit_price(unit_price).unwrap(),
        }
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn totals_are_computed_per_line_and_summed() {
        let order = NewOrder::new(vec![item("A", 3, 250), item("B", 1, 0)]).unwrap();
        let line_totals: Vec<i64> = order.lines().map(|(_, total)| total.get()).collect();
        assert_eq!(line_totals, [750, 0]);
        assert_eq!(order.total().get(), 750);
    }

    #[test]
    fn an_order_holds_1_to_100_items() {
        assert_eq!(fields(NewOrder::new(vec![]).unwrap_err()), ["items"]);
        assert_eq!(
            fields(NewOrder::new(vec![item("A", 1, 1); 101]).unwrap_err()),
            ["items"]
        );
        assert!(NewOrder::new(vec![item("A", 1, 1); 100]).is_ok());
    }

    #[test]
    fn the_largest_order_there_can_be_has_a_total_within_64_bits() {
        let largest = item("A", Quantity::MAX, Cents::MAX_UNIT_PRICE);
        let order = NewOrder::new(vec![largest; NewOrder::MAX_ITEMS]).unwrap();
        assert_eq!(order.total().get(), 1_000_000_000_000_000_000);
    }
}
