//! Event streams (`/api/v1/tasks/{id}/events`) that end before their task does, against a real control
//! plane and executor (started by `legion-tests` on a database and vhost of their own): the connection
//! to the control plane is cut mid-stream (through a TCP proxy the test closes), or the gateway shuts
//! down. Either way the stream's last event is a 503 `UNAVAILABLE` problem, so clients reconnect.
//! The task object's `region` comes back as submitted. Every call sends the control plane's bootstrap
//! admin key ([`legion_tests::ADMIN_KEY`]) as `X-API-Key`.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures_util::StreamExt;
use legion_common::Settings;
use legion_tests::certs::Identity;
use legion_tests::rest::RestClient;
use legion_tests::{ADMIN_KEY, ExecutorOptions, TestEnv};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Longest a step of these tests may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A task that stays `scheduled` for 10 minutes, so its event stream stays open.
fn delayed_task() -> Value {
    json!({"function": "core.util.echo", "delay_ms": 600_000, "region": "eu-west"})
}

/// A TCP proxy to `upstream`; cancelling `cut` closes every proxied connection and the listener, as a
/// control plane that went away would.
struct Proxy {
    addr: SocketAddr,
    cut: CancellationToken,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

fn gateway_settings(env: &TestEnv, control_plane_url: String) -> Settings {
    let mut settings = Settings::default();
    settings.control_plane.url = control_plane_url;
    settings.tls = env.certs().tls(Identity::Gateway);
    settings
}

/// One Server-Sent Event: its `event` name (`message` when unnamed) and its data as JSON.
#[derive(Debug)]
struct SseEvent {
    name: String,
    data: Value,
}

/// Splits complete events off the front of `buffer`; comment lines (keep-alives) are skipped.
fn take_events(buffer: &mut String) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = "message".to_owned();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
        if !data.is_empty() {
            events.push(SseEvent { name, data: serde_json::from_str(&data).expect("event data is json") });
        }
    }
    events
}

/// Reads events from `chunks` until `enough` holds for those read so far, or the stream ends.
async fn read_events<S, B, E>(chunks: &mut S, seen: &mut Vec<SseEvent>, enough: impl Fn(&[SseEvent]) -> bool)
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut buffer = String::new();
    while !enough(seen) {
        let chunk = tokio::time::timeout(DEADLINE, chunks.next()).await.expect("an event or the end in time");
        let Some(chunk) = chunk else { break };
        let chunk = chunk.unwrap_or_else(|e| panic!("event stream failed: {e}"));
        buffer.push_str(std::str::from_utf8(chunk.as_ref()).expect("utf-8"));
        seen.extend(take_events(&mut buffer));
    }
}

fn assert_final_problem(events: &[SseEvent], detail_starts: &str) {
    let last = events.last().expect("events");
    assert_eq!(last.name, "error", "{events:?}");
    assert_eq!((&last.data["status"], &last.data["code"]), (&json!(503), &json!("UNAVAILABLE")), "{events:?}");
    let detail = last.data["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(detail_starts), "{detail:?} should start with {detail_starts:?}");
    assert_eq!(events.iter().filter(|e| e.name == "error").count(), 1, "{events:?}");
}

/// Regression: when the control plane became unreachable mid-stream, the final problem was 500
/// `INTERNAL`; it is 503 `UNAVAILABLE`, and so is every later call while the control plane is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_cut_mid_stream_ends_with_503_unavailable() {
    let env = TestEnv::start().await.expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    let proxy = Proxy::start(env.control_plane_addr()).await;
    let settings = gateway_settings(&env, format!("https://{}", proxy.addr));
    let channel = legion_gateway::client::connect_lazy(&settings).expect("channel settings");
    let app = legion_gateway::router(&settings.api, channel, CancellationToken::new());

    let submit = Request::post("/api/v1/tasks")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-api-key", ADMIN_KEY)
        .body(Body::from(delayed_task().to_string()))
        .expect("request");
    let response = app.clone().oneshot(submit).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    let task: Value = serde_json::from_slice(&body).expect("task json");
    assert_eq!((&task["region"], &task["node"]), (&json!("eu-west"), &Value::Null), "{task}");
    let id = task["id"].as_str().expect("id").to_owned();

    let events = Request::get(format!("/api/v1/tasks/{id}/events"))
        .header("x-api-key", ADMIN_KEY)
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(events).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let mut chunks = response.into_body().into_data_stream();
    let mut seen = Vec::new();
    read_events(&mut chunks, &mut seen, |events| !events.is_empty()).await;
    assert_eq!((seen[0].name.as_str(), &seen[0].data["status"]), ("message", &json!("scheduled")), "{seen:?}");
    assert_eq!(seen[0].data["task"]["region"], "eu-west");

    proxy.cut.cancel();
    read_events(&mut chunks, &mut seen, |_| false).await;
    assert_final_problem(&seen, "control plane unavailable");

    let get = Request::get(format!("/api/v1/tasks/{id}"))
        .header("x-api-key", ADMIN_KEY)
        .body(Body::empty())
        .expect("request");
    let response = app.oneshot(get).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A gateway that shuts down ends its open event streams with a final 503 problem, then stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_with_503_unavailable() {
    let env = TestEnv::start().await.expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    let mut settings = gateway_settings(&env, env.control_plane_url());
    settings.api.listen = legion_tests::ports::free_addr().expect("free port");
    let base = format!("http://{}", settings.api.listen);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(legion_gateway::run(settings, shutdown.clone()));

    // The harness's REST client sends the bootstrap admin key.
    let rest = RestClient::new(&base).expect("client");
    legion_tests::rest::until_ready(&rest, DEADLINE).await.expect("gateway ready");
    let created = rest.post_json("/api/v1/tasks", &delayed_task()).await.expect("submit");
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();

    let response = env
        .http()
        .get(format!("{base}/api/v1/tasks/{id}/events"))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .expect("events");
    assert_eq!(response.status().as_u16(), 200);
    let mut chunks = Box::pin(futures_util::stream::unfold(response, |mut response| async move {
        match response.chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), response)),
            Ok(None) => None,
            Err(e) => Some((Err(e), response)),
        }
    }));
    let mut seen = Vec::new();
    read_events(&mut chunks, &mut seen, |events| !events.is_empty()).await;
    assert_eq!(seen[0].data["status"], "scheduled", "{seen:?}");

    shutdown.cancel();
    read_events(&mut chunks, &mut seen, |_| false).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_final_problem(&seen, "gateway shutting down");
    let stopped = tokio::time::timeout(DEADLINE, server).await.expect("the gateway stops once its streams end");
    stopped.expect("no panic").expect("a clean stop");
}
