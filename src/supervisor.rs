//! One supervisor per delivered task: validate, submit the Livy batch, sync its state and send
//! heartbeats until it ends, then report exactly once — whatever happens, a panic included.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use serde_json::json;
use tokio::time::{MissedTickBehavior, sleep};
use tracing::{Instrument, debug, error, info, info_span, warn};
use url::Url;

use crate::backoff;
use crate::failure::{ErrorName, Failure};
use crate::input::{self, InvalidInput, TaskInput};
use crate::livy::{Batch, BatchState, CreateBatch, LivyClient};
use crate::sfn::{SfnClient, SfnError, Task, TaskToken};

/// How many log lines a failure cause carries (Livy keeps about 200).
const LOG_TAIL_LINES: u32 = 200;
/// How long a final report is retried before the worker gives up and logs it as lost.
const REPORT_RETRY_WINDOW: Duration = Duration::from_secs(15 * 60);
const NO_BATCH: i64 = -1;

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

/// What supervisors need: the two clients, settings, and the table of tasks in flight.
#[derive(Debug)]
pub struct Context {
    pub sfn: SfnClient,
    pub livy: LivyClient,
    pub settings: Settings,
    pub in_flight: InFlight,
}

/// The tasks being supervised, for the shutdown log ("leaving batch 7 running").
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashMap<String, Running>>);

/// One supervised task as the shutdown log shows it.
#[derive(Debug, Clone)]
pub struct Running {
    pub activity: Arc<str>,
    pub batch_name: Option<String>,
    pub batch_id: Option<i64>,
    pub livy_url: Option<String>,
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
}

/// Supervises one task to its single report. Never panics: a panic inside becomes `Worker.Panicked`.
pub async fn supervise(ctx: Arc<Context>, activity: Arc<str>, task: Task) {
    let key = task.token.short_hash();
    let span = info_span!("task", activity = %activity_name(&activity), token = %key, batch_id = tracing::field::Empty);
    ctx.in_flight.insert(
        key.clone(),
        Running {
            activity: activity.clone(),
            batch_name: None,
            batch_id: None,
            livy_url: None,
        },
    );
    async {
        let sup = Supervisor {
            ctx: &ctx,
            key: &key,
            token: &task.token,
            batch_id: AtomicI64::new(NO_BATCH),
            livy: Mutex::new(None),
        };
        info!("task received");
        let outcome = match AssertUnwindSafe(sup.run(&task.input)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => sup.panicked(panic_message(panic.as_ref())).await,
        };
        report(&ctx.sfn, &task.token, outcome).await;
    }
    .instrument(span)
    .await;
    ctx.in_flight.remove(&key);
}

/// Fails a task without running it: it arrived while the worker was shutting down.
pub async fn refuse(sfn: &SfnClient, activity: &str, task: &Task) {
    let span = info_span!("task", activity = %activity_name(activity), token = %task.token);
    let failure = Failure::new(
        ErrorName::ShuttingDown,
        "the worker was shutting down when this task arrived; it never reached Livy and can be retried",
    );
    report(sfn, &task.token, Outcome::Failure(failure))
        .instrument(span)
        .await;
}

struct Supervisor<'a> {
    ctx: &'a Context,
    key: &'a str,
    token: &'a TaskToken,
    /// Shared by the heartbeat and sync halves, which run concurrently in this one task.
    batch_id: AtomicI64,
    livy: Mutex<Option<(LivyClient, String)>>,
}

