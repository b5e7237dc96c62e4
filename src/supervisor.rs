//! One supervisor per task: heartbeats race the batch from the start (a resumed task sends its
//! first one before touching the batch; a panic in the batch's code is caught), then the report
//! is delivered exactly once while heartbeats go on.
//! What the batch does is [`crate::batch`]'s business; what the report says is
//! [`crate::outcome`]'s; where a task comes from is [`crate::task`]'s.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ::metrics::{counter, histogram};
use futures::FutureExt;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::batch::{self, Batch};
use crate::failpoint;
use crate::failure::{ErrorName, Failure};
use crate::journal::{Journal, Record, ReportAttempt};
use crate::livy::Livy;
use crate::metrics;
use crate::outcome::{self, About, Outcome, StopReason};
use crate::request;
use crate::retry::Policy;
use crate::sfn::{SfnError, TaskToken, Tasks};
use crate::yarn::ResourceManager;

/// Why a report was not sent: a heartbeat found the task closed before this attempt.
const NOT_SENT_TO_A_CLOSED_TASK: &str = "not sent: a heartbeat found the task closed";

/// How long after a "gone" answer to its first heartbeat a task delivered a moment ago is asked
/// again; see `Supervisor::heartbeats`.
pub const CONFIRM_GONE: Duration = Duration::from_secs(1);

/// Settings every supervisor shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    /// What task input may ask for, and where it may send it.
    pub request: request::Rules,
    /// Shared by every task's batch.
    pub timing: Arc<batch::Timing>,
}

/// What supervisors need: the clients, settings, the journal, and the shutdown switches.
#[derive(Debug)]
pub struct Context {
    pub sfn: Arc<dyn Tasks>,
    /// The Livy of `--livy-url`.
    pub livy: Arc<dyn Livy>,
    /// The ResourceManager of `--yarn-url` (the cluster of `--livy-url`).
    pub yarn: Arc<dyn ResourceManager>,
    pub settings: Settings,
    pub in_flight: InFlight,
    pub journal: Journal,
    /// Stop supervising and leave every batch to the next start (the journal keeps the tasks).
    pub detach: CancellationToken,
    /// Decommission: kill every batch and report `Worker.ShuttingDown`.
    pub kill: CancellationToken,
}

/// The tasks being supervised, for the shutdown log ("leaving batch 7 running").
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashSet<ByKey>>);

/// A task's record in [`InFlight`], found by its key (which it holds: no copy of it is kept).
#[derive(Debug)]
struct ByKey(Arc<Record>);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for ByKey {}

impl Hash for ByKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key().hash(state);
    }
}

impl Borrow<str> for ByKey {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

/// One supervised task as the shutdown log shows it.
#[derive(Debug, Clone)]
pub struct Running {
    pub activity: Arc<str>,
    pub batch_name: String,
    pub batch_id: Option<i64>,
    pub livy_url: String,
    /// The Livy state last seen; `None` before the batch was submitted.
    pub last_state: Option<String>,
}

impl InFlight {
    fn insert(&self, record: Arc<Record>) {
        if let Ok(mut set) = self.0.lock() {
            set.replace(ByKey(record));
        }
    }

    fn remove(&self, key: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    /// The tasks' records, taken out of the lock (each is read under its own).
    fn records(&self) -> Vec<Arc<Record>> {
        self.0
            .lock()
            .map(|set| set.iter().map(|r| r.0.clone()).collect())
            .unwrap_or_default()
    }

    /// How many tasks are supervised.
    pub fn count(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }

    /// How many tasks have their batch in each state (as [`metrics::batch_state_label`] names
    /// it), copying nothing of them: a scrape reads it.
    pub fn count_by_state(&self) -> HashMap<&'static str, usize> {
        let mut by_state = HashMap::new();
        for r in &self.records() {
            let state = r.read(|e| metrics::batch_state_label(e.last_state.as_deref()));
            *by_state.entry(state).or_default() += 1;
        }
        by_state
    }

