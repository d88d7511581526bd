//! The executor against a real RabbitMQ (each test in its own vhost, created with `rabbitmqctl` and
//! deleted afterwards) and an in-memory control plane (our `ControlPlane` trait, as in the unit
//! tests). End-to-end tests with the real control plane live in the workspace's `tests/` crate.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use legion_common::Settings;
use legion_common::broker::{self, DEAD_LETTER_QUEUE, TaskMessage};
use legion_proto::v1::{ExtensionState, FailureKind, RunningAttempt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "../src/fake.rs"]
#[allow(dead_code)]
mod fake;

/// What `fake.rs` expects at `crate::client`.
mod client {
    pub use legion_executor::client::ControlPlane;
}

use fake::Fake;

/// A vhost of our own, deleted on drop.
struct Vhost(String);

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl must be installed (run as root)");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Vhost {
    fn new() -> Self {
        let name = format!("legion-ex-test-{}", &Uuid::new_v4().simple().to_string()[..12]);
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self(name)
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }

    /// The test's completion spool, removed with the vhost.
    fn spool_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}-spool", self.0))
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.0]).output();
        let _ = std::fs::remove_dir_all(self.spool_dir());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn settings(vhost: &Vhost, concurrency: u32) -> Settings {
    let mut s = Settings::default();
    s.transport.url = vhost.url();
    s.executor.name = "exec-test".into();
    s.executor.extensions = vec!["core".into(), "log".into()];
    s.executor.concurrency = concurrency;
    s.executor.heartbeat_ms = 100;
    s.executor.shutdown_grace_ms = 5000;
    s.executor.admin_listen = ([127, 0, 0, 1], free_port()).into();
    s.executor.spool_dir = Some(vhost.spool_dir());
    s
}

/// A running executor.
struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(settings: Settings, fake: &Arc<Fake>) -> Running {
    let shutdown = CancellationToken::new();
    let cp: Arc<dyn legion_executor::client::ControlPlane> = fake.clone();
    let task = tokio::spawn(legion_executor::run_with(settings, cp, shutdown.clone()));
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("executor stops in time")
            .expect("join")
            .expect("clean shutdown");
    }
}

async fn eventually(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn channel(vhost: &Vhost) -> (Connection, Channel) {
    let transport = legion_common::settings::TransportSettings {
        url: vhost.url(),
        ..legion_common::settings::TransportSettings::default()
    };
    let connection = broker::connect(&transport, "legion-executor test").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    broker::declare_topology(&channel).await.expect("topology");
    for ext in ["core", "log"] {
        broker::declare_extension_queue(&channel, ext, None).await.expect("queue");
    }
    (connection, channel)
}

async fn publish(channel: &Channel, function: &str, args: Value, timeout_ms: u32, priority: u8) -> String {
    let task_id = Uuid::now_v7();
    let m = TaskMessage { task_id, dispatch: 1, function: function.into(), args, timeout_ms };
    publish_raw(channel, function, &serde_json::to_vec(&m).expect("encode"), priority).await;
    task_id.to_string()
}

async fn publish_raw(channel: &Channel, routing_key: &str, body: &[u8], priority: u8) {
    channel
        .basic_publish(
            broker::TASK_EXCHANGE.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2).with_priority(priority),
        )
        .await
        .expect("publish")
        .await
        .expect("publish confirm");
}

/// Ready messages in `queue` (unacked ones are not counted).
async fn depth(channel: &Channel, queue: &str) -> u32 {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    q.message_count()
}

/// Closes the executor's broker connection (only ours: named, in our vhost), as a network failure
/// would; the broker requeues its unacked messages and redelivers them.
fn close_executor_connection(vhost: &Vhost) {
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "--no-table-headers", "pid", "vhost", "client_properties"])
        .output()
        .expect("list connections");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = listing
        .lines()
        .find(|l| l.contains(&vhost.0) && l.contains("legion-executor exec-test"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("executor connection not found in\n{listing}"))
        .to_owned();
    rabbitmqctl(&["close_connection", &pid, "test closes the connection"]);
}

fn started(fake: &Fake, task_id: &str) -> bool {
    fake.starts.lock().expect("lock").iter().any(|s| s.task_id == task_id)
}

