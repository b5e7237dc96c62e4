//! The server as a secured Livy, through its binary and curl: HTTPS with the CA it makes, and Basic
//! auth, always; Kerberos SPNEGO against a real KDC when `tests/rig/with-kdc.sh` provides one
//! (`SPARK_TEST_REALM` set). Without a KDC those tests pass as skipped, unless
//! `SPARK_TEST_REQUIRE_KDC=1` makes a missing KDC a failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "livy-server-secured-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server binary on a free port, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_livy-server"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn livy-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no listening line: {line:?}"));
        Server { child, port }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://localhost:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got: its exit code, and for the last response, the status, headers and body.
struct Reply {
    code: i32,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `curl -s` with `args`; with `--negotiate` the headers kept are the last response's.
fn curl(scratch: &Scratch, envs: &[(&str, &Path)], args: &[&str]) -> Reply {
    let (head, body) = (scratch.path("head"), scratch.path("body"));
    let _ = std::fs::remove_file(&body);
    let out: Output = Command::new("curl")
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("curl is part of the test rig");
    let code = out.status.code().unwrap_or(-1);
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let last = head
        .split("\r\n\r\n")
        .filter(|block| block.starts_with("HTTP/"))
        .last()
        .unwrap_or_default();
    let mut lines = last.lines();
    let status = (lines.next().unwrap_or_default().split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = std::fs::read_to_string(&body).unwrap_or_default();
    Reply {
        code,
        status,
        headers,
        body,
    }
}

#[test]
fn https_with_its_own_ca_and_basic_auth() {
    let scratch = Scratch::new();
    let (ca, pw) = (scratch.path("ca.pem"), scratch.path("password"));
    std::fs::write(&pw, "s3cret\n").expect("password file");
    let server = Server::start(&[
        "--tls-ca-out",
        ca.to_str().expect("utf-8"),
        "--basic-user",
        "livy",
        "--basic-password-file",
        pw.to_str().expect("utf-8"),
    ]);
    // Written before the listening line.
    let pem = std::fs::read_to_string(&ca).expect("CA written");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let cacert = ca.to_str().expect("utf-8");
    let batches = server.url("https", "/batches");

    let none = curl(&scratch, &[], &["--cacert", cacert, &batches]);
    assert_eq!((none.code, none.status), (0, 401));
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Basic realm="livy""#)
    );
    assert_eq!(none.body, "");
    let wrong = curl(
        &scratch,
        &[],
        &["--cacert", cacert, "-u", "livy:s3cre", &batches],
    );
    assert_eq!(wrong.status, 401);
    let ok = curl(
        &scratch,
        &[],
        &["--cacert", cacert, "-u", "livy:s3cret", &batches],
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["total"], 0);
    let rm = server.url("https", "/ws/v1/cluster/apps");
    let rm = curl(
        &scratch,
        &[],
        &["--cacert", cacert, "-u", "livy:s3cret", &rm],
    );
    assert_eq!(rm.status, 200);

    // Not trusted without the CA (curl's exit 60), and no plain HTTP on the TLS port.
    let untrusted = curl(&scratch, &[], &[&batches]);
    assert_eq!((untrusted.code, untrusted.status), (60, 0));
    let plain = curl(&scratch, &[], &[&server.url("http", "/batches")]);
    assert_eq!(plain.status, 0);
    // The certificate names 127.0.0.1 too.
    let by_ip = format!("https://127.0.0.1:{}/_control/stats", server.port);
    let stats = curl(&scratch, &[], &["--cacert", cacert, &by_ip]);
    assert_eq!(stats.status, 200, "/_control needs no credentials");
    let stats = stats.json();
    assert_eq!(stats["basic_auths"], 2);
    assert_eq!(stats["auth_rejected"], 2);
    assert_eq!(stats["credentialed_requests"], 3);
}

#[test]
fn a_keytab_without_the_principal_stops_the_server_before_it_listens() {
    let out = Command::new(env!("CARGO_BIN_EXE_livy-server"))
        .args([
            "--port",
            "0",
            "--kerberos-keytab",
            "/nonexistent/livy.keytab",
        ])
        .args(["--kerberos-principal", "HTTP/localhost@SPARK.TEST"])
        .output()
        .expect("run livy-server");
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot acquire acceptor credentials"), "{err}");
}

/// The realm `tests/rig/with-kdc.sh` set up.
struct Kdc {
    service_principal: String,
    service_keytab: String,
    worker_principal: String,
    worker_keytab: String,
    wrong_keytab: String,
    short_principal: String,
    short_keytab: String,
}

fn kdc() -> Option<Kdc> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if var("SPARK_TEST_REALM").is_none() {
        assert!(
            var("SPARK_TEST_REQUIRE_KDC").as_deref() != Some("1"),
            "SPARK_TEST_REQUIRE_KDC=1 but no KDC: run under tests/rig/with-kdc.sh"
        );
        eprintln!("skipped: no KDC (run under tests/rig/with-kdc.sh)");
        return None;
    }
    let need = |name: &str| var(name).unwrap_or_else(|| panic!("{name} is not set"));
    Some(Kdc {
        service_principal: need("SPARK_TEST_SERVICE_PRINCIPAL"),
        service_keytab: need("SPARK_TEST_SERVICE_KEYTAB"),
        worker_principal: need("SPARK_TEST_WORKER_PRINCIPAL"),
        worker_keytab: need("SPARK_TEST_WORKER_KEYTAB"),
        wrong_keytab: need("SPARK_TEST_WRONG_KEYTAB"),
        short_principal: need("SPARK_TEST_SHORT_PRINCIPAL"),
        short_keytab: need("SPARK_TEST_SHORT_KEYTAB"),
    })
}

