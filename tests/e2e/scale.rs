//! The load the worker puts on what it shares with everyone else on the cluster: Livy.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Livy, Worker, free_port, rig, running, scratch};
use crate::operate::{Monitor, Scrape, m};

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
    // The target: at most 1 + ⌈batches / page size⌉ a tick (10 ticks, and one for an edge);
    // one a tick when a tick's reads all land in one listing.
    assert!(
        (9..=21).contains(&lists),
        "at most 1 + ⌈30 / 500⌉ listings a tick: {lists}"
    );
    assert_eq!(gets, 0, "no batch read by name");
    assert_eq!(running(&after), 30, "all still running");
    for e in &executions {
        sfn.stop(e).await;
    }
}

/// Twelve tasks that would heartbeat twelve times a second against a budget of four calls a
/// second. A worker at its budget takes no new task (polls go last), so the twelve come from the
/// journal: a worker with the default budget takes them, is killed, and one with a budget of 4
/// resumes them all at once. Step Functions never sees more than the budget, and every execution
/// still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_twelve_tasks_stay_within_a_budget_of_four_calls_a_second_and_succeed() {
    let (dir, sfn, livy, activity) = rig("scale-budget", &[]).await;
    let mut first = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &["--heartbeat-interval", "1s", "--pollers-per-activity", "4"],
    );
    let machine = sfn.one_task_machine(&activity, 60, 300).await;
    let mut executions = Vec::new();
    for i in 0..12 {
        let input = json!({"File": "sim:success?run=45", "Name": format!("budget-{i}")});
        executions.push(sfn.start(&machine, &input).await);
    }
    livy.until("12 batches running", Duration::from_secs(120), |s| {
        running(s) == 12
    })
    .await;
    first.kill9().await;

    let addr = format!("127.0.0.1:{}", free_port());
    let _second = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &[
            "--sfn-calls-per-second",
            "4",
            "--heartbeat-interval",
            "1s",
            "--metrics-listen",
            &addr,
        ],
    );
    let mon = Monitor::new(&addr);
    mon.until("readyz", 200, |_| true, Duration::from_secs(30))
        .await;
    let calls = |s: &Scrape| s.sum(&m("sfn_requests_total"), &[]);
    let before = mon.scrape().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = mon.scrape().await;
    let made = calls(&after) - calls(&before);
    println!("10 s, 12 resumed tasks at 1 s heartbeats, budget 4/s: {made} Step Functions calls");
    // Four a second, and up to a second's worth more at once.
    assert!(made <= 4.0 * 10.0 + 4.0, "{made} calls in 10 s");
    assert!(made >= 4.0 * 10.0 * 0.75, "the budget is used: {made}");
    assert_eq!(after.sum(&m("sfn_budget_calls_per_second"), &[]), 4.0);
    assert!(
        after.sum(
            &m("sfn_budget_wait_seconds_count"),
            &[("priority", "heartbeat")]
        ) > 0.0,
        "{}",
        after.text
    );
    for e in &executions {
        let out = sfn.finish(e, Duration::from_secs(180)).await;
        assert_eq!(
            out.status,
            aws_sdk_sfn::types::ExecutionStatus::Succeeded,
            "{out:?}"
        );
    }
}

/// Two clusters' workers poll one activity; one cluster's YARN is full. It takes no task while
/// full, nothing waits on it, and every execution of a burst succeeds on the other. Given room,
/// it polls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_goes_to_the_cluster_with_room_and_none_to_the_full_one() {
    a_burst_goes_to_the_cluster_with_room(
        "scale-room",
        &[],
        "YARN has 1024 MiB free, less than --yarn-headroom-memory (2048 MiB)",
        &[(
            "yarn/free",
            json!({"availableMB": 1024, "availableVirtualCores": 2, "appsPending": 0}),
        )],
        &[(
            "yarn/free",
            json!({"availableMB": 65536, "availableVirtualCores": 32, "appsPending": 0}),
        )],
    )
    .await;
}

