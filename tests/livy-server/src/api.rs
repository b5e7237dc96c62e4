//! HTTP routes: Livy's batch API (behind fault injection and the optional CSRF check), merged
//! with the simulated ResourceManager's routes and the test-only `/_control` API (neither of which
//! is affected by Livy's faults or CSRF check), all behind the optional authentication, which
//! leaves `/_control` alone.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use tracing::info;

use crate::auth::{self, User};
use crate::batch::{App, Batch, LookupError, YarnLink, list_slice, log_page};
use crate::control;
use crate::request::CreateRequest;
use crate::runner::{self, Launch, SimSpec};
use crate::yarn::{self, KilledBy, YarnApp};

type Shared = State<Arc<App>>;

/// An error reply in one of Livy's shapes.
#[derive(Debug)]
pub enum ApiError {
    /// `{"msg": "..."}`, Livy's own errors.
    Msg(StatusCode, String),
    /// A bare JSON string: Jackson failures and unexpected exceptions.
    Bare(StatusCode, String),
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::Msg(StatusCode::BAD_REQUEST, msg.into())
    }

    fn rejected(reason: impl std::fmt::Display) -> Self {
        ApiError::bad_request(format!("Rejected, Reason: {reason}"))
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::BadNumber(msg) => ApiError::bad_request(msg),
            LookupError::NotFound(msg) => ApiError::Msg(StatusCode::NOT_FOUND, msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Msg(status, msg) => (status, Json(json!({ "msg": msg }))).into_response(),
            ApiError::Bare(status, msg) => (status, Json(Value::String(msg))).into_response(),
        }
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// The whole server.
pub fn router(app: Arc<App>) -> Router {
    let livy = Router::new()
        .route("/version", get(version))
        .route("/batches", get(list).post(create))
        .route("/batches/", get(list).post(create))
        .route("/batches/{id}", get(show).delete(delete))
        .route("/batches/{id}/state", get(state))
        .route("/batches/{id}/log", get(log))
        .layer(middleware::from_fn_with_state(app.clone(), gate));
    livy.merge(control::routes())
        .merge(yarn::routes(app.clone()))
        .fallback(|| async { ApiError::Msg(StatusCode::NOT_FOUND, "Not found".into()) })
        .layer(middleware::map_response(json_by_default))
        // Outermost, as Hadoop's filter runs before Livy's; its own replies are not JSON.
        .layer(middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        .with_state(app)
}

/// Every reply is JSON unless a handler said otherwise (only the CSRF page does).
async fn json_by_default(mut res: Response) -> Response {
    res.headers_mut()
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    res
}

/// In front of every Livy route: counts POSTs and batch reads, injects faults, checks CSRF, adds latency, and
/// delays or loses the reply of a create.
async fn gate(State(app): Shared, req: Request, next: Next) -> Response {
    let is_post = req.method() == Method::POST;
    if is_post && req.uri().path().starts_with("/batches") {
        app.lock().posts += 1;
    }
    // Batch reads, for the tests of the load a client puts on Livy.
    if req.method() == Method::GET {
        match req
            .uri()
            .path()
            .trim_end_matches('/')
            .split('/')
            .collect::<Vec<_>>()[..]
        {
            ["", "batches"] => app.lock().lists += 1,
            ["", "batches", _] => app.lock().gets += 1,
            _ => {}
        }
    }
    let is_create = is_post && matches!(req.uri().path(), "/batches" | "/batches/");
    let faults = app.faults();
    // Injected before the handler runs, so a failed POST creates nothing.
    if let Some(status) = faults.injected(rand::random::<f64>()) {
        info!(path = %req.uri().path(), %status, "injecting fault");
        let msg = "java.lang.RuntimeException: injected fault".to_string();
        return ApiError::Bare(status, msg).into_response();
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if app.settings.csrf && !safe && !req.headers().contains_key("x-requested-by") {
        return csrf_page(req.uri().path());
    }
    let res = next.run(req).await;
    // Delaying after the handler lets a client time out on a request that took effect.
    if faults.latency_ms > 0 {
        tokio::time::sleep(faults.latency()).await;
    }
    if is_create && faults.post_latency_ms > 0 {
        tokio::time::sleep(faults.post_latency()).await;
    }
    if is_create && faults.lose_post_responses {
        info!("losing the reply of a create");
        let msg = "java.io.IOException: injected fault: the reply was lost".to_string();
        return ApiError::Bare(StatusCode::SERVICE_UNAVAILABLE, msg).into_response();
    }
    res
}

/// Jetty's error page for a CSRF rejection: HTML, not Livy's `msg` JSON.
fn csrf_page(path: &str) -> Response {
    let msg = "Missing Required Header for CSRF protection.";
    let body = format!(
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/>\n\
         <title>Error 400 {msg}</title>\n</head>\n<body><h2>HTTP ERROR 400 {msg}</h2>\n<table>\n\
         <tr><th>URI:</th><td>{path}</td></tr>\n<tr><th>STATUS:</th><td>400</td></tr>\n\
         <tr><th>MESSAGE:</th><td>{msg}</td></tr>\n<tr><th>SERVLET:</th><td>-</td></tr>\n\
         </table>\n\n</body>\n</html>\n"
    );
    let html = [(header::CONTENT_TYPE, "text/html;charset=iso-8859-1")];
    (StatusCode::BAD_REQUEST, html, Body::from(body)).into_response()
}

/// An optional int query parameter, failing like Java's `Integer.parseInt`.
fn int_param(query: &HashMap<String, String>, key: &str) -> Result<Option<i32>, ApiError> {
    query
        .get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("For input string: \"{v}\"")))
        })
        .transpose()
}

