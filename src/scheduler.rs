//! One YARN queue's room, read from the ResourceManager's `GET /ws/v1/cluster/scheduler`.
//!
//! Only the capacity scheduler (EMR's) is read. Its reply nests queues as
//! `queues: {queue: [...]}` under `schedulerInfo` (the root). A leaf queue has no `queues`. Each
//! queue carries:
//! - `queueName`, `state`;
//! - `resourcesUsed {memory, vCores}`;
//! - `absoluteMaxCapacity`, in percent of the cluster;
//! - on Hadoop 3, `maxEffectiveCapacity {memory, vCores}`: the same ceiling, in resources;
//! - on leaf queues, `numPendingApplications`.
//!
//! A one-element list may come as a bare object; both are read.

use serde_json::Value;

/// The most a queue may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ceiling {
    /// In resources (Hadoop 3's `maxEffectiveCapacity`): memory in MiB, cores.
    Resources { mb: i64, vcores: i64 },
    /// A share of the cluster in percent (`absoluteMaxCapacity`), when only that is given.
    Share(f64),
}

/// A leaf queue: where applications run.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// The full path from the root, e.g. `root.etl`.
    pub path: String,
    /// `RUNNING`, `STOPPED` or `DRAINING`; only a running queue accepts applications.
    pub state: String,
    pub ceiling: Ceiling,
    pub used_mb: i64,
    pub used_vcores: i64,
    /// Applications accepted but waiting for resources in this queue.
    pub pending: i64,
}

impl Queue {
    /// Memory (MiB) and cores the queue may still take, given the cluster's totals (used only
    /// when the ceiling is a share; a total of 0, not reported, sets no ceiling).
    pub fn free(&self, total_mb: i64, total_vcores: i64) -> (i64, i64) {
        let (mb, vcores) = match self.ceiling {
            Ceiling::Resources { mb, vcores } => (mb, vcores),
            // A total the ResourceManager did not give sets no ceiling.
            Ceiling::Share(pct) => {
                let share = |total: i64| {
                    if total > 0 {
                        (total as f64 * pct / 100.0).floor() as i64
                    } else {
                        i64::MAX
                    }
                };
                (share(total_mb), share(total_vcores))
            }
        };
        (
            (mb - self.used_mb).max(0),
            (vcores - self.used_vcores).max(0),
        )
    }
}

/// What the scheduler endpoint said.
#[derive(Debug, Clone, PartialEq)]
pub enum Scheduler {
    /// The capacity scheduler's leaf queues, in the order given.
    Capacity(Vec<Queue>),
    /// Another scheduler (`fairScheduler`, `fifoScheduler`), whose queues are not read.
    Other(String),
}

impl Scheduler {
    /// The leaf queue named `name`: its full path (`root.etl`) or its own name (`etl`) when
    /// only one leaf has it. `Err` says why there is none, naming the queues there are.
    pub fn find(&self, name: &str) -> Result<&Queue, String> {
        let queues = match self {
            Scheduler::Capacity(q) => q,
            Scheduler::Other(kind) => {
                return Err(format!(
                    "YARN runs the {kind}; --yarn-queue reads the capacity scheduler's queues"
                ));
            }
        };
        if let Some(q) = queues.iter().find(|q| q.path == name) {
            return Ok(q);
        }
        let by_name: Vec<&Queue> = queues
            .iter()
            .filter(|q| q.path.rsplit('.').next() == Some(name))
            .collect();
        match by_name.as_slice() {
            [q] => Ok(q),
            [] => Err(format!(
                "YARN has no leaf queue {name:?} (--yarn-queue); its leaf queues: {}",
                paths(queues)
            )),
            many => Err(format!(
                "several YARN queues are named {name:?} (--yarn-queue): {}; give the full path",
                paths(many.iter().copied())
            )),
        }
    }
}

