//! The PostgreSQL backend: a sqlx pool of `data.max_connections` connections, the embedded migrations
//! (`migrations/`), and the repository traits of [`crate::store`].
//!
//! Queries are runtime-checked (`sqlx::query`/`query_as`), parameterized, and set-based over arrays
//! (`UNNEST`) for batches. Every transaction that changes tasks locks them in id order.

mod catalog;
mod chains;
mod dead_letters;
mod delivery;
mod leases;
mod outbox;
mod schedule_history;
mod schedule_ticks;
mod schedules;
mod security;
mod tasks;

use std::time::Duration;

use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use legion_common::settings::{DataSettings, RetrySettings};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::{Error, Result, Task};
use crate::chains::fire::Firing;
use crate::delivery::TaskState;
use crate::delivery::retry::RetryPolicy;

/// The schema migrations, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Transactions that lose a deadlock or serialization race are run again this many times.
const CONFLICT_RETRIES: u32 = 3;

/// Opens a pool of `data.max_connections` connections to `data.url`.
///
/// # Errors
/// When the database cannot be reached or refuses the credentials.
pub async fn connect(data: &DataSettings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(data.max_connections)
        .acquire_timeout(Duration::from_millis(data.acquire_timeout_ms))
        .connect(&data.url)
        .await
}

/// Applies the pending migrations (under sqlx's advisory lock, so replicas may start together).
///
/// # Errors
/// When a migration fails or the database history does not match the embedded migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The PostgreSQL store. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    firing: Option<Firing>,
    /// The `retry.*` settings: the policy of tasks written without one, and the unset fields of the
    /// policies of chain children and fired schedule tasks.
    retry: RetrySettings,
    /// `control_plane.idempotency_retention_s`.
    idempotency_retention: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("pool", &self.pool).field("fires_chains", &self.firing.is_some()).finish()
    }
}

impl PgStore {
    /// A store over `pool` that records completions without firing chains.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            firing: None,
            retry: RetrySettings::default(),
            idempotency_retention: Duration::from_secs(
                legion_common::settings::ControlPlaneSettings::default().idempotency_retention_s,
            ),
        }
    }

    /// The same store with the `retry.*` settings (default: their defaults): the policy of tasks
    /// written before policies were stored, and the fields a relationship or schedule leaves unset.
    #[must_use]
    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// The same store with `control_plane.idempotency_retention_s` (default 86400 s): a submit whose
    /// key belongs to a task created longer ago creates a new task.
    #[must_use]
    pub fn with_idempotency_retention(mut self, retention: Duration) -> Self {
        self.idempotency_retention = retention;
        self
    }

    /// The policy of tasks without a stored one (the `retry.*` settings).
    pub(crate) fn default_retry(&self) -> RetryPolicy {
        RetryPolicy::from(&self.retry)
    }

    /// The same store, firing the relationships of chain runs when their tasks succeed
    /// ([`crate::chains::fire`]).
    #[must_use]
    pub fn with_firing(mut self, firing: Firing) -> Self {
        self.firing = Some(firing);
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Runs `op` again while it fails with a retryable conflict, at most [`CONFLICT_RETRIES`] more times.
async fn with_retries<T, F, Fut>(what: &'static str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut retries = 0;
    loop {
        match op().await {
            Err(e) if e.is_retryable() && retries < CONFLICT_RETRIES => {
                retries += 1;
                tracing::debug!(operation = what, retries, error = %e, "transaction conflict, running it again");
            }
            other => return other,
        }
    }
}

/// The columns of [`TaskRow`], in order.
macro_rules! task_columns {
    () => {
        "id, function, status, args, result, error, attempt, failures, max_attempts, dispatch, redeliveries, \
         priority, timeout_ms, chain, root_id, parent_id, relationship_id, node, region, idempotency_key, \
         not_before, created_at, started_at, finished_at, owner, depth, chain_version, fanout_index, retry, \
         replays"
    };
}
pub(crate) use task_columns;

/// The columns of [`StateRow`], for a task locked by a batch.
macro_rules! state_columns {
    () => {
        "id, status, attempt, failures, max_attempts, dispatch, redeliveries, node, \
         (not_before IS NULL OR not_before <= now()) AS due, chain_version, retry, timeout_ms"
    };
}
pub(crate) use state_columns;

/// A `tasks` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TaskRow {
    id: Uuid,
    function: String,
    status: String,
    args: serde_json::Value,
    result: Option<serde_json::Value>,
    error: Option<String>,
    attempt: i32,
    failures: i32,
    max_attempts: i32,
    dispatch: i32,
    redeliveries: i32,
    priority: i16,
    timeout_ms: i32,
    chain: Option<String>,
    root_id: Option<Uuid>,
    parent_id: Option<Uuid>,
    relationship_id: Option<Uuid>,
    node: Option<String>,
    region: Option<String>,
    idempotency_key: Option<String>,
    not_before: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    owner: String,
    depth: i32,
    chain_version: Option<i64>,
    fanout_index: Option<i32>,
    retry: Option<serde_json::Value>,
    replays: i32,
}

