//! YARN ResourceManager REST client: finds a task's application by the tag the worker gave it,
//! reads its state and kills it. YARN owns the application; Livy only submits and watches it, so
//! when Livy forgets a batch (restart without recovery, retention) or misreports its end, YARN is
//! the source of truth. Also finds the ResourceManager's web address in `yarn-site.xml`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use url::Url;

use crate::auth::Auth;
use crate::http::{self, BodyError, Trust, error_chain};
use crate::metrics;
pub use crate::scheduler::Scheduler;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a ResourceManager call failed.
#[derive(Debug, thiserror::Error)]
pub enum YarnError {
    /// No ResourceManager answered (every configured address was tried).
    #[error("resourcemanager unreachable: {0}")]
    Unreachable(String),
    #[error("resourcemanager answered {status}: {msg}")]
    Http { status: u16, msg: String },
    #[error("unexpected resourcemanager reply: {0}")]
    Decode(String),
}

/// How a finished application ended, in YARN's terms (`state` plus `finalStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Failed,
    Killed,
}

/// An application as the ResourceManager shows it (the fields used here).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct App {
    pub id: String,
    pub name: String,
    /// `NEW` … `ACCEPTED`, `RUNNING`, `FINISHED`, `FAILED`, `KILLED`.
    pub state: String,
    /// `UNDEFINED` while running, then `SUCCEEDED`, `FAILED` or `KILLED`.
    pub final_status: String,
    pub diagnostics: String,
    /// Comma-separated, lower-cased by YARN.
    pub application_tags: String,
    pub tracking_url: Option<String>,
    pub started_time: i64,
}

impl App {
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "FINISHED" | "FAILED" | "KILLED")
    }

    /// The outcome of a finished application: success only for `FINISHED` + `SUCCEEDED`.
    pub fn verdict(&self) -> Option<Verdict> {
        match (self.state.as_str(), self.final_status.as_str()) {
            ("FINISHED", "SUCCEEDED") => Some(Verdict::Succeeded),
            ("KILLED", _) | ("FINISHED", "KILLED") => Some(Verdict::Killed),
            ("FAILED", _) | ("FINISHED", _) => Some(Verdict::Failed),
            _ => None,
        }
    }
}

/// Of the applications carrying one task's tag (normally one), the one that speaks for it: a
/// running one if any, else the one started last.
pub fn pick(apps: Vec<App>) -> Option<App> {
    apps.into_iter()
        .max_by_key(|a| (!a.is_final(), a.started_time))
}

/// The ResourceManager as supervisors use it: the seam where component tests put a fake.
#[async_trait]
pub trait ResourceManager: Send + Sync + std::fmt::Debug {
    /// The ResourceManager of the cluster whose primary node is `host` (same scheme and port).
    fn for_host(&self, host: &str) -> Arc<dyn ResourceManager>;
    /// Applications carrying `tag` (`GET /ws/v1/cluster/apps?applicationTags=`).
    async fn apps_by_tag(&self, tag: &str) -> Result<Vec<App>, YarnError>;
    /// One application (`GET /ws/v1/cluster/apps/{id}`).
    async fn app(&self, id: &str) -> Result<App, YarnError>;
    /// Asks YARN to kill an application (`PUT …/state {"state":"KILLED"}`); the kill may still
    /// be in progress when this returns.
    async fn kill(&self, id: &str) -> Result<(), YarnError>;
    /// What the cluster has free (`GET /ws/v1/cluster/metrics`).
    async fn metrics(&self) -> Result<ClusterMetrics, YarnError>;
    /// The scheduler's queues (`GET /ws/v1/cluster/scheduler`).
    async fn scheduler(&self) -> Result<Scheduler, YarnError>;
}

/// The part of `GET /ws/v1/cluster/metrics` that says whether a job could start now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMetrics {
    #[serde(default, rename = "availableMB")]
    pub available_mb: i64,
    #[serde(default)]
    pub available_virtual_cores: i64,
    /// Applications accepted but waiting for resources.
    #[serde(default)]
    pub apps_pending: i64,
    #[serde(default, rename = "totalMB")]
    pub total_mb: i64,
    #[serde(default)]
    pub total_virtual_cores: i64,
}

