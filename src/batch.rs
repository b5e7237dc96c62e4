//! One task's Livy batch, from submission to its end: submit it (or adopt what an earlier attempt
//! created), follow its state, cross-check its end with YARN, follow the application through YARN
//! when Livy forgets it, and kill it. Knows nothing of Step Functions: [`Batch::drive`] returns how
//! the batch ended, and the caller decides what to report.
//!
//! The batch is addressed by its unique name at Livy and by its tag in YARN — never by a bare id,
//! which Livy reuses after a restart without recovery.
//!
//! The rule every path follows: the batch ends as [`Ended::NotSubmitted`] or [`Ended::Lost`] only
//! when Livy and YARN were both asked and neither has anything of this task — so nothing runs.
//! When they cannot be asked, supervision goes on (through Livy outages, up to
//! `--livy-outage-limit`), and what ends it then is a kill whose confirmation the caller sees.

use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use ::metrics::histogram;

use crate::config::TimingArgs;
use crate::failpoint;
use crate::journal::Record;
use crate::livy::{self, BatchState, CreateBatch, Livy, LivyError};
use crate::metrics;
use crate::retry::Policy;
use crate::yarn::{self, App, ResourceManager, Verdict, YarnError};

/// How many log lines a failure cause carries (Livy keeps about 200).
const LOG_TAIL_LINES: u32 = 200;
/// The longest wait between tries while Livy or YARN cannot be reached.
const OUTAGE_MAX_DELAY: Duration = Duration::from_secs(30);
/// How long a kill may wait for YARN to report a killed application as ended.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// The timing a batch is driven with.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often the batch state is read.
    pub sync_interval: Duration,
    /// How long `POST /batches` is retried before the submission is given up.
    pub livy_retry_timeout: Duration,
    /// How long Livy (and YARN) may stay unreachable while a batch is known before it is killed.
    pub livy_outage_limit: Duration,
    /// How long Livy keeps a finished batch (`livy.server.session.state-retain.sec`).
    pub livy_retention: Duration,
    /// How long a submitted batch may take to reach YARN (`livy.server.yarn.app-lookup-timeout`).
    pub yarn_lookup_timeout: Duration,
}

/// How long a submitted batch may take to reach YARN before "no application" means none will
/// come: Livy's own `livy.server.yarn.app-lookup-timeout`.
const YARN_LOOKUP_TIMEOUT: Duration = Duration::from_secs(120);

impl Timing {
    pub fn from_args(args: &TimingArgs) -> Self {
        Timing {
            sync_interval: args.sync_interval,
            livy_retry_timeout: args.livy_retry_timeout,
            livy_outage_limit: args.livy_outage_limit,
            livy_retention: args.livy_retention,
            yarn_lookup_timeout: YARN_LOOKUP_TIMEOUT,
        }
    }
}

/// The YARN tag of a task's application: short, lower-case, unique per task (its journal key).
pub fn tag_for(key: &str) -> String {
    format!("saw-{}", key.to_ascii_lowercase())
}

/// The Livy batch name of a task: the user's `Name` (or `spark-job`) with anything outside
/// `[A-Za-z0-9 ._-]` replaced by `_` (the name travels in URL paths), plus the task's key, so two
/// executions with one `Name` never collide (Livy ≥ 0.6 rejects duplicate names). Never all digits.
pub fn name_for(user_name: Option<&str>, key: &str) -> String {
    let base: String = user_name
        .unwrap_or("spark-job")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{base}-{key}")
}

/// Adds the task's tag to the request's `spark.yarn.tags`, after any tags the task gives.
pub fn add_tag(request: &mut CreateBatch, tag: &str) {
    let tags = request.conf.entry("spark.yarn.tags".into()).or_default();
    if !tags.split(',').any(|t| t.trim().eq_ignore_ascii_case(tag)) {
        if !tags.trim().is_empty() {
            tags.push(',');
        }
        tags.push_str(tag);
    }
}

/// How long until the next sync tick. Ticks fall on whole multiples of the interval on the wall
/// clock, so every batch the worker follows is read at the same moments, and one Livy listing a
/// tick answers them all (see [`livy`]).
pub fn until_tick(interval: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let every = interval.as_nanos().max(1);
    Duration::from_nanos(u64::try_from(every - now % every).unwrap_or(u64::MAX))
}

