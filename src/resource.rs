//! The `Custom::SparkJob` CloudFormation resource: a Spark application deployed with a stack, by
//! the `spark-job-resource` Lambda function. Create submits the batch and waits until it leaves
//! `starting` (and has run for `START_SETTLE` without dying); Update starts the new batch the
//! same way, then kills the old one (two versions never run together), or keeps the batch when
//! nothing that reaches Livy changed; Delete kills the batch. Every request is answered exactly once, before the invocation's
//! deadline: a batch that cannot start in time is killed and the answer is FAILED.
//!
//! The properties are the nested task input (`LivyHost`, `LivyPort`, `Parameters`), parsed,
//! named and held to the operator's policy by the worker's own code. The physical resource id
//! names the batch — `livy://HOST:PORT/batches/NAME#SPEC` — where `NAME` comes from the stack,
//! the logical id and the request (so CloudFormation's resends of one request find the batch
//! they made), and `SPEC` is a fingerprint of what was sent to Livy (so an Update that changes
//! nothing Livy sees, or a rollback to the running batch's properties, keeps the batch).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};
use url::Url;

use crate::auth::Auth;
use crate::cfn::{Answerer, Request, RequestType, Response, Status};
use crate::config::ResourceArgs;
use crate::failpoint;
use crate::http::{Trust, quote};
use crate::input::{self, InvalidInput};
use crate::livy::{self, BatchState, CreateBatch, Livy, LivyClient, LivyError};
use crate::request::{self, Rules};
use crate::retry::Policy;

/// The resource type this function serves.
pub const RESOURCE_TYPE: &str = "Custom::SparkJob";
/// The longest a Lambda function may run: the deadline when the invocation gives none usable.
const LAMBDA_MAX: Duration = Duration::from_secs(900);
/// Kept at the end of an invocation for the answer's PUT.
const ANSWER_RESERVE: Duration = Duration::from_secs(5);
/// Kept before the answer for killing a batch that did not start.
const KILL_RESERVE: Duration = Duration::from_secs(15);
/// Log lines fetched for a failure's reason (the answer keeps what fits in 4 KiB).
const LOG_TAIL_LINES: u32 = 100;
/// The longest wait between tries while Livy cannot be reached.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The function's settings, checked once at start. A bad setting does not stop the function:
/// every request is answered FAILED with it, rather than left to CloudFormation's one-hour wait.
#[derive(Debug, Clone)]
pub struct Setup(Result<Arc<Resource>, String>);

impl Setup {
    pub fn from_env() -> Self {
        Setup(ResourceArgs::from_env().map(|args| Arc::new(Resource::new(args))))
    }

    pub fn new(args: ResourceArgs) -> Self {
        Setup(Ok(Arc::new(Resource::new(args))))
    }

    /// The configuration error, if any.
    pub fn error(&self) -> Option<&str> {
        self.0.as_ref().err().map(String::as_str)
    }
}

/// Handles one invocation: answers the request on its `ResponseURL`, then returns what the
/// function returns. `Err` only when the payload has no `ResponseURL` to answer on.
/// `deadline_ms` is the invocation's deadline in milliseconds since the epoch.
pub async fn invoked(
    setup: &Setup,
    answerer: &Answerer,
    payload: Value,
    deadline_ms: u64,
) -> Result<Value, String> {
    let clock = Clock::from_deadline_ms(deadline_ms);
    let request = match Request::parse(payload) {
        Ok(r) => r,
        Err(malformed) => {
            let Some((url, response)) = malformed.answer() else {
                return Err(malformed.reason);
            };
            warn!(reason = %malformed.reason, "malformed request");
            let sent = answerer.send(&url, &response, clock.deadline).await;
            return Ok(summary(&response, sent.is_ok()));
        }
    };
    let span = info_span!("request", kind = ?request.request_type,
        stack = %request.stack_name(), resource = %request.logical_resource_id,
        request_id = %request.request_id);
    async {
        info!(
            physical_id = request.physical_resource_id.as_deref().unwrap_or(""),
            "request received"
        );
        let response = match &setup.0 {
            Err(msg) => request
                .answer(Status::Failed, fallback_id(&request))
                .reason(format!("spark-job-resource is misconfigured: {msg}")),
            Ok(resource) => {
                // A panic still gets an answer: the work runs in its own task.
                let (resource, req) = (resource.clone(), request.clone());
                let work = async move { resource.handle(&req, clock).await };
                match tokio::spawn(work.in_current_span()).await {
                    Ok(r) => r,
                    Err(e) => request
                        .answer(Status::Failed, fallback_id(&request))
                        .reason(format!(
                            "spark-job-resource failed unexpectedly ({e}); see its log"
                        )),
                }
            }
        };
        info!(status = ?response.status, physical_id = %response.physical_resource_id,
              reason = %response.reason.lines().next().unwrap_or(""), "answering");
        let sent = answerer
            .send(&request.response_url, &response, clock.deadline)
            .await;
        Ok(summary(&response, sent.is_ok()))
    }
    .instrument(span)
    .await
}

