//! A simulated YARN ResourceManager: the application registry and the subset of the RM's REST API
//! (`/ws/v1/cluster/apps...`) a Livy client uses when Livy forgets or misreports a batch.
//!
//! Every `sim:` batch submits one application here. The application, not the batch, is the
//! truth: the sim script drives it, and the Livy batch only mirrors it while Livy holds the batch
//! (see `Batch::mirror`). The RM routes sit behind their own fault injection (`yarn_error_rate`),
//! never behind Livy's faults or CSRF check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use crate::batch::App;

/// How long a kill through `PUT .../state` takes to land, during which the RM answers 202.
pub const KILL_DELAY: Duration = Duration::from_millis(200);
/// The host and ports the simulated cluster's URLs point at.
const RM_WEB: &str = "http://127.0.0.1:8088";
const NM_WEB: &str = "http://127.0.0.1:8042";

/// Milliseconds since the epoch, as YARN's timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `YarnApplicationState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YarnState {
    New,
    NewSaving,
    Submitted,
    Accepted,
    Running,
    Finished,
    Failed,
    Killed,
}

impl YarnState {
    const ALL: [YarnState; 8] = [
        YarnState::New,
        YarnState::NewSaving,
        YarnState::Submitted,
        YarnState::Accepted,
        YarnState::Running,
        YarnState::Finished,
        YarnState::Failed,
        YarnState::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            YarnState::New => "NEW",
            YarnState::NewSaving => "NEW_SAVING",
            YarnState::Submitted => "SUBMITTED",
            YarnState::Accepted => "ACCEPTED",
            YarnState::Running => "RUNNING",
            YarnState::Finished => "FINISHED",
            YarnState::Failed => "FAILED",
            YarnState::Killed => "KILLED",
        }
    }

    /// Case-insensitive, surrounding blanks ignored.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            YarnState::Finished | YarnState::Failed | YarnState::Killed
        )
    }

    /// The final status that goes with this state when none is given.
    pub fn usual_final_status(self) -> FinalStatus {
        match self {
            YarnState::Finished => FinalStatus::Succeeded,
            YarnState::Failed => FinalStatus::Failed,
            YarnState::Killed => FinalStatus::Killed,
            _ => FinalStatus::Undefined,
        }
    }
}

/// `FinalApplicationStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Undefined,
    Succeeded,
    Failed,
    Killed,
}

impl FinalStatus {
    const ALL: [FinalStatus; 4] = [
        FinalStatus::Undefined,
        FinalStatus::Succeeded,
        FinalStatus::Failed,
        FinalStatus::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Undefined => "UNDEFINED",
            FinalStatus::Succeeded => "SUCCEEDED",
            FinalStatus::Failed => "FAILED",
            FinalStatus::Killed => "KILLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

/// Who killed an application, for the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KilledBy {
    LivyDelete,
    YarnRest,
    LivyShutdown,
}

impl KilledBy {
    pub fn as_str(self) -> &'static str {
        match self {
            KilledBy::LivyDelete => "livy-delete",
            KilledBy::YarnRest => "yarn-rest",
            KilledBy::LivyShutdown => "livy-shutdown",
        }
    }
}

/// The RM's tracking URL of an application (also Livy's `sparkUiUrl`).
pub fn tracking_url(app_id: &str) -> String {
    format!("{RM_WEB}/proxy/{app_id}/")
}

/// The AM container's log URL (also Livy's `driverLogUrl`).
pub fn am_logs_url(app_id: &str) -> String {
    let container = app_id.replacen("application", "container", 1);
    format!("{NM_WEB}/node/containerlogs/{container}_01_000001/livy")
}

/// The tags a Livy batch's application gets: Livy's own `livy-batch-<id>-<random>` tag, then the
/// user's `spark.yarn.tags`, all lower-cased as YARN stores them.
pub fn batch_tags(id: i32, user_tags: Option<&str>) -> Vec<String> {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| char::from(ALNUM[rng.random_range(0..ALNUM.len())]))
        .collect();
    std::iter::once(format!("livy-batch-{id}-{suffix}"))
        .chain(split_lower(user_tags.unwrap_or("")))
        .collect()
}

