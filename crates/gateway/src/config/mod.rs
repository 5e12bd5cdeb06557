//! The gateway's configuration: the YAML file as written ([`schema`]), how it is read with
//! `${VAR}` substitution ([`load`]), and how it becomes a [`GatewayConfig`] that cannot hold
//! a wrong value ([`validate`]). `gatehouse check-config` runs exactly this path.

mod load;
pub mod schema;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Uri};

pub use load::{load_file, parse, Vars};

/// A configuration mistake, named by file, place and field so it can be fixed without guessing.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Durable store: `sqlite://…` or `postgres://…`.
    pub store: String,
    pub state: crate::state::StateSettings,
    pub tokens: TokenSettings,
    pub auth: AuthEndpoints,
    pub limits: Limits,
    pub services: BTreeMap<String, ServiceSettings>,
    pub routes: Vec<RouteSettings>,
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub access_ttl: Duration,
    /// How long an unused refresh token stays valid; each refresh starts it anew.
    pub refresh_ttl: Duration,
    pub issuer: String,
    /// The `aud` of access tokens; never the name of a service, so an access token is never
    /// mistaken for an identity token.
    pub audience: String,
    pub algorithm: SigningAlgorithm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    EdDSA,
    RS256,
    HS256,
}

/// Where the gateway's own endpoints live, and which service checks passwords.
#[derive(Debug, Clone)]
pub struct AuthEndpoints {
    pub login_path: String,
    /// The OAuth 2.0 token endpoint.
    pub token_path: String,
    pub refresh_path: String,
    pub logout_path: String,
    pub cutoff_poll: Duration,
    pub throttle: ThrottleSettings,
    /// The service with `POST /internal/credentials`.
    pub credentials_service: String,
    pub credentials_path: String,
}

/// Failed logins allowed per username and per client IP within a window, before 429.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    pub per_username: u64,
    pub per_ip: u64,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body forwarded; past it, 413.
    pub max_body_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub upstreams: Vec<Uri>,
    /// From sending the request to the upstream's response headers.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// The public path, with `{name}` parameters and an optional trailing `{*rest}`.
    pub path: String,
    pub methods: Vec<Method>,
    pub service: String,
    /// The upstream path, which may use the public path's parameters.
    pub to: String,
    pub auth: AuthPolicy,
    /// Overrides the service's timeout for this route.
    pub timeout: Option<Duration>,
}

/// Who may call a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    Public,
    Authenticated,
    /// Signed in, with at least one of `roles` (when not empty) and every one of `scopes`.
    Require {
        roles: Vec<String>,
        scopes: Vec<String>,
    },
}

impl AuthPolicy {
    pub fn needs_identity(&self) -> bool {
        !matches!(self, Self::Public)
    }
}
