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
//! - `GET /ws/v1/cluster/metrics`: `clusterMetrics` with the free resources the control API set.
//! - `GET /ws/v1/cluster/scheduler`: a capacity scheduler with the leaf queues the control API
//!   set under `root` (one `default` queue with the whole cluster until then).
//! - `GET /ws/v1/cluster/apps?applicationTags=a,b&states=RUNNING,ACCEPTED`: apps with any of the
//!   tags, in any of the states; `{"apps":null}` when none.
//! - `GET /ws/v1/cluster/apps/{appid}` and `.../state`; unknown ids get a 404 `RemoteException`.
//! - `PUT /ws/v1/cluster/apps/{appid}/state {"state":"KILLED"}`: 202 and the kill lands shortly
//!   after (a batch following the application becomes `killed`); 200 on a final application.
//!
//! # Security (all off by default)
//! - `--tls-ca-out PATH`: HTTPS only, every route on the one listener. At start the server makes a
//!   fresh CA and a leaf certificate it signs for `localhost`, `127.0.0.1` and `::1`, and writes
//!   the CA certificate (PEM) to PATH before it prints its `listening on` line (unchanged).
//!   TLS 1.2 and 1.3 by rustls with `ring`, HTTP/1.1.
//! - `--basic-user USER --basic-password-file FILE` (both or neither; a trailing newline in FILE
//!   is not part of the password): every route but `/_control` wants `Authorization: Basic` with
//!   exactly that user and password, else 401 with `WWW-Authenticate: Basic realm="livy"` and an
//!   empty body.
//! - `--kerberos-keytab PATH --kerberos-principal HTTP/host@REALM` (both or neither; not with
//!   Basic): Kerberos SPNEGO like Livy behind Hadoop's `AuthenticationFilter`. The keytab is read
//!   through MIT GSSAPI at start (a keytab without the principal stops the server before it
//!   listens). Every route but `/_control` wants a valid `hadoop.auth` cookie or
//!   `Authorization: Negotiate <token>` (SPNEGO or raw krb5). An accepted token gets the normal
//!   reply plus `WWW-Authenticate: Negotiate <token>` (when GSSAPI made one) and
//!   `Set-Cookie: hadoop.auth="u=<short name>&p=<principal>&t=kerberos&e=<expiry ms>&s=<sig>";
//!   Path=/; HttpOnly` (`; Secure` before `HttpOnly` over HTTPS), signed with HMAC-SHA256 under a
//!   random per-process secret. A missing, forged, tampered or expired cookie without a token gets
//!   401 `WWW-Authenticate: Negotiate`; a token GSSAPI rejects gets 403 `GSSException: ...`; both
//!   clear the cookie (`Set-Cookie: hadoop.auth=; Max-Age=0; ...`), as Hadoop does.
//! - `--auth-cookie-ttl DURATION` (`10h` like Hadoop's `token.validity`; `3s`, `500ms`, or plain
//!   seconds): how long a cookie admits its bearer. It carries no `Expires`, so clients keep
//!   sending it and the server is the one to refuse it.
//! - A batch created by an authenticated client shows it as `owner`: the client principal
//!   (`spark-worker@SPARK.TEST`) under Kerberos, the user under Basic.
//!
//! Every flag also reads a `LIVY_SERVER_*` variable (`LIVY_SERVER_TLS_CA_OUT`, ...).
//!
//! # Control API (`/_control`, never faulted, never behind auth)
//! - `GET stats`: counters (`posts`, `created`, `deletes`, `yarn_kills`, and the batch reads
//!   `lists` for `GET /batches` and `gets` for `GET /batches/{id}`), every batch ever created
//!   (with its `owner`) and every application ever submitted (with who killed it); and the auth
//!   counters, over every route but `/_control`: `spnego_handshakes` (Negotiate tokens accepted),
//!   `spnego_rejected` (tokens GSSAPI refused), `cookie_auths` (requests admitted by a cookie),
//!   `basic_auths` (requests admitted by Basic), `auth_rejected` (401 and 403 answers of the auth
//!   check), `credentialed_requests` (requests that carried any `Authorization` header, counted
//!   even when auth is off), and `principals` (the distinct client principals admitted, sorted).
//! - `POST faults`: Livy error rate/status and latency, a lost or slowed `POST /batches` reply, and
//!   an RM error rate/status.
//! - `POST batches/{id}/state {"state", "yarn"}`: forces Livy's state; with `yarn` (the default)
//!   the application moves to the matching state and its script stops, without it Livy misreports
//!   and stops following the application.
//! - `POST yarn/apps/{appid}/state {"state", "finalStatus", "diagnostics"}`: forces an application.
//! - `POST yarn/free {"availableMB", "availableVirtualCores", "appsPending", "totalMB",
//!   "totalVirtualCores"}`: what `GET /ws/v1/cluster/metrics` reports free (plenty until set),
//!   and the cluster's size (what is free, unless given).
//! - `POST yarn/queues [{"queueName", "absoluteMaxCapacity", "usedMB", "usedVirtualCores",
//!   "numPendingApplications", "state"}]`: the scheduler's leaf queues.
//! - `POST restart {"recovery", "crash"}`: a Livy restart. Without recovery every held batch is
//!   forgotten and ids restart at 0; a clean stop also kills the unfinished applications and real
//!   children of those batches, a crash leaves them running. With recovery, unfinished batches
//!   come back `recovering` and re-attach to their applications, `success` ones are kept, the
//!   other finished ones are forgotten, and ids continue.
//!
//! # Layout
//! - `main.rs`: command line, logging, serving, retention sweep, shutdown.
//! - `api.rs`: the Livy routes, the fault/CSRF gate, the router that merges all routes.
//! - `auth.rs`: the Basic and Kerberos checks, the `hadoop.auth` cookie, the auth counters.
//! - `gss.rs`: the GSSAPI acceptor (the crate's only unsafe code: acquiring its credentials).
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
//! - Auth is Basic (which Livy only has through a custom filter) or Kerberos SPNEGO, never both.
//!   Kerberos keeps the full client principal as `owner` where Livy shows the short name, and
//!   knows no `auth_to_local` rules (the short name is the principal's first component), no proxy
//!   users, no `hadoop.auth` cookie domain, persistence or secret rotation, and always answers
//!   a SPNEGO continuation with 401 (each request gets a fresh GSSAPI context, as in Hadoop).
//! - No ACLs, impersonation or conf blacklist; `proxyUser` is always null, and so is `owner`
//!   without auth.
//! - The RM and unknown paths sit behind the same auth as Livy (a real RM has its own).
//! - Only `sim:` batches are YARN applications; real batches run in local mode beside the
//!   simulated cluster.
//! - A forced state stops the application's script for good (unless Livy was told to misreport).
//! - The RM knows only `applicationTags` and `states` as list filters, never forgets an
//!   application, accepts only `KILLED` as a target state, and needs no user.
//! - A recovered batch re-attaches after a fixed short delay rather than at Livy's poll interval.

