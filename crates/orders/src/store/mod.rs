//! The SQL for orders. One set of portable queries serves SQLite and PostgreSQL through sqlx's
//! Any driver (`$1` placeholders, TEXT ids and timestamps, 64-bit integers for money).
//!
//! Every write of more than one row runs in one transaction ([`Database::begin_write`]): an
//! order, its items and its idempotency key are stored together or not at all. Each unit of
//! work runs inside [`Database::retrying`], so work that meets a busy database (SQLite's lock,
//! PostgreSQL's serialization failures and deadlocks) is tried again, and answers 503 only if
//! the database stays busy through every attempt.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use kit::db::Database;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::domain::{IdempotencyKey, NewOrder, Order, OrderItem, RequestHash, Status};
use crate::error::Error;

/// How long an idempotency key is honoured: a retry within this time never makes a second
/// order. Older keys are ignored, and purged now and then.
pub const IDEMPOTENCY_KEY_LIFETIME: TimeDelta = TimeDelta::hours(24);
/// How often one store sweeps out expired idempotency keys (after a create that used one).
const PURGE_INTERVAL: TimeDelta = TimeDelta::minutes(10);

/// Whose orders a query may see: one user's, or everyone's (admins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    OwnedBy(Uuid),
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new order.
    New(Order),
    /// The order an earlier request with the same idempotency key made, as it is now.
    Replayed(Order),
}

/// The orders tables; cheap to clone (the pool and the purge clock are shared).
#[derive(Clone, Debug)]
pub struct OrderStore {
    db: Database,
    /// Unix seconds of the last sweep of expired idempotency keys, shared by clones.
    last_purge: Arc<AtomicI64>,
}

/// The columns of an order line joined with its order, in [`LineRow`]'s order.
macro_rules! line_columns {
    () => {
        "o.id, o.user_id, o.status, o.total_cents, o.created_at, o.updated_at, \
         i.sku, i.quantity, i.unit_price_cents, i.line_total_cents"
    };
}

