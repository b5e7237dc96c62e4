//! End-to-end tests: real LocalStack Step Functions, the project's Livy-compatible server (real
//! `spark-submit` where it matters) and the worker binary. Run through `make test`.

mod commands;
mod durability;
mod harness;
mod lifecycle;
mod once;
mod operate;
mod proxy;
mod resource;
mod scale;
mod secure;
mod spark;
mod systemd;

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use harness::{Worker, batches, rig};
use serde_json::json;

#[tokio::test]
async fn bad_config_fails_at_start_with_one_line_naming_the_flag() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "run",
                "--activity-arn",
                "arn:aws:states:us-east-1:1:activity:a",
                "--max-concurrent-tasks",
                "0",
            ],
            "--max-concurrent-tasks",
        ),
        (
            &[
                "run",
                "--activity-arn",
                "arn:aws:states:us-east-1:1:activity:a",
                "--sync-interval",
                "often",
            ],
            "--sync-interval",
        ),
        (&["run"], "--activity-arn"),
    ];
    for (args, flag) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spark-activity-worker"))
            .args(args)
            .env_remove("SPARK_ACTIVITY_WORKER_ACTIVITY_ARN")
            .output()
            .expect("run worker");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_input_succeeds_with_the_documented_output() {
    let (dir, sfn, livy, activity) = rig("flat", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let _worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let input = json!({"File": "sim:success?run=1&app=1", "Name": "nightly-etl", "NumExecutors": "2",
                       "DriverMemory": "512m", "Args": ["2024-06-01", 3], "Conf": {"spark.x": true}});
    let ex = sfn.start(&sm, &input).await;
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let o = out.output.expect("output");
    assert_eq!(o["state"], "success");
    assert_eq!(o["name"], "nightly-etl");
    let batch_name = o["batchName"].as_str().expect("batchName");
    assert!(batch_name.starts_with("nightly-etl-"), "{batch_name}");
    assert!(
        o["applicationId"]
            .as_str()
            .is_some_and(|a| a.starts_with("application_")),
        "{o}"
    );
    assert!(
        o["driverLogUrl"].as_str().is_some(),
        "kept although Livy clears it on success: {o}"
    );
    assert!(o["sparkUiUrl"].as_str().is_some(), "{o}");
    let id = o["batchId"].as_i64().expect("batchId");
    assert_eq!(o["livyUrl"], format!("{}/batches/{id}", livy.url));
    for k in ["submittedAt", "finishedAt"] {
        assert!(
            humantime::parse_rfc3339(o[k].as_str().expect(k)).is_ok(),
            "{k}: {o}"
        );
    }
    assert!(
        o["durationSeconds"].as_f64().is_some_and(|d| d >= 1.0),
        "{o}"
    );

    // What reached Livy: typed fields converted, nothing Livy does not know.
    let stats = livy.stats().await;
    let sent = &batches(&stats)[0]["request"];
    // The YARN tag is derived from the task like the name's suffix.
    let tag = format!("saw-{}", batch_name.rsplit('-').next().expect("suffix"));
    assert_eq!(
        sent,
        &json!({"file": "sim:success?run=1&app=1", "name": batch_name, "numExecutors": 2, "driverMemory": "512m",
                "args": ["2024-06-01", "3"], "conf": {"spark.x": "true", "spark.yarn.tags": tag}})
    );
    let app = harness::yarn_app(&stats, batch_name);
    assert!(
        app["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!(tag))),
        "{app}"
    );
    assert_eq!(o["applicationId"], app["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_as_invalid_input_and_never_reaches_livy() {
    let (dir, sfn, livy, activity) = rig("bad-input", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let _worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let cases = [
        (
            json!({"File": "sim:success", "NumExecutor": 2}),
            "\"NumExecutor\"",
        ),
        (
            json!({"File": "sim:success", "DriverMemory": "lots"}),
            "DriverMemory",
        ),
        (
            json!({"File": "sim:success", "NumExecutors": 0}),
            "NumExecutors",
        ),
        (json!({"File": "sim:success", "Args": [true]}), "Args[0]"),
        (
            json!({"File": "sim:success", "Conf": {"spark.a": {"nested": 1}}}),
            "Conf[\"spark.a\"]",
        ),
        (
            json!({"LivyHost": "evil.example.com", "Parameters": {"File": "sim:success"}}),
            "LivyHost",
        ),
        // The worker's own Livy host, another port on it (say, the ResourceManager's).
        (
            json!({"LivyHost": "127.0.0.1", "LivyPort": 1, "Parameters": {"File": "sim:success"}}),
            "127.0.0.1:1 is not a Livy endpoint this worker may use",
        ),
        (
            json!({"LivyHost": "127.0.0.1", "LivyPort": 0, "Parameters": {"File": "sim:success"}}),
            "LivyPort must be a port number 1-65535",
        ),
        (json!({"File": ""}), "File"),
        (json!({"ClassName": "org.example.Main"}), "File is required"),
    ];
    let mut executions = Vec::new();
    for (input, _) in &cases {
        executions.push(sfn.start(&sm, input).await);
    }
    for ((input, needle), ex) in cases.iter().zip(&executions) {
        let out = sfn.finish(ex, Duration::from_secs(30)).await;
        assert_eq!(out.status, ExecutionStatus::Failed, "{input}");
        assert_eq!(
            out.error.as_deref(),
            Some("SparkJob.InvalidInput"),
            "{input}"
        );
        let cause = out.cause.unwrap_or_default();
        assert!(cause.contains(needle), "{input}: {cause}");
    }
    assert_eq!(
        livy.stats().await["posts"],
        0,
        "invalid input must not reach Livy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_executions_at_once_all_succeed() {
    let (dir, sfn, livy, activity) = rig("fifty", &[]).await;
    // LocalStack can hand a task to a long poll whose connection just broke; such a delivery
    // reaches no worker and is retried after the heartbeat timeout. A task the worker received
    // and then lost would show as one more "task received" than batches created.
    let sm = sfn
        .one_task_machine_retrying_lost_deliveries(&activity, 10, 300)
        .await;
    let worker = Worker::start(&dir, &activity, &livy.url, &["--pollers-per-activity", "4"]);

    let mut executions = Vec::new();
    for _ in 0..50 {
        executions.push(sfn.start(&sm, &json!({"File": "sim:success?run=2"})).await);
    }
    for ex in &executions {
        let out = sfn.finish(ex, Duration::from_secs(240)).await;
        assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    }
    let stats = livy.stats().await;
    assert_eq!(stats["created"], 50);
    assert_eq!(
        worker.count_in_log("task received"),
        50,
        "every task the worker received was run once"
    );
    let mut names: Vec<String> = batches(&stats)
        .iter()
        .map(|b| b["name"].as_str().unwrap_or("").to_owned())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        50,
        "one batch per execution, each with its own name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_executions_with_the_same_name_both_succeed() {
    let (dir, sfn, livy, activity) = rig("same-name", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let _worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let input = json!({"File": "sim:success?run=2", "Name": "nightly"});
    let a = sfn.start(&sm, &input).await;
    let b = sfn.start(&sm, &input).await;
    let (a, b) = (
        sfn.finish(&a, Duration::from_secs(60)).await,
        sfn.finish(&b, Duration::from_secs(60)).await,
    );
    assert_eq!(a.status, ExecutionStatus::Succeeded, "{a:?}");
    assert_eq!(b.status, ExecutionStatus::Succeeded, "{b:?}");
    let (a, b) = (a.output.expect("a"), b.output.expect("b"));
    assert_eq!(a["name"], "nightly");
    assert_eq!(b["name"], "nightly");
    assert_ne!(a["batchName"], b["batchName"]);
    let stats = livy.stats().await;
    assert_eq!(stats["created"], 2);
    assert_eq!(stats["posts"], 2, "no duplicate-name rejection, no retry");
}
