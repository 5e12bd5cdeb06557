//! Machine-to-machine clients: registered with `gatehouse clients add`, they exchange their id
//! and secret for an access token at the OAuth 2.0 token endpoint (client credentials grant).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{InsertError, Store, StoredClient};

const MAX_SCOPES: usize = 32;
const MAX_SCOPE_CHARS: usize = 64;

/// A client as an operator sees it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub scopes: Vec<String>,
    pub created_at: String,
}

/// A client just registered, with the secret shown this once.
#[derive(Debug)]
pub struct NewClient {
    pub client: Client,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("a client id is 1 to 64 characters of a-z, 0-9, `.`, `_` and `-`: {0:?}")]
    InvalidId(String),
    #[error("invalid scope {0:?}: each scope is 1 to 64 characters of a-z, 0-9, `:`, `.`, `_` and `-`, at most 32 of them")]
    InvalidScope(String),
    #[error("a client named {0:?} exists already")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

pub fn parse_id(raw: &str) -> Result<String, ClientError> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ClientError::InvalidId(raw.to_owned()))
    }
}

/// Space-separated scopes (RFC 6749 §3.3), checked and de-duplicated, in their order.
pub fn parse_scopes(raw: &str) -> Result<Vec<String>, ClientError> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in raw.split_ascii_whitespace() {
        let ok = scope.len() <= MAX_SCOPE_CHARS
            && scope.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b':' | b'.' | b'_' | b'-')
            });
        if !ok {
            return Err(ClientError::InvalidScope(scope.to_owned()));
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    if scopes.len() > MAX_SCOPES {
        return Err(ClientError::InvalidScope(raw.to_owned()));
    }
    Ok(scopes)
}

pub async fn add(store: &Store, id: &str, scopes: &str) -> Result<NewClient, ClientError> {
    let id = parse_id(id)?;
    let scopes = parse_scopes(scopes)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let stored = StoredClient {
        id: id.clone(),
        secret_hash: hash(&secret),
        scopes: scopes.join(" "),
        created_at: kit::time::now_text(),
    };
    store
        .insert_client(&stored)
        .await
        .map_err(|error| match error {
            InsertError::Exists => ClientError::Exists(id.clone()),
            InsertError::Database(error) => ClientError::Store(error),
        })?;
    Ok(NewClient {
        client: from_stored(stored),
        secret,
    })
}

pub async fn list(store: &Store) -> anyhow::Result<Vec<Client>> {
    Ok(store
        .clients()
        .await?
        .into_iter()
        .map(from_stored)
        .collect())
}

pub async fn remove(store: &Store, id: &str) -> anyhow::Result<bool> {
    store.remove_client(id).await
}

/// The client with this id and secret, or `None` (unknown id and wrong secret alike).
pub async fn authenticate(store: &Store, id: &str, secret: &str) -> anyhow::Result<Option<Client>> {
    let presented = hash(secret);
    let Some(stored) = store.client(id).await? else {
        return Ok(None);
    };
    let matches: bool = presented
        .as_bytes()
        .ct_eq(stored.secret_hash.as_bytes())
        .into();
    Ok(matches.then(|| from_stored(stored)))
}

fn hash(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

fn from_stored(stored: StoredClient) -> Client {
    Client {
        id: stored.id,
        scopes: stored
            .scopes
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect(),
        created_at: stored.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_checked_and_deduplicated() {
        assert_eq!(
            parse_scopes(" time:read  time:read orders.write ").unwrap(),
            ["time:read", "orders.write"]
        );
        assert!(parse_scopes("Time:Read").is_err());
        assert!(parse_scopes("a\"b").is_err());
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        assert!(parse_scopes(&many.join(" ")).is_err(), "at most 32 scopes");
    }

    #[test]
    fn client_ids_are_plain() {
        assert!(parse_id("reporting-job").is_ok());
        for bad in ["", "Has Space", "a/b", "ünïcode", &"x".repeat(65)] {
            assert!(parse_id(bad).is_err(), "{bad:?}");
        }
    }
}
