//! The loader every configuration file goes through, and the settings every service shares.
//!
//! A configuration file is read by [`load`] (or [`parse`]) into any typed value, so every
//! binary fails fast alike: the gateway's file, and each service's ([`ServiceConfig`], the
//! service's defaults under its file under the command line).
//!
//! # Layout
//! - [`load`](mod@load): YAML text to a typed value, positions kept by the parser (`marked-yaml`),
//!   `${VAR}` substituted inside scalars after parsing, every mistake reported at once.
//! - [`vars`]: the `${VAR}` values and how a reference is expanded.
//! - [`mistake`]: one mistake (file:line:column, field path, reason) and the collector.
//! - [`secret`]: [`SecretUrl`], a URL whose password `Debug` and logs never show.
//! - [`values`]: values every file reads alike ([`Period`], a duration above zero).
//! - [`service`]: [`ServiceConfig`], the settings every service has, and how they are layered.

pub mod load;
pub mod mistake;
pub mod secret;
pub mod service;
pub mod values;
pub mod vars;

pub use load::{load, parse, parse_collecting, read, LoadError};
pub use marked_yaml::Spanned;
pub use mistake::{Mistake, Mistakes, Position};
pub use secret::SecretUrl;
pub use service::{ServiceConfig, ServiceDefaults};
pub use values::Period;
pub use vars::Vars;

/// A value the file did not give (a default): it has no place in the file, and a mistake about
/// it names only its field.
pub fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(marked_yaml::Span::new_blank(), value)
}
