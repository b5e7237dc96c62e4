//! Long polls for one activity ARN: a slot first, then `GetActivityTask`, then a task that owns
//! the slot. A poll in flight is never dropped: a delivered token cannot be handed back. No poll
//! is made while Livy is down, the journal cannot be written, or the cluster has no room.

use std::sync::Arc;
use std::time::Duration;

use ::metrics::{counter, gauge};
use futures::FutureExt;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::metrics;
use crate::retry::Policy;
use crate::sfn::SfnError;
use crate::supervisor::Context;
use crate::task;
use crate::watchdog::Liveness;

/// A poll still open after this is wedged: the SDK's attempt timeout (70 s) should have ended it.
const POLL_WEDGED_AFTER: Duration = Duration::from_secs(80);

/// One poll loop. Several run per activity ARN (`--pollers-per-activity`).
pub struct Poller {
    pub ctx: Arc<Context>,
    pub activity: Arc<str>,
    pub worker_name: Arc<str>,
    /// Free supervision slots (`--max-concurrent-tasks`), shared by every poller.
    pub slots: Arc<Semaphore>,
    /// Whether Livy answers its health probe; no new work is taken while it does not.
    pub livy_up: watch::Receiver<bool>,
    /// Whether the journal takes writes; a task that cannot be journaled is not taken.
    pub journal_writable: watch::Receiver<bool>,
    /// Whether the cluster has room for another job; none is taken while it has not.
    pub room: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
    /// Where supervisors are spawned, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// This loop's signs of life for the systemd watchdog, at `index`.
    pub liveness: Arc<Liveness>,
    pub index: usize,
}

impl Poller {
    pub async fn run(mut self) {
        self.poll_loop().await;
        self.liveness.ended(self.index);
    }

    /// Awaits `fut` while telling the watchdog this loop is alive, for at most `wedged_after`.
    async fn alive<F: Future>(&self, fut: F, wedged_after: Option<Duration>) -> F::Output {
        tokio::pin!(fut);
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                _ = tick.tick() => {
                    if wedged_after.is_none_or(|limit| started.elapsed() < limit) {
                        self.liveness.beat(self.index);
                    }
                }
            }
        }
    }

    /// Waits until `gate` is open (telling the watchdog this loop is alive); `false` on shutdown.
    async fn gate_open(&self, mut gate: watch::Receiver<bool>, what: &str) -> bool {
        if *gate.borrow() {
            return true;
        }
        debug!("{what}; waiting before polling");
        self.alive(
            async {
                tokio::select! {
                    r = gate.wait_for(|open| *open) => r.is_ok(),
                    () = self.shutdown.cancelled() => false,
                }
            },
            None,
        )
        .await
    }

    async fn poll_loop(&mut self) {
        let errors_policy = Policy::backoff(Duration::from_secs(1), Duration::from_secs(60));
        let mut errors = errors_policy.delays();
        loop {
            // Capacity before polling: a token handed to us starts the task's clock at once.
            let slots = self.slots.clone();
            let permit = self
                .alive(
                    async {
                        tokio::select! {
                            p = slots.acquire_owned() => p.ok(),
                            () = self.shutdown.cancelled() => None,
                        }
                    },
                    None,
                )
                .await;
            let Some(permit) = permit else { return };
            for (gate, what) in [
                (self.livy_up.clone(), "livy is down"),
                (self.journal_writable.clone(), "the journal is not writable"),
                (self.room.clone(), "the cluster has no room for another job"),
            ] {
                if !self.gate_open(gate, what).await {
                    return;
                }
            }
            if self.shutdown.is_cancelled() {
                return;
            }
            debug!(activity = %self.activity, "polling for a task");
            // Not raced against shutdown: dropping this future could lose a delivered task.
            let poll = self.ctx.sfn.next_task(&self.activity, &self.worker_name);
            let label = metrics::activity_label(&self.activity).to_owned();
            let open = gauge!(metrics::POLLS_OPEN, "activity" => label.clone());
            open.increment(1.0);
            let polled = self.alive(poll, Some(POLL_WEDGED_AFTER)).await;
            open.decrement(1.0);
            let result = match &polled {
                Ok(Some(_)) => "task",
                Ok(None) => "empty",
                Err(_) => "error",
            };
            counter!(metrics::POLLS, "activity" => label, "result" => result).increment(1);
            match polled {
                Ok(Some(task)) => {
                    errors = errors_policy.delays();
                    if self.shutdown.is_cancelled() {
                        info!(token = %task.token, "task arrived during shutdown; failing it as Worker.ShuttingDown");
                        task::refuse(&self.ctx, &self.activity, &task).await;
                        drop(permit);
                        return;
                    }
                    // The permit is held by a `map` around the supervisor's future: an async
                    // block awaiting that future would keep room for it twice.
                    let supervised = task::delivered(self.ctx.clone(), self.activity.clone(), task);
                    self.tasks.spawn(supervised.map(move |()| drop(permit)));
                }
                Ok(None) => {
                    errors = errors_policy.delays();
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
                    let stopped = self
                        .alive(
                            async {
                                tokio::select! {
                                    () = tokio::time::sleep(delay) => false,
                                    () = self.shutdown.cancelled() => true,
                                }
                            },
                            None,
                        )
                        .await;
                    if stopped {
                        return;
                    }
                }
            }
        }
    }
}
