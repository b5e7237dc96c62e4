//! The only code that touches `aws_sdk_sfn`: poll for a task, heartbeat, report.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sfn::config::StalledStreamProtectionConfig;
use aws_sdk_sfn::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_sfn::config::http::HttpResponse;
use aws_sdk_sfn::config::retry::RetryConfig;
use aws_sdk_sfn::config::timeout::TimeoutConfig;
use aws_sdk_sfn::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use aws_types::service_config::ServiceConfigKey;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::failure::Failure;
use crate::metrics;
use crate::signed::{self, JsonClient};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The service holds a poll for 60 s; the attempt must outlive that (the reference says ≥ 65 s).
const POLL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(70);
/// Heartbeats and reports are small; a stuck call must not delay the next heartbeat for long.
const CALL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A task token. Its `Debug` and `Display` show a short hash: tokens never reach logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TaskToken(Arc<str>);

impl TaskToken {
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }

    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The token itself, shared (with the task's journal entry).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// 12 hex digits of the token's SHA-256: a stable, unique-enough handle for names and logs.
    pub fn short_hash(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskToken({})", self.short_hash())
    }
}

impl fmt::Display for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short_hash())
    }
}

/// A delivered activity task.
#[derive(Debug, Clone)]
pub struct Task {
    pub token: TaskToken,
    pub input: String,
}

/// Why a Step Functions call failed, in the terms a caller branches on.
#[derive(Debug, thiserror::Error)]
pub enum SfnError {
    /// `TaskTimedOut`, `TaskDoesNotExist` or `InvalidToken`: the task is closed, stop working on it.
    /// (LocalStack answers `InvalidToken` where AWS says `TaskTimedOut`.)
    #[error("task is gone ({0})")]
    TaskGone(String),
    /// Throttled: retry later, never a sign the task is gone.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The activity ARN is wrong or the activity was deleted.
    #[error("activity unusable ({code}): {message}")]
    Activity { code: String, message: String },
    /// The call was refused in a way no retry changes: `AccessDeniedException`, `InvalidOutput`,
    /// `ValidationException`, or a KMS key the execution is encrypted with that the worker may not
    /// use (`kms` set: a report without `error`, `cause` or `output` needs no key).
    #[error("refused ({code}): {message}")]
    Refused {
        code: String,
        message: String,
        kms: bool,
    },
    /// Anything else: network, timeouts, 5xx, credentials. Transient as far as we can tell.
    #[error("{0}")]
    Other(String),
}

impl SfnError {
    /// A short, bounded label for metrics: the service's error code, or what kind of trouble.
    pub fn label(&self) -> &str {
        match self {
            SfnError::TaskGone(code) => code,
            SfnError::Throttled(_) => "throttled",
            SfnError::Activity { code, .. } | SfnError::Refused { code, .. } => code,
            SfnError::Other(_) => "error",
        }
    }

    fn classify<E, R>(err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_owned);
        let message = err.message().unwrap_or_default().to_owned();
        Self::from_code(code, message, || {
            aws_sdk_sfn::error::DisplayErrorContext(err).to_string()
        })
    }

    /// The error for the service's error `code`; `other` describes an error no code names.
    fn from_code(code: Option<String>, message: String, other: impl FnOnce() -> String) -> Self {
        match code.as_deref() {
            Some("TaskTimedOut" | "TaskDoesNotExist" | "InvalidToken") => {
                SfnError::TaskGone(code.unwrap_or_default())
            }
            Some(
                "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "KmsThrottlingException",
            ) => SfnError::Throttled(message),
            Some("ActivityDoesNotExist" | "InvalidArn") => SfnError::Activity {
                code: code.unwrap_or_default(),
                message,
            },
            Some(
                c @ ("AccessDeniedException"
                | "AccessDenied"
                | "InvalidOutput"
                | "ValidationException"
                | "KmsAccessDeniedException"
                | "KmsInvalidStateException"),
            ) => SfnError::Refused {
                kms: c.starts_with("Kms"),
                code: c.to_owned(),
                message,
            },
            _ => SfnError::Other(other()),
        }
    }

    /// A heartbeat's failure ([`signed`]), in the same terms as the SDK's.
    fn from_call(err: signed::CallError) -> Self {
        let shown = err.to_string();
        match err {
            signed::CallError::Service { code, message, .. } => {
                Self::from_code(code, message, || shown)
            }
            _ => SfnError::Other(shown),
        }
    }
}

