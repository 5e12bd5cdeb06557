//! The access log: one JSON line per request, written off the request's task.
//!
//! [`AccessLog::record`] only moves the record into a bounded queue; a writer thread of its own
//! formats the lines and writes them, so a slow disk or a blocked stdout never holds a request.
//! When the queue is full the line is dropped and counted (`gatehouse_access_log_dropped_total`)
//! rather than making the request wait: the log is for people, the answer is for the client.
//!
//! While requests keep coming the writer takes what has queued every [`BATCH_INTERVAL`] and
//! writes it at once: one wake-up and one write for many lines, instead of a thread switch and a
//! write per request. A line waits at most that long; once the log is idle the writer sleeps
//! until the next line.
//!
//! A line is written by hand, not by serializing a struct: the keys are fixed text, and every
//! string value goes through serde_json's own escaping (quotes, backslashes, control
//! characters), so the line is the same JSON at a fraction of the cost.
//!
//! A line names the request by route template, never by path or query, and carries no header
//! value: nothing in it can hold a token.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

use super::metrics::{MethodLabel, Metrics};

/// How many lines may wait for the writer: enough to ride out a burst or a slow write, small
/// enough that the queue (allocated once, up front) stays under a megabyte.
pub const DEFAULT_CAPACITY: usize = 4096;

/// How long lines gather in the queue while the log is busy before the writer takes them:
/// [`DEFAULT_CAPACITY`] lines per interval is 160,000 lines a second before any is dropped.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(25);

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
    /// The W3C trace the request belongs to ([`crate::trace`]).
    pub trace_id: Option<crate::trace::TraceId>,
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