/// A comma-separated list, each entry trimmed and lower-cased, empty ones dropped.
fn split_lower(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',')
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
}

/// One YARN application.
#[derive(Debug)]
pub struct YarnApp {
    pub id: String,
    pub name: String,
    pub queue: String,
    pub tags: Vec<String>,
    pub state: YarnState,
    pub final_status: FinalStatus,
    pub diagnostics: String,
    pub started_ms: u64,
    /// 0 until the application is final.
    pub finished_ms: u64,
    pub killed_by: Option<KilledBy>,
    /// The registry key of the Livy batch that submitted it.
    pub batch: usize,
    /// Bumped whenever something other than the sim script takes the application over; the
    /// script stops at its next step then.
    pub script: u64,
    /// A kill through the REST API is under way.
    pub killing: bool,
}

impl YarnApp {
    /// A freshly submitted application, already `ACCEPTED`.
    pub fn new(id: String, name: String, queue: String, tags: Vec<String>, batch: usize) -> Self {
        YarnApp {
            id,
            name,
            queue,
            tags,
            state: YarnState::Accepted,
            final_status: FinalStatus::Undefined,
            diagnostics: String::new(),
            started_ms: now_ms(),
            finished_ms: 0,
            killed_by: None,
            batch,
            script: 0,
            killing: false,
        }
    }

    /// Moves the application; `diagnostics` replaces the current text when given.
    pub fn set(&mut self, state: YarnState, final_status: FinalStatus, diagnostics: Option<&str>) {
        if state.is_final() {
            if !self.state.is_final() || self.finished_ms == 0 {
                self.finished_ms = now_ms();
            }
        } else {
            self.finished_ms = 0;
        }
        self.state = state;
        self.final_status = final_status;
        if let Some(d) = diagnostics {
            self.diagnostics = d.to_string();
        }
    }

    /// Kills the application for good: its script stops.
    pub fn kill(&mut self, by: KilledBy, diagnostics: &str) {
        self.script += 1;
        self.set(YarnState::Killed, FinalStatus::Killed, Some(diagnostics));
        self.killed_by = Some(by);
    }

    /// The app object of the RM's REST API.
    pub fn view(&self) -> Value {
        let end = if self.finished_ms > 0 {
            self.finished_ms
        } else {
            now_ms()
        };
        json!({
            "id": self.id,
            "user": "livy",
            "name": self.name,
            "queue": self.queue,
            "state": self.state.as_str(),
            "finalStatus": self.final_status.as_str(),
            "progress": if self.state.is_final() { 100.0 } else { 0.0 },
            "trackingUI": if self.state.is_final() { "History" } else { "ApplicationMaster" },
            "trackingUrl": tracking_url(&self.id),
            "diagnostics": self.diagnostics,
            "clusterId": 1,
            "applicationType": "SPARK",
            "applicationTags": self.tags.join(","),
            "startedTime": self.started_ms,
            "finishedTime": self.finished_ms,
            "elapsedTime": end.saturating_sub(self.started_ms),
            "amContainerLogs": am_logs_url(&self.id),
        })
    }

    fn stats(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "tags": self.tags,
            "state": self.state.as_str(),
            "finalStatus": self.final_status.as_str(),
            "killed_by": self.killed_by.map(KilledBy::as_str),
        })
    }
}

/// Every application ever submitted, in submission order; an application's index is its key.
#[derive(Debug, Default)]
pub struct Cluster {
    pub apps: Vec<YarnApp>,
    /// Kills started through `PUT /ws/v1/cluster/apps/{appid}/state`.
    pub kills: u64,
    /// What `GET /ws/v1/cluster/metrics` reports free, as the control API sets it.
    pub free: Free,
    /// The capacity scheduler's leaf queues, as the control API sets them; none set: one
    /// `default` queue with the whole cluster.
    pub queues: Vec<QueueSpec>,
}