/// Step Functions as the worker uses it: the seam where component tests put a fake.
#[async_trait]
pub trait Tasks: Send + Sync + fmt::Debug {
    /// One long poll. `Ok(None)`: nothing was scheduled within the service's 60 s.
    async fn next_task(
        &self,
        activity_arn: &str,
        worker_name: &str,
    ) -> Result<Option<Task>, SfnError>;
    async fn heartbeat(&self, token: &TaskToken) -> Result<(), SfnError>;
    async fn succeed(&self, token: &TaskToken, output: &str) -> Result<(), SfnError>;
    /// `SendTaskFailure`; `None` sends neither `error` nor `cause` (needs no KMS key).
    async fn fail(&self, token: &TaskToken, failure: Option<&Failure>) -> Result<(), SfnError>;
}

/// Step Functions, with a long-poll client and a short-call client over one configuration, and
/// heartbeats sent by [`signed`] with the SDK's credentials and endpoint.
///
/// Each call is one attempt: neither the SDK nor [`signed`] retries. Every caller already
/// retries in its own loop (the poll loop, heartbeats within their interval, reports until
/// delivered), and each of those attempts waits for the call budget ([`crate::budget`]), so no
/// attempt escapes it.
#[derive(Debug, Clone)]
pub struct SfnClient {
    poll: aws_sdk_sfn::Client,
    calls: aws_sdk_sfn::Client,
    beats: JsonClient,
    /// Whether the last call reached the service (any answer, even an error, but not a
    /// timeout, a connection failure or a 5xx).
    reachable: Arc<watch::Sender<bool>>,
}

impl SfnClient {
    /// Region, credentials and endpoint come from the standard AWS chain. `Err` when they do
    /// not give an endpoint (no region).
    pub async fn from_env() -> Result<Self, String> {
        let shared = shared_config().await;
        let once = RetryConfig::standard().with_max_attempts(1);
        // Stalled-stream protection watches a body's throughput with a timer of its own for
        // every call; the attempt timeouts below bound these small calls already, and heartbeats
        // are hundreds a second.
        let poll = aws_sdk_sfn::config::Builder::from(&shared)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .retry_config(once.clone())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(POLL_ATTEMPT_TIMEOUT)
                    .operation_attempt_timeout(POLL_ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build();
        let calls = aws_sdk_sfn::config::Builder::from(&shared)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .retry_config(once)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(CALL_ATTEMPT_TIMEOUT)
                    .operation_timeout(CALL_OPERATION_TIMEOUT)
                    .build(),
            )
            .build();
        let beats = heartbeat_client(&shared).await?;
        Ok(Self {
            poll: aws_sdk_sfn::Client::from_conf(poll),
            calls: aws_sdk_sfn::Client::from_conf(calls),
            beats,
            reachable: Arc::new(watch::channel(true).0),
        })
    }

    /// Whether Step Functions answered the last call; `true` until a call fails to reach it.
    pub fn reachability(&self) -> watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    /// Notes whether the last call reached the service, and counts it by API and result.
    fn note(&self, api: &'static str, label: &str, reached: bool, took: Duration) {
        self.reachable
            .send_if_modified(|r| std::mem::replace(r, reached) != reached);
        metrics::sfn_request(api, label, took);
    }

    /// Awaits one call, counting it by API and result, and noting whether it reached the service.
    async fn observed<T, E>(
        &self,
        api: &'static str,
        call: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, SfnError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let result = call.await;
        let (label, reached) = match &result {
            Ok(_) => ("ok".to_owned(), true),
            Err(e) => outcome_of(e),
        };
        self.note(api, &label, reached, started.elapsed());
        result.map_err(SfnError::classify)
    }
}

