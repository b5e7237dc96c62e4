//! Every error name the worker reports to Step Functions, and the size rules for `error` and `cause`.
//!
//! The names are a public contract: state machines match them in `Retry`/`Catch`. Add names, never
//! rename one; the README's error table lists exactly [`ErrorName::ALL`], each with whether it is
//! safe to `Retry`. The rule behind that column: a name is safe to retry only when the worker knows
//! that no application of the task runs or will run — a retry then never runs the job twice at once.
//! Where the worker cannot know, it says so with [`ErrorName::Unknown`].

use std::fmt;

/// Step Functions caps `cause` at 32,768 characters.
pub const MAX_CAUSE_CHARS: usize = 32_768;

/// An error name sent with `SendTaskFailure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorName {
    /// The task input is not a valid Spark job description; nothing reached Livy.
    InvalidInput,
    /// The task input asks for what the operator's policy forbids (a proxy user, a file, a conf
    /// key, a queue, a size); nothing reached Livy.
    Forbidden,
    /// The batch ended `dead` or `error`: the Spark application failed.
    Failed,
    /// The batch was killed by someone other than this worker.
    Killed,
    /// Livy has no batch under the task's name and YARN no application with its tag: nothing of
    /// the task runs or will run (it never reached YARN, or ended unseen).
    Lost,
    /// The worker cannot tell whether the task's application still runs: a kill it needed (Livy
    /// and YARN unreachable past `--livy-outage-limit`, decommissioning, a panic) was not confirmed.
    Unknown,
    /// Livy refused the submission with a 4xx (bad path, blacklisted conf, ...).
    LivyRejected,
    /// Livy kept failing for the whole retry window and the worker confirmed no batch was created,
    /// or Livy stayed unreachable past `--livy-outage-limit` and the application's kill was confirmed.
    LivyUnavailable,
    /// A bug in the worker: the task's supervisor panicked.
    Panicked,
    /// The worker was shutting down when the task arrived; it never reached Livy.
    ShuttingDown,
    /// Step Functions refused the task's report for good (access denied, invalid output, a KMS
    /// key the worker may not use); this one carries what the report said.
    ReportRefused,
}

impl ErrorName {
    /// Every name, in the order of the README table.
    pub const ALL: [ErrorName; 11] = [
        ErrorName::InvalidInput,
        ErrorName::Forbidden,
        ErrorName::Failed,
        ErrorName::Killed,
        ErrorName::Lost,
        ErrorName::Unknown,
        ErrorName::LivyRejected,
        ErrorName::LivyUnavailable,
        ErrorName::Panicked,
        ErrorName::ShuttingDown,
        ErrorName::ReportRefused,
    ];

    /// Whether a `Retry` on this name can never run the job twice at once: the worker reports it
    /// only when it knows no application of the task runs or will run.
    pub const fn safe_to_retry(self) -> bool {
        !matches!(self, ErrorName::Unknown)
    }

    /// The exact string Step Functions sees.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorName::InvalidInput => "SparkJob.InvalidInput",
            ErrorName::Forbidden => "SparkJob.Forbidden",
            ErrorName::Failed => "SparkJob.Failed",
            ErrorName::Killed => "SparkJob.Killed",
            ErrorName::Lost => "SparkJob.Lost",
            ErrorName::Unknown => "SparkJob.Unknown",
            ErrorName::LivyRejected => "Livy.Rejected",
            ErrorName::LivyUnavailable => "Livy.Unavailable",
            ErrorName::Panicked => "Worker.Panicked",
            ErrorName::ShuttingDown => "Worker.ShuttingDown",
            ErrorName::ReportRefused => "Worker.ReportRefused",
        }
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `SendTaskFailure` carries: a name and a cause within the service's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: ErrorName,
    pub cause: String,
}

impl Failure {
    /// A failure whose cause is a one-line summary only.
    pub fn new(error: ErrorName, summary: impl Into<String>) -> Self {
        Self::with_log(error, &summary.into(), &[])
    }

