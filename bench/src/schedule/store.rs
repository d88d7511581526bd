//! Reads of the `schedule` scenario straight from PostgreSQL: the fire rows of the benchmark's
//! schedules for the one slot they share, with their tasks (`migrations/0007_schedules.sql`), so that
//! following ten thousand fires costs one query per poll.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::store::{Error, UNFINISHED};

/// One fire row of the slot and its task, as the report needs them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FireTimes {
    /// `fired`, `overlap`, `missed` or `failed`.
    pub outcome: String,
    /// When the leader's transaction that wrote the row began (PostgreSQL's clock).
    pub fired_at: DateTime<Utc>,
    /// The task's status; `None` when the slot did not fire.
    pub status: Option<String>,
    /// When the task's current attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the task ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// How far the slot has got: fire rows written, and their tasks not yet terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Fire rows of the slot.
    pub fires: u64,
    /// Tasks of those rows that are not terminal.
    pub unfinished: u64,
}

/// A small pool on the control plane's database.
#[derive(Debug, Clone)]
pub struct FireStore {
    pool: PgPool,
}

impl FireStore {
    /// Connects with two connections (the benchmark must not compete for connections with the
    /// control plane).
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

    /// PostgreSQL's now: the clock the scheduler decides with.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn now(&self) -> Result<DateTime<Utc>, Error> {
        let (now,): (DateTime<Utc>,) = sqlx::query_as("SELECT clock_timestamp()")
            .fetch_one(&self.pool)
            .await
            .map_err(|source| Error::Query { query: "database clock", source })?;
        Ok(now)
    }

    /// The fire rows of `slot` of the schedules named `prefix…`, and how many of their tasks are not
    /// terminal.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn progress(&self, prefix: &str, slot: DateTime<Utc>) -> Result<Progress, Error> {
        let (fires, unfinished): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE t.status = ANY($3)) \
             FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id LEFT JOIN tasks t ON t.id = f.task_id \
             WHERE starts_with(s.name, $1) AND f.slot = $2",
        )
        .bind(prefix)
        .bind(slot)
        .bind(UNFINISHED.as_slice())
        .fetch_one(&self.pool)
        .await
        .map_err(|source| Error::Query { query: "schedule fire progress", source })?;
        Ok(Progress { fires: u64::try_from(fires).unwrap_or(0), unfinished: u64::try_from(unfinished).unwrap_or(0) })
    }

    /// Every fire row of `slot` of the schedules named `prefix…`, with its task.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn fires(&self, prefix: &str, slot: DateTime<Utc>) -> Result<Vec<FireTimes>, Error> {
        sqlx::query_as::<_, FireTimes>(
            "SELECT f.outcome, f.fired_at, t.status, t.started_at, t.finished_at \
             FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id LEFT JOIN tasks t ON t.id = f.task_id \
             WHERE starts_with(s.name, $1) AND f.slot = $2",
        )
        .bind(prefix)
        .bind(slot)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| Error::Query { query: "schedule fires", source })
    }
}
