//! `CompleteTask` decisions (docs/architecture.md, delivery protocol step 5).
//!
//! A completion is recorded only if `(task_id, attempt)` is the task's current attempt and the task is
//! `running`; anything else is stale and rejected harmlessly (`accepted = false`). A result larger than
//! `limits.max_result_bytes`, nested deeper than `limits.max_json_depth` (protobuf clients could not
//! decode the task any more), or not valid JSON, fails the attempt with that reason. A failure counts
//! against `max_attempts`: while `failures < max_attempts` the task gets a new dispatch and an outbox
//! row in the same transaction; after the last attempt it ends `timed_out` (for a timeout) or `failed`.

use legion_common::TaskStatus;
use uuid::Uuid;

use super::{AttemptEnd, AttemptStatus, Plan, Planner, TaskState, redispatch};
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
    /// Recorded: the attempt failed and the task will run again.
    Retried,
    /// Recorded: the last attempt failed; the task is `failed`.
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

/// Decides every completion of a batch, in order. `states` are the locked rows of the batch's tasks.
pub fn plan(states: Vec<TaskState>, items: &[CompleteItem], limits: ResultLimits) -> (Vec<Verdict>, Plan) {
    let mut planner = Planner::new(states);
    let verdicts = items.iter().map(|item| decide(&mut planner, item, limits)).collect();
    (verdicts, planner.finish())
}

