//! The journal of in-flight tasks: one small JSON file per task in `--state-dir`, written
//! atomically and durably, so a restarted worker resumes every task it was handed.
//!
//! Life of an entry: written before `POST /batches`; updated with the batch id, on each state
//! change, and with the final report once decided; removed only after Step Functions accepted the
//! report or said the task is gone. A torn or corrupt file is logged, set aside as `*.corrupt`
//! and skipped — never a crash at start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use crate::failure::{ErrorName, Failure};
use crate::livy::CreateBatch;

const FORMAT_VERSION: u32 = 1;

/// One in-flight task. It holds the task token: the directory is private to the worker's user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub version: u32,
    pub task_token: String,
    pub activity_arn: String,
    pub livy_url: String,
    pub batch_name: String,
    /// RFC 3339; when the entry was first written (just before the first POST).
    #[serde(default)]
    pub created_at: Option<String>,
    /// The user's `Name`, for the output.
    pub name: Option<String>,
    /// The submission, so a batch Livy never received can still be submitted after a restart.
    pub request: CreateBatch,
    pub batch_id: Option<i64>,
    /// RFC 3339; when the batch was first submitted.
    pub submitted_at: Option<String>,
    pub last_state: Option<String>,
    /// The decided outcome, kept until Step Functions accepts it.
    pub report: Option<Report>,
}

impl Entry {
    pub fn new(
        task_token: String,
        activity_arn: String,
        livy_url: String,
        name: Option<String>,
        request: CreateBatch,
    ) -> Self {
        Entry {
            version: FORMAT_VERSION,
            task_token,
            activity_arn,
            livy_url,
            batch_name: request.name.clone(),
            created_at: Some(
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            ),
            name,
            request,
            batch_id: None,
            submitted_at: None,
            last_state: None,
            report: None,
        }
    }
}

/// A final report waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Report {
    Success { output: String },
    Failure { error: String, cause: String },
}

impl Report {
    pub fn failure(f: &Failure) -> Self {
        Report::Failure {
            error: f.error.as_str().to_owned(),
            cause: f.cause.clone(),
        }
    }

