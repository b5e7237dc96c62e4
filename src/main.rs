//! Entry point: parse → telemetry → run the command → exit code.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use spark_activity_worker::config::{BadConfig, Cli, Command, RunArgs, SubmitArgs, one_line};
use spark_activity_worker::journal::{self, Journal};
use spark_activity_worker::{daemon, shutdown, status, submit, telemetry, validate};
use tokio_util::sync::CancellationToken;

/// jemalloc rather than glibc's malloc: with thousands of tasks in flight it holds less memory
/// and spends less time allocating (README, "Where a task's memory goes").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    match cli.command {
        Command::Run(args) => run(args),
        Command::Submit(args) => run_submit(args),
        Command::Validate(args) => match args.livy.validate().and(args.policy.validate()) {
            Err(msg) => bad(&msg),
            Ok(()) if validate::run(&args) => ExitCode::SUCCESS,
            Ok(()) => ExitCode::from(2),
        },
        Command::Status(args) => match status::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => bad(&msg),
        },
    }
}

fn bad(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Threads for blocking work (journal writes, name lookups): 16, of which at most half wait on
/// the disk.
const BLOCKING_THREADS: usize = 2 * journal::FLUSHES_AT_ONCE;

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The blocking pool runs journal writes (and name lookups). Tokio's default of 512
        // threads would start hundreds when thousands of tasks arrive or change state at once,
        // each with its stack and allocator arena; a few threads write as fast, since the disk
        // is what waits.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(|e| eprintln!("error: cannot start the async runtime: {e}"))
        .ok()
}

fn run(args: RunArgs) -> ExitCode {
    if let Err(msg) = args.validate() {
        return bad(&msg);
    }
    let journal = match Journal::open(&args.state_dir) {
        Ok(j) => j,
        Err(e) => return bad(&format!("--state-dir {e}")),
    };
    telemetry::init(args.log.log_format, args.log.filter("info"));
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
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

/// `submit`: the first Ctrl-C (or SIGTERM) deletes the batch; a second gives up waiting.
fn run_submit(args: SubmitArgs) -> ExitCode {
    if let Err(msg) = args.livy.validate().and(args.policy.validate()) {
        return bad(&msg);
    }
    telemetry::init(args.log.log_format, args.log.filter("warn"));
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let code = runtime.block_on(async {
        let interrupt = CancellationToken::new();
        let first = interrupt.clone();
        tokio::select! {
            result = submit::run(args, interrupt) => match result {
                Ok(exit) => ExitCode::from(exit.code()),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            },
            () = shutdown::interrupted(first) => ExitCode::from(130),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}
