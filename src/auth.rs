//! How the Livy and ResourceManager clients authenticate: not at all, HTTP Basic (sent to
//! `--livy-url`'s origin only), or Kerberos SPNEGO, reusing the `hadoop.auth` cookie that Livy's
//! and the ResourceManager's authentication filter hands out until it expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, COOKIE, HeaderValue, SET_COOKIE};
use reqwest::{Request, Response, StatusCode};
use url::Url;

use crate::http::error_chain;
use crate::kerberos::Kerberos;

/// The cookie Hadoop's `AuthenticationFilter` (Livy, the ResourceManager) sets after a
/// successful SPNEGO exchange.
const COOKIE_NAME: &str = "hadoop.auth";
/// A cookie this close to its expiry is not sent; a fresh token is cheaper than a 401.
const COOKIE_MARGIN: Duration = Duration::from_secs(5);

/// Why a request was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{}", error_chain(.0))]
    Http(#[from] reqwest::Error),
    /// No Kerberos token could be made (KDC unreachable, keytab no longer valid, ...).
    #[error("kerberos: {0}")]
    Credentials(String),
}

enum Method {
    None,
    Basic {
        origin: url::Origin,
        header: HeaderValue,
    },
    Kerberos(Arc<Kerberos>),
}

/// Credentials and the cookies they earned, shared by every client of the worker.
#[derive(Clone)]
pub struct Auth {
    method: Arc<Method>,
    /// `hadoop.auth` per origin (Livy and each ResourceManager hand out their own).
    cookies: Arc<Mutex<HashMap<String, Cookie>>>,
}

#[derive(Clone)]
struct Cookie {
    /// `hadoop.auth=<value>` exactly as it is sent back.
    pair: String,
    expires: Option<SystemTime>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match *self.method {
            Method::None => "Auth::None",
            Method::Basic { .. } => "Auth::Basic(***)",
            Method::Kerberos(_) => "Auth::Kerberos",
        })
    }
}

impl Auth {
    pub fn none() -> Self {
        Self::with(Method::None)
    }

