//! Operating the worker: its Prometheus metrics and health endpoints, scraped while real
//! executions run, and checked against what happened.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use crate::harness::{Worker, batches, free_port, rig, running};

/// One scrape of `/metrics`, parsed.
pub struct Scrape {
    pub text: String,
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub fn parse(text: String) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| parse_line(l).unwrap_or_else(|| panic!("unparsable sample line {l:?}")))
            .collect();
        Scrape { text, series }
    }

    /// The values of every series of `name` whose labels include `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.series.iter().filter_map(move |(n, l, v)| {
            let all = labels
                .iter()
                .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want));
            (n == name && all).then_some(*v)
        })
    }

    /// The sum of every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }

    /// Whether a series of `name` has labels including `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }
}

/// `name{k="v",...} value`, with quoted label values that may hold `{`, `}`, `,` and escapes.
fn parse_line(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        };
        rest = &body[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The monitoring endpoint of a worker started with `--metrics-listen`.
pub struct Monitor {
    pub base: String,
    http: reqwest::Client,
}

impl Monitor {
    pub fn new(addr: &str) -> Self {
        Monitor {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn scrape(&self) -> Scrape {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("scrape /metrics");
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        Scrape::parse(resp.text().await.expect("metrics text"))
    }

    /// `(status, body)` of `/healthz` or `/readyz`; `None` while nothing answers.
    pub async fn health(&self, path: &str) -> Option<(u16, Value)> {
        let resp = self
            .http
            .get(format!("{}/{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.expect("health JSON")))
    }

    /// Waits until `path` answers `status` with `check` holding on its body.
    pub async fn until(
        &self,
        path: &str,
        status: u16,
        check: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some((s, body)) = self.health(path).await {
                if s == status && check(&body) {
                    return body;
                }
                last = Some((s, body));
            }
            assert!(
                Instant::now() < deadline,
                "/{path} never answered {status} as expected within {within:?}; last: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn failing(body: &Value) -> Vec<String> {
    body["failing"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

const P: &str = "spark_activity_worker_";

pub fn m(name: &str) -> String {
    format!("{P}{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_report_what_the_worker_did() {
    let (dir, sfn, mut livy, activity) = rig("metrics", &[]).await;
    let name = activity
        .rsplit(':')
        .next()
        .expect("activity name")
        .to_owned();
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = Worker::start(&dir, &activity, &livy.url, &["--metrics-listen", &addr]);
    let mon = Monitor::new(&addr);

    let ready = mon
        .until("readyz", 200, |_| true, Duration::from_secs(30))
        .await;
    assert_eq!(ready["status"], "ok", "{ready}");
    for check in ["journal", "livy", "step_functions", "shutdown"] {
        assert_eq!(ready["checks"][check], "ok", "{ready}");
    }
    let (status, alive) = mon.health("healthz").await.expect("healthz");
    assert_eq!(
        (status, &alive["checks"]["poll_loops"]),
        (200, &json!("ok"))
    );

    // A batch running: the gauges show it.
    let long = sfn
        .start(&sm, &json!({"File": "sim:success?run=6", "Name": "long"}))
        .await;
    livy.until("the long batch running", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    // The worker sees it at its next sync.
    let deadline = Instant::now() + Duration::from_secs(10);
    let during = loop {
        let s = mon.scrape().await;
        if s.sum(&m("batches"), &[("state", "running")]) == 1.0 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        during.sum(&m("batches"), &[("state", "running")]),
        1.0,
        "{}",
        during.text
    );
    assert_eq!(
        during.sum(&m("batches"), &[]),
        1.0,
        "every other state is 0"
    );
    assert_eq!(during.sum(&m("journal_entries"), &[]), 1.0);
    assert_eq!(during.sum(&m("worker_task_slots_used"), &[]), 1.0);
    assert_eq!(during.sum(&m("worker_task_slots_available"), &[]), 31.0);
    assert_eq!(
        during.sum(&m("tasks_received_total"), &[("activity", &name)]),
        1.0
    );
    assert_eq!(during.sum(&m("livy_up"), &[]), 1.0);

    // An invalid input and a Spark job that dies, beside it.
    let bad = sfn
        .start(&sm, &json!({"File": "sim:success", "NumExecutor": 2}))
        .await;
    let dead = sfn
        .start(
            &sm,
            &json!({"File": "sim:dead?run=1&msg=boom", "Name": "dies"}),
        )
        .await;
    let mut statuses = Vec::new();
    for ex in [&long, &bad, &dead] {
        statuses.push(sfn.finish(ex, Duration::from_secs(90)).await.status);
    }
    assert_eq!(
        statuses,
        [
            ExecutionStatus::Succeeded,
            ExecutionStatus::Failed,
            ExecutionStatus::Failed
        ]
    );

    let after = mon.scrape().await;
    let a = |k: &str, l: &[(&str, &str)]| after.sum(&m(k), l);
    let text = &after.text;
    assert_eq!(
        a("tasks_received_total", &[("activity", &name)]),
        3.0,
        "{text}"
    );
    let finished = |outcome, error| {
        a(
            "tasks_finished_total",
            &[("activity", &name), ("outcome", outcome), ("error", error)],
        )
    };
    assert_eq!(finished("succeeded", ""), 1.0, "{text}");
    assert_eq!(finished("failed", "SparkJob.InvalidInput"), 1.0, "{text}");
    assert_eq!(finished("failed", "SparkJob.Failed"), 1.0, "{text}");
    assert_eq!(a("tasks_finished_total", &[]), 3.0, "{text}");
    assert_eq!(
        a("task_duration_seconds_count", &[("activity", &name)]),
        3.0,
        "{text}"
    );
    assert!(
        a("task_duration_seconds_sum", &[("outcome", "succeeded")]) >= 6.0,
        "the long job ran 6 s: {text}"
    );
    // Only the two valid inputs reached Livy, each timed from its delivery.
    let posts = batches(&livy.stats().await).len() as f64;
    assert_eq!(posts, 2.0);
    assert_eq!(
        a(
            "livy_requests_total",
            &[("route", "POST /batches"), ("status", "201")]
        ),
        posts,
        "{text}"
    );
    assert_eq!(
        a("livy_requests_total", &[("route", "POST /batches")]),
        posts
    );
    assert_eq!(
        a(
            "task_delivery_to_submit_seconds_count",
            &[("activity", &name)]
        ),
        posts
    );
    // Batch states come from listings of Livy's batches.
    assert!(
        a(
            "livy_requests_total",
            &[("route", "GET /batches"), ("status", "200")]
        ) >= 2.0,
        "{text}"
    );
    assert!(after.has(
        &m("livy_request_duration_seconds_bucket"),
        &[("route", "POST /batches"), ("le", "+Inf")]
    ));
    // The dead job's log tail was read for its cause.
    assert!(
        a(
            "livy_requests_total",
            &[("route", "GET /batches/{name}/log")]
        ) >= 1.0
    );
    // The test Livy also answers as the ResourceManager: the ends were cross-checked there.
    assert!(
        a(
            "yarn_requests_total",
            &[("route", "GET /ws/v1/cluster/apps")]
        ) >= 1.0,
        "{text}"
    );
    // Step Functions calls: one success, two failures, heartbeats counted both ways.
    let sfn_ok = |api| a("sfn_requests_total", &[("api", api), ("result", "ok")]);
    assert_eq!(sfn_ok("SendTaskSuccess"), 1.0, "{text}");
    assert_eq!(sfn_ok("SendTaskFailure"), 2.0, "{text}");
    assert!(sfn_ok("SendTaskHeartbeat") >= 2.0, "{text}");
    assert_eq!(
        a("heartbeats_total", &[("activity", &name), ("result", "ok")]),
        sfn_ok("SendTaskHeartbeat"),
        "{text}"
    );
    assert_eq!(
        a("polls_total", &[("activity", &name), ("result", "task")]),
        3.0
    );
    assert_eq!(
        sfn_ok("GetActivityTask"),
        a("polls_total", &[("result", "task")]) + a("polls_total", &[("result", "empty")])
    );
    // Nothing in flight any more.
    assert_eq!(a("batches", &[]), 0.0, "{text}");
    assert_eq!(a("journal_entries", &[]), 0.0);
    assert_eq!(a("worker_task_slots_used", &[]), 0.0);
    assert_eq!(a("worker_task_slots_available", &[]), 32.0);
    assert_eq!(a("journal_write_failures_total", &[]), 0.0);
    assert_eq!(a("ready", &[]), 1.0);
    assert!(after.has(&m("build_info"), &[("version", env!("CARGO_PKG_VERSION"))]));
    assert!(a("polls_open", &[("activity", &name)]) <= 2.0);
    // No token, batch name or execution in any label or value.
    assert!(!text.contains("long-") && !text.contains("dies-"), "{text}");
    assert!(!text.contains(&long) && !text.contains(&dead), "{text}");

    // Prometheus's own linter takes the exposition as it is.
    let lint = promtool_check_metrics(text);
    assert!(lint.is_empty(), "promtool check metrics: {lint}");
    std::fs::write(dir.join("metrics-after-run.txt"), text).expect("keep the scrape");

    // Livy down: not ready, naming Livy; alive all the same; back when Livy is.
    livy.kill().await;
    let down = mon
        .until(
            "readyz",
            503,
            |b| failing(b) == ["livy"],
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        down["checks"]["livy"], "livy does not answer its probe",
        "{down}"
    );
    assert_eq!(mon.scrape().await.sum(&m("livy_up"), &[]), 0.0);
    assert_eq!(mon.scrape().await.sum(&m("ready"), &[]), 0.0);
    let (status, _) = mon.health("healthz").await.expect("healthz");
    assert_eq!(status, 200, "waiting for Livy is not being stuck");
    livy.restart().await;
    mon.until("readyz", 200, |_| true, Duration::from_secs(20))
        .await;

    // Shutting down: not ready, for that reason alone, while open polls return.
    worker.signal("TERM");
    let stopping = mon
        .until(
            "readyz",
            503,
            |b| failing(b) == ["shutdown"],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        stopping["checks"]["shutdown"],
        "the worker is shutting down"
    );
    let exit = worker.exit(Duration::from_secs(90)).await;
    assert!(exit.success(), "{exit:?}");
}

/// `promtool check metrics` on `text`: its complaints, empty when there are none.
pub fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/rig/install.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        format!("{:?}: {said}", out.status)
    }
}

#[test]
fn the_scrape_parser_reads_quoted_braces_escapes_and_infinities() {
    let s = Scrape::parse(
        "# HELP x y\nx_total{route=\"GET /batches/{name}\",status=\"200\"} 3\nx_bucket{le=\"+Inf\",a=\"q\\\"x\"} 2\nplain 1.5\n"
            .to_owned(),
    );
    assert_eq!(s.sum("x_total", &[("route", "GET /batches/{name}")]), 3.0);
    assert_eq!(s.sum("x_bucket", &[("le", "+Inf"), ("a", "q\"x")]), 2.0);
    assert_eq!(s.sum("plain", &[]), 1.5);
    assert_eq!(s.sum("x_total", &[("status", "500")]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_counts_the_task_it_resumed_and_its_report() {
    let (dir, sfn, livy, activity) = rig("metrics-resume", &[]).await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut first = Worker::start(&dir, &activity, &livy.url, &["--metrics-listen", &addr]);
    let ex = sfn
        .start(
            &sm,
            &json!({"File": "sim:success?run=6", "Name": "resumed"}),
        )
        .await;
    livy.until("the batch running", Duration::from_secs(30), |s| {
        running(s) == 1
    })
    .await;
    first.kill9().await;

    let addr = format!("127.0.0.1:{}", free_port());
    let _second = Worker::start(&dir, &activity, &livy.url, &["--metrics-listen", &addr]);
    let mon = Monitor::new(&addr);
    mon.until("readyz", 200, |_| true, Duration::from_secs(30))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let name = activity.rsplit(':').next().expect("name");
    let s = mon.scrape().await;
    assert_eq!(
        s.sum(&m("resumes_total"), &[("outcome", "followed")]),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(s.sum(&m("resumes_total"), &[]), 1.0);
    assert_eq!(
        s.sum(&m("tasks_received_total"), &[]),
        0.0,
        "nothing new was delivered"
    );
    assert_eq!(
        s.sum(
            &m("tasks_finished_total"),
            &[("activity", name), ("outcome", "succeeded")]
        ),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(
        s.sum(&m("livy_requests_total"), &[("route", "POST /batches")]),
        0.0,
        "the batch was followed, not posted again"
    );
}