/// The writer thread: it sleeps until a line comes, then, while lines keep coming, takes what
/// has queued every [`BATCH_INTERVAL`] and writes and flushes it together (see the module docs).
fn write_lines<W: Write>(lines: Receiver<Entry>, mut out: BufWriter<W>) {
    let mut writer = LineWriter::default();
    let mut failing = false;
    while let Ok(first) = lines.recv() {
        let mut result = writer.write(&mut out, &first);
        loop {
            let mut taken = 0;
            let mut open = true;
            loop {
                match lines.try_recv() {
                    Ok(entry) => {
                        taken += 1;
                        result = result.and(writer.write(&mut out, &entry));
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            result = result.and(out.flush());
            // A full disk fails every line: say so once, and again once it has recovered.
            match std::mem::replace(&mut result, Ok(())) {
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
            if !open {
                return;
            }
            if taken == 0 {
                // Idle again: wait on the queue for the next line.
                break;
            }
            std::thread::sleep(BATCH_INTERVAL);
        }
    }
    let _ = out.flush();
}

/// Formats lines into one buffer it keeps, and remembers the timestamp's text for the second
/// it last wrote (lines come many to a second).
#[derive(Default)]
struct LineWriter {
    line: Vec<u8>,
    /// The second `second_text` is for (Unix seconds; `None` before the first line).
    second: Option<u64>,
    /// `2026-11-29T10:27:46`: the timestamp up to its fraction.
    second_text: Vec<u8>,
}

impl LineWriter {
    /// One line for `entry`, every field always present (`null` when unknown) so a log pipeline
    /// sees one shape:
    /// `{"time":"2026-11-29T10:27:46.123Z","request_id":…,"trace_id":…,"server":…,"route":…,"method":…,
    /// "status":200,"reason":…,"principal":…,"instance":…,"duration_ms":1.234,"upstream_ms":…,
    /// "bytes_in":0,"bytes_out":69}`. Methods are named as in the metrics (anything
    /// non-standard is `other`); durations are milliseconds to the microsecond.
    fn write<W: Write>(&mut self, out: &mut W, entry: &Entry) -> std::io::Result<()> {
        let record = &entry.record;
        self.line.clear();
        self.line.extend_from_slice(b"{\"time\":\"");
        self.timestamp(entry.at);
        self.line.extend_from_slice(b"\",\"request_id\":");
        self.string(Some(&record.request_id))?;
        self.line.extend_from_slice(b",\"trace_id\":");
        self.trace_id(record.trace_id)?;
        self.line.extend_from_slice(b",\"server\":");
        self.string(Some(record.server))?;
        self.line.extend_from_slice(b",\"route\":");
        self.string(record.route.as_deref())?;
        self.line.extend_from_slice(b",\"method\":");
        self.string(Some(MethodLabel::of(&record.method).as_str()))?;
        self.line.extend_from_slice(b",\"status\":");
        self.integer(u64::from(record.status))?;
        self.line.extend_from_slice(b",\"reason\":");
        self.string(record.reason)?;
        self.line.extend_from_slice(b",\"principal\":");
        self.string(record.principal.as_deref())?;
        self.line.extend_from_slice(b",\"instance\":");
        self.string(record.instance.as_deref())?;
        self.line.extend_from_slice(b",\"duration_ms\":");
        self.millis(Some(record.duration))?;
        self.line.extend_from_slice(b",\"upstream_ms\":");
        self.millis(record.upstream_duration)?;
        self.line.extend_from_slice(b",\"bytes_in\":");
        self.integer(record.bytes_in)?;
        self.line.extend_from_slice(b",\"bytes_out\":");
        self.integer(record.bytes_out)?;
        self.line.extend_from_slice(b"}\n");
        out.write_all(&self.line)
    }

    /// 32 lowercase hex digits, quoted, or `null`: written digit by digit into the line (the
    /// `{:032x}` of `Display` cost ~550 instructions a line).
    fn trace_id(&mut self, id: Option<crate::trace::TraceId>) -> std::io::Result<()> {
        match id {
            Some(id) => {
                let mut quoted = [b'"'; 34];
                crate::trace::context::hex_into(&mut quoted[1..33], &id.to_bytes());
                self.line.extend_from_slice(&quoted);
            }
            None => self.line.extend_from_slice(b"null"),
        }
        Ok(())
    }

    /// A JSON string, escaped by serde_json, or `null`. (A check for nothing to escape before
    /// copying cost more than serde_json's own table-driven pass: docs/BENCHMARKS.md, "Small
    /// cuts, measured one by one".)
    fn string(&mut self, value: Option<&str>) -> std::io::Result<()> {
        match value {
            Some(text) => serde_json::to_writer(&mut self.line, text).map_err(Into::into),
            None => {
                self.line.extend_from_slice(b"null");
                Ok(())
            }
        }
    }

    fn integer(&mut self, value: u64) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.line, &value).map_err(Into::into)
    }

    /// Milliseconds with three decimals (the microseconds, exactly), or `null`.
    fn millis(&mut self, duration: Option<Duration>) -> std::io::Result<()> {
        let Some(duration) = duration else {
            self.line.extend_from_slice(b"null");
            return Ok(());
        };
        let micros = duration.as_micros();
        self.integer(u64::try_from(micros / 1000).unwrap_or(u64::MAX))?;
        let fraction = (micros % 1000) as u16;
        self.line.extend_from_slice(&[
            b'.',
            b'0' + (fraction / 100) as u8,
            b'0' + (fraction / 10 % 10) as u8,
            b'0' + (fraction % 10) as u8,
        ]);
        Ok(())
    }

    /// `2026-11-29T10:27:46.123` and `Z`: RFC 3339 in UTC to the millisecond. The text up to
    /// the second is humantime's, made once per second.
    fn timestamp(&mut self, at: SystemTime) {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            self.second = Some(second);
            self.second_text.clear();
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            // `2026-11-29T10:27:46Z` without its `Z`.
            self.second_text
                .extend_from_slice(text.trim_end_matches('Z').as_bytes());
        }
        self.line.extend_from_slice(&self.second_text);
        let millis = since_epoch.subsec_millis();
        self.line.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
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
            trace_id: Some(crate::trace::TraceId::from(
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            )),
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
                "trace_id",
                "upstream_ms"
            ]
        );
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
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

    /// The line `LineWriter` makes of `record` at `at`, parsed back.
    fn written(record: AccessRecord, at: SystemTime) -> serde_json::Value {
        let mut out = Vec::new();
        LineWriter::default()
            .write(&mut out, &Entry { at, record })
            .unwrap();
        assert_eq!(out.last(), Some(&b'\n'), "one line, ended");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "only one");
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn hostile_values_are_escaped_and_read_back_exactly() {
        let hostile = [
            r#"quote " and backslash \ and slash /"#,
            "newline \n return \r tab \t nul \u{0} escape \u{1b} unit separator \u{1f}",
            "line separators \u{2028}\u{2029} and delete \u{7f}",
            "not ascii: é ü 日本 🦀, and a lone-surrogate look-alike \\ud800",
            r#"","status":200,"injected":""#,
            "}\n{\"forged\":\"line\"}",
            "",
        ];
        // Printable ASCII, with and without the two characters in it that must be escaped.
        let printable: String = (b' '..=b'~').map(char::from).collect();
        let plain: String = printable
            .chars()
            .filter(|c| !matches!(c, '"' | '\\'))
            .collect();
        let hostile = hostile
            .into_iter()
            .chain([printable.as_str(), plain.as_str()]);
        for value in hostile {
            let mut record = record(value);
            record.route = Some(Arc::from(value));
            record.principal = Some(value.to_owned());
            record.instance = Some(Arc::from(value));

            let line = written(record, SystemTime::now());

            for field in ["request_id", "route", "principal", "instance"] {
                assert_eq!(line[field], value, "{field} of {value:?}");
            }
            assert_eq!(line["status"], 404, "nothing injected: {value:?}");
            assert!(line.get("injected").is_none() && line.get("forged").is_none());
        }
    }

    #[test]
    fn times_and_durations_are_written_exactly() {
        let cases = [
            (0, 0),
            (1_700_000_000, 999),
            (1_700_000_001, 0),
            (1_700_000_001, 5),
            (4_102_444_799, 123),
        ];
        let mut writer = LineWriter::default();
        for (seconds, millis) in cases {
            let at = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis);
            let mut out = Vec::new();
            writer
                .write(
                    &mut out,
                    &Entry {
                        at,
                        record: record("r"),
                    },
                )
                .unwrap();
            let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                line["time"],
                humantime::format_rfc3339_millis(at).to_string(),
                "one writer across seconds"
            );
        }

        for (micros, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (1_234, "1.234"),
            (5_000_000, "5000.000"),
            (61_000_450, "61000.450"),
        ] {
            let mut record = record("r");
            record.duration = Duration::from_micros(micros);
            record.upstream_duration = Some(Duration::from_micros(micros));
            let mut out = Vec::new();
            LineWriter::default()
                .write(
                    &mut out,
                    &Entry {
                        at: SystemTime::now(),
                        record,
                    },
                )
                .unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(out.contains(&format!("\"duration_ms\":{text},")), "{out}");
            assert!(out.contains(&format!("\"upstream_ms\":{text},")), "{out}");
        }
    }

    #[test]
    fn lines_recorded_in_a_burst_are_all_written_in_order() {
        let out = Captured::default();
        let log = AccessLog::to_writer(out.clone(), 4096, &Metrics::new()).unwrap();

        for n in 0..2000 {
            log.record(record(&format!("req-{n}")));
        }
        let lines = out.lines(2000);

        let ids: Vec<String> = lines
            .iter()
            .map(|line| line["request_id"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (0..2000).map(|n| format!("req-{n}")).collect();
        assert_eq!(ids, expected);
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
