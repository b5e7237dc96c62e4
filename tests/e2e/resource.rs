//! `Custom::SparkJob`: the `spark-job-resource` binary under cargo-lambda's Lambda Runtime API
//! emulator, fed CloudFormation-shaped requests whose `ResponseURL` is a recorder of this test,
//! against the project's Livy server (real `spark-submit` for the streaming-like job).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::harness::{HttpRequest, Livy, batches, free_port, read_request, root, scratch, suffix};

// ---------------------------------------------------------------------------------------------
// The recorder: CloudFormation's side of the ResponseURL.

/// One PUT the function made.
#[derive(Debug, Clone)]
pub struct Put {
    pub path: String,
    /// `None` when the header was absent.
    pub content_type: Option<String>,
    pub bytes: usize,
    pub body: Value,
}

#[derive(Clone)]
pub struct Recorder {
    pub base: String,
    seen: Arc<Mutex<Vec<Put>>>,
}

impl Recorder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, keep.clone()));
            }
        });
        Recorder {
            base: format!("http://{addr}"),
            seen,
        }
    }

    /// A pre-signed-looking URL of its own for one request.
    pub fn url(&self, request_id: &str) -> String {
        format!(
            "{}/cloudformation-responses/{request_id}?X-Amz-Expires=7200&X-Amz-Signature=0badc0de",
            self.base
        )
    }

    /// The PUTs made for one request.
    pub fn puts(&self, request_id: &str) -> Vec<Put> {
        let prefix = format!("/cloudformation-responses/{request_id}?");
        self.seen
            .lock()
            .expect("recorder lock")
            .iter()
            .filter(|p| p.path.starts_with(&prefix))
            .cloned()
            .collect()
    }
}

