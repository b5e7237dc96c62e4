//! Command line and environment: one clap struct, `env` on every flag, validated at start.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::policy::Policy;

/// Runs AWS Step Functions activity tasks as Apache Spark batches through Apache Livy.
#[derive(Debug, Parser)]
#[command(name = "spark-activity-worker", version = crate::VERSION, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Poll the activities and supervise their Spark batches until stopped by SIGTERM/SIGINT.
    Run(RunArgs),
    /// Run one task input as a task would, without Step Functions: validate it, submit the
    /// batch, follow it, print the output the task would send. Exit 0 success, 1 Spark failure,
    /// 2 invalid input; Ctrl-C deletes the batch.
    Submit(SubmitArgs),
    /// Check task inputs against the parser and the operator policy, and print the Livy request
    /// each would send. Exit 0 when all are valid, 2 otherwise.
    Validate(ValidateArgs),
    /// Show the tasks in flight, from the journal (no daemon needed; works while it runs).
    Status(StatusArgs),
}

/// What SIGTERM does with the tasks being supervised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShutdownMode {
    /// Leave the batches running; the restarted worker resumes them from the journal.
    Detach,
    /// Supervise until the tasks end or --drain-timeout passes, then detach the rest.
    Wait,
    /// Delete the batches and report Worker.ShuttingDown (decommissioning a cluster).
    Kill,
}

/// How the worker proves who it is to Livy (and, with Kerberos, to the ResourceManager).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LivyAuth {
    /// No credentials.
    None,
    /// HTTP Basic, sent to --livy-url's origin only.
    Basic,
    /// Kerberos SPNEGO (`Negotiate`) from --kerberos-keytab, on Livy and ResourceManager calls.
    Kerberos,
}

impl LivyAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            LivyAuth::None => "none",
            LivyAuth::Basic => "basic",
            LivyAuth::Kerberos => "kerberos",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of `run`. Every flag can also be set as `SPARK_ACTIVITY_WORKER_<FLAG>`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Activity ARN to poll (repeatable; in the environment, comma-separated).
    #[arg(long = "activity-arn", value_name = "ARN", env = "SPARK_ACTIVITY_WORKER_ACTIVITY_ARN",
          required = true, value_delimiter = ',', value_parser = parse_arn)]
    pub activity_arns: Vec<String>,

    #[command(flatten, next_help_heading = "Livy and YARN")]
    pub livy: LivyArgs,

    /// Tasks supervised at once; the worker polls only while a slot is free.
    #[arg(long, value_name = "N", env = "SPARK_ACTIVITY_WORKER_MAX_CONCURRENT_TASKS",
          default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_tasks: u32,

    /// Concurrent long polls per activity ARN while slots are free.
    #[arg(long, value_name = "N", env = "SPARK_ACTIVITY_WORKER_POLLERS_PER_ACTIVITY",
          default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pollers_per_activity: u32,

    #[command(flatten, next_help_heading = "Batch timing")]
    pub timing: TimingArgs,

    #[command(flatten, next_help_heading = "Cluster capacity")]
    pub capacity: CapacityArgs,

    /// How often each task sends SendTaskHeartbeat; keep it well under the state's HeartbeatSeconds.
    #[arg(long, value_name = "DURATION", env = "SPARK_ACTIVITY_WORKER_HEARTBEAT_INTERVAL",
          default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Step Functions calls a second this worker may make, polls, heartbeats and reports
    /// together (reports first, polls last). Well under the account's quota (SendTaskHeartbeat
    /// refills 300 a second in most regions) so other workers keep their share; 100 carries
    /// 3,000 tasks at 30 s heartbeats.
    #[arg(long, value_name = "N", env = "SPARK_ACTIVITY_WORKER_SFN_CALLS_PER_SECOND",
          default_value_t = 100.0, value_parser = parse_rate)]
    pub sfn_calls_per_second: f64,

    #[command(flatten, next_help_heading = "Operator policy")]
    pub policy: PolicyArgs,

    /// Name shown in the execution history [default: the host name].
    #[arg(long, value_name = "NAME", env = "SPARK_ACTIVITY_WORKER_WORKER_NAME", value_parser = parse_non_empty)]
    pub worker_name: Option<String>,

    /// Address (IP:PORT) of the monitoring endpoint: Prometheus metrics on /metrics, health on
    /// /healthz and /readyz [default: off; e.g. 127.0.0.1:9464].
    #[arg(
        long,
        value_name = "ADDR",
        env = "SPARK_ACTIVITY_WORKER_METRICS_LISTEN"
    )]
    pub metrics_listen: Option<std::net::SocketAddr>,

    #[command(flatten, next_help_heading = "Logging")]
    pub log: LogArgs,

    /// With --shutdown-mode wait: how long supervised tasks may run on after SIGTERM before the
    /// worker detaches from them and exits.
    #[arg(long, value_name = "DURATION", env = "SPARK_ACTIVITY_WORKER_DRAIN_TIMEOUT",
          default_value = "30s", value_parser = parse_duration_or_zero)]
    pub drain_timeout: Duration,

    /// Directory of the journal of in-flight tasks (private to the worker's user).
    #[arg(
        long,
        value_name = "DIR",
        env = "SPARK_ACTIVITY_WORKER_STATE_DIR",
        default_value = "/var/lib/spark-activity-worker"
    )]
    pub state_dir: PathBuf,

    /// What SIGTERM does with running tasks: detach (leave batches to the restarted worker),
    /// wait (drain up to --drain-timeout, then detach), kill (delete batches, report failure).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        env = "SPARK_ACTIVITY_WORKER_SHUTDOWN_MODE",
        default_value = "detach"
    )]
    pub shutdown_mode: ShutdownMode,
}

