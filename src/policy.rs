//! The operator's policy over what a task may ask of the cluster: who the job runs as, where its
//! code comes from, which Spark settings it may touch, which queue it uses and how big it gets.
//! Checked on the final `POST /batches` body, before anything reaches Livy; every violation is
//! named (the rule's flag and the task's field) in one `SparkJob.Forbidden` cause.

use crate::input::memory_bytes;
use crate::livy::CreateBatch;

/// Spark settings a task may not set unless the operator says otherwise: another identity's
/// credentials, and the class path of the driver (code the cluster would run as the job's user).
pub const DEFAULT_DENIED_CONF_PREFIXES: [&str; 5] = [
    "spark.yarn.keytab",
    "spark.yarn.principal",
    "spark.kerberos.",
    "spark.driver.extraClassPath",
    "spark.executor.extraClassPath",
];

/// The operator's rules. Empty allow-lists mean "anything" except for proxy users, where empty
/// means "none may be named".
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allowed_proxy_users: Vec<String>,
    pub allowed_file_prefixes: Vec<String>,
    pub denied_conf_prefixes: Vec<String>,
    pub allowed_queues: Vec<String>,
    pub max_executors: Option<u32>,
    pub max_cores: Option<u32>,
    /// Bytes.
    pub max_memory: Option<u64>,
}

/// What a task asked for that the policy forbids: one line per violation, joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Forbidden(pub Vec<String>);

/// Executor counts: the fixed count, and what dynamic allocation may reach.
const EXECUTOR_COUNT_KEYS: [&str; 4] = [
    "spark.executor.instances",
    "spark.dynamicAllocation.maxExecutors",
    "spark.dynamicAllocation.initialExecutors",
    "spark.dynamicAllocation.minExecutors",
];
const CORE_KEYS: [&str; 2] = ["spark.executor.cores", "spark.driver.cores"];
const MEMORY_KEYS: [&str; 2] = ["spark.executor.memory", "spark.driver.memory"];
const QUEUE_KEY: &str = "spark.yarn.queue";
const MAX_EXECUTORS_KEY: &str = "spark.dynamicAllocation.maxExecutors";

impl Policy {
    /// Checks `req`; with --max-executors, a request that does not bound dynamic allocation gets
    /// `spark.dynamicAllocation.maxExecutors` set to the cap (EMR turns dynamic allocation on by
    /// default, and without a bound a job could grow to the whole cluster).
    pub fn apply(&self, req: &mut CreateBatch) -> Result<(), Forbidden> {
        let mut v = Vec::new();
        self.identity(req, &mut v);
        self.code(req, &mut v);
        self.conf(req, &mut v);
        self.queue(req, &mut v);
        self.size(req, &mut v);
        if !v.is_empty() {
            return Err(Forbidden(v));
        }
        if let Some(cap) = self.max_executors {
            req.conf
                .entry(MAX_EXECUTORS_KEY.to_owned())
                .or_insert_with(|| cap.to_string());
        }
        Ok(())
    }

    fn identity(&self, req: &CreateBatch, v: &mut Vec<String>) {
        if let Some(user) = &req.proxy_user
            && !self.allowed_proxy_users.iter().any(|u| u == user)
        {
            v.push(format!(
                "ProxyUser {user:?} is not allowed by --allowed-proxy-user ({})",
                listed(&self.allowed_proxy_users, "none may be named")
            ));
        }
    }

    fn code(&self, req: &CreateBatch, v: &mut Vec<String>) {
        if self.allowed_file_prefixes.is_empty() {
            return;
        }
        let fields = [
            ("Jars", &req.jars),
            ("PyFiles", &req.py_files),
            ("Files", &req.files),
            ("Archives", &req.archives),
        ];
        let mut check = |field: String, uri: &str| {
            if !self
                .allowed_file_prefixes
                .iter()
                .any(|p| uri.starts_with(p.as_str()))
            {
                v.push(format!(
                    "{field} {uri:?} is not under an --allowed-file-prefix ({})",
                    listed(&self.allowed_file_prefixes, "")
                ));
            }
        };
        check("File".to_owned(), &req.file);
        for (field, uris) in fields {
            for (i, uri) in uris.iter().enumerate() {
                check(format!("{field}[{i}]"), uri);
            }
        }
    }

    fn conf(&self, req: &CreateBatch, v: &mut Vec<String>) {
        for key in req.conf.keys() {
            let lower = key.to_ascii_lowercase();
            if let Some(rule) = self
                .denied_conf_prefixes
                .iter()
                .find(|p| lower.starts_with(&p.to_ascii_lowercase()))
            {
                v.push(format!(
                    "Conf {key:?} is denied by --denied-conf-prefix {rule:?}"
                ));
            }
        }
    }

