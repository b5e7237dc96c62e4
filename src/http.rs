//! What the Livy and YARN clients share about HTTP: a client that never follows redirects,
//! response bodies read up to a cap, and remote text made safe to quote in a log or a cause.

use std::time::Duration;

/// The most the worker reads of any response body. Livy's and the ResourceManager's replies are
/// a few kilobytes; a log page of 100 lines stays far below.
pub const MAX_BODY: usize = 1 << 20;
/// The most of a remote error message quoted in a log line or a task's cause.
pub const MAX_QUOTE: usize = 500;

/// A client for one kind of server: no redirects (a 3xx is an answer, and a POST body is never
/// resent to where a redirect points), a connect timeout, the worker's user agent, and TLS that
/// trusts the system's certificate authorities plus `trust`.
pub fn client(connect_timeout: Duration, trust: &Trust) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .user_agent(concat!("spark-activity-worker/", env!("CARGO_PKG_VERSION")));
    for ca in &trust.0 {
        builder = builder.add_root_certificate(ca.clone());
    }
    builder
}

/// Certificate authorities trusted besides the system's (a cluster's own CA for Livy and the
/// ResourceManager over TLS).
#[derive(Clone, Default)]
pub struct Trust(Vec<reqwest::Certificate>);

impl Trust {
    /// Every certificate of a PEM file; an unreadable file, or one without a certificate, is an
    /// error naming the file.
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: holds no PEM certificate", path.display()));
        }
        Ok(Self(certs))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether a request failed because the server's certificate is not trusted (unknown CA, wrong
/// name, expired): a configuration problem, never an outage.
pub fn is_untrusted_certificate(err: &reqwest::Error) -> bool {
    error_chain(err).contains("invalid peer certificate")
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reply larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Read(String),
}

/// Reads the body, failing as soon as it passes [`MAX_BODY`] bytes.
pub async fn read_capped(resp: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    read_capped_to(resp, MAX_BODY).await
}

