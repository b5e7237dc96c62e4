//! The journal of in-flight tasks: one small JSON file per task in `--state-dir`, written
//! atomically and durably, so a restarted worker resumes every task it was handed.
//!
//! Life of an entry: written as soon as a task is delivered, before `POST /batches`; updated with
//! the batch id, on each state change, and with the final report once decided; removed only after
//! Step Functions accepted the report or said the task is gone. A torn or corrupt file is logged,
//! set aside as `*.corrupt` and skipped — never a crash at start.
//!
//! One process owns the directory: `open` takes an exclusive lock on `.lock` for the life of the
//! process. A write that fails (disk full) marks the journal unwritable, which stops new polls
//! until a write succeeds again; see [`Journal::writable`].

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};

use ::metrics::counter;

use crate::failure::{ErrorName, Failure};
use crate::livy::CreateBatch;
use crate::metrics;

const FORMAT_VERSION: u32 = 1;

/// How many writes may wait on the disk at once. The runtime has twice as many blocking threads,
/// so that new entries' writes and name lookups always find one.
pub const FLUSHES_AT_ONCE: usize = 8;

/// One in-flight task. It holds the task token: the directory is private to the worker's user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub version: u32,
    /// Shared with the task's reporter: a token can be 2 KiB.
    pub task_token: Arc<str>,
    /// Shared by the tasks of one activity.
    pub activity_arn: Arc<str>,
    pub livy_url: String,
    /// Shared with the task's batch.
    pub batch_name: Arc<str>,
    /// RFC 3339; when the entry was first written (just before the first POST).
    #[serde(default)]
    pub created_at: Option<String>,
    /// The user's `Name`, for the output.
    pub name: Option<String>,
    /// The execution's name, when the input gave `ExecutionId` (for logs and `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
    /// The submission, so a batch Livy never received can still be submitted after a restart.
    pub request: Submission,
    pub batch_id: Option<i64>,
    /// The YARN application id, once Livy or YARN showed it.
    #[serde(default)]
    pub app_id: Option<String>,
    /// RFC 3339; when the batch was first submitted.
    pub submitted_at: Option<String>,
    pub last_state: Option<String>,
    /// The decided outcome, kept until Step Functions accepts it.
    pub report: Option<Report>,
    /// The last failed attempt to deliver `report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_attempt: Option<ReportAttempt>,
}

/// A report attempt that failed: when, why, and how many have so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportAttempt {
    /// RFC 3339.
    pub at: String,
    pub error: String,
    pub attempts: u32,
}

impl Entry {
    pub fn new(
        task_token: Arc<str>,
        activity_arn: Arc<str>,
        livy_url: String,
        name: Option<String>,
        request: CreateBatch,
    ) -> Self {
        Entry {
            version: FORMAT_VERSION,
            task_token,
            activity_arn,
            livy_url,
            batch_name: request.name.as_str().into(),
            created_at: Some(
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            ),
            name,
            execution: None,
            request: Submission::new(&request),
            batch_id: None,
            app_id: None,
            submitted_at: None,
            last_state: None,
            report: None,
            report_attempt: None,
        }
    }
}

/// The submission as an entry holds it: its JSON, in one allocation. Thousands of tasks are held
/// at once, and the request is read only to post it; as a [`CreateBatch`] each would keep a
/// dozen fields, a map node and a string per value. An entry whose request is not one does not
/// load (it is corrupt).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Submission(Box<serde_json::value::RawValue>);

impl Submission {
    pub fn new(request: &CreateBatch) -> Self {
        Self(serde_json::value::to_raw_value(request).expect("a CreateBatch serialises"))
    }

    /// The request, to post.
    pub fn request(&self) -> CreateBatch {
        serde_json::from_str(self.0.get()).expect("checked when the entry was made or loaded")
    }
}