/// `kinit -kt keytab principal` into the ticket cache `cache`.
fn kinit(cache: &Path, keytab: &str, principal: &str) -> Output {
    Command::new("kinit")
        .args(["-kt", keytab, principal])
        .env("KRB5CCNAME", cache)
        .output()
        .expect("kinit is part of the test rig")
}

/// Seconds from a ticket's start to its end, from the `MM/DD/YY HH:MM:SS` stamps of klist's last
/// line (tickets here last less than a day).
fn ticket_life(cache: &Path) -> i64 {
    let out = Command::new("klist")
        .env("KRB5CCNAME", cache)
        .output()
        .expect("klist");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let secs = |time: &str| -> i64 {
        (time
            .split(':')
            .map(|n| n.parse::<i64>().expect("klist time")))
        .fold(0, |acc, n| acc * 60 + n)
    };
    let words: Vec<&str> = last.split_whitespace().collect();
    assert!(words.len() >= 4, "{text}");
    // Across midnight the later time is the smaller one.
    (secs(words[3]) - secs(words[1])).rem_euclid(24 * 3600)
}

#[test]
fn kerberos_spnego_against_a_real_kdc() {
    let Some(kdc) = kdc() else { return };
    let scratch = Scratch::new();
    let cache = scratch.path("ccache");
    let jar = scratch.path("cookies");
    let jar = jar.to_str().expect("utf-8");
    let server = Server::start(&[
        "--kerberos-keytab",
        &kdc.service_keytab,
        "--kerberos-principal",
        &kdc.service_principal,
        "--auth-cookie-ttl",
        "2s",
    ]);
    let batches = server.url("http", "/batches");
    let envs = [("KRB5CCNAME", cache.as_path())];

    let none = curl(&scratch, &envs, &[&batches]);
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Negotiate"));
    // No tickets yet: curl cannot make a token and stays at the challenge.
    let no_ticket = curl(&scratch, &envs, &["--negotiate", "-u", ":", &batches]);
    assert_eq!(no_ticket.status, 401);

    let got = kinit(&cache, &kdc.worker_keytab, &kdc.worker_principal);
    assert!(got.status.success(), "{got:?}");
    let negotiated = curl(
        &scratch,
        &envs,
        &["--negotiate", "-u", ":", "-c", jar, &batches],
    );
    assert_eq!(negotiated.status, 200, "{}", negotiated.body);
    let cookie = negotiated.header("set-cookie").expect("a cookie");
    let expected = format!(
        "hadoop.auth=\"u=spark-worker&p={}&t=kerberos&e=",
        kdc.worker_principal
    );
    assert!(cookie.starts_with(&expected), "{cookie}");
    assert!(
        (negotiated.header("www-authenticate")).is_some_and(|v| v.starts_with("Negotiate ")),
        "mutual authentication token"
    );

    // The cookie alone admits, and the batch is the worker's.
    let body = r#"{"file":"sim:forever"}"#;
    let created = curl(&scratch, &envs, &["-b", jar, "-d", body, &batches]);
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["owner"], kdc.worker_principal.as_str());

    // A token GSSAPI rejects: Hadoop's 403.
    let garbage = curl(
        &scratch,
        &envs,
        &["-H", "Authorization: Negotiate YWJjZGVm", &batches],
    );
    assert_eq!(garbage.status, 403);
    assert!(
        garbage.body.starts_with("GSSException: "),
        "{}",
        garbage.body
    );

    // Once the cookie expired, the server wants a token again.
    std::thread::sleep(Duration::from_millis(2200));
    let expired = curl(&scratch, &envs, &["-b", jar, &batches]);
    assert_eq!(expired.status, 401);
    let cleared = expired.header("set-cookie").unwrap_or_default();
    assert!(cleared.starts_with("hadoop.auth=; Max-Age=0"), "{cleared}");

    let stats = curl(&scratch, &envs, &[&server.url("http", "/_control/stats")]).json();
    assert_eq!(stats["spnego_handshakes"], 1);
    assert_eq!(stats["spnego_rejected"], 1);
    assert_eq!(stats["cookie_auths"], 1);
    // Four at least: curl may first try without a token.
    assert!(stats["auth_rejected"].as_u64() >= Some(4), "{stats}");
    assert_eq!(
        stats["principals"],
        serde_json::json!([kdc.worker_principal])
    );
    assert_eq!(stats["batches"][0]["owner"], kdc.worker_principal.as_str());
}

