//! The test-only `/_control` API, never affected by fault injection or CSRF: counters, fault
//! settings, forced Livy and YARN states, and simulated Livy restarts.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use crate::api::{ApiError, ApiResult};
use crate::batch::{App, is_finished};
use crate::faults::Faults;
use crate::runner;
use crate::yarn::{FinalStatus, KilledBy, YarnState};

/// How long after a recovery restart Livy first polls YARN for the recovered batches.
pub const REATTACH: Duration = Duration::from_millis(300);

type Shared = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/_control/stats", get(stats))
        .route("/_control/faults", post(set_faults))
        .route("/_control/batches/{id}/state", post(force_state))
        .route("/_control/yarn/apps/{appid}/state", post(force_app_state))
        .route("/_control/yarn/free", post(set_free))
        .route("/_control/yarn/queues", post(set_queues))
        .route("/_control/restart", post(restart))
}

/// Parses a control body; an empty body means `{}`.
fn control_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn ok(body: serde_json::Value) -> ApiResult {
    Ok(Json(body).into_response())
}

async fn stats(State(app): Shared) -> ApiResult {
    let mut stats = app.lock().stats();
    let auth = app
        .auth_stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .view();
    if let (Some(stats), serde_json::Value::Object(auth)) = (stats.as_object_mut(), auth) {
        stats.extend(auth);
    }
    ok(stats)
}

