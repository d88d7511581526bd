//! `CompleteTask` decisions (docs/architecture.md, delivery protocol step 5).
//!
//! A completion is recorded only if `(task_id, attempt)` is the task's current attempt and the task is
//! `running`; anything else is stale and rejected harmlessly (`accepted = false`). A result larger than
//! `limits.max_result_bytes`, nested deeper than `limits.max_json_depth` (protobuf clients could not
//! decode the task any more), or not valid JSON, fails the attempt with that reason. A failure counts
//! against `max_attempts`: while `failures < max_attempts` the task waits out its backoff
//! ([`super::retry::wait`]) as `scheduled` with `not_before` (the promoter then gives it a new dispatch
//! and an outbox row; a wait of 0 redispatches in the same transaction); after the last attempt it ends
//! `timed_out` (for a timeout) or `failed`. A permanent failure ends the task `failed` at once, whatever
//! attempts remain.

use legion_common::TaskStatus;
use uuid::Uuid;

use super::{AttemptEnd, AttemptStatus, Backoff, Failed, Plan, Planner, TaskState, fail};
use crate::tasks::validate::contains_nul;

/// How an attempt failed, as reported by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The function returned an error (also used for an unset kind).
    Error,
    /// The attempt ran past its `timeout_ms`.
    Timeout,
    /// The runner panicked.
    Panic,
    /// The executor refused the task (unknown function, invalid args).
    Rejected,
    /// The function failed in a way another attempt cannot fix: never retried.
    Permanent,
}

/// What the executor reports for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function's result, UTF-8 JSON as sent.
    Result(Vec<u8>),
    /// The attempt failed.
    Failure {
        /// How.
        kind: FailureKind,
        /// The executor's message.
        message: String,
    },
    /// The completion carried neither (a protocol error; the attempt fails).
    Missing,
}

/// What a recorded result may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultLimits {
    /// `limits.max_result_bytes`: most bytes of result JSON.
    pub max_bytes: usize,
    /// `limits.max_json_depth`: deepest nesting of arrays and objects (`{"a":1}` is 1).
    pub max_depth: usize,
}

/// One completion of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteItem {
    /// The task, as sent (may be malformed).
    pub task_id: String,
    /// The attempt returned by `StartTask`.
    pub attempt: u32,
    /// Result or failure.
    pub outcome: Outcome,
    /// Runner wall time, in ms.
    pub duration_ms: u64,
}

/// What became of one completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded: the task succeeded.
    Succeeded,
    /// Recorded: the attempt failed and the task will run again (at once, or after its backoff).
    Retried,
    /// Recorded: the last attempt failed, or a permanent failure; the task is `failed`.
    Failed,
    /// Recorded: the last attempt timed out; the task is `timed_out`.
    TimedOut,
    /// Not recorded: the attempt is not current.
    Stale(String),
}

impl Verdict {
    /// Whether the completion was recorded.
    pub fn accepted(&self) -> bool {
        !matches!(self, Self::Stale(_))
    }

    /// Why it was not recorded; empty when it was.
    pub fn reason(&self) -> &str {
        match self {
            Self::Stale(reason) => reason,
            _ => "",
        }
    }

    /// A short label for metrics: succeeded, retried, failed, timed_out or stale.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Stale(_) => "stale",
        }
    }
}

