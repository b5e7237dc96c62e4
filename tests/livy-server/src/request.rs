//! The `POST /batches` body, parsed and checked the way Livy's Jackson mapper and `BatchSession`
//! do it, so that every rejection has Livy's status and body shape; plus the spark-submit command
//! line that Livy would build from it.

use std::collections::BTreeMap;

use serde_json::Value;

const CLASS: &str = "org.apache.livy.server.batch.CreateBatchRequest";

/// Every field Jackson knows; anything else is an "Unrecognized field".
const KNOWN: [&str; 16] = [
    "file",
    "proxyUser",
    "className",
    "args",
    "jars",
    "pyFiles",
    "files",
    "archives",
    "driverMemory",
    "driverCores",
    "executorMemory",
    "executorCores",
    "numExecutors",
    "queue",
    "name",
    "conf",
];

/// The conf keys holding comma-separated file lists that Livy merges with the request's lists
/// and checks like them.
const FILE_LIST_KEYS: [&str; 4] = [
    "spark.jars",
    "spark.submit.pyFiles",
    "spark.files",
    "spark.yarn.dist.archives",
];

/// A type-checked create request. `proxyUser` is checked but not kept: impersonation is off.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CreateRequest {
    pub file: Option<String>,
    pub class_name: Option<String>,
    pub args: Vec<String>,
    pub jars: Vec<String>,
    pub py_files: Vec<String>,
    pub files: Vec<String>,
    pub archives: Vec<String>,
    pub driver_memory: Option<String>,
    pub driver_cores: Option<i32>,
    pub executor_memory: Option<String>,
    pub executor_cores: Option<i32>,
    pub num_executors: Option<i32>,
    pub queue: Option<String>,
    pub name: Option<String>,
    pub conf: BTreeMap<String, String>,
    /// A list or `conf` sent as JSON `null`. Jackson accepts it and Livy fails later with an
    /// NPE, after the id is taken, so the caller reports it then.
    pub null_collection: bool,
}

impl CreateRequest {
    /// Parses a body whatever its content type. `Err` is the Jackson-like message that Livy
    /// sends back as a bare JSON string with status 400.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err("No content to map due to end-of-input".into());
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("Malformed JSON content: {e}"))?;
        let Value::Object(map) = value else {
            return Err(format!(
                "Cannot deserialize value of type `{CLASS}` from {} value",
                json_kind(&value)
            ));
        };
        let mut req = CreateRequest::default();
        for (key, v) in map {
            let nulls = &mut req.null_collection;
            match key.as_str() {
                "file" => req.file = string(&key, v)?,
                "proxyUser" => {
                    string(&key, v)?;
                }
                "className" => req.class_name = string(&key, v)?,
                "args" => req.args = list(&key, v, nulls)?,
                "jars" => req.jars = list(&key, v, nulls)?,
                "pyFiles" => req.py_files = list(&key, v, nulls)?,
                "files" => req.files = list(&key, v, nulls)?,
                "archives" => req.archives = list(&key, v, nulls)?,
                "driverMemory" => req.driver_memory = string(&key, v)?,
                "driverCores" => req.driver_cores = int(&key, v)?,
                "executorMemory" => req.executor_memory = string(&key, v)?,
                "executorCores" => req.executor_cores = int(&key, v)?,
                "numExecutors" => req.num_executors = int(&key, v)?,
                "queue" => req.queue = string(&key, v)?,
                "name" => req.name = string(&key, v)?,
                "conf" => req.conf = conf(&key, v, nulls)?,
                _ => {
                    let known: Vec<String> = KNOWN.iter().map(|k| format!("\"{k}\"")).collect();
                    return Err(format!(
                        "Unrecognized field \"{key}\" (class {CLASS}), not marked as ignorable \
                         ({} known properties: {}])",
                        KNOWN.len(),
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(req)
    }

    /// Livy's `requirement failed` checks on `file` and every file list. `Err` is the reason
    /// that follows `Rejected, Reason: `. An empty whitelist allows every local path.
    pub fn check_files(&self, whitelist: &[String]) -> Result<(), String> {
        let file = self
            .file
            .as_deref()
            .ok_or("requirement failed: File is required.")?;
        let conf_lists = FILE_LIST_KEYS
            .iter()
            .filter_map(|k| self.conf.get(*k))
            .flat_map(|v| v.split(','))
            .filter(|s| !s.is_empty());
        let lists = [&self.jars, &self.py_files, &self.files, &self.archives];
        std::iter::once(file)
            .chain(lists.into_iter().flatten().map(String::as_str))
            .chain(conf_lists)
            .try_for_each(|p| check_path(p, whitelist))
    }

    /// The arguments after `spark-submit`. Typed fields win over the same `conf` keys; the file
    /// lists are appended to the conf lists, as Livy merges them.
    pub fn spark_submit_args(&self, master: &str) -> Vec<String> {
        let mut conf = self.conf.clone();
        let lists = [&self.jars, &self.py_files, &self.files, &self.archives];
        for (key, list) in FILE_LIST_KEYS.iter().zip(lists) {
            if list.is_empty() {
                continue;
            }
            let merged: Vec<&str> = (conf.get(*key).into_iter())
                .flat_map(|v| v.split(','))
                .filter(|s| !s.is_empty())
                .chain(list.iter().map(String::as_str))
                .collect();
            conf.insert((*key).into(), merged.join(","));
        }
        let typed = [
            ("spark.driver.memory", self.driver_memory.clone()),
            (
                "spark.driver.cores",
                self.driver_cores.map(|n| n.to_string()),
            ),
            ("spark.executor.memory", self.executor_memory.clone()),
            (
                "spark.executor.cores",
                self.executor_cores.map(|n| n.to_string()),
            ),
            (
                "spark.executor.instances",
                self.num_executors.map(|n| n.to_string()),
            ),
        ];
        for (key, value) in typed {
            if let Some(value) = value {
                conf.insert(key.into(), value);
            }
        }
        let mut argv = vec!["--master".to_string(), master.to_string()];
        let flags = [
            ("--name", &self.name),
            ("--class", &self.class_name),
            ("--queue", &self.queue),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                argv.extend([flag.to_string(), value.clone()]);
            }
        }
        for (k, v) in conf {
            argv.extend(["--conf".to_string(), format!("{k}={v}")]);
        }
        argv.extend(self.file.clone());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

fn mismatch(key: &str, ty: &str, v: &Value) -> String {
    format!(
        "Cannot deserialize value of type `{ty}` from {} value (through reference chain: \
         {CLASS}[\"{key}\"])",
        json_kind(v)
    )
}

fn string(key: &str, v: Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(mismatch(key, "java.lang.String", &other)),
    }
}

fn int(key: &str, v: Value) -> Result<Option<i32>, String> {
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(mismatch(key, "int", &v)),
        },
        _ => Err(mismatch(key, "int", &v)),
    }
}

fn list(key: &str, v: Value, nulls: &mut bool) -> Result<Vec<String>, String> {
    const TY: &str = "scala.collection.immutable.List<java.lang.String>";
    match v {
        Value::Null => {
            *nulls = true;
            Ok(Vec::new())
        }
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(mismatch(key, "java.lang.String", &other)),
            })
            .collect(),
        other => Err(mismatch(key, TY, &other)),
    }
}

