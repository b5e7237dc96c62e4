//! Whether this cluster can start another job soon, checked before every poll: Livy below its
//! limit of batches starting at once (`livy.server.session.max-creation`; beyond it Livy refuses
//! new ones) and, when a headroom is given, YARN with that much memory and cores free and no
//! application waiting for resources: in the whole cluster, or in the queue `--yarn-queue`
//! names (its ceiling, never more than the cluster has free). A full cluster stops polling, so when several clusters'
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
use crate::scheduler::Queue;
use crate::yarn::{ClusterMetrics, ResourceManager};

/// How often the room is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What a new job needs of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headroom {
    /// Poll only while fewer batches than this are starting at Livy; 0: no limit.
    pub max_starting: u32,
    /// Poll only while YARN has this much memory free (bytes).
    pub memory: Option<u64>,
    /// Poll only while YARN has this many cores free.
    pub vcores: Option<u32>,
    /// Measure the room in this queue (its ceiling, its waiting applications) instead of the
    /// whole cluster.
    pub queue: Option<String>,
}

impl Headroom {
    /// The headroom the capacity flags ask for.
    pub fn from_args(args: &CapacityArgs) -> Self {
        Headroom {
            max_starting: args.livy_max_starting,
            memory: args.yarn_headroom_memory,
            vcores: args.yarn_headroom_vcores,
            queue: args.yarn_queue.clone(),
        }
    }

    fn checks_yarn(&self) -> bool {
        self.memory.is_some() || self.vcores.is_some() || self.queue.is_some()
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
    let Some(name) = &headroom.queue else {
        return yarn_room(headroom, &m, None);
    };
    match yarn.scheduler().await {
        Ok(s) => match s.find(name) {
            Ok(q) => yarn_room(headroom, &m, Some(q)),
            // A queue that is not there takes no job; say so rather than poll.
            Err(why) => Some(why),
        },
        Err(e) => {
            debug!(error = %e, "cannot read YARN's queues; polling as if there were room");
            None
        }
    }
}

/// Whether YARN has the headroom: in the cluster, or in `queue` (its ceiling, and never more
/// than the cluster has free).
fn yarn_room(headroom: &Headroom, m: &ClusterMetrics, queue: Option<&Queue>) -> Option<String> {
    let (mut free_mb, mut cores) = (m.available_mb, m.available_virtual_cores);
    let mut place = String::from("YARN");
    match queue {
        Some(q) => {
            if q.state != "RUNNING" {
                return Some(format!("YARN queue {} is {}", q.path, q.state));
            }
            if q.pending > 0 {
                return Some(format!(
                    "{} applications are waiting for resources in YARN queue {}",
                    q.pending, q.path
                ));
            }
            let (mb, vcores) = q.free(m.total_mb, m.total_virtual_cores);
            free_mb = free_mb.min(mb);
            cores = cores.min(vcores);
            place = format!("YARN queue {}", q.path);
        }
        None if m.apps_pending > 0 => {
            return Some(format!(
                "{} YARN applications are waiting for resources",
                m.apps_pending
            ));
        }
        None => {}
    }
    let free = u64::try_from(free_mb).unwrap_or(0) << 20;
    if let Some(need) = headroom.memory
        && free < need
    {
        return Some(format!(
            "{place} has {} MiB free, less than --yarn-headroom-memory ({} MiB)",
            free >> 20,
            need >> 20
        ));
    }
    let cores = u64::try_from(cores).unwrap_or(0);
    if let Some(need) = headroom.vcores
        && cores < u64::from(need)
    {
        return Some(format!(
            "{place} has {cores} cores free, less than --yarn-headroom-vcores ({need})"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Ceiling;

    fn cluster(available_mb: i64, available_vcores: i64, pending: i64) -> ClusterMetrics {
        ClusterMetrics {
            available_mb,
            available_virtual_cores: available_vcores,
            apps_pending: pending,
            total_mb: 32768,
            total_virtual_cores: 16,
        }
    }

    fn queue(share: f64, used_mb: i64, used_vcores: i64) -> Queue {
        Queue {
            path: "root.etl".into(),
            state: "RUNNING".into(),
            ceiling: Ceiling::Share(share),
            used_mb,
            used_vcores,
            pending: 0,
        }
    }

    fn needs(memory_mib: u64, vcores: u32) -> Headroom {
        Headroom {
            max_starting: 0,
            memory: Some(memory_mib << 20),
            vcores: Some(vcores),
            queue: Some("etl".into()),
        }
    }

    #[test]
    fn a_queue_has_room_up_to_its_ceiling_and_never_more_than_the_cluster_has_free() {
        let h = needs(4096, 2);
        // A quarter of 32 GiB is 8 GiB; 6 GiB used leaves 2 GiB, though the cluster has 20 free.
        let why = yarn_room(&h, &cluster(20480, 12, 0), Some(&queue(25.0, 6144, 1)));
        assert_eq!(
            why.as_deref(),
            Some(
                "YARN queue root.etl has 2048 MiB free, less than --yarn-headroom-memory (4096 MiB)"
            )
        );
        assert_eq!(
            yarn_room(&h, &cluster(20480, 12, 0), Some(&queue(25.0, 4096, 1))),
            None
        );
        // Room in the queue, but the cluster itself is full.
        let why = yarn_room(&h, &cluster(1024, 12, 0), Some(&queue(100.0, 0, 0)));
        assert!(why.is_some_and(|w| w.contains("1024 MiB free")));
        let why = yarn_room(&h, &cluster(20480, 12, 0), Some(&queue(25.0, 0, 3)));
        assert_eq!(
            why.as_deref(),
            Some("YARN queue root.etl has 1 cores free, less than --yarn-headroom-vcores (2)")
        );
    }

    #[test]
    fn a_queue_that_waits_or_is_stopped_has_no_room_and_other_queues_waiting_do_not_matter() {
        let h = needs(1024, 1);
        let mut q = queue(50.0, 0, 0);
        // Another queue's application waits: this one still has room.
        assert_eq!(yarn_room(&h, &cluster(20480, 12, 4), Some(&q)), None);
        q.pending = 2;
        assert_eq!(
            yarn_room(&h, &cluster(20480, 12, 0), Some(&q)).as_deref(),
            Some("2 applications are waiting for resources in YARN queue root.etl")
        );
        q.pending = 0;
        q.state = "STOPPED".into();
        assert_eq!(
            yarn_room(&h, &cluster(20480, 12, 0), Some(&q)).as_deref(),
            Some("YARN queue root.etl is STOPPED")
        );
    }

    #[test]
    fn without_a_queue_the_whole_cluster_is_measured() {
        let h = Headroom {
            queue: None,
            ..needs(2048, 1)
        };
        assert_eq!(
            yarn_room(&h, &cluster(1024, 12, 0), None).as_deref(),
            Some("YARN has 1024 MiB free, less than --yarn-headroom-memory (2048 MiB)")
        );
        assert_eq!(
            yarn_room(&h, &cluster(4096, 12, 1), None).as_deref(),
            Some("1 YARN applications are waiting for resources")
        );
        assert_eq!(yarn_room(&h, &cluster(4096, 12, 0), None), None);
        // A queue alone (no headroom given) still checks the queue.
        let only_queue = Headroom {
            queue: Some("etl".into()),
            ..Headroom::default()
        };
        assert!(only_queue.limits());
        assert_eq!(
            yarn_room(&only_queue, &cluster(0, 0, 0), Some(&queue(50.0, 0, 0))),
            None
        );
    }
}
