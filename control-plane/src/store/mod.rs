//! Storage behind repository traits, one per concept, so that a second backend (embedded SQLite for
//! `legion dev`) can pass the same conformance tests. [`pg::PgStore`] is the PostgreSQL backend.
//!
//! Batch operations (submits, starts, completions, publishes, sweeps) are one transaction each, with
//! set-based SQL over arrays; the decisions inside them are the pure planners of [`crate::delivery`].
//! Every transaction that changes a task locks its row first, in id order, so batches do not deadlock.

pub mod chains;
pub mod dead_letters;
pub mod error;
pub mod model;
pub mod pg;
pub mod schedules;
pub mod security;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use error::{Error, Result};
pub use model::*;

use crate::delivery::complete::{CompleteItem, ResultLimits, Verdict};
use crate::delivery::start::{Decision, StartItem};
use crate::events::StatusChange;

/// Tasks: submit, read, list, cancel, attempts, and the promotion of due scheduled tasks.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// For each of `functions` (`extension.runner.function`) known to the catalog, whether its extension
    /// is disabled. Unknown functions are absent from the map.
    async fn function_status(&self, functions: &[String]) -> Result<HashMap<String, bool>>;

    /// Inserts `tasks` in one transaction: each task, and for each task without delay an outbox row
    /// (dispatch 1, routing key `NewTask::routing_key`). A task whose idempotency key exists (or repeats
    /// an earlier key of the batch) is not inserted; the existing task is returned with
    /// `created = false`, whatever its parameters (the caller compares them). One result per task, in
    /// order.
    async fn insert_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>>;

    /// The task, or `None`.
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>>;

    /// Tasks matching `filter`, newest first: at most `filter.limit`, and no more than fit in
    /// `filter.max_bytes` (but at least one). Only the page's rows leave the database.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<TaskPage>;

    /// Cancels a task that has not finished (its running attempt becomes `cancelled`) and returns it.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id, [`Error::FailedPrecondition`] for a finished task.
    async fn cancel_task(&self, id: Uuid) -> Result<(Task, Vec<StatusChange>)>;

    /// The attempts of a task, oldest first.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown task.
    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>>;

    /// Moves up to `limit` due `scheduled` tasks to `pending` with a new dispatch and an outbox row.
    async fn promote_due(&self, limit: u32) -> Result<Vec<StatusChange>>;
}

/// The executor side of the delivery protocol.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Decides and records a batch of starts for `node` in one transaction ([`crate::delivery::start`]).
    async fn start(
        &self,
        node: &str,
        items: &[StartItem],
        delivery_limit: u32,
    ) -> Result<(Vec<Decision>, Vec<StatusChange>)>;

    /// Decides and records a batch of completions in one transaction ([`crate::delivery::complete`]),
    /// with the outbox rows of retries. Results are checked against `limits`. When the store fires
    /// chains (see `PgStore::with_firing`), the children of every task of a chain run that succeeded
    /// ([`crate::chains::fire`]) are written in the same transaction, with their outbox rows; their
    /// status changes are returned with the others.
    async fn complete(&self, items: &[CompleteItem], limits: ResultLimits)
    -> Result<(Vec<Verdict>, Vec<StatusChange>)>;

    /// In one transaction: marks `lost` every executor node (not already lost) whose last call is older
    /// than `lease`, and recovers the running tasks of exactly those nodes ([`crate::delivery::lost`]).
    /// A node's attempts are therefore swept once per loss: a node that is already `lost` is not swept
    /// again, and a node that calls again is `active` (see [`CatalogStore::touch_node`]).
    async fn expire_nodes(&self, lease: Duration, delivery_limit: u32) -> Result<Expiry>;

    /// In one transaction, for up to `limit` tasks (`FOR UPDATE SKIP LOCKED`, in id order): ends the
    /// `running` attempt that started (`task_attempts.started_at`, database clock) more than the task's
    /// `timeout_ms` plus `lease` ago as `timed_out`, counted as a failure ([`crate::delivery::deadline`]):
    /// the task is retried after its backoff, or ends `timed_out` on its last attempt. Returns the status
    /// changes.
    async fn expire_attempts(&self, lease: Duration, limit: u32) -> Result<Vec<StatusChange>>;

    /// A node's last heartbeat after a drain (`HeartbeatRequest.stopped`): in one transaction, recovers
    /// every attempt still recorded as running on `node` as a lost node's ([`crate::delivery::lost`]:
    /// attempt `lost`, task dispatched again or dead-lettered past `delivery_limit`) and deletes the
    /// node (its `node_extensions` rows with it; the transition history stays). Returns the status
    /// changes.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a node that is not registered.
    async fn stop_node(&self, node: &str, delivery_limit: u32) -> Result<Vec<StatusChange>>;
}

