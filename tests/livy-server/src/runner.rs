//! What makes a batch move: a real spark-submit child whose output fills the batch log (local
//! mode: no YARN application), or a scripted `sim:` outcome that drives the batch's YARN
//! application with tokio timers (one task per application, no thread), which the batch mirrors.

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

use crate::batch::{App, ChildHandle, Registry, is_finished};
use crate::yarn::{FinalStatus, YarnState};

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
    /// Show the YARN application id and URLs in the batch once it runs (the application
    /// exists either way).
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

/// Runs the spark-submit child of the batch stored at `key` in the background.
pub fn start_real(app: Arc<App>, key: usize, id: i32, argv: Vec<String>) {
    tokio::spawn(run_real(app, key, argv).instrument(info_span!("batch", id)));
}

/// Drives the YARN application stored at `key` (submitted for batch `id`) in the background.
pub fn start_sim(app: Arc<App>, key: usize, id: i32, spec: SimSpec) {
    tokio::spawn(run_sim(app, key, spec).instrument(info_span!("batch", id)));
}

/// The Livy state a batch shows while its application is RUNNING: a word other than the standard
/// outcomes is shown literally.
pub fn running_as(outcome: &str) -> &str {
    match outcome {
        "success" | "dead" | "killed" | "error" | "forever" => "running",
        word => word,
    }
}

/// Applies a scripted step to the application unless something else took it over.
fn step(app: &App, key: usize, script: u64, f: impl FnOnce(&mut Registry)) -> bool {
    let mut reg = app.lock();
    if reg.yarn.apps.get(key).is_none_or(|a| a.script != script) {
        return false;
    }
    f(&mut reg);
    true
}

/// The script lives with the application, not the batch: it runs on after Livy forgot the batch,
/// and the batch sees it only while it follows the application.
async fn run_sim(app: Arc<App>, key: usize, spec: SimSpec) {
    // A new application's script number; anything taking the application over bumps it.
    let script = 0;
    sleep(spec.start).await;
    let ran = step(&app, key, script, |reg| {
        reg.update_app(key, |a| {
            a.set(YarnState::Running, FinalStatus::Undefined, None)
        });
        if let Some(b) = reg.follower(key) {
            for i in 1..=spec.lines {
                let line = format!("sim: batch {} output line {i}/{}", b.id, spec.lines);
                b.push_line(line);
            }
        }
    });
    if !ran || spec.outcome == "forever" {
        return;
    }
    sleep(spec.run).await;
    step(&app, key, script, |reg| {
        let (state, status) = match spec.outcome.as_str() {
            "dead" | "error" => (YarnState::Failed, FinalStatus::Failed),
            "killed" => (YarnState::Killed, FinalStatus::Killed),
            // A literal state is followed by success too.
            _ => (YarnState::Finished, FinalStatus::Succeeded),
        };
        let failed = status != FinalStatus::Succeeded;
        if let Some(b) = reg.follower(key).filter(|_| failed) {
            b.push_line(spec.msg.clone());
        }
        let diagnostics = failed.then_some(spec.msg.as_str());
        reg.update_app(key, |a| a.set(state, status, diagnostics));
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
