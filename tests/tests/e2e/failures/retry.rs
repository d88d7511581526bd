//! Retries with backoff (README "Tasks", `max_attempts` and `retry`; docs/architecture.md, "Delivery
//! protocol" step 5): a `core.util.fail` with 3 attempts and the policy {initial 500 ms, multiplier 2,
//! jitter 0} fails three times, waits out 500 ms and then 1 s as `scheduled` with a `not_before`
//! between its attempts, and ends `failed`. A wait is held in PostgreSQL, not in the broker: while a
//! task waits a long backoff, every queue is empty, and a cancel ends it. Invalid args fail as
//! permanent: the task ends `failed` after one attempt although it had three.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use legion_proto::v1::{RetryPolicy, SubmitTaskRequest, TaskStatus};
use legion_tests::env::NODE_NAME;
use legion_tests::nodes::NodeSpec;
use legion_tests::status::from_wire;
use legion_tests::{TestEnv, assert_eventually, ledger};
use serde_json::json;
use sqlx::PgPool;

use super::{timed_attempts, wait_queues_empty, wait_row_status};
use crate::faults::{assert_exactly_once, cancel, request, wait_all_ended};
use crate::{LONG, describe};

const INITIAL_BACKOFF_MS: u64 = 500;
const MULTIPLIER: f64 = 2.0;
/// PostgreSQL's clock decides both the wait and the start, but `not_before` comes from the
/// completion's transaction time while the attempt's `finished_at` may be read a little later in it.
const CLOCK_TOLERANCE_US: i64 = 50_000;

/// `(status, attempt, not_before set)` of a task row.
type Phase = (String, i32, bool);

