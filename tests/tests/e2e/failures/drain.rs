//! Drain to gone (README "Nodes"; docs/architecture.md, "Lost nodes", node stop): an executor sent
//! SIGTERM while it runs a task shows `draining` in `GET /api/v1/nodes`, finishes the task, exits 0
//! and, its last heartbeat saying it stopped, disappears from the list: it is never shown `lost`, and
//! does not come back, even past the node lease.

use std::time::Duration;

use legion_tests::nodes::NodeSpec;
use legion_tests::rest::RestClient;
use legion_tests::{TestEnv, wait};
use serde_json::json;

use super::{timed_attempts, wait_row_status};
use crate::faults::{assert_exactly_once, sleep, wait_all_ended};
use crate::{LONG, result_json};

const NODE: &str = "e2e-drained";
/// The control plane's node lease: short, so a node left behind would show `lost` within the test.
const LEASE_MS: u64 = 3000;
const SLEEP_MS: u64 = 3000;

/// The node's status in `GET /api/v1/nodes` (`None` when it is not listed).
async fn rest_status(rest: &RestClient, name: &str) -> Result<Option<String>, String> {
    let reply = rest.get("/api/v1/nodes").await.map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("GET /api/v1/nodes: {} {}", reply.status, reply.body));
    }
    let nodes = reply.body["nodes"].as_array().cloned().unwrap_or_default();
    Ok(nodes.iter().find(|n| n["name"] == name).map(|n| n["status"].as_str().unwrap_or("?").to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_executor_shows_draining_then_leaves_the_node_list() {
    let lease = legion_tests::settings::short_node_lease(LEASE_MS);
    let env = TestEnv::start_with_settings(lease).await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let gateway = env.start_gateway().await.expect("gateway");
    let rest = gateway.rest().clone();
    let spec = NodeSpec {
        heartbeat_ms: 500,
        extra: json!({"executor": {"shutdown_grace_ms": 30_000}}),
        ..NodeSpec::named(NODE)
    };
    let mut node = env.start_node(&spec).await.expect("node");
    assert_eq!(rest_status(&rest, NODE).await.expect("nodes"), Some("active".to_owned()));

    let task = env.submit_request(sleep(SLEEP_MS)).await.expect("submit");
    wait_row_status(&pool, &task.id, "running").await;
    assert!(node.begin_terminate(), "SIGTERM delivered");

    // Every status the list shows from the SIGTERM until the node is gone.
    let mut seen: Vec<Option<String>> = Vec::new();
    let mut exited = None;
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let now = rest_status(&rest, NODE).await.expect("GET /api/v1/nodes");
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if exited.is_none() {
            exited = node.service().exited();
        }
        if now.is_none() && exited.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the node did not leave the list; seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("node statuses after SIGTERM: {seen:?}");
    assert!(seen.contains(&Some("draining".to_owned())), "the node showed draining: {seen:?}");
    assert!(!seen.contains(&Some("lost".to_owned())), "a stopped node is never lost: {seen:?}");
    assert_eq!(seen.last(), Some(&None), "{seen:?}");
    let exit = exited.expect("exited");
    assert!(exit.success(), "a drained executor exits 0: {exit}");

    wait::holds_for("the stopped node stays gone past the lease", Duration::from_millis(2 * LEASE_MS), || async {
        match rest_status(&rest, NODE).await? {
            None => Ok(()),
            Some(status) => Err(format!("listed again as {status}")),
        }
    })
    .await
    .expect("gone for good");
    assert_eq!(env.node_status(NODE).await.expect("ListNodes"), None, "gone from ListNodes too");

    // The task it ran finished on it, once.
    let done = env.wait_terminal(&task.id, LONG).await.expect("the sleep ends");
    assert_eq!(result_json(&done), json!({"slept_ms": SLEEP_MS}));
    let attempts = timed_attempts(&pool, &task.id).await;
    let shape: Vec<(i32, &str, &str)> =
        attempts.iter().map(|a| (a.attempt, a.status.as_str(), a.node.as_str())).collect();
    assert_eq!(shape, vec![(1, "succeeded", NODE)], "the sleep finished on the draining node");
    wait_all_ended(&pool, 1, LONG).await;
    assert_exactly_once(&pool).await;
}
