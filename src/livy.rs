//! Thin client for Livy's batch API (`/batches`, `/version`), typed after the real server's
//! behaviour rather than its docs (see the README's "Livy compatibility" notes).
//!
//! Batch states are read from one shared listing per Livy server (`GET /batches`, paged) rather
//! than a `GET /batches/{name}` per batch: supervisors read on a shared tick, so one listing a
//! tick answers all of them, and Livy's load does not grow with the batches in flight. A batch
//! missing from the listing is read by name, which keeps the name and 404 rules exact.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::auth::{Auth, SendError};
use crate::http::{self, BodyError, Trust, error_chain};
use crate::metrics;

/// Long enough for Livy's `/version` and batch reads on a busy master node.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// DELETE waits for the YARN app id up to `livy.server.yarn.app-lookup-timeout` (120 s) before it kills.
const DELETE_TIMEOUT: Duration = Duration::from_secs(180);
/// Batches per `GET /batches` page.
pub const LIST_PAGE_SIZE: usize = 500;
/// The most a `GET /batches` page may be: a batch shows its last 10 log lines.
const MAX_LIST_BODY: usize = 16 << 20;
/// Room made at once for a listing of the `total` the server claims, at most.
const MAX_LISTED: usize = 100_000;
/// A listing asked for at most this long before a read answers it (besides one that was in
/// flight when the read came). Supervisors read on the same tick, so a tick's reads come
/// together; far shorter than any sync interval, so a listing never serves two ticks.
const LIST_REUSE: Duration = Duration::from_millis(100);
/// How long the health probe waits for `/version`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a Livy call failed, kept apart so callers can decide to retry, give up, or report.
#[derive(Debug, thiserror::Error)]
pub enum LivyError {
    /// The request never reached Livy: connection refused, DNS, connect timeout.
    #[error("livy unreachable: {0}")]
    Connect(String),
    /// The request may have reached Livy but no answer came: timeout, connection reset.
    #[error("livy did not answer: {0}")]
    NoAnswer(String),
    /// Livy answered with a non-success status; `msg` is its `msg`, bare string or body text.
    #[error("livy answered {status}: {msg}")]
    Http { status: u16, msg: String },
    /// A success status with a body that is not what Livy sends.
    #[error("unexpected livy reply: {0}")]
    Decode(String),
    /// Livy's TLS certificate is not trusted; nothing was sent.
    #[error("livy's certificate is not trusted: {0}")]
    Tls(String),
    /// No credentials could be made for the request (a Kerberos ticket: KDC unreachable, keytab
    /// no longer valid); nothing was sent.
    #[error("no credentials for livy: {0}")]
    Credentials(String),
}

impl LivyError {
    /// Worth retrying: Livy is down, failing, or busy ("too many sessions" is a 400 in Livy).
    pub fn is_transient(&self) -> bool {
        match self {
            LivyError::Connect(_) | LivyError::NoAnswer(_) | LivyError::Credentials(_) => true,
            LivyError::Http { status, msg } => {
                *status >= 500
                    || *status == 429
                    || msg.contains("too many sessions are being created")
            }
            LivyError::Decode(_) | LivyError::Tls(_) => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, LivyError::Http { status: 404, .. })
    }

    /// Livy refused the name because a batch of that name is already held.
    pub fn is_duplicate_name(&self) -> bool {
        matches!(self, LivyError::Http { status: 400, msg } if msg.contains("Duplicate session name"))
    }

    /// For a `POST /batches` that failed this way, whether Livy may have created the batch all
    /// the same: no answer, a server error (Livy registers a batch before it can fail), or a
    /// success it could not read. Never for a request that did not reach it, or a 4xx.
    pub fn may_have_created(&self) -> bool {
        match self {
            LivyError::Connect(_) | LivyError::Tls(_) | LivyError::Credentials(_) => false,
            LivyError::NoAnswer(_) | LivyError::Decode(_) => true,
            LivyError::Http { status, .. } => *status >= 500,
        }
    }
}

