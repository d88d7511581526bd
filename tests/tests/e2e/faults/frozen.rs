//! An executor frozen with SIGSTOP past its node lease (docs/architecture.md, "Lost nodes"): the control
//! plane declares the node `lost`, marks its attempt `lost` and dispatches the task again; the other
//! executor runs it. When the frozen executor is thawed (SIGCONT), after the retry succeeded or while
//! it still runs, its late completion is answered stale and changes nothing: the task keeps the second
//! node's result, exactly one `succeeded` attempt, and its chain's follow-up fires once.

use std::time::{Duration, Instant};

use legion_proto::v1::{Chain, NodeStatus, Relationship, TaskStatus};
use legion_tests::env::NODE_NAME;
use legion_tests::ledger;
use legion_tests::nodes::{Node, NodeSpec, sample_sum};
use legion_tests::status::from_wire;
use legion_tests::{TestEnv, assert_eventually, wait};
use serde_json::json;

use super::executors::{shape, wait_running_on};
use super::{OTHER_NODE, assert_exactly_once, wait_all_ended};
use crate::{LONG, describe, result_json};

/// The control plane's node lease: short, so the frozen node is declared lost quickly.
const LEASE_MS: u64 = 3000;
const SLEEP_MS: u64 = 4000;

/// When the frozen executor is thawed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thaw {
    /// After the retry succeeded on the other node.
    AfterTheRetry,
    /// While the retry runs on the other node.
    DuringTheRetry,
}