fn summary(response: &Response, delivered: bool) -> Value {
    json!({"Status": response.status, "PhysicalResourceId": response.physical_resource_id,
           "Delivered": delivered})
}

/// The physical id of a request this function could not make sense of.
fn fallback_id(request: &Request) -> String {
    request
        .physical_resource_id
        .clone()
        .unwrap_or_else(|| not_created_id(request, &key_of(request)))
}

/// When an invocation must have answered, and what may be spent before.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The invocation's deadline (the function's own timeout).
    pub deadline: Instant,
    /// The answer is sent by then.
    pub answer_by: Instant,
}

impl Clock {
    /// From the Runtime API's deadline. One already past, or beyond Lambda's 15-minute
    /// maximum, is not a real invocation's (a local emulator's): Lambda's maximum is used.
    pub fn from_deadline_ms(deadline_ms: u64) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        let left = if left.is_zero() || left > LAMBDA_MAX {
            warn!(
                deadline_ms,
                "the invocation's deadline is not a real one; assuming Lambda's 15-minute maximum"
            );
            LAMBDA_MAX
        } else {
            left
        };
        Self::within(left)
    }

    /// `left` from now.
    pub fn within(left: Duration) -> Self {
        let now = Instant::now();
        let reserve = ANSWER_RESERVE.min(left / 4);
        Clock {
            deadline: now + left,
            answer_by: now + left - reserve,
        }
    }

    /// The end of a wait for a batch to start: the start timeout, or what the deadline leaves
    /// once a kill has had its time.
    fn start_by(&self, start_timeout: Duration) -> Instant {
        let now = Instant::now();
        let room = self.answer_by.saturating_duration_since(now);
        (now + start_timeout).min(now + room.saturating_sub(KILL_RESERVE.min(room / 3)))
    }
}

/// The resource's logic, over the function's settings.
#[derive(Debug)]
pub struct Resource {
    args: ResourceArgs,
    rules: Rules,
    http: Result<LivyClient, String>,
}

/// What a physical id names: a batch, by name, at a Livy endpoint, and what it was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub host: String,
    pub port: u16,
    pub name: String,
    /// Fingerprint of the endpoint and the request that started the batch.
    pub spec: String,
}

const ID_SCHEME: &str = "livy://";

impl Deployed {
    pub fn physical_id(&self) -> String {
        format!(
            "{ID_SCHEME}{}:{}/batches/{}#{}",
            self.host, self.port, self.name, self.spec
        )
    }

    /// The batch a physical id names; `None` for an id this function did not make for a batch
    /// (a Create that failed before anything reached Livy).
    pub fn parse(id: &str) -> Option<Self> {
        let rest = id.strip_prefix(ID_SCHEME)?;
        let (endpoint, rest) = rest.split_once("/batches/")?;
        let (name, spec) = rest.rsplit_once('#')?;
        let (host, port) = endpoint.rsplit_once(':')?;
        let port = port.parse().ok().filter(|p| *p > 0)?;
        if host.is_empty() || name.is_empty() || spec.is_empty() {
            return None;
        }
        Some(Deployed {
            host: host.to_owned(),
            port,
            name: name.to_owned(),
            spec: spec.to_owned(),
        })
    }
}

/// Properties made ready: where, what, and under which name.
#[derive(Debug, Clone)]
struct Planned {
    deployed: Deployed,
    request: CreateBatch,
}