#[test]
fn kerberos_over_https() {
    let Some(kdc) = kdc() else { return };
    let scratch = Scratch::new();
    let (ca, cache) = (scratch.path("ca.pem"), scratch.path("ccache"));
    let cacert = ca.to_str().expect("utf-8");
    let server = Server::start(&[
        "--tls-ca-out",
        cacert,
        "--kerberos-keytab",
        &kdc.service_keytab,
        "--kerberos-principal",
        &kdc.service_principal,
    ]);
    let got = kinit(&cache, &kdc.worker_keytab, &kdc.worker_principal);
    assert!(got.status.success(), "{got:?}");
    let envs = [("KRB5CCNAME", cache.as_path())];
    let batches = server.url("https", "/batches");
    let none = curl(&scratch, &envs, &["--cacert", cacert, &batches]);
    assert_eq!(none.status, 401);
    let args = ["--cacert", cacert, "--negotiate", "-u", ":", &batches];
    let negotiated = curl(&scratch, &envs, &args);
    assert_eq!(negotiated.status, 200, "{}", negotiated.body);
    let cookie = negotiated.header("set-cookie").unwrap_or_default();
    assert!(cookie.ends_with("; Path=/; Secure; HttpOnly"), "{cookie}");
}

#[test]
fn the_realm_has_a_stale_keytab_and_a_short_lived_principal() {
    let Some(kdc) = kdc() else { return };
    let scratch = Scratch::new();
    let cache = scratch.path("ccache");
    let wrong = kinit(&cache, &kdc.wrong_keytab, &kdc.worker_principal);
    assert!(!wrong.status.success(), "the stale key still works");
    let short = kinit(&cache, &kdc.short_keytab, &kdc.short_principal);
    assert!(short.status.success(), "{short:?}");
    assert_eq!(ticket_life(&cache), 30);
}
