//! A Spark job runs once, whatever fails: no retryable error while an application of the task
//! may still run. One test (or two) per production event that used to run a job twice or leave
//! one unwatched: Livy outages, a long worker downtime, lost POST answers, Livy restarts that
//! forget or reuse ids, restarts around heartbeats, two workers on one state directory, and a
//! journal that cannot be written.

use std::time::Duration;

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use serde_json::{Value, json};

use crate::harness::{
    self, Worker, age_the_journal_entry, journal_emptied, journal_files, rig, running, yarn_app,
};
use crate::proxy::SfnProxy;

// 1. Livy unreachable while a batch runs -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_livy_outage_three_times_the_retry_timeout_mid_run_still_succeeds_with_one_batch() {
    let (dir, sfn, livy, activity) = rig("outage-3x", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let worker = Worker::start(&dir, &activity, &livy.url, &["--livy-retry-timeout", "3s"]);
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=16"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;

    // Every Livy route answers 503 for 10 s, more than three retry windows.
    livy.control("faults", json!({"error_rate": 1.0, "error_status": 503}))
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        sfn.describe(&ex).await.status,
        ExecutionStatus::Running,
        "an outage alone never ends the task"
    );
    livy.control("faults", json!({})).await;

    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let stats = livy.stats().await;
    assert_eq!(
        (stats["created"].clone(), stats["posts"].clone()),
        (json!(1), json!(1))
    );
    assert!(worker.log_text().contains("batch state sync failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livy_down_past_the_outage_limit_kills_the_application_in_yarn_then_fails_unavailable() {
    let (dir, sfn, livy, activity) = rig("outage-limit", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let _worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &["--livy-outage-limit", "4s", "--livy-retry-timeout", "2s"],
    );
    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    livy.control("faults", json!({"error_rate": 1.0, "error_status": 503}))
        .await;

    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("Livy.Unavailable"));
    let cause = out.cause.unwrap_or_default();
    assert!(
        cause.contains("--livy-outage-limit") && cause.contains("was killed in YARN"),
        "{cause}"
    );
    let stats = livy.stats().await;
    let app = &harness::yarn_apps(&stats)[0];
    assert_eq!(
        (app["state"].clone(), app["killed_by"].clone()),
        (json!("KILLED"), json!("yarn-rest"))
    );
    assert_eq!(stats["created"], 1);
}

// 2. The worker down longer than Livy's retention, the batch id unrecorded ---------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_older_than_livys_retention_is_looked_up_by_name_and_adopted_not_reported_lost() {
    let (dir, sfn, livy, activity) = rig("old-entry-adopted", &[]).await;
    let sm = sfn
        .one_task_machine_retrying_lost_deliveries(&activity, 30, 120)
        .await;
    // The POST lands, then the worker dies before recording the batch id.
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-after-submit");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=4"})).await;
    assert!(!crashing.exit(Duration::from_secs(75)).await.success());
    assert_eq!(livy.stats().await["created"], 1);
    // ... and "stays down" 20 minutes.
    age_the_journal_entry(&dir, Duration::from_secs(20 * 60));

    let restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let stats = livy.stats().await;
    assert_eq!(
        (stats["created"].clone(), stats["posts"].clone()),
        (json!(1), json!(1))
    );
    assert!(
        restarted
            .log_text()
            .contains("adopted the batch found under this task's name")
    );
}

// 3. A POST whose answer is lost; a task gone while its POST is in flight -----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_answer_lost_at_the_end_of_the_retry_window_is_found_by_a_last_lookup() {
    let (dir, sfn, livy, activity) = rig("lost-answer", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    // A window too short for a second attempt: only the last lookup can find the batch.
    let worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &["--livy-retry-timeout", "100ms"],
    );
    livy.control("faults", json!({"lose_post_responses": true}))
        .await;
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=2"})).await;
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let stats = livy.stats().await;
    assert_eq!(
        (stats["created"].clone(), stats["posts"].clone()),
        (json!(1), json!(1))
    );
    assert!(
        worker
            .log_text()
            .contains("adopted the batch found under this task's name")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_gone_while_its_post_is_in_flight_gets_the_batch_the_post_created_killed() {
    let (dir, sfn, livy, activity) = rig("gone-mid-post", &[]).await;
    let sm = sfn.one_task_machine(&activity, 2, 4).await;
    let worker = Worker::start(&dir, &activity, &livy.url, &[]);
    // Livy creates the batch at once but answers the POST 8 s later, after the task timed out.
    livy.control("faults", json!({"post_latency_ms": 8000}))
        .await;
    let ex = sfn.start(&sm, &json!({"File": "sim:forever"})).await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("States.Timeout"));
    let stats = livy
        .until("the batch deleted", Duration::from_secs(30), |s| {
            s["deletes"] == 1
        })
        .await;
    assert_eq!(stats["created"], 1);
    let app = &harness::yarn_apps(&stats)[0];
    assert_eq!(
        (app["state"].clone(), app["killed_by"].clone()),
        (json!("KILLED"), json!("livy-delete"))
    );
    worker
        .wait_for_log("nothing of this task runs any more", Duration::from_secs(5))
        .await;
}