/// The free resources the cluster reports: plenty until a test says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Free {
    #[serde(rename = "availableMB")]
    pub available_mb: i64,
    pub available_virtual_cores: i64,
    pub apps_pending: i64,
    /// The cluster's size; what is free when not given.
    #[serde(default, rename = "totalMB")]
    pub total_mb: Option<i64>,
    #[serde(default)]
    pub total_virtual_cores: Option<i64>,
}

impl Free {
    fn totals(&self) -> (i64, i64) {
        (
            self.total_mb.unwrap_or(self.available_mb),
            self.total_virtual_cores
                .unwrap_or(self.available_virtual_cores),
        )
    }
}

impl Default for Free {
    fn default() -> Self {
        Free {
            available_mb: 1 << 20,
            available_virtual_cores: 1 << 10,
            apps_pending: 0,
            total_mb: None,
            total_virtual_cores: None,
        }
    }
}

/// One leaf queue of the capacity scheduler, as a test sets it.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSpec {
    pub queue_name: String,
    /// Its ceiling in percent of the cluster.
    #[serde(default = "whole")]
    pub absolute_max_capacity: f64,
    #[serde(default, rename = "usedMB")]
    pub used_mb: i64,
    #[serde(default)]
    pub used_virtual_cores: i64,
    #[serde(default)]
    pub num_pending_applications: i64,
    #[serde(default = "running")]
    pub state: String,
}

fn whole() -> f64 {
    100.0
}

fn running() -> String {
    "RUNNING".into()
}

impl QueueSpec {
    /// A leaf queue as Hadoop 3's capacity scheduler shows it (`maxEffectiveCapacity` and the
    /// older `absoluteMaxCapacity`).
    fn render(&self, (total_mb, total_vcores): (i64, i64)) -> Value {
        let share = |total: i64| (total as f64 * self.absolute_max_capacity / 100.0) as i64;
        json!({
            "type": "capacitySchedulerLeafQueueInfo",
            "queueName": self.queue_name,
            "queuePath": format!("root.{}", self.queue_name),
            "state": self.state,
            "capacity": self.absolute_max_capacity,
            "maxCapacity": self.absolute_max_capacity,
            "absoluteCapacity": self.absolute_max_capacity,
            "absoluteMaxCapacity": self.absolute_max_capacity,
            "absoluteUsedCapacity": if total_mb > 0 { self.used_mb as f64 * 100.0 / total_mb as f64 } else { 0.0 },
            "resourcesUsed": {"memory": self.used_mb, "vCores": self.used_virtual_cores},
            "maxEffectiveCapacity": {"memory": share(total_mb), "vCores": share(total_vcores)},
            "numPendingApplications": self.num_pending_applications,
            "numActiveApplications": 0,
            "users": null,
        })
    }
}

impl Cluster {
    pub fn find(&self, id: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.id == id)
    }

    pub fn stats(&self) -> Value {
        self.apps.iter().map(YarnApp::stats).collect()
    }
}

/// An error in the RM's `RemoteException` shape.
#[derive(Debug)]
pub struct RemoteException {
    status: StatusCode,
    exception: &'static str,
    java_class: &'static str,
    message: String,
}

impl RemoteException {
    fn not_found(app_id: &str) -> Self {
        RemoteException {
            status: StatusCode::NOT_FOUND,
            exception: "NotFoundException",
            java_class: "org.apache.hadoop.yarn.webapp.NotFoundException",
            message: format!("java.lang.Exception: app with id: {app_id} not found"),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        RemoteException {
            status: StatusCode::BAD_REQUEST,
            exception: "BadRequestException",
            java_class: "org.apache.hadoop.yarn.webapp.BadRequestException",
            message: message.into(),
        }
    }

    fn injected(status: StatusCode) -> Self {
        RemoteException {
            status,
            exception: "WebApplicationException",
            java_class: "javax.ws.rs.WebApplicationException",
            message: "injected fault".into(),
        }
    }
}

impl IntoResponse for RemoteException {
    fn into_response(self) -> Response {
        let body = json!({"RemoteException": {
            "exception": self.exception,
            "message": self.message,
            "javaClassName": self.java_class,
        }});
        (self.status, Json(body)).into_response()
    }
}

type Shared = State<Arc<App>>;
type RmResult = Result<Response, RemoteException>;

/// The RM routes, behind their own fault injection.
pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/ws/v1/cluster/metrics", get(cluster_metrics))
        .route("/ws/v1/cluster/scheduler", get(scheduler))
        .route("/ws/v1/cluster/apps", get(list_apps))
        .route("/ws/v1/cluster/apps/{appid}", get(show_app))
        .route(
            "/ws/v1/cluster/apps/{appid}/state",
            get(app_state).put(kill_app),
        )
        .layer(middleware::from_fn_with_state(app, gate))
}