/// Where Livy and the ResourceManager are, and how the worker proves who it is to them.
#[derive(Debug, Clone, Args)]
pub struct LivyArgs {
    /// Livy server that runs the batches.
    #[arg(long, value_name = "URL", env = "SPARK_ACTIVITY_WORKER_LIVY_URL",
          default_value = "http://localhost:8998", value_parser = parse_livy_url)]
    pub livy_url: Url,

    /// How the worker authenticates to Livy: none, basic (--livy-user, --livy-password-file) or
    /// kerberos (--kerberos-principal, --kerberos-keytab; also used for the ResourceManager).
    #[arg(
        long,
        value_enum,
        value_name = "METHOD",
        env = "SPARK_ACTIVITY_WORKER_LIVY_AUTH",
        default_value = "none"
    )]
    pub livy_auth: LivyAuth,

    /// With --livy-auth basic: the user name.
    #[arg(long, value_name = "USER", env = "SPARK_ACTIVITY_WORKER_LIVY_USER", value_parser = parse_non_empty)]
    pub livy_user: Option<String>,

    /// With --livy-auth basic: a file whose first line is the password [default: the
    /// `livy-password` credential systemd passes (LoadCredential=), in $CREDENTIALS_DIRECTORY].
    #[arg(
        long,
        value_name = "FILE",
        env = "SPARK_ACTIVITY_WORKER_LIVY_PASSWORD_FILE"
    )]
    pub livy_password_file: Option<PathBuf>,

    /// With --livy-auth kerberos: the worker's own principal; `_HOST` stands for this host's
    /// name (e.g. spark-worker/_HOST@EC2.INTERNAL).
    #[arg(long, value_name = "PRINCIPAL", env = "SPARK_ACTIVITY_WORKER_KERBEROS_PRINCIPAL",
          value_parser = parse_principal)]
    pub kerberos_principal: Option<String>,

    /// With --livy-auth kerberos: the keytab holding the principal's keys; tickets are taken,
    /// and renewed, from it in memory, no kinit [default: the `kerberos-keytab` credential
    /// systemd passes (LoadCredential=), in $CREDENTIALS_DIRECTORY].
    #[arg(
        long,
        value_name = "FILE",
        env = "SPARK_ACTIVITY_WORKER_KERBEROS_KEYTAB"
    )]
    pub kerberos_keytab: Option<PathBuf>,

    /// PEM file of certificate authorities trusted for Livy and the ResourceManager, besides
    /// the system's (a cluster's own CA under in-transit encryption).
    #[arg(long, value_name = "PEM", env = "SPARK_ACTIVITY_WORKER_LIVY_CA_FILE")]
    pub livy_ca_file: Option<PathBuf>,

    /// Another Livy server a task may name with `LivyHost`/`LivyPort` (repeatable); it is reached
    /// with --livy-url's scheme. Only --livy-url's own host and port are allowed otherwise.
    #[arg(long = "allowed-livy-endpoint", value_name = "HOST:PORT",
          env = "SPARK_ACTIVITY_WORKER_ALLOWED_LIVY_ENDPOINT", value_delimiter = ',',
          value_parser = parse_endpoint)]
    pub allowed_livy_endpoints: Vec<Endpoint>,

    /// YARN ResourceManager web address (repeatable, for high availability) [default: from
    /// $HADOOP_CONF_DIR or /etc/hadoop/conf yarn-site.xml, else this host on port 8088].
    #[arg(long = "yarn-url", value_name = "URL", env = "SPARK_ACTIVITY_WORKER_YARN_URL",
          value_delimiter = ',', value_parser = parse_http_url)]
    pub yarn_urls: Vec<Url>,
}