/// Why a batch did not come to run.
#[derive(Debug)]
enum NotStarted {
    /// Livy refused the request (4xx): nothing was created.
    Rejected(String),
    /// Livy could not be reached, and nothing was created.
    Unreachable(String),
    /// The application ended before it ran, or failed at start.
    Died {
        id: i64,
        state: String,
        log: Vec<String>,
    },
    /// Livy no longer has the batch.
    Forgotten(i64),
    /// Time ran out with the batch in `state` (or not known to exist).
    TimedOut {
        state: Option<String>,
        cause: Option<String>,
    },
}

impl NotStarted {
    /// Whether a batch of this attempt may exist (and so is killed, and named by the answer).
    fn may_exist(&self) -> bool {
        !matches!(self, NotStarted::Rejected(_) | NotStarted::Unreachable(_))
    }

    fn reason(&self, start_timeout: Duration) -> String {
        match self {
            NotStarted::Rejected(msg) => format!("Livy refused the batch: {msg}"),
            NotStarted::Unreachable(msg) => {
                format!("Livy could not be reached, so no batch was created: {msg}")
            }
            NotStarted::Died { id, state, log } => {
                let mut s = format!("the Spark application failed at start: batch {id} is {state}");
                if !log.is_empty() {
                    s.push_str("; the end of its log:\n");
                    s.push_str(&log.join("\n"));
                }
                s
            }
            NotStarted::Forgotten(id) => {
                format!("Livy forgot batch {id} before it ran (a Livy restart?)")
            }
            NotStarted::TimedOut { state, cause } => {
                let mut s = match state {
                    Some(st) => format!(
                        "the batch did not start in time (still {st} after {}; START_TIMEOUT or the function's timeout)",
                        humantime::format_duration(start_timeout)
                    ),
                    None => "no answer from Livy in time to know whether the batch was created"
                        .to_owned(),
                };
                if let Some(c) = cause {
                    s.push_str(&format!(": {c}"));
                }
                s
            }
        }
    }
}

impl Resource {
    pub fn new(args: ResourceArgs) -> Self {
        let rules = Rules {
            default_file: args.policy.default_file.clone(),
            allowed_endpoints: Vec::new(),
            policy: args.policy.policy(),
        };
        let base = Url::parse("http://localhost:8998").expect("a constant URL");
        let http =
            LivyClient::new(base, &Trust::default(), Auth::none()).map_err(|e| e.to_string());
        Resource { args, rules, http }
    }

    /// The answer to one request (not yet sent).
    pub async fn handle(&self, req: &Request, clock: Clock) -> Response {
        failpoint::hit("resource-panic");
        if !req.resource_type.is_empty()
            && req.resource_type != RESOURCE_TYPE
            && !req.resource_type.starts_with("Custom::")
        {
            warn!(resource_type = %req.resource_type, "unexpected resource type");
        }
        match req.request_type {
            RequestType::Create => self.create(req, clock).await,
            RequestType::Update => self.update(req, clock).await,
            RequestType::Delete => self.delete(req, clock).await,
        }
    }

    fn livy(&self, host: &str, port: u16) -> Result<Arc<dyn Livy>, String> {
        let client = self.http.as_ref().map_err(Clone::clone)?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let url = Url::parse(&format!("{}://{host}:{port}", self.args.livy_scheme))
            .map_err(|e| format!("{host}:{port} does not form a URL: {e}"))?;
        Ok(client.at(url))
    }

    fn check_host(&self, host: &str) -> Result<(), String> {
        if self.args.host_allowed(host) {
            return Ok(());
        }
        let list: Vec<String> = self
            .args
            .allowed_livy_hosts
            .iter()
            .map(ToString::to_string)
            .collect();
        Err(format!(
            "LivyHost {host} is not allowed (ALLOWED_LIVY_HOSTS: {})",
            list.join(", ")
        ))
    }

    /// Properties → the named request, or the reason they cannot be used.
    fn plan(&self, properties: &Map<String, Value>, key: &str) -> Result<Planned, String> {
        let mut props = properties.clone();
        props.remove("ServiceToken");
        let parsed = input::parse(&Value::Object(props).to_string()).map_err(invalid)?;
        let Some((host, port)) = parsed.livy.clone() else {
            return Err("invalid properties: LivyHost is required".into());
        };
        self.check_host(&host)?;
        let refused = |r: request::Refused| {
            let f = r.failure();
            ResourceArgs::variables(&format!("{}: {}", f.error, f.cause))
        };
        let request = request::request_for(&self.rules, &parsed.job, key).map_err(refused)?;
        let spec = fingerprint(
            &host,
            port,
            &request::request_for(&self.rules, &parsed.job, "spec").map_err(refused)?,
        );
        Ok(Planned {
            deployed: Deployed {
                host,
                port,
                name: request.name.clone(),
                spec,
            },
            request,
        })
    }

