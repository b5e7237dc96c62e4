//! In-process doubles at the worker's three client seams — Step Functions, Livy and the YARN
//! ResourceManager — each recording what it was asked, on tokio's clock (paused in these tests).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use spark_activity_worker::failure::Failure;
use spark_activity_worker::livy::{Batch, CreateBatch, Livy, LivyError};
use spark_activity_worker::scheduler::{Ceiling, Queue, Scheduler};
use spark_activity_worker::sfn::{SfnError, Task, TaskToken, Tasks};
use spark_activity_worker::yarn::{App, ClusterMetrics, ResourceManager, YarnError};
use tokio::time::Instant;
use url::Url;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------

/// What a report said.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Success(String),
    Failure {
        error: String,
        cause: String,
    },
    /// `SendTaskFailure` without error and cause.
    Bare,
}

#[derive(Debug, Default)]
pub struct SfnState {
    /// When each accepted heartbeat arrived.
    pub heartbeats: Vec<Instant>,
    /// From then on heartbeats and reports answer `TaskTimedOut`.
    pub gone_at: Option<Instant>,
    /// Accepted reports.
    pub reports: Vec<Sent>,
    /// Every report call, accepted or not.
    pub report_calls: u32,
    /// Errors the next report calls answer, in order.
    pub refuse: VecDeque<SfnError>,
    /// Until then every call fails like a network error.
    pub down_until: Option<Instant>,
    /// Until then heartbeats answer `InvalidToken`, as LocalStack does for a token it has just
    /// handed out.
    pub unknown_until: Option<Instant>,
    /// When each heartbeat and report call came, answered or not.
    pub calls: Vec<Instant>,
    /// Tasks closed by an accepted report: their heartbeats and reports answer
    /// `TaskDoesNotExist`.
    pub closed: HashSet<String>,
    /// How long a report call takes to be answered. Step Functions applies it at once (closing
    /// the task, so heartbeats meanwhile find it gone), then answers.
    pub report_takes: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct FakeSfn(pub Mutex<SfnState>);

impl FakeSfn {
    pub fn state(&self) -> MutexGuard<'_, SfnState> {
        lock(&self.0)
    }

    fn check(&self, token: &TaskToken) -> Result<(), SfnError> {
        let s = self.state();
        if s.closed.contains(token.secret()) {
            return Err(SfnError::TaskGone("TaskDoesNotExist".into()));
        }
        if s.gone_at.is_some_and(|t| Instant::now() >= t) {
            return Err(SfnError::TaskGone("TaskTimedOut".into()));
        }
        if s.down_until.is_some_and(|t| Instant::now() < t) {
            return Err(SfnError::Other(
                "dispatch failure: connection refused".into(),
            ));
        }
        Ok(())
    }

    async fn report(&self, token: &TaskToken, sent: Sent) -> Result<(), SfnError> {
        self.state().report_calls += 1;
        self.state().calls.push(Instant::now());
        self.check(token)?;
        if let Some(e) = self.state().refuse.pop_front() {
            return Err(e);
        }
        let takes = {
            let mut s = self.state();
            s.reports.push(sent);
            s.closed.insert(token.secret().to_owned());
            s.report_takes
        };
        if let Some(takes) = takes {
            tokio::time::sleep(takes).await;
        }
        Ok(())
    }
}

