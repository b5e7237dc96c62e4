//! Real Spark: `spark-submit` from pyspark, driven through the Livy-compatible server.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;

use crate::harness::{Livy, Sfn, Worker, pi_py, rig, scratch};

/// The state machine of the original project's README (tests/rig/readme-state-machine.json, shared
/// with `make demo`): verbatim but for `HeartbeatSeconds`, aimed at this rig's activity and Livy
/// port; `File` comes from `--default-file` (pi.py).
pub fn original_readme_state_machine(activity: &str, livy_port: u16) -> serde_json::Value {
    let text =
        std::fs::read_to_string(crate::harness::root().join("tests/rig/readme-state-machine.json"))
            .expect("readme-state-machine.json");
    let mut sm: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    sm["States"]["SparkPi"]["Resource"] = json!(activity);
    sm["States"]["SparkPi"]["Parameters"]["LivyPort"] = json!(livy_port);
    sm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_readme_state_machine_computes_pi_with_real_spark() {
    let (dir, sfn, livy, activity) = rig("readme", &["--state-retain-secs", "600"]).await;
    let sm = sfn
        .state_machine(&original_readme_state_machine(&activity, livy.port))
        .await;
    let livy_url = format!("http://127.0.0.1:{}", livy.port);
    let _worker = Worker::start(&dir, &activity, &livy_url, &["--default-file", &pi_py()]);

    let ex = sfn
        .start(&sm, &json!({"SparkClusterPublicDNS": "127.0.0.1"}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(180)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let o = out.output.expect("output");
    assert_eq!(o["name"], "Spark Pi");
    assert_eq!(o["state"], "success");
    assert!(
        o["applicationId"].is_null(),
        "local-mode Livy has no app id: {o}"
    );
    let id = o["batchId"].as_i64().expect("batchId");

    let (status, log) = livy.get(&format!("batches/{id}/log?size=-1")).await;
    assert_eq!(status, 200);
    let text = log["log"]
        .as_array()
        .expect("log lines")
        .iter()
        .filter_map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("Pi is roughly 3.1"),
        "the real application ran: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_app_that_raises_fails_with_the_exception_in_the_cause() {
    let dir = scratch("raises");
    let app = dir.join("fails.py");
    std::fs::write(
        &app,
        "from pyspark.sql import SparkSession\n\
         spark = SparkSession.builder.getOrCreate()\n\
         print('rows:', spark.range(3).count())\n\
         raise ValueError('input partition 2024-06-01 is missing')\n",
    )
    .expect("write app");
    let sfn = Sfn::new().await;
    let livy = Livy::start(&dir, &[]).await;
    let activity = sfn.activity("raises").await;
    let sm = sfn.one_task_machine(&activity, 30, 300).await;
    let _worker = Worker::start(&dir, &activity, &livy.url, &[]);

    let ex = sfn
        .start(&sm, &json!({"File": format!("file://{}", app.display()), "Name": "fails", "DriverMemory": "512m"}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(180)).await;
    assert_eq!(out.status, ExecutionStatus::Failed, "{out:?}");
    assert_eq!(out.error.as_deref(), Some("SparkJob.Failed"));
    let cause = out.cause.expect("cause");
    assert!(
        cause.starts_with("spark application failed: batch "),
        "{cause}"
    );
    assert!(
        cause
            .lines()
            .next()
            .is_some_and(|l| l.contains("ended dead")),
        "{cause}"
    );
    assert!(
        cause.contains("ValueError: input partition 2024-06-01 is missing"),
        "{cause}"
    );
    assert!(cause.chars().count() <= 32_768);
}
