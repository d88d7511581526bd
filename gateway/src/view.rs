//! The REST/JSON shapes of Legion's objects and their conversion from the gRPC messages.
//!
//! This is the one place that turns `legion.v1` messages into the JSON that REST callers and the
//! `legion` CLI print, so both show the same object for the same task, policy or API key (DESIGN.md
//! section 7). Enum values are lowercase strings (`timed_out`, `dead_lettered`), timestamps RFC 3339
//! in UTC, JSON values (`args`, `result`, settings) plain JSON, and absent values (and empty strings
//! that mean "none") JSON `null`. The enums are [`legion_common::status`]'s; a message whose enum field
//! is unspecified or unknown converts to an [`Error`], never to a made-up value.

use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::input::RetryPolicy;

/// A control-plane message that has no REST shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An enum field holds its `*_UNSPECIFIED` value or a number this gateway does not know: a bug in
    /// the control plane, or a newer one.
    #[error("invalid control plane response: {0}")]
    UnknownValue(#[from] legion_common::status::Error),
}

/// A task, as REST returns it and the CLI prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// UUIDv7, time-ordered.
    #[schema(format = Uuid)]
    pub id: String,
    /// `extension.runner.function`.
    #[schema(example = "http.request.get")]
    pub function: String,
    /// Lifecycle status.
    pub status: TaskStatus,
    /// The JSON arguments.
    pub args: serde_json::Value,
    /// The function's result once `succeeded`, else null.
    pub result: serde_json::Value,
    /// The error of the last failed attempt, or the reason of a skip, cancel or dead letter.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Number of the current attempt (the fencing token); 0 before the first start.
    pub attempt: u32,
    /// Most attempts before the task fails.
    pub max_attempts: u32,
    /// 0 (lowest) to 9 (highest).
    pub priority: u32,
    /// The chain this task runs in.
    #[schema(required = true)]
    pub chain: Option<String>,
    /// The version of the chain the run is pinned to (the version current when its root was
    /// submitted); null outside chains.
    #[serde(default)]
    #[schema(required = true)]
    pub chain_version: Option<i64>,
    /// The root task of the chain run.
    #[schema(required = true)]
    pub root_id: Option<String>,
    /// The task whose completion created this one.
    #[schema(required = true)]
    pub parent_id: Option<String>,
    /// The relationship that created this task.
    #[schema(required = true)]
    pub relationship_id: Option<String>,
    /// Position in its chain run: 0 for the root (and for tasks outside chains), the parent's depth + 1.
    #[serde(default)]
    #[schema(required = true)]
    pub depth: u32,
    /// Position among the children one relationship created from one parent (a fan-out), from 0; null
    /// for tasks no relationship created.
    #[serde(default)]
    #[schema(required = true)]
    pub fanout_index: Option<u32>,
    /// The node that runs or ran the current attempt.
    #[schema(required = true)]
    pub node: Option<String>,
    /// The region whose executors run the task (executors with `executor.region` = this value); null
    /// when any executor with the extension may run it.
    #[schema(required = true, example = "eu-west")]
    pub region: Option<String>,
    /// When the task was accepted (RFC 3339, UTC).
    #[schema(required = true)]
    pub created_at: Option<DateTime<Utc>>,
    /// When the current attempt started.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When the task reached a terminal status.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Limit for one attempt, in milliseconds.
    pub timeout_ms: u32,
    /// The principal that submitted the task (`api-key/<id>`, `jwt/<sub>`).
    #[schema(example = "api-key/0190c3a2-7b1e-7d4c-9a2f-3c1d2e4f5a6b")]
    pub owner: String,
    /// The retry policy the task was given, every member set (the `retry.*` settings filled in what the
    /// submit left out); null for a task from a control plane that does not report one.
    #[serde(default)]
    #[schema(required = true)]
    pub retry: Option<RetryPolicy>,
    /// Times the task was replayed from the dead letters.
    #[serde(default)]
    pub replays: u32,
}

impl TryFrom<&v1::Task> for Task {
    type Error = Error;

    fn try_from(t: &v1::Task) -> Result<Self, Error> {
        Ok(Self {
            id: t.id.clone(),
            function: t.function.clone(),
            status: TaskStatus::from_wire(t.status)?,
            args: json(t.args.as_ref()),
            result: json(t.result.as_ref()),
            error: t.error.clone(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            priority: t.priority,
            chain: t.chain.clone(),
            chain_version: t.chain_version,
            root_id: t.root_id.clone(),
            parent_id: t.parent_id.clone(),
            relationship_id: t.relationship_id.clone(),
            depth: t.depth,
            fanout_index: t.fanout_index,
            node: t.node.clone(),
            region: t.region.clone(),
            created_at: time(t.created_at.as_ref()),
            started_at: time(t.started_at.as_ref()),
            finished_at: time(t.finished_at.as_ref()),
            timeout_ms: t.timeout_ms,
            owner: t.owner.clone(),
            retry: t.retry.as_ref().map(RetryPolicy::from_proto),
            replays: t.replays,
        })
    }
}

/// One page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    /// The tasks of this page.
    pub tasks: Vec<Task>,
    /// Pass as `page_token` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

impl TryFrom<&v1::ListTasksResponse> for TaskPage {
    type Error = Error;

