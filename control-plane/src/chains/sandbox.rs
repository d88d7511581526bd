//! The transformation sandbox: `jinja` and `jq` transformations evaluate in separate processes.
//!
//! Both engines can loop or allocate without bound (`[range(1e12)]`, `last(repeat(1))`,
//! `"x" * 1e10`), and the control plane evaluates transformations while it records a completion
//! (DESIGN.md section 5, step 4). So a [`Sandbox`] keeps a pool of `workers` child processes, each the
//! control-plane executable started as `legion-control-plane sandbox --memory-bytes N
//! --max-output-bytes N` ([`serve_stdio`]) with an empty environment, `/` as working directory and its
//! own resource limits (`RLIMIT_AS` = `memory_bytes`, no core files, no file writes, 16 descriptors).
//! `static` transformations evaluate in this process.
//!
//! Protocol: one JSON line per request on the child's stdin, `{"transformation":{…},"context":{…}}`,
//! and one JSON line per reply on its stdout, `{"ok":<value>}` or `{"error":"<reason>"}`. Each process
//! serves one evaluation at a time; an evaluation waits for a free process. A process that does not
//! reply within `timeout`, exits, or replies with a line longer than `max_output_bytes` plus
//! [`REPLY_OVERHEAD_BYTES`] is killed and replaced on next use, and the evaluation fails with a reason
//! naming the setting involved. An evaluation whose future is dropped mid-way kills its process too.

mod child;

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::transform::Transformation;

pub use child::serve_stdio;

/// Largest request line (transformation and context) sent to or accepted by a sandbox process.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// Bytes a reply line may have beyond `max_output_bytes`: the `{"ok":…}` wrapping, or an error reason.
pub const REPLY_OVERHEAD_BYTES: usize = 64 << 10;

/// How long a process that closed its stdout gets to report its exit status before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// How the sandbox runs (from `control_plane.transform_*` settings).
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The executable to start: the control-plane binary, which serves the `sandbox` subcommand.
    pub program: PathBuf,
    /// Processes in the pool, each serving one evaluation at a time (at least 1 is used).
    pub workers: usize,
    /// Longest evaluation, from sending the request to reading the reply
    /// (`control_plane.transform_timeout_ms`).
    pub timeout: Duration,
    /// `RLIMIT_AS` of each process, in bytes (`control_plane.transform_memory_bytes`).
    pub memory_bytes: u64,
    /// Largest output, serialized as compact JSON, in bytes
    /// (`control_plane.transform_max_output_bytes`).
    pub max_output_bytes: usize,
}

/// One request line.
#[derive(Debug, Serialize, Deserialize)]
struct Request<T, C> {
    transformation: T,
    context: C,
}

/// One reply line: `{"ok":<value>}` or `{"error":"<reason>"}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Ok(serde_json::Value),
    Error(String),
}

/// A pool of sandbox processes. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SandboxSettings,
    /// One permit per process slot.
    permits: Semaphore,
    /// Free slots: `Some` a running process, `None` one to start on next use.
    idle: Mutex<Vec<Option<Worker>>>,
    closed: AtomicBool,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

impl Sandbox {
    /// The pool; processes start on first use.
    pub fn new(settings: SandboxSettings) -> Self {
        let workers = settings.workers.max(1);
        let inner = Inner {
            settings,
            permits: Semaphore::new(workers),
            idle: Mutex::new((0..workers).map(|_| None).collect()),
            closed: AtomicBool::new(false),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Evaluates `t` on `context` (`{"results", "args", "task"}`): `static` in this process, `jinja` and
    /// `jq` in a sandbox process, waiting for a free one.
    ///
    /// # Errors
    /// The reason, for the child task's `error`: the transformation's own error, or
    /// `transformation ran past control_plane.transform_timeout_ms (N ms)`,
    /// `transformation sandbox exited (memory limit control_plane.transform_memory_bytes or a crash): <status>`,
    /// `transformation output exceeds control_plane.transform_max_output_bytes`, a process that could not
    /// start, or a pool that was shut down.
    pub async fn evaluate(&self, t: &Transformation, context: &serde_json::Value) -> Result<serde_json::Value, String> {
        let settings = &self.inner.settings;
        if !t.needs_sandbox() {
            return t.evaluate(context, settings.max_output_bytes);
        }
        let mut request = serde_json::to_vec(&Request { transformation: t, context })
            .map_err(|e| format!("transformation request cannot be encoded: {e}"))?;
        if request.len() > MAX_REQUEST_BYTES {
            return Err(format!("transformation context exceeds {MAX_REQUEST_BYTES} bytes"));
        }
        request.push(b'\n');
        let permit =
            self.inner.permits.acquire().await.map_err(|_| "transformation sandbox is shut down".to_owned())?;
        let mut lease = Lease::new(&self.inner, permit);
        // A process that died while idle (killed by an operator or the OOM killer) is replaced before
        // use, so that its death does not fail an evaluation it never started.
        let reusable = lease.worker.take().and_then(Worker::alive);
        let worker = match reusable {
            Some(worker) => worker,
            None => Worker::spawn(settings).map_err(|e| {
                tracing::warn!(program = %settings.program.display(), error = %e, "transformation sandbox did not start");
                format!("transformation sandbox could not start: {e}")
            })?,
        };
        let (worker, result) = worker.call(&request, settings).await;
        lease.worker = worker;
        result
    }

    /// Kills the processes; later evaluations of `jinja` and `jq` fail. Evaluations in progress finish
    /// and their processes are killed when they return.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.permits.close();
        let workers: Vec<Worker> =
            self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner).drain(..).flatten().collect();
        for worker in workers {
            worker.kill().await;
        }
    }
}