#[derive(serde::Deserialize)]
struct MetricsReply {
    #[serde(rename = "clusterMetrics")]
    cluster_metrics: ClusterMetrics,
}

/// A `GET /ws/v1/cluster/metrics` reply.
pub fn parse_metrics(body: &[u8]) -> Result<ClusterMetrics, YarnError> {
    serde_json::from_slice::<MetricsReply>(body)
        .map(|r| r.cluster_metrics)
        .map_err(|e| YarnError::Decode(e.to_string()))
}

/// A ResourceManager client. With high availability several addresses are given; each call
/// tries them in order. A standby answers with a redirect to the active one: that is not followed
/// (the worker talks only to addresses it was given), the next address is tried instead.
#[derive(Debug, Clone)]
pub struct YarnClient {
    http: reqwest::Client,
    auth: Auth,
    urls: Vec<Url>,
}

impl YarnClient {
    pub fn new(urls: Vec<Url>, trust: &Trust, auth: Auth) -> Result<Self, YarnError> {
        let http = http::client(Duration::from_secs(5), trust)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| YarnError::Unreachable(e.to_string()))?;
        Ok(Self { http, auth, urls })
    }

    pub fn urls(&self) -> &[Url] {
        &self.urls
    }

    /// Sends `build(url)` to each address until one answers; its status decides the rest.
    async fn call(
        &self,
        route: &'static str,
        path: &[&str],
        build: impl Fn(&reqwest::Client, Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, YarnError> {
        let mut last = String::from("no resourcemanager address");
        for base in &self.urls {
            let mut url = base.clone();
            match url.path_segments_mut() {
                Ok(mut segs) => {
                    segs.pop_if_empty().extend(path);
                }
                Err(()) => continue,
            }
            let req = match build(&self.http, url).build() {
                Ok(req) => req,
                Err(e) => return Err(YarnError::Decode(error_chain(&e))),
            };
            let started = tokio::time::Instant::now();
            let sent = self.auth.send(&self.http, req).await;
            let status = match &sent {
                Ok(resp) => resp.status().as_str().to_owned(),
                Err(_) => "unreachable".to_owned(),
            };
            metrics::yarn_request(route, &status, started.elapsed());
            match sent {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) if resp.status().is_redirection() => {
                    last = format!("{base}: a standby (it redirects to the active one)");
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = http::error_text(resp).await;
                    return Err(YarnError::Http {
                        status,
                        msg: remote_message(&body),
                    });
                }
                Err(e) => last = format!("{base}: {e}"),
            }
        }
        Err(YarnError::Unreachable(last))
    }
}

impl YarnClient {
    /// A plain `GET` of a JSON resource; its body.
    async fn get_json(&self, route: &'static str, path: &[&str]) -> Result<Vec<u8>, YarnError> {
        let resp = self
            .call(route, path, |http, url| {
                http.get(url)
                    .header(reqwest::header::ACCEPT, "application/json")
            })
            .await?;
        read(resp).await
    }
}

#[derive(Deserialize)]
struct AppsReply {
    apps: Option<AppList>,
}

#[derive(Deserialize)]
struct AppList {
    #[serde(default)]
    app: Vec<App>,
}

#[derive(Deserialize)]
struct AppReply {
    app: App,
}

async fn read(resp: reqwest::Response) -> Result<Vec<u8>, YarnError> {
    http::read_capped(resp).await.map_err(|e| match e {
        BodyError::TooLarge(_) => YarnError::Decode(e.to_string()),
        BodyError::Read(msg) => YarnError::Unreachable(msg),
    })
}

/// The applications of a `GET /ws/v1/cluster/apps?applicationTags=` reply that carry exactly
/// `tag`, whatever the server's own matching does.
pub fn parse_apps(body: &[u8], tag: &str) -> Result<Vec<App>, YarnError> {
    let reply: AppsReply =
        serde_json::from_slice(body).map_err(|e| YarnError::Decode(e.to_string()))?;
    let tag = tag.to_ascii_lowercase();
    Ok(reply
        .apps
        .map(|l| l.app)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.application_tags.split(',').any(|t| t.trim() == tag))
        .collect())
}