    /// Back to a [`Failure`]; `None` for a name this version does not know.
    pub fn as_failure(error: &str, cause: &str) -> Option<Failure> {
        ErrorName::ALL
            .into_iter()
            .find(|n| n.as_str() == error)
            .map(|error| Failure {
                error,
                cause: cause.to_owned(),
            })
    }
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct StateDirError {
    path: PathBuf,
    source: io::Error,
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Creates the directory if needed (mode 0700) and proves it is writable, durably.
    pub fn open(dir: &Path) -> Result<Self, StateDirError> {
        let err = |source| StateDirError {
            path: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        let journal = Journal {
            dir: dir.to_owned(),
        };
        journal
            .write_atomic(&dir.join(".probe"), b"ok")
            .map_err(err)?;
        fs::remove_file(dir.join(".probe")).map_err(err)?;
        Ok(journal)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Every readable entry with its key. Unreadable ones are logged and set aside.
    pub fn load(&self) -> Result<Vec<(String, Entry)>, StateDirError> {
        let err = |source| StateDirError {
            path: self.dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(err)? {
            let path = item.map_err(err)?.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()).map(str::to_owned) else {
                continue;
            };
            if file.ends_with(".tmp") {
                // A write that never reached its rename: the previous version (if any) stands.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(key) = file.strip_suffix(".json") else {
                continue;
            };
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Entry>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(entry) => entries.push((key.to_owned(), entry)),
                Err(e) => {
                    let aside = path.with_extension("json.corrupt");
                    error!(file = %path.display(), error = %e, moved_to = %aside.display(), "corrupt journal entry; skipped");
                    if let Err(e) = fs::rename(&path, &aside) {
                        warn!(file = %path.display(), error = %e, "could not set the corrupt entry aside");
                    }
                }
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    /// Writes (or replaces) an entry: temp file, fsync, rename, fsync of the directory.
    pub async fn put(&self, key: &str, entry: &Entry) -> io::Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
        let journal = self.clone();
        let path = self.path(key);
        tokio::task::spawn_blocking(move || journal.write_atomic(&path, &bytes))
            .await
            .map_err(io::Error::other)?
    }

    /// Removes an entry durably; a missing one is fine.
    pub async fn remove(&self, key: &str) -> io::Result<()> {
        let path = self.path(key);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            File::open(&dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Replaces `name` atomically and durably. Replacing an entry follows the textbook order —
    /// temp file, fsync, rename, fsync of the directory — so a power cut leaves the old or the new
    /// version, never a torn one. Creating one renames *before* the fsyncs: there is no old
    /// version to protect, and the task becomes safe from a process kill (SIGKILL, OOM) as soon
    /// as the rename returns instead of after two disk flushes — the window in which a task
    /// delivered to the worker could still be lost shrinks from milliseconds to microseconds.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let creating = !path.exists();
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if creating {
            fs::rename(&tmp, path)?;
            f.sync_all()?;
        } else {
            f.sync_all()?;
            fs::rename(&tmp, path)?;
        }
        drop(f);
        // The rename is durable only once the directory itself is synced.
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("saw-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn entry(token: &str) -> Entry {
        Entry::new(
            token.into(),
            "arn:aws:states:us-east-1:1:activity:a".into(),
            "http://localhost:8998/".into(),
            Some("n".into()),
            CreateBatch {
                file: "s3://b/a.py".into(),
                name: "n-0123456789ab".into(),
                ..Default::default()
            },
        )
    }

    #[tokio::test]
    async fn entries_round_trip_and_are_removed() {
        let dir = temp_dir("roundtrip");
        let j = Journal::open(&dir).expect("open");
        let mut e = entry("t1");
        j.put("k1", &e).await.expect("put");
        e.batch_id = Some(4);
        e.report = Some(Report::Failure {
            error: "SparkJob.Failed".into(),
            cause: "boom".into(),
        });
        j.put("k1", &e).await.expect("update");
        j.put("k2", &entry("t2")).await.expect("put");
        let loaded = j.load().expect("load");
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0], ("k1".to_owned(), e));
        j.remove("k1").await.expect("remove");
        j.remove("k1").await.expect("removing twice is fine");
        assert_eq!(j.load().expect("load").len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn corrupt_and_torn_files_are_skipped_and_set_aside() {
        let dir = temp_dir("corrupt");
        let j = Journal::open(&dir).expect("open");
        j.put("good", &entry("t")).await.expect("put");
        let full = serde_json::to_vec(&entry("u")).expect("json");
        fs::write(dir.join("truncated.json"), &full[..full.len() / 2]).expect("write");
        fs::write(dir.join("garbage.json"), b"\x00\xffnot json").expect("write");
        fs::write(dir.join("torn.json.tmp"), b"{\"vers").expect("write");
        let loaded = j.load().expect("load");
        assert_eq!(
            loaded.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            vec!["good"]
        );
        assert!(dir.join("truncated.json.corrupt").exists());
        assert!(dir.join("garbage.json.corrupt").exists());
        assert!(!dir.join("torn.json.tmp").exists());
        assert_eq!(
            j.load().expect("load again").len(),
            1,
            "set-aside files are not read again"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_state_dir_is_refused() {
        let file = temp_dir("not-a-dir");
        fs::write(&file, b"x").expect("write");
        let e = Journal::open(&file).expect_err("a file is not a directory");
        assert!(
            e.to_string().starts_with(&file.display().to_string()),
            "{e}"
        );
        let _ = fs::remove_file(&file);
    }

    #[test]
    fn reports_map_back_to_known_names_only() {
        let f = Failure::new(ErrorName::Lost, "gone");
        let Report::Failure { error, cause } = Report::failure(&f) else {
            panic!("a failure")
        };
        assert_eq!(Report::as_failure(&error, &cause), Some(f));
        assert_eq!(Report::as_failure("Nope", "x"), None);
    }
}
