//! [`ScheduleStore`] on PostgreSQL (`migrations/0007_schedules.sql`): schedules with their newest fire,
//! the fire history, the scheduler's reads, and the control-plane replicas in `nodes`. The scheduler's
//! write, [`ScheduleStore::record_ticks`], is in [`super::schedule_ticks`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PgStore, int, schedule_ticks};
use crate::schedules::tick::Misfire;
use crate::store::schedules::{
    CadenceSpec, ControlPlaneInfo, DueSchedule, Fence, Fire, Outcome, Recorded, Schedule, ScheduleSpec, ScheduleStore,
    TickRecord,
};
use crate::store::{Error, Result};

/// The task statuses that are not terminal (DESIGN.md section 4), as SQL, matching the predicate of the
/// `tasks_root_unfinished` index.
macro_rules! unfinished {
    () => {
        "('pending', 'scheduled', 'queued', 'running')"
    };
}

/// Selects [`ScheduleRow`]s: `schedules s` with its newest fire (`lf`) and that fire's task (`t`).
macro_rules! schedule_select {
    () => {
        "SELECT s.id, s.name, s.description, s.function, s.args, s.transformation, s.chain, s.priority,
                s.max_attempts, s.timeout_ms, s.region, s.cron, s.timezone, s.interval_ms, s.allow_overlap,
                s.misfire, s.paused, s.active_since, s.cursor, s.next_due, s.last_task_id, s.revision,
                s.created_by, s.policies, s.created_at, s.updated_at, s.retry,
                lf.slot AS fire_slot, lf.fired_at AS fire_fired_at, lf.epoch AS fire_epoch,
                lf.outcome AS fire_outcome, lf.task_id AS fire_task_id, lf.reason AS fire_reason,
                lf.missed AS fire_missed, t.status AS fire_task_status
         FROM schedules s
         LEFT JOIN LATERAL (SELECT slot, fired_at, epoch, outcome, task_id, reason, missed
                            FROM schedule_fires WHERE schedule_id = s.id
                            ORDER BY slot DESC LIMIT 1) AS lf ON true
         LEFT JOIN tasks t ON t.id = lf.task_id"
    };
}

/// The columns of a schedule without its fire (for `RETURNING` and the scheduler's read).
macro_rules! schedule_columns {
    () => {
        "id, name, description, function, args, transformation, chain, priority, max_attempts, timeout_ms,
         region, cron, timezone, interval_ms, allow_overlap, misfire, paused, active_since, cursor, next_due,
         last_task_id, revision, created_by, policies, created_at, updated_at, retry"
    };
}

/// A `schedules` row.
#[derive(Debug, sqlx::FromRow)]
struct ScheduleRow {
    id: Uuid,
    name: String,
    description: String,
    function: String,
    args: serde_json::Value,
    transformation: Option<serde_json::Value>,
    chain: Option<String>,
    priority: i16,
    max_attempts: i32,
    timeout_ms: i32,
    region: Option<String>,
    cron: Option<String>,
    timezone: String,
    interval_ms: Option<i64>,
    allow_overlap: bool,
    misfire: String,
    paused: bool,
    active_since: DateTime<Utc>,
    cursor: Option<DateTime<Utc>>,
    next_due: Option<DateTime<Utc>>,
    last_task_id: Option<Uuid>,
    revision: i64,
    created_by: String,
    policies: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    retry: Option<serde_json::Value>,
}

/// A schedule row with the columns of its newest fire (all `NULL` without one).
#[derive(Debug, sqlx::FromRow)]
struct ScheduleFireRow {
    #[sqlx(flatten)]
    schedule: ScheduleRow,
    fire_slot: Option<DateTime<Utc>>,
    fire_fired_at: Option<DateTime<Utc>>,
    fire_epoch: Option<i64>,
    fire_outcome: Option<String>,
    fire_task_id: Option<Uuid>,
    fire_reason: Option<String>,
    fire_missed: Option<i64>,
    fire_task_status: Option<String>,
}

/// A due schedule row.
#[derive(Debug, sqlx::FromRow)]
struct DueRow {
    #[sqlx(flatten)]
    schedule: ScheduleRow,
    db_now: DateTime<Utc>,
    previous_running: bool,
}

