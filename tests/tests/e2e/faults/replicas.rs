//! An executor given every control-plane replica (`control_plane.url` and `failover_urls`): when the
//! replica it calls stops, or freezes (SIGSTOP: its sockets stay open, nothing answers), its next calls
//! go to another one, so that replica never declares it lost and the attempts it runs finish once, as
//! attempt 1 (docs/architecture.md, "Lost nodes").

use std::time::Duration;

use legion_tests::nodes::NodeSpec;
use legion_tests::settings::control_plane_url;
use legion_tests::{TestEnv, assert_eventually, ledger};
use serde_json::json;

use super::{assert_exactly_once, count_status, sleep, submit_all, wait_all_ended};
use crate::LONG;

/// Node lease of both replicas: short, so that a replica that missed the executor would declare it
/// lost well within the tasks' run.
const LEASE_MS: u64 = 3000;
/// How long each task runs: longer than the lease.
const SLEEP_MS: u64 = 6000;
const TASKS: usize = 4;

/// What happens to the replica the executor calls first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// SIGTERM: it drains and exits; connections are refused.
    Stop,
    /// SIGSTOP: connections stay open and nothing answers; heartbeats time out.
    Freeze,
}

async fn an_executor_fails_over_when_its_replica(outage: Outage) {
    let lease = legion_tests::settings::short_node_lease(LEASE_MS);
    let env = TestEnv::start_with_settings(lease).await.expect("control plane starts");
    let mut first = env.start_replica().await.expect("second replica starts");
    let pool = env.db().pool().await.expect("pool");
    let urls = json!({"control_plane": {
        "url": control_plane_url(first.grpc_addr()),
        "failover_urls": [control_plane_url(env.control_plane_addr())],
    }});
    let node = env
        .start_node(&NodeSpec { heartbeat_ms: 500, extra: urls, ..NodeSpec::default() })
        .await
        .expect("executor starts");
    // Both replicas have listened for a whole lease, so either may declare a silent node lost.
    tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;

    let ids = submit_all(&env, (0..TASKS).map(|_| sleep(SLEEP_MS)).collect(), TASKS).await;
    assert_eventually!(LONG, "every task running", || async {
        match count_status(&pool, "running").await {
            n if n == i64::try_from(TASKS).expect("small") => Ok(()),
            n => Err(format!("{n} running")),
        }
    });
    match outage {
        Outage::Stop => {
            let status = first.stop().await;
            assert!(status.is_some_and(|s| s.success()), "the replica drains and exits 0: {status:?}");
        }
        Outage::Freeze => assert!(first.service().signal("STOP"), "SIGSTOP delivered"),
    }

    wait_all_ended(&pool, i64::try_from(TASKS).expect("small"), LONG).await;
    assert_exactly_once(&pool).await;
    for task in ledger::tasks(&pool, &ids).await.expect("tasks") {
        assert_eq!((task.status.as_str(), task.attempt), ("succeeded", 1), "{outage:?}: {task:?}");
    }
    let attempts = ledger::all_attempts(&pool).await.expect("attempts");
    let lost: Vec<_> = attempts.values().flatten().filter(|a| a.status != "succeeded").collect();
    assert!(lost.is_empty(), "{outage:?}: no attempt was lost or retried: {lost:#?}");
    let (status,): (String,) = sqlx::query_as("SELECT status FROM nodes WHERE name = $1")
        .bind(node.name())
        .fetch_one(&pool)
        .await
        .expect("the node's row");
    assert_eq!(status, "active", "{outage:?}: the other replica never declared the executor lost");
    first.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_fails_over_when_its_replica_stops_and_is_never_declared_lost() {
    an_executor_fails_over_when_its_replica(Outage::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_fails_over_when_its_replica_freezes_and_is_never_declared_lost() {
    an_executor_fails_over_when_its_replica(Outage::Freeze).await;
}
