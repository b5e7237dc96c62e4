//! `validate`: task inputs through the same parsing, endpoint and policy checks as a delivered
//! task, printing the Livy request each would send. For CI of state-machine repositories.

use std::io::Read;
use std::path::Path;

use crate::config::ValidateArgs;
use crate::request::{self, Rules};

/// Stands for the task token's hash in the batch name and YARN tag shown: a real task's differ.
pub const PLACEHOLDER_KEY: &str = "xxxxxxxxxxxx";

/// Checks every input; prints the request of each valid one on stdout and the error of each
/// invalid one on stderr. `true` when all are valid.
pub fn run(args: &ValidateArgs) -> bool {
    let rules = Rules::from_args(&args.livy, &args.policy);
    let mut all_valid = true;
    for path in &args.inputs {
        let shown = path.display();
        let raw = match read_input(path) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                all_valid = false;
                continue;
            }
        };
        match request::prepare(&rules, &args.livy.livy_url, &raw, PLACEHOLDER_KEY) {
            Ok(ready) => {
                let mut url = ready.livy_url.clone();
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.pop_if_empty().push("batches");
                }
                let body = serde_json::to_string_pretty(&ready.request)
                    .unwrap_or_else(|e| format!("(cannot show the request: {e})"));
                println!("{shown}: valid\nPOST {url}\n{body}");
            }
            Err(refused) => {
                let f = refused.failure();
                eprintln!("{shown}: {}: {}", f.error, f.cause);
                all_valid = false;
            }
        }
    }
    all_valid
}

/// A file's text, or standard input's for `-`.
pub fn read_input(path: &Path) -> std::io::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}
