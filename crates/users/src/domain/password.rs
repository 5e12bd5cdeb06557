//! Passwords and their argon2id hashes. Hashing and verifying are slow on purpose (tens of
//! milliseconds of CPU and about 19 MiB each, argon2's default parameters), so both run on
//! tokio's blocking pool, where they cannot stall the requests sharing an async worker, and at
//! most one per CPU at a time, so a burst of sign-ins queues instead of exhausting memory.

use argon2::password_hash::{self, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use kit::FieldError;
use std::num::NonZeroUsize;
use std::sync::OnceLock;

use tokio::sync::{OnceCell, Semaphore};

/// A password in clear, as a person typed it: 1 to 1024 characters, taken as is (not trimmed).
///
/// One character is enough because admins set passwords here (the demo admin's is `a`); a
/// stricter policy belongs to a route where people choose their own, such as a public sign-up.
/// The upper bound keeps hashing cost bounded. `Debug` never shows the value.
pub struct Password(String);

impl Password {
    pub const MAX_CHARS: usize = 1024;
    const FIELD: &'static str = "password";

    pub fn parse(raw: String) -> Result<Self, FieldError> {
        if raw.is_empty() {
            return Err(FieldError::new(Self::FIELD, "must not be empty"));
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                Self::FIELD,
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(raw))
    }

    /// Hashes with argon2id and a fresh random salt, off the async workers.
    pub async fn hash(self) -> anyhow::Result<PasswordHash> {
        run_argon2(move || hash_blocking(self.0.as_bytes())).await
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// An argon2id hash in PHC string form (`$argon2id$v=19$m=…`), the only form a password is kept in.
/// It never leaves the service: no response type has a field for it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the password `stored` was made from. With no stored hash (no such
    /// user) it verifies against a dummy hash and answers `false`, so a caller cannot tell from
    /// the time taken whether the account exists.
    pub async fn verify(stored: Option<&PasswordHash>, candidate: String) -> anyhow::Result<bool> {
        let (hash, real) = match stored {
            Some(hash) => (hash.clone(), true),
            None => (dummy().await?.clone(), false),
        };
        let matches = run_argon2(move || verify_blocking(&hash.0, candidate.as_bytes())).await?;
        Ok(real && matches)
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// Runs one argon2 computation on the blocking pool once a CPU is free for it. The permit moves
/// into the work, so a request given up half-way still counts until its hash is done.
async fn run_argon2<T, F>(work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    static CPUS: OnceLock<Semaphore> = OnceLock::new();
    let cpus = CPUS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
    });
    let permit = cpus.acquire().await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await?
}

fn hash_blocking(password: &[u8]) -> anyhow::Result<PasswordHash> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    let hash = Argon2::default().hash_password(password, &salt)?;
    Ok(PasswordHash(hash.to_string()))
}

fn verify_blocking(phc: &str, candidate: &[u8]) -> anyhow::Result<bool> {
    let parsed = password_hash::PasswordHash::new(phc)?;
    match Argon2::default().verify_password(candidate, &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(other) => Err(other.into()),
    }
}

/// A hash of a random password, made with the same parameters as real ones (so verifying
/// against it costs the same), once per process on first need.
async fn dummy() -> anyhow::Result<&'static PasswordHash> {
    static DUMMY: OnceCell<PasswordHash> = OnceCell::const_new();
    DUMMY
        .get_or_try_init(|| async {
            let random: [u8; 32] = rand::random();
            run_argon2(move || hash_blocking(&random)).await
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_one_to_1024_characters_taken_as_typed() {
        assert!(Password::parse(String::new()).is_err());
        assert!(Password::parse("a".to_owned()).is_ok());
        assert_eq!(
            Password::parse(" padded ".to_owned()).map(|p| p.0),
            Ok(" padded ".to_owned())
        );
        assert!(Password::parse("é".repeat(1024)).is_ok());
        assert!(Password::parse("a".repeat(1025)).is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let password = Password::parse("hunter2".to_owned()).map(|p| format!("{p:?}"));
        assert_eq!(password.as_deref(), Ok("Password(<redacted>)"));
        let hash = PasswordHash::from_stored("$argon2id$v=19$secret".to_owned());
        assert!(!format!("{hash:?}").contains("argon2"));
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() -> anyhow::Result<()> {
        let hash = Password::parse("correct horse".to_owned())
            .map_err(|e| anyhow::anyhow!(e.message))?
            .hash()
            .await?;
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(PasswordHash::verify(Some(&hash), "correct horse".to_owned()).await?);
        assert!(!PasswordHash::verify(Some(&hash), "wrong".to_owned()).await?);
        assert!(!PasswordHash::verify(None, "correct horse".to_owned()).await?);
        Ok(())
    }
}
