//! The PostgreSQL store against a real database: the delivery protocol's batch semantics (submit →
//! outbox → start → complete), stale attempts, takeovers, retries, lost nodes, idempotency, the catalog
//! state machine and paging. Each test has its own database.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use legion_common::broker::TaskMessage;
use legion_common::settings::Limits;
use legion_common::{ExtensionState, NodeStatus, TaskStatus};
use legion_control_plane::delivery::AttemptStatus;
use legion_control_plane::delivery::complete::{CompleteItem, FailureKind, Outcome, ResultLimits, Verdict};
use legion_control_plane::delivery::start::{Decision, StartItem};
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::{
    CatalogStore, DeliveryStore, Error, Heartbeat, NewTask, OutboxRow, OutboxStore, ReportedState, TaskFilter,
    TaskStore,
};
use legion_control_plane::tasks::submit::new_task;
use legion_control_plane::tasks::validate::validate_submit;
use legion_proto::v1::SubmitTaskRequest;
use support::{TestDb, register_core};
use uuid::Uuid;

const NODE: &str = "exec-1";

fn task(function: &str, edit: impl FnOnce(&mut SubmitTaskRequest)) -> NewTask {
    let mut req = SubmitTaskRequest { function: function.into(), ..SubmitTaskRequest::default() };
    edit(&mut req);
    new_task(validate_submit(&req, &Limits::default()).expect("valid submit"))
}

fn echo() -> NewTask {
    task("core.util.echo", |_| {})
}

async fn insert(store: &PgStore, tasks: &[NewTask]) -> Vec<Uuid> {
    store.insert_tasks(tasks).await.expect("insert").into_iter().map(|i| i.task.id).collect()
}

/// Publishes every outbox row (as the publisher would after the broker's confirms).
async fn publish_all(store: &PgStore) -> Vec<OutboxRow> {
    let claim = store.claim_outbox(10_000).await.expect("claim");
    let rows = claim.rows().to_vec();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    claim.finish(&ids, &[]).await.expect("finish");
    rows
}

fn start_item(id: Uuid, dispatch: u32, redelivered: bool) -> StartItem {
    StartItem { task_id: id.to_string(), dispatch, redelivered }
}

async fn start(store: &PgStore, items: &[StartItem], limit: u32) -> Vec<Decision> {
    store.start(NODE, items, limit).await.expect("start").0
}

fn done(id: Uuid, attempt: u32, outcome: Outcome) -> CompleteItem {
    CompleteItem { task_id: id.to_string(), attempt, outcome, duration_ms: 4 }
}

fn limits(max_bytes: usize) -> ResultLimits {
    ResultLimits { max_bytes, max_depth: 32 }
}

fn failure(kind: FailureKind) -> Outcome {
    Outcome::Failure { kind, message: "it broke".into() }
}

async fn get(store: &PgStore, id: Uuid) -> legion_control_plane::store::Task {
    store.get_task(id).await.expect("get").expect("task exists")
}

async fn attempt_statuses(store: &PgStore, id: Uuid) -> Vec<(u32, AttemptStatus)> {
    store.list_attempts(id).await.expect("attempts").into_iter().map(|a| (a.attempt, a.status)).collect()
}

