//! Orders: create one (idempotently, with an `Idempotency-Key`), list them newest first, read
//! one, cancel one. A user sees and changes only their own: another user's order answers 404,
//! exactly as one that does not exist. Admins see and cancel everyone's.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kit::extract::{Json, Path, Query};
use kit::fields::{self, Field, Fields, Integer, Unknown};
use kit::openapi::problems;
use kit::pagination::Pagination;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, Customer};
use crate::domain::{Cents, IdempotencyKey, NewItem, NewOrder, Order, Quantity, RequestHash, Sku};
use crate::error::Error;
use crate::store::{Created, Scope};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read))
        .routes(routes!(cancel))
}

const TAG: &str = "orders";
/// The request header that makes a create safe to retry.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set to `true` on a create answered with the order an earlier request (same key, same body)
/// made.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

// Members are `kit::fields::Field`s: read as sent, then checked one by one.
/// What to order. A 422 lists every bad field at once: wrong types and unknown members
/// included.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "an object with `items`")]
#[schema(as = NewOrderRequest)]
pub struct CreateOrder {
    /// The lines of the order, 1 to 100, kept in the order sent.
    #[schema(value_type = Vec<CreateOrderItem>, required = true, min_items = 1, max_items = 100)]
    #[serde(default)]
    items: Field<Vec<Field<CreateOrderItem>>>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Unknown,
}

/// One line of a new order.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "an object with `sku`, `quantity` and `unit_price_cents`")]
#[schema(as = NewOrderItem)]
pub struct CreateOrderItem {
    /// The stock-keeping unit: 1 to 64 printable characters, no surrounding whitespace.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$")]
    #[serde(default)]
    sku: Field<String>,
    /// How many: a whole number, 1 to 1000000.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 1_000_000)]
    #[serde(default)]
    quantity: Field<Integer>,
    /// The price of one unit, in integer cents: 0 to 10000000000 (100 million).
    #[schema(value_type = i64, required = true, minimum = 0, maximum = 10_000_000_000_i64)]
    #[serde(default)]
    unit_price_cents: Field<Integer>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Unknown,
}

const ORDER_MEMBERS: &str = "`items`";
const ITEM_MEMBERS: &str = "`sku`, `quantity` and `unit_price_cents`";

/// Parses a create body into an order, listing every bad field. The totals are computed only
/// once every line is valid; a line or an order whose total would pass 64 bits is refused too.
fn parse_order(body: CreateOrder) -> Result<NewOrder, Error> {
    let mut fields = Fields::default();
    let lines = fields
        .required("items", body.items)
        .and_then(|lines| fields.check("items", counted(lines)))
        .unwrap_or_default();
    let mut items = Vec::with_capacity(lines.len());
    for (index, line) in lines.into_iter().enumerate() {
        if let Some(item) = parse_item(&mut fields, &format!("items[{index}]"), line) {
            items.push(item);
        }
    }
    fields.refuse_unknown("", body.unknown, ORDER_MEMBERS);
    fields.finish()?;
    NewOrder::new(items).map_err(Error::InvalidFields)
}

/// The lines of an order, if there are 1 to 100 (the lines themselves are checked next).
fn counted<T>(lines: Vec<T>) -> Result<Vec<T>, String> {
    match NewOrder::count_error(lines.len()) {
        Some(message) => Err(message),
        None => Ok(lines),
    }
}

fn parse_item(fields: &mut Fields, at: &str, line: Field<CreateOrderItem>) -> Option<NewItem> {
    let item = fields.element(at, line)?;
    let [sku_field, quantity_field, price_field] =
        ["sku", "quantity", "unit_price_cents"].map(|name| fields::path(at, name));
    let sku = fields
        .required(&sku_field, item.sku)
        .and_then(|text| fields.check(&sku_field, Sku::parse(&text)));
    let quantity = fields
        .required(&quantity_field, item.quantity)
        .and_then(|Integer(number)| fields.check(&quantity_field, Quantity::new(number)));
    let unit_price = fields
        .required(&price_field, item.unit_price_cents)
        .and_then(|Integer(number)| fields.check(&price_field, Cents::unit_price(number)));
    fields.refuse_unknown(at, item.unknown, ITEM_MEMBERS);
    Some(NewItem {
        sku: sku?,
        quantity: quantity?,
        unit_price: unit_price?,
    })
}

/// The `Idempotency-Key` of a create, if sent: one header of 1 to 255 visible ASCII
/// characters, or the request is refused with 400.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// Makes the create safe to retry: the same key with the same body within 24 hours answers
    /// with the first order instead of making another.
    #[param(
        rename = "Idempotency-Key",
        value_type = String,
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$"
    )]
    key: Option<IdempotencyKey>,
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(&IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(Self { key: None });
        };
        if values.next().is_some() {
            return Err(Error::BadHeader(
                "Send one Idempotency-Key header, not several.".to_owned(),
            ));
        }
        IdempotencyKey::parse(value.as_bytes())
            .map(|key| Self { key: Some(key) })
            .map_err(|reason| Error::BadHeader(format!("The Idempotency-Key header {reason}.")))
    }
}