/// The application of a `GET /ws/v1/cluster/apps/{id}` reply.
pub fn parse_app(body: &[u8]) -> Result<App, YarnError> {
    serde_json::from_slice::<AppReply>(body)
        .map(|r| r.app)
        .map_err(|e| YarnError::Decode(e.to_string()))
}

#[async_trait]
impl ResourceManager for YarnClient {
    fn for_host(&self, host: &str) -> Arc<dyn ResourceManager> {
        let urls = self
            .urls
            .first()
            .and_then(|u| {
                let mut u = u.clone();
                u.set_host(Some(host)).ok().map(|()| vec![u])
            })
            .unwrap_or_default();
        Arc::new(Self {
            http: self.http.clone(),
            auth: self.auth.clone(),
            urls,
        })
    }

    async fn apps_by_tag(&self, tag: &str) -> Result<Vec<App>, YarnError> {
        let resp = self
            .call(
                "GET /ws/v1/cluster/apps",
                &["ws", "v1", "cluster", "apps"],
                |http, mut url| {
                    url.query_pairs_mut().append_pair("applicationTags", tag);
                    http.get(url)
                        .header(reqwest::header::ACCEPT, "application/json")
                },
            )
            .await?;
        parse_apps(&read(resp).await?, tag)
    }

    async fn app(&self, id: &str) -> Result<App, YarnError> {
        let body = self
            .get_json(
                "GET /ws/v1/cluster/apps/{id}",
                &["ws", "v1", "cluster", "apps", id],
            )
            .await?;
        parse_app(&body)
    }

    async fn metrics(&self) -> Result<ClusterMetrics, YarnError> {
        let body = self
            .get_json(
                "GET /ws/v1/cluster/metrics",
                &["ws", "v1", "cluster", "metrics"],
            )
            .await?;
        parse_metrics(&body)
    }

    async fn scheduler(&self) -> Result<Scheduler, YarnError> {
        let body = self
            .get_json(
                "GET /ws/v1/cluster/scheduler",
                &["ws", "v1", "cluster", "scheduler"],
            )
            .await?;
        crate::scheduler::parse(&body).map_err(YarnError::Decode)
    }

    async fn kill(&self, id: &str) -> Result<(), YarnError> {
        self.call(
            "PUT /ws/v1/cluster/apps/{id}/state",
            &["ws", "v1", "cluster", "apps", id, "state"],
            |http, url| {
                http.put(url)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .json(&serde_json::json!({"state": "KILLED"}))
            },
        )
        .await
        .map(drop)
    }
}

/// The message of a `RemoteException` body, or the body on one line.
pub fn remote_message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let text = v["RemoteException"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_owned());
    let text = http::quote(&text);
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

/// Where `yarn-site.xml` lives: `$HADOOP_CONF_DIR`, else EMR's `/etc/hadoop/conf`.
pub fn conf_dir() -> std::path::PathBuf {
    std::env::var_os("HADOOP_CONF_DIR")
        .map(Into::into)
        .unwrap_or_else(|| "/etc/hadoop/conf".into())
}

/// The ResourceManager web addresses this node's `yarn-site.xml` names (one per RM id with high
/// availability), or `http://<host>:8088` when there is no readable file or it names none.
pub fn discover(conf_dir: &Path, this_host: &str) -> Vec<Url> {
    std::fs::read_to_string(conf_dir.join("yarn-site.xml"))
        .ok()
        .and_then(|xml| addresses(&xml, this_host))
        .filter(|urls| !urls.is_empty())
        .unwrap_or_else(|| {
            Url::parse(&format!("http://{this_host}:8088"))
                .map(|u| vec![u])
                .unwrap_or_default()
        })
}

