//! A Livy-compatible batch REST server for the integration tests and the demo, with a simulated
//! YARN ResourceManager on the same listener.
//!
//! It follows Apache Livy's batch API (routes, error shapes, id and name rules, log paging,
//! retention, CSRF) and runs each batch either as a real `spark-submit` child (local mode: no
//! YARN application, `appId` stays null) or, for a `file` of the form
//! `sim:<outcome>?start=&run=&app=&msg=&lines=`, as a YARN application driven by a script, which
//! the batch mirrors the way Livy in YARN cluster mode follows its applications.
//!
//! # The simulated ResourceManager
//! Every `sim:` batch submits an application at creation (`ACCEPTED`), tagged
//! `livy-batch-<id>-<8 random chars>` followed by the request's `spark.yarn.tags`, all lower-cased.
//! The script moves the application (`ACCEPTED` for `start`, then `RUNNING`, then after `run`:
//! `success` FINISHED/SUCCEEDED, `dead` and `error` FAILED/FAILED with `msg` as diagnostics,
//! `killed` KILLED/KILLED, `forever` stays RUNNING, any other word is shown by Livy while RUNNING
//! and then succeeds). The application outlives Livy's memory of the batch: the script runs on
//! after a restart or a DELETE forgot the batch. While Livy holds a batch that follows its
//! application, the batch state mirrors it (ACCEPTED → `starting`, RUNNING → `running`,
//! FINISHED+SUCCEEDED → `success`, FAILED or FINISHED+FAILED → `dead`, KILLED → `killed`; a
//! `recovering` batch stays so until RUNNING or final), and a failed application's diagnostics
//! follow the `YARN Diagnostics` log header. `appId` and `appInfo` show only with `app=1`.
//!
//! RM routes (own faults, never Livy's faults or CSRF):
//! - `GET /ws/v1/cluster/apps?applicationTags=a,b&states=RUNNING,ACCEPTED`: apps with any of the
//!   tags, in any of the states; `{"apps":null}` when none.
//! - `GET /ws/v1/cluster/apps/{appid}` and `.../state`; unknown ids get a 404 `RemoteException`.
//! - `PUT /ws/v1/cluster/apps/{appid}/state {"state":"KILLED"}`: 202 and the kill lands shortly
//!   after (a batch following the application becomes `killed`); 200 on a final application.
//!
//! # HTTPS
//! `--tls-ca-out PATH`: HTTPS only, every route on the one listener. At start the server makes a
//! fresh CA and a leaf certificate it signs for `localhost`, `127.0.0.1` and `::1`, and writes the
//! CA certificate (PEM) to PATH before it prints its `listening on` line (unchanged). TLS 1.2 and
//! 1.3 by rustls with `ring`, HTTP/1.1.
//!
//! # Control API (`/_control`, never faulted)
//! - `GET stats`: counters (`posts`, `created`, `deletes`, `yarn_kills`), every batch ever created
//!   and every application ever submitted (with who killed it).
//! - `POST faults`: Livy error rate/status and latency, a lost or slowed `POST /batches` reply, and
//!   an RM error rate/status.
//! - `POST batches/{id}/state {"state", "yarn"}`: forces Livy's state; with `yarn` (the default)
//!   the application moves to the matching state and its script stops, without it Livy misreports
//!   and stops following the application.
//! - `POST yarn/apps/{appid}/state {"state", "finalStatus", "diagnostics"}`: forces an application.
//! - `POST restart {"recovery", "crash"}`: a Livy restart. Without recovery every held batch is
//!   forgotten and ids restart at 0; a clean stop also kills the unfinished applications and real
//!   children of those batches, a crash leaves them running. With recovery, unfinished batches
//!   come back `recovering` and re-attach to their applications, `success` ones are kept, the
//!   other finished ones are forgotten, and ids continue.
//!
//! # Layout
//! - `main.rs`: command line, logging, serving, retention sweep, shutdown.
//! - `api.rs`: the Livy routes, the fault/CSRF gate, the router that merges all routes.
//! - `yarn.rs`: the ResourceManager: application records, the cluster registry, the RM routes.
//! - `control.rs`: the control routes.
//! - `request.rs`: the create body, checked like Jackson and Livy, and the spark-submit arguments.
//! - `batch.rs`: batch records and how they mirror their application, the registry (which holds
//!   the cluster under the same lock), the log ring buffer, paging arithmetic.
//! - `runner.rs`: spark-submit children and the `sim:` script.
//! - `faults.rs`: fault-injection settings.
//! - `tls.rs`: the generated CA and certificate, the TLS listener.
//!
//! # Deviations from Livy and YARN
//! - Without `--local-dir-whitelist`, every local path is allowed (Livy allows none).
//! - A create that fails file validation leaves no "ghost" batch behind.
//! - No auth, ACLs, impersonation or conf blacklist; `owner` and `proxyUser` are always null.
//! - Only `sim:` batches are YARN applications; real batches run in local mode beside the
//!   simulated cluster.
//! - A forced state stops the application's script for good (unless Livy was told to misreport).
//! - The RM knows only `applicationTags` and `states` as list filters, never forgets an
//!   application, accepts only `KILLED` as a target state, and needs no user or auth.
//! - A recovered batch re-attaches after a fixed short delay rather than at Livy's poll interval.

