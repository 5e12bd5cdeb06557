//! The settings every service shares, and the loader every configuration file goes through.
//!
//! [`ServiceConfig`] is filled by the binary from flags and environment (clap, with defaults);
//! a configuration *file* is read by [`load`] (or [`parse`]) into any typed value, so every
//! binary fails fast alike.
//!
//! # Layout
//! - [`load`](mod@load): YAML text to a typed value, positions kept by the parser (`marked-yaml`),
//!   `${VAR}` substituted inside scalars after parsing, every mistake reported at once.
//! - [`vars`]: the `${VAR}` values and how a reference is expanded.
//! - [`mistake`]: one mistake (file:line:column, field path, reason) and the collector.
//! - [`secret`]: [`SecretUrl`], a URL whose password `Debug` and logs never show.

pub mod load;
pub mod mistake;
pub mod secret;
pub mod vars;

pub use load::{load, parse, parse_collecting, read, LoadError};
pub use marked_yaml::Spanned;
pub use mistake::{Mistake, Mistakes, Position};
pub use secret::SecretUrl;
pub use vars::Vars;

/// A value the file did not give (a default): it has no place in the file, and a mistake about
/// it names only its field.
pub fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(marked_yaml::Span::new_blank(), value)
}

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
    /// How the database pool waits; see [`crate::db::PoolOptions`].
    pub database: crate::db::PoolOptions,
    /// The issuer the gateway puts in identity tokens.
    pub issuer: String,
    pub identity_keys: IdentityKeys,
    pub log_format: LogFormat,
}

/// Reads a duration as written in flags and environment: a number with `ms`, `s` or `m`
/// (`250ms`, `2s`, `1m`); never zero.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 250ms, 2s or 1m"))?;
    let duration = match unit {
        "ms" => std::time::Duration::from_millis(value),
        "s" => std::time::Duration::from_secs(value),
        "m" => std::time::Duration::from_secs(value.saturating_mul(60)),
        _ => return Err(format!("`{text}` needs a unit: ms, s or m")),
    };
    if duration.is_zero() {
        return Err("a duration must be more than zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_with_their_unit_and_never_zero() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