    async fn create(&self, req: &Request, clock: Clock) -> Response {
        let key = key_of(req);
        let planned = match self.plan(&req.resource_properties, &key) {
            Ok(p) => p,
            Err(reason) => {
                return req
                    .answer(Status::Failed, not_created_id(req, &key))
                    .reason(reason);
            }
        };
        match self.start(&planned, clock).await {
            Ok(batch) => success(req, &planned.deployed, &batch, ""),
            Err(not) => {
                let reason = not.reason(self.args.start_timeout);
                if !not.may_exist() {
                    return req
                        .answer(Status::Failed, not_created_id(req, &key))
                        .reason(reason);
                }
                let killed = self.kill(&planned.deployed, clock.answer_by).await;
                req.answer(Status::Failed, planned.deployed.physical_id())
                    .reason(format!("{reason}\n{}", killed.unwrap_or_else(|e| e)))
            }
        }
    }

    async fn update(&self, req: &Request, clock: Clock) -> Response {
        let old_id = req.physical_resource_id.clone().unwrap_or_default();
        let old = Deployed::parse(&old_id);
        let key = key_of(req);
        let planned = match self.plan(&req.resource_properties, &key) {
            Ok(p) => p,
            Err(reason) => {
                return req
                    .answer(Status::Failed, old_id)
                    .reason(format!("{reason} (the running batch is unchanged)"));
            }
        };
        if let Some(old) = &old
            && old.spec == planned.deployed.spec
            && old.host == planned.deployed.host
            && old.port == planned.deployed.port
        {
            // Nothing Livy sees changed (or this is a rollback to the running batch's
            // properties): the batch stays.
            return self.keep(req, old, clock).await;
        }
        // The old batch must be one this function may kill, or two versions would run.
        if let Some(old) = &old
            && let Err(e) = self.check_host(&old.host)
        {
            return req.answer(Status::Failed, old_id).reason(format!(
                "the running batch cannot be replaced: {e}; nothing was started"
            ));
        }
        match self.start(&planned, clock).await {
            Ok(batch) => {
                let replaced = match &old {
                    None => "no earlier batch".to_owned(),
                    Some(old) => self
                        .kill(old, clock.answer_by)
                        .await
                        .unwrap_or_else(|e| format!("the earlier batch: {e}")),
                };
                info!(replaced = %replaced, "updated");
                success(req, &planned.deployed, &batch, &format!("; {replaced}"))
            }
            Err(not) => {
                let mut reason = not.reason(self.args.start_timeout);
                if not.may_exist() {
                    let killed = self.kill(&planned.deployed, clock.answer_by).await;
                    reason.push_str(&format!("\n{}", killed.unwrap_or_else(|e| e)));
                }
                reason.push_str("\nthe earlier batch was left running");
                req.answer(Status::Failed, old_id).reason(reason)
            }
        }
    }

    /// An Update that changes nothing Livy sees: the same physical id, attributes read afresh.
    async fn keep(&self, req: &Request, old: &Deployed, clock: Clock) -> Response {
        let id = old.physical_id();
        let answer = |data: Option<&livy::Batch>, note: &str| {
            let (batch_id, app_id) = data.map_or((String::new(), String::new()), |b| {
                (b.id.to_string(), b.app_id.clone().unwrap_or_default())
            });
            req.answer(Status::Success, id.clone())
                .data("BatchId", batch_id)
                .data("ApplicationId", app_id)
                .reason(format!(
                    "no change reaches Livy; batch {} kept{note}",
                    old.name
                ))
        };
        if let Err(e) = self.check_host(&old.host) {
            return req.answer(Status::Failed, id.clone()).reason(e);
        }
        let livy = match self.livy(&old.host, old.port) {
            Ok(l) => l,
            Err(e) => return answer(None, &format!(" ({e})")),
        };
        match within(clock.answer_by, livy.batch(&old.name)).await {
            Ok(b) => answer(Some(&b), &format!(" ({})", b.state)),
            Err(e) => answer(None, &format!(" (its state is not known: {e})")),
        }
    }