#[async_trait]
impl Tasks for FakeSfn {
    async fn next_task(&self, _: &str, _: &str) -> Result<Option<Task>, SfnError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(None)
    }

    async fn heartbeat(&self, token: &TaskToken) -> Result<(), SfnError> {
        self.state().calls.push(Instant::now());
        self.check(token)?;
        if self
            .state()
            .unknown_until
            .is_some_and(|t| Instant::now() < t)
        {
            return Err(SfnError::TaskGone("InvalidToken".into()));
        }
        self.state().heartbeats.push(Instant::now());
        Ok(())
    }

    async fn succeed(&self, token: &TaskToken, output: &str) -> Result<(), SfnError> {
        self.report(token, Sent::Success(output.to_owned())).await
    }

    async fn fail(&self, token: &TaskToken, failure: Option<&Failure>) -> Result<(), SfnError> {
        self.report(
            token,
            match failure {
                Some(f) => Sent::Failure {
                    error: f.error.as_str().to_owned(),
                    cause: f.cause.clone(),
                },
                None => Sent::Bare,
            },
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct YarnState {
    pub apps: Vec<App>,
    pub down: bool,
    pub kills: Vec<String>,
}

/// A ResourceManager: applications with tags; a kill ends one at once.
#[derive(Debug, Default)]
pub struct FakeYarn(pub Mutex<YarnState>);

impl FakeYarn {
    pub fn state(&self) -> MutexGuard<'_, YarnState> {
        lock(&self.0)
    }

    /// Adds an application with `tags` in `state`; returns its id.
    pub fn add(&self, tags: &str, state: &str) -> String {
        let mut s = self.state();
        let seq = s.apps.len() + 1;
        let id = format!("application_1700000000000_{seq:04}");
        s.apps.push(App {
            id: id.clone(),
            name: "app".into(),
            state: state.into(),
            final_status: "UNDEFINED".into(),
            diagnostics: String::new(),
            application_tags: tags.to_ascii_lowercase(),
            tracking_url: Some(format!("http://rm:8088/proxy/{id}/")),
            started_time: seq as i64,
        });
        id
    }

    /// Sets an application's state and final status.
    pub fn set(&self, id: &str, state: &str, final_status: &str) {
        if let Some(a) = self.state().apps.iter_mut().find(|a| a.id == id) {
            a.state = state.into();
            a.final_status = final_status.into();
        }
    }

    pub fn app_state(&self, id: &str) -> Option<String> {
        self.state()
            .apps
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.state.clone())
    }

    fn up(&self) -> Result<(), YarnError> {
        if self.state().down {
            return Err(YarnError::Unreachable("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl ResourceManager for FakeYarn {
    fn for_host(&self, _: &str) -> Arc<dyn ResourceManager> {
        unimplemented!("component tests use one cluster")
    }

    async fn metrics(&self) -> Result<ClusterMetrics, YarnError> {
        self.up()?;
        Ok(ClusterMetrics {
            available_mb: 1 << 20,
            available_virtual_cores: 1 << 10,
            apps_pending: 0,
            total_mb: 1 << 20,
            total_virtual_cores: 1 << 10,
        })
    }

    async fn scheduler(&self) -> Result<Scheduler, YarnError> {
        self.up()?;
        Ok(Scheduler::Capacity(vec![Queue {
            path: "root.default".into(),
            state: "RUNNING".into(),
            ceiling: Ceiling::Share(100.0),
            used_mb: 0,
            used_vcores: 0,
            pending: 0,
        }]))
    }

    async fn apps_by_tag(&self, tag: &str) -> Result<Vec<App>, YarnError> {
        self.up()?;
        Ok(self
            .state()
            .apps
            .iter()
            .filter(|a| a.application_tags.split(',').any(|t| t == tag))
            .cloned()
            .collect())
    }

    async fn app(&self, id: &str) -> Result<App, YarnError> {
        self.up()?;
        self.state()
            .apps
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .ok_or(YarnError::Http {
                status: 404,
                msg: "not found".into(),
            })
    }

    async fn kill(&self, id: &str) -> Result<(), YarnError> {
        self.up()?;
        let mut s = self.state();
        s.kills.push(id.to_owned());
        if let Some(a) = s
            .apps
            .iter_mut()
            .find(|a| a.id == id && a.state != "FINISHED")
        {
            a.state = "KILLED".into();
            a.final_status = "KILLED".into();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Held {
    pub id: i64,
    pub name: Option<String>,
    pub state: String,
    pub app_id: Option<String>,
}

#[derive(Debug, Default)]
pub struct LivyState {
    pub next_id: i64,
    pub held: Vec<Held>,
    /// POST bodies received.
    pub posts: Vec<CreateBatch>,
    /// When each POST arrived.
    pub post_times: Vec<Instant>,
    pub deletes: Vec<String>,
    /// Every call fails: connection refused (`NoAnswer` with `reset` set).
    pub down: bool,
    pub reset: bool,
    /// A POST creates the batch, then its answer is lost.
    pub lose_post_answers: bool,
    /// A POST takes this long (the batch exists from its start).
    pub post_delay: Duration,
    /// A GET panics (a stand-in for a bug in the worker's handling of a reply).
    pub panic_on_get: bool,
    /// POSTs are refused with 400 and this message, leaving a "ghost" batch of the name behind
    /// as real Livy does when it rejects files after registering the batch.
    pub reject_posts: Option<String>,
    /// spark-submit never reaches YARN: no application, no id.
    pub no_yarn: bool,
}

/// A Livy in YARN mode: a POST registers a batch and submits an application to `yarn`, tagged
/// with the request's `spark.yarn.tags` (state ACCEPTED).
#[derive(Debug)]
pub struct FakeLivy {
    pub base: Url,
    pub yarn: Arc<FakeYarn>,
    pub s: Mutex<LivyState>,
}

impl FakeLivy {
    pub fn new(yarn: Arc<FakeYarn>) -> Self {
        FakeLivy {
            base: Url::parse("http://livy.test:8998").expect("url"),
            yarn,
            s: Mutex::default(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, LivyState> {
        lock(&self.s)
    }

    fn up(&self) -> Result<(), LivyError> {
        let s = self.state();
        match (s.down, s.reset) {
            (false, _) => Ok(()),
            (true, false) => Err(LivyError::Connect("connection refused".into())),
            (true, true) => Err(LivyError::NoAnswer("connection reset".into())),
        }
    }

    /// Sets the state of the held batch named `name`.
    pub fn set(&self, name: &str, state: &str) {
        if let Some(b) = self
            .state()
            .held
            .iter_mut()
            .find(|b| b.name.as_deref() == Some(name))
        {
            b.state = state.into();
        }
    }

    /// A Livy restart without recovery: every batch forgotten, ids from 0 again.
    pub fn forget_all(&self) {
        let mut s = self.state();
        s.held.clear();
        s.next_id = 0;
    }

    /// Another client's unnamed batch.
    pub fn add_unnamed(&self) -> i64 {
        let mut s = self.state();
        let id = s.next_id;
        s.next_id += 1;
        s.held.push(Held {
            id,
            name: None,
            state: "running".into(),
            app_id: None,
        });
        id
    }

    pub fn posts(&self) -> usize {
        self.state().posts.len()
    }

    fn view(b: &Held) -> Batch {
        serde_json::from_value(serde_json::json!({
            "id": b.id, "name": b.name, "state": b.state, "appId": b.app_id,
            "appInfo": {"driverLogUrl": null, "sparkUiUrl": null}
        }))
        .expect("batch json")
    }

    fn not_found(name: &str) -> LivyError {
        LivyError::Http {
            status: 404,
            msg: format!("Session '{name}' not found."),
        }
    }
}

#[async_trait]
impl Livy for FakeLivy {
    fn base(&self) -> &Url {
        &self.base
    }

    fn at(&self, _: Url) -> Arc<dyn Livy> {
        unimplemented!("component tests use one Livy")
    }

    async fn starting(&self) -> Result<usize, LivyError> {
        self.up()?;
        Ok(self
            .state()
            .held
            .iter()
            .filter(|b| matches!(b.state.as_str(), "starting" | "not_started"))
            .count())
    }

    async fn probe(&self) -> Result<(), LivyError> {
        self.up()
    }

    async fn create_batch(&self, body: &CreateBatch) -> Result<Batch, LivyError> {
        self.up()?;
        let (delay, lose, no_yarn) = {
            let mut s = self.state();
            s.posts.push(body.clone());
            s.post_times.push(Instant::now());
            if s.held.iter().any(|b| b.name.as_deref() == Some(&body.name)) {
                return Err(LivyError::Http {
                    status: 400,
                    msg: format!(
                        "Rejected, Reason: Duplicate session name: Some({}) for session 9",
                        body.name
                    ),
                });
            }
            if let Some(msg) = s.reject_posts.clone() {
                let id = s.next_id;
                s.next_id += 1;
                s.held.push(Held {
                    id,
                    name: Some(body.name.clone()),
                    state: "starting".into(),
                    app_id: None,
                });
                return Err(LivyError::Http { status: 400, msg });
            }
            (s.post_delay, s.lose_post_answers, s.no_yarn)
        };
        let tags = body
            .conf
            .get("spark.yarn.tags")
            .map(|t| format!("livy-batch-x,{t}"))
            .unwrap_or_else(|| "livy-batch-x".into());
        let app = (!no_yarn).then(|| self.yarn.add(&tags, "ACCEPTED"));
        let batch = {
            let mut s = self.state();
            let id = s.next_id;
            s.next_id += 1;
            let held = Held {
                id,
                name: Some(body.name.clone()),
                state: "starting".into(),
                app_id: app,
            };
            s.held.push(held.clone());
            Self::view(&held)
        };
        tokio::time::sleep(delay).await;
        if lose {
            return Err(LivyError::NoAnswer("operation timed out".into()));
        }
        Ok(batch)
    }

    async fn batch(&self, name: &str) -> Result<Batch, LivyError> {
        self.up()?;
        let s = self.state();
        if s.panic_on_get {
            drop(s);
            panic!("fake livy: a reply the worker cannot handle");
        }
        s.held
            .iter()
            .find(|b| b.name.as_deref() == Some(name))
            .map(Self::view)
            .ok_or_else(|| Self::not_found(name))
    }

    async fn log_tail(&self, name: &str, _: u32) -> Result<Vec<String>, LivyError> {
        self.up()?;
        Ok(vec![
            "stdout: ".into(),
            format!("log of {name}: Traceback: boom"),
        ])
    }

    async fn delete_batch(&self, name: &str) -> Result<(), LivyError> {
        self.up()?;
        let mut s = self.state();
        let Some(pos) = s.held.iter().position(|b| b.name.as_deref() == Some(name)) else {
            return Err(Self::not_found(name));
        };
        let b = s.held.remove(pos);
        s.deletes.push(name.to_owned());
        drop(s);
        // Livy's DELETE kills the application.
        if let Some(app) = b.app_id
            && self
                .yarn
                .app_state(&app)
                .is_some_and(|st| !matches!(st.as_str(), "FINISHED" | "FAILED" | "KILLED"))
        {
            self.yarn.set(&app, "KILLED", "KILLED");
        }
        Ok(())
    }
}