/// Creates an order for the caller, with `status` `pending` and the totals computed here.
///
/// With an `Idempotency-Key`, the request is safe to retry for 24 hours: the same key with the
/// same body (compared by a hash of its canonical form) never makes a second order, even when
/// the requests race; it answers **201** with the first order as it is now, the same
/// `Location`, and `Idempotent-Replayed: true`. The same key with a different body is refused
/// with 422. Keys are per user: another user's key never collides with yours.
#[utoipa::path(
    post,
    path = "/orders",
    tag = TAG,
    request_body = CreateOrder,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The order, created now or (with `Idempotent-Replayed: true`) by an earlier request with the same key and body.",
            body = Order,
            headers(
                ("Location" = String, description = "`/orders/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when an earlier request with the same key made the order."),
            )),
        problems::Identified,
        problems::JsonBody,
        (status = 400, description = "The body is not well-formed JSON, or the Idempotency-Key is malformed."),
        (status = 403, description = "The caller is not a signed-in user (a machine client has no orders)."),
        (status = 422, description = "Invalid fields, each listed in `errors` (`items[2].quantity`), or an Idempotency-Key reused with another body."),
        (status = 503, description = "The database is unavailable or stayed busy; retry after `Retry-After` seconds (with the same Idempotency-Key)."),
    ),
    security(("gateway_identity" = [])),
)]
async fn create(
    customer: Customer,
    IdempotencyKeyHeader { key }: IdempotencyKeyHeader,
    State(state): State<AppState>,
    Json(body): Json<CreateOrder>,
) -> Result<Response, Error> {
    let new = parse_order(body)?;
    let hash = key.as_ref().map(|_| RequestHash::of(&new));
    let created = state
        .orders
        .create(customer.id, &new, key.as_ref().zip(hash.as_ref()))
        .await?;
    let (order, replayed) = match created {
        Created::New(order) => {
            tracing::info!(order.id = %order.id, order.total_cents = order.total_cents, "order created");
            (order, false)
        }
        Created::Replayed(order) => {
            tracing::info!(order.id = %order.id, "order create replayed for its idempotency key");
            (order, true)
        }
    };
    let location = format!("/orders/{}", order.id);
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Whose orders to list, besides the page ([`Pagination`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
    /// Admins only: list this user's orders (without it, an admin lists everyone's). Anyone
    /// else may pass only their own id; another's is refused with 403.
    user_id: Option<Uuid>,
}

/// One page of orders, newest first.
#[derive(Serialize, ToSchema)]
#[schema(as = OrderPage)]
pub struct Page {
    items: Vec<Order>,
    /// How many orders there are in all, over every page.
    total: i64,
    limit: i64,
    offset: i64,
}

/// Lists the caller's orders, newest first; an admin lists everyone's, or one user's with
/// `user_id`.
#[utoipa::path(
    get,
    path = "/orders",
    tag = TAG,
    params(Pagination, ListFilter),
    responses(
        (status = 200, description = "A page of orders, newest first.", body = Page),
        problems::Identified,
        problems::Paged,
        problems::Stored,
        (status = 400, description = "A query parameter is malformed (`user_id` is not a UUID, `limit` not a whole number, say)."),
        (status = 403, description = "Not a signed-in user, or a non-admin asking for another user's orders."),
    ),
    security(("gateway_identity" = [])),
)]
async fn list(
    customer: Customer,
    State(state): State<AppState>,
    page: Pagination,
    Query(filter): Query<ListFilter>,
) -> Result<Json<Page>, Error> {
    let scope =
        match (customer.is_admin, filter.user_id) {
            (true, None) => Scope::All,
            (true, Some(user)) => Scope::OwnedBy(user),
            (false, Some(user)) if user != customer.id => return Err(Error::Forbidden(
                "Only an admin may list another user's orders; leave out user_id to list yours."
                    .to_owned(),
            )),
            (false, _) => Scope::OwnedBy(customer.id),
        };
    let (items, total) = state.orders.list(scope, page.limit, page.offset).await?;
    Ok(Json(Page {
        items,
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// Reads one order. Another user's order answers 404, as one that does not exist.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = TAG,
    params(("id" = Uuid, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order.", body = Order),
        problems::Identified,
        problems::Stored,
        (status = 403, description = "The caller is not a signed-in user."),
        (status = 404, description = "No order has this id, or it is another user's."),
    ),
    security(("gateway_identity" = [])),
)]
async fn read(
    customer: Customer,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Order>, Error> {
    let order = state
        .orders
        .get(id, customer.scope())
        .await?
        .ok_or(Error::NotFound)?;
    Ok(Json(order))
}

/// Cancels a pending order. A paid or cancelled order cannot be cancelled (409 naming its
/// status); another user's order answers 404, as one that does not exist.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = TAG,
    params(("id" = Uuid, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order, now cancelled.", body = Order),
        problems::Identified,
        problems::Stored,
        (status = 403, description = "The caller is not a signed-in user."),
        (status = 404, description = "No order has this id, or it is another user's."),
        (status = 409, description = "The order is not pending; the detail names its status."),
    ),
    security(("gateway_identity" = [])),
)]
async fn cancel(
    customer: Customer,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Order>, Error> {
    let order = state.orders.cancel(id, customer.scope()).await?;
    tracing::info!(order.id = %order.id, "order cancelled");
    Ok(Json(order))
}
