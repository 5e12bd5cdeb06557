//! Tracing set-up: human-readable lines by default, one JSON object per line when
//! `GATEHOUSE_LOG_FORMAT=json`; levels from `RUST_LOG` (default `info`).
//!
//! Log lines go to **stderr** (stdout is the access log's), through a writer thread with a
//! bounded, lossy queue (`tracing-appender`'s non-blocking writer): a request that logs never
//! waits on the terminal or pipe behind it. A stderr nobody reads costs dropped log lines, never
//! a stalled gateway.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "human" | "text" | "pretty" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}; expected human or json"
            )),
        }
    }
}

/// Installs the global subscriber once; later calls (tests start many servers) do nothing.
/// Keep the returned guard until the process ends: dropping it writes out the lines still queued.
#[must_use = "the lines still queued are written when the guard is dropped"]
pub fn init(format: LogFormat) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    installed.is_ok().then_some(guard)
}