    async fn delete(&self, req: &Request, clock: Clock) -> Response {
        let id = req.physical_resource_id.clone().unwrap_or_default();
        let Some(deployed) = Deployed::parse(&id) else {
            return req
                .answer(Status::Success, id)
                .reason("no batch was created for this resource");
        };
        if let Err(e) = self.check_host(&deployed.host) {
            return req.answer(Status::Failed, id).reason(e);
        }
        match self.kill(&deployed, clock.answer_by).await {
            Ok(done) => req.answer(Status::Success, id).reason(done),
            Err(e) => req.answer(Status::Failed, id).reason(format!(
                "{e}; if the cluster is gone, delete the stack again retaining this resource"
            )),
        }
    }

    /// Submits the batch (or finds the one an earlier delivery of this request submitted) and
    /// waits until it leaves `starting` and has run for `START_SETTLE`.
    async fn start(&self, planned: &Planned, clock: Clock) -> Result<livy::Batch, NotStarted> {
        let until = clock.start_by(self.args.start_timeout);
        let d = &planned.deployed;
        let livy = self.livy(&d.host, d.port).map_err(NotStarted::Rejected)?;
        let mut batch = self.submit(livy.as_ref(), &planned.request, until).await?;
        info!(batch_id = batch.id, batch = %d.name, state = %batch.state, "batch submitted");
        let mut cause = None;
        let mut running_since: Option<Instant> = None;
        loop {
            match BatchState::parse(&batch.state) {
                BatchState::Success => return Ok(batch),
                BatchState::Running => {
                    let since = *running_since.get_or_insert_with(Instant::now);
                    // Ran long enough, or out of time to watch it: it started.
                    if since.elapsed() >= self.args.start_settle
                        || Instant::now() + self.args.poll_interval >= until
                    {
                        return Ok(batch);
                    }
                }
                BatchState::Dead | BatchState::Error | BatchState::Killed => {
                    let log = within(clock.answer_by, livy.log_tail(&d.name, LOG_TAIL_LINES))
                        .await
                        .map(|lines| lines.iter().map(|l| quote(l)).collect())
                        .unwrap_or_default();
                    return Err(NotStarted::Died {
                        id: batch.id,
                        state: batch.state,
                        log,
                    });
                }
                _ => {}
            }
            if Instant::now() + self.args.poll_interval >= until {
                return Err(NotStarted::TimedOut {
                    state: Some(batch.state),
                    cause,
                });
            }
            tokio::time::sleep(self.args.poll_interval).await;
            match within(until, livy.batch(&d.name)).await {
                Ok(b) => batch = b,
                Err(e) if e.is_not_found() => return Err(NotStarted::Forgotten(batch.id)),
                Err(e) => {
                    warn!(error = %e, "cannot read the batch state; trying again");
                    cause = Some(e.to_string());
                }
            }
        }
    }