/// `POST /batches` body. Only fields Livy knows; absent lists and maps are omitted, never `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CreateBatch {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jars: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub py_files: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_cores: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_cores: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_executors: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub conf: BTreeMap<String, String>,
}

/// A batch as Livy shows it. Only `id` and `state` exist in every Livy version.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    pub state: String,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub app_info: Option<AppInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    #[serde(default)]
    pub driver_log_url: Option<String>,
    #[serde(default)]
    pub spark_ui_url: Option<String>,
}

/// A batch state. Unknown strings are kept and treated as not terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchState {
    Starting,
    Recovering,
    Running,
    Success,
    Dead,
    Killed,
    Error,
    Unknown(String),
}

impl BatchState {
    pub fn parse(s: &str) -> Self {
        match s {
            "starting" => BatchState::Starting,
            "recovering" => BatchState::Recovering,
            "running" => BatchState::Running,
            "success" => BatchState::Success,
            "dead" => BatchState::Dead,
            "killed" => BatchState::Killed,
            "error" => BatchState::Error,
            other => BatchState::Unknown(other.to_owned()),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            BatchState::Success | BatchState::Dead | BatchState::Killed | BatchState::Error
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            BatchState::Starting => "starting",
            BatchState::Recovering => "recovering",
            BatchState::Running => "running",
            BatchState::Success => "success",
            BatchState::Dead => "dead",
            BatchState::Killed => "killed",
            BatchState::Error => "error",
            BatchState::Unknown(s) => s,
        }
    }
}

/// A page of `GET /batches/{name}/log`.
#[derive(Debug, Deserialize)]
pub struct LogPage {
    #[serde(default)]
    pub log: Vec<String>,
}

/// Livy's batch API as supervisors use it: the seam where component tests put a fake.
///
/// A batch is always addressed by its unique name (Livy ≥ 0.6 resolves a non-numeric segment by
/// name), never by a bare id: ids restart at 0 when Livy restarts without recovery, so an id can
/// come to name someone else's batch.
#[async_trait]
pub trait Livy: Send + Sync + std::fmt::Debug {
    /// The server's base URL.
    fn base(&self) -> &Url;
    /// The same client aimed at another Livy server (a task's `LivyHost`).
    fn at(&self, base: Url) -> Arc<dyn Livy>;
    /// `GET /version`, a cheap call every Livy answers.
    async fn probe(&self) -> Result<(), LivyError>;
    /// `POST /batches`.
    async fn create_batch(&self, body: &CreateBatch) -> Result<Batch, LivyError>;
    /// The batch of this name: from the server's listing of this tick when it is there, else
    /// `GET /batches/{name}`.
    async fn batch(&self, name: &str) -> Result<Batch, LivyError>;
    /// The last `lines` lines of the batch log.
    async fn log_tail(&self, name: &str, lines: u32) -> Result<Vec<String>, LivyError>;
    /// `DELETE /batches/{name}`: kills the application if it runs, then Livy forgets the batch.
    async fn delete_batch(&self, name: &str) -> Result<(), LivyError>;
    /// How many batches the server holds that have not started yet (`not_started`,
    /// `starting`): Livy refuses new ones at its `livy.server.session.max-creation`.
    async fn starting(&self) -> Result<usize, LivyError>;
}

/// The URL of a batch by id, as the task output reports it.
pub fn batch_url(base: &Url, id: i64) -> String {
    format!("{}/batches/{id}", base.as_str().trim_end_matches('/'))
}

/// One page of `GET /batches`: `total` is every batch the server holds, not this page's length.
#[derive(Debug, Deserialize)]
pub struct BatchList {
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub sessions: Vec<Batch>,
}

/// The latest listing of one Livy server's batches, by name.
#[derive(Debug, Default)]
struct Listing {
    /// When the listing was asked for, and when it came; `None` before the first.
    asked: Option<Instant>,
    done: Option<Instant>,
    by_name: HashMap<Box<str>, Listed>,
}

