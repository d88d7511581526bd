//! Storage of schedules, their fire history, and the control-plane replicas
//! (`migrations/0007_schedules.sql`).
//!
//! The scheduler works in two steps so that no transaction waits on a transformation:
//! 1. [`ScheduleStore::due_schedules`] reads the schedules whose `next_due` has come (no lock), with
//!    the database's clock and whether each one's previous task is unfinished;
//! 2. the leader decides each one ([`crate::schedules::tick`]) and builds its task, then
//!    [`ScheduleStore::record_ticks`] writes everything in one transaction: it checks the scheduler lease
//!    (the fencing token), skips schedules changed since step 1 (their `revision` moved), inserts the
//!    fire rows under the `(schedule_id, slot)` primary key, then the tasks and outbox rows of exactly
//!    the fire rows it inserted, and moves each schedule's cursor (pausing those whose creator is no
//!    longer authorized, [`TickRecord::pause`]).
//!
//! [`FireHistoryStore::prune_fires`] keeps each schedule's history within `control_plane.schedule_history`
//! rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use uuid::Uuid;

use super::{NewTask, Result};
use crate::events::StatusChange;
use crate::schedules::tick::Misfire;

/// When a schedule fires, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CadenceSpec {
    /// A cron expression (5 or 6 fields) on the wall clock of an IANA time zone.
    Cron {
        /// The expression as given.
        expression: String,
        /// IANA name; `UTC` by default.
        timezone: String,
    },
    /// Every `interval_ms` from the schedule's `active_since` at creation (its anchor).
    Interval {
        /// 1000 to 31622400000.
        interval_ms: u64,
    },
}

/// A validated schedule to create.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// As chain names.
    pub name: String,
    /// At most 1024 bytes.
    pub description: String,
    /// `extension.runner.function`.
    pub function: String,
    /// The args object.
    pub args: serde_json::Value,
    /// The transformation document (`{"engine": …}`), checked by `Transformation::parse`.
    pub transformation: Option<serde_json::Value>,
    /// The chain each fired task starts a run of.
    pub chain: Option<String>,
    /// 0 to 9.
    pub priority: u8,
    /// 1 or more.
    pub max_attempts: u32,
    /// In ms.
    pub timeout_ms: u32,
    /// Region of the fired tasks.
    pub region: Option<String>,
    /// Cron or interval.
    pub cadence: CadenceSpec,
    /// Interval schedules: fire while the previous task is unfinished.
    pub allow_overlap: bool,
    /// Missed-slot policy.
    pub misfire: Misfire,
    /// Create it paused: it fires nothing until resumed (an exported paused schedule created again
    /// stays paused). In a stored schedule, the same as [`Schedule::paused`].
    pub paused: bool,
    /// The creating principal (`api-key/<id>`, `jwt/<sub>`): owner of the fired tasks.
    pub created_by: String,
    /// The creator's policies, re-checked at each fire.
    pub policies: Vec<String>,
    /// The retry policy fields the schedule sets for its tasks (`schedules.retry`); the others take the
    /// `retry.*` settings when a task is fired.
    pub retry: crate::delivery::retry::RetryOverrides,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// UUIDv7, assigned at creation; fire rows reference it (a schedule deleted and created again under
    /// the same name starts a new history).
    pub id: Uuid,
    /// What was created.
    pub spec: ScheduleSpec,
    /// Paused schedules fire nothing.
    pub paused: bool,
    /// Creation, or the last resume: slots before it are never due. The anchor of an interval schedule
    /// is its `created_at`.
    pub active_since: DateTime<Utc>,
    /// The last slot dealt with.
    pub cursor: Option<DateTime<Utc>>,
    /// When the scheduler looks at it next (`None`: the cadence has no further slot).
    pub next_due: Option<DateTime<Utc>>,
    /// The task of the newest fire.
    pub last_task_id: Option<Uuid>,
    /// Incremented by every change (pause, resume, tick); [`ScheduleStore::record_ticks`] writes only
    /// ticks decided on the current revision.
    pub revision: i64,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed by an operator (pause, resume).
    pub updated_at: DateTime<Utc>,
    /// The newest fire row (`get`/`list` fill it; `due_schedules` leaves it `None`).
    pub last_fire: Option<Fire>,
}

