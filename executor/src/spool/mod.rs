//! The completion spool (DESIGN.md section 5, items 4 and 7): completions the control plane could not
//! take are appended here and replayed in order when it answers again, so that a message can be acked
//! while the control plane is down without losing its completion, across executor restarts.
//!
//! Layout of `executor.spool_dir` (created 0700): `NNNNNNNNNNNNNNNNNNNN.jsonl` files (20-digit sequence
//! numbers, oldest first), each line one completion sealed by [`codec`]; `spool.key` (0600, only when
//! `executor.spool_key` is unset: a random key created once); `spool.check`, one sealed line that
//! proves the configured key and node name match the spool's (a mismatch is a settings error, not a
//! silent loss of every line).
//!
//! Writing: one writer task appends the lines of every request that arrived together, then fsyncs
//! each file it wrote once (group commit) and only then answers "spooled". A process starts a new file
//! (never appends to a file an earlier process may have left with a torn last line); a file is rotated
//! when the next line would take it past `executor.spool_file_bytes`. A line that would take the
//! spool past `executor.spool_max_bytes` is refused ([`Error::Full`]): its completion keeps waiting
//! for the control plane.
//!
//! Reading ([`replay`]): files are replayed oldest first, lines in order; a file is deleted only after
//! every line of it was answered. Lines older than `executor.spool_retention_s` are dropped and
//! counted (`legion_executor_spool_expired_total`), lines that do not decrypt or parse are skipped and
//! counted (`legion_executor_spool_corrupt_total`).

pub mod codec;
pub mod replay;
mod writer;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use legion_common::settings::ExecutorSettings;
use legion_proto::v1::Completion;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::metrics::Metrics;
use codec::{Codec, Record, Spooled};

/// Name of the key file created when `executor.spool_key` is unset.
pub const KEY_FILE: &str = "spool.key";
/// Name of the file that proves the key and node of the spool.
pub const CHECK_FILE: &str = "spool.check";
/// Extension of the spool's data files.
pub const EXTENSION: &str = "jsonl";

/// Spool failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The spool cannot be used as configured (bad key, key not matching the spool, directory not
    /// creatable); a settings error (exit 64) naming the key.
    #[error("{0}")]
    Settings(String),
    /// A file operation failed.
    #[error("spool {path}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The line does not fit under `executor.spool_max_bytes`.
    #[error("spool full: {held} bytes held, a line of {line} bytes would exceed executor.spool_max_bytes ({max})")]
    Full {
        /// Bytes the spool holds.
        held: u64,
        /// Bytes of the refused line.
        line: u64,
        /// `executor.spool_max_bytes`.
        max: u64,
    },
    /// The writer task stopped.
    #[error("spool writer stopped")]
    Closed,
}

fn io_error(path: &Path, e: &std::io::Error) -> Error {
    Error::Io { path: path.to_owned(), reason: e.to_string() }
}

/// Where and how to spool, from `executor.spool_*`.
#[derive(Debug, Clone)]
pub struct Options {
    /// `executor.spool_dir`, resolved.
    pub dir: PathBuf,
    /// `executor.name`: part of every line's associated data.
    pub node: String,
    /// `executor.spool_key`: base64 of 32 bytes; `None` uses (or creates) `<dir>/spool.key`.
    pub key: Option<String>,
    /// `executor.spool_file_bytes`.
    pub file_bytes: u64,
    /// `executor.spool_max_bytes`.
    pub max_bytes: u64,
    /// `executor.spool_retention_s`.
    pub retention: Duration,
}

impl Options {
    /// The options of `executor`; an unset `spool_dir` is `~/.legionio/spool/<executor.name>`.
    ///
    /// # Errors
    /// [`Error::Settings`] when `spool_dir` is unset and the home directory is unknown.
    pub fn from_settings(executor: &ExecutorSettings) -> Result<Self, Error> {
        let dir = match &executor.spool_dir {
            Some(dir) => dir.clone(),
            None => std::env::home_dir()
                .filter(|h| h.is_absolute())
                .ok_or_else(|| {
                    Error::Settings("executor.spool_dir: unset, and the home directory is unknown (set HOME)".into())
                })?
                .join(".legionio/spool")
                .join(&executor.name),
        };
        Ok(Self {
            dir,
            node: executor.name.clone(),
            key: executor.spool_key.clone(),
            file_bytes: executor.spool_file_bytes,
            max_bytes: executor.spool_max_bytes,
            retention: Duration::from_secs(executor.spool_retention_s),
        })
    }
}