/// How a batch ended.
#[derive(Debug)]
pub enum Ended {
    /// The application ended and Livy or YARN said how.
    Finished(Finish),
    /// Livy refused the submission (4xx): nothing runs.
    Rejected(String),
    /// Livy kept failing for the retry window and has no batch of this task, nor YARN an
    /// application: nothing was created.
    NotSubmitted(String),
    /// Neither Livy nor YARN has anything of this task any more: nothing runs or will.
    Lost(String),
    /// Livy (or YARN) stayed unreachable past the outage limit, so the batch was killed.
    OutageLimit { reason: String, kill: Kill },
    /// Stopped on request (task gone, shutdown): what was there was killed.
    Stopped(Kill),
}

/// A finished application.
#[derive(Debug)]
pub struct Finish {
    pub verdict: Verdict,
    /// Livy's last state; `None` when the end came from YARN alone.
    pub livy_state: Option<String>,
    pub seen: Seen,
    /// The tail of the Livy batch log (failures only; empty when Livy had forgotten the batch).
    pub log: Vec<String>,
    /// YARN's diagnostics, when YARN was asked.
    pub diagnostics: Option<String>,
}

/// The result of killing a task's application.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The worker knows nothing of the task runs any more.
    pub confirmed: bool,
    /// What was done and seen, for logs and causes.
    pub summary: String,
}

/// What the worker has seen of a batch. `driverLogUrl` is kept: Livy clears it when YARN finishes.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub id: Option<i64>,
    pub state: Option<BatchState>,
    pub app_id: Option<String>,
    pub driver_log_url: Option<String>,
    pub spark_ui_url: Option<String>,
}

impl Seen {
    fn update(&mut self, b: &livy::Batch) {
        self.id = Some(b.id);
        self.state = Some(BatchState::parse(&b.state));
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

    /// The last state seen, for causes.
    pub fn state_str(&self) -> &str {
        self.state
            .as_ref()
            .map_or("(none seen)", BatchState::as_str)
    }
}

/// Where the batch stands, as far as the driver knows.
enum Step {
    Submit,
    /// Find what exists of the task, by name at Livy and by tag in YARN, then decide.
    Locate(Purpose),
    Follow,
    FollowYarn,
    /// Boxed: the driver keeps its step while it rests, and an end is rare and large.
    End(Box<Ended>),
}

impl Step {
    fn end(ended: Ended) -> Self {
        Step::End(Box::new(ended))
    }
}

/// Why the batch is being located, which decides what "nothing exists" means.
enum Purpose {
    /// Resumed from the journal without a batch id: a POST may or may not have landed.
    Resume,
    /// The submit window is over and a POST may have landed.
    AfterWindow(String),
}

/// What exists of the task.
enum Found {
    Livy(livy::Batch),
    Yarn(App),
    Nothing,
}

/// Why a lookup could not answer.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("{0}")]
    Livy(LivyError),
    #[error("{0}")]
    Yarn(YarnError),
}

/// One task's batch.
#[derive(Debug)]
pub struct Batch {
    livy: Arc<dyn Livy>,
    yarn: Arc<dyn ResourceManager>,
    record: Arc<Record>,
    timing: Arc<Timing>,
    /// The batch's name (the journal entry's); the request itself is read from the entry when
    /// it is posted.
    name: Arc<str>,
    /// Came from the journal: the batch may exist already, so it is looked up before any POST.
    resumed: bool,
    /// When the task was delivered, and its activity's name: taken by the first POST, for the
    /// delivery-to-submit latency.
    delivered: std::sync::Mutex<Option<(Instant, Arc<str>)>>,
}

impl Batch {
    pub fn new(
        livy: Arc<dyn Livy>,
        yarn: Arc<dyn ResourceManager>,
        record: Arc<Record>,
        timing: Arc<Timing>,
        resumed: bool,
    ) -> Self {
        let name = record.read(|e| e.batch_name.clone());
        Batch {
            livy,
            yarn,
            record,
            timing,
            name,
            resumed,
            delivered: std::sync::Mutex::new(None),
        }
    }