/// A batch as a listing keeps it until the next tick: a listing holds every batch of its
/// server, thousands at once, so a state Livy names is not a string of its own.
#[derive(Debug)]
struct Listed {
    id: i64,
    state: Cow<'static, str>,
    app_id: Option<Box<str>>,
    app_info: Option<AppInfo>,
}

/// Every state a Livy batch (or session) can be in.
const LIVY_STATES: [&str; 11] = [
    "not_started",
    "starting",
    "recovering",
    "idle",
    "running",
    "busy",
    "shutting_down",
    "error",
    "dead",
    "killed",
    "success",
];

impl Listed {
    fn new(b: Batch) -> Self {
        let state = match LIVY_STATES.iter().find(|s| **s == b.state) {
            Some(known) => Cow::Borrowed(*known),
            None => Cow::Owned(b.state),
        };
        Listed {
            id: b.id,
            state,
            app_id: b.app_id.map(String::into_boxed_str),
            app_info: b.app_info,
        }
    }

    fn batch(&self, name: &str) -> Batch {
        Batch {
            id: self.id,
            name: Some(name.to_owned()),
            state: self.state.clone().into_owned(),
            app_id: self.app_id.as_deref().map(str::to_owned),
            app_info: self.app_info.clone(),
        }
    }
}

/// The listings of every Livy server a client and its clones (`at`) talk to.
#[derive(Debug, Default)]
struct Listings(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Listing>>>>);

impl Listings {
    fn of(&self, base: &Url) -> Arc<tokio::sync::Mutex<Listing>> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(base.as_str().to_owned()).or_default().clone()
    }
}

/// A Livy server at one base URL. Cheap to clone: clones share one connection pool, and the
/// listings.
#[derive(Debug, Clone)]
pub struct LivyClient {
    http: reqwest::Client,
    auth: Auth,
    base: Url,
    /// Batch reads answered from shared listings (the worker's); `None` reads each by name.
    listings: Option<Arc<Listings>>,
}

impl LivyClient {
    pub fn new(base: Url, trust: &Trust, auth: Auth) -> Result<Self, LivyError> {
        let http = http::client(Duration::from_secs(5), trust)
            .build()
            .map_err(|e| LivyError::Connect(e.to_string()))?;
        Ok(Self {
            http,
            auth,
            base,
            listings: None,
        })
    }

    /// Batch reads of this client and its clones are answered from one listing per server and
    /// tick (the worker, which follows many batches); without it each is read by name.
    #[must_use]
    pub fn with_listing(self) -> Self {
        Self {
            listings: Some(Arc::default()),
            ..self
        }
    }

    /// `GET /batches?from=&size=`: one page.
    async fn list_page(&self, from: usize, size: usize) -> Result<BatchList, LivyError> {
        let mut url = self.url(&["batches"])?;
        url.query_pairs_mut()
            .append_pair("from", &from.to_string())
            .append_pair("size", &size.to_string());
        let req = self.request(reqwest::Method::GET, url);
        decode_capped(
            check(self.send("GET /batches", req).await?).await?,
            MAX_LIST_BODY,
        )
        .await
    }

    /// Every batch the server holds, page by page: `each` takes each page's batches and the
    /// server's total.
    async fn list_every(&self, mut each: impl FnMut(Vec<Batch>, i64)) -> Result<(), LivyError> {
        let mut listed = 0;
        loop {
            let page = self.list_page(listed, LIST_PAGE_SIZE).await?;
            let got = page.sessions.len();
            listed += got;
            each(page.sessions, page.total);
            // Batches created between pages land at the end; those forgotten between pages shift
            // the rest forward, so one may be skipped: it is then read by name.
            if got == 0 || i64::try_from(listed).unwrap_or(i64::MAX) >= page.total {
                return Ok(());
            }
        }
    }

    /// Every batch the server holds, by name (taken out of the batch, which [`Self::listed`]
    /// puts back). Batches without a name are not anyone's here.
    async fn list_all(&self) -> Result<HashMap<Box<str>, Listed>, LivyError> {
        let mut by_name = HashMap::new();
        self.list_every(|page, total| {
            if by_name.is_empty() {
                by_name.reserve(usize::try_from(total).unwrap_or(0).min(MAX_LISTED));
            }
            by_name.extend(
                page.into_iter()
                    .filter_map(|mut b| b.name.take().map(|n| (n.into(), Listed::new(b)))),
            );
        })
        .await?;
        Ok(by_name)
    }

