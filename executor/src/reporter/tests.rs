use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use legion_proto::v1::{
    CompleteTaskResponse, HeartbeatRequest, HeartbeatResponse, RegisterNodeRequest, RegisterNodeResponse,
    StartDecision, StartTaskResponse,
};
use tonic::Code;
use uuid::Uuid;

use super::*;
use crate::spool::Spool;
use crate::spool::testing::{eventually, options as spool_options, replay_options};

/// Records every call; fails calls with the scripted statuses first; refuses items whose task id is
/// in `refuse` with INVALID_ARGUMENT (the whole call, as a server would).
#[derive(Default)]
struct Fake {
    start_calls: Mutex<Vec<Vec<String>>>,
    complete_calls: Mutex<Vec<Vec<String>>>,
    failures: Mutex<VecDeque<Status>>,
    refuse: Mutex<Vec<String>>,
    short_answer: Mutex<bool>,
    delay: Duration,
    /// Every CompleteTask fails UNAVAILABLE while set (an unreachable control plane).
    down: AtomicBool,
}

impl Fake {
    fn scripted(&self) -> Result<(), Status> {
        self.failures.lock().expect("lock").pop_front().map_or(Ok(()), Err)
    }
    fn refused(&self, ids: &[String]) -> Result<(), Status> {
        let refuse = self.refuse.lock().expect("lock");
        match ids.iter().find(|id| refuse.contains(id)) {
            Some(id) => Err(Status::invalid_argument(format!("items.task_id: {id} is not a task"))),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl ControlPlane for Fake {
    async fn register(&self, _r: RegisterNodeRequest) -> Result<RegisterNodeResponse, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn heartbeat(&self, _r: HeartbeatRequest, _t: Duration) -> Result<HeartbeatResponse, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn start_tasks(&self, r: StartTaskRequest) -> Result<StartTaskResponse, Status> {
        tokio::time::sleep(self.delay).await;
        let ids: Vec<String> = r.items.iter().map(|i| i.task_id.clone()).collect();
        self.start_calls.lock().expect("lock").push(ids.clone());
        self.scripted()?;
        self.refused(&ids)?;
        let mut results: Vec<StartResult> = r
            .items
            .into_iter()
            .map(|i| StartResult {
                decision: if i.dispatch == 0 { StartDecision::Drop } else { StartDecision::Run } as i32,
                attempt: i.dispatch,
                task_id: i.task_id,
                reason: String::new(),
            })
            .collect();
        if *self.short_answer.lock().expect("lock") {
            results.pop();
        }
        Ok(StartTaskResponse { results })
    }
    async fn complete_tasks(&self, r: CompleteTaskRequest) -> Result<CompleteTaskResponse, Status> {
        let ids: Vec<String> = r.items.iter().map(|i| i.task_id.clone()).collect();
        self.complete_calls.lock().expect("lock").push(ids.clone());
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("tcp connect error: connection refused"));
        }
        self.scripted()?;
        self.refused(&ids)?;
        let mut acks: Vec<CompletionAck> = r
            .items
            .into_iter()
            .map(|i| CompletionAck { accepted: i.attempt > 0, task_id: i.task_id, reason: String::new() })
            .collect();
        if *self.short_answer.lock().expect("lock") {
            acks.reverse();
        }
        Ok(CompleteTaskResponse { acks })
    }
}

fn options(max_batch: usize, linger_ms: u64) -> Options {
    Options {
        max_batch,
        linger: Duration::from_millis(linger_ms),
        max_in_flight: 1,
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        max_batch_bytes: MAX_BATCH_BYTES,
    }
}

fn start_item(dispatch: u32) -> StartItem {
    StartItem { task_id: Uuid::now_v7().to_string(), dispatch, redelivered: false }
}

fn completion(attempt: u32) -> Completion {
    Completion { task_id: Uuid::now_v7().to_string(), attempt, outcome: None, duration_ms: 1 }
}

async fn start_all(reporter: &Reporter, items: Vec<StartItem>) -> Vec<Result<StartResult, Error>> {
    futures_util::future::join_all(items.into_iter().map(|i| reporter.start(i))).await
}

#[tokio::test]
async fn concurrent_starts_share_one_call_and_keep_their_own_answers() {
    let fake = Arc::new(Fake::default());
    let reporter = Reporter::spawn(fake.clone(), options(256, 50), Metrics::default());
    let items: Vec<StartItem> = (0..10).map(|n| start_item(n % 2)).collect();
    let results = start_all(&reporter, items.clone()).await;
    assert_eq!(fake.start_calls.lock().expect("lock").len(), 1, "one batch for ten items within the linger");
    for (item, result) in items.iter().zip(results) {
        let result = result.expect("answered");
        assert_eq!(result.task_id, item.task_id);
        let expected = if item.dispatch == 0 { StartDecision::Drop } else { StartDecision::Run };
        assert_eq!(result.decision(), expected);
    }
}

#[tokio::test]
async fn full_batches_go_out_without_waiting_for_the_linger() {
    let fake = Arc::new(Fake::default());
    let reporter = Reporter::spawn(fake.clone(), options(4, 60_000), Metrics::default());
    let started = std::time::Instant::now();
    let results = start_all(&reporter, (0..8).map(|_| start_item(1)).collect()).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(started.elapsed() < Duration::from_secs(10), "full batches must not wait for the linger");
    let calls = fake.start_calls.lock().expect("lock");
    assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4]);
}

