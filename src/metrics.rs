//! What this process counts, for Prometheus: counter, gauge and histogram families with fixed
//! label names, kept in process-wide statics so any layer records an event in one line
//! (`metrics::DIMSE_OPERATIONS.inc(&["C-STORE", "success"])`), and their text exposition
//! (format 0.0.4). Names follow Prometheus conventions: base units (seconds, bytes), `_total`
//! on counters. Site-wide figures read from the locator at scrape time (tiers, queues, job
//! runs) are `crate::service::metrics`'s; this module knows nothing of storage.
//!
//! Every series is bounded by its labels: operations, statuses, tiers, routes and codes, never
//! a UID or a peer address.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets (seconds) for requests and operations: 1 ms to 2 minutes.
pub const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];
/// Buckets (seconds) for long jobs: 1 s to 12 hours.
pub const LONG: &[f64] = &[
    1.0,
    10.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    4.0 * 3600.0,
    43200.0,
];
/// Buckets (seconds) for waits that are usually nothing: 10 µs to 10 s.
pub const WAIT: &[f64] = &[
    0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0,
];
/// Buckets for the instances one group commit publishes (at most 32).
pub const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// The three kinds of family, as the exposition's `# TYPE` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One histogram series: a count per bucket (not cumulative), the sum and the count.
#[derive(Debug, Clone, Default)]
struct Observations {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A family of series sharing a name and label names; one series per label values.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    /// Histograms only: upper bounds, ascending (`+Inf` is implied).
    bounds: &'static [f64],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
    observations: Mutex<BTreeMap<Vec<String>, Observations>>,
}

impl Family {
    const fn new(
        kind: Kind,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Family {
        Family {
            name,
            help,
            kind,
            labels,
            bounds,
            values: Mutex::new(BTreeMap::new()),
            observations: Mutex::new(BTreeMap::new()),
        }
    }

    /// A counter family (`name` ends in `_total`).
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Family {
        Family::new(Kind::Counter, name, help, labels, &[])
    }

    /// A gauge family.
    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Family {
        Family::new(Kind::Gauge, name, help, labels, &[])
    }

    /// A histogram family with these bucket bounds.
    pub const fn histogram(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Family {
        Family::new(Kind::Histogram, name, help, labels, bounds)
    }

    fn key(&self, labels: &[&str]) -> Vec<String> {
        debug_assert_eq!(labels.len(), self.labels.len(), "labels of {}", self.name);
        labels.iter().map(|l| l.to_string()).collect()
    }

    /// The series `labels` of `map`, created by `new` if missing. A family has few series,
    /// so finding one by comparison costs less than building its key (an allocation per
    /// event on the hot path of every C-STORE).
    fn series<'m, T>(
        &self,
        map: &'m mut BTreeMap<Vec<String>, T>,
        labels: &[&str],
        new: impl FnOnce() -> T,
    ) -> &'m mut T {
        let same = |key: &Vec<String>| key.iter().map(String::as_str).eq(labels.iter().copied());
        match map.keys().position(same) {
            Some(at) => map
                .values_mut()
                .nth(at)
                .expect("position of an existing key"),
            None => map.entry(self.key(labels)).or_insert_with(new),
        }
    }

    /// Adds `by` to the series `labels` (a counter's or a gauge's), creating it at 0.
    pub fn add(&self, labels: &[&str], by: f64) {
        debug_assert!(self.kind != Kind::Histogram);
        debug_assert!(
            self.kind == Kind::Gauge || by >= 0.0,
            "{} only grows",
            self.name
        );
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *self.series(&mut values, labels, || 0.0) += by;
    }

    /// Adds one.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    /// Makes the series exist (at 0 if new), so it is exposed before its first event.
    pub fn touch(&self, labels: &[&str]) {
        if self.kind == Kind::Histogram {
            let mut all = self.observations.lock().unwrap_or_else(|p| p.into_inner());
            all.entry(self.key(labels)).or_insert_with(|| Observations {
                buckets: vec![0; self.bounds.len()],
                ..Observations::default()
            });
        } else {
            self.add(labels, 0.0);
        }
    }

