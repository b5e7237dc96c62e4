//! Composition root: builds the clients, resumes the journal, starts the health watchers and the
//! pollers, and runs the shutdown sequence (stop polling → let open polls return → detach, drain
//! or kill the tasks, as `--shutdown-mode` says → exit).

use std::collections::HashMap;
use std::sync::Arc;

use ::metrics::gauge;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::auth::Auth;
use crate::batch::Timing;
use crate::config::{self, BadConfig, LivyAuth, RunArgs, ShutdownMode};
use crate::health;
use crate::http::{Trust, redacted};
use crate::journal::Journal;
use crate::kerberos::Kerberos;
use crate::livy::{Livy, LivyClient, LivyError};
use crate::metrics;
use crate::monitor;
use crate::poller::Poller;
use crate::sfn::SfnClient;
use crate::shutdown::{notify_ready, notify_stopping};
use crate::supervisor::{Context, InFlight, Settings};
use crate::task;
use crate::watchdog::{self, Liveness};
use crate::yarn::{self, YarnClient};

/// How long a submitted batch may take to reach YARN before "no application" means none will
/// come: Livy's own `livy.server.yarn.app-lookup-timeout`.
/// The systemd credential read when --livy-password-file is not given.
const PASSWORD_CREDENTIAL: &str = "livy-password";
/// The systemd credential read when --kerberos-keytab is not given.
const KEYTAB_CREDENTIAL: &str = "kerberos-keytab";

