//! One supervisor per delivered task: validate, journal, submit the Livy batch, sync its state
//! and send heartbeats until it ends, then report exactly once — whatever happens, a panic
//! included. A task resumed from the journal after a restart takes the same path.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use serde_json::json;
use tokio::time::{MissedTickBehavior, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use url::Url;

use crate::backoff;
use crate::failpoint;
use crate::failure::{ErrorName, Failure};
use crate::input::{self, InvalidInput};
use crate::journal::{Entry, Journal, Report};
use crate::livy::{Batch, BatchState, CreateBatch, LivyClient};
use crate::sfn::{SfnClient, SfnError, Task, TaskToken};

/// How many log lines a failure cause carries (Livy keeps about 200).
const LOG_TAIL_LINES: u32 = 200;
/// Livy forgets a finished batch 10 minutes after it ends (`livy.server.session.state-retain.sec`);
/// a name lookup older than this (less a margin) cannot prove the batch was never submitted.
const LIVY_NAME_MEMORY: Duration = Duration::from_secs(9 * 60);

/// Settings every supervisor shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sync_interval: Duration,
    pub heartbeat_interval: Duration,
    pub default_file: Option<String>,
    /// Lower-case hosts a task's `LivyHost` may name.
    pub allowed_hosts: Vec<String>,
    pub livy_retry_timeout: Duration,
}

/// What supervisors need: the clients, settings, the journal, and the shutdown switches.
#[derive(Debug)]
pub struct Context {
    pub sfn: SfnClient,
    pub livy: LivyClient,
    pub settings: Settings,
    pub in_flight: InFlight,
    pub journal: Journal,
    /// Stop supervising and leave every batch to the next start (the journal keeps the tasks).
    pub detach: CancellationToken,
    /// Decommission: delete every batch and report `Worker.ShuttingDown`.
    pub kill: CancellationToken,
}

/// The tasks being supervised, for the shutdown log ("leaving batch 7 running").
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashMap<String, Running>>);

/// One supervised task as the shutdown log shows it.
#[derive(Debug, Clone)]
pub struct Running {
    pub activity: Arc<str>,
    pub batch_name: String,
    pub batch_id: Option<i64>,
    pub livy_url: String,
}

impl InFlight {
    fn update(&self, key: &str, f: impl FnOnce(&mut Running)) {
        if let Ok(mut map) = self.0.lock() {
            if let Some(r) = map.get_mut(key) {
                f(r);
            }
        }
    }

