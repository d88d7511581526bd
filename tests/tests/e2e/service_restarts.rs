//! RabbitMQ and PostgreSQL restarted in the middle of a run (issue 6, "How we will know it works"):
//! every task ends, none succeeded twice. These tests stop a shared service, so they hold the
//! exclusive service lock and `.config/nextest.toml` gives them every test thread; the outage guards
//! start the service again even when a test fails.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use legion_tests::{ExecutorOptions, TestEnv, assert_eventually, grpc, wait};
use serde_json::json;

use crate::LONG;
use crate::faults::{assert_exactly_once, count_status, request, sleep, submit_all, wait_all_ended};

/// How long a service stays down.
const OUTAGE: Duration = Duration::from_secs(3);

/// Holds for [`OUTAGE`] while nothing accepts connections on `addr`.
async fn stays_down(addr: SocketAddr, what: &str) {
    wait::holds_for(&format!("{what} stays down"), OUTAGE, || async move {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(_) => Err(format!("{addr} accepts connections")),
            Err(_) => Ok(()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Waits until at least `n` tasks succeeded.
async fn until_succeeded(pool: &sqlx::PgPool, n: i64) {
    assert_eventually!(LONG, &format!("{n} tasks succeeded"), || async {
        match count_status(pool, "succeeded").await {
            done if done >= n => Ok(()),
            done => Err(format!("{done} succeeded")),
        }
    });
}

const BROKER_TASKS: usize = 1000;
/// 1,000 tasks of 200 ms on 16 slots take over 12 s: the broker stops in the middle of the run.
const BROKER_SLEEP_MS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_1000_survives_a_rabbitmq_restart() {
    let env = TestEnv::start_exclusive().await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let options = ExecutorOptions { concurrency: 16, ..ExecutorOptions::default() };
    let _executor = env.start_executor(&options).await.expect("executor starts");
    let ids = submit_all(&env, (0..BROKER_TASKS).map(|_| sleep(BROKER_SLEEP_MS)).collect(), 16).await;
    until_succeeded(&pool, 100).await;

    let before = count_status(&pool, "succeeded").await;
    let outage = env.stop_rabbitmq().await.expect("rabbitmq stops");
    let during = count_status(&pool, "succeeded").await;
    stays_down(SocketAddr::from(legion_tests::rabbit::AMQP_ADDR), "rabbitmq").await;
    outage.end().await.expect("rabbitmq is back");

    let total = i64::try_from(BROKER_TASKS).expect("small");
    wait_all_ended(&pool, total, LONG * 3).await;
    assert_exactly_once(&pool).await;
    let (succeeded, taken_over): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE attempt > 1) FROM tasks",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    eprintln!(
        "rabbitmq restart: {before} of {total} succeeded before the stop, {during} once stopped; {taken_over} tasks \
         ran more than one attempt"
    );
    assert!(during < total, "the broker went down in the middle of the run");
    assert_eq!(succeeded, total, "every task succeeded");
    for id in ids.iter().step_by(97) {
        let task = env.get_task(id).await.expect("GetTask");
        assert_eq!(crate::result_json(&task), json!({"slept_ms": BROKER_SLEEP_MS}), "task {id}");
    }
}

const DATABASE_TASKS: usize = 300;
/// 300 tasks of 200 ms on 8 slots take over 7 s: the database stops in the middle of the run.
const DATABASE_SLEEP_MS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_postgresql_restart() {
    let env = TestEnv::start_exclusive().await.expect("control plane starts");
    let options = ExecutorOptions { concurrency: 8, ..ExecutorOptions::default() };
    let _executor = env.start_executor(&options).await.expect("executor starts");
    let ids = submit_all(&env, (0..DATABASE_TASKS).map(|_| sleep(DATABASE_SLEEP_MS)).collect(), 8).await;
    assert_eq!(ids.len(), DATABASE_TASKS);
    let before = {
        let pool = env.db().pool().await.expect("pool");
        until_succeeded(&pool, 40).await;
        let before = count_status(&pool, "succeeded").await;
        pool.close().await;
        before
    };

    let outage = env.stop_postgres().await.expect("postgresql stops");
    // A submit while the database is down must not be accepted without being stored.
    let mut client = env.tasks();
    let submit = tokio::spawn(async move {
        let request = grpc::request(request("core.util.echo", json!({"during": "outage"})));
        client.submit_task(request).await.map(|r| r.into_inner().task)
    });
    stays_down(SocketAddr::from(legion_tests::postgres::PG_ADDR), "postgresql").await;
    outage.end().await.expect("postgresql is back");
    let during = tokio::time::timeout(LONG, submit).await.map(|joined| joined.expect("submit task"));

    let pool = env.db().pool().await.expect("pool after the restart");
    let mut expected = i64::try_from(DATABASE_TASKS).expect("small");
    match during {
        Ok(Ok(task)) => {
            let id = task.map(|t| t.id).unwrap_or_default();
            eprintln!("postgresql restart: the submit during the outage was accepted as {id}");
            expected += 1;
        }
        Ok(Err(status)) => eprintln!("postgresql restart: the submit during the outage failed: {status:?}"),
        Err(_) => panic!("a submit during the outage neither failed nor returned within {LONG:?}"),
    }
    let after = count_status(&pool, "succeeded").await;
    eprintln!("postgresql restart: {before} succeeded before the stop, {after} right after the start");
    assert!(after < expected, "postgresql went down in the middle of the run");
    wait_all_ended(&pool, expected, LONG * 2).await;
    let (total, _) = legion_tests::ledger::counts(&pool).await.expect("count");
    assert_eq!(total, expected, "every accepted task is stored, nothing else");
    assert_exactly_once(&pool).await;
    let succeeded = count_status(&pool, "succeeded").await;
    assert_eq!(succeeded, expected, "every task succeeded: {:?}", legion_tests::ledger::by_status(&pool).await);
}