/// HTTP/1.1 with keep-alive, enough for reqwest's PUTs: head, `Content-Length` body, 200.
async fn serve(conn: TcpStream, seen: Arc<Mutex<Vec<Put>>>) {
    let mut reader = BufReader::new(conn);
    while let Some(request) = read_request(&mut reader).await {
        if request.method == "PUT" {
            seen.lock().expect("recorder lock").push(Put {
                content_type: request.header("content-type").map(str::to_owned),
                bytes: request.body.len(),
                body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
                path: request.path,
            });
        }
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        if reader.get_mut().write_all(reply).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The function, under cargo-lambda's emulator.

fn cargo_lambda() -> PathBuf {
    let bin = root().join(".cache/cargo-lambda/bin/cargo-lambda");
    assert!(
        bin.exists(),
        "{} missing: tests/rig/install.sh installs it",
        bin.display()
    );
    bin
}

/// The function's binary, run against a Lambda Runtime API.
pub struct Function {
    emulator: Option<Child>,
    function: Child,
    /// The emulator's invoke (and runtime) port.
    port: u16,
    log: PathBuf,
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn_function(dir: &Path, runtime_api: &str, env: &[(&str, &str)]) -> (Child, PathBuf) {
    let log = dir.join(format!("function-{}.log", suffix()));
    let file = std::fs::File::create(&log).expect("function log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spark-job-resource"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("POLL_INTERVAL", "500ms")
        .env("START_SETTLE", "0s")
        .envs(env.iter().copied())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .kill_on_drop(true);
    (cmd.spawn().expect("start spark-job-resource"), log)
}

impl Function {
    /// The emulator (`cargo lambda watch --only-lambda-apis`) and the function beside it.
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let emulator_log =
            std::fs::File::create(dir.join(format!("emulator-{port}.log"))).expect("emulator log");
        let emulator = Command::new(cargo_lambda())
            .args(["lambda", "watch", "--only-lambda-apis", "--ignore-changes"])
            .args(["-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(root())
            .stdout(emulator_log.try_clone().expect("log"))
            .stderr(emulator_log)
            .kill_on_drop(true)
            .spawn()
            .expect("start cargo lambda watch");
        wait_for_port(port, "cargo lambda watch").await;
        let (function, log) = spawn_function(dir, &format!("http://127.0.0.1:{port}/.rt"), env);
        Function {
            emulator: Some(emulator),
            function,
            port,
            log,
        }
    }

    /// Invokes the function with `event` (`cargo lambda invoke`); what it returned.
    pub async fn invoke(&self, event: &Value) -> Value {
        let out = Command::new(cargo_lambda())
            .args(["lambda", "invoke", "-A", "127.0.0.1", "-P"])
            .arg(self.port.to_string())
            .arg("--data-ascii")
            .arg(event.to_string())
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("cargo lambda invoke");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "invoke failed: {stdout}\n{}\nfunction log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_str(stdout.trim()).unwrap_or(Value::String(stdout.into_owned()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.function.start_kill();
        if let Some(e) = &mut self.emulator {
            let _ = e.start_kill();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests, as CloudFormation sends them.

pub struct Stack {
    pub id: String,
    pub recorder: Recorder,
}

impl Stack {
    pub async fn new() -> Self {
        Stack {
            id: format!(
                "arn:aws:cloudformation:us-east-1:123456789012:stack/spark-dev-{}/5b5e1a20-11ef-8000-0a1b2c3d4e5f",
                suffix()
            ),
            recorder: Recorder::start().await,
        }
    }

    /// A request of `kind` for the resource `SparkPi`; its RequestId is fresh.
    pub fn request(
        &self,
        kind: &str,
        physical: Option<&str>,
        props: &Value,
        old: Option<&Value>,
    ) -> Value {
        let request_id = format!("{}-{}", kind.to_ascii_lowercase(), suffix());
        let mut e = json!({
            "RequestType": kind,
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:spark-job-submitter",
            "ResponseURL": self.recorder.url(&request_id),
            "StackId": self.id,
            "RequestId": request_id,
            "LogicalResourceId": "SparkPi",
            "ResourceType": "Custom::SparkJob",
            "ResourceProperties": props,
        });
        if let Some(p) = physical {
            e["PhysicalResourceId"] = json!(p);
        }
        if let Some(o) = old {
            e["OldResourceProperties"] = o.clone();
        }
        e
    }

    /// Sends a request of `kind` (see [`Stack::request`]) and returns its one answer.
    pub async fn ask(
        &self,
        function: &Function,
        kind: &str,
        physical: Option<&str>,
        props: &Value,
        old: Option<&Value>,
    ) -> Value {
        self.answer(function, &self.request(kind, physical, props, old))
            .await
    }

    /// Sends `event` and returns the one answer it got, after checking it is the only one, on
    /// the request's own URL, with an empty content type, within 4 KiB, and naming the request.
    pub async fn answer(&self, function: &Function, event: &Value) -> Value {
        let returned = function.invoke(event).await;
        let request_id = event["RequestId"].as_str().expect("request id");
        let puts = self.recorder.puts(request_id);
        assert_eq!(
            puts.len(),
            1,
            "exactly one answer: {puts:#?}\nreturned {returned}\nfunction log:\n{}",
            function.log_text()
        );
        let put = &puts[0];
        assert_eq!(put.content_type.as_deref(), Some(""), "{put:?}");
        assert!(put.bytes <= 4096, "{put:?}");
        let a = put.body.clone();
        assert_eq!(a["RequestId"], event["RequestId"]);
        assert_eq!(a["StackId"], event["StackId"]);
        assert_eq!(a["LogicalResourceId"], "SparkPi");
        assert_eq!(returned["Status"], a["Status"], "{returned}");
        assert_eq!(returned["Delivered"], true, "{returned}");
        println!(
            "{} → {}",
            event["RequestType"].as_str().unwrap_or_default(),
            serde_json::to_string(&a).unwrap_or_default()
        );
        a
    }
}

/// The properties of the original snippet's shape, as CloudFormation passes them (strings).
fn properties(livy: &Livy, file: &str, args: &[&str]) -> Value {
    json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:spark-job-submitter",
        "LivyHost": "127.0.0.1",
        "LivyPort": livy.port.to_string(),
        "Parameters": {
            "Name": "Spark Pi",
            "File": file,
            "NumExecutors": "1",
            "DriverMemory": "512m",
            "ExecutorMemory": "512m",
            "ExecutorCores": "1",
            "Args": args,
        }
    })
}

fn batch_named(stats: &Value, name: &str) -> Value {
    batches(stats)
        .into_iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no batch {name}: {stats:#}"))
}

fn name_of(physical_id: &Value) -> String {
    let id = physical_id.as_str().expect("a physical id");
    let (_, rest) = id.split_once("/batches/").expect("names a batch");
    rest.rsplit_once('#').expect("with its spec").0.to_owned()
}

/// A streaming-like PySpark job: runs until killed, a Spark action every second; with `die` as
/// its first argument it fails a few seconds after starting, as a job with a bad input would.
fn ticker(dir: &Path) -> String {
    let path = dir.join(format!("ticker-{}.py", suffix()));
    std::fs::write(
        &path,
        r#"import sys, time
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("ticker").getOrCreate()
print("ticker started with", sys.argv[1:], flush=True)
if sys.argv[1:2] == ["die"]:
    raise RuntimeError("input path s3://etl-input/day=missing does not exist")
while True:
    n = spark.sparkContext.parallelize(range(1000), 2).count()
    print("tick", n, flush=True)
    time.sleep(1)
"#,
    )
    .expect("write ticker");
    format!("file://{}", path.display())
}

/// The real processes running `file` with first argument `arg`.
fn processes(file: &str, arg: &str) -> usize {
    let path = file.trim_start_matches("file://");
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("{path} {arg}")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

async fn livy(dir: &Path) -> Livy {
    Livy::start(dir, &[]).await
}

fn allowed() -> (&'static str, &'static str) {
    ("ALLOWED_LIVY_HOSTS", "127.0.0.1,*.compute.internal")
}

// ---------------------------------------------------------------------------------------------

/// The whole lifecycle on real Spark: Create runs the job, Update starts the new version and only
/// then kills the old, Delete kills it; the recorded answers are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_update_delete_cycle_runs_one_version_at_a_time_on_real_spark() {
    let dir = scratch("resource-cycle");
    let livy = livy(&dir).await;
    let function = Function::start(&dir, &[allowed(), ("START_SETTLE", "8s")]).await;
    let stack = Stack::new().await;
    let file = ticker(&dir);

    let v1 = properties(&livy, &file, &["v1"]);
    let created = stack.ask(&function, "Create", None, &v1, None).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let first = name_of(&created["PhysicalResourceId"]);
    let stats = livy.stats().await;
    let b1 = batch_named(&stats, &first);
    assert_eq!(b1["state"], "running", "{b1}");
    assert_eq!(created["Data"]["BatchId"], b1["id"].to_string());
    // Local-mode Spark has no YARN application; the attribute says so with "".
    assert_eq!(created["Data"]["ApplicationId"], "");
    assert!(processes(&file, "v1") > 0, "v1 runs");

    let v2 = properties(&livy, &file, &["v2"]);
    let updated = stack
        .ask(
            &function,
            "Update",
            created["PhysicalResourceId"].as_str(),
            &v2,
            Some(&v1),
        )
        .await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_ne!(updated["PhysicalResourceId"], created["PhysicalResourceId"]);
    let second = name_of(&updated["PhysicalResourceId"]);
    let stats = livy.stats().await;
    let b2 = batch_named(&stats, &second);
    assert_eq!(b2["state"], "running", "{b2}");
    assert_eq!(updated["Data"]["BatchId"], b2["id"].to_string());
    assert_eq!(batch_named(&stats, &first)["deleted"], true, "v1 killed");
    assert_eq!(processes(&file, "v1"), 0, "no v1 process is left");
    assert!(processes(&file, "v2") > 0, "v2 runs");
    // The old version was killed only once the new one ran: the new batch was created first.
    assert!(b2["id"].as_i64() > b1["id"].as_i64());

    let deleted = stack
        .ask(
            &function,
            "Delete",
            updated["PhysicalResourceId"].as_str(),
            &v2,
            None,
        )
        .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(deleted["PhysicalResourceId"], updated["PhysicalResourceId"]);
    let stats = livy.stats().await;
    assert_eq!(batch_named(&stats, &second)["deleted"], true);
    assert_eq!(processes(&file, "v2"), 0, "no v2 process is left");
    assert_eq!(stats["created"], 2, "{stats:#}");

    // CloudFormation's cleanup deletes the replaced resource after the update: already gone.
    let cleanup = stack
        .ask(
            &function,
            "Delete",
            created["PhysicalResourceId"].as_str(),
            &v1,
            None,
        )
        .await;
    assert_eq!(cleanup["Status"], "SUCCESS", "{cleanup}");
}

/// A job that fails right after it starts fails the Create, with the end of its log as Reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_dies_at_start_fails_the_create_with_its_log() {
    let dir = scratch("resource-dies");
    let livy = livy(&dir).await;
    let function = Function::start(&dir, &[allowed(), ("START_SETTLE", "40s")]).await;
    let stack = Stack::new().await;
    let file = ticker(&dir);
    let props = properties(&livy, &file, &["die"]);
    let answer = stack.ask(&function, "Create", None, &props, None).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("the Spark application failed at start: batch 0 is dead"),
        "{reason}"
    );
    assert!(
        reason.contains("input path s3://etl-input/day=missing does not exist"),
        "the log's end: {reason}"
    );
    // CloudFormation then deletes the failed resource: that succeeds.
    let deleted = stack
        .ask(
            &function,
            "Delete",
            answer["PhysicalResourceId"].as_str(),
            &props,
            None,
        )
        .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
}

/// CloudFormation (or Lambda's retry) delivers one request twice: one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_create_delivered_twice_makes_one_batch() {
    let dir = scratch("resource-twice");
    let livy = livy(&dir).await;
    let function = Function::start(&dir, &[allowed()]).await;
    let stack = Stack::new().await;
    let props = properties(&livy, "sim:forever?app=1", &["10"]);
    let event = stack.request("Create", None, &props, None);
    let first = function.invoke(&event).await;
    let second = function.invoke(&event).await;
    assert_eq!(first["Status"], "SUCCESS", "{first}");
    assert_eq!(second["Status"], "SUCCESS", "{second}");
    assert_eq!(first["PhysicalResourceId"], second["PhysicalResourceId"]);
    let puts = stack
        .recorder
        .puts(event["RequestId"].as_str().expect("id"));
    assert_eq!(puts.len(), 2, "each delivery is answered");
    assert_eq!(puts[0].body, puts[1].body, "with the same answer");
    let stats = livy.stats().await;
    assert_eq!(stats["created"], 1, "one batch: {stats:#}");
    let b = batch_named(&stats, &name_of(&first["PhysicalResourceId"]));
    assert_eq!(b["state"], "running");
    // ApplicationId is YARN's id of the batch's application.
    assert_eq!(puts[0].body["Data"]["ApplicationId"], b["yarn_app"], "{b}");
    assert!(
        puts[0].body["Data"]["ApplicationId"]
            .as_str()
            .is_some_and(|a| a.starts_with("application_")),
        "{:?}",
        puts[0].body
    );
}

/// An Update whose properties differ only in how CloudFormation spelled them keeps the batch;
/// a failed Update leaves the old batch running, CloudFormation's rollback keeps it, and the
/// stack's Delete then kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_keep_the_batch_unless_livy_would_see_a_change_and_a_failed_one_rolls_back() {
    let dir = scratch("resource-update");
    let livy = livy(&dir).await;
    let function = Function::start(&dir, &[allowed(), ("START_SETTLE", "3s")]).await;
    let stack = Stack::new().await;
    let v1 = properties(&livy, "sim:forever?app=1", &["10"]);
    let created = stack.ask(&function, "Create", None, &v1, None).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let id = created["PhysicalResourceId"].clone();

    // Numbers for strings, the default port spelled out: nothing Livy sees.
    let mut same = v1.clone();
    same["LivyPort"] = json!(livy.port);
    same["Parameters"]["NumExecutors"] = json!(1);
    same["Parameters"]["Args"] = json!([10]);
    let kept = stack
        .ask(&function, "Update", id.as_str(), &same, Some(&v1))
        .await;
    assert_eq!(kept["Status"], "SUCCESS", "{kept}");
    assert_eq!(kept["PhysicalResourceId"], id);
    assert_eq!(kept["Data"], created["Data"]);
    assert_eq!(livy.stats().await["posts"], 1, "nothing was submitted");

    // The new version dies as it starts: FAILED, the old physical id, the old batch untouched.
    let broken = properties(
        &livy,
        "sim:dead?start=0.3&run=0.5&msg=java.lang.ClassNotFoundException:+com.example.Main",
        &["10"],
    );
    let failed = stack
        .ask(&function, "Update", id.as_str(), &broken, Some(&same))
        .await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    assert_eq!(failed["PhysicalResourceId"], id);
    let reason = failed["Reason"].as_str().expect("reason");
    assert!(
        reason.contains("ClassNotFoundException: com.example.Main"),
        "{reason}"
    );
    assert!(
        reason.ends_with("the earlier batch was left running"),
        "{reason}"
    );
    let stats = livy.stats().await;
    assert_eq!(batch_named(&stats, &name_of(&id))["state"], "running");

    // The rollback: CloudFormation asks for the old properties again, on the same id.
    let rolled = stack
        .ask(&function, "Update", id.as_str(), &v1, Some(&broken))
        .await;
    assert_eq!(rolled["Status"], "SUCCESS", "{rolled}");
    assert_eq!(rolled["PhysicalResourceId"], id);
    assert_eq!(
        livy.stats().await["posts"],
        2,
        "the rollback submitted nothing"
    );

    let deleted = stack.ask(&function, "Delete", id.as_str(), &v1, None).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    let stats = livy.stats().await;
    let b = batch_named(&stats, &name_of(&id));
    assert_eq!(b["deleted"], true);
    let app = stats["yarn"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["id"] == b["yarn_app"]).cloned())
        .unwrap_or_default();
    assert_eq!(app["state"], "KILLED", "{app}");
}

/// Delete succeeds whatever became of the batch: forgotten by a Livy restart, or finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_succeeds_when_livy_forgot_or_finished_the_batch() {
    let dir = scratch("resource-forgotten");
    let mut livy = livy(&dir).await;
    let function = Function::start(&dir, &[allowed()]).await;
    let stack = Stack::new().await;
    let props = properties(&livy, "sim:success?run=1", &[]);
    let created = stack.ask(&function, "Create", None, &props, None).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let name = name_of(&created["PhysicalResourceId"]);
    livy.until("the batch finished", Duration::from_secs(20), |s| {
        batch_named(s, &name)["state"] == "success"
    })
    .await;
    let finished = stack
        .ask(
            &function,
            "Delete",
            created["PhysicalResourceId"].as_str(),
            &props,
            None,
        )
        .await;
    assert_eq!(finished["Status"], "SUCCESS", "{finished}");

    let forever = properties(&livy, "sim:forever", &[]);
    let created = stack.ask(&function, "Create", None, &forever, None).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    livy.restart().await;
    let forgotten = stack
        .ask(
            &function,
            "Delete",
            created["PhysicalResourceId"].as_str(),
            &forever,
            None,
        )
        .await;
    assert_eq!(forgotten["Status"], "SUCCESS", "{forgotten}");
    assert!(
        forgotten["Reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer held by Livy")),
        "{forgotten}"
    );
}

