//! The Step Functions call budget: every call the worker makes — polls, heartbeats, reports —
//! waits for a token of one shared bucket (`--sfn-calls-per-second`), reports first, heartbeats
//! next, new polls last. The account's quota is shared with every other worker and application,
//! so a busy worker queues its own calls instead of spending it. A `ThrottlingException` halves
//! the rate, which then recovers over the next seconds: throttling slows the worker down and
//! fails nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::metrics::{counter, gauge, histogram};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::failure::Failure;
use crate::metrics;
use crate::sfn::{SfnError, Task, TaskToken, Tasks};

/// Which calls go first when calls wait for the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `SendTaskSuccess`/`SendTaskFailure`: a finished task waits for nothing else.
    Report = 0,
    /// `SendTaskHeartbeat`: keeps running tasks alive.
    Heartbeat = 1,
    /// `GetActivityTask`: new work, only with what is left.
    Poll = 2,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Report => "report",
            Priority::Heartbeat => "heartbeat",
            Priority::Poll => "poll",
        }
    }
}

/// The slowest the budget goes under throttling, as a share of the configured rate.
const MIN_FACTOR: f64 = 1.0 / 16.0;
/// The shortest wait for a token.
const MIN_WAIT: Duration = Duration::from_millis(1);
/// How fast the rate comes back after throttling: this share of the configured rate a second.
const RECOVERY_PER_SEC: f64 = 0.1;

/// The rate now, between throttling and recovery.
#[derive(Debug)]
struct Rate {
    factor: f64,
    since: Instant,
}

impl Rate {
    /// The factor now, recovered since the last throttle.
    fn factor(&mut self) -> f64 {
        let now = Instant::now();
        let recovered = now.duration_since(self.since).as_secs_f64() * RECOVERY_PER_SEC;
        self.factor = (self.factor + recovered).min(1.0);
        self.since = now;
        self.factor
    }
}

/// A token bucket of `rate` calls a second (bursts of up to one second's worth), granted by
/// priority. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Budget {
    queues: [mpsc::UnboundedSender<oneshot::Sender<()>>; 3],
    rate: Arc<Mutex<Rate>>,
    per_second: f64,
}

impl Budget {
    /// Starts the budget's scheduler on the current runtime.
    pub fn new(per_second: f64) -> Self {
        let per_second = per_second.max(0.1);
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let (heartbeat_tx, heartbeat_rx) = mpsc::unbounded_channel();
        let (poll_tx, poll_rx) = mpsc::unbounded_channel();
        let rate = Arc::new(Mutex::new(Rate {
            factor: 1.0,
            since: Instant::now(),
        }));
        gauge!(metrics::SFN_BUDGET).set(per_second);
        gauge!(metrics::SFN_BUDGET_RATE).set(per_second);
        tokio::spawn(grant(
            per_second,
            rate.clone(),
            [report_rx, heartbeat_rx, poll_rx],
        ));
        Budget {
            queues: [report_tx, heartbeat_tx, poll_tx],
            rate,
            per_second,
        }
    }

    /// Waits for a token. Dropping the future gives the place up without spending a token.
    pub async fn take(&self, priority: Priority) {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        if self.queues[priority as usize].send(tx).is_err() {
            return; // The scheduler is gone (runtime shutting down): do not block the call.
        }
        let _ = rx.await;
        histogram!(metrics::SFN_BUDGET_WAIT, "priority" => priority.as_str())
            .record(started.elapsed().as_secs_f64());
    }

    /// Step Functions throttled a call: halve the rate (down to a sixteenth).
    pub fn throttled(&self) {
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        let halved = (rate.factor() / 2.0).max(MIN_FACTOR);
        rate.factor = halved;
        counter!(metrics::SFN_THROTTLED).increment(1);
        gauge!(metrics::SFN_BUDGET_RATE).set(self.per_second * halved);
    }

    /// The calls a second the budget grants now.
    pub fn current(&self) -> f64 {
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        self.per_second * rate.factor()
    }
}

/// Grants tokens: one every `1 / rate` seconds, up to a second's worth saved while nobody
/// asks, each to the first waiter of the highest priority. A waiter that gave up costs nothing.
async fn grant(
    per_second: f64,
    rate: Arc<Mutex<Rate>>,
    mut queues: [mpsc::UnboundedReceiver<oneshot::Sender<()>>; 3],
) {
    let burst = per_second.max(1.0);
    let mut tokens = burst;
    let mut last = Instant::now();
    loop {
        let factor = rate.lock().unwrap_or_else(|e| e.into_inner()).factor();
        let now = Instant::now();
        let current = per_second * factor;
        gauge!(metrics::SFN_BUDGET_RATE).set(current);
        tokens = (tokens + now.duration_since(last).as_secs_f64() * current).min(burst * factor);
        last = now;
        if tokens < 1.0 {
            // At least the timer's millisecond: a wait that rounds to nothing would spin
            // without time passing for the next refill.
            let wait = Duration::from_secs_f64((1.0 - tokens) / current).max(MIN_WAIT);
            tokio::time::sleep(wait).await;
            continue;
        }
        // A token is there: the waiter of the highest priority gets it.
        let mut next = None;
        for q in &mut queues {
            if let Ok(w) = q.try_recv() {
                next = Some(w);
                break;
            }
        }
        let waiter = match next {
            Some(w) => w,
            None => {
                let [r, h, p] = &mut queues;
                tokio::select! {
                    biased;
                    Some(w) = r.recv() => w,
                    Some(w) = h.recv() => w,
                    Some(w) = p.recv() => w,
                    else => return,
                }
            }
        };
        if waiter.send(()).is_ok() {
            tokens -= 1.0;
        }
    }
}