/// The ids of the valid task ids among `items`, sorted and unique, for the store to lock.
pub fn task_ids(items: &[CompleteItem]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = items.iter().filter_map(|i| Uuid::parse_str(&i.task_id).ok()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Decides every completion of a batch, in order. `states` are the locked rows of the batch's tasks;
/// `backoff` picks the waits of retried failures.
pub fn plan(
    states: Vec<TaskState>,
    items: &[CompleteItem],
    limits: ResultLimits,
    backoff: &mut Backoff<'_>,
) -> (Vec<Verdict>, Plan) {
    let mut planner = Planner::new(states);
    let verdicts = items.iter().map(|item| decide(&mut planner, item, limits, backoff)).collect();
    (verdicts, planner.finish())
}

fn decide(planner: &mut Planner, item: &CompleteItem, limits: ResultLimits, backoff: &mut Backoff<'_>) -> Verdict {
    let Ok(id) = Uuid::parse_str(&item.task_id) else {
        return Verdict::Stale(format!("task_id {:?} is not a UUID", item.task_id));
    };
    let Some(state) = planner.state(&id) else { return Verdict::Stale("unknown task".into()) };
    if state.status != TaskStatus::Running {
        return Verdict::Stale(format!("task is {}", state.status));
    }
    if state.attempt != item.attempt {
        return Verdict::Stale(format!("stale attempt {} (current {})", item.attempt, state.attempt));
    }
    let duration_ms = Some(item.duration_ms);
    let (kind, message) = match &item.outcome {
        Outcome::Result(bytes) => match check_result(bytes, limits) {
            Ok(json) => {
                planner.end_attempt(AttemptEnd {
                    task_id: id,
                    attempt: item.attempt,
                    status: AttemptStatus::Succeeded,
                    error: None,
                    duration_ms,
                });
                planner.update(id, |state, update| {
                    state.status = TaskStatus::Succeeded;
                    update.finished = true;
                    update.error = Some(None);
                    update.result = Some(json);
                });
                return Verdict::Succeeded;
            }
            Err(reason) => (FailureKind::Error, reason),
        },
        Outcome::Failure { kind, message } => (*kind, failure_message(*kind, message)),
        Outcome::Missing => (FailureKind::Error, "the executor reported neither a result nor a failure".into()),
    };
    let timed_out = kind == FailureKind::Timeout;
    planner.end_attempt(AttemptEnd {
        task_id: id,
        attempt: item.attempt,
        status: if timed_out { AttemptStatus::TimedOut } else { AttemptStatus::Failed },
        error: Some(message.clone()),
        duration_ms,
    });
    let how = match kind {
        FailureKind::Timeout => Failed::Timeout,
        FailureKind::Permanent => Failed::Permanent,
        FailureKind::Error | FailureKind::Panic | FailureKind::Rejected => Failed::Error,
    };
    if fail(planner, id, how, message, backoff) {
        Verdict::Retried
    } else if timed_out {
        Verdict::TimedOut
    } else {
        Verdict::Failed
    }
}

/// Checks a reported result: at most `limits.max_bytes`, nested at most `limits.max_depth` levels,
/// UTF-8 JSON, no NUL in any string. Returns the JSON text to store.
fn check_result(bytes: &[u8], limits: ResultLimits) -> Result<String, String> {
    if bytes.len() > limits.max_bytes {
        return Err(format!("result: {} bytes exceeds limits.max_result_bytes ({})", bytes.len(), limits.max_bytes));
    }
    // Counted on the text, before parsing: serde_json refuses more than 128 levels with an error that
    // would not name the limit.
    let depth = text_depth(bytes);
    if depth > limits.max_depth {
        return Err(format!(
            "result: nested {depth} levels deep, more than limits.max_json_depth ({})",
            limits.max_depth
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("result: not valid JSON: {e}"))?;
    if contains_nul(&value) {
        return Err("result: strings must not contain NUL (\\u0000), which PostgreSQL cannot store".into());
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("result: not valid UTF-8: {e}"))
}

/// The deepest nesting of `[`/`{` outside strings in JSON text; for valid JSON it equals
/// `legion_common::settings::json_depth` of the parsed value. Bytes of multi-byte UTF-8 characters never
/// equal the ASCII bytes it looks for, so it works on bytes.
pub fn text_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The error text stored for a failure: the executor's message, or a default per kind; NUL removed.
fn failure_message(kind: FailureKind, message: &str) -> String {
    let message = message.replace('\0', "");
    if !message.trim().is_empty() {
        return message;
    }
    match kind {
        FailureKind::Error => "the function failed".into(),
        FailureKind::Timeout => "the attempt ran past its timeout".into(),
        FailureKind::Panic => "the runner panicked".into(),
        FailureKind::Rejected => "the executor rejected the task".into(),
        FailureKind::Permanent => "the function failed permanently".into(),
    }
}

#[cfg(test)]
#[path = "complete_tests.rs"]
mod tests;
