//! Never lose a task: SIGKILL, crashes at the worst moments, Livy losing its state, a corrupt
//! journal, and the three shutdown modes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use rand::Rng;
use serde_json::{Value, json};

use crate::harness::{
    self, Livy, Sfn, Worker, age_the_journal_entry, batches, journal_files, rig, running, scratch,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_twenty_tasks_in_flight_then_restart_completes_all_with_one_batch_each() {
    let (dir, sfn, livy, activity) = rig("sigkill-20", &[]).await;
    let sm = sfn.one_task_machine(&activity, 15, 300).await;
    let worker = Worker::start(&dir, &activity, &livy.url, &["--pollers-per-activity", "4"]);

    let mut executions = Vec::new();
    for _ in 0..20 {
        executions.push(sfn.start(&sm, &json!({"File": "sim:success?run=6"})).await);
    }
    livy.until("20 running batches", Duration::from_secs(60), |s| {
        running(s) == 20
    })
    .await;
    let mut worker = worker;
    worker.kill9().await;
    let _restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    for ex in &executions {
        let out = sfn.finish(ex, Duration::from_secs(120)).await;
        assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    }
    let stats = livy.stats().await;
    assert_eq!(
        stats["created"], 20,
        "exactly one batch per task: {stats:#}"
    );
    assert_eq!(stats["posts"], 20);
    assert_eq!(journal_files(&dir), 0, "every entry removed once reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_journal_write_and_post_submits_exactly_once_after_restart() {
    let (dir, sfn, livy, activity) = rig("crash-before-post", &[]).await;
    let sm = sfn
        .one_task_machine_retrying_lost_deliveries(&activity, 15, 120)
        .await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-before-submit");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    let status = crashing.exit(Duration::from_secs(75)).await;
    assert!(!status.success(), "the failpoint aborts the worker");
    assert_eq!(livy.stats().await["posts"], 0);
    assert_eq!(journal_files(&dir), 1, "journaled before the POST");

    let _restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(livy.stats().await["created"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_post_and_recording_the_id_adopts_the_batch_after_restart() {
    let (dir, sfn, livy, activity) = rig("crash-after-post", &[]).await;
    let sm = sfn
        .one_task_machine_retrying_lost_deliveries(&activity, 15, 120)
        .await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-after-submit");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=3"})).await;
    assert!(!crashing.exit(Duration::from_secs(75)).await.success());
    assert_eq!(livy.stats().await["created"], 1);

    let restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let stats = livy.stats().await;
    assert_eq!(stats["created"], 1, "adopted, not resubmitted: {stats:#}");
    assert_eq!(stats["posts"], 1);
    assert!(
        restarted
            .log_text()
            .contains("adopted the batch found under this task's name")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_never_left_is_sent_after_restart() {
    let (dir, sfn, livy, activity) = rig("crash-before-report", &[]).await;
    let sm = sfn
        .one_task_machine_retrying_lost_deliveries(&activity, 15, 120)
        .await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-before-report");
    let ex = sfn
        .start(
            &sm,
            &json!({"File": "sim:success?run=1", "Name": "reported-late"}),
        )
        .await;
    assert!(!crashing.exit(Duration::from_secs(75)).await.success());
    assert_eq!(sfn.describe(&ex).await.status, ExecutionStatus::Running);

    // Livy forgets the batch meanwhile: the report comes from the journal, not from Livy.
    livy.control("restart", json!({"recovery": false})).await;
    let _restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(out.output.expect("output")["name"], "reported-late");
    assert_eq!(livy.stats().await["created"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_livy_crashing_together_then_back_report_the_real_outcomes_from_yarn() {
    let (dir, sfn, livy, activity) = rig("livy-state-loss", &[]).await;
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    let mut worker = Worker::start(&dir, &activity, &livy.url, &[]);
    let a = sfn
        .start(&sm, &json!({"File": "sim:success?run=8", "Name": "a"}))
        .await;
    let b = sfn
        .start(
            &sm,
            &json!({"File": "sim:dead?run=8&msg=boom", "Name": "b"}),
        )
        .await;
    livy.until("two running batches", Duration::from_secs(30), |s| {
        running(s) == 2
    })
    .await;

    // The worker is down while Livy crashes (its applications run on in YARN, unwatched) and
    // comes back without recovery, handing id 0 to another client's unnamed batch.
    worker.kill9().await;
    livy.control("restart", json!({"recovery": false, "crash": true}))
        .await;
    let other = harness::post_other_batch(&livy, "sim:forever", None).await;
    assert_eq!(other["id"], 0, "ids restart at 0");

    let _restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    let (a, b) = (
        sfn.finish(&a, Duration::from_secs(60)).await,
        sfn.finish(&b, Duration::from_secs(60)).await,
    );
    assert_eq!(a.status, ExecutionStatus::Succeeded, "{a:?}");
    let out = a.output.expect("output");
    assert_eq!(out["livyUrl"], Value::Null, "Livy no longer had it: {out}");
    let stats = livy.stats().await;
    let app = harness::yarn_app(&stats, out["batchName"].as_str().expect("name"));
    assert_eq!(out["applicationId"], app["id"]);
    assert_eq!(b.status, ExecutionStatus::Failed, "{b:?}");
    assert_eq!(b.error.as_deref(), Some("SparkJob.Failed"));
    assert!(b.cause.unwrap_or_default().contains("boom"));
    // The other client's batch on id 0 is untouched.
    assert_eq!(stats["deletes"], 0, "{stats:#}");
    let (status, held) = livy.get("batches/0").await;
    assert_eq!(
        (status, held["name"].clone(), held["state"].clone()),
        (200, Value::Null, json!("running"))
    );
    assert_eq!(stats["created"], 3, "nothing resubmitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_journal_files_are_logged_and_the_rest_runs() {
    let dir = scratch("corrupt-journal");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("0123456789ab.json"), b"\x00\x01 garbage").expect("write");
    std::fs::write(
        state.join("ba9876543210.json"),
        br#"{"version":1,"taskToken":"tok","activityArn":"arn:aws:sta"#,
    )
    .expect("write");
    std::fs::write(state.join("ffffffffffff.json.tmp"), b"{").expect("write");
    let sfn = Sfn::new().await;
    let livy = Livy::start(&dir, &[]).await;
    let activity = sfn.activity("corrupt").await;
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    let worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let log = worker.log_text();
    assert_eq!(
        log.matches("corrupt journal entry; skipped").count(),
        2,
        "{log}"
    );
    assert!(state.join("0123456789ab.json.corrupt").exists());
}

#[tokio::test]
async fn an_unusable_state_dir_stops_the_worker_at_start_with_one_line() {
    let dir = scratch("bad-state-dir");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spark-activity-worker"))
        .args([
            "run",
            "--activity-arn",
            "arn:aws:states:us-east-1:1:activity:a",
            "--state-dir",
        ])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: --state-dir "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mode_detach_leaves_the_batch_for_the_restarted_worker() {
    let (dir, sfn, livy, activity) = rig("detach", &[]).await;
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    // One slot, taken: no poll is open, so the worker can stop at once.
    let mut worker = Worker::start(&dir, &activity, &livy.url, &["--max-concurrent-tasks", "1"]);
    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    let stopping = Instant::now();
    worker.signal("TERM");
    assert_eq!(worker.exit(Duration::from_secs(30)).await.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "detach exits promptly: {:?}",
        stopping.elapsed()
    );
    assert!(
        worker
            .log_text()
            .contains("leaving this task's batch running")
    );
    assert_eq!(running(&livy.stats().await), 1, "the batch runs on");
    assert_eq!(journal_files(&dir), 1);
    assert_eq!(sfn.describe(&ex).await.status, ExecutionStatus::Running);

    let _restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    livy.control("batches/0/state", json!({"state": "success"}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(livy.stats().await["created"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mode_kill_deletes_the_batch_and_reports_shutting_down() {
    let (dir, sfn, livy, activity) = rig("kill-mode", &[]).await;
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    let mut worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &["--max-concurrent-tasks", "1", "--shutdown-mode", "kill"],
    );
    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    worker.signal("TERM");
    assert_eq!(worker.exit(Duration::from_secs(30)).await.code(), Some(0));
    let out = sfn.finish(&ex, Duration::from_secs(10)).await;
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("Worker.ShuttingDown"));
    let cause = out.cause.unwrap_or_default();
    assert!(cause.contains("was deleted at Livy"), "{cause}");
    let stats = livy.stats().await;
    assert_eq!(stats["deletes"], 1);
    assert_eq!(running(&stats), 0);
    assert_eq!(journal_files(&dir), 0);
}

/// 100 executions with mixed outcomes while everything that can fail does: the worker SIGKILLed
/// three times; Livy crashing without recovery (its applications run on in YARN, unwatched),
/// restarted with recovery, and stopped cleanly without recovery (which kills its running
/// applications); a Livy outage of three retry windows; 10 % of Livy requests failing throughout.
///
/// Every execution must end with its application's real outcome — success → SUCCEEDED, dead →
/// `SparkJob.Failed`, killed by Livy's clean stop → `SparkJob.Killed` — with no batch submitted
/// twice and no application left running.
///
/// As the README advises, the state machine retries `Livy.Unavailable`, which the worker reports
/// only once Livy and YARN both confirm nothing of the attempt exists — so every execution still
/// has exactly one batch.
///
/// A SIGKILL can land while long polls are open, and the service may hand a task to a poll whose
/// process is dead (LocalStack keeps such a poll for up to 60 s): that task never reached any
/// worker, so nothing of it runs. Only for those does the state machine retry a missed heartbeat
/// (LocalStack names it `States.Timeout`), and the test counts them; a retry of a task that *had*
/// reached a worker would show up as a second batch for one execution and fail the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_livy_restarts_and_outages_lose_nothing_and_run_nothing_twice() {
    let dir = scratch("chaos");
    let sfn = Sfn::new().await;
    let livy = Livy::start(&dir, &[]).await;
    let background = json!({"error_rate": 0.1, "error_status": 503});
    livy.control("faults", background.clone()).await;
    let activity = sfn.activity("chaos").await;
    let sm = sfn
        .state_machine(&json!({
            "StartAt": "Spark",
            "States": {"Spark": {"Type": "Task", "Resource": activity, "HeartbeatSeconds": 8, "TimeoutSeconds": 600,
                "Retry": [
                    {"ErrorEquals": ["Livy.Unavailable"], "IntervalSeconds": 1, "MaxAttempts": 8},
                    {"ErrorEquals": ["States.HeartbeatTimeout", "States.Timeout"], "IntervalSeconds": 2, "MaxAttempts": 8}],
                "End": true}}
        }))
        .await;
    let retry_window = Duration::from_secs(2);
    let args = ["--pollers-per-activity", "4", "--livy-retry-timeout", "2s"];
    let mut worker = Worker::start(&dir, &activity, &livy.url, &args);
    let started = Instant::now();

    let mut scripted = HashMap::new();
    let mut executions = Vec::new();
    for i in 0..100 {
        let run = rand::rng().random_range(3..=12);
        let (file, outcome) = if i % 5 == 0 {
            (format!("sim:dead?run={run}"), "dead")
        } else {
            (format!("sim:success?run={run}"), "success")
        };
        let name = format!("chaos-{i:03}");
        scripted.insert(name.clone(), outcome);
        executions.push((
            name.clone(),
            sfn.start(&sm, &json!({"File": file, "Name": name})).await,
        ));
    }
    let pause = || Duration::from_millis(rand::rng().random_range(1_500..4_000));
    let mut kills = 0;
    let mut outage = Duration::ZERO;
    for event in [
        "kill-worker",
        "stop-livy-cleanly",
        "crash-livy",
        "kill-worker",
        "livy-outage",
        "restart-livy-with-recovery",
        "kill-worker",
    ] {
        tokio::time::sleep(pause()).await;
        match event {
            "kill-worker" => {
                worker.kill9().await;
                kills += 1;
                worker = Worker::start(&dir, &activity, &livy.url, &args);
            }
            "livy-outage" => {
                let down = retry_window * 3 + Duration::from_secs(1);
                livy.control("faults", json!({"error_rate": 1.0, "error_status": 503}))
                    .await;
                tokio::time::sleep(down).await;
                livy.control("faults", background.clone()).await;
                outage += down;
            }
            restart => {
                // A Livy restart takes it away for a moment.
                livy.control("faults", json!({"error_rate": 1.0, "error_status": 503}))
                    .await;
                let body = match restart {
                    "crash-livy" => json!({"recovery": false, "crash": true}),
                    "restart-livy-with-recovery" => json!({"recovery": true}),
                    _ => json!({"recovery": false}),
                };
                livy.control("restart", body).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                livy.control("faults", background.clone()).await;
                outage += Duration::from_secs(1);
            }
        }
        eprintln!("chaos: {event} at {:.1}s", started.elapsed().as_secs_f64());
    }
    livy.control("faults", json!({})).await;

    let mut figures: HashMap<&str, usize> = HashMap::new();
    let mut lost_in_killed_polls = 0;
    let mut retried_unavailable = 0;
    let mut apps_per_execution: HashMap<String, Vec<Value>> = HashMap::new();
    for (name, ex) in &executions {
        let out = sfn.finish(ex, Duration::from_secs(400)).await;
        lost_in_killed_polls += sfn
            .count_events(ex, HistoryEventType::ActivityTimedOut)
            .await;
        retried_unavailable += sfn.count_events(ex, HistoryEventType::ActivityFailed).await
            - usize::from(out.status == ExecutionStatus::Failed);
        let stats = livy.stats().await;
        let apps: Vec<Value> = harness::yarn_apps(&stats)
            .into_iter()
            .filter(|a| {
                a["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{name}-")))
            })
            .collect();
        let killed_by_livy = apps.iter().any(|a| a["killed_by"] == "livy-shutdown");
        let expected = if killed_by_livy {
            "killed"
        } else {
            scripted[name]
        };
        match expected {
            "success" => {
                assert_eq!(
                    out.status,
                    ExecutionStatus::Succeeded,
                    "{name}: {out:?} {apps:?}"
                )
            }
            "dead" => assert_eq!(
                out.error.as_deref(),
                Some("SparkJob.Failed"),
                "{name}: {out:?}"
            ),
            _ => assert_eq!(
                out.error.as_deref(),
                Some("SparkJob.Killed"),
                "{name}: {out:?}"
            ),
        }
        *figures.entry(expected).or_default() += 1;
        apps_per_execution.insert(name.clone(), apps);
    }

    let stats = livy.stats().await;
    let all = batches(&stats);
    // Each task attempt has its own batch name; a name posted twice is a job run twice.
    let mut per_name: HashMap<String, usize> = HashMap::new();
    for b in &all {
        *per_name
            .entry(b["name"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_name.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "submitted twice: {twice:?}");
    // And no execution ran more than one application.
    let many: Vec<_> = apps_per_execution
        .iter()
        .filter(|(_, apps)| apps.len() > 1)
        .map(|(n, apps)| (n, apps.len()))
        .collect();
    assert!(
        many.is_empty(),
        "executions with several applications: {many:?}"
    );
    let left_running: Vec<_> = harness::yarn_apps(&stats)
        .into_iter()
        .filter(|a| !matches!(a["state"].as_str(), Some("FINISHED" | "FAILED" | "KILLED")))
        .collect();
    assert!(
        left_running.is_empty(),
        "applications left running: {left_running:?}"
    );
    assert_eq!(stats["created"], 100);
    eprintln!(
        "chaos figures: executions=100 succeeded={} failed_as_scripted={} killed_by_livy_stop={} worker_kills={kills} \
         livy_restarts=3 (crash, recovery, clean stop) livy_unavailable={:.0}s lost_in_a_killed_poll_and_retried={lost_in_killed_polls} \
         livy_unavailable_and_retried={retried_unavailable} \
         livy_posts={} batches_created={} submitted_twice=0 left_running=0 elapsed={:.1}s",
        figures.get("success").unwrap_or(&0),
        figures.get("dead").unwrap_or(&0),
        figures.get("killed").unwrap_or(&0),
        outage.as_secs_f64(),
        stats["posts"],
        stats["created"],
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_unrecorded_for_longer_than_livy_remembers_is_reported_lost_not_resubmitted() {
    let (dir, sfn, livy, activity) = rig("down-too-long", &[]).await;
    let sm = sfn
        .one_task_machine_retrying_lost_deliveries(&activity, 30, 120)
        .await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-before-submit");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    assert!(!crashing.exit(Duration::from_secs(75)).await.success());

    // The worker "was down" 20 minutes.
    age_the_journal_entry(&dir, Duration::from_secs(20 * 60));

    let _restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("SparkJob.Lost"));
    assert!(out.cause.unwrap_or_default().contains("not resubmitted"));
    assert_eq!(livy.stats().await["posts"], 0, "never submitted blindly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_detaches_every_task_even_in_kill_mode_and_the_next_start_resumes_it() {
    let (dir, sfn, livy, activity) = rig("upgrade-signal", &[]).await;
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    // Decommissioning is configured, but an upgrade must not kill anything.
    let mut worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &["--max-concurrent-tasks", "1", "--shutdown-mode", "kill"],
    );
    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    worker.signal("USR2");
    assert_eq!(worker.exit(Duration::from_secs(30)).await.code(), Some(0));
    let log = worker.log_text();
    assert!(
        log.contains("stopping for an upgrade")
            && log.contains("leaving this task's batch running"),
        "{log}"
    );
    let stats = livy.stats().await;
    assert_eq!((running(&stats), stats["deletes"].clone()), (1, json!(0)));
    assert_eq!(journal_files(&dir), 1);
    assert_eq!(sfn.describe(&ex).await.status, ExecutionStatus::Running);

    let _upgraded = Worker::start(&dir, &activity, &livy.url, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    livy.control("batches/0/state", json!({"state": "success"}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(livy.stats().await["created"], 1);
}
