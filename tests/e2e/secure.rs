//! Secure clusters: Basic credentials, TLS with the cluster's own CA, Kerberos against a real MIT
//! KDC (tests/rig/with-kdc.sh), and the operator policy over task input.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use base64::Engine as _;

use crate::harness::{Livy, Worker, batches, free_port, rig, scratch};

const PASSWORD: &str = "pa55-Sh0uld-N3ver-Leak";

/// Runs the worker binary to its exit (a start that must fail) and returns its exit code and
/// stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spark-activity-worker"))
        .arg("run")
        .args(["--activity-arn", "arn:aws:states:us-east-1:1:activity:a"])
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run worker");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_to_exit`] against a test Livy (and its ResourceManager) with its own state dir under
/// `dir`, plus `extra` flags.
fn start_refused(dir: &Path, name: &str, livy: &Livy, extra: &[&str]) -> (Option<i32>, String) {
    let state = dir.join(format!("state-{name}"));
    let mut args = vec![
        "--livy-url",
        &livy.url,
        "--yarn-url",
        &livy.url,
        "--state-dir",
        state.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    run_to_exit(&args)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

/// The test Livy as a Kerberos SPNEGO acceptor with the realm's `HTTP/localhost` keytab.
async fn kerberos_livy(dir: &Path, extra: &[&str]) -> Livy {
    let (keytab, principal) = (
        kdc("SPARK_TEST_SERVICE_KEYTAB"),
        kdc("SPARK_TEST_SERVICE_PRINCIPAL"),
    );
    let mut args = vec![
        "--kerberos-keytab",
        &keytab,
        "--kerberos-principal",
        &principal,
    ];
    args.extend_from_slice(extra);
    Livy::start(dir, &args).await
}

fn kdc(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the e2e tests under tests/rig/with-kdc.sh (make e2e does)")
    })
}

