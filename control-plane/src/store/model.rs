//! What the stores read and write, independent of the backend.

use chrono::{DateTime, Utc};
use legion_common::{ExtensionState, NodeStatus, TaskStatus};
use uuid::Uuid;

use crate::delivery::AttemptStatus;
use crate::delivery::retry::{RetryOverrides, RetryPolicy};

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// UUIDv7.
    pub id: Uuid,
    /// `extension.runner.function`.
    pub function: String,
    /// Current status.
    pub status: TaskStatus,
    /// JSON object.
    pub args: serde_json::Value,
    /// The function's result once succeeded.
    pub result: Option<serde_json::Value>,
    /// The last error, or the reason of a cancel or dead letter.
    pub error: Option<String>,
    /// Current attempt (fencing token); 0 before the first start.
    pub attempt: u32,
    /// Attempts that ended in a runner error or timeout.
    pub failures: u32,
    /// Retry limit.
    pub max_attempts: u32,
    /// Current dispatch number.
    pub dispatch: u32,
    /// Takeovers and lost attempts.
    pub redeliveries: u32,
    /// 0 to 9.
    pub priority: u8,
    /// Limit of one attempt, in ms.
    pub timeout_ms: u32,
    /// Chain of the run this task belongs to.
    pub chain: Option<String>,
    /// Root task of the chain run.
    pub root_id: Option<Uuid>,
    /// Task whose completion created this one.
    pub parent_id: Option<Uuid>,
    /// Relationship that created this task.
    pub relationship_id: Option<Uuid>,
    /// Position in its chain run: 0 for the root and for tasks outside chains.
    pub depth: u32,
    /// The chain version the run is pinned to.
    pub chain_version: Option<i64>,
    /// Position among the children one relationship created from one parent, from 0.
    pub fanout_index: Option<u32>,
    /// Node of the current attempt.
    pub node: Option<String>,
    /// Region label.
    pub region: Option<String>,
    /// Deduplication key.
    pub idempotency_key: Option<String>,
    /// The principal that submitted the task (`api-key/<id>`, `jwt/<sub>`); empty for tasks from before
    /// authentication.
    pub owner: String,
    /// Earliest start of a scheduled task.
    pub not_before: Option<DateTime<Utc>>,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// First started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// The retry policy the task was given (`tasks.retry`); `None` for a task written before policies
    /// were stored, which follows the `retry.*` settings.
    pub retry: Option<RetryPolicy>,
    /// Times the task was replayed from the dead letters.
    pub replays: u32,
}

/// A validated task to insert; see `tasks::submit`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Generated UUIDv7.
    pub id: Uuid,
    /// `extension.runner.function`.
    pub function: String,
    /// The args object.
    pub args: serde_json::Value,
    /// `args` serialized.
    pub args_json: String,
    /// 0 to 9.
    pub priority: u8,
    /// 1 or more.
    pub max_attempts: u32,
    /// In ms.
    pub timeout_ms: u32,
    /// In ms; 0 publishes at once, more makes the task `scheduled`.
    pub delay_ms: u64,
    /// Deduplication key.
    pub idempotency_key: Option<String>,
    /// Region the task must run in (`legion_common::broker::validate_region`); `None` for any region.
    pub region: Option<String>,
    /// Routing key of its broker messages: `legion_common::broker::routing_key(function, region)`.
    pub routing_key: String,
    /// The submitting principal; the idempotency key is unique per owner.
    pub owner: String,
    /// The chain whose run this task starts (it becomes its own `root_id`).
    pub chain: Option<String>,
    /// The chain's current version, to which the run is pinned; set with `chain`.
    pub chain_version: Option<i64>,
    /// The broker message of dispatch 1 (JSON `TaskMessage`), written to the outbox when `delay_ms` is 0.
    pub payload: Vec<u8>,
    /// The retry policy fields the submit (or schedule) set, checked; the store fills the others from
    /// the `retry.*` settings and writes the whole policy (`tasks.retry`).
    pub retry: RetryOverrides,
}

/// The result of inserting one [`NewTask`].
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    /// The new task, or the existing one with the same idempotency key.
    pub task: Task,
    /// False when the idempotency key matched an existing task.
    pub created: bool,
}

