//! An AWS JSON 1.0 call made without the SDK's call pipeline: the request signed with SigV4 by
//! `aws-sigv4` (the SDK's own signer), sent over kept-alive connections.
//!
//! It exists for one call: `SendTaskHeartbeat`, made once per task per heartbeat interval
//! (hundreds a second with thousands of tasks in flight). Through the SDK, each such call spends
//! most of its CPU assembling the SDK's runtime components, interceptors and retry and timeout
//! plumbing for one small request; here it is a signature and a POST.
//!
//! What the SDK would otherwise decide is taken from it: the credentials come from its provider
//! chain (cached here: `Credentials` below), and the endpoint is the one its resolver gives (the
//! caller passes it in). No proxy is used, as with the SDK's own HTTP client.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::http;

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// The most read of a reply: the service's are a few hundred bytes.
const MAX_REPLY: usize = 64 * 1024;
/// Credentials are renewed this long before they expire.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Credentials that carry no expiry are asked for again after this long (the SDK's own default).
const RENEW_UNEXPIRING: Duration = Duration::from_secs(15 * 60);
/// The least time between two askings of the provider, whatever the expiry says.
const RENEW_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// How long the provider may take to answer (the SDK's identity cache allows 5 s too).
const RENEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how calls go.
#[derive(Clone)]
pub struct Target {
    /// The endpoint, e.g. `https://states.us-east-1.amazonaws.com`.
    pub url: String,
    pub region: String,
    /// The SigV4 signing name, e.g. `states`.
    pub service: &'static str,
    /// The `X-Amz-Target` prefix, e.g. `AWSStepFunctions`.
    pub target_prefix: &'static str,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service answered with an error. `code` is its error type without namespace.
    #[error("{status} {}: {message}", code.as_deref().unwrap_or("(no error code)"))]
    Service {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// No answer within the attempt timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be sent or its answer read.
    #[error("{0}")]
    Dispatch(String),
    /// No credentials to sign with.
    #[error("no AWS credentials: {0}")]
    Credentials(String),
}

/// Signs and sends AWS JSON 1.0 calls to one endpoint. Cheap to clone.
#[derive(Clone)]
pub struct JsonClient {
    http: reqwest::Client,
    target: Arc<Target>,
    /// `target.url`, parsed once.
    url: reqwest::Url,
    credentials: Arc<Credentials>,
    timeout: Duration,
}

impl fmt::Debug for JsonClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonClient")
            .field("url", &self.target.url)
            .field("region", &self.target.region)
            .finish_non_exhaustive()
    }
}

impl JsonClient {
    /// `timeout` bounds each call, from the connection to the answer's end.
    pub fn new(
        target: Target,
        credentials: SharedCredentialsProvider,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(&target.url).map_err(|e| format!("{}: {e}", target.url))?;
        let http = http::client(connect_timeout, &http::Trust::default())
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| http::error_chain(&e))?;
        Ok(JsonClient {
            http,
            url,
            target: Arc::new(target),
            credentials: Arc::new(Credentials::new(credentials)),
            timeout,
        })
    }

    /// The endpoint calls go to.
    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// Calls `operation` with `body` (JSON); `Ok` on a 2xx answer. The answer is read whole
    /// either way (its body matters only for an error).
    pub async fn call(&self, operation: &str, body: Vec<u8>) -> Result<(), CallError> {
        let identity = self.credentials.identity().await?;
        let target = format!("{}.{operation}", self.target.target_prefix);
        let signed = {
            let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", &target)];
            // The URL as it is sent (its host lower-cased): the signed host must be the one the
            // `Host` header carries.
            let request = SignableRequest::new(
                "POST",
                self.url.as_str(),
                headers.into_iter(),
                SignableBody::Bytes(&body),
            )
            .map_err(unsignable)?;
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region(&self.target.region)
                .name(self.target.service)
                .time(SystemTime::now())
                .settings(SigningSettings::default())
                .build()
                .map_err(unsignable)?
                .into();
            sign(request, &params).map_err(unsignable)?.into_parts().0
        };
        let mut request = self
            .http
            .post(self.url.clone())
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-target", target);
        // `Authorization` and `X-Amz-Security-Token` are marked sensitive: never shown by a
        // `Debug` of the request.
        for header in signed.into_parts().0 {
            let mut value =
                reqwest::header::HeaderValue::from_str(header.value()).map_err(unsignable)?;
            value.set_sensitive(header.sensitive() || header.name() == "authorization");
            request = request.header(header.name(), value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.failed(&e))?;
        let status = response.status();
        let header_code = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read whole, so that the connection is kept for the next call.
        let body = http::read_capped_to(response, MAX_REPLY)
            .await
            .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        // Each field read on its own: one that is not a string spoils none of the others.
        let error: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&body).unwrap_or_default();
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| error.get(*n).and_then(|v| v.as_str()))
                .map(str::to_owned)
        };
        Err(CallError::Service {
            status: status.as_u16(),
            code: header_code
                .or_else(|| field(&["code", "__type"]))
                .map(|c| sanitize_code(&c).to_owned()),
            message: field(&["message", "Message", "errorMessage"]).unwrap_or_default(),
        })
    }

    fn failed(&self, e: &reqwest::Error) -> CallError {
        if e.is_timeout() {
            CallError::Timeout(self.timeout)
        } else {
            CallError::Dispatch(http::error_chain(e))
        }
    }
}