/// A failed call's metric label (its error code, else the kind of failure) and whether it
/// reached the service.
fn outcome_of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> (String, bool) {
    let status = match err {
        SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
        SdkError::ResponseError(e) => Some(e.raw().status().as_u16()),
        _ => None,
    };
    let reached = status.is_some_and(|s| s < 500);
    let label = match (err.code(), err) {
        (Some(code), _) => code.to_owned(),
        (None, SdkError::TimeoutError(_)) => "timeout".to_owned(),
        (None, SdkError::DispatchFailure(_)) => "dispatch".to_owned(),
        (None, SdkError::ConstructionFailure(_)) => "construction".to_owned(),
        (None, _) => status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
    };
    (label, reached)
}

#[async_trait]
impl Tasks for SfnClient {
    async fn next_task(
        &self,
        activity_arn: &str,
        worker_name: &str,
    ) -> Result<Option<Task>, SfnError> {
        let call = self
            .poll
            .get_activity_task()
            .activity_arn(activity_arn)
            .worker_name(worker_name)
            .send();
        let out = self.observed("GetActivityTask", call).await?;
        Ok(match out.task_token() {
            Some(token) if !token.is_empty() => Some(Task {
                token: TaskToken::new(token),
                input: out.input().unwrap_or("{}").to_owned(),
            }),
            _ => None,
        })
    }

    async fn heartbeat(&self, token: &TaskToken) -> Result<(), SfnError> {
        const API: &str = "SendTaskHeartbeat";
        let started = Instant::now();
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(rename = "taskToken")]
            token: &'a str,
        }
        let body = serde_json::to_vec(&Body {
            token: token.secret(),
        })
        .unwrap_or_default();
        let result = self.beats.call(API, body).await;
        // Labelled as `outcome_of` labels the SDK's calls.
        let (label, reached) = match &result {
            Ok(()) => (Cow::Borrowed("ok"), true),
            Err(signed::CallError::Service { status, code, .. }) => (
                code.as_deref()
                    .map_or_else(|| Cow::Owned(status.to_string()), Cow::Borrowed),
                *status < 500,
            ),
            Err(signed::CallError::Timeout(_)) => (Cow::Borrowed("timeout"), false),
            Err(signed::CallError::Dispatch(_)) => (Cow::Borrowed("dispatch"), false),
            Err(signed::CallError::Credentials(_)) => (Cow::Borrowed("credentials"), false),
        };
        self.note(API, &label, reached, started.elapsed());
        result.map_err(SfnError::from_call)
    }

    async fn succeed(&self, token: &TaskToken, output: &str) -> Result<(), SfnError> {
        let call = self
            .calls
            .send_task_success()
            .task_token(token.secret())
            .output(output)
            .send();
        self.observed("SendTaskSuccess", call).await.map(drop)
    }

    async fn fail(&self, token: &TaskToken, failure: Option<&Failure>) -> Result<(), SfnError> {
        let call = self
            .calls
            .send_task_failure()
            .task_token(token.secret())
            .set_error(failure.map(|f| f.error.as_str().to_owned()))
            .set_cause(failure.map(|f| f.cause.clone()))
            .send();
        self.observed("SendTaskFailure", call).await.map(drop)
    }
}

/// The heartbeat client: the SDK's credentials, and the endpoint its resolver gives for the
/// configuration (`AWS_ENDPOINT_URL_SFN`, then `AWS_ENDPOINT_URL`, then the region's, FIPS and
/// dual-stack as configured), read the way `aws_sdk_sfn::Config` reads them.
async fn heartbeat_client(shared: &aws_config::SdkConfig) -> Result<JsonClient, String> {
    let endpoint_url = if shared.get_origin("endpoint_url").is_client_config() {
        shared.endpoint_url().map(str::to_owned)
    } else {
        let key = ServiceConfigKey::builder()
            .service_id("SFN")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .map_err(|e| e.to_string())?;
        shared
            .service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| shared.endpoint_url().map(str::to_owned))
    };
    let region = shared
        .region()
        .map(|r| r.to_string())
        .ok_or("no AWS region (AWS_REGION, the profile's region, or the instance's metadata)")?;
    let params = Params::builder()
        .region(region.clone())
        .set_use_fips(shared.use_fips())
        .set_use_dual_stack(shared.use_dual_stack())
        .set_endpoint(endpoint_url)
        .build()
        .map_err(|e| e.to_string())?;
    let endpoint = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| format!("no Step Functions endpoint: {e}"))?;
    let credentials = shared
        .credentials_provider()
        .ok_or("no AWS credentials provider")?;
    let target = signed::Target {
        url: endpoint.url().to_owned(),
        region,
        service: "states",
        target_prefix: "AWSStepFunctions",
    };
    JsonClient::new(target, credentials, CONNECT_TIMEOUT, CALL_ATTEMPT_TIMEOUT)
}

