//! The one retry policy: capped exponential backoff with jitter (so many tasks retrying against
//! one recovering endpoint do not arrive in lockstep), on tokio's clock, retrying only the errors
//! a caller names, optionally only until a deadline.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable, Sleeper};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How to retry: delays from `min` doubling to `max`, each jittered, for as long as `deadline`
/// (if any) leaves room for the next delay, at most `times` retries (if set).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    min: Duration,
    max: Duration,
    deadline: Option<Instant>,
    times: Option<usize>,
}

impl Policy {
    /// Retries without end (the caller's `when` or a cancellation ends it).
    pub fn backoff(min: Duration, max: Duration) -> Self {
        Policy {
            min,
            max: max.max(min),
            deadline: None,
            times: None,
        }
    }

    /// No retry is started whose delay would end after `window` from now.
    pub fn within(self, window: Duration) -> Self {
        Policy {
            deadline: Some(Instant::now() + window),
            ..self
        }
    }

    /// At most `times` retries after the first attempt.
    pub fn times(self, times: usize) -> Self {
        Policy {
            times: Some(times),
            ..self
        }
    }

    fn builder(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter();
        match self.times {
            Some(n) => b.with_max_times(n),
            None => b.without_max_times(),
        }
    }

    /// An endless series of delays, for loops that are not a single operation (a sync loop
    /// through an outage). Ignores `deadline` and `times`.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        Policy::backoff(self.min, self.max).builder().build()
    }

    /// Runs `op` until it succeeds, fails with an error `when` refuses, or the policy is spent.
    /// `notify` sees each error that will be retried and the delay before the retry.
    pub async fn run<T, E, F, Fut>(
        self,
        op: F,
        when: impl FnMut(&E) -> bool,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_sleeping(tokio::time::sleep, op, when, notify)
            .await
    }

    /// [`Policy::run`], but a delay before a retry ends early once `stop` is cancelled: the
    /// retry then comes at once, for `op` and `when` to end the run (`stop` cancels no call).
    pub async fn run_until<T, E, F, Fut>(
        self,
        stop: &CancellationToken,
        op: F,
        when: impl FnMut(&E) -> bool,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let stop = stop.clone();
        let sleep = move |delay| {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => {}
                }
            }
        };
        self.run_sleeping(sleep, op, when, notify).await
    }

    async fn run_sleeping<T, E, F, Fut, S>(
        self,
        sleep: S,
        op: F,
        when: impl FnMut(&E) -> bool,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        S: Sleeper,
        S::Sleep: Future<Output = ()>,
    {
        let deadline = self.deadline;
        op.retry(self.builder())
            .sleep(sleep)
            .when(when)
            .notify(notify)
            .adjust(move |_, delay| {
                delay.filter(|d| deadline.is_none_or(|end| Instant::now() + *d <= end))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_grow_and_stay_capped() {
        let d: Vec<Duration> = Policy::backoff(Duration::from_millis(100), Duration::from_secs(2))
            .delays()
            .take(20)
            .collect();
        assert_eq!(d.len(), 20, "the series never ends");
        // Jitter adds up to one more delay on top, so the cap is at most doubled.
        assert!(
            d.iter()
                .all(|x| *x >= Duration::from_millis(100) && *x <= Duration::from_secs(4)),
            "{d:?}"
        );
        assert!(d[10] >= Duration::from_secs(2), "{d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_when_allows_until_the_deadline() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let policy = Policy::backoff(Duration::from_secs(1), Duration::from_secs(4))
            .within(Duration::from_secs(30));
        let result: Result<(), &str> = policy
            .run(
                || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Err("down")
                },
                |_| true,
                |_, _| {},
            )
            .await;
        assert_eq!(result, Err("down"));
        assert!(
            started.elapsed() <= Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(
            calls.load(Ordering::Relaxed) >= 5,
            "retried while time was left"
        );

        calls.store(0, Ordering::Relaxed);
        let refused: Result<(), &str> = policy
            .run(
                || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Err("permanent")
                },
                |e| *e != "permanent",
                |_, _| {},
            )
            .await;
        assert_eq!(refused, Err("permanent"));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "a refused error is not retried"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn times_bounds_the_retries() {
        let calls = AtomicU32::new(0);
        let r: Result<(), ()> = Policy::backoff(Duration::from_millis(10), Duration::from_secs(1))
            .times(2)
            .run(
                || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Err(())
                },
                |_| true,
                |_, _| {},
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cuts_the_delay_short_and_when_ends_the_run() {
        let calls = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                stop.cancel();
            })
        };
        let r: Result<(), &str> = Policy::backoff(Duration::from_secs(60), Duration::from_secs(60))
            .run_until(
                &stop,
                || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Err("down")
                },
                |_| !stop.is_cancelled(),
                |_, _| {},
            )
            .await;
        stopper.await.expect("stopper");
        assert_eq!(r, Err("down"));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            2,
            "the first call, then one at the stop"
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "not the 60 s delay"
        );
    }
}