/// A `schedule_fires` row with its task's status.
#[derive(Debug, sqlx::FromRow)]
struct FireRow {
    slot: DateTime<Utc>,
    fired_at: DateTime<Utc>,
    epoch: i64,
    outcome: String,
    task_id: Option<Uuid>,
    reason: Option<String>,
    missed: i64,
    task_status: Option<String>,
}

fn corrupt(column: &str, value: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("schedules.{column} holds {value}"))
}

impl TryFrom<ScheduleRow> for Schedule {
    type Error = Error;

    fn try_from(row: ScheduleRow) -> Result<Self> {
        let cadence = match (row.cron, row.interval_ms) {
            (Some(expression), None) => CadenceSpec::Cron { expression, timezone: row.timezone },
            (None, Some(ms)) => {
                CadenceSpec::Interval { interval_ms: u64::try_from(ms).map_err(|_| corrupt("interval_ms", ms))? }
            }
            _ => {
                return Err(Error::Corrupt(format!(
                    "schedule {}: exactly one of cron and interval_ms must be set",
                    row.name
                )));
            }
        };
        let misfire = Misfire::parse(&row.misfire).map_err(|e| corrupt("misfire", e))?;
        Ok(Schedule {
            id: row.id,
            spec: ScheduleSpec {
                name: row.name,
                description: row.description,
                function: row.function,
                args: row.args,
                transformation: row.transformation,
                chain: row.chain,
                priority: u8::try_from(row.priority).map_err(|_| corrupt("priority", row.priority))?,
                max_attempts: u32::try_from(row.max_attempts).map_err(|_| corrupt("max_attempts", row.max_attempts))?,
                timeout_ms: u32::try_from(row.timeout_ms).map_err(|_| corrupt("timeout_ms", row.timeout_ms))?,
                region: row.region,
                cadence,
                allow_overlap: row.allow_overlap,
                misfire,
                paused: row.paused,
                created_by: row.created_by,
                policies: row.policies,
                retry: row
                    .retry
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| corrupt("retry", e))?
                    .unwrap_or_default(),
            },
            paused: row.paused,
            active_since: row.active_since,
            cursor: row.cursor,
            next_due: row.next_due,
            last_task_id: row.last_task_id,
            revision: row.revision,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_fire: None,
        })
    }
}

impl TryFrom<FireRow> for Fire {
    type Error = Error;

    fn try_from(row: FireRow) -> Result<Self> {
        Ok(Fire {
            slot: row.slot,
            fired_at: row.fired_at,
            epoch: row.epoch,
            outcome: Outcome::parse(&row.outcome)
                .map_err(|e| Error::Corrupt(format!("schedule_fires.outcome: {e}")))?,
            task_id: row.task_id,
            task_status: row.task_status.as_deref().map(super::status).transpose()?,
            reason: row.reason,
            missed: u64::try_from(row.missed)
                .map_err(|_| Error::Corrupt(format!("schedule_fires.missed holds {}", row.missed)))?,
        })
    }
}

impl TryFrom<ScheduleFireRow> for Schedule {
    type Error = Error;

    fn try_from(row: ScheduleFireRow) -> Result<Self> {
        let fire = match (row.fire_slot, row.fire_fired_at, row.fire_epoch, row.fire_outcome, row.fire_missed) {
            (Some(slot), Some(fired_at), Some(epoch), Some(outcome), Some(missed)) => Some(Fire::try_from(FireRow {
                slot,
                fired_at,
                epoch,
                outcome,
                task_id: row.fire_task_id,
                reason: row.fire_reason,
                missed,
                task_status: row.fire_task_status,
            })?),
            _ => None,
        };
        let mut schedule = Schedule::try_from(row.schedule)?;
        schedule.last_fire = fire;
        Ok(schedule)
    }
}