    /// Basic credentials for `origin_of`'s origin; requests anywhere else go without them.
    pub fn basic(origin_of: &Url, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut header = HeaderValue::from_str(&format!("Basic {token}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        header.set_sensitive(true);
        Self::with(Method::Basic {
            origin: origin_of.origin(),
            header,
        })
    }

    pub fn kerberos(kerberos: Arc<Kerberos>) -> Self {
        Self::with(Method::Kerberos(kerberos))
    }

    fn with(method: Method) -> Self {
        Self {
            method: Arc::new(method),
            cookies: Arc::default(),
        }
    }

    /// Sends `req` with the credentials it may carry. With Kerberos: a live `hadoop.auth`
    /// cookie of the origin if there is one, else (or when the server no longer takes the
    /// cookie) a fresh SPNEGO token for `HTTP/<host>`.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        mut req: Request,
    ) -> Result<Response, SendError> {
        match &*self.method {
            Method::None => Ok(http.execute(req).await?),
            Method::Basic { origin, header } => {
                if req.url().origin() == *origin {
                    req.headers_mut().insert(AUTHORIZATION, header.clone());
                }
                Ok(http.execute(req).await?)
            }
            Method::Kerberos(kerberos) => {
                let origin = req.url().origin().ascii_serialization();
                if let Some(pair) = self.live_cookie(&origin) {
                    let again = req.try_clone();
                    if let Ok(v) = HeaderValue::from_str(&pair) {
                        req.headers_mut().insert(COOKIE, v);
                    }
                    let resp = http.execute(req).await?;
                    self.remember(&origin, &resp);
                    match again {
                        Some(again) if resp.status() == StatusCode::UNAUTHORIZED => {
                            self.forget(&origin);
                            req = again;
                        }
                        _ => return Ok(resp),
                    }
                }
                let host = req.url().host_str().unwrap_or_default().to_owned();
                let token = kerberos
                    .token(&host)
                    .await
                    .map_err(|e| SendError::Credentials(e.to_string()))?;
                let mut value = HeaderValue::from_str(&format!("Negotiate {token}"))
                    .map_err(|e| SendError::Credentials(e.to_string()))?;
                value.set_sensitive(true);
                req.headers_mut().insert(AUTHORIZATION, value);
                let resp = http.execute(req).await?;
                self.remember(&origin, &resp);
                Ok(resp)
            }
        }
    }

    fn live_cookie(&self, origin: &str) -> Option<String> {
        let cookies = self.cookies.lock().unwrap_or_else(|p| p.into_inner());
        let c = cookies.get(origin)?;
        match c.expires {
            Some(at) if SystemTime::now() + COOKIE_MARGIN >= at => None,
            _ => Some(c.pair.clone()),
        }
    }

    fn forget(&self, origin: &str) {
        self.cookies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(origin);
    }

    /// Keeps the `hadoop.auth` cookie a response sets; an emptied one is dropped.
    fn remember(&self, origin: &str, resp: &Response) {
        for v in resp.headers().get_all(SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            match parse_set_cookie(v) {
                Some(Some(c)) => {
                    self.cookies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(origin.to_owned(), c);
                }
                Some(None) => self.forget(origin),
                None => {}
            }
        }
    }
}

/// `Some(Some(cookie))` for a `hadoop.auth` cookie with a value, `Some(None)` for one being
/// cleared, `None` for any other cookie. The expiry is the token's own `e=` (milliseconds since
/// the epoch), which Hadoop signs, else the cookie's `Max-Age`.
fn parse_set_cookie(header: &str) -> Option<Option<Cookie>> {
    let mut parts = header.split(';').map(str::trim);
    let (name, value) = parts.next()?.split_once('=')?;
    if name.trim() != COOKIE_NAME {
        return None;
    }
    let value = value.trim();
    let bare = value.trim_matches('"');
    if bare.is_empty() {
        return Some(None);
    }
    let mut expires = bare
        .split('&')
        .find_map(|kv| kv.strip_prefix("e="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    for attr in parts {
        if let Some((k, v)) = attr.split_once('=')
            && k.trim().eq_ignore_ascii_case("max-age")
            && let Ok(secs) = v.trim().parse::<i64>()
        {
            if secs <= 0 {
                return Some(None);
            }
            expires.get_or_insert(SystemTime::now() + Duration::from_secs(secs.unsigned_abs()));
        }
    }
    Some(Some(Cookie {
        pair: format!("{COOKIE_NAME}={value}"),
        expires,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hadoop_auth_cookie_expiry_comes_from_the_signed_token() {
        let c = parse_set_cookie(
            "hadoop.auth=\"u=spark&p=spark@EX.COM&t=kerberos&e=1700000000000&s=abc=\"; Path=/; HttpOnly",
        )
        .expect("hadoop.auth")
        .expect("a value");
        assert_eq!(
            c.pair,
            "hadoop.auth=\"u=spark&p=spark@EX.COM&t=kerberos&e=1700000000000&s=abc=\""
        );
        assert_eq!(
            c.expires,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
        );
    }

    #[test]
    fn cleared_and_foreign_cookies() {
        assert!(matches!(
            parse_set_cookie("hadoop.auth=; Max-Age=0"),
            Some(None)
        ));
        assert!(matches!(
            parse_set_cookie("hadoop.auth=\"\"; Path=/"),
            Some(None)
        ));
        assert!(matches!(
            parse_set_cookie("hadoop.auth=\"u=a&e=1\"; Max-Age=0"),
            Some(None)
        ));
        assert!(parse_set_cookie("JSESSIONID=abc; Path=/").is_none());
        let c = parse_set_cookie("hadoop.auth=xyz; Max-Age=60")
            .expect("hadoop.auth")
            .expect("a value");
        assert!(c.expires.is_some_and(|at| at > SystemTime::now()));
    }

    #[tokio::test]
    async fn basic_credentials_go_to_the_configured_origin_only() {
        use crate::http::canned;
        let (ours, ours_seen) = canned::serve(canned::response("200 OK", &[], b"{}")).await;
        let (other, other_seen) = canned::serve(canned::response("200 OK", &[], b"{}")).await;
        let auth = Auth::basic(&ours, "spark", "s3cret");
        assert_eq!(format!("{auth:?}"), "Auth::Basic(***)");
        let http = reqwest::Client::new();
        for url in [
            ours.join("batches").expect("url"),
            other.join("batches").expect("url"),
        ] {
            let req = http.get(url).build().expect("request");
            auth.send(&http, req).await.expect("sent");
        }
        // base64("spark:s3cret")
        let basic = "authorization: basic c3bhcms6cznjcmv0";
        let ours = ours_seen.requests().join("\n").to_ascii_lowercase();
        assert!(ours.contains(basic), "{ours}");
        let other = other_seen.requests().join("\n").to_ascii_lowercase();
        assert_eq!(other_seen.count(), 1);
        assert!(!other.contains("authorization"), "{other}");
    }
}