    /// The batch of this name in the server's current listing: one that a read of this tick
    /// already took, else a new one. `None` when it is not listed (or the listing failed).
    async fn listed(&self, name: &str) -> Option<Batch> {
        let slot = self.listings.as_ref()?.of(&self.base);
        let came = Instant::now();
        // Reads that come while a listing is in flight wait for it: it is as fresh as they are.
        let mut listing = slot.lock().await;
        let fresh = listing.done.is_some_and(|d| d >= came)
            || listing
                .asked
                .is_some_and(|a| came.saturating_duration_since(a) < LIST_REUSE);
        if !fresh {
            let asked = Instant::now();
            // The last tick's listing goes first, so that two are never held at once.
            listing.by_name = HashMap::new();
            listing.by_name = match Box::pin(self.list_all()).await {
                Ok(by_name) => by_name,
                Err(e) => {
                    debug!(error = %e, "cannot list the batches; reading them one by one");
                    HashMap::new()
                }
            };
            listing.asked = Some(asked);
            listing.done = Some(Instant::now());
        }
        listing.by_name.get(name).map(|b| b.batch(name))
    }

    /// `GET /batches/{name}`.
    async fn batch_by_name(&self, name: &str) -> Result<Batch, LivyError> {
        let req = self.request(reqwest::Method::GET, self.url(&["batches", name])?);
        decode(check(self.send("GET /batches/{name}", req).await?).await?).await
    }

    /// Sends one request, counted under `route` (a template: never the batch name).
    async fn send(
        &self,
        route: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LivyError> {
        let req = req
            .build()
            .map_err(|e| LivyError::Decode(error_chain(&e)))?;
        let started = tokio::time::Instant::now();
        let result = self.auth.send(&self.http, req).await.map_err(|e| match e {
            SendError::Credentials(msg) => LivyError::Credentials(msg),
            SendError::Http(e) if http::is_untrusted_certificate(&e) => {
                LivyError::Tls(error_chain(&e))
            }
            SendError::Http(e) if e.is_connect() => LivyError::Connect(error_chain(&e)),
            SendError::Http(e) => LivyError::NoAnswer(error_chain(&e)),
        });
        let status = match &result {
            Ok(resp) => resp.status().as_str().to_owned(),
            Err(LivyError::Credentials(_)) => "no_credentials".to_owned(),
            Err(LivyError::Tls(_)) => "tls_error".to_owned(),
            Err(LivyError::Connect(_)) => "connect_error".to_owned(),
            Err(_) => "no_answer".to_owned(),
        };
        metrics::livy_request(route, &status, started.elapsed());
        result
    }

    /// `{base}/{segments...}`, each segment percent-encoded (batch names may hold spaces).
    fn url(&self, segments: &[&str]) -> Result<Url, LivyError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| LivyError::Decode("the Livy URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        // Livy's CSRF filter only checks that X-Requested-By is present; send it on every call.
        self.http
            .request(method, url)
            .header("X-Requested-By", "spark-activity-worker")
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(REQUEST_TIMEOUT)
    }
}

#[async_trait]
impl Livy for LivyClient {
    fn base(&self) -> &Url {
        &self.base
    }

    fn at(&self, base: Url) -> Arc<dyn Livy> {
        Arc::new(Self {
            http: self.http.clone(),
            auth: self.auth.clone(),
            base,
            listings: self.listings.clone(),
        })
    }

    async fn probe(&self) -> Result<(), LivyError> {
        let req = self
            .request(reqwest::Method::GET, self.url(&["version"])?)
            .timeout(PROBE_TIMEOUT);
        check(self.send("GET /version", req).await?).await.map(drop)
    }

    async fn create_batch(&self, body: &CreateBatch) -> Result<Batch, LivyError> {
        let req = self
            .request(reqwest::Method::POST, self.url(&["batches"])?)
            .json(body);
        decode(check(self.send("POST /batches", req).await?).await?).await
    }