/// What the function must refuse, it refuses by name, and the Delete that follows succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outside_allowed_livy_hosts_or_bad_properties_fail_by_name() {
    let dir = scratch("resource-refused");
    let livy = livy(&dir).await;
    let function = Function::start(
        &dir,
        &[allowed(), ("SPARK_ACTIVITY_WORKER_MAX_EXECUTORS", "4")],
    )
    .await;
    let stack = Stack::new().await;
    let mut evil = properties(&livy, "sim:forever", &[]);
    evil["LivyHost"] = json!("livy.attacker.example");
    let mut big = properties(&livy, "sim:forever", &[]);
    big["Parameters"]["NumExecutors"] = json!("50");
    let mut typo = properties(&livy, "sim:forever", &[]);
    typo["Parameters"]["NumExecutor"] = json!("2");
    for (props, says) in [
        (
            evil,
            "LivyHost livy.attacker.example is not allowed (ALLOWED_LIVY_HOSTS: 127.0.0.1, *.compute.internal)",
        ),
        (
            big,
            "SparkJob.Forbidden: NumExecutors 50 is over SPARK_ACTIVITY_WORKER_MAX_EXECUTORS (4)",
        ),
        (
            typo,
            "invalid properties: unknown field \"NumExecutor\" in Parameters",
        ),
    ] {
        let answer = stack.ask(&function, "Create", None, &props, None).await;
        assert_eq!(answer["Status"], "FAILED", "{answer}");
        let reason = answer["Reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with(says), "{reason}");
        let deleted = stack
            .ask(
                &function,
                "Delete",
                answer["PhysicalResourceId"].as_str(),
                &props,
                None,
            )
            .await;
        assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    }
    assert_eq!(livy.stats().await["posts"], 0, "nothing reached Livy");

    // What Livy itself refuses (here, a script it cannot parse) is FAILED with Livy's words.
    let bad = properties(&livy, "sim:success?run=soon", &[]);
    let answer = stack.ask(&function, "Create", None, &bad, None).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(
            "Livy refused the batch: livy answered 400: Rejected, Reason: sim: bad value for run"
        ),
        "{reason}"
    );
    assert_eq!(livy.stats().await["created"], 0);

    // A request that is not CloudFormation's, but says where to answer, is answered FAILED.
    let mut malformed = stack.request("Create", None, &bad, None);
    malformed["RequestType"] = json!("Upsert");
    let answer = stack.answer(&function, &malformed).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(
        answer["Reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("not a CloudFormation custom-resource request")),
        "{answer}"
    );
}

