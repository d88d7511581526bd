//! Failures without loss, the features of issue 6 end to end (README "Tasks, regions, chains and
//! schedules", docs/architecture.md "Delivery protocol", "Dead letters", "Lost nodes", "Spool"): a
//! poison message that aborts its executor on every delivery is dead-lettered and replayed; a task
//! that hangs its executor ends within its timeout plus the node lease; completions spooled while the
//! control plane is down arrive after an executor restart; retries wait out their backoff as
//! `scheduled`; a permanent failure is not retried; a stopped executor leaves the node list; an
//! oversize result fails alone and its task can be cancelled while it waits for its retry.
//!
//! The fault functions come from the fault-injection executor `legion-executor-faults`
//! ([`legion_tests::nodes::FAULTS_BINARY`]). Every test checks at the end, in PostgreSQL, that every
//! task ended and each succeeded task has exactly one `succeeded` attempt row
//! ([`crate::faults::assert_exactly_once`], which also checks that no follow-up fired twice).

mod drain;
mod hang;
mod oversize;
mod poison;
mod retry;
mod spool;

use legion_tests::rabbit::{self, QueueCounts};
use legion_tests::{TestEnv, assert_eventually, ledger};
use sqlx::PgPool;

use crate::LONG;

/// A `task_attempts` row with its instants (µs since the epoch, PostgreSQL's clock).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TimedAttempt {
    /// Attempt number, from 1.
    pub attempt: i32,
    /// The node that ran it.
    pub node: String,
    /// `running`, `succeeded`, `failed`, `timed_out`, `lost` or `cancelled`.
    pub status: String,
    /// The error, if any.
    pub error: Option<String>,
    /// Start (µs).
    pub started_us: i64,
    /// End (µs), if it ended.
    pub finished_us: Option<i64>,
}

/// The attempt rows of task `id` in attempt order, with their instants.
pub async fn timed_attempts(pool: &PgPool, id: &str) -> Vec<TimedAttempt> {
    sqlx::query_as(
        "SELECT attempt, node, status, error, \
         (extract(epoch FROM started_at) * 1000000)::bigint AS started_us, \
         (extract(epoch FROM finished_at) * 1000000)::bigint AS finished_us \
         FROM task_attempts WHERE task_id::text = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("read task_attempts")
}

/// The queues of the test's vhost with their ready and unacked counts.
pub async fn queues(env: &TestEnv) -> Result<Vec<QueueCounts>, String> {
    let vhost = env.vhost_name().to_owned();
    match tokio::task::spawn_blocking(move || rabbit::queue_counts(&vhost)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("rabbitmqctl task: {e}")),
    }
}

/// Waits until every queue of the test's vhost is empty: nothing ready, nothing unacked.
pub async fn wait_queues_empty(env: &TestEnv, what: &str) {
    assert_eventually!(LONG, what, || async {
        let queues = queues(env).await?;
        if queues.iter().all(|q| q.ready == 0 && q.unacked == 0) { Ok(()) } else { Err(format!("{queues:?}")) }
    });
}

/// Waits until task `id` has status `status` in PostgreSQL, and returns its row.
pub async fn wait_row_status(pool: &PgPool, id: &str, status: &str) -> ledger::TaskRow {
    assert_eventually!(LONG, &format!("task {id} {status}"), || async {
        let task = ledger::task(pool, id).await.map_err(|e| e.to_string())?;
        if task.status == status { Ok(task) } else { Err(format!("{task:?}")) }
    })
}
