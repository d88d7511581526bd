use legion_common::Settings;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::client::ControlPlane;
use crate::fake::Fake;

fn handler(fake: Arc<Fake>) -> (Handler, CancellationToken) {
    handler_with(fake, None)
}

/// A handler whose reporter spools at the first failed completion call into `spool`.
fn handler_with(fake: Arc<Fake>, spool: Option<crate::spool::Spool>) -> (Handler, CancellationToken) {
    legion_common::install_crypto_provider();
    let registry = Arc::new(Registry::load(&Settings::default()).expect("registry"));
    let metrics = Metrics::default();
    let cp: Arc<dyn ControlPlane> = fake;
    let options = reporter::Options {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        ..reporter::Options::default()
    };
    let reporter = match spool {
        Some(spool) => Reporter::spawn_with_spool(cp, options, metrics.clone(), spool, Duration::ZERO),
        None => Reporter::spawn(cp, options, metrics.clone()),
    };
    let hard_stop = CancellationToken::new();
    let handler = Handler::new(
        registry,
        Pool::new(4, 1024 * 1024),
        reporter,
        metrics,
        Duration::from_secs(30),
        hard_stop.clone(),
    );
    (handler, hard_stop)
}

fn message(function: &str, args: serde_json::Value, timeout_ms: u32) -> (String, Vec<u8>) {
    let task_id = Uuid::now_v7();
    let m = TaskMessage { task_id, dispatch: 1, function: function.into(), args, timeout_ms };
    (task_id.to_string(), serde_json::to_vec(&m).expect("encode"))
}

#[tokio::test]
async fn a_run_reports_its_result_then_acks() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let (id, body) = message("core.util.echo", json!({"x": 1}), 1000);
    assert_eq!(h.process(&body, true).await, Settlement::Ack);
    let start = fake.starts.lock().expect("lock")[0].clone();
    assert_eq!((start.task_id.as_str(), start.dispatch, start.redelivered), (id.as_str(), 1, true));
    assert_eq!(fake.result(&id), Some(json!({"x": 1})));
    assert_eq!(fake.completion(&id).map(|c| c.attempt), Some(1));
    assert_eq!(h.metrics.runs.get_or_create(&label("outcome", "succeeded")).get(), 1);
}

#[tokio::test]
async fn failures_are_reported_with_their_kind() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let (failing, body) = message("core.util.fail", json!({"message": "nope"}), 1000);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert_eq!(fake.failure(&failing), Some((FailureKind::Error as i32, "nope".into())));
    let (slow, body) = message("core.util.sleep", json!({"ms": 10_000}), 50);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert_eq!(fake.failure(&slow), Some((FailureKind::Timeout as i32, "timed out after 50 ms".into())));
    let (unknown, body) = message("core.util.teleport", json!({}), 1000);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert_eq!(
        fake.failure(&unknown),
        Some((FailureKind::Rejected as i32, "function core.util.teleport is not loaded on this executor".into()))
    );
}

#[tokio::test]
async fn invalid_args_and_permanent_errors_are_permanent_failures() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let (id, body) = message("core.util.sleep", json!({"ms": "soon"}), 1000);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert_eq!(
        fake.failure(&id),
        Some((FailureKind::Permanent as i32, "args.ms: required non-negative integer".into()))
    );
    assert_eq!(h.metrics.runs.get_or_create(&label("outcome", "permanent")).get(), 1);
}

/// DESIGN.md section 5, step 4: with the control plane unreachable, the message is acked once its
/// completion is on disk in the spool, not before.
#[tokio::test]
async fn a_spooled_completion_acks_the_message() {
    let root = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(Fake::default());
    *fake.completions_down.lock().expect("lock") = true;
    let options = crate::spool::Options {
        dir: root.path().join("spool"),
        node: "exec-1".into(),
        key: None,
        file_bytes: 1 << 20,
        max_bytes: 1 << 30,
        retention: Duration::from_secs(3600),
    };
    let spool = crate::spool::Spool::open(options, Metrics::default()).expect("spool");
    let (h, _) = handler_with(fake.clone(), Some(spool.clone()));
    let (id, body) = message("core.util.echo", json!({"kept": true}), 1000);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert!(fake.completion(&id).is_none(), "the control plane got nothing yet");
    assert!(!spool.is_empty());
    assert!(spool.bytes() > 0);
}

