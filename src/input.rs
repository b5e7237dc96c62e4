//! Task input: the two shapes of the original project, validated before anything reaches Livy.
//!
//! Flat: `{"File", "ClassName", "Args", ...}`. Nested: `{"LivyHost", "LivyPort", "Parameters": {...flat...}}`.
//! Every rejection names the field, so the `SparkJob.InvalidInput` cause tells the user what to fix.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::livy::CreateBatch;

/// Livy's default port, used when the nested shape gives `LivyHost` without `LivyPort`.
pub const DEFAULT_LIVY_PORT: u16 = 8998;
/// Spark application names end up in YARN and in the task output; keep them reasonable.
const MAX_NAME_CHARS: usize = 200;

const FLAT_FIELDS: [&str; 18] = [
    "Archives",
    "Args",
    "ClassName",
    "Conf",
    "Configuration",
    "DriverCores",
    "DriverMemory",
    "ExecutorCores",
    "ExecutorMemory",
    "ExecutionId",
    "File",
    "Files",
    "Jars",
    "Name",
    "NumExecutors",
    "ProxyUser",
    "PyFiles",
    "Queue",
];
const NESTED_FIELDS: [&str; 3] = ["LivyHost", "LivyPort", "Parameters"];
/// Beside the nested shape's fields: the execution, for logs (`"ExecutionId.$": "$$.Execution.Id"`).
const NESTED_EXTRA: [&str; 1] = ["ExecutionId"];

/// Why the input was rejected: one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// A validated task input.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInput {
    /// `LivyHost`/`LivyPort` of the nested shape; `None` means the worker's `--livy-url`.
    pub livy: Option<(String, u16)>,
    pub job: SparkJob,
    /// The execution's name, from the optional `ExecutionId` (an execution ARN, as
    /// `$$.Execution.Id` gives it): only for logs, never sent to Livy.
    pub execution: Option<String>,
}

/// The Spark application, in Livy's terms but not yet named or given a default file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparkJob {
    pub file: Option<String>,
    pub class_name: Option<String>,
    pub args: Vec<String>,
    pub jars: Vec<String>,
    pub py_files: Vec<String>,
    pub files: Vec<String>,
    pub archives: Vec<String>,
    pub driver_memory: Option<String>,
    pub driver_cores: Option<u32>,
    pub executor_memory: Option<String>,
    pub executor_cores: Option<u32>,
    pub num_executors: Option<u32>,
    pub queue: Option<String>,
    /// The user's `Name`, kept for the output; Livy gets it with a per-task suffix.
    pub name: Option<String>,
    pub conf: BTreeMap<String, String>,
    pub proxy_user: Option<String>,
}

impl SparkJob {
    /// The `POST /batches` body, with the unique `batch_name` and the worker's default file.
    pub fn to_request(
        &self,
        batch_name: String,
        default_file: Option<&str>,
    ) -> Result<CreateBatch, InvalidInput> {
        let file = match (&self.file, default_file) {
            (Some(f), _) => f.clone(),
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                return Err(InvalidInput(
                    "File is required (this worker has no --default-file)".into(),
                ));
            }
        };
        Ok(CreateBatch {
            file,
            proxy_user: self.proxy_user.clone(),
            class_name: self.class_name.clone(),
            args: self.args.clone(),
            jars: self.jars.clone(),
            py_files: self.py_files.clone(),
            files: self.files.clone(),
            archives: self.archives.clone(),
            driver_memory: self.driver_memory.clone(),
            driver_cores: self.driver_cores,
            executor_memory: self.executor_memory.clone(),
            executor_cores: self.executor_cores,
            num_executors: self.num_executors,
            queue: self.queue.clone(),
            name: batch_name,
            conf: self.conf.clone(),
        })
    }
}