const YARN_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs until `shutdown` is cancelled and the shutdown sequence is over. With `upgrade` cancelled
/// too, every task is detached whatever `--shutdown-mode` says.
pub async fn run(
    args: RunArgs,
    journal: Journal,
    shutdown: CancellationToken,
    upgrade: CancellationToken,
) -> anyhow::Result<()> {
    let (trust, auth) = security(&args).await?;
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
    let livy: Arc<dyn Livy> = Arc::new(LivyClient::new(
        args.livy_url.clone(),
        &trust,
        auth.clone(),
    )?);
    let sfn = Arc::new(SfnClient::from_env().await);
    let sfn_reachable = sfn.reachability();
    let worker_name: Arc<str> = args.worker_name().into();
    let yarn_urls = if args.yarn_urls.is_empty() {
        let host = config::this_host().unwrap_or_else(|| "localhost".to_owned());
        yarn::discover(&yarn::conf_dir(), &host)
    } else {
        args.yarn_urls.clone()
    };
    let yarn = Arc::new(YarnClient::new(yarn_urls.clone(), &trust, auth)?);
    first_contact(livy.as_ref(), &args).await?;
    let ctx = Arc::new(Context {
        sfn,
        livy: livy.clone(),
        yarn,
        settings: Settings {
            heartbeat_interval: args.heartbeat_interval,
            default_file: args.default_file.clone(),
            allowed_endpoints: args.allowed_endpoints(),
            policy: args.policy(),
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
    let mut probe = tokio::spawn(health::watch_livy(
        livy.clone(),
        livy_up_tx,
        stop_probe.clone(),
    ));
    let journal_probe = tokio::spawn(health::watch_journal(journal.clone(), stop_probe.clone()));

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
        let ctx = ctx.clone();
        tasks.spawn(async move {
            task::resumed(ctx, key, entry).await;
            drop(permit);
        });
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

    // A certificate that stops being trusted is a configuration fault, not an outage: the worker
    // stops (leaving its batches to the next start) rather than fail tasks as Livy.Unavailable.
    let mut fatal = None;
    tokio::select! {
        () = shutdown.cancelled() => {}
        ended = &mut probe => {
            if let Ok(Err(e)) = ended {
                error!(livy = %redacted(&args.livy_url), error = %e, "stopping: Livy can no longer be trusted; fix --livy-ca-file");
                fatal = Some(BadConfig(untrusted(&args, &e)));
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
    if !probe.is_finished() {
        let _ = probe.await;
    }
    let _ = journal_probe.await;
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
        let supervised = ctx.in_flight.snapshot();
        gauge!(metrics::SLOTS_USED).set(supervised.len() as f64);
        gauge!(metrics::SLOTS_AVAILABLE)
            .set((max as usize).saturating_sub(supervised.len()) as f64);
        let mut by_state: HashMap<&str, usize> =
            metrics::BATCH_STATES.iter().map(|s| (*s, 0)).collect();
        for (_, task) in supervised {
            *by_state
                .entry(metrics::batch_state_label(task.last_state.as_deref()))
                .or_default() += 1;
        }
        for (state, n) in by_state {
            gauge!(metrics::BATCHES, "state" => state).set(n as f64);
        }
        gauge!(metrics::JOURNAL_ENTRIES).set(journal.count() as f64);
    })
}

/// The certificate authorities and credentials the configuration names, checked now: an
/// unreadable file, a password file without a password, a keytab the KDC does not take all stop
/// the start with one line naming the flag.
async fn security(args: &RunArgs) -> Result<(Trust, Auth), BadConfig> {
    let trust = match &args.livy_ca_file {
        Some(path) => {
            Trust::from_pem_file(path).map_err(|e| BadConfig(format!("--livy-ca-file {e}")))?
        }
        None => Trust::default(),
    };
    let auth = match args.livy_auth {
        LivyAuth::None => Auth::none(),
        LivyAuth::Basic => {
            let user = args.livy_user.clone().unwrap_or_default();
            Auth::basic(&args.livy_url, &user, &password(args)?)
        }
        LivyAuth::Kerberos => {
            let host = config::this_host().unwrap_or_else(|| "localhost".to_owned());
            let principal = args
                .kerberos_principal
                .clone()
                .unwrap_or_default()
                .replace("_HOST", &host.to_ascii_lowercase());
            let keytab = credential_file(
                args.kerberos_keytab.as_deref(),
                KEYTAB_CREDENTIAL,
                "--livy-auth kerberos needs --kerberos-keytab (or a kerberos-keytab credential from systemd's LoadCredential=)",
            )?;
            check_secret_file(&keytab, "--kerberos-keytab")?;
            let login = {
                let (principal, keytab) = (principal.clone(), keytab.clone());
                tokio::task::spawn_blocking(move || Kerberos::login(&principal, &keytab))
            };
            let kerberos = login
                .await
                .map_err(|e| BadConfig(format!("--kerberos-keytab: {e}")))?
                .map_err(|e| {
                    BadConfig(format!(
                        "--kerberos-keytab {}: cannot log in as {principal}: {e}",
                        keytab.display()
                    ))
                })?;
            Auth::kerberos(Arc::new(kerberos))
        }
    };
    Ok((trust, auth))
}

/// The password's first line, from --livy-password-file or systemd's `livy-password`
/// credential.
fn password(args: &RunArgs) -> Result<String, BadConfig> {
    let path = credential_file(
        args.livy_password_file.as_deref(),
        PASSWORD_CREDENTIAL,
        "--livy-auth basic needs --livy-password-file (or a livy-password credential from systemd's LoadCredential=)",
    )?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BadConfig(format!("--livy-password-file {}: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first.is_empty() {
        return Err(BadConfig(format!(
            "--livy-password-file {}: the first line (the password) is empty",
            path.display()
        )));
    }
    Ok(first.to_owned())
}

/// A secret file must be there, readable and filled in (install.sh creates them empty).
fn check_secret_file(path: &std::path::Path, flag: &str) -> Result<(), BadConfig> {
    match std::fs::metadata(path) {
        Err(e) => Err(BadConfig(format!("{flag} {}: {e}", path.display()))),
        Ok(m) if m.len() == 0 => Err(BadConfig(format!(
            "{flag} {}: the file is empty; put the secret in it",
            path.display()
        ))),
        Ok(_) => Ok(()),
    }
}

/// The file a flag names, else the systemd credential of that name (`$CREDENTIALS_DIRECTORY`).
fn credential_file(
    flag: Option<&std::path::Path>,
    credential: &str,
    missing: &str,
) -> Result<std::path::PathBuf, BadConfig> {
    match (flag, std::env::var_os("CREDENTIALS_DIRECTORY")) {
        (Some(p), _) => Ok(p.to_owned()),
        (None, Some(dir)) => Ok(std::path::Path::new(&dir).join(credential)),
        (None, None) => Err(BadConfig(missing.to_owned())),
    }
}

/// Before polling: a Livy that answers must be trusted (TLS) and must take the credentials. A
/// Livy that does not answer yet is waited for as usual; trust is then checked by the health
/// probe, which stops the worker on an untrusted certificate.
async fn first_contact(livy: &dyn Livy, args: &RunArgs) -> Result<(), BadConfig> {
    match livy.probe().await {
        Err(e @ LivyError::Tls(_)) => Err(BadConfig(untrusted(args, &e))),
        Err(LivyError::Http {
            status: status @ (401 | 403),
            msg,
        }) => Err(BadConfig(format!(
            "--livy-auth {}: Livy at {} refused the worker's credentials ({status}: {msg})",
            args.livy_auth.as_str(),
            redacted(&args.livy_url)
        ))),
        Err(e) => {
            warn!(livy = %redacted(&args.livy_url), error = %e, "livy does not answer yet; waiting for it");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

fn untrusted(args: &RunArgs, e: &LivyError) -> String {
    format!(
        "--livy-url {}: {e}; give the certificate authority that signed it with --livy-ca-file",
        redacted(&args.livy_url)
    )
}
