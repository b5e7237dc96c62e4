//! Livy health: probe `GET /version` and publish up/down, so pollers take no work Livy cannot start.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::livy::LivyClient;

/// How often Livy is probed. Short: while it is down the worker is not polling at all.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Probes until `stop`, publishing each change. Logs only transitions, not every probe.
pub async fn watch_livy(livy: LivyClient, up: watch::Sender<bool>, stop: CancellationToken) {
    let mut last = None;
    loop {
        let result = livy.probe().await;
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
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}