    /// `POST /batches`, retried while Livy is unavailable. A POST that may have landed is
    /// looked up by name before it is sent again; a name Livy already holds is this request's
    /// batch (an earlier delivery made it), so it is adopted.
    async fn submit(
        &self,
        livy: &dyn Livy,
        body: &CreateBatch,
        until: Instant,
    ) -> Result<livy::Batch, NotStarted> {
        let mut delay = Duration::from_millis(500);
        let mut maybe_created = false;
        loop {
            let error = match within(until, livy.create_batch(body)).await {
                Ok(b) => return Ok(b),
                Err(e) if e.is_duplicate_name() => {
                    info!(batch = %body.name, "the batch exists already (a resent request); adopting it");
                    match within(until, livy.batch(&body.name)).await {
                        Ok(b) => return Ok(b),
                        Err(e) => {
                            maybe_created = true;
                            e
                        }
                    }
                }
                Err(e) if e.may_have_created() => {
                    maybe_created = true;
                    match within(until, livy.batch(&body.name)).await {
                        Ok(b) => return Ok(b),
                        Err(e2) if e2.is_not_found() => e,
                        Err(e2) => e2,
                    }
                }
                Err(e) if !e.is_transient() => return Err(NotStarted::Rejected(e.to_string())),
                Err(e) => e,
            };
            if Instant::now() + delay >= until {
                return Err(if maybe_created {
                    NotStarted::TimedOut {
                        state: None,
                        cause: Some(error.to_string()),
                    }
                } else {
                    NotStarted::Unreachable(error.to_string())
                });
            }
            warn!(error = %error, retry_in = ?delay, "livy unavailable; trying again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Kills the batch (Livy forgets it); done when Livy confirms or no longer has it.
    async fn kill(&self, d: &Deployed, until: Instant) -> Result<String, String> {
        let livy = self.livy(&d.host, d.port)?;
        let killed = Policy::backoff(Duration::from_millis(500), RETRY_MAX)
            .within(until.saturating_duration_since(Instant::now()))
            .run(
                || within(until, livy.delete_batch(&d.name)),
                LivyError::is_transient,
                |e, delay| warn!(error = %e, retry_in = ?delay, "kill failed; trying again"),
            )
            .await;
        match killed {
            Ok(()) => Ok(format!("batch {} killed", d.name)),
            Err(e) if e.is_not_found() => Ok(format!(
                "batch {} is no longer held by Livy (finished or forgotten)",
                d.name
            )),
            Err(e) if e.is_transient() => {
                Err(format!("batch {} could not be killed in time: {e}", d.name))
            }
            Err(e) => Err(format!("batch {} could not be killed: {e}", d.name)),
        }
    }
}

/// `note` follows the batch's state in the reason: `; batch … killed`.
fn success(req: &Request, d: &Deployed, batch: &livy::Batch, note: &str) -> Response {
    req.answer(Status::Success, d.physical_id())
        .data("BatchId", batch.id.to_string())
        .data("ApplicationId", batch.app_id.clone().unwrap_or_default())
        .reason(format!(
            "batch {} ({}) is {}{note}",
            batch.id, d.name, batch.state
        ))
}

/// A Livy call cut short at `until`.
async fn within<T>(
    until: Instant,
    call: impl Future<Output = Result<T, LivyError>>,
) -> Result<T, LivyError> {
    match tokio::time::timeout_at(until, call).await {
        Ok(r) => r,
        Err(_) => Err(LivyError::NoAnswer("no answer before the deadline".into())),
    }
}

fn invalid(e: InvalidInput) -> String {
    format!("invalid properties: {e}")
}

/// This request's key: one per stack, logical id and request, so a resend of the request finds
/// the batch it made, and every other request makes its own.
fn key_of(req: &Request) -> String {
    let mut h = Sha256::new();
    for part in [&req.stack_id, &req.logical_resource_id, &req.request_id] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex12(&h.finalize())
}

/// The physical id of a Create that created nothing.
fn not_created_id(req: &Request, key: &str) -> String {
    format!("{}-{key}-not-created", req.logical_resource_id)
}

/// What the batch was started with, as Livy sees it: endpoint and request (named and tagged
/// with a fixed key, so only the properties count).
fn fingerprint(host: &str, port: u16, request: &CreateBatch) -> String {
    let mut h = Sha256::new();
    h.update(format!("{host}:{port}\n").as_bytes());
    h.update(serde_json::to_vec(request).unwrap_or_default());
    hex12(&h.finalize())
}

fn hex12(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resource(extra: &[&str]) -> Resource {
        let mut argv = vec![
            "spark-job-resource",
            "--allowed-livy-hosts",
            "*.compute.internal,livy.example",
            "--default-file",
            "local:///usr/lib/spark/examples/jars/spark-examples.jar",
        ];
        argv.extend_from_slice(extra);
        Resource::new(ResourceArgs::try_parse_from(argv).expect("valid args"))
    }

    fn props(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    /// The original project's snippet, as CloudFormation delivers it: every scalar a string.
    fn spark_pi() -> Map<String, Value> {
        props(json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:spark-job-submitter",
            "LivyHost": "ip-10-0-0-1.eu-west-1.compute.internal",
            "LivyPort": "8998",
            "Parameters": {"Name": "Spark Pi", "ClassName": "org.apache.spark.examples.SparkPi",
                "NumExecutors": "1", "DriverMemory": "512m", "ExecutorMemory": "512m",
                "ExecutorCores": "1", "Args": ["10"]}
        }))
    }

    #[test]
    fn the_original_snippet_plans_a_batch_with_cloudformations_strings() {
        let p = resource(&[])
            .plan(&spark_pi(), "3f2a9c1b7d0e")
            .expect("valid");
        assert_eq!(p.deployed.host, "ip-10-0-0-1.eu-west-1.compute.internal");
        assert_eq!(p.deployed.port, 8998);
        assert_eq!(p.deployed.name, "Spark Pi-3f2a9c1b7d0e");
        assert_eq!(p.request.num_executors, Some(1));
        assert_eq!(p.request.executor_cores, Some(1));
        assert_eq!(p.request.args, vec!["10"]);
        assert_eq!(
            p.request.file,
            "local:///usr/lib/spark/examples/jars/spark-examples.jar"
        );
        let id = p.deployed.physical_id();
        assert_eq!(Deployed::parse(&id), Some(p.deployed.clone()), "{id}");
    }

    #[test]
    fn the_fingerprint_ignores_what_livy_never_sees() {
        let r = resource(&[]);
        let a = r.plan(&spark_pi(), "k1").expect("valid").deployed;
        let mut same = spark_pi();
        same["LivyPort"] = json!(8998);
        same["Parameters"]["NumExecutors"] = json!(1);
        same["Parameters"]["Args"] = json!([10]);
        same["ServiceToken"] = json!("arn:aws:lambda:us-east-1:123456789012:function:other");
        let b = r.plan(&same, "k2").expect("valid").deployed;
        assert_eq!(a.spec, b.spec);
        assert_ne!(a.name, b.name, "every request names its own batch");
        let mut other = spark_pi();
        other["Parameters"]["Args"] = json!(["20"]);
        assert_ne!(r.plan(&other, "k1").expect("valid").deployed.spec, a.spec);
        let mut moved = spark_pi();
        moved["LivyPort"] = json!("8999");
        assert_ne!(r.plan(&moved, "k1").expect("valid").deployed.spec, a.spec);
    }

    #[test]
    fn a_host_outside_the_allowed_list_is_named() {
        let r = resource(&[]);
        for host in [
            "evil.example",
            "compute.internal",
            "x.compute.internal.evil",
        ] {
            let mut p = spark_pi();
            p["LivyHost"] = json!(host);
            let e = r.plan(&p, "k").expect_err("refused");
            assert!(e.contains(host) && e.contains("ALLOWED_LIVY_HOSTS"), "{e}");
        }
        let mut p = spark_pi();
        p["LivyHost"] = json!("LIVY.example");
        assert!(r.plan(&p, "k").is_ok(), "host names are case-insensitive");
    }

    #[test]
    fn invalid_or_forbidden_properties_say_what_to_fix() {
        let r = resource(&["--max-executors", "2"]);
        let mut p = spark_pi();
        p["Parameters"]["NumExecutors"] = json!("two");
        let e = r.plan(&p, "k").expect_err("invalid");
        assert!(e.contains("Parameters.NumExecutors"), "{e}");
        let mut p = spark_pi();
        p["Parameters"]["NumExecutors"] = json!("5");
        let e = r.plan(&p, "k").expect_err("forbidden");
        assert!(
            e.starts_with("SparkJob.Forbidden")
                && e.contains("SPARK_ACTIVITY_WORKER_MAX_EXECUTORS"),
            "{e}"
        );
        let mut p = spark_pi();
        p.remove("LivyHost");
        p.remove("LivyPort");
        assert!(
            r.plan(&p, "k")
                .expect_err("no host")
                .contains("LivyHost is required")
        );
    }

    #[test]
    fn ids_that_name_no_batch_are_not_parsed() {
        for id in [
            "SparkPi-3f2a9c1b7d0e-not-created",
            "application_1700000000000_0001#42",
            "livy://h:0/batches/n#s",
            "livy://h:8998/batches/#s",
            "livy://h:8998/n#s",
            "",
        ] {
            assert_eq!(Deployed::parse(id), None, "{id}");
        }
    }

    #[test]
    fn the_clock_keeps_room_for_the_kill_and_the_answer() {
        let c = Clock::within(Duration::from_secs(60));
        let start_by = c.start_by(Duration::from_secs(600));
        let now = Instant::now();
        assert!(c.answer_by <= c.deadline - Duration::from_secs(5));
        assert!(start_by <= c.answer_by - Duration::from_secs(15));
        assert!(start_by > now + Duration::from_secs(30));
        // The start timeout, when it is shorter, decides.
        assert!(c.start_by(Duration::from_secs(10)) <= now + Duration::from_secs(11));
        // A deadline in the past (an emulator's) is not believed.
        let c = Clock::from_deadline_ms(600_000);
        assert!(c.deadline > Instant::now() + Duration::from_secs(800));
    }
}
