//! The batch model: one record per created batch, the registry that holds them (and remembers
//! every one for the control API) together with the simulated YARN cluster, the output ring
//! buffer, how a batch mirrors its YARN application, and Livy's paging arithmetic.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::auth::{Auth, AuthStats};
use crate::faults::Faults;
use crate::yarn::{Cluster, FinalStatus, YarnApp, YarnState, am_logs_url, tracking_url};

/// Lines of child output kept per batch (`livy.cache-log.size`).
pub const LOG_CAPACITY: usize = 200;
/// Lines of log shown inside the Batch object.
const VIEW_LOG_LINES: usize = 10;

/// The states after which a batch never moves on by itself; they start the retention clock.
pub fn is_finished(state: &str) -> bool {
    matches!(state, "success" | "dead" | "killed" | "error")
}

/// Server settings fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub spark_submit: String,
    pub spark_master: String,
    pub whitelist: Vec<String>,
    pub max_creating: usize,
    pub retain: Duration,
    pub delete_delay: Duration,
    pub csrf: bool,
    pub auth: Auth,
}

/// Everything the handlers and runners share.
pub struct App {
    pub settings: Settings,
    pub registry: Mutex<Registry>,
    pub faults: Mutex<Faults>,
    pub auth_stats: Mutex<AuthStats>,
    /// The cluster timestamp in simulated YARN application ids.
    pub started_ms: u128,
    app_seq: AtomicU32,
}

impl App {
    pub fn new(settings: Settings) -> Self {
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        App {
            settings,
            registry: Mutex::default(),
            faults: Mutex::default(),
            auth_stats: Mutex::default(),
            started_ms,
            app_seq: AtomicU32::new(1),
        }
    }

    /// The registry. A panic while it was held leaves plain data behind, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A fresh `application_<ts>_<seq>` id.
    pub fn next_app_id(&self) -> String {
        let seq = self.app_seq.fetch_add(1, Ordering::Relaxed);
        format!("application_{}_{seq:04}", self.started_ms)
    }

    /// Runs `f` on a batch the server still holds; `false` if it was deleted or forgotten.
    pub fn with_held(&self, key: usize, f: impl FnOnce(&mut Batch)) -> bool {
        let mut reg = self.lock();
        match reg.batches.get_mut(key) {
            Some(b) if b.held => {
                f(b);
                true
            }
            _ => false,
        }
    }
}

/// A running spark-submit child, as seen by those who may need to kill it.
#[derive(Debug, Clone)]
pub struct ChildHandle {
    /// Also the process group id: children are spawned as group leaders.
    pub pid: u32,
    pub exited: watch::Receiver<bool>,
}

impl ChildHandle {
    pub fn alive(&self) -> bool {
        !*self.exited.borrow()
    }
}

/// How a `sim:` batch follows the YARN application it submitted.
#[derive(Debug, Clone)]
pub struct YarnLink {
    /// The application's key in the cluster.
    pub app: usize,
    /// Livy's view follows the application; off once a control call made Livy misreport it.
    pub following: bool,
    /// Show `appId` and the `appInfo` URLs once the application runs (`app=1`).
    pub show_app: bool,
    /// The Livy state shown while the application is RUNNING: `running` or a scripted word.
    pub running_as: String,
}

#[derive(Debug)]
pub struct Batch {
    pub id: i32,
    pub name: Option<String>,
    /// Who created it, when auth is on: the client principal or the Basic user.
    pub owner: Option<String>,
    pub file: String,
    /// The original POST body, for the control API.
    pub request: Value,
    /// Scripted batches show a YARN-style log with a diagnostics header.
    pub sim: bool,
    pub state: String,
    pub app_id: Option<String>,
    pub driver_log_url: Option<String>,
    pub spark_ui_url: Option<String>,
    pub output: VecDeque<String>,
    /// Cleared by a recovery restart: Livy loses a child's output then.
    pub capture_output: bool,
    /// Held batches are the ones Livy serves; the others are history for the control API.
    pub held: bool,
    /// A DELETE is in progress; a second one gets Livy's "already stopped".
    pub deleting: bool,
    pub finished_at: Option<Instant>,
    pub child: Option<ChildHandle>,
    /// The YARN application of a `sim:` batch; real (local-mode) batches have none.
    pub yarn: Option<YarnLink>,
    /// The application's diagnostics, shown after the YARN header once it failed.
    pub diagnostics: Vec<String>,
}

impl Batch {
    pub fn new(id: i32, name: Option<String>, file: String, request: Value, sim: bool) -> Self {
        Batch {
            id,
            name,
            owner: None,
            file,
            request,
            sim,
            state: "starting".into(),
            app_id: None,
            driver_log_url: None,
            spark_ui_url: None,
            output: VecDeque::new(),
            capture_output: true,
            held: true,
            deleting: false,
            finished_at: None,
            child: None,
            yarn: None,
            diagnostics: Vec::new(),
        }
    }

