//! A poison message (README "Dead letters"; docs/architecture.md, "Delivery protocol" step 3 and "Dead
//! letters"): `fault.process.abort` kills its executor on every delivery. A supervisor restarts the
//! executor each time, as Kubernetes would; each redelivery takes the attempt over (`lost`) and counts,
//! so after `transport.delivery_limit` runs the next delivery ends the task `dead_lettered` with a
//! reason naming the limit. Echoes submitted alongside, and after, all succeed on the same (restarted)
//! executor. The dead letter is listed (`GET /api/v1/dead-letters`), replayed with the CLI (`legion
//! dead-letter replay`: `pending`, `replays` 1, audited `task.replay`), and dead-letters again.

use std::os::unix::process::ExitStatusExt;

use legion_proto::v1::TaskStatus;
use legion_tests::env::NODE_NAME;
use legion_tests::nodes::{FAULTS_BINARY, NodeSpec};
use legion_tests::status::from_wire;
use legion_tests::supervisor::Supervisor;
use legion_tests::{TestEnv, assert_eventually};
use serde_json::{Value, json};

use super::timed_attempts;
use crate::faults::{assert_exactly_once, request, submit_all, wait_all_ended};
use crate::{LONG, describe, result_json};

/// `transport.delivery_limit`: three runs, the fourth delivery dead-letters.
const DELIVERY_LIMIT: usize = 3;
/// Echoes submitted with the poison task.
const ECHOES: usize = 20;
/// Echoes submitted after it was dead-lettered.
const LATER_ECHOES: usize = 5;
/// SIGABRT, the signal `std::process::abort` dies of.
const SIGABRT: i32 = 6;

fn echoes(tag: &str, n: usize) -> Vec<legion_proto::v1::SubmitTaskRequest> {
    (0..n).map(|i| request("core.util.echo", json!({"tag": tag, "i": i}))).collect()
}

