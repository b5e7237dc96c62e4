//! Composition root: builds the clients, resumes the journal, starts the health watchers and the
//! pollers, and runs the shutdown sequence (stop polling → let open polls return → detach, drain
//! or kill the tasks, as `--shutdown-mode` says → exit).

use std::sync::Arc;

use ::metrics::gauge;
use futures::FutureExt;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::batch::Timing;
use crate::budget::{Budget, Budgeted};
use crate::capacity;
use crate::config::{BadConfig, RunArgs, ShutdownMode};
use crate::connect;
use crate::health;
use crate::http::redacted;
use crate::journal::Journal;
use crate::metrics;
use crate::monitor;
use crate::poller::Poller;
use crate::request;
use crate::sfn::{SfnClient, Tasks};
use crate::shutdown::{notify_ready, notify_stopping};
use crate::supervisor::{Context, InFlight, Settings};
use crate::task;
use crate::watchdog::{self, Liveness};

/// Runs until `shutdown` is cancelled and the shutdown sequence is over. With `upgrade` cancelled
/// too, every task is detached whatever `--shutdown-mode` says.
pub async fn run(
    args: RunArgs,
    journal: Journal,
    shutdown: CancellationToken,
    upgrade: CancellationToken,
) -> anyhow::Result<()> {
    let clients = connect::clients(&args.livy, true).await?;
    let monitoring = match args.metrics_listen {
        Some(addr) => {
            let listener = monitor::bind(addr)
                .await
                .map_err(|e| BadConfig(format!("--metrics-listen {addr}: {e}")))?;
            let handle = metrics::install()
                .map_err(|e| BadConfig(format!("--metrics-listen {addr}: {e}")))?;
            Some((listener, handle))
        }
        None => None,
    };
    let livy = clients.livy.clone();
    let client = SfnClient::from_env()
        .await
        .map_err(|e| BadConfig(format!("Step Functions: {e}")))?;
    let sfn_reachable = client.reachability();
    let budget = Budget::new(args.sfn_calls_per_second);
    let sfn: Arc<dyn Tasks> = Arc::new(Budgeted::new(Arc::new(client), budget));
    let worker_name: Arc<str> = args.worker_name().into();
    connect::first_contact(livy.as_ref(), &args.livy).await?;
    let ctx = Arc::new(Context {
        sfn,
        livy: livy.clone(),
        yarn: clients.yarn.clone(),
        settings: Settings {
            heartbeat_interval: args.heartbeat_interval,
            request: request::Rules::from_args(&args.livy, &args.policy),
            timing: Arc::new(Timing::from_args(&args.timing)),
        },
        in_flight: InFlight::default(),
        journal: journal.clone(),
        detach: CancellationToken::new(),
        kill: CancellationToken::new(),
    });

    let (livy_up_tx, livy_up) = watch::channel(false);
    let stop_probe = CancellationToken::new();
    let mut probe = tokio::spawn(health::watch_livy(
        livy.clone(),
        livy_up_tx,
        stop_probe.clone(),
    ));
    let journal_probe = tokio::spawn(health::watch_journal(journal.clone(), stop_probe.clone()));
    // With limits, no poll opens before the first check says there is room.
    let (room_tx, room) = watch::channel(!capacity::Headroom::from_args(&args.capacity).limits());
    let room_probe = tokio::spawn(capacity::watch(
        livy.clone(),
        clients.yarn.clone(),
        capacity::Headroom::from_args(&args.capacity),
        room_tx,
        stop_probe.clone(),
    ));

    let slots = Arc::new(Semaphore::new(args.max_concurrent_tasks as usize));
    let tasks = TaskTracker::new();
    let pollers = TaskTracker::new();
    let loops = args.activity_arns.len() * args.pollers_per_activity as usize;
    let liveness = Liveness::new(loops);

    let monitor = monitoring.map(|(listener, handle)| {
        let checks = monitor::Checks {
            liveness: liveness.clone(),
            livy_up: livy_up.clone(),
            journal_writable: journal.writable(),
            sfn_reachable,
            shutdown: shutdown.clone(),
            refresh: scrape_time_gauges(&ctx, args.max_concurrent_tasks, &journal),
        };
        info!(address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "serving /metrics, /healthz and /readyz");
        tokio::spawn(monitor::serve(listener, handle, Arc::new(checks), stop_probe.clone()))
    });

    // Resume every journaled task before taking new ones.
    let entries = journal.load()?;
    let resumed = entries.len();
    for (key, entry) in entries {
        // Resumed tasks take slots too; more journaled tasks than slots still all resume.
        let permit = slots.clone().try_acquire_owned().ok();
        // As the pollers spawn a delivery: the permit is held by a `map`, not an async block.
        let supervised = task::resumed(ctx.clone(), key, Box::new(entry));
        tasks.spawn(supervised.map(move |()| drop(permit)));
    }
    if resumed > 0 {
        info!(tasks = resumed, "resuming tasks from the journal");
    }

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
                    room: room.clone(),
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
        livy = %redacted(&args.livy.livy_url),
        yarn = %clients.yarn_urls.iter().map(redacted).collect::<Vec<_>>().join(","),
        worker = %worker_name,
        max_concurrent_tasks = args.max_concurrent_tasks,
        "worker started"
    );
    notify_ready(&format!("polling {} activities", args.activity_arns.len()));
    // Pings only after READY=1, so systemd (and a test reading the socket) sees READY first.
    let watchdog = tokio::spawn(watchdog::run(liveness, stop_probe.clone()));

    // A certificate that stops being trusted is a configuration fault, not an outage: the worker
    // stops (leaving its batches to the next start) rather than fail tasks as Livy.Unavailable.
    let mut fatal = None;
    tokio::select! {
        () = shutdown.cancelled() => {}
        ended = &mut probe => {
            if let Ok(Err(e)) = ended {
                error!(livy = %redacted(&args.livy.livy_url), error = %e, "stopping: Livy can no longer be trusted; fix --livy-ca-file");
                fatal = Some(BadConfig(connect::untrusted(&args.livy, &e)));
            }
        }
    }
    notify_stopping();
    let mode = if upgrade.is_cancelled() || fatal.is_some() {
        ShutdownMode::Detach
    } else {
        args.shutdown_mode
    };
    pollers.close();
    tasks.close();
    info!(
        tasks = ctx.in_flight.count(),
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
    if !probe.is_finished() {
        let _ = probe.await;
    }
    let _ = journal_probe.await;
    let _ = room_probe.await;
    let _ = watchdog.await;
    if let Some(monitor) = monitor {
        let _ = monitor.await;
    }
    info!("worker stopped");
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Sets the gauges read off the worker's state, for [`monitor::Checks::refresh`]: slots, batches
/// by Livy state, journal entries.
fn scrape_time_gauges(
    ctx: &Arc<Context>,
    max: u32,
    journal: &Journal,
) -> Arc<dyn Fn() + Send + Sync> {
    let (ctx, journal) = (ctx.clone(), journal.clone());
    Arc::new(move || {
        // Slots as tasks see them: an open poll holds a permit too, but no task yet.
        let by_state = ctx.in_flight.count_by_state();
        let supervised: usize = by_state.values().sum();
        gauge!(metrics::SLOTS_USED).set(supervised as f64);
        gauge!(metrics::SLOTS_AVAILABLE).set((max as usize).saturating_sub(supervised) as f64);
        for state in metrics::BATCH_STATES {
            let n = by_state.get(state).copied().unwrap_or_default();
            gauge!(metrics::BATCHES, "state" => *state).set(n as f64);
        }
        gauge!(metrics::JOURNAL_ENTRIES).set(journal.count() as f64);
    })
}