/// The same with `--yarn-queue`: both clusters have plenty free, but on one the jobs' queue is
/// at its ceiling (a quarter of the cluster, all used). That cluster takes none of the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_skips_the_cluster_whose_queue_is_at_its_ceiling() {
    let cluster = json!({"availableMB": 49152, "availableVirtualCores": 24, "appsPending": 0,
                         "totalMB": 65536, "totalVirtualCores": 32});
    // etl may use a quarter of the cluster: 16 GiB and 8 cores.
    let queues = |(used_mb, used_vcores): (i64, i64)| {
        json!([
            {"queueName": "default", "absoluteMaxCapacity": 75.0},
            {"queueName": "etl", "absoluteMaxCapacity": 25.0, "usedMB": used_mb, "usedVirtualCores": used_vcores},
        ])
    };
    // The cluster has room throughout (48 GiB free): only the queue's figures change.
    a_burst_goes_to_the_cluster_with_room(
        "scale-queue",
        &["--yarn-queue", "etl"],
        "YARN queue root.etl has 0 MiB free, less than --yarn-headroom-memory (2048 MiB)",
        &[
            ("yarn/free", cluster.clone()),
            ("yarn/queues", queues((16384, 8))),
        ],
        &[
            ("yarn/free", cluster.clone()),
            ("yarn/queues", queues((0, 0))),
        ],
    )
    .await;
}

/// `fill` (control calls) makes one cluster full, `free` gives it room again; the other has
/// `free` from the start. Both workers need 2 GiB and a core to poll, plus `flags`; the full
/// one says `why` it does not poll.
async fn a_burst_goes_to_the_cluster_with_room(
    name: &str,
    flags: &[&str],
    why: &str,
    fill: &[(&str, Value)],
    free: &[(&str, Value)],
) {
    let (dir, sfn, roomy, activity) = rig(name, &[]).await;
    let full_dir = scratch(&format!("{name}-full"));
    let full = Livy::start(&full_dir, &[]).await;
    for (path, body) in free {
        roomy.control(path, body.clone()).await;
    }
    for (path, body) in fill {
        full.control(path, body.clone()).await;
    }
    let mut args = vec![
        "--yarn-headroom-memory",
        "2g",
        "--yarn-headroom-vcores",
        "1",
    ];
    args.extend_from_slice(flags);
    let full_worker = Worker::start(&full_dir, &activity, &full.url, &args);
    let _roomy_worker = Worker::start(&dir, &activity, &roomy.url, &args);
    // The check's own line, with its reason (the pollers' "waiting" line comes first).
    full_worker
        .wait_for_log(
            "the cluster has no room for another job; not polling",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(full_worker.count_in_log(why), 1, "{why}");
    let machine = sfn.one_task_machine(&activity, 30, 120).await;
    let started = std::time::Instant::now();
    let mut executions = Vec::new();
    for i in 0..10 {
        let input = json!({"File": "sim:success?run=2", "Name": format!("burst-{i}")});
        executions.push(sfn.start(&machine, &input).await);
    }
    for e in &executions {
        let out = sfn.finish(e, Duration::from_secs(120)).await;
        assert_eq!(
            out.status,
            aws_sdk_sfn::types::ExecutionStatus::Succeeded,
            "{out:?}"
        );
    }
    println!("10 executions done in {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "none waited on the full cluster: {:?}",
        started.elapsed()
    );
    assert_eq!(full.stats().await["posts"], 0, "the full cluster took none");
    assert_eq!(roomy.stats().await["created"], 10);
    assert_eq!(full_worker.count_in_log("task received"), 0);
    assert_eq!(full_worker.count_in_log("polling for a task"), 0);

    // Room again: it polls.
    for (path, body) in free {
        full.control(path, body.clone()).await;
    }
    full_worker
        .wait_for_log("the cluster has room; polling", Duration::from_secs(30))
        .await;
    full_worker
        .wait_for_log("polling for a task", Duration::from_secs(10))
        .await;
}
