//! Usernames: what people sign in with, so they are compared without regard to case.

use kit::FieldError;

/// A username as users type it, trimmed and case-folded: 1 to 64 characters of `a-z`, `0-9`,
/// `.`, `_` and `-`. Folding on the way in makes `Alice` and `alice` the same account, and the
/// store's unique constraint then holds case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MAX_CHARS: usize = 64;
    const FIELD: &'static str = "username";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let folded = raw.trim().to_lowercase();
        if folded.is_empty() {
            return Err(FieldError::new(Self::FIELD, "must not be empty"));
        }
        if folded.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                Self::FIELD,
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if !folded.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        }) {
            return Err(FieldError::new(
                Self::FIELD,
                "may contain only letters a-z, digits, '.', '_' and '-'",
            ));
        }
        Ok(Self(folded))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_trimmed_and_case_folded() {
        assert_eq!(
            Username::parse("  Alice.B_2-x ").map(|u| u.0),
            Ok("alice.b_2-x".to_owned())
        );
    }

    #[test]
    fn bad_usernames_are_refused() {
        for (raw, reason) in [
            ("", "empty"),
            ("   ", "only whitespace"),
            ("a b", "inner space"),
            ("al@ce", "an @"),
            ("zoë", "a letter outside a-z"),
            (&"a".repeat(65), "65 characters"),
        ] {
            assert!(
                Username::parse(raw).is_err(),
                "accepted a username with {reason}"
            );
        }
        assert!(Username::parse(&"a".repeat(64)).is_ok());
    }
}
