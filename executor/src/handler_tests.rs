use legion_common::settings::{ExecutorSettings, Limits};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::client::ControlPlane;
use crate::fake::Fake;

fn handler(fake: Arc<Fake>) -> (Handler, CancellationToken) {
    legion_common::install_crypto_provider();
    let registry = Arc::new(Registry::load(&ExecutorSettings::default(), &Limits::default()).expect("registry"));
    let metrics = Metrics::default();
    let cp: Arc<dyn ControlPlane> = fake;
    let reporter = Reporter::spawn(cp, reporter::Options::default(), metrics.clone());
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

#[tokio::test]
async fn zero_timeouts_get_the_default() {
    let fake = Arc::new(Fake::default());
    let (h, _) = handler(fake.clone());
    let (id, body) = message("core.util.sleep", json!({"ms": 20}), 0);
    assert_eq!(h.process(&body, false).await, Settlement::Ack);
    assert_eq!(fake.result(&id), Some(json!({"slept_ms": 20})));
}
