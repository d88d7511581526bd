//! The REST shapes of schedules and their fires (DESIGN.md sections 4 and 7, schedules.proto), as
//! REST returns them and `legion schedule show --json` prints them. Instants are RFC 3339 in UTC with a
//! `Z` suffix, with fractional seconds only when they are not zero (`2026-03-08T07:00:00Z`,
//! `2026-03-08T07:00:00.250Z`). Absent optional values, and empty strings that mean "none", are JSON
//! `null`. A schedule document applies again as it is: its output-only members are ignored on input
//! ([`crate::input::ScheduleBody`]).

use chrono::{DateTime, Utc};
use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::time;
use crate::input::RetryPolicy;

/// The misfire policy of a schedule that names none.
pub const DEFAULT_MISFIRE: &str = "fire_once";

/// The time zone of an interval schedule, and of a cron schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// What happened to one slot of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleFire {
    /// The slot: the instant the schedule was due (RFC 3339, UTC).
    #[schema(required = true, example = "2026-03-08T07:00:00Z")]
    pub slot: Option<DateTime<Utc>>,
    /// When the leader dealt with the slot (PostgreSQL's clock).
    #[schema(required = true)]
    pub fired_at: Option<DateTime<Utc>>,
    /// The task fired; null when the slot did not fire.
    #[schema(required = true, format = Uuid)]
    pub task_id: Option<String>,
    /// The task's current status (`queued`, `succeeded`, …), or for a slot that did not fire, its
    /// outcome.
    #[schema(example = "succeeded")]
    pub status: String,
    /// `fired`, `overlap` (the previous task was unfinished), `missed` (missed while no leader ticked,
    /// with policy `skip`) or `failed` (the task could not be made; see `reason`).
    #[schema(example = "fired")]
    pub outcome: String,
    /// Why the slot did not fire, or for a catch-up fire, how many slots it stands for; null when there
    /// is nothing to say.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// Slots older than this one that were missed (while no leader ticked) and are not listed.
    pub missed: u64,
    /// Epoch of the scheduler lease under which the slot was dealt with (the fencing token).
    pub epoch: i64,
}

impl From<&v1::ScheduleFire> for ScheduleFire {
    fn from(f: &v1::ScheduleFire) -> Self {
        Self {
            slot: time(f.slot.as_ref()),
            fired_at: time(f.fired_at.as_ref()),
            task_id: Some(f.task_id.clone()).filter(|t| !t.is_empty()),
            status: f.status.clone(),
            outcome: f.outcome.clone(),
            reason: Some(f.reason.clone()).filter(|r| !r.is_empty()),
            missed: f.missed,
            epoch: f.epoch,
        }
    }
}

/// A schedule: a function (or the root of a chain run) fired on a cron expression in an IANA time
/// zone, or every `interval_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    /// Its name.
    #[schema(example = "nightly-report")]
    pub name: String,
    /// What it is for; null when not given.
    #[schema(required = true)]
    pub description: Option<String>,
    /// `extension.runner.function` of the fired tasks.
    #[schema(example = "http.request.get")]
    pub function: String,
    /// The fired tasks' args (before `transformation`).
    pub args: serde_json::Value,
    /// Evaluated at each fire on `{"args","schedule":{"name","slot","fired_at"}}`; its output becomes
    /// the task's args. Null: the args as they are.
    pub transformation: serde_json::Value,
    /// Each fired task is the root of a run of this chain; null outside chains.
    #[schema(required = true)]
    pub chain: Option<String>,
    /// Priority of the fired tasks, 0 to 9.
    pub priority: u32,
    /// Attempts of each fired task; null: 1.
    #[schema(required = true)]
    pub max_attempts: Option<u32>,
    /// Limit for one attempt, in milliseconds; null: `limits.default_timeout_ms`.
    #[schema(required = true)]
    pub timeout_ms: Option<u32>,
    /// Region whose executors run the fired tasks; null for any region.
    #[schema(required = true)]
    pub region: Option<String>,
    /// How the fired tasks' failed attempts are retried, only the members the schedule sets; null (or a
    /// null member): the `retry.*` settings when a task is fired.
    #[serde(default)]
    #[schema(required = true)]
    pub retry: Option<RetryPolicy>,
    /// The cron expression (5 fields, or 6 with a leading second), read on the wall clock of
    /// `timezone`; null for an interval schedule.
    #[schema(required = true, example = "30 2 * * *")]
    pub cron: Option<String>,
    /// The period of an interval schedule, in milliseconds; null for a cron schedule.
    #[schema(required = true)]
    pub interval_ms: Option<u64>,
    /// IANA time zone name of `cron`; `UTC` for an interval schedule.
    #[schema(example = "America/New_York")]
    pub timezone: String,
    /// Interval schedules: whether a slot starts a task while the previous one is unfinished.
    pub allow_overlap: bool,
    /// Slots missed while no leader ticked: `fire_once` fires the newest once, `skip` none of them.
    #[schema(example = "fire_once")]
    pub misfire: String,
    /// A paused schedule fires nothing; slots that pass while it is paused never fire.
    pub paused: bool,
    /// The next five slots (empty while paused), computed by the code that fires them.
    #[schema(example = json!(["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]))]
    pub next_fires: Vec<DateTime<Utc>>,
    /// When it was created.
    #[schema(required = true)]
    pub created_at: Option<DateTime<Utc>>,
    /// When it last changed (created, paused or resumed).
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The principal that created it (`api-key/<id>`, `jwt/<sub>`); its tasks are submitted on that
    /// principal's behalf.
    #[schema(required = true)]
    pub created_by: Option<String>,
    /// The newest fire, or null before the first slot was dealt with.
    #[schema(required = true)]
    pub last_fire: Option<ScheduleFire>,
}

