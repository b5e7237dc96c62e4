//! `http::quote` and `http::strip_credentials`: on any text, a quote is one capped line; and a
//! secret placed where the functions promise to hide one (a URL's user info, the word after an
//! authentication scheme, the value of `password=`, `token: ` and the like), among any other
//! words, never survives, not even in part.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use spark_activity_worker::http::{quote, strip_credentials};
use spark_activity_worker_fuzz::assert_quotable;

/// Every credential is this, followed by fuzz-chosen characters fit for its place.
const SECRET: &str = "s3kr1t";
/// What must not be left of it: any four characters of it would already be a leak.
const TRACE: &str = "s3kr";

/// Words whose value, after `=` or `:`, is a secret: the private list of `http.rs`, restated so
/// that the check does not share the code it checks.
const SECRET_KEYS: [&str; 7] = [
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "authorization",
    "cookie",
];
const SCHEMES: [&str; 3] = ["Basic", "Bearer", "Negotiate"];
/// How the words are separated; `quote` makes each a single space.
const SEPARATORS: [&str; 9] = [
    " ", "  ", "\n", "\t", "\r\n", " \u{b} ", "\u{85}", "\u{a0}", "\u{2028}",
];

const WORDY: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
/// Printable ASCII but the space: a secret's characters in a key's value or after a scheme.
const VISIBLE: &str = "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
/// What RFC 3986 allows in a URL's user info (and `@`, which only the last `@` ends).
const USERINFO: &str =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:@";
const HOST: &str = "abcdefghijklmnopqrstuvwxyz0123456789.-";
/// A URL scheme after its first letter (`jdbc:mysql`, `s3a`, `git+https`).
const SCHEME: &str = "abcdefghijklmnopqrstuvwxyz0123456789+.-:";
/// What may come before a URL in the same word (`url=`, `"`, `(`), without a `://` of its own.
const URL_PREFIX: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\"'(<[{=,;._-";
/// Punctuation around a scheme word: `"Basic`, `(Bearer`, `Negotiate,`.
const PUNCTUATION: &str = "\"'([{<>}]),;.!";

#[derive(Arbitrary, Debug)]
struct Case {
    before: Vec<String>,
    credential: Credential,
    secret_tail: Vec<u8>,
    after: Vec<String>,
    separator: u8,
}

#[derive(Arbitrary, Debug)]
enum Credential {
    /// A secret key and its value: `password=…`, `db.token: …`, `"Secret":"…"`.
    KeyValue {
        prefix: Vec<u8>,
        key: u8,
        case: u64,
        form: u8,
    },
    /// The same after other pairs in the word: `user=bob&password=…`,
    /// `jdbc:postgresql://db/x?user=u&password=…`.
    LaterPair {
        url: Option<(Vec<u8>, Vec<u8>)>,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        joiner: u8,
        key: u8,
        case: u64,
        separator: bool,
    },
    /// An authentication scheme and its token: `Basic …`, `Authorization: Bearer …`,
    /// `{"Authorization":"Negotiate …`.
    Scheme {
        header: u8,
        scheme: u8,
        case: u64,
        open: Vec<u8>,
        close: Vec<u8>,
    },
    /// A URL's user info: `https://alice:…@host/x`, `s3a://…@bucket`, `url=jdbc:mysql://u:…@db`.
    Url(Url),
    /// The same URL after another one in the word: `s3://b/a.py,https://u:…@host/b.py`.
    SecondUrl {
        scheme: Vec<u8>,
        host: Vec<u8>,
        path: Vec<u8>,
        joiner: u8,
        url: Url,
    },
}

#[derive(Arbitrary, Debug)]
struct Url {
    prefix: Vec<u8>,
    scheme: Vec<u8>,
    user: Option<Vec<u8>>,
    host: Vec<u8>,
    port: Option<u16>,
    rest: Option<(u8, Vec<u8>)>,
}

/// Up to 24 characters of `alphabet`, chosen by `bytes`.
fn text(bytes: &[u8], alphabet: &str) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    bytes
        .iter()
        .take(24)
        .map(|&b| chars[usize::from(b) % chars.len()])
        .collect()
}

