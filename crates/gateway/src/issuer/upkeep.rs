//! The gateway's background work while it serves: following per-user cut-offs from the
//! credentials service, rereading the signing keys, forgetting expired refresh tokens and
//! revocations, and retrying store writes that met an outage.

use std::time::Duration;

use kit::shutdown::Shutdown;

use super::users;
use crate::app::App;
use crate::auth::tokens::LEEWAY_SECONDS;

/// Cut-offs are asked for again this far back, so one recorded out of order is not missed.
const CUTOFF_OVERLAP_MS: u64 = 5 * 60 * 1000;
/// The page size the credentials service answers with: a full page means more to fetch.
const CUTOFF_PAGE: usize = 1000;
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs every task until `shutdown`.
pub async fn run(state: App, shutdown: Shutdown) {
    tokio::select! {
        () = follow_cutoffs(&state) => {},
        () = reload_keys(&state) => {},
        () = purge_refresh_tokens(&state) => {},
        () = state.store.retry_pending() => {},
        () = state.shared.follow_store() => {},
        () = shutdown.wait() => {},
    }
    // While the requests in flight drain, queued store writes keep being retried; the server
    // then flushes what is left within the drain deadline (`Store::flush_pending`).
    state.store.retry_pending().await;
}

/// Applies cut-offs as the credentials service records them (deactivation, role, scope or
/// password change, deletion): tokens issued before are refused, sessions begun before end.
async fn follow_cutoffs(state: &App) {
    let mut since_ms: u64 = 0;
    let mut failing = false;
    loop {
        match follow_once(state, since_ms.saturating_sub(CUTOFF_OVERLAP_MS)).await {
            Ok(latest) => {
                if failing {
                    tracing::info!("per-user cut-offs are followed again");
                    failing = false;
                }
                since_ms = since_ms.max(latest);
            }
            Err(error) if !failing => {
                tracing::warn!(%error, "cannot fetch per-user cut-offs; retrying");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(state.config().auth.cutoff_poll).await;
    }
}

/// Applies every cut-off from `from_ms` on, page after page; returns the latest seen.
async fn follow_once(state: &App, from_ms: u64) -> Result<u64, crate::error::GatewayError> {
    let keep = state.config().tokens.access_ttl + Duration::from_secs(LEEWAY_SECONDS);
    let mut cursor: (u64, Option<String>) = (from_ms, None);
    let mut latest = 0;
    loop {
        let page = users::cutoffs_since(state, cursor.0, cursor.1.as_deref()).await?;
        let full = page.len() >= CUTOFF_PAGE;
        for cutoff in &page {
            latest = latest.max(cutoff.cutoff_ms);
            apply(state, cutoff, keep).await;
        }
        match page.last() {
            Some(last) if full => cursor = (last.cutoff_ms, Some(last.user_id.clone())),
            _ => return Ok(latest),
        }
    }
}

async fn apply(state: &App, cutoff: &users::Cutoff, keep: Duration) {
    if state.shared.mirror().cutoff(&cutoff.user_id) >= Some(cutoff.cutoff_ms) {
        return;
    }
    if let Err(error) = state
        .shared
        .cut_off(&cutoff.user_id, cutoff.cutoff_ms, keep)
        .await
    {
        tracing::error!(%error, "cannot share a cut-off; applying it on this replica only");
        state
            .shared
            .mirror()
            .cut_off(&cutoff.user_id, cutoff.cutoff_ms);
    }
    match state
        .store
        .revoke_families_before(&cutoff.user_id, cutoff.cutoff_ms, "account changed")
        .await
    {
        Ok(n) if n > 0 => {
            tracing::info!(user.id = %cutoff.user_id, sessions = n, "sessions ended by an account change")
        }
        Ok(_) => {}
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot end sessions after a cut-off")
        }
    }
}

/// Rereads the signing keys every [`crate::auth::keys::KEY_RELOAD_INTERVAL`] of the app's
/// clock: a test's manual clock is moved past it instead of waited out.
async fn reload_keys(state: &App) {
    use crate::auth::keys::KEY_RELOAD_INTERVAL;
    let mut every = crate::clock::Every::new(state.clock.clone(), KEY_RELOAD_INTERVAL);
    loop {
        every.tick(KEY_RELOAD_INTERVAL).await;
        if let Err(error) = state.auth.keys.reload().await {
            tracing::error!(error = %format!("{error:#}"), "cannot reread the signing keys");
        }
    }
}

async fn purge_refresh_tokens(state: &App) {
    loop {
        tokio::time::sleep(PURGE_INTERVAL).await;
        if let Err(error) = state
            .store
            .purge_refresh(crate::clock::unix_seconds().saturating_sub(24 * 3600))
            .await
        {
            tracing::error!(error = %format!("{error:#}"), "cannot purge expired refresh tokens");
        }
        if let Err(error) = state
            .store
            .purge_revocations(crate::clock::unix_seconds())
            .await
        {
            tracing::error!(error = %format!("{error:#}"), "cannot purge expired revocations");
        }
    }
}
