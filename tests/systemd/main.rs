//! The release under real systemd: systemd 252 (Amazon Linux 2023's major version) booted as PID 1
//! in a container, the release installed into it by bootstrap/install.sh with the hardened unit,
//! then what the unit promises, tried one step at a time against LocalStack Step Functions and the
//! project's Livy server on the host. Needs root (systemd-nspawn); `make systemd` builds the release
//! and the container root first.

#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;

mod container;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use base64::Engine as _;
use serde_json::{Value, json};

use container::Container;
use harness::{Livy, Sfn, pi_py, running};

const UNIT: &str = "spark-activity-worker.service";

/// The AWS CLI as install.sh uses it: `aws s3 cp [--only-show-errors] s3://BUCKET/PREFIX/FILE DEST`
/// copies FILE from the release folder mounted at /release.
const AWS_STAND_IN: &str = r#"#!/bin/sh
[ "$1 $2" = "s3 cp" ] || { echo "aws stand-in: unexpected $*" >&2; exit 1; }
shift 2
[ "$1" = --only-show-errors ] && shift
exec cp "/release/${1##*/}" "$2"
"#;

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Prints what a step proved, with the seconds since the test began.
fn step(n: u32, text: &str) {
    let at = STARTED.get_or_init(Instant::now).elapsed().as_secs();
    println!("systemd step {n} ({at:>3} s): {text}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// `2026-11-25T18:33:54.328379Z` (the worker's log) or `Wed 2026-11-25 18:33:54.330123 UTC`
/// (systemctl --timestamp=us+utc) as `2026-11-25 18:33:54.328379`, which sorts in time order.
fn instant(text: &str) -> String {
    let date = text
        .split([' ', 'T'])
        .find(|w| w.len() == 10 && w.as_bytes()[4] == b'-')
        .expect("a date");
    let time = text
        .split([' ', 'T', 'Z'])
        .find(|w| w.len() == 15 && w.as_bytes()[2] == b':')
        .expect("a time with microseconds");
    format!("{date} {time}")
}

struct Node<'a> {
    ct: &'a Container,
}

impl Node<'_> {
    fn show(&self, property: &str) -> String {
        self.ct.show(UNIT, property)
    }

    fn restarts(&self) -> u32 {
        self.show("NRestarts").parse().expect("NRestarts")
    }

    /// Waits until systemd has restarted the worker after `restarts` and it is active again.
    async fn restarted_after(&self, restarts: u32, old_pid: &str, within: Duration) {
        self.ct
            .until("systemd restarts the worker", within, |c| {
                c.show(UNIT, "NRestarts").parse::<u32>().unwrap_or(0) > restarts
                    && c.show(UNIT, "ActiveState") == "active"
                    && c.show(UNIT, "MainPID") != old_pid
            })
            .await;
    }

    /// Starts an execution of a 12 s application, waits until its batch runs, sends the worker a
    /// signal (`systemctl kill ARGS`), waits until systemd has restarted it, and checks that the
    /// task completes with the one batch it had. Returns the pid that got the signal.
    async fn signal_mid_task(
        &self,
        sfn: &Sfn,
        sm: &str,
        livy: &Livy,
        name: &str,
        kill_args: &str,
    ) -> String {
        let before = posts(&livy.stats().await);
        let (restarts, pid) = (self.restarts(), self.show("MainPID"));
        let ex = sfn
            .start(sm, &json!({"File": "sim:success?run=12", "Name": name}))
            .await;
        livy.until("the batch runs", Duration::from_secs(120), |s| {
            running(s) == 1
        })
        .await;
        self.ct.run(&format!("systemctl kill {kill_args} {UNIT}"));
        self.restarted_after(restarts, &pid, Duration::from_secs(60))
            .await;
        let o = sfn.finish(&ex, Duration::from_secs(120)).await;
        assert_eq!(o.status, ExecutionStatus::Succeeded, "{o:?}");
        assert_eq!(
            posts(&livy.stats().await),
            before + 1,
            "the resumed task was not submitted again"
        );
        pid
    }
}