#[tokio::test]
async fn items_arriving_during_a_call_form_the_next_batch() {
    let fake = Arc::new(Fake { delay: Duration::from_millis(100), ..Fake::default() });
    let reporter = Reporter::spawn(fake.clone(), options(256, 1), Metrics::default());
    let first = tokio::spawn({
        let reporter = reporter.clone();
        async move { reporter.start(start_item(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let rest = start_all(&reporter, (0..5).map(|_| start_item(1)).collect()).await;
    assert!(first.await.expect("join").is_ok());
    assert!(rest.iter().all(Result::is_ok));
    let sizes: Vec<usize> = fake.start_calls.lock().expect("lock").iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1, 5]);
}

#[tokio::test]
async fn transient_failures_are_retried_with_every_item() {
    let fake = Arc::new(Fake::default());
    fake.failures.lock().expect("lock").extend([Status::unavailable("down"), Status::unknown("transport error")]);
    let metrics = Metrics::default();
    let reporter = Reporter::spawn(fake.clone(), options(256, 20), metrics.clone());
    let items: Vec<Completion> = (0..3).map(|_| completion(1)).collect();
    let acks = futures_util::future::join_all(items.iter().cloned().map(|c| reporter.complete(c))).await;
    for (item, ack) in items.iter().zip(acks) {
        let Completed::Answered(ack) = ack.expect("completion answered after retries") else { panic!("no spool") };
        assert_eq!((ack.task_id.as_str(), ack.accepted), (item.task_id.as_str(), true));
    }
    let calls = fake.complete_calls.lock().expect("lock");
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.len() == 3), "every retry carries every item");
    assert_eq!(metrics.report_retries.get_or_create(&label("kind", "complete")).get(), 2);
}

#[tokio::test]
async fn a_refused_batch_is_split_so_only_the_bad_item_fails() {
    let fake = Arc::new(Fake::default());
    let items: Vec<StartItem> = (0..3).map(|_| start_item(1)).collect();
    fake.refuse.lock().expect("lock").push(items[1].task_id.clone());
    let reporter = Reporter::spawn(fake.clone(), options(256, 20), Metrics::default());
    let results = start_all(&reporter, items.clone()).await;
    assert!(results[0].is_ok() && results[2].is_ok());
    match &results[1] {
        Err(Error::Refused { code: Code::InvalidArgument, message }) => assert!(message.contains(&items[1].task_id)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let sizes: Vec<usize> = fake.start_calls.lock().expect("lock").iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 1, 1, 1]);
}

#[tokio::test]
async fn answers_out_of_protocol_are_errors() {
    let fake = Arc::new(Fake::default());
    *fake.short_answer.lock().expect("lock") = true;
    let reporter = Reporter::spawn(fake.clone(), options(256, 20), Metrics::default());
    let results = start_all(&reporter, (0..2).map(|_| start_item(1)).collect()).await;
    assert!(results.iter().all(|r| matches!(r, Err(Error::Protocol(m)) if m == "1 answers for 2 start items")));
    let items: Vec<Completion> = (0..2).map(|_| completion(1)).collect();
    let acks = futures_util::future::join_all(items.into_iter().map(|c| reporter.complete(c))).await;
    assert!(acks.iter().all(|r| matches!(r, Err(Error::Protocol(m)) if m.contains("was expected"))));
}

#[tokio::test]
async fn retries_stop_for_callers_that_went_away() {
    let fake = Arc::new(Fake::default());
    fake.failures.lock().expect("lock").extend(vec![Status::unavailable("down"); 1000]);
    let reporter = Reporter::spawn(fake.clone(), options(256, 1), Metrics::default());
    let call = reporter.complete(completion(1));
    assert!(tokio::time::timeout(Duration::from_millis(100), call).await.is_err(), "still retrying");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = fake.complete_calls.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.complete_calls.lock().expect("lock").len(), calls, "no retries once the caller is gone");
}