/// The operator's rules over task input.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Application file used when the task input has no `File`.
    #[arg(long, value_name = "URI", env = "SPARK_ACTIVITY_WORKER_DEFAULT_FILE", value_parser = parse_non_empty)]
    pub default_file: Option<String>,

    /// A Hadoop user a task may run its job as with `ProxyUser` (repeatable); without one, a task
    /// naming any ProxyUser is refused (SparkJob.Forbidden).
    #[arg(long = "allowed-proxy-user", value_name = "USER", env = "SPARK_ACTIVITY_WORKER_ALLOWED_PROXY_USER",
          value_delimiter = ',', value_parser = parse_non_empty)]
    pub allowed_proxy_users: Vec<String>,

    /// A URI prefix the task's File, Jars, PyFiles, Files and Archives must start with
    /// (repeatable, e.g. s3://etl-code/); without one, any.
    #[arg(long = "allowed-file-prefix", value_name = "URI", env = "SPARK_ACTIVITY_WORKER_ALLOWED_FILE_PREFIX",
          value_delimiter = ',', value_parser = parse_non_empty)]
    pub allowed_file_prefixes: Vec<String>,

    /// A Spark conf key prefix tasks may not set (repeatable; giving any replaces the default
    /// list; `none` denies nothing).
    #[arg(long = "denied-conf-prefix", value_name = "PREFIX", env = "SPARK_ACTIVITY_WORKER_DENIED_CONF_PREFIX",
          value_delimiter = ',', value_parser = parse_non_empty,
          default_values_t = crate::policy::DEFAULT_DENIED_CONF_PREFIXES.map(String::from))]
    pub denied_conf_prefixes: Vec<String>,

    /// A YARN queue tasks may use (repeatable; `default` allows tasks that name none); without
    /// one, any.
    #[arg(long = "allowed-queue", value_name = "QUEUE", env = "SPARK_ACTIVITY_WORKER_ALLOWED_QUEUE",
          value_delimiter = ',', value_parser = parse_non_empty)]
    pub allowed_queues: Vec<String>,

    /// Most executors a task may ask for (NumExecutors, spark.executor.instances, dynamic
    /// allocation's bounds); a task that leaves dynamic allocation unbounded gets this bound.
    #[arg(long, value_name = "N", env = "SPARK_ACTIVITY_WORKER_MAX_EXECUTORS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_executors: Option<u32>,

    /// Most cores per executor, and for the driver, a task may ask for.
    #[arg(long, value_name = "N", env = "SPARK_ACTIVITY_WORKER_MAX_CORES",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_cores: Option<u32>,

    /// Most memory per executor, and for the driver, a task may ask for (e.g. 8g).
    #[arg(long, value_name = "SIZE", env = "SPARK_ACTIVITY_WORKER_MAX_MEMORY", value_parser = parse_memory)]
    pub max_memory: Option<u64>,
}

/// When the cluster has room for another job: the worker polls only then.
#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Poll only while fewer batches than this are starting at Livy (not_started, starting);
    /// Livy's own limit is livy.server.session.max-creation (100). 0: no limit.
    #[arg(
        long,
        value_name = "N",
        env = "SPARK_ACTIVITY_WORKER_LIVY_MAX_STARTING",
        default_value_t = 100
    )]
    pub livy_max_starting: u32,

    /// Poll only while YARN has this much memory free (GET /ws/v1/cluster/metrics) and no
    /// application waits for resources: the memory a job needs to start (e.g. 4g).
    #[arg(long, value_name = "SIZE", env = "SPARK_ACTIVITY_WORKER_YARN_HEADROOM_MEMORY",
          value_parser = parse_memory)]
    pub yarn_headroom_memory: Option<u64>,

    /// Poll only while YARN has this many cores free and no application waits for resources.
    #[arg(long, value_name = "N", env = "SPARK_ACTIVITY_WORKER_YARN_HEADROOM_VCORES",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub yarn_headroom_vcores: Option<u32>,

    /// Measure YARN's room in this capacity-scheduler queue (its name, or its path such as
    /// root.etl; GET /ws/v1/cluster/scheduler) instead of the whole cluster: poll only while it is
    /// running, has no application waiting and has the headroom free under its maximum capacity.
    #[arg(long, value_name = "QUEUE", env = "SPARK_ACTIVITY_WORKER_YARN_QUEUE",
          value_parser = parse_non_empty)]
    pub yarn_queue: Option<String>,
}

/// How a batch is followed: sync period and Livy outage windows.
#[derive(Debug, Clone, Args)]
pub struct TimingArgs {
    /// How often each batch's state is read from Livy.
    #[arg(long, value_name = "DURATION", env = "SPARK_ACTIVITY_WORKER_SYNC_INTERVAL",
          default_value = "10s", value_parser = parse_duration)]
    pub sync_interval: Duration,

    /// How long a submission is retried while Livy fails (connection errors, 5xx, too many
    /// sessions) before the task fails with Livy.Unavailable (only once no batch of it exists).
    #[arg(long, value_name = "DURATION", env = "SPARK_ACTIVITY_WORKER_LIVY_RETRY_TIMEOUT",
          default_value = "2m", value_parser = parse_duration)]
    pub livy_retry_timeout: Duration,

    /// How long Livy may stay unreachable while a batch runs; then the worker kills the
    /// application and reports Livy.Unavailable (or SparkJob.Unknown if the kill is unconfirmed).
    #[arg(long, value_name = "DURATION", env = "SPARK_ACTIVITY_WORKER_LIVY_OUTAGE_LIMIT",
          default_value = "1h", value_parser = parse_duration)]
    pub livy_outage_limit: Duration,

    /// How long Livy keeps a finished batch (its livy.server.session.state-retain.sec).
    #[arg(long, value_name = "DURATION", env = "SPARK_ACTIVITY_WORKER_LIVY_RETENTION",
          default_value = "10m", value_parser = parse_duration)]
    pub livy_retention: Duration,
}

