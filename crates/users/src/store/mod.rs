//! The SQL for users. One set of portable queries serves SQLite and PostgreSQL through sqlx's
//! Any driver: `$1` placeholders, TEXT ids and timestamps, `is_active` as 0 or 1. A unique
//! constraint that fails becomes a 409 naming its column; a database out of reach or busy
//! through every retry a 503 (see `kit::outage`); every other failure is ours (500).
//!
//! A change of more than one row (a user and its token cut-off) runs in one transaction from
//! [`Database::begin_write`], inside [`Database::retrying`].

mod attempts;

pub use attempts::{AttemptStore, Counted};

use anyhow::Context;
use kit::db::Database;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::domain::{NewUser, PasswordHash, Role, Scopes, User, UserChanges, Username};
use crate::error::Error;

/// Voids the tokens issued to `id` until now (see migrations/*_token_cutoffs.sql).
async fn record_cutoff(connection: &mut AnyConnection, id: Uuid) -> Result<(), sqlx::Error> {
    let now_ms = kit::time::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO token_cutoffs (user_id, cutoff_ms) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET cutoff_ms = excluded.cutoff_ms",
    )
    .bind(id.to_string())
    .bind(now_ms)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Whether a change may take `id`'s standing as an active admin: not if `id` is an active
/// admin and no other is. Called first in the transaction of any change that may demote,
/// deactivate or delete an admin; it updates the one `admin_guard` row, which makes those
/// transactions wait for each other (a row lock on PostgreSQL, the write lock on SQLite), so
/// two admins demoting each other at once cannot both see the other still standing.
async fn another_admin_remains(
    connection: &mut AnyConnection,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE admin_guard SET changed_at = $1 WHERE id = 1")
        .bind(kit::time::now_text())
        .execute(&mut *connection)
        .await?;
    // Read after the guard is ours: on PostgreSQL each statement of a READ COMMITTED
    // transaction sees what was committed before it began, the other change included.
    let (target_is_active_admin, other_active_admins): (i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT COUNT(*) FROM users WHERE id = $1 AND role = 'admin' AND is_active = 1), \
           (SELECT COUNT(*) FROM users WHERE id <> $1 AND role = 'admin' AND is_active = 1)",
    )
    .bind(id.to_string())
    .fetch_one(&mut *connection)
    .await?;
    Ok(target_is_active_admin == 0 || other_active_admins > 0)
}

/// What a change in a transaction came to.
enum Outcome<T> {
    Done(T),
    /// Refused before anything was written: it would leave no active admin.
    LastAdmin,
}

/// The columns of a [`User`], in [`UserRow`]'s order; never the password hash.
macro_rules! user_columns {
    () => {
        "id, username, email, full_name, role, scopes, is_active, created_at, updated_at"
    };
}

/// The users table; cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct UserStore {
    db: Database,
}

