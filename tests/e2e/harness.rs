//! The rig: real LocalStack Step Functions (started by tests/rig/with-localstack.sh), the
//! project's Livy-compatible server and the worker binary, each a real process.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use rand::Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

pub fn suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:012x}")
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory for one test, removed by nobody: it lives under target/ for post-mortems.
pub fn scratch(name: &str) -> PathBuf {
    let dir = root()
        .join("target")
        .join("e2e")
        .join(format!("{name}-{}", suffix()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

pub fn pyspark_bin() -> PathBuf {
    root().join(".cache/pyspark/bin")
}

/// Spark's own `pi.py`, shipped in the pyspark package.
pub fn pi_py() -> String {
    let lib = root().join(".cache/pyspark/lib");
    let python = std::fs::read_dir(&lib)
        .expect("pyspark is installed (tests/rig/install.sh)")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .expect("a python3.x dir");
    let pi = python
        .path()
        .join("site-packages/pyspark/examples/src/main/python/pi.py");
    assert!(pi.exists(), "{} missing", pi.display());
    format!("file://{}", pi.display())
}

/// One HTTP/1.1 request, as the tests' own small servers read it.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header of this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The next request of a keep-alive connection: head, then a `Content-Length` body. `None` when
/// the client closed the connection.
pub async fn read_request<R: AsyncBufRead + Unpin>(reader: &mut R) -> Option<HttpRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await.unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut request = HttpRequest {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let length = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    request.body = vec![0; length];
    reader.read_exact(&mut request.body).await.ok()?;
    Some(request)
}

// ---------------------------------------------------------------------------------------------
// Step Functions (LocalStack)

pub struct Sfn {
    pub client: aws_sdk_sfn::Client,
}

#[derive(Debug)]
pub struct Outcome {
    pub status: ExecutionStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

impl Sfn {
    pub async fn new() -> Self {
        assert!(
            std::env::var("AWS_ENDPOINT_URL").is_ok(),
            "no LocalStack: run the e2e tests through `make test` (tests/rig/with-localstack.sh)"
        );
        let conf = spark_activity_worker::sfn::shared_config().await;
        Sfn {
            client: aws_sdk_sfn::Client::new(&conf),
        }
    }

    pub async fn activity(&self, name: &str) -> String {
        let out = self
            .client
            .create_activity()
            .name(format!("{name}-{}", suffix()))
            .send()
            .await
            .expect("create activity");
        out.activity_arn().to_owned()
    }

    pub async fn state_machine(&self, definition: &Value) -> String {
        let out = self
            .client
            .create_state_machine()
            .name(format!("sm-{}", suffix()))
            .definition(definition.to_string())
            .role_arn("arn:aws:iam::000000000000:role/stepfunctions")
            .send()
            .await
            .expect("create state machine");
        out.state_machine_arn().to_owned()
    }

    /// A one-state machine: the activity Task receives the execution input as it is.
    pub async fn one_task_machine(&self, activity: &str, heartbeat: u32, timeout: u32) -> String {
        self.state_machine(&json!({
            "StartAt": "Spark",
            "States": {"Spark": {"Type": "Task", "Resource": activity,
                "HeartbeatSeconds": heartbeat, "TimeoutSeconds": timeout, "End": true}}
        }))
        .await
    }

    /// A one-state machine for tests whose first step needs the task to reach a worker: LocalStack
    /// can hand a task to a long poll whose connection just broke (the SDK then retries the poll
    /// and never sees it). Such an attempt reached no worker, so one retry of its heartbeat
    /// timeout (LocalStack names it `States.Timeout`) runs nothing twice.
    pub async fn one_task_machine_retrying_lost_deliveries(
        &self,
        activity: &str,
        heartbeat: u32,
        timeout: u32,
    ) -> String {
        self.state_machine(&json!({
            "StartAt": "Spark",
            "States": {"Spark": {"Type": "Task", "Resource": activity,
                "HeartbeatSeconds": heartbeat, "TimeoutSeconds": timeout,
                "Retry": [{"ErrorEquals": ["States.HeartbeatTimeout", "States.Timeout"],
                           "IntervalSeconds": 1, "MaxAttempts": 1}],
                "End": true}}
        }))
        .await
    }

    pub async fn start(&self, state_machine: &str, input: &Value) -> String {
        let out = self
            .client
            .start_execution()
            .state_machine_arn(state_machine)
            .name(format!("ex-{}", suffix()))
            .input(input.to_string())
            .send()
            .await
            .expect("start execution");
        out.execution_arn().to_owned()
    }

    pub async fn describe(&self, execution: &str) -> Outcome {
        let d = self
            .client
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .expect("describe execution");
        Outcome {
            status: d.status().clone(),
            output: d
                .output()
                .map(|o| serde_json::from_str(o).expect("output is JSON")),
            error: d.error().map(str::to_owned),
            cause: d.cause().map(|c| {
                // LocalStack fails this way when no worker started the task within the
                // state's TimeoutSeconds (AWS: States.Timeout); say so in any assertion message.
                if c.contains("'ActivityTaskStartEndpoint' object has no attribute '_outcome'") {
                    format!("{c} [LocalStack: no worker started the task within TimeoutSeconds]")
                } else {
                    c.to_owned()
                }
            }),
        }
    }

    /// Waits until the execution is no longer RUNNING.
    pub async fn finish(&self, execution: &str, within: Duration) -> Outcome {
        let deadline = Instant::now() + within;
        loop {
            let o = self.describe(execution).await;
            if o.status != ExecutionStatus::Running {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "execution still RUNNING after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// How many events of `kind` the execution's history holds.
    pub async fn count_events(
        &self,
        execution: &str,
        kind: aws_sdk_sfn::types::HistoryEventType,
    ) -> usize {
        let history = self
            .client
            .get_execution_history()
            .execution_arn(execution)
            .max_results(1000)
            .send()
            .await
            .expect("execution history");
        history
            .events()
            .iter()
            .filter(|e| e.r#type() == &kind)
            .count()
    }

    pub async fn stop(&self, execution: &str) {
        let _ = self
            .client
            .stop_execution()
            .execution_arn(execution)
            .send()
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// The Livy-compatible server

pub struct Livy {
    child: Child,
    pub port: u16,
    pub url: String,
    http: reqwest::Client,
    args: Vec<String>,
    dir: PathBuf,
}

fn livy_server_bin() -> PathBuf {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_spark-activity-worker"));
    let bin = worker.with_file_name("livy-server");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p livy-server` (make test does)",
        bin.display()
    );
    bin
}

impl Livy {
    /// Starts the server on a free port with fast retention and extra `args`.
    pub async fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_on(dir, 0, args.iter().map(|s| (*s).to_owned()).collect()).await
    }

    async fn start_on(dir: &Path, port: u16, args: Vec<String>) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("livy.log"))
            .expect("livy log");
        let mut child = Command::new(livy_server_bin())
            .arg("--port")
            .arg(port.to_string())
            .arg("--spark-submit")
            .arg(pyspark_bin().join("spark-submit"))
            .args(&args)
            .env("PYSPARK_PYTHON", pyspark_bin().join("python"))
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn livy-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("livy-server did not start within 20 s")
            .expect("read livy-server stdout")
            .expect("livy-server exited before listening");
        let addr = line.strip_prefix("listening on ").expect("listening line");
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // With --tls-ca-out the server speaks HTTPS with a certificate from the CA it wrote there;
        // a Kerberos server is reached by name, as SPNEGO needs (HTTP/localhost).
        let ca = flag_value(&args, "--tls-ca-out").map(PathBuf::from);
        let scheme = if ca.is_some() { "https" } else { "http" };
        let host = if args.iter().any(|a| a == "--kerberos-principal") {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let mut http = reqwest::Client::builder();
        if let Some(ca) = &ca {
            let pem = std::fs::read(ca).expect("the server wrote its CA");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
        }
        Livy {
            child,
            port,
            url: format!("{scheme}://{host}:{port}"),
            http: http.build().expect("client"),
            args,
            dir: dir.to_owned(),
        }
    }

    /// Starts a server on a given port (e.g. where a worker already waits for its Livy).
    pub async fn start_on_port(dir: &Path, port: u16, args: &[&str]) -> Self {
        Self::start_on(dir, port, args.iter().map(|s| (*s).to_owned()).collect()).await
    }

    /// Kills the server process (connections now refused); its state is gone.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts a fresh server on the same port (a Livy restart without recovery).
    pub async fn restart(&mut self) {
        self.kill().await;
        let fresh = Self::start_on(&self.dir, self.port, self.args.clone()).await;
        *self = fresh;
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_control/stats", self.url))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    pub async fn control(&self, path: &str, body: Value) {
        let resp = self
            .http
            .post(format!("{}/_control/{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("control call");
        assert!(
            resp.status().is_success(),
            "control {path}: {}",
            resp.status()
        );
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/{path}", self.url))
            .send()
            .await
            .expect("livy get");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `check` holds on the stats.
    pub async fn until(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.stats().await;
            if check(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "livy: {what} not seen within {within:?}: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

pub fn batches(stats: &Value) -> Vec<Value> {
    stats["batches"].as_array().cloned().unwrap_or_default()
}

/// Batches Livy holds in state `running`.
pub fn running(stats: &Value) -> usize {
    batches(stats)
        .iter()
        .filter(|b| b["state"] == "running" && b["deleted"] == false)
        .count()
}

/// How many entries the journal in `dir/state` holds.
pub fn journal_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("state"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the journal in `dir/state` is empty: an entry is removed just after Step
/// Functions accepted its report, which an execution's status can show a moment earlier.
pub async fn journal_emptied(dir: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while journal_files(dir) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} journal entries left after {within:?}",
            journal_files(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Dates the (one) journal entry in `dir/state` `by` earlier: the worker "was down" that long.
pub fn age_the_journal_entry(dir: &Path, by: Duration) {
    let path = std::fs::read_dir(dir.join("state"))
        .expect("state dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("one journal entry");
    let mut entry: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    let old = std::time::SystemTime::now() - by;
    entry["createdAt"] = json!(humantime::format_rfc3339_millis(old).to_string());
    std::fs::write(&path, entry.to_string()).expect("write");
}

/// The simulated ResourceManager's applications, in creation order.
pub fn yarn_apps(stats: &Value) -> Vec<Value> {
    stats["yarn"].as_array().cloned().unwrap_or_default()
}

/// The application of the batch named `batch_name` (an application is named after its batch).
pub fn yarn_app(stats: &Value, batch_name: &str) -> Value {
    yarn_apps(stats)
        .into_iter()
        .find(|a| a["name"] == batch_name)
        .unwrap_or_else(|| panic!("no YARN application named {batch_name}: {stats:#}"))
}

/// Another client's batch: posted straight to Livy, unnamed unless `name` is given.
pub async fn post_other_batch(livy: &Livy, file: &str, name: Option<&str>) -> Value {
    let mut body = json!({"file": file});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    reqwest::Client::new()
        .post(format!("{}/batches", livy.url))
        .header("X-Requested-By", "another-client")
        .json(&body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json")
}

// ---------------------------------------------------------------------------------------------
// The worker

pub struct Worker {
    child: Child,
    pub log: PathBuf,
}

impl Worker {
    /// Starts `spark-activity-worker run` with fast test intervals plus `extra` flags.
    pub fn start(dir: &Path, activity: &str, livy: &str, extra: &[&str]) -> Self {
        Self::start_with_env(dir, activity, livy, extra, &[])
    }

    /// A worker built with the `failpoints` feature, told to fail at `point`.
    pub fn failing_at(dir: &Path, activity: &str, livy: &str, point: &str) -> Self {
        Self::start_with_env(
            dir,
            activity,
            livy,
            &[],
            &[("SPARK_ACTIVITY_WORKER_FAILPOINTS", point)],
        )
    }

    pub fn start_with_env(
        dir: &Path,
        activity: &str,
        livy: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = dir.join(format!("worker-{}.log", suffix()));
        let file = std::fs::File::create(&log).expect("worker log");
        // Workers of one test share its state dir, so a restarted worker finds the journal.
        let state_dir = dir.join("state");
        let mut defaults = vec!["--state-dir", state_dir.to_str().expect("utf-8 path")];
        if extra.contains(&"--state-dir") {
            defaults.clear();
        }
        // The test Livy server also serves the ResourceManager's REST subset.
        if !extra.contains(&"--yarn-url") {
            defaults.extend(["--yarn-url", livy]);
        }
        let bin = env!("CARGO_BIN_EXE_spark-activity-worker");
        // systemd sets WATCHDOG_PID to the service's pid along with WATCHDOG_USEC; a shell that
        // execs the worker knows that pid in advance.
        let mut command = if env.iter().any(|(k, _)| *k == "WATCHDOG_USEC") {
            let mut c = Command::new("sh");
            c.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", bin]);
            c
        } else {
            Command::new(bin)
        };
        let child = command
            .args(["run", "--activity-arn", activity, "--livy-url", livy])
            .args(&defaults)
            .args(
                [("--sync-interval", "300ms"), ("--heartbeat-interval", "1s")]
                    .iter()
                    .filter(|(flag, _)| !extra.contains(flag))
                    .flat_map(|(flag, value)| [*flag, *value]),
            )
            .args(
                ["--log-level", "info,spark_activity_worker=debug"]
                    .iter()
                    .filter(|_| !extra.contains(&"--log-level")),
            )
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn worker");
        Worker { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "worker log has no {needle:?} after {within:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("worker running");
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// SIGKILL, then waits until the process is gone (its state-dir lock with it), as systemd
    /// does before a restart.
    pub async fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.exit(Duration::from_secs(10)).await;
    }

    /// How many lines of the log contain `needle`.
    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    pub async fn exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "worker still running after {within:?}:\n{}",
                    self.log_text()
                )
            })
            .expect("wait worker")
    }
}

// ---------------------------------------------------------------------------------------------

/// What most tests start from: a scratch dir, Step Functions, a Livy server and a fresh activity.
pub async fn rig(name: &str, livy_args: &[&str]) -> (PathBuf, Sfn, Livy, String) {
    let dir = scratch(name);
    let sfn = Sfn::new().await;
    let livy = Livy::start(&dir, livy_args).await;
    let activity = sfn.activity(name).await;
    (dir, sfn, livy, activity)
}