    /// The tasks, keyed by the token's short hash.
    pub fn snapshot(&self) -> Vec<(String, Running)> {
        self.records()
            .iter()
            .map(|r| {
                let running = r.read(|e| Running {
                    activity: e.activity_arn.clone(),
                    batch_name: e.batch_name.to_string(),
                    batch_id: e.batch_id,
                    livy_url: e.livy_url.clone(),
                    last_state: e.last_state.clone(),
                });
                (r.key().to_owned(), running)
            })
            .collect()
    }
}

/// Sends a task's report: retried through transient errors, and, when Step Functions refuses it
/// for good, replaced by `Worker.ReportRefused`, then by a failure without `error` and `cause`
/// (which needs no KMS key), never retried forever.
#[derive(Debug)]
pub struct Reporter {
    pub sfn: Arc<dyn Tasks>,
    pub token: TaskToken,
    /// The activity's name (its metrics label).
    pub activity: Arc<str>,
    /// When the task was delivered (or, resumed, first journaled): its duration starts there.
    pub since: SystemTime,
    /// The task's journal record, where failed attempts are noted (for `status`); `None` for a
    /// task refused before it was journaled.
    pub record: Option<Arc<Record>>,
}

/// One report as sent.
#[derive(Debug, Clone)]
enum Attempt {
    Success(String),
    Failure(Failure),
    /// `SendTaskFailure` with neither `error` nor `cause`.
    Bare,
}

impl Reporter {
    /// Counts the task's end: `succeeded`, `failed` (with its error name), `gone` or
    /// `unreported`, and how long the task took.
    pub fn ended(&self, outcome: &'static str, error: &str) {
        let activity = self.activity.to_string();
        counter!(metrics::TASKS_FINISHED, "activity" => activity.clone(), "outcome" => outcome, "error" => error.to_owned())
            .increment(1);
        let took = self.since.elapsed().unwrap_or_default();
        histogram!(metrics::TASK_DURATION, "activity" => activity, "outcome" => outcome)
            .record(took.as_secs_f64());
    }

    /// Delivers `outcome` (a success or a failure) until Step Functions accepts it, says the task
    /// is gone, or refuses even the barest failure.
    pub async fn deliver(&self, outcome: &Outcome) {
        self.deliver_until(outcome, &CancellationToken::new()).await;
    }

    /// [`Reporter::deliver`], until `closed` says a heartbeat found the task closed. The attempt
    /// then in flight is still awaited, since its own report may be what closed the task: its
    /// answer decides whether the task counts as reported. No attempt is made after that.
    pub async fn deliver_until(&self, outcome: &Outcome, closed: &CancellationToken) {
        let mut attempt = match outcome {
            Outcome::Success(output) => Attempt::Success(output.clone()),
            Outcome::Failure(f) => Attempt::Failure(f.clone()),
            Outcome::Gone => return self.ended("gone", ""),
            Outcome::Detached => return,
        };
        loop {
            let sent = Policy::backoff(Duration::from_millis(500), Duration::from_secs(30))
                .run_until(
                    closed,
                    || async {
                        if closed.is_cancelled() {
                            return Err(SfnError::Other(NOT_SENT_TO_A_CLOSED_TASK.into()));
                        }
                        self.send(&attempt).await
                    },
                    |e| {
                        !closed.is_cancelled()
                            && matches!(
                                e,
                                SfnError::Throttled(_)
                                    | SfnError::Other(_)
                                    | SfnError::Activity { .. }
                            )
                    },
                    |e, d| warn!(error = %e, retry_in = ?d, "report failed; retrying"),
                )
                .await;
            match sent {
                Ok(()) => {
                    match &attempt {
                        Attempt::Success(_) => {
                            info!("reported success");
                            self.ended("succeeded", "");
                        }
                        Attempt::Failure(f) => {
                            info!(error = %f.error, "reported failure");
                            self.ended("failed", f.error.as_str());
                        }
                        Attempt::Bare => {
                            info!("reported a failure without error and cause");
                            self.ended("failed", "");
                        }
                    }
                    return;
                }
                Err(SfnError::TaskGone(kind)) => {
                    warn!(reason = %kind, "task closed before its outcome could be reported");
                    self.ended("gone", "");
                    return;
                }
                Err(e) if closed.is_cancelled() => {
                    warn!(error = %e, "task closed before its outcome could be reported");
                    self.ended("gone", "");
                    return;
                }
                Err(SfnError::Refused { code, message, kms }) => {
                    error!(%code, %message, "step functions refused this task's report for good");
                    attempt = match attempt {
                        Attempt::Bare => {
                            error!(
                                "giving up on this task's report: even a bare failure was refused; the execution will time out"
                            );
                            self.ended("unreported", "");
                            return;
                        }
                        // An encrypted execution whose key the worker may not use: only a report
                        // without error and cause can get through.
                        _ if kms => Attempt::Bare,
                        Attempt::Failure(f) if f.error == ErrorName::ReportRefused => Attempt::Bare,
                        Attempt::Success(output) => Attempt::Failure(refused(
                            &code,
                            &message,
                            &format!("success with output {output}"),
                        )),
                        Attempt::Failure(f) => Attempt::Failure(refused(
                            &code,
                            &message,
                            &format!("{}: {}", f.error, f.cause),
                        )),
                    };
                }
                Err(e) => {
                    // Unreachable: `when` retries every other kind.
                    error!(error = %e, "report failed");
                    self.ended("unreported", "");
                    return;
                }
            }
        }
    }