#[tokio::test]
async fn runs_tasks_reports_them_and_acks_only_after_completion() {
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    let settings = settings(&vhost, 8);
    let admin = settings.executor.admin_listen;
    let executor = start(settings, &fake);
    legion_common::install_crypto_provider();
    let http = reqwest::Client::new();
    eventually("readiness", Duration::from_secs(10), async || {
        http.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    let mut echoes = Vec::new();
    for n in 0..50 {
        echoes.push(publish(&ch, "core.util.echo", json!({"n": n}), 5000, 0).await);
    }
    let failing = publish(&ch, "core.util.fail", json!({"message": "expected"}), 5000, 0).await;
    let logged = publish(&ch, "log.entry.write", json!({"message": "hello from a task"}), 5000, 0).await;
    publish_raw(&ch, "core.util.echo", b"{not a task message", 0).await;

    eventually("every completion", Duration::from_secs(20), async || {
        fake.completions.lock().expect("lock").len() == 52
    })
    .await;
    for (n, id) in echoes.iter().enumerate() {
        assert_eq!(fake.result(id), Some(json!({"n": n})));
    }
    assert_eq!(fake.failure(&failing), Some((FailureKind::Error as i32, "expected".into())));
    assert_eq!(fake.result(&logged), Some(json!({"written": true})));
    eventually("the malformed message dead-lettered", Duration::from_secs(10), async || {
        depth(&ch, DEAD_LETTER_QUEUE).await == 1
    })
    .await;

    let metrics =
        http.get(format!("http://{admin}/metrics")).send().await.expect("metrics").text().await.expect("body");
    for expected in [
        "legion_executor_deliveries_total{extension=\"core\"} 52",
        "legion_executor_runs_total{outcome=\"succeeded\"} 51",
        "legion_executor_runs_total{outcome=\"failed\"} 1",
        "legion_executor_malformed_deliveries_total 1",
        "legion_executor_starts_total{decision=\"run\"} 52",
    ] {
        assert!(metrics.contains(expected), "missing {expected} in\n{metrics}");
    }

    executor.stop().await;
    // Every message was acked: nothing came back to the queues when the channel closed.
    assert_eq!(depth(&ch, "legion.ext.core").await, 0);
    assert_eq!(depth(&ch, "legion.ext.log").await, 0);
    let registration = fake.registrations.lock().expect("lock")[0].clone();
    assert_eq!((registration.name.as_str(), registration.concurrency), ("exec-test", 8));
    let names: Vec<&str> = registration.extensions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["core", "log"]);
    let last = fake.heartbeats.lock().expect("lock").last().cloned().expect("heartbeats");
    assert!(last.draining && last.running.is_empty());
    assert!(last.extensions.iter().all(|e| e.state() == ExtensionState::Stopped), "{last:?}");
}

#[tokio::test]
async fn dropped_tasks_are_acked_without_running() {
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    let executor = start(settings(&vhost, 4), &fake);
    let task_id = Uuid::now_v7();
    fake.drop.lock().expect("lock").insert(task_id.to_string());
    let m = TaskMessage { task_id, dispatch: 3, function: "core.util.echo".into(), args: json!({}), timeout_ms: 1000 };
    publish_raw(&ch, "core.util.echo", &serde_json::to_vec(&m).expect("encode"), 0).await;
    let id = task_id.to_string();
    eventually("the start", Duration::from_secs(10), async || started(&fake, &id)).await;
    executor.stop().await;
    assert!(fake.completion(&id).is_none());
    assert_eq!(depth(&ch, "legion.ext.core").await, 0, "the dropped message was acked");
}

#[tokio::test]
async fn a_priority_nine_task_overtakes_the_backlog() {
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    let mut backlog = Vec::new();
    for _ in 0..20 {
        backlog.push(publish(&ch, "core.util.sleep", json!({"ms": 30}), 5000, 0).await);
    }
    let executor = start(settings(&vhost, 1), &fake);
    eventually("the first start", Duration::from_secs(10), async || !fake.starts.lock().expect("lock").is_empty())
        .await;
    let urgent = publish(&ch, "core.util.echo", json!("urgent"), 5000, 9).await;
    eventually("the urgent task", Duration::from_secs(20), async || fake.completion(&urgent).is_some()).await;
    let order: Vec<String> = fake.starts.lock().expect("lock").iter().map(|s| s.task_id.clone()).collect();
    let position = order.iter().position(|id| *id == urgent).expect("started");
    assert!(position <= 3, "priority 9 started at position {position} behind a backlog of 20");
    executor.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_short_tasks_and_requeues_what_outlives_the_grace() {
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    let mut s = settings(&vhost, 2);
    s.executor.shutdown_grace_ms = 500;
    let executor = start(s, &fake);
    let short = publish(&ch, "core.util.sleep", json!({"ms": 200}), 5000, 0).await;
    let long = publish(&ch, "core.util.sleep", json!({"ms": 60_000}), 120_000, 0).await;
    eventually("both running", Duration::from_secs(10), async || started(&fake, &short) && started(&fake, &long)).await;
    let stopping = Instant::now();
    executor.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(10), "shutdown took {:?}", stopping.elapsed());
    assert_eq!(fake.result(&short), Some(json!({"slept_ms": 200})), "in-flight work finishes within the grace");
    assert!(fake.completion(&long).is_none(), "the long task is abandoned, not completed");
    assert_eq!(depth(&ch, "legion.ext.core").await, 1, "the long task's message is back in its queue");
    let heartbeats = fake.heartbeats.lock().expect("lock").clone();
    assert!(
        heartbeats.iter().any(|h| h.draining && h.extensions.iter().all(|e| e.state() == ExtensionState::Stopping))
    );
}

#[tokio::test]
async fn heartbeat_aborts_end_the_attempt_as_aborted() {
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    let executor = start(settings(&vhost, 2), &fake);
    let id = publish(&ch, "core.util.sleep", json!({"ms": 60_000}), 120_000, 0).await;
    eventually("running", Duration::from_secs(10), async || {
        fake.heartbeats.lock().expect("lock").iter().any(|h| h.running.iter().any(|r| r.task_id == id))
    })
    .await;
    fake.abort.lock().expect("lock").push(RunningAttempt { task_id: id.clone(), attempt: 1 });
    eventually("the aborted completion", Duration::from_secs(10), async || fake.completion(&id).is_some()).await;
    assert_eq!(fake.failure(&id), Some((FailureKind::Error as i32, "aborted".into())));
    executor.stop().await;
    assert_eq!(depth(&ch, "legion.ext.core").await, 0);
}

#[tokio::test]
async fn disabled_extensions_are_not_consumed_until_enabled() {
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    fake.disabled.lock().expect("lock").push("log".into());
    let executor = start(settings(&vhost, 2), &fake);
    let echo = publish(&ch, "core.util.echo", json!(1), 5000, 0).await;
    let log = publish(&ch, "log.entry.write", json!({"message": "waits"}), 5000, 0).await;
    eventually("the echo", Duration::from_secs(10), async || fake.completion(&echo).is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!started(&fake, &log), "a disabled extension's queue is not consumed");
    let last = fake.heartbeats.lock().expect("lock").last().cloned().expect("heartbeat");
    assert!(last.extensions.iter().all(|e| e.name != "log"), "a disabled extension is left to the operator's state");
    assert!(last.extensions.iter().any(|e| e.name == "core" && e.state() == ExtensionState::Running));
    fake.disabled.lock().expect("lock").clear();
    eventually("the log task after enabling", Duration::from_secs(10), async || fake.completion(&log).is_some()).await;
    executor.stop().await;
}

#[tokio::test]
async fn consumption_resumes_after_the_broker_closes_the_connection() {
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    let executor = start(settings(&vhost, 2), &fake);
    let first = publish(&ch, "core.util.echo", json!(1), 5000, 0).await;
    eventually("the first task", Duration::from_secs(10), async || fake.completion(&first).is_some()).await;
    close_executor_connection(&vhost);
    let (_conn2, ch2) = channel(&vhost).await;
    let second = publish(&ch2, "core.util.echo", json!(2), 5000, 0).await;
    eventually("the task after reconnecting", Duration::from_secs(30), async || fake.completion(&second).is_some())
        .await;
    executor.stop().await;
}

fn starts_of(fake: &Fake, task_id: &str) -> usize {
    fake.starts.lock().expect("lock").iter().filter(|s| s.task_id == task_id).count()
}

async fn metric(admin: std::net::SocketAddr, name: &str) -> String {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.expect("metrics").text().await.expect("body");
    text.lines().find(|l| l.starts_with(name)).map(str::to_owned).unwrap_or_default()
}

/// Regression (operator repro 1): the broker connection dropped while a task ran; after reconnecting
/// the executor received the redelivered message, started it again (a takeover) and ran the side
/// effect twice. Now the redelivery is attached to the running attempt and acked after its completion.
#[tokio::test]
async fn a_redelivery_while_the_attempt_runs_is_not_run_twice() {
    const SLEEP_MS: u64 = 12_000;
    legion_common::install_crypto_provider();
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    let s = settings(&vhost, 4);
    let admin = s.executor.admin_listen;
    let executor = start(s, &fake);
    // The attempt must still be running when the executor has reconnected and received the redelivery;
    // on a loaded machine closing the connection and reconnecting takes seconds, so it sleeps long.
    let id = publish(&ch, "core.util.sleep", json!({"ms": SLEEP_MS}), 60_000, 0).await;
    eventually("the attempt running", Duration::from_secs(10), async || started(&fake, &id)).await;
    close_executor_connection(&vhost);
    eventually("the redelivery attached", Duration::from_secs(20), async || {
        metric(admin, "legion_executor_attached_deliveries_total").await.ends_with(" 1")
    })
    .await;
    eventually("the completion", Duration::from_secs(40), async || fake.completion(&id).is_some()).await;
    // The redelivery was acked with the completion: nothing left in the queue, nothing unacked (a
    // channel close would requeue an unacked message, which the final check would see).
    tokio::time::sleep(Duration::from_millis(200)).await;
    executor.stop().await;
    assert_eq!(starts_of(&fake, &id), 1, "one StartTask: the redelivery was not started again");
    assert_eq!(fake.completions.lock().expect("lock").iter().filter(|c| c.task_id == id).count(), 1);
    assert_eq!(fake.result(&id), Some(json!({"slept_ms": SLEEP_MS})));
    assert_eq!(depth(&ch, "legion.ext.core").await, 0, "the redelivery was acked");
}

/// Regression (operator repro 3): deleting an extension's queue made the broker cancel the consumer;
/// the executor never consumed again while reporting itself ready and the extension running.
#[tokio::test]
async fn a_consumer_cancelled_by_the_broker_consumes_again() {
    legion_common::install_crypto_provider();
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    let s = settings(&vhost, 2);
    let admin = s.executor.admin_listen;
    let executor = start(s, &fake);
    let http = reqwest::Client::new();
    let ready = async || http.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
    eventually("readiness", Duration::from_secs(10), ready).await;
    let beats_before = fake.heartbeats.lock().expect("lock").len();
    ch.queue_delete("legion.ext.log".into(), lapin::options::QueueDeleteOptions::default()).await.expect("delete");
    eventually("the extension reported stopped", Duration::from_secs(10), async || {
        fake.heartbeats.lock().expect("lock")[beats_before..]
            .iter()
            .any(|h| h.extensions.iter().any(|e| e.name == "log" && e.state() == ExtensionState::Stopped))
    })
    .await;
    // The control plane declares the queue again when it publishes.
    broker::declare_extension_queue(&ch, "log", None).await.expect("queue");
    let logged = publish(&ch, "log.entry.write", json!({"message": "after the queue came back"}), 5000, 0).await;
    eventually("the task of the re-created queue", Duration::from_secs(20), async || {
        fake.completion(&logged).is_some()
    })
    .await;
    eventually("ready again", Duration::from_secs(10), ready).await;
    let last = fake.heartbeats.lock().expect("lock").last().cloned().expect("heartbeat");
    assert!(last.extensions.iter().any(|e| e.name == "log" && e.state() == ExtensionState::Running), "{last:?}");
    executor.stop().await;
}

/// An executor consumes the queues of its own region besides the region-free ones, and never those of
/// another region.
#[tokio::test]
async fn region_tasks_go_only_to_executors_of_their_region() {
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    broker::declare_extension_queue(&ch, "core", Some("eu-west")).await.expect("region queue");
    let function = legion_common::FunctionName::parse("core.util.echo").expect("function");
    let task_id = Uuid::now_v7();
    let m = TaskMessage { task_id, dispatch: 1, function: function.to_string(), args: json!("eu"), timeout_ms: 5000 };
    let routing_key = broker::routing_key(&function, Some("eu-west"));
    publish_raw(&ch, &routing_key, &serde_json::to_vec(&m).expect("encode"), 0).await;
    let regional = task_id.to_string();
    eventually("the task in the region's queue", Duration::from_secs(10), async || {
        depth(&ch, "legion.ext.core.eu-west").await == 1
    })
    .await;

    let elsewhere = Arc::new(Fake::default());
    let executor = start(settings(&vhost, 2), &elsewhere); // region `default`
    let anywhere = publish(&ch, "core.util.echo", json!("any"), 5000, 0).await;
    eventually("the region-free task", Duration::from_secs(10), async || elsewhere.completion(&anywhere).is_some())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!started(&elsewhere, &regional), "an executor of another region does not take it");
    executor.stop().await;
    assert_eq!(depth(&ch, "legion.ext.core.eu-west").await, 1);

    let local = Arc::new(Fake::default());
    let mut s = settings(&vhost, 2);
    s.executor.region = "eu-west".into();
    let executor = start(s, &local);
    eventually("the region task", Duration::from_secs(10), async || local.completion(&regional).is_some()).await;
    assert_eq!(local.result(&regional), Some(json!("eu")));
    let anywhere = publish(&ch, "core.util.echo", json!("any"), 5000, 0).await;
    eventually("a region-free task too", Duration::from_secs(10), async || local.completion(&anywhere).is_some()).await;
    executor.stop().await;
    assert_eq!(depth(&ch, "legion.ext.core.eu-west").await, 0);
}

