//! Entry point: parse → telemetry → run the daemon → exit code.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use spark_activity_worker::config::{BadConfig, Cli, Command, one_line};
use spark_activity_worker::journal::Journal;
use spark_activity_worker::{daemon, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let Command::Run(args) = cli.command;
    if let Err(msg) = args.validate() {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    let journal = match Journal::open(&args.state_dir) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: --state-dir {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(args.log_format, &args.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let graceful = CancellationToken::new();
        let upgrade = CancellationToken::new();
        tokio::select! {
            result = daemon::run(args, journal, graceful.clone(), upgrade.clone()) => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => match e.downcast_ref::<BadConfig>() {
                    Some(bad) => {
                        eprintln!("error: {bad}");
                        ExitCode::from(2)
                    }
                    None => {
                        tracing::error!(error = format!("{e:#}"), "worker failed");
                        ExitCode::FAILURE
                    }
                },
            },
            result = shutdown::signals(graceful, upgrade) => match result {
                Ok(()) => ExitCode::from(130),
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for signals");
                    ExitCode::FAILURE
                }
            },
        }
    });
    // Tasks left running after the drain are abandoned on purpose; do not wait on them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}
