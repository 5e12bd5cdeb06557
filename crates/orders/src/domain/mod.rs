//! Types that cannot hold a bad value. Every input is parsed into one of these before it reaches
//! the store; a value that does not parse says what is wrong in words a person can act on, and
//! the HTTP layer puts the field's path (`items[2].quantity`) in front of it.

mod idempotency;
mod item;
mod order;
mod status;

pub use idempotency::{IdempotencyKey, RequestHash};
pub use item::{Cents, Quantity, Sku};
pub use order::{NewItem, NewOrder, Order, OrderItem};
pub use status::Status;
