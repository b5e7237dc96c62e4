//! Component tests: one task's supervision against in-process fakes of Step Functions, Livy and
//! the YARN ResourceManager, on tokio's paused clock — heartbeat cadence, retry windows, outage
//! limits, the retention rule and report fallbacks, deterministically and in milliseconds, with
//! production timings (30 s heartbeats, 2 min retry window, 1 h outage limit, 10 min retention).

mod fakes;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fakes::{FakeLivy, FakeSfn, FakeYarn, Sent};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use spark_activity_worker::batch::{self, Timing};
use spark_activity_worker::budget::{Budget, Budgeted};
use spark_activity_worker::config::Endpoint;
use spark_activity_worker::journal::{Entry, Journal};
use spark_activity_worker::livy::CreateBatch;
use spark_activity_worker::policy::Policy;
use spark_activity_worker::request::Rules;
use spark_activity_worker::sfn::{SfnError, Task, TaskToken, Tasks};
use spark_activity_worker::supervisor::{CONFIRM_GONE, Context, InFlight, Settings};
use spark_activity_worker::task;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

const HEARTBEAT: Duration = Duration::from_secs(30);
const ACTIVITY: &str = "arn:aws:states:us-east-1:123456789012:activity:etl";

fn timing() -> Timing {
    Timing {
        sync_interval: Duration::from_secs(10),
        livy_retry_timeout: Duration::from_secs(120),
        livy_outage_limit: Duration::from_secs(3600),
        livy_retention: Duration::from_secs(600),
        yarn_lookup_timeout: Duration::from_secs(120),
    }
}

struct Rig {
    ctx: Arc<Context>,
    sfn: Arc<FakeSfn>,
    livy: Arc<FakeLivy>,
    yarn: Arc<FakeYarn>,
    journal: Journal,
    dir: PathBuf,
    start: Instant,
}

fn rig(name: &str, timing: Timing) -> Rig {
    rig_with(name, timing, |sfn| sfn)
}

/// A rig whose roles reach the fake Step Functions through `wrap` (the call budget).
fn rig_with(
    name: &str,
    timing: Timing,
    wrap: impl FnOnce(Arc<dyn Tasks>) -> Arc<dyn Tasks>,
) -> Rig {
    // The worker's log, shown for a failing test (RUST_LOG=debug for more).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let n: u64 = rand::random();
    let dir = std::env::temp_dir().join(format!("saw-component-{name}-{n:x}"));
    let journal = Journal::open(&dir).expect("journal");
    let sfn = Arc::new(FakeSfn::default());
    let yarn = Arc::new(FakeYarn::default());
    let livy = Arc::new(FakeLivy::new(yarn.clone()));
    let ctx = Arc::new(Context {
        sfn: wrap(sfn.clone()),
        livy: livy.clone(),
        yarn: yarn.clone(),
        settings: Settings {
            heartbeat_interval: HEARTBEAT,
            request: Rules {
                default_file: None,
                allowed_endpoints: vec![Endpoint {
                    host: "livy.test".into(),
                    port: 8998,
                }],
                policy: Policy::default(),
            },
            timing: timing.into(),
        },
        in_flight: InFlight::default(),
        journal: journal.clone(),
        detach: CancellationToken::new(),
        kill: CancellationToken::new(),
    });
    Rig {
        ctx,
        sfn,
        livy,
        yarn,
        journal,
        dir,
        start: Instant::now(),
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    fn deliver(&self, input: Value) -> JoinHandle<()> {
        self.deliver_to(ACTIVITY, input)
    }

    fn deliver_to(&self, activity: &str, input: Value) -> JoinHandle<()> {
        let task = Task {
            token: TaskToken::new(format!("token-{}", rand::random::<u64>())),
            input: input.to_string(),
        };
        tokio::spawn(task::delivered(self.ctx.clone(), activity.into(), task))
    }

    /// A journal entry as the worker would have written it for `name`, not yet submitted.
    fn entry(&self, token: &TaskToken, name: &str) -> (String, Entry) {
        let key = token.short_hash();
        let mut request = CreateBatch {
            file: "s3://b/app.py".into(),
            name: batch::name_for(Some(name), &key),
            ..CreateBatch::default()
        };
        batch::add_tag(&mut request, &batch::tag_for(&key));
        let entry = Entry::new(
            token.shared(),
            ACTIVITY.into(),
            self.livy.base.to_string(),
            Some(name.into()),
            request,
        );
        (key, entry)
    }

    async fn resume(&self, key: String, entry: Entry) -> JoinHandle<()> {
        self.journal.put(&key, &entry).await.expect("journal write");
        tokio::spawn(task::resumed(self.ctx.clone(), key, Box::new(entry)))
    }

    /// Advances the paused clock in 1 s steps until `cond` holds (at most `within`).
    async fn until(&self, what: &str, within: Duration, cond: impl Fn(&Rig) -> bool) {
        let deadline = Instant::now() + within;
        while !cond(self) {
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            sleep(Duration::from_secs(1)).await;
        }
    }

    fn name(&self) -> String {
        self.livy.state().posts[0].name.clone()
    }

    fn app(&self) -> String {
        self.yarn.state().apps[0].id.clone()
    }

    /// Livy and YARN both see the application end.
    fn end(&self, livy_state: &str, yarn_state: &str, final_status: &str) {
        self.livy.set(&self.name(), livy_state);
        self.yarn.set(&self.app(), yarn_state, final_status);
    }

    fn reports(&self) -> Vec<Sent> {
        self.sfn.state().reports.clone()
    }

    async fn report(&self, within: Duration) -> Sent {
        self.until("a report", within, |r| !r.reports().is_empty())
            .await;
        self.reports()[0].clone()
    }

    fn journal_entries(&self) -> usize {
        self.journal.load().expect("load").len()
    }

    fn since_start(&self) -> Duration {
        Instant::now() - self.start
    }
}

/// The metrics every test's tasks record (one recorder for the process: a test reads only the
/// series of an activity of its own).
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        spark_activity_worker::metrics::builder()
            .expect("buckets")
            .install_recorder()
            .expect("the only recorder")
    })
}