    fn insert(&self, key: String, running: Running) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, running);
        }
    }

    fn remove(&self, key: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    /// A copy of the table, keyed by the token's short hash.
    pub fn snapshot(&self) -> Vec<(String, Running)> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// How a supervised task ended.
#[derive(Debug)]
enum Outcome {
    Success(String),
    Failure(Failure),
    /// Step Functions closed the task (timeout, stopped execution): nothing to report.
    Gone,
    /// The worker is stopping in detach mode: the journal keeps the task for the next start.
    Detached,
}

impl Outcome {
    /// What the journal keeps of an outcome that must still be reported.
    fn report(&self) -> Option<Report> {
        match self {
            Outcome::Success(output) => Some(Report::Success {
                output: output.clone(),
            }),
            Outcome::Failure(f) => Some(Report::failure(f)),
            Outcome::Gone | Outcome::Detached => None,
        }
    }
}

/// Supervises a newly delivered task to its single report. Never panics.
pub async fn supervise(ctx: Arc<Context>, activity: Arc<str>, task: Task) {
    let key = task.token.short_hash();
    let span = task_span(&activity, &key);
    async {
        info!("task received");
        let prepared =
            std::panic::catch_unwind(AssertUnwindSafe(|| prepare(&ctx, &activity, &task)));
        let job = match prepared {
            Ok(Ok(job)) => job,
            Ok(Err(InvalidInput(msg))) => {
                warn!(cause = %msg, "invalid task input");
                let failure = Failure::new(ErrorName::InvalidInput, msg);
                deliver(&ctx, &key, &task.token, &Outcome::Failure(failure)).await;
                return;
            }
            Err(panic) => {
                let msg = panic_message(panic.as_ref());
                error!(panic = %msg, "panicked reading the task input");
                let failure = Failure::new(
                    ErrorName::Panicked,
                    format!("spark-activity-worker bug: panicked reading the task input: {msg}"),
                );
                deliver(&ctx, &key, &task.token, &Outcome::Failure(failure)).await;
                return;
            }
        };
        // Journal before POST: whatever kills the worker from here on, the next start resumes it.
        job.save(&ctx).await;
        run(&ctx, job).await;
    }
    .instrument(span)
    .await;
}

/// Resumes a task from the journal after a restart: deliver its pending report, or adopt its
/// batch (by id, or by its unique name), or submit it if Livy never received it.
pub async fn resume(ctx: Arc<Context>, key: String, entry: Entry) {
    let activity: Arc<str> = entry.activity_arn.as_str().into();
    let span = task_span(&activity, &key);
    async {
        let token = TaskToken::new(entry.task_token.as_str());
        if let Some(report) = &entry.report {
            info!("resuming: delivering the journaled report");
            let outcome = match report {
                Report::Success { output } => Outcome::Success(output.clone()),
                Report::Failure { error, cause } => match Report::as_failure(error, cause) {
                    Some(f) => Outcome::Failure(f),
                    None => Outcome::Failure(Failure::new(ErrorName::Lost, format!("{error}: {cause}"))),
                },
            };
            deliver(&ctx, &key, &token, &outcome).await;
            return;
        }
        let livy = match Url::parse(&entry.livy_url) {
            Ok(url) => ctx.livy.at(url),
            Err(e) => {
                error!(error = %e, "journal entry has a bad Livy URL");
                let f = Failure::new(ErrorName::Lost, format!("journal entry has a bad Livy URL: {e}"));
                deliver(&ctx, &key, &token, &Outcome::Failure(f)).await;
                return;
            }
        };
        info!(batch_id = ?entry.batch_id, batch_name = %entry.batch_name, "resuming task from the journal");
        let job = Job::new(key.clone(), token, activity.clone(), livy, entry, true);
        run(&ctx, job).await;
    }
    .instrument(span)
    .await;
}

/// Fails a task without running it: it arrived while the worker was shutting down.
pub async fn refuse(ctx: &Context, activity: &str, task: &Task) {
    let key = task.token.short_hash();
    let failure = Failure::new(
        ErrorName::ShuttingDown,
        "the worker was shutting down when this task arrived; it never reached Livy and can be retried",
    );
    deliver(ctx, &key, &task.token, &Outcome::Failure(failure))
        .instrument(task_span(activity, &key))
        .await;
}

fn task_span(activity: &str, key: &str) -> tracing::Span {
    info_span!("task", activity = %activity_name(activity), token = %key, batch_id = tracing::field::Empty)
}

/// Input → a job ready to submit. Task input may only name allowed Livy hosts.
fn prepare(ctx: &Context, activity: &Arc<str>, task: &Task) -> Result<Job, InvalidInput> {
    let input = input::parse(&task.input)?;
    let livy = match &input.livy {
        None => ctx.livy.clone(),
        Some((host, port)) => {
            if !ctx.settings.allowed_hosts.iter().any(|h| h == host) {
                return Err(InvalidInput(format!(
                    "LivyHost {host:?} is not allowed by this worker (allowed: {}); see --allowed-livy-host",
                    ctx.settings.allowed_hosts.join(", ")
                )));
            }
            let mut url: Url = ctx.livy.base().clone();
            if url.set_host(Some(host)).is_err() || url.set_port(Some(*port)).is_err() {
                return Err(InvalidInput(format!(
                    "LivyHost/LivyPort {host}:{port} do not form a URL"
                )));
            }
            ctx.livy.at(url)
        }
    };
    let name = input.job.name.clone();
    let request = input.job.to_request(
        batch_name(name.as_deref(), &task.token),
        ctx.settings.default_file.as_deref(),
    )?;
    let entry = Entry::new(
        task.token.secret().to_owned(),
        activity.to_string(),
        livy.base().to_string(),
        name,
        request,
    );
    Ok(Job::new(
        task.token.short_hash(),
        task.token.clone(),
        activity.clone(),
        livy,
        entry,
        false,
    ))
}

/// Runs a job to its outcome (catching panics) and delivers it.
async fn run(ctx: &Context, job: Job) {
    ctx.in_flight.insert(
        job.key.clone(),
        Running {
            activity: job.activity.clone(),
            batch_name: job.request.name.clone(),
            batch_id: job.stored_id(),
            livy_url: job.livy.base().to_string(),
        },
    );
    let outcome = match AssertUnwindSafe(job.supervise(ctx)).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => job.panicked(ctx, panic_message(panic.as_ref())).await,
    };
    match outcome.report() {
        None if matches!(outcome, Outcome::Detached) => {
            info!("detached: the batch runs on; the next start resumes this task");
        }
        None => forget(ctx, &job.key).await,
        Some(report) => {
            // Journal the decision first: a report that fails now is retried after a restart.
            job.update(ctx, |e| e.report = Some(report)).await;
            failpoint::hit("crash-before-report");
            deliver(ctx, &job.key, &job.token, &outcome).await;
        }
    }
    ctx.in_flight.remove(&job.key);
}

