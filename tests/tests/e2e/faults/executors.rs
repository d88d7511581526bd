//! Executors that die or drain (DESIGN.md section 5; docs/architecture.md, "Delivery protocol" and
//! "Lost nodes"): a SIGKILLed executor's 20 running tasks are taken over by the other executor and
//! succeed once; a SIGTERMed executor finishes what fits in `executor.shutdown_grace_ms`, shows
//! `draining`, and hands the rest back to the other executor. Frozen executors: `frozen.rs`.

use std::time::Duration;

use legion_proto::v1::NodeStatus;
use legion_tests::env::NODE_NAME;
use legion_tests::ledger::{self, AttemptRow, TaskRow};
use legion_tests::nodes::NodeSpec;
use legion_tests::{TestEnv, assert_eventually};
use serde_json::json;
use sqlx::PgPool;

use super::{OTHER_NODE, assert_exactly_once, sleep, submit_all, wait_all_ended};
use crate::{LONG, result_json};

/// `(attempt, status, node)` of each attempt row, for comparisons.
pub(super) fn shape(rows: &[AttemptRow]) -> Vec<(i32, String, String)> {
    rows.iter().map(|a| (a.attempt, a.status.clone(), a.node.clone())).collect()
}

/// The tasks `ids` now, or the error as text.
pub(super) async fn read_tasks(pool: &PgPool, ids: &[String]) -> Result<Vec<TaskRow>, String> {
    ledger::tasks(pool, ids).await.map_err(|e| format!("read tasks: {e}"))
}

/// Waits until every task of `ids` is `running` on node `node`.
pub(super) async fn wait_running_on(pool: &PgPool, ids: &[String], node: &str) {
    assert_eventually!(LONG, &format!("{} tasks running on {node}", ids.len()), || async {
        let tasks = read_tasks(pool, ids).await?;
        let running = tasks.iter().filter(|t| t.status == "running" && t.node.as_deref() == Some(node)).count();
        if running == ids.len() {
            Ok(())
        } else {
            Err(format!(
                "{running} running there: {:?}",
                tasks.iter().map(|t| (&t.status, &t.node)).collect::<Vec<_>>()
            ))
        }
    });
}

const KILLED_SLEEP_MS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sleeps_succeed_once_after_their_executor_is_killed() {
    let env = TestEnv::start().await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let mut first = env.start_node(&NodeSpec { concurrency: 20, ..NodeSpec::default() }).await.expect("first node");
    let ids = submit_all(&env, (0..20).map(|_| sleep(KILLED_SLEEP_MS)).collect(), 4).await;
    wait_running_on(&pool, &ids, NODE_NAME).await;
    let second =
        env.start_node(&NodeSpec { concurrency: 20, ..NodeSpec::named(OTHER_NODE) }).await.expect("second node");
    // The second node's start took a moment: the 20 must still run on the first when it dies.
    let before = read_tasks(&pool, &ids).await.expect("tasks");
    assert!(before.iter().all(|t| t.status == "running"), "still running at the kill: {before:?}");
    first.kill();

    wait_all_ended(&pool, 20, LONG * 2).await;
    assert_exactly_once(&pool).await;
    let attempts = ledger::all_attempts(&pool).await.expect("attempts");
    for id in &ids {
        let task = env.get_task(id).await.expect("GetTask");
        assert_eq!(result_json(&task), json!({"slept_ms": KILLED_SLEEP_MS}), "{task:?}");
        assert_eq!(task.node.as_deref(), Some(second.name()), "{task:?}");
        let rows = shape(attempts.get(id).map_or(&[][..], Vec::as_slice));
        assert_eq!(
            rows,
            vec![(1, "lost".to_owned(), NODE_NAME.to_owned()), (2, "succeeded".to_owned(), OTHER_NODE.to_owned())],
            "task {id}: the killed attempt is lost, the takeover succeeded"
        );
    }
}

const GRACE_MS: u64 = 4000;
const SHORT_MS: u64 = 2000;
const LONG_MS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_executor_finishes_short_tasks_and_hands_back_long_ones() {
    let env = TestEnv::start().await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let spec = NodeSpec { extra: json!({"executor": {"shutdown_grace_ms": GRACE_MS}}), ..NodeSpec::default() };
    let mut draining = env.start_node(&spec).await.expect("first node");
    let short = submit_all(&env, vec![sleep(SHORT_MS), sleep(SHORT_MS)], 2).await;
    let long = submit_all(&env, vec![sleep(LONG_MS), sleep(LONG_MS)], 2).await;
    let all: Vec<String> = short.iter().chain(&long).cloned().collect();
    wait_running_on(&pool, &all, NODE_NAME).await;
    let _other = env.start_node(&NodeSpec::named(OTHER_NODE)).await.expect("second node");
    let before = read_tasks(&pool, &all).await.expect("tasks");
    assert!(before.iter().all(|t| t.status == "running"), "all four run at the SIGTERM: {before:?}");
    assert!(draining.begin_terminate(), "SIGTERM delivered");

    assert_eventually!(LONG, "the node shows draining", || async {
        match env.node_status(NODE_NAME).await? {
            Some(NodeStatus::Draining) => Ok(()),
            other => Err(format!("status {other:?}")),
        }
    });
    assert!(draining.service().exited().is_none(), "the node was still draining when it showed `draining`");
    let exit = draining.wait_exit(Duration::from_millis(GRACE_MS) + LONG).await.expect("the drained node exits");
    assert!(exit.success(), "a drained executor exits 0: {exit}");
    let log = draining.service().log_tail(200);
    assert!(log.contains("shutdown grace over"), "the long tasks outlived the grace:\n{log}");

    wait_all_ended(&pool, 4, LONG * 2).await;
    assert_exactly_once(&pool).await;
    let attempts = ledger::all_attempts(&pool).await.expect("attempts");
    for id in &short {
        assert_eq!(
            shape(&attempts[id]),
            vec![(1, "succeeded".to_owned(), NODE_NAME.to_owned())],
            "short task {id} finished on the draining node"
        );
    }
    for id in &long {
        assert_eq!(
            shape(&attempts[id]),
            vec![(1, "lost".to_owned(), NODE_NAME.to_owned()), (2, "succeeded".to_owned(), OTHER_NODE.to_owned())],
            "long task {id} was handed back and succeeded on the other node"
        );
        let task = env.get_task(id).await.expect("GetTask");
        assert_eq!(result_json(&task), json!({"slept_ms": LONG_MS}));
    }
}
