//! [`DeadLetterStore`] on PostgreSQL. Dead letters are read through the partial index
//! `tasks_dead_lettered` (migration 0009), hence the literal status in the list query.

use async_trait::async_trait;
use legion_common::TaskStatus;
use uuid::Uuid;

use super::outbox::{DispatchRow, dispatch_columns, insert_outbox};
use super::{PgStore, TaskRow, task_columns, with_retries};
use crate::events::StatusChange;
use crate::store::dead_letters::{DeadLetterFilter, DeadLetterStore};
use crate::store::{Error, Result, Task, TaskPage};

#[async_trait]
impl DeadLetterStore for PgStore {
    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<TaskPage> {
        // As `list_tasks`: the newest `limit + 1` rows are sized (JSON text of args and result, plus
        // error); only those that fit in `max_bytes` (and at least the first) leave the database.
        let rows: Vec<PageRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            ", scanned FROM (
                 SELECT page.*, row_number() OVER w AS n, sum(size) OVER w AS running, count(*) OVER () AS scanned
                 FROM (SELECT ",
            task_columns!(),
            ", octet_length(args::text) + COALESCE(octet_length(result::text), 0)
                         + COALESCE(octet_length(error), 0) AS size
                       FROM tasks
                       WHERE status = 'dead_lettered'
                         AND ($1::text IS NULL OR function = $1)
                         AND ($2::uuid IS NULL OR id < $2)
                       ORDER BY id DESC LIMIT $3) AS page
                 WINDOW w AS (ORDER BY id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
             ) AS sized
             WHERE n <= $4 AND ($5::int8 IS NULL OR n = 1 OR running <= $5)
             ORDER BY id DESC"
        ))
        .bind(filter.function.as_deref())
        .bind(filter.before)
        .bind(i64::from(filter.limit) + 1)
        .bind(i64::from(filter.limit))
        .bind(filter.max_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)))
        .fetch_all(&self.pool)
        .await?;
        let scanned = rows.first().map_or(0, |row| row.scanned);
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) < scanned;
        let tasks = rows.into_iter().map(|row| Task::try_from(row.task)).collect::<Result<Vec<_>>>()?;
        Ok(TaskPage { tasks, more })
    }

    async fn replay_dead_letter(&self, id: Uuid) -> Result<(Task, Vec<StatusChange>)> {
        with_retries("replay dead letter", || self.replay_once(id)).await
    }
}

impl PgStore {
    async fn replay_once(&self, id: Uuid) -> Result<(Task, Vec<StatusChange>)> {
        let mut tx = self.pool.begin().await?;
        let locked: Option<(String, String, Option<bool>)> = sqlx::query_as(
            "SELECT t.status, split_part(t.function, '.', 1), e.disabled
             FROM tasks t LEFT JOIN extensions e ON e.name = split_part(t.function, '.', 1)
             WHERE t.id = $1 FOR UPDATE OF t",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, extension, disabled) = locked.ok_or_else(|| Error::NotFound(format!("task_id: no task {id}")))?;
        if status != TaskStatus::DeadLettered.as_str() {
            return Err(Error::FailedPrecondition(format!(
                "task {id} is {status}, not dead_lettered: only dead letters can be replayed"
            )));
        }
        if disabled == Some(true) {
            return Err(Error::FailedPrecondition(format!(
                "extension {extension:?} is disabled: enable it before replaying its tasks"
            )));
        }
        let dispatch: DispatchRow = sqlx::query_as(concat!(
            "UPDATE tasks SET status = 'pending', dispatch = dispatch + 1, failures = 0, redeliveries = 0,
                              replays = replays + 1, finished_at = NULL, not_before = NULL
             WHERE id = $1 RETURNING ",
            dispatch_columns!()
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        insert_outbox(&mut tx, &[dispatch.outbox()]).await?;
        let row: TaskRow = sqlx::query_as(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let task = Task::try_from(row)?;
        let change = StatusChange { task_id: id, status: task.status, attempt: task.attempt };
        Ok((task, vec![change]))
    }
}

/// A row of a dead-letter page: the task and how many rows the page query looked at.
#[derive(Debug, sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    task: TaskRow,
    scanned: i64,
}