/// The queues' paths, comma-separated.
fn paths<'a>(queues: impl IntoIterator<Item = &'a Queue>) -> String {
    queues
        .into_iter()
        .map(|q| q.path.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `GET /ws/v1/cluster/scheduler` reply.
pub fn parse(body: &[u8]) -> Result<Scheduler, String> {
    let reply: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let info = &reply["scheduler"]["schedulerInfo"];
    let kind = info["type"]
        .as_str()
        .ok_or("no scheduler.schedulerInfo.type")?;
    if kind != "capacityScheduler" {
        return Ok(Scheduler::Other(kind.to_owned()));
    }
    let root = info["queueName"].as_str().unwrap_or("root");
    let mut leaves = Vec::new();
    for q in children(info) {
        collect(q, root, &mut leaves)?;
    }
    Ok(Scheduler::Capacity(leaves))
}

/// A queue's sub-queues: `queues.queue`, a list or a single object.
fn children(q: &Value) -> Vec<&Value> {
    match &q["queues"]["queue"] {
        Value::Array(list) => list.iter().collect(),
        one @ Value::Object(_) => vec![one],
        _ => Vec::new(),
    }
}

fn collect(q: &Value, parent: &str, leaves: &mut Vec<Queue>) -> Result<(), String> {
    let name = q["queueName"].as_str().ok_or("a queue without queueName")?;
    let path = format!("{parent}.{name}");
    let subs = children(q);
    if q["queues"].is_object() || !subs.is_empty() {
        for sub in subs {
            collect(sub, &path, leaves)?;
        }
        return Ok(());
    }
    let int = |v: &Value| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64));
    let effective = &q["maxEffectiveCapacity"];
    let ceiling = match (int(&effective["memory"]), int(&effective["vCores"])) {
        (Some(mb), Some(vcores)) if mb > 0 => Ceiling::Resources { mb, vcores },
        _ => Ceiling::Share(
            q["absoluteMaxCapacity"]
                .as_f64()
                .ok_or_else(|| format!("queue {path}: no absoluteMaxCapacity"))?,
        ),
    };
    leaves.push(Queue {
        state: q["state"].as_str().unwrap_or("RUNNING").to_owned(),
        ceiling,
        used_mb: int(&q["resourcesUsed"]["memory"]).unwrap_or(0),
        used_vcores: int(&q["resourcesUsed"]["vCores"]).unwrap_or(0),
        pending: int(&q["numPendingApplications"]).unwrap_or(0),
        path,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leaf(name: &str, extra: Value) -> Value {
        let mut q = json!({
            "type": "capacitySchedulerLeafQueueInfo",
            "queueName": name,
            "state": "RUNNING",
            "absoluteMaxCapacity": 50.0,
            "resourcesUsed": {"memory": 1024, "vCores": 1},
            "numPendingApplications": 0,
        });
        q.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        q
    }

    fn reply(queues: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"scheduler": {"schedulerInfo": {
            "type": "capacityScheduler", "queueName": "root", "capacity": 100.0,
            "queues": {"queue": queues},
        }}}))
        .expect("json")
    }

    /// Hadoop 2 (EMR 5): nested queues, a share of the cluster only.
    #[test]
    fn hadoop_2_leaves_are_found_by_name_or_path_and_their_share_gives_their_room() {
        let body = reply(json!([
            {"queueName": "etl", "absoluteMaxCapacity": 60.0, "resourcesUsed": {"memory": 0, "vCores": 0},
             "queues": {"queue": [
                leaf("nightly", json!({"absoluteMaxCapacity": 25.0, "resourcesUsed": {"memory": 2048, "vCores": 2}})),
                leaf("adhoc", json!({"state": "STOPPED", "numPendingApplications": 3})),
             ]}},
            leaf("default", json!({})),
        ]));
        let s = parse(&body).expect("parsed");
        let Scheduler::Capacity(leaves) = &s else {
            panic!("{s:?}")
        };
        let paths: Vec<&str> = leaves.iter().map(|q| q.path.as_str()).collect();
        assert_eq!(
            paths,
            ["root.etl.nightly", "root.etl.adhoc", "root.default"]
        );

        let nightly = s.find("nightly").expect("found");
        assert_eq!(s.find("root.etl.nightly").expect("found"), nightly);
        assert_eq!(nightly.ceiling, Ceiling::Share(25.0));
        // A quarter of 32 GiB and 16 cores, less what it uses.
        assert_eq!(nightly.free(32768, 16), (8192 - 2048, 4 - 2));
        assert_eq!(
            nightly.free(0, 16),
            (i64::MAX - 2048, 2),
            "no total, no ceiling"
        );
        let adhoc = s.find("adhoc").expect("found");
        assert_eq!((adhoc.state.as_str(), adhoc.pending), ("STOPPED", 3));

        let err = s.find("etl").expect_err("no such queue");
        assert!(err.contains("no leaf queue \"etl\""), "{err}");
        assert!(
            err.contains("root.etl.nightly, root.etl.adhoc, root.default"),
            "{err}"
        );
    }

    /// Hadoop 3 (EMR 6, 7): the ceiling in resources; a lone queue as a bare object.
    #[test]
    fn hadoop_3_ceilings_in_resources_and_a_single_queue_as_an_object() {
        let body = reply(leaf(
            "default",
            json!({"absoluteMaxCapacity": 100.0, "maxEffectiveCapacity": {"memory": 12288, "vCores": 8},
                   "resourcesUsed": {"memory": 12288, "vCores": 3}}),
        ));
        let s = parse(&body).expect("parsed");
        let q = s.find("default").expect("found");
        assert_eq!(q.path, "root.default");
        assert_eq!(
            q.ceiling,
            Ceiling::Resources {
                mb: 12288,
                vcores: 8
            }
        );
        assert_eq!(q.free(1 << 20, 1 << 10), (0, 5), "totals do not matter");
    }

    #[test]
    fn the_same_leaf_name_under_two_parents_needs_the_full_path() {
        let body = reply(json!([
            {"queueName": "a", "queues": {"queue": [leaf("jobs", json!({}))]}},
            {"queueName": "b", "queues": {"queue": [leaf("jobs", json!({"numPendingApplications": 2}))]}},
        ]));
        let s = parse(&body).expect("parsed");
        let err = s.find("jobs").expect_err("no such queue");
        assert!(err.contains("root.a.jobs, root.b.jobs"), "{err}");
        assert_eq!(s.find("root.b.jobs").expect("found").pending, 2);
    }

    #[test]
    fn other_schedulers_are_named_and_garbage_is_an_error() {
        let fair = br#"{"scheduler":{"schedulerInfo":{"type":"fairScheduler","rootQueue":{}}}}"#;
        let s = parse(fair).expect("parsed");
        assert_eq!(s, Scheduler::Other("fairScheduler".into()));
        let err = s.find("default").expect_err("no such queue");
        assert!(err.contains("fairScheduler"), "{err}");
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"scheduler":{}}"#).is_err());
    }
}
