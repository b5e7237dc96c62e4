//! The monitoring endpoint on `--metrics-listen`: `GET /metrics` (Prometheus text format),
//! `/healthz` (alive: the poll loops make progress) and `/readyz` (ready for tasks: journal
//! writable, Livy answering, Step Functions reachable, not shutting down). Health replies are a
//! small JSON object naming each check, `200` when all pass and `503` otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::gauge;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics;
use crate::watchdog::Liveness;

/// A poll loop silent this long is wedged (loops beat every second while alive; a poll stuck
/// past the SDK's timeout stops beating).
const ALIVE_WINDOW: Duration = Duration::from_secs(30);
/// How often histogram samples are folded in when nobody scrapes (bounds their memory).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Scrapers and probes are few; more connections than this wait.
const MAX_CONNECTIONS: usize = 32;
/// A client that opens a connection and sends no request is dropped after this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the health endpoints look at.
pub struct Checks {
    pub liveness: Arc<Liveness>,
    pub livy_up: watch::Receiver<bool>,
    pub journal_writable: watch::Receiver<bool>,
    pub sfn_reachable: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
    /// Sets the gauges read off the worker's state (slots, batches by state, journal entries)
    /// just before a scrape is rendered. Runs on a blocking thread: it may read the journal.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checks").finish_non_exhaustive()
    }
}

impl Checks {
    /// `/healthz`: every poll loop turned within the window.
    pub fn alive(&self) -> (bool, Value) {
        let failing = format!(
            "a poll loop shows no progress for {}s",
            ALIVE_WINDOW.as_secs()
        );
        reply(&[("poll_loops", self.liveness.healthy(ALIVE_WINDOW), &failing)])
    }

    /// `/readyz`: ready to take and run tasks.
    pub fn ready(&self) -> (bool, Value) {
        reply(&[
            (
                "journal",
                *self.journal_writable.borrow(),
                "the journal cannot be written (is the disk full?)",
            ),
            (
                "livy",
                *self.livy_up.borrow(),
                "livy does not answer its probe",
            ),
            (
                "step_functions",
                *self.sfn_reachable.borrow(),
                "the last Step Functions call did not reach the service",
            ),
            (
                "shutdown",
                !self.shutdown.is_cancelled(),
                "the worker is shutting down",
            ),
        ])
    }
}

/// Whether every check passes, and the reply naming each: `"ok"`, or why it fails.
fn reply(checks: &[(&str, bool, &str)]) -> (bool, Value) {
    let ok = checks.iter().all(|(_, ok, _)| *ok);
    let details: Map<String, Value> = checks
        .iter()
        .map(|(name, ok, failing)| {
            let detail = if *ok { "ok" } else { failing };
            ((*name).to_owned(), Value::from(detail))
        })
        .collect();
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(name, _, _)| *name)
        .collect();
    let body = json!({
        "status": if ok { "ok" } else { "failing" },
        "failing": failing,
        "checks": details,
    });
    (ok, body)
}

/// Binds the address now, so a bad or taken one stops the start.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop`. Keeps serving through the shutdown sequence (`/readyz` then says so).
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    checks: Arc<Checks>,
    stop: CancellationToken,
) {
    let upkeep = {
        let handle = handle.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(UPKEEP_INTERVAL) => handle.run_upkeep(),
                    () = stop.cancelled() => return,
                }
            }
        })
    };
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            break;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "monitoring endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (handle, checks) = (handle.clone(), checks.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (handle, checks) = (handle.clone(), checks.clone());
            async move { Ok::<_, Infallible>(respond(&req, &handle, &checks).await) }
        });
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                // One request per connection. An idle keep-alive connection would be closed
                // after HEADER_TIMEOUT, racing a scraper whose interval is about as long: its
                // next request then meets a reset.
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    debug!(peer = %peer, error = %e, "monitoring connection ended");
                },
                () = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
    upkeep.abort();
}

async fn respond(
    req: &Request<Incoming>,
    handle: &PrometheusHandle,
    checks: &Arc<Checks>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let (ready, _) = checks.ready();
            gauge!(metrics::READY).set(if ready { 1.0 } else { 0.0 });
            let refresh = checks.refresh.clone();
            let _ = tokio::task::spawn_blocking(move || refresh()).await;
            let mut resp = Response::new(Full::new(Bytes::from(handle.render())));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => health(checks.alive()),
        "/readyz" => health(checks.ready()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn health((ok, body): (bool, Value)) -> Response<Full<Bytes>> {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(
        livy: bool,
        journal: bool,
        sfn: bool,
    ) -> (Checks, watch::Sender<bool>, CancellationToken) {
        let (livy_tx, livy_up) = watch::channel(livy);
        let shutdown = CancellationToken::new();
        let c = Checks {
            liveness: Liveness::new(1),
            livy_up,
            journal_writable: watch::channel(journal).1,
            sfn_reachable: watch::channel(sfn).1,
            shutdown: shutdown.clone(),
            refresh: Arc::new(|| {}),
        };
        (c, livy_tx, shutdown)
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_names_each_failing_check_and_liveness_follows_the_poll_loops() {
        let (c, livy, shutdown) = checks(true, true, true);
        c.liveness.beat(0);
        let (ok, body) = c.ready();
        assert!(ok, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["checks"]["livy"], "ok");

        livy.send_replace(false);
        shutdown.cancel();
        let (ok, body) = c.ready();
        assert!(!ok);
        assert_eq!(body["failing"], json!(["livy", "shutdown"]), "{body}");
        assert_eq!(body["checks"]["journal"], "ok");
        assert_eq!(body["checks"]["livy"], "livy does not answer its probe");

        let (_, body) = checks(true, false, false).0.ready();
        assert_eq!(
            body["failing"],
            json!(["journal", "step_functions"]),
            "{body}"
        );

        assert!(c.alive().0);
        tokio::time::sleep(ALIVE_WINDOW + Duration::from_secs(1)).await;
        let (ok, body) = c.alive();
        assert!(!ok);
        assert_eq!(body["failing"], json!(["poll_loops"]), "{body}");
    }

    /// A scrape is answered and its connection closed at once, so no idle connection is left
    /// for the header timeout to reset under the next scrape.
    #[tokio::test]
    async fn a_scrape_is_answered_and_its_connection_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let (c, _livy, _shutdown) = checks(true, true, true);
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, handle, Arc::new(c), stop.clone()));

        for _ in 0..2 {
            let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
            conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: worker\r\n\r\n")
                .await
                .expect("request sent");
            let mut answer = Vec::new();
            // Ends only when the server closes: well before HEADER_TIMEOUT.
            tokio::time::timeout(HEADER_TIMEOUT / 2, conn.read_to_end(&mut answer))
                .await
                .expect("the connection is closed after the answer")
                .expect("answer read");
            let answer = String::from_utf8_lossy(&answer).to_lowercase();
            assert!(answer.starts_with("http/1.1 200"), "{answer}");
            assert!(answer.contains("connection: close"), "{answer}");
        }
        stop.cancel();
        server.await.expect("the server stops");
    }
}