    /// Records one observation in a histogram series.
    pub fn observe(&self, labels: &[&str], value: f64) {
        debug_assert!(self.kind == Kind::Histogram);
        let mut all = self.observations.lock().unwrap_or_else(|p| p.into_inner());
        let series = self.series(&mut all, labels, || Observations {
            buckets: vec![0; self.bounds.len()],
            ..Observations::default()
        });
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            series.buckets[i] += 1;
        }
        series.sum += value;
        series.count += 1;
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, labels: &[&str], elapsed: Duration) {
        self.observe(labels, elapsed.as_secs_f64());
    }

    /// The value of one counter or gauge series (0 when it does not exist).
    pub fn value(&self, labels: &[&str]) -> f64 {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.get(&self.key(labels)).copied().unwrap_or(0.0)
    }

    /// Appends the family in the text exposition format.
    pub fn encode(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind);
        if self.kind != Kind::Histogram {
            let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
            for (key, value) in values.iter() {
                sample(out, self.name, &pairs(self.labels, key), *value);
            }
            return;
        }
        let all = self.observations.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = format!("{}_bucket", self.name);
        for (key, series) in all.iter() {
            let mut labels = pairs(self.labels, key);
            let mut cumulative = 0;
            for (bound, n) in self.bounds.iter().zip(&series.buckets) {
                cumulative += n;
                labels.push(("le", number(*bound)));
                sample(out, &bucket, &labels, cumulative as f64);
                labels.pop();
            }
            labels.push(("le", "+Inf".into()));
            sample(out, &bucket, &labels, series.count as f64);
            labels.pop();
            sample(out, &format!("{}_sum", self.name), &labels, series.sum);
            sample(
                out,
                &format!("{}_count", self.name),
                &labels,
                series.count as f64,
            );
        }
    }
}

fn pairs(names: &'static [&'static str], values: &[String]) -> Vec<(&'static str, String)> {
    names.iter().copied().zip(values.iter().cloned()).collect()
}

/// Appends `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
}

/// Appends one sample line.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, String)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{label}=\"{escaped}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

/// A sample value as the format spells it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Associations, by how negotiation ended.
pub static DICOM_ASSOCIATIONS: Family = Family::counter(
    "strata_dicom_associations_total",
    "DICOM associations requested, by result: accepted, rejected (negotiation failed or ARTIM \
     expired), busy (over [dicom] max_associations).",
    &["result"],
);
/// Associations open now.
pub static DICOM_ASSOCIATIONS_OPEN: Family = Family::gauge(
    "strata_dicom_associations_open",
    "DICOM associations established and not yet ended.",
    &[],
);
/// DIMSE operations served, by final status class.
pub static DIMSE_OPERATIONS: Family = Family::counter(
    "strata_dimse_operations_total",
    "DIMSE operations served, by operation and final status: success, warning, failure, cancel.",
    &["operation", "status"],
);
/// DIMSE operation latency, request to final response.
pub static DIMSE_DURATION: Family = Family::histogram(
    "strata_dimse_operation_duration_seconds",
    "Time from a DIMSE request's command to its final response being sent.",
    &["operation"],
    LATENCY,
);
/// HTTP requests served, by route and status code.
pub static HTTP_REQUESTS: Family = Family::counter(
    "strata_http_requests_total",
    "HTTP requests answered, by method, route pattern and status code.",
    &["method", "route", "code"],
);
/// HTTP request latency.
pub static HTTP_DURATION: Family = Family::histogram(
    "strata_http_request_duration_seconds",
    "Time from an HTTP request's head to its response head, by method and route pattern.",
    &["method", "route"],
    LATENCY,
);
/// Instances stored (published and recorded), by how they came.
pub static INGEST_INSTANCES: Family = Family::counter(
    "strata_ingest_instances_total",
    "Instances made durable in the online tier and the locator (duplicates ignored are not \
     counted).",
    &[],
);
/// Bytes stored.
pub static INGEST_BYTES: Family = Family::counter(
    "strata_ingest_bytes_total",
    "Bytes of the Part-10 files made durable in the online tier.",
    &[],
);
/// Instances per group commit.
pub static COMMIT_BATCH: Family = Family::histogram(
    "strata_ingest_commit_batch_instances",
    "Instances published with one folder sync and recorded in one locator commit.",
    &[],
    BATCH,
);
/// Bytes read, by tier.
pub static READ_BYTES: Family = Family::counter(
    "strata_read_bytes_total",
    "Bytes of stored instances this process read, by tier: online, archive, nearline, offline.",
    &["tier"],
);
/// Rendition cache requests, by result.
pub static RENDITION_REQUESTS: Family = Family::counter(
    "strata_rendition_cache_requests_total",
    "Rendered images and thumbnails asked of the rendition cache, by result: hit or miss.",
    &["result"],
);
/// Bytes the rendition cache holds.
pub static RENDITION_BYTES: Family = Family::gauge(
    "strata_rendition_cache_bytes",
    "Bytes of renditions the rendition cache holds.",
    &[],
);
/// CPU time the rendition cache's hits saved.
pub static RENDITION_CPU_SAVED: Family = Family::counter(
    "strata_rendition_cache_cpu_saved_seconds_total",
    "CPU seconds of decoding and drawing that rendition cache hits saved.",
    &[],
);
/// Reads that fell back to a backup copy.
pub static READ_FALLBACKS: Family = Family::counter(
    "strata_read_fallbacks_total",
    "Reads served from a backup copy because the primary was missing or damaged.",
    &[],
);
/// HDFS errors.
pub static HDFS_ERRORS: Family = Family::counter(
    "strata_hdfs_errors_total",
    "Errors returned by HDFS (the archive tier), a missing file included.",
    &[],
);
/// Job runs by this process.
pub static JOB_RUNS: Family = Family::counter(
    "strata_job_runs_total",
    "Runs of long jobs in this process (server workers), by job and outcome: ok, failed.",
    &["job", "outcome"],
);
/// Job run durations in this process.
pub static JOB_DURATION: Family = Family::histogram(
    "strata_job_run_duration_seconds",
    "Duration of the long jobs run in this process, by job.",
    &["job"],
    LONG,
);
/// Waits for the locator.
pub static LOCATOR_WAIT: Family = Family::histogram(
    "strata_locator_wait_seconds",
    "Time spent waiting before a locator write may start: for this process's one SQLite \
     writer (writer), and for a pooled connection and BEGIN (begin).",
    &["wait"],
    WAIT,
);
/// Audit entries.
pub static AUDIT_ENTRIES: Family = Family::counter(
    "strata_audit_entries_total",
    "Audit entries recorded by this process apart from stores and deletes, by event.",
    &["event"],
);
/// Audit entries not recorded.
pub static AUDIT_FAILURES: Family = Family::counter(
    "strata_audit_failures_total",
    "Audit entries that could not be written, by sink: locator, syslog.",
    &["sink"],
);

