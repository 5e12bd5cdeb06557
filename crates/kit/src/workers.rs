//! The serving threads: one single-threaded tokio runtime per core, each serving the
//! connections it is given start to finish, as nginx's worker processes do.
//!
//! Why not the multi-threaded runtime every other task runs on: on the gateway's forwarded path a
//! request is three tasks that wake each other several times (the client's connection, the
//! upstream connection's, the timers), and on a work-stealing runtime each wake that crosses
//! threads costs an atomic handshake and often a futex call to unpark the other worker, with the
//! request's state bouncing between the cores' caches. On a worker here every wake is a push on
//! a local queue: the connection, its upstream connection (each worker keeps its own idle
//! connections, see [`current`]) and their timers stay on one thread.
//!
//! The runtimes live as long as the process: a resource a request opens on one (an upstream
//! connection, a database connection a pool opened lazily) stays usable from any thread for as
//! long as anything holds it, which a runtime shut down with its listener would break. Every
//! listener served on the workers ([`crate::listener::serve_on_workers`], which gives each
//! accepted connection to the least busy) shares them: `gatehouse up`, and a test suite's many
//! gateways, run one set of threads, not one per listener.
//!
//! How many: `GATEHOUSE_WORKERS` if set (a positive number), else one per core the process may
//! run on (`std::thread::available_parallelism`, which honours CPU affinity and cgroup quotas).

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::Handle;

/// The environment variable that sets the number of workers (read once, at the first use).
pub const WORKERS_VAR: &str = "GATEHOUSE_WORKERS";

/// More than this many is a mistake (a typo's extra digits), not a machine.
const MOST: usize = 1024;

static WORKERS: OnceLock<Result<Vec<Handle>, String>> = OnceLock::new();

thread_local! {
    /// The index of the worker this thread is; `None` on every other thread.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker the calling thread is (`0..count()`), or `None` off the workers: what
/// per-worker state (the gateway's idle upstream connections) is keyed by.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// The calling thread's place among `slots` per-worker places whose last is shared by every
/// thread off the workers: its worker's (workers beyond `slots - 1` share by remainder), or the
/// last. What per-worker state is indexed by, so that a worker never writes another's and
/// state made off the workers (its tasks on the main runtime) is never handed to a worker.
pub fn slot(slots: usize) -> usize {
    let off_the_workers = slots.saturating_sub(1);
    current().map_or(off_the_workers, |worker| worker % off_the_workers.max(1))
}

/// How many workers there are (or will be, before the first listener starts them).
pub fn count() -> usize {
    match WORKERS.get() {
        Some(Ok(handles)) => handles.len(),
        _ => wanted().unwrap_or(1),
    }
}

/// The workers' runtimes, started on the first call.
pub fn handles() -> std::io::Result<&'static [Handle]> {
    WORKERS
        .get_or_init(|| start(wanted()?))
        .as_deref()
        .map_err(|reason| std::io::Error::other(reason.clone()))
}

/// The number asked for: the variable, or one per core.
fn wanted() -> Result<usize, String> {
    match std::env::var(WORKERS_VAR) {
        Ok(value) => parse(&value),
        Err(std::env::VarError::NotPresent) => Ok(std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(MOST)),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("{WORKERS_VAR} is not a number of threads"))
        }
    }
}

fn parse(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MOST).contains(&n) => Ok(n),
        _ => Err(format!(
            "{WORKERS_VAR}={value:?}: a number of serving threads from 1 to {MOST} was expected"
        )),
    }
}

/// Starts `n` threads, each running a single-threaded runtime until the process ends.
fn start(n: usize) -> Result<Vec<Handle>, String> {
    let mut handles = Vec::with_capacity(n);
    for index in 0..n {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("gatehouse-worker-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = sender.send(Err(error.to_string()));
                        return;
                    }
                };
                INDEX.with(|cell| cell.set(Some(index)));
                let _ = sender.send(Ok(runtime.handle().clone()));
                // The runtime runs what is spawned on it for as long as the process lives.
                runtime.block_on(std::future::pending::<()>());
            })
            .map_err(|error| format!("starting serving thread {index}: {error}"))?;
        let handle = receiver
            .recv()
            .map_err(|_| format!("serving thread {index} ended at start"))?
            .map_err(|error| format!("serving thread {index}'s runtime: {error}"))?;
        handles.push(handle);
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_takes_a_positive_number_and_nothing_else() {
        assert_eq!(parse("4"), Ok(4));
        assert_eq!(parse(" 2 "), Ok(2));
        for bad in ["0", "-1", "two", "", "1.5", "100000"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(WORKERS_VAR), "{bad}: {error}");
        }
    }

    #[test]
    fn a_worker_knows_its_index_and_other_threads_have_none() {
        assert_eq!(current(), None);
        let handles = handles().unwrap();
        assert_eq!(handles.len(), count());
        for (index, handle) in handles.iter().enumerate() {
            let (sender, receiver) = std::sync::mpsc::channel();
            handle.spawn(async move { sender.send(current()).unwrap() });
            assert_eq!(receiver.recv().unwrap(), Some(index));
        }
    }
}