/// The transactional outbox.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` rows, oldest first, skipping rows another publisher holds. The claim lasts
    /// until [`OutboxClaim::finish`] or until it is dropped (which releases the rows unchanged).
    async fn claim_outbox(&self, limit: u32) -> Result<Box<dyn OutboxClaim>>;

    /// Rows waiting in the outbox.
    async fn outbox_depth(&self) -> Result<u64>;
}

/// Outbox rows held by one publisher.
#[async_trait]
pub trait OutboxClaim: Send {
    /// The claimed rows, oldest first.
    fn rows(&self) -> &[OutboxRow];

    /// Deletes the `published` rows and moves their tasks `pending → queued`; records a failure
    /// (`failures += 1`, `last_error`) on the `failed` rows, which stay. Returns the status changes.
    async fn finish(self: Box<Self>, published: &[i64], failed: &[(i64, String)]) -> Result<Vec<StatusChange>>;

    /// [`OutboxClaim::finish`], plus the rows the broker `returned` as unroutable (mandatory publish, no
    /// queue bound to the routing key). A row returned for the first time stays, marked as returned, and
    /// is published again (after the publisher declared its queue again). A row that was returned before
    /// is deleted and, only if its dispatch is still its task's current one and the task has not
    /// finished, ends the task `dead_lettered` with the reason `unroutable: no queue bound to routing key
    /// <key> on exchange <exchange>`. Returns the status changes (dead letters included).
    async fn finish_with_returns(
        self: Box<Self>,
        published: &[i64],
        failed: &[(i64, String)],
        returned: &[i64],
    ) -> Result<Vec<StatusChange>>;
}

/// A task a node may not start now (see [`CatalogStore::unregistered_tasks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    /// The task.
    pub task_id: Uuid,
    /// Its extension.
    pub extension: String,
    /// The extension's state on the node; `None` when the node did not register it.
    pub state: Option<String>,
}

impl Unserved {
    /// Why the start is refused, naming the node, the extension and its state there.
    pub fn reason(&self, node: &str) -> String {
        match &self.state {
            None => format!("node {node} did not register extension {}", self.extension),
            Some(state) => format!("extension {} is {state} on node {node}, not running", self.extension),
        }
    }
}

/// The extension catalog and the node registry.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Of the tasks `ids`, those whose extension `node` has not registered or that is not running there
    /// (state other than `registered`, `loaded`, `running`), each with its extension and that state
    /// (`None`: not registered); unknown ids are left out.
    async fn unregistered_tasks(&self, node: &str, ids: &[Uuid]) -> Result<Vec<Unserved>>;

    /// Upserts the node (`active`) and its extensions, runners and functions, and drives each
    /// node-extension through `register` and `load` (then `disable` if the extension is disabled).
    /// Returns the disabled extensions.
    async fn register_node(&self, registration: &NodeRegistration) -> Result<Vec<String>>;

    /// Records a heartbeat: `last_heartbeat`, `active` or `draining`, reported extension states (invalid
    /// transitions are logged, not applied); answers the reported attempts to abort (see
    /// [`HeartbeatReply::abort`]) and the disabled extensions.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a node that never registered.
    async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatReply>;

    /// Records that `node` called (`StartTask`, `CompleteTask`): sets `last_heartbeat` to now and a
    /// `lost` node `active` (a `draining` node stays draining). To keep busy nodes cheap, the row is
    /// only written when the node is lost or its `last_heartbeat` is older than `min_interval`. Returns
    /// true when the node was `lost`. An unknown node is ignored (false).
    async fn touch_node(&self, node: &str, min_interval: Duration) -> Result<bool>;

    /// Every extension with runners, functions and node states, by name.
    async fn list_extensions(&self) -> Result<Vec<ExtensionInfo>>;

    /// Every node with its extension states, by name.
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>>;

    /// Sets `extensions.disabled` and applies `disable`/`enable` to each node-extension; returns the
    /// extension.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown extension.
    async fn set_extension_disabled(&self, name: &str, disabled: bool) -> Result<ExtensionInfo>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;
}

/// Everything the control plane stores.
pub trait Store:
    TaskStore + DeliveryStore + OutboxStore + CatalogStore + chains::ChainStore + dead_letters::DeadLetterStore
{
}

impl<T: TaskStore + DeliveryStore + OutboxStore + CatalogStore + chains::ChainStore + dead_letters::DeadLetterStore>
    Store for T
{
}
