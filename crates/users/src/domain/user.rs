//! A user account as the service shows it, and the shapes of a new account and of a change.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Email, FullName, PasswordHash, Role, Scopes, Username};

// There is no password hash here, not even a skipped one: the hash lives only in the store and
// in [`PasswordHash`], so no response, and no schema in `/openapi.json`, can show it.
/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    /// Unique, case-folded.
    #[schema(example = "alice")]
    pub username: String,
    /// Unique, lower-cased.
    #[schema(example = "alice@example.com")]
    pub email: String,
    pub full_name: Option<String>,
    pub role: Role,
    pub scopes: Scopes,
    /// An inactive user cannot sign in.
    pub is_active: bool,
    /// RFC 3339 in UTC, to the microsecond.
    #[serde(serialize_with = "kit::time::serialize")]
    #[schema(example = "2026-11-26T12:00:00.000000Z")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "kit::time::serialize")]
    #[schema(example = "2026-11-26T12:00:00.000000Z")]
    pub updated_at: DateTime<Utc>,
}

/// An account about to be created; every field already valid.
#[derive(Debug)]
pub struct NewUser {
    pub username: Username,
    pub email: Email,
    pub full_name: Option<FullName>,
    pub password_hash: PasswordHash,
    pub role: Role,
    pub scopes: Scopes,
    pub is_active: bool,
}

/// A partial update: `None` leaves a field as it is. `full_name: Some(None)` clears the name.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub username: Option<Username>,
    pub email: Option<Email>,
    pub full_name: Option<Option<FullName>>,
    pub password_hash: Option<PasswordHash>,
    pub role: Option<Role>,
    pub scopes: Option<Scopes>,
    pub is_active: Option<bool>,
}

impl UserChanges {
    /// Whether the change voids the tokens already issued: what they assert (role, scopes) or
    /// what they were earned with (the password) no longer holds, or the account is switched off.
    pub fn voids_tokens(&self) -> bool {
        self.password_hash.is_some()
            || self.role.is_some()
            || self.scopes.is_some()
            || self.is_active == Some(false)
    }

    /// Whether the change could take away an account's standing as an active admin.
    pub fn may_remove_an_admin(&self) -> bool {
        self.role.is_some_and(|role| role != Role::Admin) || self.is_active == Some(false)
    }

    pub fn is_empty(&self) -> bool {
        self.username.is_none()
            && self.email.is_none()
            && self.full_name.is_none()
            && self.password_hash.is_none()
            && self.role.is_none()
            && self.scopes.is_none()
            && self.is_active.is_none()
    }
}