#[tokio::test]
async fn a_submitted_task_is_published_started_and_completed() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let ids = insert(&store, &[echo(), echo(), task("core.util.echo", |r| r.priority = 7)]).await;
    assert_eq!(get(&store, ids[0]).await.status, TaskStatus::Pending);

    let rows = publish_all(&store).await;
    assert_eq!(rows.iter().map(|r| r.task_id).collect::<Vec<_>>(), ids, "oldest first");
    assert_eq!(rows[2].priority, 7);
    assert!(rows.iter().all(|r| r.exchange == "legion.tasks" && r.routing_key == "core.util.echo"));
    let message: TaskMessage = serde_json::from_slice(&rows[0].payload).expect("task message");
    assert_eq!((message.task_id, message.dispatch, message.timeout_ms), (ids[0], 1, 30_000));
    assert_eq!(store.outbox_depth().await.expect("depth"), 0);
    assert_eq!(get(&store, ids[0]).await.status, TaskStatus::Queued);

    let decisions = start(&store, &[start_item(ids[0], 1, false), start_item(ids[1], 1, false)], 5).await;
    assert_eq!(decisions, vec![Decision::Run { attempt: 1 }, Decision::Run { attempt: 1 }]);
    let running = get(&store, ids[0]).await;
    assert_eq!((running.status, running.attempt, running.node.as_deref()), (TaskStatus::Running, 1, Some(NODE)));
    assert!(running.started_at.is_some());

    let (verdicts, changes) = store
        .complete(
            &[
                done(ids[0], 1, Outcome::Result(br#"{"answer":42}"#.to_vec())),
                done(ids[1], 1, failure(FailureKind::Error)),
            ],
            limits(1024),
        )
        .await
        .expect("complete");
    assert_eq!(verdicts, vec![Verdict::Succeeded, Verdict::Failed]);
    assert_eq!(changes.len(), 2);
    let succeeded = get(&store, ids[0]).await;
    assert_eq!(succeeded.status, TaskStatus::Succeeded);
    assert_eq!(succeeded.result, Some(serde_json::json!({"answer": 42})));
    assert!(succeeded.finished_at.is_some());
    let failed = get(&store, ids[1]).await;
    assert_eq!((failed.status, failed.error.as_deref()), (TaskStatus::Failed, Some("it broke")));
    let attempts = store.list_attempts(ids[0]).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].status, attempts[0].duration_ms, attempts[0].node.as_str()),
        (AttemptStatus::Succeeded, Some(4), NODE)
    );
}

#[tokio::test]
async fn stale_and_duplicate_messages_are_dropped_and_redeliveries_take_over() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let id = insert(&store, &[echo()]).await[0];
    publish_all(&store).await;

    // One batch: the first delivery runs; the same message again is a duplicate; an older dispatch is
    // stale; a redelivery takes over from the vanished consumer.
    let decisions = start(
        &store,
        &[start_item(id, 1, false), start_item(id, 1, false), start_item(id, 0, true), start_item(id, 1, true)],
        5,
    )
    .await;
    assert_eq!(decisions[0], Decision::Run { attempt: 1 });
    assert!(matches!(&decisions[1], Decision::Drop { reason } if reason.contains("duplicate")));
    assert!(matches!(&decisions[2], Decision::Drop { reason } if reason.contains("stale dispatch")));
    assert_eq!(decisions[3], Decision::Run { attempt: 2 });
    assert_eq!(attempt_statuses(&store, id).await, vec![(1, AttemptStatus::Lost), (2, AttemptStatus::Running)]);
    assert_eq!(get(&store, id).await.redeliveries, 1);

    // The superseded attempt's completion is rejected harmlessly; the current one is recorded.
    let (verdicts, _) = store
        .complete(
            &[done(id, 1, Outcome::Result(b"1".to_vec())), done(id, 2, Outcome::Result(b"2".to_vec()))],
            limits(1024),
        )
        .await
        .expect("complete");
    assert_eq!(verdicts, vec![Verdict::Stale("stale attempt 1 (current 2)".into()), Verdict::Succeeded]);
    assert_eq!(get(&store, id).await.result, Some(serde_json::json!(2)));
    let again = start(&store, &[start_item(id, 1, true)], 5).await;
    assert!(matches!(&again[0], Decision::Drop { reason } if reason == "task is succeeded"));
}

