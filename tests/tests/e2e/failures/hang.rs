//! A task that hangs its executor (README "Tasks", `timeout_ms`; docs/architecture.md, "Lost nodes",
//! attempt deadline): `fault.process.hang` blocks its worker thread forever and ignores cancellation.
//! The task does not stay `running` past its timeout plus `control_plane.node_lease_ms`: the executor's
//! pool ends the attempt at the timeout (`timed_out`), or, should the executor stop reporting, the
//! control plane ends it (`timed_out` at the attempt deadline, or `lost` with the node). With one
//! attempt allowed, the task ends terminal. Meanwhile another executor serves every other task.

use std::time::Duration;

use legion_proto::v1::{NodeStatus, SubmitTaskRequest, TaskStatus};
use legion_tests::env::NODE_NAME;
use legion_tests::nodes::{FAULTS_BINARY, NodeSpec};
use legion_tests::status::from_wire;
use legion_tests::supervisor::{Liveness, Supervisor};
use legion_tests::{TestEnv, assert_eventually, ledger};
use serde_json::json;

use super::{TimedAttempt, timed_attempts, wait_row_status};
use crate::faults::{OTHER_NODE, assert_exactly_once, request, sleep, submit_all, wait_all_ended};
use crate::{LONG, describe, result_json};

/// The control plane's node lease.
const LEASE_MS: u32 = 3000;
/// The hanging task's attempt timeout.
const HANG_TIMEOUT_MS: u32 = 2000;
/// Allowance on top of timeout + lease for the sweep interval (a third of the lease, at most 1 s) and
/// a loaded machine; the bound checked is the documented one plus this.
const SLACK_MS: i64 = 5000;

