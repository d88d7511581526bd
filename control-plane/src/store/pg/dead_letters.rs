//! [`DeadLetterStore`] on PostgreSQL. Dead letters are read through the partial index
//! `tasks_dead_lettered` (migration 0009), hence the literal status in the list query.

use async_trait::async_trait;
use legion_common::TaskStatus;
use uuid::Uuid;

use super::outbox::{DispatchRow, dispatch_columns, insert_outbox};
use super::{PgStore, TaskRow, task_columns, with_retries};
use crate::events::StatusChange;
use crate::store::dead_letters::{DeadLetterFilter, DeadLetterStore};
use crate::store::{Error, Result, Task, TaskFilter, TaskPage, TaskStore};

#[async_trait]
impl DeadLetterStore for PgStore {
    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<TaskPage> {
        let filter = TaskFilter {
            status: Some(TaskStatus::DeadLettered),
            function: filter.function.clone(),
            chain: None,
            root_id: None,
            before: filter.before,
            limit: filter.limit,
            max_bytes: filter.max_bytes,
        };
        self.list_tasks(&filter).await
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