// 4. Livy restarted without recovery: the batch forgotten, its id reused ------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livy_crashing_mid_run_then_giving_id_0_to_another_batch_reports_our_real_outcome_from_yarn()
 {
    let (dir, sfn, livy, activity) = rig("livy-crash", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let _worker = Worker::start(&dir, &activity, &livy.url, &[]);
    let ex = sfn
        .start(&sm, &json!({"File": "sim:success?run=8", "Name": "ours"}))
        .await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    livy.control("restart", json!({"recovery": false, "crash": true}))
        .await;
    let other = harness::post_other_batch(&livy, "sim:forever", None).await;
    assert_eq!(
        (other["id"].clone(), other["name"].clone()),
        (json!(0), Value::Null)
    );

    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let o = out.output.expect("output");
    let stats = livy.stats().await;
    let ours = yarn_app(&stats, o["batchName"].as_str().expect("batchName"));
    assert_eq!(
        o["applicationId"], ours["id"],
        "the application YARN ran for us"
    );
    assert_eq!(ours["finalStatus"], "SUCCEEDED");
    assert_eq!(stats["deletes"], 0, "nothing deleted: {stats:#}");
    let (status, other) = livy.get("batches/0").await;
    assert_eq!(status, 200);
    assert_eq!(
        (other["name"].clone(), other["state"].clone()),
        (Value::Null, json!("running"))
    );
    assert_eq!(stats["created"], 2);
}

// 5. Heartbeats around restarts ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_just_before_a_heartbeat_is_due_then_a_restart_keeps_the_task_alive() {
    let (dir, sfn, livy, activity) = rig("hb-restart", &[]).await;
    // HeartbeatSeconds under two heartbeat intervals.
    let sm = sfn.one_task_machine(&activity, 6, 120).await;
    let args = ["--heartbeat-interval", "4s"];
    let mut worker = Worker::start(&dir, &activity, &livy.url, &args);
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=25"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    // Catch a heartbeat as it is sent, then die just before the next one is due.
    let sent = worker.count_in_log("heartbeat sent");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while worker.count_in_log("heartbeat sent") == sent {
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeat within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(3400)).await;
    worker.kill9().await;
    let restarted = Worker::start(&dir, &activity, &livy.url, &args);

    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(livy.stats().await["created"], 1);
    assert!(
        restarted
            .log_text()
            .contains("resuming task from the journal")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_task_whose_token_expired_meanwhile_is_never_submitted() {
    let (dir, sfn, livy, activity) = rig("expired-resume", &[]).await;
    let sm = sfn.one_task_machine(&activity, 2, 60).await;
    let mut crashing = Worker::failing_at(&dir, &activity, &livy.url, "crash-before-submit");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    assert!(!crashing.exit(Duration::from_secs(75)).await.success());
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(
        out.status,
        ExecutionStatus::Failed,
        "the heartbeat timed out: {out:?}"
    );

    let restarted = Worker::start(&dir, &activity, &livy.url, &[]);
    restarted
        .wait_for_log("closed the task before it started", Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        livy.stats().await["posts"],
        0,
        "no POST for a task already gone"
    );
    assert_eq!(journal_files(&dir), 0);
}

// 6. Two processes on one state directory ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_on_the_same_state_dir_exits_2_naming_the_flag_and_the_first_runs_on() {
    let (dir, sfn, livy, activity) = rig("two-workers", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let first = Worker::start(&dir, &activity, &livy.url, &[]);
    first
        .wait_for_log("worker started", Duration::from_secs(30))
        .await;
    let mut second = Worker::start(&dir, &activity, &livy.url, &[]);
    let status = second.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2));
    let stderr = second.log_text();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: --state-dir ")
            && stderr.contains("in use by another spark-activity-worker"),
        "{stderr}"
    );

    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(livy.stats().await["created"], 1);
}

