//! Password guesses made through this service, limited per key in a fixed window, so that a
//! holder of a token cannot guess a password at machine speed: wrong current passwords per
//! account (a stolen access token is not enough to take the account for good), and credential
//! checks per caller and username (a captured gateway identity token is not a way round the
//! gateway's sign-in throttle). Each guess is counted before its password is verified; the
//! right password clears the count; a check that could not be made is taken back.

use std::time::Duration;

use crate::error::Error;
use crate::store::AttemptStore;

/// A budget of guesses under one key.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub guesses: u64,
    pub window: Duration,
}

/// Wrong current passwords an account may give in a window before `PATCH /users/me` with a
/// password answers 429: enough for typos, far too few to guess a password.
pub const CURRENT_PASSWORD: Budget = Budget {
    guesses: 5,
    window: Duration::from_secs(15 * 60),
};

/// Credential checks a caller may make for one username in a window. Above what the gateway's
/// own throttle lets through for one username (10 from unknown devices plus a few from each of
/// the owner's devices by default), so the gateway never meets it in normal use.
pub const CREDENTIAL_CHECKS: Budget = Budget {
    guesses: 30,
    window: Duration::from_secs(15 * 60),
};

/// One guess, counted.
pub struct Guess<'a> {
    attempts: &'a AttemptStore,
    key: String,
}

impl<'a> Guess<'a> {
    /// Counts a guess under `key`; [`Error::TooManyAttempts`] when it exceeds `budget`, before
    /// any password is verified.
    pub async fn begin(
        attempts: &'a AttemptStore,
        key: String,
        budget: Budget,
    ) -> Result<Self, Error> {
        let counted = attempts.count(&key, budget.window).await?;
        if counted.count > budget.guesses {
            tracing::warn!(
                attempts.key = %key,
                attempts.count = counted.count,
                "password guesses throttled"
            );
            return Err(Error::TooManyAttempts {
                retry_after: counted.resets_in,
            });
        }
        Ok(Self { attempts, key })
    }

    /// Settles the guess by the verification's result: right clears the count, wrong stays
    /// counted, a verification that failed to run is taken back.
    pub async fn settle(self, verified: anyhow::Result<bool>) -> Result<bool, Error> {
        match verified {
            Ok(true) => {
                self.attempts.clear(&self.key).await?;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(error) => {
                self.attempts.forgive(&self.key).await?;
                Err(Error::Unexpected(error))
            }
        }
    }
}
