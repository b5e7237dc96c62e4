//! `status`: the tasks in flight, read from the journal without its lock (no daemon needed; it
//! works while the worker runs). Never shows a token.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::config::StatusArgs;
use crate::journal::{self, Entry, Report};
use crate::metrics;

/// Prints the table (or JSON lines). `Err` is a message for a directory that cannot be read.
pub fn run(args: &StatusArgs) -> Result<(), String> {
    let entries = journal::peek(&args.state_dir)
        .map_err(|e| format!("--state-dir {}: {e}", args.state_dir.display()))?;
    let now = SystemTime::now();
    let rows: Vec<Value> = entries
        .iter()
        .map(|(key, entry)| match entry {
            Ok(e) => row(key, e, now),
            Err(error) => json!({"task": key, "error": error}),
        })
        .collect();
    if args.json {
        for r in &rows {
            println!("{r}");
        }
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// One task as `status --json` prints it.
pub fn row(key: &str, e: &Entry, now: SystemTime) -> Value {
    let age = e
        .created_at
        .as_deref()
        .and_then(|c| humantime::parse_rfc3339(c).ok())
        .and_then(|c| now.duration_since(c).ok())
        .map(|d| d.as_secs());
    let report = e.report.as_ref().map(|r| match r {
        Report::Success { .. } => json!({"kind": "success"}),
        Report::Failure { error, .. } => json!({"kind": "failure", "error": error}),
    });
    let attempt = e
        .report_attempt
        .as_ref()
        .map(|a| json!({"at": a.at, "error": a.error, "attempts": a.attempts}));
    json!({
        "task": key,
        "activity": metrics::activity_label(&e.activity_arn),
        "execution": e.execution,
        "batchName": e.batch_name,
        "batchId": e.batch_id,
        "applicationId": e.app_id,
        "state": e.last_state,
        "livyUrl": e.livy_url,
        "createdAt": e.created_at,
        "ageSeconds": age,
        "report": report,
        "lastReportAttempt": attempt,
    })
}

const COLUMNS: [&str; 8] = [
    "TASK",
    "ACTIVITY",
    "EXECUTION",
    "BATCH",
    "ID",
    "STATE",
    "AGE",
    "REPORT",
];

/// The rows as an aligned text table, with a header; a line saying so when there are none.
pub fn table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "no tasks in flight\n".to_owned();
    }
    let cells: Vec<[String; 8]> = rows.iter().map(cells).collect();
    let mut widths = COLUMNS.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let mut out = line(&header);
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

fn cells(r: &Value) -> [String; 8] {
    let text = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
    if let Some(error) = r["error"].as_str() {
        return [
            text("task"),
            "-".into(),
            "-".into(),
            format!("unreadable entry: {error}"),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ];
    }
    let age = r["ageSeconds"].as_u64().map_or_else(
        || "-".to_owned(),
        |s| humantime::format_duration(Duration::from_secs(s)).to_string(),
    );
    let report = match (r["report"].is_null(), r["lastReportAttempt"].as_object()) {
        (true, _) => "-".to_owned(),
        (false, attempt) => {
            let what = r["report"]["error"]
                .as_str()
                .unwrap_or("success")
                .to_owned();
            match attempt {
                None => format!("{what}, sending"),
                Some(a) => format!(
                    "{what}, {} failed tries, last at {}: {}",
                    a["attempts"],
                    a["at"].as_str().unwrap_or("?"),
                    a["error"].as_str().unwrap_or("?")
                ),
            }
        }
    };
    [
        text("task"),
        text("activity"),
        text("execution"),
        text("batchName"),
        r["batchId"]
            .as_i64()
            .map_or_else(|| "-".to_owned(), |i| i.to_string()),
        text("state"),
        age,
        report,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::ReportAttempt;
    use crate::livy::CreateBatch;

    fn entry() -> Entry {
        let mut e = Entry::new(
            "SECRET-TOKEN".into(),
            "arn:aws:states:us-east-1:1:activity:etl".into(),
            "http://localhost:8998/".into(),
            Some("Spark Pi".into()),
            CreateBatch {
                file: "s3://b/pi.py".into(),
                name: "Spark Pi-0123456789ab".into(),
                ..Default::default()
            },
        );
        e.created_at = Some("2026-11-26T10:00:00.000Z".into());
        e.execution = Some("nightly-42".into());
        e.batch_id = Some(7);
        e.last_state = Some("running".into());
        e
    }

    #[test]
    fn rows_show_what_runs_and_what_waits_to_be_reported_but_never_the_token() {
        let now = humantime::parse_rfc3339("2026-11-26T10:05:30Z").expect("time");
        let running = row("0123456789ab", &entry(), now);
        assert_eq!(running["activity"], "etl");
        assert_eq!(running["ageSeconds"], 330);
        assert_eq!(running["batchId"], 7);
        assert_eq!(running["execution"], "nightly-42");
        let mut stuck = entry();
        stuck.report = Some(Report::Failure {
            error: "SparkJob.Failed".into(),
            cause: "boom".into(),
        });
        stuck.report_attempt = Some(ReportAttempt {
            at: "2026-11-26T10:05:00.000Z".into(),
            error: "throttled: slow down".into(),
            attempts: 3,
        });
        let waiting = row("ba9876543210", &stuck, now);
        let text = table(&[running.clone(), waiting.clone()]);
        assert!(!text.contains("SECRET") && !running.to_string().contains("SECRET"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("TASK          ACTIVITY  EXECUTION   BATCH"),
            "{text}"
        );
        assert!(
            lines[1].contains("Spark Pi-0123456789ab") && lines[1].contains("running"),
            "{text}"
        );
        assert!(lines[1].contains("5m 30s"), "{text}");
        assert!(
            lines[2].contains("SparkJob.Failed, 3 failed tries, last at 2026-11-26T10:05:00.000Z: throttled: slow down"),
            "{text}"
        );
        assert_eq!(table(&[]), "no tasks in flight\n");
    }
}