    pub fn set_state(&mut self, state: &str) {
        if is_finished(state) {
            self.finished_at = Some(Instant::now());
        } else {
            self.finished_at = None;
        }
        self.state = state.to_string();
    }

    pub fn push_line(&mut self, line: String) {
        if self.output.len() == LOG_CAPACITY {
            self.output.pop_front();
        }
        self.output.push_back(line);
    }

    /// The whole log as Livy serves it: stderr is merged into stdout, so its section is empty.
    pub fn log_lines(&self) -> Vec<String> {
        let mut log = Vec::with_capacity(self.output.len() + 3);
        log.push("stdout: ".to_string());
        log.extend(self.output.iter().cloned());
        log.push("\nstderr: ".to_string());
        if self.sim {
            log.push("\nYARN Diagnostics: ".to_string());
            log.extend(self.diagnostics.iter().cloned());
        }
        log
    }

    /// The batch's YARN application key if Livy's view follows it.
    pub fn following(&self) -> Option<usize> {
        self.yarn.as_ref().filter(|l| l.following).map(|l| l.app)
    }

    /// Takes the Livy view from the application, as Livy's YARN poller does: the state, the app
    /// id and URLs once known, and the diagnostics of a failed application. A `recovering` batch
    /// stays so until the application is RUNNING or final.
    pub fn mirror(&mut self, app: &YarnApp) {
        let Some(link) = self.yarn.as_ref().filter(|l| l.following) else {
            return;
        };
        let state = match (app.state, app.final_status) {
            (YarnState::Running, _) => link.running_as.as_str(),
            (YarnState::Finished, FinalStatus::Succeeded) => "success",
            (YarnState::Killed, _) | (YarnState::Finished, FinalStatus::Killed) => "killed",
            (YarnState::Finished | YarnState::Failed, _) => "dead",
            _ if self.state == "recovering" => "recovering",
            _ => "starting",
        }
        .to_string();
        let seen = app.state == YarnState::Running || app.state.is_final();
        if seen && link.show_app && self.app_id.is_none() {
            self.driver_log_url = Some(am_logs_url(&app.id));
            self.spark_ui_url = Some(tracking_url(&app.id));
            self.app_id = Some(app.id.clone());
        }
        let failed = app.state.is_final() && app.final_status != FinalStatus::Succeeded;
        self.diagnostics = if failed {
            app.diagnostics.lines().map(String::from).collect()
        } else {
            Vec::new()
        };
        // YARN resets the AM log URL once the app has FINISHED.
        if state == "success" {
            self.driver_log_url = None;
        }
        if self.state != state {
            self.set_state(&state);
        }
    }

    /// The Batch object, every field present.
    pub fn view(&self) -> Value {
        let log = self.log_lines();
        let tail = &log[log.len().saturating_sub(VIEW_LOG_LINES)..];
        json!({
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "proxyUser": null,
            "state": self.state,
            "appId": self.app_id,
            "appInfo": {
                "driverLogUrl": self.driver_log_url,
                "sparkUiUrl": self.spark_ui_url,
                "executorLogUrls": null,
            },
            "log": tail,
        })
    }

    /// Counts against `--max-creating`: not yet running, or a spark-submit child still alive.
    fn creating(&self) -> bool {
        self.state == "starting" || self.child.as_ref().is_some_and(ChildHandle::alive)
    }

    /// Stops serving the batch; its record stays for the control API.
    pub fn forget(&mut self) {
        self.held = false;
        self.output = VecDeque::new();
    }
}

/// Every batch ever created, in creation order; a batch's index is its `key`, which, unlike
/// its id, is never reused.
#[derive(Debug, Default)]
pub struct Registry {
    pub batches: Vec<Batch>,
    /// The simulated YARN cluster; under the same lock, so an application and the batch that
    /// mirrors it always change together.
    pub yarn: Cluster,
    pub next_id: i32,
    pub posts: u64,
    pub created: u64,
    pub deletes: u64,
    /// `GET /batches` (listings) and `GET /batches/{id}` (one batch).
    pub lists: u64,
    pub gets: u64,
}

/// Why a `{id}` segment matched no batch.
#[derive(Debug, PartialEq)]
pub enum LookupError {
    /// 400 `For input string`.
    BadNumber(String),
    /// 404 `Session '<seg>' not found.`
    NotFound(String),
}

impl Registry {
    /// Takes the next id. Livy does this before validating, so failed creates leave gaps.
    pub fn take_id(&mut self) -> i32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    pub fn held(&self) -> impl Iterator<Item = &Batch> {
        self.batches.iter().filter(|b| b.held)
    }