mod api;
mod auth;
mod batch;
mod control;
mod faults;
mod gss;
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

use crate::auth::{Auth, Basic, Kerberos};
use crate::batch::{App, Settings};
use crate::gss::Acceptor;

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
    /// Require HTTP Basic auth as this user (with `--basic-password-file`).
    #[arg(long, env = "LIVY_SERVER_BASIC_USER", requires = "basic_password_file")]
    basic_user: Option<String>,
    /// The file holding the Basic user's password (a trailing newline is not part of it).
    #[arg(long, env = "LIVY_SERVER_BASIC_PASSWORD_FILE", requires = "basic_user")]
    basic_password_file: Option<PathBuf>,
    /// Require Kerberos SPNEGO, accepting with this keytab (with `--kerberos-principal`).
    #[arg(
        long,
        env = "LIVY_SERVER_KERBEROS_KEYTAB",
        requires = "kerberos_principal",
        conflicts_with = "basic_user"
    )]
    kerberos_keytab: Option<PathBuf>,
    /// The service principal to accept tickets for, e.g. `HTTP/localhost@SPARK.TEST`.
    #[arg(
        long,
        env = "LIVY_SERVER_KERBEROS_PRINCIPAL",
        requires = "kerberos_keytab"
    )]
    kerberos_principal: Option<String>,
    /// How long a `hadoop.auth` cookie admits its bearer: `10h`, `3s`, or seconds.
    #[arg(long, env = "LIVY_SERVER_AUTH_COOKIE_TTL", default_value = "10h", value_parser = duration)]
    auth_cookie_ttl: Duration,
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

