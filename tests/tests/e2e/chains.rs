//! Chains run end to end (DESIGN.md sections 4 and 5): a health check whose failure posts one alert to
//! a webhook and whose success skips it, fan-outs of 50 and 1,000 children that each run exactly once
//! (and 1,001 items refused by `limits.max_fanout`), and a loop that stops at its `max_depth`.
//!
//! Runs are followed in PostgreSQL (one count per poll, cheap even for a thousand tasks) and checked
//! through `ListTasks` with `root_id` once they settle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use legion_proto::v1::{Relationship, Task, TaskStatus};
use legion_proto::{json_to_value, value_to_json};
use legion_tests::status::from_wire;
use legion_tests::{ExecutorOptions, TestEnv, assert_eventually, wait};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{LONG, describe, result_json};

/// How long a settled run is watched for tasks (or webhook calls) that should not appear.
const QUIET: Duration = Duration::from_secs(3);

/// Bound for the 21 sequential hops of the depth test on a loaded 2-core machine.
const DEPTH_TIMEOUT: Duration = Duration::from_secs(180);

/// Bound for a thousand children on a loaded 2-core machine (debug builds).
const THOUSAND_TIMEOUT: Duration = Duration::from_secs(420);

fn relationship(trigger: &str, action: &str) -> Relationship {
    Relationship { trigger: trigger.into(), action: action.into(), ..Relationship::default() }
}

fn chain(name: &str, relationships: Vec<Relationship>) -> legion_proto::v1::Chain {
    legion_proto::v1::Chain { name: name.into(), relationships, ..legion_proto::v1::Chain::default() }
}

fn status(task: &Task) -> TaskStatus {
    from_wire(task.status)
}

fn args_json(task: &Task) -> Value {
    task.args.as_ref().map_or(Value::Null, value_to_json)
}

/// `(tasks, unfinished tasks)` of the run rooted at `root`, from PostgreSQL.
async fn run_counts(pool: &PgPool, root: &str) -> Result<(i64, i64), String> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'scheduled', 'queued', 'running')) \
         FROM tasks WHERE root_id = $1::uuid",
    )
    .bind(root)
    .fetch_one(pool)
    .await
    .map_err(|e| format!("count the run's tasks: {e}"))
}

/// Waits until the run rooted at `root` holds at least `expected` tasks and none is unfinished, then
/// checks that it stays at exactly `expected` for [`QUIET`] (nothing fires twice, nothing late), and
/// returns every task of the run through `ListTasks` (root first).
async fn settle(env: &TestEnv, pool: &PgPool, root: &str, expected: i64, timeout: Duration) -> Vec<Task> {
    let what = format!("run {root}: {expected} tasks, all terminal");
    assert_eventually!(timeout, &what, || async {
        match run_counts(pool, root).await? {
            (total, 0) if total >= expected => Ok(()),
            (total, unfinished) => Err(format!("{total} tasks, {unfinished} unfinished")),
        }
    });
    wait::holds_for(&format!("run {root} stays at {expected} tasks"), QUIET, || async {
        match run_counts(pool, root).await? {
            (total, 0) if total == expected => Ok(()),
            (total, unfinished) => Err(format!("{total} tasks, {unfinished} unfinished")),
        }
    })
    .await
    .expect("the settled run does not change");
    let tasks = env.run_tasks(root).await.expect("ListTasks root_id");
    assert_eq!(i64::try_from(tasks.len()).ok(), Some(expected), "ListTasks agrees with the database");
    assert_eq!(tasks[0].id, root, "the root is the run's first task");
    tasks
}

/// Attempt rows of every task of the run rooted at `root`: task id → `[(attempt, status)]`.
async fn attempt_rows(pool: &PgPool, root: &str) -> BTreeMap<String, Vec<(i32, String)>> {
    let rows: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT a.task_id::text, a.attempt, a.status FROM task_attempts a JOIN tasks t ON t.id = a.task_id \
         WHERE t.root_id = $1::uuid ORDER BY a.task_id, a.attempt",
    )
    .bind(root)
    .fetch_all(pool)
    .await
    .expect("read task_attempts");
    let mut by_task: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    for (task, attempt, status) in rows {
        by_task.entry(task).or_default().push((attempt, status));
    }
    by_task
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local http server");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("local http server") });
    addr
}