    /// Resolves `{id}`: all digits means an id, anything else a name.
    pub fn find(&self, segment: &str) -> Result<usize, LookupError> {
        let by_id = !segment.is_empty() && segment.bytes().all(|c| c.is_ascii_digit());
        let id = if by_id {
            let id: i32 = segment
                .parse()
                .map_err(|_| LookupError::BadNumber(format!("For input string: \"{segment}\"")))?;
            Some(id)
        } else {
            None
        };
        self.batches
            .iter()
            .position(|b| {
                b.held
                    && match id {
                        Some(id) => b.id == id,
                        None => b.name.as_deref() == Some(segment),
                    }
            })
            .ok_or_else(|| LookupError::NotFound(format!("Session '{segment}' not found.")))
    }

    /// Changes an application, then lets the batch that follows it (if still held) mirror it.
    pub fn update_app(&mut self, key: usize, f: impl FnOnce(&mut YarnApp)) {
        let Some(app) = self.yarn.apps.get_mut(key) else {
            return;
        };
        f(app);
        let app = &self.yarn.apps[key];
        if let Some(b) = self.batches.get_mut(app.batch).filter(|b| b.held) {
            b.mirror(app);
        }
    }

    /// The held batch whose view follows application `key`.
    pub fn follower(&mut self, key: usize) -> Option<&mut Batch> {
        let batch = self.yarn.apps.get(key)?.batch;
        self.batches
            .get_mut(batch)
            .filter(|b| b.held && b.following() == Some(key))
    }

    pub fn name_taken(&self, name: &str) -> bool {
        self.held().any(|b| b.name.as_deref() == Some(name))
    }

    pub fn creating(&self) -> usize {
        self.held().filter(|b| b.creating()).count()
    }

    /// Forgets batches finished for at least `retain`; returns how many.
    pub fn sweep(&mut self, retain: Duration, now: Instant) -> usize {
        let mut swept = 0;
        for b in self.batches.iter_mut().filter(|b| b.held) {
            if b.finished_at
                .is_some_and(|at| now.duration_since(at) >= retain)
            {
                b.forget();
                swept += 1;
            }
        }
        swept
    }

    pub fn stats(&self) -> Value {
        let batches: Vec<Value> = self
            .batches
            .iter()
            .map(|b| {
                let app = b.yarn.as_ref().map(|l| &self.yarn.apps[l.app].id);
                json!({"id": b.id, "name": b.name, "owner": b.owner, "file": b.file, "state": b.state,
                       "deleted": !b.held, "request": b.request, "yarn_app": app})
            })
            .collect();
        json!({"posts": self.posts, "created": self.created, "deletes": self.deletes,
               "lists": self.lists, "gets": self.gets,
               "yarn_kills": self.yarn.kills, "batches": batches, "yarn": self.yarn.stats()})
    }
}

/// Scala's `slice(from, from + size)` over `len` items, as `GET /batches` uses it.
pub fn list_slice(len: usize, from: i32, size: i32) -> Range<usize> {
    let len = len as i64;
    let lo = i64::from(from).clamp(0, len);
    let hi = (i64::from(from) + i64::from(size)).clamp(lo, len);
    lo as usize..hi as usize
}