fn spool_files(vhost: &Vhost) -> usize {
    std::fs::read_dir(vhost.spool_dir())
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl")).count())
        .unwrap_or(0)
}

async fn metrics_text(http: &reqwest::Client, admin: std::net::SocketAddr) -> String {
    match http.get(format!("http://{admin}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// DESIGN.md section 5, steps 4 and 7: with the control plane unreachable, each message is acked once
/// its completion is on disk in the spool; a restarted executor replays the spool when the control
/// plane answers again.
#[tokio::test]
async fn completions_are_spooled_and_acked_while_the_control_plane_is_unreachable() {
    legion_common::install_crypto_provider();
    let vhost = Vhost::new();
    let (_conn, ch) = channel(&vhost).await;
    let fake = Arc::new(Fake::default());
    *fake.completions_down.lock().expect("lock") = true;
    let mut s = settings(&vhost, 4);
    s.executor.spool_after_ms = 0;
    let admin = s.executor.admin_listen;
    let executor = start(s, &fake);
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(publish(&ch, "core.util.echo", json!({"n": n}), 5000, 0).await);
    }
    let http = reqwest::Client::new();
    eventually("every completion spooled", Duration::from_secs(30), async || {
        metrics_text(&http, admin).await.contains("legion_executor_spool_spooled_total 10")
    })
    .await;
    executor.stop().await;
    assert_eq!(depth(&ch, "legion.ext.core").await, 0, "every message was acked once its completion was spooled");
    assert!(fake.completions.lock().expect("lock").is_empty(), "the control plane got nothing");
    assert!(spool_files(&vhost) > 0);

    // A new executor process (same spool) replays it once the control plane answers.
    *fake.completions_down.lock().expect("lock") = false;
    let mut s = settings(&vhost, 4);
    s.executor.spool_after_ms = 0;
    let executor = start(s, &fake);
    eventually("every spooled completion replayed", Duration::from_secs(30), async || {
        ids.iter().all(|id| fake.completion(id).is_some())
    })
    .await;
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(fake.result(id), Some(json!({"n": n})));
    }
    eventually("the spool files deleted", Duration::from_secs(10), async || spool_files(&vhost) == 0).await;
    executor.stop().await;
    let last = fake.heartbeats.lock().expect("lock").last().cloned().expect("heartbeats");
    assert!(last.stopped, "the final heartbeat says stopped");
    let stopped = fake.heartbeats.lock().expect("lock").iter().filter(|h| h.stopped).count();
    assert_eq!(stopped, 2, "one final heartbeat per executor run");
}
