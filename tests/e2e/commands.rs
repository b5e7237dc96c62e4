//! The commands that work without Step Functions — `submit`, `validate`, `status` — and the
//! worker's JSON log lines, as an operator uses them.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::harness::{Livy, Worker, batches, pi_py, rig, running, scratch};

const BIN: &str = env!("CARGO_BIN_EXE_spark-activity-worker");

/// A command's exit code, stdout and stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn write_input(dir: &Path, name: &str, input: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, input.to_string()).expect("write input");
    path.to_str().expect("utf-8").to_owned()
}

/// `spark-activity-worker ARGS` to its end, with no Step Functions in the environment.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run(args: &[&str], within: Duration) -> Ran {
    let out = tokio::time::timeout(within, command(args).output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} still running after {within:?}"))
        .expect("run the command");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn submit_args<'a>(livy: &'a Livy, input: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "submit",
        input,
        "--livy-url",
        &livy.url,
        "--yarn-url",
        &livy.url,
        "--sync-interval",
        "300ms",
    ];
    args.extend_from_slice(extra);
    args
}

/// The original project's Spark Pi input, in the shape of its code (`LivyHost`, `LivyPort`,
/// `Parameters`), run by `submit` through real `spark-submit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_runs_the_original_projects_spark_pi_input_with_real_spark() {
    let dir = scratch("submit-pi");
    let livy = Livy::start(&dir, &["--state-retain-secs", "600"]).await;
    let input = write_input(
        &dir,
        "spark-pi.json",
        &json!({
            "LivyHost": "127.0.0.1",
            "LivyPort": livy.port,
            "Parameters": {
                "Name": "Spark Pi",
                "ClassName": "org.apache.spark.examples.SparkPi",
                "NumExecutors": 1,
                "DriverMemory": "512m",
                "ExecutorMemory": "512m",
                "ExecutorCores": 1,
                "Args": [10]
            }
        }),
    );
    let pi = pi_py();
    let out = run(
        &submit_args(&livy, &input, &["--default-file", &pi]),
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(
        out.code,
        Some(0),
        "stderr: {}\nstdout: {}",
        out.stderr,
        out.stdout
    );
    let o: Value = serde_json::from_str(out.stdout.trim()).expect("the output JSON on stdout");
    assert_eq!(o["name"], "Spark Pi", "{o}");
    assert_eq!(o["state"], "success", "{o}");
    let id = o["batchId"].as_i64().expect("batchId");
    assert!(
        o["batchName"]
            .as_str()
            .is_some_and(|n| n.starts_with("Spark Pi-")),
        "{o}"
    );
    assert_eq!(o["livyUrl"], format!("{}/batches/{id}", livy.url));
    // State changes as they happened, one line each (stderr is not a terminal here).
    for line in [
        "submitting Spark Pi-".to_owned(),
        format!("batch {id}: starting"),
        format!("batch {id}: success"),
    ] {
        assert!(
            out.stderr.contains(&line),
            "no {line:?} in:\n{}",
            out.stderr
        );
    }
    let (status, log) = livy.get(&format!("batches/{id}/log?size=-1")).await;
    assert_eq!(status, 200);
    let text: Vec<&str> = log["log"]
        .as_array()
        .expect("log lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        text.iter().any(|l| l.contains("Pi is roughly 3.1")),
        "the real application ran: {text:?}"
    );
    let sent = &batches(&livy.stats().await)[0]["request"];
    assert_eq!(sent["className"], "org.apache.spark.examples.SparkPi");
    assert_eq!(sent["args"], json!(["10"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_exits_1_on_a_spark_failure_2_on_bad_input_and_ctrl_c_deletes_the_batch() {
    let dir = scratch("submit-sim");
    let livy = Livy::start(&dir, &[]).await;

    let dead = write_input(
        &dir,
        "dead.json",
        &json!({"File": "sim:dead?run=1&msg=boom", "Name": "dies"}),
    );
    let out = run(&submit_args(&livy, &dead, &[]), Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let o: Value = serde_json::from_str(out.stdout.trim()).expect("JSON on stdout");
    assert_eq!(o["error"], "SparkJob.Failed", "{o}");
    assert!(
        o["cause"].as_str().is_some_and(|c| c.contains("boom")),
        "the log tail is the cause: {o}"
    );

    let bad = write_input(
        &dir,
        "bad.json",
        &json!({"File": "sim:success", "NumExecutor": 2}),
    );
    let before = batches(&livy.stats().await).len();
    let out = run(&submit_args(&livy, &bad, &[]), Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("SparkJob.InvalidInput: unknown field \"NumExecutor\""),
        "{}",
        out.stderr
    );
    let o: Value = serde_json::from_str(out.stdout.trim()).expect("JSON on stdout");
    assert_eq!(o["error"], "SparkJob.InvalidInput");
    assert_eq!(
        batches(&livy.stats().await).len(),
        before,
        "nothing reached Livy"
    );

    let forever = write_input(&dir, "forever.json", &json!({"File": "sim:forever"}));
    let mut child = command(&submit_args(&livy, &forever, &[]))
        .spawn()
        .expect("submit");
    livy.until("the batch running", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("submit ends after Ctrl-C")
        .expect("wait");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: deleting the batch"),
        "{stderr}"
    );
    let stats = livy.stats().await;
    assert_eq!(running(&stats), 0, "{stats:#}");
    assert!(
        batches(&stats).iter().any(|b| b["deleted"] == true),
        "the batch was deleted: {stats:#}"
    );
}

#[tokio::test]
async fn validate_prints_each_request_and_fails_ci_on_any_bad_input() {
    let dir = scratch("validate");
    let good = write_input(
        &dir,
        "good.json",
        &json!({"LivyHost": "livy.internal", "Parameters": {"File": "s3://code/etl.py", "NumExecutors": "3", "Name": "etl"}}),
    );
    let too_big = write_input(
        &dir,
        "too-big.json",
        &json!({"File": "s3://code/etl.py", "NumExecutors": 50}),
    );
    let elsewhere = write_input(
        &dir,
        "elsewhere.json",
        &json!({"LivyHost": "attacker.example", "Parameters": {"File": "s3://code/etl.py"}}),
    );
    let policy = [
        "--allowed-livy-endpoint",
        "livy.internal:8998",
        "--max-executors",
        "10",
        "--allowed-file-prefix",
        "s3://code/",
    ];
    let mut args = vec!["validate", good.as_str()];
    args.extend(policy);
    let ok = run(&args, Duration::from_secs(10)).await;
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    let (head, body) = ok.stdout.split_once("\n{").expect("a request body");
    assert_eq!(
        head,
        format!("{good}: valid\nPOST http://livy.internal:8998/batches")
    );
    let request: Value = serde_json::from_str(&format!("{{{body}")).expect("the request JSON");
    assert_eq!(
        request,
        json!({"file": "s3://code/etl.py", "numExecutors": 3, "name": "etl-xxxxxxxxxxxx",
               "conf": {"spark.yarn.tags": "saw-xxxxxxxxxxxx",
                        "spark.dynamicAllocation.maxExecutors": "10"}}),
        "the executor cap rides along, as the worker would send it"
    );

    let mut args = vec![
        "validate",
        good.as_str(),
        too_big.as_str(),
        elsewhere.as_str(),
    ];
    args.extend(policy);
    let bad = run(&args, Duration::from_secs(10)).await;
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    let errors: Vec<&str> = bad.stderr.lines().collect();
    assert_eq!(errors.len(), 2, "{}", bad.stderr);
    assert!(
        errors[0].starts_with(&format!("{too_big}: SparkJob.Forbidden: "))
            && errors[0].contains("--max-executors"),
        "{}",
        bad.stderr
    );
    assert!(
        errors[1].starts_with(&format!(
            "{elsewhere}: SparkJob.InvalidInput: LivyHost/LivyPort attacker.example:8998"
        )),
        "{}",
        bad.stderr
    );
    assert!(bad.stdout.contains(&format!("{good}: valid")));
}

/// `status` while the worker supervises two jobs, then the JSON log lines of those tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_tasks_in_flight_and_every_json_log_line_of_a_task_names_it() {
    let (dir, sfn, livy, activity) = rig("status", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 300).await;
    let mut worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &["--log-format", "json", "--log-level", "info"],
    );
    let mut executions = Vec::new();
    for (run, name) in [(8, "nightly-a"), (9, "nightly-b")] {
        let ex = sfn
            .start(
                &sm,
                &json!({"File": format!("sim:success?run={run}"), "Name": name,
                        "ExecutionId": format!("arn:aws:states:us-east-1:000000000000:execution:sm:{name}-run")}),
            )
            .await;
        executions.push(ex);
    }
    livy.until("both batches running", Duration::from_secs(30), |s| {
        running(s) == 2
    })
    .await;
    let state_dir = dir.join("state");
    let state_dir = state_dir.to_str().expect("utf-8");
    // The worker's sync catches up with Livy within an interval or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(
            &["status", "--state-dir", state_dir, "--json"],
            Duration::from_secs(10),
        )
        .await;
        let synced = out
            .stdout
            .lines()
            .filter(|l| l.contains("\"state\":\"running\""))
            .count();
        if synced == 2 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let table = run(
        &["status", "--state-dir", state_dir],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    println!("status while two tasks run:\n{}", table.stdout);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(lines[0].starts_with("TASK"), "{}", table.stdout);
    let name = activity.rsplit(':').next().expect("name");
    for execution in ["nightly-a-run", "nightly-b-run"] {
        let row = lines[1..]
            .iter()
            .find(|l| l.contains(execution))
            .unwrap_or_else(|| panic!("no row for {execution}:\n{}", table.stdout));
        assert!(row.contains(name) && row.contains("running"), "{row}");
    }
    let json_out = run(
        &["status", "--state-dir", state_dir, "--json"],
        Duration::from_secs(10),
    )
    .await;
    let rows: Vec<Value> = json_out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 2, "{}", json_out.stdout);
    let stats = livy.stats().await;
    for row in &rows {
        assert_eq!(row["state"], "running", "{row}");
        assert!(row["ageSeconds"].as_u64().is_some(), "{row}");
        assert!(row["report"].is_null(), "{row}");
        let id = row["batchId"].as_i64().expect("batchId");
        assert!(
            batches(&stats)
                .iter()
                .any(|b| b["id"] == id && b["name"] == row["batchName"]),
            "the row names Livy's batch: {row}"
        );
    }
    for ex in &executions {
        let out = sfn.finish(ex, Duration::from_secs(60)).await;
        assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    }
    let after = run(
        &["status", "--state-dir", state_dir],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(after.stdout, "no tasks in flight\n");

    worker.signal("TERM");
    worker.exit(Duration::from_secs(90)).await;
    // Every line is one JSON object with the stable keys; a task's lines carry its fields.
    let mut task_lines = 0;
    let mut with_batch_id = 0;
    for line in worker.log_text().lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        for key in ["timestamp", "level", "message"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        if v["span"]["name"] != "task" {
            continue;
        }
        task_lines += 1;
        let span = &v["span"];
        assert_eq!(span["activity"], name, "{line}");
        assert!(
            span["token"]
                .as_str()
                .is_some_and(|t| t.len() == 12 && t.chars().all(|c| c.is_ascii_hexdigit())),
            "{line}"
        );
        let execution = span["execution"].as_str().expect("execution");
        assert!(execution.starts_with("nightly-"), "{line}");
        let batch_name = span["batch_name"].as_str().expect("batch_name");
        assert!(
            batch_name.starts_with(&execution[..9]),
            "the batch of that execution: {line}"
        );
        if span.get("batch_id").is_some() {
            with_batch_id += 1;
        }
        if v["message"] == "reported success" {
            assert!(span["batch_id"].is_i64(), "{line}");
        }
    }
    assert!(task_lines >= 6, "{}", worker.log_text());
    assert!(with_batch_id >= 2, "{}", worker.log_text());
}
