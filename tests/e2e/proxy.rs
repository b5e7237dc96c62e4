//! A Step Functions endpoint that refuses what LocalStack cannot: it stands between the worker
//! and real LocalStack, forwards every call, and answers the calls a rule picks the way AWS
//! refuses them (HTTP 400, `{"__type": code, "message": ...}`) — `AccessDeniedException` for a
//! role without `states:SendTaskSuccess`, or the KMS errors of an execution encrypted with a key
//! the worker may not use. LocalStack implements neither IAM enforcement nor KMS encryption of
//! executions, so the refusal is the only part that is not LocalStack's.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{HttpRequest, Worker, read_request};

/// Which calls to refuse: `(operation, request body)` → `Some((code, message))`.
type Rule = dyn Fn(&str, &Value) -> Option<(String, String)> + Send + Sync;

pub struct SfnProxy {
    pub url: String,
    /// Every operation seen, in order, and whether it was refused.
    calls: Arc<Mutex<Vec<(String, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SfnProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SfnProxy {
    pub async fn start(
        rule: impl Fn(&str, &Value) -> Option<(String, String)> + Send + Sync + 'static,
    ) -> Self {
        let upstream = std::env::var("AWS_ENDPOINT_URL").expect("LocalStack endpoint");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Rule> = Arc::new(rule);
        let seen = calls.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(
                    conn,
                    upstream.clone(),
                    http.clone(),
                    rule.clone(),
                    seen.clone(),
                ));
            }
        });
        SfnProxy { url, calls, task }
    }

    /// A worker whose Step Functions calls go through this proxy.
    pub fn worker(&self, dir: &std::path::Path, activity: &str, livy: &str) -> Worker {
        Worker::start_with_env(dir, activity, livy, &[], &[("AWS_ENDPOINT_URL", &self.url)])
    }

    /// How many `operation` calls were seen, and how many of them refused.
    pub fn count(&self, operation: &str) -> (usize, usize) {
        let calls = self.calls.lock().expect("calls");
        let of: Vec<_> = calls.iter().filter(|(op, _)| op == operation).collect();
        (of.len(), of.iter().filter(|(_, refused)| *refused).count())
    }
}

/// One keep-alive connection: requests in, answers out, until the client closes it.
async fn serve(
    conn: TcpStream,
    upstream: String,
    http: reqwest::Client,
    rule: Arc<Rule>,
    calls: Arc<Mutex<Vec<(String, bool)>>>,
) {
    let (read, mut write) = conn.into_split();
    let mut read = BufReader::new(read);
    loop {
        let Some(HttpRequest {
            method,
            path,
            headers,
            body,
        }) = read_request(&mut read).await
        else {
            return;
        };
        let target = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
            .map(|(_, v)| v.rsplit('.').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let refusal = rule(&target, &json);
        calls
            .lock()
            .expect("calls")
            .push((target, refusal.is_some()));
        let (status, content_type, reply) = match refusal {
            Some((code, message)) => (
                400,
                "application/x-amz-json-1.0".to_owned(),
                serde_json::json!({"__type": code, "message": message})
                    .to_string()
                    .into_bytes(),
            ),
            None => {
                let mut req = http.request(
                    method.parse().unwrap_or(reqwest::Method::POST),
                    format!("{upstream}{path}"),
                );
                for (k, v) in &headers {
                    if !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("content-length")
                    {
                        req = req.header(k, v);
                    }
                }
                let Ok(resp) = req.body(body).send().await else {
                    return;
                };
                let status = resp.status().as_u16();
                let content_type = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/x-amz-json-1.0")
                    .to_owned();
                (
                    status,
                    content_type,
                    resp.bytes().await.unwrap_or_default().to_vec(),
                )
            }
        };
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: proxy\r\n\r\n",
            if status == 200 { "OK" } else { "Bad Request" },
            reply.len()
        );
        if write.write_all(head.as_bytes()).await.is_err() || write.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}
