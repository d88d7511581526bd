//! Failures without loss (issue 6, DESIGN.md section 5), end to end with the real processes: an
//! executor killed, frozen past its lease or drained; the control plane restarted; priorities under a
//! backlog; cancellation; idempotent submits; oversize results. Every test checks at the end, in
//! PostgreSQL, that each task ended and that each succeeded task has exactly one `succeeded` attempt
//! row ([`legion_tests::ledger`]); chain tests also that each follow-up fired once.
//!
//! Executors that the control plane must tell apart run under their own node names
//! ([`legion_tests::nodes`]). Tests that stop PostgreSQL or RabbitMQ live in `service_restarts`.

mod cancel;
mod control_plane;
mod executors;
mod frozen;
mod idempotency;
mod limits;
mod priority;
mod replicas;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use legion_proto::v1::{CancelTaskRequest, SubmitTaskRequest, Task, TaskStatus};
use legion_tests::status::from_wire;
use legion_tests::{TestEnv, assert_eventually, grpc, ledger};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{LONG, describe, result_json};

/// Name of the second node in tests with two executors.
pub const OTHER_NODE: &str = "e2e-exec-b";

/// A submit of `function` with `args`, defaults for everything else.
pub fn request(function: &str, args: Value) -> SubmitTaskRequest {
    SubmitTaskRequest {
        function: function.to_owned(),
        args: Some(legion_proto::json_to_value(&args)),
        ..SubmitTaskRequest::default()
    }
}

/// A `core.util.sleep` of `ms` milliseconds.
pub fn sleep(ms: u64) -> SubmitTaskRequest {
    request("core.util.sleep", json!({"ms": ms}))
}

/// Submits every request, `parallel` at a time, and returns the task ids in request order.
pub async fn submit_all(env: &TestEnv, requests: Vec<SubmitTaskRequest>, parallel: usize) -> Vec<String> {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel.max(1) {
        let (requests, next, mut client) = (requests.clone(), next.clone(), env.tasks());
        workers.spawn(async move {
            let mut submitted = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(request) = requests.get(i) else { return submitted };
                let response = client.submit_task(grpc::request(request.clone())).await;
                let task = response.unwrap_or_else(|s| panic!("submit {i}: {s}")).into_inner().task;
                submitted.push((i, task.expect("SubmitTaskResponse carries the task").id));
            }
        });
    }
    let mut ids = vec![String::new(); requests.len()];
    while let Some(done) = workers.join_next().await {
        for (i, id) in done.expect("submit worker") {
            ids[i] = id;
        }
    }
    ids
}

/// Waits until the database holds at least `expected` tasks and none is unfinished.
pub async fn wait_all_ended(pool: &PgPool, expected: i64, timeout: Duration) {
    assert_eventually!(timeout, &format!("{expected} tasks, all ended"), || async {
        match ledger::counts(pool).await? {
            (total, 0) if total >= expected => Ok(()),
            (total, unfinished) => {
                Err(format!("{total} tasks, {unfinished} unfinished: {:?}", ledger::by_status(pool).await?))
            }
        }
    });
}

/// Asserts [`ledger::check_exactly_once`] over every task of the test's database, and that no
/// follow-up fired twice.
pub async fn assert_exactly_once(pool: &PgPool) {
    let violations = ledger::check_exactly_once(pool).await.expect("read the ledger");
    assert!(violations.is_empty(), "exactly-once violations:\n{}", violations.join("\n"));
    let repeated = ledger::repeated_children(pool).await.expect("read children");
    assert!(repeated.is_empty(), "follow-ups fired more than once (parent, children): {repeated:?}");
}

/// The number of tasks with `status` now.
pub async fn count_status(pool: &PgPool, status: &str) -> i64 {
    ledger::by_status(pool).await.expect("count by status").get(status).copied().unwrap_or(0)
}

/// Cancels task `id` (`what` names it in messages) and asserts that the answer is `cancelled`.
pub async fn cancel(env: &TestEnv, what: &str, id: &str) -> Task {
    let cancelled = env
        .tasks()
        .cancel_task(grpc::request(CancelTaskRequest { id: id.to_owned() }))
        .await
        .unwrap_or_else(|s| panic!("CancelTask {what}: {s}"))
        .into_inner();
    assert_eq!(from_wire(cancelled.status), TaskStatus::Cancelled, "{what}: {}", describe(&cancelled));
    cancelled
}

/// Asserts that `failed` ended `failed` for its oversize result: the error names
/// `limits.max_result_bytes` and no result is stored.
pub fn assert_failed_for_its_size(failed: &Task) {
    assert_eq!(from_wire(failed.status), TaskStatus::Failed, "{}", describe(failed));
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("limits.max_result_bytes"), "the error names the limit: {error:?}");
    assert_eq!(result_json(failed), Value::Null, "no result stored: {failed:?}");
}

/// Waits until each task of `ids` from index `from` on ends, and asserts that it succeeded next to
/// the oversize one.
pub async fn assert_the_rest_succeed(env: &TestEnv, ids: &[String], from: usize) {
    for (i, id) in ids.iter().enumerate().skip(from) {
        let task = env.wait_terminal(id, LONG).await.expect("task ends");
        assert_eq!(
            from_wire(task.status),
            TaskStatus::Succeeded,
            "task {i} next to the oversize one: {}",
            describe(&task)
        );
    }
}