/// A control plane that is down, and a reporter with `options` that spools what it could not deliver
/// for `after` to a spool of `max_bytes` under `root`.
fn unreachable(
    root: &std::path::Path,
    max_bytes: u64,
    options: Options,
    after: Duration,
) -> (Arc<Fake>, Metrics, Spool, Reporter) {
    let fake = Arc::new(Fake::default());
    fake.down.store(true, Ordering::SeqCst);
    let metrics = Metrics::default();
    let spool_options = crate::spool::Options { max_bytes, ..spool_options(root) };
    let spool = Spool::open(spool_options, metrics.clone()).expect("spool");
    let reporter = Reporter::spawn_with_spool(fake.clone(), options, metrics.clone(), spool.clone(), after);
    (fake, metrics, spool, reporter)
}

fn result_completion(bytes: usize) -> Completion {
    Completion { outcome: Some(legion_proto::v1::completion::Outcome::ResultJson(vec![b'1'; bytes])), ..completion(1) }
}

#[tokio::test]
async fn completions_go_to_the_spool_once_the_control_plane_stayed_unreachable_then_replay_in_order() {
    let root = tempfile::tempdir().expect("tempdir");
    let after = Duration::from_millis(200);
    let (fake, metrics, spool, reporter) = unreachable(root.path(), 1 << 30, options(256, 20), after);
    let items: Vec<Completion> = (0..3).map(|_| completion(1)).collect();
    let started = tokio::time::Instant::now();
    let answers = futures_util::future::join_all(items.iter().cloned().map(|c| reporter.complete(c))).await;
    assert!(started.elapsed() >= after, "spooled before executor.spool_after_ms");
    for (item, answer) in items.iter().zip(answers) {
        assert_eq!(answer.expect("answered"), Completed::Spooled { task_id: item.task_id.clone() });
    }
    assert!(fake.complete_calls.lock().expect("lock").len() >= 2, "retried while waiting");
    assert_eq!(metrics.spool_spooled.get(), 3);

    // The control plane comes back: the spool replays the completions in order.
    let calls_before = fake.complete_calls.lock().expect("lock").len();
    let stop = tokio_util::sync::CancellationToken::new();
    let replay =
        tokio::spawn(crate::spool::replay::run(spool.clone(), fake.clone(), replay_options(256), stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!spool.is_empty(), "nothing is deleted while the control plane is down");
    fake.down.store(false, Ordering::SeqCst);
    eventually("the spool emptied", || spool.is_empty()).await;
    let replayed = fake.complete_calls.lock().expect("lock")[calls_before..].last().expect("a replay call").clone();
    let expected: Vec<String> = items.iter().map(|c| c.task_id.clone()).collect();
    assert_eq!(replayed, expected);
    assert_eq!(metrics.spool_replayed.get(), 3);
    stop.cancel();
    replay.await.expect("join");
}

#[tokio::test]
async fn spool_after_zero_spools_at_the_first_failure() {
    let root = tempfile::tempdir().expect("tempdir");
    let (fake, _metrics, _spool, reporter) = unreachable(root.path(), 1 << 30, options(256, 1), Duration::ZERO);
    let item = completion(1);
    let answer = reporter.complete(item.clone()).await.expect("answered");
    assert_eq!(answer, Completed::Spooled { task_id: item.task_id });
    assert_eq!(fake.complete_calls.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_completion_the_spool_cannot_hold_keeps_waiting_for_the_control_plane() {
    let root = tempfile::tempdir().expect("tempdir");
    let (fake, metrics, _spool, reporter) = unreachable(root.path(), 64, options(256, 1), Duration::ZERO);
    let item = completion(1);
    let call = tokio::spawn({
        let reporter = reporter.clone();
        let item = item.clone();
        async move { reporter.complete(item).await }
    });
    eventually("retries", || fake.complete_calls.lock().expect("lock").len() >= 3).await;
    assert!(!call.is_finished(), "not answered: the message stays unacked");
    assert_eq!(metrics.spool_spooled.get(), 0);
    fake.down.store(false, Ordering::SeqCst);
    let Completed::Answered(ack) = call.await.expect("join").expect("answered") else { panic!("not spooled") };
    assert_eq!((ack.task_id, ack.accepted), (item.task_id, true));
}

#[tokio::test]
async fn batches_stop_at_max_batch_bytes_but_hold_at_least_one_item() {
    let fake = Arc::new(Fake::default());
    let reporter =
        Reporter::spawn(fake.clone(), Options { max_batch_bytes: 1000, ..options(256, 50) }, Metrics::default());
    let mut items: Vec<Completion> = (0..5).map(|_| result_completion(400)).collect();
    items.push(result_completion(3000));
    items.push(result_completion(400));
    let answers = futures_util::future::join_all(items.iter().cloned().map(|c| reporter.complete(c))).await;
    assert!(answers.iter().all(Result::is_ok));
    let calls = fake.complete_calls.lock().expect("lock");
    let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 7);
    assert!(sizes.iter().all(|n| *n <= 2), "two 400-byte results fit in 1000 bytes, three do not: {sizes:?}");
    assert!(calls.iter().any(|c| c.len() == 1 && c[0] == items[5].task_id), "the 3000-byte result goes alone");
}