#[tokio::test]
async fn dropped_starts_are_acked_without_running() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let (id, body) = message("core.util.echo", json!(1), 1000);
    fake.drop.lock().expect("lock").insert(id.clone());
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert!(fake.completion(&id).is_none());
    assert_eq!(h.metrics.starts.get_or_create(&label("decision", "drop")).get(), 1);
}

#[tokio::test]
async fn stale_completions_are_acked() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let (id, body) = message("core.util.noop", json!({}), 1000);
    fake.stale.lock().expect("lock").insert(id.clone());
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert_eq!(fake.result(&id), Some(json!({})));
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    for body in [&b"not json"[..], br#"{"task_id":"x"}"#, br#"{"function":"core.util.echo"}"#] {
        assert_eq!(h.process(body, false).await, Settlement::DeadLetter);
    }
    assert!(fake.starts.lock().expect("lock").is_empty());
    assert_eq!(h.metrics.malformed.get(), 3);
}

#[tokio::test]
async fn a_refused_result_is_reported_as_a_failure() {
    let fake = Arc::new(Fake::default());
    *fake.refuse_results.lock().expect("lock") = true;
    let (h, _) = handler(fake.clone());
    let (id, body) = message("core.util.echo", json!({"big": true}), 1000);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert_eq!(
        fake.failure(&id),
        Some((FailureKind::Error as i32, "control plane refused the result: items.result_json: too large".into()))
    );
}

#[tokio::test]
async fn hard_stop_requeues_running_attempts() {
    let fake = Arc::new(Fake::default());
    let (h, hard_stop) = handler(fake.clone());
    let (id, body) = message("core.util.sleep", json!({"ms": 60_000}), 120_000);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        hard_stop.cancel();
    });
    assert_eq!(h.process(&body, false).await, Settlement::Requeue);
    assert!(fake.completion(&id).is_none(), "an abandoned attempt is not completed; the redelivery takes over");
    assert!(h.pool.running().is_empty());
    assert_eq!(h.metrics.in_flight.get(), 0);
}