/// Reads the body, failing as soon as it passes `cap` bytes.
pub async fn read_capped_to(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Read(error_chain(&e)))?
    {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The text of an error reply for quoting: at most [`MAX_BODY`] read, then [`quote`]d. An
/// unreadable body quotes as empty.
pub async fn error_text(resp: reqwest::Response) -> String {
    match read_capped(resp).await {
        Ok(body) => String::from_utf8_lossy(&body).into_owned(),
        Err(BodyError::TooLarge(_)) => "(error reply larger than 1 MiB, not read)".to_owned(),
        Err(BodyError::Read(_)) => String::new(),
    }
}

/// Remote text made fit for a log line or a task's cause: one line, anything that looks like a
/// credential replaced by `***`, at most [`MAX_QUOTE`] characters.
pub fn quote(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let safe = strip_credentials(&one_line);
    if safe.chars().count() <= MAX_QUOTE {
        return safe;
    }
    let mut cut: String = safe.chars().take(MAX_QUOTE).collect();
    cut.push('…');
    cut
}

/// Words whose value, after `=` or `:`, is a secret.
const SECRET_KEYS: [&str; 7] = [
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "authorization",
    "cookie",
];
/// Authentication schemes whose next word is a secret.
const SCHEMES: [&str; 3] = ["basic", "bearer", "negotiate"];

/// Replaces what looks like a credential in one line of text: the user info of URLs
/// (`scheme://user:pass@host`), the word after `Basic`/`Bearer`/`Negotiate`, and the value of
/// `password=`, `token: ` and the like anywhere in a word (`user=bob&password=…`, `{"token":…`),
/// to the end of the word, or the next word when the value starts there; a quoted value is
/// hidden to its closing quote, across words.
pub fn strip_credentials(line: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut hiding = Hiding::No;
    for word in line.split(' ') {
        if word.is_empty() {
            out.push(String::new());
            continue;
        }
        match hiding {
            Hiding::Quoted(q) => {
                out.push("***".to_owned());
                // What follows the closing quote may start another secret.
                if let Some(i) = word.find(q) {
                    hiding = match after_hidden(&word[i + q.len_utf8()..]) {
                        // `"… Basic" <token>`: a scheme that ended the quoted value.
                        Hiding::No if ends_with_scheme(&word[..i]) => Hiding::NextWord,
                        then => then,
                    };
                }
                continue;
            }
            Hiding::NextWord => {
                out.push("***".to_owned());
                hiding = after_hidden(word);
                continue;
            }
            Hiding::No => {}
        }
        let w = strip_userinfo(word);
        match secret_value_start(&w) {
            // `password:` ending the word: its value is the next word.
            Some(cut)
                if w[cut..]
                    .chars()
                    .all(|c| !c.is_ascii_alphanumeric() && c != '"' && c != '\'') =>
            {
                hiding = Hiding::NextWord;
                out.push(w);
            }
            Some(cut) => {
                hiding = after_hidden(&w[cut..]);
                out.push(format!("{}***", &w[..cut]));
            }
            None => {
                if ends_with_scheme(&w) {
                    hiding = Hiding::NextWord;
                }
                out.push(w);
            }
        }
    }
    out.join(" ")
}

/// What is still to hide after a hidden value.
#[derive(Clone, Copy)]
enum Hiding {
    No,
    /// The next word (a value after `password: `, a token after `Basic`).
    NextWord,
    /// Words up to and including the one holding this closing quote.
    Quoted(char),
}

/// After hiding `value`: its scheme's token comes next (`Authorization: Basic <token>`), another
/// key's value (`token: password: <secret>`), or the rest of a quoted value that did not close in
/// it.
fn after_hidden(value: &str) -> Hiding {
    if let Some(cut) = secret_value_start(value) {
        let rest = &value[cut..];
        if rest
            .chars()
            .all(|c| !c.is_ascii_alphanumeric() && c != '"' && c != '\'')
        {
            return Hiding::NextWord;
        }
        return after_hidden(rest);
    }
    if ends_with_scheme(value) {
        return Hiding::NextWord;
    }
    let open =
        value.trim_start_matches(|c: char| !c.is_ascii_alphanumeric() && c != '"' && c != '\'');
    match open.chars().next() {
        Some(q @ ('"' | '\'')) if !open[1..].contains(q) => Hiding::Quoted(q),
        _ => Hiding::No,
    }
}

/// Where the value of the first secret key in `word` starts: just after the `=` or `:` that
/// follows a key containing one of [`SECRET_KEYS`] (quotes around the key allowed).
fn secret_value_start(word: &str) -> Option<usize> {
    let lower = word.to_ascii_lowercase();
    for (pos, c) in lower.char_indices() {
        if c != '=' && c != ':' {
            continue;
        }
        // `scheme://`: not a key.
        if lower[pos..].starts_with("://") {
            continue;
        }
        let before = lower[..pos].trim_end_matches(['"', '\'']);
        let key_start = after_last(before, |c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
        let key = &before[key_start..];
        if SECRET_KEYS.iter().any(|k| key.contains(k)) {
            return Some(pos + 1);
        }
    }
    None
}

/// Whether the last run of letters in `word` is an authentication scheme (`Basic`, `"Bearer`,
/// `Authorization:Negotiate`).
fn ends_with_scheme(word: &str) -> bool {
    let trimmed = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let start = after_last(trimmed, |c| !c.is_ascii_alphanumeric());
    let last = trimmed[start..].to_ascii_lowercase();
    SCHEMES.contains(&last.as_str())
}

/// The byte index just after the last character of `text` matching `sep` (0 without one).
fn after_last(text: &str, sep: impl Fn(char) -> bool) -> usize {
    text.char_indices()
        .rev()
        .find(|&(_, c)| sep(c))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

/// `scheme://user:pass@host/...` → `scheme://***@host/...`, for every URL in a word.
fn strip_userinfo(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// A URL for logs, reports and the journal: without user info.
pub fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("");
        let _ = u.set_password(None);
    }
    u.to_string()
}

/// An error and its sources on one line: reqwest hides the cause (refused, timed out) in them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_remote_text_are_replaced() {
        assert_eq!(
            strip_credentials("GET http://alice:s3cret@livy:8998/batches failed"),
            "GET http://***@livy:8998/batches failed"
        );
        assert_eq!(
            strip_credentials("header Authorization: Basic YWxpY2U6czNjcmV0 rejected"),
            "header Authorization: *** *** rejected"
        );
        assert_eq!(
            strip_credentials("WWW-Authenticate: Negotiate oRQwEqADCgEA"),
            "WWW-Authenticate: Negotiate ***"
        );
        assert_eq!(
            strip_credentials("login with password=hunter2&user=bob"),
            "login with password=***"
        );
        assert_eq!(
            strip_credentials("hadoop.auth cookie: u=alice&t=kerberos&s=abc"),
            "hadoop.auth cookie: ***"
        );
        assert_eq!(
            strip_credentials("Session '7' not found."),
            "Session '7' not found."
        );
    }

    #[test]
    fn credentials_later_in_a_word_or_split_across_words_are_replaced() {
        for (text, shown) in [
            ("user=bob&password=hunter2", "user=bob&password=***"),
            (
                "jdbc:postgresql://db/x?user=u&password=hunter2 failed",
                "jdbc:postgresql://db/x?user=u&password=*** failed",
            ),
            (
                "Authorization:Basic dXNlcjpwYXNz rejected",
                "Authorization:*** *** rejected",
            ),
            (
                "\"Authorization\": \"Negotiate YII\"}",
                "\"Authorization\": *** ***",
            ),
            (
                "{\"password\":\"hunter2\",\"token\":\"abc\"}",
                "{\"password\":***",
            ),
            (
                "\"password\": \"my long pass\", next",
                "\"password\": *** *** *** next",
            ),
            ("password='two words' ok", "password=*** *** ok"),
            ("(Bearer abc) denied", "(Bearer *** denied"),
            (
                "see https://token.example.com/x and tokens",
                "see https://token.example.com/x and tokens",
            ),
            (
                "s3://b/a.py,https://u:s3kr1t@h/b.py",
                "s3://b/a.py,https://***@h/b.py",
            ),
            ("token: password: s3kr1t", "token: *** ***"),
            ("Basic password: s3kr1t", "Basic *** ***"),
            (
                "{\"password\":\"a b\",\"auth\":\"Bearer s3kr1t\"}",
                "{\"password\":*** *** ***",
            ),
            (
                "{\"password\":\"a b\",\"token\": \"s3kr1t\"}",
                "{\"password\":*** *** ***",
            ),
            ("naïve été clé=valeur", "naïve été clé=valeur"),
            ("token:\"a  b Basic\" s3kr1t", "token:***  *** *** ***"),
            ("mot_de_passe_été: x", "mot_de_passe_été: x"),
        ] {
            assert_eq!(strip_credentials(text), shown, "{text}");
        }
    }

    #[test]
    fn quotes_are_one_line_and_capped() {
        let long = "x ".repeat(2000);
        let q = quote(&long);
        assert_eq!(q.chars().count(), MAX_QUOTE + 1);
        assert!(q.ends_with('…'));
        assert_eq!(quote("a\n  b\tc"), "a b c");
    }

    #[test]
    fn redacted_urls_have_no_user_info() {
        let u = url::Url::parse("https://alice:s3cret@livy.internal:8998/").expect("url");
        assert_eq!(redacted(&u), "https://livy.internal:8998/");
        let plain = url::Url::parse("http://livy:8998/").expect("url");
        assert_eq!(redacted(&plain), "http://livy:8998/");
    }
}

/// A canned HTTP server for the clients' unit tests: every request gets the same raw response.
#[cfg(test)]
pub mod canned {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a canned server received: each request's head and body as text.
    #[derive(Clone, Default)]
    pub struct Seen(Arc<Mutex<Vec<String>>>);

    impl Seen {
        pub fn count(&self) -> usize {
            self.requests().len()
        }

        pub fn requests(&self) -> Vec<String> {
            self.0.lock().expect("lock").clone()
        }
    }

    /// Serves `response` (status line, headers and body) on a free loopback port; returns its
    /// base URL and what it received.
    pub async fn serve(response: Vec<u8>) -> (url::Url, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = url::Url::parse(&format!("http://{}/", listener.local_addr().expect("addr")))
            .expect("url");
        let seen = Seen::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let response = response.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    record
                        .0
                        .lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let _ = conn.write_all(&response).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        (url, seen)
    }
    /// A response with `status` (e.g. `"200 OK"`), extra header lines and `body`.
    pub fn response(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }
}
