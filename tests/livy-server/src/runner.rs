//! What makes a batch move: a real spark-submit child whose output fills the batch log, or a
//! scripted `sim:` outcome driven by tokio timers (one task per batch, no thread).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tracing::{Instrument, info, info_span, warn};

use crate::batch::{App, Batch, ChildHandle, is_finished};

/// How long spark-submit's pipes may outlive it: a python grandchild can hold them open.
const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// How long a DELETE waits for a killed child to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How a new batch runs.
#[derive(Debug)]
pub enum Launch {
    /// The arguments after the spark-submit program.
    Real(Vec<String>),
    Sim(SimSpec),
}

/// A scripted outcome, from `sim:<outcome>?start=&run=&app=&msg=&lines=`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSpec {
    /// `success`, `dead`, `killed`, `error`, `forever`, or any word used as a literal state.
    pub outcome: String,
    /// Time spent in `starting`.
    pub start: Duration,
    /// Time spent running before the outcome.
    pub run: Duration,
    /// Give the batch a YARN application id and URLs once it runs.
    pub app: bool,
    /// The log line written on failure.
    pub msg: String,
    /// Filler lines written once it runs.
    pub lines: u32,
}

impl SimSpec {
    /// Parses what follows `sim:`; `Err` is a reason for a 400 rejection.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (outcome, query) = spec.split_once('?').unwrap_or((spec, ""));
        if outcome.is_empty() {
            return Err("sim: URI has no outcome".into());
        }
        let mut sim = SimSpec {
            outcome: outcome.to_string(),
            start: Duration::from_millis(200),
            run: Duration::from_secs(1),
            app: false,
            msg: "sim: application failed".into(),
            lines: 3,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(raw);
            let bad = || format!("sim: bad value for {key}: {value:?}");
            match key {
                "start" | "run" => {
                    let secs = value
                        .parse::<f64>()
                        .ok()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .ok_or_else(bad)?;
                    if key == "start" {
                        sim.start = secs
                    } else {
                        sim.run = secs
                    }
                }
                "app" => sim.app = matches!(value.as_str(), "1" | "true"),
                "msg" => sim.msg = value,
                "lines" => {
                    sim.lines = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= 10_000)
                        .ok_or_else(bad)?
                }
                _ => return Err(format!("sim: unknown parameter {key}")),
            }
        }
        Ok(sim)
    }
}

/// `application/x-www-form-urlencoded` decoding, enough for `msg=`.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts the batch stored at `key` in the background.
pub fn start(app: Arc<App>, key: usize, id: i32, launch: Launch) {
    let span = info_span!("batch", id);
    match launch {
        Launch::Real(argv) => tokio::spawn(run_real(app, key, argv).instrument(span)),
        Launch::Sim(spec) => tokio::spawn(run_sim(app, key, spec).instrument(span)),
    };
}

/// Applies a scripted step unless the batch is gone or a control call took its state over.
fn step(app: &App, key: usize, script: u64, f: impl FnOnce(&mut Batch)) -> bool {
    let mut ran = false;
    app.with_held(key, |b| {
        if b.script == script {
            f(b);
            ran = true;
        }
    });
    ran
}

async fn run_sim(app: Arc<App>, key: usize, spec: SimSpec) {
    // A new batch's script number; a control call bumps it to stop this task.
    let script = 0;
    sleep(spec.start).await;
    let standard = matches!(
        spec.outcome.as_str(),
        "success" | "dead" | "killed" | "error" | "forever"
    );
    let running = if standard {
        "running"
    } else {
        spec.outcome.as_str()
    };
    let app_id = spec.app.then(|| app.next_app_id());
    let ran = step(&app, key, script, |b| {
        b.set_state(running);
        if let Some(app_id) = app_id {
            let container = app_id.replacen("application", "container", 1);
            b.driver_log_url = Some(format!(
                "http://127.0.0.1:8042/node/containerlogs/{container}_01_000001/livy"
            ));
            b.spark_ui_url = Some(format!("http://127.0.0.1:8088/proxy/{app_id}/"));
            b.app_id = Some(app_id);
        }
        for i in 1..=spec.lines {
            b.push_line(format!(
                "sim: batch {} output line {i}/{}",
                b.id, spec.lines
            ));
        }
    });
    if !ran || spec.outcome == "forever" {
        return;
    }
    sleep(spec.run).await;
    step(&app, key, script, |b| match spec.outcome.as_str() {
        outcome @ ("dead" | "killed" | "error") => {
            b.push_line(spec.msg.clone());
            b.set_state(outcome);
        }
        // YARN resets the AM log URL once the app has FINISHED; a non-standard state is
        // followed by success too.
        _ => {
            b.driver_log_url = None;
            b.set_state("success");
        }
    });
}