/// A batch still `starting` when START_TIMEOUT ends is killed, then the Create fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_does_not_start_in_time_is_killed_and_the_create_fails() {
    let dir = scratch("resource-slow");
    let livy = livy(&dir).await;
    let function = Function::start(&dir, &[allowed(), ("START_TIMEOUT", "3s")]).await;
    let stack = Stack::new().await;
    let props = properties(&livy, "sim:forever?start=600&app=1", &[]);
    let answer = stack.ask(&function, "Create", None, &props, None).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the batch did not start in time (still starting after 3s"),
        "{reason}"
    );
    let name = name_of(&answer["PhysicalResourceId"]);
    assert!(
        reason.ends_with(&format!("batch {name} killed")),
        "{reason}"
    );
    let stats = livy.stats().await;
    let b = batch_named(&stats, &name);
    assert_eq!(b["deleted"], true, "{b}");
    let app = stats["yarn"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["id"] == b["yarn_app"]).cloned())
        .unwrap_or_default();
    assert_eq!(app["state"], "KILLED", "{app}");
}

/// A panic while handling a request still ends in an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_handling_a_request_is_answered_failed() {
    let dir = scratch("resource-panic");
    let livy = livy(&dir).await;
    let function = Function::start(
        &dir,
        &[
            allowed(),
            ("SPARK_ACTIVITY_WORKER_FAILPOINTS", "resource-panic"),
        ],
    )
    .await;
    let stack = Stack::new().await;
    let props = properties(&livy, "sim:forever", &[]);
    let answer = stack.ask(&function, "Create", None, &props, None).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(
        answer["Reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("spark-job-resource failed unexpectedly")),
        "{answer}"
    );
    // The function lives on and answers the next request.
    let again = stack
        .ask(
            &function,
            "Delete",
            answer["PhysicalResourceId"].as_str(),
            &props,
            None,
        )
        .await;
    assert_eq!(again["Status"], "FAILED", "{again}");
}

