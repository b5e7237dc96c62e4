//! `make bench`: the worker (release build) with many tasks in flight, against the project's
//! Livy server (`sim:forever` batches, each a simulated YARN application) and Step Functions:
//! LocalStack for rows up to `--localstack-up-to` tasks (2,000) when `AWS_ENDPOINT_URL` names it
//! (`make bench` runs it), and above that a stand-in in this process that speaks the service's
//! JSON protocol to the worker's real SDK client (LocalStack does not carry 10,000 activity tasks
//! on these machines). Every row says which it ran against. It measures, for each row:
//!
//! - the worker's resident memory (now and peak) and CPU seconds per task-minute in a steady
//!   window of 30 s heartbeats and 10 s sync;
//! - Step Functions calls a second against the budget (counted at the stand-in; against
//!   LocalStack, by the worker's `sfn_requests_total`), and Livy calls a second and per sync tick
//!   (at the Livy server);
//! - delivery → `POST /batches` latency (the worker's own histogram, p50 and p99 as bucket bounds);
//! - Livy end → report latency: batches forced to `success` at random moments, until the
//!   stand-in receives their `SendTaskSuccess` (LocalStack: until the time its history gives the
//!   `ActivitySucceeded` event, which is when the call arrived).
//!
//! After the rows, the floor: a process that does nothing but send the largest row's heartbeat
//! rate of plain HTTP/1.1 requests (hyper's client, the one under the worker's, unsigned, each
//! as large as a heartbeat) to the stand-in, and its CPU over the same window. No worker that
//! sends one request per heartbeat can take less on the machine.
//!
//! `cargo bench --bench scale -- 200 2000 10000` (the rows), `--window SECS` (default 60),
//! `--localstack-up-to N`; `BENCH_WORKER=path` runs another build of the worker.
//! The table goes to stdout and target/bench/scale.md.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

const HEARTBEAT: &str = "30s";
const HEARTBEAT_SECS: f64 = 30.0;
const SYNC: &str = "10s";
const SYNC_SECS: f64 = 10.0;
const BUDGET: f64 = 500.0;
const ACTIVITY: &str = "arn:aws:states:us-east-1:000000000000:activity:bench";
/// Step Functions' task tokens are opaque strings of about 700 characters (up to 2,048); the
/// stand-in's are as long, so that the memory a token costs shows.
const TOKEN_LEN: usize = 700;

// ---------------------------------------------------------------------------------------------
// The Step Functions stand-in: GetActivityTask hands out queued tasks (holding a poll up to 20 s
// when there is none), heartbeats are counted, reports are timed.

#[derive(Default)]
struct StandIn {
    queue: Mutex<VecDeque<(String, String)>>,
    arrived: Notify,
    calls: Mutex<HashMap<&'static str, u64>>,
    reports: Mutex<HashMap<String, Instant>>,
}

impl StandIn {
    fn count(&self, api: &'static str) {
        *self.calls.lock().expect("lock").entry(api).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.calls.lock().expect("lock").values().sum()
    }

    fn delivered(&self) -> bool {
        self.queue.lock().expect("lock").is_empty()
    }

    async fn next_task(&self) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let wait = self.arrived.notified();
            if let Some((token, input)) = self.queue.lock().expect("lock").pop_front() {
                return json!({"taskToken": token, "input": input});
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return json!({});
            }
        }
    }
}

/// Task `i`'s token, as long as the service's: about 700 characters.
fn token(i: usize) -> String {
    format!("bench-token-{i:06}-{}", "A".repeat(TOKEN_LEN - 19))
}

async fn answer(
    stand_in: Arc<StandIn>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let token = v["taskToken"].as_str().unwrap_or_default().to_owned();
    let reply = match target.as_str() {
        "GetActivityTask" => {
            stand_in.count("GetActivityTask");
            stand_in.next_task().await
        }
        "SendTaskHeartbeat" => {
            stand_in.count("SendTaskHeartbeat");
            json!({})
        }
        api @ ("SendTaskSuccess" | "SendTaskFailure") => {
            stand_in.count(if api == "SendTaskSuccess" {
                "SendTaskSuccess"
            } else {
                "SendTaskFailure"
            });
            stand_in
                .reports
                .lock()
                .expect("lock")
                .insert(token, Instant::now());
            json!({})
        }
        other => json!({"__type": "UnknownOperationException", "message": other}),
    };
    Ok(Response::builder()
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(reply.to_string())))
        .expect("response"))
}

