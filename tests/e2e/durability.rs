//! Never lose a task: SIGKILL, crashes at the worst moments, Livy losing its state, a corrupt
//! journal, and the three shutdown modes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use rand::Rng;
use serde_json::{Value, json};

use crate::harness::{Livy, Sfn, Worker, batches, rig, scratch};

fn running(stats: &Value) -> usize {
    batches(stats)
        .iter()
        .filter(|b| b["state"] == "running" && b["deleted"] == false)
        .count()
}

fn journal_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("state"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

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
    worker.signal("KILL");
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
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-before-submit");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    let status = crashing.exit(Duration::from_secs(30)).await;
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
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-after-submit");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=3"})).await;
    assert!(!crashing.exit(Duration::from_secs(30)).await.success());
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
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-before-report");
    let ex = sfn
        .start(
            &sm,
            &json!({"File": "sim:success?run=1", "Name": "reported-late"}),
        )
        .await;
    assert!(!crashing.exit(Duration::from_secs(30)).await.success());
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
async fn livy_restarted_with_state_loss_fails_its_tasks_as_lost_never_succeeded() {
    let (dir, sfn, livy, activity) = rig("livy-state-loss", &[]).await;
    let sm = sfn.one_task_machine(&activity, 15, 120).await;
    let worker = Worker::start(&dir, &activity, &livy.url, &[]);
    let a = sfn
        .start(&sm, &json!({"File": "sim:forever", "Name": "a"}))
        .await;
    let b = sfn
        .start(&sm, &json!({"File": "sim:forever", "Name": "b"}))
        .await;
    livy.until("two running batches", Duration::from_secs(30), |s| {
        running(s) == 2
    })
    .await;

    // The worker is down while Livy restarts without recovery and hands id 0 to another job.
    worker.signal("KILL");
    livy.control("restart", json!({"recovery": false})).await;
    let client = reqwest::Client::new();
    let other: Value = client
        .post(format!("{}/batches", livy.url))
        .header("X-Requested-By", "test")
        .json(&json!({"file": "sim:success?run=30", "name": "someone-else"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(other["id"], 0, "ids restart at 0");

    let _restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    let (a, b) = (
        sfn.finish(&a, Duration::from_secs(60)).await,
        sfn.finish(&b, Duration::from_secs(60)).await,
    );
    for out in [&a, &b] {
        assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
        assert_eq!(out.error.as_deref(), Some("SparkJob.Lost"));
    }
    let causes = [a.cause.unwrap_or_default(), b.cause.unwrap_or_default()];
    assert!(
        causes
            .iter()
            .any(|c| c.contains("now names batch \"someone-else\"")),
        "{causes:?}"
    );
    assert!(
        causes
            .iter()
            .all(|c| c.contains("last known state running")),
        "{causes:?}"
    );
    assert_eq!(livy.stats().await["created"], 3, "nothing resubmitted");
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
    assert!(
        out.cause
            .unwrap_or_default()
            .contains("batch 0 was deleted")
    );
    let stats = livy.stats().await;
    assert_eq!(stats["deletes"], 1);
    assert_eq!(running(&stats), 0);
    assert_eq!(journal_files(&dir), 0);
}

/// 100 executions with mixed outcomes; the worker SIGKILLed and restarted 3 times at random
/// moments; Livy failing 10 % of requests with 503.
///
/// A SIGKILL can land while long polls are open, and the service may hand a task to a poll whose
/// process is dead: no worker can save that one. The state machine does what the README tells
/// users to do — `Retry` on `States.HeartbeatTimeout` — and the test counts those redeliveries.
/// (LocalStack names a missed heartbeat `States.Timeout`, so the retrier lists both; with
/// `TimeoutSeconds` at 600 only heartbeat misses can match here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_and_livy_faults_lose_nothing_and_submit_nothing_twice() {
    let dir = scratch("chaos");
    let sfn = Sfn::new().await;
    let livy = Livy::start(&dir, &[]).await;
    livy.control("faults", json!({"error_rate": 0.1, "error_status": 503}))
        .await;
    let activity = sfn.activity("chaos").await;
    let sm = sfn
        .state_machine(&json!({
            "StartAt": "Spark",
            "States": {"Spark": {"Type": "Task", "Resource": activity, "HeartbeatSeconds": 8, "TimeoutSeconds": 600,
                "Retry": [{"ErrorEquals": ["States.HeartbeatTimeout", "States.Timeout"], "IntervalSeconds": 1, "MaxAttempts": 2}],
                "End": true}}
        }))
        .await;
    let args = ["--pollers-per-activity", "4", "--livy-retry-timeout", "5m"];
    let mut worker = Worker::start(&dir, &activity, &livy.url, &args);
    let started = Instant::now();

    let mut expected = HashMap::new();
    let mut executions = Vec::new();
    for i in 0..100 {
        let run = rand::rng().random_range(1..=4);
        let (file, outcome) = if i % 5 == 0 {
            (format!("sim:dead?run={run}"), "dead")
        } else {
            (format!("sim:success?run={run}"), "success")
        };
        let name = format!("chaos-{i:03}");
        expected.insert(name.clone(), outcome);
        executions.push((
            name.clone(),
            sfn.start(&sm, &json!({"File": file, "Name": name})).await,
        ));
    }
    for kill in 1..=3 {
        let wait = rand::rng().random_range(2_000..6_000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        worker.signal("KILL");
        let _ = worker.exit(Duration::from_secs(10)).await;
        eprintln!("chaos: kill {kill} after {wait} ms");
        worker = Worker::start(&dir, &activity, &livy.url, &args);
    }

    let (mut succeeded, mut failed, mut redelivered) = (0, 0, 0);
    for (name, ex) in &executions {
        let out = sfn.finish(ex, Duration::from_secs(300)).await;
        redelivered += sfn
            .count_events(ex, HistoryEventType::ActivityTimedOut)
            .await;
        match expected[name] {
            "success" => {
                assert_eq!(out.status, ExecutionStatus::Succeeded, "{name}: {out:?}");
                succeeded += 1;
            }
            _ => {
                assert_eq!(out.status, ExecutionStatus::Failed, "{name}: {out:?}");
                assert_eq!(
                    out.error.as_deref(),
                    Some("SparkJob.Failed"),
                    "{name}: {out:?}"
                );
                failed += 1;
            }
        }
    }
    let stats = livy.stats().await;
    let all = batches(&stats);
    let mut per_task: HashMap<String, usize> = HashMap::new();
    for b in &all {
        let name = b["name"].as_str().unwrap_or_default();
        let task = name
            .rsplit_once('-')
            .map(|(t, _)| t.to_owned())
            .unwrap_or_default();
        *per_task.entry(task).or_default() += 1;
    }
    let twice: Vec<_> = per_task.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "submitted twice: {twice:?}");
    assert_eq!(all.len(), 100);
    let left_running = all
        .iter()
        .filter(|b| !matches!(b["state"].as_str(), Some("success" | "dead")))
        .count();
    assert_eq!(left_running, 0, "no batch left running");
    eprintln!(
        "chaos figures: executions=100 succeeded={succeeded} failed_as_expected={failed} worker_kills=3 \
         lost_in_a_killed_poll_and_retried={redelivered} livy_posts={} batches_created={} submitted_twice=0 \
         left_running=0 elapsed={:.1}s",
        stats["posts"],
        stats["created"],
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_unrecorded_for_longer_than_livy_remembers_is_reported_lost_not_resubmitted() {
    let (dir, sfn, livy, activity) = rig("down-too-long", &[]).await;
    let sm = sfn.one_task_machine(&activity, 30, 120).await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-before-submit");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    assert!(!crashing.exit(Duration::from_secs(30)).await.success());

    // The worker "was down" 20 minutes: age the journal entry.
    let entry_path = std::fs::read_dir(dir.join("state"))
        .expect("state dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("one journal entry");
    let mut entry: Value =
        serde_json::from_slice(&std::fs::read(&entry_path).expect("read")).expect("json");
    let old = std::time::SystemTime::now() - Duration::from_secs(20 * 60);
    entry["createdAt"] = json!(humantime::format_rfc3339_millis(old).to_string());
    std::fs::write(&entry_path, entry.to_string()).expect("write");

    let _restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("SparkJob.Lost"));
    assert!(out.cause.unwrap_or_default().contains("not resubmitted"));
    assert_eq!(livy.stats().await["posts"], 0, "never submitted blindly");
}
