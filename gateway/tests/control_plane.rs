//! The real router, in-process, in front of a real control plane and executor (started by
//! `legion-tests` on a database and vhost of their own): REST calls go through the gateway's mTLS
//! channel with its gateway certificate, and tasks really run. Every call sends the control plane's
//! bootstrap admin key ([`legion_tests::ADMIN_KEY`]) as `X-API-Key`.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use legion_common::Settings;
use legion_tests::certs::Identity;
use legion_tests::{ADMIN_KEY, ExecutorOptions, TestEnv};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Longest a task of these tests may take to finish.
const TASK_DEADLINE: Duration = Duration::from_secs(30);

fn gateway(env: &TestEnv) -> axum::Router {
    let mut settings = Settings::default();
    settings.control_plane.url = env.control_plane_url();
    settings.tls = env.certs().tls(Identity::Gateway);
    let channel = legion_gateway::client::connect_lazy(&settings).expect("channel settings");
    legion_gateway::router(&settings.api, channel, CancellationToken::new())
}

struct Reply {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: Value,
}

async fn call(app: &axum::Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (content_type, location) = (header(header::CONTENT_TYPE).unwrap_or_default(), header(header::LOCATION));
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024).await.expect("body");
    Reply { status, content_type, location, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-api-key", ADMIN_KEY)
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).header("x-api-key", ADMIN_KEY).body(Body::empty()).expect("request")
}

fn assert_problem(reply: &Reply, status: u16, code: &str, field: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
    assert_eq!(reply.content_type, "application/problem+json", "{}", reply.body);
    assert_eq!(reply.body["code"], code, "{}", reply.body);
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(field), "detail names {field}: {detail:?}");
}

