//! What systemd sees of the real binary: readiness, watchdog pings, stopping; and `--version`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Livy, Sfn, Worker, scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_after_journal_recovery_then_watchdog_pings_and_stopping_on_sigterm() {
    let dir = scratch("notify");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    // A journaled task whose report is still pending: recovering it is part of starting up.
    let entry = json!({"version": 1, "taskToken": "not-a-real-token", "activityArn": "arn:aws:states:us-east-1:000000000000:activity:gone",
        "livyUrl": "http://127.0.0.1:9/", "batchName": "old-0123456789ab", "name": null,
        "request": {"file": "sim:success", "name": "old-0123456789ab"}, "batchId": 3, "submittedAt": null,
        "lastState": "dead", "report": {"kind": "failure", "error": "SparkJob.Failed", "cause": "old"}});
    std::fs::write(state.join("0123456789ab.json"), entry.to_string()).expect("write entry");

    let socket_path = dir.join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let sfn = Sfn::new().await;
    let livy = Livy::start(&dir, &[]).await;
    let activity = sfn.activity("notify").await;
    let worker = Worker::start_with_env(
        &dir,
        &activity,
        &livy.url,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );

    let mut buf = vec![0u8; 4096];
    let mut next = async || -> String {
        let n = tokio::time::timeout(Duration::from_secs(20), socket.recv(&mut buf))
            .await
            .expect("a notification within 20 s")
            .expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next().await;
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    let log = worker.log_text();
    assert!(
        log.contains("resuming tasks from the journal"),
        "READY came after journal recovery:\n{log}"
    );

    let since = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        if next().await.lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        since.elapsed() < Duration::from_secs(6),
        "pings every half period (1 s): {:?}",
        since.elapsed()
    );

    worker.signal("TERM");
    loop {
        if next().await.lines().any(|l| l == "STOPPING=1") {
            break;
        }
    }
}

#[test]
fn version_names_the_crate_version_and_the_git_revision() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spark-activity-worker"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    let rev = String::from_utf8_lossy(&rev.stdout).trim().to_owned();
    assert_eq!(
        line,
        format!(
            "spark-activity-worker {} ({rev})",
            env!("CARGO_PKG_VERSION")
        )
    );
}