/// Log lines on stderr.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "SPARK_ACTIVITY_WORKER_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter: a level (`info`) or tracing directives (`info,spark_activity_worker=debug`)
    /// [default: info; for `submit`, warn].
    #[arg(long, value_name = "FILTER", env = "SPARK_ACTIVITY_WORKER_LOG_LEVEL",
          value_parser = parse_log_level)]
    pub log_level: Option<String>,
}

impl LogArgs {
    /// The filter given, else `default`.
    pub fn filter<'a>(&'a self, default: &'a str) -> &'a str {
        self.log_level.as_deref().unwrap_or(default)
    }
}

/// Settings of `submit`: the Livy, timing and policy flags of `run` (so one environment file
/// serves both), and the input.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// The task input (either shape), a JSON file; `-` reads standard input.
    #[arg(value_name = "INPUT.json")]
    pub input: PathBuf,

    #[command(flatten, next_help_heading = "Livy and YARN")]
    pub livy: LivyArgs,

    #[command(flatten, next_help_heading = "Batch timing")]
    pub timing: TimingArgs,

    #[command(flatten, next_help_heading = "Operator policy")]
    pub policy: PolicyArgs,

    #[command(flatten, next_help_heading = "Logging")]
    pub log: LogArgs,
}

/// Settings of `validate`: the inputs, and the flags that decide what input may ask for.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Task inputs (either shape), JSON files; `-` reads standard input.
    #[arg(value_name = "INPUT.json", required = true)]
    pub inputs: Vec<PathBuf>,

    #[command(flatten, next_help_heading = "Livy and YARN")]
    pub livy: LivyArgs,

    #[command(flatten, next_help_heading = "Operator policy")]
    pub policy: PolicyArgs,
}

/// Settings of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The worker's --state-dir.
    #[arg(
        long,
        value_name = "DIR",
        env = "SPARK_ACTIVITY_WORKER_STATE_DIR",
        default_value = "/var/lib/spark-activity-worker"
    )]
    pub state_dir: PathBuf,

    /// One JSON object per task, one per line, instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    /// Cross-flag checks clap cannot express. The message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        self.livy.validate()?;
        self.policy.validate()?;
        if self.timing.sync_interval > self.heartbeat_interval * 10 {
            return Err(format!(
                "--sync-interval ({}) is far longer than --heartbeat-interval ({}); a finished batch would be noticed late",
                humantime::format_duration(self.timing.sync_interval),
                humantime::format_duration(self.heartbeat_interval)
            ));
        }
        Ok(())
    }

    pub fn worker_name(&self) -> String {
        self.worker_name
            .clone()
            .or_else(this_host)
            .unwrap_or_else(|| "spark-activity-worker".to_owned())
    }
}

impl LivyArgs {
    /// Credentials only from the flags meant for them, and those of the chosen method only.
    pub fn validate(&self) -> Result<(), String> {
        if has_userinfo(&self.livy_url) {
            return Err("--livy-url must not hold a user or password; use --livy-auth basic with --livy-user and --livy-password-file".into());
        }
        if self.yarn_urls.iter().any(has_userinfo) {
            return Err("--yarn-url must not hold a user or password".into());
        }
        let set = |present: bool, flag: &str| present.then(|| flag.to_owned());
        let basic_flags = [
            set(self.livy_user.is_some(), "--livy-user"),
            set(self.livy_password_file.is_some(), "--livy-password-file"),
        ];
        let kerberos_flags = [
            set(self.kerberos_principal.is_some(), "--kerberos-principal"),
            set(self.kerberos_keytab.is_some(), "--kerberos-keytab"),
        ];
        let stray = match self.livy_auth {
            LivyAuth::None => basic_flags.iter().chain(&kerberos_flags).flatten().next(),
            LivyAuth::Basic => kerberos_flags.iter().flatten().next(),
            LivyAuth::Kerberos => basic_flags.iter().flatten().next(),
        };
        if let Some(flag) = stray {
            return Err(format!(
                "{flag} has no use with --livy-auth {}",
                self.livy_auth.as_str()
            ));
        }
        match self.livy_auth {
            LivyAuth::Basic if self.livy_user.is_none() => {
                Err("--livy-auth basic needs --livy-user".into())
            }
            LivyAuth::Basic if self.livy_url.scheme() == "http" && !is_loopback(&self.livy_url) => {
                Err("--livy-auth basic would send the password in clear text: --livy-url must be https:// (or on this host)".into())
            }
            LivyAuth::Kerberos if self.kerberos_principal.is_none() => {
                Err("--livy-auth kerberos needs --kerberos-principal".into())
            }
            _ => Ok(()),
        }
    }