/// Reads a task's `/events` stream to its end and returns the data of each event.
async fn events(app: &axum::Router, id: &str) -> Vec<Value> {
    let response = app.clone().oneshot(get(&format!("/api/v1/tasks/{id}/events"))).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let body = tokio::time::timeout(TASK_DEADLINE, axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024))
        .await
        .expect("the stream ends after the terminal status")
        .expect("body");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    assert!(!text.contains("event: error"), "{text}");
    text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).expect("json data")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_through_the_router() {
    let env = TestEnv::start().await.expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    let app = gateway(&env);

    let ready = call(&app, get("/readyz")).await;
    assert_eq!((ready.status, &ready.body), (StatusCode::OK, &json!({"status": "ready"})));

    // Submit: 201 with the task and its Location; the same idempotency key gives 200 and the same task.
    let args = json!({"message": "through the gateway", "list": [1, "two", null]});
    let submit = json!({"function": "core.util.echo", "args": args, "idempotency_key": "gw-test-1", "priority": 5});
    let created = call(&app, post("/api/v1/tasks", &submit)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(created.location.as_deref(), Some(format!("/api/v1/tasks/{id}").as_str()));
    assert_eq!((&created.body["args"], &created.body["priority"]), (&args, &json!(5)));
    let again = call(&app, post("/api/v1/tasks", &submit)).await;
    assert_eq!((again.status, &again.body["id"]), (StatusCode::OK, &json!(id)), "{}", again.body);

    // Events: status changes in order, ending with the terminal one, which carries the result.
    let seen = events(&app, &id).await;
    let statuses: Vec<&str> = seen.iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses.last(), Some(&"succeeded"), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "succeeded").count(), 1, "{statuses:?}");
    let last = seen.last().expect("events");
    assert_eq!(last["task"]["result"], args, "{last}");
    assert!(last["at"].is_string() && last["attempt"] == 1, "{last}");

    // The stored task, its attempts and the listing agree.
    let task = call(&app, get(&format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(task.status, StatusCode::OK);
    assert_eq!((&task.body["status"], &task.body["result"]), (&json!("succeeded"), &args));
    assert!(task.body["finished_at"].is_string() && task.body["node"].is_string(), "{}", task.body);
    let attempts = call(&app, get(&format!("/api/v1/tasks/{id}/attempts"))).await;
    assert_eq!(attempts.body["attempts"][0]["status"], "succeeded", "{}", attempts.body);
    let page = call(&app, get("/api/v1/tasks?function=core.util.echo&status=succeeded&limit=10")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let ids: Vec<&str> =
        page.body["tasks"].as_array().expect("tasks").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, [id.as_str()]);
    assert_eq!(page.body["next_page_token"], Value::Null);

    // A finished task cannot be cancelled; an unknown one is 404.
    let cancel = call(&app, post(&format!("/api/v1/tasks/{id}/cancel"), &json!({}))).await;
    assert_problem(&cancel, 409, "FAILED_PRECONDITION", &id);
    let missing = call(&app, get("/api/v1/tasks/0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e")).await;
    assert_problem(&missing, 404, "NOT_FOUND", "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_refusals_keep_their_meaning() {
    let env = TestEnv::start().await.expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    let app = gateway(&env);

    let unknown = call(&app, post("/api/v1/tasks", &json!({"function": "nosuch.runner.function"}))).await;
    assert_problem(&unknown, 400, "INVALID_ARGUMENT", "function");
    let priority = call(&app, post("/api/v1/tasks", &json!({"function": "core.util.echo", "priority": 10}))).await;
    assert_problem(&priority, 400, "INVALID_ARGUMENT", "priority");
    // Over limits.max_payload_bytes (1 MiB) but under api.max_body_bytes (2 MiB): the control plane names args.
    let big = json!({"function": "core.util.echo", "args": {"data": "x".repeat(1024 * 1024 + 1)}});
    assert_problem(&call(&app, post("/api/v1/tasks", &big)).await, 400, "INVALID_ARGUMENT", "args");

    // A delayed task is cancelled before it starts; its event stream is the one terminal event.
    let delayed = call(&app, post("/api/v1/tasks", &json!({"function": "core.util.echo", "delay_ms": 600_000}))).await;
    assert_eq!(delayed.status, StatusCode::CREATED, "{}", delayed.body);
    let id = delayed.body["id"].as_str().expect("id").to_owned();
    let cancelled = call(&app, post(&format!("/api/v1/tasks/{id}/cancel"), &json!({}))).await;
    assert_eq!((cancelled.status, &cancelled.body["status"]), (StatusCode::OK, &json!("cancelled")));
    let seen = events(&app, &id).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["status"], "cancelled");

    // The catalog: the executor's extensions and node; a disabled extension refuses submits with 409.
    let extensions = call(&app, get("/api/v1/extensions")).await;
    let names: Vec<&str> = extensions.body["extensions"]
        .as_array()
        .expect("extensions")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"core"), "{names:?}");
    let nodes = call(&app, get("/api/v1/nodes")).await;
    let node = &nodes.body["nodes"][0];
    assert_eq!((&node["name"], &node["status"]), (&json!(env.certs().node_name()), &json!("active")), "{node}");
    let disabled = call(&app, post("/api/v1/extensions/core/disable", &json!({}))).await;
    assert_eq!((disabled.status, &disabled.body["disabled"]), (StatusCode::OK, &json!(true)), "{}", disabled.body);
    let refused = call(&app, post("/api/v1/tasks", &json!({"function": "core.util.echo"}))).await;
    assert_problem(&refused, 409, "FAILED_PRECONDITION", "core");
    let enabled = call(&app, post("/api/v1/extensions/core/enable", &json!({}))).await;
    assert_eq!(enabled.body["disabled"], false, "{}", enabled.body);
    let unknown = call(&app, post("/api/v1/extensions/nosuch/enable", &json!({}))).await;
    assert_problem(&unknown, 404, "NOT_FOUND", "nosuch");
}