mod api;
mod batch;
mod control;
mod faults;
mod request;
mod runner;
#[cfg(test)]
mod testing;
mod tls;
mod yarn;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::serve::Listener;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::batch::{App, Settings};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "LIVY_SERVER_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (printed as `listening on <addr>`).
    #[arg(long, env = "LIVY_SERVER_PORT", default_value_t = 8998)]
    port: u16,
    /// The spark-submit program for real batches.
    #[arg(long, env = "LIVY_SERVER_SPARK_SUBMIT", default_value = "spark-submit")]
    spark_submit: String,
    /// `--master` passed to spark-submit.
    #[arg(long, env = "LIVY_SERVER_SPARK_MASTER", default_value = "local[1]")]
    spark_master: String,
    /// Local directory batches may use files from (repeatable); none means any.
    #[arg(long, env = "LIVY_SERVER_LOCAL_DIR_WHITELIST", value_delimiter = ',')]
    local_dir_whitelist: Vec<String>,
    /// Batches allowed to be "being created" at once before POST is rejected.
    #[arg(long, env = "LIVY_SERVER_MAX_CREATING", default_value_t = 100)]
    max_creating: usize,
    /// Seconds a finished batch is kept (`livy.server.session.state-retain.sec`).
    #[arg(long, env = "LIVY_SERVER_STATE_RETAIN_SECS", default_value = "600", value_parser = secs)]
    state_retain_secs: Duration,
    /// Seconds between retention sweeps.
    #[arg(long, env = "LIVY_SERVER_RETAIN_SWEEP_SECS", default_value = "60", value_parser = secs)]
    retain_sweep_secs: Duration,
    /// Extra time a DELETE takes, as Livy's can block on YARN.
    #[arg(long, env = "LIVY_SERVER_DELETE_DELAY_MS", default_value_t = 0)]
    delete_delay_ms: u64,
    /// Require an `X-Requested-By` header on POST and DELETE.
    #[arg(long, env = "LIVY_SERVER_CSRF")]
    csrf: bool,
    /// Serve HTTPS with a CA made at start, whose certificate (PEM) is written here.
    #[arg(long, env = "LIVY_SERVER_TLS_CA_OUT")]
    tls_ca_out: Option<PathBuf>,
}

/// Seconds, fractions allowed.
fn secs(s: &str) -> Result<Duration, String> {
    let n: f64 = s.parse().map_err(|e| format!("{e}"))?;
    let d = Duration::try_from_secs_f64(n).map_err(|e| format!("{e}"))?;
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match serve(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "livy-server failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> std::io::Result<()> {
    let tls = match &cli.tls_ca_out {
        Some(path) => {
            let identity = tls::generate().map_err(std::io::Error::other)?;
            std::fs::write(path, &identity.ca_pem).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })?;
            Some(identity.config)
        }
        None => None,
    };
    let app = Arc::new(App::new(Settings {
        spark_submit: cli.spark_submit,
        spark_master: cli.spark_master,
        whitelist: cli.local_dir_whitelist,
        max_creating: cli.max_creating,
        retain: cli.state_retain_secs,
        delete_delay: Duration::from_millis(cli.delete_delay_ms),
        csrf: cli.csrf,
    }));
    let listener = TcpListener::bind((cli.host.as_str(), cli.port)).await?;
    let addr = listener.local_addr()?;
    // The one stdout line a harness waits for; the socket already accepts connections.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    drop(out);
    info!(%addr, tls = tls.is_some(), "serving");

    tokio::spawn(sweep(app.clone(), cli.retain_sweep_secs));
    let router = api::router(app.clone());
    match tls {
        Some(config) => run(app, tls::TlsListener::new(listener, config)?, router).await,
        None => run(app, listener, router).await,
    }
}

/// Serves until SIGINT or SIGTERM, then stops like Livy and drains.
async fn run<L>(app: Arc<App>, listener: L, router: Router) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let mut terminate = signal(SignalKind::terminate())?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .into_future();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        res = &mut server => return res,
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    // Livy without recovery stops every session on shutdown.
    info!("shutting down, killing children");
    runner::kill_all(&app);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN, server).await.is_err() {
        info!("requests still in flight, exiting anyway");
    }
    Ok(())
}

/// Forgets finished batches once their retention has passed, like Livy's GC thread.
async fn sweep(app: Arc<App>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let swept = app.lock().sweep(app.settings.retain, Instant::now());
        if swept > 0 {
            info!(swept, "retention expired");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["livy-server", "--port", "0", "--state-retain-secs", "0.5"])
            .expect("valid flags");
        assert_eq!(cli.state_retain_secs, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["livy-server", "--retain-sweep-secs", "-1"]).is_err());
    }
}