fn ok(body: Value) -> ApiResult {
    Ok(Json(body).into_response())
}

async fn version() -> ApiResult {
    ok(json!({
        "version": "0.9.0-incubating",
        "user": "livy-server",
        "revision": "fc4202ea31722979566f7f730f141420828e4d6b",
        "branch": "master",
        "date": "2026-05-19T00:00:00Z",
        "url": "https://github.com/apache/incubator-livy",
    }))
}

async fn list(State(app): Shared, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let from = int_param(&q, "from")?.unwrap_or(0);
    let size = int_param(&q, "size")?.unwrap_or(100);
    let reg = app.lock();
    let held: Vec<&Batch> = reg.held().collect();
    let sessions: Vec<Value> = held[list_slice(held.len(), from, size)]
        .iter()
        .map(|b| b.view())
        .collect();
    ok(json!({"from": from, "total": held.len(), "sessions": sessions}))
}

async fn create(State(app): Shared, user: Option<Extension<User>>, body: Bytes) -> ApiResult {
    let settings = &app.settings;
    // The whole create runs under the lock: Livy serialises creations too.
    let mut reg = app.lock();
    if reg.creating() >= settings.max_creating {
        return Err(ApiError::bad_request(
            "Rejected, too many sessions are being created!",
        ));
    }
    let req =
        CreateRequest::parse(&body).map_err(|e| ApiError::Bare(StatusCode::BAD_REQUEST, e))?;
    let id = reg.take_id();
    if req.null_collection {
        let npe = "java.lang.NullPointerException".to_string();
        return Err(ApiError::Bare(StatusCode::INTERNAL_SERVER_ERROR, npe));
    }
    if let Some(name) = &req.name {
        if name.bytes().all(|c| c.is_ascii_digit()) {
            return Err(ApiError::rejected(format!("Invalid session name: {name}")));
        }
        if reg.name_taken(name) {
            let reason = format!("Duplicate session name: Some({name}) for session {id}");
            return Err(ApiError::rejected(reason));
        }
    }
    req.check_files(&settings.whitelist)
        .map_err(ApiError::rejected)?;
    let file = req.file.clone().unwrap_or_default();
    let launch = match file.strip_prefix("sim:") {
        Some(spec) => Launch::Sim(SimSpec::parse(spec).map_err(ApiError::rejected)?),
        None => Launch::Real(req.spark_submit_args(&settings.spark_master)),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let sim = matches!(launch, Launch::Sim(_));
    let mut batch = Batch::new(id, req.name.clone(), file, request, sim);
    batch.owner = user.map(|Extension(User(name))| name);
    let key = reg.batches.len();
    // In YARN cluster mode the application is submitted at once; local mode has none.
    if let Launch::Sim(spec) = &launch {
        let tags = yarn::batch_tags(id, req.conf.get("spark.yarn.tags").map(String::as_str));
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("livy-batch-{id}"));
        let queue = req.queue.clone().unwrap_or_else(|| "default".into());
        let yarn_app = YarnApp::new(app.next_app_id(), name, queue, tags, key);
        info!(id, app = %yarn_app.id, "application submitted");
        reg.yarn.apps.push(yarn_app);
        batch.yarn = Some(YarnLink {
            app: reg.yarn.apps.len() - 1,
            following: true,
            show_app: spec.app,
            running_as: runner::running_as(&spec.outcome).to_string(),
        });
    }
    let view = batch.view();
    let app_key = batch.yarn.as_ref().map(|l| l.app);
    reg.batches.push(batch);
    reg.created += 1;
    drop(reg);
    info!(id, "batch created");
    match launch {
        Launch::Real(argv) => runner::start_real(app.clone(), key, id, argv),
        Launch::Sim(spec) => {
            if let Some(app_key) = app_key {
                runner::start_sim(app.clone(), app_key, id, spec);
            }
        }
    }
    let location = [(header::LOCATION, format!("/batches/{id}"))];
    Ok((StatusCode::CREATED, location, Json(view)).into_response())
}

