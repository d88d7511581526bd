//! Tasks run end to end: echo over REST and gRPC, an HTTP GET against a local server, a failing
//! function, and the WatchTask stream.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use legion_proto::v1::{TaskStatus, WatchTaskRequest};
use legion_tests::status::from_wire;
use legion_tests::{ExecutorOptions, TaskStatusExt, TestEnv, assert_eventually, env::TASK_TIMEOUT};
use serde_json::json;
use tokio_stream::StreamExt;

use crate::{LONG, describe, env_with_executor, result_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_succeeds_over_rest_and_over_grpc() {
    let (env, _executor) = env_with_executor().await;
    let gateway = env.start_gateway().await.expect("gateway starts");
    let rest = gateway.rest();

    // REST: 201 with the task object, then GET until it succeeded.
    let args = json!({"message": "hello over rest", "n": 7, "nested": {"list": [1, "two", null]}});
    let created = rest
        .post_json("/api/v1/tasks", &json!({"function": "core.util.echo", "args": args}))
        .await
        .expect("POST /api/v1/tasks");
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["function"], "core.util.echo");
    assert_eq!(created.body["args"], args);
    let id = created.body["id"].as_str().expect("task id").to_owned();
    let done = assert_eventually!(TASK_TIMEOUT, "rest task succeeded", || async {
        let r = rest.get(&format!("/api/v1/tasks/{id}")).await.map_err(|e| e.to_string())?;
        match r.body["status"].as_str() {
            Some("succeeded") => Ok(r.body),
            Some(s @ ("failed" | "cancelled" | "timed_out" | "dead_lettered" | "skipped")) => {
                panic!("task ended {s}: {:?}", r.body)
            }
            other => Err(format!("status {other:?}")),
        }
    });
    assert_eq!(done["result"], args, "echo returns its args: {done:?}");
    assert_eq!(done["id"], id.as_str());
    assert!(done["finished_at"].is_string(), "{done:?}");
    assert_eq!(done["attempt"], 1);

    // gRPC: SubmitTask, then GetTask until it succeeded.
    let args = json!({"message": "hello over grpc", "ok": true});
    let task = env.submit("core.util.echo", args.clone()).await.expect("SubmitTask");
    assert_eq!(task.function, "core.util.echo");
    let task = env.wait_for_status(&task.id, TaskStatus::Succeeded, TASK_TIMEOUT).await.expect("grpc task succeeds");
    assert_eq!(result_json(&task), args);
    assert_eq!(task.attempt, 1);
    assert!(task.finished_at.is_some() && task.started_at.is_some(), "{task:?}");
}

