//! The load the worker puts on what it shares with everyone else on the cluster: Livy.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Worker, rig, running};

/// Thirty batches in flight: every sync tick reads them all through one listing of Livy's
/// batches, and none by name. Before, it was one `GET /batches/{name}` per batch per tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_batches_in_flight_cost_livy_one_listing_a_tick_and_no_read_by_name() {
    let (dir, sfn, livy, activity) = rig("scale-livy", &[]).await;
    let _worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &[
            "--sync-interval",
            "1s",
            "--heartbeat-interval",
            "5s",
            "--pollers-per-activity",
            "4",
        ],
    );
    let machine = sfn.one_task_machine(&activity, 60, 600).await;
    let mut executions = Vec::new();
    for i in 0..30 {
        let input = json!({"File": "sim:forever", "Name": format!("stream-{i}")});
        executions.push(sfn.start(&machine, &input).await);
    }
    livy.until("30 batches running", Duration::from_secs(120), |s| {
        running(s) == 30
    })
    .await;
    // Every supervisor past its first read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = livy.stats().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = livy.stats().await;
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let (lists, gets) = (delta("lists"), delta("gets"));
    println!("10 s, 30 batches, 1 s sync: {lists} listings, {gets} reads by name");
    assert!(
        (9..=12).contains(&lists),
        "one listing a tick (10 ticks, one more for an edge): {lists}"
    );
    assert_eq!(gets, 0, "no batch read by name");
    assert_eq!(running(&after), 30, "all still running");
    for e in &executions {
        sfn.stop(e).await;
    }
}
