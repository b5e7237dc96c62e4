//! Long polls for one activity ARN: a slot first, then `GetActivityTask`, then a supervisor that
//! owns the slot. A poll in flight is never dropped: a delivered token cannot be handed back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::backoff;
use crate::sfn::SfnError;
use crate::supervisor::{self, Context};

/// One poll loop. Several run per activity ARN (`--pollers-per-activity`).
pub struct Poller {
    pub ctx: Arc<Context>,
    pub activity: Arc<str>,
    pub worker_name: Arc<str>,
    /// Free supervision slots (`--max-concurrent-tasks`), shared by every poller.
    pub slots: Arc<Semaphore>,
    /// Whether Livy answers its health probe; no new work is taken while it does not.
    pub livy_up: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
    /// Where supervisors are spawned, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl Poller {
    pub async fn run(mut self) {
        let mut errors = backoff::delays(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            // Capacity before polling: a token handed to us starts the task's clock at once.
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = self.shutdown.cancelled() => return,
            };
            if !*self.livy_up.borrow() {
                debug!("livy is down; waiting before polling");
                tokio::select! {
                    r = self.livy_up.wait_for(|up| *up) => if r.is_err() { return },
                    () = self.shutdown.cancelled() => return,
                }
            }
            if self.shutdown.is_cancelled() {
                return;
            }
            debug!(activity = %self.activity, "polling for a task");
            // Not raced against shutdown: dropping this future could lose a delivered task.
            match self
                .ctx
                .sfn
                .next_task(&self.activity, &self.worker_name)
                .await
            {
                Ok(Some(task)) => {
                    errors = backoff::delays(Duration::from_secs(1), Duration::from_secs(60));
                    if self.shutdown.is_cancelled() {
                        info!(token = %task.token, "task arrived during shutdown; failing it as Worker.ShuttingDown");
                        supervisor::refuse(&self.ctx, &self.activity, &task).await;
                        drop(permit);
                        return;
                    }
                    let ctx = self.ctx.clone();
                    let activity = self.activity.clone();
                    self.tasks.spawn(async move {
                        supervisor::supervise(ctx, activity, task).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    errors = backoff::delays(Duration::from_secs(1), Duration::from_secs(60));
                }
                Err(e) => {
                    let delay = errors.next().unwrap_or(Duration::from_secs(60));
                    match &e {
                        SfnError::Activity { .. } => {
                            error!(activity = %self.activity, error = %e, retry_in = ?delay, "cannot poll this activity")
                        }
                        _ => {
                            warn!(activity = %self.activity, error = %e, retry_in = ?delay, "poll failed")
                        }
                    }
                    drop(permit);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}