/// A JVM memory size as Spark reads it (`512m`, `2g`, `4gb`; a bare number is MiB), in bytes.
pub fn memory_bytes(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let shift = match &lower[digits.len()..] {
        "b" => 0,
        "k" | "kb" => 10,
        "" | "m" | "mb" => 20,
        "g" | "gb" => 30,
        "t" | "tb" => 40,
        "p" | "pb" => 50,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Parses and validates the raw task input.
pub fn parse(raw: &str) -> Result<TaskInput, InvalidInput> {
    let value: Value = serde_json::from_str(raw)
        .map_err(|e| InvalidInput(format!("input is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(InvalidInput(format!(
            "input must be a JSON object, got {}",
            kind(&value)
        )));
    };
    let nested = NESTED_FIELDS.iter().any(|k| obj.contains_key(*k));
    let execution = execution_name(&obj)?;
    if !nested {
        return Ok(TaskInput {
            livy: None,
            job: parse_job(&obj, "")?,
            execution,
        });
    }
    let allowed: Vec<&str> = NESTED_FIELDS.iter().chain(&NESTED_EXTRA).copied().collect();
    unknown_keys(&obj, &allowed, "input (nested shape)")?;
    let params = match obj.get("Parameters") {
        Some(Value::Object(p)) => p,
        Some(other) => {
            return Err(InvalidInput(format!(
                "Parameters must be an object, got {}",
                kind(other)
            )));
        }
        None => {
            return Err(InvalidInput(
                "Parameters is required with LivyHost/LivyPort".into(),
            ));
        }
    };
    let host = match obj.get("LivyHost") {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) => Some(host_name(h)?),
        Some(other) => {
            return Err(InvalidInput(format!(
                "LivyHost must be a string, got {}",
                kind(other)
            )));
        }
    };
    let port = match obj.get("LivyPort") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            count(v)
                .filter(|p| (1..=u32::from(u16::MAX)).contains(p))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| {
                    InvalidInput(format!("LivyPort must be a port number 1-65535, got {v}"))
                })?,
        ),
    };
    let livy = match (host, port) {
        (Some(h), p) => Some((h, p.unwrap_or(DEFAULT_LIVY_PORT))),
        (None, None) => None,
        (None, Some(_)) => return Err(InvalidInput("LivyPort given without LivyHost".into())),
    };
    // The nested shape may carry it beside LivyHost or inside Parameters.
    let execution = match execution {
        Some(name) => Some(name),
        None => execution_name(params)?,
    };
    Ok(TaskInput {
        livy,
        job: parse_job(params, "Parameters.")?,
        execution,
    })
}

/// The execution's name: what follows the last `:` of `ExecutionId`, without control characters.
fn execution_name(obj: &Map<String, Value>) -> Result<Option<String>, InvalidInput> {
    match obj.get("ExecutionId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(arn)) => {
            let name: String = arn
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .take(80)
                .collect();
            Ok((!name.is_empty()).then_some(name))
        }
        Some(other) => Err(InvalidInput(format!(
            "ExecutionId must be a string (\"ExecutionId.$\": \"$$.Execution.Id\"), got {}",
            kind(other)
        ))),
    }
}