/// One task's supervision state. `entry` mirrors its journal file.
struct Job {
    key: String,
    token: TaskToken,
    activity: Arc<str>,
    livy: LivyClient,
    request: CreateBatch,
    entry: Mutex<Entry>,
    /// Came from the journal: the batch may exist already, so look it up before any POST.
    resumed: bool,
}

impl Job {
    fn new(
        key: String,
        token: TaskToken,
        activity: Arc<str>,
        livy: LivyClient,
        entry: Entry,
        resumed: bool,
    ) -> Self {
        Job {
            key,
            token,
            activity,
            livy,
            request: entry.request.clone(),
            entry: Mutex::new(entry),
            resumed,
        }
    }

    fn stored_id(&self) -> Option<i64> {
        self.entry.lock().ok().and_then(|e| e.batch_id)
    }

    /// For a task resumed from the journal: how long ago its entry was first written.
    fn resumed_age(&self) -> Option<Duration> {
        if !self.resumed {
            return None;
        }
        let created = self.entry()?.created_at?;
        SystemTime::now()
            .duration_since(humantime::parse_rfc3339(&created).ok()?)
            .ok()
    }

    fn entry(&self) -> Option<Entry> {
        self.entry.lock().ok().map(|e| e.clone())
    }

    /// Changes the entry and writes it to the journal.
    async fn update(&self, ctx: &Context, change: impl FnOnce(&mut Entry)) {
        if let Ok(mut e) = self.entry.lock() {
            change(&mut e);
        }
        self.save(ctx).await;
    }

    async fn save(&self, ctx: &Context) {
        let Some(entry) = self.entry() else { return };
        if let Err(e) = ctx.journal.put(&self.key, &entry).await {
            // The task still runs; only its crash safety is lost. Loud, since an operator must act.
            error!(error = %e, "could not write the journal entry; this task will not survive a restart");
        }
    }

    async fn supervise(&self, ctx: &Context) -> Outcome {
        tokio::select! {
            biased;
            () = ctx.detach.cancelled() => Outcome::Detached,
            () = ctx.kill.cancelled() => {
                let deleted = self.delete_batch(ctx).await;
                Outcome::Failure(Failure::new(
                    ErrorName::ShuttingDown,
                    format!("the worker was decommissioned (--shutdown-mode kill){}", deleted.map(|id| format!("; batch {id} was deleted")).unwrap_or_default()),
                ))
            }
            gone = self.heartbeats(ctx) => {
                info!(reason = %gone, "step functions closed the task; deleting its batch");
                self.delete_batch(ctx).await;
                Outcome::Gone
            }
            outcome = self.drive(ctx) => outcome,
        }
    }

