//! Storage of dead letters: tasks that ended `dead_lettered` (their message was delivered more than
//! `transport.delivery_limit` times, or could not be routed), listed and replayed (DESIGN.md section 5,
//! item 5; docs/architecture.md "Dead letters").

use async_trait::async_trait;
use uuid::Uuid;

use super::{Result, Task, TaskPage};
use crate::events::StatusChange;

/// Which dead letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only dead letters of this function (`extension.runner.function`).
    pub function: Option<String>,
    /// Only ids smaller than this (the page token).
    pub before: Option<Uuid>,
    /// Most tasks on the page.
    pub limit: u32,
    /// Most bytes of task data on the page, measured as [`super::TaskFilter::max_bytes`]; the page holds
    /// at least one task. `None` for no byte limit.
    pub max_bytes: Option<usize>,
}

/// Dead letters: list and replay.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Tasks in status `dead_lettered` matching `filter`, newest first (by id): at most `filter.limit`,
    /// and no more than fit in `filter.max_bytes` (but at least one).
    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<TaskPage>;

    /// In one transaction, with the task's row locked: moves a `dead_lettered` task back to `pending`
    /// with a new dispatch (`dispatch + 1`) and its outbox row, `failures` and `redeliveries` reset to 0,
    /// `replays + 1`, `finished_at` and `not_before` cleared. Its `error` (the dead-letter reason) is
    /// kept until the next attempt's outcome replaces it; its attempts and attempt number are kept, so
    /// the next attempt number keeps rising. Returns the task as it is after the replay and its status
    /// change.
    ///
    /// # Errors
    /// [`super::Error::NotFound`] for an unknown id, [`super::Error::FailedPrecondition`] when the task
    /// is not `dead_lettered` or its extension is disabled.
    async fn replay_dead_letter(&self, id: Uuid) -> Result<(Task, Vec<StatusChange>)>;
}
