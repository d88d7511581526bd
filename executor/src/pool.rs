//! The runner pool: at most `executor.concurrency` functions run at once, each as its own tokio task
//! under its attempt's timeout, supervised so that a panic or a hang fails the attempt, not the
//! executor.
//!
//! Outcomes: a result (serialized JSON, at most `limits.max_result_bytes`), or a failure of kind
//! `FAILURE_KIND_PERMANENT` (invalid args, or [`FunctionError::Permanent`]: not retried),
//! `FAILURE_KIND_ERROR` (the function failed; also an oversize
//! result and an attempt aborted by the control plane, message `aborted`), `FAILURE_KIND_TIMEOUT` or
//! `FAILURE_KIND_PANIC` (with the panic message). The running `(task_id, attempt)` pairs are tracked
//! for heartbeats and aborts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use legion_proto::v1::FailureKind;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::extensions::{Context, Function, FunctionError};

/// Message of a failure whose runner was aborted (`abort` of a heartbeat answer).
pub const ABORTED: &str = "aborted";

/// One attempt to run.
pub struct Job {
    /// The task.
    pub task_id: Uuid,
    /// The attempt (fencing token).
    pub attempt: u32,
    /// The function to call.
    pub function: Arc<dyn Function>,
    /// Its args.
    pub args: serde_json::Value,
    /// The attempt's limit.
    pub timeout: Duration,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function's result, serialized JSON.
    Success(Vec<u8>),
    /// The attempt failed.
    Failure {
        /// Why, as reported in `CompleteTask`.
        kind: FailureKind,
        /// The message shown as the task's error.
        message: String,
    },
}

impl Outcome {
    /// A failure of `kind` with `message`.
    pub fn failure(kind: FailureKind, message: impl Into<String>) -> Self {
        Self::Failure { kind, message: message.into() }
    }

    /// A short label for metrics and logs: `succeeded`, `failed`, `permanent`, `rejected`,
    /// `timeout`, `panic`, `aborted`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Success(_) => "succeeded",
            Self::Failure { message, .. } if message == ABORTED => "aborted",
            Self::Failure { kind: FailureKind::Timeout, .. } => "timeout",
            Self::Failure { kind: FailureKind::Panic, .. } => "panic",
            Self::Failure { kind: FailureKind::Rejected, .. } => "rejected",
            Self::Failure { kind: FailureKind::Permanent, .. } => "permanent",
            Self::Failure { .. } => "failed",
        }
    }
}

/// An attempt's outcome and the runner's wall time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The outcome.
    pub outcome: Outcome,
    /// Wall time from the start of the function to its end (not counting the wait for a slot).
    pub duration: Duration,
}

struct Running {
    cancel: CancellationToken,
    abort: AbortHandle,
}

struct Inner {
    slots: Arc<Semaphore>,
    concurrency: usize,
    max_result_bytes: usize,
    running: Mutex<HashMap<(Uuid, u32), Running>>,
}

/// The runner pool. Cheap to clone; clones share the slots.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// Removes a runner from the running set and aborts it when its [`Pool::run`] ends or is dropped.
struct RunGuard {
    inner: Arc<Inner>,
    key: (Uuid, u32),
    abort: AbortHandle,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.abort.abort();
        if let Ok(mut running) = self.inner.running.lock() {
            running.remove(&self.key);
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

impl Pool {
    /// A pool of `concurrency` slots (at least 1) whose results may be at most `max_result_bytes`
    /// serialized.
    pub fn new(concurrency: usize, max_result_bytes: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(concurrency)),
                concurrency,
                max_result_bytes,
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Waits for a slot, then runs `job` in its own task under `job.timeout`, and returns how it
    /// ended. Never fails and never panics: panics, timeouts and aborts become failures. Dropping the
    /// returned future aborts the runner.
    pub async fn run(&self, job: Job) -> Finished {
        let Ok(_permit) = self.inner.slots.clone().acquire_owned().await else {
            return Finished {
                outcome: Outcome::failure(FailureKind::Error, "runner pool closed"),
                duration: Duration::ZERO,
            };
        };
        let ctx = Context::new(job.task_id, job.attempt, job.timeout);
        let cancel = ctx.cancel.clone();
        let started = Instant::now();
        let function = job.function;
        let args = job.args;
        let mut handle = tokio::spawn(async move { function.call(args, ctx).await });
        let key = (job.task_id, job.attempt);
        let _guard = RunGuard { inner: self.inner.clone(), key, abort: handle.abort_handle() };
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(key, Running { cancel: cancel.clone(), abort: handle.abort_handle() });
        }
        let outcome = match tokio::time::timeout(job.timeout, &mut handle).await {
            Ok(Ok(Ok(value))) => self.encode(&value),
            Ok(Ok(Err(FunctionError::InvalidArgs(message) | FunctionError::Permanent(message)))) => {
                Outcome::failure(FailureKind::Permanent, message)
            }
            Ok(Ok(Err(FunctionError::Failed(message)))) => Outcome::failure(FailureKind::Error, message),
            Ok(Err(join)) if join.is_panic() => {
                let message = panic_message(join.into_panic().as_ref());
                tracing::error!(task_id = %job.task_id, attempt = job.attempt, panic = %message, "runner panicked");
                Outcome::failure(FailureKind::Panic, format!("panicked: {message}"))
            }
            Ok(Err(_cancelled)) => Outcome::failure(FailureKind::Error, ABORTED),
            Err(_elapsed) => {
                cancel.cancel();
                handle.abort();
                Outcome::failure(FailureKind::Timeout, format!("timed out after {} ms", job.timeout.as_millis()))
            }
        };
        Finished { outcome, duration: started.elapsed() }
    }

    fn encode(&self, value: &serde_json::Value) -> Outcome {
        match serde_json::to_vec(value) {
            Ok(bytes) if bytes.len() <= self.inner.max_result_bytes => Outcome::Success(bytes),
            Ok(bytes) => Outcome::failure(
                FailureKind::Error,
                format!(
                    "result of {} bytes exceeds the limit of {} bytes (limits.max_result_bytes)",
                    bytes.len(),
                    self.inner.max_result_bytes
                ),
            ),
            Err(e) => Outcome::failure(FailureKind::Error, format!("result is not serializable: {e}")),
        }
    }

    /// Aborts the running attempt `attempt` of `task_id`, and no other attempt of the task: cancels its
    /// token and aborts its task; its [`Pool::run`] ends with the failure `aborted`. Returns whether
    /// such an attempt was running.
    pub fn abort(&self, task_id: Uuid, attempt: u32) -> bool {
        let Ok(running) = self.inner.running.lock() else { return false };
        match running.get(&(task_id, attempt)) {
            Some(r) => {
                r.cancel.cancel();
                r.abort.abort();
                true
            }
            None => false,
        }
    }

    /// The running `(task_id, attempt)` pairs, for heartbeats.
    pub fn running(&self) -> Vec<(Uuid, u32)> {
        self.inner.running.lock().map(|r| r.keys().copied().collect()).unwrap_or_default()
    }

    /// Attempts running now.
    pub fn in_flight(&self) -> usize {
        self.inner.concurrency.saturating_sub(self.inner.slots.available_permits())
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// The number of slots.
    pub fn concurrency(&self) -> usize {
        self.inner.concurrency
    }
}

#[cfg(test)]
mod tests;