/// A request that could not be signed.
fn unsignable(e: impl fmt::Display) -> CallError {
    CallError::Dispatch(format!("cannot sign: {e}"))
}

/// The error code alone: without a `namespace#` before it or a `:url` after it, as the SDKs read it.
fn sanitize_code(code: &str) -> &str {
    let code = code.split(':').next().unwrap_or(code);
    code.rsplit('#').next().unwrap_or(code)
}

/// The credentials calls are signed with: the provider's answer, kept until five minutes before
/// it expires. One call renews them, at most every ten seconds and for at most five; meanwhile
/// the others go on with the ones held while those have not expired, and wait only when there
/// are none.
struct Credentials {
    provider: SharedCredentialsProvider,
    held: RwLock<Option<Held>>,
    /// Taken by the call that renews; holds when the provider was last asked.
    renewing: Mutex<Option<Instant>>,
}

#[derive(Clone)]
struct Held {
    identity: Identity,
    renew_at: Instant,
    expires: Option<SystemTime>,
}

impl Held {
    /// Not due for renewal: by the clock of the runtime, and by the wall clock (which goes on
    /// while a paused machine's monotonic clock does not).
    fn fresh(&self) -> bool {
        Instant::now() < self.renew_at
            && self
                .expires
                .is_none_or(|at| SystemTime::now() + RENEW_BEFORE_EXPIRY < at)
    }

    /// Not expired yet.
    fn usable(&self) -> bool {
        self.expires.is_none_or(|at| SystemTime::now() < at)
    }
}

impl Credentials {
    fn new(provider: SharedCredentialsProvider) -> Self {
        Credentials {
            provider,
            held: RwLock::new(None),
            renewing: Mutex::new(None),
        }
    }

