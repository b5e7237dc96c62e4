//! Authentication in front of every route but `/_control`: off, HTTP Basic with one user, or
//! Kerberos SPNEGO the way Livy's Hadoop `AuthenticationFilter` does it (a Negotiate handshake per
//! request until the client shows the signed `hadoop.auth` cookie it was given).
//!
//! Kerberos, as Hadoop answers:
//! - a valid cookie admits the request (nothing is set in the reply);
//! - otherwise `Authorization: Negotiate <token>` is accepted with a fresh GSSAPI context: on
//!   success the reply carries `WWW-Authenticate: Negotiate <token>` when GSSAPI produced one and
//!   `Set-Cookie: hadoop.auth="u=<user>&p=<principal>&t=kerberos&e=<ms>&s=<HMAC-SHA256>"; Path=/;
//!   HttpOnly` (`Secure` too over HTTPS); a token GSSAPI rejects gets 403 `GSSException: ...`;
//! - anything else (a bad, expired or absent cookie and no token) gets 401 with
//!   `WWW-Authenticate: Negotiate`.
//!
//! Every 401 and 403 also clears the cookie (`hadoop.auth=; Max-Age=0`), as Hadoop does.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::batch::App;
use crate::gss::Outcome;

/// Hadoop's cookie name.
pub const COOKIE: &str = "hadoop.auth";

/// How clients must authenticate.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    Off,
    Basic(Basic),
    Kerberos(Kerberos),
}

#[derive(Debug, Clone)]
pub struct Basic {
    pub user: String,
    pub password: String,
}

/// Accepts a client's GSSAPI token: [`crate::gss::Acceptor`], or a stand-in in tests.
pub trait TokenAcceptor: std::fmt::Debug + Send + Sync {
    /// An `Err` reads like Hadoop's 403 message, `GSSException: ...`.
    fn accept(&self, token: &[u8]) -> Result<Outcome, String>;
}

#[derive(Debug, Clone)]
pub struct Kerberos {
    pub acceptor: Arc<dyn TokenAcceptor>,
    /// How long a `hadoop.auth` cookie admits its bearer.
    pub cookie_ttl: Duration,
    /// Over HTTPS the cookie is `Secure`.
    pub secure: bool,
    signer: Signer,
}

impl Kerberos {
    /// Kerberos with a fresh random cookie secret, as Hadoop's default `RandomSignerSecretProvider`.
    pub fn new(acceptor: Arc<dyn TokenAcceptor>, cookie_ttl: Duration, secure: bool) -> Self {
        Kerberos {
            acceptor,
            cookie_ttl,
            secure,
            signer: Signer::random(),
        }
    }
}

/// Signs and checks cookie text with HMAC-SHA256, like Hadoop's `Signer`.
#[derive(Clone)]
struct Signer(hmac::Key);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    fn random() -> Self {
        Signer(hmac::Key::new(
            hmac::HMAC_SHA256,
            &rand::random::<[u8; 32]>(),
        ))
    }

    /// `text&s=<signature>`.
    fn sign(&self, text: &str) -> String {
        let sig = STANDARD.encode(hmac::sign(&self.0, text.as_bytes()));
        format!("{text}&s={sig}")
    }

    /// The signed text, if the signature is this signer's.
    fn verify<'a>(&self, signed: &'a str) -> Result<&'a str, &'static str> {
        let (text, sig) = signed.rsplit_once("&s=").ok_or("invalid signed text")?;
        let sig = STANDARD.decode(sig).map_err(|_| "invalid signature")?;
        hmac::verify(&self.0, text.as_bytes(), &sig).map_err(|_| "invalid signature")?;
        Ok(text)
    }
}

/// Who a request was admitted as: the client principal (Kerberos) or the Basic user.
#[derive(Debug, Clone)]
pub struct User(pub String);

/// Counters for `/_control/stats`.
#[derive(Debug, Default)]
pub struct AuthStats {
    pub spnego_handshakes: u64,
    pub spnego_rejected: u64,
    pub cookie_auths: u64,
    pub basic_auths: u64,
    pub auth_rejected: u64,
    pub credentialed_requests: u64,
    pub principals: BTreeSet<String>,
}