impl OrderStore {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            last_purge: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Stores `order` for `user_id` as a new pending order. With an idempotency `key` (and the
    /// hash of the request it came with), a key this user sent within the last day answers
    /// with the order it made instead, or [`Error::KeyReused`] if it came with another request.
    pub async fn create(
        &self,
        user_id: Uuid,
        order: &NewOrder,
        key: Option<(&IdempotencyKey, &RequestHash)>,
    ) -> Result<Created, Error> {
        let outcome = self
            .db
            .retrying("creating an order", || self.try_create(user_id, order, key))
            .await
            .context("creating an order")?;
        if key.is_some() {
            self.purge_now_and_then().await;
        }
        match outcome {
            CreateOutcome::New(order) => Ok(Created::New(order)),
            CreateOutcome::Replayed(order) => Ok(Created::Replayed(order)),
            CreateOutcome::KeyReused => Err(Error::KeyReused),
        }
    }

    /// The order `id`, if `scope` may see it.
    pub async fn get(&self, id: Uuid, scope: Scope) -> Result<Option<Order>, Error> {
        let order = self
            .db
            .retrying("reading an order", || async move {
                let mut connection = self.db.pool().acquire().await?;
                load_order(&mut connection, id, scope).await
            })
            .await
            .context("reading an order")?;
        Ok(order)
    }

    /// One page of the orders `scope` may see, newest first (ties broken by id, so pages never
    /// overlap), and how many there are in all.
    pub async fn list(
        &self,
        scope: Scope,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Order>, i64), Error> {
        let page = self
            .db
            .retrying("listing orders", || async move {
                let mut connection = self.db.pool().acquire().await?;
                list_orders(&mut connection, scope, limit, offset).await
            })
            .await
            .context("listing orders")?;
        Ok(page)
    }

    /// Cancels order `id` if `scope` may see it and it is still pending.
    pub async fn cancel(&self, id: Uuid, scope: Scope) -> Result<Order, Error> {
        self.transition(id, scope, Status::Cancelled).await
    }

    /// Marks order `id` paid if it is still pending. No endpoint pays an order yet: payment
    /// is a later feature, and tests use this to reach the state.
    pub async fn mark_paid(&self, id: Uuid) -> Result<Order, Error> {
        self.transition(id, Scope::All, Status::Paid).await
    }

    /// Deletes idempotency keys created before `cutoff`; answers how many.
    pub async fn purge_idempotency_keys(&self, cutoff: DateTime<Utc>) -> Result<u64, Error> {
        let cutoff = kit::time::format(&cutoff);
        let cutoff = cutoff.as_str();
        let purged = self
            .db
            .retrying("purging idempotency keys", move || async move {
                let result = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(cutoff)
                    .execute(self.db.pool())
                    .await?;
                Ok(result.rows_affected())
            })
            .await
            .context("purging idempotency keys")?;
        Ok(purged)
    }

    /// Moves a pending order to `to`, in one conditional UPDATE (no read-modify-write race),
    /// then reads it back in the same transaction to answer with it, or to tell "no such
    /// order" from "not pending any more".
    async fn transition(&self, id: Uuid, scope: Scope, to: Status) -> Result<Order, Error> {
        // Pending is the only status with a way out (see `Status::may_become`).
        let from = Status::Pending;
        debug_assert!(from.may_become(to));
        let outcome = self
            .db
            .retrying("changing an order's status", || async move {
                let mut transaction = self.db.begin_write().await?;
                let owner = match scope {
                    Scope::All => None,
                    Scope::OwnedBy(user) => Some(user.to_string()),
                };
                let changed = sqlx::query(
                    "UPDATE orders SET status = $1, updated_at = $2 \
                     WHERE id = $3 AND status = $4 AND ($5 IS NULL OR user_id = $5)",
                )
                .bind(to.as_str())
                .bind(kit::time::now_text())
                .bind(id.to_string())
                .bind(from.as_str())
                .bind(owner)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
                let order = load_order(&mut transaction, id, scope).await?;
                transaction.commit().await?;
                Ok((changed, order))
            })
            .await
            .context("changing an order's status")?;
        match outcome {
            (_, None) => Err(Error::NotFound),
            (0, Some(order)) => Err(Error::WrongStatus {
                status: order.status,
                to,
            }),
            (_, Some(order)) => Ok(order),
        }
    }

    /// One attempt at [`OrderStore::create`], all in one transaction.
    async fn try_create(
        &self,
        user_id: Uuid,
        order: &NewOrder,
        key: Option<(&IdempotencyKey, &RequestHash)>,
    ) -> Result<CreateOutcome, sqlx::Error> {
        let now = kit::time::now();
        let mut transaction = self.db.begin_write().await?;
        if let Some((key, hash)) = key {
            if let Some(stored) = find_key(&mut transaction, user_id, key).await? {
                if stored.created_at > now - IDEMPOTENCY_KEY_LIFETIME {
                    let outcome = replay(&mut transaction, user_id, &stored, hash).await?;
                    transaction.commit().await?;
                    return Ok(outcome);
                }
                // Expired: the key is free again.
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE user_id = $1 AND idempotency_key = $2",
                )
                .bind(user_id.to_string())
                .bind(key.as_str())
                .execute(&mut *transaction)
                .await?;
            }
        }

        let created = new_order(user_id, order, now);
        insert_order(&mut transaction, &created).await?;
        if let Some((key, hash)) = key {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, order_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user_id.to_string())
            .bind(key.as_str())
            .bind(hash.as_str())
            .bind(created.id.to_string())
            .bind(kit::time::format(&now))
            .execute(&mut *transaction)
            .await;
            if let Err(error) = inserted {
                if kit::db::unique_violation(&error, &["idempotency"]).is_none() {
                    return Err(error);
                }
                // A concurrent request with the same key committed first (PostgreSQL makes
                // this one wait for it, then fails it): drop this order, answer with that one.
                transaction.rollback().await?;
                let mut connection = self.db.pool().acquire().await?;
                let stored = find_key(&mut connection, user_id, key)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)?;
                return replay(&mut connection, user_id, &stored, hash).await;
            }
        }
        transaction.commit().await?;
        Ok(CreateOutcome::New(created))
    }

    /// Sweeps out expired idempotency keys, at most every [`PURGE_INTERVAL`] per store. Best
    /// effort: a key past its lifetime is ignored whether or not it is gone.
    async fn purge_now_and_then(&self) {
        let now = kit::time::now();
        let last = self.last_purge.load(Ordering::Relaxed);
        if now.timestamp() - last < PURGE_INTERVAL.num_seconds()
            || self
                .last_purge
                .compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self
            .purge_idempotency_keys(now - IDEMPOTENCY_KEY_LIFETIME)
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
            Err(error) => tracing::warn!(%error, "purging expired idempotency keys failed"),
        }
    }
}

enum CreateOutcome {
    New(Order),
    Replayed(Order),
    KeyReused,
}