    /// Sends a heartbeat every interval; returns only when Step Functions says the task is gone.
    async fn heartbeats(&self, ctx: &Context) -> String {
        let interval = ctx.settings.heartbeat_interval;
        loop {
            sleep(interval).await;
            let mut delays = backoff::delays(Duration::from_millis(500), interval);
            loop {
                match ctx.sfn.heartbeat(&self.token).await {
                    Ok(()) => {
                        debug!("heartbeat sent");
                        break;
                    }
                    Err(SfnError::TaskGone(kind)) => return kind,
                    // Throttling and network trouble are retried, never taken as "gone".
                    Err(e) => {
                        let delay = delays.next().unwrap_or(interval);
                        warn!(error = %e, retry_in = ?delay, "heartbeat failed");
                        sleep(delay).await;
                    }
                }
            }
        }
    }

    /// Submit (or adopt), then sync until the batch ends; the terminal outcome.
    async fn drive(&self, ctx: &Context) -> Outcome {
        let livy = &self.livy;
        let name = &self.request.name;
        let (id, mut seen, sync_now) = match self.stored_id() {
            Some(id) => {
                let last = self
                    .entry()
                    .and_then(|e| e.last_state)
                    .unwrap_or_else(|| "starting".into());
                (id, Seen::with_state(&last), true)
            }
            None => {
                if let Some(age) = self.resumed_age().filter(|age| *age > LIVY_NAME_MEMORY) {
                    // A POST may have landed and its batch ended and been forgotten since:
                    // submitting again could run the job twice. Say what is known instead.
                    return Outcome::Failure(Failure::new(
                        ErrorName::Lost,
                        format!(
                            "the worker was down for {} after journaling batch {name} but before recording its id; \
                             Livy has forgotten finished batches by now, so whether it ran is unknown (not resubmitted)",
                            humantime::format_duration(Duration::from_secs(age.as_secs()))
                        ),
                    ));
                }
                let batch = match self.submit(ctx).await {
                    Ok(b) => b,
                    Err(f) => return Outcome::Failure(f),
                };
                failpoint::hit("crash-after-submit");
                let mut seen = Seen::default();
                seen.update(&batch);
                let submitted_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
                self.update(ctx, |e| {
                    e.batch_id = Some(batch.id);
                    e.submitted_at.get_or_insert(submitted_at);
                    e.last_state = Some(batch.state.clone());
                })
                .await;
                info!(batch_id = batch.id, batch_name = %name, livy = %livy.base(), "batch submitted");
                failpoint::hit("panic-after-submit");
                (batch.id, seen, false)
            }
        };
        tracing::Span::current().record("batch_id", id);
        ctx.in_flight.update(&self.key, |r| r.batch_id = Some(id));

        let mut ticker = tokio::time::interval(ctx.settings.sync_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        if !sync_now {
            ticker.tick().await; // the first tick is immediate; the POST reply was the first sync
        }
        let mut down_since: Option<Instant> = None;
        while !seen.state.is_terminal() {
            ticker.tick().await;
            match livy.batch(id).await {
                Ok(b) => {
                    down_since = None;
                    if let Some(other) = b.name.as_deref().filter(|n| n != name) {
                        return Outcome::Failure(Failure::new(
                            ErrorName::Lost,
                            format!(
                                "batch {id} ({name}) is gone from Livy: id {id} now names batch {other:?} (Livy restarted and reused ids); last known state {}",
                                seen.state.as_str()
                            ),
                        ));
                    }
                    let before = seen.state.clone();
                    seen.update(&b);
                    if seen.state != before {
                        match &seen.state {
                            BatchState::Unknown(s) => {
                                warn!(state = %s, "unknown batch state; treated as still running")
                            }
                            s => info!(state = s.as_str(), "batch state changed"),
                        }
                        let state = b.state.clone();
                        self.update(ctx, |e| e.last_state = Some(state)).await;
                    }
                }
                Err(e) if e.is_not_found() => {
                    return Outcome::Failure(Failure::new(
                        ErrorName::Lost,
                        format!(
                            "batch {id} ({name}) vanished from Livy (404) before its end was seen; last known state {}",
                            seen.state.as_str()
                        ),
                    ));
                }
                Err(e) => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= ctx.settings.livy_retry_timeout {
                        return Outcome::Failure(Failure::new(
                            ErrorName::LivyUnavailable,
                            format!(
                                "livy failed for {} while batch {id} ({name}) was {}; the application may still be running: {e}",
                                humantime::format_duration(Duration::from_secs(
                                    since.elapsed().as_secs()
                                )),
                                seen.state.as_str()
                            ),
                        ));
                    }
                    warn!(error = %e, "batch state sync failed");
                }
            }
        }
        let finished_at = SystemTime::now();
        let submitted_at = self
            .entry()
            .and_then(|e| e.submitted_at)
            .and_then(|s| humantime::parse_rfc3339(&s).ok())
            .unwrap_or(finished_at);
        let duration = finished_at.duration_since(submitted_at).unwrap_or_default();
        info!(state = seen.state.as_str(), "batch finished");
        match &seen.state {
            BatchState::Success => {
                let output = json!({
                    "batchId": id,
                    "batchName": name,
                    "name": self.entry().and_then(|e| e.name),
                    "applicationId": seen.app_id,
                    "state": seen.state.as_str(),
                    "livyUrl": livy.batch_url(id),
                    "driverLogUrl": seen.driver_log_url,
                    "sparkUiUrl": seen.spark_ui_url,
                    "submittedAt": humantime::format_rfc3339_millis(submitted_at).to_string(),
                    "finishedAt": humantime::format_rfc3339_millis(finished_at).to_string(),
                    "durationSeconds": (duration.as_secs_f64() * 1000.0).round() / 1000.0,
                });
                Outcome::Success(output.to_string())
            }
            BatchState::Killed => {
                let summary = format!(
                    "batch {id} ({name}) was killed outside this worker{}",
                    app_suffix(&seen)
                );
                Outcome::Failure(Failure::with_log(
                    ErrorName::Killed,
                    &summary,
                    &log_tail(livy, id).await,
                ))
            }
            state => {
                let summary = format!(
                    "spark application failed: batch {id} ({name}) ended {}{}",
                    state.as_str(),
                    app_suffix(&seen)
                );
                Outcome::Failure(Failure::with_log(
                    ErrorName::Failed,
                    &summary,
                    &log_tail(livy, id).await,
                ))
            }
        }
    }