    /// Where a task's `LivyHost`/`LivyPort` may point: --livy-url's own host and port, plus
    /// --allowed-livy-endpoint.
    pub fn allowed_endpoints(&self) -> Vec<Endpoint> {
        let mut all = Vec::with_capacity(self.allowed_livy_endpoints.len() + 1);
        if let (Some(h), Some(port)) = (
            self.livy_url.host_str(),
            self.livy_url.port_or_known_default(),
        ) {
            all.push(Endpoint {
                host: h
                    .trim_matches(|c| c == '[' || c == ']')
                    .to_ascii_lowercase(),
                port,
            });
        }
        for e in &self.allowed_livy_endpoints {
            if !all.contains(e) {
                all.push(e.clone());
            }
        }
        all
    }
}

impl PolicyArgs {
    /// `--default-file` must itself pass `--allowed-file-prefix`.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(file) = &self.default_file
            && !self.allowed_file_prefixes.is_empty()
            && !self
                .allowed_file_prefixes
                .iter()
                .any(|p| file.starts_with(p.as_str()))
        {
            return Err(format!(
                "--default-file {file} is not under any --allowed-file-prefix"
            ));
        }
        Ok(())
    }

    /// The operator's policy over task input.
    pub fn policy(&self) -> Policy {
        let denied = if self.denied_conf_prefixes.iter().any(|p| p == "none") {
            Vec::new()
        } else {
            self.denied_conf_prefixes.clone()
        };
        Policy {
            allowed_proxy_users: self.allowed_proxy_users.clone(),
            allowed_file_prefixes: self.allowed_file_prefixes.clone(),
            denied_conf_prefixes: denied,
            allowed_queues: self.allowed_queues.clone(),
            max_executors: self.max_executors,
            max_cores: self.max_cores,
            max_memory: self.max_memory,
        }
    }
}

fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The `spark-job-resource` function's settings, from its environment (a Lambda function has no
/// command line): where a resource's `LivyHost` may point, how Livy is reached, how long a batch
/// may take to start, and the worker's own policy variables.
#[derive(Debug, Clone, Parser)]
#[command(name = "spark-job-resource", version = crate::VERSION, about)]
pub struct ResourceArgs {
    /// Host names a resource's `LivyHost` may be: exact names or IP addresses, or `*.SUFFIX`
    /// patterns such as `*.compute.internal` (any port).
    #[arg(long = "allowed-livy-hosts", value_name = "HOST", env = "ALLOWED_LIVY_HOSTS",
          value_delimiter = ',', required = true, value_parser = parse_host_pattern)]
    pub allowed_livy_hosts: Vec<HostPattern>,

    /// Scheme Livy is reached with: http or https (the system's certificate authorities).
    #[arg(long, value_name = "SCHEME", env = "LIVY_SCHEME", default_value = "http",
          value_parser = ["http", "https"])]
    pub livy_scheme: String,

    /// How long Create and Update wait for the batch to leave `starting` (also cut short by the
    /// function's own timeout).
    #[arg(long, value_name = "DURATION", env = "START_TIMEOUT", default_value = "10m",
          value_parser = parse_duration)]
    pub start_timeout: Duration,

    /// How long a batch must stay running before Create and Update succeed: an application
    /// that dies within it (a bad path, a bad setting) fails the request with its log. 0 succeeds
    /// as soon as the batch runs.
    #[arg(long, value_name = "DURATION", env = "START_SETTLE", default_value = "30s",
          value_parser = parse_duration_or_zero)]
    pub start_settle: Duration,

    /// How often the batch state is read while waiting.
    #[arg(long, value_name = "DURATION", env = "POLL_INTERVAL", default_value = "2s",
          value_parser = parse_duration)]
    pub poll_interval: Duration,

    #[command(flatten)]
    pub policy: PolicyArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

impl ResourceArgs {
    /// The settings from the environment alone; `Err` is one line naming the variable.
    pub fn from_env() -> Result<Self, String> {
        Self::parse_named(["spark-job-resource"])
    }

    /// Parses `argv` (and the environment); errors name the environment variable of a flag.
    pub fn parse_named<I, T>(argv: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Self::try_parse_from(argv).map_err(|e| Self::variables(&one_line(&e)))?;
        args.policy.validate().map_err(|e| Self::variables(&e))?;
        Ok(args)
    }

    /// `msg` with each flag (`--max-executors`, `--max-executors <N>`) replaced by its
    /// environment variable: the function's settings are only variables.
    pub fn variables(msg: &str) -> String {
        use clap::CommandFactory;
        let mut msg = msg.to_owned();
        for arg in Self::command().get_arguments() {
            if let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) {
                let flag = format!("--{long}");
                let env = env.to_string_lossy();
                if let Some(v) = arg.get_value_names().and_then(|v| v.first()) {
                    msg = msg.replace(&format!("{flag} <{v}>"), &env);
                }
                msg = msg.replace(&flag, &env);
            }
        }
        msg
    }

    /// Whether `host` (lower case, as task input parsing leaves it) may be a resource's Livy.
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allowed_livy_hosts.iter().any(|p| p.matches(host))
    }
}

