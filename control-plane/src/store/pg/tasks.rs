//! [`TaskStore`] on PostgreSQL.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use legion_common::broker::TASK_EXCHANGE;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::outbox::{DispatchRow, NewOutbox, insert_outbox};
use super::{PgStore, TaskRow, int, task_columns, with_retries};
use crate::delivery::AttemptStatus;
use crate::delivery::retry::{self, RetryPolicy};
use crate::events::StatusChange;
use crate::store::{Attempt, Error, Inserted, NewTask, Result, Task, TaskFilter, TaskPage, TaskStore};

#[async_trait]
impl TaskStore for PgStore {
    async fn function_status(&self, functions: &[String]) -> Result<HashMap<String, bool>> {
        let (mut extensions, mut runners, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for function in functions {
            let mut parts = function.splitn(3, '.');
            if let (Some(e), Some(r), Some(f)) = (parts.next(), parts.next(), parts.next()) {
                extensions.push(e.to_owned());
                runners.push(r.to_owned());
                names.push(f.to_owned());
            }
        }
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "SELECT f.extension || '.' || f.runner || '.' || f.name, e.disabled
             FROM functions f JOIN extensions e ON e.name = f.extension
             WHERE (f.extension, f.runner, f.name) IN
                   (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))",
        )
        .bind(&extensions)
        .bind(&runners)
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn insert_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>> {
        with_retries("insert tasks", || self.insert_tasks_once(tasks)).await
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        let row: Option<TaskRow> = sqlx::query_as(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Task::try_from).transpose()
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<TaskPage> {
        // The newest `limit + 1` matching rows are sized (JSON text of args and result, plus error);
        // only those that fit in `max_bytes` (and at least the first) leave the database.
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
            "SELECT ",
            task_columns!(),
            ", scanned FROM (
                 SELECT page.*, row_number() OVER w AS n, sum(size) OVER w AS running, count(*) OVER () AS scanned
                 FROM (SELECT ",
            task_columns!(),
            ", octet_length(args::text) + COALESCE(octet_length(result::text), 0)
                         + COALESCE(octet_length(error), 0) AS size
                       FROM tasks WHERE TRUE"
        ));
        if let Some(status) = filter.status {
            // A literal from the status enum, not a bind: the planner can then use the partial indexes
            // on status (unfinished tasks, dead letters) whatever plan it caches.
            query.push(" AND status = '").push(status.as_str()).push("'");
        }
        if let Some(function) = &filter.function {
            query.push(" AND function = ").push_bind(function.clone());
        }
        if let Some(chain) = &filter.chain {
            query.push(" AND chain = ").push_bind(chain.clone());
        }
        if let Some(root_id) = filter.root_id {
            query.push(" AND root_id = ").push_bind(root_id);
        }
        if let Some(before) = filter.before {
            query.push(" AND id < ").push_bind(before);
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(filter.limit) + 1);
        query.push(
            ") AS page
                 WINDOW w AS (ORDER BY id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
             ) AS sized
             WHERE n <= ",
        );
        query.push_bind(i64::from(filter.limit));
        if let Some(max_bytes) = filter.max_bytes {
            query.push(" AND (n = 1 OR running <= ").push_bind(i64::try_from(max_bytes).unwrap_or(i64::MAX)).push(")");
        }
        query.push(" ORDER BY id DESC");
        let rows: Vec<PageRow> = query.build_query_as().fetch_all(&self.pool).await?;
        let scanned = rows.first().map_or(0, |row| row.scanned);
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) < scanned;
        let tasks = rows.into_iter().map(|row| Task::try_from(row.task)).collect::<Result<Vec<_>>>()?;
        Ok(TaskPage { tasks, more })
    }

    async fn cancel_task(&self, id: Uuid) -> Result<(Task, Vec<StatusChange>)> {
        let mut tx = self.pool.begin().await?;
        let row: Option<TaskRow> =
            sqlx::query_as(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1 FOR UPDATE"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let task = Task::try_from(row.ok_or_else(|| Error::NotFound(format!("id: no task {id}")))?)?;
        if task.status.is_terminal() {
            return Err(Error::FailedPrecondition(format!("task {id} has already ended: {}", task.status)));
        }
        let row: TaskRow = sqlx::query_as(concat!(
            "UPDATE tasks SET status = 'cancelled', finished_at = now(), error = 'cancelled by request'
             WHERE id = $1 RETURNING ",
            task_columns!()
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if task.status == TaskStatus::Running {
            sqlx::query(
                "UPDATE task_attempts SET status = 'cancelled', finished_at = now(), error = 'task cancelled'
                 WHERE task_id = $1 AND attempt = $2 AND status = 'running'",
            )
            .bind(id)
            .bind(int(task.attempt))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let cancelled = Task::try_from(row)?;
        let change = StatusChange { task_id: id, status: cancelled.status, attempt: cancelled.attempt };
        Ok((cancelled, vec![change]))
    }

    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>> {
        let exists: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM tasks WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        if exists.is_none() {
            return Err(Error::NotFound(format!("task_id: no task {id}")));
        }
        let rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT task_id, attempt, node, status, error, started_at, finished_at, duration_ms
             FROM task_attempts WHERE task_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Attempt::try_from).collect()
    }

    async fn promote_due(&self, limit: u32) -> Result<Vec<StatusChange>> {
        let mut tx = self.pool.begin().await?;
        // The columns of `DispatchRow`, qualified (`due` has an `id` too).
        let rows: Vec<DispatchRow> = sqlx::query_as(
            "WITH due AS (
                 SELECT id FROM tasks WHERE status = 'scheduled' AND not_before <= now()
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
             )
             UPDATE tasks t SET status = 'pending', dispatch = t.dispatch + 1
             FROM due WHERE t.id = due.id
             RETURNING t.id, t.function, t.args, t.timeout_ms, t.priority, t.dispatch, t.attempt, t.region",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let outbox: Vec<NewOutbox> = rows.iter().map(DispatchRow::outbox).collect();
        let changes: Vec<StatusChange> = rows
            .iter()
            .map(|row| StatusChange {
                task_id: row.id,
                status: TaskStatus::Pending,
                attempt: u32::try_from(row.attempt).unwrap_or(0),
            })
            .collect();
        insert_outbox(&mut tx, &outbox).await?;
        tx.commit().await?;
        Ok(changes)
    }
}

impl PgStore {
    async fn insert_tasks_once(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_tasks_in(&mut tx, self, tasks).await?;
        tx.commit().await?;
        Ok(inserted)
    }
}

/// Inserts `tasks` and the outbox rows of those without delay on `conn` (inside the caller's
/// transaction), as [`TaskStore::insert_tasks`] describes: one result per task, in order. Each task's
/// retry policy is its set fields over `store`'s `retry.*` settings ([`retry::merge`]). An idempotency
/// key whose task was created more than `control_plane.idempotency_retention_s` ago is released first
/// (that task's key becomes NULL), in this transaction, so the submit creates a new task.
pub(super) async fn insert_tasks_in(
    conn: &mut PgConnection,
    store: &PgStore,
    tasks: &[NewTask],
) -> Result<Vec<Inserted>> {
    // Within the batch, only the first task of each idempotency key is inserted.
    // Keys are scoped to the owner: (owner, key) identifies a submit.
    let mut first_of_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut leaders = Vec::with_capacity(tasks.len());
    for (index, task) in tasks.iter().enumerate() {
        match task.idempotency_key.as_deref() {
            Some(key) if first_of_key.contains_key(&(task.owner.as_str(), key)) => {}
            Some(key) => {
                first_of_key.insert((task.owner.as_str(), key), index);
                leaders.push(task);
            }
            None => leaders.push(task),
        }
    }
    // Insert in key order so that concurrent batches (other replicas) take key locks in one order.
    leaders.sort_by(|a, b| (&a.owner, &a.idempotency_key).cmp(&(&b.owner, &b.idempotency_key)).then(a.id.cmp(&b.id)));
    release_expired_keys(conn, &leaders, store.idempotency_retention).await?;
    let mut columns = InsertColumns::default();
    let policies: HashMap<Uuid, RetryPolicy> =
        leaders.iter().map(|t| (t.id, retry::merge(&t.retry, &store.retry))).collect();
    for task in &leaders {
        columns.push(task, &policies[&task.id])?;
    }
    let inserted: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::int[], $6::int[],
                                  $7::int8[], $8::text[], $9::text[], $10::bytea[], $12::text[], $13::text[],
                                  $14::text[], $15::int8[], $16::text[])
                 WITH ORDINALITY AS u(id, function, args, priority, max_attempts, timeout_ms, delay_ms,
                                      idempotency_key, region, payload, routing_key, owner, chain,
                                      chain_version, retry, n)
         ),
         ins AS (
             INSERT INTO tasks (id, function, status, args, priority, max_attempts, timeout_ms, dispatch,
                                idempotency_key, region, not_before, owner, chain, chain_version, root_id,
                                retry)
             SELECT id, function, CASE WHEN delay_ms > 0 THEN 'scheduled' ELSE 'pending' END, args::jsonb,
                    priority, max_attempts, timeout_ms, CASE WHEN delay_ms > 0 THEN 0 ELSE 1 END,
                    idempotency_key, region,
                    CASE WHEN delay_ms > 0 THEN now() + delay_ms::float8 * interval '1 millisecond' END, owner,
                    chain, chain_version, CASE WHEN chain IS NOT NULL THEN id END, retry::jsonb
             FROM input ORDER BY n
             ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id, created_at, not_before
         ),
         queued AS (
             INSERT INTO outbox (task_id, exchange, routing_key, priority, payload)
             SELECT input.id, $11, input.routing_key, input.priority, input.payload
             FROM input JOIN ins ON ins.id = input.id
             WHERE input.delay_ms = 0
             ORDER BY input.id
         )
         SELECT id, created_at, not_before FROM ins",
    )
    .bind(&columns.ids)
    .bind(&columns.functions)
    .bind(&columns.args)
    .bind(&columns.priorities)
    .bind(&columns.max_attempts)
    .bind(&columns.timeouts)
    .bind(&columns.delays)
    .bind(&columns.keys)
    .bind(&columns.regions)
    .bind(&columns.payloads)
    .bind(TASK_EXCHANGE)
    .bind(&columns.routing_keys)
    .bind(&columns.owners)
    .bind(&columns.chains)
    .bind(&columns.chain_versions)
    .bind(&columns.retries)
    .fetch_all(&mut *conn)
    .await?;
    let created: HashMap<Uuid, (DateTime<Utc>, Option<DateTime<Utc>>)> =
        inserted.into_iter().map(|(id, at, not_before)| (id, (at, not_before))).collect();
    // Leaders that hit an existing key, and followers of a key within the batch, get the stored task.
    let (owners, keys): (Vec<String>, Vec<String>) = tasks
        .iter()
        .filter(|t| !created.contains_key(&t.id))
        .filter_map(|t| t.idempotency_key.clone().map(|k| (t.owner.clone(), k)))
        .unzip();
    let mut existing: HashMap<(String, String), Task> = HashMap::new();
    if !keys.is_empty() {
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE (owner, idempotency_key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
        ))
        .bind(&owners)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let task = Task::try_from(row)?;
            if let Some(key) = task.idempotency_key.clone() {
                existing.insert((task.owner.clone(), key), task);
            }
        }
    }
    tasks
        .iter()
        .map(|task| {
            if let Some((created_at, not_before)) = created.get(&task.id) {
                let policy = policies.get(&task.id).copied();
                return Ok(Inserted { task: new_task(task, *created_at, *not_before, policy), created: true });
            }
            let key = task.idempotency_key.clone().unwrap_or_default();
            existing
                .get(&(task.owner.clone(), key.clone()))
                .map(|t| Inserted { task: t.clone(), created: false })
                .ok_or_else(|| Error::Database(format!("task with idempotency key {key:?} vanished")))
        })
        .collect()
}