fn conf(key: &str, v: Value, nulls: &mut bool) -> Result<BTreeMap<String, String>, String> {
    const TY: &str = "scala.collection.immutable.Map<java.lang.String,java.lang.String>";
    match v {
        Value::Null => {
            *nulls = true;
            Ok(BTreeMap::new())
        }
        Value::Object(map) => map
            .into_iter()
            .map(|(k, item)| match item {
                Value::String(s) => Ok((k, s)),
                other => Err(mismatch(key, "java.lang.String", &other)),
            })
            .collect(),
        other => Err(mismatch(key, TY, &other)),
    }
}

/// Splits a URI the way `java.net.URI` does for our purposes: `(scheme, path)`, dropping any
/// authority, query and fragment.
fn split_uri(raw: &str) -> (Option<&str>, &str) {
    let (scheme, rest) = match raw.split_once(':') {
        Some((s, rest))
            if s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (Some(s), rest)
        }
        _ => (None, raw),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path
            .find('/')
            .map_or("", |i| &authority_and_path[i..]),
        None => rest,
    };
    (scheme, path)
}

fn check_path(raw: &str, whitelist: &[String]) -> Result<(), String> {
    let (scheme, path) = split_uri(raw);
    match scheme {
        None if !path.starts_with('/') => Err(format!(
            "requirement failed: Path '{path}' is not absolute."
        )),
        // A path without a scheme resolves against fs.defaultFS, which is the local file
        // system in local mode, so it is checked like a `file:` URI.
        None | Some("file") if !whitelisted(path, whitelist) => Err(format!(
            "requirement failed: Local path {path} cannot be added to user sessions."
        )),
        _ => Ok(()),
    }
}