#[tokio::test]
async fn takeovers_past_the_delivery_limit_dead_letter_the_task() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let id = insert(&store, &[echo()]).await[0];
    publish_all(&store).await;
    assert_eq!(start(&store, &[start_item(id, 1, false)], 2).await, vec![Decision::Run { attempt: 1 }]);
    assert_eq!(start(&store, &[start_item(id, 1, true)], 2).await, vec![Decision::Run { attempt: 2 }]);
    let third = start(&store, &[start_item(id, 1, true)], 2).await;
    assert!(matches!(&third[0], Decision::Drop { reason } if reason.contains("delivered 3 times")));
    let task = get(&store, id).await;
    assert_eq!(task.status, TaskStatus::DeadLettered);
    assert!(task.error.as_deref().is_some_and(|e| e.contains("transport.delivery_limit (2)")));
    assert_eq!(attempt_statuses(&store, id).await, vec![(1, AttemptStatus::Lost), (2, AttemptStatus::Lost)]);
}

#[tokio::test]
async fn failures_are_retried_with_a_new_dispatch_until_max_attempts() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    // A retry policy without backoff: the retry is dispatched in the completion's transaction (backoff
    // waits are tested in failures.rs).
    let id = insert(
        &store,
        &[task("core.util.fail", |r| {
            r.max_attempts = Some(2);
            r.retry = Some(legion_proto::v1::RetryPolicy { initial_backoff_ms: Some(0), ..Default::default() });
        })],
    )
    .await[0];
    publish_all(&store).await;
    start(&store, &[start_item(id, 1, false)], 5).await;
    let (verdicts, _) =
        store.complete(&[done(id, 1, failure(FailureKind::Error))], limits(1024)).await.expect("complete");
    assert_eq!(verdicts, vec![Verdict::Retried]);
    let retried = get(&store, id).await;
    assert_eq!((retried.status, retried.dispatch, retried.failures), (TaskStatus::Pending, 2, 1));

    // The retry's outbox row carries the new dispatch; the old message is stale.
    let rows = publish_all(&store).await;
    assert_eq!(rows.len(), 1);
    let message: TaskMessage = serde_json::from_slice(&rows[0].payload).expect("message");
    assert_eq!(message.dispatch, 2);
    assert!(matches!(&start(&store, &[start_item(id, 1, true)], 5).await[0], Decision::Drop { .. }));
    assert_eq!(start(&store, &[start_item(id, 2, false)], 5).await, vec![Decision::Run { attempt: 2 }]);

    let (verdicts, _) =
        store.complete(&[done(id, 2, failure(FailureKind::Timeout))], limits(1024)).await.expect("complete");
    assert_eq!(verdicts, vec![Verdict::TimedOut]);
    let task = get(&store, id).await;
    assert_eq!((task.status, task.failures), (TaskStatus::TimedOut, 2));
    assert_eq!(attempt_statuses(&store, id).await, vec![(1, AttemptStatus::Failed), (2, AttemptStatus::TimedOut)]);
}

#[tokio::test]
async fn an_oversize_result_fails_the_attempt_with_the_reason() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let id = insert(&store, &[echo()]).await[0];
    publish_all(&store).await;
    start(&store, &[start_item(id, 1, false)], 5).await;
    let (verdicts, _) =
        store.complete(&[done(id, 1, Outcome::Result(b"\"0123456789\"".to_vec()))], limits(8)).await.expect("complete");
    assert_eq!(verdicts, vec![Verdict::Failed]);
    let task = get(&store, id).await;
    assert_eq!(task.error.as_deref(), Some("result: 12 bytes exceeds limits.max_result_bytes (8)"));
    assert_eq!(task.result, None);
}

#[tokio::test]
async fn idempotency_keys_return_the_first_task_even_within_a_batch_and_under_races() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let keyed = |key: &str| task("core.util.echo", |r| r.idempotency_key = Some(key.into()));
    let results = store.insert_tasks(&[keyed("a"), keyed("a"), keyed("b"), echo()]).await.expect("insert");
    assert_eq!(results.iter().map(|r| r.created).collect::<Vec<_>>(), vec![true, false, true, true]);
    assert_eq!(results[0].task.id, results[1].task.id);
    let again = store.insert_tasks(&[keyed("b")]).await.expect("insert");
    assert_eq!((again[0].created, again[0].task.id), (false, results[2].task.id));
    assert_eq!(store.outbox_depth().await.expect("depth"), 3, "one outbox row per created task");

    // Concurrent batches with the same key create exactly one task.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move { store.insert_tasks(&[keyed("race")]).await.expect("insert") }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for handle in handles {
        let result = handle.await.expect("join").remove(0);
        created += usize::from(result.created);
        ids.insert(result.task.id);
    }
    assert_eq!((created, ids.len()), (1, 1));
}

