//! Hot reload of the configuration file: on SIGHUP, and when the file's contents change (read
//! every `watch` interval; no file-notification dependency: reading a small file once a second
//! costs nothing, and polling also sees changes that inotify misses, such as a Kubernetes
//! ConfigMap's symlink swap).
//!
//! The watch applies a change only once the file has stayed the same for `watch_settle`: a
//! writer that edits the file in place and pauses mid-way leaves a prefix that may well be a
//! valid configuration with half the routes. A look that finds a change starts its settle time
//! (on the app's [`Clock`](crate::clock::Clock)), a look that finds other contents starts it
//! over, and the first look that finds the same contents once it is over applies them: the
//! settled contents are what is parsed, never a later read. The watch takes its next look when
//! the settle time ends (or at `watch`, if sooner); a test takes the looks itself
//! ([`Reloader::look`]) and moves a manual clock between them. Tools should still replace the
//! file by rename, which is atomic.
//!
//! A reload reads and validates the file exactly as `gatehouse check-config` does
//! ([`config::load_file`]), then swaps the routes and services in at once
//! ([`apply`]): a request holds the table it started with until it ends, so none is
//! dropped; unchanged services keep their connection pools, health and breakers. A file that does
//! not validate is refused, logged and counted, and the running configuration stays. Settings
//! read only at start (listen, store, state, tokens, auth) are reported as needing a restart and
//! otherwise ignored.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kit::shutdown::Shutdown;
use serde_json::json;

use crate::app::{App, AppState};
use crate::config::{self, ConfigError, GatewayConfig, Vars};
use crate::proxy::health;
use crate::proxy::upstream::Upstreams;
use crate::router::RouteTable;
use crate::routing::Routing;

/// What the gateway tells about its configuration (in `/readyz`).
#[derive(Debug, Default)]
pub struct ReloadStatus {
    /// 1 for the configuration it started with, then one more per applied reload.
    generation: AtomicU64,
    refused: AtomicU64,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default)]
struct Detail {
    last_error: Option<String>,
    needs_restart: Vec<&'static str>,
    last: Option<LastReload>,
}

/// The outcome of the most recent reload, applied or refused (for the status page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastReload {
    /// When it was decided (ms since the Unix epoch).
    pub at_unix_ms: u64,
    pub applied: bool,
    /// Why it was refused: the validation's message, positioned in the file.
    pub error: Option<String>,
}

