//! The control plane stopped (SIGTERM, or SIGKILL) and started again on the same database in the
//! middle of a run: the executor keeps its deliveries unacked while it cannot report (docs/architecture.md,
//! "Delivery protocol" step 5), nobody is declared lost for an outage shorter than the lease, and
//! every task ends, none succeeded twice.

use std::time::Duration;

use legion_tests::{ExecutorOptions, TestEnv, assert_eventually, wait};

use super::{assert_exactly_once, count_status, sleep, submit_all, wait_all_ended};
use crate::LONG;

const TASKS: usize = 300;

async fn a_run_survives_a_control_plane_restart(kill: bool) {
    let mut env = TestEnv::start().await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let options = ExecutorOptions { concurrency: 8, ..ExecutorOptions::default() };
    let _executor = env.start_executor(&options).await.expect("executor starts");
    let ids = submit_all(&env, (0..TASKS).map(|_| sleep(100)).collect(), 8).await;
    assert_eq!(ids.len(), TASKS);
    assert_eventually!(LONG, "the run is under way", || async {
        match count_status(&pool, "succeeded").await {
            n if n >= 40 => Ok(()),
            n => Err(format!("{n} succeeded")),
        }
    });

    if kill {
        env.kill_control_plane();
    } else {
        let status = env.stop_control_plane().await;
        assert!(status.is_some_and(|s| s.success()), "the control plane drains and exits 0: {status:?}");
    }
    let admin = format!("http://{}/readyz", env.admin_addr());
    wait::holds_for("the control plane stays down", Duration::from_secs(2), || async {
        match env.http().get(&admin).send().await {
            Ok(r) => Err(format!("{admin} answered {}", r.status())),
            Err(_) => Ok(()),
        }
    })
    .await
    .expect("down");
    let (_, unfinished_during) = legion_tests::ledger::counts(&pool).await.expect("count");
    env.restart_control_plane().await.expect("the control plane starts again");

    wait_all_ended(&pool, i64::try_from(TASKS).expect("small"), LONG * 2).await;
    assert_exactly_once(&pool).await;
    let succeeded = count_status(&pool, "succeeded").await;
    eprintln!(
        "control plane {}: {unfinished_during} tasks unfinished during the outage; {succeeded} succeeded",
        if kill { "killed" } else { "stopped" }
    );
    assert_eq!(succeeded, i64::try_from(TASKS).expect("small"), "every task succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_control_plane_stop_and_start() {
    a_run_survives_a_control_plane_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_control_plane_kill_and_start() {
    a_run_survives_a_control_plane_restart(true).await;
}