/// A function deployed without ALLOWED_LIVY_HOSTS answers every request FAILED, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_function_still_answers_naming_the_variable() {
    let dir = scratch("resource-misconfigured");
    let livy = livy(&dir).await;
    let function = Function::start(&dir, &[]).await;
    let stack = Stack::new().await;
    let props = properties(&livy, "sim:forever", &[]);
    let answer = stack.ask(&function, "Create", None, &props, None).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("spark-job-resource is misconfigured:")
            && reason.contains("ALLOWED_LIVY_HOSTS"),
        "{reason}"
    );
}

// ---------------------------------------------------------------------------------------------
// Livy down, against a real deadline. cargo-lambda's emulator gives every invocation the same
// deadline (600,000 ms after the epoch, long past), which the function does not believe; this
// minimal Runtime API gives a real one, as Lambda does: now + the function's timeout.

struct RuntimeApi {
    addr: SocketAddr,
    responses: Arc<Mutex<Vec<(String, Instant)>>>,
    next: Arc<Mutex<Option<(Value, u64)>>>,
}

impl RuntimeApi {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let responses = Arc::new(Mutex::new(Vec::new()));
        let next: Arc<Mutex<Option<(Value, u64)>>> = Arc::new(Mutex::new(None));
        let (r, n) = (responses.clone(), next.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(runtime_conn(conn, r.clone(), n.clone()));
            }
        });
        RuntimeApi {
            addr,
            responses,
            next,
        }
    }
}