impl ReloadStatus {
    pub fn starting() -> Self {
        Self {
            generation: AtomicU64::new(1),
            ..Self::default()
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reloads refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }

    pub(crate) fn applied(&self, needs_restart: Vec<&'static str>) -> u64 {
        let mut detail = self.lock();
        detail.needs_restart = needs_restart;
        detail.last = Some(LastReload {
            at_unix_ms: crate::clock::unix_ms(),
            applied: true,
            error: None,
        });
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn refuse(&self, error: &ConfigError) -> u64 {
        let mut detail = self.lock();
        detail.last_error = Some(error.to_string());
        detail.last = Some(LastReload {
            at_unix_ms: crate::clock::unix_ms(),
            applied: false,
            error: detail.last_error.clone(),
        });
        self.refused.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The most recent reload's outcome; None before the first.
    pub fn last(&self) -> Option<LastReload> {
        self.lock().last.clone()
    }

    /// Start-only settings the file changed that wait for a restart.
    pub fn needs_restart(&self) -> Vec<&'static str> {
        self.lock().needs_restart.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn report(&self) -> serde_json::Value {
        let detail = self.lock();
        json!({
            "generation": self.generation(),
            "reloads_refused": self.refused(),
            "last_refusal": detail.last_error,
            "needs_restart": detail.needs_restart,
        })
    }
}

/// What an applied reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub generation: u64,
    /// Start-only settings that differ in the file; they wait for a restart.
    pub needs_restart: Vec<&'static str>,
    /// Services new or changed (fresh state); the others kept theirs.
    pub services_changed: Vec<String>,
    pub routes: usize,
}

/// Swaps in `config` (already validated, from `file`): its routes and services replace the
/// running ones at once; unchanged services are kept (pools, health, breakers), removed ones
/// retired, added ones health-checked from now on.
pub fn apply(app: &AppState, config: GatewayConfig, file: &str) -> Result<Reloaded, ConfigError> {
    let _one_at_a_time = app.reloading.lock().unwrap_or_else(PoisonError::into_inner);
    let current = app.routing();
    let needs_restart = config.needs_restart(&current.config);
    let config = config.keeping_start_settings_of(&current.config);
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        file: file.to_owned(),
        field: field.to_owned(),
        message,
    };
    if !config
        .services
        .contains_key(&config.auth.credentials_service)
    {
        return Err(invalid(
            "services",
            format!(
                "the running gateway checks passwords with the service `{}`; keep it (changing auth.credentials needs a restart)",
                config.auth.credentials_service
            ),
        ));
    }
    let table = RouteTable::succeeding(&config.routes, Some(&current.table))
        .map_err(|error| invalid("routes", error.to_string()))?;
    let upstreams = Upstreams::succeeding(&config.services, &current.upstreams);
    let services_changed = upstreams
        .iter()
        .filter(|(_, upstream)| !current.upstreams.holds(upstream))
        .map(|(name, _)| name.clone())
        .collect();
    let routes = config.routes.len();
    let next = Arc::new(Routing {
        config: Arc::new(config),
        table: Arc::new(table),
        upstreams: Arc::new(upstreams),
    });
    app.replace_routing(Arc::clone(&next));

    for (_, old) in current.upstreams.iter() {
        if !next.upstreams.holds(old) {
            old.retire();
        }
    }
    if let Some(shutdown) = app.serving.get() {
        for (_, upstream) in next.upstreams.iter() {
            health::start(upstream, shutdown);
        }
    }
    let generation = app.reloads.applied(needs_restart.clone());
    Ok(Reloaded {
        generation,
        needs_restart,
        services_changed,
        routes,
    })
}

/// Reloads one configuration file into a running gateway.
#[derive(Clone)]
pub struct Reloader {
    state: App,
    path: Arc<PathBuf>,
    vars: Arc<Vars>,
    /// What the watch has seen of the file (see [`Watched`]).
    watched: Arc<Mutex<Watched>>,
}

/// What the watch has seen of the file.
struct Watched {
    /// The contents last applied (or refused), so an unchanged file is not reapplied and a
    /// refused one is refused once.
    seen: Option<Vec<u8>>,
    /// A change waiting to settle: the contents, and when a look first found them (ms,
    /// [`crate::clock::Clock::monotonic_ms`] of the app's clock).
    settling: Option<(Vec<u8>, u64)>,
}

/// What one look at the file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The contents last applied or refused: nothing to do.
    Unchanged,
    /// A change, not yet the same for `watch_settle`: applied by a look this much later (on
    /// the app's clock) if it stays so.
    Settling(Duration),
    /// A settled change, applied or refused (see [`ReloadStatus`]).
    Reloaded,
}

impl Reloader {
    /// For the gateway whose configuration was just loaded from `path` with `vars`.
    pub fn new(state: App, path: PathBuf, vars: Vars) -> Self {
        // What the running configuration was read from: only a change from it is applied.
        let contents = std::fs::read(&path).ok();
        Self {
            state,
            path: Arc::new(path),
            vars: Arc::new(vars),
            watched: Arc::new(Mutex::new(Watched {
                seen: contents,
                settling: None,
            })),
        }
    }

    /// Reads, validates and applies the file now; on error the running configuration stays.
    pub fn reload(&self, cause: &str) -> Result<Reloaded, ConfigError> {
        let result = config::load_file(&self.path, &self.vars)
            .and_then(|config| apply(&self.state, config, &self.path.display().to_string()));
        self.report(cause, result)
    }

    /// Validates and applies `contents`, the file as the watch saw it settle.
    fn reload_contents(&self, contents: &[u8], cause: &str) -> Result<Reloaded, ConfigError> {
        let file = self.path.display().to_string();
        let result = std::str::from_utf8(contents)
            .map_err(|error| ConfigError::Read {
                file: file.clone(),
                cause: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
            })
            .and_then(|text| config::parse(text, &file, &self.vars))
            .and_then(|config| apply(&self.state, config, &file));
        self.report(cause, result)
    }

