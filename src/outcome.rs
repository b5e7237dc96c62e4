//! What a task's end says to Step Functions: the success output (a serde struct, the documented
//! keys), the wording of every failure, and what the journal keeps of an outcome until it is
//! delivered.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::batch::{Ended, Finish, Kill};
use crate::failure::{ErrorName, Failure};
use crate::journal::Report;
use crate::livy;
use crate::yarn::Verdict;

/// How a supervised task ended.
#[derive(Debug)]
pub enum Outcome {
    /// `SendTaskSuccess` with this output (JSON text).
    Success(String),
    Failure(Failure),
    /// Step Functions closed the task (timeout, stopped execution): nothing to report.
    Gone,
    /// The worker is stopping in detach mode: the journal keeps the task for the next start.
    Detached,
}

impl Outcome {
    /// What the journal keeps of an outcome that must still be reported.
    pub fn report(&self) -> Option<Report> {
        match self {
            Outcome::Success(output) => Some(Report::Success {
                output: output.clone(),
            }),
            Outcome::Failure(f) => Some(Report::failure(f)),
            Outcome::Gone | Outcome::Detached => None,
        }
    }

    /// A journaled report, back to what is delivered. A name this version does not know (a
    /// journal from a newer worker) is delivered as it was decided, under `SparkJob.Unknown`.
    pub fn from_report(report: &Report) -> Self {
        match report {
            Report::Success { output } => Outcome::Success(output.clone()),
            Report::Failure { error, cause } => {
                Outcome::Failure(Report::as_failure(error, cause).unwrap_or_else(|| {
                    Failure::new(ErrorName::Unknown, format!("{error}: {cause}"))
                }))
            }
        }
    }
}

/// `SendTaskSuccess` output. Keys `batchId`/`applicationId` as in the original project; `null`
/// where nothing is known (local-mode Livy has no application id).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SuccessOutput {
    pub batch_id: Option<i64>,
    pub batch_name: String,
    /// The user's `Name`.
    pub name: Option<String>,
    pub application_id: Option<String>,
    pub state: String,
    /// The batch at Livy; `null` when Livy no longer had it and YARN told the end.
    pub livy_url: Option<String>,
    pub driver_log_url: Option<String>,
    pub spark_ui_url: Option<String>,
    pub submitted_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
}

/// What the output and causes say of the task besides how its batch ended.
#[derive(Debug)]
pub struct About<'a> {
    pub livy: &'a url::Url,
    pub batch_name: &'a str,
    pub name: Option<String>,
    /// From the journal: when the batch was first submitted (across restarts).
    pub submitted_at: Option<SystemTime>,
}

/// Why the batch was stopped, which decides what a stop reports.
#[derive(Debug, Clone)]
pub enum StopReason {
    /// Step Functions closed the task.
    Gone(String),
    /// `--shutdown-mode kill`.
    Decommissioned,
}

/// The outcome of a batch's end.
pub fn of(ended: Ended, about: &About<'_>, stopped: Option<&StopReason>) -> Outcome {
    match ended {
        Ended::Finished(finish) => finished(finish, about),
        Ended::Rejected(msg) => Outcome::Failure(Failure::new(ErrorName::LivyRejected, msg)),
        Ended::NotSubmitted(msg) => Outcome::Failure(Failure::new(ErrorName::LivyUnavailable, msg)),
        Ended::Lost(msg) => Outcome::Failure(Failure::new(ErrorName::Lost, msg)),
        Ended::OutageLimit { reason, kill } => killed_or_unknown(
            ErrorName::LivyUnavailable,
            &format!("{reason}; the application was killed"),
            &kill,
        ),
        Ended::Stopped(kill) => match stopped {
            Some(StopReason::Gone(_)) | None => Outcome::Gone,
            Some(StopReason::Decommissioned) => killed_or_unknown(
                ErrorName::ShuttingDown,
                "the worker was decommissioned (--shutdown-mode kill)",
                &kill,
            ),
        },
    }
}

/// `name` when the kill was confirmed; otherwise `SparkJob.Unknown`, saying what is known.
pub fn killed_or_unknown(name: ErrorName, summary: &str, kill: &Kill) -> Outcome {
    if kill.confirmed {
        Outcome::Failure(Failure::new(name, format!("{summary}: {}", kill.summary)))
    } else {
        Outcome::Failure(Failure::new(
            ErrorName::Unknown,
            format!(
                "{summary}, but the kill was not confirmed, so the application may still run: {}",
                kill.summary
            ),
        ))
    }
}

fn finished(f: Finish, about: &About<'_>) -> Outcome {
    let id = f.seen.id;
    let batch = match id {
        Some(id) => format!("batch {id} ({})", about.batch_name),
        None => format!("batch {}", about.batch_name),
    };
    let app = f
        .seen
        .app_id
        .as_deref()
        .map(|a| format!(" (application {a})"))
        .unwrap_or_default();
    let ended = match &f.livy_state {
        Some(state) => format!("{batch} ended {state}{app}"),
        None => format!("{batch}{app} ended in YARN after Livy had forgotten the batch"),
    };
    let mut summary = match f.verdict {
        Verdict::Succeeded => return success(f, about),
        Verdict::Killed => format!("{ended}: killed outside this worker"),
        Verdict::Failed => format!("spark application failed: {ended}"),
    };
    if let Some(d) = &f.diagnostics {
        summary.push_str("\nYARN diagnostics: ");
        summary.push_str(d.trim());
    }
    let name = if f.verdict == Verdict::Killed {
        ErrorName::Killed
    } else {
        ErrorName::Failed
    };
    Outcome::Failure(Failure::with_log(name, &summary, &f.log))
}