    async fn send(&self, attempt: &Attempt) -> Result<(), SfnError> {
        let sent = match attempt {
            Attempt::Success(output) => self.sfn.succeed(&self.token, output).await,
            Attempt::Failure(f) => self.sfn.fail(&self.token, Some(f)).await,
            Attempt::Bare => self.sfn.fail(&self.token, None).await,
        };
        if let (Err(e), Some(record)) = (&sent, &self.record) {
            let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            let error = e.to_string();
            // A failed write is logged by the journal; the report goes on regardless.
            let _ = record
                .update(|entry| {
                    let attempts = entry.report_attempt.as_ref().map_or(0, |a| a.attempts) + 1;
                    entry.report_attempt = Some(ReportAttempt {
                        at,
                        error,
                        attempts,
                    });
                })
                .await;
        }
        sent
    }
}

fn refused(code: &str, message: &str, was: &str) -> Failure {
    let was: String = was.chars().take(4000).collect();
    Failure::new(
        ErrorName::ReportRefused,
        format!(
            "step functions refused this task's report ({code}: {message}); the report was {was}"
        ),
    )
}

/// One task, from its first heartbeat to its report.
#[derive(Debug)]
pub struct Supervisor {
    pub ctx: Arc<Context>,
    pub reporter: Reporter,
    pub record: Arc<Record>,
    pub batch: Batch,
    /// Came from the journal.
    pub resumed: bool,
    /// A report decided before a restart, delivered without touching the batch.
    pub pending: Option<Outcome>,
}

impl Supervisor {
    /// Supervises the task to its single report. Never panics. Boxed, so that the task's future
    /// holds it once (an `async fn` keeps its arguments apart from its locals).
    pub async fn run(mut self: Box<Self>) {
        self.ctx.in_flight.insert(self.record.clone());
        let pending = self.pending.take();
        let interval = self.ctx.settings.heartbeat_interval;
        // After the first heartbeat, tasks that came together (a burst of deliveries, or every
        // resumed task after a restart) take their own phase within the second half of the
        // interval, so their heartbeats never bunch.
        let next = interval.mul_f64(rand::rng().random_range(0.5..=1.0));
        // A task just delivered heartbeats alongside its POST, not before it: its token was
        // handed out a moment ago, and a burst of deliveries would otherwise wait at the call
        // budget before reaching Livy. A "gone" answer kills the batch like any later one.
        let fresh = !self.resumed && pending.is_none();
        let mut heartbeats = pin!(self.heartbeats(fresh, next));
        // A task rests in `race` for nearly all its life; the steps before and after it are
        // boxed, so that they do not add to the size of every resting task.
        let outcome = match pending {
            Some(report) => report,
            None if fresh => self.race(heartbeats.as_mut()).await,
            None => match Box::pin(self.first_heartbeat()).await {
                Ok(()) => self.race(heartbeats.as_mut()).await,
                Err(outcome) => outcome,
            },
        };
        Box::pin(self.finish(outcome, heartbeats)).await;
        self.ctx.in_flight.remove(self.record.key());
    }

