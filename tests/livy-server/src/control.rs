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
    ok(app.lock().stats())
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