async fn gate(State(app): Shared, req: Request, next: Next) -> Response {
    if let Some(status) = app.faults().yarn_injected(rand::random::<f64>()) {
        info!(path = %req.uri().path(), %status, "injecting RM fault");
        return RemoteException::injected(status).into_response();
    }
    next.run(req).await
}

/// The cluster's metrics: the free resources as set, and the applications by state.
async fn cluster_metrics(State(app): Shared) -> RmResult {
    let reg = app.lock();
    let free = reg.yarn.free;
    let running = reg
        .yarn
        .apps
        .iter()
        .filter(|a| a.state == YarnState::Running)
        .count();
    Ok(Json(json!({"clusterMetrics": {
        "appsSubmitted": reg.yarn.apps.len(),
        "appsRunning": running,
        "appsPending": free.apps_pending,
        "availableMB": free.available_mb,
        "availableVirtualCores": free.available_virtual_cores,
        "totalMB": free.totals().0,
        "totalVirtualCores": free.totals().1,
        "reservedMB": 0,
        "activeNodes": 1,
    }}))
    .into_response())
}

/// The capacity scheduler: the leaf queues as set, under `root`.
async fn scheduler(State(app): Shared) -> RmResult {
    let reg = app.lock();
    let totals = reg.yarn.free.totals();
    let default = [QueueSpec {
        queue_name: "default".into(),
        absolute_max_capacity: 100.0,
        used_mb: 0,
        used_virtual_cores: 0,
        num_pending_applications: 0,
        state: running(),
    }];
    let queues = if reg.yarn.queues.is_empty() {
        &default[..]
    } else {
        &reg.yarn.queues[..]
    };
    let leaves: Vec<Value> = queues.iter().map(|q| q.render(totals)).collect();
    Ok(Json(json!({"scheduler": {"schedulerInfo": {
        "type": "capacityScheduler",
        "queueName": "root",
        "capacity": 100.0,
        "maxCapacity": 100.0,
        "usedCapacity": 0.0,
        "queues": {"queue": leaves},
    }}}))
    .into_response())
}