    /// Marks a newly delivered task, so its first POST is timed from `at`.
    #[must_use]
    pub fn delivered_at(self, at: Instant, activity: Arc<str>) -> Self {
        if let Ok(mut d) = self.delivered.lock() {
            *d = Some((at, activity));
        }
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The YARN tag of the task's application (made when needed: it is read only to find the
    /// application in YARN).
    fn tag(&self) -> String {
        tag_for(self.record.key())
    }

    pub fn livy(&self) -> &Arc<dyn Livy> {
        &self.livy
    }

    /// Submits or adopts the batch and follows it to its end. When `stop` is cancelled, the
    /// current request finishes (a POST in flight is never dropped: Livy would complete it
    /// unwatched), then whatever exists of the task is killed.
    pub async fn drive(&self, stop: &CancellationToken) -> Ended {
        let mut seen = self.record.read(|e| Seen {
            id: e.batch_id,
            state: e.last_state.as_deref().map(BatchState::parse),
            app_id: e.app_id.clone(),
            ..Seen::default()
        });
        let mut outage = Outage::new(&self.timing);
        let mut step = if seen.id.is_some() {
            if self.resumed {
                metrics::resumed("followed");
            }
            Step::Follow
        } else if self.resumed {
            Step::Locate(Purpose::Resume)
        } else {
            Step::Submit
        };
        // Every task rests in `follow`, waiting for the next tick; the other steps are boxed, so
        // that a resting task is as small as `follow` (thousands rest at once).
        loop {
            step = match step {
                Step::Submit => Box::pin(self.submit(stop, &mut seen)).await,
                Step::Locate(purpose) => {
                    Box::pin(self.locate(stop, &mut seen, &mut outage, purpose)).await
                }
                Step::Follow => self.follow(stop, &mut seen, &mut outage).await,
                Step::FollowYarn => Box::pin(self.follow_yarn(stop, &mut seen, &mut outage)).await,
                Step::End(ended) => return *ended,
            }
        }
    }

    /// Waits `delay` unless stopped first; `true` when stopped.
    async fn stopped_within(&self, stop: &CancellationToken, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            () = stop.cancelled() => true,
        }
    }

    async fn stop_now(&self) -> Step {
        Step::end(Ended::Stopped(Box::pin(self.kill()).await))
    }

