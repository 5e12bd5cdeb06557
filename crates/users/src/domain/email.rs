//! Email addresses, checked for shape only: whether one is deliverable is not ours to know.

use kit::FieldError;

/// An email address, trimmed and lower-cased, at most 254 characters (RFC 5321's path limit),
/// of the shape `local@domain.tld`. Lower-casing makes the store's unique constraint hold
/// case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_CHARS: usize = 254;
    const FIELD: &'static str = "email";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        // Measured as sent, as the document's `maxLength` and pattern measure it: lower-casing
        // can lengthen a string (`İ` becomes two characters).
        let sent = raw.trim();
        if sent.is_empty() {
            return Err(FieldError::new(Self::FIELD, "must not be empty"));
        }
        if sent.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                Self::FIELD,
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if !has_email_shape(sent) {
            return Err(FieldError::new(
                Self::FIELD,
                "must be an address like name@example.com",
            ));
        }
        Ok(Self(sent.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn has_email_shape(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let plain = |s: &str| {
        !s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    };
    !local.is_empty()
        // Characters, not bytes: the document's pattern can count only characters.
        && local.chars().count() <= 64
        && plain(local)
        && plain(domain)
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").map(|e| e.0),
            Ok("ada@example.com".to_owned())
        );
    }

    #[test]
    fn emails_without_the_shape_are_refused() {
        for (raw, reason) in [
            ("", "empty"),
            ("ada", "no @"),
            ("@example.com", "no local part"),
            ("ada@", "no domain"),
            ("ada@localhost", "a domain without a dot"),
            ("ada@example..com", "an empty domain label"),
            ("ada@example.com.", "a trailing dot"),
            ("a da@example.com", "a space"),
            ("ada@b@example.com", "two @"),
            (
                &format!("{}@example.com", "a".repeat(65)),
                "a local part over 64 characters",
            ),
            (
                &format!("ada@{}.com", "a".repeat(250)),
                "over 254 characters",
            ),
        ] {
            assert!(
                Email::parse(raw).is_err(),
                "accepted an email with {reason}"
            );
        }
    }

    #[test]
    fn limits_count_characters_as_sent_like_the_documents_pattern() {
        let local = "é".repeat(64);
        assert!(
            Email::parse(&format!("{local}@example.com")).is_ok(),
            "64 characters in 128 bytes"
        );
        let long = format!("{}@example.com", "İ".repeat(60));
        assert!(
            Email::parse(&long).is_ok(),
            "72 characters as sent, more once lower-cased"
        );
    }
}