    /// `POST /batches`, retried while Livy is unavailable. The unique name is looked up before
    /// any retry, and before the first POST of a resumed task: an earlier POST may have landed.
    async fn submit(&self, ctx: &Context) -> Result<Batch, Failure> {
        let livy = &self.livy;
        let request = &self.request;
        if !self.resumed {
            failpoint::hit("crash-before-submit");
        }
        let window = ctx.settings.livy_retry_timeout;
        let deadline = Instant::now() + window;
        let mut delays = backoff::delays(Duration::from_millis(500), Duration::from_secs(30));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = if attempt > 1 || self.resumed {
                match livy.batch_by_name(&request.name).await {
                    Ok(b) => {
                        info!(
                            batch_id = b.id,
                            "adopted the batch found under this task's name"
                        );
                        return Ok(b);
                    }
                    Err(e) if e.is_not_found() => livy.create_batch(request).await,
                    Err(e) => Err(e),
                }
            } else {
                livy.create_batch(request).await
            };
            let err = match result {
                Ok(b) => return Ok(b),
                Err(e) if e.is_duplicate_name() => match livy.batch_by_name(&request.name).await {
                    Ok(b) => return Ok(b),
                    Err(lookup) => lookup,
                },
                Err(e) if e.is_transient() => e,
                Err(e) => {
                    return Err(Failure::new(
                        ErrorName::LivyRejected,
                        format!("livy rejected batch {}: {e}", request.name),
                    ));
                }
            };
            let delay = delays.next().unwrap_or(Duration::from_secs(30));
            if Instant::now() + delay > deadline {
                return Err(Failure::new(
                    ErrorName::LivyUnavailable,
                    format!(
                        "livy at {} did not accept batch {} within {} ({attempt} attempts): {err}",
                        livy.base(),
                        request.name,
                        humantime::format_duration(window)
                    ),
                ));
            }
            warn!(error = %err, attempt, retry_in = ?delay, "livy unavailable; retrying submit");
            sleep(delay).await;
        }
    }

    /// Stops the batch so it does not run on unsupervised (or twice, after a Retry). Returns the
    /// id of the batch deleted, if any.
    async fn delete_batch(&self, ctx: &Context) -> Option<i64> {
        let livy = &self.livy;
        let id = match self.stored_id() {
            Some(id) => id,
            // A POST may have been in flight: find the batch by its unique name.
            None => match livy.batch_by_name(&self.request.name).await {
                Ok(b) => b.id,
                Err(e) if e.is_not_found() => return None,
                Err(e) => {
                    warn!(error = %e, batch_name = %self.request.name, "could not look up the batch to delete it");
                    return None;
                }
            },
        };
        let mut delays = backoff::delays(Duration::from_millis(500), Duration::from_secs(10));
        let deadline = Instant::now() + ctx.settings.livy_retry_timeout;
        loop {
            match livy.delete_batch(id).await {
                Ok(()) => {
                    info!(batch_id = id, "batch deleted");
                    return Some(id);
                }
                Err(e) if e.is_not_found() => return None,
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
                }
                Err(e) => {
                    error!(batch_id = id, error = %e, "could not delete the batch; it may still be running");
                    return None;
                }
            }
        }
    }

    async fn panicked(&self, ctx: &Context, msg: String) -> Outcome {
        error!(panic = %msg, "supervisor panicked");
        let note = match self.delete_batch(ctx).await {
            Some(id) => format!("; its batch {id} was deleted"),
            None => String::new(),
        };
        Outcome::Failure(Failure::new(
            ErrorName::Panicked,
            format!("spark-activity-worker bug: the task's supervisor panicked: {msg}{note}"),
        ))
    }
}

