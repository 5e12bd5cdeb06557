//! A URL that may carry a password (a database's, Redis's). `Debug` shows it with the password
//! masked, so a configuration can be printed and logged whole; the password is read only
//! through [`SecretUrl::expose_secret`], where a connection is opened.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

#[derive(Clone)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    /// The URL with its password, for opening a connection and nothing else.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with its password masked (`postgres://app:***@db/x`): what messages show.
    pub fn redacted(&self) -> String {
        crate::db::redact(self.expose_secret())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted())
    }
}

/// Equal when the URLs are: a reload compares the running store with the file's.
impl PartialEq for SecretUrl {
    fn eq(&self, other: &Self) -> bool {
        self.expose_secret() == other.expose_secret()
    }
}

impl Eq for SecretUrl {}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::SecretUrl;

    #[test]
    fn debug_masks_the_password_and_keeps_the_rest() {
        let url = SecretUrl::new("postgres://app:hunter2@db:5432/gatehouse");
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://app:***@db:5432/gatehouse"),
            "{shown}"
        );
        assert_eq!(
            url.expose_secret(),
            "postgres://app:hunter2@db:5432/gatehouse"
        );
    }
}
