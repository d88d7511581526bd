//! An executor killed with SIGKILL in the middle of a task loses nothing: the broker redelivers the
//! unacked message, the control plane fences the old attempt (`lost`) and the task runs to the end on
//! the next executor.

use legion_proto::v1::TaskStatus;
use legion_tests::status::from_wire;
use legion_tests::{ExecutorOptions, TestEnv, env::TASK_TIMEOUT};
use serde_json::json;

use crate::{LONG, describe, result_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_its_executor_being_killed() {
    let env = TestEnv::start().await.expect("control plane starts");
    let mut first = env.start_executor(&ExecutorOptions::default()).await.expect("first executor starts");

    let task = env.submit("core.util.sleep", json!({"ms": 3000})).await.expect("submit");
    let running = env.wait_for_status(&task.id, TaskStatus::Running, TASK_TIMEOUT).await.expect("task runs");
    assert_eq!(running.attempt, 1);
    first.kill();

    // Same node name and certificate, a new process.
    let _second = env.start_executor(&ExecutorOptions::default()).await.expect("second executor starts");
    let done = env.wait_terminal(&task.id, LONG).await.expect("task ends");
    assert_eq!(from_wire(done.status), TaskStatus::Succeeded, "{}", describe(&done));
    assert_eq!(result_json(&done), json!({"slept_ms": 3000}));

    let attempts = env.attempts(&task.id).await.expect("ListTaskAttempts");
    let statuses: Vec<(u32, &str)> = attempts.iter().map(|a| (a.attempt, a.status.as_str())).collect();
    assert_eq!(attempts.iter().filter(|a| a.status == "succeeded").count(), 1, "one success: {statuses:?}");
    let killed = attempts.iter().find(|a| a.attempt == 1).expect("the killed attempt is recorded");
    assert_eq!(killed.status, "lost", "the killed attempt is lost: {statuses:?}");
    assert!(attempts.iter().all(|a| matches!(a.status.as_str(), "lost" | "succeeded")), "{statuses:?}");
    let succeeded = attempts.iter().find(|a| a.status == "succeeded").expect("succeeded attempt");
    assert_eq!(done.attempt, succeeded.attempt, "the task's current attempt is the one that succeeded");
}
