//! Node liveness against real PostgreSQL (and, for the API, the whole control plane): heartbeats abort
//! the attempts they name and no others; the lease sweeper waits a whole lease after the control plane
//! starts before it declares a node lost; every call of a node proves it alive; a node's attempts are
//! swept once per loss. Regression tests for an operator's report: a control plane down for longer than
//! `control_plane.node_lease_ms` marked a live executor lost at restart and re-dispatched its task every
//! second.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use legion_common::settings::Limits;
use legion_common::{NodeStatus, TaskStatus};
use legion_control_plane::delivery::AttemptStatus;
use legion_control_plane::delivery::start::{Decision, StartItem};
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::{CatalogStore, DeliveryStore, Heartbeat, TaskStore};
use legion_control_plane::tasks::submit::new_task;
use legion_control_plane::tasks::validate::validate_submit;
use legion_proto::v1;
use support::stack::{NODE, Stack, core_manifest};
use support::tasks::{publish_all, start_one, submit_echo_queued, sweeper};
use support::{TestDb, register_core};
use uuid::Uuid;

/// Submits and publishes `n` echo tasks; returns their ids.
async fn queued_tasks(store: &PgStore, n: usize) -> Vec<Uuid> {
    let req = v1::SubmitTaskRequest { function: "core.util.echo".into(), ..Default::default() };
    let tasks: Vec<_> =
        (0..n).map(|_| new_task(validate_submit(&req, &Limits::default()).expect("valid submit"))).collect();
    let ids = store.insert_tasks(&tasks).await.expect("insert").into_iter().map(|i| i.task.id).collect();
    publish_all(store).await;
    ids
}

async fn start(store: &PgStore, node: &str, id: Uuid, dispatch: u32, redelivered: bool) -> Decision {
    let item = StartItem { task_id: id.to_string(), dispatch, redelivered };
    store.start(node, &[item], 5).await.expect("start").0.remove(0)
}

async fn node_status(store: &PgStore, node: &str) -> NodeStatus {
    store.list_nodes().await.expect("nodes").into_iter().find(|n| n.name == node).expect("node").status
}

async fn age_node(pool: &sqlx::PgPool, node: &str) {
    sqlx::query("UPDATE nodes SET last_heartbeat = now() - interval '1 hour' WHERE name = $1")
        .bind(node)
        .execute(pool)
        .await
        .expect("age the node");
}

fn heartbeat(running: Vec<(Uuid, u32)>) -> Heartbeat {
    Heartbeat { node: NODE.into(), draining: false, extensions: vec![], running }
}

#[tokio::test]
async fn heartbeats_abort_exactly_the_attempts_that_must_stop() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo"]).await;
    register_core(&store, "exec-2", &["echo"]).await;
    let ids = queued_tasks(&store, 3).await;
    // ids[0]: attempt 1 was taken over by attempt 2 on the same node; both are still reported.
    assert_eq!(start(&store, NODE, ids[0], 1, false).await, Decision::Run { attempt: 1 });
    assert_eq!(start(&store, NODE, ids[0], 1, true).await, Decision::Run { attempt: 2 });
    // ids[1]: cancelled while it runs. ids[2]: its current attempt runs on another node.
    assert_eq!(start(&store, NODE, ids[1], 1, false).await, Decision::Run { attempt: 1 });
    store.cancel_task(ids[1]).await.expect("cancel");
    assert_eq!(start(&store, "exec-2", ids[2], 1, false).await, Decision::Run { attempt: 1 });
    let unknown = Uuid::now_v7();

    let reply = store
        .heartbeat(&heartbeat(vec![(ids[0], 1), (ids[0], 2), (ids[1], 1), (ids[2], 1), (unknown, 3)]))
        .await
        .expect("heartbeat");
    // Attempt 2 of ids[0] is current and keeps running: only attempt 1 is named.
    assert_eq!(reply.abort, vec![(ids[0], 1), (ids[1], 1), (ids[2], 1), (unknown, 3)]);
    let reply = store.heartbeat(&heartbeat(vec![(ids[0], 2)])).await.expect("heartbeat");
    assert!(reply.abort.is_empty());
}

