//! Failures without loss, against real PostgreSQL (and, through the API, the whole control plane with
//! RabbitMQ): backoff waits held as `scheduled` in PostgreSQL and promoted, permanent failures, the
//! attempt deadline and its grace, idempotency retention, stopped nodes, and retry policy validation.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::time::Duration;

use legion_common::TaskStatus;
use legion_common::settings::Limits;
use legion_control_plane::delivery::AttemptStatus;
use legion_control_plane::delivery::complete::{CompleteItem, FailureKind, Outcome, ResultLimits, Verdict};
use legion_control_plane::delivery::retry::RetryPolicy;
use legion_control_plane::delivery::start::{Decision, StartItem};
use legion_control_plane::dispatch::lease::Sweeper;
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::{CatalogStore, DeliveryStore, Heartbeat, Inserted, NewTask, TaskStore};
use legion_control_plane::tasks::submit::new_task;
use legion_control_plane::tasks::validate::validate_submit;
use legion_proto::v1;
use legion_proto::v1::catalog_service_client::CatalogServiceClient;
use support::stack::{NODE, Stack, core_manifest};
use support::tasks::{publish_all, start_one, submit_echo_queued, sweeper, task_row};
use support::{TestDb, register_core};
use uuid::Uuid;

const LIMITS: ResultLimits = ResultLimits { max_bytes: 1 << 20, max_depth: 32 };

fn echo(max_attempts: u32, timeout_ms: u32, retry: Option<v1::RetryPolicy>) -> NewTask {
    let req = v1::SubmitTaskRequest {
        function: "core.util.echo".into(),
        max_attempts: Some(max_attempts),
        timeout_ms: Some(timeout_ms),
        retry,
        ..Default::default()
    };
    new_task(validate_submit(&req, &Limits::default()).expect("valid submit"))
}

fn policy(initial: u64, multiplier: f64, max: u64, jitter: f64) -> v1::RetryPolicy {
    v1::RetryPolicy {
        initial_backoff_ms: Some(initial),
        multiplier: Some(multiplier),
        max_backoff_ms: Some(max),
        jitter: Some(jitter),
    }
}

/// Inserts `task` and publishes every outbox row (pending → queued); returns its id.
async fn queued(store: &PgStore, task: NewTask) -> Uuid {
    let id = store.insert_tasks(&[task]).await.expect("insert").remove(0).task.id;
    publish_all(store).await;
    id
}

/// [`queued`], then its first attempt starts on [`NODE`].
async fn running(store: &PgStore, task: NewTask) -> Uuid {
    let id = queued(store, task).await;
    assert_eq!(start(store, id, 1).await, Decision::Run { attempt: 1 });
    id
}

/// A migrated store on a fresh database where [`NODE`] offers `core.util.echo`.
async fn echo_store() -> (TestDb, PgStore) {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo"]).await;
    (db, store)
}

async fn start(store: &PgStore, id: Uuid, dispatch: u32) -> Decision {
    let item = StartItem { task_id: id.to_string(), dispatch, redelivered: false };
    store.start(NODE, &[item], 5).await.expect("start").0.remove(0)
}

async fn complete(store: &PgStore, id: Uuid, attempt: u32, outcome: Outcome) -> Verdict {
    let item = CompleteItem { task_id: id.to_string(), attempt, outcome, duration_ms: 3 };
    store.complete(&[item], LIMITS).await.expect("complete").0.remove(0)
}

fn failure(kind: FailureKind, message: &str) -> Outcome {
    Outcome::Failure { kind, message: message.into() }
}

async fn outbox_rows(store: &PgStore, id: Uuid) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE task_id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("count outbox rows");
    n
}

async fn task(store: &PgStore, id: Uuid) -> legion_control_plane::store::Task {
    store.get_task(id).await.expect("get").expect("task")
}

/// A sweeper whose grace (one lease after it started listening) is already over.
fn sweeper_past_grace(store: &PgStore, lease: Duration) -> Sweeper {
    let started =
        tokio::time::Instant::now().checked_sub(lease * 2).expect("the machine is up for longer than a lease");
    sweeper(store, lease, started)
}

