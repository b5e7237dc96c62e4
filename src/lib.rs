//! spark-activity-worker: runs AWS Step Functions activity tasks as Apache Spark batches through
//! Apache Livy, on the EMR primary node.
//!
//! # Layout
//! - [`config`]: the command line (every flag also an environment variable), validated at start.
//! - [`telemetry`]: text or JSON logs on stderr.
//! - [`shutdown`]: SIGTERM/SIGINT — first stops, second aborts — and systemd readiness.
//! - [`watchdog`]: systemd watchdog pings, only while the poll loops make progress.
//! - [`daemon`]: composition root and the shutdown sequence.
//! - [`health`]: Livy health probe; no polling while Livy is down.
//! - [`poller`]: capacity permit → `GetActivityTask` → supervisor.
//! - [`supervisor`]: one task: validate, submit, sync, heartbeat, report exactly once.
//! - [`input`]: task input shapes and validation.
//! - [`journal`]: crash-safe record of in-flight tasks, resumed at start.
//! - [`livy`]: Livy batch API client.
//! - [`sfn`]: Step Functions client (the only user of `aws_sdk_sfn`).
//! - [`failure`]: the public error names and the `cause` size rules.
//! - [`backoff`]: retry delays.
//! - [`failpoint`]: test hooks, compiled only with the `failpoints` feature.

pub mod backoff;
pub mod config;
pub mod daemon;
pub mod failpoint;
pub mod failure;
pub mod health;
pub mod input;
pub mod journal;
pub mod livy;
pub mod poller;
pub mod sfn;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;
pub mod watchdog;

/// The version `--version` prints: the crate version and the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SPARK_ACTIVITY_WORKER_GIT_REV"),
    ")"
);
