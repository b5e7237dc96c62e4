//! spark-activity-worker: runs AWS Step Functions activity tasks as Apache Spark batches through
//! Apache Livy, on the EMR primary node.
//!
//! # Layout
//! From the top down; a module uses only modules further down the list (none uses one above it,
//! and clients never call up into roles).
//! - [`daemon`]: composition root and the shutdown sequence (`main.rs` above it).
//! - [`resource`]: the `Custom::SparkJob` CloudFormation resource (`spark-job-resource`, a
//!   Lambda function): Create, Update and Delete of a batch, each answered once.
//! - [`submit`]: one task input run to its end without Step Functions (`submit`).
//! - [`validate`]: task inputs checked, and the Livy request each would send printed.
//! - [`status`]: the tasks in flight, read from the journal (`status`).
//! - [`poller`]: capacity permit → `GetActivityTask` → a task.
//! - [`task`]: where a task comes from (a delivery, the journal, a refusal) → its supervisor.
//! - [`supervisor`]: one task: a heartbeat at once, heartbeats race its batch, then the report,
//!   exactly once, with fallbacks when Step Functions refuses it.
//! - [`outcome`]: what a task's end reports: the success output, failure wording.
//! - [`request`]: task input → the Livy request: endpoint rules, name and tag, policy.
//! - [`batch`]: the Livy batch protocol: submit or adopt, follow, cross-check with YARN, kill.
//! - [`monitor`]: the `--metrics-listen` endpoint: `/metrics`, `/healthz`, `/readyz`.
//! - [`health`]: Livy and journal health; no polling while either is down.
//! - [`capacity`]: whether the cluster has room for another job; no polling while it has not.
//! - [`telemetry`]: text or JSON logs on stderr.
//! - [`connect`]: Livy and ResourceManager clients from the flags (credentials checked at start),
//!   and those of a task's Livy URL.
//! - [`config`]: the command line (every flag also an environment variable), validated at start.
//! - [`policy`]: the operator's rules over task input (proxy users, files, conf, queues, sizes).
//! - [`input`]: task input shapes and validation.
//! - [`journal`]: crash-safe record of in-flight tasks, resumed at start; the state-dir lock.
//! - [`yarn`]: YARN ResourceManager client (the truth when Livy forgets) and its address.
//! - [`scheduler`]: one YARN queue's room, from the capacity scheduler's reply.
//! - [`budget`]: the Step Functions call budget (reports, then heartbeats, then polls) in front
//!   of the client; throttling slows it down.
//! - [`sfn`]: Step Functions client (the only user of `aws_sdk_sfn`).
//! - [`signed`]: an AWS JSON call signed with SigV4 and sent without the SDK (heartbeats).
//! - [`livy`]: Livy batch API client.
//! - [`auth`]: credentials on Livy and ResourceManager requests: Basic to the configured origin
//!   only, or Kerberos SPNEGO with Hadoop's `hadoop.auth` cookie.
//! - [`kerberos`]: the worker's Kerberos identity from its keytab; tickets renewed from it.
//! - [`gssapi`]: the system's `libgssapi_krb5.so.2`, loaded at run time (the only `unsafe`).
//! - [`cfn`]: CloudFormation's custom-resource request, and the answer PUT to its `ResponseURL`.
//! - [`metrics`]: every metric's name, labels, help and buckets; the Prometheus recorder.
//! - [`http`]: what the Livy and YARN clients share: no redirects, capped bodies, quotable text,
//!   the trusted certificate authorities.
//! - [`failure`]: the public error names, which are safe to retry, and the `cause` size rules.
//! - [`retry`]: the one retry policy.
//! - [`watchdog`]: systemd watchdog pings, only while the poll loops make progress.
//! - [`shutdown`]: SIGTERM/SIGINT — first stops, second aborts — and systemd readiness.
//! - [`failpoint`]: test hooks, compiled only with the `failpoints` feature.
//!
//! The three clients ([`sfn::Tasks`], [`livy::Livy`], [`yarn::ResourceManager`]) are traits so
//! that `tests/component` can put fakes at those seams.

pub mod auth;
pub mod batch;
pub mod budget;
pub mod capacity;
pub mod cfn;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod failpoint;
pub mod failure;
pub mod gssapi;
pub mod health;
pub mod http;
pub mod input;
pub mod journal;
pub mod kerberos;
pub mod livy;
pub mod metrics;
pub mod monitor;
pub mod outcome;
pub mod policy;
pub mod poller;
pub mod request;
pub mod resource;
pub mod retry;
pub mod scheduler;
pub mod sfn;
pub mod shutdown;
pub mod signed;
pub mod status;
pub mod submit;
pub mod supervisor;
pub mod task;
pub mod telemetry;
pub mod validate;
pub mod watchdog;
pub mod yarn;

/// The version `--version` prints: the crate version and the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SPARK_ACTIVITY_WORKER_GIT_REV"),
    ")"
);