    fn queue(&self, req: &CreateBatch, v: &mut Vec<String>) {
        if self.allowed_queues.is_empty() {
            return;
        }
        let asked = [
            ("Queue".to_owned(), req.queue.as_deref()),
            (
                format!("Conf {QUEUE_KEY:?}"),
                req.conf.get(QUEUE_KEY).map(String::as_str),
            ),
        ];
        for (field, queue) in asked {
            match queue {
                Some(q) if !self.allowed_queues.iter().any(|a| a == q) => v.push(format!(
                    "{field} {q:?} is not allowed by --allowed-queue ({})",
                    listed(&self.allowed_queues, "")
                )),
                _ => {}
            }
        }
        if req.queue.is_none() && !req.conf.contains_key(QUEUE_KEY) {
            // Without a queue YARN picks its default, which the operator may not have listed.
            if !self.allowed_queues.iter().any(|a| a == "default") {
                v.push(format!(
                    "Queue is required: --allowed-queue lists {} and not YARN's default queue",
                    listed(&self.allowed_queues, "")
                ));
            }
        }
    }

    fn size(&self, req: &CreateBatch, v: &mut Vec<String>) {
        let conf = |k: &str| req.conf.get(k).map(String::as_str);
        if let Some(cap) = self.max_executors {
            let typed = [("NumExecutors", req.num_executors)];
            over_count(req, &typed, &EXECUTOR_COUNT_KEYS, cap, "--max-executors", v);
        }
        if let Some(cap) = self.max_cores {
            let typed = [
                ("ExecutorCores", req.executor_cores),
                ("DriverCores", req.driver_cores),
            ];
            over_count(req, &typed, &CORE_KEYS, cap, "--max-cores", v);
        }
        if let Some(cap) = self.max_memory {
            let mut asked: Vec<(String, Option<&str>)> = vec![
                ("ExecutorMemory".into(), req.executor_memory.as_deref()),
                ("DriverMemory".into(), req.driver_memory.as_deref()),
            ];
            asked.extend(MEMORY_KEYS.iter().map(|k| (format!("Conf {k:?}"), conf(k))));
            for (field, value) in asked {
                let Some(value) = value else { continue };
                match memory_bytes(value) {
                    Some(bytes) if bytes <= cap => {}
                    Some(_) => v.push(format!(
                        "{field} {value:?} is over --max-memory ({})",
                        show_bytes(cap)
                    )),
                    None => v.push(format!(
                        "{field} {value:?} is not a memory size, and --max-memory needs one"
                    )),
                }
            }
        }
    }
}

/// Each typed count, then each conf key's value, against `cap`.
fn over_count(
    req: &CreateBatch,
    typed: &[(&str, Option<u32>)],
    conf_keys: &[&str],
    cap: u32,
    rule: &str,
    v: &mut Vec<String>,
) {
    let asked = typed
        .iter()
        .map(|(field, n)| ((*field).to_owned(), n.map(|n| n.to_string())))
        .chain(
            conf_keys
                .iter()
                .map(|k| (format!("Conf {k:?}"), req.conf.get(*k).cloned())),
        );
    for (field, value) in asked {
        let Some(value) = value else { continue };
        match value.trim().parse::<u64>() {
            Ok(n) if n <= u64::from(cap) => {}
            Ok(_) => v.push(format!("{field} {value} is over {rule} ({cap})")),
            Err(_) => v.push(format!(
                "{field} {value:?} is not a whole number, and {rule} needs one"
            )),
        }
    }
}

fn listed(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        format!("allowed: {}", items.join(", "))
    }
}