/// A local HTTP server with a JSON route and a text route that answers 418.
async fn serve_local_http() -> std::net::SocketAddr {
    let app = Router::new()
        .route("/json", get(|| async { axum::Json(json!({"greeting": "hello", "n": 42, "list": [1, 2]})) }))
        .route("/teapot", get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind local http server");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("local http server") });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_returns_the_local_servers_status_and_body() {
    let server = serve_local_http().await;
    let (env, _executor) = env_with_executor().await;

    let json_task =
        env.submit("http.request.get", json!({"url": format!("http://{server}/json")})).await.expect("submit json get");
    let teapot_task = env
        .submit("http.request.get", json!({"url": format!("http://{server}/teapot")}))
        .await
        .expect("submit teapot get");

    let task = env.wait_for_status(&json_task.id, TaskStatus::Succeeded, TASK_TIMEOUT).await.expect("json get");
    let result = result_json(&task);
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["body"], json!({"greeting": "hello", "n": 42, "list": [1, 2]}), "JSON body parsed: {result}");
    let content_type = result["headers"]["content-type"].as_str().unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "lowercase header names: {result}");

    // Any HTTP status is a successful call.
    let task = env.wait_for_status(&teapot_task.id, TaskStatus::Succeeded, TASK_TIMEOUT).await.expect("teapot get");
    let result = result_json(&task);
    assert_eq!(result["status"], 418, "{result}");
    assert_eq!(result["body"], "short and stout", "text body kept as text: {result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_ends_failed_with_its_message() {
    let (env, _executor) = env_with_executor().await;
    let task = env.submit("core.util.fail", json!({"message": "e2e boom 42"})).await.expect("submit");
    let task = env.wait_terminal(&task.id, TASK_TIMEOUT).await.expect("terminal");
    assert_eq!(from_wire(task.status), TaskStatus::Failed, "{}", describe(&task));
    let error = task.error.clone().unwrap_or_default();
    assert!(error.contains("e2e boom 42"), "error names the function's message: {error:?}");
    assert!(task.result.as_ref().is_none_or(|r| legion_proto::value_to_json(r).is_null()), "{task:?}");

    let attempts = env.attempts(&task.id).await.expect("ListTaskAttempts");
    assert_eq!(attempts.len(), 1, "max_attempts defaults to 1: {attempts:?}");
    assert_eq!(attempts[0].status, "failed", "{attempts:?}");
    assert!(attempts[0].error.as_deref().unwrap_or_default().contains("e2e boom 42"), "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_queued_running_succeeded() {
    let env = TestEnv::start().await.expect("control plane starts");
    // One slot: while a blocker runs, the watched task waits in the queue, so the watch reliably
    // begins before the task runs.
    let options = ExecutorOptions { concurrency: 1, ..ExecutorOptions::default() };
    let _executor = env.start_executor(&options).await.expect("executor starts");
    let blocker = env.submit("core.util.sleep", json!({"ms": 1500})).await.expect("submit blocker");
    env.wait_for_status(&blocker.id, TaskStatus::Running, TASK_TIMEOUT).await.expect("blocker runs");

    let task = env.submit("core.util.sleep", json!({"ms": 300})).await.expect("submit watched");
    let mut stream =
        env.tasks().watch_task(WatchTaskRequest { id: task.id.clone() }).await.expect("WatchTask").into_inner();
    let mut events = Vec::new();
    let ended = tokio::time::timeout(LONG, async {
        while let Some(event) = stream.next().await {
            events.push(event.expect("stream item"));
        }
    })
    .await;
    let statuses: Vec<TaskStatus> = events.iter().map(|e| from_wire(e.status)).collect();
    let names: Vec<String> = statuses.iter().map(TaskStatusExt::rest_name).collect();
    eprintln!("watched statuses: {names:?}");
    assert!(ended.is_ok(), "the stream must end after the terminal status; saw {names:?}");

    assert!(
        matches!(statuses.first(), Some(TaskStatus::Pending | TaskStatus::Queued)),
        "first event is the status at the call: {names:?}"
    );
    assert!(statuses.windows(2).all(|w| w[0].rank() <= w[1].rank()), "statuses in order: {names:?}");
    assert!(statuses.contains(&TaskStatus::Running), "running seen: {names:?}");
    assert_eq!(statuses.last(), Some(&TaskStatus::Succeeded), "ends succeeded: {names:?}");
    assert_eq!(statuses.iter().filter(|s| s.is_terminal()).count(), 1, "one terminal event: {names:?}");
    for event in &events {
        assert_eq!(event.task_id, task.id);
    }
    let last = events.last().and_then(|e| e.task.as_ref()).expect("terminal event carries the task");
    assert_eq!(result_json(last), json!({"slept_ms": 300}), "snapshot has the result");
    let running = events.iter().find(|e| from_wire(e.status) == TaskStatus::Running).expect("running event");
    assert_eq!(running.attempt, 1);

    let blocker = env.wait_terminal(&blocker.id, TASK_TIMEOUT).await.expect("blocker ends");
    assert_eq!(from_wire(blocker.status), TaskStatus::Succeeded, "{}", describe(&blocker));
    assert_eq!(result_json(&blocker), json!({"slept_ms": 1500}));
}