    async fn batch(&self, name: &str) -> Result<Batch, LivyError> {
        // Every supervisor waits here for the tick's listing at once: the requests, which one
        // reader or a few make, are boxed so that the waiting reads stay small.
        match self.listed(name).await {
            Some(b) => Ok(b),
            None => Box::pin(self.batch_by_name(name)).await,
        }
    }

    async fn log_tail(&self, name: &str, lines: u32) -> Result<Vec<String>, LivyError> {
        let mut url = self.url(&["batches", name, "log"])?;
        // `from` omitted means "the tail".
        url.query_pairs_mut()
            .append_pair("size", &lines.to_string());
        let req = self.request(reqwest::Method::GET, url);
        let page: LogPage =
            decode(check(self.send("GET /batches/{name}/log", req).await?).await?).await?;
        Ok(page.log)
    }

    async fn starting(&self) -> Result<usize, LivyError> {
        let mut starting = 0;
        self.list_every(|page, _| {
            starting += page
                .iter()
                .filter(|b| matches!(b.state.as_str(), "starting" | "not_started"))
                .count();
        })
        .await?;
        Ok(starting)
    }

    async fn delete_batch(&self, name: &str) -> Result<(), LivyError> {
        let req = self
            .request(reqwest::Method::DELETE, self.url(&["batches", name])?)
            .timeout(DELETE_TIMEOUT);
        check(self.send("DELETE /batches/{name}", req).await?)
            .await
            .map(drop)
    }
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, LivyError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = http::error_text(resp).await;
    Err(LivyError::Http {
        status: status.as_u16(),
        msg: error_message(&body),
    })
}

async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, LivyError> {
    decode_capped(resp, http::MAX_BODY).await
}

/// A successful reply of at most `cap` bytes as `T`.
async fn decode_capped<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    cap: usize,
) -> Result<T, LivyError> {
    let bytes = http::read_capped_to(resp, cap).await.map_err(|e| match e {
        BodyError::TooLarge(_) => LivyError::Decode(e.to_string()),
        BodyError::Read(msg) => LivyError::NoAnswer(msg),
    })?;
    parse_reply(&bytes)
}

/// A successful reply's body as `T` ([`Batch`], [`LogPage`]).
pub fn parse_reply<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, LivyError> {
    serde_json::from_slice(body).map_err(|e| LivyError::Decode(e.to_string()))
}