impl Node<'_> {
    /// Starts an execution of an application that runs until the test ends it, and waits until
    /// its batch runs. Returns the execution and the batch.
    async fn long_task(&self, sfn: &Sfn, sm: &str, livy: &Livy, name: &str) -> (String, Value) {
        let ex = sfn
            .start(sm, &json!({"File": "sim:success?run=600", "Name": name}))
            .await;
        let stats = livy
            .until("the batch runs", Duration::from_secs(120), |s| {
                running(s) == 1
            })
            .await;
        let batch = harness::batches(&stats)
            .into_iter()
            .find(|b| b["state"] == "running")
            .expect("the running batch");
        (ex, batch)
    }

    /// The worker that stopped left the batch running and the task open.
    async fn left_alone(&self, sfn: &Sfn, livy: &Livy, ex: &str, batch: &Value) {
        let stats = livy.stats().await;
        let now = harness::batches(&stats)
            .into_iter()
            .find(|b| b["id"] == batch["id"])
            .expect("the batch");
        assert!(
            now["deleted"] == false && now["state"] == "running" && stats["yarn_kills"] == 0,
            "the stopped worker left its batch alone: {now}"
        );
        assert_eq!(
            sfn.describe(ex).await.status,
            ExecutionStatus::Running,
            "the task is still open"
        );
    }

    /// Ends the application; the worker now running reports it, and nothing was submitted twice.
    async fn end_long_task(
        &self,
        sfn: &Sfn,
        livy: &Livy,
        ex: &str,
        batch: &Value,
        posts_before: u64,
    ) {
        livy.control(
            &format!("batches/{}/state", batch["id"]),
            json!({"state": "success", "yarn": true}),
        )
        .await;
        let o = sfn.finish(ex, Duration::from_secs(60)).await;
        assert_eq!(o.status, ExecutionStatus::Succeeded, "{o:?}");
        assert_eq!(posts(&livy.stats().await), posts_before + 1);
    }
}

