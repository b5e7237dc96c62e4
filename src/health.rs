//! What gates polling: Livy answering its probe, and the journal taking writes. Each is published
//! on a watch channel; pollers take no new work while either is down.

use std::sync::Arc;
use std::time::Duration;

use ::metrics::gauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::journal::Journal;
use crate::livy::{Livy, LivyError};
use crate::metrics;

/// How often Livy is probed, and an unwritable journal retried. Short: while either is down the
/// worker is not polling at all.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Probes Livy until `stop`, publishing each change. Logs only transitions, not every probe.
/// Returns early with the error when Livy's certificate is not trusted: that is a configuration
/// fault for the daemon to act on, not an outage to wait out.
pub async fn watch_livy(
    livy: Arc<dyn Livy>,
    up: watch::Sender<bool>,
    stop: CancellationToken,
) -> Result<(), LivyError> {
    let mut last = None;
    loop {
        let result = livy.probe().await;
        if let Err(e @ LivyError::Tls(_)) = result {
            up.send_replace(false);
            gauge!(metrics::LIVY_UP).set(0.0);
            return Err(e);
        }
        let now_up = result.is_ok();
        if last != Some(now_up) {
            last = Some(now_up);
            match result {
                Ok(()) => info!(livy = %livy.base(), "livy is up; polling for tasks"),
                Err(e) => {
                    warn!(livy = %livy.base(), error = %e, "livy is down; not polling for new tasks")
                }
            }
            up.send_replace(now_up);
            gauge!(metrics::LIVY_UP).set(if now_up { 1.0 } else { 0.0 });
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// While the journal is unwritable, tries a probe write every interval until one succeeds
/// (the journal then reports itself writable, and polling resumes).
pub async fn watch_journal(journal: Journal, stop: CancellationToken) {
    let mut writable = journal.writable();
    loop {
        tokio::select! {
            r = writable.wait_for(|w| !*w) => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = stop.cancelled() => return,
            }
            let probe = journal.clone();
            let result = tokio::task::spawn_blocking(move || probe.probe())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let ok = result.is_ok();
            journal.note_write(&result);
            if ok {
                break;
            }
        }
    }
}
