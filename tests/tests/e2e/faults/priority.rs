//! Priorities under load (issue 6, item 5): with 1,000 priority-0 sleeps queued behind one executor of
//! two slots, a priority-9 task submitted afterwards starts before all but a handful of them.
//!
//! Why a handful. The executor's broker prefetch equals its slots (`executor.concurrency`, one global
//! `basic_qos` per channel), so when the priority-9 message reaches the queue the broker has handed
//! out at most `concurrency` priority-0 messages that have not started yet; every delivery after that
//! is the priority-9 one. Before it reaches the queue (the outbox publisher's latency after the
//! submit's commit: a wake-up or one `transport.outbox_poll_ms` poll, 200 ms in the tests, plus the
//! confirm), the broker cannot know it, and the two slots keep starting 200 ms tasks, about two per
//! poll interval. So: at most `concurrency` priority-0 tasks start between the priority-9 task's
//! publish (`queued_at`) and its start, and at most `concurrency + PUBLISH_TOLERANCE` between its
//! submit (`created_at`) and its start. All instants are PostgreSQL's.

use legion_proto::v1::{SubmitTaskRequest, TaskStatus};
use legion_tests::nodes::NodeSpec;
use legion_tests::{TestEnv, assert_eventually, ledger};

use super::{count_status, sleep, submit_all};
use crate::LONG;

const BACKLOG: usize = 1000;
const CONCURRENCY: u32 = 2;
const SLEEP_MS: u64 = 200;
/// Priority-0 starts allowed while the priority-9 message is on its way to the broker: one outbox
/// poll interval (200 ms) at two slots of 200 ms tasks.
const PUBLISH_TOLERANCE: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_9_task_overtakes_a_backlog_of_1000() {
    let env = TestEnv::start().await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let _node = env.start_node(&NodeSpec { concurrency: CONCURRENCY, ..NodeSpec::default() }).await.expect("node");
    let backlog = submit_all(&env, (0..BACKLOG).map(|_| sleep(SLEEP_MS)).collect(), 16).await;
    // Every backlog message is in the broker before the priority-9 task is submitted.
    assert_eventually!(LONG, "the backlog is published", || async {
        match count_status(&pool, "pending").await {
            0 => Ok(()),
            n => Err(format!("{n} pending")),
        }
    });
    let urgent =
        env.submit_request(SubmitTaskRequest { priority: 9, ..sleep(SLEEP_MS) }).await.expect("submit priority 9");
    env.wait_for_status(&urgent.id, TaskStatus::Succeeded, LONG).await.expect("the priority-9 task runs");

    let urgent = ledger::task(&pool, &urgent.id).await.expect("urgent row");
    let (submitted, published, started) = (
        urgent.created_at_us,
        urgent.queued_at_us.expect("the priority-9 task was published"),
        urgent.started_at_us.expect("the priority-9 task started"),
    );
    let backlog = ledger::tasks(&pool, &backlog).await.expect("backlog rows");
    assert_eq!(backlog.len(), BACKLOG);
    let starts: Vec<Option<i64>> = backlog.iter().map(|t| t.started_at_us).collect();
    let waiting_at_submit = starts.iter().filter(|s| s.is_none_or(|s| s > submitted)).count();
    let overtook_after_submit = starts.iter().filter(|s| s.is_some_and(|s| s > submitted && s < started)).count();
    let overtook_after_publish = starts.iter().filter(|s| s.is_some_and(|s| s > published && s < started)).count();
    let done_before_submit = starts.iter().filter(|s| s.is_some_and(|s| s <= submitted)).count();
    eprintln!(
        "priority: {done_before_submit} backlog tasks started before the priority-9 submit, {waiting_at_submit} \
         still queued; publish took {} ms, start {} ms after the submit; backlog tasks that started between \
         the submit and its start: {overtook_after_submit}, between its publish and its start: \
         {overtook_after_publish}",
        (published - submitted) / 1000,
        (started - submitted) / 1000,
    );
    assert!(waiting_at_submit > 100, "the backlog was still long at the submit: {waiting_at_submit}");
    let concurrency = usize::try_from(CONCURRENCY).expect("small");
    assert!(
        overtook_after_publish <= concurrency,
        "at most the prefetched {concurrency} backlog tasks start after the priority-9 message is queued: \
         {overtook_after_publish}"
    );
    assert!(
        overtook_after_submit <= concurrency + PUBLISH_TOLERANCE,
        "the priority-9 task starts before all but {concurrency} + {PUBLISH_TOLERANCE} of the backlog that was \
         queued at its submit: {overtook_after_submit} started before it"
    );
    // The backlog has done its job; dropping the env stops the run.
}