fn show_bytes(n: u64) -> String {
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    if n.is_multiple_of(G) {
        format!("{}g", n / G)
    } else if n.is_multiple_of(M) {
        format!("{}m", n / M)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateBatch {
        CreateBatch {
            file: "s3://etl-code/jobs/pi.py".into(),
            name: "n".into(),
            ..CreateBatch::default()
        }
    }

    fn locked_down() -> Policy {
        Policy {
            allowed_proxy_users: vec!["etl".into()],
            allowed_file_prefixes: vec!["s3://etl-code/".into(), "local:///usr/lib/spark/".into()],
            denied_conf_prefixes: DEFAULT_DENIED_CONF_PREFIXES.map(String::from).to_vec(),
            allowed_queues: vec!["etl".into(), "default".into()],
            max_executors: Some(20),
            max_cores: Some(4),
            max_memory: Some(8 << 30),
        }
    }

    #[test]
    fn a_request_within_the_policy_passes_and_dynamic_allocation_gets_the_cap() {
        let mut req = request();
        req.proxy_user = Some("etl".into());
        req.jars = vec!["local:///usr/lib/spark/jars/x.jar".into()];
        req.num_executors = Some(20);
        req.executor_memory = Some("8g".into());
        req.driver_memory = Some("8192m".into());
        req.executor_cores = Some(4);
        req.queue = Some("etl".into());
        locked_down().apply(&mut req).expect("allowed");
        assert_eq!(
            req.conf.get(MAX_EXECUTORS_KEY).map(String::as_str),
            Some("20")
        );
    }

    #[test]
    fn every_violation_is_named_with_its_rule_and_field() {
        let mut req = request();
        req.file = "hdfs:///tmp/evil.jar".into();
        req.jars = vec!["s3://etl-code/ok.jar".into(), "https://x/evil.jar".into()];
        req.proxy_user = Some("hdfs".into());
        req.queue = Some("prod".into());
        req.num_executors = Some(21);
        req.executor_cores = Some(5);
        req.driver_memory = Some("9g".into());
        for (k, val) in [
            ("spark.yarn.keytab", "/etc/hdfs.keytab"),
            ("Spark.Kerberos.principal", "hdfs"),
            ("spark.driver.extraClassPath", "/tmp"),
            ("spark.dynamicAllocation.maxExecutors", "1000"),
            ("spark.executor.memory", "lots"),
        ] {
            req.conf.insert(k.into(), val.into());
        }
        let Forbidden(v) = locked_down().apply(&mut req).expect_err("forbidden");
        let expected = [
            "ProxyUser \"hdfs\" is not allowed by --allowed-proxy-user (allowed: etl)",
            "File \"hdfs:///tmp/evil.jar\" is not under an --allowed-file-prefix (allowed: s3://etl-code/, local:///usr/lib/spark/)",
            "Jars[1] \"https://x/evil.jar\" is not under an --allowed-file-prefix",
            "Conf \"Spark.Kerberos.principal\" is denied by --denied-conf-prefix \"spark.kerberos.\"",
            "Conf \"spark.driver.extraClassPath\" is denied by --denied-conf-prefix \"spark.driver.extraClassPath\"",
            "Conf \"spark.yarn.keytab\" is denied by --denied-conf-prefix \"spark.yarn.keytab\"",
            "Queue \"prod\" is not allowed by --allowed-queue (allowed: etl, default)",
            "NumExecutors 21 is over --max-executors (20)",
            "Conf \"spark.dynamicAllocation.maxExecutors\" 1000 is over --max-executors (20)",
            "ExecutorCores 5 is over --max-cores (4)",
            "DriverMemory \"9g\" is over --max-memory (8g)",
            "Conf \"spark.executor.memory\" \"lots\" is not a memory size",
        ];
        for e in expected {
            assert!(
                v.iter().any(|line| line.starts_with(e)),
                "missing {e:?} in {v:#?}"
            );
        }
        assert_eq!(v.len(), expected.len(), "{v:#?}");
    }

    #[test]
    fn defaults_deny_named_proxy_users_and_credential_conf_only() {
        let policy = Policy {
            denied_conf_prefixes: DEFAULT_DENIED_CONF_PREFIXES.map(String::from).to_vec(),
            ..Policy::default()
        };
        let mut req = request();
        req.file = "hdfs:///anything.jar".into();
        req.num_executors = Some(500);
        req.conf
            .insert("spark.sql.shuffle.partitions".into(), "2000".into());
        policy.apply(&mut req).expect("no caps, any file");
        assert!(
            !req.conf.contains_key(MAX_EXECUTORS_KEY),
            "no cap, nothing added"
        );
        req.proxy_user = Some("etl".into());
        let e = policy.apply(&mut req).expect_err("no proxy user allowed");
        assert_eq!(
            e.to_string(),
            "ProxyUser \"etl\" is not allowed by --allowed-proxy-user (none may be named)"
        );
    }

    #[test]
    fn a_queue_list_without_default_requires_a_queue() {
        let policy = Policy {
            allowed_queues: vec!["etl".into()],
            ..Policy::default()
        };
        let e = policy.apply(&mut request()).expect_err("no queue");
        assert!(e.to_string().starts_with("Queue is required"), "{e}");
        let mut req = request();
        req.conf.insert(QUEUE_KEY.into(), "etl".into());
        policy.apply(&mut req).expect("queue from conf");
    }
}