async fn list_apps(State(app): Shared, Query(q): Query<HashMap<String, String>>) -> RmResult {
    let tags: Vec<String> =
        split_lower(q.get("applicationTags").map_or("", String::as_str)).collect();
    let states = q
        .get("states")
        .map_or("", String::as_str)
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            YarnState::parse(s).ok_or_else(|| {
                let all: Vec<&str> = YarnState::ALL.iter().map(|s| s.as_str()).collect();
                RemoteException::bad_request(format!(
                    "Invalid application-state {} specified. It should be one of {}",
                    s.trim(),
                    all.join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let reg = app.lock();
    let apps: Vec<Value> = reg
        .yarn
        .apps
        .iter()
        .filter(|a| tags.is_empty() || a.tags.iter().any(|t| tags.contains(t)))
        .filter(|a| states.is_empty() || states.contains(&a.state))
        .map(YarnApp::view)
        .collect();
    let body = if apps.is_empty() {
        json!({"apps": null})
    } else {
        json!({"apps": {"app": apps}})
    };
    Ok(Json(body).into_response())
}

async fn show_app(State(app): Shared, Path(id): Path<String>) -> RmResult {
    let reg = app.lock();
    let key = reg
        .yarn
        .find(&id)
        .ok_or_else(|| RemoteException::not_found(&id))?;
    Ok(Json(json!({"app": reg.yarn.apps[key].view()})).into_response())
}

async fn app_state(State(app): Shared, Path(id): Path<String>) -> RmResult {
    let reg = app.lock();
    let key = reg
        .yarn
        .find(&id)
        .ok_or_else(|| RemoteException::not_found(&id))?;
    Ok(Json(json!({"state": reg.yarn.apps[key].state.as_str()})).into_response())
}

#[derive(Debug, Deserialize)]
struct TargetState {
    state: String,
}

/// `PUT .../state {"state":"KILLED"}`: 202 while the kill is under way, 200 on a final app.
async fn kill_app(State(app): Shared, Path(id): Path<String>, body: Bytes) -> RmResult {
    let target: TargetState = serde_json::from_slice(&body)
        .map_err(|e| RemoteException::bad_request(format!("Cannot parse the target state: {e}")))?;
    let mut reg = app.lock();
    let key = reg
        .yarn
        .find(&id)
        .ok_or_else(|| RemoteException::not_found(&id))?;
    if target.state != YarnState::Killed.as_str() {
        return Err(RemoteException::bad_request(
            "Only 'KILLED' is allowed as a target state.",
        ));
    }
    let a = &mut reg.yarn.apps[key];
    let state = a.state;
    if state.is_final() {
        return Ok(Json(json!({"state": state.as_str()})).into_response());
    }
    if !a.killing {
        a.killing = true;
        // The kill is decided: the script may no longer finish the app first.
        a.script += 1;
        reg.yarn.kills += 1;
        info!(app = %id, "kill requested through the RM");
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KILL_DELAY).await;
            app.lock().update_app(key, |a| {
                a.killing = false;
                if !a.state.is_final() {
                    a.kill(KilledBy::YarnRest, "Application killed by user.");
                }
            });
        });
    }
    let body = Json(json!({"state": state.as_str()}));
    Ok((StatusCode::ACCEPTED, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{app_id, call, post_batch, server, wait_for_app, wait_for_state};

    #[test]
    fn states_and_tags_parse_like_yarn() {
        assert_eq!(YarnState::parse(" new_saving "), Some(YarnState::NewSaving));
        assert_eq!(YarnState::parse("DONE"), None);
        assert_eq!(
            FinalStatus::parse("succeeded"),
            Some(FinalStatus::Succeeded)
        );
        let tags = batch_tags(7, Some(" Worker-AB , ,x"));
        assert_eq!(tags.len(), 3);
        assert!(tags[0].starts_with("livy-batch-7-"));
        assert_eq!(tags[0].len(), "livy-batch-7-".len() + 8);
        assert!(tags[0].bytes().all(|c| !c.is_ascii_uppercase()));
        assert_eq!(&tags[1..], ["worker-ab", "x"]);
        assert_eq!(
            am_logs_url("application_1_0001"),
            "http://127.0.0.1:8042/node/containerlogs/container_1_0001_01_000001/livy"
        );
    }

    #[tokio::test]
    async fn apps_are_found_by_any_tag_lower_cased_and_by_state() {
        let app = server(false);
        let a = r#"{"file":"sim:forever?start=0","name":"a","queue":"etl",
                    "conf":{"spark.yarn.tags":"Task-A,Shared"}}"#;
        let b = r#"{"file":"sim:forever?start=60","conf":{"spark.yarn.tags":"task-b,SHARED"}}"#;
        post_batch(&app, a).await;
        post_batch(&app, b).await;
        wait_for_state(&app, 0, "running").await;

        let (status, all) = call(&app, "GET", "/ws/v1/cluster/apps", "").await;
        assert_eq!(status, StatusCode::OK);
        let apps = all["apps"]["app"].as_array().cloned().unwrap_or_default();
        assert_eq!(apps.len(), 2);
        let first = &apps[0];
        assert_eq!(first["name"], "a");
        assert_eq!(first["queue"], "etl");
        assert_eq!(first["user"], "livy");
        assert_eq!(first["applicationType"], "SPARK");
        assert_eq!(first["state"], "RUNNING");
        assert_eq!(first["finalStatus"], "UNDEFINED");
        assert_eq!(first["finishedTime"], 0);
        assert_eq!(first["diagnostics"], "");
        let tags = first["applicationTags"].as_str().unwrap_or_default();
        assert!(tags.starts_with("livy-batch-0-") && tags.ends_with(",task-a,shared"));
        assert_eq!(apps[1]["name"], "livy-batch-1");
        assert_eq!(apps[1]["queue"], "default");
        assert_eq!(apps[1]["state"], "ACCEPTED");

        let uri = "/ws/v1/cluster/apps?applicationTags=%20TASK-A%20,nothing";
        let (_, one) = call(&app, "GET", uri, "").await;
        assert_eq!(one["apps"]["app"].as_array().map(Vec::len), Some(1));
        assert_eq!(one["apps"]["app"][0]["name"], "a");
        let uri = "/ws/v1/cluster/apps?applicationTags=shared&states=accepted";
        let (_, accepted) = call(&app, "GET", uri, "").await;
        assert_eq!(accepted["apps"]["app"][0]["name"], "livy-batch-1");
        assert_eq!(accepted["apps"]["app"].as_array().map(Vec::len), Some(1));
        let uri = "/ws/v1/cluster/apps?applicationTags=nothing,else";
        assert_eq!(
            call(&app, "GET", uri, "").await,
            (StatusCode::OK, json!({"apps": null}))
        );
        let uri = "/ws/v1/cluster/apps?states=DONE";
        let (status, err) = call(&app, "GET", uri, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err["RemoteException"]["exception"], "BadRequestException");

        let id = first["id"].as_str().unwrap_or_default().to_string();
        let (_, one) = call(&app, "GET", &format!("/ws/v1/cluster/apps/{id}"), "").await;
        assert_eq!(one["app"]["id"], id.as_str());
        let (_, state) = call(&app, "GET", &format!("/ws/v1/cluster/apps/{id}/state"), "").await;
        assert_eq!(state, json!({"state": "RUNNING"}));
    }

    #[tokio::test]
    async fn an_unknown_app_is_a_remote_not_found() {
        let app = server(false);
        let id = "application_1_0042";
        for uri in [
            format!("/ws/v1/cluster/apps/{id}"),
            format!("/ws/v1/cluster/apps/{id}/state"),
        ] {
            let (status, body) = call(&app, "GET", &uri, "").await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(
                body,
                json!({"RemoteException": {
                    "exception": "NotFoundException",
                    "message": "java.lang.Exception: app with id: application_1_0042 not found",
                    "javaClassName": "org.apache.hadoop.yarn.webapp.NotFoundException",
                }})
            );
        }
        let uri = format!("/ws/v1/cluster/apps/{id}/state");
        let (status, _) = call(&app, "PUT", &uri, r#"{"state":"KILLED"}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_put_kill_is_accepted_then_lands_and_the_batch_mirrors_it() {
        let app = server(false);
        post_batch(&app, r#"{"file":"sim:forever?start=0"}"#).await;
        wait_for_state(&app, 0, "running").await;
        let id = app_id(&app, 0).await;
        let uri = format!("/ws/v1/cluster/apps/{id}/state");

        for bad in [
            r#"{"state":"RUNNING"}"#,
            "not json",
            r#"{"state":"killed"}"#,
        ] {
            let (status, body) = call(&app, "PUT", &uri, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(body["RemoteException"]["exception"], "BadRequestException");
        }
        let (status, body) = call(&app, "PUT", &uri, r#"{"state":"KILLED"}"#).await;
        assert_eq!(
            (status, body),
            (StatusCode::ACCEPTED, json!({"state": "RUNNING"}))
        );
        // A second request while the kill is under way is accepted but not counted again.
        let (status, _) = call(&app, "PUT", &uri, r#"{"state":"KILLED"}"#).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        wait_for_app(&app, &id, "KILLED").await;
        let (_, one) = call(&app, "GET", &format!("/ws/v1/cluster/apps/{id}"), "").await;
        assert_eq!(one["app"]["finalStatus"], "KILLED");
        assert_eq!(one["app"]["diagnostics"], "Application killed by user.");
        assert!(one["app"]["finishedTime"].as_u64().is_some_and(|t| t > 0));
        wait_for_state(&app, 0, "killed").await;
        let (_, log) = call(&app, "GET", "/batches/0/log?size=-1", "").await;
        let lines = log["log"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            lines[lines.len() - 2..],
            [
                json!("\nYARN Diagnostics: "),
                json!("Application killed by user.")
            ]
        );

        let (status, body) = call(&app, "PUT", &uri, r#"{"state":"KILLED"}"#).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"state": "KILLED"})));
        let (_, stats) = call(&app, "GET", "/_control/stats", "").await;
        assert_eq!(stats["yarn_kills"], 1);
        assert_eq!(stats["yarn"][0]["killed_by"], "yarn-rest");
    }

    #[tokio::test]
    async fn the_scheduler_shows_the_queues_as_set_under_root() {
        let app = server(false);
        let (status, body) = call(&app, "GET", "/ws/v1/cluster/scheduler", "").await;
        assert_eq!(status, StatusCode::OK);
        let info = &body["scheduler"]["schedulerInfo"];
        assert_eq!(info["type"], "capacityScheduler");
        assert_eq!(info["queueName"], "root");
        assert_eq!(info["queues"]["queue"][0]["queueName"], "default");
        assert_eq!(info["queues"]["queue"][0]["absoluteMaxCapacity"], 100.0);

        let free = r#"{"availableMB": 4096, "availableVirtualCores": 4, "appsPending": 0,
                       "totalMB": 32768, "totalVirtualCores": 16}"#;
        assert_eq!(
            call(&app, "POST", "/_control/yarn/free", free).await.0,
            StatusCode::OK
        );
        let queues = r#"[{"queueName": "etl", "absoluteMaxCapacity": 25.0, "usedMB": 8192,
                          "usedVirtualCores": 4, "numPendingApplications": 2},
                         {"queueName": "adhoc", "state": "STOPPED"}]"#;
        assert_eq!(
            call(&app, "POST", "/_control/yarn/queues", queues).await.0,
            StatusCode::OK
        );
        let bad = r#"[{"queueName": "etl", "usedMb": 1}]"#;
        assert_eq!(
            call(&app, "POST", "/_control/yarn/queues", bad).await.0,
            StatusCode::BAD_REQUEST
        );

        let (_, metrics) = call(&app, "GET", "/ws/v1/cluster/metrics", "").await;
        assert_eq!(metrics["clusterMetrics"]["totalMB"], 32768);
        assert_eq!(metrics["clusterMetrics"]["availableMB"], 4096);
        let (_, body) = call(&app, "GET", "/ws/v1/cluster/scheduler", "").await;
        let queues = &body["scheduler"]["schedulerInfo"]["queues"]["queue"];
        let etl = &queues[0];
        assert_eq!(etl["type"], "capacitySchedulerLeafQueueInfo");
        assert_eq!(etl["queuePath"], "root.etl");
        assert_eq!(etl["state"], "RUNNING");
        assert_eq!(etl["absoluteMaxCapacity"], 25.0);
        assert_eq!(
            etl["maxEffectiveCapacity"],
            json!({"memory": 8192, "vCores": 4})
        );
        assert_eq!(etl["resourcesUsed"], json!({"memory": 8192, "vCores": 4}));
        assert_eq!(etl["numPendingApplications"], 2);
        assert_eq!(queues[1]["queueName"], "adhoc");
        assert_eq!(queues[1]["state"], "STOPPED");
        assert_eq!(queues[1]["absoluteMaxCapacity"], 100.0);
    }
}