fn parse_job(obj: &Map<String, Value>, prefix: &str) -> Result<SparkJob, InvalidInput> {
    let place = if prefix.is_empty() {
        "input".to_owned()
    } else {
        prefix.trim_end_matches('.').to_owned()
    };
    unknown_keys(obj, &FLAT_FIELDS, &place)?;
    if obj.contains_key("Conf") && obj.contains_key("Configuration") {
        return Err(InvalidInput(format!(
            "{prefix}Conf and {prefix}Configuration are the same field; give one"
        )));
    }
    let f = |name: &str| Field {
        path: format!("{prefix}{name}"),
        value: obj.get(name).filter(|v| !v.is_null()),
    };
    let name = f("Name").string()?;
    if let Some(n) = &name
        && n.chars().count() > MAX_NAME_CHARS
    {
        return Err(InvalidInput(format!(
            "{prefix}Name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let conf_field = if obj.contains_key("Configuration") {
        "Configuration"
    } else {
        "Conf"
    };
    Ok(SparkJob {
        file: f("File").string()?,
        class_name: f("ClassName").string()?,
        args: f("Args").args()?,
        jars: f("Jars").paths()?,
        py_files: f("PyFiles").paths()?,
        files: f("Files").paths()?,
        archives: f("Archives").paths()?,
        driver_memory: f("DriverMemory").memory()?,
        driver_cores: f("DriverCores").count()?,
        executor_memory: f("ExecutorMemory").memory()?,
        executor_cores: f("ExecutorCores").count()?,
        num_executors: f("NumExecutors").count()?,
        queue: f("Queue").string()?,
        name,
        conf: f(conf_field).conf()?,
        proxy_user: f("ProxyUser").string()?,
    })
}

struct Field<'a> {
    path: String,
    value: Option<&'a Value>,
}

impl Field<'_> {
    fn err(&self, want: &str) -> InvalidInput {
        let got = self.value.map_or("nothing".to_owned(), shorten);
        InvalidInput(format!("{} must be {want}, got {got}", self.path))
    }

    /// A non-empty string.
    fn string(&self) -> Result<Option<String>, InvalidInput> {
        match self.value {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(self.err("a non-empty string")),
        }
    }

    /// A positive integer, as a JSON number or a digit string (CloudFormation sends strings).
    fn count(&self) -> Result<Option<u32>, InvalidInput> {
        match self.value {
            None => Ok(None),
            Some(v) => count(v)
                .filter(|n| *n > 0 && i32::try_from(*n).is_ok())
                .map(Some)
                .ok_or_else(|| self.err("a positive integer")),
        }
    }

    /// A JVM memory size such as `512m` or `2g` (Spark reads a bare number as MiB).
    fn memory(&self) -> Result<Option<String>, InvalidInput> {
        let Some(s) = self
            .string()
            .map_err(|_| self.err("a memory size like 512m or 2g"))?
        else {
            return Ok(None);
        };
        if memory_bytes(&s).is_some_and(|b| b > 0) {
            Ok(Some(s))
        } else {
            Err(self.err("a memory size like 512m or 2g"))
        }
    }

    /// Application arguments: strings or numbers; numbers become strings.
    fn args(&self) -> Result<Vec<String>, InvalidInput> {
        self.list(
            |v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            },
            "a list of strings or numbers",
        )
    }

    /// A list of non-empty paths or URIs.
    fn paths(&self) -> Result<Vec<String>, InvalidInput> {
        self.list(
            |v| match v {
                Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
                _ => None,
            },
            "a list of non-empty strings",
        )
    }

    fn list(
        &self,
        item: impl Fn(&Value) -> Option<String>,
        want: &str,
    ) -> Result<Vec<String>, InvalidInput> {
        match self.value {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    item(v).ok_or_else(|| {
                        InvalidInput(format!(
                            "{}[{i}] must be {}, got {}",
                            self.path,
                            want.trim_start_matches("a list of "),
                            shorten(v)
                        ))
                    })
                })
                .collect(),
            Some(_) => Err(self.err(want)),
        }
    }

    /// Spark properties: string keys to strings; numbers and booleans are stringified.
    fn conf(&self) -> Result<BTreeMap<String, String>, InvalidInput> {
        match self.value {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    if k.trim().is_empty() {
                        return Err(InvalidInput(format!("{} has an empty key", self.path)));
                    }
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(InvalidInput(format!(
                                "{}[{}] must be a string, number or boolean, got {}",
                                self.path,
                                shorten(&Value::String(k.clone())),
                                shorten(other)
                            )));
                        }
                    };
                    Ok((k.clone(), s))
                })
                .collect(),
            Some(_) => Err(self.err("an object of Spark properties")),
        }
    }
}

