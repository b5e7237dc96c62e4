//! The worker's Prometheus metrics: every name, its help text and buckets, in one place.
//!
//! Code records through the `metrics` facade (`counter!`, `gauge!`, `histogram!`), which costs
//! nothing until [`install`] sets the Prometheus recorder (only with `--metrics-listen`).
//! Labels stay low-cardinality: activity name, error name, API, Livy or YARN route, status —
//! never a token, batch id, batch name or execution.
//!
//! Names follow Prometheus conventions with the program's name as the prefix; the slot gauges
//! mirror Temporal's `worker_task_slots_available`/`_used`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// One metric: its name, kind, labels and meaning, as the README's table lists them.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

macro_rules! metrics_table {
    ($($id:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(pub const $id: &str = concat!("spark_activity_worker_", $name);)*
        /// Every metric the worker exports.
        pub const ALL: &[Metric] = &[
            $(Metric { name: $id, kind: Kind::$kind, labels: &[$($label),*], help: $help },)*
        ];
    };
}

metrics_table! {
    BUILD_INFO = "build_info", Gauge, ["version", "revision"],
        "Always 1; the labels say which build runs.";
    TASKS_RECEIVED = "tasks_received_total", Counter, ["activity"],
        "Tasks delivered by GetActivityTask.";
    TASKS_FINISHED = "tasks_finished_total", Counter, ["activity", "outcome", "error"],
        "Tasks ended: outcome succeeded, failed (error is the error name), gone (Step Functions closed the task) or unreported (every report was refused).";
    TASK_DURATION = "task_duration_seconds", Histogram, ["activity", "outcome"],
        "From delivery (or the journal entry's creation) to the task's end.";
    DELIVERY_TO_SUBMIT = "task_delivery_to_submit_seconds", Histogram, ["activity"],
        "From GetActivityTask returning a task to its POST /batches being sent.";
    SLOTS_AVAILABLE = "worker_task_slots_available", Gauge, [],
        "Supervision slots (--max-concurrent-tasks) free for new tasks; the worker polls only while one is.";
    SLOTS_USED = "worker_task_slots_used", Gauge, [],
        "Tasks being supervised (after a restart, every journaled task, even beyond the slots).";
    POLLS_OPEN = "polls_open", Gauge, ["activity"],
        "GetActivityTask long polls open now.";
    POLLS = "polls_total", Counter, ["activity", "result"],
        "GetActivityTask polls ended: result task, empty (nothing within 60 s) or error.";
    HEARTBEATS = "heartbeats_total", Counter, ["activity", "result"],
        "SendTaskHeartbeat calls: result ok or the error code (TaskTimedOut, ThrottlingException, timeout, dispatch...).";
    SFN_REQUESTS = "sfn_requests_total", Counter, ["api", "result"],
        "Step Functions calls by API and result (ok or the error code).";
    SFN_REQUEST_DURATION = "sfn_request_duration_seconds", Histogram, ["api"],
        "Step Functions call latency (a GetActivityTask long poll lasts up to 60 s).";
    SFN_BUDGET = "sfn_budget_calls_per_second", Gauge, [],
        "The Step Functions call budget (--sfn-calls-per-second) shared by polls, heartbeats and reports.";
    SFN_BUDGET_RATE = "sfn_budget_rate_calls_per_second", Gauge, [],
        "The calls a second the budget grants now: lower for a while after throttling.";
    SFN_BUDGET_WAIT = "sfn_budget_wait_seconds", Histogram, ["priority"],
        "How long a call waited for the budget, by priority: report, heartbeat or poll.";
    SFN_THROTTLED = "sfn_throttled_total", Counter, [],
        "Step Functions calls answered with throttling (each halves the budget's rate for a while).";
    LIVY_REQUESTS = "livy_requests_total", Counter, ["route", "status"],
        "Livy requests by route and HTTP status (or connect_error, no_answer, tls_error, no_credentials).";
    LIVY_REQUEST_DURATION = "livy_request_duration_seconds", Histogram, ["route"],
        "Livy request latency.";
    YARN_REQUESTS = "yarn_requests_total", Counter, ["route", "status"],
        "ResourceManager requests by route and HTTP status (or unreachable).";
    YARN_REQUEST_DURATION = "yarn_request_duration_seconds", Histogram, ["route"],
        "ResourceManager request latency.";
    BATCHES = "batches", Gauge, ["state"],
        "Supervised batches by the Livy state last seen (unsubmitted before the POST).";
    JOURNAL_ENTRIES = "journal_entries", Gauge, [],
        "Entries in the journal of in-flight tasks.";
    JOURNAL_WRITE_FAILURES = "journal_write_failures_total", Counter, [],
        "Journal writes that failed (a full or read-only disk); polling stops until one succeeds.";
    RESUMES = "resumes_total", Counter, ["outcome"],
        "Tasks resumed from the journal after a restart, by what was found: report (a decided report to deliver), followed (Livy has the batch), adopted (found by name), yarn (only YARN has it), resubmitted, lost, bad_entry.";
    CLUSTER_ROOM = "cluster_room", Gauge, [],
        "1 while the cluster has room for another job (--livy-max-starting, --yarn-headroom-*, --yarn-queue); the worker polls only then.";
    LIVY_UP = "livy_up", Gauge, [],
        "1 while Livy answers its health probe; the worker does not poll while it is 0.";
    READY = "ready", Gauge, [],
        "1 while /readyz says ready.";
}

/// Livy states the `batches` gauge always carries (0 when none), so a state that empties drops
/// to 0 rather than keeping its last count.
pub const BATCH_STATES: &[&str] = &[
    "unsubmitted",
    "not_started",
    "starting",
    "running",
    "recovering",
    "busy",
    "idle",
    "shutting_down",
    "success",
    "dead",
    "killed",
    "error",
    "unknown",
];

/// The `state` label of a batch whose last Livy state is `state` (`None`: not yet submitted).
pub fn batch_state_label(state: Option<&str>) -> &'static str {
    match state {
        None => "unsubmitted",
        Some(s) => BATCH_STATES
            .iter()
            .find(|k| **k == s)
            .copied()
            .unwrap_or("unknown"),
    }
}