    /// A failure whose cause is `summary`, then the tail of the batch log, cut to
    /// [`MAX_CAUSE_CHARS`] keeping the summary and the *end* of the log (where the error is).
    pub fn with_log(error: ErrorName, summary: &str, log: &[String]) -> Self {
        Failure {
            error,
            cause: cause(summary, log),
        }
    }
}

fn cause(summary: &str, log: &[String]) -> String {
    let summary: String = summary.chars().take(MAX_CAUSE_CHARS).collect();
    let lines: Vec<&str> = log
        .iter()
        .map(|l| l.trim_matches('\n'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return summary;
    }
    let used = summary.chars().count() + 1;
    if used >= MAX_CAUSE_CHARS {
        return summary;
    }
    let tail = lines.join("\n");
    let budget = MAX_CAUSE_CHARS - used;
    let len = tail.chars().count();
    let kept = if len > budget {
        // Keep the end: that is where a Spark log says what went wrong.
        tail.chars().skip(len - budget).collect()
    } else {
        tail
    };
    format!("{summary}\n{kept}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_not_reserved() {
        let mut seen = std::collections::HashSet::new();
        for name in ErrorName::ALL {
            let s = name.as_str();
            assert!(seen.insert(s), "duplicate {s}");
            assert!(s.len() <= 256);
            assert!(!s.starts_with("States."));
        }
    }

    #[test]
    fn cause_is_summary_then_log() {
        let f = Failure::with_log(
            ErrorName::Failed,
            "batch 3 ended dead",
            &[
                "stdout: ".into(),
                "line 1".into(),
                "\nstderr: ".into(),
                "boom".into(),
            ],
        );
        assert_eq!(
            f.cause,
            "batch 3 ended dead\nstdout: \nline 1\nstderr: \nboom"
        );
    }

    #[test]
    fn long_log_is_cut_keeping_the_end() {
        let log: Vec<String> = (0..10_000).map(|i| format!("line {i:05}")).collect();
        let f = Failure::with_log(ErrorName::Failed, "summary", &log);
        assert_eq!(f.cause.chars().count(), MAX_CAUSE_CHARS);
        assert!(f.cause.starts_with("summary\n"));
        assert!(f.cause.ends_with("line 09999"));
    }

    #[test]
    fn multibyte_characters_count_as_one() {
        let log = vec!["é".repeat(40_000)];
        let f = Failure::with_log(ErrorName::Failed, "s", &log);
        assert_eq!(f.cause.chars().count(), MAX_CAUSE_CHARS);
    }

    #[test]
    fn huge_summary_is_cut() {
        let f = Failure::new(ErrorName::Lost, "x".repeat(40_000));
        assert_eq!(f.cause.len(), MAX_CAUSE_CHARS);
    }
}

#[cfg(test)]
mod readme {
    use super::ErrorName;

    /// The README's error table is the public list: it must name exactly these, in this order,
    /// and its "safe to Retry" column must say what the code decides.
    #[test]
    fn readme_error_table_lists_every_name_and_whether_it_is_safe_to_retry() {
        let readme = include_str!("../README.md");
        let rows: Vec<(&str, &str)> = readme
            .lines()
            .skip_while(|l| !l.starts_with("## Error names"))
            .take_while(|l| !l.starts_with("```"))
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| {
                let name = l.split('`').next()?;
                let safe = l.rsplit('|').nth(1)?.trim();
                Some((name, safe))
            })
            .collect();
        let want: Vec<(&str, &str)> = ErrorName::ALL
            .iter()
            .map(|n| (n.as_str(), if n.safe_to_retry() { "yes" } else { "no" }))
            .collect();
        let got: Vec<(&str, &str)> = rows
            .iter()
            .map(|(n, safe)| (*n, safe.split([' ', ':', ',']).next().unwrap_or("")))
            .collect();
        assert_eq!(got, want);
    }
}