/// The order `new` becomes for `user_id`, created `now`.
fn new_order(user_id: Uuid, new: &NewOrder, now: DateTime<Utc>) -> Order {
    Order {
        id: Uuid::now_v7(),
        user_id,
        status: Status::Pending,
        items: new
            .lines()
            .map(|(item, line_total)| OrderItem {
                sku: item.sku.as_str().to_owned(),
                quantity: item.quantity.get(),
                unit_price_cents: item.unit_price.get(),
                line_total_cents: line_total.get(),
            })
            .collect(),
        total_cents: new.total().get(),
        created_at: now,
        updated_at: now,
    }
}

async fn insert_order(connection: &mut AnyConnection, order: &Order) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(order.id.to_string())
    .bind(order.user_id.to_string())
    .bind(order.status.as_str())
    .bind(order.total_cents)
    .bind(kit::time::format(&order.created_at))
    .execute(&mut *connection)
    .await?;

    // All lines in one statement: at most 100 rows of 6 values, well within both databases'
    // limits on bound parameters. The placeholders are numbered here, not by sqlx's
    // `QueryBuilder`: through the Any driver it writes `?`, which PostgreSQL refuses.
    const COLUMNS: usize = 6;
    let rows: Vec<String> = (0..order.items.len())
        .map(|row| {
            let placeholders: Vec<String> = (1..=COLUMNS)
                .map(|column| format!("${}", row * COLUMNS + column))
                .collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO order_items \
         (order_id, line_number, sku, quantity, unit_price_cents, line_total_cents) VALUES {}",
        rows.join(", ")
    );
    let mut query = sqlx::query(&sql);
    let order_id = order.id.to_string();
    for (line_number, item) in (0_i64..).zip(&order.items) {
        query = query
            .bind(order_id.clone())
            .bind(line_number)
            .bind(item.sku.clone())
            .bind(item.quantity)
            .bind(item.unit_price_cents)
            .bind(item.line_total_cents);
    }
    query.execute(&mut *connection).await?;
    Ok(())
}

/// An idempotency key as stored.
struct StoredKey {
    request_hash: RequestHash,
    order_id: Uuid,
    created_at: DateTime<Utc>,
}

/// An idempotency key's row; rows are written only by this store, so a value that does not
/// parse is a corrupt row.
#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: String,
    order_id: String,
    created_at: String,
}

impl TryFrom<KeyRow> for StoredKey {
    type Error = anyhow::Error;

    fn try_from(row: KeyRow) -> anyhow::Result<Self> {
        Ok(Self {
            request_hash: RequestHash::from_stored(row.request_hash),
            order_id: parse_id(&row.order_id)?,
            created_at: parse_timestamp(&row.created_at)?,
        })
    }
}

async fn find_key(
    connection: &mut AnyConnection,
    user_id: Uuid,
    key: &IdempotencyKey,
) -> Result<Option<StoredKey>, sqlx::Error> {
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT request_hash, order_id, created_at FROM idempotency_keys \
         WHERE user_id = $1 AND idempotency_key = $2",
    )
    .bind(user_id.to_string())
    .bind(key.as_str())
    .fetch_optional(&mut *connection)
    .await?;
    row.map(StoredKey::try_from).transpose().map_err(corrupt)
}

/// The answer to a request whose key `stored` already made an order: that order if the
/// request is the same one, [`CreateOutcome::KeyReused`] if not.
async fn replay(
    connection: &mut AnyConnection,
    user_id: Uuid,
    stored: &StoredKey,
    hash: &RequestHash,
) -> Result<CreateOutcome, sqlx::Error> {
    if stored.request_hash != *hash {
        return Ok(CreateOutcome::KeyReused);
    }
    // The key row is deleted with its order, so the order is there.
    let order = load_order(connection, stored.order_id, Scope::OwnedBy(user_id))
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(CreateOutcome::Replayed(order))
}

async fn load_order(
    connection: &mut AnyConnection,
    id: Uuid,
    scope: Scope,
) -> Result<Option<Order>, sqlx::Error> {
    let rows: Vec<LineRow> = match scope {
        Scope::All => sqlx::query_as(concat!(
            "SELECT ",
            line_columns!(),
            " FROM orders o JOIN order_items i ON i.order_id = o.id",
            " WHERE o.id = $1 ORDER BY i.line_number"
        ))
        .bind(id.to_string()),
        Scope::OwnedBy(user) => sqlx::query_as(concat!(
            "SELECT ",
            line_columns!(),
            " FROM orders o JOIN order_items i ON i.order_id = o.id",
            " WHERE o.id = $1 AND o.user_id = $2 ORDER BY i.line_number"
        ))
        .bind(id.to_string())
        .bind(user.to_string()),
    }
    .fetch_all(&mut *connection)
    .await?;
    Ok(assemble(rows)?.pop())
}