/// Sweeps every 50 ms until `done` holds; fails with `what` after 30 s.
async fn sweep_until<F, Fut>(sweeper: &mut Sweeper, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        sweeper.sweep().await.expect("sweep");
        if done().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps `node` from being declared lost by the sweeps of a test (its last call is in the future).
async fn keep_alive(store: &PgStore, node: &str) {
    sqlx::query("UPDATE nodes SET last_heartbeat = now() + interval '1 hour' WHERE name = $1")
        .bind(node)
        .execute(store.pool())
        .await
        .expect("keep the node alive");
}

/// Moves the start of `id`'s attempt `attempt` back by `seconds`.
async fn age_attempt(store: &PgStore, id: Uuid, attempt: i32, seconds: f64) {
    sqlx::query(
        "UPDATE task_attempts SET started_at = started_at - $3::float8 * interval '1 second'
         WHERE task_id = $1 AND attempt = $2",
    )
    .bind(id)
    .bind(attempt)
    .bind(seconds)
    .execute(store.pool())
    .await
    .expect("age the attempt");
}

#[tokio::test]
async fn a_failed_attempt_waits_as_scheduled_then_is_promoted_and_runs_again() {
    let (_db, store) = echo_store().await;
    let id = queued(&store, echo(3, 5000, Some(policy(400, 2.0, 60_000, 0.5)))).await;
    assert_eq!(
        task(&store, id).await.retry,
        Some(RetryPolicy { initial_backoff_ms: 400, multiplier: 2.0, max_backoff_ms: 60_000, jitter: 0.5 })
    );
    assert_eq!(start(&store, id, 1).await, Decision::Run { attempt: 1 });
    assert_eq!(complete(&store, id, 1, failure(FailureKind::Error, "boom")).await, Verdict::Retried);

    let failed = task(&store, id).await;
    assert_eq!((failed.status, failed.failures, failed.dispatch), (TaskStatus::Scheduled, 1, 1));
    assert_eq!(outbox_rows(&store, id).await, 0, "a backoff wait is not a broker message");
    // The wait is counted from the commit of the failure (the attempt's end, same clock): 400 ms
    // less up to half of it.
    let (wait_ms,): (f64,) = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM t.not_before - a.finished_at)::float8 * 1000
         FROM tasks t JOIN task_attempts a ON a.task_id = t.id AND a.attempt = 1 WHERE t.id = $1",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await
    .expect("wait");
    assert!((200.0..=400.0).contains(&wait_ms), "waits {wait_ms} ms");
    // A message of the failed attempt's dispatch, redelivered during the wait, does not start it.
    let early = start(&store, id, 1).await;
    assert!(matches!(&early, Decision::Drop { reason } if reason.contains("scheduled")), "{early:?}");

    // The promoter moves it to pending with a new dispatch and an outbox row once it is due.
    support::eventually("the retry to be promoted", Duration::from_secs(20), || async {
        let changes = store.promote_due(100).await.expect("promote");
        changes.iter().any(|c| c.task_id == id).then_some(())
    })
    .await;
    let pending = task(&store, id).await;
    assert_eq!((pending.status, pending.dispatch), (TaskStatus::Pending, 2));
    assert_eq!(outbox_rows(&store, id).await, 1);
    publish_all(&store).await;
    assert_eq!(start(&store, id, 2).await, Decision::Run { attempt: 2 });
    assert_eq!(complete(&store, id, 2, Outcome::Result(br#"{"ok":1}"#.to_vec())).await, Verdict::Succeeded);
    let done = task(&store, id).await;
    assert_eq!((done.status, done.attempt, done.failures), (TaskStatus::Succeeded, 2, 1));
}

#[tokio::test]
async fn a_scheduled_retry_can_be_cancelled() {
    let (_db, store) = echo_store().await;
    let id = running(&store, echo(3, 5000, Some(policy(3_600_000, 2.0, 3_600_000, 0.0)))).await;
    assert_eq!(complete(&store, id, 1, failure(FailureKind::Timeout, "slow")).await, Verdict::Retried);
    assert_eq!(task(&store, id).await.status, TaskStatus::Scheduled);
    let (cancelled, _) = store.cancel_task(id).await.expect("cancel");
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    let attempts = store.list_attempts(id).await.expect("attempts");
    assert_eq!(attempts[0].status, AttemptStatus::TimedOut, "the ended attempt keeps its outcome");
}

#[tokio::test]
async fn a_permanent_failure_ends_the_task_failed_with_attempts_left() {
    let (_db, store) = echo_store().await;
    let id = running(&store, echo(5, 5000, None)).await;
    let verdict = complete(&store, id, 1, failure(FailureKind::Permanent, "invalid url: no scheme")).await;
    assert_eq!(verdict, Verdict::Failed);
    let failed = task(&store, id).await;
    assert_eq!((failed.status, failed.failures, failed.max_attempts), (TaskStatus::Failed, 1, 5));
    assert_eq!(failed.error.as_deref(), Some("invalid url: no scheme"));
    assert!(failed.finished_at.is_some());
    assert_eq!(outbox_rows(&store, id).await, 0);
    let attempts = store.list_attempts(id).await.expect("attempts");
    assert_eq!((attempts.len(), attempts[0].status), (1, AttemptStatus::Failed));
}

#[tokio::test]
async fn the_attempt_deadline_times_out_a_silent_attempt_and_retries_it() {
    let (_db, store) = echo_store().await;
    // A retry at once (initial backoff 0) and a task on its last attempt.
    let retried = running(&store, echo(2, 300, Some(policy(0, 2.0, 1000, 0.0)))).await;
    let last = running(&store, echo(1, 300, None)).await;
    keep_alive(&store, NODE).await;
    let lease = Duration::from_millis(700);
    let mut sweeper = sweeper_past_grace(&store, lease);

    // Both attempts run past 300 ms + 700 ms without a word from the executor (its node keeps calling).
    sweep_until(&mut sweeper, "the overdue attempts never ended", || async {
        let (a, b) = (task(&store, retried).await, task(&store, last).await);
        a.status != TaskStatus::Running && b.status != TaskStatus::Running
    })
    .await;
    let a = task(&store, retried).await;
    assert_eq!((a.status, a.failures, a.dispatch), (TaskStatus::Pending, 1, 2));
    assert_eq!(outbox_rows(&store, retried).await, 1);
    let attempt = &store.list_attempts(retried).await.expect("attempts")[0];
    assert_eq!(attempt.status, AttemptStatus::TimedOut);
    let reason = attempt.error.clone().unwrap_or_default();
    assert!(reason.contains("timeout_ms (300)") && reason.contains("node_lease_ms (700)"), "{reason}");
    let b = task(&store, last).await;
    assert_eq!((b.status, b.failures), (TaskStatus::TimedOut, 1));
    assert!(b.finished_at.is_some());

    // The executor learns from its next heartbeat that the attempts are over; their late
    // completions change nothing.
    let reply = store
        .heartbeat(&Heartbeat {
            node: NODE.into(),
            draining: false,
            extensions: vec![],
            running: vec![(retried, 1), (last, 1)],
        })
        .await
        .expect("heartbeat");
    assert_eq!(reply.abort, vec![(retried, 1), (last, 1)]);
    let late = complete(&store, last, 1, Outcome::Result(b"1".to_vec())).await;
    assert!(!late.accepted(), "{late:?}");
    assert_eq!(task(&store, last).await.status, TaskStatus::TimedOut);

    // The retry runs as attempt 2.
    publish_all(&store).await;
    assert_eq!(start(&store, retried, 2).await, Decision::Run { attempt: 2 });
    assert_eq!(complete(&store, retried, 2, Outcome::Result(b"1".to_vec())).await, Verdict::Succeeded);
}

#[tokio::test]
async fn no_attempt_is_overdue_before_the_control_plane_listened_for_a_lease() {
    let (_db, store) = echo_store().await;
    let id = running(&store, echo(1, 100, None)).await;
    keep_alive(&store, NODE).await;
    // The control plane was down for an hour while the executor finished the task into its spool.
    age_attempt(&store, id, 1, 3600.0).await;

    let lease = Duration::from_millis(1500);
    let started = tokio::time::Instant::now();
    let mut sweeper = sweeper(&store, lease, started);
    while started.elapsed() < lease - Duration::from_millis(400) {
        sweeper.sweep().await.expect("sweep");
        assert_eq!(task(&store, id).await.status, TaskStatus::Running, "ended during the grace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its spooled completion arrives within the grace and is accepted.
    assert_eq!(complete(&store, id, 1, Outcome::Result(b"1".to_vec())).await, Verdict::Succeeded);

    // Another overdue attempt, not reported: after the grace it times out.
    let other = running(&store, echo(1, 100, None)).await;
    age_attempt(&store, other, 1, 3600.0).await;
    sweep_until(&mut sweeper, "the overdue attempt never ended after the grace", || async {
        task(&store, other).await.status == TaskStatus::TimedOut
    })
    .await;
}

async fn submit_keyed(store: &PgStore, key: &str) -> Inserted {
    let req = v1::SubmitTaskRequest {
        function: "core.util.echo".into(),
        idempotency_key: Some(key.into()),
        ..Default::default()
    };
    let mut task = new_task(validate_submit(&req, &Limits::default()).expect("valid"));
    task.owner = "jwt/alice".into();
    store.insert_tasks(&[task]).await.expect("insert").remove(0)
}

#[tokio::test]
async fn an_idempotency_key_past_its_retention_creates_a_new_task() {
    let db = TestDb::create().await;
    let store = db.store().await.with_idempotency_retention(Duration::from_secs(60));
    register_core(&store, NODE, &["echo"]).await;
    let first = submit_keyed(&store, "nightly-2026-06-01").await;
    assert!(first.created);
    // Within the retention: the same task.
    let again = submit_keyed(&store, "nightly-2026-06-01").await;
    assert_eq!((again.created, again.task.id), (false, first.task.id));

    // Two minutes later (by the database's account), the key creates a new task and the old one lets
    // it go.
    sqlx::query("UPDATE tasks SET created_at = created_at - interval '2 minutes' WHERE id = $1")
        .bind(first.task.id)
        .execute(store.pool())
        .await
        .expect("age the task");
    // Concurrent submits with the expired key: exactly one creates the new task, all get it.
    let mut joins = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        joins.push(tokio::spawn(async move { submit_keyed(&store, "nightly-2026-06-01").await }));
    }
    let mut results = Vec::new();
    for join in joins {
        results.push(join.await.expect("submit"));
    }
    assert_eq!(results.iter().filter(|r| r.created).count(), 1, "exactly one new task");
    let new_id = results.iter().find(|r| r.created).map(|r| r.task.id).expect("the new task");
    assert_ne!(new_id, first.task.id);
    assert!(results.iter().all(|r| r.task.id == new_id), "every submit answers with the new task");
    let old = task(&store, first.task.id).await;
    assert_eq!(old.idempotency_key, None, "the old task released its key");
    assert_eq!(task(&store, new_id).await.idempotency_key.as_deref(), Some("nightly-2026-06-01"));
    // Within the new task's retention: the new task again.
    let later = submit_keyed(&store, "nightly-2026-06-01").await;
    assert_eq!((later.created, later.task.id), (false, new_id));
}

#[tokio::test]
async fn a_stopped_heartbeat_removes_the_node_and_recovers_its_running_attempt() {
    let stack = Stack::start(true, |_| {}).await;
    let mut executor = stack.executor().await;
    executor.register_node(core_manifest(&["echo"])).await.expect("register");
    let submitted = submit_echo_queued(&stack).await;
    let pool = stack.pool().await;
    assert_eq!(start_one(&mut executor, &submitted.id, 1, false).await.attempt, 1);

    // The executor drained without reporting its task (e.g. a completion it could not deliver) and
    // sends its last heartbeat.
    executor
        .heartbeat(v1::HeartbeatRequest { name: NODE.into(), stopped: true, ..Default::default() })
        .await
        .expect("stopped heartbeat");
    let nodes = CatalogServiceClient::new(stack.admin_channel().await)
        .list_nodes(v1::ListNodesRequest {})
        .await
        .expect("list nodes")
        .into_inner()
        .nodes;
    assert!(nodes.iter().all(|n| n.name != NODE), "the stopped node is gone: {nodes:?}");
    let (node_extensions,): (i64,) = sqlx::query_as("SELECT count(*) FROM node_extensions WHERE node = $1")
        .bind(NODE)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(node_extensions, 0);
    let (status, dispatch, attempt) = task_row(&pool, &submitted.id).await.expect("task row");
    assert!(status == "pending" || status == "queued", "recovered, not {status}");
    assert_eq!((dispatch, attempt), (2, 1));
    let (attempt_status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM task_attempts WHERE task_id = $1::uuid AND attempt = 1")
            .bind(&submitted.id)
            .fetch_one(&pool)
            .await
            .expect("attempt");
    assert_eq!(attempt_status, "lost");
    assert!(error.unwrap_or_default().contains("stopped"));

    // It is no longer registered: another heartbeat (stopped or not) asks it to register.
    for stopped in [false, true] {
        let err = executor
            .heartbeat(v1::HeartbeatRequest { name: NODE.into(), stopped, ..Default::default() })
            .await
            .expect_err("unregistered");
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    }
    drop(executor);
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn retry_policies_are_validated_and_shown_over_grpc() {
    let stack = Stack::start(false, |s| {
        s.retry.initial_backoff_ms = 250;
        s.retry.max_backoff_ms = 5000;
    })
    .await;
    let mut executor = stack.executor().await;
    executor.register_node(core_manifest(&["echo"])).await.expect("register");
    let mut tasks = stack.tasks().await;
    let cases = [
        (policy(1, 0.5, 10, 0.0), "retry.multiplier: "),
        (policy(1, f64::NAN, 10, 0.0), "retry.multiplier: "),
        (policy(1, 2.0, 10, 1.5), "retry.jitter: "),
        (policy(1, 2.0, 86_400_001, 0.0), "retry.max_backoff_ms: "),
        (policy(11, 2.0, 10, 0.0), "retry.initial_backoff_ms: "),
        // The settings' maximum (5000) completes the policy.
        (v1::RetryPolicy { initial_backoff_ms: Some(6000), ..Default::default() }, "retry.initial_backoff_ms: "),
    ];
    for (retry, field) in cases {
        let err = tasks
            .submit_task(v1::SubmitTaskRequest {
                function: "core.util.echo".into(),
                retry: Some(retry),
                ..Default::default()
            })
            .await
            .expect_err("invalid retry");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{retry:?}: {err:?}");
        assert!(err.message().starts_with(field), "{retry:?}: {}", err.message());
    }
    let task = tasks
        .submit_task(v1::SubmitTaskRequest {
            function: "core.util.echo".into(),
            retry: Some(v1::RetryPolicy { multiplier: Some(3.0), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .task
        .expect("task");
    // Unset fields took the settings; the task shows the whole policy.
    assert_eq!(task.retry, Some(policy(250, 3.0, 5000, 0.2)));
    assert_eq!(task.replays, 0);
    let read = tasks.get_task(v1::GetTaskRequest { id: task.id.clone() }).await.expect("get").into_inner();
    assert_eq!(read.retry, Some(policy(250, 3.0, 5000, 0.2)));
    // A task written before policies were stored shows the settings it follows.
    let pool = stack.pool().await;
    sqlx::query("UPDATE tasks SET retry = NULL WHERE id = $1::uuid")
        .bind(&task.id)
        .execute(&pool)
        .await
        .expect("clear");
    let legacy = tasks.get_task(v1::GetTaskRequest { id: task.id.clone() }).await.expect("get").into_inner();
    assert_eq!(legacy.retry, Some(policy(250, 2.0, 5000, 0.2)));
    drop(executor);
    stack.stop().await.expect("clean stop");
}

/// A relationship's or a schedule's `retry` sets only some fields; the settings complete it when tasks
/// are created, so the whole policy is checked against them when the chain or schedule is saved.
#[tokio::test]
async fn relationship_and_schedule_retry_policies_are_checked_with_the_settings_when_saved() {
    use legion_proto::v1::chain_service_client::ChainServiceClient;
    use legion_proto::v1::schedule_service_client::ScheduleServiceClient;
    let stack = Stack::start(false, |s| s.retry.max_backoff_ms = 5000).await;
    let mut executor = stack.executor().await;
    executor.register_node(core_manifest(&["echo"])).await.expect("register");
    let above_max = v1::RetryPolicy { initial_backoff_ms: Some(6000), ..Default::default() };
    let relationship = |retry: Option<v1::RetryPolicy>| v1::Relationship {
        trigger: "core.util.echo".into(),
        action: "core.util.echo".into(),
        retry,
        ..Default::default()
    };
    let mut chains = ChainServiceClient::new(stack.admin_channel().await);
    let chain = |name: &str, relationships| v1::Chain {
        name: name.into(),
        max_depth: Some(2),
        relationships,
        ..Default::default()
    };
    let err = chains
        .apply_chain(v1::ApplyChainRequest {
            chain: Some(chain("too-slow", vec![relationship(None), relationship(Some(above_max))])),
        })
        .await
        .expect_err("initial backoff above the settings' maximum");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("relationships[1].retry.initial_backoff_ms: "), "{}", err.message());
    let within = v1::RetryPolicy { initial_backoff_ms: Some(4000), ..Default::default() };
    chains
        .apply_chain(v1::ApplyChainRequest { chain: Some(chain("ok", vec![relationship(Some(within))])) })
        .await
        .expect("a policy that holds with the settings");

    let mut schedules = ScheduleServiceClient::new(stack.admin_channel().await);
    let schedule = |name: &str, retry| v1::Schedule {
        name: name.into(),
        function: "core.util.echo".into(),
        interval_ms: Some(60_000),
        retry: Some(retry),
        ..Default::default()
    };
    let err = schedules
        .create_schedule(v1::CreateScheduleRequest { schedule: Some(schedule("too-slow", above_max)) })
        .await
        .expect_err("initial backoff above the settings' maximum");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("retry.initial_backoff_ms: "), "{}", err.message());
    let created = schedules
        .create_schedule(v1::CreateScheduleRequest { schedule: Some(schedule("ok", within)) })
        .await
        .expect("a policy that holds with the settings")
        .into_inner();
    assert_eq!(created.retry, Some(within), "the schedule shows the fields it sets");
    drop(executor);
    stack.stop().await.expect("clean stop");
}
