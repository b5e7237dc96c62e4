//! CloudFormation's custom-resource protocol: the request a `Custom::` resource's function is
//! invoked with, and the one answer it PUTs to the request's `ResponseURL` (a pre-signed S3 URL:
//! empty `Content-Type`, a JSON body CloudFormation reads only up to 4 KiB).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::http::{self, Trust, error_chain};
use crate::retry::Policy;

/// CloudFormation reads at most this much of a response body.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// What a PUT may take before it is retried.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// What CloudFormation asks of the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

/// A custom-resource request. Property values arrive as CloudFormation passes them: every scalar
/// a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Request {
    pub request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    #[serde(default)]
    pub resource_type: String,
    pub logical_resource_id: String,
    /// Absent on Create.
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    #[serde(default)]
    pub resource_properties: Map<String, Value>,
    /// Update only: the properties before the change.
    #[serde(default)]
    pub old_resource_properties: Option<Map<String, Value>>,
}

impl Request {
    /// The request from an invocation's payload. `Err` carries the `ResponseURL` when there is
    /// one, so that even a malformed request is answered.
    pub fn parse(payload: Value) -> Result<Request, Box<Malformed>> {
        let url = payload
            .get("ResponseURL")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ids = |key: &str| {
            payload
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let echo = (
            ids("StackId"),
            ids("RequestId"),
            ids("LogicalResourceId"),
            ids("PhysicalResourceId"),
        );
        serde_json::from_value(payload).map_err(|e| {
            Box::new(Malformed {
                response_url: url,
                stack_id: echo.0,
                request_id: echo.1,
                logical_resource_id: echo.2,
                physical_resource_id: echo.3,
                reason: format!("not a CloudFormation custom-resource request: {e}"),
            })
        })
    }

    /// The stack's name, from its ARN (`arn:aws:cloudformation:…:stack/NAME/GUID`).
    pub fn stack_name(&self) -> &str {
        self.stack_id
            .split_once(":stack/")
            .map_or(self.stack_id.as_str(), |(_, rest)| {
                rest.split('/').next().unwrap_or(rest)
            })
    }

    /// An answer to this request.
    pub fn answer(&self, status: Status, physical_resource_id: String) -> Response {
        Response {
            status,
            reason: String::new(),
            physical_resource_id,
            stack_id: self.stack_id.clone(),
            request_id: self.request_id.clone(),
            logical_resource_id: self.logical_resource_id.clone(),
            data: BTreeMap::new(),
        }
    }
}

/// A payload that is not a custom-resource request, and what is known to answer it.
#[derive(Debug, Clone)]
pub struct Malformed {
    pub response_url: Option<String>,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub physical_resource_id: String,
    pub reason: String,
}

impl Malformed {
    /// The FAILED answer, when there is somewhere to send it.
    pub fn answer(&self) -> Option<(String, Response)> {
        let url = self.response_url.clone()?;
        let physical = if self.physical_resource_id.is_empty() {
            format!("malformed-request-{}", self.request_id)
        } else {
            self.physical_resource_id.clone()
        };
        Some((
            url,
            Response {
                status: Status::Failed,
                reason: self.reason.clone(),
                physical_resource_id: physical,
                stack_id: self.stack_id.clone(),
                request_id: self.request_id.clone(),
                logical_resource_id: self.logical_resource_id.clone(),
                data: BTreeMap::new(),
            },
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Success,
    Failed,
}

/// The answer CloudFormation reads from the `ResponseURL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub status: Status,
    /// Shown in the stack's events; the reason of a failure.
    pub reason: String,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    /// The resource's attributes (`Fn::GetAtt`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

impl Response {
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    #[must_use]
    pub fn data(mut self, key: &str, value: impl Into<String>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body, at most [`MAX_RESPONSE_BYTES`]: a long `Reason` keeps its first line (the
    /// summary) and the end of the rest (where a Spark log says what went wrong).
    pub fn body(&self) -> Vec<u8> {
        let encode = |r: &Response| serde_json::to_vec(r).unwrap_or_default();
        let whole = encode(self);
        if whole.len() <= MAX_RESPONSE_BYTES {
            return whole;
        }
        let mut cut = self.clone();
        let chars: Vec<char> = self.reason.chars().collect();
        let head_end = chars
            .iter()
            .position(|c| *c == '\n')
            .unwrap_or(chars.len())
            .min(MAX_RESPONSE_BYTES / 4);
        let head: String = chars[..head_end].iter().collect();
        // The longest tail that fits, found by bisection over its length in characters.
        let (mut lo, mut hi) = (0, chars.len() - head_end);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            cut.reason = join(&head, &chars[chars.len() - mid..]);
            if encode(&cut).len() <= MAX_RESPONSE_BYTES {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        cut.reason = join(&head, &chars[chars.len() - lo..]);
        encode(&cut)
    }
}

fn join(head: &str, tail: &[char]) -> String {
    let tail: String = tail.iter().collect();
    format!("{head}\n…\n{}", tail.trim_start_matches('\n'))
}

/// Why an answer could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the response URL is not a URL: {0}")]
    BadUrl(String),
    #[error("the response URL answered {status}: {text}")]
    Refused { status: u16, text: String },
    #[error("the response URL could not be reached before the deadline: {0}")]
    Unreachable(String),
}

/// PUTs answers to response URLs: no redirects, the system's certificate authorities.
#[derive(Debug, Clone)]
pub struct Answerer {
    http: reqwest::Client,
}

impl Answerer {
    pub fn new() -> Result<Self, String> {
        let http = http::client(Duration::from_secs(5), &Trust::default())
            .timeout(PUT_TIMEOUT)
            .build()
            .map_err(|e| error_chain(&e))?;
        Ok(Answerer { http })
    }

    /// PUTs `response` to `url`, retrying what may pass (no answer, 5xx) until `until`. The URL is
    /// pre-signed: its query is a credential, so it is never logged.
    pub async fn send(
        &self,
        url: &str,
        response: &Response,
        until: Instant,
    ) -> Result<(), AnswerError> {
        let parsed = url::Url::parse(url).map_err(|e| AnswerError::BadUrl(e.to_string()))?;
        let shown = format!(
            "{}://{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            parsed.port().map(|p| format!(":{p}")).unwrap_or_default()
        ) + parsed.path();
        let body = response.body();
        let window = until.saturating_duration_since(Instant::now());
        let put = || async {
            let sent = self
                .http
                .put(parsed.clone())
                // Pre-signed for an empty content type, as CloudFormation signs it.
                .header(reqwest::header::CONTENT_TYPE, "")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Err(e) => Err(AnswerError::Unreachable(error_chain(&e))),
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = http::quote(&http::error_text(r).await);
                    Err(AnswerError::Refused { status, text })
                }
            }
        };
        let retried = |e: &AnswerError| match e {
            AnswerError::Unreachable(_) => true,
            AnswerError::Refused { status, .. } => *status >= 500 || *status == 429,
            AnswerError::BadUrl(_) => false,
        };
        let result = Policy::backoff(Duration::from_millis(500), Duration::from_secs(5))
            .within(window)
            .run(put, retried, |e, d| {
                warn!(url = %shown, error = %e, retry_in = ?d, "answer not delivered; retrying");
            })
            .await;
        match &result {
            Ok(()) => {
                info!(url = %shown, status = ?response.status, bytes = body.len(), "answered")
            }
            Err(e) => warn!(url = %shown, error = %e, "answer not delivered"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> Request {
        Request::parse(json!({
            "RequestType": "Create",
            "ResponseURL": "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x?X-Amz-Signature=s",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/etl-dev/5b5e1a20-0000-11ef-0000-0a1b2c3d4e5f",
            "RequestId": "b4f6c2a1-1111-2222-3333-444455556666",
            "ResourceType": "Custom::SparkJob",
            "LogicalResourceId": "SparkPi",
            "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
                                   "LivyHost": "ip-10-0-0-1.ec2.internal", "LivyPort": "8998",
                                   "Parameters": {"NumExecutors": "1"}}
        }))
        .expect("a request")
    }

    #[test]
    fn a_create_request_parses_with_its_string_properties() {
        let r = request();
        assert_eq!(r.request_type, RequestType::Create);
        assert_eq!(r.stack_name(), "etl-dev");
        assert_eq!(r.physical_resource_id, None);
        assert_eq!(r.resource_properties["LivyPort"], json!("8998"));
    }

    #[test]
    fn a_malformed_request_with_a_url_is_still_answered() {
        let m = Request::parse(json!({"ResponseURL": "https://s3/x", "RequestId": "r1",
                                      "StackId": "s", "LogicalResourceId": "L"}))
        .expect_err("malformed");
        let (url, answer) = m.answer().expect("answerable");
        assert_eq!(url, "https://s3/x");
        assert_eq!(answer.status, Status::Failed);
        assert_eq!(answer.request_id, "r1");
        assert!(answer.reason.contains("RequestType"), "{}", answer.reason);
        assert!(!answer.physical_resource_id.is_empty());
        let none = Request::parse(json!({"hello": 1})).expect_err("malformed");
        assert!(none.answer().is_none());
    }

    #[test]
    fn the_body_has_cloudformations_field_names() {
        let r = request();
        let body: Value = serde_json::from_slice(
            &r.answer(Status::Success, "p".into())
                .data("BatchId", "7")
                .body(),
        )
        .expect("json");
        assert_eq!(
            body,
            json!({"Status": "SUCCESS", "Reason": "", "PhysicalResourceId": "p",
                   "StackId": r.stack_id, "RequestId": r.request_id,
                   "LogicalResourceId": "SparkPi", "Data": {"BatchId": "7"}})
        );
    }

    #[test]
    fn a_long_reason_keeps_its_summary_and_the_end_of_the_log_within_4_kib() {
        let r = request();
        let log: Vec<String> = (0..500)
            .map(|i| format!("line {i}: \"quoted\" \t tab ünïcode"))
            .collect();
        let reason = format!("the Spark application failed at start\n{}", log.join("\n"));
        let body = r.answer(Status::Failed, "p".into()).reason(reason).body();
        assert!(body.len() <= MAX_RESPONSE_BYTES, "{}", body.len());
        assert!(
            body.len() > MAX_RESPONSE_BYTES - 64,
            "uses the room: {}",
            body.len()
        );
        let parsed: Response = serde_json::from_slice(&body).expect("valid json");
        assert!(
            parsed
                .reason
                .starts_with("the Spark application failed at start\n…\n")
        );
        assert!(
            parsed
                .reason
                .ends_with("line 499: \"quoted\" \t tab ünïcode")
        );
        // A one-line reason of any size is cut too.
        let body = r
            .answer(Status::Failed, "p".into())
            .reason("x".repeat(10_000))
            .body();
        assert!(body.len() <= MAX_RESPONSE_BYTES);
    }
}