#[tokio::test]
async fn a_published_row_does_not_demote_a_task_that_already_started() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let id = insert(&store, &[echo()]).await[0];
    let claim = store.claim_outbox(10).await.expect("claim");
    // The executor starts the task before the publisher commits its confirm.
    assert_eq!(start(&store, &[start_item(id, 1, false)], 5).await, vec![Decision::Run { attempt: 1 }]);
    let row = claim.rows()[0].id;
    let changes = claim.finish(&[row], &[]).await.expect("finish");
    assert!(changes.is_empty());
    assert_eq!(get(&store, id).await.status, TaskStatus::Running);
}

#[tokio::test]
async fn failed_publishes_keep_their_row_and_publishers_share_the_outbox() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let ids = insert(&store, &(0..4).map(|_| echo()).collect::<Vec<_>>()).await;
    let first = store.claim_outbox(2).await.expect("claim");
    let second = store.claim_outbox(10).await.expect("claim");
    let a: Vec<Uuid> = first.rows().iter().map(|r| r.task_id).collect();
    let b: Vec<Uuid> = second.rows().iter().map(|r| r.task_id).collect();
    assert_eq!(a, ids[..2], "the first claim takes the oldest rows");
    assert_eq!(b, ids[2..], "a concurrent claim skips locked rows");
    let nacked = first.rows()[1].id;
    let published = first.rows()[0].id;
    first.finish(&[published], &[(nacked, "nacked by the broker".into())]).await.expect("finish");
    second.finish(&[], &[]).await.expect("release");
    assert_eq!(store.outbox_depth().await.expect("depth"), 3);
    let retry = store.claim_outbox(10).await.expect("claim");
    assert_eq!(retry.rows()[0].task_id, ids[1], "the failed row is published again first");
    retry.finish(&[], &[]).await.expect("release");
    let (failures, error): (i32, Option<String>) =
        sqlx::query_as("SELECT failures, last_error FROM outbox WHERE id = $1")
            .bind(nacked)
            .fetch_one(store.pool())
            .await
            .expect("row");
    assert_eq!((failures, error.as_deref()), (1, Some("nacked by the broker")));
}

#[tokio::test]
async fn lost_nodes_release_their_running_attempts() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    register_core(&store, "exec-2", &["echo", "fail"]).await;
    let ids = insert(&store, &[echo(), echo()]).await;
    publish_all(&store).await;
    start(&store, &[start_item(ids[0], 1, false)], 5).await;
    store.start("exec-2", &[start_item(ids[1], 1, false)], 5).await.expect("start");
    sqlx::query("UPDATE nodes SET last_heartbeat = now() - interval '1 hour' WHERE name = $1")
        .bind(NODE)
        .execute(store.pool())
        .await
        .expect("age the node");

    let expiry = store.expire_nodes(Duration::from_secs(30), 5).await.expect("expire");
    assert_eq!(expiry.nodes, vec![NODE.to_owned()]);
    assert_eq!(expiry.changes.len(), 1);
    let task = get(&store, ids[0]).await;
    assert_eq!((task.status, task.dispatch, task.redeliveries, task.failures), (TaskStatus::Pending, 2, 1, 0));
    assert_eq!(attempt_statuses(&store, ids[0]).await, vec![(1, AttemptStatus::Lost)]);
    assert_eq!(get(&store, ids[1]).await.status, TaskStatus::Running, "the live node keeps its task");
    let rows = publish_all(&store).await;
    assert_eq!(rows.iter().map(|r| r.task_id).collect::<Vec<_>>(), vec![ids[0]]);

    // The node comes back: it is active again and told to abort its superseded attempt.
    let reply = store
        .heartbeat(&Heartbeat { node: NODE.into(), draining: false, extensions: vec![], running: vec![(ids[0], 1)] })
        .await
        .expect("heartbeat");
    assert_eq!(reply.abort, vec![(ids[0], 1)]);
    let nodes = store.list_nodes().await.expect("nodes");
    assert!(nodes.iter().all(|n| n.status == NodeStatus::Active));
    assert_eq!(store.expire_nodes(Duration::from_secs(30), 5).await.expect("expire"), Default::default());
}