const TASK_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 86400.0,
];
const FAST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 65.0,
];

/// The Prometheus recorder with this module's buckets and help texts, not yet installed.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(TASK_DURATION.into()), TASK_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(DELIVERY_TO_SUBMIT.into()), FAST_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(SFN_BUDGET_WAIT.into()), FAST_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Suffix("_request_duration_seconds".into()),
            REQUEST_BUCKETS,
        )
}

/// Installs the Prometheus recorder for the whole process and describes every metric.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = builder()?.install_recorder()?;
    describe();
    Ok(handle)
}

/// Help texts, and the metrics that exist from the start (at zero) so dashboards and alerts
/// see them before the first event.
pub fn describe() {
    for m in ALL {
        let unit = m.name.ends_with("_seconds").then_some(Unit::Seconds);
        match (m.kind, unit) {
            (Kind::Counter, _) => describe_counter!(m.name, m.help),
            (Kind::Gauge, _) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => env!("SPARK_ACTIVITY_WORKER_GIT_REV"))
        .set(1.0);
    counter!(JOURNAL_WRITE_FAILURES).absolute(0);
    counter!(SFN_THROTTLED).absolute(0);
}

/// The activity label: the name at the end of the ARN.
pub fn activity_label(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

/// The activity label, one copy per activity shared by its tasks (each keeps it for its whole
/// life, and thousands are held at once).
pub fn shared_activity_label(arn: &str) -> Arc<str> {
    static LABELS: LazyLock<Mutex<HashMap<String, Arc<str>>>> = LazyLock::new(Mutex::default);
    let label = activity_label(arn);
    let mut labels = LABELS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = labels.get(label) {
        return shared.clone();
    }
    let shared: Arc<str> = label.into();
    labels.insert(label.to_owned(), shared.clone());
    shared
}

/// One Livy request: its route template (never the batch name), its status, its latency.
pub fn livy_request(route: &'static str, status: &str, took: Duration) {
    counter!(LIVY_REQUESTS, "route" => route, "status" => status.to_owned()).increment(1);
    histogram!(LIVY_REQUEST_DURATION, "route" => route).record(took.as_secs_f64());
}

/// One ResourceManager request.
pub fn yarn_request(route: &'static str, status: &str, took: Duration) {
    counter!(YARN_REQUESTS, "route" => route, "status" => status.to_owned()).increment(1);
    histogram!(YARN_REQUEST_DURATION, "route" => route).record(took.as_secs_f64());
}

/// One Step Functions call.
pub fn sfn_request(api: &'static str, result: &str, took: Duration) {
    counter!(SFN_REQUESTS, "api" => api, "result" => result.to_owned()).increment(1);
    histogram!(SFN_REQUEST_DURATION, "api" => api).record(took.as_secs_f64());
}

/// A task resumed from the journal, by what was found (see [`RESUMES`]).
pub fn resumed(outcome: &'static str) {
    counter!(RESUMES, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("spark_activity_worker_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            if m.kind == Kind::Histogram {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
            for label in m.labels {
                assert!(
                    !["token", "batch_id", "batch_name", "execution"].contains(label),
                    "{} has a high-cardinality label {label}",
                    m.name
                );
            }
        }
    }

    #[test]
    fn the_readme_table_lists_every_metric_and_no_other() {
        let readme = include_str!("../README.md");
        for m in ALL {
            let row = format!("| `{}` | {} |", m.name, m.kind.as_str());
            assert!(readme.contains(&row), "README has no row {row}");
        }
        for word in readme.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(rest) = word.strip_prefix("spark_activity_worker_") {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .filter(|b| ALL.iter().any(|m| m.name == *b))
                    .unwrap_or(word);
                assert!(
                    ALL.iter().any(|m| m.name == base),
                    "README names {word} ({rest}), which the worker does not export"
                );
            }
        }
    }

    #[test]
    fn the_recorder_renders_help_buckets_and_labels() {
        let recorder = builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            livy_request("GET /batches/{name}", "200", Duration::from_millis(20));
            histogram!(DELIVERY_TO_SUBMIT, "activity" => "etl").record(0.004);
        });
        let text = handle.render();
        assert!(
            text.contains("# HELP spark_activity_worker_livy_requests_total Livy requests"),
            "{text}"
        );
        assert!(
            text.contains(
                "spark_activity_worker_livy_requests_total{route=\"GET /batches/{name}\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "spark_activity_worker_livy_request_duration_seconds_bucket{route=\"GET /batches/{name}\",le=\"0.025\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "spark_activity_worker_task_delivery_to_submit_seconds_bucket{activity=\"etl\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("spark_activity_worker_journal_write_failures_total 0"),
            "{text}"
        );
        assert!(
            text.contains("spark_activity_worker_build_info{version=\""),
            "{text}"
        );
    }
}
