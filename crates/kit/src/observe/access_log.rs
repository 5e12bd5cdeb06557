//! The access log: one JSON line per request, written off the request's task.
//!
//! [`AccessLog::record`] only moves the record into a bounded queue; a writer thread of its own
//! formats the lines and writes them, so a slow disk or a blocked stdout never holds a request.
//! When the queue is full the line is dropped and counted (`gatehouse_access_log_dropped_total`)
//! rather than making the request wait: the log is for people, the answer is for the client.
//!
//! A line names the request by route template, never by path or query, and carries no header
//! value: nothing in it can hold a token.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::{Serialize, Serializer};

use super::metrics::{MethodLabel, Metrics};

/// How many lines may wait for the writer: enough to ride out a burst or a slow write, small
/// enough that the queue (allocated once, up front) stays under a megabyte.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Where access-log lines go: `stdout` (the default), `stderr`, `off`, or a file path (appended
/// to, created 0600 if missing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    Off,
    #[default]
    Stdout,
    Stderr,
    File(PathBuf),
}

/// As a configuration file writes it: the same words as the command line.
impl<'de> serde::Deserialize<'de> for AccessLogTarget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for AccessLogTarget {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "" => {
                Err("an access log target is `stdout`, `stderr`, `off` or a file path".to_owned())
            }
            "off" => Ok(Self::Off),
            "stdout" => Ok(Self::Stdout),
            "stderr" => Ok(Self::Stderr),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// What is logged of one request. Built by the server that answered, when the answer's body has
/// gone out (or the client went away).
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub request_id: String,
    /// Which part answered: `gateway`, `users`, `orders`, `clock`.
    pub server: &'static str,
    /// The route template the request matched; `None` when none did.
    pub route: Option<Arc<str>>,
    pub method: http::Method,
    pub status: u16,
    /// Why the server answered as it did ([`super::Reason`]).
    pub reason: Option<&'static str>,
    /// The verified caller: a user id or a machine client's id.
    pub principal: Option<String>,
    /// The upstream instance that answered, when the gateway forwarded the request.
    pub instance: Option<Arc<str>>,
    /// From the request's arrival to the last byte of the answer.
    pub duration: Duration,
    /// How long the upstream took, when the gateway forwarded the request.
    pub upstream_duration: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A handle on the access log; clones share one queue and one writer thread, which ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct AccessLog {
    /// `None` when the log is off.
    queue: Option<SyncSender<Entry>>,
    dropped: Counter,
}

/// A record and the moment it was handed over, taken on the request's side so a queue that is
/// slow to drain does not shift the times.
struct Entry {
    at: SystemTime,
    record: AccessRecord,
}

impl AccessLog {
    /// The log at `target`, counting dropped lines in `metrics`. A file is appended to and, when
    /// missing, created readable by its owner only.
    pub fn open(target: &AccessLogTarget, metrics: &Metrics) -> std::io::Result<Self> {
        match target {
            AccessLogTarget::Off => Ok(Self::off()),
            // A file of its own on the same descriptor, not `io::stdout()`: std's handle has one
            // lock for the whole process, and a writer blocked on a full pipe while holding it
            // would stall every other writer (tracing, a `println!`) on a request's task.
            AccessLogTarget::Stdout => Self::to_writer(
                std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?),
                DEFAULT_CAPACITY,
                metrics,
            ),
            AccessLogTarget::Stderr => Self::to_writer(
                std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned()?),
                DEFAULT_CAPACITY,
                metrics,
            ),
            AccessLogTarget::File(path) => {
                Self::to_writer(open_append(path)?, DEFAULT_CAPACITY, metrics)
            }
        }
    }

    /// A log that records nothing.
    pub fn off() -> Self {
        Self {
            queue: None,
            dropped: Counter::default(),
        }
    }

    /// Lines to `writer`, with room for `capacity` waiting lines; for a target [`AccessLog::open`]
    /// does not name (and for tests).
    pub fn to_writer(
        writer: impl Write + Send + 'static,
        capacity: usize,
        metrics: &Metrics,
    ) -> std::io::Result<Self> {
        let (queue, lines) = mpsc::sync_channel(capacity);
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_lines(lines, BufWriter::with_capacity(64 * 1024, writer)))?;
        Ok(Self {
            queue: Some(queue),
            dropped: metrics.access_log_dropped(),
        })
    }

    /// Whether lines are written at all.
    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Hands `record` to the writer. Never blocks: when the writer is behind and the queue is
    /// full, the line is dropped and counted.
    pub fn record(&self, record: AccessRecord) {
        let Some(queue) = &self.queue else {
            return;
        };
        let entry = Entry {
            at: SystemTime::now(),
            record,
        };
        // The writer thread only stops when every handle is gone, or if it panicked.
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = queue.try_send(entry) {
            self.dropped.inc();
        }
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("on", &self.is_on())
            .finish_non_exhaustive()
    }
}