/// Filters and position of a `ListTasks` page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this function.
    pub function: Option<String>,
    /// Only this chain.
    pub chain: Option<String>,
    /// Only this chain run.
    pub root_id: Option<Uuid>,
    /// Only ids smaller than this (the page token).
    pub before: Option<Uuid>,
    /// Most tasks on the page.
    pub limit: u32,
    /// Most bytes of task data on the page: the JSON text of `args` and `result` plus `error`, in bytes
    /// (`limits.max_list_bytes`). The page ends before the task that would pass it, but holds at least
    /// one task. `None` for no byte limit.
    pub max_bytes: Option<usize>,
}

/// One page of a task list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPage {
    /// Newest first.
    pub tasks: Vec<Task>,
    /// Whether more tasks match after the last one (the page was cut by `limit` or `max_bytes`).
    pub more: bool,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The task.
    pub task_id: Uuid,
    /// The attempt number.
    pub attempt: u32,
    /// The executor.
    pub node: String,
    /// How it stands or ended.
    pub status: AttemptStatus,
    /// Why it failed or ended.
    pub error: Option<String>,
    /// Started at.
    pub started_at: DateTime<Utc>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Runner wall time, in ms.
    pub duration_ms: Option<u64>,
}

/// What one lease sweep did: the nodes it declared `lost` and the status changes of their tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Nodes that were `active` or `draining` and are now `lost`, by name.
    pub nodes: Vec<String>,
    /// Their running tasks, dispatched again (`pending`) or dead-lettered.
    pub changes: Vec<crate::events::StatusChange>,
}

/// An outbox row claimed for publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id (publish order).
    pub id: i64,
    /// The task.
    pub task_id: Uuid,
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing key: `<extension>.<runner>.<function>`, plus `.<region>` for a task bound to a region.
    pub routing_key: String,
    /// Message priority, 0 to 9.
    pub priority: u8,
    /// The message body.
    pub payload: Vec<u8>,
}

/// One function of a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Function name.
    pub name: String,
    /// What it does.
    pub description: String,
}

/// One runner of an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    /// Runner name.
    pub name: String,
    /// Its functions, by name.
    pub functions: Vec<FunctionInfo>,
}

/// An extension as an executor announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionManifest {
    /// Extension name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its runners.
    pub runners: Vec<RunnerInfo>,
}

/// The state of an extension on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeExtensionInfo {
    /// Node name.
    pub node: String,
    /// Extension name.
    pub extension: String,
    /// Catalog state.
    pub state: ExtensionState,
    /// Why it failed, for `failed`.
    pub reason: Option<String>,
    /// Last transition.
    pub updated_at: DateTime<Utc>,
}

/// An extension with its runners and per-node states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionInfo {
    /// Extension name.
    pub name: String,
    /// Version last registered.
    pub version: String,
    /// Set by an operator.
    pub disabled: bool,
    /// Runners, by name.
    pub runners: Vec<RunnerInfo>,
    /// States per node, by node name.
    pub nodes: Vec<NodeExtensionInfo>,
}

/// A node with its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Region label.
    pub region: String,
    /// Executor version.
    pub version: String,
    /// Status (`nodes.status`).
    pub status: NodeStatus,
    /// Task slots.
    pub concurrency: u32,
    /// Process start (registration).
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// Extension states on this node.
    pub extensions: Vec<NodeExtensionInfo>,
}

/// A `RegisterNode` call, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistration {
    /// Node name (from its certificate).
    pub name: String,
    /// Region label.
    pub region: String,
    /// Executor version.
    pub version: String,
    /// Task slots.
    pub concurrency: u32,
    /// Extensions it loaded.
    pub extensions: Vec<ExtensionManifest>,
}

/// An extension state reported in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedState {
    /// Extension name.
    pub extension: String,
    /// ExtensionState as the executor sees it.
    pub state: ExtensionState,
    /// Why it failed, for `failed`.
    pub reason: Option<String>,
}

/// A `Heartbeat` call, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Node name (from its certificate).
    pub node: String,
    /// The node is shutting down.
    pub draining: bool,
    /// Extension states it reports.
    pub extensions: Vec<ReportedState>,
    /// Attempts it runs: `(task_id, attempt)`.
    pub running: Vec<(Uuid, u32)>,
}

/// What a heartbeat tells the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// Reported attempts `(task_id, attempt)` the node must abort: the task is unknown, finished,
    /// cancelled or waiting for another dispatch, the attempt is not the current one, or the current
    /// attempt belongs to another node. In the order of the report.
    pub abort: Vec<(Uuid, u32)>,
    /// Extensions an operator disabled.
    pub disabled_extensions: Vec<String>,
}