#[tokio::test]
async fn cancelling_ends_the_task_and_its_running_attempt() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let ids = insert(&store, &[echo(), echo()]).await;
    publish_all(&store).await;
    start(&store, &[start_item(ids[0], 1, false)], 5).await;
    let (cancelled, changes) = store.cancel_task(ids[0]).await.expect("cancel");
    assert_eq!((cancelled.status, changes.len()), (TaskStatus::Cancelled, 1));
    assert_eq!(attempt_statuses(&store, ids[0]).await, vec![(1, AttemptStatus::Cancelled)]);
    let (verdicts, _) =
        store.complete(&[done(ids[0], 1, Outcome::Result(b"1".to_vec()))], limits(10)).await.expect("complete");
    assert_eq!(verdicts, vec![Verdict::Stale("task is cancelled".into())]);
    assert!(matches!(store.cancel_task(ids[0]).await, Err(Error::FailedPrecondition(_))));
    assert!(matches!(store.cancel_task(Uuid::now_v7()).await, Err(Error::NotFound(_))));
    // A queued task is cancelled at once; its message is dropped at start.
    store.cancel_task(ids[1]).await.expect("cancel queued");
    assert!(matches!(&start(&store, &[start_item(ids[1], 1, false)], 5).await[0], Decision::Drop { .. }));
    let reply = store
        .heartbeat(&Heartbeat { node: NODE.into(), draining: true, extensions: vec![], running: vec![(ids[0], 1)] })
        .await
        .expect("heartbeat");
    assert_eq!(reply.abort, vec![(ids[0], 1)]);
    assert_eq!(store.list_nodes().await.expect("nodes")[0].status, NodeStatus::Draining);
}

#[tokio::test]
async fn delayed_tasks_wait_until_due_then_get_their_first_dispatch() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let soon = insert(&store, &[task("core.util.echo", |r| r.delay_ms = 50)]).await[0];
    let later = insert(&store, &[task("core.util.echo", |r| r.delay_ms = 3_600_000)]).await[0];
    let scheduled = get(&store, soon).await;
    assert_eq!((scheduled.status, scheduled.dispatch), (TaskStatus::Scheduled, 0));
    assert!(scheduled.not_before.is_some());
    assert_eq!(store.outbox_depth().await.expect("depth"), 0);
    let promoted = support::eventually("the delayed task to be due", Duration::from_secs(5), || async {
        let changes = store.promote_due(100).await.expect("promote");
        (!changes.is_empty()).then_some(changes)
    })
    .await;
    assert_eq!(promoted.iter().map(|c| c.task_id).collect::<Vec<_>>(), vec![soon]);
    let rows = publish_all(&store).await;
    let message: TaskMessage = serde_json::from_slice(&rows[0].payload).expect("message");
    assert_eq!((message.task_id, message.dispatch), (soon, 1));
    assert_eq!(get(&store, later).await.status, TaskStatus::Scheduled);
    let not_due = start(&store, &[start_item(later, 0, false)], 5).await;
    assert!(matches!(&not_due[0], Decision::Drop { reason } if reason.contains("scheduled")));
}

