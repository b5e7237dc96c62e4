//! Composition root: builds the clients, resumes the journal, starts the health watchers and the
//! pollers, and runs the shutdown sequence (stop polling → let open polls return → detach, drain
//! or kill the tasks, as `--shutdown-mode` says → exit).

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::batch::Timing;
use crate::config::{self, RunArgs, ShutdownMode};
use crate::health;
use crate::http::redacted;
use crate::journal::Journal;
use crate::livy::{Livy, LivyClient};
use crate::poller::Poller;
use crate::sfn::SfnClient;
use crate::shutdown::{notify_ready, notify_stopping};
use crate::supervisor::{Context, InFlight, Settings};
use crate::task;
use crate::watchdog::{self, Liveness};
use crate::yarn::{self, YarnClient};

/// How long a submitted batch may take to reach YARN before "no application" means none will
/// come: Livy's own `livy.server.yarn.app-lookup-timeout`.
const YARN_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs until `shutdown` is cancelled and the shutdown sequence is over. With `upgrade` cancelled
/// too, every task is detached whatever `--shutdown-mode` says.
pub async fn run(
    args: RunArgs,
    journal: Journal,
    shutdown: CancellationToken,
    upgrade: CancellationToken,
) -> anyhow::Result<()> {
    let livy: Arc<dyn Livy> = Arc::new(LivyClient::new(args.livy_url.clone())?);
    let sfn = Arc::new(SfnClient::from_env().await);
    let worker_name: Arc<str> = args.worker_name().into();
    let yarn_urls = if args.yarn_urls.is_empty() {
        let host = config::this_host().unwrap_or_else(|| "localhost".to_owned());
        yarn::discover(&yarn::conf_dir(), &host)
    } else {
        args.yarn_urls.clone()
    };
    let yarn = Arc::new(YarnClient::new(yarn_urls.clone())?);
    let ctx = Arc::new(Context {
        sfn,
        livy: livy.clone(),
        yarn,
        settings: Settings {
            heartbeat_interval: args.heartbeat_interval,
            default_file: args.default_file.clone(),
            allowed_endpoints: args.allowed_endpoints(),
            timing: Timing {
                sync_interval: args.sync_interval,
                livy_retry_timeout: args.livy_retry_timeout,
                livy_outage_limit: args.livy_outage_limit,
                livy_retention: args.livy_retention,
                yarn_lookup_timeout: YARN_LOOKUP_TIMEOUT,
            },
        },
        in_flight: InFlight::default(),
        journal: journal.clone(),
        detach: CancellationToken::new(),
        kill: CancellationToken::new(),
    });

    let (livy_up_tx, livy_up) = watch::channel(false);
    let stop_probe = CancellationToken::new();
    let probe = tokio::spawn(health::watch_livy(
        livy.clone(),
        livy_up_tx,
        stop_probe.clone(),
    ));
    let journal_probe = tokio::spawn(health::watch_journal(journal.clone(), stop_probe.clone()));

    let slots = Arc::new(Semaphore::new(args.max_concurrent_tasks as usize));
    let tasks = TaskTracker::new();
    let pollers = TaskTracker::new();

    // Resume every journaled task before taking new ones.
    let entries = journal.load()?;
    let resumed = entries.len();
    for (key, entry) in entries {
        // Resumed tasks take slots too; more journaled tasks than slots still all resume.
        let permit = slots.clone().try_acquire_owned().ok();
        let ctx = ctx.clone();
        tasks.spawn(async move {
            task::resumed(ctx, key, entry).await;
            drop(permit);
        });
    }
    if resumed > 0 {
        info!(tasks = resumed, "resuming tasks from the journal");
    }

    let loops = args.activity_arns.len() * args.pollers_per_activity as usize;
    let liveness = Liveness::new(loops);
    let mut index = 0;
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
                    journal_writable: journal.writable(),
                    shutdown: shutdown.clone(),
                    tasks: tasks.clone(),
                    liveness: liveness.clone(),
                    index,
                }
                .run(),
            );
            index += 1;
        }
    }
    info!(
        activities = args.activity_arns.len(),
        livy = %redacted(&args.livy_url),
        yarn = %yarn_urls.iter().map(redacted).collect::<Vec<_>>().join(","),
        worker = %worker_name,
        max_concurrent_tasks = args.max_concurrent_tasks,
        "worker started"
    );
    notify_ready(&format!("polling {} activities", args.activity_arns.len()));
    // Pings only after READY=1, so systemd (and a test reading the socket) sees READY first.
    let watchdog = tokio::spawn(watchdog::run(liveness, stop_probe.clone()));

    shutdown.cancelled().await;
    notify_stopping();
    let mode = if upgrade.is_cancelled() {
        ShutdownMode::Detach
    } else {
        args.shutdown_mode
    };
    pollers.close();
    tasks.close();
    info!(
        tasks = ctx.in_flight.snapshot().len(),
        mode = ?mode,
        "stopped polling; waiting for open polls to return"
    );
    // Polls already open can still deliver a task (within the service's 60 s); they are waited
    // for in every mode, and each task they bring is failed at once with Worker.ShuttingDown.
    match mode {
        ShutdownMode::Detach => pollers.wait().await,
        ShutdownMode::Wait => {
            let drain = async {
                let _ = tokio::time::timeout(args.drain_timeout, tasks.wait()).await;
            };
            tokio::join!(pollers.wait(), drain);
        }
        ShutdownMode::Kill => {
            ctx.kill.cancel();
            tokio::join!(pollers.wait(), tasks.wait());
        }
    }
    for (token, r) in ctx.in_flight.snapshot() {
        info!(
            token = %token,
            activity = %r.activity,
            batch_id = ?r.batch_id,
            batch_name = %r.batch_name,
            livy = %r.livy_url,
            "leaving this task's batch running; the journal keeps it for the next start"
        );
    }
    ctx.detach.cancel();
    tasks.wait().await;
    stop_probe.cancel();
    let _ = probe.await;
    let _ = journal_probe.await;
    let _ = watchdog.await;
    info!("worker stopped");
    Ok(())
}