/// Livy's error bodies come as `{"msg": ...}`, a bare JSON string, an empty body (403), or a
/// servlet container's HTML page (CSRF); make one quotable line of any of them.
pub fn error_message(body: &str) -> String {
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => match map.get("msg").or_else(|| map.get("message")) {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => body.to_owned(),
        },
        Ok(serde_json::Value::String(s)) => s,
        _ => body.to_owned(),
    };
    let quoted = http::quote(&text);
    if quoted.is_empty() {
        return "(empty body)".to_owned();
    }
    quoted
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_listed_batch_reads_back_as_it_came_with_a_known_state_held_once() {
        for state in ["running", "a_state_of_a_later_livy"] {
            let listed = Listed::new(Batch {
                id: 7,
                name: None,
                state: state.to_owned(),
                app_id: Some("application_1_0001".to_owned()),
                app_info: Some(AppInfo {
                    driver_log_url: Some("http://node:8042/log".to_owned()),
                    spark_ui_url: None,
                }),
            });
            assert_eq!(
                matches!(listed.state, Cow::Borrowed(_)),
                state == "running",
                "{state}"
            );
            let back = listed.batch("etl-1");
            assert_eq!(back.id, 7);
            assert_eq!(back.name.as_deref(), Some("etl-1"));
            assert_eq!(back.state, state);
            assert_eq!(back.app_id.as_deref(), Some("application_1_0001"));
            let info = back.app_info.expect("app info");
            assert_eq!(info.driver_log_url.as_deref(), Some("http://node:8042/log"));
            assert_eq!(info.spark_ui_url, None);
        }
    }
    use crate::http::canned;

    fn listing_of(names: &[(&str, &str)]) -> Vec<u8> {
        let sessions: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, (n, st))| {
                serde_json::json!({"id": i, "name": n, "state": st, "appId": null,
                "appInfo": {"driverLogUrl": null, "sparkUiUrl": null}, "log": ["stdout: "]})
            })
            .collect();
        let body = serde_json::json!({"from": 0, "total": names.len(), "sessions": sessions});
        canned::response("200 OK", &[], body.to_string().as_bytes())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_listing_answers_the_reads_of_a_tick() {
        let (livy, seen) = canned::serve(listing_of(&[("a", "running"), ("b", "dead")])).await;
        let client = LivyClient::new(livy, &Trust::default(), Auth::none())
            .expect("client")
            .with_listing();
        let reads: Vec<_> = (0..50)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move { c.batch(if i % 2 == 0 { "a" } else { "b" }).await })
            })
            .collect();
        for (i, r) in futures::future::join_all(reads)
            .await
            .into_iter()
            .enumerate()
        {
            let b = r.expect("joined").expect("listed");
            assert_eq!(b.state, if i % 2 == 0 { "running" } else { "dead" });
        }
        let requests = seen.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(
            requests[0].starts_with("GET /batches?from=0&size=500 "),
            "{}",
            requests[0]
        );
        // A batch the listing lacks is read by name (here the canned reply is not a batch).
        assert!(client.batch("c").await.is_err());
        let requests = seen.requests();
        assert_eq!(requests.len(), 2, "the listing was reused: {requests:?}");
        assert!(
            requests[1].starts_with("GET /batches/c "),
            "{}",
            requests[1]
        );
        // The next tick asks again.
        tokio::time::sleep(LIST_REUSE * 2).await;
        client.batch("a").await.expect("listed");
        assert_eq!(seen.count(), 3);
    }

    #[tokio::test]
    async fn without_listing_each_batch_is_read_by_name() {
        let (livy, seen) = canned::serve(canned::response(
            "200 OK",
            &[],
            br#"{"id": 3, "name": "a", "state": "running"}"#,
        ))
        .await;
        let client = LivyClient::new(livy, &Trust::default(), Auth::none()).expect("client");
        assert_eq!(client.batch("a").await.expect("read").id, 3);
        assert!(seen.requests()[0].starts_with("GET /batches/a "));
    }

    #[tokio::test]
    async fn a_redirect_is_an_answer_and_the_post_is_not_resent() {
        let (elsewhere, hits) = canned::serve(canned::response("201 Created", &[], b"{}")).await;
        let location = format!("Location: {elsewhere}batches");
        let (livy, _) = canned::serve(canned::response(
            "307 Temporary Redirect",
            &[&location],
            b"",
        ))
        .await;
        let client = LivyClient::new(livy, &Trust::default(), Auth::none()).expect("client");
        let body = CreateBatch {
            file: "f".into(),
            name: "n".into(),
            ..CreateBatch::default()
        };
        let err = client.create_batch(&body).await.expect_err("not followed");
        assert!(matches!(err, LivyError::Http { status: 307, .. }), "{err}");
        assert_eq!(hits.count(), 0, "nothing was sent to the redirect target");
    }

    #[tokio::test]
    async fn a_reply_over_one_mib_is_refused_unread() {
        let big = vec![b' '; crate::http::MAX_BODY + 1];
        let (livy, _) = canned::serve(canned::response("200 OK", &[], &big)).await;
        let client = LivyClient::new(livy, &Trust::default(), Auth::none()).expect("client");
        let err = client.batch("n").await.expect_err("too large");
        assert!(
            matches!(&err, LivyError::Decode(m) if m.contains("larger than 1048576 bytes")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn error_replies_are_quoted_capped_and_without_credentials() {
        let body = format!(
            r#"{{"msg":"denied for http://alice:s3cret@livy:8998/ with Authorization: Basic YWxpY2U6czNjcmV0 {}"}}"#,
            "x".repeat(5000)
        );
        let (livy, _) =
            canned::serve(canned::response("403 Forbidden", &[], body.as_bytes())).await;
        let client = LivyClient::new(livy, &Trust::default(), Auth::none()).expect("client");
        let LivyError::Http { status, msg } = client.batch("n").await.expect_err("403") else {
            panic!("an HTTP error");
        };
        assert_eq!(status, 403);
        assert!(
            !msg.contains("s3cret") && !msg.contains("YWxpY2U6czNjcmV0"),
            "{msg}"
        );
        assert!(msg.starts_with("denied for http://***@livy:8998/"), "{msg}");
        assert!(
            msg.chars().count() <= crate::http::MAX_QUOTE + 1,
            "{}",
            msg.len()
        );
    }

    #[test]
    fn error_bodies_of_every_shape_become_one_line() {
        assert_eq!(
            error_message(r#"{"msg":"Session '7' not found."}"#),
            "Session '7' not found."
        );
        assert_eq!(
            error_message(r#""Unrecognized field \"ttl\" (class x)""#),
            r#"Unrecognized field "ttl" (class x)"#
        );
        assert_eq!(error_message(""), "(empty body)");
        assert_eq!(
            error_message("<html>\n<body>Missing Required Header</body></html>"),
            "<html> <body>Missing Required Header</body></html>"
        );
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let http = |status, msg: &str| LivyError::Http {
            status,
            msg: msg.into(),
        };
        assert!(LivyError::Connect("refused".into()).is_transient());
        assert!(LivyError::NoAnswer("timed out".into()).is_transient());
        assert!(!LivyError::Connect("refused".into()).may_have_created());
        assert!(LivyError::NoAnswer("reset".into()).may_have_created());
        assert!(http(502, "x").may_have_created());
        assert!(!http(400, "Rejected, too many sessions are being created!").may_have_created());
        assert!(http(503, "x").is_transient());
        assert!(http(400, "Rejected, too many sessions are being created!").is_transient());
        assert!(
            !http(
                400,
                "Rejected, Reason: requirement failed: File is required."
            )
            .is_transient()
        );
        assert!(!http(404, "Session '1' not found.").is_transient());
        assert!(
            http(
                400,
                "Rejected, Reason: Duplicate session name: Some(a) for session 3"
            )
            .is_duplicate_name()
        );
    }

    #[test]
    fn states_map_as_the_reference_says() {
        for (s, terminal) in [
            ("starting", false),
            ("recovering", false),
            ("running", false),
            ("success", true),
            ("dead", true),
            ("killed", true),
            ("error", true),
            ("shutting_down", false),
            ("something-new", false),
        ] {
            let state = BatchState::parse(s);
            assert_eq!(state.is_terminal(), terminal, "{s}");
            assert_eq!(state.as_str(), s);
        }
        assert_eq!(
            BatchState::parse("weird"),
            BatchState::Unknown("weird".into())
        );
    }

    #[test]
    fn create_body_omits_absent_fields() {
        let body = CreateBatch {
            file: "s3://b/app.py".into(),
            name: "job-1a2b".into(),
            num_executors: Some(2),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&body).ok(),
            Some(serde_json::json!({"file":"s3://b/app.py","name":"job-1a2b","numExecutors":2}))
        );
    }

    #[test]
    fn batch_reads_old_and_new_livy_shapes() {
        let old: Batch = serde_json::from_str(r#"{"id":1,"state":"running"}"#).expect("old shape");
        assert_eq!(old.name, None);
        let new: Batch = serde_json::from_str(
            r#"{"id":7,"name":"n","owner":null,"proxyUser":null,"state":"success","appId":"application_1_2",
               "appInfo":{"driverLogUrl":null,"sparkUiUrl":"http://rm/x","executorLogUrls":null},"log":[]}"#,
        )
        .expect("new shape");
        assert_eq!(new.app_id.as_deref(), Some("application_1_2"));
        assert_eq!(
            new.app_info.and_then(|a| a.spark_ui_url).as_deref(),
            Some("http://rm/x")
        );
    }
}
