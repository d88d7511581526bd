use super::*;
use crate::delivery::retry::RetryPolicy;
use crate::delivery::test_support::{backoff, state};

/// [`super::plan`] with the default policy (1000 ms, ×2, jitter 0.2) and every draw 0.5.
fn run(states: Vec<TaskState>, items: &[CompleteItem], limits: ResultLimits) -> (Vec<Verdict>, Plan) {
    let mut draw = || 0.5;
    super::plan(states, items, limits, &mut backoff(&mut draw))
}

fn running(max_attempts: u32, failures: u32) -> TaskState {
    TaskState { attempt: failures + 1, failures, max_attempts, node: Some("n1".into()), ..state(TaskStatus::Running) }
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
    let (verdicts, plan) = run(vec![s.clone()], &[done(&s, Outcome::Result(br#"{"ok":true}"#.to_vec()))], limits(1024));
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
        let (verdicts, plan) = run(vec![st], &[item], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Stale(reason.into())]);
        assert_eq!(plan, Plan::default());
    }
    let unknown = CompleteItem { task_id: Uuid::now_v7().to_string(), ..done(&s, Outcome::Missing) };
    assert_eq!(run(vec![], &[unknown], limits(1)).0, vec![Verdict::Stale("unknown task".into())]);
}

#[test]
fn a_failure_waits_out_its_backoff_while_attempts_remain() {
    let s = running(3, 1);
    let (verdicts, plan) = run(vec![s.clone()], &[done(&s, fail(FailureKind::Error))], limits(1024));
    assert_eq!(verdicts, vec![Verdict::Retried]);
    let update = &plan.updates[0];
    // Second failure: 1000 · 2 · (1 − 0.2 · 0.5) = 1800 ms, held in PostgreSQL; no dispatch yet.
    assert_eq!((update.state.status, update.state.failures, update.state.dispatch), (TaskStatus::Scheduled, 2, 1));
    assert_eq!(update.not_before_ms, Some(1800));
    assert!(!update.redispatch && !update.finished);
    assert_eq!(update.error, Some(Some("boom".into())));
    assert_eq!(plan.ended_attempts[0].status, AttemptStatus::Failed);
    assert_eq!(plan.changes[0].status, TaskStatus::Scheduled);
}

#[test]
fn the_task_policy_and_the_draw_decide_the_wait() {
    let own = RetryPolicy { initial_backoff_ms: 100, multiplier: 3.0, max_backoff_ms: 1000, jitter: 1.0 };
    let s = TaskState { retry: Some(own), ..running(5, 2) };
    let mut draws = vec![0.25, 0.0].into_iter();
    let mut draw = move || draws.next().unwrap_or(0.0);
    let (_, plan) =
        super::plan(vec![s.clone()], &[done(&s, fail(FailureKind::Panic))], limits(1024), &mut backoff(&mut draw));
    // Third failure: min(1000, 100 · 3²) · (1 − 1 · 0.25) = 675 ms.
    assert_eq!(plan.updates[0].not_before_ms, Some(675));
}

#[test]
fn a_zero_wait_redispatches_at_once() {
    let zero = RetryPolicy { initial_backoff_ms: 0, multiplier: 2.0, max_backoff_ms: 0, jitter: 0.0 };
    let s = TaskState { retry: Some(zero), ..running(3, 1) };
    let (verdicts, plan) = run(vec![s.clone()], &[done(&s, fail(FailureKind::Rejected))], limits(1024));
    assert_eq!(verdicts, vec![Verdict::Retried]);
    let update = &plan.updates[0];
    assert_eq!((update.state.status, update.state.failures, update.state.dispatch), (TaskStatus::Pending, 2, 2));
    assert!(update.redispatch && update.not_before_ms.is_none());
}

#[test]
fn a_permanent_failure_ends_the_task_whatever_attempts_remain() {
    let s = running(5, 0);
    let item = done(&s, Outcome::Failure { kind: FailureKind::Permanent, message: "bad url".into() });
    let (verdicts, plan) = run(vec![s.clone()], &[item], limits(1024));
    assert_eq!(verdicts, vec![Verdict::Failed]);
    let update = &plan.updates[0];
    assert_eq!((update.state.status, update.state.failures), (TaskStatus::Failed, 1));
    assert!(update.finished && !update.redispatch && update.not_before_ms.is_none());
    assert_eq!(update.error, Some(Some("bad url".into())));
    assert_eq!(plan.ended_attempts[0].status, AttemptStatus::Failed);
    assert_eq!(plan.ended_attempts[0].error.as_deref(), Some("bad url"));
    let item = done(&s, Outcome::Failure { kind: FailureKind::Permanent, message: String::new() });
    let (_, plan) = run(vec![s], &[item], limits(1024));
    assert_eq!(plan.updates[0].error, Some(Some("the function failed permanently".into())));
}

#[test]
fn the_last_failure_ends_the_task() {
    let s = running(2, 1);
    let (verdicts, plan) = run(vec![s.clone()], &[done(&s, fail(FailureKind::Panic))], limits(1024));
    assert_eq!(verdicts, vec![Verdict::Failed]);
    assert_eq!(plan.updates[0].state.status, TaskStatus::Failed);
    assert!(plan.updates[0].finished && !plan.updates[0].redispatch);
}

#[test]
fn a_timeout_on_the_last_attempt_is_timed_out() {
    let s = running(1, 0);
    let (verdicts, plan) = run(vec![s.clone()], &[done(&s, fail(FailureKind::Timeout))], limits(1024));
    assert_eq!(verdicts, vec![Verdict::TimedOut]);
    assert_eq!(plan.updates[0].state.status, TaskStatus::TimedOut);
    assert_eq!(plan.ended_attempts[0].status, AttemptStatus::TimedOut);
    // An earlier timeout is retried; its attempt is still recorded as timed out.
    let s = running(2, 0);
    let (verdicts, plan) = run(vec![s.clone()], &[done(&s, fail(FailureKind::Timeout))], limits(1024));
    assert_eq!(verdicts, vec![Verdict::Retried]);
    assert_eq!(plan.ended_attempts[0].status, AttemptStatus::TimedOut);
}

#[test]
fn an_oversize_or_invalid_result_fails_the_attempt() {
    let s = running(1, 0);
    let (verdicts, plan) = run(vec![s.clone()], &[done(&s, Outcome::Result(vec![b'1'; 11]))], limits(10));
    assert_eq!(verdicts, vec![Verdict::Failed]);
    assert_eq!(plan.updates[0].error, Some(Some("result: 11 bytes exceeds limits.max_result_bytes (10)".into())));
    for bad in [&b"{nope"[..], br#"{"a":"\u0000"}"#] {
        let (verdicts, plan) = run(vec![s.clone()], &[done(&s, Outcome::Result(bad.to_vec()))], limits(1024));
        assert_eq!(verdicts, vec![Verdict::Failed]);
        assert!(matches!(&plan.updates[0].error, Some(Some(e)) if e.starts_with("result: ")));
    }
}

#[test]
fn a_result_nested_deeper_than_the_limit_fails_the_attempt() {
    // An http.request.get of a 40-level JSON document: storing it made every task list undecodable.
    let s = running(1, 0);
    let (verdicts, plan) = run(vec![s.clone()], &[done(&s, Outcome::Result(nested(40).into_bytes()))], limits(1024));
    assert_eq!(verdicts, vec![Verdict::Failed]);
    assert_eq!(
        plan.updates[0].error,
        Some(Some("result: nested 40 levels deep, more than limits.max_json_depth (32)".into()))
    );
    assert_eq!(plan.updates[0].result, None);
    // Deeper than serde_json's own recursion limit (128): still named by the setting.
    let (_, plan) = run(vec![s.clone()], &[done(&s, Outcome::Result(nested(200).into_bytes()))], limits(4096));
    assert!(matches!(&plan.updates[0].error, Some(Some(e)) if e.contains("limits.max_json_depth")));
    // Exactly at the limit is fine.
    let (verdicts, _) = run(vec![s.clone()], &[done(&s, Outcome::Result(nested(32).into_bytes()))], limits(1024));
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
    let (_, plan) = run(vec![s.clone()], &[done(&s, Outcome::Missing)], limits(1024));
    assert!(matches!(&plan.updates[0].error, Some(Some(e)) if e.contains("neither")));
    let item = done(&s, Outcome::Failure { kind: FailureKind::Rejected, message: " \0".into() });
    let (_, plan) = run(vec![s], &[item], limits(1024));
    assert_eq!(plan.updates[0].error, Some(Some("the executor rejected the task".into())));
}

#[test]
fn a_second_completion_in_the_same_batch_is_stale() {
    let s = running(1, 0);
    let ok = done(&s, Outcome::Result(b"1".to_vec()));
    let (verdicts, plan) = run(vec![s], &[ok.clone(), ok], limits(1024));
    assert_eq!(verdicts, vec![Verdict::Succeeded, Verdict::Stale("task is succeeded".into())]);
    assert_eq!(plan.updates.len(), 1);
    assert_eq!(plan.ended_attempts.len(), 1);
}