impl Supervisor<'_> {
    async fn run(&self, raw_input: &str) -> Outcome {
        let (livy, input) = match self.prepare(raw_input) {
            Ok(v) => v,
            Err(InvalidInput(msg)) => {
                warn!(cause = %msg, "invalid task input");
                return Outcome::Failure(Failure::new(ErrorName::InvalidInput, msg));
            }
        };
        let user_name = input.job.name.clone();
        let batch_name = batch_name(user_name.as_deref(), self.token);
        let request = match input.job.to_request(
            batch_name.clone(),
            self.ctx.settings.default_file.as_deref(),
        ) {
            Ok(r) => r,
            Err(InvalidInput(msg)) => {
                warn!(cause = %msg, "invalid task input");
                return Outcome::Failure(Failure::new(ErrorName::InvalidInput, msg));
            }
        };
        if let Ok(mut slot) = self.livy.lock() {
            *slot = Some((livy.clone(), batch_name.clone()));
        }
        self.ctx.in_flight.update(self.key, |r| {
            r.batch_name = Some(batch_name.clone());
            r.livy_url = Some(livy.base().to_string());
        });
        tokio::select! {
            biased;
            gone = self.heartbeats() => {
                info!(reason = %gone, "step functions closed the task; deleting its batch");
                self.delete_batch().await;
                Outcome::Gone
            }
            outcome = self.drive(&livy, &request, user_name) => outcome,
        }
    }

    /// Input → (Livy to use, validated job). Task input may only name allowed hosts.
    fn prepare(&self, raw: &str) -> Result<(LivyClient, TaskInput), InvalidInput> {
        let input = input::parse(raw)?;
        let livy = match &input.livy {
            None => self.ctx.livy.clone(),
            Some((host, port)) => {
                if !self.ctx.settings.allowed_hosts.iter().any(|h| h == host) {
                    return Err(InvalidInput(format!(
                        "LivyHost {host:?} is not allowed by this worker (allowed: {}); see --allowed-livy-host",
                        self.ctx.settings.allowed_hosts.join(", ")
                    )));
                }
                let mut url: Url = self.ctx.livy.base().clone();
                let ok = url.set_host(Some(host)).is_ok() && url.set_port(Some(*port)).is_ok();
                if !ok {
                    return Err(InvalidInput(format!(
                        "LivyHost/LivyPort {host}:{port} do not form a URL"
                    )));
                }
                self.ctx.livy.at(url)
            }
        };
        Ok((livy, input))
    }

    /// Sends a heartbeat every interval; returns only when Step Functions says the task is gone.
    async fn heartbeats(&self) -> String {
        let interval = self.ctx.settings.heartbeat_interval;
        loop {
            sleep(interval).await;
            let mut delays = backoff::delays(Duration::from_millis(500), interval);
            loop {
                match self.ctx.sfn.heartbeat(self.token).await {
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

    /// Submit, then sync until the batch ends; the terminal outcome.
    async fn drive(
        &self,
        livy: &LivyClient,
        request: &CreateBatch,
        user_name: Option<String>,
    ) -> Outcome {
        let submitted_at = SystemTime::now();
        let started = Instant::now();
        let batch = match self.submit(livy, request).await {
            Ok(b) => b,
            Err(f) => return Outcome::Failure(f),
        };
        let id = batch.id;
        self.batch_id.store(id, Ordering::SeqCst);
        tracing::Span::current().record("batch_id", id);
        self.ctx
            .in_flight
            .update(self.key, |r| r.batch_id = Some(id));
        info!(batch_name = %request.name, livy = %livy.base(), "batch submitted");
        crate::failpoint::hit("panic-after-submit");

        let mut seen = Seen::default();
        seen.update(&batch);
        let mut ticker = tokio::time::interval(self.ctx.settings.sync_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the POST reply was the first sync
        let mut down_since: Option<Instant> = None;
        while !seen.state.is_terminal() {
            ticker.tick().await;
            match livy.batch(id).await {
                Ok(b) => {
                    down_since = None;
                    if let Some(other) = b.name.as_deref().filter(|n| *n != request.name) {
                        return Outcome::Failure(Failure::new(
                            ErrorName::Lost,
                            format!(
                                "batch {id} ({}) is gone from Livy: id {id} now names batch {other:?} (Livy restarted and reused ids); last known state {}",
                                request.name,
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
                    }
                }
                Err(e) if e.is_not_found() => {
                    return Outcome::Failure(Failure::new(
                        ErrorName::Lost,
                        format!(
                            "batch {id} ({}) vanished from Livy (404) before it ended; last known state {}",
                            request.name,
                            seen.state.as_str()
                        ),
                    ));
                }
                Err(e) => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.ctx.settings.livy_retry_timeout {
                        return Outcome::Failure(Failure::new(
                            ErrorName::LivyUnavailable,
                            format!(
                                "livy failed for {} while batch {id} ({}) was {}; the application may still be running: {e}",
                                humantime::format_duration(Duration::from_secs(
                                    since.elapsed().as_secs()
                                )),
                                request.name,
                                seen.state.as_str()
                            ),
                        ));
                    }
                    warn!(error = %e, "batch state sync failed");
                }
            }
        }
        let finished_at = SystemTime::now();
        let duration = started.elapsed();
        info!(state = seen.state.as_str(), "batch finished");
        match &seen.state {
            BatchState::Success => {
                let output = json!({
                    "batchId": id,
                    "batchName": request.name,
                    "name": user_name,
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
                    "batch {id} ({}) was killed outside this worker{}",
                    request.name,
                    app_suffix(&seen)
                );
                Outcome::Failure(Failure::with_log(
                    ErrorName::Killed,
                    &summary,
                    &self.log_tail(livy, id).await,
                ))
            }
            state => {
                let summary = format!(
                    "spark application failed: batch {id} ({}) ended {}{}",
                    request.name,
                    state.as_str(),
                    app_suffix(&seen)
                );
                Outcome::Failure(Failure::with_log(
                    ErrorName::Failed,
                    &summary,
                    &self.log_tail(livy, id).await,
                ))
            }
        }
    }

    /// `POST /batches`, retried while Livy is unavailable. Before a retry, the unique name is
    /// looked up: an earlier POST whose reply was lost may have created the batch.
    async fn submit(&self, livy: &LivyClient, request: &CreateBatch) -> Result<Batch, Failure> {
        let window = self.ctx.settings.livy_retry_timeout;
        let deadline = Instant::now() + window;
        let mut delays = backoff::delays(Duration::from_millis(500), Duration::from_secs(30));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = if attempt > 1 {
                match livy.batch_by_name(&request.name).await {
                    Ok(b) => return Ok(b),
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

    async fn log_tail(&self, livy: &LivyClient, id: i64) -> Vec<String> {
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

    /// The task is gone: stop the batch so it does not run on unsupervised (or twice, after a Retry).
    async fn delete_batch(&self) {
        let Some((livy, name)) = self.livy.lock().ok().and_then(|l| l.clone()) else {
            return;
        };
        let mut id = self.batch_id.load(Ordering::SeqCst);
        if id == NO_BATCH {
            // A POST may have been in flight when the task went away: find it by its unique name.
            match livy.batch_by_name(&name).await {
                Ok(b) => id = b.id,
                Err(e) if e.is_not_found() => return,
                Err(e) => {
                    warn!(error = %e, batch_name = %name, "could not look up the batch to delete it");
                    return;
                }
            }
        }
        let mut delays = backoff::delays(Duration::from_millis(500), Duration::from_secs(10));
        let deadline = Instant::now() + self.ctx.settings.livy_retry_timeout;
        loop {
            match livy.delete_batch(id).await {
                Ok(()) => {
                    info!(batch_id = id, "batch deleted");
                    return;
                }
                Err(e) if e.is_not_found() => return,
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
                }
                Err(e) => {
                    error!(batch_id = id, error = %e, "could not delete the batch; it may still be running");
                    return;
                }
            }
        }
    }

    async fn panicked(&self, msg: String) -> Outcome {
        error!(panic = %msg, "supervisor panicked");
        let batch = self.batch_id.load(Ordering::SeqCst);
        let note = if batch == NO_BATCH {
            String::new()
        } else {
            self.delete_batch().await;
            format!("; its batch {batch} was deleted")
        };
        Outcome::Failure(Failure::new(
            ErrorName::Panicked,
            format!("spark-activity-worker bug: the task's supervisor panicked: {msg}{note}"),
        ))
    }
}

/// Reports the outcome, retrying transient errors until Step Functions accepts it or closes the task.
async fn report(sfn: &SfnClient, token: &TaskToken, outcome: Outcome) {
    let deadline = Instant::now() + REPORT_RETRY_WINDOW;
    let mut delays = backoff::delays(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let result = match &outcome {
            Outcome::Gone => return,
            Outcome::Success(output) => sfn.succeed(token, output).await,
            Outcome::Failure(f) => sfn.fail(token, f).await,
        };
        match (result, &outcome) {
            (Ok(()), Outcome::Success(_)) => return info!("reported success"),
            (Ok(()), Outcome::Failure(f)) => return info!(error = %f.error, "reported failure"),
            (Ok(()), Outcome::Gone) => return,
            (Err(SfnError::TaskGone(kind)), _) => {
                return warn!(reason = %kind, "task closed before its outcome could be reported");
            }
            (Err(e), _) if Instant::now() >= deadline => {
                return error!(error = %e, "giving up reporting the outcome; the execution will time out");
            }
            (Err(e), _) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                warn!(error = %e, retry_in = ?delay, "report failed; retrying");
                sleep(delay).await;
            }
        }
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
        Seen {
            state: BatchState::Starting,
            app_id: None,
            driver_log_url: None,
            spark_ui_url: None,
        }
    }
}

impl Seen {
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
