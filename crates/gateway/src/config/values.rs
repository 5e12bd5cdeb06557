//! The values a configuration file holds, each a type that refuses a wrong one as it is read:
//! the parser then names the field, line and column, and the rest of the file is still checked.

use std::fmt;
use std::str::FromStr;

use http::{Method, Uri};
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// Reads `T` from a string with its `FromStr`, the error as the message.
pub fn from_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(D::Error::custom)
}

// Durations are read alike by every configuration file: the kit's.
pub use kit::config::values::{any_duration, Period};

/// How often the file is watched: a [`Period`], or `off` (only on SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch(pub Option<std::time::Duration>);

impl<'de> Deserialize<'de> for Watch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim() == "off" {
            return Ok(Self(None));
        }
        let Period(every) =
            Period::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&text))?;
        Ok(Self(Some(every)))
    }
}

/// A size in bytes, larger than zero: `512KiB`, `1MiB`, `1MB`, or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|_| D::Error::custom(format!("{text:?} is not a size like 512KiB or 1MiB")))?
            .as_u64();
        if bytes == 0 {
            return Err(D::Error::custom("must be larger than zero"));
        }
        Ok(Self(bytes))
    }
}

/// A share of requests: `20%`, at most `100%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent(pub u32);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.trim()
            .strip_suffix('%')
            .and_then(|number| number.trim().parse::<u32>().ok())
            .filter(|percent| *percent <= 100)
            .map(Self)
            .ok_or_else(|| {
                D::Error::custom(format!("{text:?} is not a percentage of requests like 20%"))
            })
    }
}

/// A URL path: starts with `/`, no query, fragment, space, `.` or `..` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPath(pub String);

impl UrlPath {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !raw.starts_with('/') {
            return Err(format!("{raw:?} must start with `/`"));
        }
        if raw.contains(['?', '#', ' ']) || raw.split('/').any(|s| s == "." || s == "..") {
            return Err(format!("{raw:?} is not a plain path"));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl<'de> Deserialize<'de> for UrlPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

/// A path the gateway answers itself: a [`UrlPath`] without `{param}`, `*`, `:` or `//`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralPath(pub String);

impl<'de> Deserialize<'de> for LiteralPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let UrlPath(path) = UrlPath::deserialize(deserializer)?;
        if path.contains(['{', '}', '*', ':']) || path.contains("//") {
            return Err(D::Error::custom(format!(
                "{path:?} must be a literal path, without parameters"
            )));
        }
        Ok(Self(path))
    }
}

/// An instance of a service: `http://host:port` or `https://host:port`, nothing more.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream(pub Uri);

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let uri: Uri = raw
            .parse()
            .map_err(|_| D::Error::custom(format!("{raw:?} is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(D::Error::custom(format!(
                "{raw:?} must be an http:// or https:// URL"
            )));
        }
        if uri.authority().is_none() {
            return Err(D::Error::custom(format!("{raw:?} names no host")));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(D::Error::custom(format!(
                "{raw:?}: give only scheme, host and port; paths belong in routes' `to`"
            )));
        }
        Ok(Self(uri))
    }
}

/// An HTTP method a route may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMethod(pub Method);

impl<'de> Deserialize<'de> for RouteMethod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        let raw = String::deserialize(deserializer)?;
        if !KNOWN.contains(&raw.as_str()) {
            return Err(D::Error::custom(format!(
                "{raw:?} is not one of {}",
                KNOWN.join(", ")
            )));
        }
        Method::from_bytes(raw.as_bytes())
            .map(Self)
            .map_err(|_| D::Error::custom(format!("{raw:?} is not a method")))
    }
}

/// A role or scope name a token can carry: 1 to 64 of a-z, 0-9, `:`, `.`, `_`, `-`. A name no
/// token can carry would make a route refuse everyone, forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim(pub String);

impl<'de> Deserialize<'de> for Claim {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let plain = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b':' | b'.' | b'_' | b'-')
            });
        if !plain {
            return Err(D::Error::custom(format!(
                "{name:?} is not a role or scope name: 1 to 64 of a-z, 0-9, `:`, `.`, `_`, `-`"
            )));
        }
        Ok(Self(name))
    }
}

/// A string with something in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty(pub String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Err(D::Error::custom("must not be empty"));
        }
        Ok(Self(text))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::de::value::{Error, StrDeserializer};

    use super::*;

    fn read<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
        T::deserialize(StrDeserializer::<Error>::new(text)).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_keep_todays_spellings_and_refuse_zero() {
        assert_eq!(read::<Period>("250ms"), Ok(Period::millis(250)));
        assert_eq!(read::<Period>("2s"), Ok(Period::secs(2)));
        assert_eq!(read::<Period>("1m"), Ok(Period::secs(60)));
        assert_eq!(read::<Period>("14d"), Ok(Period::secs(14 * 24 * 3600)));
        assert!(read::<Period>("0s")
            .unwrap_err()
            .contains("longer than zero"));
        assert!(read::<Period>("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert_eq!(read::<Watch>("off"), Ok(Watch(None)));
        assert_eq!(read::<Watch>("2s"), Ok(Watch(Some(Duration::from_secs(2)))));
    }

    #[test]
    fn sizes_read_in_binary_and_decimal_units() {
        assert_eq!(read::<Size>("1MiB"), Ok(Size(1024 * 1024)));
        assert_eq!(read::<Size>("4KiB"), Ok(Size(4096)));
        assert_eq!(read::<Size>("1MB"), Ok(Size(1_000_000)));
        assert_eq!(read::<Size>("512"), Ok(Size(512)));
        assert!(read::<Size>("lots").is_err());
        assert!(read::<Size>("0B").is_err());
    }

    #[test]
    fn percentages_paths_and_names_refuse_what_they_cannot_hold() {
        assert_eq!(read::<Percent>("5%"), Ok(Percent(5)));
        assert!(read::<Percent>("120%").is_err());
        assert!(read::<UrlPath>("api").is_err());
        assert!(read::<UrlPath>("/a/../b").is_err());
        assert!(read::<LiteralPath>("/api/{x}").is_err());
        assert!(read::<Upstream>("ftp://x").is_err());
        assert!(read::<Upstream>("http://x/path").is_err());
        assert!(read::<RouteMethod>("FETCH").is_err());
        assert!(read::<Claim>("Admin").is_err());
        assert!(read::<NonEmpty>(" ").is_err());
    }
}
