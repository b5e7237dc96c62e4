//! `submit`: one task input run as a task would be, without Step Functions — the same request
//! preparation, Livy submission, sync, YARN cross-checks and output. Progress goes to stderr
//! (one line redrawn on a terminal, a line per change otherwise); the output the task would
//! have sent goes to stdout: the success output, or `{"error","cause"}` of its failure.

use std::io::{IsTerminal, Write};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Ended, Timing};
use crate::config::{BadConfig, SubmitArgs};
use crate::connect;
use crate::journal::{Entry, Record};
use crate::outcome::{self, About, Outcome};
use crate::request::{self, Rules};
use crate::validate::read_input;

/// How `submit` ended; its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Succeeded,
    /// The job failed (or Livy did not take it): the task would have reported a failure.
    Failed,
    /// The input is invalid or forbidden: the task would have failed at once.
    Invalid,
    /// Ctrl-C: the batch was deleted.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Succeeded => 0,
            Exit::Failed => 1,
            Exit::Invalid => 2,
            Exit::Interrupted => 130,
        }
    }
}

/// Runs the input in `args` to its end, or until `interrupt` (then the batch is deleted).
pub async fn run(args: SubmitArgs, interrupt: CancellationToken) -> Result<Exit, BadConfig> {
    let raw = read_input(&args.input)
        .map_err(|e| BadConfig(format!("{}: cannot read: {e}", args.input.display())))?;
    let clients = connect::clients(&args.livy, false).await?;
    connect::first_contact(clients.livy.as_ref(), &args.livy).await?;
    let key = format!("{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff);
    let rules = Rules::from_args(&args.livy, &args.policy);
    let ready = match request::prepare(&rules, clients.livy.base(), &raw, &key) {
        Ok(ready) => ready,
        Err(refused) => {
            let f = refused.failure();
            eprintln!("{}: {}", f.error, f.cause);
            println!(
                "{}",
                serde_json::json!({"error": f.error.as_str(), "cause": f.cause})
            );
            return Ok(Exit::Invalid);
        }
    };
    let (livy, yarn) = clients.for_url(&ready.livy_url);
    let base = ready.livy_url.clone();
    let entry = Entry::new(
        "".into(),
        "submit".into(),
        base.to_string(),
        ready.name,
        ready.request,
    );
    let record = Arc::new(Record::in_memory(key, entry));
    let batch = Batch::new(
        livy,
        yarn,
        record.clone(),
        Arc::new(Timing::from_args(&args.timing)),
        false,
    );
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    progress.line(&format!("submitting {} to {base}", batch.name()));

    let stop = CancellationToken::new();
    let mut drive = pin!(batch.drive(&stop));
    let mut changes = record.changes();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut interrupted = false;
    let ended = loop {
        tokio::select! {
            ended = &mut drive => break ended,
            Ok(()) = changes.changed() => progress.changed(&record),
            _ = tick.tick() => progress.redraw(&record),
            () = interrupt.cancelled(), if !interrupted => {
                interrupted = true;
                progress.line("interrupted: deleting the batch");
                stop.cancel();
            }
        }
    };
    // The last change may have come with the end, and the end been taken first.
    progress.changed(&record);
    progress.done();
    if interrupted {
        if let Ended::Stopped(kill) = &ended {
            eprintln!("{}", kill.summary);
        }
        return Ok(Exit::Interrupted);
    }
    let about = About {
        livy: &base,
        batch_name: batch.name(),
        name: record.read(|e| e.name.clone()),
        submitted_at: record.read(|e| {
            e.submitted_at
                .as_deref()
                .and_then(|s| humantime::parse_rfc3339(s).ok())
        }),
    };
    Ok(match outcome::of(ended, &about, None) {
        Outcome::Success(output) => {
            println!("{output}");
            Exit::Succeeded
        }
        Outcome::Failure(f) => {
            eprintln!("{}: {}", f.error, f.cause);
            println!(
                "{}",
                serde_json::json!({"error": f.error.as_str(), "cause": f.cause})
            );
            Exit::Failed
        }
        Outcome::Gone | Outcome::Detached => Exit::Interrupted,
    })
}

/// State changes on stderr: a line redrawn in place on a terminal, else a line per change.
struct Progress {
    terminal: bool,
    started: Instant,
    last: Option<String>,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        Progress {
            terminal,
            started: Instant::now(),
            last: None,
        }
    }

    /// A line that stays.
    fn line(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{text}");
    }

    fn status(record: &Record) -> String {
        record.read(|e| {
            let mut s = match e.batch_id {
                Some(id) => format!("batch {id}"),
                None => "batch (not yet submitted)".to_owned(),
            };
            s.push_str(": ");
            s.push_str(e.last_state.as_deref().unwrap_or("submitting"));
            if let Some(app) = &e.app_id {
                s.push_str(&format!(" ({app})"));
            }
            s
        })
    }

    fn changed(&mut self, record: &Record) {
        let now = Self::status(record);
        if self.last.as_deref() == Some(now.as_str()) {
            return;
        }
        if !self.terminal {
            self.line(&now);
        }
        self.last = Some(now);
        self.redraw(record);
    }

    fn redraw(&mut self, record: &Record) {
        if !self.terminal {
            return;
        }
        let elapsed = Duration::from_secs(self.started.elapsed().as_secs());
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} · {}",
            Self::status(record),
            humantime::format_duration(elapsed)
        );
        let _ = err.flush();
    }

    fn done(&mut self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
