//! Helpers shared by the unit tests: a server on no socket, one request at a time, and polling.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::api::router;
use crate::auth::Auth;
use crate::batch::{App, Settings};

pub fn server(csrf: bool) -> Router {
    server_with(csrf, 100)
}

pub fn server_with(csrf: bool, max_creating: usize) -> Router {
    server_with_auth(csrf, max_creating, Auth::Off)
}

pub fn server_with_auth(csrf: bool, max_creating: usize, auth: Auth) -> Router {
    router(Arc::new(App::new(Settings {
        spark_submit: "/nonexistent/spark-submit".into(),
        spark_master: "local[1]".into(),
        whitelist: Vec::new(),
        max_creating,
        retain: Duration::from_secs(600),
        delete_delay: Duration::ZERO,
        csrf,
        auth,
    })))
}

/// One request; the body as JSON, `Null` when it is not JSON.
pub async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_string()))
        .expect("valid request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// One request with extra headers; the status, the headers and the body as text.
pub async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Body::from(body.to_string()))
        .expect("valid request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (parts.status, parts.headers, text)
}

pub async fn stats(app: &Router) -> Value {
    call(app, "GET", "/_control/stats", "").await.1
}

/// Polls (for up to 2 s) until batch `id` shows `want`.
pub async fn wait_for_state(app: &Router, id: i32, want: &str) {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, body) = call(app, "GET", &format!("/batches/{id}/state"), "").await;
        if body["state"] == want {
            return;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("batch {id} never reached {want}: {last}");
}

/// Polls (for up to 2 s) until the YARN application `id` is in state `want`.
pub async fn wait_for_app(app: &Router, id: &str, want: &str) {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, body) = call(app, "GET", &format!("/ws/v1/cluster/apps/{id}/state"), "").await;
        if body["state"] == want {
            return;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("application {id} never reached {want}: {last}");
}

/// `POST /batches` with `body`.
pub async fn post_batch(app: &Router, body: &str) -> (StatusCode, Value) {
    call(app, "POST", "/batches", body).await
}

/// The ResourceManager's view of application `id`.
pub async fn app_view(app: &Router, id: &str) -> Value {
    call(app, "GET", &format!("/ws/v1/cluster/apps/{id}"), "")
        .await
        .1["app"]
        .clone()
}

/// The YARN application id of the `n`th application submitted.
pub async fn app_id(app: &Router, n: usize) -> String {
    let stats = stats(app).await;
    stats["yarn"][n]["id"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| panic!("no application {n}: {stats}"))
}