/// How many tasks of `activity` ended with `outcome`, by the worker's metrics.
fn finished(activity: &str, outcome: &str) -> u64 {
    let label = spark_activity_worker::metrics::activity_label(activity);
    let series = "spark_activity_worker_tasks_finished_total{";
    metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(series))
        .filter(|l| l.contains(&format!("activity=\"{label}\"")))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn failure(sent: &Sent) -> (&str, &str) {
    match sent {
        Sent::Failure { error, cause } => (error, cause),
        other => panic!("not a failure: {other:?}"),
    }
}

fn output(sent: &Sent) -> Value {
    match sent {
        Sent::Success(out) => serde_json::from_str(out).expect("output json"),
        other => panic!("not a success: {other:?}"),
    }
}

fn input() -> Value {
    json!({"File": "s3://b/app.py", "Name": "etl"})
}

// ---------------------------------------------------------------------------------------------
// Heartbeats

#[tokio::test(start_paused = true)]
async fn a_delivered_task_heartbeats_at_once_alongside_the_post_then_every_interval_in_its_own_phase()
 {
    let r = rig("hb", timing());
    let h = r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.until("a heartbeat", Duration::from_secs(5), |r| {
        !r.sfn.state().heartbeats.is_empty()
    })
    .await;
    let first = r.sfn.state().heartbeats[0];
    assert!(first - r.start < Duration::from_secs(1), "sent at once");

    sleep(Duration::from_secs(95)).await;
    let beats = r.sfn.state().heartbeats.clone();
    assert_eq!(
        beats.len(),
        4,
        "at 0, then 15-30, 45-60 and 75-90 s: {beats:?}"
    );
    // The second takes the task's own phase in the interval's second half.
    let phase = beats[1] - beats[0];
    assert!(
        phase >= HEARTBEAT / 2 && phase <= HEARTBEAT + Duration::from_secs(1),
        "{phase:?}"
    );
    for pair in beats[1..].windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= HEARTBEAT && gap < HEARTBEAT + Duration::from_secs(1),
            "{gap:?}"
        );
    }
    r.end("success", "FINISHED", "SUCCEEDED");
    let out = output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(out["name"], "etl");
    h.await.expect("supervisor");
    assert_eq!(r.journal_entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_delivered_task_is_posted_while_its_first_heartbeat_is_still_being_retried() {
    let r = rig("hb-alongside", timing());
    r.sfn.state().down_until = Some(r.start + Duration::from_secs(3));
    let _h = r.deliver(input());
    r.until("a post", Duration::from_secs(1), |r| r.livy.posts() == 1)
        .await;
    assert!(
        r.sfn.state().heartbeats.is_empty(),
        "posted before any heartbeat got through"
    );
    r.until("a heartbeat", Duration::from_secs(10), |r| {
        !r.sfn.state().heartbeats.is_empty()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_delivered_task_whose_first_heartbeat_is_called_gone_is_asked_again_and_runs_on() {
    let r = rig("hb-unknown", timing());
    // LocalStack answers `InvalidToken` to a heartbeat sent within milliseconds of the delivery.
    r.sfn.state().unknown_until = Some(r.start + Duration::from_millis(20));
    let h = r.deliver(input());
    r.until("a heartbeat", Duration::from_secs(5), |r| {
        !r.sfn.state().heartbeats.is_empty()
    })
    .await;
    let first = r.sfn.state().heartbeats[0] - r.start;
    assert!(
        first >= CONFIRM_GONE && first < CONFIRM_GONE + Duration::from_secs(1),
        "asked again after {CONFIRM_GONE:?}: {first:?}"
    );
    assert_eq!(r.livy.posts(), 1);
    assert!(r.livy.state().deletes.is_empty(), "the batch is not killed");
    r.end("success", "FINISHED", "SUCCEEDED");
    let out = output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(out["name"], "etl");
    h.await.expect("supervisor");
}

#[tokio::test(start_paused = true)]
async fn a_delivered_task_that_step_functions_closed_at_once_has_its_batch_killed() {
    let r = rig("hb-gone", timing());
    r.sfn.state().gone_at = Some(r.start);
    let h = r.deliver(input());
    h.await.expect("supervisor");
    assert!(
        r.sfn.state().reports.is_empty(),
        "nothing to report to a closed task"
    );
    assert_eq!(r.journal_entries(), 0);
    let posts = r.livy.posts();
    let deletes = r.livy.state().deletes.clone();
    assert!(
        posts == 0 || !deletes.is_empty(),
        "a batch that was posted is deleted: {posts} posts, deletes {deletes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn resumed_tasks_heartbeat_at_once_then_spread_over_an_interval() {
    let r = rig("hb-resume", timing());
    let mut keys = Vec::new();
    for i in 0..20 {
        let token = TaskToken::new(format!("resumed-{i}"));
        let (key, mut entry) = r.entry(&token, &format!("job{i}"));
        // Submitted before the restart: Livy holds it, running.
        r.livy.state().held.push(fakes::Held {
            id: i,
            name: Some(entry.batch_name.to_string()),
            state: "running".into(),
            app_id: None,
        });
        entry.batch_id = Some(i);
        keys.push(r.resume(key, entry).await);
    }
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        r.sfn.state().heartbeats.len(),
        20,
        "each resumed task beats at once"
    );
    sleep(HEARTBEAT).await;
    let beats = r.sfn.state().heartbeats.clone();
    assert_eq!(beats.len(), 40, "and once more within one interval");
    let mut second: Vec<Duration> = beats[20..].iter().map(|t| *t - r.start).collect();
    second.sort();
    second.dedup();
    assert!(
        second.len() > 10,
        "second heartbeats are spread, not bunched: {second:?}"
    );
    assert!(second[0] >= HEARTBEAT / 2, "{second:?}");
    r.ctx.detach.cancel();
    for k in keys {
        k.await.expect("supervisor");
    }
}

#[tokio::test(start_paused = true)]
async fn a_resumed_task_whose_token_expired_is_never_submitted() {
    let r = rig("expired", timing());
    r.sfn.state().gone_at = Some(Instant::now());
    let token = TaskToken::new("expired-token");
    let (key, entry) = r.entry(&token, "late");
    r.resume(key, entry).await.await.expect("supervisor");
    assert_eq!(r.livy.posts(), 0, "never submitted");
    assert!(r.reports().is_empty());
    assert_eq!(r.journal_entries(), 0, "forgotten");
}

// ---------------------------------------------------------------------------------------------
// Livy outages

#[tokio::test(start_paused = true)]
async fn an_outage_three_times_the_retry_window_keeps_supervising_and_ends_in_success() {
    let r = rig("outage", timing());
    let h = r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.livy.set(&r.name(), "running");
    sleep(Duration::from_secs(20)).await;
    r.livy.state().down = true;
    let beats_before = r.sfn.state().heartbeats.len();
    sleep(Duration::from_secs(360)).await;
    assert!(
        r.reports().is_empty(),
        "an outage alone never ends the task: {:?}",
        r.reports()
    );
    let beats = r.sfn.state().heartbeats.len() - beats_before;
    assert!(beats >= 11, "heartbeats go on through the outage: {beats}");
    r.livy.state().down = false;
    r.end("success", "FINISHED", "SUCCEEDED");
    let out = output(&r.report(Duration::from_secs(60)).await);
    assert_eq!(out["state"], "success");
    assert_eq!(r.livy.posts(), 1, "one batch");
    h.await.expect("supervisor");
}

#[tokio::test(start_paused = true)]
async fn an_application_that_ends_while_livy_is_down_is_reported_from_yarn() {
    let r = rig("outage-yarn", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.livy.set(&r.name(), "running");
    r.livy.state().down = true;
    sleep(Duration::from_secs(600)).await;
    r.yarn.set(&r.app(), "FINISHED", "SUCCEEDED");
    let out = output(&r.report(Duration::from_secs(120)).await);
    assert_eq!(out["applicationId"], r.app());
    assert_eq!(out["livyUrl"], Value::Null, "Livy did not tell the end");
}

#[tokio::test(start_paused = true)]
async fn past_the_outage_limit_the_application_is_killed_in_yarn_and_reported_unavailable() {
    let r = rig("outage-limit", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.livy.set(&r.name(), "running");
    r.yarn.set(&r.app(), "RUNNING", "UNDEFINED");
    sleep(Duration::from_secs(15)).await;
    let down_at = Instant::now();
    r.livy.state().down = true;
    let sent = r.report(Duration::from_secs(2 * 3600)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "Livy.Unavailable", "{cause}");
    assert!(cause.contains("was killed in YARN"), "{cause}");
    let took = Instant::now() - down_at;
    assert!(
        took >= Duration::from_secs(3600) && took < Duration::from_secs(3600 + 120),
        "{took:?}"
    );
    assert_eq!(r.yarn.app_state(&r.app()).as_deref(), Some("KILLED"));
}

#[tokio::test(start_paused = true)]
async fn past_the_outage_limit_with_yarn_unreachable_too_the_outcome_is_unknown() {
    let r = rig("outage-unknown", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.livy.set(&r.name(), "running");
    sleep(Duration::from_secs(15)).await;
    r.livy.state().down = true;
    r.yarn.state().down = true;
    let sent = r.report(Duration::from_secs(2 * 3600)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "SparkJob.Unknown", "{cause}");
    assert!(cause.contains("may still run"), "{cause}");
}

// ---------------------------------------------------------------------------------------------
// Submission

#[tokio::test(start_paused = true)]
async fn an_answer_lost_on_the_last_post_is_found_by_the_final_lookup() {
    let r = rig(
        "lost-answer",
        Timing {
            livy_retry_timeout: Duration::from_millis(100),
            ..timing()
        },
    );
    r.livy.state().lose_post_answers = true;
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    sleep(Duration::from_secs(15)).await;
    assert!(
        r.reports().is_empty(),
        "adopted, not failed: {:?}",
        r.reports()
    );
    r.end("success", "FINISHED", "SUCCEEDED");
    output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(r.livy.posts(), 1, "never posted twice");
}

#[tokio::test(start_paused = true)]
async fn refused_connections_for_the_whole_window_are_livy_unavailable() {
    let r = rig("refused", timing());
    r.livy.state().down = true;
    r.deliver(input());
    let sent = r.report(Duration::from_secs(300)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "Livy.Unavailable");
    assert!(cause.contains("no request reached Livy"), "{cause}");
    assert!(
        r.since_start() <= Duration::from_secs(121),
        "{:?}",
        r.since_start()
    );
    assert!(r.yarn.state().apps.is_empty());
}

#[tokio::test(start_paused = true)]
async fn unanswered_posts_end_in_livy_unavailable_only_once_both_confirm_nothing_exists() {
    let r = rig("no-answer", timing());
    {
        let mut l = r.livy.state();
        l.down = true;
        l.reset = true;
    }
    r.deliver(input());
    // The window ends at 2 min; Livy still does not answer, so nothing can be concluded.
    sleep(Duration::from_secs(600)).await;
    assert!(r.reports().is_empty(), "{:?}", r.reports());
    r.livy.state().down = false;
    let sent = r.report(Duration::from_secs(120)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "Livy.Unavailable");
    assert!(cause.contains("it was never created"), "{cause}");
}

#[tokio::test(start_paused = true)]
async fn a_task_gone_during_a_post_waits_for_it_and_deletes_the_batch() {
    let r = rig("gone-post", timing());
    r.livy.state().post_delay = Duration::from_secs(90);
    r.sfn.state().gone_at = Some(Instant::now() + Duration::from_secs(20));
    let h = r.deliver(input());
    h.await.expect("supervisor");
    assert!(
        r.since_start() >= Duration::from_secs(90),
        "the POST was let finish"
    );
    let name = r.name();
    assert_eq!(
        r.livy.state().deletes,
        vec![name],
        "what it created is deleted"
    );
    assert_eq!(r.yarn.app_state(&r.app()).as_deref(), Some("KILLED"));
    assert!(r.reports().is_empty());
    assert_eq!(r.journal_entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_submission_is_not_retried_and_the_ghost_batch_is_deleted() {
    let r = rig("rejected", timing());
    r.livy.state().reject_posts =
        Some("Rejected, Reason: requirement failed: Local path /etc/passwd cannot be added to user sessions.".into());
    let sent = r.deliver(input());
    sent.await.expect("supervisor");
    let reports = r.reports();
    let (error, cause) = failure(&reports[0]);
    assert_eq!(error, "Livy.Rejected");
    assert!(
        cause.contains("cannot be added to user sessions"),
        "{cause}"
    );
    assert_eq!(r.livy.posts(), 1, "a 4xx is not retried");
    let name = r.name();
    assert_eq!(
        r.livy.state().deletes,
        vec![name],
        "the ghost Livy kept is deleted"
    );
}

// ---------------------------------------------------------------------------------------------
// Resume and the retention rule

#[tokio::test(start_paused = true)]
async fn an_old_entry_is_looked_up_by_name_before_the_retention_rule() {
    let r = rig("resume-by-name", timing());
    let token = TaskToken::new("old-but-running");
    let (key, mut entry) = r.entry(&token, "etl");
    entry.created_at = Some(rfc3339_ago(Duration::from_secs(20 * 60)));
    r.livy.state().held.push(fakes::Held {
        id: 4,
        name: Some(entry.batch_name.to_string()),
        state: "running".into(),
        app_id: None,
    });
    r.resume(key, entry.clone()).await;
    sleep(Duration::from_secs(15)).await;
    assert!(r.reports().is_empty(), "adopted: {:?}", r.reports());
    r.livy.set(&entry.batch_name, "success");
    let out = output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(out["batchId"], 4);
    assert_eq!(r.livy.posts(), 0, "never resubmitted");
}

#[tokio::test(start_paused = true)]
async fn credentials_in_an_older_journal_entrys_url_are_never_used_or_reported() {
    let r = rig("resume-creds", timing());
    let token = TaskToken::new("written-by-an-older-version");
    let (key, mut entry) = r.entry(&token, "etl");
    let mut with_creds = r.livy.base.clone();
    with_creds.set_username("spark").expect("user");
    with_creds.set_password(Some("s3cret")).expect("password");
    entry.livy_url = with_creds.to_string();
    r.livy.state().held.push(fakes::Held {
        id: 7,
        name: Some(entry.batch_name.to_string()),
        state: "success".into(),
        app_id: None,
    });
    r.resume(key, entry).await;
    let out = output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(out["batchId"], 7);
    let shown = out.to_string();
    assert!(
        !shown.contains("s3cret") && !shown.contains("spark@"),
        "{shown}"
    );
    assert_eq!(
        out["livyUrl"],
        format!("{}/batches/7", r.livy.base.as_str().trim_end_matches('/'))
    );
}

#[tokio::test(start_paused = true)]
async fn an_old_entry_only_yarn_knows_is_followed_there() {
    let r = rig("resume-yarn", timing());
    let token = TaskToken::new("old-in-yarn");
    let (key, mut entry) = r.entry(&token, "etl");
    entry.created_at = Some(rfc3339_ago(Duration::from_secs(20 * 60)));
    let app = r.yarn.add(
        &format!("livy-batch-0-x,{}", batch::tag_for(&key)),
        "RUNNING",
    );
    r.resume(key, entry).await;
    sleep(Duration::from_secs(60)).await;
    assert!(r.reports().is_empty(), "{:?}", r.reports());
    r.yarn.set(&app, "FINISHED", "SUCCEEDED");
    let out = output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(out["applicationId"], app);
    assert_eq!(r.livy.posts(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_old_entry_neither_livy_nor_yarn_knows_is_lost_not_resubmitted() {
    let r = rig("resume-old", timing());
    let token = TaskToken::new("old-unknown");
    let (key, mut entry) = r.entry(&token, "etl");
    entry.created_at = Some(rfc3339_ago(Duration::from_secs(20 * 60)));
    r.resume(key, entry).await;
    let sent = r.report(Duration::from_secs(30)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "SparkJob.Lost");
    assert!(cause.contains("not resubmitted"), "{cause}");
    assert_eq!(r.livy.posts(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_young_entry_neither_livy_nor_yarn_knows_is_submitted_once() {
    let r = rig("resume-young", timing());
    let token = TaskToken::new("young-unknown");
    let (key, mut entry) = r.entry(&token, "etl");
    entry.created_at = Some(rfc3339_ago(Duration::from_secs(60)));
    r.resume(key, entry).await;
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.end("success", "FINISHED", "SUCCEEDED");
    output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(r.livy.posts(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_entry_dated_in_the_future_by_a_clock_that_stepped_back_is_never_resubmitted() {
    let r = rig("resume-future", timing());
    let token = TaskToken::new("from-the-future");
    let (key, mut entry) = r.entry(&token, "etl");
    let future = SystemTime::now() + Duration::from_secs(3600);
    entry.created_at = Some(humantime::format_rfc3339_millis(future).to_string());
    r.resume(key, entry).await;
    let sent = r.report(Duration::from_secs(30)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "SparkJob.Lost");
    assert!(cause.contains("later than this clock's now"), "{cause}");
    assert_eq!(r.livy.posts(), 0);
}

// ---------------------------------------------------------------------------------------------
// Livy forgetting or misreporting

#[tokio::test(start_paused = true)]
async fn a_batch_livy_forgets_is_followed_in_yarn_and_anothers_batch_on_its_id_is_untouched() {
    let r = rig("forgotten", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.livy.set(&r.name(), "running");
    r.yarn.set(&r.app(), "RUNNING", "UNDEFINED");
    sleep(Duration::from_secs(20)).await;
    r.livy.forget_all();
    assert_eq!(r.livy.add_unnamed(), 0, "another client's batch takes id 0");
    sleep(Duration::from_secs(120)).await;
    assert!(
        r.reports().is_empty(),
        "the application still runs: {:?}",
        r.reports()
    );
    r.yarn.set(&r.app(), "FINISHED", "SUCCEEDED");
    let out = output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(out["applicationId"], r.app());
    assert!(
        r.livy.state().deletes.is_empty(),
        "the other batch is untouched"
    );
    assert_eq!(r.livy.state().held.len(), 1);
    assert_eq!(r.livy.posts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_never_reached_yarn_is_lost_only_after_the_lookup_timeout() {
    let r = rig("never-in-yarn", timing());
    // spark-submit never reaches YARN, and Livy then loses the batch.
    r.livy.state().no_yarn = true;
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    let lost_at = Instant::now();
    r.livy.forget_all();
    let sent = r.report(Duration::from_secs(300)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "SparkJob.Lost", "{cause}");
    assert!(cause.contains("nothing of this task runs"), "{cause}");
    let waited = Instant::now() - lost_at;
    assert!(
        waited >= Duration::from_secs(100),
        "waited for YARN: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn livy_saying_dead_while_yarn_still_runs_is_followed_to_yarns_end() {
    let r = rig("misreport", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.livy.set(&r.name(), "dead");
    r.yarn.set(&r.app(), "RUNNING", "UNDEFINED");
    sleep(Duration::from_secs(120)).await;
    assert!(r.reports().is_empty(), "{:?}", r.reports());
    r.yarn.set(&r.app(), "FINISHED", "SUCCEEDED");
    output(&r.report(Duration::from_secs(30)).await);
}

#[tokio::test(start_paused = true)]
async fn a_batch_stuck_in_recovering_after_its_application_ended_is_settled_by_yarn() {
    let r = rig("stuck-recovering", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.livy.set(&r.name(), "recovering");
    r.yarn.set(&r.app(), "RUNNING", "UNDEFINED");
    sleep(Duration::from_secs(60)).await;
    assert!(r.reports().is_empty(), "still running: {:?}", r.reports());
    // Livy never leaves `recovering` (LIVY-727); YARN knows the application succeeded.
    r.yarn.set(&r.app(), "FINISHED", "SUCCEEDED");
    let out = output(&r.report(Duration::from_secs(30)).await);
    assert_eq!(out["applicationId"], r.app());
}

#[tokio::test(start_paused = true)]
async fn a_livy_failure_yarn_calls_a_success_is_a_success() {
    let r = rig("misreport-end", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.end("dead", "FINISHED", "SUCCEEDED");
    output(&r.report(Duration::from_secs(30)).await);
}

#[tokio::test(start_paused = true)]
async fn a_failure_carries_yarn_diagnostics_and_the_livy_log() {
    let r = rig("failed", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.yarn.state().apps[0].diagnostics = "User class threw exception: boom".into();
    r.end("dead", "FAILED", "FAILED");
    let sent = r.report(Duration::from_secs(30)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "SparkJob.Failed");
    assert!(
        cause.contains("YARN diagnostics: User class threw exception"),
        "{cause}"
    );
    assert!(cause.contains("Traceback: boom"), "{cause}");
}

// ---------------------------------------------------------------------------------------------
// Reports

#[tokio::test(start_paused = true)]
async fn a_report_refused_for_good_falls_back_to_report_refused_once() {
    let r = rig("refused-report", timing());
    r.sfn.state().refuse.push_back(SfnError::Refused {
        code: "AccessDeniedException".into(),
        message: "not authorized to perform states:SendTaskSuccess".into(),
        kms: false,
    });
    let h = r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.end("success", "FINISHED", "SUCCEEDED");
    h.await.expect("supervisor");
    let reports = r.reports();
    assert_eq!(reports.len(), 1);
    let (error, cause) = failure(&reports[0]);
    assert_eq!(error, "Worker.ReportRefused");
    assert!(
        cause.contains("AccessDeniedException") && cause.contains("success with output"),
        "{cause}"
    );
    assert_eq!(r.sfn.state().report_calls, 2, "never retried forever");
    assert_eq!(r.journal_entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_kms_refusal_falls_back_to_a_failure_without_error_and_cause() {
    let r = rig("kms", timing());
    r.sfn.state().refuse.push_back(SfnError::Refused {
        code: "KmsAccessDeniedException".into(),
        message: "no kms:GenerateDataKey".into(),
        kms: true,
    });
    let h = r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.end("dead", "FAILED", "FAILED");
    h.await.expect("supervisor");
    assert_eq!(r.reports(), vec![Sent::Bare]);
}

#[tokio::test(start_paused = true)]
async fn when_every_report_is_refused_the_worker_gives_up_instead_of_retrying_forever() {
    let r = rig("give-up", timing());
    for code in [
        "InvalidOutput",
        "AccessDeniedException",
        "AccessDeniedException",
    ] {
        r.sfn.state().refuse.push_back(SfnError::Refused {
            code: code.into(),
            message: "no".into(),
            kms: false,
        });
    }
    let h = r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.end("success", "FINISHED", "SUCCEEDED");
    h.await.expect("supervisor ends");
    assert!(r.reports().is_empty());
    assert_eq!(r.sfn.state().report_calls, 3);
    assert_eq!(r.journal_entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn under_a_call_budget_ten_tasks_and_throttling_fail_nothing_and_never_burst() {
    let r = rig_with("budget", timing(), |sfn| {
        Arc::new(Budgeted::new(sfn, Budget::new(2.0)))
    });
    for _ in 0..6 {
        r.sfn
            .state()
            .refuse
            .push_back(SfnError::Throttled("Rate exceeded".into()));
    }
    let handles: Vec<_> = (0..10).map(|_| r.deliver(input())).collect();
    r.until("ten posts", Duration::from_secs(60), |r| {
        r.livy.posts() == 10
    })
    .await;
    let names: Vec<String> = r
        .livy
        .state()
        .posts
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let apps: Vec<String> = r.yarn.state().apps.iter().map(|a| a.id.clone()).collect();
    for (name, app) in names.iter().zip(&apps) {
        r.livy.set(name, "success");
        r.yarn.set(app, "FINISHED", "SUCCEEDED");
    }
    for h in handles {
        h.await.expect("supervisor");
    }
    let reports = r.reports();
    assert_eq!(reports.len(), 10, "every task reported");
    for sent in &reports {
        output(sent);
    }
    assert_eq!(r.sfn.state().report_calls, 16, "six throttled, retried");
    // Two a second, and a second's worth at most at once: never more than 4 in any second.
    let calls = r.sfn.state().calls.clone();
    for (i, t) in calls.iter().enumerate() {
        let within = calls[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(within <= 4, "{within} calls in the second from call {i}");
    }
}

/// Step Functions applies a report before answering it, so a heartbeat sent meanwhile finds the
/// task closed by that very report: the report's answer, not the heartbeat's, says how it ended.
#[tokio::test(start_paused = true)]
async fn a_heartbeat_that_finds_the_task_closed_by_its_report_in_flight_leaves_it_reported() {
    let r = rig("report-in-flight", timing());
    metrics();
    r.sfn.state().report_takes = Some(HEARTBEAT * 2);
    let activity = format!("{ACTIVITY}-report-in-flight-{:x}", rand::random::<u32>());
    let h = r.deliver_to(&activity, input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.end("success", "FINISHED", "SUCCEEDED");
    let reported = r.report(Duration::from_secs(30)).await;
    let sent_at = Instant::now();
    h.await.expect("supervisor");
    output(&reported);
    assert_eq!(
        r.sfn.state().report_calls,
        1,
        "one report, never sent again"
    );
    let heartbeats_then = r.sfn.state().calls.iter().filter(|t| **t > sent_at).count();
    assert!(
        heartbeats_then >= 1,
        "a heartbeat went out while the report was in flight"
    );
    assert_eq!(
        (
            finished(&activity, "succeeded"),
            finished(&activity, "gone")
        ),
        (1, 0)
    );
}

/// A heartbeat that finds the task closed stops a report being retried: no attempt after it,
/// and the task counts as gone.
#[tokio::test(start_paused = true)]
async fn a_heartbeat_that_finds_the_task_closed_ends_the_retries_of_its_report() {
    let r = rig("report-retry-closed", timing());
    metrics();
    let activity = format!("{ACTIVITY}-report-retry-closed-{:x}", rand::random::<u32>());
    let h = r.deliver_to(&activity, input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    for _ in 0..1000 {
        r.sfn
            .state()
            .refuse
            .push_back(SfnError::Throttled("Rate exceeded".into()));
    }
    r.end("success", "FINISHED", "SUCCEEDED");
    r.until("a report attempt", Duration::from_secs(30), |r| {
        r.sfn.state().report_calls >= 1
    })
    .await;
    // Reports are still throttled when heartbeats start to find the task closed.
    r.sfn.state().unknown_until = Some(Instant::now() + Duration::from_secs(24 * 3600));
    let closed_at = Instant::now();
    h.await.expect("supervisor");
    assert!(
        closed_at.elapsed() <= HEARTBEAT + Duration::from_secs(1),
        "ended at the next heartbeat, not by retrying: {:?}",
        closed_at.elapsed()
    );
    assert!(r.reports().is_empty());
    assert_eq!(
        (
            finished(&activity, "succeeded"),
            finished(&activity, "gone")
        ),
        (0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeats_go_on_while_a_report_is_retried() {
    let r = rig("report-retry", timing());
    let h = r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    for _ in 0..40 {
        r.sfn
            .state()
            .refuse
            .push_back(SfnError::Throttled("Rate exceeded".into()));
    }
    r.end("success", "FINISHED", "SUCCEEDED");
    sleep(Duration::from_secs(15)).await;
    let before = r.sfn.state().heartbeats.len();
    h.await.expect("supervisor");
    let during = r.sfn.state().heartbeats.len() - before;
    assert!(
        during >= 10,
        "heartbeats while the report was retried: {during}"
    );
    assert_eq!(r.reports().len(), 1);
    output(&r.reports()[0]);
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_following_kills_the_application_and_reports_it() {
    let r = rig("panic", timing());
    r.deliver(input());
    r.until("a post", Duration::from_secs(5), |r| r.livy.posts() == 1)
        .await;
    r.livy.state().panic_on_get = true;
    let sent = r.report(Duration::from_secs(60)).await;
    let (error, cause) = failure(&sent);
    assert_eq!(error, "Worker.Panicked");
    assert!(cause.contains("was deleted at Livy"), "{cause}");
    assert_eq!(r.livy.state().deletes.len(), 1);
}

fn rfc3339_ago(ago: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() - ago).to_string()
}