fn count(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// A host name or IP literal, never a URL: the scheme and port come from the worker's config.
fn host_name(h: &str) -> Result<String, InvalidInput> {
    let h = h.trim();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if ok {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(InvalidInput(format!(
            "LivyHost must be a host name or IP address, got {}",
            shorten(&Value::String(h.to_owned()))
        )))
    }
}

fn unknown_keys(obj: &Map<String, Value>, valid: &[&str], place: &str) -> Result<(), InvalidInput> {
    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !valid.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(InvalidInput(format!(
        "unknown field{} {} in {place}; valid fields: {}",
        if unknown.len() > 1 { "s" } else { "" },
        unknown
            .iter()
            .map(|k| shorten(&Value::String((*k).to_owned())))
            .collect::<Vec<_>>()
            .join(", "),
        valid.join(", ")
    )))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message: never the whole of a large input.
fn shorten(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        match parse(&v.to_string()) {
            Err(InvalidInput(m)) => m,
            Ok(t) => panic!("accepted {v}: {t:?}"),
        }
    }

    #[test]
    fn execution_id_names_the_execution_in_either_shape_and_never_reaches_livy() {
        let arn = "arn:aws:states:us-east-1:123456789012:execution:etl:nightly-42";
        let flat =
            parse(&json!({"File": "s3://b/a.py", "ExecutionId": arn}).to_string()).expect("valid");
        assert_eq!(flat.execution.as_deref(), Some("nightly-42"));
        let request = flat.job.to_request("n".into(), None).expect("request");
        assert!(
            !serde_json::to_string(&request)
                .expect("json")
                .contains("nightly")
        );
        for nested in [
            json!({"LivyHost": "h", "ExecutionId": arn, "Parameters": {"File": "f"}}),
            json!({"LivyHost": "h", "Parameters": {"File": "f", "ExecutionId": arn}}),
        ] {
            let input = parse(&nested.to_string()).expect("valid");
            assert_eq!(input.execution.as_deref(), Some("nightly-42"), "{nested}");
        }
        assert!(
            err(json!({"File": "f", "ExecutionId": 7})).contains("ExecutionId must be a string")
        );
    }

    #[test]
    fn the_original_readme_nested_example_parses() {
        let input = parse(
            &json!({"LivyHost": "ip-10-0-0-1.ec2.internal", "LivyPort": 8998, "Parameters": {
                "Name": "Spark Pi", "ClassName": "org.apache.spark.examples.SparkPi", "NumExecutors": 1,
                "DriverMemory": "512m", "ExecutorMemory": "512m", "ExecutorCores": 1, "Args": ["10"]}})
            .to_string(),
        )
        .expect("valid");
        assert_eq!(input.livy, Some(("ip-10-0-0-1.ec2.internal".into(), 8998)));
        assert_eq!(input.job.name.as_deref(), Some("Spark Pi"));
        assert_eq!(input.job.num_executors, Some(1));
        assert_eq!(input.job.args, vec!["10"]);
        assert_eq!(input.job.file, None);
    }

    #[test]
    fn flat_shape_with_cloudformation_strings_and_numbers() {
        let input = parse(
            &json!({"File": "s3://b/app.jar", "NumExecutors": "4", "DriverCores": 2, "Args": ["a", 1, 2.5],
                    "Configuration": {"spark.dynamicAllocation.enabled": false, "spark.x": 3}})
            .to_string(),
        )
        .expect("valid");
        assert_eq!(input.livy, None);
        assert_eq!(input.job.num_executors, Some(4));
        assert_eq!(input.job.args, vec!["a", "1", "2.5"]);
        assert_eq!(
            input
                .job
                .conf
                .get("spark.dynamicAllocation.enabled")
                .map(String::as_str),
            Some("false")
        );
        assert_eq!(input.job.conf.get("spark.x").map(String::as_str), Some("3"));
    }

    #[test]
    fn nested_livy_port_defaults_and_accepts_strings() {
        let a = parse(&json!({"LivyHost": "h", "Parameters": {}}).to_string()).expect("valid");
        assert_eq!(a.livy, Some(("h".into(), 8998)));
        let b = parse(&json!({"LivyHost": "h", "LivyPort": "9000", "Parameters": {}}).to_string())
            .expect("valid");
        assert_eq!(b.livy, Some(("h".into(), 9000)));
    }

    #[test]
    fn a_typo_lists_the_valid_fields() {
        let m = err(json!({"File": "x.jar", "NumExecutor": 2}));
        assert!(m.contains("\"NumExecutor\""), "{m}");
        assert!(m.contains("NumExecutors"), "{m}");
        let m = err(json!({"LivyHost": "h", "Parameters": {"NumExecutor": 2}}));
        assert!(m.contains("in Parameters"), "{m}");
        let m = err(json!({"LivyHost": "h", "Parameters": {}, "Extra": 1}));
        assert!(m.contains("\"Extra\""), "{m}");
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let cases = [
            (json!({"File": ""}), "File"),
            (json!({"File": 3}), "File"),
            (json!({"DriverMemory": "lots"}), "DriverMemory"),
            (json!({"ExecutorMemory": "0g"}), "ExecutorMemory"),
            (json!({"NumExecutors": 0}), "NumExecutors"),
            (json!({"NumExecutors": -1}), "NumExecutors"),
            (json!({"NumExecutors": 1.5}), "NumExecutors"),
            (json!({"NumExecutors": "two"}), "NumExecutors"),
            (json!({"ExecutorCores": true}), "ExecutorCores"),
            (json!({"Args": "10"}), "Args"),
            (json!({"Args": [true]}), "Args[0]"),
            (json!({"Jars": [""]}), "Jars[0]"),
            (json!({"Conf": {"a": {"b": 1}}}), "Conf[\"a\"]"),
            (json!({"Conf": ["a"]}), "Conf"),
            (json!({"Name": "x".repeat(201)}), "Name"),
            (
                json!({"LivyHost": "http://evil/x", "Parameters": {}}),
                "LivyHost",
            ),
            (
                json!({"LivyHost": "h", "LivyPort": 70000, "Parameters": {}}),
                "LivyPort",
            ),
            (json!({"LivyHost": "h", "Parameters": "x"}), "Parameters"),
            (
                json!({"LivyHost": "h", "Parameters": {"NumExecutors": 0}}),
                "Parameters.NumExecutors",
            ),
        ];
        for (input, field) in cases {
            let m = err(input.clone());
            assert!(
                m.starts_with(field) || m.contains(&format!(" {field} ")),
                "{input}: {m}"
            );
        }
    }

    #[test]
    fn non_objects_are_rejected() {
        assert!(err(json!([1])).contains("must be a JSON object"));
        assert!(err(json!("x")).contains("must be a JSON object"));
        assert!(matches!(parse("{not json"), Err(InvalidInput(m)) if m.contains("not valid JSON")));
    }

    #[test]
    fn a_key_with_a_line_break_is_quoted_on_one_line() {
        for input in [
            json!({"File": "a.py", "Bad\nKey": 1}),
            json!({"File": "a.py", "Conf": {"x\ny": null}}),
        ] {
            let e = parse(&input.to_string()).expect_err("invalid");
            assert!(!e.0.contains('\n'), "{e}");
            assert!(e.0.contains("\\n"), "the key is shown escaped: {e}");
        }
    }

    #[test]
    fn memory_sizes_spark_accepts() {
        for ok in ["512m", "2g", "2G", "1024", "4gb", "100k"] {
            assert!(
                parse(&json!({"DriverMemory": ok}).to_string()).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn request_uses_default_file_only_when_file_is_absent() {
        let job = parse(&json!({"ClassName": "C"}).to_string())
            .expect("valid")
            .job;
        let req = job
            .to_request("n-1".into(), Some("local:///x.jar"))
            .expect("has default");
        assert_eq!(req.file, "local:///x.jar");
        assert!(job.to_request("n-1".into(), None).is_err());
        let job = parse(&json!({"File": "s3://a.py"}).to_string())
            .expect("valid")
            .job;
        assert_eq!(
            job.to_request("n".into(), Some("d")).expect("ok").file,
            "s3://a.py"
        );
    }
}