/// Every family of this process, in exposition order.
pub static FAMILIES: &[&Family] = &[
    &DICOM_ASSOCIATIONS,
    &DICOM_ASSOCIATIONS_OPEN,
    &DIMSE_OPERATIONS,
    &DIMSE_DURATION,
    &HTTP_REQUESTS,
    &HTTP_DURATION,
    &INGEST_INSTANCES,
    &INGEST_BYTES,
    &COMMIT_BATCH,
    &READ_BYTES,
    &READ_FALLBACKS,
    &RENDITION_REQUESTS,
    &RENDITION_BYTES,
    &RENDITION_CPU_SAVED,
    &HDFS_ERRORS,
    &JOB_RUNS,
    &JOB_DURATION,
    &LOCATOR_WAIT,
    &AUDIT_ENTRIES,
    &AUDIT_FAILURES,
];

/// Makes the series an admin looks for first exist from the start, at 0.
pub fn touch_known_series() {
    for result in ["accepted", "rejected", "busy"] {
        DICOM_ASSOCIATIONS.touch(&[result]);
    }
    DICOM_ASSOCIATIONS_OPEN.touch(&[]);
    INGEST_INSTANCES.touch(&[]);
    INGEST_BYTES.touch(&[]);
    READ_FALLBACKS.touch(&[]);
    HDFS_ERRORS.touch(&[]);
    for tier in ["online", "archive", "nearline"] {
        READ_BYTES.touch(&[tier]);
    }
}

/// This process's families in the text exposition format.
pub fn encode_all(out: &mut String) {
    for family in FAMILIES {
        family.encode(out);
    }
}

/// Adds one to a gauge for as long as it lives (an open association, a request in flight).
#[derive(Debug)]
pub struct Held(&'static Family);

impl Held {
    pub fn new(gauge: &'static Family) -> Held {
        gauge.add(&[], 1.0);
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.add(&[], -1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_in_the_text_format_with_cumulative_buckets() {
        let requests = Family::counter("t_requests_total", "Requests.", &["code"]);
        requests.inc(&["200"]);
        requests.add(&["404"], 2.0);
        requests.inc(&["200"]);
        let latency = Family::histogram("t_seconds", "Latency.", &["route"], &[0.1, 1.0]);
        latency.observe(&["/a\"b"], 0.05);
        latency.observe(&["/a\"b"], 0.5);
        latency.observe(&["/a\"b"], 5.0);
        let mut out = String::new();
        requests.encode(&mut out);
        latency.encode(&mut out);
        assert_eq!(
            out,
            "# HELP t_requests_total Requests.\n# TYPE t_requests_total counter\n\
             t_requests_total{code=\"200\"} 2\nt_requests_total{code=\"404\"} 2\n\
             # HELP t_seconds Latency.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{route=\"/a\\\"b\",le=\"0.1\"} 1\n\
             t_seconds_bucket{route=\"/a\\\"b\",le=\"1\"} 2\n\
             t_seconds_bucket{route=\"/a\\\"b\",le=\"+Inf\"} 3\n\
             t_seconds_sum{route=\"/a\\\"b\"} 5.55\n\
             t_seconds_count{route=\"/a\\\"b\"} 3\n"
        );
    }

    #[test]
    fn a_held_gauge_goes_back_down_when_dropped() {
        static OPEN: Family = Family::gauge("t_open", "Open.", &[]);
        let a = Held::new(&OPEN);
        let b = Held::new(&OPEN);
        assert_eq!(OPEN.value(&[]), 2.0);
        drop(a);
        drop(b);
        assert_eq!(OPEN.value(&[]), 0.0);
    }
}