fn whitelisted(path: &str, whitelist: &[String]) -> bool {
    if whitelist.is_empty() {
        return true;
    }
    // Normalise `.` and `..` first so that `/allowed/../etc/passwd` cannot slip through.
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let normal = format!("/{}", parts.join("/"));
    whitelist.iter().any(|dir| {
        let dir = dir.trim_end_matches('/');
        normal == dir || normal.starts_with(&format!("{dir}/"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<CreateRequest, String> {
        CreateRequest::parse(body.as_bytes())
    }

    #[test]
    fn parses_every_field() {
        let req = parse(
            r#"{"file":"/a.py","proxyUser":"bob","className":"C","args":["1"],"jars":["/j"],
                "pyFiles":[],"files":[],"archives":[],"driverMemory":"1g","driverCores":2,
                "executorMemory":"2g","executorCores":3,"numExecutors":4,"queue":"q",
                "name":"n","conf":{"k":"v"}}"#,
        )
        .expect("valid body");
        assert_eq!(req.file.as_deref(), Some("/a.py"));
        assert_eq!(req.num_executors, Some(4));
        assert_eq!(req.conf.get("k").map(String::as_str), Some("v"));
        assert!(!req.null_collection);
    }

    #[test]
    fn rejects_like_jackson() {
        let unknown = parse(r#"{"file":"/a","ttl":"5m"}"#).expect_err("unknown field");
        assert!(unknown.starts_with(
            "Unrecognized field \"ttl\" (class org.apache.livy.server.batch.CreateBatchRequest), \
             not marked as ignorable (16 known properties: \"file\""
        ));
        assert!(parse("{").is_err());
        assert!(parse("").expect_err("empty").contains("No content"));
        assert!(parse("[]").is_err());
        assert!(
            parse(r#"{"driverCores":"2"}"#)
                .expect_err("string int")
                .contains("`int`")
        );
        assert!(parse(r#"{"driverCores":1.5}"#).is_err());
        assert!(parse(r#"{"name":7}"#).is_err());
        assert!(parse(r#"{"args":[1]}"#).is_err());
        assert!(parse(r#"{"args":"x"}"#).is_err());
        assert!(parse(r#"{"conf":{"a":1}}"#).is_err());
    }

    #[test]
    fn nulls_are_absent_scalars_but_flag_collections() {
        let req = parse(r#"{"file":"/a","name":null,"driverCores":null}"#).expect("nulls");
        assert_eq!(req.name, None);
        assert!(!req.null_collection);
        assert!(
            parse(r#"{"jars":null}"#)
                .expect("null list")
                .null_collection
        );
        assert!(
            parse(r#"{"conf":null}"#)
                .expect("null conf")
                .null_collection
        );
    }

    #[test]
    fn file_checks_give_livy_reasons() {
        let req = |body: &str| parse(body).expect("valid body");
        assert_eq!(
            req("{}").check_files(&[]),
            Err("requirement failed: File is required.".into())
        );
        assert_eq!(
            req(r#"{"file":"/a","jars":["x.jar"]}"#).check_files(&[]),
            Err("requirement failed: Path 'x.jar' is not absolute.".into())
        );
        let wl = vec!["/data/".to_string()];
        assert_eq!(
            req(r#"{"file":"file:///data/a.py"}"#).check_files(&wl),
            Ok(())
        );
        assert_eq!(req(r#"{"file":"/data/x/a.py"}"#).check_files(&wl), Ok(()));
        assert_eq!(req(r#"{"file":"s3://b/a.py"}"#).check_files(&wl), Ok(()));
        assert_eq!(
            req(r#"{"file":"sim:success?run=1"}"#).check_files(&wl),
            Ok(())
        );
        assert_eq!(
            req(r#"{"file":"file:/data/../etc/p"}"#).check_files(&wl),
            Err(
                "requirement failed: Local path /data/../etc/p cannot be added to user sessions."
                    .into()
            )
        );
        assert!(
            req(r#"{"file":"/data2/a"}"#).check_files(&wl).is_err(),
            "a sibling directory sharing the prefix is not whitelisted"
        );
        assert!(
            req(r#"{"file":"/data/a","conf":{"spark.files":"/etc/x"}}"#)
                .check_files(&wl)
                .is_err()
        );
    }

    #[test]
    fn builds_the_spark_submit_command_line() {
        let req = parse(
            r#"{"file":"file:///j/app.py","args":["a","b"],"name":"n","className":"C",
                "jars":["/x.jar"],"driverMemory":"1g","numExecutors":2,
                "conf":{"spark.driver.memory":"9g","spark.jars":"/w.jar","z":"1"}}"#,
        )
        .expect("valid body");
        let argv = req.spark_submit_args("local[1]").join(" ");
        assert_eq!(
            argv,
            "--master local[1] --name n --class C --conf spark.driver.memory=1g \
             --conf spark.executor.instances=2 --conf spark.jars=/w.jar,/x.jar --conf z=1 \
             file:///j/app.py a b"
        );
    }
}
