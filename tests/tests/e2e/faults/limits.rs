//! Oversize results (README "Limits", `limits.max_result_bytes`): a `core.util.echo` whose result is
//! over the limit fails that attempt with an error naming the setting, tasks running next to it
//! succeed, and a retrying or a delayed task of that kind can be cancelled. The limit is enforced by
//! the executor and, for an executor configured more loosely, by the control plane.

use std::time::Duration;

use legion_proto::v1::{SubmitTaskRequest, TaskStatus};
use legion_tests::nodes::NodeSpec;
use legion_tests::status::from_wire;
use legion_tests::{TestEnv, assert_eventually, ledger, wait};
use serde_json::{Value, json};

use super::{
    assert_exactly_once, assert_failed_for_its_size, assert_the_rest_succeed, cancel, request, sleep, submit_all,
    wait_all_ended,
};
use crate::{LONG, describe};

/// The limit both sides get, in bytes.
const MAX_RESULT_BYTES: usize = 2048;

fn oversize_args() -> Value {
    json!({"blob": "x".repeat(2 * MAX_RESULT_BYTES)})
}

fn oversize() -> SubmitTaskRequest {
    request("core.util.echo", oversize_args())
}

/// Runs the scenario against an executor whose own `limits.max_result_bytes` is `executor_limit`
/// (`None`: the 4 MiB default, so only the control plane refuses).
async fn oversize_results_fail_alone(executor_limit: Option<usize>) {
    let limits = json!({"limits": {"max_result_bytes": MAX_RESULT_BYTES}});
    let env = TestEnv::start_with_settings(limits.clone()).await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let extra = executor_limit.map_or(Value::Null, |bytes| json!({"limits": {"max_result_bytes": bytes}}));
    let _node = env.start_node(&NodeSpec { concurrency: 4, extra, ..NodeSpec::default() }).await.expect("node");

    // One oversize echo among small echoes and short sleeps, all submitted together.
    let mut requests = vec![oversize()];
    requests.extend((0..8).map(|i| request("core.util.echo", json!({"i": i}))));
    requests.extend((0..4).map(|_| sleep(300)));
    let ids = submit_all(&env, requests, 4).await;
    // A retrying one and a delayed one of the same kind, to cancel.
    let retrying =
        env.submit_request(SubmitTaskRequest { max_attempts: Some(25), ..oversize() }).await.expect("submit retrying");
    let delayed =
        env.submit_request(SubmitTaskRequest { delay_ms: 600_000, ..oversize() }).await.expect("submit delayed");
    assert_eq!(from_wire(delayed.status), TaskStatus::Scheduled, "{}", describe(&delayed));

    let failed = env.wait_terminal(&ids[0], LONG).await.expect("the oversize echo ends");
    assert_failed_for_its_size(&failed);
    let attempts = env.attempts(&failed.id).await.expect("ListTaskAttempts");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].status, "failed", "{attempts:?}");
    assert!(attempts[0].error.as_deref().unwrap_or_default().contains("limits.max_result_bytes"), "{attempts:?}");

    assert_the_rest_succeed(&env, &ids, 1).await;

    // The retrying task fails attempt after attempt; cancel it mid-way.
    assert_eventually!(LONG, "the oversize task is retrying", || async {
        let task = ledger::task(&pool, &retrying.id).await.map_err(|e| e.to_string())?;
        if task.attempt >= 2 && !ledger::TERMINAL.contains(&task.status.as_str()) {
            Ok(())
        } else {
            Err(format!("{task:?}"))
        }
    });
    for (what, id) in [("retrying", &retrying.id), ("delayed", &delayed.id)] {
        cancel(&env, what, id).await;
    }
    let retrying_after = ledger::task(&pool, &retrying.id).await.expect("row");
    wait_all_ended(&pool, 15, LONG).await;
    wait::holds_for("the cancelled tasks stay cancelled and stop retrying", Duration::from_secs(2), || async {
        let now = ledger::task(&pool, &retrying.id).await.map_err(|e| e.to_string())?;
        let delayed_now = ledger::task(&pool, &delayed.id).await.map_err(|e| e.to_string())?;
        match (now.status.as_str(), now.attempt == retrying_after.attempt, delayed_now.status.as_str()) {
            ("cancelled", true, "cancelled") if !now.has_result && !delayed_now.has_result => Ok(()),
            _ => Err(format!("{now:?} / {delayed_now:?}")),
        }
    })
    .await
    .expect("cancelled for good");
    assert!(env.attempts(&delayed.id).await.expect("ListTaskAttempts").is_empty(), "the delayed task never ran");
    let retried = env.attempts(&retrying.id).await.expect("ListTaskAttempts");
    let statuses: Vec<&str> = retried.iter().map(|a| a.status.as_str()).collect();
    assert!(
        statuses.iter().all(|s| matches!(*s, "failed" | "cancelled")),
        "every attempt failed, the last maybe cancelled: {statuses:?}"
    );
    assert_exactly_once(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_result_fails_alone_and_its_kind_can_be_cancelled() {
    oversize_results_fail_alone(Some(MAX_RESULT_BYTES)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_refuses_an_oversize_result_from_a_looser_executor() {
    oversize_results_fail_alone(None).await;
}