    fn try_from(r: &v1::ListTasksResponse) -> Result<Self, Error> {
        Ok(Self {
            tasks: r.tasks.iter().map(Task::try_from).collect::<Result<_, _>>()?,
            next_page_token: Some(r.next_page_token.clone()).filter(|t| !t.is_empty()),
        })
    }
}

/// One page of dead letters (tasks in status `dead_lettered`, whose `error` is the reason), newest
/// first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterPage {
    /// The dead-lettered tasks of this page, as `GET /api/v1/tasks/{id}` shows them.
    pub dead_letters: Vec<Task>,
    /// Pass as `page_token` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

impl TryFrom<&v1::ListDeadLettersResponse> for DeadLetterPage {
    type Error = Error;

    fn try_from(r: &v1::ListDeadLettersResponse) -> Result<Self, Error> {
        Ok(Self {
            dead_letters: r.tasks.iter().map(Task::try_from).collect::<Result<_, _>>()?,
            next_page_token: Some(r.next_page_token.clone()).filter(|t| !t.is_empty()),
        })
    }
}

/// A status change of a watched task (the data of one `/events` Server-Sent Event, one line of
/// `legion task watch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskEvent {
    /// The status the task moved to.
    pub status: TaskStatus,
    /// The attempt at this event.
    pub attempt: u32,
    /// When the change was committed.
    #[schema(required = true)]
    pub at: Option<DateTime<Utc>>,
    /// Snapshot of the task at this event (terminal events carry result and error).
    #[schema(required = true)]
    pub task: Option<Task>,
}

impl TryFrom<&v1::TaskEvent> for TaskEvent {
    type Error = Error;

    fn try_from(e: &v1::TaskEvent) -> Result<Self, Error> {
        Ok(Self {
            status: TaskStatus::from_wire(e.status)?,
            attempt: e.attempt,
            at: time(e.at.as_ref()),
            task: e.task.as_ref().map(Task::try_from).transpose()?,
        })
    }
}

/// One run of a task on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskAttempt {
    /// The task.
    pub task_id: String,
    /// The attempt number (fencing token).
    pub attempt: u32,
    /// The node that ran it.
    pub node: String,
    /// `running`, `succeeded`, `failed`, `timed_out`, `lost` or `cancelled`.
    pub status: String,
    /// Why the attempt failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// When it started.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time of the runner, in milliseconds, as measured by the executor.
    #[schema(required = true)]
    pub duration_ms: Option<u64>,
}

impl From<&v1::TaskAttempt> for TaskAttempt {
    fn from(a: &v1::TaskAttempt) -> Self {
        Self {
            task_id: a.task_id.clone(),
            attempt: a.attempt,
            node: a.node.clone(),
            status: a.status.clone(),
            error: a.error.clone(),
            started_at: time(a.started_at.as_ref()),
            finished_at: time(a.finished_at.as_ref()),
            duration_ms: a.duration_ms,
        }
    }
}

/// The attempts of a task, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    /// The attempts.
    pub attempts: Vec<TaskAttempt>,
}

fn json(value: Option<&prost_types::Value>) -> serde_json::Value {
    value.map_or(serde_json::Value::Null, legion_proto::value_to_json)
}

pub(crate) fn time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(legion_proto::timestamp_to_chrono)
}

mod catalog;
mod chains;
mod schedules;
mod security;
#[cfg(test)]
mod tests;

pub use catalog::{
    ControlPlane, Extension, ExtensionList, Function, Leadership, Node, NodeExtension, NodeList, Runner,
};
pub use chains::{Chain, ChainPage, Relationship};
pub use schedules::{
    DEFAULT_MISFIRE, DEFAULT_TIMEZONE, Schedule, ScheduleFire, ScheduleFirePage, SchedulePage, SchedulePreview,
};
pub use security::{
    ApiKey, ApiKeyList, AuditPage, AuditRecord, AuditVerification, CapabilityMap, CreatedApiKey, Policy, PolicyList,
    PolicyRule, Token, WhoAmI, struct_to_json,
};
