//! The settings every service shares. The binary fills them from flags and environment (clap,
//! with defaults); a service adds its own section beside them.

use std::net::SocketAddr;

use crate::telemetry::LogFormat;

/// Where the gateway's identity-token keys come from.
#[derive(Debug, Clone)]
pub enum IdentityKeys {
    /// The gateway's JWKS URL, fetched at the first request and again when a new key appears.
    Jwks(String),
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service's name: the audience its identity tokens must carry.
    pub name: String,
    pub listen: SocketAddr,
    pub database_url: String,
    /// The issuer the gateway puts in identity tokens.
    pub issuer: String,
    pub identity_keys: IdentityKeys,
    pub log_format: LogFormat,
}
