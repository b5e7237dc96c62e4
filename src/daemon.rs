//! Composition root: builds the clients, starts the Livy probe and the pollers, and runs the
//! shutdown sequence (stop polling → let open polls return → drain tasks → exit).

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::RunArgs;
use crate::health;
use crate::livy::LivyClient;
use crate::poller::Poller;
use crate::sfn::SfnClient;
use crate::supervisor::{Context, InFlight, Settings};

/// Runs until `shutdown` is cancelled and the drain is over.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let livy = LivyClient::new(args.livy_url.clone())?;
    let sfn = SfnClient::from_env().await;
    let worker_name: Arc<str> = args.worker_name().into();
    let ctx = Arc::new(Context {
        sfn,
        livy: livy.clone(),
        settings: Settings {
            sync_interval: args.sync_interval,
            heartbeat_interval: args.heartbeat_interval,
            default_file: args.default_file.clone(),
            allowed_hosts: args.allowed_hosts(),
            livy_retry_timeout: args.livy_retry_timeout,
        },
        in_flight: InFlight::default(),
    });

    let (livy_up_tx, livy_up) = watch::channel(false);
    let stop_probe = CancellationToken::new();
    let probe = tokio::spawn(health::watch_livy(
        livy.clone(),
        livy_up_tx,
        stop_probe.clone(),
    ));

    let slots = Arc::new(Semaphore::new(args.max_concurrent_tasks as usize));
    let tasks = TaskTracker::new();
    let pollers = TaskTracker::new();
    for arn in &args.activity_arns {
        let activity: Arc<str> = arn.as_str().into();
        for _ in 0..args.pollers_per_activity {
            pollers.spawn(
                Poller {
                    ctx: ctx.clone(),
                    activity: activity.clone(),
                    worker_name: worker_name.clone(),
                    slots: slots.clone(),
                    livy_up: livy_up.clone(),
                    shutdown: shutdown.clone(),
                    tasks: tasks.clone(),
                }
                .run(),
            );
        }
    }
    info!(
        activities = args.activity_arns.len(),
        livy = %redacted(&args.livy_url),
        worker = %worker_name,
        max_concurrent_tasks = args.max_concurrent_tasks,
        "worker started"
    );

    shutdown.cancelled().await;
    pollers.close();
    tasks.close();
    info!(
        tasks = ctx.in_flight.snapshot().len(),
        drain_timeout = %humantime::format_duration(args.drain_timeout),
        "stopped polling; draining supervised tasks"
    );
    // Polls already open can still deliver a task (within the service's 60 s); wait for them:
    // each such task is failed at once with Worker.ShuttingDown rather than lost.
    let drain = async {
        if tokio::time::timeout(args.drain_timeout, tasks.wait())
            .await
            .is_err()
        {
            for (token, r) in ctx.in_flight.snapshot() {
                warn!(
                    token = %token,
                    activity = %r.activity,
                    batch_id = ?r.batch_id,
                    batch_name = r.batch_name.as_deref().unwrap_or("-"),
                    livy = r.livy_url.as_deref().unwrap_or("-"),
                    "drain timeout: leaving this task's batch running"
                );
            }
        }
    };
    tokio::join!(pollers.wait(), drain);
    stop_probe.cancel();
    let _ = probe.await;
    info!("worker stopped");
    Ok(())
}

/// The Livy URL for logs: credentials in it never reach a log line.
fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}