/// Step Functions behind the budget: the client the worker's roles use.
#[derive(Debug)]
pub struct Budgeted {
    inner: Arc<dyn Tasks>,
    budget: Budget,
}

impl Budgeted {
    pub fn new(inner: Arc<dyn Tasks>, budget: Budget) -> Self {
        Budgeted { inner, budget }
    }

    fn seen<T>(&self, result: Result<T, SfnError>) -> Result<T, SfnError> {
        if let Err(SfnError::Throttled(_)) = &result {
            self.budget.throttled();
        }
        result
    }
}

#[async_trait]
impl Tasks for Budgeted {
    async fn next_task(
        &self,
        activity_arn: &str,
        worker_name: &str,
    ) -> Result<Option<Task>, SfnError> {
        self.budget.take(Priority::Poll).await;
        self.seen(self.inner.next_task(activity_arn, worker_name).await)
    }

    async fn heartbeat(&self, token: &TaskToken) -> Result<(), SfnError> {
        self.budget.take(Priority::Heartbeat).await;
        self.seen(self.inner.heartbeat(token).await)
    }

    async fn succeed(&self, token: &TaskToken, output: &str) -> Result<(), SfnError> {
        self.budget.take(Priority::Report).await;
        self.seen(self.inner.succeed(token, output).await)
    }

    async fn fail(&self, token: &TaskToken, failure: Option<&Failure>) -> Result<(), SfnError> {
        self.budget.take(Priority::Report).await;
        self.seen(self.inner.fail(token, failure).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `n` tokens at `priority` at once; returns when each was granted.
    fn takers(
        budget: &Budget,
        priority: Priority,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Instant>> {
        (0..n)
            .map(|_| {
                let b = budget.clone();
                tokio::spawn(async move {
                    b.take(priority).await;
                    Instant::now()
                })
            })
            .collect()
    }

    async fn times(handles: Vec<tokio::task::JoinHandle<Instant>>) -> Vec<Instant> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("joined"));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn no_second_has_more_calls_than_the_budget_after_the_first_burst() {
        let budget = Budget::new(10.0);
        let start = Instant::now();
        let granted = times(takers(&budget, Priority::Heartbeat, 100)).await;
        let last = *granted.iter().max().expect("some");
        // 10 at once (a second's worth), then 10 a second.
        let took = last.duration_since(start).as_secs_f64();
        assert!((8.9..=9.2).contains(&took), "{took}");
        for w in 1..9 {
            let lo = start + Duration::from_secs(w);
            let hi = lo + Duration::from_secs(1);
            let n = granted.iter().filter(|t| **t >= lo && **t < hi).count();
            assert!(n <= 10, "second {w}: {n}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reports_go_before_heartbeats_and_heartbeats_before_polls() {
        let budget = Budget::new(2.0);
        // Spend the burst, so the rest queue.
        times(takers(&budget, Priority::Poll, 2)).await;
        let polls = takers(&budget, Priority::Poll, 4);
        tokio::task::yield_now().await;
        let beats = takers(&budget, Priority::Heartbeat, 4);
        tokio::task::yield_now().await;
        let reports = takers(&budget, Priority::Report, 4);
        let (polls, beats, reports) =
            (times(polls).await, times(beats).await, times(reports).await);
        let max = |v: &[Instant]| *v.iter().max().expect("some");
        let min = |v: &[Instant]| *v.iter().min().expect("some");
        assert!(max(&reports) < min(&beats), "reports first");
        assert!(
            max(&beats) < min(&polls),
            "then heartbeats, polls last though they asked first"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_which_then_recovers() {
        let budget = Budget::new(16.0);
        budget.throttled();
        assert!((budget.current() - 8.0).abs() < 0.01);
        budget.throttled();
        budget.throttled();
        budget.throttled();
        budget.throttled();
        assert!(
            (budget.current() - 1.0).abs() < 0.01,
            "a sixteenth at least"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let back = budget.current();
        assert!((8.9..=9.1).contains(&back), "recovered half way: {back}");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!((budget.current() - 16.0).abs() < 0.01);
    }

    /// A refill that falls a hair short of a token (floating point) must not leave the
    /// scheduler waiting for a duration that rounds to zero: with time paused (and on a fast
    /// enough machine, for a while with real time) it would spin without time passing.
    #[test]
    fn grants_go_on_when_a_refill_falls_a_hair_short_of_a_token() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                for rate in [0.3, 0.7, 1.1, 2.0, 3.0, 7.0, 9.9, 10.0, 33.3, 100.0] {
                    for throttles in 0..4 {
                        let budget = Budget::new(rate);
                        for _ in 0..throttles {
                            budget.throttled();
                        }
                        times(takers(&budget, Priority::Heartbeat, 40)).await;
                    }
                }
            });
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("every grant within a minute of real time, not a scheduler spinning");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_costs_no_token() {
        let budget = Budget::new(1.0);
        budget.take(Priority::Poll).await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), budget.take(Priority::Poll)).await;
        assert!(gave_up.is_err());
        let start = Instant::now();
        budget.take(Priority::Report).await;
        assert!(start.elapsed() <= Duration::from_secs(1));
    }
}