impl PartialEq for Submission {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl<'de> Deserialize<'de> for Submission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        serde_json::from_str::<CreateBatch>(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Self(raw))
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

/// An entry's file: `<key>.json`, not hidden.
fn is_entry_file(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(".json"))
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct StateDirError {
    path: PathBuf,
    source: io::Error,
}

/// The journal directory, locked by this process.
#[derive(Debug, Clone)]
pub struct Journal {
    /// Shared: every task's record holds a clone.
    dir: Arc<Path>,
    /// Held open for the life of the process: the lock goes with the last clone.
    _lock: Arc<File>,
    writable: Arc<watch::Sender<bool>>,
    /// Slots for writes waiting on the disk; see [`Journal::flushing`].
    flushes: Arc<tokio::sync::Semaphore>,
}

impl Journal {
    /// Creates the directory if needed (mode 0700), takes its lock and proves it is writable,
    /// durably. A directory another process holds is refused, naming that process.
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
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(".lock"))
            .map_err(err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                return Err(err(io::Error::other(format!(
                    "in use by another spark-activity-worker{who}; one worker per state directory"
                ))));
            }
            Err(TryLockError::Error(e)) => return Err(err(e)),
        }
        // The holder's pid, for the message a second process prints.
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()))
            .map_err(err)?;
        let journal = Journal {
            dir: dir.into(),
            _lock: Arc::new(lock),
            writable: Arc::new(watch::channel(true).0),
            flushes: Arc::new(tokio::sync::Semaphore::new(FLUSHES_AT_ONCE)),
        };
        journal.probe().map_err(err)?;
        Ok(journal)
    }

    /// Writes and removes a probe file: whether the directory takes durable writes now.
    pub fn probe(&self) -> io::Result<()> {
        crate::failpoint::io("journal-write")?;
        let path = self.dir.join(".probe");
        let unflushed = self.write_file(&path, b"ok")?;
        self.flush(unflushed)?;
        fs::remove_file(path)
    }

    /// `true` while the last write succeeded. New tasks are not polled for while it is `false`:
    /// a task that cannot be journaled would not survive a restart.
    pub fn writable(&self) -> watch::Receiver<bool> {
        self.writable.subscribe()
    }

    /// Records the result of a write; logs only the transitions.
    pub fn note_write(&self, result: &io::Result<()>) {
        let ok = result.is_ok();
        if !ok {
            counter!(metrics::JOURNAL_WRITE_FAILURES).increment(1);
        }
        let changed = self.writable.send_if_modified(|w| {
            let changed = *w != ok;
            *w = ok;
            changed
        });
        match result {
            Err(e) if changed => error!(
                dir = %self.dir.display(), error = %e,
                "cannot write the journal; not polling for new tasks until it is writable again (running tasks go on)"
            ),
            Ok(()) if changed => info!("the journal is writable again; polling resumes"),
            _ => {}
        }
    }

    /// How many entries the directory holds now (a directory listing, no parsing).
    pub fn count(&self) -> usize {
        fs::read_dir(&self.dir)
            .map(|items| {
                items
                    .filter_map(Result::ok)
                    .filter(|i| is_entry_file(&i.file_name()))
                    .count()
            })
            .unwrap_or(0)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Every readable entry with its key. Unreadable ones are logged and set aside.
    pub fn load(&self) -> Result<Vec<(String, Entry)>, StateDirError> {
        let err = |source| StateDirError {
            path: self.dir.to_path_buf(),
            source,
        };
        let mut entries = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(err)? {
            let path = item.map_err(err)?.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()).map(str::to_owned) else {
                continue;
            };
            if file.starts_with('.') {
                continue;
            }
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

    /// Writes (or replaces) an entry atomically and durably (see `Journal::write_file`).
    pub async fn put(&self, key: &str, entry: &Entry) -> io::Result<()> {
        self.put_with(key, || serde_json::to_vec(entry), false)
            .await
    }

    /// Writes (or replaces) an entry, serialised by `bytes`. A task's first write returns as
    /// soon as its file is in place, safe from a process kill; its two flushes go on behind, and
    /// a failure there marks the journal unwritable like any other. A delivered task's POST thus
    /// waits for a rename, not for the disk. Every other write takes one of the flushing slots
    /// for its whole course and returns once on disk; it is serialised only once it has its
    /// slot, so that thousands of tasks changing state at one tick wait for the disk without a
    /// copy of their entry each.
    async fn put_with(
        &self,
        key: &str,
        bytes: impl FnOnce() -> serde_json::Result<Vec<u8>>,
        first: bool,
    ) -> io::Result<()> {
        let path = self.path(key);
        if !first {
            let slot = self.slot().await;
            let result = match slot {
                Ok(slot) => {
                    let bytes = bytes().map_err(io::Error::other)?;
                    self.on_slot(slot, move |j| {
                        crate::failpoint::io("journal-write")?;
                        let unflushed = j.write_file(&path, &bytes)?;
                        j.flush(unflushed)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            self.note_write(&result);
            return result;
        }
        let bytes = bytes().map_err(io::Error::other)?;
        let journal = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            crate::failpoint::io("journal-write")?;
            journal.write_file(&path, &bytes)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        let unflushed = match written {
            Ok(unflushed) => unflushed,
            Err(e) => {
                let failed = Err(e);
                self.note_write(&failed);
                return failed;
            }
        };
        let created = matches!(unflushed, Unflushed::Created(_));
        let flushed = self.flushing(move |j| j.flush(unflushed));
        if created {
            tokio::spawn(flushed);
            return Ok(());
        }
        flushed.await
    }

    /// Removes an entry durably; a missing one is fine.
    pub async fn remove(&self, key: &str) -> io::Result<()> {
        let path = self.path(key);
        self.flushing(move |j| {
            crate::failpoint::io("journal-write")?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            File::open(&j.dir)?.sync_all()
        })
        .await
    }

    /// Runs `flush` on a blocking thread once one of the journal's few flushing slots is free,
    /// and notes its result. Flushes wait for the disk, and thousands of tasks changing state at
    /// one tick would otherwise queue for every blocking thread, with a newly delivered task's
    /// write (a rename, no flush) behind them.
    fn flushing(
        &self,
        flush: impl FnOnce(&Journal) -> io::Result<()> + Send + 'static,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let journal = self.clone();
        async move {
            let result = match journal.slot().await {
                Ok(slot) => journal.on_slot(slot, flush).await,
                Err(e) => Err(e),
            };
            journal.note_write(&result);
            result
        }
    }

    /// One of the flushing slots, once free.
    async fn slot(&self) -> io::Result<tokio::sync::OwnedSemaphorePermit> {
        self.flushes
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)
    }

    /// Runs `flush` on a blocking thread, holding `slot` until it is done.
    async fn on_slot(
        &self,
        slot: tokio::sync::OwnedSemaphorePermit,
        flush: impl FnOnce(&Journal) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let j = self.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            flush(&j)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
    }

    /// Writes `bytes` for `path`, atomically; [`Journal::flush`] makes it durable. Replacing an
    /// entry follows the textbook order — temp file, fsync, rename, fsync of the directory — so
    /// a power cut leaves the old or the new version, never a torn one. A new entry is renamed
    /// into place here, *before* its fsyncs: there is no old version to protect, and the task
    /// is safe from a process kill (SIGKILL, OOM) as soon as the rename returns instead of after
    /// two disk flushes — the window in which a task delivered to the worker could still be
    /// lost shrinks from milliseconds to microseconds.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<Unflushed> {
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
            return Ok(Unflushed::Created(f));
        }
        Ok(Unflushed::Replacing {
            file: f,
            tmp,
            path: path.to_owned(),
        })
    }

    /// Makes a write durable: the file's fsync, its rename if it replaces an entry, and the
    /// directory's fsync (a rename is durable only then).
    fn flush(&self, unflushed: Unflushed) -> io::Result<()> {
        match unflushed {
            Unflushed::Created(f) => {
                crate::failpoint::stall("journal-flush");
                f.sync_all()?;
            }
            Unflushed::Replacing { file, tmp, path } => {
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
            }
        }
        File::open(&self.dir)?.sync_all()
    }
}

/// A write whose flushes are still to come.
enum Unflushed {
    /// A new entry, already in place.
    Created(File),
    /// A replacement, still in its temp file.
    Replacing {
        file: File,
        tmp: PathBuf,
        path: PathBuf,
    },
}

/// One task's entry, held in memory and written through to its file: the supervisor's view of
/// what the journal keeps. Writes are serialised, so a later state never lands before an earlier.
#[derive(Debug)]
pub struct Record {
    /// `None` for a task run without a journal (`submit`): nothing is written.
    journal: Option<Journal>,
    key: String,
    entry: Mutex<Entry>,
    saved: std::sync::atomic::AtomicBool,
    writes: tokio::sync::Mutex<()>,
    /// Bumped on every change, for `submit`'s progress line; `None` in the worker, whose
    /// thousands of tasks have nobody watching (a channel is about 400 bytes).
    changes: Option<watch::Sender<u64>>,
}

impl Record {
    pub fn new(journal: Journal, key: String, entry: Entry, saved: bool) -> Self {
        Self::with(Some(journal), key, entry, saved, None)
    }

    /// A record kept in memory only, whose changes can be watched: `submit` runs one task
    /// without a journal and shows its progress.
    pub fn in_memory(key: String, entry: Entry) -> Self {
        Self::with(None, key, entry, true, Some(watch::channel(0).0))
    }

    fn with(
        journal: Option<Journal>,
        key: String,
        entry: Entry,
        saved: bool,
        changes: Option<watch::Sender<u64>>,
    ) -> Self {
        Record {
            journal,
            key,
            entry: Mutex::new(entry),
            saved: saved.into(),
            writes: tokio::sync::Mutex::new(()),
            changes,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn read<T>(&self, f: impl FnOnce(&Entry) -> T) -> T {
        f(&self.entry.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Wakes on every change of the entry (of an [`in_memory`](Self::in_memory) record; a
    /// journaled one's never changes).
    pub fn changes(&self) -> watch::Receiver<u64> {
        match &self.changes {
            Some(changes) => changes.subscribe(),
            None => watch::channel(0).1,
        }
    }

    pub fn is_saved(&self) -> bool {
        self.saved.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn update(&self, change: impl FnOnce(&mut Entry)) -> io::Result<()> {
        change(&mut self.entry.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(changes) = &self.changes {
            changes.send_modify(|n| *n += 1);
        }
        self.save().await
    }

    pub async fn save(&self) -> io::Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let _serial = self.writes.lock().await;
        // Serialised once the write's turn comes, as it then stands: thousands of tasks may
        // wait for the disk at once.
        let result = journal
            .put_with(
                &self.key,
                || self.read(serde_json::to_vec),
                !self.is_saved(),
            )
            .await;
        if result.is_ok() {
            self.saved.store(true, std::sync::atomic::Ordering::Release);
        }
        result
    }

    pub async fn forget(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        let _serial = self.writes.lock().await;
        if let Err(e) = journal.remove(&self.key).await {
            error!(error = %e, "could not remove the journal entry; the next start will report this task again");
        }
    }
}

/// The entries of a journal directory, read without taking its lock or changing anything, for
/// `status` while a worker runs: entries are replaced by rename, so each file read is whole. A
/// file that vanishes meanwhile (its task ended) is skipped; one that does not parse is listed
/// as an error.
pub fn peek(dir: &Path) -> io::Result<Vec<(String, Result<Entry, String>)>> {
    let mut entries = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        if !is_entry_file(&name) {
            continue;
        }
        let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let parsed = match fs::read(item.path()) {
            Ok(bytes) => serde_json::from_slice::<Entry>(&bytes).map_err(|e| e.to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => Err(e.to_string()),
        };
        entries.push((key.to_owned(), parsed));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
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
        assert_eq!(loaded[0].1.request.request().file, "s3://b/a.py");
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("k1.json")).expect("read")).expect("json");
        assert_eq!(
            file["request"],
            serde_json::json!({"file": "s3://b/a.py", "name": "n-0123456789ab"}),
            "the request is written as the object it always was"
        );
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
        let mut bad_request = serde_json::to_value(entry("v")).expect("json");
        bad_request["request"]["file"] = serde_json::json!(3);
        fs::write(dir.join("bad-request.json"), bad_request.to_string()).expect("write");
        let loaded = j.load().expect("load");
        assert_eq!(
            loaded.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            vec!["good"]
        );
        assert!(dir.join("truncated.json.corrupt").exists());
        assert!(dir.join("garbage.json.corrupt").exists());
        assert!(dir.join("bad-request.json.corrupt").exists());
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
    fn a_second_opener_of_the_directory_is_refused_until_the_first_is_gone() {
        let dir = temp_dir("locked");
        let first = Journal::open(&dir).expect("open");
        let e = Journal::open(&dir).expect_err("locked");
        let msg = e.to_string();
        assert!(
            msg.contains("in use by another spark-activity-worker"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        Journal::open(&dir).expect("free again");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_record_writes_through_and_forgets() {
        let dir = temp_dir("record");
        let j = Journal::open(&dir).expect("open");
        let r = Record::new(j.clone(), "k".into(), entry("t"), false);
        assert!(!r.is_saved());
        r.update(|e| e.batch_id = Some(3)).await.expect("write");
        assert!(r.is_saved());
        assert_eq!(j.load().expect("load")[0].1.batch_id, Some(3));
        r.forget().await;
        assert!(j.load().expect("load").is_empty());
        let _ = fs::remove_dir_all(&dir);
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