fn sleep_then_echo() -> Chain {
    Chain {
        name: "after-sleep".into(),
        relationships: vec![Relationship {
            trigger: "core.util.sleep".into(),
            action: "core.util.echo".into(),
            ..Relationship::default()
        }],
        ..Chain::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_completion_after_the_retry_changes_nothing() {
    frozen_past_the_lease(1, Thaw::AfterTheRetry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_completion_during_the_retry_changes_nothing() {
    frozen_past_the_lease(1, Thaw::DuringTheRetry).await;
}

/// The retry of a frozen node's attempt is a new broker message; with free prefetch on the frozen
/// node's channel, RabbitMQ may hand it to that node, which cannot run it. Regression: the task waited
/// `queued` until the node thawed or the broker closed its connection (two missed AMQP heartbeats,
/// minutes with RabbitMQ's default 60 s). Executors now ask for an AMQP heartbeat of a quarter of the node
/// lease, so the broker closes the frozen connection and hands its deliveries to the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_executor_with_free_slots_does_not_hold_the_retry() {
    frozen_past_the_lease(4, Thaw::AfterTheRetry).await;
}

/// Waits until the thawed node has finished its superseded attempt (or aborted it at the control
/// plane's request) and had the completion answered stale; returns its runs by outcome.
async fn settles_stale(frozen: &mut Node) -> String {
    let outcome = assert_eventually!(LONG, "the thawed node settles its superseded attempt", || async {
        let metrics = frozen.metrics().await?;
        let runs = sample_sum(&metrics, "legion_executor_runs_total", &[]);
        let in_flight = sample_sum(&metrics, "legion_executor_in_flight", &[]);
        if runs >= 1.0 && in_flight < 0.5 {
            Ok(metrics.lines().filter(|l| l.starts_with("legion_executor_runs_total{")).collect::<Vec<_>>().join("; "))
        } else {
            Err(format!("runs {runs}, in flight {in_flight}"))
        }
    });
    let log_path = frozen.service().log().to_path_buf();
    assert_eventually!(LONG, "the thawed node's completion was answered stale", || async {
        let log = std::fs::read_to_string(&log_path).map_err(|e| e.to_string())?;
        if log.contains("completion stale") { Ok(()) } else { Err("no stale completion logged yet".to_owned()) }
    });
    outcome
}

/// Freezes the executor running a chain's root past the node lease and thaws it at `thaw`; the frozen
/// executor has `frozen_slots` slots (`frozen_slots - 1` free prefetch while frozen).
async fn frozen_past_the_lease(frozen_slots: u32, thaw: Thaw) {
    let lease = legion_tests::settings::short_node_lease(LEASE_MS);
    let env = TestEnv::start_with_settings(lease).await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let frozen_spec = NodeSpec {
        concurrency: frozen_slots,
        heartbeat_ms: 500,
        extra: json!({"logging": {"levels": {"legion_executor::handler": "debug"}}}),
        ..NodeSpec::default()
    };
    let mut frozen = env.start_node(&frozen_spec).await.expect("first node");
    env.apply_chain(sleep_then_echo()).await.expect("ApplyChain");
    let root = env.submit_chain("after-sleep", "core.util.sleep", json!({"ms": SLEEP_MS})).await.expect("submit");
    wait_running_on(&pool, std::slice::from_ref(&root.id), NODE_NAME).await;
    let other =
        env.start_node(&NodeSpec { heartbeat_ms: 500, ..NodeSpec::named(OTHER_NODE) }).await.expect("second node");
    assert!(frozen.freeze(), "SIGSTOP delivered");
    let frozen_at = Instant::now();

    // The broker closes the frozen connection two to three AMQP heartbeats (a quarter of the lease each,
    // at least 1 s) after the freeze and the other node takes the redelivered message over; past the
    // lease the control plane also declares the silent node lost. Either way its attempt is `lost` and the task runs on the other node.
    assert_eventually!(LONG, "the retry runs on the other node", || async {
        let task = ledger::task(&pool, &root.id).await.map_err(|e| e.to_string())?;
        match (task.attempt, task.node.as_deref()) {
            (2, Some(OTHER_NODE)) => Ok(()),
            _ => Err(format!("{task:?}")),
        }
    });
    eprintln!("frozen with {frozen_slots} slots: the retry started {:?} after the freeze", frozen_at.elapsed());
    assert_eventually!(LONG, "the frozen node is declared lost", || async {
        match env.node_status(NODE_NAME).await? {
            Some(NodeStatus::Lost) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    if thaw == Thaw::DuringTheRetry {
        assert!(frozen.thaw(), "SIGCONT delivered");
        let outcome = settles_stale(&mut frozen).await;
        eprintln!("thawed during the retry; the thawed node's runs: {outcome}");
    }
    let done = env.wait_terminal(&root.id, LONG).await.expect("the root ends");
    assert_eq!(from_wire(done.status), TaskStatus::Succeeded, "{}", describe(&done));
    let settled_root = ledger::task(&pool, &root.id).await.expect("root row");
    let root_attempts = shape(&ledger::all_attempts(&pool).await.expect("attempts")[&root.id]);
    assert_eq!(
        root_attempts,
        vec![(1, "lost".to_owned(), NODE_NAME.to_owned()), (2, "succeeded".to_owned(), OTHER_NODE.to_owned())],
        "the frozen attempt is lost, the retry succeeded on the other node"
    );
    assert_eq!((settled_root.attempt, settled_root.node.as_deref()), (2, Some(other.name())));
    if thaw == Thaw::AfterTheRetry {
        assert!(frozen.thaw(), "SIGCONT delivered");
        let outcome = settles_stale(&mut frozen).await;
        eprintln!("thawed after the retry; the thawed node's runs: {outcome}");
    }

    // Nothing the late completion could touch moves: the root, its attempts, and the run's one child.
    wait_all_ended(&pool, 2, LONG).await;
    wait::holds_for("the root and its attempts stay as the second node left them", Duration::from_secs(3), || async {
        let now = ledger::task(&pool, &root.id).await.map_err(|e| e.to_string())?;
        let attempts = ledger::all_attempts(&pool).await.map_err(|e| e.to_string())?;
        if now != settled_root {
            return Err(format!("root changed: {settled_root:?} -> {now:?}"));
        }
        if shape(&attempts[&root.id]) != root_attempts {
            return Err(format!("attempts changed: {:?}", shape(&attempts[&root.id])));
        }
        match ledger::counts(&pool).await? {
            (2, 0) => Ok(()),
            other => Err(format!("(tasks, unfinished) = {other:?}")),
        }
    })
    .await
    .expect("the late completion changes nothing");
    assert_exactly_once(&pool).await;
    let run = env.run_tasks(&root.id).await.expect("ListTasks root_id");
    assert_eq!(run.len(), 2, "the root and one child: {run:?}");
    let child = &run[1];
    assert_eq!((child.function.as_str(), child.parent_id.as_deref()), ("core.util.echo", Some(root.id.as_str())));
    assert_eq!(from_wire(child.status), TaskStatus::Succeeded, "{}", describe(child));
    assert_eq!(result_json(child), json!({"slept_ms": SLEEP_MS}), "the child echoes the second node's result");
    assert_eq!(result_json(&done), json!({"slept_ms": SLEEP_MS}));
}