async fn set_faults(State(app): Shared, body: Bytes) -> ApiResult {
    let faults: Faults = control_body(&body)?;
    info!(?faults, "faults set");
    *app.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    ok(json!({"msg": "ok"}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceState {
    state: String,
    /// Move the batch's YARN application along; `false` makes Livy misreport it.
    #[serde(default = "yes")]
    yarn: bool,
}

fn yes() -> bool {
    true
}

impl Default for ForceState {
    fn default() -> Self {
        ForceState {
            state: String::new(),
            yarn: true,
        }
    }
}

/// The YARN state a forced Livy state stands for; other words leave the application as it is.
fn yarn_for(livy_state: &str) -> Option<(YarnState, FinalStatus)> {
    match livy_state {
        "success" => Some((YarnState::Finished, FinalStatus::Succeeded)),
        "dead" | "error" => Some((YarnState::Failed, FinalStatus::Failed)),
        "killed" => Some((YarnState::Killed, FinalStatus::Killed)),
        "running" => Some((YarnState::Running, FinalStatus::Undefined)),
        "starting" => Some((YarnState::Accepted, FinalStatus::Undefined)),
        _ => None,
    }
}

/// Sets a batch's Livy state for good. With `yarn` (the default) its application follows and its
/// script stops; without, only Livy's view changes and stops following the application.
async fn force_state(State(app): Shared, Path(seg): Path<String>, body: Bytes) -> ApiResult {
    let ForceState { state, yarn } = control_body(&body)?;
    if state.is_empty() {
        return Err(ApiError::bad_request("state is required"));
    }
    let (id, child) = {
        let mut reg = app.lock();
        let key = reg.find(&seg)?;
        let app_key = reg.batches[key].yarn.as_ref().map(|l| l.app);
        if let Some(app_key) = app_key {
            if yarn {
                let target = yarn_for(&state);
                reg.update_app(app_key, |a| {
                    a.script += 1;
                    if let Some((s, f)) = target {
                        a.set(s, f, None);
                    }
                });
            } else if let Some(link) = reg.batches[key].yarn.as_mut() {
                link.following = false;
            }
        }
        let b = &mut reg.batches[key];
        if b.state != state {
            b.set_state(&state);
        }
        (b.id, b.child.clone().filter(|_| is_finished(&state)))
    };
    info!(id, %state, yarn, "state forced");
    if let Some(child) = child {
        runner::stop(child).await;
    }
    ok(json!({"id": id, "state": state}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ForceApp {
    state: String,
    /// Defaults to the usual one for `state`.
    final_status: Option<String>,
    /// Kept as it is when absent.
    diagnostics: Option<String>,
}

/// Sets what `GET /ws/v1/cluster/metrics` reports free (`availableMB`,
/// `availableVirtualCores`, `appsPending`) and, optionally, the cluster's size (`totalMB`,
/// `totalVirtualCores`).
async fn set_free(State(app): Shared, body: Bytes) -> ApiResult {
    let free: crate::yarn::Free =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    app.lock().yarn.free = free;
    info!(?free, "cluster's free resources set");
    ok(json!({"msg": "ok"}))
}

/// Sets the capacity scheduler's leaf queues (`GET /ws/v1/cluster/scheduler`): a list of
/// `{"queueName", "absoluteMaxCapacity", "usedMB", "usedVirtualCores",
/// "numPendingApplications", "state"}`.
async fn set_queues(State(app): Shared, body: Bytes) -> ApiResult {
    let queues: Vec<crate::yarn::QueueSpec> =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    info!(?queues, "scheduler's queues set");
    app.lock().yarn.queues = queues;
    ok(json!({"msg": "ok"}))
}

/// Sets an application's state for good (its script stops); a batch following it mirrors it.
async fn force_app_state(State(app): Shared, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let force: ForceApp = control_body(&body)?;
    let state = YarnState::parse(&force.state)
        .ok_or_else(|| ApiError::bad_request(format!("unknown YARN state {:?}", force.state)))?;
    let final_status = match &force.final_status {
        Some(f) => FinalStatus::parse(f)
            .ok_or_else(|| ApiError::bad_request(format!("unknown final status {f:?}")))?,
        None => state.usual_final_status(),
    };
    let mut reg = app.lock();
    let key = reg
        .yarn
        .find(&id)
        .ok_or_else(|| ApiError::Msg(StatusCode::NOT_FOUND, format!("app {id} not found")))?;
    reg.update_app(key, |a| {
        a.script += 1;
        a.killed_by = None;
        a.set(state, final_status, force.diagnostics.as_deref());
    });
    info!(app = %id, state = state.as_str(), "application state forced");
    ok(json!({"app": reg.yarn.apps[key].view()}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Restart {
    #[serde(default)]
    recovery: bool,
    /// A kill -9 rather than a clean stop: nothing is stopped on the way down.
    #[serde(default)]
    crash: bool,
}

/// A simulated Livy restart. YARN lives on: applications are killed only by a clean stop
/// without recovery, and a recovered batch re-attaches to its application.
async fn restart(State(app): Shared, body: Bytes) -> ApiResult {
    let Restart { recovery, crash } = control_body(&body)?;
    let mut kill = Vec::new();
    let mut apps_killed = 0;
    let mut recovered = 0;
    {
        let mut guard = app.lock();
        let reg = &mut *guard;
        for key in 0..reg.batches.len() {
            let b = &mut reg.batches[key];
            if !b.held {
                continue;
            }
            match b.state.as_str() {
                // Recovery keeps succeeded batches and re-attaches to unfinished ones.
                "success" if recovery => {}
                s if recovery && !is_finished(s) => {
                    b.set_state("recovering");
                    b.output.clear();
                    b.capture_output = false;
                    if let Some(link) = b.yarn.as_mut() {
                        link.following = true;
                        recovered += 1;
                    }
                }
                _ => {
                    // Forgotten first: the batch keeps the state Livy last reported.
                    b.forget();
                    if crash {
                        continue;
                    }
                    kill.extend(b.child.clone().filter(|c| c.alive()));
                    // Without recovery, Livy's clean stop kills the applications too.
                    let unfinished = (b.yarn.as_ref().map(|l| l.app))
                        .filter(|&k| !recovery && !reg.yarn.apps[k].state.is_final());
                    if let Some(app_key) = unfinished {
                        let shutdown = KilledBy::LivyShutdown;
                        reg.yarn.apps[app_key].kill(shutdown, "Killed by Livy shutdown");
                        apps_killed += 1;
                    }
                }
            }
        }
        if !recovery {
            reg.next_id = 0;
        }
    }
    info!(
        recovery,
        crash,
        children_killed = kill.len(),
        apps_killed,
        "simulated restart"
    );
    if recovered > 0 {
        tokio::spawn(reattach(app.clone()));
    }
    for child in kill {
        runner::stop(child).await;
    }
    ok(json!({"msg": "restarted"}))
}

/// Livy's first YARN poll after a recovery: every recovering batch takes its application's state.
async fn reattach(app: Arc<App>) {
    tokio::time::sleep(REATTACH).await;
    let mut reg = app.lock();
    let keys: Vec<usize> = (reg.batches.iter())
        .filter(|b| b.held && b.state == "recovering")
        .filter_map(|b| b.following())
        .collect();
    for key in keys {
        reg.update_app(key, |_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        app_id, app_view, call, post_batch, server, stats, wait_for_app, wait_for_state,
    };
    use serde_json::Value;

    #[tokio::test]
    async fn a_clean_restart_kills_the_applications_of_the_batches_it_forgets() {
        let app = server(false);
        post_batch(&app, r#"{"file":"sim:forever?start=0"}"#).await;
        post_batch(&app, r#"{"file":"sim:success?start=60"}"#).await;
        post_batch(&app, r#"{"file":"sim:success?start=0&run=0"}"#).await;
        wait_for_state(&app, 0, "running").await;
        wait_for_state(&app, 2, "success").await;
        let (status, _) = call(&app, "POST", "/_control/restart", "").await;
        assert_eq!(status, StatusCode::OK);
        let (_, list) = call(&app, "GET", "/batches", "").await;
        assert_eq!(list["total"], 0);
        let stats = stats(&app).await;
        for n in [0, 1] {
            assert_eq!(stats["yarn"][n]["state"], "KILLED");
            assert_eq!(stats["yarn"][n]["killed_by"], "livy-shutdown");
        }
        assert_eq!(stats["yarn"][2]["state"], "FINISHED");
        assert_eq!(stats["yarn"][2]["killed_by"], Value::Null);
        // The forgotten batch keeps the state Livy last showed.
        assert_eq!(stats["batches"][0]["state"], "running");
        let killed = app_view(&app, &app_id(&app, 0).await).await;
        assert_eq!(killed["diagnostics"], "Killed by Livy shutdown");
        let (_, batch) = post_batch(&app, r#"{"file":"sim:forever"}"#).await;
        assert_eq!(batch["id"], 0, "ids restart at 0");
    }

    #[tokio::test]
    async fn after_a_crash_the_applications_run_on_unobserved() {
        let app = server(false);
        let body = r#"{"file":"sim:success?start=0&run=0.8","name":"orphan"}"#;
        post_batch(&app, body).await;
        wait_for_state(&app, 0, "running").await;
        let id = app_id(&app, 0).await;
        let crash = r#"{"crash":true}"#;
        assert_eq!(
            call(&app, "POST", "/_control/restart", crash).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&app, "GET", "/batches/orphan", "").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(app_view(&app, &id).await["state"], "RUNNING");
        // Id 0 goes to another job, with another application.
        let (_, other) = post_batch(&app, r#"{"file":"sim:forever?start=60"}"#).await;
        assert_eq!(other["id"], 0);
        wait_for_app(&app, &id, "FINISHED").await;
        let done = app_view(&app, &id).await;
        assert_eq!(done["finalStatus"], "SUCCEEDED");
        let stats = stats(&app).await;
        assert_eq!(stats["yarn"][0]["killed_by"], Value::Null);
        assert_eq!(stats["batches"][0]["state"], "running");
        assert_eq!(stats["batches"][1]["state"], "starting");
        // The orphan is found by its tag and can be killed through YARN.
        let tag = stats["yarn"][0]["tags"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let uri = format!("/ws/v1/cluster/apps?applicationTags={tag}");
        let (_, found) = call(&app, "GET", &uri, "").await;
        assert_eq!(found["apps"]["app"][0]["id"], id.as_str());
    }

    #[tokio::test]
    async fn a_recovery_restart_reattaches_to_the_applications() {
        let app = server(false);
        let bodies = [
            r#"{"file":"sim:success?start=0&run=1&app=1&lines=2"}"#,
            r#"{"file":"sim:success?start=60"}"#,
            r#"{"file":"sim:dead?start=0&run=0"}"#,
            r#"{"file":"sim:success?start=0&run=0"}"#,
        ];
        for body in bodies {
            post_batch(&app, body).await;
        }
        wait_for_state(&app, 0, "running").await;
        wait_for_state(&app, 2, "dead").await;
        wait_for_state(&app, 3, "success").await;
        let recovery = r#"{"recovery":true}"#;
        assert_eq!(
            call(&app, "POST", "/_control/restart", recovery).await.0,
            StatusCode::OK
        );
        let (_, list) = call(&app, "GET", "/batches", "").await;
        let states: Vec<Value> = (list["sessions"].as_array().into_iter().flatten())
            .map(|b| json!([b["id"], b["state"]]))
            .collect();
        assert_eq!(
            states,
            [
                json!([0, "recovering"]),
                json!([1, "recovering"]),
                json!([3, "success"])
            ]
        );
        let (_, log) = call(&app, "GET", "/batches/0/log", "").await;
        assert_eq!(log["total"], 3, "the spark-submit output is lost");
        // The first poll finds the application RUNNING; the ACCEPTED one keeps `recovering`.
        wait_for_state(&app, 0, "running").await;
        wait_for_state(&app, 0, "success").await;
        tokio::time::sleep(REATTACH).await;
        let (_, state) = call(&app, "GET", "/batches/1/state", "").await;
        assert_eq!(state["state"], "recovering");
        let uri = format!("/_control/yarn/apps/{}/state", app_id(&app, 1).await);
        call(&app, "POST", &uri, r#"{"state":"RUNNING"}"#).await;
        wait_for_state(&app, 1, "running").await;
        let (_, batch) = post_batch(&app, r#"{"file":"sim:forever"}"#).await;
        assert_eq!(batch["id"], 4, "ids continue");
        let stats = stats(&app).await;
        assert!(
            stats["yarn"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|a| a["killed_by"].is_null())
        );
    }

    #[tokio::test]
    async fn a_forced_livy_state_moves_the_application_unless_yarn_is_false() {
        let app = server(false);
        post_batch(&app, r#"{"file":"sim:success?start=0&run=0.8"}"#).await;
        post_batch(&app, r#"{"file":"sim:forever?start=0"}"#).await;
        wait_for_state(&app, 0, "running").await;
        wait_for_state(&app, 1, "running").await;
        let (a, b) = (app_id(&app, 0).await, app_id(&app, 1).await);

        // Livy misreports: the application keeps its script and finishes; Livy stays dead.
        let force = r#"{"state":"dead","yarn":false}"#;
        let (status, body) = call(&app, "POST", "/_control/batches/0/state", force).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"id": 0, "state": "dead"}))
        );
        assert_eq!(app_view(&app, &a).await["state"], "RUNNING");
        wait_for_app(&app, &a, "FINISHED").await;
        let (_, state) = call(&app, "GET", "/batches/0/state", "").await;
        assert_eq!(state["state"], "dead");
        let stats = stats(&app).await;
        assert_eq!(stats["yarn"][0]["finalStatus"], "SUCCEEDED");

        // By default the application follows.
        call(
            &app,
            "POST",
            "/_control/batches/1/state",
            r#"{"state":"success"}"#,
        )
        .await;
        let done = app_view(&app, &b).await;
        assert_eq!(
            (done["state"].clone(), done["finalStatus"].clone()),
            (json!("FINISHED"), json!("SUCCEEDED"))
        );
        let (_, state) = call(&app, "GET", "/batches/1/state", "").await;
        assert_eq!(state["state"], "success");
        call(
            &app,
            "POST",
            "/_control/batches/1/state",
            r#"{"state":"error"}"#,
        )
        .await;
        assert_eq!(app_view(&app, &b).await["state"], "FAILED");
        let (_, state) = call(&app, "GET", "/batches/1/state", "").await;
        assert_eq!(state["state"], "error");
        let (status, _) = call(
            &app,
            "POST",
            "/_control/batches/1/state",
            r#"{"state":"x","yarn":1}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_forced_application_state_is_mirrored_and_stops_the_script() {
        let app = server(false);
        post_batch(&app, r#"{"file":"sim:success?start=0&run=0.6"}"#).await;
        wait_for_state(&app, 0, "running").await;
        let id = app_id(&app, 0).await;
        let uri = format!("/_control/yarn/apps/{id}/state");
        let force = r#"{"state":"finished","finalStatus":"FAILED","diagnostics":"lost\nnode"}"#;
        let (status, body) = call(&app, "POST", &uri, force).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["app"]["state"], "FINISHED");
        assert_eq!(body["app"]["finalStatus"], "FAILED");
        wait_for_state(&app, 0, "dead").await;
        let (_, log) = call(&app, "GET", "/batches/0/log", "").await;
        let lines = log["log"].as_array().cloned().unwrap_or_default();
        assert_eq!(lines[lines.len() - 2..], [json!("lost"), json!("node")]);
        // Back to RUNNING: the script no longer finishes it.
        call(&app, "POST", &uri, r#"{"state":"RUNNING"}"#).await;
        wait_for_state(&app, 0, "running").await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let app_now = app_view(&app, &id).await;
        assert_eq!(app_now["state"], "RUNNING");
        assert_eq!(app_now["finalStatus"], "UNDEFINED");
        assert_eq!(app_now["finishedTime"], 0);
        let (status, _) = call(&app, "POST", &uri, r#"{"state":"DONE"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = call(
            &app,
            "POST",
            &uri,
            r#"{"state":"FAILED","finalStatus":"no"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let uri = "/_control/yarn/apps/application_1_9999/state";
        let (status, _) = call(&app, "POST", uri, r#"{"state":"FAILED"}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