/// Regression: with the control plane unreachable, a SIGTERM waited the whole shutdown grace for
/// deliveries that only waited for their start, although nothing ran.
#[tokio::test]
async fn a_drain_hands_back_deliveries_still_waiting_for_their_start() {
    let fake = Arc::new(Fake::default());
    *fake.starts_down.lock().expect("lock") = true;
    let (h, _) = handler(fake.clone());
    let drain = CancellationToken::new();
    let h = h.with_drain(drain.clone());
    let (_, body) = message("core.util.echo", json!({}), 1000);
    let waiting = tokio::spawn(async move { h.process(&body, false).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the start is retried while the control plane is unreachable");
    drain.cancel();
    let settlement = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("at once").expect("join");
    assert_eq!(settlement, Settlement::Requeue);
    assert!(fake.completions.lock().expect("lock").is_empty(), "nothing ran");
}

#[tokio::test]
async fn zero_timeouts_get_the_default() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let (id, body) = message("core.util.sleep", json!({"ms": 20}), 0);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert_eq!(fake.result(&id), Some(json!({"slept_ms": 20})));
}

fn encode(task_id: Uuid, dispatch: u32, function: &str, args: serde_json::Value, timeout_ms: u32) -> Vec<u8> {
    let m = TaskMessage { task_id, dispatch, function: function.into(), args, timeout_ms };
    serde_json::to_vec(&m).expect("encode")
}

fn spawn_process(h: &Arc<Handler>, body: &[u8], redelivered: bool) -> tokio::task::JoinHandle<Settlement> {
    let (h, body) = (h.clone(), body.to_vec());
    tokio::spawn(async move { h.process(&body, redelivered).await })
}

async fn wait_running(h: &Handler) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.pool.running().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the attempt never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn completions_of(fake: &Fake, id: &str) -> usize {
    fake.completions.lock().expect("lock").iter().filter(|c| c.task_id == id).count()
}

/// Regression (operator repro): the broker connection dropped while a task ran; its message was
/// redelivered to this executor, which started it again (a takeover, attempt 2) and ran its side effect
/// twice. The redelivery must attach to the running attempt and be acked once that attempt completes.
#[tokio::test]
async fn a_redelivery_of_a_running_attempt_is_attached_not_run_again() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let h = Arc::new(h);
    let (id, body) = message("core.util.sleep", json!({"ms": 300}), 5000);
    let first = spawn_process(&h, &body, false);
    wait_running(&h).await;
    let redelivery = spawn_process(&h, &body, true);
    assert_eq!(redelivery.await.expect("join"), Settlement::Ack);
    assert!(fake.completion(&id).is_some(), "the redelivery is settled only after the completion was answered");
    assert_eq!(first.await.expect("join"), Settlement::Ack);
    assert_eq!(fake.starts.lock().expect("lock").len(), 1, "no second StartTask");
    assert_eq!(completions_of(&fake, &id), 1, "one run, one completion");
    assert_eq!(fake.completion(&id).map(|c| c.attempt), Some(1));
    assert_eq!(h.metrics.attached.get(), 1);
    assert!(h.deliveries.is_empty());
}

#[tokio::test]
async fn a_delivery_of_another_dispatch_goes_through_start_task() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let h = Arc::new(h);
    let task_id = Uuid::now_v7();
    let id = task_id.to_string();
    let first = spawn_process(&h, &encode(task_id, 1, "core.util.sleep", json!({"ms": 200}), 5000), false);
    wait_running(&h).await;
    fake.drop.lock().expect("lock").insert(id.clone());
    let newer = spawn_process(&h, &encode(task_id, 2, "core.util.sleep", json!({"ms": 200}), 5000), false);
    assert_eq!(newer.await.expect("join"), Settlement::Ack);
    let dispatches: Vec<u32> = fake.starts.lock().expect("lock").iter().map(|s| s.dispatch).collect();
    assert_eq!(dispatches, vec![1, 2], "a newer publish is decided by StartTask");
    assert_eq!(first.await.expect("join"), Settlement::Ack);
    assert_eq!(h.metrics.attached.get(), 0);
}

#[tokio::test]
async fn a_redelivery_after_the_attempt_was_answered_goes_through_start_task() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let (id, body) = message("core.util.echo", json!({"once": true}), 1000);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    // The control plane drops a redelivery of a finished task.
    fake.drop.lock().expect("lock").insert(id.clone());
    assert_eq!(h.process(&body, true).await, Settlement::Ack);
    assert_eq!(fake.starts.lock().expect("lock").len(), 2);
    assert_eq!(completions_of(&fake, &id), 1);
}

#[tokio::test]
async fn attached_deliveries_are_requeued_with_their_attempt_on_hard_stop() {
    let fake = Arc::new(Fake::default());
    let (h, hard_stop) = handler(fake.clone());
    let h = Arc::new(h);
    let (id, body) = message("core.util.sleep", json!({"ms": 60_000}), 120_000);
    let first = spawn_process(&h, &body, false);
    wait_running(&h).await;
    let redelivery = spawn_process(&h, &body, true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.metrics.attached.get() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the redelivery was not attached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hard_stop.cancel();
    assert_eq!(first.await.expect("join"), Settlement::Requeue);
    assert_eq!(redelivery.await.expect("join"), Settlement::Requeue);
    assert!(fake.completion(&id).is_none());
}