/// `word` with its ASCII letters in upper or lower case as the bits of `case` say.
fn cased(word: &str, case: u64) -> String {
    word.chars()
        .enumerate()
        .map(|(i, c)| {
            if case >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn pick<T: Copy>(list: &[T], i: u8) -> T {
    list[usize::from(i) % list.len()]
}

impl Url {
    fn word(&self, secret: &str) -> String {
        let scheme = format!("h{}", text(&self.scheme, SCHEME));
        let userinfo = match &self.user {
            Some(user) => format!("{}:{secret}", text(user, USERINFO)),
            None => secret.to_owned(),
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let rest = match &self.rest {
            Some((start, more)) => format!("{}{}", pick(&['/', '?', '#'], *start), text(more, VISIBLE)),
            None => String::new(),
        };
        format!(
            "{}{scheme}://{userinfo}@{}{port}{rest}",
            text(&self.prefix, URL_PREFIX),
            text(&self.host, HOST)
        )
    }
}

impl Credential {
    /// The words that carry `secret`.
    fn words(&self, secret_tail: &[u8]) -> Vec<String> {
        let tail = |alphabet| format!("{SECRET}{}", text(secret_tail, alphabet));
        match self {
            Credential::KeyValue {
                prefix,
                key,
                case,
                form,
            } => {
                let key = format!("{}{}", text(prefix, WORDY), cased(pick(&SECRET_KEYS, *key), *case));
                let secret = tail(VISIBLE);
                match form % 6 {
                    0 => vec![format!("{key}={secret}")],
                    1 => vec![format!("{key}:{secret}")],
                    2 => vec![format!("{key}="), secret],
                    3 => vec![format!("{key}:"), secret],
                    4 => vec![format!("\"{key}\":\"{secret}\"")],
                    _ => vec![format!("\"{key}\":"), format!("\"{secret}\"")],
                }
            }
            Credential::LaterPair {
                url,
                pairs,
                joiner,
                key,
                case,
                separator,
            } => {
                let joiner = pick(&['&', ',', ';', '|'], *joiner);
                let mut word = match url {
                    Some((scheme, host)) => {
                        format!("j{}://{}/db?", text(scheme, SCHEME), text(host, HOST))
                    }
                    None => String::new(),
                };
                for (k, v) in pairs.iter().take(4) {
                    word.push_str(&format!("k{}={}{joiner}", text(k, WORDY), text(v, WORDY)));
                }
                let sep = if *separator { '=' } else { ':' };
                let key = cased(pick(&SECRET_KEYS, *key), *case);
                vec![format!("{word}{key}{sep}{}", tail(WORDY))]
            }
            Credential::Scheme {
                header,
                scheme,
                case,
                open,
                close,
            } => {
                let scheme = format!(
                    "{}{}{}",
                    text(open, PUNCTUATION),
                    cased(pick(&SCHEMES, *scheme), *case),
                    text(close, PUNCTUATION)
                );
                let secret = tail(VISIBLE);
                match header % 7 {
                    0 => vec![scheme, secret],
                    1 => vec!["Authorization:".into(), scheme, secret],
                    2 => vec!["Proxy-Authorization:".into(), scheme, secret],
                    3 => vec!["WWW-Authenticate:".into(), scheme, secret],
                    4 => vec![format!("Authorization:{scheme}"), secret],
                    5 => vec![format!("authorization={scheme}"), secret],
                    _ => vec![format!("{{\"Authorization\":\"{scheme}"), format!("{secret}\"}}")],
                }
            }
            Credential::Url(url) => vec![url.word(&tail(USERINFO))],
            Credential::SecondUrl {
                scheme,
                host,
                path,
                joiner,
                url,
            } => vec![format!(
                "s{}://{}/{}{}{}",
                text(scheme, SCHEME),
                text(host, HOST),
                text(path, WORDY),
                pick(&[',', ';', '|'], *joiner),
                url.word(&tail(USERINFO))
            )],
        }
    }
}

impl Case {
    fn check(&self) {
        let words: Vec<String> = self
            .before
            .iter()
            .cloned()
            .chain(self.credential.words(&self.secret_tail))
            .chain(self.after.iter().cloned())
            .collect();
        let line = words.join(" ");
        // The secret is the only trace of itself (a fuzz-chosen word may spell it too).
        if line.matches(TRACE).count() != 1 {
            return;
        }
        let stripped = strip_credentials(&line);
        assert!(
            !stripped.contains(TRACE),
            "a secret survives strip_credentials:\n  in:  {line:?}\n  out: {stripped:?}"
        );
        let text = words.join(pick(&SEPARATORS, self.separator));
        let quoted = quote(&text);
        assert!(
            !quoted.contains(TRACE),
            "a secret survives quote:\n  in:  {text:?}\n  out: {quoted:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert_quotable(&quote(&text), &text);
    let line = text.replace(|c: char| c.is_whitespace(), " ");
    assert_eq!(
        strip_credentials(&line).split(' ').count(),
        line.split(' ').count(),
        "strip_credentials must keep every word: {line:?}"
    );

    if let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) {
        case.check();
    }
});