/// Opens `path` for appending; a new file is its owner's alone (0600), as the house's private
/// files are, since lines name callers. An existing file keeps the mode its operator gave it (a
/// log shipper's group may need to read it).
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("opening the access log {}: {error}", path.display()),
        )
    })
}

/// The writer thread: a line per entry, flushed whenever the queue runs empty so a line is on
/// disk as soon as the log is idle, and batched while it is busy.
fn write_lines<W: Write>(lines: Receiver<Entry>, mut out: BufWriter<W>) {
    let mut failing = false;
    while let Ok(entry) = lines.recv() {
        let mut result = write_line(&mut out, &entry);
        loop {
            match lines.try_recv() {
                Ok(entry) => result = result.and(write_line(&mut out, &entry)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        result = result.and(out.flush());
        // A full disk fails every line: say so once, and again once it has recovered.
        match result {
            Err(error) if !failing => {
                failing = true;
                tracing::error!(%error, "cannot write the access log; lines are lost until it can");
            }
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the access log is written again");
            }
            _ => {}
        }
    }
    let _ = out.flush();
}

fn write_line<W: Write>(out: &mut W, entry: &Entry) -> std::io::Result<()> {
    let record = &entry.record;
    let line = Line {
        time: entry.at,
        request_id: &record.request_id,
        server: record.server,
        route: record.route.as_deref(),
        method: MethodLabel::of(&record.method).as_str(),
        status: record.status,
        reason: record.reason,
        principal: record.principal.as_deref(),
        instance: record.instance.as_deref(),
        duration_ms: millis(record.duration),
        upstream_ms: record.upstream_duration.map(millis),
        bytes_in: record.bytes_in,
        bytes_out: record.bytes_out,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// Milliseconds to the microsecond.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// The line as written: every field always present (`null` when unknown), so a log pipeline
/// sees one shape.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "rfc3339_millis")]
    time: SystemTime,
    request_id: &'a str,
    server: &'a str,
    route: Option<&'a str>,
    /// Standard methods by name, anything else `other`, as in the metrics.
    method: &'a str,
    status: u16,
    reason: Option<&'a str>,
    principal: Option<&'a str>,
    instance: Option<&'a str>,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    bytes_in: u64,
    bytes_out: u64,
}

/// `2026-11-29T10:27:46.123Z`. humantime writes it straight from the seconds; chrono's
/// format string was parsed for every line and cost a third of the writer thread's time.
fn rfc3339_millis<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*at))
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};
    use std::time::Instant;

    use super::*;

    /// Bytes written by the writer thread, readable by the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The lines written so far, once there are `count` of them (the writer is a thread).
        fn lines(&self, count: usize) -> Vec<serde_json::Value> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
                let lines: Vec<serde_json::Value> = text
                    .lines()
                    .map(|line| serde_json::from_str(line).unwrap())
                    .collect();
                if lines.len() >= count || Instant::now() > deadline {
                    return lines;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn record(request_id: &str) -> AccessRecord {
        AccessRecord {
            request_id: request_id.to_owned(),
            server: "orders",
            route: Some(Arc::from("/orders/{id}")),
            method: http::Method::GET,
            status: 404,
            reason: Some("not_found"),
            principal: Some("0191b2c4-user".to_owned()),
            instance: None,
            duration: Duration::from_micros(1_234),
            upstream_duration: None,
            bytes_in: 0,
            bytes_out: 120,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let out = Captured::default();
        let log = AccessLog::to_writer(out.clone(), 16, &Metrics::new()).unwrap();

        log.record(record("req-1"));
        let lines = out.lines(1);

        let line = lines[0].as_object().unwrap();
        let mut fields: Vec<&str> = line.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "bytes_in",
                "bytes_out",
                "duration_ms",
                "instance",
                "method",
                "principal",
                "reason",
                "request_id",
                "route",
                "server",
                "status",
                "time",
                "upstream_ms"
            ]
        );
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["route"], "/orders/{id}");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], 404);
        assert_eq!(line["reason"], "not_found");
        assert_eq!(line["duration_ms"], 1.234);
        assert_eq!(line["upstream_ms"], serde_json::Value::Null);
        let time = line["time"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok()
                && time.ends_with('Z')
                && time.len() == 24,
            "RFC 3339 in UTC to the millisecond: {time}"
        );
    }

    #[test]
    fn an_invented_method_is_logged_as_other() {
        let out = Captured::default();
        let log = AccessLog::to_writer(out.clone(), 16, &Metrics::new()).unwrap();

        let mut hostile = record("req-1");
        hostile.method = http::Method::from_bytes(b"X-TOKEN-secret").unwrap();
        log.record(hostile);

        assert_eq!(out.lines(1)[0]["method"], "other");
    }

    /// A writer stuck until the test lets it go: a disk that has stopped answering.
    #[derive(Clone, Default)]
    struct Stuck {
        released: Arc<(Mutex<bool>, Condvar)>,
        written: Captured,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (released, changed) = &*self.released;
            let mut released = released.lock().unwrap();
            while !*released {
                released = changed.wait(released).unwrap();
            }
            self.written.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Stuck {
        fn release(&self) {
            let (released, changed) = &*self.released;
            *released.lock().unwrap() = true;
            changed.notify_all();
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_the_line_instead_of_waiting() {
        let metrics = Metrics::new();
        let disk = Stuck::default();
        let log = AccessLog::to_writer(disk.clone(), 1, &metrics).unwrap();

        // Returning at all is the point: with the writer stuck, a blocking send would hang here.
        const SENT: u64 = 1000;
        for n in 0..SENT {
            log.record(record(&format!("req-{n}")));
        }
        let dropped = metrics.access_log_dropped().get();
        assert!(
            dropped > 0,
            "a queue of one behind a stuck writer overflows"
        );
        assert!(metrics
            .render()
            .contains(&format!("gatehouse_access_log_dropped_total {dropped}")));

        disk.release();
        let written = disk.written.lines((SENT - dropped) as usize);
        assert_eq!(
            written.len() as u64 + dropped,
            SENT,
            "every line is written or counted as dropped"
        );
    }

    #[test]
    fn an_off_log_records_nothing_and_drops_nothing() {
        let metrics = Metrics::new();
        let log = AccessLog::off();

        log.record(record("req-1"));

        assert!(!log.is_on());
        assert_eq!(metrics.access_log_dropped().get(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_log_file_is_the_owners_alone_and_is_appended_to() {
        use std::os::unix::fs::PermissionsExt;

        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("access.log");
        let target = AccessLogTarget::File(path.clone());
        for n in 0..2 {
            let log = AccessLog::open(&target, &Metrics::new()).unwrap();
            log.record(record(&format!("req-{n}")));
            drop(log); // the writer drains and stops
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string(&path).unwrap().lines().count() < n + 1 {
                assert!(Instant::now() < deadline, "line {n} never written");
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("req-0") && text.contains("req-1"), "{text}");
    }

    #[test]
    fn a_log_file_in_a_missing_folder_is_an_error_naming_it() {
        let target = AccessLogTarget::File("/nonexistent-gatehouse/access.log".into());

        let error = AccessLog::open(&target, &Metrics::new()).unwrap_err();

        assert!(error
            .to_string()
            .contains("/nonexistent-gatehouse/access.log"));
    }

    #[test]
    fn targets_read_by_name_and_anything_else_is_a_file() {
        assert_eq!("off".parse(), Ok(AccessLogTarget::Off));
        assert_eq!("stdout".parse(), Ok(AccessLogTarget::Stdout));
        assert_eq!(" stderr ".parse(), Ok(AccessLogTarget::Stderr));
        assert_eq!(
            "/var/log/gatehouse/access.log".parse(),
            Ok(AccessLogTarget::File(
                "/var/log/gatehouse/access.log".into()
            ))
        );
        assert!("  ".parse::<AccessLogTarget>().is_err());
    }
}