/// The web addresses a `yarn-site.xml` text names; `None` when it does not parse.
pub fn addresses(xml: &str, this_host: &str) -> Option<Vec<Url>> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let props: Vec<(String, String)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("property"))
        .filter_map(|p| {
            let text = |tag: &str| {
                p.children()
                    .find(|c| c.has_tag_name(tag))
                    .map(|c| c.text().unwrap_or("").trim().to_owned())
            };
            Some((text("name")?, text("value")?))
        })
        .collect();
    let get = |key: &str| -> Option<String> {
        let raw = props.iter().rev().find(|(k, _)| k == key)?.1.clone();
        Some(expand(&raw, &props))
    };
    let https = get("yarn.http.policy").is_some_and(|p| p == "HTTPS_ONLY");
    let (key, scheme, port) = if https {
        ("yarn.resourcemanager.webapp.https.address", "https", 8090)
    } else {
        ("yarn.resourcemanager.webapp.address", "http", 8088)
    };
    let address = |suffix: &str| -> Option<Url> {
        let addr = get(&format!("{key}{suffix}")).or_else(|| {
            get(&format!("yarn.resourcemanager.hostname{suffix}")).map(|h| format!("{h}:{port}"))
        })?;
        let addr = match addr.split_once(':') {
            Some(("0.0.0.0", p)) => format!("{this_host}:{p}"),
            _ => addr,
        };
        Url::parse(&format!("{scheme}://{addr}")).ok()
    };
    let ha = get("yarn.resourcemanager.ha.enabled").is_some_and(|v| v == "true");
    let ids = get("yarn.resourcemanager.ha.rm-ids").unwrap_or_default();
    if ha && !ids.trim().is_empty() {
        return Some(
            ids.split(',')
                .filter_map(|id| address(&format!(".{}", id.trim())))
                .collect(),
        );
    }
    Some(address("").into_iter().collect())
}