/// What happened to a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A task was created.
    Fired,
    /// An interval schedule's previous task was unfinished.
    Overlap,
    /// Missed while no leader ticked, policy `skip`.
    Missed,
    /// The task could not be made (transformation error, function gone or disabled, chain gone,
    /// the owner no longer authorized); the reason says which.
    Failed,
}

impl Outcome {
    /// `fired`, `overlap`, `missed` or `failed` (the stored and API spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::Overlap => "overlap",
            Self::Missed => "missed",
            Self::Failed => "failed",
        }
    }

    /// Parses [`Outcome::as_str`]'s spelling.
    ///
    /// # Errors
    /// The unknown text.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "fired" => Ok(Self::Fired),
            "overlap" => Ok(Self::Overlap),
            "missed" => Ok(Self::Missed),
            "failed" => Ok(Self::Failed),
            other => Err(format!("{other:?} is not a fire outcome")),
        }
    }
}

/// A fire row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// When it was dealt with (database clock).
    pub fired_at: DateTime<Utc>,
    /// Scheduler lease epoch.
    pub epoch: i64,
    /// What happened.
    pub outcome: Outcome,
    /// The task, for [`Outcome::Fired`].
    pub task_id: Option<Uuid>,
    /// The task's current status (`None` when there is no task, or it was purged).
    pub task_status: Option<TaskStatus>,
    /// Why it did not fire, or what a catch-up fire stands for.
    pub reason: Option<String>,
    /// Older missed slots this row stands for.
    pub missed: u64,
}

/// A schedule whose `next_due` has come, as [`ScheduleStore::due_schedules`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct DueSchedule {
    /// The schedule (without `last_fire`).
    pub schedule: Schedule,
    /// Whether the task of its newest fire, or any task of that task's chain run, is not terminal.
    pub previous_running: bool,
}

/// A fire row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFire {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// What happened. For [`Outcome::Fired`], [`TickRecord::task`] is set.
    pub outcome: Outcome,
    /// For outcomes other than fired, or a catch-up fire.
    pub reason: Option<String>,
    /// Older missed slots it stands for.
    pub missed: u64,
}

/// The leader's decision about one due schedule.
#[derive(Debug, Clone)]
pub struct TickRecord {
    /// The schedule.
    pub schedule_id: Uuid,
    /// The revision the decision was made on; the record is dropped if the schedule changed since.
    pub revision: i64,
    /// The new cursor (`None`: unchanged).
    pub cursor: Option<DateTime<Utc>>,
    /// The new `next_due`.
    pub next_due: Option<DateTime<Utc>>,
    /// The fire row, if a slot was dealt with.
    pub fire: Option<NewFire>,
    /// The task, when `fire` is [`Outcome::Fired`] (no idempotency key; owner = the schedule's
    /// `created_by`).
    pub task: Option<NewTask>,
    /// Pause the schedule (its creator is no longer authorized, and `fire` says why). Applied only
    /// together with the fire row: not when the slot was already dealt with by another writer.
    pub pause: bool,
}

/// The scheduler lease under which [`ScheduleStore::record_ticks`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease name (`crate::leader::SCHEDULER_LEASE`).
    pub lease: &'static str,
    /// This replica's holder name.
    pub holder: String,
    /// The epoch it believes it holds.
    pub epoch: i64,
}

/// What [`ScheduleStore::record_ticks`] wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// `(schedule_id, task_id)` of the tasks created.
    pub fired: Vec<(Uuid, Uuid)>,
    /// Records dropped because their schedule changed, vanished or was paused since it was read.
    pub stale: usize,
    /// Fire rows refused by the `(schedule_id, slot)` key (another writer dealt with the slot): their
    /// tasks were not created. Zero unless two replicas believed they led.
    pub duplicates: usize,
    /// Status changes of the created tasks (`pending`), for watchers.
    pub changes: Vec<StatusChange>,
    /// The schedules this write paused ([`TickRecord::pause`]), each once.
    pub paused: Vec<Uuid>,
}