async fn list_orders(
    connection: &mut AnyConnection,
    scope: Scope,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Order>, i64), sqlx::Error> {
    // The page is chosen among orders first, then joined with its items.
    let (rows, total): (Vec<LineRow>, (i64,)) = match scope {
        Scope::All => {
            let rows = sqlx::query_as(concat!(
                "SELECT ",
                line_columns!(),
                " FROM (SELECT id, user_id, status, total_cents, created_at, updated_at FROM orders",
                " ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2) o",
                " JOIN order_items i ON i.order_id = o.id",
                " ORDER BY o.created_at DESC, o.id DESC, i.line_number"
            ))
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *connection)
            .await?;
            let total = sqlx::query_as("SELECT COUNT(*) FROM orders")
                .fetch_one(&mut *connection)
                .await?;
            (rows, total)
        }
        Scope::OwnedBy(user) => {
            let rows = sqlx::query_as(concat!(
                "SELECT ",
                line_columns!(),
                " FROM (SELECT id, user_id, status, total_cents, created_at, updated_at FROM orders",
                " WHERE user_id = $3 ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2) o",
                " JOIN order_items i ON i.order_id = o.id",
                " ORDER BY o.created_at DESC, o.id DESC, i.line_number"
            ))
            .bind(limit)
            .bind(offset)
            .bind(user.to_string())
            .fetch_all(&mut *connection)
            .await?;
            let total = sqlx::query_as("SELECT COUNT(*) FROM orders WHERE user_id = $1")
                .bind(user.to_string())
                .fetch_one(&mut *connection)
                .await?;
            (rows, total)
        }
    };
    Ok((assemble(rows)?, total.0))
}

/// One order line joined with its order.
#[derive(sqlx::FromRow)]
struct LineRow {
    #[sqlx(flatten)]
    order: OrderRow,
    sku: String,
    quantity: i64,
    unit_price_cents: i64,
    line_total_cents: i64,
}

/// An order's own columns.
#[derive(sqlx::FromRow)]
struct OrderRow {
    id: String,
    user_id: String,
    status: String,
    total_cents: i64,
    created_at: String,
    updated_at: String,
}

/// Orders from their lines, which arrive grouped by order and in line order.
fn assemble(rows: Vec<LineRow>) -> Result<Vec<Order>, sqlx::Error> {
    let mut orders: Vec<Order> = Vec::new();
    for row in rows {
        let item = OrderItem {
            sku: row.sku,
            quantity: row.quantity,
            unit_price_cents: row.unit_price_cents,
            line_total_cents: row.line_total_cents,
        };
        match orders.last_mut() {
            Some(order) if order.id.to_string() == row.order.id => order.items.push(item),
            _ => {
                let mut order = Order::try_from(row.order).map_err(corrupt)?;
                order.items.push(item);
                orders.push(order);
            }
        }
    }
    Ok(orders)
}

impl TryFrom<OrderRow> for Order {
    type Error = anyhow::Error;

    /// Rows are written only by this store, so a value that does not parse is a corrupt row.
    fn try_from(row: OrderRow) -> anyhow::Result<Self> {
        let context = |what: &str| format!("order {:?}: bad {what}", row.id);
        Ok(Order {
            id: parse_id(&row.id).with_context(|| context("id"))?,
            user_id: parse_id(&row.user_id).with_context(|| context("user_id"))?,
            status: Status::parse(&row.status).with_context(|| context("status"))?,
            total_cents: row.total_cents,
            created_at: parse_timestamp(&row.created_at).with_context(|| context("created_at"))?,
            updated_at: parse_timestamp(&row.updated_at).with_context(|| context("updated_at"))?,
            items: Vec::new(),
        })
    }
}

fn parse_id(text: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(text).with_context(|| format!("not a UUID: {text:?}"))
}

fn parse_timestamp(text: &str) -> anyhow::Result<DateTime<Utc>> {
    kit::time::parse(text).with_context(|| format!("not an RFC 3339 timestamp: {text:?}"))
}

fn corrupt(error: anyhow::Error) -> sqlx::Error {
    sqlx::Error::Decode(error.into())
}
