//! Where a supervised task comes from: a delivery (validated, named, tagged and journaled at
//! once), an entry of the journal after a restart, or a delivery refused during shutdown. Each
//! becomes one [`Supervisor`], run in a span naming the activity and the token's short hash.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use ::metrics::counter;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};
use url::Url;

use crate::batch::Batch;
use crate::connect;
use crate::failure::{ErrorName, Failure};
use crate::journal::{Entry, Record};
use crate::livy::Livy;
use crate::metrics;
use crate::outcome::Outcome;
use crate::request::{self, Refused};
use crate::sfn::{Task, TaskToken};
use crate::supervisor::{Context, Reporter, Supervisor, panic_message};
use crate::yarn::ResourceManager;

/// Supervises a newly delivered task to its single report. Never panics.
///
/// The delivery is taken in a box of its own, freed once the supervisor runs: a task rests for
/// nearly all its life in [`Supervisor::run`], and its future is then no larger than that (the
/// input, up to 256 KiB, is dropped as soon as it is read).
pub fn delivered(
    ctx: Arc<Context>,
    activity: Arc<str>,
    task: Task,
) -> impl Future<Output = ()> + Send {
    let key = task.token.short_hash();
    let span = task_span(&activity, &key);
    supervised(span, admit(ctx, activity, task, key))
}

/// Runs `admission` in a box of its own, then the supervisor it makes, both in `span`: the
/// spawned future keeps room for the supervisor's and nothing besides.
fn supervised(
    span: tracing::Span,
    admission: impl Future<Output = Option<Box<Supervisor>>> + Send + 'static,
) -> impl Future<Output = ()> + Send {
    let admitted = Box::pin(admission.instrument(span.clone()));
    async move {
        if let Some(supervisor) = admitted.await {
            supervisor.run().instrument(span).await;
        }
    }
}

/// A delivered task, validated and journaled: its supervisor, or `None` once a task that cannot
/// run has had its report.
async fn admit(
    ctx: Arc<Context>,
    activity: Arc<str>,
    task: Task,
    key: String,
) -> Option<Box<Supervisor>> {
    let label = metrics::shared_activity_label(&activity);
    counter!(metrics::TASKS_RECEIVED, "activity" => label.to_string()).increment(1);
    let delivered_at = Instant::now();
    {
        let reporter = Reporter {
            sfn: ctx.sfn.clone(),
            token: task.token.clone(),
            activity: label.clone(),
            since: SystemTime::now(),
            record: None,
        };
        let prepared =
            std::panic::catch_unwind(AssertUnwindSafe(|| prepare(&ctx, &activity, &task, &key)));
        drop(task);
        let ready = match prepared {
            Ok(Ok(ready)) => ready,
            Ok(Err(refused)) => {
                // Not journaled: nothing reached Livy, and the report goes out at once.
                let failure = refused.failure();
                match refused {
                    Refused::Invalid(_) => warn!(cause = %failure.cause, "invalid task input"),
                    Refused::Forbidden(_) => {
                        warn!(cause = %failure.cause, "task input forbidden by the policy")
                    }
                }
                Box::pin(reporter.deliver(&Outcome::Failure(failure))).await;
                return None;
            }
            Err(panic) => {
                let msg = panic_message(panic.as_ref());
                error!(panic = %msg, "panicked reading the task input");
                let failure = Failure::new(
                    ErrorName::Panicked,
                    format!("spark-activity-worker bug: panicked reading the task input: {msg}"),
                );
                Box::pin(reporter.deliver(&Outcome::Failure(failure))).await;
                return None;
            }
        };
        info!("task received");
        // In a block of its own, so that the entry is not kept in the task's future.
        let (record, batch) = {
            let (entry, livy, yarn) = *ready;
            let record = Arc::new(Record::new(ctx.journal.clone(), key.clone(), entry, false));
            let batch = Batch::new(
                livy,
                yarn,
                record.clone(),
                ctx.settings.timing.clone(),
                false,
            )
            .delivered_at(delivered_at, label.clone());
            (record, batch)
        };
        // Journaled before anything else: from here on a restarted worker resumes the task. A
        // failed write is retried before the POST (the batch waits for it).
        let _ = Box::pin(record.save()).await;
        Some(Box::new(Supervisor {
            ctx: ctx.clone(),
            reporter: Reporter {
                record: Some(record.clone()),
                ..reporter
            },
            record,
            batch,
            resumed: false,
            pending: None,
        }))
    }
}

/// Resumes a task from the journal after a restart: deliver its pending report, or find its
/// batch (by name at Livy, by tag in YARN) and follow it, or submit it if neither has it. As
/// with a delivery, the entry is read in a box of its own, freed once the supervisor runs.
pub fn resumed(
    ctx: Arc<Context>,
    key: String,
    entry: Box<Entry>,
) -> impl Future<Output = ()> + Send {
    let span = task_span(&entry.activity_arn, &key);
    supervised(span, readmit(ctx, key, entry))
}