impl AuthStats {
    pub fn view(&self) -> Value {
        json!({
            "spnego_handshakes": self.spnego_handshakes,
            "spnego_rejected": self.spnego_rejected,
            "cookie_auths": self.cookie_auths,
            "basic_auths": self.basic_auths,
            "auth_rejected": self.auth_rejected,
            "credentialed_requests": self.credentialed_requests,
            "principals": self.principals,
        })
    }
}

/// `AuthStats`, ignoring poisoning (plain counters).
pub fn counted(stats: &Mutex<AuthStats>, f: impl FnOnce(&mut AuthStats)) {
    f(&mut stats.lock().unwrap_or_else(|e| e.into_inner()));
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The short name Hadoop's default `auth_to_local` rule gives a principal: its first component.
pub fn short_name(principal: &str) -> &str {
    let name = principal.split('@').next().unwrap_or(principal);
    name.split('/').next().unwrap_or(name)
}

/// The cookie value (quotes included) for `principal`, valid until `expires_ms`.
fn cookie_value(signer: &Signer, principal: &str, expires_ms: u128) -> String {
    let text = format!(
        "u={}&p={principal}&t=kerberos&e={expires_ms}",
        short_name(principal)
    );
    format!("\"{}\"", signer.sign(&text))
}

/// Checks a cookie value (quotes optional) and returns the principal it was issued to.
fn check_cookie(signer: &Signer, value: &str, now_ms: u128) -> Result<String, &'static str> {
    let value = value.trim_matches('"');
    let text = signer.verify(value)?;
    let mut fields = std::collections::HashMap::new();
    for pair in text.split('&') {
        let (key, v) = pair.split_once('=').ok_or("invalid token")?;
        fields.insert(key, v);
    }
    let field = |key| {
        fields
            .get(key)
            .copied()
            .ok_or("invalid token: a field is missing")
    };
    let (user, principal) = (field("u")?, field("p")?);
    let expires: u128 = field("e")?.parse().map_err(|_| "invalid expiry")?;
    if field("t")? != "kerberos" {
        return Err("invalid AuthenticationToken type");
    }
    if user.is_empty() || principal.is_empty() {
        return Err("invalid token: empty user");
    }
    if now_ms > expires {
        return Err("AuthenticationToken expired");
    }
    Ok(principal.to_string())
}

/// The `hadoop.auth` cookie the request carries, unless absent or empty (a cleared one).
fn find_cookie(headers: &HeaderMap) -> Option<&str> {
    (headers.get_all(header::COOKIE).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty() && *v != "\"\"")
}

/// In front of every route: counts credentials, and admits or rejects per the auth mode.
pub async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/_control" || path.starts_with("/_control/") {
        return next.run(req).await;
    }
    if req.headers().contains_key(header::AUTHORIZATION) {
        counted(&app.auth_stats, |s| s.credentialed_requests += 1);
    }
    match &app.settings.auth {
        Auth::Off => next.run(req).await,
        Auth::Basic(basic) => basic_auth(&app, basic, req, next).await,
        Auth::Kerberos(k) => kerberos(&app, k, req, next).await,
    }
}

/// The `Authorization` value after `scheme ` (scheme matched case-insensitively).
fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

