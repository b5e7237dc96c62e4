//! systemd watchdog (`WatchdogSec=`): pings only while every poll loop shows progress, so a wedged
//! poll loop (a poll stuck past its timeout, a loop that stopped turning) gets the service restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A poll loop that has ended (shutdown) no longer counts.
const ENDED: u64 = u64::MAX;

/// The last sign of life of each poll loop, in milliseconds since `start`.
#[derive(Debug)]
pub struct Liveness {
    start: Instant,
    beats: Vec<AtomicU64>,
}

impl Liveness {
    pub fn new(loops: usize) -> Arc<Self> {
        Arc::new(Liveness {
            start: Instant::now(),
            beats: (0..loops).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(ENDED - 1)
    }

    /// Poll loop `i` is making progress (or waiting for something legitimate).
    pub fn beat(&self, i: usize) {
        if let Some(b) = self.beats.get(i) {
            b.store(self.now(), Ordering::Relaxed);
        }
    }

    pub fn ended(&self, i: usize) {
        if let Some(b) = self.beats.get(i) {
            b.store(ENDED, Ordering::Relaxed);
        }
    }

    /// Whether every running loop beat within `window`.
    pub fn healthy(&self, window: Duration) -> bool {
        let now = self.now();
        let window = u64::try_from(window.as_millis()).unwrap_or(ENDED);
        self.beats.iter().all(|b| {
            let last = b.load(Ordering::Relaxed);
            last == ENDED || now.saturating_sub(last) <= window
        })
    }
}

/// Pings systemd every half watchdog period while `liveness` is healthy; does nothing when the
/// watchdog is not enabled for this process.
pub async fn run(liveness: Arc<Liveness>, stop: CancellationToken) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec);
    info!(period = ?period, "systemd watchdog enabled");
    let mut ticker = tokio::time::interval(period / 2);
    let mut wedged = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        if liveness.healthy(period / 2) {
            wedged = false;
            if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
                warn!(error = %e, "could not ping the systemd watchdog");
            }
        } else if !wedged {
            wedged = true;
            warn!(
                "a poll loop shows no progress; withholding the watchdog ping so systemd restarts the worker"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_stops_beating_is_unhealthy_and_an_ended_one_is_not() {
        let l = Liveness::new(2);
        l.beat(0);
        l.beat(1);
        assert!(l.healthy(Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_secs(4)).await;
        l.beat(0);
        assert!(l.healthy(Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!l.healthy(Duration::from_secs(5)), "loop 1 silent for 6 s");
        l.ended(1);
        assert!(l.healthy(Duration::from_secs(5)));
    }
}