/// `GET …/invocation/next` hands out the queued event (or waits for one);
/// `POST …/invocation/{id}/response|error` records the function's result.
async fn runtime_conn(
    conn: TcpStream,
    responses: Arc<Mutex<Vec<(String, Instant)>>>,
    next: Arc<Mutex<Option<(Value, u64)>>>,
) {
    let mut reader = BufReader::new(conn);
    while let Some(HttpRequest { path, body, .. }) = read_request(&mut reader).await {
        let reply = if path.ends_with("/invocation/next") {
            let (event, deadline_ms) = loop {
                let taken = next.lock().expect("lock").take();
                match taken {
                    Some(e) => break e,
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let body = event.to_string();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlambda-runtime-aws-request-id: inv-1\r\nlambda-runtime-deadline-ms: {deadline_ms}\r\nlambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:spark-job-submitter\r\nlambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            responses.lock().expect("lock").push((
                format!("{path} {}", String::from_utf8_lossy(&body)),
                Instant::now(),
            ));
            "HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}".to_owned()
        };
        if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Livy down for the whole invocation: FAILED, saying so, before the function's own timeout —
/// a deadline the function takes from the invocation, not from START_TIMEOUT (10 minutes here).
/// The Delete that follows a Create that created nothing succeeds without Livy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livy_down_fails_the_create_before_the_invocations_deadline() {
    let dir = scratch("resource-livy-down");
    let api = RuntimeApi::start().await;
    let stack = Stack::new().await;
    let (_function, log) = spawn_function(
        &dir,
        &api.addr.to_string(),
        &[allowed(), ("START_TIMEOUT", "10m")],
    );
    let down = free_port();
    let props = json!({"LivyHost": "127.0.0.1", "LivyPort": down.to_string(),
                       "Parameters": {"File": "sim:forever"}});
    let event = stack.request("Create", None, &props, None);
    let timeout = Duration::from_secs(30);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let sent = Instant::now();
    *api.next.lock().expect("lock") = Some((event.clone(), now_ms + timeout.as_millis() as u64));
    let request_id = event["RequestId"].as_str().expect("id");
    let answered = loop {
        if let Some(put) = stack.recorder.puts(request_id).first() {
            break (put.clone(), sent.elapsed());
        }
        assert!(
            sent.elapsed() < timeout + Duration::from_secs(10),
            "no answer; function log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (put, after) = answered;
    assert!(
        after < timeout,
        "answered after {after:?}, past the deadline"
    );
    assert!(
        after > timeout / 3,
        "it kept trying while there was time: {after:?}"
    );
    assert_eq!(put.body["Status"], "FAILED", "{:?}", put.body);
    let reason = put.body["Reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("Livy could not be reached, so no batch was created"),
        "{reason}"
    );
    // The function returned to the Runtime API after answering, also before the deadline.
    let results = api.responses.lock().expect("lock").clone();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        results[0].0.contains("/invocation/inv-1/response"),
        "{results:?}"
    );
    assert!(results[0].1.duration_since(sent) < timeout);

    // CloudFormation's Delete of what the failed Create named: nothing to kill, no Livy needed.
    let physical = put.body["PhysicalResourceId"]
        .as_str()
        .expect("id")
        .to_owned();
    let delete = stack.request("Delete", Some(&physical), &props, None);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    *api.next.lock().expect("lock") = Some((delete.clone(), now_ms + 30_000));
    let delete_id = delete["RequestId"].as_str().expect("id");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.recorder.puts(delete_id).is_empty() {
        assert!(Instant::now() < deadline, "the Delete was not answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.recorder.puts(delete_id)[0].body["Status"], "SUCCESS");
}