async fn basic_auth(app: &App, basic: &Basic, mut req: Request, next: Next) -> Response {
    let given = credentials(req.headers(), "Basic")
        .and_then(|c| STANDARD.decode(c).ok())
        .and_then(|c| String::from_utf8(c).ok());
    let expected = format!("{}:{}", basic.user, basic.password);
    if given.as_deref() == Some(expected.as_str()) {
        counted(&app.auth_stats, |s| s.basic_auths += 1);
        req.extensions_mut().insert(User(basic.user.clone()));
        return next.run(req).await;
    }
    debug!(path = %req.uri().path(), "Basic auth failed");
    counted(&app.auth_stats, |s| s.auth_rejected += 1);
    let challenge = [(header::WWW_AUTHENTICATE, r#"Basic realm="livy""#)];
    (StatusCode::UNAUTHORIZED, challenge, Body::empty()).into_response()
}

async fn kerberos(app: &App, k: &Kerberos, mut req: Request, next: Next) -> Response {
    if let Some(cookie) = find_cookie(req.headers()) {
        match check_cookie(&k.signer, cookie, now_ms()) {
            Ok(principal) => {
                counted(&app.auth_stats, |s| {
                    s.cookie_auths += 1;
                    s.principals.insert(principal.clone());
                });
                req.extensions_mut().insert(User(principal));
                return next.run(req).await;
            }
            // Hadoop ignores a bad cookie and goes on to the Negotiate header.
            Err(reason) => info!(reason, "hadoop.auth cookie ignored"),
        }
    }
    let Some(token) = credentials(req.headers(), "Negotiate") else {
        return k.reject(
            app,
            StatusCode::UNAUTHORIZED,
            None,
            "Authentication required",
        );
    };
    let outcome = match STANDARD.decode(token) {
        Ok(token) => {
            let acceptor = k.acceptor.clone();
            tokio::task::spawn_blocking(move || acceptor.accept(&token))
                .await
                .unwrap_or_else(|e| Err(format!("GSSException: the acceptor failed: {e}")))
        }
        Err(e) => Err(format!("GSSException: Defective token detected ({e})")),
    };
    match outcome {
        Ok(Outcome::Accepted { principal, token }) => {
            info!(%principal, "SPNEGO handshake accepted");
            counted(&app.auth_stats, |s| {
                s.spnego_handshakes += 1;
                s.principals.insert(principal.clone());
            });
            let expires = now_ms() + k.cookie_ttl.as_millis();
            let cookie = k.set_cookie(&cookie_value(&k.signer, &principal, expires));
            req.extensions_mut().insert(User(principal));
            let mut res = next.run(req).await;
            let headers = res.headers_mut();
            if let Some(token) = token {
                headers.insert(header::WWW_AUTHENTICATE, negotiate(Some(&token)));
            }
            headers.append(header::SET_COOKIE, cookie);
            res
        }
        Ok(Outcome::Continue(token)) => {
            let msg = "Authentication required";
            k.reject(app, StatusCode::UNAUTHORIZED, token.as_deref(), msg)
        }
        Err(msg) => {
            info!(error = %msg, "SPNEGO token rejected");
            counted(&app.auth_stats, |s| s.spnego_rejected += 1);
            k.reject(app, StatusCode::FORBIDDEN, None, &msg)
        }
    }
}

/// `Negotiate` or `Negotiate <base64 token>`.
fn negotiate(token: Option<&[u8]>) -> HeaderValue {
    let value = match token {
        Some(t) => format!("Negotiate {}", STANDARD.encode(t)),
        None => "Negotiate".to_string(),
    };
    HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("Negotiate"))
}

impl Kerberos {
    fn set_cookie(&self, value: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!("{COOKIE}={value}; Path=/{secure}; HttpOnly");
        HeaderValue::try_from(cookie).unwrap_or(HeaderValue::from_static(""))
    }

    /// A 401 (with a Negotiate challenge) or 403, clearing the cookie; a short text body.
    fn reject(&self, app: &App, status: StatusCode, token: Option<&[u8]>, msg: &str) -> Response {
        counted(&app.auth_stats, |s| s.auth_rejected += 1);
        let secure = if self.secure { "; Secure" } else { "" };
        let clear = format!("{COOKIE}=; Max-Age=0; Path=/{secure}; HttpOnly");
        let mut res = (status, Body::from(msg.to_string())).into_response();
        let headers = res.headers_mut();
        let text = HeaderValue::from_static("text/plain;charset=utf-8");
        headers.insert(header::CONTENT_TYPE, text);
        if let Ok(clear) = HeaderValue::try_from(clear) {
            headers.insert(header::SET_COOKIE, clear);
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, negotiate(token));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{call_with, server_with_auth};
    use axum::Router;

    /// Accepts `alice` (with a reply token) and `bob/host` (without), wants another round for
    /// `more`, and rejects anything else.
    #[derive(Debug)]
    struct Fake;

    impl TokenAcceptor for Fake {
        fn accept(&self, token: &[u8]) -> Result<Outcome, String> {
            let accepted = |principal: &str, token: Option<&[u8]>| Outcome::Accepted {
                principal: principal.to_string(),
                token: token.map(<[u8]>::to_vec),
            };
            match token {
                b"alice" => Ok(accepted("alice@SPARK.TEST", Some(b"mutual"))),
                b"bob" => Ok(accepted("bob/host@SPARK.TEST", None)),
                b"more" => Ok(Outcome::Continue(Some(b"again".to_vec()))),
                _ => Err("GSSException: Defective token detected".into()),
            }
        }
    }

    type Reply = (StatusCode, HeaderMap, String);

    fn kerberos(ttl: Duration) -> Router {
        let k = Kerberos::new(Arc::new(Fake), ttl, false);
        server_with_auth(false, 100, Auth::Kerberos(k))
    }

    fn basic(user: &str, password: &str) -> Router {
        let (user, password) = (user.to_string(), password.to_string());
        server_with_auth(false, 100, Auth::Basic(Basic { user, password }))
    }

    /// `Negotiate <base64 token>`.
    fn negotiate_with(token: &str) -> String {
        format!("Negotiate {}", STANDARD.encode(token))
    }

    /// `GET path` with an `Authorization` (none if empty) and a `Cookie` (none if empty).
    async fn get(app: &Router, path: &str, authorization: &str, cookie: &str) -> Reply {
        let headers = [("authorization", authorization), ("cookie", cookie)];
        let headers: Vec<_> = headers.into_iter().filter(|h| !h.1.is_empty()).collect();
        call_with(app, "GET", path, &headers, "").await
    }

    fn header(headers: &HeaderMap, name: header::HeaderName) -> &str {
        (headers.get(name).and_then(|v| v.to_str().ok())).unwrap_or("")
    }

    /// A 401 with a bare Negotiate challenge that clears the cookie.
    fn assert_challenged((status, headers, _): &Reply) {
        assert_eq!(*status, StatusCode::UNAUTHORIZED);
        assert_eq!(header(headers, header::WWW_AUTHENTICATE), "Negotiate");
        assert_cleared(headers);
    }

    fn assert_cleared(headers: &HeaderMap) {
        let set = header(headers, header::SET_COOKIE);
        assert!(set.starts_with("hadoop.auth=; Max-Age=0"), "{set}");
    }

    /// The `name=value` part of a Set-Cookie, as a client sends it back.
    fn cookie_of(headers: &HeaderMap) -> String {
        let set = header(headers, header::SET_COOKIE);
        set.split(';').next().unwrap_or_default().to_string()
    }

    async fn auth_stats(app: &Router) -> Value {
        let (_, _, body) = get(app, "/_control/stats", "", "").await;
        serde_json::from_str(&body).expect("stats JSON")
    }

    #[tokio::test]
    async fn kerberos_admits_a_token_then_its_cookie_and_records_the_owner() {
        let app = kerberos(Duration::from_secs(600));
        let none = get(&app, "/batches", "", "").await;
        assert_challenged(&none);
        assert_eq!(none.2, "Authentication required");

        let (status, headers, _) = get(&app, "/batches", &negotiate_with("alice"), "").await;
        assert_eq!(status, StatusCode::OK);
        let mutual = negotiate_with("mutual");
        assert_eq!(header(&headers, header::WWW_AUTHENTICATE), mutual);
        let set = header(&headers, header::SET_COOKIE);
        let prefix = r#"hadoop.auth="u=alice&p=alice@SPARK.TEST&t=kerberos&e="#;
        assert!(set.starts_with(prefix), "{set}");
        assert!(set.ends_with(r#""; Path=/; HttpOnly"#), "{set}");
        let cookie = cookie_of(&headers);

        // The cookie alone admits, and sets nothing; the batch is the principal's.
        let with_cookie = [("cookie", cookie.as_str())];
        let body = r#"{"file":"sim:forever","proxyUser":"bob"}"#;
        let (status, headers, created) =
            call_with(&app, "POST", "/batches", &with_cookie, body).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(headers.get(header::SET_COOKIE).is_none());
        let created: Value = serde_json::from_str(&created).expect("JSON");
        assert_eq!(created["owner"], "alice@SPARK.TEST");
        assert_eq!(created["proxyUser"], Value::Null);
        let rm = "/ws/v1/cluster/apps";
        assert_eq!(get(&app, rm, "", &cookie).await.0, StatusCode::OK);
        assert_challenged(&get(&app, rm, "", "").await);
        // Unknown paths are behind auth too; /_control is not.
        assert_challenged(&get(&app, "/x", "", "").await);

        // No reply token, no WWW-Authenticate; the cookie has the other short name.
        let (status, headers, _) = get(&app, "/version", &negotiate_with("bob"), "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
        let set = header(&headers, header::SET_COOKIE);
        assert!(
            set.starts_with(r#"hadoop.auth="u=bob&p=bob/host@"#),
            "{set}"
        );

        let stats = auth_stats(&app).await;
        assert_eq!(stats["spnego_handshakes"], 2);
        assert_eq!(stats["cookie_auths"], 2);
        assert_eq!(stats["auth_rejected"], 3);
        assert_eq!(stats["credentialed_requests"], 2);
        assert_eq!(stats["spnego_rejected"], 0);
        let principals = json!(["alice@SPARK.TEST", "bob/host@SPARK.TEST"]);
        assert_eq!(stats["principals"], principals);
        assert_eq!(stats["batches"][0]["owner"], "alice@SPARK.TEST");
    }

    #[tokio::test]
    async fn forged_tampered_and_expired_cookies_are_refused_and_cleared() {
        let app = kerberos(Duration::from_millis(300));
        let alice = negotiate_with("alice");
        let cookie = cookie_of(&get(&app, "/batches", &alice, "").await.1);
        let forged = format!(
            "hadoop.auth={}",
            cookie_value(&Signer::random(), "alice@SPARK.TEST", u128::MAX)
        );
        let tampered = cookie.replace("u=alice&p=alice@", "u=eve&p=eve@");
        let unsigned = cookie.split("&s=").next().unwrap_or_default().to_string() + "\"";
        for bad in [forged.as_str(), &tampered, &unsigned, "hadoop.auth=garbage"] {
            assert_challenged(&get(&app, "/batches", "", bad).await);
        }
        // A bad cookie with a good token: the token wins, as in Hadoop.
        let (status, _, _) = get(&app, "/batches", &alice, &tampered).await;
        assert_eq!(status, StatusCode::OK);
        // Among other cookies, quoted or not.
        let among = format!("a=b; {}; c=d", cookie.replace('"', ""));
        assert_eq!(get(&app, "/batches", "", &among).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_challenged(&get(&app, "/batches", "", &cookie).await);
        let stats = auth_stats(&app).await;
        assert_eq!(stats["cookie_auths"], 1);
        assert_eq!(stats["auth_rejected"], 5);
        assert_eq!(stats["principals"], json!(["alice@SPARK.TEST"]));
    }

    #[tokio::test]
    async fn a_rejected_token_gets_403_and_an_unfinished_one_401() {
        let app = kerberos(Duration::from_secs(600));
        for value in [negotiate_with("mallory").as_str(), "Negotiate %%%"] {
            let (status, headers, body) = get(&app, "/batches", value, "").await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(body.starts_with("GSSException: "), "{body}");
            assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
            assert_cleared(&headers);
        }
        let (status, headers, _) = get(&app, "/batches", &negotiate_with("more"), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let again = negotiate_with("again");
        assert_eq!(header(&headers, header::WWW_AUTHENTICATE), again);
        // Another scheme is no Negotiate token: a plain challenge.
        assert_challenged(&get(&app, "/batches", "Basic YTpi", "").await);
        let stats = auth_stats(&app).await;
        assert_eq!(stats["spnego_rejected"], 2);
        assert_eq!(stats["spnego_handshakes"], 0);
        assert_eq!(stats["auth_rejected"], 4);
        assert_eq!(stats["credentialed_requests"], 4);
    }

    #[tokio::test]
    async fn basic_auth_wants_exactly_the_user_and_password() {
        let app = basic("livy", "s3cr:t");
        let wrong = [
            format!("Basic {}", STANDARD.encode("livy:s3cr")),
            format!("Basic {}", STANDARD.encode("Livy:s3cr:t")),
            format!("Bearer {}", STANDARD.encode("livy:s3cr:t")),
            "Basic !!".to_string(),
            String::new(),
        ];
        for value in &wrong {
            let (status, headers, body) = get(&app, "/batches", value, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}");
            let challenge = header(&headers, header::WWW_AUTHENTICATE);
            assert_eq!(challenge, r#"Basic realm="livy""#);
            assert_eq!(body, "");
        }
        let good = format!("Basic {}", STANDARD.encode("livy:s3cr:t"));
        let auth = [("authorization", good.as_str())];
        let body = r#"{"file":"sim:forever"}"#;
        let (status, _, created) = call_with(&app, "POST", "/batches", &auth, body).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(created.contains(r#""owner":"livy""#), "{created}");
        let lower = format!("basic {}", STANDARD.encode("livy:s3cr:t"));
        let rm = "/ws/v1/cluster/apps";
        assert_eq!(get(&app, rm, &lower, "").await.0, StatusCode::OK);
        assert_eq!(get(&app, rm, "", "").await.0, StatusCode::UNAUTHORIZED);
        let stats = auth_stats(&app).await;
        assert_eq!(stats["basic_auths"], 2);
        assert_eq!(stats["auth_rejected"], 6);
        assert_eq!(stats["credentialed_requests"], 6);
    }

    #[tokio::test]
    async fn credentials_are_counted_when_auth_is_off_but_not_on_control_calls() {
        let app = server_with_auth(false, 100, Auth::Off);
        let token = "Negotiate YQ==";
        assert_eq!(get(&app, "/batches", token, "").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/batches", "", "").await.0, StatusCode::OK);
        get(&app, "/_control/stats", token, "").await;
        let stats = auth_stats(&app).await;
        assert_eq!(stats["credentialed_requests"], 1);
        assert_eq!(stats["auth_rejected"], 0);
        assert_eq!(stats["principals"], json!([]));
    }

    #[test]
    fn a_cookie_needs_every_field_the_kerberos_type_and_a_future_expiry() {
        let signer = Signer::random();
        let check = |text: &str, now| check_cookie(&signer, &signer.sign(text), now);
        assert_eq!(check("u=a&p=a@R&t=kerberos&e=10", 10), Ok("a@R".into()));
        let expired = check("u=a&p=a@R&t=kerberos&e=10", 11);
        assert_eq!(expired, Err("AuthenticationToken expired"));
        let simple = check("u=a&p=a@R&t=simple&e=10", 1);
        assert_eq!(simple, Err("invalid AuthenticationToken type"));
        assert!(check("u=a&p=a@R&t=kerberos", 1).is_err());
        assert!(check("u=a&p=a@R&t=kerberos&e=x", 1).is_err());
        assert!(check("u=&p=&t=kerberos&e=10", 1).is_err());
        let value = cookie_value(&signer, "w/h@R", 5);
        assert!(
            value.starts_with(r#""u=w&p=w/h@R&t=kerberos&e=5&s="#),
            "{value}"
        );
        assert_eq!(check_cookie(&signer, &value, 5), Ok("w/h@R".into()));
    }

    #[test]
    fn short_names_drop_the_realm_and_the_instance() {
        assert_eq!(short_name("spark-worker@SPARK.TEST"), "spark-worker");
        assert_eq!(short_name("HTTP/localhost@SPARK.TEST"), "HTTP");
        assert_eq!(short_name("bob"), "bob");
    }

    #[test]
    fn a_signed_text_verifies_only_with_its_own_secret_and_unchanged() {
        let (a, b) = (Signer::random(), Signer::random());
        let signed = a.sign("u=x&p=x@R&t=kerberos&e=1");
        assert_eq!(a.verify(&signed), Ok("u=x&p=x@R&t=kerberos&e=1"));
        assert!(b.verify(&signed).is_err());
        let tampered = signed.replace("e=1", "e=9");
        assert_eq!(a.verify(&tampered), Err("invalid signature"));
        assert_eq!(a.verify("u=x"), Err("invalid signed text"));
    }
}
