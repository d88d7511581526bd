//! Reads of the benchmark's tasks straight from PostgreSQL (the control plane's `tasks` table), so
//! that following ten thousand tasks costs one cheap query per poll instead of per-task gRPC calls.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// Statuses that are not terminal (DESIGN.md section 4).
pub const UNFINISHED: [&str; 4] = ["pending", "scheduled", "queued", "running"];

/// PostgreSQL failures, naming the flag or query at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached.
    #[error("--database-url: cannot connect: {0}")]
    Connect(#[source] sqlx::Error),
    /// A query failed.
    #[error("query {query} failed: {source}")]
    Query {
        /// Which query.
        query: &'static str,
        /// The driver error.
        source: sqlx::Error,
    },
}

/// One task's status and timestamps, as stored by the control plane.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskTimes {
    /// Task id.
    pub id: Uuid,
    /// Status (`succeeded`, `failed`, …).
    pub status: String,
    /// When the submit transaction wrote the task.
    pub created_at: DateTime<Utc>,
    /// When the current attempt started; `None` if it never started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the task ended; `None` if it has not.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One task of a chain run, with what the `chain` scenario measures (see [`crate::chain`]).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunTask {
    /// Task id.
    pub id: Uuid,
    /// The run's root task (the root's own id for the root).
    pub root_id: Uuid,
    /// The task whose success created it; `None` for the root.
    pub parent_id: Option<Uuid>,
    /// 0 for the root, parent's depth + 1.
    pub depth: i32,
    /// Status (`succeeded`, `skipped`, …).
    pub status: String,
    /// When the transaction that wrote the task began (for a child: its parent's completion).
    pub created_at: DateTime<Utc>,
    /// When the outbox publisher marked it `queued` after the broker's confirm; `None` if never.
    pub queued_at: Option<DateTime<Utc>>,
    /// When its first attempt started; `None` if it never started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended; `None` if it has not.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A small pool on the control plane's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects with two connections (the benchmark reads little and must not compete for
    /// connections with the control plane).
    ///
    /// # Errors
    /// [`Error::Connect`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(Error::Connect)?;
        Ok(Self { pool })
    }

    /// Number of tasks among `ids` that are not terminal yet.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn count_unfinished(&self, ids: &[Uuid]) -> Result<u64, Error> {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks WHERE status = ANY($1) AND id = ANY($2)")
            .bind(UNFINISHED.as_slice())
            .bind(ids)
            .fetch_one(&self.pool)
            .await
            .map_err(|source| Error::Query { query: "count unfinished tasks", source })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Polls [`Self::count_unfinished`] every `poll` until it is 0 or `timeout` passed, logging
    /// progress every few seconds. Returns the number still unfinished (0 when all ended).
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn wait_finished(&self, ids: &[Uuid], poll: Duration, timeout: Duration) -> Result<u64, Error> {
        let started = Instant::now();
        let mut last_log = Instant::now();
        loop {
            let unfinished = self.count_unfinished(ids).await?;
            if unfinished == 0 {
                return Ok(0);
            }
            if started.elapsed() >= timeout {
                tracing::warn!(unfinished, timeout_s = timeout.as_secs(), "tasks did not finish in time");
                return Ok(unfinished);
            }
            if last_log.elapsed() >= Duration::from_secs(2) {
                tracing::info!(unfinished, total = ids.len(), "waiting for tasks to finish");
                last_log = Instant::now();
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Transactions committed in this database so far (`pg_stat_database.xact_commit`). PostgreSQL
    /// updates the counter lazily: a busy backend reports at most once a second, an idle one within
    /// 10 s, so read it again after such a pause for an exact difference.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn commits(&self) -> Result<u64, Error> {
        let (commits,): (i64,) =
            sqlx::query_as("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                .fetch_one(&self.pool)
                .await
                .map_err(|source| Error::Query { query: "commit counter", source })?;
        Ok(u64::try_from(commits).unwrap_or(0))
    }

    /// The roots among `roots` whose chain run still has an unfinished task. A child is written in its
    /// parent's completion transaction, so a run with no unfinished task has ended.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn unfinished_runs(&self, roots: &[Uuid]) -> Result<Vec<Uuid>, Error> {
        let rows: Vec<(Uuid,)> =
            sqlx::query_as("SELECT DISTINCT root_id FROM tasks WHERE root_id = ANY($1) AND status = ANY($2)")
                .bind(roots)
                .bind(UNFINISHED.as_slice())
                .fetch_all(&self.pool)
                .await
                .map_err(|source| Error::Query { query: "unfinished chain runs", source })?;
        Ok(rows.into_iter().map(|(root,)| root).collect())
    }

    /// Every task of the chain runs rooted at `roots`.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn run_tasks(&self, roots: &[Uuid]) -> Result<Vec<RunTask>, Error> {
        sqlx::query_as::<_, RunTask>(
            "SELECT id, root_id, parent_id, depth, status, created_at, queued_at, started_at, finished_at \
             FROM tasks WHERE root_id = ANY($1)",
        )
        .bind(roots)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| Error::Query { query: "chain run tasks", source })
    }

    /// Status and timestamps of the tasks among `ids` (ids unknown to the table are absent).
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn task_times(&self, ids: &[Uuid]) -> Result<Vec<TaskTimes>, Error> {
        sqlx::query_as::<_, TaskTimes>(
            "SELECT id, status, created_at, started_at, finished_at FROM tasks WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| Error::Query { query: "task times", source })
    }
}