    /// Logs (and counts, when refused) the outcome of a reload.
    fn report(
        &self,
        cause: &str,
        result: Result<Reloaded, ConfigError>,
    ) -> Result<Reloaded, ConfigError> {
        match &result {
            Ok(reloaded) => {
                self.state.observe.gateway.reload("applied");
                tracing::info!(
                    cause,
                    generation = reloaded.generation,
                    routes = reloaded.routes,
                    services.changed = ?reloaded.services_changed,
                    "configuration reloaded"
                );
                if !reloaded.needs_restart.is_empty() {
                    tracing::warn!(
                        settings = ?reloaded.needs_restart,
                        "changed settings take effect only after a restart; the running values stay"
                    );
                }
            }
            Err(error) => {
                self.state.observe.gateway.reload("refused");
                let refused = self.state.reloads.refuse(error);
                tracing::error!(
                    cause,
                    %error,
                    reloads.refused = refused,
                    "configuration refused; the running one stays"
                );
            }
        }
        result
    }

    /// Reloads on SIGHUP and whenever the file's contents change, until `shutdown`. SIGHUP is
    /// taken over at once, before the returned future first runs (its default would end the
    /// process).
    pub fn run(self, shutdown: Shutdown) -> impl std::future::Future<Output = ()> + Send {
        let hangups = hangups();
        self.watch(hangups, shutdown)
    }

    async fn watch(self, mut hangups: Hangups, shutdown: Shutdown) {
        let mut unreadable = false;
        // The settle time left for a change the last look found.
        let mut settling: Option<Duration> = None;
        loop {
            let interval = self.state.config().watch;
            let next = match (interval, settling) {
                (Some(interval), Some(left)) => left.min(interval),
                (interval, _) => interval.unwrap_or(Duration::from_secs(3600)),
            };
            tokio::select! {
                () = shutdown.wait() => break,
                () = next_hangup(&mut hangups) => {
                    let contents = tokio::fs::read(self.path.as_ref()).await.ok();
                    let _ = self.reload("SIGHUP");
                    self.remember(contents);
                }
                () = tokio::time::sleep(next), if interval.is_some() => {
                    match self.look().await {
                        Ok(look) => {
                            unreadable = false;
                            settling = match look {
                                Look::Settling(left) => Some(left),
                                Look::Unchanged | Look::Reloaded => None,
                            };
                        }
                        Err(error) if !unreadable => {
                            unreadable = true;
                            tracing::warn!(file = %self.path.display(), %error, "cannot read the configuration file; the running one stays");
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }

    /// One look at the file, as the watch takes one: a change is applied once a look finds the
    /// same contents `watch_settle` after a look first found them, on the app's clock (see the
    /// module docs); a file refused once is not tried again until it changes.
    pub async fn look(&self) -> std::io::Result<Look> {
        let contents = tokio::fs::read(self.path.as_ref()).await?;
        let now = self.state.clock.monotonic_ms();
        let settle = self.state.config().watch_settle;
        {
            let mut watched = self.watched();
            if watched.seen.as_deref() == Some(contents.as_slice()) {
                watched.settling = None;
                return Ok(Look::Unchanged);
            }
            match &watched.settling {
                Some((settling, since)) if *settling == contents => {
                    let left =
                        settle.saturating_sub(Duration::from_millis(now.saturating_sub(*since)));
                    if !left.is_zero() {
                        return Ok(Look::Settling(left));
                    }
                }
                other => {
                    if other.is_some() {
                        tracing::debug!(file = %self.path.display(), "the configuration file is still being written");
                    }
                    watched.settling = Some((contents, now));
                    return Ok(Look::Settling(settle));
                }
            }
            watched.settling = None;
        }
        let _ = self.reload_contents(&contents, "file changed");
        self.remember(Some(contents));
        Ok(Look::Reloaded)
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, contents: Option<Vec<u8>>) {
        self.watched().seen = contents;
    }
}

/// SIGHUP as a stream (the certificate watch of `crate::entrance` takes it too).
#[cfg(unix)]
pub(crate) type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(crate) type Hangups = Option<()>;

#[cfg(unix)]
pub(crate) fn hangups() -> Hangups {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; the file is still watched");
            None
        }
    }
}

#[cfg(not(unix))]
pub(crate) fn hangups() -> Hangups {
    None
}

pub(crate) async fn next_hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        if signal.recv().await.is_some() {
            return;
        }
    }
    let _ = hangups;
    std::future::pending::<()>().await;
}
