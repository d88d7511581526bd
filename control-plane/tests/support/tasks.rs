//! Task helpers shared by the integration tests: straight in the store (publish the outbox, a lease
//! sweeper) and through a running [`Stack`] (submit a task and wait until it is queued, start it,
//! read its row).

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use legion_control_plane::dispatch::lease::{LeaseSettings, Sweeper};
use legion_control_plane::events::Events;
use legion_control_plane::metrics::Metrics;
use legion_control_plane::store::OutboxStore;
use legion_control_plane::store::pg::PgStore;
use legion_proto::v1;
use legion_proto::v1::executor_service_client::ExecutorServiceClient;
use tonic::transport::Channel;

use super::eventually;
use super::stack::Stack;

/// Claims every unpublished outbox row (up to 1000) and marks them published, as the relay does after
/// a broker confirm: their tasks go from `pending` to `queued`.
pub async fn publish_all(store: &PgStore) {
    let claim = store.claim_outbox(1000).await.expect("claim");
    let rows: Vec<i64> = claim.rows().iter().map(|r| r.id).collect();
    claim.finish(&rows, &[]).await.expect("publish");
}

/// A lease sweeper over `store` (delivery limit 5) whose control plane started listening at `started`.
pub fn sweeper(store: &PgStore, lease: Duration, started: tokio::time::Instant) -> Sweeper {
    Sweeper::new(
        Arc::new(store.clone()),
        LeaseSettings { lease, delivery_limit: 5 },
        started,
        Arc::new(tokio::sync::Notify::new()),
        Events::new(),
        Metrics::unregistered(),
    )
}

/// `(status, dispatch, attempt)` of task `id` as stored; `None` when it cannot be read.
pub async fn task_row(pool: &sqlx::PgPool, id: &str) -> Option<(String, i32, i32)> {
    sqlx::query_as("SELECT status, dispatch, attempt FROM tasks WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .ok()
}

/// Submits a `core.util.echo` task through the API and waits (up to 30 s) until its row is `queued`.
pub async fn submit_echo_queued(stack: &Stack) -> v1::Task {
    let task = stack
        .tasks()
        .await
        .submit_task(v1::SubmitTaskRequest { function: "core.util.echo".into(), ..Default::default() })
        .await
        .expect("submit")
        .into_inner()
        .task
        .expect("task");
    let pool = stack.pool().await;
    eventually("the task to be queued", Duration::from_secs(30), || async {
        (task_row(&pool, &task.id).await?.0 == "queued").then_some(())
    })
    .await;
    task
}

/// Waits (up to 30 s) until `task` is queued, starts its dispatch 1 as the test executor (the start must
/// be `RUN`) and completes it with `result`; whether the completion was accepted.
pub async fn run_queued(stack: &Stack, task: &str, result: &serde_json::Value) -> bool {
    eventually("the task to be queued", Duration::from_secs(30), || async {
        let got = stack.tasks().await.get_task(v1::GetTaskRequest { id: task.into() }).await.ok()?.into_inner();
        (got.status() == v1::TaskStatus::Queued).then_some(())
    })
    .await;
    let mut executor = stack.executor().await;
    let start = start_one(&mut executor, task, 1, false).await;
    assert_eq!(start.decision(), v1::StartDecision::Run, "{start:?}");
    let completion = v1::Completion {
        task_id: task.into(),
        attempt: start.attempt,
        outcome: Some(v1::completion::Outcome::ResultJson(serde_json::to_vec(result).expect("json"))),
        duration_ms: 3,
    };
    let acks = executor.complete_task(v1::CompleteTaskRequest { items: vec![completion] }).await;
    acks.expect("complete").into_inner().acks[0].accepted
}

/// `StartTask` of one item through `executor`: the result for task `id`.
pub async fn start_one(
    executor: &mut ExecutorServiceClient<Channel>,
    id: &str,
    dispatch: u32,
    redelivered: bool,
) -> v1::StartResult {
    let item = v1::StartItem { task_id: id.into(), dispatch, redelivered };
    let response = executor.start_task(v1::StartTaskRequest { items: vec![item] }).await;
    response.expect("start").into_inner().results.remove(0)
}