struct Current {
    seq: u64,
    file: File,
}

/// What is on disk: data files by sequence number with their sizes, and the file being appended to.
struct State {
    files: BTreeMap<u64, u64>,
    current: Option<Current>,
    next_seq: u64,
    total: u64,
}

struct Shared {
    options: Options,
    codec: Codec,
    state: Mutex<State>,
    appended: Notify,
    metrics: Metrics,
}

struct Request {
    lines: Vec<Vec<u8>>,
    tx: oneshot::Sender<Vec<Result<(), Error>>>,
}

/// The spool. Cheap to clone; the writer task stops when every clone is dropped.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<Request>,
}

/// The data file of sequence number `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}.{EXTENSION}")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jsonl")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, &e))
}

/// Creates `dir` (and its parents) with mode 0700 when missing.
fn create_dir(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::Settings(format!("executor.spool_dir: cannot create {}: {e}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io_error(dir, &e))
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename, directory fsync) with `mode`.
fn write_atomically(path: &Path, contents: &[u8], mode: u32, create_new: bool) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, &e))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(|e| io_error(&tmp, &e))?;
    if create_new && path.exists() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Io { path: path.to_owned(), reason: "already exists".into() });
    }
    fs::rename(&tmp, path).map_err(|e| io_error(path, &e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The key: `executor.spool_key`, or the one in `<dir>/spool.key`, created when missing.
fn load_key(options: &Options) -> Result<[u8; codec::KEY_BYTES], Error> {
    if let Some(text) = &options.key {
        return codec::decode_key(text).map_err(|reason| Error::Settings(format!("executor.spool_key: {reason}")));
    }
    let path = options.dir.join(KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => codec::decode_key(&text)
            .map_err(|reason| Error::Settings(format!("executor.spool_key: unset, and {} {reason}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = codec::random_key();
            write_atomically(&path, codec::encode_key(&key).as_bytes(), 0o600, true)?;
            tracing::warn!(
                path = %path.display(),
                "executor.spool_key is unset: created a random spool key beside the spool it protects; set executor.spool_key (e.g. a vault:// reference) to keep them apart"
            );
            Ok(key)
        }
        Err(e) => {
            Err(Error::Settings(format!("executor.spool_key: unset, and {} cannot be read: {e}", path.display())))
        }
    }
}

impl Spool {
    /// Opens (creating) the spool `options` describe and starts its writer task (needs a tokio
    /// runtime). Existing data files are kept for [`replay`]; appends go to a new file.
    ///
    /// # Errors
    /// [`Error::Settings`] for a key that is not base64 of 32 bytes (naming `executor.spool_key`), for a
    /// key or node name that does not match the spool already in the directory, or for a directory
    /// that cannot be created; [`Error::Io`] when the directory cannot be read.
    pub fn open(options: Options, metrics: Metrics) -> Result<Self, Error> {
        create_dir(&options.dir)?;
        let key = load_key(&options)?;
        let codec = Codec::new(&key, &options.node);
        let mut files = BTreeMap::new();
        let entries = fs::read_dir(&options.dir).map_err(|e| io_error(&options.dir, &e))?;
        for entry in entries.flatten() {
            if let Some(seq) = entry.file_name().to_str().and_then(parse_file_name) {
                let size = entry.metadata().map_err(|e| io_error(&entry.path(), &e))?.len();
                files.insert(seq, size);
            }
        }
        check_key(&options, &codec, !files.is_empty())?;
        let total = files.values().sum();
        let next_seq = files.keys().next_back().map_or(1, |last| last + 1);
        metrics.spool_bytes.set(i64::try_from(total).unwrap_or(i64::MAX));
        if !files.is_empty() {
            tracing::info!(dir = %options.dir.display(), files = files.len(), bytes = total, "spool holds completions to replay");
        }
        let shared = Arc::new(Shared {
            options,
            codec,
            state: Mutex::new(State { files, current: None, next_seq, total }),
            appended: Notify::new(),
            metrics,
        });
        let (writer, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer::write_loop(shared.clone(), rx));
        Ok(Self { shared, writer })
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.options.dir
    }

    /// Appends `completions`, spooled now; answers each once its line is on disk (written and
    /// fsynced). Lines of requests that arrive together share one fsync.
    ///
    /// # Errors
    /// Per completion: [`Error::Full`] when it does not fit, [`Error::Io`], [`Error::Closed`].
    pub async fn append(&self, completions: &[Completion]) -> Vec<Result<(), Error>> {
        let now = Utc::now();
        self.append_records(completions.iter().map(|c| Record::new(c, now)).collect()).await
    }

    /// [`Spool::append`] of records as given (tests set `spooled_at`).
    pub(crate) async fn append_records(&self, records: Vec<Record>) -> Vec<Result<(), Error>> {
        let count = records.len();
        let lines = records.iter().map(|r| self.shared.codec.seal_record(r)).collect();
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Request { lines, tx }).is_err() {
            return vec![Err(Error::Closed); count];
        }
        rx.await.unwrap_or_else(|_| vec![Err(Error::Closed); count])
    }

    /// Bytes held in data files.
    pub fn bytes(&self) -> u64 {
        self.shared.lock().total
    }

    /// Whether no data file is left.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().files.is_empty()
    }

    /// Seals the file being appended to (the next append starts a new one) and returns every data
    /// file's sequence number, oldest first.
    pub(crate) fn seal(&self) -> Vec<u64> {
        let mut state = self.shared.lock();
        state.current = None;
        state.files.keys().copied().collect()
    }

    /// Waits until lines were appended since the last call (or since open).
    pub(crate) async fn appended(&self) {
        self.shared.appended.notified().await;
    }

    /// Reads a sealed data file and decodes its lines at `now`: the records to replay, in order;
    /// expired and corrupt lines are logged, counted and left out.
    pub(crate) async fn read(&self, seq: u64, now: DateTime<Utc>) -> Result<Vec<Spooled>, Error> {
        let path = self.shared.options.dir.join(file_name(seq));
        let reading = path.clone();
        let bytes = tokio::task::spawn_blocking(move || fs::read(&reading).map_err(|e| io_error(&reading, &e)))
            .await
            .map_err(|e| Error::Io { path: path.clone(), reason: e.to_string() })??;
        let mut records = Vec::new();
        for (n, line) in bytes.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
            match self.shared.codec.open_record(line).and_then(Record::into_completion) {
                Ok(spooled) if self.expired(&spooled, now) => {}
                Ok(spooled) => records.push(spooled),
                Err(e) => {
                    self.shared.metrics.spool_corrupt.inc();
                    tracing::warn!(file = %path.display(), line = n + 1, error = %e, "skipping a spool line that cannot be read");
                }
            }
        }
        Ok(records)
    }

    /// Whether `record` is past `executor.spool_retention_s` at `now`; logs and counts it when it is.
    pub(crate) fn expired(&self, spooled: &Spooled, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(spooled.spooled_at).to_std().unwrap_or_default();
        if age <= self.shared.options.retention {
            return false;
        }
        self.shared.metrics.spool_expired.inc();
        tracing::warn!(
            task_id = %spooled.completion.task_id, attempt = spooled.completion.attempt, spooled_at = %spooled.spooled_at,
            retention_s = self.shared.options.retention.as_secs(),
            "dropping a spooled completion older than executor.spool_retention_s"
        );
        true
    }

    /// Deletes a data file whose every line was answered.
    pub(crate) fn remove(&self, seq: u64) -> Result<(), Error> {
        let path = self.shared.options.dir.join(file_name(seq));
        let mut state = self.shared.lock();
        if state.current.as_ref().is_some_and(|c| c.seq == seq) {
            state.current = None;
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, &e)),
        }
        if let Some(size) = state.files.remove(&seq) {
            state.total = state.total.saturating_sub(size);
        }
        self.shared.metrics.spool_bytes.set(i64::try_from(state.total).unwrap_or(i64::MAX));
        Ok(())
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

/// Checks `spool.check` against `codec`; writes it when absent, or when no data file depends on it.
fn check_key(options: &Options, codec: &Codec, has_data: bool) -> Result<(), Error> {
    let path = options.dir.join(CHECK_FILE);
    match fs::read(&path) {
        Ok(line) => {
            let matches = codec.open(line.trim_ascii_end()).is_ok_and(|p| p == codec::FORMAT.as_bytes());
            if matches {
                return Ok(());
            }
            if has_data {
                return Err(Error::Settings(format!(
                    "executor.spool_key: does not open the spool in {} (written with another key or by another node than {:?}); restore its key, or move its files away to give them up",
                    options.dir.display(),
                    options.node
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&path, &e)),
    }
    write_atomically(&path, &codec.seal(codec::FORMAT.as_bytes()), 0o600, false)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent with the disk or errs out before changing it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