#[tokio::test]
async fn listing_pages_newest_first_with_filters() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let ids = insert(&store, &(0..5).map(|_| echo()).collect::<Vec<_>>()).await;
    insert(&store, &[task("core.util.fail", |_| {})]).await;
    let filter = TaskFilter { function: Some("core.util.echo".into()), limit: 2, ..TaskFilter::default() };
    let first = store.list_tasks(&filter).await.expect("list");
    assert_eq!(first.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
    assert!(first.more);
    let next = TaskFilter { before: Some(ids[3]), ..filter.clone() };
    let second = store.list_tasks(&next).await.expect("list");
    assert_eq!(second.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
    assert!(second.more);
    let last = store.list_tasks(&TaskFilter { before: Some(ids[1]), ..filter.clone() }).await.expect("list");
    assert_eq!((last.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), last.more), (vec![ids[0]], false));
    let pending = TaskFilter { status: Some(TaskStatus::Pending), limit: 100, ..TaskFilter::default() };
    let all = store.list_tasks(&pending).await.expect("list");
    assert_eq!((all.tasks.len(), all.more), (6, false));
    let queued = TaskFilter { status: Some(TaskStatus::Queued), limit: 100, ..TaskFilter::default() };
    assert_eq!(store.list_tasks(&queued).await.expect("list"), Default::default());
}

#[tokio::test]
async fn the_catalog_follows_the_state_machine_and_disabling_refuses_dispatch() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo", "fail"]).await;
    let extensions = store.list_extensions().await.expect("extensions");
    assert_eq!(extensions.len(), 1);
    assert_eq!(
        extensions[0].runners[0].functions.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["echo", "fail"]
    );
    assert_eq!(extensions[0].nodes[0].state, ExtensionState::Loaded);

    let report = |state: ExtensionState, reason: Option<&str>| Heartbeat {
        node: NODE.into(),
        draining: false,
        extensions: vec![ReportedState { extension: "core".into(), state, reason: reason.map(Into::into) }],
        running: vec![],
    };
    store.heartbeat(&report(ExtensionState::Running, None)).await.expect("heartbeat");
    // `loaded` cannot follow `running`: logged, not applied.
    store.heartbeat(&report(ExtensionState::Loaded, None)).await.expect("heartbeat");
    assert_eq!(store.list_nodes().await.expect("nodes")[0].extensions[0].state, ExtensionState::Running);
    store.heartbeat(&report(ExtensionState::Failed, Some("boom"))).await.expect("heartbeat");
    let node_ext = &store.list_extensions().await.expect("extensions")[0].nodes[0];
    assert_eq!((node_ext.state, node_ext.reason.as_deref()), (ExtensionState::Failed, Some("boom")));

    let disabled = store.set_extension_disabled("core", true).await.expect("disable");
    assert!(disabled.disabled);
    assert_eq!(disabled.nodes[0].state, ExtensionState::Disabled);
    let status = store.function_status(&["core.util.echo".into(), "core.util.nope".into()]).await.expect("status");
    assert_eq!(status.get("core.util.echo"), Some(&true));
    assert!(!status.contains_key("core.util.nope"));
    let reply = store.heartbeat(&report(ExtensionState::Running, None)).await.expect("heartbeat");
    assert_eq!(reply.disabled_extensions, vec!["core".to_owned()]);
    // A restarted node re-registers; its extension stays disabled until an operator enables it.
    register_core(&store, NODE, &["echo", "fail"]).await;
    assert_eq!(store.list_nodes().await.expect("nodes")[0].extensions[0].state, ExtensionState::Disabled);
    let enabled = store.set_extension_disabled("core", false).await.expect("enable");
    assert_eq!(enabled.nodes[0].state, ExtensionState::Loaded);
    assert!(matches!(store.set_extension_disabled("nope", true).await, Err(Error::NotFound(_))));

    let (history,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM node_extension_transitions").fetch_one(store.pool()).await.expect("count");
    // register, load, start, fail, disable, enable
    assert_eq!(history, 6);
    assert!(matches!(
        store
            .heartbeat(&Heartbeat { node: "ghost".into(), draining: false, extensions: vec![], running: vec![] })
            .await,
        Err(Error::NotFound(_))
    ));
}