/// The arrays bound to the batch insert.
#[derive(Default)]
struct InsertColumns {
    ids: Vec<Uuid>,
    functions: Vec<String>,
    args: Vec<String>,
    priorities: Vec<i16>,
    max_attempts: Vec<i32>,
    timeouts: Vec<i32>,
    delays: Vec<i64>,
    keys: Vec<Option<String>>,
    regions: Vec<Option<String>>,
    payloads: Vec<Vec<u8>>,
    routing_keys: Vec<String>,
    owners: Vec<String>,
    chains: Vec<Option<String>>,
    chain_versions: Vec<Option<i64>>,
    retries: Vec<String>,
}

/// Releases the idempotency keys among `leaders` whose task was created more than `retention` ago: that
/// task's `idempotency_key` becomes NULL, so the insert that follows in the same transaction creates a
/// new task under the key. The old rows are locked in id order; of two transactions releasing the same
/// key, the second finds it released (its row no longer matches once the first commits) and its insert
/// then meets the first one's new task, which it returns (`created = false`).
async fn release_expired_keys(
    conn: &mut PgConnection,
    leaders: &[&NewTask],
    retention: std::time::Duration,
) -> Result<()> {
    let (owners, keys): (Vec<&str>, Vec<&str>) =
        leaders.iter().filter_map(|t| t.idempotency_key.as_deref().map(|k| (t.owner.as_str(), k))).unzip();
    if keys.is_empty() {
        return Ok(());
    }
    let released = sqlx::query(
        "UPDATE tasks t SET idempotency_key = NULL
         FROM (SELECT id FROM tasks
               WHERE idempotency_key IS NOT NULL
                 AND (owner, idempotency_key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
                 AND created_at < now() - $3::float8 * interval '1 second'
               ORDER BY id FOR UPDATE) AS expired
         WHERE t.id = expired.id",
    )
    .bind(&owners)
    .bind(&keys)
    .bind(retention.as_secs_f64())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if released > 0 {
        tracing::debug!(released, "idempotency keys past control_plane.idempotency_retention_s released");
    }
    Ok(())
}

impl InsertColumns {
    fn push(&mut self, task: &NewTask, policy: &RetryPolicy) -> Result<()> {
        self.ids.push(task.id);
        self.functions.push(task.function.clone());
        self.args.push(task.args_json.clone());
        self.priorities.push(i16::from(task.priority));
        self.max_attempts.push(int(task.max_attempts));
        self.timeouts.push(int(task.timeout_ms));
        self.delays.push(i64::try_from(task.delay_ms).unwrap_or(i64::MAX));
        self.keys.push(task.idempotency_key.clone());
        self.regions.push(task.region.clone());
        self.payloads.push(task.payload.clone());
        self.routing_keys.push(task.routing_key.clone());
        self.owners.push(task.owner.clone());
        self.chains.push(task.chain.clone());
        self.chain_versions.push(task.chain_version);
        self.retries.push(serde_json::to_string(policy).map_err(|e| Error::InvalidData(format!("retry: {e}")))?);
        Ok(())
    }
}

/// The stored form of a task this batch created.
fn new_task(
    task: &NewTask,
    created_at: DateTime<Utc>,
    not_before: Option<DateTime<Utc>>,
    retry: Option<RetryPolicy>,
) -> Task {
    let scheduled = task.delay_ms > 0;
    Task {
        id: task.id,
        function: task.function.clone(),
        status: if scheduled { TaskStatus::Scheduled } else { TaskStatus::Pending },
        args: task.args.clone(),
        result: None,
        error: None,
        attempt: 0,
        failures: 0,
        max_attempts: task.max_attempts,
        dispatch: u32::from(!scheduled),
        redeliveries: 0,
        priority: task.priority,
        timeout_ms: task.timeout_ms,
        chain: task.chain.clone(),
        root_id: task.chain.is_some().then_some(task.id),
        parent_id: None,
        relationship_id: None,
        depth: 0,
        chain_version: task.chain_version,
        fanout_index: None,
        node: None,
        region: task.region.clone(),
        idempotency_key: task.idempotency_key.clone(),
        owner: task.owner.clone(),
        not_before,
        created_at,
        started_at: None,
        finished_at: None,
        retry,
        replays: 0,
    }
}

/// A row of a task list page: the task and how many rows the page query looked at.
#[derive(Debug, sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    task: TaskRow,
    scanned: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct AttemptRow {
    task_id: Uuid,
    attempt: i32,
    node: String,
    status: String,
    error: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = Error;

    fn try_from(row: AttemptRow) -> Result<Self> {
        let status = [
            AttemptStatus::Running,
            AttemptStatus::Succeeded,
            AttemptStatus::Failed,
            AttemptStatus::TimedOut,
            AttemptStatus::Lost,
            AttemptStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == row.status)
        .ok_or_else(|| Error::Corrupt(format!("task_attempts.status holds {:?}", row.status)))?;
        Ok(Attempt {
            task_id: row.task_id,
            attempt: u32::try_from(row.attempt)
                .map_err(|_| Error::Corrupt(format!("task_attempts.attempt holds {}", row.attempt)))?,
            node: row.node,
            status,
            error: row.error,
            started_at: row.started_at,
            finished_at: row.finished_at,
            duration_ms: row.duration_ms.and_then(|d| u64::try_from(d).ok()),
        })
    }
}