    /// `POST /batches`, retried while Livy is unavailable, for `--livy-retry-timeout`.
    async fn submit(&self, stop: &CancellationToken, seen: &mut Seen) -> Step {
        // Journal before POST: whatever kills the worker from here on, the next start resumes it.
        // A failed write (disk full) is retried; the journal has stopped new polls meanwhile.
        if !self.record.is_saved() {
            let saved = Policy::backoff(Duration::from_secs(1), Duration::from_secs(10)).run(
                || self.record.save(),
                |_| true,
                |e, d| debug!(error = %e, retry_in = ?d, "journal write before submit failed; retrying"),
            );
            tokio::select! {
                _ = saved => {}
                () = stop.cancelled() => return self.stop_now().await,
            }
        }
        if !self.resumed {
            failpoint::hit("crash-before-submit");
        }
        let window = self.timing.livy_retry_timeout;
        let deadline = Instant::now() + window;
        let mut delays = Policy::backoff(Duration::from_millis(500), OUTAGE_MAX_DELAY).delays();
        let mut maybe_created = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // An earlier POST may have landed: look before posting again.
            let err = if maybe_created {
                match self.find().await {
                    Ok(Found::Livy(b)) => return self.adopted(b, seen).await,
                    Ok(Found::Yarn(app)) => return self.lost_by_livy(app, seen),
                    Ok(Found::Nothing) => self.post(seen).await,
                    Err(e) => Err(PostError::from(e.to_string())),
                }
            } else {
                self.post(seen).await
            };
            let err = match err {
                Ok(step) => return step,
                Err(e) => e,
            };
            if stop.is_cancelled() {
                return self.stop_now().await;
            }
            if let Some(step) = self.rejected(&err).await {
                return step;
            }
            maybe_created |= err.may_have_created;
            let delay = delays.next().unwrap_or(OUTAGE_MAX_DELAY);
            if Instant::now() + delay > deadline {
                let summary = format!(
                    "livy at {} did not accept batch {} within {} ({attempt} attempts): {}",
                    self.livy.base(),
                    self.name(),
                    humantime::format_duration(window),
                    err.text
                );
                if !maybe_created {
                    return Step::end(Ended::NotSubmitted(format!(
                        "{summary}; no request reached Livy in a way that could create it"
                    )));
                }
                return Step::Locate(Purpose::AfterWindow(summary));
            }
            warn!(error = %err.text, attempt, retry_in = ?delay, "livy unavailable; retrying submit");
            if self.stopped_within(stop, delay).await {
                return self.stop_now().await;
            }
        }
    }

    /// One POST. `Ok` is the next step; `Err` the failure, for [`Batch::submit`] to judge.
    async fn post(&self, seen: &mut Seen) -> Result<Step, PostError> {
        let delivered = self.delivered.lock().ok().and_then(|mut d| d.take());
        if let Some((at, activity)) = delivered {
            histogram!(metrics::DELIVERY_TO_SUBMIT, "activity" => activity.to_string())
                .record(at.elapsed().as_secs_f64());
        }
        let request = self.record.read(|e| e.request.request());
        match self.livy.create_batch(&request).await {
            Ok(b) => {
                failpoint::hit("crash-after-submit");
                let step = self.adopted(b, seen).await;
                info!(batch_id = ?seen.id, batch_name = %self.name(), livy = %self.livy.base(), "batch submitted");
                failpoint::hit("panic-after-submit");
                Ok(step)
            }
            // A batch of this name is held: an earlier POST of ours landed.
            Err(e) if e.is_duplicate_name() => match self.livy.batch(self.name()).await {
                Ok(b) => Ok(self.adopted(b, seen).await),
                Err(e) => Err(PostError::from_livy(e)),
            },
            Err(e) => Err(PostError::from_livy(e)),
        }
    }

    /// A 4xx that no retry changes: nothing runs. Real Livy can leave a "ghost" batch of the
    /// name behind (it registers a batch before validating its files), so the name is freed.
    async fn rejected(&self, err: &PostError) -> Option<Step> {
        if !err.rejected {
            return None;
        }
        if let Ok(()) = self.livy.delete_batch(self.name()).await {
            debug!("deleted the batch Livy kept after rejecting it");
        }
        Some(Step::end(Ended::Rejected(format!(
            "livy rejected batch {}: {}",
            self.name(),
            err.text
        ))))
    }

    /// Takes `b` as this task's batch: records its id, then follows it.
    async fn adopted(&self, b: livy::Batch, seen: &mut Seen) -> Step {
        seen.update(&b);
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let (id, state, app) = (b.id, b.state.clone(), b.app_id.clone());
        // A failed write is logged by the journal; resume finds the batch by name anyway.
        let _ = self
            .record
            .update(|e| {
                e.batch_id = Some(id);
                e.submitted_at.get_or_insert(now);
                e.last_state = Some(state);
                if app.is_some() {
                    e.app_id = app;
                }
            })
            .await;
        tracing::Span::current().record("batch_id", id);
        Step::Follow
    }

    /// What exists of the task: a batch of its name at Livy, else an application of its tag in
    /// YARN, else nothing. An error means the question could not be answered.
    async fn find(&self) -> Result<Found, LookupError> {
        match self.livy.batch(self.name()).await {
            Ok(b) if b.name.as_deref() == Some(self.name()) => return Ok(Found::Livy(b)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(LookupError::Livy(e)),
        }
        match self.yarn_app().await {
            Ok(app) => Ok(app.map_or(Found::Nothing, Found::Yarn)),
            Err(e) => Err(LookupError::Yarn(e)),
        }
    }

    /// The application that speaks for the task in YARN (by its tag), if any.
    async fn yarn_app(&self) -> Result<Option<App>, YarnError> {
        self.yarn.apps_by_tag(&self.tag()).await.map(yarn::pick)
    }

    /// Livy does not hold the batch but YARN has its application: follow it there.
    fn lost_by_livy(&self, app: App, seen: &mut Seen) -> Step {
        info!(
            application = %app.id, tag = %self.tag(),
            "livy has no batch of this task's name; following its application in YARN"
        );
        seen.app_id = Some(app.id);
        Step::FollowYarn
    }

    /// Decides from what exists of the task, asking again through outages.
    async fn locate(
        &self,
        stop: &CancellationToken,
        seen: &mut Seen,
        outage: &mut Outage,
        purpose: Purpose,
    ) -> Step {
        loop {
            match self.find().await {
                Ok(Found::Livy(b)) => {
                    info!(
                        batch_id = b.id,
                        "adopted the batch found under this task's name"
                    );
                    if matches!(purpose, Purpose::Resume) {
                        metrics::resumed("adopted");
                    }
                    return self.adopted(b, seen).await;
                }
                Ok(Found::Yarn(app)) => {
                    if matches!(purpose, Purpose::Resume) {
                        metrics::resumed("yarn");
                    }
                    return self.lost_by_livy(app, seen);
                }
                Ok(Found::Nothing) => {
                    return match purpose {
                        Purpose::AfterWindow(summary) => Step::end(Ended::NotSubmitted(format!(
                            "{summary}; Livy has no batch of that name and YARN no application tagged {}: it was never created",
                            self.tag()
                        ))),
                        Purpose::Resume => self.resume_unfound(),
                    };
                }
                Err(e) => {
                    if let Some(step) = outage.failed(&e.to_string()) {
                        return self.outage_limit(step).await;
                    }
                    warn!(error = %e, "cannot tell whether this task's batch exists; asking again");
                }
            }
            if self.stopped_within(stop, outage.delay()).await {
                return self.stop_now().await;
            }
        }
    }

    /// A resumed task of which neither Livy nor YARN knows anything. If the entry is younger
    /// than Livy's retention, a POST that landed would still be held: Livy never received it, so
    /// it is submitted now. Older (or from a clock that stepped back), a batch may have run and
    /// been forgotten: it is not resubmitted.
    fn resume_unfound(&self) -> Step {
        let created = self.record.read(|e| {
            e.created_at
                .as_deref()
                .and_then(|c| humantime::parse_rfc3339(c).ok())
        });
        let age = created.and_then(|c| SystemTime::now().duration_since(c).ok());
        match age {
            Some(age) if age < self.timing.livy_retention => {
                info!("livy never received this task's batch; submitting it");
                metrics::resumed("resubmitted");
                Step::Submit
            }
            _ => {
                metrics::resumed("lost");
                Step::end(Ended::Lost(format!(
                    "the worker journaled batch {} {} but did not record its id; Livy has no batch of that name \
                 and YARN no application tagged {}, so none runs — it was never submitted, or ran and was \
                 forgotten by both (not resubmitted)",
                    self.name(),
                    match age {
                        Some(age) => format!(
                            "{} ago",
                            humantime::format_duration(Duration::from_secs(age.as_secs()))
                        ),
                        None => "at a time later than this clock's now".to_owned(),
                    },
                    self.tag()
                )))
            }
        }
    }

    /// Follows the batch at Livy until it ends. This is where a task rests, between ticks and
    /// in a tick's shared read, so it holds no more than those two waits: what is done with a
    /// read is [`Batch::synced`]'s, boxed.
    async fn follow(&self, stop: &CancellationToken, seen: &mut Seen, outage: &mut Outage) -> Step {
        let mut wait = Duration::ZERO;
        loop {
            if self.stopped_within(stop, wait).await {
                return Box::pin(self.stop_now()).await;
            }
            let read = tokio::select! {
                r = self.livy.batch(self.name()) => r,
                () = stop.cancelled() => return Box::pin(self.stop_now()).await,
            };
            match Box::pin(self.synced(read, seen, outage)).await {
                Break(step) => return step,
                Continue(next) => wait = next,
            }
        }
    }

    /// Takes one read of the batch: the next step, or how long to wait before the next read.
    async fn synced(
        &self,
        read: Result<livy::Batch, LivyError>,
        seen: &mut Seen,
        outage: &mut Outage,
    ) -> ControlFlow<Step, Duration> {
        match read {
            Ok(b) if b.name.as_deref() == Some(self.name()) => {
                outage.recovered();
                let before = seen.state.clone();
                seen.update(&b);
                if seen.state != before {
                    match &seen.state {
                        Some(BatchState::Unknown(s)) => {
                            warn!(state = %s, "unknown batch state; treated as still running")
                        }
                        Some(s) => info!(state = s.as_str(), "batch state changed"),
                        None => {}
                    }
                    let (state, app) = (b.state.clone(), b.app_id.clone());
                    let _ = Box::pin(self.record.update(|e| {
                        e.last_state = Some(state);
                        if app.is_some() {
                            e.app_id = app;
                        }
                    }))
                    .await;
                }
                if seen.state.as_ref().is_some_and(BatchState::is_terminal) {
                    return Break(Box::pin(self.ended_at_livy(seen)).await);
                }
                // A batch Livy recovered after a restart can stay `recovering` after its
                // application ended (LIVY-727): YARN settles it.
                if seen.state == Some(BatchState::Recovering)
                    && let Ok(Some(app)) = self.yarn_app().await
                    && app.is_final()
                {
                    info!(application = %app.id, state = %app.state, "livy still says recovering but YARN says the application ended");
                    return Break(Box::pin(self.ended_in_yarn(app, seen)).await);
                }
                Continue(until_tick(self.timing.sync_interval))
            }
            // 404 (or an old Livy that ignores names): Livy no longer holds the batch —
            // restarted without recovery, or it ended and was forgotten. YARN knows.
            Ok(_) => Break(self.livy_forgot(seen)),
            Err(e) if e.is_not_found() => Break(self.livy_forgot(seen)),
            Err(e) => {
                if let Some(step) = outage.failed(&e.to_string()) {
                    return Break(Box::pin(self.outage_limit(step)).await);
                }
                warn!(error = %e, "batch state sync failed");
                // While Livy cannot be read, YARN can say the application has ended.
                if let Ok(Some(app)) = self.yarn_app().await
                    && app.is_final()
                {
                    info!(application = %app.id, state = %app.state, "livy is unreachable; YARN says the application ended");
                    return Break(Box::pin(self.ended_in_yarn(app, seen)).await);
                }
                Continue(outage.delay())
            }
        }
    }

    fn livy_forgot(&self, seen: &Seen) -> Step {
        info!(
            last_state = seen.state_str(), tag = %self.tag(),
            "livy no longer has this batch; asking YARN for its application"
        );
        Step::FollowYarn
    }

    /// Livy says the batch ended. Livy is known to misreport ends (a failure for a YARN success,
    /// `dead` for an application still running), so YARN's word wins where it has one.
    async fn ended_at_livy(&self, seen: &mut Seen) -> Step {
        let livy_state = seen.state.clone().unwrap_or(BatchState::Dead);
        let livy_verdict = match livy_state {
            BatchState::Success => Verdict::Succeeded,
            BatchState::Killed => Verdict::Killed,
            _ => Verdict::Failed,
        };
        let (verdict, diagnostics) = match self.yarn_app().await {
            Ok(Some(app)) if !app.is_final() => {
                warn!(
                    livy_state = livy_state.as_str(), application = %app.id, yarn_state = %app.state,
                    "livy says the batch ended but YARN still runs its application; following YARN"
                );
                seen.app_id.get_or_insert(app.id);
                return Step::FollowYarn;
            }
            Ok(Some(app)) => {
                let verdict = app.verdict().unwrap_or(livy_verdict);
                if verdict != livy_verdict {
                    warn!(
                        livy_state = livy_state.as_str(), application = %app.id, yarn_state = %app.state,
                        final_status = %app.final_status, "livy and YARN disagree on how the application ended; YARN wins"
                    );
                }
                seen.app_id.get_or_insert(app.id);
                (
                    verdict,
                    Some(app.diagnostics).filter(|d| !d.trim().is_empty()),
                )
            }
            Ok(None) => (livy_verdict, None),
            Err(e) => {
                warn!(error = %e, "cannot cross-check the batch's end with YARN; taking Livy's word");
                (livy_verdict, None)
            }
        };
        info!(state = livy_state.as_str(), "batch finished");
        let log = if verdict == Verdict::Succeeded {
            Vec::new()
        } else {
            self.log_tail().await
        };
        Step::end(Ended::Finished(Finish {
            verdict,
            livy_state: Some(livy_state.as_str().to_owned()),
            seen: seen.clone(),
            log,
            diagnostics,
        }))
    }

    /// Follows the application through YARN: Livy no longer has the batch.
    async fn follow_yarn(
        &self,
        stop: &CancellationToken,
        seen: &mut Seen,
        outage: &mut Outage,
    ) -> Step {
        let mut announced = false;
        // Until when an application of this task could still appear in YARN.
        let lookup_deadline = self.yarn_lookup_deadline(seen);
        loop {
            match self.yarn_app().await {
                Ok(Some(app)) if app.is_final() => return self.ended_in_yarn(app, seen).await,
                Ok(Some(app)) => {
                    outage.recovered();
                    if !announced {
                        announced = true;
                        info!(application = %app.id, state = %app.state, "following the application in YARN");
                        let id = app.id.clone();
                        let _ = self.record.update(|e| e.app_id = Some(id)).await;
                    }
                    seen.app_id = Some(app.id);
                }
                Ok(None) => {
                    outage.recovered();
                    if seen.app_id.is_some() || Instant::now() >= lookup_deadline {
                        return Step::end(Ended::Lost(format!(
                            "livy no longer has batch {} ({}last known state {}) and YARN has no application tagged {}: \
                             nothing of this task runs",
                            self.name(),
                            seen.id.map(|i| format!("id {i}, ")).unwrap_or_default(),
                            seen.state_str(),
                            self.tag()
                        )));
                    }
                    debug!("no YARN application yet; the batch may still be reaching YARN");
                }
                Err(e) => {
                    if let Some(step) = outage.failed(&e.to_string()) {
                        return self.outage_limit(step).await;
                    }
                    warn!(error = %e, "cannot read the application from YARN");
                }
            }
            let wait = if outage.is_down() {
                outage.delay()
            } else {
                self.timing.sync_interval
            };
            if self.stopped_within(stop, wait).await {
                return self.stop_now().await;
            }
        }
    }

    /// Until when an application of this task could still appear in YARN: a batch never seen
    /// with an application id may be reaching YARN for `yarn_lookup_timeout` after its submission
    /// (Livy itself gives up then). Anchored on this process's clock once, from the journal's
    /// submission time.
    fn yarn_lookup_deadline(&self, seen: &Seen) -> Instant {
        if seen.app_id.is_some() {
            return Instant::now();
        }
        let submitted = self.record.read(|e| {
            e.submitted_at
                .as_deref()
                .and_then(|s| humantime::parse_rfc3339(s).ok())
        });
        let left = match submitted.map(|s| SystemTime::now().duration_since(s)) {
            Some(Ok(age)) => self.timing.yarn_lookup_timeout.saturating_sub(age),
            // A clock that stepped back proves nothing: wait the whole time.
            Some(Err(_)) => self.timing.yarn_lookup_timeout,
            None => Duration::ZERO,
        };
        Instant::now() + left
    }

    async fn ended_in_yarn(&self, app: App, seen: &mut Seen) -> Step {
        let verdict = app.verdict().unwrap_or(Verdict::Failed);
        info!(application = %app.id, state = %app.state, final_status = %app.final_status, "application finished (from YARN)");
        seen.app_id = Some(app.id.clone());
        if seen.spark_ui_url.is_none() {
            seen.spark_ui_url = app.tracking_url.clone();
        }
        Step::end(Ended::Finished(Finish {
            verdict,
            livy_state: None,
            seen: seen.clone(),
            log: Vec::new(),
            diagnostics: Some(app.diagnostics).filter(|d| !d.trim().is_empty()),
        }))
    }

    async fn outage_limit(&self, reason: String) -> Step {
        warn!(reason = %reason, "outage limit reached; killing this task's application");
        let kill = Box::pin(self.kill()).await;
        Step::end(Ended::OutageLimit { reason, kill })
    }

    /// The tail of the batch log, for a failure's cause.
    async fn log_tail(&self) -> Vec<String> {
        Policy::backoff(Duration::from_secs(1), Duration::from_secs(2))
            .times(2)
            .run(
                || self.livy.log_tail(self.name(), LOG_TAIL_LINES),
                LivyError::is_transient,
                |_, _| {},
            )
            .await
            .unwrap_or_else(|e| vec![format!("(batch log unavailable: {e})")])
    }

    /// Kills whatever of the task runs: the batch at Livy (`DELETE` by name, which kills its
    /// application), then any application with the task's tag YARN still runs. Confirmed when
    /// Livy deleted the batch or YARN shows nothing of the task running.
    pub async fn kill(&self) -> Kill {
        let mut notes = Vec::new();
        let window = self.timing.livy_retry_timeout.min(Duration::from_secs(30));
        let deleted = Policy::backoff(Duration::from_millis(500), Duration::from_secs(5))
            .within(window)
            .run(
                || self.livy.delete_batch(self.name()),
                LivyError::is_transient,
                |e, d| warn!(error = %e, retry_in = ?d, "batch delete failed; retrying"),
            )
            .await;
        let livy_deleted = match deleted {
            Ok(()) => {
                info!(batch_name = %self.name(), "batch deleted");
                notes.push(format!("batch {} was deleted at Livy", self.name()));
                true
            }
            Err(e) if e.is_not_found() => false,
            Err(e) => {
                notes.push(format!("livy could not delete batch {}: {e}", self.name()));
                false
            }
        };
        let yarn_clear = match self.yarn.apps_by_tag(&self.tag()).await {
            Ok(apps) => {
                let mut clear = true;
                for app in apps.into_iter().filter(|a| !a.is_final()) {
                    match self.kill_in_yarn(&app.id).await {
                        Ok(()) => notes.push(format!("application {} was killed in YARN", app.id)),
                        Err(e) => {
                            clear = false;
                            notes.push(format!("YARN could not kill application {}: {e}", app.id));
                        }
                    }
                }
                clear
            }
            Err(e) => {
                notes.push(format!(
                    "YARN could not be asked for tag {}: {e}",
                    self.tag()
                ));
                false
            }
        };
        let confirmed = livy_deleted || yarn_clear;
        if notes.is_empty() {
            notes.push("nothing of this task was running".to_owned());
        }
        let summary = notes.join("; ");
        if confirmed {
            info!(kill = %summary, "nothing of this task runs any more");
        } else {
            tracing::error!(kill = %summary, tag = %self.tag(), "could not confirm this task's application was killed; it may still run");
        }
        Kill { confirmed, summary }
    }

    /// Asks YARN to kill `id` and waits (bounded) until YARN shows it ended.
    async fn kill_in_yarn(&self, id: &str) -> Result<(), YarnError> {
        self.yarn.kill(id).await?;
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let app = self.yarn.app(id).await?;
            if app.is_final() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(YarnError::Http {
                    status: 202,
                    msg: format!("still {} after {KILL_WAIT:?}", app.state),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A failed POST, judged once.
#[derive(Debug)]
struct PostError {
    text: String,
    /// Livy may have created the batch all the same.
    may_have_created: bool,
    /// A refusal no retry changes.
    rejected: bool,
}

impl PostError {
    fn from_livy(e: LivyError) -> Self {
        PostError {
            may_have_created: e.may_have_created(),
            rejected: !e.is_transient() && !e.may_have_created(),
            text: e.to_string(),
        }
    }
}

impl From<String> for PostError {
    /// A lookup before a retry that could not answer: nothing was posted this round, and the
    /// earlier POST that prompted the lookup may still have created the batch.
    fn from(text: String) -> Self {
        PostError {
            text,
            may_have_created: true,
            rejected: false,
        }
    }
}

/// A run of failures to reach Livy or YARN while a batch is known, and its limit.
struct Outage {
    since: Option<Instant>,
    limit: Duration,
    /// The waits between tries of this outage; made when the first is needed (every resting
    /// task holds an `Outage`, few are ever in one).
    delays: Option<Box<dyn Iterator<Item = Duration> + Send + Sync>>,
    first_delay: Duration,
}

impl Outage {
    fn new(timing: &Timing) -> Self {
        Outage {
            since: None,
            limit: timing.livy_outage_limit,
            delays: None,
            first_delay: timing.sync_interval,
        }
    }

    fn is_down(&self) -> bool {
        self.since.is_some()
    }

    /// Counts a failure; `Some(reason)` once the outage has lasted past the limit.
    fn failed(&mut self, error: &str) -> Option<String> {
        let since = *self.since.get_or_insert_with(Instant::now);
        (since.elapsed() >= self.limit).then(|| {
            format!(
                "livy (or YARN, where Livy had lost the batch) did not answer for {} (--livy-outage-limit {}): {error}",
                humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
                humantime::format_duration(self.limit)
            )
        })
    }

    fn recovered(&mut self) {
        if self.since.take().is_some() {
            info!("livy answers again");
        }
        self.delays = None;
    }

    fn delay(&mut self) -> Duration {
        let first = self.first_delay;
        self.delays
            .get_or_insert_with(|| {
                Box::new(Policy::backoff(first, OUTAGE_MAX_DELAY.max(first)).delays())
            })
            .next()
            .unwrap_or(OUTAGE_MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_task_safe_in_urls_and_never_all_digits() {
        assert_eq!(
            name_for(Some("Spark Pi"), "0123456789ab"),
            "Spark Pi-0123456789ab"
        );
        assert_eq!(name_for(None, "0123456789ab"), "spark-job-0123456789ab");
        assert_eq!(
            name_for(Some("a/b?c#d%é"), "0123456789ab"),
            "a_b_c_d__-0123456789ab"
        );
        let digits = name_for(Some("2024"), "000000000000");
        assert!(!digits.bytes().all(|c| c.is_ascii_digit()), "{digits}");
        assert_ne!(
            name_for(Some("x"), "aaaaaaaaaaaa"),
            name_for(Some("x"), "bbbbbbbbbbbb")
        );
    }

    #[test]
    fn the_task_tag_is_appended_to_the_tasks_own_tags_once() {
        let mut r = CreateBatch::default();
        add_tag(&mut r, "saw-0123456789ab");
        assert_eq!(r.conf["spark.yarn.tags"], "saw-0123456789ab");
        let mut r = CreateBatch::default();
        r.conf
            .insert("spark.yarn.tags".into(), "team-a,nightly".into());
        add_tag(&mut r, "saw-0123456789ab");
        add_tag(&mut r, "saw-0123456789ab");
        assert_eq!(r.conf["spark.yarn.tags"], "team-a,nightly,saw-0123456789ab");
        assert_eq!(tag_for("0123456789AB"), "saw-0123456789ab");
    }

    #[test]
    fn seen_keeps_urls_livy_clears() {
        let mut seen = Seen::default();
        let running: livy::Batch = serde_json::from_value(
            serde_json::json!({"id":1,"state":"running","appId":"application_1_1",
            "appInfo":{"driverLogUrl":"http://nm/log","sparkUiUrl":"http://rm/ui"}}),
        )
        .expect("batch");
        let done: livy::Batch = serde_json::from_value(
            serde_json::json!({"id":1,"state":"success","appId":"application_1_1",
            "appInfo":{"driverLogUrl":null,"sparkUiUrl":"http://rm/ui"}}),
        )
        .expect("batch");
        seen.update(&running);
        seen.update(&done);
        assert_eq!(seen.state, Some(BatchState::Success));
        assert_eq!(seen.driver_log_url.as_deref(), Some("http://nm/log"));
    }
}