    fn held(&self) -> Option<Held> {
        self.held.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn identity(&self) -> Result<Identity, CallError> {
        let held = self.held();
        if let Some(h) = held.as_ref().filter(|h| h.fresh()) {
            return Ok(h.identity.clone());
        }
        let mut last_asked = match self.renewing.try_lock() {
            Ok(guard) => guard,
            Err(_) => match held.filter(Held::usable) {
                // Another call is renewing them.
                Some(h) => return Ok(h.identity),
                None => self.renewing.lock().await,
            },
        };
        let held = self.held();
        if let Some(h) = held.as_ref().filter(|h| h.fresh()) {
            return Ok(h.identity.clone()); // Renewed while this call waited.
        }
        let unusable = || CallError::Credentials("none could be had; asking again shortly".into());
        if last_asked.is_some_and(|at| at.elapsed() < RENEW_AT_MOST_EVERY) {
            return held
                .filter(Held::usable)
                .map(|h| h.identity)
                .ok_or_else(unusable);
        }
        *last_asked = Some(Instant::now());
        let asked = tokio::time::timeout(RENEW_TIMEOUT, self.provider.provide_credentials()).await;
        match asked {
            Ok(Ok(credentials)) => {
                let expires = credentials.expiry();
                let renew_in = match expires {
                    Some(at) => at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .saturating_sub(RENEW_BEFORE_EXPIRY),
                    None => RENEW_UNEXPIRING,
                };
                let identity = Identity::from(credentials);
                *self.held.write().unwrap_or_else(|e| e.into_inner()) = Some(Held {
                    identity: identity.clone(),
                    renew_at: Instant::now() + renew_in,
                    expires,
                });
                Ok(identity)
            }
            // The ones held may still be good: use them until they expire.
            failed => match held.filter(Held::usable) {
                Some(h) => Ok(h.identity),
                None => Err(CallError::Credentials(match failed {
                    Ok(Err(e)) => {
                        aws_smithy_types::error::display::DisplayErrorContext(e).to_string()
                    }
                    _ => format!("the provider did not answer within {RENEW_TIMEOUT:?}"),
                })),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::Credentials as Creds;
    use aws_credential_types::provider::future;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SESSION: &str = "session-token-example";
    const TOKEN: &str = "AAAAKgAAAAIAAAAAAAAAA/token+with=signs";

    /// One request as it reached the server.
    #[derive(Debug)]
    struct Captured {
        method: String,
        path: String,
        /// Names in lower case, in the order sent.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Captured {
        fn header(&self, name: &str) -> &str {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        }
    }

    /// Accepts one connection on 127.0.0.1, reads one request, answers with `status`, the
    /// `headers` (each ending in CRLF) and the `body`.
    fn capture(
        status: &'static str,
        headers: &'static str,
        body: &'static str,
    ) -> (String, std::thread::JoinHandle<Captured>) {
        let response = format!(
            "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(socket.try_clone().expect("clone"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("request line");
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').expect("a header");
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().expect("a length"));
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            socket.write_all(response.as_bytes()).expect("answer");
            Captured {
                method,
                path,
                headers,
                body,
            }
        });
        (url, server)
    }

    const JSON: &str = "content-type: application/x-amz-json-1.0\r\n";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Checks a request's SigV4 signature from scratch, as AWS documents the algorithm
    /// ("Create a signed AWS API request"), for a POST to `/` without a query; returns the
    /// signed headers' names.
    fn verify_signature(req: &Captured, secret: &str) -> Vec<String> {
        let auth = req.header("authorization");
        let rest = auth
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .unwrap_or_else(|| panic!("not SigV4: {auth:?}"));
        let field = |name: &str| {
            rest.split(", ")
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {auth:?}"))
                .to_owned()
        };
        let (credential, signed, signature) = (
            field("Credential="),
            field("SignedHeaders="),
            field("Signature="),
        );
        let scope = credential.split_once('/').expect("key id/scope").1;
        let signed_names: Vec<String> = signed.split(';').map(str::to_owned).collect();
        let canonical_headers: String = signed_names
            .iter()
            .map(|n| format!("{n}:{}\n", req.header(n).trim()))
            .collect();
        let canonical_request = format!(
            "{}\n{}\n\n{canonical_headers}\n{signed}\n{}",
            req.method,
            req.path,
            hex(&Sha256::digest(&req.body))
        );
        let amz_date = req.header("x-amz-date");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = format!("AWS4{secret}").into_bytes();
        for part in scope.split('/') {
            key = hmac(&key, part);
        }
        assert_eq!(
            hex(&hmac(&key, &string_to_sign)),
            signature,
            "the signature of {req:#?}"
        );
        signed_names
    }

    /// A client for Step Functions at `url`, in `region`, with [`credentials`].
    fn step_functions_at(url: String, region: &str) -> JsonClient {
        let target = Target {
            url,
            region: region.into(),
            service: "states",
            target_prefix: "AWSStepFunctions",
        };
        let timeout = Duration::from_secs(5);
        JsonClient::new(target, credentials(), timeout, timeout).expect("a client")
    }

    fn credentials() -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(Creds::new(
            KEY_ID,
            SECRET,
            Some(SESSION.into()),
            None,
            "test",
        ))
    }

    /// The same heartbeat, sent by the SDK and by [`JsonClient`]: both pass a SigV4 check
    /// written from AWS's description (so the check itself is shown right by the SDK's
    /// request), with the same operation, body, and signed headers.
    #[tokio::test]
    async fn heartbeats_are_signed_as_the_sdk_signs_them() {
        let (url, server) = capture("200 OK", JSON, "{}");
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_sfn::Config::builder()
            .behavior_version(aws_sdk_sfn::config::BehaviorVersion::latest())
            .region(aws_sdk_sfn::config::Region::new("eu-west-3"))
            .credentials_provider(credentials())
            .endpoint_url(&url)
            .http_client(https)
            .build();
        aws_sdk_sfn::Client::from_conf(config)
            .send_task_heartbeat()
            .task_token(TOKEN)
            .send()
            .await
            .expect("the SDK's heartbeat");
        let by_sdk = server.join().expect("captured");

        let (url, server) = capture("200 OK", JSON, "{}");
        let client = step_functions_at(url, "eu-west-3");
        let body = serde_json::to_vec(&serde_json::json!({ "taskToken": TOKEN })).expect("json");
        client
            .call("SendTaskHeartbeat", body)
            .await
            .expect("our heartbeat");
        let ours = server.join().expect("captured");

        let sdk_signed = verify_signature(&by_sdk, SECRET);
        let our_signed = verify_signature(&ours, SECRET);
        let wrong = std::panic::catch_unwind(|| verify_signature(&ours, "another secret"));
        assert!(wrong.is_err(), "the check refuses a wrong key");

        for name in [
            "host",
            "content-type",
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-target",
        ] {
            assert!(
                our_signed.iter().any(|n| n == name),
                "{name} unsigned: {our_signed:?}"
            );
            assert!(
                sdk_signed.iter().any(|n| n == name),
                "{name}: {sdk_signed:?}"
            );
        }
        for name in ["x-amz-target", "content-type", "x-amz-security-token"] {
            assert_eq!(ours.header(name), by_sdk.header(name), "{name}");
        }
        let scope = |r: &Captured| {
            let auth = r.header("authorization");
            let credential = auth.split("Credential=").nth(1).unwrap_or_default();
            credential
                .split(',')
                .next()
                .unwrap_or_default()
                .split_once('/')
                .map(|(k, s)| {
                    (
                        k.to_owned(),
                        s.split_once('/').map(|(_, rest)| rest.to_owned()),
                    )
                })
        };
        assert_eq!(scope(&ours), scope(&by_sdk));
        assert_eq!(
            scope(&ours),
            Some((
                KEY_ID.to_owned(),
                Some("eu-west-3/states/aws4_request".to_owned())
            ))
        );
        let json =
            |r: &Captured| -> serde_json::Value { serde_json::from_slice(&r.body).expect("json") };
        assert_eq!(json(&ours), json(&by_sdk));
        assert_eq!((ours.method.as_str(), ours.path.as_str()), ("POST", "/"));
        assert_eq!(
            ours.header("x-amz-target"),
            "AWSStepFunctions.SendTaskHeartbeat"
        );
    }

    async fn answered(
        status: &'static str,
        headers: &'static str,
        body: &'static str,
    ) -> (Result<(), CallError>, Captured) {
        let (url, server) = capture(status, headers, body);
        let client = step_functions_at(url, "us-east-1");
        let result = client.call("SendTaskHeartbeat", b"{}".to_vec()).await;
        (result, server.join().expect("captured"))
    }

    /// A service error's status, code and message.
    fn service_error(result: Result<(), CallError>) -> (u16, Option<String>, String) {
        match result {
            Err(CallError::Service {
                status,
                code,
                message,
            }) => (status, code, message),
            other => panic!("not a service error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn service_errors_carry_their_code_from_the_body_or_the_header() {
        let (result, _) = answered(
            "400 Bad Request",
            JSON,
            r#"{"__type":"com.amazonaws.swf.service.v2.model#TaskTimedOut","message":"Task Timed Out"}"#,
        )
        .await;
        assert_eq!(
            service_error(result),
            (400, Some("TaskTimedOut".into()), "Task Timed Out".into())
        );
        let (result, _) = answered(
            "400 Bad Request",
            "x-amzn-errortype: ThrottlingException:http://internal/\r\n",
            r#"{"Message":"Rate exceeded"}"#,
        )
        .await;
        assert_eq!(
            service_error(result),
            (
                400,
                Some("ThrottlingException".into()),
                "Rate exceeded".into()
            )
        );
        let (result, _) = answered("503 Service Unavailable", "", "").await;
        assert_eq!(service_error(result), (503, None, String::new()));
    }

    /// A credentials provider that counts its calls: credentials expiring in `expires_in`,
    /// numbered by call (`AKID1`, …), or an error after `fail_after` calls.
    #[derive(Debug, Default)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        expires_in: Option<Duration>,
        /// Credentials that expired a second ago.
        expired: bool,
        fail_after: Option<usize>,
        /// Never answers.
        hangs: bool,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.hangs {
                return future::ProvideCredentials::new(std::future::pending());
            }
            if self.fail_after.is_some_and(|after| n > after) {
                return future::ProvideCredentials::ready(Err(
                    aws_credential_types::provider::error::CredentialsError::not_loaded("gone"),
                ));
            }
            let expiry = match self.expired {
                true => Some(SystemTime::now() - Duration::from_secs(1)),
                false => self.expires_in.map(|d| SystemTime::now() + d),
            };
            future::ProvideCredentials::ready(Ok(Creds::new(
                format!("AKID{n}"),
                SECRET,
                None,
                expiry,
                "counting",
            )))
        }
    }

    /// The cache over `provider`, and its count of calls.
    fn cache_of(provider: Counting) -> (Credentials, Arc<AtomicUsize>) {
        let calls = provider.calls.clone();
        (
            Credentials::new(SharedCredentialsProvider::new(provider)),
            calls,
        )
    }

    fn key_id(identity: &Identity) -> String {
        identity
            .data::<Creds>()
            .expect("credentials")
            .access_key_id()
            .to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_are_asked_for_once_until_they_near_their_expiry() {
        let (cache, calls) = cache_of(Counting {
            expires_in: Some(Duration::from_secs(3600)),
            ..Counting::default()
        });
        for _ in 0..100 {
            assert_eq!(
                key_id(&cache.identity().await.expect("credentials")),
                "AKID1"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // 55 minutes on, five before they expire, they are renewed.
        tokio::time::advance(Duration::from_secs(55 * 60 + 1)).await;
        assert_eq!(
            key_id(&cache.identity().await.expect("credentials")),
            "AKID2"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_near_their_expiry_are_renewed_at_most_every_ten_seconds() {
        let (cache, calls) = cache_of(Counting {
            expires_in: Some(Duration::from_secs(60)),
            ..Counting::default()
        });
        for _ in 0..10 {
            cache.identity().await.expect("credentials");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            key_id(&cache.identity().await.expect("credentials")),
            "AKID2"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_keeps_unexpired_credentials_and_asks_again_ten_seconds_later() {
        let (cache, calls) = cache_of(Counting {
            fail_after: Some(1),
            ..Counting::default()
        });
        let key = || async { key_id(&cache.identity().await.expect("credentials")) };
        assert_eq!(key().await, "AKID1");
        // Without an expiry they are asked for again after 15 minutes; the provider fails now,
        // and the ones held, which never expire, go on without asking it again for 10 s.
        tokio::time::advance(Duration::from_secs(15 * 60 + 1)).await;
        for _ in 0..50 {
            assert_eq!(key().await, "AKID1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(key().await, "AKID1");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn without_usable_credentials_calls_fail_and_the_provider_is_asked_every_ten_seconds() {
        let (failing, calls) = cache_of(Counting {
            fail_after: Some(0),
            ..Counting::default()
        });
        for _ in 0..20 {
            let err = failing.identity().await.expect_err("no credentials");
            assert!(err.to_string().contains("no AWS credentials"), "{err}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Credentials held that have expired are not used when the provider fails.
        let (expired, calls) = cache_of(Counting {
            expired: true,
            fail_after: Some(1),
            ..Counting::default()
        });
        expired.identity().await.expect("what the provider gave");
        tokio::time::advance(Duration::from_secs(11)).await;
        let err = expired.identity().await.expect_err("expired");
        assert!(err.to_string().contains("gone"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_never_answers_fails_the_call_after_five_seconds() {
        let (cache, _) = cache_of(Counting {
            hangs: true,
            ..Counting::default()
        });
        let started = Instant::now();
        let err = cache.identity().await.expect_err("no answer");
        assert!(
            err.to_string().contains("did not answer within 5s"),
            "{err}"
        );
        assert_eq!(started.elapsed(), RENEW_TIMEOUT);
    }

    #[test]
    fn error_codes_lose_their_namespace_and_url() {
        assert_eq!(
            sanitize_code("com.amazonaws.swf.service.v2.model#TaskTimedOut"),
            "TaskTimedOut"
        );
        assert_eq!(
            sanitize_code("ThrottlingException:http://internal.amazon.com/"),
            "ThrottlingException"
        );
        assert_eq!(sanitize_code("InvalidToken"), "InvalidToken");
    }
}