/// The stored columns of a cadence: `(cron, timezone, interval_ms)`.
fn cadence_columns(cadence: &CadenceSpec) -> Result<(Option<&str>, &str, Option<i64>)> {
    Ok(match cadence {
        CadenceSpec::Cron { expression, timezone } => (Some(expression.as_str()), timezone.as_str(), None),
        CadenceSpec::Interval { interval_ms } => {
            let ms = i64::try_from(*interval_ms)
                .map_err(|_| Error::InvalidData(format!("interval_ms: {interval_ms} is too large")))?;
            (None, "UTC", Some(ms))
        }
    })
}

/// Converts a page size to SQL's `LIMIT` of the page plus one row (which tells whether more follow).
fn page_limit(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// Splits a page read with [`page_limit`] into the page and whether more follow.
fn split_page<T>(mut rows: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    (rows, more)
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule> {
        let (cron, timezone, interval_ms) = cadence_columns(&spec.cadence)?;
        let row: ScheduleRow = sqlx::query_as(concat!(
            "INSERT INTO schedules (id, name, description, function, args, transformation, chain, priority,
                                    max_attempts, timeout_ms, region, cron, timezone, interval_ms, allow_overlap,
                                    misfire, paused, created_by, policies, retry)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                     $20)
             RETURNING ",
            schedule_columns!()
        ))
        .bind(Uuid::now_v7())
        .bind(&spec.name)
        .bind(&spec.description)
        .bind(&spec.function)
        .bind(&spec.args)
        .bind(&spec.transformation)
        .bind(&spec.chain)
        .bind(i16::from(spec.priority))
        .bind(int(spec.max_attempts))
        .bind(int(spec.timeout_ms))
        .bind(&spec.region)
        .bind(cron)
        .bind(timezone)
        .bind(interval_ms)
        .bind(spec.allow_overlap)
        .bind(spec.misfire.as_str())
        .bind(spec.paused)
        .bind(&spec.created_by)
        .bind(&spec.policies)
        .bind((!spec.retry.is_empty()).then(|| serde_json::json!(spec.retry)))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match Error::from(e) {
            Error::AlreadyExists(_) => Error::AlreadyExists(format!("name: schedule {:?} already exists", spec.name)),
            other => other,
        })?;
        Schedule::try_from(row)
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>> {
        let row: Option<ScheduleFireRow> = sqlx::query_as(concat!(schedule_select!(), " WHERE s.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Schedule::try_from).transpose()
    }

    async fn list_schedules(&self, after: Option<&str>, limit: u32) -> Result<(Vec<Schedule>, bool)> {
        let rows: Vec<ScheduleFireRow> = sqlx::query_as(concat!(
            schedule_select!(),
            " WHERE $1::text IS NULL OR s.name > $1 ORDER BY s.name LIMIT $2"
        ))
        .bind(after)
        .bind(page_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        let (rows, more) = split_page(rows, limit);
        let schedules = rows.into_iter().map(Schedule::try_from).collect::<Result<Vec<_>>>()?;
        Ok((schedules, more))
    }

    async fn delete_schedule(&self, name: &str) -> Result<Option<Uuid>> {
        // The fire history goes with it (ON DELETE CASCADE); fired tasks stay.
        let deleted: Option<(Uuid,)> = sqlx::query_as("DELETE FROM schedules WHERE name = $1 RETURNING id")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(deleted.map(|(id,)| id))
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<Option<Schedule>> {
        // Only a change writes (and bumps the revision, which drops a tick being decided meanwhile).
        sqlx::query(
            "UPDATE schedules SET paused = $2,
                 active_since = CASE WHEN $2 THEN active_since ELSE now() END,
                 cursor = CASE WHEN $2 THEN cursor ELSE now() END,
                 next_due = CASE WHEN $2 THEN next_due ELSE now() END,
                 revision = revision + 1, updated_at = now()
             WHERE name = $1 AND paused <> $2",
        )
        .bind(name)
        .bind(paused)
        .execute(&self.pool)
        .await?;
        self.get_schedule(name).await
    }

    async fn list_fires(
        &self,
        name: &str,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Option<(Vec<Fire>, bool)>> {
        let id: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM schedules WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        let Some((id,)) = id else { return Ok(None) };
        let rows: Vec<FireRow> = sqlx::query_as(
            "SELECT f.slot, f.fired_at, f.epoch, f.outcome, f.task_id, f.reason, f.missed, t.status AS task_status
             FROM schedule_fires f LEFT JOIN tasks t ON t.id = f.task_id
             WHERE f.schedule_id = $1 AND ($2::timestamptz IS NULL OR f.slot < $2)
             ORDER BY f.slot DESC LIMIT $3",
        )
        .bind(id)
        .bind(before)
        .bind(page_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        let (rows, more) = split_page(rows, limit);
        let fires = rows.into_iter().map(Fire::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Some((fires, more)))
    }

    async fn next_due(&self) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        // min() over the partial index schedules_due: one index probe.
        let row: (DateTime<Utc>, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT now(), min(next_due) FROM schedules WHERE NOT paused AND next_due IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(row)
    }

    async fn due_schedules(&self, limit: u32) -> Result<(DateTime<Utc>, Vec<DueSchedule>)> {
        // The due rows come from the partial index schedules_due in next_due order. Whether the previous
        // fire's task or any task of its chain run is unfinished is, per row, a primary-key probe and
        // an index-only probe of tasks_root_unfinished: a LATERAL subquery with LIMIT, which the
        // planner cannot turn into a hash of every unfinished task (as it may an EXISTS).
        let rows: Vec<DueRow> = sqlx::query_as(concat!(
            "SELECT now() AS db_now, ",
            schedule_columns!(),
            ", (previous.running IS NOT NULL) AS previous_running
             FROM schedules s
             LEFT JOIN LATERAL (
                 SELECT true AS running FROM tasks t WHERE t.id = s.last_task_id AND t.status IN ",
            unfinished!(),
            " UNION ALL
                 SELECT true FROM tasks t WHERE t.root_id = s.last_task_id AND t.status IN ",
            unfinished!(),
            " LIMIT 1
             ) AS previous ON true
             WHERE NOT s.paused AND s.next_due IS NOT NULL AND s.next_due <= now()
             ORDER BY s.next_due LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let now = match rows.first() {
            Some(row) => row.db_now,
            None => sqlx::query_as::<_, (DateTime<Utc>,)>("SELECT now()").fetch_one(&self.pool).await?.0,
        };
        let due = rows
            .into_iter()
            .map(|row| {
                Ok(DueSchedule { schedule: Schedule::try_from(row.schedule)?, previous_running: row.previous_running })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((now, due))
    }

    async fn record_ticks(&self, fence: &Fence, records: &[TickRecord]) -> Result<Recorded> {
        if records.is_empty() {
            return Ok(Recorded::default());
        }
        super::with_retries("record schedule ticks", || async {
            let mut tx = self.pool.begin().await?;
            let recorded = schedule_ticks::record(&mut tx, self, fence, records).await?;
            tx.commit().await?;
            Ok(recorded)
        })
        .await
    }

    async fn touch_control_plane(&self, name: &str, version: &str) -> Result<()> {
        // A name held by an executor is never taken over (replica names are `host/<uuid>`, so it does
        // not happen by accident).
        let touched: Option<(String,)> = sqlx::query_as(
            "INSERT INTO nodes (name, kind, version, status, started_at, last_heartbeat)
             VALUES ($1, 'control_plane', $2, 'active', now(), now())
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, status = 'active', last_heartbeat = now()
             WHERE nodes.kind = 'control_plane'
             RETURNING name",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        if touched.is_none() {
            return Err(Error::FailedPrecondition(format!("name: node {name:?} is an executor, not a control plane")));
        }
        Ok(())
    }

    async fn forget_control_plane(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM nodes WHERE name = $1 AND kind = 'control_plane'")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_control_planes(&self, within: Duration) -> Result<Vec<ControlPlaneInfo>> {
        #[allow(clippy::cast_precision_loss)]
        let within_ms = within.as_millis() as f64;
        let rows: Vec<(String, String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT name, version, started_at, last_heartbeat FROM nodes
             WHERE kind = 'control_plane' AND last_heartbeat > now() - $1::float8 * interval '1 millisecond'
             ORDER BY name",
        )
        .bind(within_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, version, started_at, last_seen)| ControlPlaneInfo { name, version, started_at, last_seen })
            .collect())
    }
}