async fn log_tail(livy: &LivyClient, id: i64) -> Vec<String> {
    for attempt in 0..3u64 {
        match livy.log_tail(id, LOG_TAIL_LINES).await {
            Ok(lines) => return lines,
            Err(e) if e.is_transient() && attempt < 2 => {
                sleep(Duration::from_secs(1 + attempt)).await
            }
            Err(e) => return vec![format!("(batch log unavailable: {e})")],
        }
    }
    Vec::new()
}

/// Delivers the outcome, retrying transient errors until Step Functions accepts it or closes the
/// task; then the journal forgets the task. In detach mode it stops trying: the journal keeps the
/// report for the next start.
async fn deliver(ctx: &Context, key: &str, token: &TaskToken, outcome: &Outcome) {
    let mut delays = backoff::delays(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let result = match outcome {
            Outcome::Gone | Outcome::Detached => return,
            Outcome::Success(output) => ctx.sfn.succeed(token, output).await,
            Outcome::Failure(f) => ctx.sfn.fail(token, f).await,
        };
        match result {
            Ok(()) => {
                match outcome {
                    Outcome::Failure(f) => info!(error = %f.error, "reported failure"),
                    _ => info!("reported success"),
                }
                break;
            }
            Err(SfnError::TaskGone(kind)) => {
                warn!(reason = %kind, "task closed before its outcome could be reported");
                break;
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                warn!(error = %e, retry_in = ?delay, "report failed; retrying");
                tokio::select! {
                    () = sleep(delay) => {}
                    () = ctx.detach.cancelled() => return,
                }
            }
        }
    }
    forget(ctx, key).await;
}