/// A chain through the gateway: applied (201, then 200 with the same version when unchanged), refused
/// by field when a rule is malformed, run (a fan-out of three and a skipped child), and its run listed
/// with `root_id` with each task's position in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_run_through_the_router() {
    let env = TestEnv::start().await.expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    let app = gateway(&env);

    let chain = json!({
        "name": "gw-fanout",
        "description": "three noops and a skip",
        "relationships": [
            {"trigger": "core.util.echo", "action": "core.util.noop",
             "transformation": {"engine": "static", "value": [{"i": 0}, {"i": 1}, {"i": 2}]}},
            {"trigger": "core.util.echo", "action": "core.util.noop",
             "conditions": {"fact": "results.go", "operator": "is_true"}}
        ]
    });
    let created = call(&app, post("/api/v1/chains", &chain)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.location.as_deref(), Some("/api/v1/chains/gw-fanout"));
    assert_eq!((&created.body["version"], &created.body["relationships"][1]["active"]), (&json!(1), &json!(true)));
    let again = call(&app, post("/api/v1/chains", &chain)).await;
    assert_eq!((again.status, &again.body["version"]), (StatusCode::OK, &json!(1)), "{}", again.body);
    let shown = call(&app, get("/api/v1/chains/gw-fanout")).await;
    assert_eq!((shown.status, &shown.body["description"]), (StatusCode::OK, &json!("three noops and a skip")));
    let listed = call(&app, get("/api/v1/chains?limit=10")).await;
    assert_eq!(listed.body["chains"][0]["name"], "gw-fanout", "{}", listed.body);

    let mut bad = chain.clone();
    bad["relationships"][1]["conditions"]["operator"] = json!("equals");
    let refused = call(&app, post("/api/v1/chains", &bad)).await;
    assert_problem(&refused, 400, "INVALID_ARGUMENT", "relationships[1].conditions");
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("equals")), "{}", refused.body);

    let submit = json!({"function": "core.util.echo", "args": {"go": false}, "chain": "gw-fanout"});
    let root = call(&app, post("/api/v1/tasks", &submit)).await;
    assert_eq!(root.status, StatusCode::CREATED, "{}", root.body);
    let root_id = root.body["id"].as_str().expect("id").to_owned();
    let uri = format!("/api/v1/tasks?root_id={root_id}&limit=1000");
    let run = legion_tests::assert_eventually!(TASK_DEADLINE, "the chain run finishes", || async {
        let page = call(&app, get(&uri)).await;
        let tasks = page.body["tasks"].as_array().cloned().unwrap_or_default();
        let done = tasks.len() == 5
            && tasks.iter().all(|t| ["succeeded", "skipped"].contains(&t["status"].as_str().unwrap_or("")));
        if done { Ok(tasks) } else { Err(page.body.to_string()) }
    });
    let root_task = run.iter().find(|t| t["id"] == json!(root_id)).expect("the root is listed");
    assert_eq!(
        (&root_task["depth"], &root_task["chain_version"], &root_task["fanout_index"]),
        (&json!(0), &json!(1), &json!(null))
    );
    let mut fanout: Vec<i64> = run
        .iter()
        .filter(|t| t["status"] == "succeeded" && t["function"] == "core.util.noop")
        .map(|t| {
            assert_eq!(
                (&t["depth"], &t["parent_id"], &t["chain_version"]),
                (&json!(1), &json!(root_id), &json!(1)),
                "{t}"
            );
            t["fanout_index"].as_i64().expect("fanout_index")
        })
        .collect();
    fanout.sort_unstable();
    assert_eq!(fanout, [0, 1, 2]);
    let skipped: Vec<&Value> = run.iter().filter(|t| t["status"] == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{run:?}");
    assert!(skipped[0]["error"].as_str().is_some_and(|e| !e.is_empty()), "a skip has its reason: {}", skipped[0]);

    let deleted = call(
        &app,
        Request::delete("/api/v1/chains/gw-fanout")
            .header("x-api-key", ADMIN_KEY)
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_problem(&call(&app, get("/api/v1/chains/gw-fanout")).await, 404, "NOT_FOUND", "gw-fanout");
}

/// Schedules through the gateway in front of the real control plane: created (201 with its Location
/// and its next slots as RFC 3339 UTC instants), refused by field, previewed with the scheduler's
/// code, fired by the leader (its fires name the tasks), paused and resumed, exported and created
/// again, and deleted; the node list shows the one control plane leading under the scheduler lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_run_through_the_router() {
    let env = TestEnv::start().await.expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    let app = gateway(&env);

    let body = json!({"name": "gw-tick", "function": "core.util.echo", "args": {"n": 1}, "interval_ms": 1000});
    let created = call(&app, post("/api/v1/schedules", &body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.location.as_deref(), Some("/api/v1/schedules/gw-tick"));
    assert_eq!(
        (&created.body["cron"], &created.body["timezone"], &created.body["paused"]),
        (&Value::Null, &json!("UTC"), &json!(false))
    );
    let next: Vec<&str> =
        created.body["next_fires"].as_array().expect("next_fires").iter().filter_map(Value::as_str).collect();
    assert_eq!(next.len(), 5, "{}", created.body);
    assert!(next.iter().all(|t| t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{next:?}");
    assert_problem(&call(&app, post("/api/v1/schedules", &body)).await, 409, "ALREADY_EXISTS", "gw-tick");
    let bad_cron = json!({"name": "gw-bad", "function": "core.util.echo", "cron": "61 * * * *"});
    assert_problem(&call(&app, post("/api/v1/schedules", &bad_cron)).await, 400, "INVALID_ARGUMENT", "cron");
    let bad_zone =
        json!({"name": "gw-bad", "function": "core.util.echo", "cron": "0 * * * *", "timezone": "Mars/Base"});
    assert_problem(&call(&app, post("/api/v1/schedules", &bad_zone)).await, 400, "INVALID_ARGUMENT", "timezone");

    let preview =
        "/api/v1/schedule-preview?cron=30%202%20*%20*%20*&timezone=America/New_York&from=2026-03-07T00:00:00Z&count=3";
    let preview = call(&app, get(preview)).await;
    assert_eq!(
        (preview.status, &preview.body),
        (StatusCode::OK, &json!({"slots": ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]}))
    );

    let fired = legion_tests::assert_eventually!(TASK_DEADLINE, "the schedule fires a task", || async {
        let page = call(&app, get("/api/v1/schedules/gw-tick/fires?limit=10")).await;
        let fires = page.body["fires"].as_array().cloned().unwrap_or_default();
        match fires.iter().find(|f| f["outcome"] == "fired" && f["task_id"].is_string()) {
            Some(fire) => Ok(fire.clone()),
            None => Err(page.body.to_string()),
        }
    });
    let task_id = fired["task_id"].as_str().expect("task_id");
    let task = call(&app, get(&format!("/api/v1/tasks/{task_id}"))).await;
    assert_eq!((task.status, &task.body["function"]), (StatusCode::OK, &json!("core.util.echo")), "{}", task.body);
    assert!(call(&app, get("/api/v1/schedules/gw-tick")).await.body["last_fire"].is_object());

    let paused = call(&app, post("/api/v1/schedules/gw-tick/pause", &json!({}))).await;
    assert_eq!(
        (paused.status, &paused.body["paused"], &paused.body["next_fires"]),
        (StatusCode::OK, &json!(true), &json!([]))
    );
    let resumed = call(&app, post("/api/v1/schedules/gw-tick/resume", &json!({}))).await;
    assert_eq!(
        (&resumed.body["paused"], resumed.body["next_fires"].as_array().map(Vec::len)),
        (&json!(false), Some(5))
    );

    let nodes = call(&app, get("/api/v1/nodes")).await;
    let leaders: Vec<&Value> = nodes.body["control_planes"]
        .as_array()
        .expect("control_planes")
        .iter()
        .filter(|c| c["leader"] == true)
        .collect();
    assert_eq!(leaders.len(), 1, "{}", nodes.body);
    assert_eq!(nodes.body["leadership"]["holder"], leaders[0]["name"], "{}", nodes.body);

    let mut exported = call(&app, get("/api/v1/schedules/gw-tick")).await.body;
    exported["name"] = json!("gw-tock");
    let again = call(&app, post("/api/v1/schedules", &exported)).await;
    assert_eq!(again.status, StatusCode::CREATED, "an exported schedule is accepted again: {}", again.body);
    assert_eq!((&again.body["interval_ms"], &again.body["args"]), (&json!(1000), &json!({"n": 1})));

    let listed = call(&app, get("/api/v1/schedules?limit=1")).await;
    assert_eq!(
        (&listed.body["schedules"][0]["name"], listed.body["next_page_token"].is_string()),
        (&json!("gw-tick"), true)
    );
    for name in ["gw-tick", "gw-tock"] {
        let deleted = call(
            &app,
            Request::delete(format!("/api/v1/schedules/{name}"))
                .header("x-api-key", ADMIN_KEY)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
        assert_problem(&call(&app, get(&format!("/api/v1/schedules/{name}"))).await, 404, "NOT_FOUND", name);
    }
}