/// Waits until the poison task is `dead_lettered` and returns its error.
async fn wait_dead_lettered(env: &TestEnv, id: &str) -> String {
    let task = env.wait_terminal(id, LONG * 2).await.expect("the poison task ends");
    assert_eq!(from_wire(task.status), TaskStatus::DeadLettered, "{}", describe(&task));
    task.error.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_replayed_and_the_executor_keeps_serving() {
    let limit = json!({"transport": {"delivery_limit": DELIVERY_LIMIT}});
    let env = TestEnv::start_with_settings(limit).await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let gateway = env.start_gateway().await.expect("gateway");
    let launcher = env.node_launcher(FAULTS_BINARY, &NodeSpec::default()).expect("launcher");
    let supervisor = Supervisor::start(launcher, 20).expect("supervisor");
    assert_eventually!(LONG, "the fault executor registered", || async {
        match env.node_status(NODE_NAME).await? {
            Some(legion_proto::v1::NodeStatus::Active) => Ok(()),
            other => Err(format!("node {other:?}")),
        }
    });

    let poison = env.submit("fault.process.abort", json!({})).await.expect("submit the poison task");
    let echo_ids = submit_all(&env, echoes("alongside", ECHOES), 4).await;

    // Runs 1..=limit abort the executor; delivery limit + 1 is dropped as a dead letter.
    let error = wait_dead_lettered(&env, &poison.id).await;
    assert!(
        error.contains(&format!("delivered {} times", DELIVERY_LIMIT + 1))
            && error.contains(&format!("transport.delivery_limit ({DELIVERY_LIMIT})")),
        "the reason names the delivery count and the limit: {error:?}"
    );
    let attempts = timed_attempts(&pool, &poison.id).await;
    let shape: Vec<(i32, &str)> = attempts.iter().map(|a| (a.attempt, a.status.as_str())).collect();
    let expected: Vec<(i32, &str)> = (1..=DELIVERY_LIMIT).map(|n| (n as i32, "lost")).collect();
    assert_eq!(shape, expected, "each run was taken over by the next delivery: {attempts:?}");
    let exits = supervisor.exits();
    assert_eq!(exits.len(), DELIVERY_LIMIT, "one abort per run: {exits:?}");
    assert!(exits.iter().all(|e| e.signal() == Some(SIGABRT)), "every exit is an abort: {exits:?}");
    assert!(!supervisor.is_finished(), "the supervisor keeps running the executor");

    for (i, id) in echo_ids.iter().enumerate() {
        let task = env.wait_terminal(id, LONG).await.expect("echo ends");
        assert_eq!(from_wire(task.status), TaskStatus::Succeeded, "echo {i}: {}", describe(&task));
        assert_eq!(result_json(&task), json!({"tag": "alongside", "i": i}));
    }
    let later = submit_all(&env, echoes("after", LATER_ECHOES), 4).await;
    for id in &later {
        let task = env.wait_for_status(id, TaskStatus::Succeeded, LONG).await.expect("the executor still serves");
        assert_eq!(task.node.as_deref(), Some(NODE_NAME));
    }

    // Listed as a dead letter over REST.
    let listed = gateway.rest().get("/api/v1/dead-letters").await.expect("GET /api/v1/dead-letters");
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let letters = listed.body["dead_letters"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = letters.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec![poison.id.as_str()], "only the poison task is a dead letter: {:?}", listed.body);
    assert_eq!(letters[0]["status"], "dead_lettered");
    assert_eq!(letters[0]["error"].as_str(), Some(error.as_str()));

    // Replayed with the CLI: pending again, replays 1, audited.
    let replay = env.legion(&["dead-letter", "replay", &poison.id], LONG).await.expect("legion dead-letter replay");
    assert_eq!(replay.code, Some(0), "stdout {} stderr {}", replay.stdout, replay.stderr);
    let replayed: Value = serde_json::from_str(&replay.stdout).expect("the replayed task as JSON");
    assert_eq!((replayed["id"].as_str(), replayed["replays"].as_u64()), (Some(poison.id.as_str()), Some(1)));
    assert!(
        matches!(replayed["status"].as_str(), Some("pending" | "queued")),
        "the replay is pending or queued again: {replayed}"
    );
    let again = env.get_task(&poison.id).await.expect("GetTask");
    assert_eq!(again.replays, 1, "{again:?}");
    let audit = gateway.rest().get("/api/v1/audit?action=task.replay").await.expect("GET /api/v1/audit");
    assert_eq!(audit.status, 200, "{:?}", audit.body);
    let records = audit.body["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 1, "one task.replay record: {:?}", audit.body);
    assert_eq!(records[0]["detail"]["task_id"].as_str(), Some(poison.id.as_str()), "{:?}", records[0]);
    assert_eq!(records[0]["resource"], "tasks/fault/process/abort", "{:?}", records[0]);

    // It is still poison: its delivery count starts again and it dead-letters again, attempt numbers
    // rising, one more abort per run.
    let error = wait_dead_lettered(&env, &poison.id).await;
    assert!(error.contains(&format!("transport.delivery_limit ({DELIVERY_LIMIT})")), "{error:?}");
    let attempts = timed_attempts(&pool, &poison.id).await;
    let shape: Vec<(i32, &str)> = attempts.iter().map(|a| (a.attempt, a.status.as_str())).collect();
    let expected: Vec<(i32, &str)> = (1..=2 * DELIVERY_LIMIT).map(|n| (n as i32, "lost")).collect();
    assert_eq!(shape, expected, "{attempts:?}");
    assert_eq!(supervisor.exits().len(), 2 * DELIVERY_LIMIT, "{:?}", supervisor.exits());
    assert_eq!(env.get_task(&poison.id).await.expect("GetTask").replays, 1);

    let node = supervisor.stop().await.expect("the supervisor ran without a crash loop");
    drop(node);
    wait_all_ended(&pool, (1 + ECHOES + LATER_ECHOES) as i64, LONG).await;
    assert_exactly_once(&pool).await;
}