async fn serve(listener: TcpListener, stand_in: Arc<StandIn>) {
    while let Ok((stream, _)) = listener.accept().await {
        let s = stand_in.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(s.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// LocalStack: one activity and one state machine per row, every execution started before the
// worker, all stopped when the row ends.

struct LocalStack {
    client: aws_sdk_sfn::Client,
    endpoint: String,
    activity: String,
    /// Execution ARNs by task index (`bench-{i}`).
    executions: Vec<String>,
}

impl LocalStack {
    async fn start(endpoint: String, tasks: usize) -> Self {
        let conf = spark_activity_worker::sfn::shared_config().await;
        let client = aws_sdk_sfn::Client::new(&conf);
        let tag = format!("bench-{tasks}-{:08x}", rand::random::<u32>());
        let activity = client
            .create_activity()
            .name(&tag)
            .send()
            .await
            .expect("create activity")
            .activity_arn()
            .to_owned();
        let definition = json!({"StartAt": "Spark", "States": {"Spark": {"Type": "Task",
            "Resource": activity, "HeartbeatSeconds": 120, "TimeoutSeconds": 7200, "End": true}}});
        let machine = client
            .create_state_machine()
            .name(&tag)
            .definition(definition.to_string())
            .role_arn("arn:aws:iam::000000000000:role/stepfunctions")
            .send()
            .await
            .expect("create state machine")
            .state_machine_arn()
            .to_owned();
        let started = Instant::now();
        let executions = parallel(tasks, |i| {
            let (client, machine) = (client.clone(), machine.clone());
            async move {
                let input = json!({"File": "sim:forever?app=1", "Name": format!("bench-{i}")});
                client
                    .start_execution()
                    .state_machine_arn(machine)
                    .name(format!("bench-{i}"))
                    .input(input.to_string())
                    .send()
                    .await
                    .expect("start execution")
                    .execution_arn()
                    .to_owned()
            }
        })
        .await;
        eprintln!(
            "{tasks}: executions started at LocalStack in {:?}",
            started.elapsed()
        );
        LocalStack {
            client,
            endpoint,
            activity,
            executions,
        }
    }

    /// From `forced` until Step Functions took the task's report: the `ActivitySucceeded` (or
    /// `ActivityFailed`) event of execution `i`, which its history stamps when the call arrived.
    async fn report_after(&self, i: usize, forced: SystemTime) -> Duration {
        use aws_sdk_sfn::types::HistoryEventType as Event;
        loop {
            let history = self
                .client
                .get_execution_history()
                .execution_arn(&self.executions[i])
                .reverse_order(true)
                .send()
                .await
                .expect("execution history");
            let reported = history
                .events()
                .iter()
                .find(|e| matches!(e.r#type(), Event::ActivitySucceeded | Event::ActivityFailed));
            if let Some(e) = reported {
                let at = SystemTime::try_from(*e.timestamp()).expect("event time");
                return at.duration_since(forced).unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop_all(&self) {
        parallel(self.executions.len(), |i| {
            let (client, arn) = (self.client.clone(), self.executions[i].clone());
            async move {
                let _ = client.stop_execution().execution_arn(arn).send().await;
            }
        })
        .await;
    }
}

/// `f(0) … f(n-1)`, 16 at a time; the results in order.
async fn parallel<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    use futures::StreamExt;
    futures::stream::iter((0..n).map(|i| tokio::spawn(f(i))))
        .buffered(16)
        .map(|r| r.expect("task"))
        .collect()
        .await
}

/// Where a row's Step Functions calls go.
enum Sfn {
    StandIn(Arc<StandIn>),
    LocalStack(LocalStack),
}

impl Sfn {
    fn label(&self) -> &'static str {
        match self {
            Sfn::StandIn(_) => "stand-in",
            Sfn::LocalStack(_) => "LocalStack",
        }
    }

    /// Step Functions calls so far: at the stand-in, or as the worker counts them.
    fn calls(&self, worker_metrics: &str) -> u64 {
        match self {
            Sfn::StandIn(s) => s.total(),
            Sfn::LocalStack(_) => worker_metrics
                .lines()
                .filter(|l| l.starts_with("spark_activity_worker_sfn_requests_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        }
    }
}

async fn scrape(addr: &str) -> String {
    match reqwest::get(format!("http://{addr}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

struct Livy {
    _child: Child,
    url: String,
    http: reqwest::Client,
}

impl Livy {
    async fn start(dir: &Path) -> Self {
        let bin = root().join("target/release/livy-server");
        assert!(
            bin.exists(),
            "{} missing: make bench builds it",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--max-creating", "100000"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("livy.log")).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("livy-server");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{url}/version")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Livy {
            _child: child,
            url,
            http,
        }
    }

    async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_control/stats", self.url))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// Livy calls so far: creates, listings, reads by name, deletes.
    fn calls(stats: &Value) -> u64 {
        ["posts", "lists", "gets", "deletes"]
            .iter()
            .map(|k| stats[*k].as_u64().unwrap_or(0))
            .sum()
    }
}

/// Forces a batch's state (and its application's) through the Livy server's control API.
async fn force(http: &reqwest::Client, livy_url: &str, id: i64, state: &str) {
    let _ = http
        .post(format!("{livy_url}/_control/batches/{id}/state"))
        .json(&json!({"state": state}))
        .send()
        .await;
}

fn running(stats: &Value) -> Vec<Value> {
    stats["batches"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter(|b| b["state"] == "running" && b["deleted"] == false)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// CPU seconds (user + system) and resident memory now and at peak (KiB) of a process.
fn usage(pid: u32, tick: f64) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: fields 14 and 15 (utime, stime) are 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (ticks / tick, kib("VmRSS:"), kib("VmHWM:"))
}

/// The `q` quantile of a Prometheus histogram, as the upper bound of its bucket (seconds).
fn quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| *le)
}

fn ms(s: Option<f64>) -> String {
    match s {
        Some(s) if s.is_infinite() => "> 10 s".into(),
        Some(s) => format!("≤ {} ms", s * 1000.0),
        None => "—".into(),
    }
}

struct Row {
    tasks: usize,
    sfn: &'static str,
    ramp: Duration,
    rss_mib: f64,
    peak_mib: f64,
    cpu_per_task_minute: f64,
    core_percent: f64,
    sfn_per_sec: f64,
    livy_per_sec: f64,
    livy_per_tick: f64,
    delivery_p50: Option<f64>,
    delivery_p99: Option<f64>,
    end_p50: Duration,
    end_max: Duration,
}

async fn row(tasks: usize, window: Duration, tick: f64, localstack: Option<String>) -> Row {
    let dir = root().join("target/bench").join(format!("run-{tasks}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).expect("bench dir");
    let livy = Livy::start(&dir).await;

    let (sfn, sfn_url, activity, key) = match localstack {
        Some(endpoint) => {
            let ls = LocalStack::start(endpoint, tasks).await;
            let (url, activity) = (ls.endpoint.clone(), ls.activity.clone());
            (Sfn::LocalStack(ls), url, activity, "test")
        }
        None => {
            let stand_in = Arc::new(StandIn::default());
            {
                let mut q = stand_in.queue.lock().expect("lock");
                for i in 0..tasks {
                    let input = json!({"File": "sim:forever?app=1", "Name": format!("bench-{i}")});
                    q.push_back((token(i), input.to_string()));
                }
            }
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            tokio::spawn(serve(listener, stand_in.clone()));
            (Sfn::StandIn(stand_in), url, ACTIVITY.to_owned(), "bench")
        }
    };

    let metrics_addr = format!("127.0.0.1:{}", free_port());
    // BENCH_WORKER: another build of the worker, e.g. one with symbols for a profiler.
    let bin = std::env::var("BENCH_WORKER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_spark-activity-worker").to_owned());
    let worker = Command::new(bin)
        .args(["run", "--activity-arn", &activity, "--livy-url", &livy.url])
        .args(["--yarn-url", &livy.url, "--state-dir"])
        .arg(dir.join("state"))
        .args(["--max-concurrent-tasks", &tasks.to_string()])
        .args(["--pollers-per-activity", "8", "--livy-max-starting", "0"])
        .args(["--heartbeat-interval", HEARTBEAT, "--sync-interval", SYNC])
        .args(["--sfn-calls-per-second", &BUDGET.to_string()])
        .args(["--metrics-listen", &metrics_addr, "--log-level", "warn"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", &sfn_url)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", key)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("worker.log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("worker");
    let pid = worker.id().expect("pid");

    // Ramp: every task delivered and its batch running.
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let delivered = match &sfn {
            Sfn::StandIn(s) => s.delivered(),
            // Every execution's batch running means every task was delivered.
            Sfn::LocalStack(_) => true,
        };
        if delivered && running(&livy.stats().await).len() == tasks {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{tasks} tasks not running after 15 minutes; see {}",
            dir.display()
        );
    }
    let ramp = started.elapsed();
    eprintln!("{tasks}: all running after {ramp:?}; steady window {window:?}");
    // Past the first heartbeats and the phase spreading.
    tokio::time::sleep(Duration::from_secs(35)).await;

    let (cpu0, _, _) = usage(pid, tick);
    let sfn0 = sfn.calls(&scrape(&metrics_addr).await);
    let livy0 = Livy::calls(&livy.stats().await);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, rss, peak) = usage(pid, tick);
    let sfn1 = sfn.calls(&scrape(&metrics_addr).await);
    let stats = livy.stats().await;
    let livy1 = Livy::calls(&stats);
    let cpu = cpu1 - cpu0;

    // Livy end → report: 20 batches forced to success at random moments over a sync interval.
    let batches = running(&stats);
    let sfn = Arc::new(sfn);
    let mut ends = Vec::new();
    for b in batches.iter().take(20) {
        let id = b["id"].as_i64().unwrap_or(0);
        let name = b["name"].as_str().unwrap_or_default().to_owned();
        let i: usize = name
            .trim_start_matches("bench-")
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let offset = Duration::from_millis(rand::random::<u64>() % 10_000);
        let (livy_url, http, sfn) = (livy.url.clone(), livy.http.clone(), sfn.clone());
        ends.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let (forced, forced_at) = (Instant::now(), SystemTime::now());
            force(&http, &livy_url, id, "success").await;
            match &*sfn {
                Sfn::LocalStack(ls) => ls.report_after(i, forced_at).await,
                Sfn::StandIn(s) => {
                    let token = token(i);
                    loop {
                        if let Some(at) = s.reports.lock().expect("lock").get(&token) {
                            return at.duration_since(forced);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for e in ends {
        latencies.push(e.await.expect("end"));
    }
    latencies.sort();
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let hist = "spark_activity_worker_task_delivery_to_submit_seconds";
    drop(worker);
    if let Sfn::LocalStack(ls) = &*sfn {
        ls.stop_all().await;
    }
    let minutes = tasks as f64 * elapsed / 60.0;
    Row {
        tasks,
        sfn: sfn.label(),
        ramp,
        rss_mib: rss as f64 / 1024.0,
        peak_mib: peak as f64 / 1024.0,
        cpu_per_task_minute: cpu / minutes,
        core_percent: 100.0 * cpu / elapsed,
        sfn_per_sec: (sfn1 - sfn0) as f64 / elapsed,
        livy_per_sec: (livy1 - livy0) as f64 / elapsed,
        livy_per_tick: (livy1 - livy0) as f64 / (elapsed / SYNC_SECS),
        delivery_p50: quantile(&metrics, hist, 0.5),
        delivery_p99: quantile(&metrics, hist, 0.99),
        end_p50: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
        end_max: latencies.last().copied().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// The floor.

/// `--floor URL RATE SECS`, the bench run by itself: `RATE` heartbeat-sized requests a second to
/// `URL` for `SECS`, evenly spaced, over kept-alive connections, and nothing else.
async fn floor_client(url: &str, rate: f64, secs: f64) {
    use hyper_util::client::legacy::Client;
    let client: Client<_, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let body = Bytes::from(json!({ "taskToken": token(0) }).to_string());
    let start = tokio::time::Instant::now();
    for i in 0..(rate * secs) as u64 {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let request = Request::post(url)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", "AWSStepFunctions.SendTaskHeartbeat")
            .body(Full::new(body.clone()))
            .expect("request");
        let client = client.clone();
        tokio::spawn(async move {
            if let Ok(r) = client.request(request).await {
                let _ = r.into_body().collect().await;
            }
        });
    }
}

/// The floor's CPU (% of a core) and the requests a second the stand-in counted, over `window`.
async fn floor(rate: f64, window: Duration, tick: f64) -> (f64, f64) {
    let stand_in = Arc::new(StandIn::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener, stand_in.clone()));
    let warm_up = Duration::from_secs(5);
    let secs = (warm_up + window + Duration::from_secs(5)).as_secs_f64();
    let child = Command::new(std::env::current_exe().expect("the bench"))
        .args(["--floor", &url, &rate.to_string(), &secs.to_string()])
        .kill_on_drop(true)
        .spawn()
        .expect("the floor client");
    let pid = child.id().expect("pid");
    tokio::time::sleep(warm_up).await;
    let (cpu0, calls0) = (usage(pid, tick).0, stand_in.total());
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, calls1) = (usage(pid, tick).0, stand_in.total());
    drop(child);
    (
        100.0 * (cpu1 - cpu0) / elapsed,
        (calls1 - calls0) as f64 / elapsed,
    )
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--floor") {
        let a: Vec<String> = std::env::args().skip(2).collect();
        let number = |i: usize| {
            a.get(i)
                .and_then(|v| v.parse().ok())
                .expect("--floor URL RATE SECS")
        };
        return floor_client(&a[0], number(1), number(2)).await;
    }
    let mut rows: Vec<usize> = Vec::new();
    let mut window = Duration::from_secs(60);
    let mut localstack_up_to = 2_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--window" => {
                window =
                    Duration::from_secs(args.next().and_then(|w| w.parse().ok()).unwrap_or(60));
            }
            "--localstack-up-to" => {
                localstack_up_to = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
            "--bench" => {}
            n => {
                if let Ok(n) = n.replace(',', "").parse() {
                    rows.push(n);
                }
            }
        }
    }
    if rows.is_empty() {
        rows = vec![200, 2_000, 10_000];
    }
    let tick: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let mut table = String::from(
        "| tasks in flight | Step Functions | ramp | RSS (peak) | CPU s / task-minute | % of a core | SFN calls/s (budget 500) | Livy calls/s | Livy calls / sync tick | delivery → POST p50 / p99 | Livy end → report p50 / max |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let largest = rows.iter().copied().max().unwrap_or(0);
    for n in rows {
        let localstack = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|_| n <= localstack_up_to);
        let r = row(n, window, tick, localstack).await;
        let line = format!(
            "| {} | {} | {:.0} s | {:.1} MiB ({:.1}) | {:.5} | {:.2} % | {:.1} | {:.2} | {:.1} | {} / {} | {:.2} s / {:.2} s |\n",
            r.tasks,
            r.sfn,
            r.ramp.as_secs_f64(),
            r.rss_mib,
            r.peak_mib,
            r.cpu_per_task_minute,
            r.core_percent,
            r.sfn_per_sec,
            r.livy_per_sec,
            r.livy_per_tick,
            ms(r.delivery_p50),
            ms(r.delivery_p99),
            r.end_p50.as_secs_f64(),
            r.end_max.as_secs_f64(),
        );
        eprint!("{line}");
        table.push_str(&line);
    }
    let rate = largest as f64 / HEARTBEAT_SECS;
    let (core, sent) = floor(rate, window, tick).await;
    let line = format!(
        "\nFloor: a process that only sends {sent:.1} heartbeat-sized HTTP/1.1 requests a second \
         (the {largest} row's heartbeats; hyper, unsigned, kept-alive) to the stand-in: {core:.2} % of a core.\n"
    );
    eprint!("{line}");
    table.push_str(&line);
    let out = root().join("target/bench/scale.md");
    let _ = std::fs::write(&out, &table);
    println!("{table}");
    println!("(also in {})", out.display());
}