// 7. A journal that cannot be written ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_journal_write_stops_new_polls_until_the_journal_is_writable_again() {
    let (dir, sfn, livy, activity) = rig("disk-full", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let full = dir.join("disk-full");
    let full_path = full.to_str().expect("utf-8 path").to_owned();
    // One slot, one poller: while a task runs, no poll is open.
    let worker = Worker::start_with_env(
        &dir,
        &activity,
        &livy.url,
        &["--max-concurrent-tasks", "1", "--pollers-per-activity", "1"],
        &[("SPARK_ACTIVITY_WORKER_FAILPOINT_JOURNAL_WRITE", &full_path)],
    );
    let a = sfn.start(&sm, &json!({"File": "sim:success?run=4"})).await;
    livy.until("a running batch", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    std::fs::write(&full, b"").expect("disk full");
    let b = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;

    // The running task goes on and reports; no new task is taken.
    let out = sfn.finish(&a, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    worker
        .wait_for_log(
            "cannot write the journal; not polling",
            Duration::from_secs(10),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        sfn.count_events(&b, HistoryEventType::ActivityStarted)
            .await,
        0,
        "not delivered while the journal cannot be written"
    );

    std::fs::remove_file(&full).expect("space again");
    let out = sfn.finish(&b, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert!(worker.log_text().contains("the journal is writable again"));
    assert_eq!(livy.stats().await["created"], 2);
}

// 7. A report Step Functions refuses for good ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_step_functions_refuses_for_good_ends_as_report_refused_at_once() {
    let (dir, sfn, livy, activity) = rig("report-refused", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    // The worker's role lacks states:SendTaskSuccess.
    let proxy = SfnProxy::start(|op, _| {
        (op == "SendTaskSuccess").then(|| {
            (
                "AccessDeniedException".to_owned(),
                "User is not authorized to perform: states:SendTaskSuccess".to_owned(),
            )
        })
    })
    .await;
    let worker = proxy.worker(&dir, &activity, &livy.url);
    let ex = sfn
        .start(
            &sm,
            &json!({"File": "sim:success?run=1", "Name": "refused"}),
        )
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("Worker.ReportRefused"));
    let cause = out.cause.unwrap_or_default();
    assert!(
        cause.contains("AccessDeniedException") && cause.contains("\"batchName\":\"refused-"),
        "the cause carries the refused output: {cause}"
    );
    assert_eq!(
        proxy.count("SendTaskSuccess"),
        (1, 1),
        "refused once, never retried"
    );
    assert_eq!(
        worker
            .log_text()
            .matches("step functions refused this task's report for good")
            .count(),
        1
    );
    journal_emptied(&dir, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_refused_for_a_kms_key_is_sent_again_without_error_and_cause() {
    let (dir, sfn, livy, activity) = rig("report-kms", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    // An execution encrypted with a customer key the worker may not use: error and cause would
    // need it; a failure without them does not.
    let proxy = SfnProxy::start(|op, body| {
        (op == "SendTaskFailure" && (body.get("error").is_some() || body.get("cause").is_some()))
            .then(|| {
                (
                    "KmsAccessDeniedException".to_owned(),
                    "not authorized to perform kms:GenerateDataKey".to_owned(),
                )
            })
    })
    .await;
    let _worker = proxy.worker(&dir, &activity, &livy.url);
    let ex = sfn.start(&sm, &json!({"File": "sim:dead?run=1"})).await;
    let out = sfn.finish(&ex, Duration::from_secs(30)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.unwrap_or_default(), "", "{:?}", out.cause);
    assert_eq!(proxy.count("SendTaskFailure"), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_task_is_submitted_once_its_entry_is_in_place_without_waiting_for_the_flush() {
    let (dir, sfn, livy, activity) = rig("slow-flush", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let stalled = dir.join("flush-stalled");
    let stalled_path = stalled.to_str().expect("utf-8 path").to_owned();
    let worker = Worker::start_with_env(
        &dir,
        &activity,
        &livy.url,
        &["--pollers-per-activity", "1"],
        &[(
            "SPARK_ACTIVITY_WORKER_FAILPOINT_JOURNAL_FLUSH",
            &stalled_path,
        )],
    );
    worker
        .wait_for_log("polling for a task", Duration::from_secs(30))
        .await;
    // From here a new entry's flush to disk does not finish (a disk slowed by a burst of
    // writes): the task's entry is in place, a process kill would not lose it, and the POST
    // does not wait for the disk.
    std::fs::write(&stalled, b"").expect("stall flushes");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=2"})).await;
    livy.until(
        "the batch posted while its entry's flush is stalled",
        Duration::from_secs(30),
        |s| s["posts"] == 1,
    )
    .await;
    assert_eq!(journal_files(&dir), 1, "the entry is in place");

    std::fs::remove_file(&stalled).expect("flushes finish");
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(livy.stats().await["created"], 1);
    journal_emptied(&dir, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_delivered_while_the_journal_cannot_be_written_is_submitted_only_once_it_is_on_disk()
{
    let (dir, sfn, livy, activity) = rig("disk-full-delivery", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let full = dir.join("disk-full");
    let full_path = full.to_str().expect("utf-8 path").to_owned();
    let worker = Worker::start_with_env(
        &dir,
        &activity,
        &livy.url,
        &["--pollers-per-activity", "1"],
        &[("SPARK_ACTIVITY_WORKER_FAILPOINT_JOURNAL_WRITE", &full_path)],
    );
    // A poll is open when the disk fills up; the task it brings cannot be journaled.
    worker
        .wait_for_log("polling for a task", Duration::from_secs(30))
        .await;
    std::fs::write(&full, b"").expect("disk full");
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    worker
        .wait_for_log("cannot write the journal", Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        livy.stats().await["posts"],
        0,
        "not submitted while not journaled"
    );
    assert_eq!(
        sfn.describe(&ex).await.status,
        ExecutionStatus::Running,
        "heartbeats keep it alive"
    );

    std::fs::remove_file(&full).expect("space again");
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(livy.stats().await["created"], 1);
}
