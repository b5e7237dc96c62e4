//! Whether this cluster can start another job soon, checked before every poll: Livy below its
//! limit of batches starting at once (`livy.server.session.max-creation`; beyond it Livy refuses
//! new ones) and, when a headroom is given, YARN with that much memory and cores free and no
//! application waiting for resources. A full cluster stops polling, so when several clusters'
//! workers poll one activity, its tasks go to the clusters with room — with no coordinator.

use std::sync::Arc;
use std::time::Duration;

use ::metrics::gauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::CapacityArgs;
use crate::livy::Livy;
use crate::metrics;
use crate::yarn::ResourceManager;

/// How often the room is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What a new job needs of the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Headroom {
    /// Poll only while fewer batches than this are starting at Livy; 0: no limit.
    pub max_starting: u32,
    /// Poll only while YARN has this much memory free (bytes).
    pub memory: Option<u64>,
    /// Poll only while YARN has this many cores free.
    pub vcores: Option<u32>,
}

impl Headroom {
    /// The headroom the capacity flags ask for.
    pub fn from_args(args: &CapacityArgs) -> Self {
        Headroom {
            max_starting: args.livy_max_starting,
            memory: args.yarn_headroom_memory,
            vcores: args.yarn_headroom_vcores,
        }
    }

    fn checks_yarn(&self) -> bool {
        self.memory.is_some() || self.vcores.is_some()
    }

    /// Whether there is anything to check; without, there is always room.
    pub fn limits(&self) -> bool {
        self.max_starting > 0 || self.checks_yarn()
    }
}

/// Why the cluster has no room now; `None` when it has, or when it cannot be told (Livy's own
/// health gates polling; an unreachable ResourceManager must not stop the worker).
pub async fn no_room(
    livy: &dyn Livy,
    yarn: &dyn ResourceManager,
    headroom: &Headroom,
) -> Option<String> {
    if headroom.max_starting > 0 {
        match livy.starting().await {
            Ok(n) if n >= headroom.max_starting as usize => {
                return Some(format!(
                    "{n} batches are starting at Livy (--livy-max-starting {})",
                    headroom.max_starting
                ));
            }
            Ok(_) => {}
            // Livy's health probe gates polling while it is down.
            Err(e) => debug!(error = %e, "cannot count the batches starting at Livy"),
        }
    }
    if !headroom.checks_yarn() {
        return None;
    }
    let m = match yarn.metrics().await {
        Ok(m) => m,
        Err(e) => {
            debug!(error = %e, "cannot read YARN's free resources; polling as if there were room");
            return None;
        }
    };
    if m.apps_pending > 0 {
        return Some(format!(
            "{} YARN applications are waiting for resources",
            m.apps_pending
        ));
    }
    let free = u64::try_from(m.available_mb).unwrap_or(0) << 20;
    if let Some(need) = headroom.memory
        && free < need
    {
        return Some(format!(
            "YARN has {} MiB free, less than --yarn-headroom-memory ({} MiB)",
            free >> 20,
            need >> 20
        ));
    }
    let cores = u64::try_from(m.available_virtual_cores).unwrap_or(0);
    if let Some(need) = headroom.vcores
        && cores < u64::from(need)
    {
        return Some(format!(
            "YARN has {cores} cores free, less than --yarn-headroom-vcores ({need})"
        ));
    }
    None
}

/// Keeps `room` up to date every [`CHECK_INTERVAL`] until `stop`, from a first check at once
/// (start `room` at `false` when there are limits, so no poll opens before it). Without any limit
/// it is set `true` and nothing is asked.
pub async fn watch(
    livy: Arc<dyn Livy>,
    yarn: Arc<dyn ResourceManager>,
    headroom: Headroom,
    room: watch::Sender<bool>,
    stop: CancellationToken,
) {
    gauge!(metrics::CLUSTER_ROOM).set(1.0);
    if !headroom.limits() {
        room.send_replace(true);
        return;
    }
    let mut first = true;
    loop {
        let why = tokio::select! {
            why = no_room(livy.as_ref(), yarn.as_ref(), &headroom) => why,
            () = stop.cancelled() => return,
        };
        let has = why.is_none();
        let changed = room.send_if_modified(|r| std::mem::replace(r, has) != has);
        if changed || (first && !has) {
            match &why {
                Some(reason) => {
                    info!(%reason, "the cluster has no room for another job; not polling")
                }
                None => info!("the cluster has room; polling"),
            }
        }
        first = false;
        gauge!(metrics::CLUSTER_ROOM).set(if has { 1.0 } else { 0.0 });
        tokio::select! {
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}