/// Livy's log paging: `size` defaults to 100 and is "all" when negative; a missing or negative
/// `from` means the tail. Returns the `from` to echo and the lines to send.
pub fn log_page(total: usize, from: Option<i32>, size: Option<i32>) -> (i64, Range<usize>) {
    let total = total as i64;
    let size = match size.unwrap_or(100) {
        s if s < 0 => total,
        s => i64::from(s),
    };
    let from = match from {
        Some(f) if f >= 0 => i64::from(f),
        _ => (total - size).max(0),
    };
    let lo = from.min(total);
    let hi = (from + size).clamp(lo, total);
    (from, lo as usize..hi as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let mut reg = Registry::default();
        for name in [Some("etl"), None] {
            let id = reg.take_id();
            let name = name.map(String::from);
            reg.batches
                .push(Batch::new(id, name, "/a".into(), json!({}), false));
        }
        reg
    }

    #[test]
    fn segments_are_ids_when_all_digits_and_names_otherwise() {
        let reg = registry();
        assert_eq!(reg.find("1"), Ok(1));
        assert_eq!(reg.find("etl"), Ok(0));
        assert_eq!(
            reg.find("-1"),
            Err(LookupError::NotFound("Session '-1' not found.".into()))
        );
        assert_eq!(
            reg.find("7"),
            Err(LookupError::NotFound("Session '7' not found.".into()))
        );
        assert_eq!(
            reg.find("99999999999"),
            Err(LookupError::BadNumber(
                "For input string: \"99999999999\"".into()
            ))
        );
    }

    #[test]
    fn forgotten_batches_are_not_found_and_free_their_name() {
        let mut reg = registry();
        reg.batches[0].forget();
        assert!(reg.find("0").is_err());
        assert!(!reg.name_taken("etl"));
        assert_eq!(reg.stats()["batches"][0]["deleted"], json!(true));
    }

    #[test]
    fn log_paging_follows_livy() {
        assert_eq!(log_page(250, None, None), (150, 150..250));
        assert_eq!(log_page(50, None, None), (0, 0..50));
        assert_eq!(log_page(50, Some(-3), Some(10)), (40, 40..50));
        assert_eq!(log_page(50, Some(10), Some(5)), (10, 10..15));
        assert_eq!(log_page(50, Some(45), Some(10)), (45, 45..50));
        assert_eq!(log_page(50, Some(60), Some(10)), (60, 50..50));
        assert_eq!(log_page(50, None, Some(-1)), (0, 0..50));
        assert_eq!(log_page(50, Some(5), Some(-1)), (5, 5..50));
        assert_eq!(
            log_page(5, Some(i32::MAX), Some(i32::MAX)),
            (i64::from(i32::MAX), 5..5)
        );
    }

    #[test]
    fn list_slicing_follows_scala() {
        assert_eq!(list_slice(3, 0, 100), 0..3);
        assert_eq!(list_slice(3, 1, 1), 1..2);
        assert_eq!(list_slice(3, 5, 1), 3..3);
        assert_eq!(list_slice(3, -1, 2), 0..1);
        assert_eq!(list_slice(3, 0, -1), 0..0);
    }

    #[test]
    fn the_log_keeps_the_last_lines_under_livy_headers() {
        let mut b = Batch::new(0, None, "sim:success".into(), json!({}), true);
        for i in 0..LOG_CAPACITY + 5 {
            b.push_line(format!("l{i}"));
        }
        let log = b.log_lines();
        assert_eq!(log.len(), LOG_CAPACITY + 3);
        assert_eq!(log[1], "l5");
        assert_eq!(log[log.len() - 1], "\nYARN Diagnostics: ");
        let view = b.view();
        assert_eq!(view["log"].as_array().map(Vec::len), Some(10));
        assert_eq!(view["appInfo"]["executorLogUrls"], Value::Null);
        assert_eq!(view["owner"], Value::Null);
    }

    #[test]
    fn finished_batches_are_swept_after_retention() {
        let mut reg = registry();
        reg.batches[0].set_state("dead");
        let now = Instant::now();
        assert_eq!(reg.sweep(Duration::from_secs(5), now), 0);
        assert_eq!(reg.sweep(Duration::ZERO, now), 1);
        assert_eq!(reg.held().count(), 1);
    }

    #[test]
    fn a_batch_mirrors_its_application_like_livy() {
        let mut app = YarnApp::new(
            "application_1_0001".into(),
            "n".into(),
            "q".into(),
            vec![],
            0,
        );
        let mut b = Batch::new(0, None, "sim:x".into(), json!({}), true);
        b.yarn = Some(YarnLink {
            app: 0,
            following: true,
            show_app: true,
            running_as: "busy".into(),
        });
        let mut seen = |state, status, diagnostics: &str, b: &mut Batch| {
            app.set(state, status, Some(diagnostics));
            b.mirror(&app);
            b.state.clone()
        };
        use FinalStatus as F;
        use YarnState as Y;
        assert_eq!(seen(Y::Submitted, F::Undefined, "", &mut b), "starting");
        assert_eq!(b.app_id, None);
        b.set_state("recovering");
        assert_eq!(seen(Y::Accepted, F::Undefined, "", &mut b), "recovering");
        // RUNNING wins whatever the final status says (LIVY-642's pairs).
        assert_eq!(seen(Y::Running, F::Succeeded, "", &mut b), "busy");
        assert_eq!(b.app_id.as_deref(), Some("application_1_0001"));
        assert!(b.driver_log_url.is_some());
        assert_eq!(seen(Y::Finished, F::Undefined, "odd", &mut b), "dead");
        assert_eq!(b.diagnostics, ["odd"]);
        assert_eq!(seen(Y::Finished, F::Killed, "", &mut b), "killed");
        assert_eq!(seen(Y::Failed, F::Failed, "a\nb", &mut b), "dead");
        assert_eq!(b.log_lines()[2..], ["\nYARN Diagnostics: ", "a", "b"]);
        assert_eq!(seen(Y::Finished, F::Succeeded, "", &mut b), "success");
        assert_eq!(b.driver_log_url, None);
        assert!(b.diagnostics.is_empty());
        // A batch that no longer follows keeps its state.
        if let Some(link) = b.yarn.as_mut() {
            link.following = false;
        }
        assert_eq!(seen(Y::Killed, F::Killed, "", &mut b), "success");
    }
}