    /// A resumed task's heartbeat at once, before anything reaches Livy: a task whose token
    /// expired while the worker was down must not be submitted. `Err` is the outcome when the
    /// task cannot start.
    async fn first_heartbeat(&self) -> Result<(), Outcome> {
        let policy = Policy::backoff(
            Duration::from_millis(200),
            self.ctx.settings.heartbeat_interval,
        );
        let first = policy.run(
            || self.heartbeat(),
            |e| !matches!(e, SfnError::TaskGone(_)),
            |e, d| warn!(error = %e, retry_in = ?d, "first heartbeat failed; retrying"),
        );
        tokio::select! {
            biased;
            () = self.ctx.detach.cancelled() => Err(Outcome::Detached),
            () = self.ctx.kill.cancelled() => {
                let kill = self.batch.kill().await;
                Err(outcome::killed_or_unknown(ErrorName::ShuttingDown, "the worker was decommissioned (--shutdown-mode kill)", &kill))
            }
            sent = first => match sent {
                Ok(()) => {
                    debug!("heartbeat sent");
                    Ok(())
                }
                Err(e) => {
                    info!(reason = %e, "step functions closed the task before it started; nothing is submitted");
                    // An earlier run of this worker may have submitted it.
                    self.batch.kill().await;
                    Err(Outcome::Gone)
                }
            }
        }
    }

    /// One `SendTaskHeartbeat`, counted by result.
    async fn heartbeat(&self) -> Result<(), SfnError> {
        let sent = self.ctx.sfn.heartbeat(&self.reporter.token).await;
        let result = match &sent {
            Ok(()) => "ok",
            Err(e) => e.label(),
        };
        counter!(metrics::HEARTBEATS, "activity" => self.reporter.activity.clone(), "result" => result.to_owned())
            .increment(1);
        sent
    }

    /// Sends a heartbeat (at once, then) after `phase`, then every interval; returns only when
    /// Step Functions says the task is gone. Throttling and network trouble are retried, never
    /// taken as "gone". A task delivered a moment ago that its first heartbeat calls gone is
    /// asked again [`CONFIRM_GONE`] later before it is believed: LocalStack answers
    /// `InvalidToken` for a token it handed out milliseconds before, until its execution has
    /// set the task up.
    async fn heartbeats(&self, at_once: bool, phase: Duration) -> String {
        let interval = self.ctx.settings.heartbeat_interval;
        let (mut wait, mut next) = if at_once {
            (Duration::ZERO, phase)
        } else {
            (phase, interval)
        };
        let mut just_delivered = at_once;
        loop {
            // Where every task rests: the sending, with its retries, is boxed.
            tokio::time::sleep(wait).await;
            wait = next;
            next = interval;
            let mut sent = Box::pin(self.heartbeat_within(interval)).await;
            if just_delivered && let Err(SfnError::TaskGone(kind)) = &sent {
                info!(reason = %kind, "step functions called a task it handed out a moment ago gone; asking again");
                sent = Box::pin(async {
                    tokio::time::sleep(CONFIRM_GONE).await;
                    self.heartbeat_within(interval).await
                })
                .await;
            }
            just_delivered = false;
            match sent {
                Ok(()) => debug!("heartbeat sent"),
                Err(SfnError::TaskGone(kind)) => return kind,
                Err(e) => warn!(error = %e, "heartbeat failed; trying again at the next interval"),
            }
        }
    }

    /// One heartbeat, retried through throttling and network trouble within `interval`.
    async fn heartbeat_within(&self, interval: Duration) -> Result<(), SfnError> {
        Policy::backoff(Duration::from_millis(500), interval)
            .within(interval)
            .run(
                || self.heartbeat(),
                |e| !matches!(e, SfnError::TaskGone(_)),
                |e, d| warn!(error = %e, retry_in = ?d, "heartbeat failed"),
            )
            .await
    }