fn decide(planner: &mut Planner, item: &CompleteItem, limits: ResultLimits) -> Verdict {
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
    let mut verdict = Verdict::Retried;
    planner.update(id, |state, update| {
        state.failures += 1;
        update.error = Some(Some(message));
        if state.failures < state.max_attempts {
            redispatch(state, update);
        } else {
            state.status = if timed_out { TaskStatus::TimedOut } else { TaskStatus::Failed };
            update.finished = true;
            verdict = if timed_out { Verdict::TimedOut } else { Verdict::Failed };
        }
    });
    verdict
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::test_support::state;

    fn running(max_attempts: u32, failures: u32) -> TaskState {
        TaskState {
            attempt: failures + 1,
            failures,
            max_attempts,
            node: Some("n1".into()),
            ..state(TaskStatus::Running)
        }
    }

    fn done(s: &TaskState, outcome: Outcome) -> CompleteItem {
        CompleteItem { task_id: s.id.to_string(), attempt: s.attempt, outcome, duration_ms: 7 }
    }

    fn fail(kind: FailureKind) -> Outcome {
        Outcome::Failure { kind, message: "boom".into() }
    }

    fn limits(max_bytes: usize) -> ResultLimits {
        ResultLimits { max_bytes, max_depth: 32 }
    }

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn a_result_succeeds_the_task() {
        let s = running(1, 0);
        let (verdicts, plan) =
            plan(vec![s.clone()], &[done(&s, Outcome::Result(br#"{"ok":true}"#.to_vec()))], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Succeeded]);
        let update = &plan.updates[0];
        assert_eq!(update.state.status, TaskStatus::Succeeded);
        assert_eq!(update.result.as_deref(), Some(r#"{"ok":true}"#));
        assert!(update.finished && !update.redispatch);
        assert_eq!(update.error, Some(None));
        assert_eq!(plan.ended_attempts[0].status, AttemptStatus::Succeeded);
        assert_eq!(plan.ended_attempts[0].duration_ms, Some(7));
    }

    #[test]
    fn stale_completions_change_nothing() {
        let s = running(1, 0);
        let cases = [
            (TaskState { status: TaskStatus::Cancelled, ..s.clone() }, s.attempt, "task is cancelled"),
            (TaskState { status: TaskStatus::Succeeded, ..s.clone() }, s.attempt, "task is succeeded"),
            (TaskState { status: TaskStatus::Queued, ..s.clone() }, s.attempt, "task is queued"),
            (s.clone(), s.attempt + 1, "stale attempt 2 (current 1)"),
        ];
        for (st, attempt, reason) in cases {
            let item = CompleteItem { attempt, ..done(&st, Outcome::Result(b"1".to_vec())) };
            let (verdicts, plan) = plan(vec![st], &[item], limits(1024));
            assert_eq!(verdicts, vec![Verdict::Stale(reason.into())]);
            assert_eq!(plan, Plan::default());
        }
        let unknown = CompleteItem { task_id: Uuid::now_v7().to_string(), ..done(&s, Outcome::Missing) };
        assert_eq!(plan(vec![], &[unknown], limits(1)).0, vec![Verdict::Stale("unknown task".into())]);
    }

    #[test]
    fn a_failure_is_retried_while_attempts_remain() {
        let s = running(3, 1);
        let (verdicts, plan) = plan(vec![s.clone()], &[done(&s, fail(FailureKind::Error))], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Retried]);
        let update = &plan.updates[0];
        assert_eq!((update.state.status, update.state.failures, update.state.dispatch), (TaskStatus::Pending, 2, 2));
        assert!(update.redispatch && !update.finished);
        assert_eq!(update.error, Some(Some("boom".into())));
        assert_eq!(plan.ended_attempts[0].status, AttemptStatus::Failed);
    }

    #[test]
    fn the_last_failure_ends_the_task() {
        let s = running(2, 1);
        let (verdicts, plan) = plan(vec![s.clone()], &[done(&s, fail(FailureKind::Panic))], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Failed]);
        assert_eq!(plan.updates[0].state.status, TaskStatus::Failed);
        assert!(plan.updates[0].finished && !plan.updates[0].redispatch);
    }

    #[test]
    fn a_timeout_on_the_last_attempt_is_timed_out() {
        let s = running(1, 0);
        let (verdicts, plan) = plan(vec![s.clone()], &[done(&s, fail(FailureKind::Timeout))], limits(1024));
        assert_eq!(verdicts, vec![Verdict::TimedOut]);
        assert_eq!(plan.updates[0].state.status, TaskStatus::TimedOut);
        assert_eq!(plan.ended_attempts[0].status, AttemptStatus::TimedOut);
        // An earlier timeout is retried; its attempt is still recorded as timed out.
        let s = running(2, 0);
        let (verdicts, plan) = super::plan(vec![s.clone()], &[done(&s, fail(FailureKind::Timeout))], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Retried]);
        assert_eq!(plan.ended_attempts[0].status, AttemptStatus::TimedOut);
    }

    #[test]
    fn an_oversize_or_invalid_result_fails_the_attempt() {
        let s = running(1, 0);
        let (verdicts, plan) = plan(vec![s.clone()], &[done(&s, Outcome::Result(vec![b'1'; 11]))], limits(10));
        assert_eq!(verdicts, vec![Verdict::Failed]);
        assert_eq!(plan.updates[0].error, Some(Some("result: 11 bytes exceeds limits.max_result_bytes (10)".into())));
        for bad in [&b"{nope"[..], br#"{"a":"\u0000"}"#] {
            let (verdicts, plan) =
                super::plan(vec![s.clone()], &[done(&s, Outcome::Result(bad.to_vec()))], limits(1024));
            assert_eq!(verdicts, vec![Verdict::Failed]);
            assert!(matches!(&plan.updates[0].error, Some(Some(e)) if e.starts_with("result: ")));
        }
    }

    #[test]
    fn a_result_nested_deeper_than_the_limit_fails_the_attempt() {
        // An http.request.get of a 40-level JSON document: storing it made every task list undecodable.
        let s = running(1, 0);
        let (verdicts, plan) =
            plan(vec![s.clone()], &[done(&s, Outcome::Result(nested(40).into_bytes()))], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Failed]);
        assert_eq!(
            plan.updates[0].error,
            Some(Some("result: nested 40 levels deep, more than limits.max_json_depth (32)".into()))
        );
        assert_eq!(plan.updates[0].result, None);
        // Deeper than serde_json's own recursion limit (128): still named by the setting.
        let (_, plan) =
            super::plan(vec![s.clone()], &[done(&s, Outcome::Result(nested(200).into_bytes()))], limits(4096));
        assert!(matches!(&plan.updates[0].error, Some(Some(e)) if e.contains("limits.max_json_depth")));
        // Exactly at the limit is fine.
        let (verdicts, _) =
            super::plan(vec![s.clone()], &[done(&s, Outcome::Result(nested(32).into_bytes()))], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Succeeded]);
    }

    #[test]
    fn text_depth_ignores_brackets_in_strings() {
        assert_eq!(text_depth(b"1"), 0);
        assert_eq!(text_depth(br#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(text_depth(br#"{"a":"[[[{{{"}"#), 1);
        assert_eq!(text_depth(br#"["\"", "\\", "[", {}]"#), 2);
        assert_eq!(text_depth("[\"é[\"]".as_bytes()), 1);
        for value in [serde_json::json!({"a": [1, {"b": []}]}), serde_json::json!([[[]], {"x": {"y": "]]"}}])] {
            let text = value.to_string();
            assert_eq!(text_depth(text.as_bytes()), legion_common::settings::json_depth(&value), "{text}");
        }
    }

    #[test]
    fn a_missing_outcome_or_empty_message_still_explains_itself() {
        let s = running(1, 0);
        let (_, plan) = plan(vec![s.clone()], &[done(&s, Outcome::Missing)], limits(1024));
        assert!(matches!(&plan.updates[0].error, Some(Some(e)) if e.contains("neither")));
        let item = done(&s, Outcome::Failure { kind: FailureKind::Rejected, message: " \0".into() });
        let (_, plan) = super::plan(vec![s], &[item], limits(1024));
        assert_eq!(plan.updates[0].error, Some(Some("the executor rejected the task".into())));
    }

    #[test]
    fn a_second_completion_in_the_same_batch_is_stale() {
        let s = running(1, 0);
        let ok = done(&s, Outcome::Result(b"1".to_vec()));
        let (verdicts, plan) = plan(vec![s], &[ok.clone(), ok], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Succeeded, Verdict::Stale("task is succeeded".into())]);
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(plan.ended_attempts.len(), 1);
    }
}