/// A health endpoint (`GET /health`) answering the status the test sets.
async fn serve_health(status: Arc<AtomicU16>) -> SocketAddr {
    let app = Router::new()
        .route(
            "/health",
            get(|State(status): State<Arc<AtomicU16>>| async move {
                let code = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap_or(StatusCode::IM_A_TEAPOT);
                (code, axum::Json(json!({"healthy": code == StatusCode::OK})))
            }),
        )
        .with_state(status);
    serve(app).await
}

/// A webhook receiver (`POST /hook`) recording the content type and body of every call.
type Posts = Arc<Mutex<Vec<(String, Bytes)>>>;

async fn serve_receiver(posts: Posts) -> SocketAddr {
    let app = Router::new()
        .route(
            "/hook",
            post(|State(posts): State<Posts>, headers: HeaderMap, body: Bytes| async move {
                let content_type =
                    headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                posts.lock().unwrap_or_else(PoisonError::into_inner).push((content_type, body));
                StatusCode::OK
            }),
        )
        .with_state(posts);
    serve(app).await
}

fn post_count(posts: &Posts) -> usize {
    posts.lock().unwrap_or_else(PoisonError::into_inner).len()
}

/// The issue's chain: `http.request.get` → (status ≠ 200) → jinja → `http.request.post` to the receiver.
fn alert_chain(receiver: SocketAddr) -> legion_proto::v1::Chain {
    let template = r#"{"url": "http://RECEIVER/hook", "body": {"alert": "health check failed", "status": {{ results.status }}, "checked": {{ args.url | tojson }}}}"#
        .replace("RECEIVER", &receiver.to_string());
    let mut alert = relationship("http.request.get", "http.request.post");
    alert.conditions =
        Some(json_to_value(&json!({"all": [{"fact": "results.status", "operator": "not_equal", "value": 200}]})));
    alert.transformation = Some(json_to_value(&json!({"engine": "jinja", "template": template})));
    chain("health-alert", vec![alert])
}