async fn forget(ctx: &Context, key: &str) {
    if let Err(e) = ctx.journal.remove(key).await {
        error!(error = %e, "could not remove the journal entry; the next start will report this task again");
    }
}

/// What the worker has seen of a batch. `driverLogUrl` is kept: Livy clears it when YARN finishes.
#[derive(Debug)]
struct Seen {
    state: BatchState,
    app_id: Option<String>,
    driver_log_url: Option<String>,
    spark_ui_url: Option<String>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen::with_state("starting")
    }
}

impl Seen {
    fn with_state(state: &str) -> Self {
        Seen {
            state: BatchState::parse(state),
            app_id: None,
            driver_log_url: None,
            spark_ui_url: None,
        }
    }

    fn update(&mut self, b: &Batch) {
        self.state = BatchState::parse(&b.state);
        if b.app_id.is_some() {
            self.app_id.clone_from(&b.app_id);
        }
        if let Some(info) = &b.app_info {
            if info.driver_log_url.is_some() {
                self.driver_log_url.clone_from(&info.driver_log_url);
            }
            if info.spark_ui_url.is_some() {
                self.spark_ui_url.clone_from(&info.spark_ui_url);
            }
        }
    }
}

fn app_suffix(seen: &Seen) -> String {
    seen.app_id
        .as_deref()
        .map(|a| format!(" (application {a})"))
        .unwrap_or_default()
}

/// The Livy batch name: the user's `Name` (or `spark-job`) plus a suffix from the task token, so
/// two executions with one `Name` never collide (Livy ≥ 0.6 rejects duplicate names). Never all
/// digits: the `-` guarantees it.
pub fn batch_name(user_name: Option<&str>, token: &TaskToken) -> String {
    format!(
        "{}-{}",
        user_name.unwrap_or("spark-job"),
        token.short_hash()
    )
}

fn activity_name(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
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
    fn batch_names_are_unique_per_task_and_keep_the_user_name() {
        let a = TaskToken::new("token-a");
        let b = TaskToken::new("token-b");
        assert_ne!(
            batch_name(Some("Spark Pi"), &a),
            batch_name(Some("Spark Pi"), &b)
        );
        assert!(batch_name(Some("Spark Pi"), &a).starts_with("Spark Pi-"));
        assert!(batch_name(None, &a).starts_with("spark-job-"));
        let digits = batch_name(Some("2024"), &a);
        assert!(!digits.bytes().all(|c| c.is_ascii_digit()), "{digits}");
        assert_eq!(
            batch_name(Some("x"), &a),
            batch_name(Some("x"), &TaskToken::new("token-a"))
        );
    }

    #[test]
    fn seen_keeps_urls_livy_clears() {
        let mut seen = Seen::default();
        let running: Batch =
            serde_json::from_value(json!({"id":1,"state":"running","appId":"application_1_1",
            "appInfo":{"driverLogUrl":"http://nm/log","sparkUiUrl":"http://rm/ui"}}))
            .expect("batch");
        let done: Batch =
            serde_json::from_value(json!({"id":1,"state":"success","appId":"application_1_1",
            "appInfo":{"driverLogUrl":null,"sparkUiUrl":"http://rm/ui"}}))
            .expect("batch");
        seen.update(&running);
        seen.update(&done);
        assert_eq!(seen.state, BatchState::Success);
        assert_eq!(seen.driver_log_url.as_deref(), Some("http://nm/log"));
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let a: Box<dyn std::any::Any + Send> = Box::new("static");
        let b: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(a.as_ref()), "static");
        assert_eq!(panic_message(b.as_ref()), "owned");
    }
}
