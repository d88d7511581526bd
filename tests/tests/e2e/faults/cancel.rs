//! Cancellation (docs/architecture.md, "Delivery protocol" step 6): a queued task, a delayed
//! (`scheduled`) task and a running long sleep each end `cancelled` without a result; the running
//! attempt's row ends `cancelled`; the executor aborts the runner at its next heartbeat, so its only
//! slot frees and the next task runs long before the sleep would have ended.

use std::time::Duration;

use legion_proto::v1::{SubmitTaskRequest, TaskStatus};
use legion_tests::env::NODE_NAME;
use legion_tests::ledger;
use legion_tests::nodes::NodeSpec;
use legion_tests::status::from_wire;
use legion_tests::{TestEnv, assert_eventually, wait};
use serde_json::json;

use super::{assert_exactly_once, cancel, request, sleep, wait_all_ended};
use crate::{LONG, describe, result_json};

/// The running sleep: long enough that a task after it in the one slot could not start before it ends.
const LONG_SLEEP_MS: u64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_scheduled_and_running_tasks_are_cancelled_and_the_slot_frees() {
    let env = TestEnv::start().await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let node = env.start_node(&NodeSpec { concurrency: 1, ..NodeSpec::default() }).await.expect("node");

    let running = env
        .submit_request(SubmitTaskRequest { timeout_ms: Some(120_000), ..sleep(LONG_SLEEP_MS) })
        .await
        .expect("submit the long sleep");
    env.wait_for_status(&running.id, TaskStatus::Running, LONG).await.expect("the long sleep runs");
    // The one slot is taken: this one waits in the broker.
    let queued = env.submit("core.util.echo", json!({"queued": true})).await.expect("submit queued");
    env.wait_for_status(&queued.id, TaskStatus::Queued, LONG).await.expect("published, waiting for a slot");
    let delayed = env
        .submit_request(SubmitTaskRequest { delay_ms: 600_000, ..request("core.util.echo", json!({"delayed": true})) })
        .await
        .expect("submit delayed");
    assert_eq!(from_wire(delayed.status), TaskStatus::Scheduled, "{}", describe(&delayed));

    for (what, id) in [("queued", &queued.id), ("scheduled", &delayed.id), ("running", &running.id)] {
        cancel(&env, what, id).await;
    }

    // The aborted runner frees the only slot: the queued task's message is dropped at start, and a
    // new task runs long before the sleep would have ended.
    let next = env.submit("core.util.echo", json!({"after": "cancel"})).await.expect("submit next");
    let next = env.wait_for_status(&next.id, TaskStatus::Succeeded, LONG).await.expect("the next task runs");
    assert_eq!(result_json(&next), json!({"after": "cancel"}));
    let (long_row, next_row) = (
        ledger::task(&pool, &running.id).await.expect("long row"),
        ledger::task(&pool, &next.id).await.expect("next row"),
    );
    let (long_start, next_start) =
        (long_row.started_at_us.expect("the sleep started"), next_row.started_at_us.expect("next started"));
    let sleep_us = i64::try_from(LONG_SLEEP_MS).expect("small") * 1000;
    eprintln!("the next task started {} ms after the cancelled sleep", (next_start - long_start) / 1000);
    assert!(
        next_start < long_start + sleep_us,
        "with one slot, the next task can only start before the sleep's end if the sleep was aborted"
    );
    assert_eventually!(LONG, "the executor counts one aborted run", || async {
        let aborted = node.metric("legion_executor_runs_total", &[("outcome", "aborted")]).await?;
        if (aborted - 1.0).abs() < f64::EPSILON { Ok(()) } else { Err(format!("{aborted} aborted runs")) }
    });

    wait_all_ended(&pool, 4, LONG).await;
    wait::holds_for("the cancelled tasks stay cancelled, without results", Duration::from_secs(2), || async {
        for id in [&queued.id, &delayed.id, &running.id] {
            let task = ledger::task(&pool, id).await.map_err(|e| e.to_string())?;
            if task.status != "cancelled" || task.has_result {
                return Err(format!("{task:?}"));
            }
        }
        Ok(())
    })
    .await
    .expect("a stale completion of the aborted attempt changes nothing");
    let attempts = ledger::all_attempts(&pool).await.expect("attempts");
    let long_attempts: Vec<(i32, &str, &str)> =
        attempts[&running.id].iter().map(|a| (a.attempt, a.status.as_str(), a.node.as_str())).collect();
    assert_eq!(long_attempts, vec![(1, "cancelled", NODE_NAME)], "the running attempt ends cancelled");
    assert!(!attempts.contains_key(&queued.id), "the queued task never started: {:?}", attempts.get(&queued.id));
    assert!(!attempts.contains_key(&delayed.id), "the delayed task never started");
    for id in [&queued.id, &delayed.id, &running.id] {
        let task = env.get_task(id).await.expect("GetTask");
        assert_eq!(from_wire(task.status), TaskStatus::Cancelled, "{}", describe(&task));
        assert_eq!(result_json(&task), serde_json::Value::Null, "no result recorded: {task:?}");
    }
    assert_exactly_once(&pool).await;
}