#[tokio::test]
async fn a_freshly_started_sweeper_waits_a_lease_before_declaring_a_node_lost() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo"]).await;
    let id = queued_tasks(&store, 1).await[0];
    assert_eq!(start(&store, NODE, id, 1, false).await, Decision::Run { attempt: 1 });
    // The control plane was down for an hour: the node's last heartbeat is that old.
    age_node(store.pool(), NODE).await;

    let lease = Duration::from_millis(1500);
    let started = tokio::time::Instant::now();
    let mut sweeper = sweeper(&store, lease, started);
    // Sweeps during the grace declare nothing, although the node looks silent.
    while started.elapsed() < lease - Duration::from_millis(300) {
        assert_eq!(sweeper.sweep().await.expect("sweep"), Default::default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node_status(&store, NODE).await, NodeStatus::Active);
    assert_eq!(store.get_task(id).await.expect("get").expect("task").status, TaskStatus::Running);

    // After a whole lease without a call, the node is lost and its task is dispatched again.
    let deadline = started + lease + Duration::from_secs(5);
    let expiry = loop {
        let expiry = sweeper.sweep().await.expect("sweep");
        if !expiry.nodes.is_empty() {
            break expiry;
        }
        assert!(tokio::time::Instant::now() < deadline, "the node was never declared lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(expiry.nodes, vec![NODE.to_owned()]);
    assert_eq!(expiry.changes.len(), 1);
    let task = store.get_task(id).await.expect("get").expect("task");
    assert_eq!((task.status, task.dispatch), (TaskStatus::Pending, 2));
}

#[tokio::test]
async fn a_nodes_attempts_are_swept_once_per_loss() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo"]).await;
    let id = queued_tasks(&store, 1).await[0];
    start(&store, NODE, id, 1, false).await;
    age_node(store.pool(), NODE).await;
    let lease = Duration::from_secs(30);
    let first = store.expire_nodes(lease, 5).await.expect("expire");
    assert_eq!((first.nodes.len(), first.changes.len()), (1, 1));

    // The redispatched task is started by the same node before anything marks it active again (the
    // store's start does not touch the node): the new attempt must not be swept as the old one was.
    publish_all(&store).await;
    assert_eq!(start(&store, NODE, id, 2, false).await, Decision::Run { attempt: 2 });
    assert_eq!(node_status(&store, NODE).await, NodeStatus::Lost);
    for _ in 0..3 {
        assert_eq!(store.expire_nodes(lease, 5).await.expect("expire"), Default::default());
    }
    let task = store.get_task(id).await.expect("get").expect("task");
    assert_eq!((task.status, task.attempt), (TaskStatus::Running, 2));
    let attempts: Vec<(u32, AttemptStatus)> =
        store.list_attempts(id).await.expect("attempts").into_iter().map(|a| (a.attempt, a.status)).collect();
    assert_eq!(attempts, vec![(1, AttemptStatus::Lost), (2, AttemptStatus::Running)]);

    // A call makes the node active; silent again for a lease, it is lost again: a new loss, swept once.
    assert!(store.touch_node(NODE, Duration::from_secs(1)).await.expect("touch"), "it was lost");
    assert_eq!(node_status(&store, NODE).await, NodeStatus::Active);
    assert!(!store.touch_node(NODE, Duration::from_secs(1)).await.expect("touch"));
    age_node(store.pool(), NODE).await;
    let second = store.expire_nodes(lease, 5).await.expect("expire");
    assert_eq!((second.nodes.len(), second.changes.len()), (1, 1));
    assert!(!store.touch_node("ghost", Duration::from_secs(1)).await.expect("unknown nodes are ignored"));
}

async fn api_node_status(stack: &Stack) -> v1::NodeStatus {
    let nodes = stack.catalog().await.list_nodes(v1::ListNodesRequest {}).await.expect("nodes").into_inner();
    nodes.nodes.into_iter().find(|n| n.name == NODE).expect("node").status()
}

async fn mark_lost(stack: &Stack) {
    sqlx::query("UPDATE nodes SET status = 'lost', last_heartbeat = now() - interval '1 hour' WHERE name = $1")
        .bind(NODE)
        .execute(&stack.pool().await)
        .await
        .expect("mark the node lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_node_proves_it_alive() {
    let stack = Stack::start(false, |_| {}).await;
    let mut executor = stack.executor().await;
    executor.register_node(core_manifest(&["echo"])).await.expect("register");
    assert_eq!(api_node_status(&stack).await, v1::NodeStatus::Active);

    mark_lost(&stack).await;
    executor.start_task(v1::StartTaskRequest { items: vec![] }).await.expect("start");
    assert_eq!(api_node_status(&stack).await, v1::NodeStatus::Active, "StartTask makes the node active");

    mark_lost(&stack).await;
    executor.complete_task(v1::CompleteTaskRequest { items: vec![] }).await.expect("complete");
    assert_eq!(api_node_status(&stack).await, v1::NodeStatus::Active, "CompleteTask makes the node active");
    let (age_ms,): (f64,) =
        sqlx::query_as("SELECT EXTRACT(EPOCH FROM now() - last_heartbeat)::float8 * 1000 FROM nodes WHERE name = $1")
            .bind(NODE)
            .fetch_one(&stack.pool().await)
            .await
            .expect("age");
    assert!(age_ms < 10_000.0, "last_heartbeat refreshed, {age_ms} ms old");

    // A malformed task id reported in a heartbeat is answered with that very (id, attempt).
    let reply = executor
        .heartbeat(v1::HeartbeatRequest {
            name: NODE.into(),
            running: vec![v1::RunningAttempt { task_id: "not-a-task".into(), attempt: 4 }],
            free_slots: 8,
            ..Default::default()
        })
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(reply.abort, vec![v1::RunningAttempt { task_id: "not-a-task".into(), attempt: 4 }]);
    stack.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_outage_longer_than_the_lease_fails_no_healthy_work() {
    let lease = Duration::from_millis(2000);
    let mut stack = Stack::start(true, |s| {
        s.control_plane.node_lease_ms = 2000;
        s.executor.heartbeat_ms = 500;
    })
    .await;
    let mut executor = stack.executor().await;
    executor.register_node(core_manifest(&["echo"])).await.expect("register");
    let task = submit_echo_queued(&stack).await;
    let started = start_one(&mut executor, &task.id, 1, false).await;
    assert_eq!(started.decision(), v1::StartDecision::Run);

    // The control plane is down for longer than the lease; the executor keeps running the task.
    stack.restart(lease + Duration::from_millis(1000)).await;
    // The executor's next heartbeat comes after its reconnect backoff, not at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running = vec![v1::RunningAttempt { task_id: task.id.clone(), attempt: 1 }];
    let mut executor = stack.executor().await;
    let until = tokio::time::Instant::now() + lease + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        let reply = executor
            .heartbeat(v1::HeartbeatRequest {
                name: NODE.into(),
                running: running.clone(),
                free_slots: 7,
                ..Default::default()
            })
            .await
            .expect("heartbeat")
            .into_inner();
        assert!(reply.abort.is_empty(), "the live executor's attempt was aborted: {:?}", reply.abort);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(api_node_status(&stack).await, v1::NodeStatus::Active);
    let attempts = stack
        .tasks()
        .await
        .list_task_attempts(v1::ListTaskAttemptsRequest { task_id: task.id.clone() })
        .await
        .expect("attempts")
        .into_inner()
        .attempts;
    let attempts: Vec<(u32, &str)> = attempts.iter().map(|a| (a.attempt, a.status.as_str())).collect();
    assert_eq!(attempts, vec![(1, "running")], "no attempt was lost or re-dispatched");
    stack.stop().await.expect("clean shutdown");
}
