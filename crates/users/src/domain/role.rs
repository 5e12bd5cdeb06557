//! Roles: what a user may do across services; the gateway puts them in the identity token.

use kit::FieldError;
use serde::Serialize;
use utoipa::ToSchema;

/// What a user may do across services: `admin` manages accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    const FIELD: &'static str = "role";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "admin" => Ok(Self::Admin),
            "user" => Ok(Self::User),
            _ => Err(FieldError::new(Self::FIELD, "must be `admin` or `user`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}
