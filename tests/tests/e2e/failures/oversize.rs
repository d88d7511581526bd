//! Oversize results from `fault.result.oversize` (README "Limits", `limits.max_result_bytes`;
//! executor/README.md, "Fault injection"): the attempt fails with an error naming the setting, the
//! tasks next to it succeed, a result under the limit from the same function succeeds, and a task of
//! that kind waiting (`scheduled`) for its retry can be cancelled and stays cancelled. Enforced by the
//! executor, and by the control plane for an executor configured more loosely.

use std::time::Duration;

use legion_proto::v1::{RetryPolicy, SubmitTaskRequest, TaskStatus};
use legion_tests::nodes::{FAULTS_BINARY, NodeSpec};
use legion_tests::status::from_wire;
use legion_tests::{TestEnv, ledger, wait};
use serde_json::{Value, json};

use super::{timed_attempts, wait_row_status};
use crate::faults::{
    assert_exactly_once, assert_failed_for_its_size, assert_the_rest_succeed, cancel, request, sleep, submit_all,
    wait_all_ended,
};
use crate::{LONG, describe, result_json};

/// `limits.max_result_bytes` of the control plane (and of the strict executor).
const MAX_RESULT_BYTES: u64 = 2048;
/// A result the limit allows: a JSON string of 98 letters and its quotes.
const SMALL_BYTES: u64 = 100;

/// The args of an oversize call: the function's default (`limits.max_result_bytes + 1` of the executor)
/// when the executor enforces the limit, else twice the control plane's limit.
fn oversize_args(executor_strict: bool) -> Value {
    if executor_strict { json!({}) } else { json!({"bytes": 2 * MAX_RESULT_BYTES}) }
}

async fn oversize_results_fail_alone(executor_strict: bool) {
    let limits = json!({"limits": {"max_result_bytes": MAX_RESULT_BYTES}});
    let env = TestEnv::start_with_settings(limits.clone()).await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let extra = if executor_strict { limits } else { Value::Null };
    let node = env.start_node_from(FAULTS_BINARY, &NodeSpec { extra, ..NodeSpec::default() }).await.expect("node");

    let mut requests = vec![request("fault.result.oversize", oversize_args(executor_strict))];
    requests.push(request("fault.result.oversize", json!({"bytes": SMALL_BYTES})));
    requests.extend((0..8).map(|i| request("core.util.echo", json!({"i": i}))));
    requests.extend((0..4).map(|_| sleep(300)));
    let ids = submit_all(&env, requests, 4).await;
    // Three attempts, a long backoff: after its first failure it waits `scheduled`, to be cancelled.
    let waiting = env
        .submit_request(SubmitTaskRequest {
            max_attempts: Some(3),
            retry: Some(RetryPolicy {
                initial_backoff_ms: Some(600_000),
                max_backoff_ms: Some(600_000),
                ..RetryPolicy::default()
            }),
            ..request("fault.result.oversize", oversize_args(executor_strict))
        })
        .await
        .expect("submit the retrying oversize task");

    let failed = env.wait_terminal(&ids[0], LONG).await.expect("the oversize task ends");
    assert_failed_for_its_size(&failed);
    let attempts = timed_attempts(&pool, &failed.id).await;
    let shape: Vec<(i32, &str)> = attempts.iter().map(|a| (a.attempt, a.status.as_str())).collect();
    assert_eq!(shape, vec![(1, "failed")], "{attempts:?}");
    assert!(attempts[0].error.as_deref().unwrap_or_default().contains("limits.max_result_bytes"), "{attempts:?}");

    let small = env.wait_terminal(&ids[1], LONG).await.expect("the small result ends");
    assert_eq!(from_wire(small.status), TaskStatus::Succeeded, "{}", describe(&small));
    let expected_len = usize::try_from(SMALL_BYTES - 2).expect("small");
    assert_eq!(result_json(&small), json!("x".repeat(expected_len)));
    assert_the_rest_succeed(&env, &ids, 2).await;

    // The retrying one failed its first attempt the same way and waits for its retry; cancel it there.
    let row = wait_row_status(&pool, &waiting.id, "scheduled").await;
    assert_eq!(row.attempt, 1, "{row:?}");
    assert!(row.error.as_deref().unwrap_or_default().contains("limits.max_result_bytes"), "{row:?}");
    cancel(&env, "the waiting task", &waiting.id).await;
    wait::holds_for("the cancelled task stays cancelled and is not retried", Duration::from_secs(2), || async {
        let now = ledger::task(&pool, &waiting.id).await.map_err(|e| e.to_string())?;
        match (now.status.as_str(), now.attempt, now.has_result) {
            ("cancelled", 1, false) => Ok(()),
            _ => Err(format!("{now:?}")),
        }
    })
    .await
    .expect("cancelled for good");
    let attempts = timed_attempts(&pool, &waiting.id).await;
    let shape: Vec<(i32, &str)> = attempts.iter().map(|a| (a.attempt, a.status.as_str())).collect();
    assert_eq!(shape, vec![(1, "failed")], "{attempts:?}");

    if executor_strict {
        let failed_runs = node.metric("legion_executor_runs_total", &[("outcome", "failed")]).await.expect("metrics");
        assert!(failed_runs >= 2.0, "the executor failed both oversize attempts itself: {failed_runs}");
    }
    wait_all_ended(&pool, 15, LONG).await;
    assert_exactly_once(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_fault_result_fails_alone_and_a_waiting_retry_can_be_cancelled() {
    oversize_results_fail_alone(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_fails_an_oversize_fault_result_from_a_looser_executor() {
    oversize_results_fail_alone(false).await;
}
