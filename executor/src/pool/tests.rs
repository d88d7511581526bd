use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::*;
use crate::extensions::core::{Echo, Fail, Sleep};

struct Panics;

#[async_trait]
impl Function for Panics {
    async fn call(&self, _args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        panic!("runner exploded")
    }
}

/// Fails for good.
struct Refuses;

#[async_trait]
impl Function for Refuses {
    async fn call(&self, _args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        Err(FunctionError::Permanent("target refused for good".into()))
    }
}

/// Ignores cancellation and sleeps forever: only the pool's abort stops it.
struct Hangs;

#[async_trait]
impl Function for Hangs {
    async fn call(&self, _args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        std::future::pending::<()>().await;
        Ok(Value::Null)
    }
}

/// Records how many calls run at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

#[async_trait]
impl Function for Arc<Gauge> {
    async fn call(&self, _args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(json!(now))
    }
}

fn job(function: Arc<dyn Function>, args: Value, timeout_ms: u64) -> Job {
    Job { task_id: Uuid::now_v7(), attempt: 1, function, args, timeout: Duration::from_millis(timeout_ms) }
}

#[tokio::test]
async fn results_are_serialized() {
    let pool = Pool::new(2, 1024);
    let done = pool.run(job(Arc::new(Echo), json!({"a": 1}), 1000)).await;
    assert_eq!(done.outcome, Outcome::Success(br#"{"a":1}"#.to_vec()));
    assert_eq!(done.outcome.label(), "succeeded");
}

#[tokio::test]
async fn errors_and_invalid_args_have_their_kinds() {
    let pool = Pool::new(2, 1024);
    let failed = pool.run(job(Arc::new(Fail), json!({"message": "no"}), 1000)).await;
    assert_eq!(failed.outcome, Outcome::failure(FailureKind::Error, "no"));
    let invalid = pool.run(job(Arc::new(Sleep), json!({}), 1000)).await;
    assert_eq!(invalid.outcome, Outcome::failure(FailureKind::Permanent, "args.ms: required non-negative integer"));
    assert_eq!(invalid.outcome.label(), "permanent");
    let permanent = pool.run(job(Arc::new(Refuses), json!({}), 1000)).await;
    assert_eq!(permanent.outcome, Outcome::failure(FailureKind::Permanent, "target refused for good"));
    assert_eq!(permanent.outcome.label(), "permanent");
}

#[tokio::test]
async fn timeouts_end_the_attempt() {
    let pool = Pool::new(1, 1024);
    let started = Instant::now();
    let done = pool.run(job(Arc::new(Hangs), Value::Null, 100)).await;
    assert_eq!(done.outcome, Outcome::failure(FailureKind::Timeout, "timed out after 100 ms"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(done.duration >= Duration::from_millis(100));
    // The slot is free again and nothing is left running.
    assert_eq!((pool.free_slots(), pool.running().len()), (1, 0));
    let sleep = pool.run(job(Arc::new(Sleep), json!({"ms": 5000}), 100)).await;
    assert_eq!(sleep.outcome.label(), "timeout");
}

#[tokio::test]
async fn panics_fail_the_attempt_not_the_executor() {
    let pool = Pool::new(1, 1024);
    let done = pool.run(job(Arc::new(Panics), Value::Null, 1000)).await;
    assert_eq!(done.outcome, Outcome::failure(FailureKind::Panic, "panicked: runner exploded"));
    assert_eq!(done.outcome.label(), "panic");
    let after = pool.run(job(Arc::new(Echo), json!(1), 1000)).await;
    assert_eq!(after.outcome, Outcome::Success(b"1".to_vec()));
}

#[tokio::test]
async fn concurrency_is_capped() {
    let pool = Pool::new(2, 1024);
    let gauge = Arc::new(Gauge::default());
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let pool = pool.clone();
            let f: Arc<dyn Function> = Arc::new(gauge.clone());
            tokio::spawn(async move { pool.run(job(f, Value::Null, 5000)).await })
        })
        .collect();
    for run in runs {
        assert_eq!(run.await.expect("join").outcome.label(), "succeeded");
    }
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2);
    assert_eq!(pool.free_slots(), 2);
}

async fn wait_running(pool: &Pool, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.running().len() < count {
        assert!(Instant::now() < deadline, "the runners never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn aborts_end_running_attempts_as_aborted() {
    let pool = Pool::new(2, 1024);
    let j = job(Arc::new(Hangs), Value::Null, 60_000);
    let task_id = j.task_id;
    let run = tokio::spawn({
        let pool = pool.clone();
        async move { pool.run(j).await }
    });
    wait_running(&pool, 1).await;
    assert_eq!(pool.running(), vec![(task_id, 1)]);
    assert_eq!((pool.in_flight(), pool.free_slots()), (1, 1));
    assert!(!pool.abort(Uuid::now_v7(), 1), "other tasks are not touched");
    assert!(pool.abort(task_id, 1));
    let done = run.await.expect("join");
    assert_eq!(done.outcome, Outcome::failure(FailureKind::Error, ABORTED));
    assert_eq!(done.outcome.label(), "aborted");
    assert!(pool.running().is_empty());
}

/// Regression: an abort meant for a stale attempt killed the task's current attempt on the same node.
#[tokio::test]
async fn an_abort_ends_only_the_named_attempt_of_a_task() {
    let pool = Pool::new(2, 1024);
    let task_id = Uuid::now_v7();
    let spawn = |attempt: u32| {
        let pool = pool.clone();
        let j = Job { attempt, task_id, ..job(Arc::new(Hangs), Value::Null, 60_000) };
        tokio::spawn(async move { pool.run(j).await })
    };
    let stale = spawn(1);
    let current = spawn(2);
    wait_running(&pool, 2).await;
    assert!(pool.abort(task_id, 1));
    assert_eq!(stale.await.expect("join").outcome.label(), "aborted");
    assert_eq!(pool.running(), vec![(task_id, 2)], "the current attempt keeps running");
    assert!(!current.is_finished());
    assert!(!pool.abort(task_id, 1), "attempt 1 is gone");
    assert!(pool.abort(task_id, 2));
    assert_eq!(current.await.expect("join").outcome.label(), "aborted");
}

#[tokio::test]
async fn dropping_the_run_aborts_the_runner() {
    let pool = Pool::new(1, 1024);
    let run = pool.run(job(Arc::new(Hangs), Value::Null, 60_000));
    assert!(tokio::time::timeout(Duration::from_millis(50), run).await.is_err());
    assert!(pool.running().is_empty());
    assert_eq!(pool.free_slots(), 1);
}

#[tokio::test]
async fn oversize_results_fail() {
    let pool = Pool::new(1, 8);
    let done = pool.run(job(Arc::new(Echo), json!("0123456789"), 1000)).await;
    assert_eq!(
        done.outcome,
        Outcome::failure(
            FailureKind::Error,
            "result of 12 bytes exceeds the limit of 8 bytes (limits.max_result_bytes)"
        )
    );
}