async fn run_real(app: Arc<App>, key: usize, argv: Vec<String>) {
    let program = app.settings.spark_submit.clone();
    info!(%program, ?argv, "spark-submit");
    let mut cmd = Command::new(&program);
    // Its own process group, so that a kill reaches the JVM's python child as well.
    cmd.args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn().and_then(|child| match child.id() {
        Some(pid) => Ok((child, pid)),
        None => Err(std::io::Error::other(
            "child exited before its pid was read",
        )),
    });
    let (mut child, pid) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            warn!(error = %e, "spark-submit did not start");
            app.with_held(key, |b| {
                b.push_line(format!("Failed to run {program}: {e}"));
                if !is_finished(&b.state) {
                    b.set_state("dead");
                }
            });
            return;
        }
    };
    let (exited_tx, exited) = watch::channel(false);
    let mut wanted = false;
    app.with_held(key, |b| {
        b.child = Some(ChildHandle { pid, exited });
        if b.state == "starting" {
            b.set_state("running");
        }
        wanted = !is_finished(&b.state);
    });
    // Deleted, forgotten or forced to a final state while spawning.
    if !wanted {
        kill_group(pid);
    }
    let mut pumps = JoinSet::new();
    if let Some(out) = child.stdout.take() {
        pumps.spawn(pump(app.clone(), key, out));
    }
    if let Some(err) = child.stderr.take() {
        pumps.spawn(pump(app.clone(), key, err));
    }
    let status = child.wait().await;
    let _ = timeout(PIPE_DRAIN, async {
        while pumps.join_next().await.is_some() {}
    })
    .await;
    info!(?status, "spark-submit exited");
    app.with_held(key, |b| {
        if !is_finished(&b.state) {
            let ok = status.as_ref().is_ok_and(|s| s.success());
            b.set_state(if ok { "success" } else { "dead" });
        }
    });
    let _ = exited_tx.send(true);
}

/// Copies one output stream into the batch log, line by line; stderr is merged as Livy does.
async fn pump(app: Arc<App>, key: usize, stream: impl AsyncRead + Unpin) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        app.with_held(key, |b| {
            if b.capture_output {
                b.push_line(line);
            }
        });
    }
}

/// SIGKILLs a child's whole process group.
pub fn kill_group(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    match killpg(Pid::from_raw(raw), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(pid, error = %e, "cannot kill process group"),
    }
}

/// Kills a child and waits (bounded) until it has been reaped and its log drained.
pub async fn stop(child: ChildHandle) {
    let mut exited = child.exited.clone();
    if child.alive() {
        kill_group(child.pid);
    }
    let _ = timeout(KILL_WAIT, exited.wait_for(|done| *done)).await;
}

/// Kills every child still alive, held or not: a server without recovery takes them down.
pub fn kill_all(app: &App) {
    let pids: Vec<u32> = app
        .lock()
        .batches
        .iter()
        .filter_map(|b| b.child.as_ref().filter(|c| c.alive()).map(|c| c.pid))
        .collect();
    for pid in pids {
        kill_group(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_uris_parse_with_defaults_and_params() {
        let sim = SimSpec::parse("success").expect("plain outcome");
        assert_eq!(sim.start, Duration::from_millis(200));
        assert_eq!(sim.run, Duration::from_secs(1));
        assert!(!sim.app);
        assert_eq!(sim.lines, 3);
        let sim = SimSpec::parse("dead?run=0.5&start=0&app=1&msg=boom%21+now&lines=0")
            .expect("all params");
        assert_eq!(sim.outcome, "dead");
        assert_eq!(sim.run, Duration::from_millis(500));
        assert_eq!(sim.start, Duration::ZERO);
        assert!(sim.app);
        assert_eq!(sim.msg, "boom! now");
        assert_eq!(sim.lines, 0);
        assert!(SimSpec::parse("").is_err());
        assert!(SimSpec::parse("success?run=-1").is_err());
        assert!(SimSpec::parse("success?run=x").is_err());
        assert!(SimSpec::parse("success?ttl=1").is_err());
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Cb%zz%"), "a,b%zz%");
    }
}