impl UserStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Creates `new` with a fresh id; a taken username or email is [`Error::Conflict`].
    pub async fn insert(&self, new: NewUser) -> Result<User, Error> {
        let id = Uuid::now_v7();
        let now = kit::time::now_text();
        let row: UserRow = sqlx::query_as(concat!(
            "INSERT INTO users (id, username, email, full_name, role, scopes, hashed_password, is_active, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ",
            "RETURNING ", user_columns!()
        ))
        .bind(id.to_string())
        .bind(new.username.as_str())
        .bind(new.email.as_str())
        .bind(new.full_name.as_ref().map(|name| name.as_str()))
        .bind(new.role.as_str())
        .bind(new.scopes.to_stored())
        .bind(new.password_hash.as_str())
        .bind(i16::from(new.is_active))
        .bind(now)
        .fetch_one(self.db.pool())
        .await
        .map_err(|e| write_error(e, "inserting a user"))?;
        Ok(row.try_into()?)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<User>, Error> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await
        .context("reading a user")?;
        Ok(row.map(User::try_from).transpose()?)
    }

    /// One page of users in creation order (ties broken by id, so pages never overlap), and
    /// the number of users in all.
    pub async fn list(&self, limit: i64, offset: i64) -> Result<(Vec<User>, i64), Error> {
        let rows: Vec<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.db.pool())
        .await
        .context("listing users")?;
        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(self.db.pool())
            .await
            .context("counting users")?;
        let users = rows
            .into_iter()
            .map(User::try_from)
            .collect::<Result<_, _>>()?;
        Ok((users, total))
    }

    /// Applies `changes` in one statement (no read-modify-write race); `None` when no user has
    /// this id. A taken username or email is [`Error::Conflict`]; a change that would leave no
    /// active admin is [`Error::LastAdmin`], and changes nothing.
    pub async fn update(&self, id: Uuid, changes: UserChanges) -> Result<Option<User>, Error> {
        let changes = &changes;
        let outcome = self
            .db
            .retrying("updating a user", move || async move {
                let mut transaction = self.db.begin_write().await?;
                if changes.may_remove_an_admin()
                    && !another_admin_remains(&mut transaction, id).await?
                {
                    return Ok(Outcome::LastAdmin);
                }
                let row = update_row(&mut transaction, id, changes).await?;
                if row.is_some() && changes.voids_tokens() {
                    record_cutoff(&mut transaction, id).await?;
                }
                transaction.commit().await?;
                Ok(Outcome::Done(row))
            })
            .await
            .map_err(|e| write_error(e, "updating a user"))?;
        match outcome {
            Outcome::Done(row) => Ok(row.map(User::try_from).transpose()?),
            Outcome::LastAdmin => Err(Error::LastAdmin),
        }
    }

    /// Whether a user had this id; [`Error::LastAdmin`] (nothing deleted) for the last active
    /// admin.
    pub async fn delete(&self, id: Uuid) -> Result<bool, Error> {
        let outcome = self
            .db
            .retrying("deleting a user", || async move {
                let mut transaction = self.db.begin_write().await?;
                if !another_admin_remains(&mut transaction, id).await? {
                    return Ok(Outcome::LastAdmin);
                }
                let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected()
                    > 0;
                if deleted {
                    record_cutoff(&mut transaction, id).await?;
                }
                transaction.commit().await?;
                Ok(Outcome::Done(deleted))
            })
            .await
            .context("deleting a user")?;
        match outcome {
            Outcome::Done(deleted) => Ok(deleted),
            Outcome::LastAdmin => Err(Error::LastAdmin),
        }
    }

    /// One page of cut-offs in (`cutoff_ms`, `user_id`) order: those at or after `since_ms`, or,
    /// with `after_user`, those strictly after (`since_ms`, `after_user`), so a caller can page
    /// through any number of them, however many share a millisecond.
    pub async fn cutoffs_page(
        &self,
        since_ms: i64,
        after_user: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, Error> {
        let rows: Vec<(String, i64)> = match after_user {
            None => sqlx::query_as(
                "SELECT user_id, cutoff_ms FROM token_cutoffs WHERE cutoff_ms >= $1 \
                 ORDER BY cutoff_ms, user_id LIMIT $2",
            )
            .bind(since_ms)
            .bind(limit),
            Some(user) => sqlx::query_as(
                "SELECT user_id, cutoff_ms FROM token_cutoffs \
                 WHERE cutoff_ms > $1 OR (cutoff_ms = $1 AND user_id > $2) \
                 ORDER BY cutoff_ms, user_id LIMIT $3",
            )
            .bind(since_ms)
            .bind(user.to_owned())
            .bind(limit),
        }
        .fetch_all(self.db.pool())
        .await
        .context("reading token cut-offs")?;
        Ok(rows)
    }

    /// The user signing in as `username`, with the hash their password must match.
    pub async fn credentials(
        &self,
        username: &Username,
    ) -> Result<Option<(User, PasswordHash)>, Error> {
        let row: Option<CredentialsRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            ", hashed_password FROM users WHERE username = $1"
        ))
        .bind(username.as_str())
        .fetch_optional(self.db.pool())
        .await
        .context("reading a user's credentials")?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            row.user.try_into()?,
            PasswordHash::from_stored(row.hashed_password),
        )))
    }

    /// The hash the password of user `id` must match; `None` when no user has this id.
    pub async fn password_hash(&self, id: Uuid) -> Result<Option<PasswordHash>, Error> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT hashed_password FROM users WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(self.db.pool())
                .await
                .context("reading a user's password hash")?;
        Ok(row.map(|(phc,)| PasswordHash::from_stored(phc)))
    }

    pub async fn username_exists(&self, username: &Username) -> Result<bool, Error> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM users WHERE username = $1")
            .bind(username.as_str())
            .fetch_optional(self.db.pool())
            .await
            .context("looking up a username")?;
        Ok(row.is_some())
    }
}

