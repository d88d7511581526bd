//! With RabbitMQ down, submits are still accepted (task and outbox row in one PostgreSQL transaction)
//! and wait `pending`; once the broker is back every one of them runs. This test stops the shared
//! broker, so it holds the exclusive service lock and restarts RabbitMQ even when it fails.

use std::time::Duration;

use legion_proto::v1::TaskStatus;
use legion_tests::status::from_wire;
use legion_tests::wait::holds_for;
use legion_tests::{ExecutorOptions, TestEnv, env::TASK_TIMEOUT};
use serde_json::json;

use crate::{LONG, describe, result_json};

const TASKS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_wait_while_rabbitmq_is_down_and_run_after() {
    let env = TestEnv::start_exclusive().await.expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    // The broker path works before the outage.
    let warmup = env.submit("core.util.echo", json!({"phase": "before"})).await.expect("submit");
    env.wait_for_status(&warmup.id, TaskStatus::Succeeded, TASK_TIMEOUT).await.expect("warm-up task succeeds");

    let outage = env.stop_rabbitmq().await.expect("rabbitmq stops");
    let mut ids = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let task = env.submit("core.util.echo", json!({"i": i})).await.expect("submits are accepted while down");
        ids.push(task.id);
    }
    let pool = env.db().pool().await.expect("database pool");
    holds_for("every task stays pending with its outbox row", Duration::from_secs(3), || async {
        for id in &ids {
            let task = env.get_task(id).await.map_err(|s| format!("GetTask: {s}"))?;
            if from_wire(task.status) != TaskStatus::Pending {
                return Err(format!("task {id} is {}", describe(&task)));
            }
        }
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE task_id::text = ANY($1)")
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("outbox count: {e}"))?;
        if outbox != i64::try_from(TASKS).unwrap_or(i64::MAX) {
            return Err(format!("{outbox} outbox rows for {TASKS} tasks"));
        }
        Ok(())
    })
    .await
    .expect("tasks wait in the outbox");
    outage.end().await.expect("rabbitmq is back");

    for (i, id) in ids.iter().enumerate() {
        let task = env.wait_terminal(id, LONG * 2).await.expect("task ends after the broker returned");
        assert_eq!(from_wire(task.status), TaskStatus::Succeeded, "task {i}: {}", describe(&task));
        assert_eq!(result_json(&task), json!({"i": i}));
        assert_eq!(task.attempt, 1, "task {i} ran once");
    }
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await.expect("outbox");
    assert_eq!(outbox, 0, "every outbox row was published and deleted");
}