/// Hadoop's `${name}` substitution from the same file, a few levels deep.
fn expand(value: &str, props: &[(String, String)]) -> String {
    let mut out = value.to_owned();
    for _ in 0..5 {
        let Some(start) = out.find("${") else { break };
        let Some(len) = out[start..].find('}') else {
            break;
        };
        let name = &out[start + 2..start + len];
        let with = props
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        out.replace_range(start..start + len + 1, &with);
    }
    out
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn cluster_metrics_as_the_resourcemanager_sends_them() {
        let body = br#"{"clusterMetrics":{"appsSubmitted":12,"appsCompleted":9,"appsPending":1,
            "appsRunning":2,"reservedMB":0,"availableMB":6144,"allocatedMB":18432,"totalMB":24576,
            "reservedVirtualCores":0,"availableVirtualCores":3,"allocatedVirtualCores":9,
            "totalVirtualCores":12,"containersAllocated":9,"activeNodes":2}}"#;
        assert_eq!(
            parse_metrics(body).expect("parsed"),
            ClusterMetrics {
                available_mb: 6144,
                available_virtual_cores: 3,
                apps_pending: 1,
                total_mb: 24576,
                total_virtual_cores: 12,
            }
        );
        assert!(parse_metrics(b"{}").is_err());
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::http::canned;

    #[tokio::test]
    async fn a_standby_redirect_is_not_followed_the_next_address_answers() {
        let (target, target_hits) = canned::serve(canned::response("500 Oops", &[], b"")).await;
        let location = format!("Location: {target}ws/v1/cluster/apps/application_1_0001");
        let (standby, _) = canned::serve(canned::response(
            "307 Temporary Redirect",
            &[&location],
            b"",
        ))
        .await;
        let app = br#"{"app":{"id":"application_1_0001","name":"n","state":"RUNNING","finalStatus":"UNDEFINED","diagnostics":"","applicationTags":"","startedTime":1}}"#;
        let (active, _) = canned::serve(canned::response("200 OK", &[], app)).await;
        let client = YarnClient::new(vec![standby, active], &Trust::default(), Auth::none())
            .expect("client");
        let got = client
            .app("application_1_0001")
            .await
            .expect("the active one answers");
        assert_eq!(got.state, "RUNNING");
        assert_eq!(target_hits.count(), 0, "the redirect was not followed");
    }

    fn site(props: &[(&str, &str)]) -> String {
        let body: String = props
            .iter()
            .map(|(k, v)| format!("<property><name>{k}</name><value>{v}</value></property>\n"))
            .collect();
        format!("<?xml version=\"1.0\"?>\n<configuration>\n{body}</configuration>\n")
    }

    fn urls(props: &[(&str, &str)]) -> Vec<String> {
        addresses(&site(props), "me.internal")
            .expect("parses")
            .iter()
            .map(Url::to_string)
            .collect()
    }

    #[test]
    fn emr_names_the_resourcemanager_host() {
        assert_eq!(
            urls(&[("yarn.resourcemanager.hostname", "ip-10-0-0-1.ec2.internal")]),
            vec!["http://ip-10-0-0-1.ec2.internal:8088/"]
        );
    }

    #[test]
    fn webapp_address_wins_and_variables_expand() {
        assert_eq!(
            urls(&[
                ("yarn.resourcemanager.hostname", "rm.internal"),
                (
                    "yarn.resourcemanager.webapp.address",
                    "${yarn.resourcemanager.hostname}:8089"
                ),
            ]),
            vec!["http://rm.internal:8089/"]
        );
        assert_eq!(
            urls(&[("yarn.resourcemanager.webapp.address", "0.0.0.0:8088")]),
            vec!["http://me.internal:8088/"]
        );
    }

    #[test]
    fn high_availability_lists_every_resourcemanager() {
        assert_eq!(
            urls(&[
                ("yarn.resourcemanager.ha.enabled", "true"),
                ("yarn.resourcemanager.ha.rm-ids", "rm1, rm2"),
                ("yarn.resourcemanager.hostname.rm1", "a.internal"),
                ("yarn.resourcemanager.webapp.address.rm2", "b.internal:8088"),
            ]),
            vec!["http://a.internal:8088/", "http://b.internal:8088/"]
        );
    }

    #[test]
    fn https_only_uses_the_https_address() {
        assert_eq!(
            urls(&[
                ("yarn.http.policy", "HTTPS_ONLY"),
                ("yarn.resourcemanager.hostname", "rm.internal"),
            ]),
            vec!["https://rm.internal:8090/"]
        );
    }

    #[test]
    fn no_file_means_this_host_on_8088() {
        let dir = std::env::temp_dir().join("saw-no-such-hadoop-conf");
        assert_eq!(
            discover(&dir, "me.internal")
                .iter()
                .map(Url::to_string)
                .collect::<Vec<_>>(),
            vec!["http://me.internal:8088/"]
        );
    }

    #[test]
    fn verdicts_follow_state_and_final_status() {
        let app = |state: &str, fin: &str| App {
            state: state.into(),
            final_status: fin.into(),
            ..App::default()
        };
        assert_eq!(
            app("FINISHED", "SUCCEEDED").verdict(),
            Some(Verdict::Succeeded)
        );
        assert_eq!(app("FINISHED", "FAILED").verdict(), Some(Verdict::Failed));
        assert_eq!(app("FAILED", "FAILED").verdict(), Some(Verdict::Failed));
        assert_eq!(app("KILLED", "KILLED").verdict(), Some(Verdict::Killed));
        assert_eq!(app("RUNNING", "UNDEFINED").verdict(), None);
        assert!(!app("ACCEPTED", "UNDEFINED").is_final());
    }

    #[test]
    fn a_running_app_speaks_for_the_task_before_a_finished_one() {
        let app = |id: &str, state: &str, started| App {
            id: id.into(),
            state: state.into(),
            started_time: started,
            ..App::default()
        };
        let picked = pick(vec![
            app("a", "FINISHED", 3),
            app("b", "RUNNING", 1),
            app("c", "KILLED", 2),
        ]);
        assert_eq!(picked.map(|a| a.id).as_deref(), Some("b"));
        let picked = pick(vec![app("a", "FINISHED", 3), app("c", "KILLED", 5)]);
        assert_eq!(picked.map(|a| a.id).as_deref(), Some("c"));
        assert!(pick(Vec::new()).is_none());
    }
}