/// The AWS configuration from the environment (region, credentials, endpoint), with an HTTPS
/// client on rustls and ring: the TLS stack the Livy and YARN clients use too.
pub async fn shared_config() -> aws_config::SdkConfig {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoint comes from the SDK's resolver with the configuration's region, FIPS and
    /// dual-stack settings, or is the one configured.
    #[tokio::test]
    async fn heartbeats_go_to_the_endpoint_the_sdk_resolves() {
        use aws_config::Region;
        use aws_credential_types::Credentials;
        use aws_credential_types::provider::SharedCredentialsProvider;
        let config = |region: Option<&'static str>| {
            let mut b = aws_config::SdkConfig::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                    "AKID", "secret", None, None, "test",
                )));
            b.set_region(region.map(Region::new));
            b
        };
        let url = |b: aws_types::sdk_config::Builder| async move {
            heartbeat_client(&b.build())
                .await
                .map(|c| c.url().to_owned())
        };
        assert_eq!(
            url(config(Some("eu-west-3"))).await.expect("resolved"),
            "https://states.eu-west-3.amazonaws.com"
        );
        assert_eq!(
            url(config(Some("cn-north-1"))).await.expect("resolved"),
            "https://states.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            url(config(Some("us-east-1")).use_fips(true))
                .await
                .expect("resolved"),
            "https://states-fips.us-east-1.amazonaws.com"
        );
        assert_eq!(
            url(config(Some("us-east-1")).use_dual_stack(true))
                .await
                .expect("resolved"),
            "https://states.us-east-1.api.aws"
        );
        assert_eq!(
            url(config(Some("us-east-1")).endpoint_url("http://127.0.0.1:4566"))
                .await
                .expect("resolved"),
            "http://127.0.0.1:4566"
        );
        let err = url(config(None)).await.expect_err("no region");
        assert!(err.starts_with("no AWS region"), "{err}");
    }

    /// A heartbeat's failure means what the same failure through the SDK means.
    #[test]
    fn heartbeat_failures_are_classified_like_the_sdks() {
        let service = |status, code: Option<&str>| {
            SfnError::from_call(signed::CallError::Service {
                status,
                code: code.map(str::to_owned),
                message: "said so".into(),
            })
        };
        for gone in ["TaskTimedOut", "TaskDoesNotExist", "InvalidToken"] {
            assert!(
                matches!(service(400, Some(gone)), SfnError::TaskGone(c) if c == gone),
                "{gone}"
            );
        }
        assert!(matches!(
            service(400, Some("ThrottlingException")),
            SfnError::Throttled(m) if m == "said so"
        ));
        assert!(matches!(
            service(400, Some("AccessDeniedException")),
            SfnError::Refused { kms: false, .. }
        ));
        let other = service(503, None);
        assert!(
            matches!(&other, SfnError::Other(m) if m.contains("503")),
            "{other:?}"
        );
        let timeout = SfnError::from_call(signed::CallError::Timeout(Duration::from_secs(10)));
        assert!(matches!(timeout, SfnError::Other(_)), "never taken as gone");
    }

    #[test]
    fn token_never_prints_itself() {
        let token = TaskToken::new("AAAAKgAAAAIAAAAAAAAAAsecret-token-material");
        let shown = format!("{token:?} {token}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(token.short_hash().len(), 12);
        assert_eq!(
            token.short_hash(),
            TaskToken::new("AAAAKgAAAAIAAAAAAAAAAsecret-token-material").short_hash()
        );
        assert_ne!(token.short_hash(), TaskToken::new("other").short_hash());
    }
}