/// A humantime duration (`10h`, `500ms`) or plain seconds; positive.
fn duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be positive".into()),
        Ok(d) => Ok(d),
        Err(e) => secs(s).map_err(|_| e.to_string()),
    }
}

/// The auth mode the flags ask for; Kerberos credentials are acquired here, so a bad keytab or
/// principal stops the server before it listens.
fn auth(cli: &Cli) -> Result<Auth, String> {
    if let (Some(user), Some(file)) = (&cli.basic_user, &cli.basic_password_file) {
        let password = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let password = password.trim_end_matches(['\n', '\r']).to_string();
        let user = user.clone();
        return Ok(Auth::Basic(Basic { user, password }));
    }
    if let (Some(keytab), Some(principal)) = (&cli.kerberos_keytab, &cli.kerberos_principal) {
        let acceptor = Arc::new(Acceptor::new(keytab, principal)?);
        let secure = cli.tls_ca_out.is_some();
        return Ok(Auth::Kerberos(Kerberos::new(
            acceptor,
            cli.auth_cookie_ttl,
            secure,
        )));
    }
    Ok(Auth::Off)
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
    let auth = auth(&cli).map_err(std::io::Error::other)?;
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
        auth,
    }));
    let listener = TcpListener::bind((cli.host.as_str(), cli.port)).await?;
    let addr = listener.local_addr()?;
    // The one stdout line a harness waits for; the socket already accepts connections.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    drop(out);
    info!(%addr, tls = tls.is_some(), auth = ?auth_mode(&app.settings.auth), "serving");

    tokio::spawn(sweep(app.clone(), cli.retain_sweep_secs));
    let router = api::router(app.clone());
    match tls {
        Some(config) => run(app, tls::TlsListener::new(listener, config)?, router).await,
        None => run(app, listener, router).await,
    }
}

fn auth_mode(auth: &Auth) -> &'static str {
    match auth {
        Auth::Off => "off",
        Auth::Basic(_) => "basic",
        Auth::Kerberos(_) => "kerberos",
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

    #[test]
    fn auth_flags_come_in_pairs_and_one_mode_at_a_time() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["livy-server"], args].concat());
        let cli = parse(&[]).expect("no auth");
        assert_eq!(cli.auth_cookie_ttl, Duration::from_secs(36000));
        assert!(matches!(auth(&cli), Ok(Auth::Off)));
        for ttl in ["3s", "3"] {
            let cli = parse(&["--auth-cookie-ttl", ttl]).expect("valid ttl");
            assert_eq!(cli.auth_cookie_ttl, Duration::from_secs(3));
        }
        assert!(parse(&["--auth-cookie-ttl", "0"]).is_err());
        assert!(parse(&["--auth-cookie-ttl", "soon"]).is_err());
        assert!(parse(&["--basic-user", "u"]).is_err());
        assert!(parse(&["--basic-password-file", "/p"]).is_err());
        assert!(parse(&["--kerberos-keytab", "/k"]).is_err());
        assert!(parse(&["--kerberos-principal", "HTTP/h@R"]).is_err());
        let both = [
            "--basic-user",
            "u",
            "--basic-password-file",
            "/p",
            "--kerberos-keytab",
            "/k",
            "--kerberos-principal",
            "HTTP/h@R",
        ];
        assert!(parse(&both).is_err());
        let tls = parse(&["--tls-ca-out", "/tmp/ca.pem"]).expect("TLS");
        assert_eq!(
            tls.tls_ca_out.as_deref(),
            Some(std::path::Path::new("/tmp/ca.pem"))
        );
        let basic = parse(&["--basic-user", "u", "--basic-password-file", "/nonexistent"]);
        let err = auth(&basic.expect("pair")).expect_err("no password file");
        assert!(err.contains("/nonexistent"), "{err}");
    }
}
