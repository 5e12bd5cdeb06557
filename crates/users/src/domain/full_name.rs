//! A person's name, free text within limits: names vary too much across cultures to check more.

use kit::FieldError;

/// A full name, trimmed, 1 to 200 characters, with no control characters. An empty input means
/// "no name", so parsing gives `None` rather than an empty `FullName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub const MAX_CHARS: usize = 200;
    const FIELD: &'static str = "full_name";

    pub fn parse(raw: &str) -> Result<Option<Self>, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Ok(None);
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                Self::FIELD,
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                Self::FIELD,
                "must not contain control characters",
            ));
        }
        Ok(Some(Self(name.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_names_mean_no_name() {
        assert_eq!(FullName::parse("  "), Ok(None));
        assert_eq!(
            FullName::parse(" Ada Lovelace ").map(|n| n.map(|n| n.0)),
            Ok(Some("Ada Lovelace".to_owned()))
        );
    }

    #[test]
    fn names_with_control_characters_or_too_long_are_refused() {
        assert!(FullName::parse("Ada\nLovelace").is_err());
        assert!(FullName::parse(&"a".repeat(201)).is_err());
    }
}