fn success(f: Finish, about: &About<'_>) -> Outcome {
    let finished_at = SystemTime::now();
    let submitted_at = about.submitted_at.unwrap_or(finished_at);
    let duration = finished_at
        .duration_since(submitted_at)
        .unwrap_or(Duration::ZERO);
    let output = SuccessOutput {
        batch_id: f.seen.id,
        batch_name: about.batch_name.to_owned(),
        name: about.name.clone(),
        application_id: f.seen.app_id,
        state: "success".to_owned(),
        livy_url: f
            .seen
            .id
            .filter(|_| f.livy_state.is_some())
            .map(|id| livy::batch_url(about.livy, id)),
        driver_log_url: f.seen.driver_log_url,
        spark_ui_url: f.seen.spark_ui_url,
        submitted_at: humantime::format_rfc3339_millis(submitted_at).to_string(),
        finished_at: humantime::format_rfc3339_millis(finished_at).to_string(),
        duration_seconds: (duration.as_secs_f64() * 1000.0).round() / 1000.0,
    };
    match serde_json::to_string(&output) {
        Ok(json) => Outcome::Success(json),
        // Strings and numbers only: this cannot fail, but a bug here must still end in a report.
        Err(e) => Outcome::Failure(Failure::new(
            ErrorName::Panicked,
            format!("spark-activity-worker bug: cannot write the success output: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Seen;
    use crate::livy::BatchState;

    fn about(base: &url::Url) -> About<'_> {
        About {
            livy: base,
            batch_name: "etl-0123456789ab",
            name: Some("etl".into()),
            submitted_at: Some(SystemTime::now() - Duration::from_secs(90)),
        }
    }

    fn finish(verdict: Verdict, livy_state: Option<&str>) -> Finish {
        Finish {
            verdict,
            livy_state: livy_state.map(str::to_owned),
            seen: Seen {
                id: Some(7),
                state: livy_state.map(BatchState::parse),
                app_id: Some("application_1_0007".into()),
                driver_log_url: Some("http://nm/log".into()),
                spark_ui_url: None,
            },
            log: vec!["stdout: ".into(), "Traceback: boom".into()],
            diagnostics: Some("User class threw exception".into()),
        }
    }

    #[test]
    fn success_output_has_the_documented_keys() {
        let base = url::Url::parse("http://livy:8998").expect("url");
        let Outcome::Success(json) = of(
            Ended::Finished(finish(Verdict::Succeeded, Some("success"))),
            &about(&base),
            None,
        ) else {
            panic!("a success")
        };
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "applicationId",
                "batchId",
                "batchName",
                "driverLogUrl",
                "durationSeconds",
                "finishedAt",
                "livyUrl",
                "name",
                "sparkUiUrl",
                "state",
                "submittedAt"
            ]
        );
        assert_eq!(v["livyUrl"], "http://livy:8998/batches/7");
        assert!(v["durationSeconds"].as_f64().is_some_and(|d| d >= 90.0));
    }

    #[test]
    fn an_end_told_by_yarn_has_no_livy_url_and_says_so_in_causes() {
        let base = url::Url::parse("http://livy:8998").expect("url");
        let Outcome::Success(json) = of(
            Ended::Finished(finish(Verdict::Succeeded, None)),
            &about(&base),
            None,
        ) else {
            panic!("a success")
        };
        assert!(json.contains("\"livyUrl\":null"), "{json}");
        let Outcome::Failure(f) = of(
            Ended::Finished(finish(Verdict::Failed, None)),
            &about(&base),
            None,
        ) else {
            panic!("a failure")
        };
        assert_eq!(f.error, ErrorName::Failed);
        assert!(
            f.cause.contains("ended in YARN after Livy had forgotten"),
            "{}",
            f.cause
        );
        assert!(
            f.cause
                .contains("YARN diagnostics: User class threw exception"),
            "{}",
            f.cause
        );
    }

    #[test]
    fn kills_not_confirmed_are_never_retryable() {
        let unconfirmed = Kill {
            confirmed: false,
            summary: "YARN could not be asked".into(),
        };
        let Outcome::Failure(f) =
            killed_or_unknown(ErrorName::LivyUnavailable, "livy down", &unconfirmed)
        else {
            panic!("a failure")
        };
        assert_eq!(f.error, ErrorName::Unknown);
        assert!(!f.error.safe_to_retry());
        let confirmed = Kill {
            confirmed: true,
            summary: "application x was killed in YARN".into(),
        };
        let Outcome::Failure(f) =
            killed_or_unknown(ErrorName::LivyUnavailable, "livy down", &confirmed)
        else {
            panic!("a failure")
        };
        assert_eq!(f.error, ErrorName::LivyUnavailable);
    }

    #[test]
    fn journaled_reports_map_back() {
        let f = Failure::new(ErrorName::Lost, "gone");
        let back = Outcome::from_report(&Report::failure(&f));
        assert!(matches!(back, Outcome::Failure(g) if g == f));
        let odd = Outcome::from_report(&Report::Failure {
            error: "Future.Name".into(),
            cause: "x".into(),
        });
        assert!(matches!(odd, Outcome::Failure(g) if g.error == ErrorName::Unknown));
    }
}