fn posts(stats: &Value) -> u64 {
    stats["posts"].as_u64().expect("posts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_installed_by_the_bootstrap_action_under_real_systemd() {
    assert!(
        is_root(),
        "the systemd stage boots a container with systemd-nspawn and needs root (CI runs as root)"
    );
    STARTED.get_or_init(Instant::now);
    let repo = harness::root();
    let image = repo.join(".cache/systemd-root");
    assert!(
        image.join("usr/lib/systemd/systemd").exists(),
        "no container root: run tests/systemd/root.sh (make systemd does)"
    );
    let dist = repo.join("target/dist");
    assert!(
        dist.join("spark-activity-worker-x86_64.sha256").exists(),
        "no release in target/dist: run make release (make systemd does)"
    );
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("LocalStack: run through tests/rig/with-localstack.sh (make systemd does)");

    let dir = harness::scratch("systemd");
    let sfn = Sfn::new().await;
    let livy = Livy::start(&dir, &[]).await;
    let activity = sfn.activity("systemd").await;
    let ct = Container::boot(&image, &[(&dist, "/release")], &dir.join("console.log"));
    let node = Node { ct: &ct };
    step(
        1,
        &format!(
            "booted {} as PID 1 in a container (systemd-nspawn)",
            ct.run("systemctl --version | head -n 1").trim()
        ),
    );

    // EMR's view of the node, the `aws` stand-in, and where the worker finds Step Functions
    // (LocalStack on the host). The watchdog is shortened for step 8, and the restart delay so
    // that a stopped worker is back before its tasks' heartbeat timeout. One task at a time: a
    // worker with no free slot has no poll open, so stopping it mid-task does not wait for a
    // 60 s long poll to return, and a killed one leaves no poll behind in LocalStack.
    ct.run("echo \"127.0.1.1 $(hostname)\" >> /etc/hosts");
    ct.write(
        "/mnt/var/lib/info/instance.json",
        r#"{"isMaster": true}"#,
        "0644",
    );
    ct.write("/usr/local/bin/aws", AWS_STAND_IN, "0755");
    ct.write(
        "/etc/systemd/system/spark-activity-worker.service.d/test.conf",
        &format!(
            "[Service]\nEnvironment=AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test\nWatchdogSec=8s\nRestartSec=1s\n"
        ),
        "0644",
    );
    let installed = ct.run(&format!(
        "bash /release/install.sh --release-uri s3://releases/spark-activity-worker/0.1.0/ \
         --activity-arn {activity} --livy-url {livy} --yarn-url {livy} --sync-interval 2s --heartbeat-interval 3s \
         --pollers-per-activity 1 --max-concurrent-tasks 1 --region us-east-1 2>&1",
        livy = livy.url
    ));
    step(2, &format!("install.sh: {}", installed.trim()));
    let hardened =
        std::fs::read_to_string(repo.join("systemd/spark-activity-worker.service")).expect("unit");
    assert_eq!(
        ct.run("cat /etc/systemd/system/spark-activity-worker.service"),
        hardened,
        "systemd 252 gets the hardened unit"
    );
    assert_eq!(
        ct.run("sha256sum /usr/local/bin/spark-activity-worker | cut -d' ' -f1")
            .trim(),
        std::fs::read_to_string(dist.join("spark-activity-worker-x86_64.sha256"))
            .expect("sha256")
            .split_whitespace()
            .next()
            .expect("hash"),
        "the x86_64 release binary is installed"
    );

    // Active only after READY=1: the worker logs "worker started" just before it notifies, so a
    // unit that became active without waiting for READY would be active before that line.
    ct.until("the service is active", Duration::from_secs(30), |c| {
        c.show(UNIT, "ActiveState") == "active"
    })
    .await;
    assert_eq!(node.show("Type"), "notify");
    assert_eq!(node.show("StatusText"), "polling 1 activities");
    let journal = ct.journal(UNIT);
    assert!(
        !journal.contains('\x1b'),
        "no terminal escape codes in the journal:\n{journal}"
    );
    let started_line = journal
        .lines()
        .find(|l| l.contains("worker started"))
        .expect("the worker logged its start");
    let started = instant(started_line);
    let exec = instant(&ct.run(&format!(
        "systemctl show --timestamp=us+utc --value --property=ExecMainStartTimestamp {UNIT}"
    )));
    let active = instant(&ct.run(&format!(
        "systemctl show --timestamp=us+utc --value --property=ActiveEnterTimestamp {UNIT}"
    )));
    assert!(
        exec <= started && started <= active,
        "process started {exec}, worker ready {started}, unit active {active}"
    );
    // The secrets: root's empty placeholders on disk, handed to the service as credentials.
    assert_eq!(
        ct.run("stat -c '%U %a %s' /etc/spark-activity-worker/livy-password /etc/spark-activity-worker/kerberos.keytab"),
        "root 600 0\nroot 600 0\n"
    );
    let creds = ct.run(&format!("ls /run/credentials/{UNIT}/"));
    assert_eq!(creds, "kerberos-keytab\nlivy-password\n", "LoadCredential=");
    step(
        3,
        &format!(
            "active only after READY=1: process started {exec}, worker logged its start {started}, \
             unit active {active}; status \"{}\"; credentials {}",
            node.show("StatusText"),
            creds.split_whitespace().collect::<Vec<_>>().join(", ")
        ),
    );

    // One execution through LocalStack and the Livy server's real spark-submit. LocalStack keeps
    // the poll of a killed worker open until it times out (60 s) and can hand a new task to it;
    // such a delivery reached no worker, so the machine retries it after its 20 s heartbeat
    // timeout (the worker heartbeats every 3 s; a stopped one is back within about 12 s).
    let sm = sfn
        .state_machine(&json!({
            "StartAt": "Spark",
            "States": {"Spark": {"Type": "Task", "Resource": activity,
                "HeartbeatSeconds": 20, "TimeoutSeconds": 900,
                "Retry": [{"ErrorEquals": ["States.HeartbeatTimeout", "States.Timeout"],
                           "IntervalSeconds": 1, "MaxAttempts": 3}],
                "End": true}}
        }))
        .await;
    let ex = sfn
        .start(&sm, &json!({"File": pi_py(), "Args": ["2"], "Name": "pi"}))
        .await;
    let o = sfn.finish(&ex, Duration::from_secs(300)).await;
    assert_eq!(o.status, ExecutionStatus::Succeeded, "{o:?}");
    let out = o.output.expect("output");
    assert_eq!(out["state"], "success", "{out}");
    // The monitoring endpoint install.sh turns on (127.0.0.1:9464), served under the hardened
    // unit; the container shares the host's network.
    let http = reqwest::Client::new();
    let readyz = http
        .get("http://127.0.0.1:9464/readyz")
        .send()
        .await
        .expect("/readyz answers");
    assert_eq!(readyz.status().as_u16(), 200);
    let scrape = http
        .get("http://127.0.0.1:9464/metrics")
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("metrics text");
    let succeeded = scrape
        .lines()
        .find(|l| {
            l.starts_with("spark_activity_worker_tasks_finished_total{")
                && l.contains("outcome=\"succeeded\"")
        })
        .unwrap_or_else(|| panic!("no succeeded tasks in the scrape:\n{scrape}"));
    assert!(succeeded.ends_with(" 1"), "{succeeded}");
    step(
        4,
        &format!(
            "SparkPi ran through spark-submit and the execution succeeded: batch {}, {}s; \
             /readyz 200 and /metrics counts it ({succeeded})",
            out["batchId"], out["durationSeconds"]
        ),
    );

    // install.sh --upgrade with a task in flight: the worker is stopped with SIGUSR2 (detached
    // from its tasks), the new one starts with the same settings and resumes the task.
    let env_file = ct.run("sha256sum /etc/spark-activity-worker/env");
    let pid = node.show("MainPID");
    let clean_exits = ct.journal(UNIT).matches("Deactivated successfully").count();
    let before = posts(&livy.stats().await);
    let (ex, batch) = node.long_task(&sfn, &sm, &livy, "upgraded").await;
    let upgraded = ct.run(
        "bash /release/install.sh --upgrade --release-uri s3://releases/spark-activity-worker/0.1.0/ 2>&1",
    );
    assert_eq!(node.show("ActiveState"), "active");
    assert_ne!(node.show("MainPID"), pid, "a new worker process");
    assert_eq!(
        ct.journal(UNIT).matches("Deactivated successfully").count(),
        clean_exits + 1,
        "the old worker exited cleanly"
    );
    assert_eq!(ct.run("sha256sum /etc/spark-activity-worker/env"), env_file);
    assert!(ct.journal(UNIT).contains("stopping for an upgrade"));
    node.left_alone(&sfn, &livy, &ex, &batch).await;
    node.end_long_task(&sfn, &livy, &ex, &batch, before).await;
    step(
        5,
        &format!(
            "install.sh --upgrade with a task in flight: pid {pid} stopped for an upgrade (SIGUSR2), pid {} \
             started with the same env file, the batch left running, the task resumed and reported; {}",
            node.show("MainPID"),
            upgraded.lines().last().unwrap_or_default()
        ),
    );

    // systemctl stop detaches: the batch keeps running, the task stays open, the next start
    // resumes it.
    let before = posts(&livy.stats().await);
    let (ex, batch) = node.long_task(&sfn, &sm, &livy, "detached").await;
    ct.run(&format!("systemctl stop {UNIT}"));
    assert_eq!(node.show("ActiveState"), "inactive");
    assert_eq!(node.show("Result"), "success", "a clean exit");
    node.left_alone(&sfn, &livy, &ex, &batch).await;
    ct.run(&format!("systemctl start {UNIT}"));
    ct.until("the service is active", Duration::from_secs(30), |c| {
        c.show(UNIT, "ActiveState") == "active"
    })
    .await;
    node.end_long_task(&sfn, &livy, &ex, &batch, before).await;
    step(
        6,
        "systemctl stop: inactive with Result=success, the batch left running and the task open; \
         after systemctl start the application finished and the new worker reported it, with its one batch",
    );

    // SIGKILL mid-task: systemd restarts the worker, which resumes the task from its journal.
    let pid = node
        .signal_mid_task(&sfn, &sm, &livy, "killed", "--signal=SIGKILL")
        .await;
    assert!(ct.journal(UNIT).contains("status=9/KILL"));
    step(
        7,
        &format!(
            "systemctl kill -s KILL: pid {pid} killed, systemd restarted it as pid {} (NRestarts {}), \
             the task in flight completed from the journal with its one batch",
            node.show("MainPID"),
            node.restarts()
        ),
    );

    // SIGSTOP: the watchdog pings stop, systemd aborts and restarts the worker.
    let pid = node
        .signal_mid_task(
            &sfn,
            &sm,
            &livy,
            "stopped",
            "--signal=SIGSTOP --kill-who=main",
        )
        .await;
    assert!(
        ct.journal(UNIT).contains("Watchdog timeout"),
        "{}",
        ct.journal(UNIT)
    );
    step(
        8,
        &format!(
            "SIGSTOP: systemd logged \"Watchdog timeout\" after WatchdogSec=8s, restarted pid {pid} as {}, \
             the task in flight completed with its one batch",
            node.show("MainPID")
        ),
    );

    // Kerberos under the hardened unit: the release binary loads the node's own
    // libgssapi_krb5.so.2, reads /etc/krb5.conf and its keytab (a systemd credential), and talks
    // SPNEGO to a kerberized Livy and ResourceManager (the MIT KDC runs on the host).
    let kdc = |var: &str| {
        std::env::var(var).unwrap_or_else(|_| {
            panic!("{var}: run under tests/rig/with-kdc.sh (make systemd does)")
        })
    };
    let klivy = Livy::start(
        &dir,
        &[
            "--kerberos-keytab",
            &kdc("SPARK_TEST_SERVICE_KEYTAB"),
            "--kerberos-principal",
            &kdc("SPARK_TEST_SERVICE_PRINCIPAL"),
        ],
    )
    .await;
    let krb5_conf = std::fs::read_to_string(kdc("KRB5_CONFIG")).expect("krb5.conf");
    ct.write("/etc/krb5.conf", &krb5_conf, "0644");
    // The SPNEGO name is HTTP/localhost; debootstrap's /etc/hosts lacks the line EMR's has.
    ct.run("grep -qw localhost /etc/hosts || echo '127.0.0.1 localhost' >> /etc/hosts");
    let keytab = std::fs::read(kdc("SPARK_TEST_WORKER_KEYTAB")).expect("keytab");
    ct.run(&format!(
        "echo {} | base64 -d > /etc/spark-activity-worker/kerberos.keytab",
        base64::engine::general_purpose::STANDARD.encode(keytab)
    ));
    ct.run(&format!(
        "sed -i '/^SPARK_ACTIVITY_WORKER_LIVY_URL=/d; /^SPARK_ACTIVITY_WORKER_YARN_URL=/d' /etc/spark-activity-worker/env && \
         printf '%s\n' SPARK_ACTIVITY_WORKER_LIVY_URL={url} SPARK_ACTIVITY_WORKER_YARN_URL={url} \
           SPARK_ACTIVITY_WORKER_LIVY_AUTH=kerberos SPARK_ACTIVITY_WORKER_KERBEROS_PRINCIPAL={principal} \
           >> /etc/spark-activity-worker/env && systemctl restart {UNIT}",
        url = klivy.url,
        principal = kdc("SPARK_TEST_WORKER_PRINCIPAL"),
    ));
    ct.until(
        "the kerberized worker is active",
        Duration::from_secs(30),
        |c| c.show(UNIT, "ActiveState") == "active",
    )
    .await;
    let ex = sfn
        .start(
            &sm,
            &json!({"File": "sim:success?run=1&app=1", "Name": "kerberized"}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let o = loop {
        let o = sfn.describe(&ex).await;
        if o.status != ExecutionStatus::Running || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        o.status,
        ExecutionStatus::Succeeded,
        "{o:?}\n{}",
        ct.journal(UNIT)
    );
    let stats = klivy.stats().await;
    assert_eq!(
        stats["principals"],
        json!([kdc("SPARK_TEST_WORKER_PRINCIPAL")]),
        "{stats}"
    );
    assert!(
        ct.journal(UNIT)
            .contains("kerberos: logged in from the keytab")
    );
    step(
        9,
        &format!(
            "--livy-auth kerberos: the release binary loaded the node's libgssapi_krb5, logged in \
             from its keytab credential and ran a job with SPNEGO on Livy and YARN \
             ({} handshakes, {} calls on the hadoop.auth cookie)",
            stats["spnego_handshakes"], stats["cookie_auths"]
        ),
    );

    // The sandbox and the system call filter allowed everything above.
    let journal = ct.journal(UNIT);
    for denied in [
        "Operation not permitted",
        "Permission denied",
        "Read-only file system",
        "status=31/SYS",
    ] {
        assert!(!journal.contains(denied), "{denied}:\n{journal}");
    }
    let exposure = ct.run(&format!("systemd-analyze security {UNIT} | tail -n 1"));
    step(
        10,
        &format!(
            "no denial in the unit's journal (seccomp, read-only system, dynamic user); {}",
            exposure.trim()
        ),
    );
    drop(ct);
}