/// An allowed Livy host: one name or address, or every name under a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.compute.internal`: the suffix with its leading dot (`.compute.internal`).
    Suffix(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self {
            HostPattern::Exact(h) => host == h,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// `host`, `10.0.0.1`, or `*.domain` (never a bare `*`, nor a wildcard elsewhere).
fn parse_host_pattern(s: &str) -> Result<HostPattern, String> {
    const EXPECTED: &str =
        "expected a host name, an IP address or a pattern like *.compute.internal";
    let s = s.trim().to_ascii_lowercase();
    let (suffix, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s.as_str()),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        && !name.starts_with('.')
        && !name.ends_with('.');
    if !valid {
        return Err(EXPECTED.into());
    }
    Ok(if suffix {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

/// Why the worker cannot start with its configuration: one line naming the flag; exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadConfig(pub String);

/// A Livy server's host (lower case, IPv6 without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// This node's host name (on EMR, its private DNS name).
pub fn this_host() -> Option<String> {
    hostname::get().ok().and_then(|h| h.into_string().ok())
}

fn parse_arn(s: &str) -> Result<String, String> {
    let s = s.trim();
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 7
        && parts[0] == "arn"
        && parts[2] == "states"
        && parts[5] == "activity"
        && !parts[6].is_empty()
    {
        Ok(s.to_owned())
    } else {
        Err(
            "expected an activity ARN like arn:aws:states:us-east-1:123456789012:activity:NAME"
                .into(),
        )
    }
}

fn parse_livy_url(s: &str) -> Result<Url, String> {
    parse_http_url(s).map_err(|e| e.replace("HOST:PORT", "localhost:8998"))
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http(s) URL like http://HOST:PORT".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL cannot have a query or fragment".into());
    }
    Ok(url)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 2s, 1m)"))
}

/// Calls a second: a number from 0.1 to 10,000.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.1..=10_000.0).contains(&r) => Ok(r),
        _ => Err("expected calls a second, a number from 0.1 to 10000".into()),
    }
}

fn parse_non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

/// `HOST:PORT`, `[IPV6]:PORT`; the port 1-65535.
fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    const EXPECTED: &str =
        "expected HOST:PORT such as livy.internal:8998 (not a URL), port 1-65535";
    let s = s.trim().to_ascii_lowercase();
    let (host, port) = s.rsplit_once(':').ok_or(EXPECTED)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(EXPECTED.into());
    }
    if host.contains(':') && !s.starts_with('[') {
        return Err(EXPECTED.into());
    }
    let port: u16 = port.parse().map_err(|_| EXPECTED)?;
    if port == 0 {
        return Err(EXPECTED.into());
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

/// `primary[/instance]@REALM`, the realm required (a keytab holds fully qualified names).
fn parse_principal(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.rsplit_once('@') {
        Some((name, realm))
            if !name.is_empty() && !realm.is_empty() && !s.contains(char::is_whitespace) =>
        {
            Ok(s.to_owned())
        }
        _ => Err("expected a Kerberos principal like spark-worker/_HOST@EXAMPLE.COM".into()),
    }
}

fn parse_memory(s: &str) -> Result<u64, String> {
    crate::input::memory_bytes(s)
        .filter(|b| *b > 0)
        .ok_or_else(|| "expected a memory size like 512m or 8g".into())
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Turns a clap error into one line, "error: ... naming the flag", so bad config is one line in
/// the journal rather than clap's multi-line usage text.
pub fn one_line(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    crate::http::strip_credentials(&lines.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["spark-activity-worker", "run"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Run(a) => a,
            other => panic!("parsed as another command: {other:?}"),
        })
    }

    const ARN: &str = "arn:aws:states:us-east-1:123456789012:activity:etl.spark-job";

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
        ResourceArgs::command().debug_assert();
    }

    #[test]
    fn the_resource_names_its_environment_variables_and_checks_host_patterns() {
        let ok = ResourceArgs::parse_named([
            "f",
            "--allowed-livy-hosts",
            "*.Compute.Internal, 10.0.0.5,livy.example",
        ])
        .expect("valid");
        assert_eq!(ok.livy_scheme, "http");
        assert_eq!(ok.start_timeout, Duration::from_secs(600));
        assert_eq!(ok.poll_interval, Duration::from_secs(2));
        for host in [
            "ip-10-0-0-1.eu-west-1.compute.internal",
            "10.0.0.5",
            "livy.example",
        ] {
            assert!(ok.host_allowed(host), "{host}");
        }
        for host in [
            "compute.internal",
            "10.0.0.50",
            "livy.example.evil",
            "xcompute.internal",
        ] {
            assert!(!ok.host_allowed(host), "{host}");
        }
        for (argv, var) in [
            (vec!["f"], "ALLOWED_LIVY_HOSTS"),
            (vec!["f", "--allowed-livy-hosts", "*"], "ALLOWED_LIVY_HOSTS"),
            (
                vec!["f", "--allowed-livy-hosts", "a.*.b"],
                "ALLOWED_LIVY_HOSTS",
            ),
            (
                vec!["f", "--allowed-livy-hosts", "h", "--start-timeout", "soon"],
                "START_TIMEOUT",
            ),
            (
                vec!["f", "--allowed-livy-hosts", "h", "--livy-scheme", "ftp"],
                "LIVY_SCHEME",
            ),
            (
                vec!["f", "--allowed-livy-hosts", "h", "--max-executors", "0"],
                "SPARK_ACTIVITY_WORKER_MAX_EXECUTORS",
            ),
        ] {
            let e = ResourceArgs::parse_named(argv.clone()).expect_err("invalid");
            assert!(e.contains(var), "{argv:?}: {e}");
            assert!(!e.contains("--"), "names the variable, not a flag: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn defaults_match_the_readme() {
        let a = run(&["--activity-arn", ARN]).expect("valid");
        assert_eq!(a.livy.livy_url.as_str(), "http://localhost:8998/");
        assert_eq!(a.max_concurrent_tasks, 32);
        assert_eq!(a.pollers_per_activity, 2);
        assert_eq!(a.timing.sync_interval, Duration::from_secs(10));
        assert_eq!(a.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(a.drain_timeout, Duration::from_secs(30));
        assert_eq!(a.log.log_format, LogFormat::Text);
        assert_eq!(a.shutdown_mode, ShutdownMode::Detach);
        assert_eq!(a.state_dir, PathBuf::from("/var/lib/spark-activity-worker"));
        assert_eq!(
            a.livy.allowed_endpoints(),
            vec![Endpoint {
                host: "localhost".into(),
                port: 8998
            }]
        );
        assert_eq!(a.timing.livy_outage_limit, Duration::from_secs(3600));
        assert_eq!(a.timing.livy_retention, Duration::from_secs(600));
        assert!(
            a.livy.yarn_urls.is_empty(),
            "found in yarn-site.xml at start"
        );
        assert!(a.validate().is_ok());
    }

    #[test]
    fn bad_flags_give_one_line_naming_the_flag() {
        for (args, flag) in [
            (vec!["--activity-arn", "nope"], "--activity-arn"),
            (
                vec!["--activity-arn", ARN, "--livy-url", "ftp://x"],
                "--livy-url",
            ),
            (
                vec!["--activity-arn", ARN, "--max-concurrent-tasks", "0"],
                "--max-concurrent-tasks",
            ),
            (
                vec!["--activity-arn", ARN, "--sync-interval", "soon"],
                "--sync-interval",
            ),
            (
                vec!["--activity-arn", ARN, "--heartbeat-interval", "0s"],
                "--heartbeat-interval",
            ),
            (
                vec!["--activity-arn", ARN, "--log-format", "xml"],
                "--log-format",
            ),
            (
                vec!["--activity-arn", ARN, "--log-level", "info,[[["],
                "--log-level",
            ),
            (
                vec![
                    "--activity-arn",
                    ARN,
                    "--allowed-livy-endpoint",
                    "http://x/",
                ],
                "--allowed-livy-endpoint",
            ),
            (
                vec![
                    "--activity-arn",
                    ARN,
                    "--allowed-livy-endpoint",
                    "livy.internal:0",
                ],
                "--allowed-livy-endpoint",
            ),
            (
                vec![
                    "--activity-arn",
                    ARN,
                    "--allowed-livy-endpoint",
                    "livy.internal",
                ],
                "--allowed-livy-endpoint",
            ),
            (
                vec!["--activity-arn", ARN, "--yarn-url", "rm:8088"],
                "--yarn-url",
            ),
            (
                vec!["--activity-arn", ARN, "--livy-outage-limit", "0s"],
                "--livy-outage-limit",
            ),
            (vec![], "--activity-arn"),
        ] {
            let err = run(&args).expect_err("must fail");
            let line = one_line(&err);
            assert!(!line.contains('\n'));
            assert!(line.contains(flag), "{args:?}: {line}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn repeatable_flags_and_durations() {
        let a = run(&[
            "--activity-arn",
            ARN,
            "--activity-arn",
            "arn:aws:states:eu-west-1:1:activity:b",
            "--allowed-livy-endpoint",
            "Livy.Internal:8999",
            "--allowed-livy-endpoint",
            "[FD00::1]:8998",
            "--sync-interval",
            "500ms",
            "--heartbeat-interval",
            "1m",
        ])
        .expect("valid");
        assert_eq!(a.activity_arns.len(), 2);
        assert_eq!(a.timing.sync_interval, Duration::from_millis(500));
        assert_eq!(a.heartbeat_interval, Duration::from_secs(60));
        let shown: Vec<String> = a
            .livy
            .allowed_endpoints()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            shown,
            ["localhost:8998", "livy.internal:8999", "[fd00::1]:8998"]
        );
    }

    #[test]
    fn credentials_never_ride_in_urls_and_auth_flags_must_match_the_method() {
        for (args, starts) in [
            (
                vec!["--livy-url", "https://spark:s3cret@livy:8998"],
                "--livy-url must not hold a user or password; use --livy-auth basic",
            ),
            (
                vec!["--yarn-url", "http://u:p@rm:8088"],
                "--yarn-url must not hold",
            ),
            (
                vec!["--livy-user", "spark"],
                "--livy-user has no use with --livy-auth none",
            ),
            (
                vec!["--livy-auth", "basic"],
                "--livy-auth basic needs --livy-user",
            ),
            (
                vec![
                    "--livy-auth",
                    "basic",
                    "--livy-user",
                    "spark",
                    "--livy-url",
                    "http://livy.internal:8998",
                ],
                "--livy-auth basic would send the password in clear text",
            ),
            (
                vec![
                    "--livy-auth",
                    "basic",
                    "--livy-user",
                    "spark",
                    "--kerberos-keytab",
                    "/k",
                ],
                "--kerberos-keytab has no use with --livy-auth basic",
            ),
            (
                vec!["--livy-auth", "kerberos"],
                "--livy-auth kerberos needs --kerberos-principal",
            ),
            (
                vec![
                    "--livy-auth",
                    "kerberos",
                    "--kerberos-principal",
                    "w@R",
                    "--kerberos-keytab",
                    "/k",
                    "--livy-password-file",
                    "/p",
                ],
                "--livy-password-file has no use with --livy-auth kerberos",
            ),
        ] {
            let mut argv = vec!["--activity-arn", ARN];
            argv.extend_from_slice(&args);
            let a = run(&argv).expect("parses");
            let e = a.validate().expect_err("invalid");
            assert!(e.starts_with(starts), "{args:?}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        for ok in [
            vec![
                "--livy-auth",
                "basic",
                "--livy-user",
                "spark",
                "--livy-url",
                "https://livy.internal:8998",
            ],
            vec![
                "--livy-auth",
                "basic",
                "--livy-user",
                "spark",
                "--livy-url",
                "http://127.0.0.1:8998",
            ],
            vec![
                "--livy-auth",
                "kerberos",
                "--kerberos-principal",
                "spark/_HOST@EC2.INTERNAL",
                "--kerberos-keytab",
                "/k",
            ],
        ] {
            let mut argv = vec!["--activity-arn", ARN];
            argv.extend_from_slice(&ok);
            run(&argv).expect("parses").validate().expect("valid");
        }
    }

    #[test]
    fn a_rejected_url_is_not_echoed_with_its_password() {
        let err = run(&[
            "--activity-arn",
            ARN,
            "--livy-url",
            "ftp://spark:s3cret@livy:8998",
        ])
        .expect_err("not http");
        let line = one_line(&err);
        assert!(line.contains("--livy-url"), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
        let err = run(&[
            "--activity-arn",
            ARN,
            "--kerberos-principal",
            "spark-worker",
        ])
        .expect_err("no realm");
        assert!(one_line(&err).contains("--kerberos-principal"));
    }

    #[test]
    fn policy_flags_and_their_defaults() {
        let a = run(&["--activity-arn", ARN]).expect("valid");
        let p = a.policy.policy();
        assert!(p.allowed_proxy_users.is_empty());
        assert_eq!(
            p.denied_conf_prefixes,
            crate::policy::DEFAULT_DENIED_CONF_PREFIXES
                .map(String::from)
                .to_vec()
        );
        assert_eq!(
            (p.max_executors, p.max_cores, p.max_memory),
            (None, None, None)
        );
        let a = run(&[
            "--activity-arn",
            ARN,
            "--allowed-proxy-user",
            "etl,reporting",
            "--denied-conf-prefix",
            "none",
            "--allowed-queue",
            "etl",
            "--max-executors",
            "20",
            "--max-cores",
            "4",
            "--max-memory",
            "8g",
            "--allowed-file-prefix",
            "s3://etl-code/",
            "--default-file",
            "s3://etl-code/default.jar",
        ])
        .expect("valid");
        a.validate().expect("default file is under the prefix");
        let p = a.policy.policy();
        assert_eq!(p.allowed_proxy_users, ["etl", "reporting"]);
        assert!(p.denied_conf_prefixes.is_empty());
        assert_eq!(p.max_memory, Some(8 << 30));
        let a = run(&[
            "--activity-arn",
            ARN,
            "--allowed-file-prefix",
            "s3://etl-code/",
            "--default-file",
            "local:///usr/lib/spark/examples/jars/spark-examples.jar",
        ])
        .expect("parses");
        assert!(
            a.validate()
                .expect_err("default file outside")
                .starts_with("--default-file")
        );
        for bad in [
            ["--max-memory", "lots"],
            ["--max-executors", "0"],
            ["--max-cores", "many"],
        ] {
            let mut argv = vec!["--activity-arn", ARN];
            argv.extend_from_slice(&bad);
            let e = run(&argv).expect_err("invalid");
            assert!(one_line(&e).contains(bad[0]), "{}", one_line(&e));
        }
    }

    #[test]
    fn sync_far_slower_than_heartbeat_is_refused() {
        let a = run(&[
            "--activity-arn",
            ARN,
            "--sync-interval",
            "1h",
            "--heartbeat-interval",
            "1s",
        ])
        .expect("parses");
        let e = a.validate().expect_err("invalid combination");
        assert!(e.starts_with("--sync-interval"), "{e}");
    }
}