/// A control plane and an executor, the two local servers, and the alert chain; the health endpoint
/// answers `health_status`. Returns the env (with its executor), the health URL and the recorded posts.
async fn alert_setup(health_status: u16) -> (TestEnv, legion_tests::env::Executor, String, SocketAddr, Posts) {
    let health = serve_health(Arc::new(AtomicU16::new(health_status))).await;
    let posts: Posts = Arc::default();
    let receiver = serve_receiver(posts.clone()).await;
    let (env, executor) = crate::env_with_executor().await;
    let applied = env.apply_chain(alert_chain(receiver)).await.expect("ApplyChain health-alert");
    assert!(applied.created, "{applied:?}");
    (env, executor, format!("http://{health}/health"), receiver, posts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_posts_exactly_one_alert() {
    let (env, _executor, health_url, receiver, posts) = alert_setup(500).await;
    let pool = env.db().pool().await.expect("pool");
    let root = env.submit_chain("health-alert", "http.request.get", json!({"url": health_url})).await.expect("submit");
    assert_eq!(root.root_id.as_deref(), Some(root.id.as_str()), "the root is its own root_id");

    let tasks = settle(&env, &pool, &root.id, 2, LONG).await;
    let (get_task, alert) = (&tasks[0], &tasks[1]);
    assert_eq!(status(get_task), TaskStatus::Succeeded, "{}", describe(get_task));
    assert_eq!(result_json(get_task)["status"], 500, "{get_task:?}");
    assert_eq!(status(alert), TaskStatus::Succeeded, "{}", describe(alert));
    assert_eq!(alert.function, "http.request.post");
    assert_eq!(
        (alert.chain.as_deref(), alert.root_id.as_deref(), alert.parent_id.as_deref(), alert.depth),
        (Some("health-alert"), Some(root.id.as_str()), Some(root.id.as_str()), 1),
        "{alert:?}"
    );
    assert!(alert.relationship_id.is_some(), "{alert:?}");
    let expected_body = json!({"alert": "health check failed", "status": 500, "checked": health_url});
    assert_eq!(args_json(alert), json!({"url": format!("http://{receiver}/hook"), "body": expected_body}));
    assert_eq!(result_json(alert)["status"], 200, "the receiver answered: {alert:?}");

    // The run settled long ago (see `settle`); the receiver still holds exactly one call.
    wait::holds_for("exactly one alert posted", QUIET, || async {
        match post_count(&posts) {
            1 => Ok(()),
            n => Err(format!("{n} posts")),
        }
    })
    .await
    .expect("one post, no repeat");
    let (content_type, body) = posts.lock().unwrap_or_else(PoisonError::into_inner)[0].clone();
    assert!(content_type.starts_with("application/json"), "sent as JSON: {content_type:?}");
    let body: Value = serde_json::from_slice(&body).expect("the alert body is JSON");
    assert_eq!(body, expected_body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_check_skips_the_alert_and_posts_nothing() {
    let (env, _executor, health_url, _receiver, posts) = alert_setup(200).await;
    let pool = env.db().pool().await.expect("pool");
    let root = env.submit_chain("health-alert", "http.request.get", json!({"url": health_url})).await.expect("submit");

    let tasks = settle(&env, &pool, &root.id, 2, LONG).await;
    assert_eq!(status(&tasks[0]), TaskStatus::Succeeded, "{}", describe(&tasks[0]));
    assert_eq!(result_json(&tasks[0])["status"], 200);
    let skipped = &tasks[1];
    assert_eq!((skipped.function.as_str(), status(skipped)), ("http.request.post", TaskStatus::Skipped), "{skipped:?}");
    let reason = skipped.error.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("conditions not met: ") && reason.contains("results.status") && reason.contains("not_equal"),
        "the reason names the condition: {reason:?}"
    );
    assert_eq!(skipped.attempt, 0, "a skipped child never runs: {skipped:?}");
    assert!(!attempt_rows(&pool, &root.id).await.contains_key(&skipped.id), "no attempt of the skipped child");
    wait::holds_for("no alert posted", QUIET, || async {
        match post_count(&posts) {
            0 => Ok(()),
            n => Err(format!("{n} posts")),
        }
    })
    .await
    .expect("the receiver gets nothing");
}

/// Applies `echo → noop` with `jq .results.items` and starts a run whose root echoes `items` items.
async fn start_fan_out(env: &TestEnv, items: usize) -> (Task, String) {
    let mut fan = relationship("core.util.echo", "core.util.noop");
    fan.transformation = Some(json_to_value(&json!({"engine": "jq", "expr": ".results.items"})));
    let applied = env.apply_chain(chain("fan-out", vec![fan])).await.expect("ApplyChain fan-out");
    let relationship_id = applied.chain.as_ref().map(|c| c.relationships[0].id.clone()).expect("applied chain");
    let items: Vec<Value> = (0..items).map(|i| json!({"i": i})).collect();
    let root = env.submit_chain("fan-out", "core.util.echo", json!({"items": items})).await.expect("submit fan-out");
    (root, relationship_id)
}

/// Runs a fan-out of `n` children and checks that each ran exactly once, in its own position.
async fn fan_out_runs_each_child_once(env: &TestEnv, n: usize, timeout: Duration) {
    let pool = env.db().pool().await.expect("pool");
    let (root, relationship_id) = start_fan_out(env, n).await;
    let expected = i64::try_from(n).expect("small") + 1;
    let tasks = settle(env, &pool, &root.id, expected, timeout).await;
    assert_eq!(status(&tasks[0]), TaskStatus::Succeeded, "{}", describe(&tasks[0]));
    let attempts = attempt_rows(&pool, &root.id).await;
    let mut positions = vec![0_u32; n];
    for child in &tasks[1..] {
        assert_eq!(status(child), TaskStatus::Succeeded, "{}: {}", child.id, describe(child));
        assert_eq!(child.function, "core.util.noop");
        assert_eq!(child.attempt, 1, "ran once: {child:?}");
        assert_eq!(
            (child.parent_id.as_deref(), child.relationship_id.as_deref(), child.depth),
            (Some(root.id.as_str()), Some(relationship_id.as_str()), 1),
            "{child:?}"
        );
        let index = child.fanout_index.expect("a fan-out child has its index");
        let slot = usize::try_from(index).ok().and_then(|i| positions.get_mut(i)).expect("index below n");
        *slot += 1;
        assert_eq!(args_json(child), json!({"i": index}), "item {index} became the args of child {index}");
        assert_eq!(
            attempts.get(&child.id).map(Vec::as_slice),
            Some([(1, "succeeded".to_owned())].as_slice()),
            "exactly one attempt row for {}",
            child.id
        );
    }
    let wrong: Vec<(usize, u32)> = positions.iter().copied().enumerate().filter(|&(_, c)| c != 1).collect();
    assert!(wrong.is_empty(), "every fanout_index 0..{n} exactly once; (index, children) off: {wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_50_runs_each_child_exactly_once() {
    let (env, _executor) = crate::env_with_executor().await;
    fan_out_runs_each_child_once(&env, 50, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_1000_runs_and_1001_is_refused_by_max_fanout() {
    let env = TestEnv::start().await.expect("control plane starts");
    let options = ExecutorOptions { concurrency: 32, ..ExecutorOptions::default() };
    let _executor = env.start_executor(&options).await.expect("executor starts");
    fan_out_runs_each_child_once(&env, 1000, THOUSAND_TIMEOUT).await;

    // One item over the default cap (limits.max_fanout = 1000): one failed child, the parent untouched.
    let pool = env.db().pool().await.expect("pool");
    let (root, _) = start_fan_out(&env, 1001).await;
    let tasks = settle(&env, &pool, &root.id, 2, LONG).await;
    assert_eq!(status(&tasks[0]), TaskStatus::Succeeded, "the parent still succeeds: {}", describe(&tasks[0]));
    let refused = &tasks[1];
    assert_eq!((refused.function.as_str(), status(refused)), ("core.util.noop", TaskStatus::Failed), "{refused:?}");
    let reason = refused.error.as_deref().unwrap_or_default();
    assert!(reason.contains("limits.max_fanout") && reason.contains("1001"), "the reason names the cap: {reason:?}");
    assert_eq!(refused.attempt, 0, "the refused child never runs: {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_runs_to_max_depth_20_then_skips() {
    let (env, _executor) = crate::env_with_executor().await;
    let pool = env.db().pool().await.expect("pool");
    let mut looping = chain("loop", vec![relationship("core.util.echo", "core.util.echo")]);
    looping.max_depth = Some(20);
    env.apply_chain(looping).await.expect("a cycle with max_depth is accepted");
    let args = json!({"hop": "e2e", "n": [1, 2]});
    let root = env.submit_chain("loop", "core.util.echo", args.clone()).await.expect("submit");

    let tasks = settle(&env, &pool, &root.id, 22, DEPTH_TIMEOUT).await;
    let mut by_depth: BTreeMap<u32, Vec<&Task>> = BTreeMap::new();
    for task in &tasks {
        by_depth.entry(task.depth).or_default().push(task);
    }
    let depths: Vec<(u32, usize)> = by_depth.iter().map(|(d, t)| (*d, t.len())).collect();
    assert_eq!(depths, (0..=21).map(|d| (d, 1)).collect::<Vec<_>>(), "one task per depth 0..=21");
    let attempts = attempt_rows(&pool, &root.id).await;
    for depth in 0..=20 {
        let task = by_depth[&depth][0];
        assert_eq!(status(task), TaskStatus::Succeeded, "depth {depth}: {}", describe(task));
        assert_eq!(task.attempt, 1, "depth {depth}: {task:?}");
        assert_eq!(args_json(task), args, "without a transformation the parent's result is the args");
        assert_eq!(attempts.get(&task.id).map(Vec::len), Some(1), "one attempt row at depth {depth}");
        if depth > 0 {
            assert_eq!(task.parent_id.as_deref(), Some(by_depth[&(depth - 1)][0].id.as_str()), "depth {depth}");
        }
    }
    let capped = by_depth[&21][0];
    assert_eq!(status(capped), TaskStatus::Skipped, "{capped:?}");
    assert_eq!(capped.parent_id.as_deref(), Some(by_depth[&20][0].id.as_str()));
    let reason = capped.error.as_deref().unwrap_or_default();
    assert!(reason.contains("depth 21 exceeds the run's depth cap 20"), "the reason names the cap: {reason:?}");
    assert_eq!(capped.attempt, 0, "{capped:?}");
}