#[tokio::test]
async fn credentials_in_a_url_are_refused_at_start_and_never_echoed() {
    let state = scratch("url-creds").join("state");
    let state = state.to_str().expect("utf-8");
    for url in [
        format!("http://spark:{PASSWORD}@127.0.0.1:8998"),
        format!("ftp://spark:{PASSWORD}@127.0.0.1:8998"),
    ] {
        let (code, stderr) = run_to_exit(&["--livy-url", &url, "--state-dir", state]);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--livy-url"), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_reach_livy_only_and_never_a_log_or_an_output() {
    let (dir, sfn, livy, activity) = rig("basic", &[]).await;
    drop(livy);
    let pw_file = write(&dir, "livy-password", &format!("{PASSWORD}\n"));
    let livy = Livy::start(
        &dir,
        &["--basic-user", "spark", "--basic-password-file", &pw_file],
    )
    .await;
    // Another Livy a task may name: it must never see the credentials.
    let other = Livy::start(&dir, &[]).await;
    let other_endpoint = format!("127.0.0.1:{}", other.port);

    // A wrong password: Livy refuses it on the first contact, and the start stops there.
    let wrong = write(&dir, "wrong-password", "not-it\n");
    let (code, stderr) = start_refused(
        &dir,
        "wrong",
        &livy,
        &[
            "--livy-auth",
            "basic",
            "--livy-user",
            "spark",
            "--livy-password-file",
            &wrong,
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--livy-auth basic: Livy at"), "{stderr}");
    assert!(
        stderr.contains("refused the worker's credentials (401"),
        "{stderr}"
    );

    // The password from systemd's credential directory, as the unit passes it.
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).expect("mkdir");
    write(&creds, "livy-password", PASSWORD);
    let worker = Worker::start_with_env(
        &dir,
        &activity,
        &livy.url,
        &[
            "--livy-auth",
            "basic",
            "--livy-user",
            "spark",
            "--allowed-livy-endpoint",
            &other_endpoint,
            "--log-level",
            "trace",
        ],
        &[("CREDENTIALS_DIRECTORY", creds.to_str().expect("utf-8"))],
    );
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let ours = sfn
        .start(&sm, &json!({"File": "sim:success?run=1&app=1"}))
        .await;
    let theirs = sfn
        .start(
            &sm,
            &json!({"LivyHost": "127.0.0.1", "LivyPort": other.port,
                    "Parameters": {"File": "sim:success?run=1&app=1"}}),
        )
        .await;
    for ex in [&ours, &theirs] {
        let out = sfn.finish(ex, Duration::from_secs(60)).await;
        assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
        let shown = out.output.expect("output").to_string();
        assert!(
            !shown.contains(PASSWORD) && !shown.contains("spark:"),
            "{shown}"
        );
    }
    let stats = livy.stats().await;
    assert!(stats["basic_auths"].as_u64().unwrap_or(0) >= 3, "{stats}");
    assert_eq!(
        stats["auth_rejected"], 1,
        "only the wrong password's probe: {stats}"
    );
    let other_stats = other.stats().await;
    assert_eq!(batches(&other_stats).len(), 1, "{other_stats}");
    assert_eq!(
        other_stats["credentialed_requests"], 0,
        "credentials went to another origin: {other_stats}"
    );
    let log = worker.log_text();
    assert!(log.contains("worker started"), "{log}");
    // The header value is what a request dump would show.
    let header = base64::engine::general_purpose::STANDARD.encode(format!("spark:{PASSWORD}"));
    assert!(!log.contains(PASSWORD) && !log.contains(&header), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_clusters_ca_runs_spark_and_an_untrusted_certificate_stops_the_start() {
    let (dir, sfn, livy, activity) = rig("tls", &[]).await;
    drop(livy);
    let ca = dir.join("cluster-ca.pem");
    let livy = Livy::start(&dir, &["--tls-ca-out", ca.to_str().expect("utf-8")]).await;
    assert!(livy.url.starts_with("https://"), "{}", livy.url);
    let ca = ca.to_str().expect("utf-8").to_owned();

    // Without the CA, and with another CA: one line at start, exit 2, no task touched.
    let other_ca = dir.join("other-ca.pem");
    let other = Livy::start(&dir, &["--tls-ca-out", other_ca.to_str().expect("utf-8")]).await;
    for (name, extra) in [
        ("no-ca", vec![]),
        (
            "other-ca",
            vec!["--livy-ca-file", other_ca.to_str().expect("utf-8")],
        ),
    ] {
        let (code, stderr) = start_refused(&dir, name, &livy, &extra);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains("certificate is not trusted"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains("--livy-ca-file"), "{name}: {stderr}");
    }
    drop(other);

    // With the cluster's CA: a job runs over HTTPS, Livy and the ResourceManager both.
    let _worker = Worker::start(&dir, &activity, &livy.url, &["--livy-ca-file", &ca]);
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let ex = sfn
        .start(&sm, &json!({"File": "sim:success?run=1&app=1"}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let o = out.output.expect("output");
    assert!(
        o["livyUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{o}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_livy_that_comes_back_untrusted_stops_the_worker_and_fails_no_task() {
    let (dir, sfn, livy, activity) = rig("tls-later", &[]).await;
    drop(livy);
    // The worker trusts CA A; Livy is down at start, then comes back with a CA-B certificate.
    let ca_a = dir.join("ca-a.pem");
    let trusted = Livy::start(&dir, &["--tls-ca-out", ca_a.to_str().expect("utf-8")]).await;
    drop(trusted);
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut worker = Worker::start(
        &dir,
        &activity,
        &url,
        &["--livy-ca-file", ca_a.to_str().expect("utf-8")],
    );
    worker
        .wait_for_log("livy does not answer yet", Duration::from_secs(20))
        .await;
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let ex = sfn.start(&sm, &json!({"File": "sim:success?run=1"})).await;
    let ca_b = dir.join("ca-b.pem");
    let _untrusted =
        Livy::start_on_port(&dir, port, &["--tls-ca-out", ca_b.to_str().expect("utf-8")]).await;
    let status = worker.exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(2), "{}", worker.log_text());
    let log = worker.log_text();
    assert!(log.contains("certificate is not trusted"), "{log}");
    // The task was never taken (Livy was never up): it is still waiting, not failed.
    let out = sfn.describe(&ex).await;
    assert_eq!(out.status, ExecutionStatus::Running, "{out:?}");
    sfn.stop(&ex).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kerberos_runs_spark_with_spnego_on_livy_and_yarn_reusing_the_cookie() {
    let (dir, sfn, livy, activity) = rig("kerberos", &[]).await;
    drop(livy);
    let livy = kerberos_livy(&dir, &[]).await;
    assert!(livy.url.starts_with("http://localhost:"), "{}", livy.url);

    // A keytab the KDC no longer takes: one line at start.
    let (code, stderr) = start_refused(
        &dir,
        "wrong",
        &livy,
        &[
            "--livy-auth",
            "kerberos",
            "--kerberos-principal",
            &kdc("SPARK_TEST_WORKER_PRINCIPAL"),
            "--kerberos-keytab",
            &kdc("SPARK_TEST_WRONG_KEYTAB"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--kerberos-keytab"), "{stderr}");
    assert!(
        stderr.contains("cannot log in as spark-worker@SPARK.TEST"),
        "{stderr}"
    );

    let worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &[
            "--livy-auth",
            "kerberos",
            "--kerberos-principal",
            &kdc("SPARK_TEST_WORKER_PRINCIPAL"),
            "--kerberos-keytab",
            &kdc("SPARK_TEST_WORKER_KEYTAB"),
        ],
    );
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let ex = sfn
        .start(&sm, &json!({"File": "sim:success?run=2&app=1"}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let stats = livy.stats().await;
    assert_eq!(
        stats["principals"],
        json!(["spark-worker@SPARK.TEST"]),
        "{stats}"
    );
    let handshakes = stats["spnego_handshakes"].as_u64().unwrap_or(0);
    let cookies = stats["cookie_auths"].as_u64().unwrap_or(0);
    assert!(handshakes >= 1, "{stats}");
    // Many calls (probes, syncs, YARN lookups), few handshakes: the cookie carried the rest.
    assert!(cookies > 5 * handshakes, "{stats}");
    assert_eq!(stats["spnego_rejected"], 0, "{stats}");
    assert_eq!(
        batches(&stats)[0]["owner"],
        "spark-worker@SPARK.TEST",
        "{stats}"
    );
    let log = worker.log_text();
    assert!(
        !log.contains("Negotiate "),
        "a token reached the log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_renewed_from_the_keytab_mid_run() {
    let (dir, sfn, livy, activity) = rig("kerberos-renew", &[]).await;
    drop(livy);
    // Cookies last 2 s, so the worker needs a fresh SPNEGO token (a service ticket) every few
    // seconds; the short-lived principal's tickets last 30 s, so over a 75 s job its first TGT
    // expires twice and only new ones from the keytab keep the job supervised.
    let livy = kerberos_livy(&dir, &["--auth-cookie-ttl", "2s"]).await;
    let started = Instant::now();
    let worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &[
            "--livy-auth",
            "kerberos",
            "--kerberos-principal",
            &kdc("SPARK_TEST_SHORT_PRINCIPAL"),
            "--kerberos-keytab",
            &kdc("SPARK_TEST_SHORT_KEYTAB"),
            "--livy-outage-limit",
            "5s",
        ],
    );
    let sm = sfn.one_task_machine(&activity, 10, 180).await;
    let ex = sfn
        .start(&sm, &json!({"File": "sim:success?run=75&app=1"}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(150)).await;
    assert_eq!(
        out.status,
        ExecutionStatus::Succeeded,
        "{out:?}\n{}",
        worker.log_text()
    );
    assert!(started.elapsed() > Duration::from_secs(70));
    let stats = livy.stats().await;
    assert!(
        stats["spnego_handshakes"].as_u64().unwrap_or(0) >= 20,
        "{stats}"
    );
    assert_eq!(stats["spnego_rejected"], 0, "{stats}");
    // The KDC saw the worker log in again from its keytab (an AS-REQ per ticket it issued).
    let kdc_log =
        std::fs::read_to_string(Path::new(&kdc("SPARK_TEST_KDC_DIR")).join("krb5kdc.log"))
            .expect("KDC log");
    let logins = kdc_log
        .lines()
        .filter(|l| {
            l.contains("AS_REQ") && l.contains("ISSUE") && l.contains("short-lived@SPARK.TEST")
        })
        .count();
    assert!(
        logins >= 3,
        "expected the first login and two renewals, the KDC saw {logins}:\n{kdc_log}"
    );
    let log = worker.log_text();
    assert!(!log.contains("no credentials for livy"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_input_fails_at_once_naming_rule_and_field_and_never_reaches_livy() {
    let (dir, sfn, livy, activity) = rig("policy", &[]).await;
    let _worker = Worker::start(
        &dir,
        &activity,
        &livy.url,
        &[
            "--allowed-proxy-user",
            "etl",
            "--allowed-file-prefix",
            "sim:",
            "--allowed-queue",
            "etl",
            "--max-executors",
            "4",
            "--max-cores",
            "2",
            "--max-memory",
            "2g",
        ],
    );
    let sm = sfn.one_task_machine(&activity, 10, 120).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"File": "sim:success", "Queue": "etl", "ProxyUser": "hdfs"}),
            vec!["ProxyUser \"hdfs\" is not allowed by --allowed-proxy-user (allowed: etl)"],
        ),
        (
            json!({"LivyHost": "127.0.0.1", "LivyPort": livy.port, "Parameters": {
                "File": "s3://elsewhere/evil.py", "Queue": "etl",
                "Conf": {"spark.yarn.keytab": "/etc/security/keytabs/hdfs.keytab", "spark.executor.memory": "64g"}}}),
            vec![
                "File \"s3://elsewhere/evil.py\" is not under an --allowed-file-prefix",
                "Conf \"spark.yarn.keytab\" is denied by --denied-conf-prefix \"spark.yarn.keytab\"",
                "Conf \"spark.executor.memory\" \"64g\" is over --max-memory (2g)",
            ],
        ),
        (
            json!({"File": "sim:success", "Queue": "prod", "NumExecutors": 50, "ExecutorCores": 8}),
            vec![
                "Queue \"prod\" is not allowed by --allowed-queue (allowed: etl)",
                "NumExecutors 50 is over --max-executors (4)",
                "ExecutorCores 8 is over --max-cores (2)",
            ],
        ),
    ];
    let mut executions = Vec::new();
    for (input, _) in &cases {
        executions.push(sfn.start(&sm, input).await);
    }
    for ((input, needles), ex) in cases.iter().zip(&executions) {
        let out = sfn.finish(ex, Duration::from_secs(30)).await;
        assert_eq!(out.status, ExecutionStatus::Failed, "{input}");
        assert_eq!(out.error.as_deref(), Some("SparkJob.Forbidden"), "{input}");
        let cause = out.cause.unwrap_or_default();
        for needle in needles {
            assert!(cause.contains(needle), "{input}: {needle:?} not in {cause}");
        }
    }
    assert_eq!(
        livy.stats().await["posts"],
        0,
        "forbidden input must not reach Livy"
    );

    // Within the policy: it runs, and dynamic allocation is bounded by the cap.
    let ex = sfn
        .start(&sm, &json!({"File": "sim:success?run=1", "Queue": "etl", "ProxyUser": "etl", "NumExecutors": 4}))
        .await;
    let out = sfn.finish(&ex, Duration::from_secs(60)).await;
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let stats = livy.stats().await;
    let sent = &batches(&stats)[0]["request"];
    assert_eq!(sent["proxyUser"], "etl", "{sent}");
    assert_eq!(
        sent["conf"]["spark.dynamicAllocation.maxExecutors"], "4",
        "{sent}"
    );
}