/// Asserts that every attempt of task `id` ended within the bound: its timeout plus the lease (plus
/// [`SLACK_MS`]).
fn assert_attempts_ended_in_time(id: &str, attempts: &[TimedAttempt]) {
    let bound_us = (i64::from(HANG_TIMEOUT_MS) + i64::from(LEASE_MS) + SLACK_MS) * 1000;
    for a in attempts {
        let finished = a.finished_us.expect("every attempt of a finished task ended");
        assert!(
            finished - a.started_us <= bound_us,
            "attempt {} of {id} ran {} ms, more than timeout {HANG_TIMEOUT_MS} + lease {LEASE_MS} (+{SLACK_MS} slack)",
            a.attempt,
            (finished - a.started_us) / 1000
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_task_ends_within_its_timeout_plus_the_lease_and_others_are_served() {
    let lease = legion_tests::settings::short_node_lease(u64::from(LEASE_MS));
    let env = TestEnv::start_with_settings(lease).await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    // The hanging executor runs only `fault` (and `log`): every core task must go to the other node.
    let hung_spec = NodeSpec {
        concurrency: 1,
        heartbeat_ms: 500,
        extra: json!({"executor": {"extensions": ["log"]}}),
        ..NodeSpec::default()
    };
    let _hung = env.start_node_from(FAULTS_BINARY, &hung_spec).await.expect("fault node");
    let other = env
        .start_node(&NodeSpec { concurrency: 4, heartbeat_ms: 500, ..NodeSpec::named(OTHER_NODE) })
        .await
        .expect("other node");

    let hang = env
        .submit_request(SubmitTaskRequest {
            timeout_ms: Some(HANG_TIMEOUT_MS),
            max_attempts: Some(1),
            ..request("fault.process.hang", json!({}))
        })
        .await
        .expect("submit the hanging task");
    wait_row_status(&pool, &hang.id, "running").await;
    let mut others = vec![];
    others.extend((0..10).map(|i| request("core.util.echo", json!({"i": i}))));
    others.extend((0..10).map(|_| sleep(200)));
    let other_ids = submit_all(&env, others, 4).await;

    let done = env.wait_terminal(&hang.id, LONG).await.expect("the hanging task ends");
    let status = from_wire(done.status);
    assert!(
        matches!(status, TaskStatus::TimedOut | TaskStatus::Failed | TaskStatus::DeadLettered),
        "the hanging task ends timed out (or failed / dead-lettered after lost attempts): {}",
        describe(&done)
    );
    let attempts = timed_attempts(&pool, &hang.id).await;
    eprintln!("hanging task: {} with attempts {attempts:?}", describe(&done));
    let first = attempts.first().expect("the hanging task ran");
    assert_eq!(first.node, NODE_NAME, "{attempts:?}");
    assert!(matches!(first.status.as_str(), "timed_out" | "lost"), "attempt 1 ends timed_out or lost: {attempts:?}");
    assert_attempts_ended_in_time(&hang.id, &attempts);
    if first.status == "timed_out" {
        let error = first.error.clone().unwrap_or_default();
        assert!(error.contains("timed out"), "the attempt's error says it timed out: {error:?}");
    }

    for (i, id) in other_ids.iter().enumerate() {
        let task = env.wait_terminal(id, LONG).await.expect("task ends");
        assert_eq!(from_wire(task.status), TaskStatus::Succeeded, "task {i}: {}", describe(&task));
        assert_eq!(task.node.as_deref(), Some(other.name()), "task {i} ran on the other node");
        if i < 10 {
            assert_eq!(result_json(&task), json!({"i": i}));
        }
    }
    // The hang took one worker thread, not the executor: it still heartbeats and is not lost.
    assert_eq!(
        env.node_status(NODE_NAME).await.expect("ListNodes"),
        Some(NodeStatus::Active),
        "the executor with the hung thread stays active"
    );
    let row = ledger::task(&pool, &hang.id).await.expect("row");
    assert!(!row.has_result, "a hanging task has no result: {row:?}");
    wait_all_ended(&pool, 21, LONG).await;
    assert_exactly_once(&pool).await;
}

/// `transport.delivery_limit` of the fully hung scenario: two hung runs, then dead-lettered.
const HUNG_DELIVERY_LIMIT: u32 = 2;

/// An executor whose every runtime worker thread is blocked by a `fault.process.hang` (as many hangs as
/// the machine has CPUs, tokio's default worker count): it can neither end the attempts at their
/// timeout nor heartbeat nor answer `/healthz`. The control plane declares it lost after the lease
/// (attempts `lost`, counted as deliveries) or, once its liveness probe kills it, the restarted executor
/// takes the redelivered attempts over; either way each hang task ends `dead_lettered` after
/// `transport.delivery_limit` hung runs (or `timed_out`, if the executor still had a free thread to
/// end it), no attempt stays `running` past its timeout plus the lease, and another executor serves
/// every core task meanwhile, including any the hung executor had prefetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_hang_every_thread_of_their_executor_end_and_others_are_served() {
    let settings = json!({
        "control_plane": {"node_lease_ms": LEASE_MS},
        "executor": {"heartbeat_ms": 500},
        "transport": {"delivery_limit": HUNG_DELIVERY_LIMIT},
    });
    let env = TestEnv::start_with_settings(settings).await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    // One slot per worker thread for the hangs, two more whose prefetch a hung executor would hold.
    let hung_spec =
        NodeSpec { concurrency: u32::try_from(threads + 2).expect("small"), heartbeat_ms: 500, ..NodeSpec::default() };
    let launcher = env.node_launcher(FAULTS_BINARY, &hung_spec).expect("launcher");
    let supervisor = Supervisor::start_with(
        launcher,
        10,
        Some(Liveness { startup_grace: Duration::from_secs(3), ..Liveness::default() }),
    )
    .expect("supervisor");
    assert_eventually!(LONG, "the supervised fault node is active", || async {
        match env.node_status(NODE_NAME).await? {
            Some(NodeStatus::Active) => Ok(()),
            other => Err(format!("node {other:?}")),
        }
    });

    let hang = SubmitTaskRequest {
        timeout_ms: Some(HANG_TIMEOUT_MS),
        max_attempts: Some(1),
        ..request("fault.process.hang", json!({}))
    };
    let hang_ids = submit_all(&env, vec![hang; threads], 4).await;
    let other = env
        .start_node(&NodeSpec { concurrency: 4, heartbeat_ms: 500, ..NodeSpec::named(OTHER_NODE) })
        .await
        .expect("other node");
    let mut others = vec![];
    others.extend((0..10).map(|i| request("core.util.echo", json!({"i": i}))));
    others.extend((0..10).map(|_| sleep(200)));
    let other_ids = submit_all(&env, others, 4).await;

    for (i, id) in other_ids.iter().enumerate() {
        let task = env.wait_terminal(id, LONG).await.expect("task ends");
        assert_eq!(from_wire(task.status), TaskStatus::Succeeded, "task {i}: {}", describe(&task));
        if i < 10 {
            assert_eq!(result_json(&task), json!({"i": i}));
        }
    }
    for id in &hang_ids {
        let done = env.wait_terminal(id, LONG).await.expect("the hanging task ends");
        let attempts = timed_attempts(&pool, id).await;
        eprintln!("hanging task: {} with attempts {attempts:?}", describe(&done));
        assert!(
            matches!(from_wire(done.status), TaskStatus::DeadLettered | TaskStatus::TimedOut),
            "a task that keeps hanging its executor ends dead-lettered (or timed out): {}",
            describe(&done)
        );
        if from_wire(done.status) == TaskStatus::DeadLettered {
            let error = done.error.clone().unwrap_or_default();
            assert!(error.contains(&format!("transport.delivery_limit ({HUNG_DELIVERY_LIMIT})")), "{error:?}");
        }
        for a in &attempts {
            assert!(matches!(a.status.as_str(), "lost" | "timed_out"), "{attempts:?}");
        }
        assert_attempts_ended_in_time(id, &attempts);
    }
    let exits = supervisor.exits();
    eprintln!("the fault node was restarted after {exits:?}; other node {}", other.name());
    let node = supervisor.stop().await.expect("the supervisor ran without a crash loop");
    drop(node);
    wait_all_ended(&pool, i64::try_from(threads + 20).expect("small"), LONG).await;
    assert_exactly_once(&pool).await;
}