/// A journal entry made a supervisor again, or `None` once one that cannot be resumed has had
/// its report.
async fn readmit(ctx: Arc<Context>, key: String, entry: Box<Entry>) -> Option<Box<Supervisor>> {
    let activity = entry.activity_arn.clone();
    {
        let token = TaskToken::new(entry.task_token.clone());
        let since = entry
            .created_at
            .as_deref()
            .and_then(|c| humantime::parse_rfc3339(c).ok())
            .unwrap_or_else(SystemTime::now);
        let reporter = Reporter {
            sfn: ctx.sfn.clone(),
            token,
            activity: metrics::shared_activity_label(&activity),
            since,
            record: None,
        };
        let pending = entry.report.as_ref().map(Outcome::from_report);
        let base = match Url::parse(&entry.livy_url) {
            // An entry written before URLs were refused credentials may hold some: never use
            // (and so never report) them.
            Ok(mut url) => {
                let _ = url.set_password(None);
                let _ = url.set_username("");
                url
            }
            Err(e) => {
                error!(error = %e, "journal entry has a bad Livy URL");
                let f = Failure::new(
                    ErrorName::Unknown,
                    format!(
                        "the journal entry of batch {} has a bad Livy URL ({e}); whether it runs is unknown",
                        entry.batch_name
                    ),
                );
                metrics::resumed("bad_entry");
                Box::pin(reporter.deliver(&Outcome::Failure(f))).await;
                Record::new(ctx.journal.clone(), key, *entry, true)
                    .forget()
                    .await;
                return None;
            }
        };
        let span = tracing::Span::current();
        span.record("batch_name", &*entry.batch_name);
        if let Some(id) = entry.batch_id {
            span.record("batch_id", id);
        }
        if let Some(execution) = &entry.execution {
            span.record("execution", execution.as_str());
        }
        match &pending {
            Some(_) => {
                metrics::resumed("report");
                info!("resuming: delivering the journaled report");
            }
            None => {
                info!(batch_id = ?entry.batch_id, batch_name = %entry.batch_name, "resuming task from the journal")
            }
        }
        let (livy, yarn) = connect::for_url(&ctx.livy, &ctx.yarn, &base);
        let record = Arc::new(Record::new(ctx.journal.clone(), key, *entry, true));
        let batch = Batch::new(
            livy,
            yarn,
            record.clone(),
            ctx.settings.timing.clone(),
            true,
        );
        Some(Box::new(Supervisor {
            ctx: ctx.clone(),
            reporter: Reporter {
                record: Some(record.clone()),
                ..reporter
            },
            record,
            batch,
            resumed: true,
            pending,
        }))
    }
}

/// Fails a task without running it: it arrived while the worker was shutting down.
pub async fn refuse(ctx: &Context, activity: &str, task: &Task) {
    let key = task.token.short_hash();
    let failure = Failure::new(
        ErrorName::ShuttingDown,
        "the worker was shutting down when this task arrived; it never reached Livy and can be retried",
    );
    Reporter {
        sfn: ctx.sfn.clone(),
        token: task.token.clone(),
        activity: metrics::shared_activity_label(activity),
        since: SystemTime::now(),
        record: None,
    }
    .deliver(&Outcome::Failure(failure))
    .instrument(task_span(activity, &key))
    .await;
}

/// Every line of a task carries these: the activity's name, the token's hash, and, once known,
/// the batch's name and id and the execution's name (from the optional `ExecutionId`).
fn task_span(activity: &str, key: &str) -> tracing::Span {
    info_span!(
        "task",
        activity = %metrics::activity_label(activity),
        token = %key,
        batch_name = tracing::field::Empty,
        batch_id = tracing::field::Empty,
        execution = tracing::field::Empty,
    )
}

type Ready = (Entry, Arc<dyn Livy>, Arc<dyn ResourceManager>);

/// Input → a journal entry and the clients to run it with (boxed: the delivery's future keeps
/// the result while it is read).
fn prepare(
    ctx: &Context,
    activity: &Arc<str>,
    task: &Task,
    key: &str,
) -> Result<Box<Ready>, Refused> {
    let ready = request::prepare(&ctx.settings.request, ctx.livy.base(), &task.input, key)?;
    if let Some(execution) = &ready.execution {
        tracing::Span::current().record("execution", execution.as_str());
    }
    tracing::Span::current().record("batch_name", ready.request.name.as_str());
    let mut entry = Entry::new(
        task.token.shared(),
        activity.clone(),
        ready.livy_url.to_string(),
        ready.name,
        ready.request,
    );
    entry.execution = ready.execution;
    let (livy, yarn) = connect::for_url(&ctx.livy, &ctx.yarn, &ready.livy_url);
    Ok(Box::new((entry, livy, yarn)))
}