async fn show(State(app): Shared, Path(seg): Path<String>) -> ApiResult {
    let reg = app.lock();
    let key = reg.find(&seg)?;
    ok(reg.batches[key].view())
}

async fn state(State(app): Shared, Path(seg): Path<String>) -> ApiResult {
    let reg = app.lock();
    let b = &reg.batches[reg.find(&seg)?];
    ok(json!({"id": b.id, "state": b.state}))
}

async fn log(
    State(app): Shared,
    Path(seg): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let reg = app.lock();
    let b = &reg.batches[reg.find(&seg)?];
    let from = int_param(&q, "from")?;
    let size = int_param(&q, "size")?;
    let lines = b.log_lines();
    let (from, range) = log_page(lines.len(), from, size);
    ok(json!({"id": b.id, "from": from, "total": lines.len(), "log": &lines[range]}))
}

async fn delete(State(app): Shared, Path(seg): Path<String>) -> ApiResult {
    let (key, child) = {
        let mut reg = app.lock();
        let key = reg.find(&seg)?;
        let b = &mut reg.batches[key];
        if b.deleting {
            let msg = format!("Session {} already stopped.", b.id);
            return Err(ApiError::Msg(StatusCode::NOT_FOUND, msg));
        }
        b.deleting = true;
        (key, b.child.clone())
    };
    // Stands for Livy's stop, which can block on YARN for up to two minutes.
    if !app.settings.delete_delay.is_zero() {
        tokio::time::sleep(app.settings.delete_delay).await;
    }
    if let Some(child) = child {
        runner::stop(child).await;
    }
    let mut reg = app.lock();
    // A restart during the delay may already have forgotten it.
    if reg.batches[key].held {
        // Livy's stop kills the YARN application if it is still going.
        let unfinished = (reg.batches[key].yarn.as_ref().map(|l| l.app))
            .filter(|&k| !reg.yarn.apps[k].state.is_final());
        if let Some(app_key) = unfinished {
            reg.update_app(app_key, |a| {
                a.kill(KilledBy::LivyDelete, "Killed by Livy DELETE")
            });
        }
        reg.batches[key].forget();
        reg.deletes += 1;
    }
    drop(reg);
    ok(json!({"msg": "deleted"}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        app_id, app_view, call, post_batch, server, server_with, stats, wait_for_app,
        wait_for_state,
    };
    use axum::http::Request as HttpRequest;
    use std::time::{Duration, Instant};
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_sim_batch_runs_to_success_and_is_deleted() {
        let app = server(false);
        let body = r#"{"file":"sim:success?start=0.05&run=0.1&app=1","name":"job"}"#;
        let (status, batch) = post_batch(&app, body).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(batch["state"], "starting");
        assert_eq!(batch["appId"], Value::Null);
        assert_eq!(batch["proxyUser"], Value::Null);
        wait_for_state(&app, 0, "running").await;
        let (_, running) = call(&app, "GET", "/batches/job", "").await;
        assert!(
            running["appId"]
                .as_str()
                .is_some_and(|a| a.starts_with("application_"))
        );
        wait_for_state(&app, 0, "success").await;
        let (_, done) = call(&app, "GET", "/batches/0", "").await;
        assert_eq!(done["appInfo"]["driverLogUrl"], Value::Null);
        let (_, log) = call(&app, "GET", "/batches/0/log?size=-1", "").await;
        assert_eq!(log["total"], 6);
        assert_eq!(log["log"][5], "\nYARN Diagnostics: ");
        let (status, msg) = call(&app, "DELETE", "/batches/0", "").await;
        assert_eq!((status, msg), (StatusCode::OK, json!({"msg": "deleted"})));
        let (status, msg) = call(&app, "GET", "/batches/0", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(msg, json!({"msg": "Session '0' not found."}));
        let (_, stats) = call(&app, "GET", "/_control/stats", "").await;
        assert_eq!(
            (stats["posts"].clone(), stats["deletes"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(stats["batches"][0]["deleted"], true);
    }

    #[tokio::test]
    async fn rejections_have_livy_shapes_and_waste_ids() {
        let app = server(false);
        let forever = r#"{"file":"sim:forever?start=0","name":"dup"}"#;
        assert_eq!(post_batch(&app, forever).await.0, StatusCode::CREATED);
        let (status, body) = post_batch(&app, forever).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"msg": "Rejected, Reason: Duplicate session name: Some(dup) for session 1"})
        );
        let (status, body) = post_batch(&app, r#"{"file":"/a","ttl":1}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.as_str()
                .is_some_and(|s| s.starts_with("Unrecognized field \"ttl\""))
        );
        let (status, body) = post_batch(&app, r#"{"name":"2024"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"msg": "Rejected, Reason: Invalid session name: 2024"})
        );
        let (status, body) = post_batch(&app, r#"{"file":"/a","jars":null}"#).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, json!("java.lang.NullPointerException"));
        let (status, body) = post_batch(&app, r#"{"name":"x"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["msg"],
            "Rejected, Reason: requirement failed: File is required."
        );
        // Ids 1..=4 went to rejected creates; the unknown field took none.
        let (_, batch) = post_batch(&app, r#"{"file":"sim:success"}"#).await;
        assert_eq!(batch["id"], 5);
        let (status, body) = call(&app, "GET", "/batches?from=x", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"msg": "For input string: \"x\""}));
        let (_, list) = call(&app, "GET", "/batches?from=1", "").await;
        assert_eq!(
            (list["total"].clone(), list["sessions"][0]["id"].clone()),
            (json!(2), json!(5))
        );
    }

    #[tokio::test]
    async fn too_many_starting_batches_are_rejected_without_taking_an_id() {
        let app = server_with(false, 1);
        let slow = r#"{"file":"sim:success?start=60"}"#;
        assert_eq!(post_batch(&app, slow).await.0, StatusCode::CREATED);
        let (status, body) = post_batch(&app, slow).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"msg": "Rejected, too many sessions are being created!"})
        );
        call(
            &app,
            "POST",
            "/_control/batches/0/state",
            r#"{"state":"running"}"#,
        )
        .await;
        let (status, body) = post_batch(&app, slow).await;
        assert_eq!(
            (status, body["id"].clone()),
            (StatusCode::CREATED, json!(1))
        );
    }

    #[tokio::test]
    async fn a_failed_spawn_is_a_dead_batch_with_the_error_logged() {
        let app = server(false);
        let (status, _) = post_batch(&app, r#"{"file":"/app.py"}"#).await;
        assert_eq!(status, StatusCode::CREATED);
        wait_for_state(&app, 0, "dead").await;
        let (_, log) = call(&app, "GET", "/batches/0/log", "").await;
        assert!(
            log["log"][1]
                .as_str()
                .is_some_and(|l| l.contains("Failed to run"))
        );
        assert_eq!(log["log"].as_array().map(Vec::len), Some(3));
        // Local mode has no YARN application.
        let stats = stats(&app).await;
        assert_eq!(stats["yarn"], json!([]));
        assert_eq!(stats["batches"][0]["yarn_app"], Value::Null);
    }

    #[tokio::test]
    async fn control_calls_force_states_and_restart() {
        let app = server(true);
        // CSRF guards Livy routes only.
        let (status, body) = post_batch(&app, r#"{"file":"sim:forever"}"#).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, Value::Null));
        let req = HttpRequest::post("/batches")
            .header("X-Requested-By", "")
            .body(Body::from(r#"{"file":"sim:forever?start=0"}"#))
            .expect("valid request");
        assert_eq!(
            app.clone().oneshot(req).await.expect("infallible").status(),
            StatusCode::CREATED
        );
        wait_for_state(&app, 0, "running").await;
        let force = r#"{"state":"recovering"}"#;
        let (status, _) = call(&app, "POST", "/_control/batches/0/state", force).await;
        assert_eq!(status, StatusCode::OK);
        wait_for_state(&app, 0, "recovering").await;
        call(&app, "POST", "/_control/restart", r#"{"recovery":false}"#).await;
        let (_, list) = call(&app, "GET", "/batches", "").await;
        assert_eq!(list["total"], 0);
        let (_, stats) = call(&app, "GET", "/_control/stats", "").await;
        assert_eq!(stats["posts"], 2);
        assert_eq!(stats["batches"][0]["state"], "recovering");
    }

    #[tokio::test]
    async fn a_sim_script_drives_its_application_and_the_batch_mirrors_it() {
        let app = server(false);
        let body = r#"{"file":"sim:dead?start=0.1&run=0.5&msg=boom&lines=2"}"#;
        let (status, batch) = post_batch(&app, body).await;
        assert_eq!(
            (status, batch["state"].clone()),
            (StatusCode::CREATED, json!("starting"))
        );
        let id = app_id(&app, 0).await;
        // Submitted at creation.
        assert_eq!(app_view(&app, &id).await["state"], "ACCEPTED");
        assert_eq!(stats(&app).await["batches"][0]["yarn_app"], id.as_str());
        wait_for_app(&app, &id, "RUNNING").await;
        wait_for_state(&app, 0, "running").await;
        // Without app=1 Livy shows no application, though there is one.
        let (_, running) = call(&app, "GET", "/batches/0", "").await;
        assert_eq!(running["appId"], Value::Null);
        wait_for_app(&app, &id, "FAILED").await;
        let failed = app_view(&app, &id).await;
        assert_eq!(failed["finalStatus"], "FAILED");
        assert_eq!(failed["diagnostics"], "boom");
        wait_for_state(&app, 0, "dead").await;
        let (_, log) = call(&app, "GET", "/batches/0/log?size=-1", "").await;
        assert_eq!(
            log["log"],
            json!([
                "stdout: ",
                "sim: batch 0 output line 1/2",
                "sim: batch 0 output line 2/2",
                "boom",
                "\nstderr: ",
                "\nYARN Diagnostics: ",
                "boom"
            ])
        );

        // A literal word is shown while RUNNING, then the application succeeds.
        let body = r#"{"file":"sim:busy?start=0&run=0.6&app=1"}"#;
        post_batch(&app, body).await;
        let id = app_id(&app, 1).await;
        wait_for_state(&app, 1, "busy").await;
        assert_eq!(app_view(&app, &id).await["state"], "RUNNING");
        let (_, busy) = call(&app, "GET", "/batches/1", "").await;
        assert_eq!(busy["appId"], id.as_str());
        assert_eq!(
            busy["appInfo"]["sparkUiUrl"],
            format!("http://127.0.0.1:8088/proxy/{id}/")
        );
        wait_for_state(&app, 1, "success").await;
        let done = app_view(&app, &id).await;
        assert_eq!(
            (done["state"].clone(), done["finalStatus"].clone()),
            (json!("FINISHED"), json!("SUCCEEDED"))
        );

        // `killed` is a YARN kill; `error` is a failed application, which Livy reports as dead.
        for (n, outcome, yarn, livy) in [
            (2, "killed", "KILLED", "killed"),
            (3, "error", "FAILED", "dead"),
        ] {
            let body = format!(r#"{{"file":"sim:{outcome}?start=0&run=0.05"}}"#);
            call(&app, "POST", "/batches", &body).await;
            let id = app_id(&app, n).await;
            wait_for_app(&app, &id, yarn).await;
            assert_eq!(app_view(&app, &id).await["finalStatus"], yarn);
            wait_for_state(&app, n as i32, livy).await;
        }
        let stats = stats(&app).await;
        assert_eq!(stats["yarn"][2]["killed_by"], Value::Null);
        assert_eq!(stats["yarn_kills"], 0);
    }

    #[tokio::test]
    async fn delete_kills_an_unfinished_application_only() {
        let app = server(false);
        post_batch(&app, r#"{"file":"sim:forever?start=0","name":"f"}"#).await;
        post_batch(&app, r#"{"file":"sim:success?start=0&run=0"}"#).await;
        wait_for_state(&app, 0, "running").await;
        wait_for_state(&app, 1, "success").await;
        for seg in ["f", "1"] {
            let (status, _) = call(&app, "DELETE", &format!("/batches/{seg}"), "").await;
            assert_eq!(status, StatusCode::OK);
        }
        let killed = app_view(&app, &app_id(&app, 0).await).await;
        assert_eq!(
            (killed["state"].clone(), killed["finalStatus"].clone()),
            (json!("KILLED"), json!("KILLED"))
        );
        assert_eq!(killed["diagnostics"], "Killed by Livy DELETE");
        let stats = stats(&app).await;
        assert_eq!(stats["yarn"][0]["killed_by"], "livy-delete");
        assert_eq!(stats["yarn"][1]["state"], "FINISHED");
        assert_eq!(stats["yarn"][1]["killed_by"], Value::Null);
        assert_eq!(stats["deletes"], 2);
    }

    #[tokio::test]
    async fn a_lost_create_reply_still_creates_the_batch() {
        let app = server(false);
        let faults = r#"{"lose_post_responses":true}"#;
        assert_eq!(
            call(&app, "POST", "/_control/faults", faults).await.0,
            StatusCode::OK
        );
        let (status, body) = post_batch(&app, r#"{"file":"sim:forever","name":"x"}"#).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.is_string());
        let (status, batch) = call(&app, "GET", "/batches/x", "").await;
        assert_eq!((status, batch["id"].clone()), (StatusCode::OK, json!(0)));
        let stats = stats(&app).await;
        assert_eq!(
            (stats["posts"].clone(), stats["created"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(stats["yarn"].as_array().map(Vec::len), Some(1));
    }

    #[tokio::test]
    async fn a_slow_create_reply_comes_after_the_batch_exists() {
        let app = server(false);
        call(
            &app,
            "POST",
            "/_control/faults",
            r#"{"post_latency_ms":400}"#,
        )
        .await;
        let started = Instant::now();
        let post = tokio::spawn({
            let app = app.clone();
            async move { post_batch(&app, r#"{"file":"sim:forever"}"#).await }
        });
        // Other Livy routes are not slowed down, and the batch is already there.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (status, _) = call(&app, "GET", "/batches/0", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!post.is_finished());
        let (status, _) = post.await.expect("post task");
        assert_eq!(status, StatusCode::CREATED);
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn livy_and_rm_faults_are_separate() {
        let app = server(false);
        post_batch(&app, r#"{"file":"sim:forever"}"#).await;
        let faults = r#"{"yarn_error_rate":1}"#;
        call(&app, "POST", "/_control/faults", faults).await;
        let (status, body) = call(&app, "GET", "/ws/v1/cluster/apps", "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["RemoteException"]["message"], "injected fault");
        assert_eq!(call(&app, "GET", "/batches/0", "").await.0, StatusCode::OK);
        let faults = r#"{"error_rate":1,"error_status":502}"#;
        call(&app, "POST", "/_control/faults", faults).await;
        assert_eq!(
            call(&app, "GET", "/batches/0", "").await.0,
            StatusCode::BAD_GATEWAY
        );
        let (status, body) = call(&app, "GET", "/ws/v1/cluster/apps", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["apps"]["app"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            call(&app, "GET", "/_control/stats", "").await.0,
            StatusCode::OK
        );
        let (status, _) = call(&app, "POST", "/_control/faults", r#"{"yarn_rate":1}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