impl From<&v1::Schedule> for Schedule {
    fn from(s: &v1::Schedule) -> Self {
        let or_default = |value: &str, default: &str| if value.is_empty() { default } else { value }.to_owned();
        Self {
            name: s.name.clone(),
            description: Some(s.description.clone()).filter(|d| !d.is_empty()),
            function: s.function.clone(),
            args: s
                .args
                .as_ref()
                .map(legion_proto::value_to_json)
                .filter(|a| !a.is_null())
                .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new())),
            transformation: s.transformation.as_ref().map_or(serde_json::Value::Null, legion_proto::value_to_json),
            chain: s.chain.clone().filter(|c| !c.is_empty()),
            priority: s.priority,
            max_attempts: s.max_attempts,
            timeout_ms: s.timeout_ms,
            region: s.region.clone().filter(|r| !r.is_empty()),
            retry: s.retry.as_ref().map(RetryPolicy::from_proto),
            cron: s.cron.clone(),
            interval_ms: s.interval_ms,
            timezone: or_default(&s.timezone, DEFAULT_TIMEZONE),
            allow_overlap: s.allow_overlap,
            misfire: or_default(&s.misfire, DEFAULT_MISFIRE),
            paused: s.paused,
            next_fires: s.next_fires.iter().filter_map(legion_proto::timestamp_to_chrono).collect(),
            created_at: time(s.created_at.as_ref()),
            updated_at: time(s.updated_at.as_ref()),
            created_by: Some(s.created_by.clone()).filter(|c| !c.is_empty()),
            last_fire: s.last_fire.as_ref().map(ScheduleFire::from),
        }
    }
}

/// One page of schedules, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SchedulePage {
    /// The schedules of this page.
    pub schedules: Vec<Schedule>,
    /// Pass as `page_token` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

impl From<&v1::ListSchedulesResponse> for SchedulePage {
    fn from(r: &v1::ListSchedulesResponse) -> Self {
        Self {
            schedules: r.schedules.iter().map(Schedule::from).collect(),
            next_page_token: Some(r.next_page_token.clone()).filter(|t| !t.is_empty()),
        }
    }
}

/// One page of a schedule's fires, newest slot first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleFirePage {
    /// The fires of this page.
    pub fires: Vec<ScheduleFire>,
    /// Pass as `page_token` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

impl From<&v1::ListScheduleFiresResponse> for ScheduleFirePage {
    fn from(r: &v1::ListScheduleFiresResponse) -> Self {
        Self {
            fires: r.fires.iter().map(ScheduleFire::from).collect(),
            next_page_token: Some(r.next_page_token.clone()).filter(|t| !t.is_empty()),
        }
    }
}

/// The slots a cadence fires at, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SchedulePreview {
    /// The slots (RFC 3339, UTC).
    #[schema(example = json!(["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]))]
    pub slots: Vec<DateTime<Utc>>,
}

impl From<&v1::PreviewScheduleResponse> for SchedulePreview {
    fn from(r: &v1::PreviewScheduleResponse) -> Self {
        Self { slots: r.slots.iter().filter_map(legion_proto::timestamp_to_chrono).collect() }
    }
}

#[cfg(test)]
mod tests;
