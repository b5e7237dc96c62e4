//! Task lifecycle against failures: timeouts, Livy outages, batches killed or lost, shutdown.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;

use crate::harness::{Worker, batches, rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_seconds_exceeded_deletes_the_livy_batch() {
    let (dir, sfn, livy, activity) = rig("timeout", &[]).await;
    let sm = sfn.one_task_machine(&activity, 4, 6).await;
    let worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        batches(s).iter().any(|b| b["state"] == "running")
    })
    .await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("States.Timeout"), "{out:?}");
    let stats = livy
        .until("the batch deleted", Duration::from_secs(20), |s| {
            batches(s).iter().all(|b| b["deleted"] == true)
        })
        .await;
    assert_eq!(stats["deletes"], 1);
    worker
        .wait_for_log("batch deleted", Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livy_down_at_submit_then_back_succeeds() {
    let (dir, sfn, mut livy, activity) = rig("livy-back", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 300).await;
    let worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &["--livy-retry-timeout", "2m", "--pollers-per-activity", "1"],
    );
    // A poll is open while Livy is up; Livy then dies before the task arrives on that poll.
    worker
        .wait_for_log("polling for a task", Duration::from_secs(30))
        .await;
    livy.kill().await;
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    worker
        .wait_for_log("retrying submit", Duration::from_secs(60))
        .await;
    livy.restart().await;
    let out = sfn.finish(&ex, Duration::from_secs(120)).await;
    assert_eq!(
        out.status,
        ExecutionStatus::Succeeded,
        "{out:?}\n{}",
        worker.log_text()
    );
    assert_eq!(livy.stats().await["created"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livy_down_for_good_fails_with_livy_unavailable() {
    let (dir, sfn, mut livy, activity) = rig("livy-gone", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 300).await;
    let worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &["--livy-retry-timeout", "5s", "--pollers-per-activity", "1"],
    );
    worker
        .wait_for_log("polling for a task", Duration::from_secs(30))
        .await;
    livy.kill().await;
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    let out = sfn.finish(&ex, Duration::from_secs(90)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("Livy.Unavailable"));
    let cause = out.cause.unwrap_or_default();
    assert!(cause.contains("did not accept batch"), "{cause}");
    // While Livy is down the worker stops polling for new tasks.
    worker
        .wait_for_log("livy is down; not polling", Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_killed_outside_the_worker_fails_as_killed() {
    let (dir, sfn, livy, activity) = rig("killed", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let _worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    let stats = livy
        .until("a running batch", Duration::from_secs(30), |s| {
            batches(s).iter().any(|b| b["state"] == "running")
        })
        .await;
    let id = batches(&stats)[0]["id"].as_i64().expect("id");
    livy.control(&format!("batches/{id}/state"), json!({"state": "killed"}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("SparkJob.Killed"));
    assert!(
        out.cause
            .unwrap_or_default()
            .contains("killed outside this worker")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_livy_stop_that_kills_the_application_fails_as_killed_with_yarns_word() {
    let (dir, sfn, livy, activity) = rig("livy-stop", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let _worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        batches(s).iter().any(|b| b["state"] == "running")
    })
    .await;
    // Livy without recovery stops every session on a clean shutdown, killing the applications.
    livy.control("restart", json!({"recovery": false})).await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("SparkJob.Killed"), "{out:?}");
    let cause = out.cause.unwrap_or_default();
    assert!(
        cause.contains("ended in YARN after Livy had forgotten the batch")
            && cause.contains("Killed by Livy shutdown"),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_wait_mode_drains_tasks_fails_late_arrivals_and_logs_what_it_leaves() {
    let (dir, sfn, livy, activity) = rig("sigterm", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 300).await;
    let mut worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &[
            "--shutdown-mode",
            "wait",
            "--drain-timeout",
            "4s",
            "--pollers-per-activity",
            "2",
        ],
    );

    let quick = sfn
        .start(&sm, &json!({"File": "sim:success?run=2", "Name": "quick"}))
        .await;
    let slow = sfn
        .start(&sm, &json!({"File": "sim:forever", "Name": "slow"}))
        .await;
    livy.until("two running batches", Duration::from_secs(30), |s| {
        batches(s)
            .iter()
            .filter(|b| b["state"] == "running")
            .count()
            == 2
    })
    .await;
    // Both pollers re-poll at once after their task, so polls are open when the signal lands.
    worker.signal("TERM");
    worker
        .wait_for_log("stopped polling", Duration::from_secs(5))
        .await;
    let late = sfn
        .start(&sm, &json!({"File": "sim:success?run=1", "Name": "late"}))
        .await;

    let status = worker.exit(Duration::from_secs(90)).await;
    assert_eq!(status.code(), Some(0), "{}", worker.log_text());
    let quick = sfn.describe(&quick).await;
    assert_eq!(
        quick.status,
        ExecutionStatus::Succeeded,
        "drained: {quick:?}"
    );
    let late = sfn.finish(&late, Duration::from_secs(10)).await;
    assert_eq!(late.status, ExecutionStatus::Failed, "{late:?}");
    assert_eq!(late.error.as_deref(), Some("Worker.ShuttingDown"));
    // The slow one keeps running in Livy and the worker said so.
    let slow_out = sfn.describe(&slow).await;
    assert_eq!(slow_out.status, ExecutionStatus::Running);
    let log = worker.log_text();
    assert!(
        log.contains("leaving this task's batch running") && log.contains("slow-"),
        "{log}"
    );
    let stats = livy.stats().await;
    assert!(batches(&stats).iter().any(|b| {
        b["name"].as_str().is_some_and(|n| n.starts_with("slow-")) && b["state"] == "running"
    }));
    assert_eq!(stats["created"], 2, "the late task never reached Livy");
    sfn.stop(&slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once_with_a_non_zero_code() {
    let (dir, _sfn, livy, activity) = rig("second-signal", &[]).await;
    let mut worker = Worker::start(&dir, &activity, &livy.url, &[]);
    worker
        .wait_for_log("polling for a task", Duration::from_secs(30))
        .await;
    worker.signal("TERM");
    worker
        .wait_for_log("stopped polling", Duration::from_secs(5))
        .await;
    worker.signal("INT");
    let status = worker.exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_supervisor_is_reported_and_its_batch_deleted() {
    let (dir, sfn, livy, activity) = rig("panic", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let worker = Worker::failing_at(&dir, &activity, &livy.url, "panic-after-submit");

    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("Worker.Panicked"));
    let cause = out.cause.unwrap_or_default();
    assert!(
        cause.contains("failpoint panic-after-submit") && cause.contains("was deleted"),
        "{cause}"
    );
    let stats = livy.stats().await;
    assert_eq!(stats["deletes"], 1, "{stats:#}");
    // The worker survives its task's panic and keeps polling.
    let ex2 = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    assert_eq!(
        sfn.finish(&ex2, Duration::from_secs(30))
            .await
            .error
            .as_deref(),
        Some("Worker.Panicked")
    );
    assert!(worker.log_text().contains("supervisor panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_livy_refuses_fails_as_livy_rejected() {
    let (dir, sfn, livy, activity) =
        rig("rejected", &["--local-dir-whitelist", "/srv/spark-apps"]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let _worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let ex = sfn.start(&sm, &json!({"File": "file:///etc/passwd"})).await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("Livy.Rejected"));
    let cause = out.cause.unwrap_or_default();
    assert!(
        cause.contains("cannot be added to user sessions"),
        "{cause}"
    );
    assert_eq!(livy.stats().await["posts"], 1, "a 4xx is not retried");
}