    /// Heartbeats against the batch. When Step Functions closes the task or the worker is
    /// decommissioned, the batch is told to stop (it kills what runs) and awaited: never dropped
    /// mid-request. A panic in the batch's code is caught; its application is then killed.
    async fn race(
        &self,
        mut heartbeats: std::pin::Pin<&mut impl Future<Output = String>>,
    ) -> Outcome {
        // A decommission stops every batch through its own token: one wait fewer in each of
        // thousands of resting tasks.
        let stop = self.ctx.kill.child_token();
        let mut drive = pin!(AssertUnwindSafe(self.batch.drive(&stop)).catch_unwind());
        let mut reason: Option<StopReason> = None;
        // The end is read in a box of its own, built in this block, so that the resting task
        // keeps no room for it.
        let concluded = {
            let ended = loop {
                tokio::select! {
                    biased;
                    () = self.ctx.detach.cancelled() => return Outcome::Detached,
                    gone = heartbeats.as_mut(), if reason.is_none() => {
                        info!(reason = %gone, "step functions closed the task; killing its batch");
                        reason = Some(StopReason::Gone(gone));
                        stop.cancel();
                    }
                    ended = drive.as_mut() => break ended,
                }
            };
            if reason.is_none() && self.ctx.kill.is_cancelled() {
                reason = Some(StopReason::Decommissioned);
            }
            Box::pin(self.conclude(ended, reason))
        };
        concluded.await
    }

    /// What the batch's end (or its supervisor's panic) means for the task.
    async fn conclude(
        &self,
        ended: std::thread::Result<batch::Ended>,
        reason: Option<StopReason>,
    ) -> Outcome {
        let about = About {
            livy: self.batch.livy().base(),
            batch_name: self.batch.name(),
            name: self.record.read(|e| e.name.clone()),
            submitted_at: self.record.read(|e| {
                e.submitted_at
                    .as_deref()
                    .and_then(|s| humantime::parse_rfc3339(s).ok())
            }),
        };
        let outcome = match ended {
            Ok(ended) => outcome::of(ended, &about, reason.as_ref()),
            Err(panic) => {
                let msg = panic_message(panic.as_ref());
                error!(panic = %msg, "supervisor panicked");
                let kill = self.batch.kill().await;
                outcome::killed_or_unknown(
                    ErrorName::Panicked,
                    &format!("spark-activity-worker bug: the task's supervisor panicked: {msg}"),
                    &kill,
                )
            }
        };
        if matches!(reason, Some(StopReason::Gone(_))) {
            return Outcome::Gone;
        }
        outcome
    }

    /// Journals the decision, then delivers it while heartbeats go on.
    async fn finish(
        &self,
        outcome: Outcome,
        mut heartbeats: std::pin::Pin<&mut impl Future<Output = String>>,
    ) {
        let report = match outcome.report() {
            Some(report) => report,
            None if matches!(outcome, Outcome::Detached) => {
                info!("detached: the batch runs on; the next start resumes this task");
                return;
            }
            None => {
                self.reporter.ended("gone", "");
                self.record.forget().await;
                return;
            }
        };
        // Journal the decision first: a report that fails now is retried after a restart. A
        // failed write is logged by the journal; the report is still attempted.
        if self.record.read(|e| e.report.is_none()) {
            let _ = self.record.update(|e| e.report = Some(report)).await;
        }
        failpoint::hit("crash-before-report");
        let closed = CancellationToken::new();
        let mut delivery = pin!(self.reporter.deliver_until(&outcome, &closed));
        loop {
            tokio::select! {
                biased;
                () = self.ctx.detach.cancelled() => {
                    info!("detached before the report was delivered; the next start delivers it");
                    return;
                }
                () = delivery.as_mut() => break,
                gone = heartbeats.as_mut(), if !closed.is_cancelled() => {
                    // Never dropped mid-call: the report in flight may be what closed the task.
                    info!(reason = %gone, "a heartbeat found the task closed while its report was being sent");
                    closed.cancel();
                }
            }
        }
        self.record.forget().await;
    }
}

pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let a: Box<dyn std::any::Any + Send> = Box::new("static");
        let b: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(a.as_ref()), "static");
        assert_eq!(panic_message(b.as_ref()), "owned");
    }
}