/// A control-plane replica as recorded in `nodes` (kind `control_plane`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneInfo {
    /// The holder name.
    pub name: String,
    /// Legion version.
    pub version: String,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// Its last report.
    pub last_seen: DateTime<Utc>,
}

/// Schedules, their history, and the replicas.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates a schedule, paused when `spec.paused`: `active_since`, `created_at` and `updated_at` are
    /// the database's now, `next_due` is now (the scheduler computes the first slot), revision 1.
    ///
    /// # Errors
    /// [`super::Error::AlreadyExists`] naming the schedule when the name is taken.
    async fn create_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule>;

    /// The schedule with its newest fire, or `None`.
    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>>;

    /// Schedules by name after `after` (exclusive), with their newest fire: at most `limit`, and whether
    /// more follow.
    async fn list_schedules(&self, after: Option<&str>, limit: u32) -> Result<(Vec<Schedule>, bool)>;

    /// Deletes the schedule and its fire history, and returns the id it had; `None` when it did not
    /// exist.
    async fn delete_schedule(&self, name: &str) -> Result<Option<Uuid>>;

    /// Pauses (`paused`) or resumes (`!paused`) the schedule and returns it; a no-op when it already is
    /// so. Resuming sets `active_since` and the cursor to now (slots that passed while paused never
    /// fire) and `next_due` to now. Either bumps the revision and `updated_at`. `None` for an unknown
    /// name.
    async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<Option<Schedule>>;

    /// The fire rows of schedule `name`, newest slot first, with slots before `before` (exclusive):
    /// at most `limit`, and whether more follow. `None` for an unknown schedule.
    async fn list_fires(
        &self,
        name: &str,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Option<(Vec<Fire>, bool)>>;

    /// The database's now and the earliest `next_due` of an unpaused schedule.
    async fn next_due(&self) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>)>;

    /// The database's now and up to `limit` unpaused schedules with `next_due <= now`, earliest first.
    async fn due_schedules(&self, limit: u32) -> Result<(DateTime<Utc>, Vec<DueSchedule>)>;

    /// Writes `records` in one transaction, as the module documentation says.
    ///
    /// # Errors
    /// [`super::Error::FailedPrecondition`] when `fence` no longer holds the lease (another replica
    /// took it, or it expired by the database's clock): nothing is written.
    async fn record_ticks(&self, fence: &Fence, records: &[TickRecord]) -> Result<Recorded>;

    /// Records that control-plane replica `name` runs (upserts its `nodes` row, kind `control_plane`,
    /// `last_heartbeat` = now).
    async fn touch_control_plane(&self, name: &str, version: &str) -> Result<()>;

    /// Removes replica `name`'s row (clean stop).
    async fn forget_control_plane(&self, name: &str) -> Result<()>;

    /// Replicas whose `last_heartbeat` is within `within` of now, by name.
    async fn list_control_planes(&self, within: std::time::Duration) -> Result<Vec<ControlPlaneInfo>>;
}

/// What one pass of [`FireHistoryStore::prune_fires`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Fire rows deleted.
    pub deleted: u64,
    /// Schedules visited (at most the `schedules` asked for; fewer: the sweep reached the last one).
    pub visited: u32,
    /// The greatest schedule id visited, where the next pass continues (`None` when none was).
    pub last: Option<Uuid>,
}

/// Bounding the fire history (`control_plane.schedule_history`), separate from [`ScheduleStore`] so that
/// the pruning loop needs nothing else.
#[async_trait]
pub trait FireHistoryStore: Send + Sync {
    /// One pass of pruning: visits up to `schedules` schedules in id order after `after` (from the first
    /// when `None`), and deletes each one's fire rows but its `keep` newest (by slot), oldest first, at
    /// most `max_rows` rows in all. A pass that deletes `max_rows` rows may have left rows to delete in
    /// the schedules it visited: the next pass should start from the same `after`.
    async fn prune_fires(&self, after: Option<Uuid>, schedules: u32, keep: u32, max_rows: u32) -> Result<Pruned>;
}
