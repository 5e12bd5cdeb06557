//! Watching a service under test: its `/metrics` parsed by a real exposition parser (as
//! Prometheus would read it), and its access-log lines read back from a file.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::observe::{AccessLog, AccessLogTarget, Metrics};

/// A registry and a file access log for one service under test; the file's folder is removed
/// on drop.
pub struct Watch {
    pub metrics: Metrics,
    pub access_log: AccessLog,
    log_path: PathBuf,
    _folder: tempfile::TempDir,
}

impl Watch {
    pub fn new() -> Self {
        let folder = tempfile::tempdir().unwrap();
        let log_path = folder.path().join("access.log");
        let metrics = Metrics::new();
        let access_log =
            AccessLog::open(&AccessLogTarget::File(log_path.clone()), &metrics).unwrap();
        Self {
            metrics,
            access_log,
            log_path,
            _folder: folder,
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The access log's lines, once there are at least `count`: the writer is a thread of its
    /// own and a line is written when the answer's body has ended, which can be a moment after
    /// the client has read it. Gives up after the tests' patience and returns what there is.
    pub fn log_lines(&self, count: usize) -> Vec<Value> {
        super::wait::read_until_blocking(
            || {
                self.log_text()
                    .lines()
                    .map(|line| {
                        serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
                    })
                    .collect::<Vec<Value>>()
            },
            |lines| lines.len() >= count,
        )
    }

    /// The log file as written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Default for Watch {
    fn default() -> Self {
        Self::new()
    }
}

/// Every field of an access-log line, as the writer puts them.
pub const ACCESS_LOG_FIELDS: [&str; 13] = [
    "time",
    "request_id",
    "server",
    "route",
    "method",
    "status",
    "reason",
    "principal",
    "instance",
    "duration_ms",
    "upstream_ms",
    "bytes_in",
    "bytes_out",
];

/// Panics unless `line` has every field of an access-log line (`null` counts: it is there).
pub fn assert_every_field(line: &Value) {
    for field in ACCESS_LOG_FIELDS {
        assert!(line.get(field).is_some(), "no {field}: {line}");
    }
}

/// One series of `gatehouse_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCount {
    pub server: String,
    pub route: String,
    pub method: String,
    pub status_class: String,
    pub reason: String,
    pub count: u64,
}

/// Parses `/metrics` output with an OpenMetrics parser; panics if it is not valid exposition.
pub fn parse(exposition: &str) -> Exposition {
    openmetrics_parser::openmetrics::parse_openmetrics(exposition)
        .unwrap_or_else(|error| panic!("not valid exposition ({error:?}):\n{exposition}"))
}

pub type Exposition = openmetrics_parser::MetricsExposition<
    openmetrics_parser::OpenMetricsType,
    openmetrics_parser::OpenMetricsValue,
>;

/// The `gatehouse_requests_total` series of an exposition.
pub fn request_counts(exposition: &str) -> Vec<RequestCount> {
    let parsed = parse(exposition);
    let Some(family) = parsed.families.get("gatehouse_requests") else {
        return Vec::new();
    };
    family
        .iter_samples()
        .map(|sample| {
            let labels = sample.get_labelset().expect("a sample's labels");
            let label = |name: &str| labels.get_label_value(name).unwrap_or_default().to_owned();
            let count = match &sample.value {
                openmetrics_parser::OpenMetricsValue::Counter(counter) => {
                    counter.value.as_f64() as u64
                }
                other => panic!("gatehouse_requests is a counter: {other:?}"),
            };
            RequestCount {
                server: label("server"),
                route: label("route"),
                method: label("method"),
                status_class: label("status_class"),
                reason: label("reason"),
                count,
            }
        })
        .collect()
}

/// How many durations `gatehouse_request_duration_seconds` observed for `route` of `server`.
pub fn duration_count(exposition: &str, server: &str, route: &str) -> u64 {
    let parsed = parse(exposition);
    let Some(family) = parsed.families.get("gatehouse_request_duration_seconds") else {
        return 0;
    };
    family
        .iter_samples()
        .filter(|sample| {
            let labels = sample.get_labelset().expect("a sample's labels");
            labels.get_label_value("server") == Some(server)
                && labels.get_label_value("route") == Some(route)
        })
        .map(|sample| match &sample.value {
            openmetrics_parser::OpenMetricsValue::Histogram(histogram) => {
                histogram.count.unwrap_or_default()
            }
            other => panic!("a histogram: {other:?}"),
        })
        .sum()
}

/// The value of `family`'s series whose labels include `labels` (a counter's count, a gauge's
/// value; summed when several match), or `None` when the exposition has no such series.
pub fn value(exposition: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let parsed = parse(exposition);
    let family = parsed.families.get(family)?;
    family
        .iter_samples()
        .filter(|sample| {
            let set = sample.get_labelset().expect("a sample's labels");
            labels
                .iter()
                .all(|(name, value)| set.get_label_value(name) == Some(*value))
        })
        .map(|sample| match &sample.value {
            openmetrics_parser::OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
            openmetrics_parser::OpenMetricsValue::Gauge(gauge) => gauge.as_f64(),
            other => panic!("{other:?} is neither a counter nor a gauge"),
        })
        .fold(None, |total, value| Some(total.unwrap_or(0.0) + value))
}
