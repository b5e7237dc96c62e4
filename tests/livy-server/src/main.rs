//! A Livy-compatible batch REST server for the integration tests and the demo.
//!
//! It follows Apache Livy's batch API as `/work/shared/reference/livy-batch-api.md` describes it
//! (routes, error shapes, id and name rules, log paging, retention, CSRF) and runs each batch
//! either as a real `spark-submit` child (local mode: `appId` stays null) or, for a `file` of the
//! form `sim:<outcome>?start=&run=&app=&msg=&lines=`, as a scripted outcome. A `/_control` API
//! lets tests read counters, inject faults, force states and simulate restarts.
//!
//! # Layout
//! - `main.rs`: command line, logging, serving, retention sweep, shutdown.
//! - `api.rs`: the Livy routes, the fault/CSRF gate, the control routes.
//! - `request.rs`: the create body, checked like Jackson and Livy, and the spark-submit arguments.
//! - `batch.rs`: batch records, the registry, the log ring buffer, paging arithmetic.
//! - `runner.rs`: spark-submit children and the `sim:` driver.
//! - `faults.rs`: fault-injection settings.
//!
//! # Deviations from Livy
//! - Without `--local-dir-whitelist`, every local path is allowed (Livy allows none).
//! - A create that fails file validation leaves no "ghost" batch behind.
//! - No auth, ACLs, impersonation or conf blacklist; `owner` and `proxyUser` are always null.
//! - A forced state (`/_control/batches/{id}/state`) stops a `sim:` script for good.

mod api;
mod batch;
mod control;
mod faults;
mod request;
mod runner;
#[cfg(test)]
mod testing;
mod yarn;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    info!(%addr, "serving");

    tokio::spawn(sweep(app.clone(), cli.retain_sweep_secs));
    let mut terminate = signal(SignalKind::terminate())?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, api::router(app.clone()))
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
