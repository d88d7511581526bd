//! The executor's completion spool (DESIGN.md section 5 item 7; docs/architecture.md, "Spool";
//! executor/README.md, "Spool"): the control plane is stopped while an executor runs 100
//! `core.util.sleep` tasks. Their completions cannot be reported, so after `executor.spool_after_ms`
//! they are written to the encrypted spool and only then are their messages acked (the queue is empty,
//! nothing unacked, while PostgreSQL still says `running`). The executor is stopped (SIGTERM) and
//! started again while the control plane is still down, then the control plane starts: all 100 tasks
//! succeed exactly once from the spool (the new process counts 100 replayed lines), and the spool's
//! files are deleted once answered.

use std::path::{Path, PathBuf};

use legion_tests::env::NODE_NAME;
use legion_tests::nodes::{EXECUTOR_BINARY, NodeSpec};
use legion_tests::{TestEnv, assert_eventually, ledger};
use serde_json::json;

use super::wait_queues_empty;
use crate::faults::{assert_exactly_once, count_status, sleep, submit_all, wait_all_ended};
use crate::{LONG, result_json};

const TASKS: usize = 100;
/// Long enough that the control plane is down before the first sleep ends.
const SLEEP_MS: u64 = 5000;
/// `executor.spool_after_ms`: how long completions wait for the control plane before they are spooled.
const SPOOL_AFTER_MS: u64 = 500;

/// The spool's data files (`NNNNNNNNNNNNNNNNNNNN.jsonl`) and their sizes.
fn spool_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(PathBuf, u64)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len());
            (p, len)
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_spooled_while_the_control_plane_is_down_arrive_after_an_executor_restart() {
    let mut env = TestEnv::start().await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let spool_dir = env.work_dir().join("spool");
    let spec = NodeSpec {
        concurrency: u32::try_from(TASKS).expect("small"),
        extra: json!({"executor": {
            "spool_dir": spool_dir,
            "spool_after_ms": SPOOL_AFTER_MS,
            "shutdown_grace_ms": 10_000,
        }}),
        ..NodeSpec::default()
    };
    let mut launcher = env.node_launcher(EXECUTOR_BINARY, &spec).expect("launcher");
    let mut first = launcher.spawn().expect("first executor");
    env.wait_node_ready(&mut first).await.expect("first executor ready");

    let ids = submit_all(&env, (0..TASKS).map(|_| sleep(SLEEP_MS)).collect(), 8).await;
    assert_eventually!(LONG, "all 100 sleeps run", || async {
        match count_status(&pool, "running").await {
            n if n == i64::try_from(TASKS).expect("small") => Ok(()),
            n => Err(format!("{n} running: {:?}", ledger::by_status(&pool).await)),
        }
    });
    let status = env.stop_control_plane().await;
    assert!(status.is_some_and(|s| s.success()), "the control plane stops and exits 0: {status:?}");
    let still_running = count_status(&pool, "running").await;
    assert_eq!(still_running, i64::try_from(TASKS).expect("small"), "nothing completed before the stop");

    // The sleeps end, the completions cannot be reported: spooled, then acked.
    assert_eventually!(LONG, "the executor spools all 100 completions", || async {
        let spooled = first.metric("legion_executor_spool_spooled_total", &[]).await?;
        if spooled >= 100.0 { Ok(spooled) } else { Err(format!("{spooled} spooled")) }
    });
    let files = spool_files(&spool_dir);
    assert!(!files.is_empty() && files.iter().all(|(_, len)| *len > 0), "spool files with data: {files:?}");
    wait_queues_empty(&env, "every spooled completion's message is acked").await;
    assert_eq!(
        count_status(&pool, "running").await,
        i64::try_from(TASKS).expect("small"),
        "PostgreSQL has heard nothing: the completions live only in the spool"
    );
    let spooled = first.metric("legion_executor_spool_spooled_total", &[]).await.expect("metrics");
    assert!((spooled - 100.0).abs() < f64::EPSILON, "each completion spooled once: {spooled}");

    // Restart the executor while the control plane is still down; the spool survives it.
    assert!(first.begin_terminate(), "SIGTERM delivered");
    let exit = first.wait_exit(LONG).await;
    assert!(exit.is_some(), "the executor exits on SIGTERM although the control plane is down");
    assert!(!spool_files(&spool_dir).is_empty(), "the spool survives the executor's exit");
    let mut second = launcher.spawn().expect("second executor");
    env.restart_control_plane().await.expect("the control plane starts again");
    env.wait_node_ready(&mut second).await.expect("second executor ready");

    wait_all_ended(&pool, i64::try_from(TASKS).expect("small"), LONG).await;
    assert_exactly_once(&pool).await;
    assert_eq!(count_status(&pool, "succeeded").await, i64::try_from(TASKS).expect("small"), "every task succeeded");
    let attempts = ledger::all_attempts(&pool).await.expect("attempts");
    for id in &ids {
        let rows: Vec<(i32, &str, &str)> =
            attempts[id].iter().map(|a| (a.attempt, a.status.as_str(), a.node.as_str())).collect();
        assert_eq!(rows, vec![(1, "succeeded", NODE_NAME)], "task {id}: its one attempt, completed from the spool");
    }
    let task = env.get_task(&ids[0]).await.expect("GetTask");
    assert_eq!(result_json(&task), json!({"slept_ms": SLEEP_MS}));
    assert_eventually!(LONG, "the new executor replayed 100 spooled completions", || async {
        let replayed = second.metric("legion_executor_spool_replayed_total", &[]).await?;
        if (replayed - 100.0).abs() < f64::EPSILON { Ok(()) } else { Err(format!("{replayed} replayed")) }
    });
    let ran = second.metric("legion_executor_runs_total", &[]).await.expect("metrics");
    assert!(ran < 0.5, "the new executor ran nothing itself: {ran} runs");
    assert_eventually!(LONG, "the answered spool files are deleted", || async {
        let files = spool_files(&spool_dir);
        if files.is_empty() { Ok(()) } else { Err(format!("{files:?}")) }
    });
}