/// A slot taken from the pool for one evaluation; gives it back when dropped (the worker only if the
/// evaluation completed cleanly: a dropped future leaves `None`, and the process is killed on drop).
struct Lease<'a> {
    inner: &'a Inner,
    worker: Option<Worker>,
    _permit: SemaphorePermit<'a>,
}

impl<'a> Lease<'a> {
    fn new(inner: &'a Inner, permit: SemaphorePermit<'a>) -> Self {
        let worker = inner.idle.lock().unwrap_or_else(PoisonError::into_inner).pop().flatten();
        Self { inner, worker, _permit: permit }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // The permit is released after this body: the slot is back before another evaluation looks.
        if !self.inner.closed.load(Ordering::SeqCst) {
            self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner).push(self.worker.take());
        }
    }
}

/// One sandbox process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What the reply read produced.
enum Line {
    Complete(Vec<u8>),
    TooLong,
    Eof,
}

impl Worker {
    fn spawn(settings: &SandboxSettings) -> std::io::Result<Self> {
        let mut child = Command::new(&settings.program)
            .arg("sandbox")
            .arg("--memory-bytes")
            .arg(settings.memory_bytes.to_string())
            .arg("--max-output-bytes")
            .arg(settings.max_output_bytes.to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the process has no stdin or stdout pipe"));
        };
        tracing::debug!(pid = child.id(), "transformation sandbox started");
        Ok(Self { child, stdin, stdout: BufReader::new(stdout) })
    }

    /// The worker if its process is still running; a process that exited is reaped and dropped.
    fn alive(mut self) -> Option<Self> {
        match self.child.try_wait() {
            Ok(None) => Some(self),
            Ok(Some(status)) => {
                tracing::warn!(status = %status, "idle transformation sandbox had exited; starting another");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check an idle transformation sandbox; starting another");
                None
            }
        }
    }

    /// Sends `request` and reads the reply within the timeout. Returns the worker if it can serve again.
    async fn call(
        mut self,
        request: &[u8],
        settings: &SandboxSettings,
    ) -> (Option<Self>, Result<serde_json::Value, String>) {
        let limit = settings.max_output_bytes.saturating_add(REPLY_OVERHEAD_BYTES);
        let exchange = async {
            self.stdin.write_all(request).await?;
            self.stdin.flush().await?;
            read_line(&mut self.stdout, limit).await
        };
        let line = match tokio::time::timeout(settings.timeout, exchange).await {
            Err(_elapsed) => {
                let timeout_ms = settings.timeout.as_millis();
                tracing::warn!(pid = self.child.id(), timeout_ms, "transformation sandbox killed: timeout");
                self.kill().await;
                return (
                    None,
                    Err(format!("transformation ran past control_plane.transform_timeout_ms ({timeout_ms} ms)")),
                );
            }
            Ok(Err(_)) | Ok(Ok(Line::Eof)) => return (None, Err(self.exited().await)),
            Ok(Ok(Line::TooLong)) => {
                tracing::warn!(pid = self.child.id(), limit, "transformation sandbox killed: reply too long");
                self.kill().await;
                return (
                    None,
                    Err("transformation output exceeds control_plane.transform_max_output_bytes".to_owned()),
                );
            }
            Ok(Ok(Line::Complete(line))) => line,
        };
        match serde_json::from_slice::<Reply>(&line) {
            Ok(Reply::Ok(value)) => (Some(self), Ok(value)),
            Ok(Reply::Error(reason)) => (Some(self), Err(reason)),
            Err(e) => {
                tracing::warn!(pid = self.child.id(), error = %e, "transformation sandbox killed: invalid reply");
                self.kill().await;
                (None, Err(format!("transformation sandbox replied with an invalid message: {e}")))
            }
        }
    }

    /// The error for a process whose stdout closed (or whose stdin broke): waits briefly for its status.
    async fn exited(mut self) -> String {
        let pid = self.child.id();
        let status = match tokio::time::timeout(EXIT_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => format!("status unknown: {e}"),
            Err(_) => {
                self.kill().await;
                "closed its output".to_owned()
            }
        };
        tracing::warn!(pid, status = %status, "transformation sandbox exited");
        format!(
            "transformation sandbox exited (memory limit control_plane.transform_memory_bytes or a crash): {status}"
        )
    }

    /// Kills the process and reaps it.
    async fn kill(mut self) {
        if let Err(e) = self.child.kill().await {
            tracing::warn!(pid = self.child.id(), error = %e, "transformation sandbox could not be killed");
        }
    }
}

/// Reads one line of at most `limit` bytes (without its newline).
async fn read_line(reader: &mut BufReader<ChildStdout>, limit: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let read = (&mut *reader).take(limit as u64 + 1).read_until(b'\n', &mut line).await?;
    if read == 0 {
        return Ok(Line::Eof);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Line::Complete(line));
    }
    // No newline: either over the limit, or the process died mid-line.
    Ok(if line.len() > limit { Line::TooLong } else { Line::Eof })
}