async fn phase(pool: &PgPool, id: &str) -> Result<Phase, String> {
    sqlx::query_as("SELECT status, attempt, not_before IS NOT NULL FROM tasks WHERE id::text = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(|e| format!("read task {id}: {e}"))
}

/// Polls the task's row every 10 ms until it is terminal, and returns every distinct phase seen, in
/// order.
async fn watch_phases(pool: &PgPool, id: &str) -> Vec<Phase> {
    let deadline = Instant::now() + LONG;
    let mut seen: Vec<Phase> = Vec::new();
    loop {
        let now = phase(pool, id).await.expect("task row");
        let terminal = ledger::TERMINAL.contains(&now.0.as_str());
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if terminal {
            return seen;
        }
        assert!(Instant::now() < deadline, "task {id} did not end; phases {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_wait_out_their_backoff_as_scheduled_and_permanent_errors_are_not_retried() {
    let env = TestEnv::start().await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let node = env.start_node(&NodeSpec::default()).await.expect("node");

    let policy = RetryPolicy {
        initial_backoff_ms: Some(INITIAL_BACKOFF_MS),
        multiplier: Some(MULTIPLIER),
        max_backoff_ms: None,
        jitter: Some(0.0),
    };
    let failing = env
        .submit_request(SubmitTaskRequest {
            max_attempts: Some(3),
            retry: Some(policy),
            ..request("core.util.fail", json!({"message": "boom"}))
        })
        .await
        .expect("submit the failing task");
    let given = failing.retry.expect("the task shows its whole policy");
    assert_eq!(
        (given.initial_backoff_ms, given.multiplier, given.jitter),
        (Some(INITIAL_BACKOFF_MS), Some(MULTIPLIER), Some(0.0)),
        "{given:?}"
    );
    assert!(given.max_backoff_ms.is_some_and(|m| m >= 2 * INITIAL_BACKOFF_MS), "the setting fills in: {given:?}");

    let phases = watch_phases(&pool, &failing.id).await;
    eprintln!("phases of the failing task: {phases:?}");
    for attempt in [1, 2] {
        assert!(
            phases.contains(&("scheduled".to_owned(), attempt, true)),
            "after failed attempt {attempt} the task waits scheduled with a not_before: {phases:?}"
        );
    }
    let last = phases.last().map(|(status, attempt, _)| (status.as_str(), *attempt));
    assert_eq!(last, Some(("failed", 3)), "{phases:?}");
    let done = env.get_task(&failing.id).await.expect("GetTask");
    assert_eq!(from_wire(done.status), TaskStatus::Failed, "{}", describe(&done));
    assert!(done.error.as_deref().unwrap_or_default().contains("boom"), "{}", describe(&done));

    let attempts = timed_attempts(&pool, &failing.id).await;
    let shape: Vec<(i32, &str, &str)> =
        attempts.iter().map(|a| (a.attempt, a.status.as_str(), a.node.as_str())).collect();
    assert_eq!(shape, vec![(1, "failed", NODE_NAME), (2, "failed", NODE_NAME), (3, "failed", NODE_NAME)]);
    for (pair, backoff_ms) in attempts.windows(2).zip([INITIAL_BACKOFF_MS, 2 * INITIAL_BACKOFF_MS]) {
        let (before, after) = (&pair[0], &pair[1]);
        let failed_at = before.finished_us.expect("the failed attempt ended");
        let waited_us = after.started_us - failed_at;
        let starts_us = after.started_us - before.started_us;
        eprintln!(
            "attempt {} started {} ms after attempt {} failed ({} ms after it started)",
            after.attempt,
            waited_us / 1000,
            before.attempt,
            starts_us / 1000
        );
        let backoff_us = i64::try_from(backoff_ms).expect("small") * 1000;
        assert!(
            waited_us >= backoff_us - CLOCK_TOLERANCE_US,
            "attempt {} started {waited_us} µs after attempt {} failed, before its {backoff_ms} ms backoff",
            after.attempt,
            before.attempt
        );
        assert!(starts_us >= backoff_us - CLOCK_TOLERANCE_US, "start times spaced by the backoff: {attempts:?}");
    }

    // A long backoff is held in PostgreSQL: the task waits scheduled, the broker holds nothing, and a
    // cancel ends it.
    let waiting = env
        .submit_request(SubmitTaskRequest {
            max_attempts: Some(2),
            retry: Some(RetryPolicy {
                initial_backoff_ms: Some(600_000),
                max_backoff_ms: Some(600_000),
                ..RetryPolicy::default()
            }),
            ..request("core.util.fail", json!({"message": "later"}))
        })
        .await
        .expect("submit the waiting task");
    let row = wait_row_status(&pool, &waiting.id, "scheduled").await;
    assert_eq!(row.attempt, 1, "{row:?}");
    wait_queues_empty(&env, "no message waits in the broker while the task waits its backoff").await;
    cancel(&env, "the waiting task", &waiting.id).await;

    // Invalid args are permanent: one attempt, whatever max_attempts says.
    let permanent = env
        .submit_request(SubmitTaskRequest {
            max_attempts: Some(3),
            retry: Some(RetryPolicy { initial_backoff_ms: Some(0), ..RetryPolicy::default() }),
            ..request("core.util.sleep", json!({"ms": "soon"}))
        })
        .await
        .expect("submit the permanent failure");
    let done = env.wait_terminal(&permanent.id, LONG).await.expect("the permanent failure ends");
    assert_eq!(from_wire(done.status), TaskStatus::Failed, "{}", describe(&done));
    assert!(done.error.as_deref().unwrap_or_default().contains("args.ms"), "the error names the arg: {done:?}");
    assert_eq!((done.attempt, done.max_attempts), (1, 3), "{}", describe(&done));
    let attempts = timed_attempts(&pool, &permanent.id).await;
    let shape: Vec<(i32, &str)> = attempts.iter().map(|a| (a.attempt, a.status.as_str())).collect();
    assert_eq!(shape, vec![(1, "failed")], "{attempts:?}");
    assert_eventually!(LONG, "the executor counts one permanent failure", || async {
        let permanent = node.metric("legion_executor_runs_total", &[("outcome", "permanent")]).await?;
        if (permanent - 1.0).abs() < f64::EPSILON { Ok(()) } else { Err(format!("{permanent} permanent runs")) }
    });
    // It stays failed: no retry was scheduled.
    let row = ledger::task(&pool, &permanent.id).await.expect("row");
    assert_eq!((row.status.as_str(), row.attempt), ("failed", 1), "{row:?}");

    let counts: BTreeMap<String, i64> = ledger::by_status(&pool).await.expect("by status");
    assert_eq!(counts.get("failed"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("cancelled"), Some(&1), "{counts:?}");
    wait_all_ended(&pool, 3, LONG).await;
    assert_exactly_once(&pool).await;
}