impl TryFrom<TaskRow> for Task {
    type Error = Error;

    fn try_from(row: TaskRow) -> Result<Self> {
        Ok(Task {
            id: row.id,
            function: row.function,
            status: status(&row.status)?,
            args: row.args,
            result: row.result,
            error: row.error,
            attempt: unsigned(row.attempt, "attempt")?,
            failures: unsigned(row.failures, "failures")?,
            max_attempts: unsigned(row.max_attempts, "max_attempts")?,
            dispatch: unsigned(row.dispatch, "dispatch")?,
            redeliveries: unsigned(row.redeliveries, "redeliveries")?,
            priority: u8::try_from(row.priority).map_err(|_| corrupt("priority", row.priority))?,
            timeout_ms: unsigned(row.timeout_ms, "timeout_ms")?,
            chain: row.chain,
            root_id: row.root_id,
            parent_id: row.parent_id,
            relationship_id: row.relationship_id,
            depth: unsigned(row.depth, "depth")?,
            chain_version: row.chain_version,
            fanout_index: row.fanout_index.map(|i| unsigned(i, "fanout_index")).transpose()?,
            node: row.node,
            region: row.region,
            idempotency_key: row.idempotency_key,
            owner: row.owner,
            not_before: row.not_before,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            retry: retry_policy(row.retry)?,
            replays: unsigned(row.replays, "replays")?,
        })
    }
}

/// The part of a `tasks` row the delivery decisions need.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StateRow {
    id: Uuid,
    status: String,
    attempt: i32,
    failures: i32,
    max_attempts: i32,
    dispatch: i32,
    redeliveries: i32,
    node: Option<String>,
    due: bool,
    chain_version: Option<i64>,
    retry: Option<serde_json::Value>,
    timeout_ms: i32,
}

impl TryFrom<StateRow> for TaskState {
    type Error = Error;

    fn try_from(row: StateRow) -> Result<Self> {
        Ok(TaskState {
            id: row.id,
            status: status(&row.status)?,
            attempt: unsigned(row.attempt, "attempt")?,
            failures: unsigned(row.failures, "failures")?,
            max_attempts: unsigned(row.max_attempts, "max_attempts")?,
            dispatch: unsigned(row.dispatch, "dispatch")?,
            redeliveries: unsigned(row.redeliveries, "redeliveries")?,
            node: row.node,
            due: row.due,
            chain_version: row.chain_version,
            retry: retry_policy(row.retry)?,
            timeout_ms: unsigned(row.timeout_ms, "timeout_ms")?,
        })
    }
}

/// A `tasks.retry` value: `None` for NULL (a task written before policies were stored).
fn retry_policy(value: Option<serde_json::Value>) -> Result<Option<RetryPolicy>> {
    value.map(|v| serde_json::from_value(v).map_err(|e| corrupt("retry", e))).transpose()
}

fn status(s: &str) -> Result<TaskStatus> {
    s.parse().map_err(|e: legion_common::status::Error| Error::Corrupt(e.to_string()))
}

fn unsigned(value: i32, column: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(column, value))
}

fn corrupt(column: &str, value: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("tasks.{column} holds {value}"))
}

/// Converts a count to the `INTEGER` columns' type; counts never reach 2^31 in practice.
fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
