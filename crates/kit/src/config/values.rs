//! Values every configuration file holds alike, each a type that refuses a wrong one as it is
//! read: the parser then names the field, line and column, and the rest of the file is still
//! checked. The gateway's own values (sizes, percentages, paths, …) are in its config.

use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// A duration longer than zero, as humantime writes it: `250ms`, `2s`, `15m`, `14d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period(pub Duration);

impl Period {
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub const fn millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// `text` read as a file would, for a command-line flag or an environment variable.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text))
            .map_err(|error| error.to_string())
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let duration = any_duration(deserializer)?;
        if duration.is_zero() {
            return Err(D::Error::custom("must be longer than zero"));
        }
        Ok(Self(duration))
    }
}

/// A duration that may be zero (`0` or `0s`), such as a key's activation delay.
pub fn any_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_any_duration(&text).map_err(D::Error::custom)
}

/// As [`any_duration`], from a command-line value.
pub fn parse_any_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text.trim())
        .map_err(|error| format!("{text:?} is not a duration like 500ms, 5s or 15m ({error})"))
}

#[cfg(test)]
mod tests {
    use super::Period;
    use std::time::Duration;

    #[test]
    fn a_period_is_read_with_its_unit_and_is_never_zero() {
        assert_eq!(Period::parse("250ms"), Ok(Period::millis(250)));
        assert_eq!(Period::parse("2s"), Ok(Period::secs(2)));
        assert_eq!(Period::parse("1m"), Ok(Period(Duration::from_secs(60))));
        for refused in ["2", "0s", "fast", ""] {
            assert!(Period::parse(refused).is_err(), "{refused:?}");
        }
    }
}
