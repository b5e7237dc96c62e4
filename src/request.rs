//! From task input to the Livy request: parse either input shape, check a `LivyHost`/`LivyPort`
//! against the allowed endpoints, name and tag the batch, and apply the operator's policy — the
//! same steps for a delivered task, `submit` and `validate`.

use url::Url;

use crate::batch;
use crate::config::{Endpoint, LivyArgs, PolicyArgs};
use crate::failure::{ErrorName, Failure};
use crate::input::{self, InvalidInput, SparkJob};
use crate::livy::CreateBatch;
use crate::policy::{Forbidden, Policy};

/// What task input may ask for.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `File` when the input has none.
    pub default_file: Option<String>,
    /// Where a task's `LivyHost`/`LivyPort` may point.
    pub allowed_endpoints: Vec<Endpoint>,
    pub policy: Policy,
}

impl Rules {
    pub fn from_args(livy: &LivyArgs, policy: &PolicyArgs) -> Self {
        Rules {
            default_file: policy.default_file.clone(),
            allowed_endpoints: livy.allowed_endpoints(),
            policy: policy.policy(),
        }
    }
}

/// A task input ready to run.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The Livy to submit to: `--livy-url`, or the allowed endpoint the input names.
    pub livy_url: Url,
    /// The user's `Name`, for the output.
    pub name: Option<String>,
    /// The execution's name, when the input carries `ExecutionId`.
    pub execution: Option<String>,
    /// The `POST /batches` body: named, tagged, and within the policy.
    pub request: CreateBatch,
}

/// Why a task input is not run.
#[derive(Debug)]
pub enum Refused {
    Invalid(InvalidInput),
    Forbidden(Forbidden),
}

impl From<InvalidInput> for Refused {
    fn from(e: InvalidInput) -> Self {
        Refused::Invalid(e)
    }
}

impl Refused {
    /// The failure a task reports for it.
    pub fn failure(&self) -> Failure {
        match self {
            Refused::Invalid(InvalidInput(msg)) => {
                Failure::new(ErrorName::InvalidInput, msg.clone())
            }
            Refused::Forbidden(f) => Failure::new(ErrorName::Forbidden, f.to_string()),
        }
    }
}

/// Input text → the request, for the task whose key (token hash) is `key`. Task input may only
/// name allowed Livy endpoints (host and port), and only ask for what the policy allows.
pub fn prepare(rules: &Rules, livy_url: &Url, raw: &str, key: &str) -> Result<Prepared, Refused> {
    let input = input::parse(raw)?;
    let base = match &input.livy {
        None => livy_url.clone(),
        Some((host, port)) => {
            let allowed = &rules.allowed_endpoints;
            if !allowed.iter().any(|e| e.host == *host && e.port == *port) {
                let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                return Err(Refused::Invalid(InvalidInput(format!(
                    "LivyHost/LivyPort {host}:{port} is not a Livy endpoint this worker may use (allowed: {}); see --allowed-livy-endpoint",
                    list.join(", ")
                ))));
            }
            let mut url = livy_url.clone();
            if url.set_host(Some(host)).is_err() || url.set_port(Some(*port)).is_err() {
                return Err(Refused::Invalid(InvalidInput(format!(
                    "LivyHost/LivyPort {host}:{port} do not form a URL"
                ))));
            }
            url
        }
    };
    Ok(Prepared {
        livy_url: base,
        name: input.job.name.clone(),
        execution: input.execution.clone(),
        request: request_for(rules, &input.job, key)?,
    })
}

/// The `POST /batches` body of `job` for the task (or resource) whose key is `key`: named after
/// the user's `Name` and the key, given the default file, held to the policy, and tagged.
pub fn request_for(rules: &Rules, job: &SparkJob, key: &str) -> Result<CreateBatch, Refused> {
    let mut request = job.to_request(
        batch::name_for(job.name.as_deref(), key),
        rules.default_file.as_deref(),
    )?;
    rules
        .policy
        .apply(&mut request)
        .map_err(Refused::Forbidden)?;
    batch::add_tag(&mut request, &batch::tag_for(key));
    Ok(request)
}