/// Applies `changes` to the row of `id` in one statement (no read-modify-write race).
async fn update_row(
    connection: &mut AnyConnection,
    id: Uuid,
    changes: &UserChanges,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE users SET ",
        "username = COALESCE($2, username), ",
        "email = COALESCE($3, email), ",
        "full_name = CASE WHEN $4 THEN $5 ELSE full_name END, ",
        "hashed_password = COALESCE($6, hashed_password), ",
        "role = COALESCE($7, role), ",
        "scopes = COALESCE($8, scopes), ",
        "is_active = COALESCE($9, is_active), ",
        "updated_at = $10 ",
        "WHERE id = $1 ",
        "RETURNING ",
        user_columns!()
    ))
    .bind(id.to_string())
    .bind(changes.username.as_ref().map(|u| u.as_str().to_owned()))
    .bind(changes.email.as_ref().map(|e| e.as_str().to_owned()))
    // Whether `full_name` changes at all: `Some(None)` clears it.
    .bind(changes.full_name.is_some())
    .bind(
        changes
            .full_name
            .as_ref()
            .and_then(|name| name.as_ref())
            .map(|name| name.as_str().to_owned()),
    )
    .bind(
        changes
            .password_hash
            .as_ref()
            .map(|h| h.as_str().to_owned()),
    )
    .bind(changes.role.map(|r| r.as_str().to_owned()))
    .bind(changes.scopes.as_ref().map(Scopes::to_stored))
    .bind(changes.is_active.map(i16::from))
    .bind(kit::time::now_text())
    .fetch_optional(&mut *connection)
    .await
}

fn write_error(error: sqlx::Error, doing: &'static str) -> Error {
    match kit::db::unique_violation(&error, &["username", "email"]) {
        Some(field) => Error::Conflict { field },
        None => Error::Unexpected(anyhow::Error::new(error).context(doing)),
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    username: String,
    email: String,
    full_name: Option<String>,
    role: String,
    scopes: String,
    is_active: i64,
    created_at: String,
    updated_at: String,
}

#[derive(sqlx::FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    hashed_password: String,
}

impl TryFrom<UserRow> for User {
    type Error = anyhow::Error;

    /// Rows are written only by this store, so a value that does not parse is a corrupt row.
    fn try_from(row: UserRow) -> anyhow::Result<Self> {
        let timestamp = |text: &str| {
            kit::time::parse(text)
                .with_context(|| format!("user {}: bad timestamp {text:?}", row.id))
        };
        Ok(User {
            id: Uuid::parse_str(&row.id).with_context(|| format!("user {:?}: bad id", row.id))?,
            role: Role::parse(&row.role)
                .map_err(|_| anyhow::anyhow!("user {}: bad role {:?}", row.id, row.role))?,
            scopes: Scopes::from_stored(&row.scopes),
            is_active: row.is_active != 0,
            created_at: timestamp(&row.created_at)?,
            updated_at: timestamp(&row.updated_at)?,
            username: row.username,
            email: row.email,
            full_name: row.full_name,
        })
    }
}
