//! The delivery protocol's decisions (docs/architecture.md "Delivery protocol"), as pure functions.
//!
//! A store locks the rows of the tasks in a batch, hands their [`TaskState`]s to a planner
//! ([`start::plan`], [`complete::plan`], [`lost::plan`], [`deadline::plan`]) and writes the resulting [`Plan`] with
//! set-based SQL in the same transaction. Planners take the items in order and update the in-memory
//! state as they go, so two items for the same task in one batch are decided as if they had arrived
//! one after the other.

pub mod complete;
pub mod deadline;
pub mod lost;
pub mod retry;
pub mod start;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use legion_common::TaskStatus;
use uuid::Uuid;

use self::retry::RetryPolicy;
use crate::events::StatusChange;

/// What the decisions read and change of a locked task row.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    /// The task.
    pub id: Uuid,
    /// Current status.
    pub status: TaskStatus,
    /// Current attempt (fencing token); 0 before the first start.
    pub attempt: u32,
    /// Attempts that ended in a runner error or timeout.
    pub failures: u32,
    /// Retry limit: retried while `failures < max_attempts`.
    pub max_attempts: u32,
    /// Current dispatch; a broker message of another dispatch is dropped.
    pub dispatch: u32,
    /// Takeovers and lost attempts so far; capped by `transport.delivery_limit`.
    pub redeliveries: u32,
    /// Node of the current attempt.
    pub node: Option<String>,
    /// Whether `not_before` has passed (or is unset); matters for `scheduled` tasks.
    pub due: bool,
    /// The chain version of the run the task belongs to: its success fires relationships.
    pub chain_version: Option<i64>,
    /// The task's retry policy (`tasks.retry`); `None` for a task written before policies were stored,
    /// which follows [`Backoff::defaults`].
    pub retry: Option<RetryPolicy>,
    /// Limit of one attempt, in ms (`tasks.timeout_ms`).
    pub timeout_ms: u32,
}

/// The status of one attempt row (`task_attempts.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    /// The executor runs it.
    Running,
    /// The function returned a result.
    Succeeded,
    /// The function failed (error, panic, rejection, oversize result).
    Failed,
    /// The function ran past its timeout.
    TimedOut,
    /// Its executor vanished (taken over, or the node's lease expired).
    Lost,
    /// The task was cancelled while it ran.
    Cancelled,
}

impl AttemptStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The new values of one task row after a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskUpdate {
    /// Final status, attempt, failures, dispatch, redeliveries and node.
    pub state: TaskState,
    /// Set `started_at` if it is unset (first start).
    pub started: bool,
    /// Set `finished_at` to the commit time.
    pub finished: bool,
    /// `Some(e)` replaces `error` with `e`.
    pub error: Option<Option<String>>,
    /// `Some(json)` sets `result` (JSON text).
    pub result: Option<String>,
    /// Write an outbox row for `state.dispatch` (a retry or a re-dispatch).
    pub redispatch: bool,
    /// `Some(ms)` sets `not_before` to the commit time (PostgreSQL clock) plus `ms`: a retry waiting
    /// out its backoff as `scheduled`.
    pub not_before_ms: Option<u64>,
}

/// A new attempt row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    /// The task.
    pub task_id: Uuid,
    /// The attempt number.
    pub attempt: u32,
    /// The executor that runs it.
    pub node: String,
    /// `running`, or `lost` when a later item of the same batch took it over.
    pub status: AttemptStatus,
    /// Why it ended, if it did.
    pub error: Option<String>,
}

/// The end of an existing attempt row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEnd {
    /// The task.
    pub task_id: Uuid,
    /// The attempt number.
    pub attempt: u32,
    /// How it ended.
    pub status: AttemptStatus,
    /// Why, for anything but success.
    pub error: Option<String>,
    /// Runner wall time reported by the executor, in ms.
    pub duration_ms: Option<u64>,
}

/// Everything a batch writes, computed before any write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// One per changed task, in the order of first change.
    pub updates: Vec<TaskUpdate>,
    /// Attempt rows to insert.
    pub new_attempts: Vec<NewAttempt>,
    /// Existing attempt rows to end.
    pub ended_attempts: Vec<AttemptEnd>,
    /// Status changes to broadcast after the commit, in order.
    pub changes: Vec<StatusChange>,
}

/// Builds a [`Plan`] item by item over the locked states.
#[derive(Debug)]
pub(crate) struct Planner {
    states: HashMap<Uuid, TaskState>,
    update_index: HashMap<Uuid, usize>,
    plan: Plan,
}

impl Planner {
    pub(crate) fn new(states: impl IntoIterator<Item = TaskState>) -> Self {
        Self {
            states: states.into_iter().map(|s| (s.id, s)).collect(),
            update_index: HashMap::new(),
            plan: Plan::default(),
        }
    }

    /// The current in-memory state of a task of the batch.
    pub(crate) fn state(&self, id: &Uuid) -> Option<&TaskState> {
        self.states.get(id)
    }

    /// Applies `change` to the task's state and records the update; a status change is broadcast.
    pub(crate) fn update(&mut self, id: Uuid, change: impl FnOnce(&mut TaskState, &mut TaskUpdate)) {
        let Some(state) = self.states.get_mut(&id) else { return };
        let index = *self.update_index.entry(id).or_insert_with(|| {
            self.plan.updates.push(TaskUpdate {
                state: state.clone(),
                started: false,
                finished: false,
                error: None,
                result: None,
                redispatch: false,
                not_before_ms: None,
            });
            self.plan.updates.len() - 1
        });
        let update = &mut self.plan.updates[index];
        let before = (state.status, state.attempt);
        change(state, update);
        update.state = state.clone();
        if (state.status, state.attempt) != before {
            self.plan.changes.push(StatusChange { task_id: id, status: state.status, attempt: state.attempt });
        }
    }

    /// Records a new attempt row.
    pub(crate) fn insert_attempt(&mut self, attempt: NewAttempt) {
        self.plan.new_attempts.push(attempt);
    }

    /// Ends an attempt: a row inserted by this batch is changed in place, an existing row is updated.
    pub(crate) fn end_attempt(&mut self, end: AttemptEnd) {
        if let Some(row) =
            self.plan.new_attempts.iter_mut().find(|a| a.task_id == end.task_id && a.attempt == end.attempt)
        {
            row.status = end.status;
            row.error = end.error;
        } else {
            self.plan.ended_attempts.push(end);
        }
    }

    pub(crate) fn finish(self) -> Plan {
        self.plan
    }
}

/// Redispatches a task that must run again: a new dispatch and an outbox row; the status is `pending`.
pub(crate) fn redispatch(state: &mut TaskState, update: &mut TaskUpdate) {
    state.status = TaskStatus::Pending;
    state.dispatch += 1;
    update.redispatch = true;
}

/// How failed attempts pick their backoff (see [`retry::wait`]): the policy of tasks that have none
/// stored, and the source of the random draws (uniform in [0, 1)), passed in so that planners stay pure.
pub struct Backoff<'a> {
    /// The `retry.*` settings, for tasks without a stored policy.
    pub defaults: RetryPolicy,
    /// One draw per retried failure.
    pub draw: &'a mut (dyn FnMut() -> f64 + Send),
}

impl fmt::Debug for Backoff<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff").field("defaults", &self.defaults).finish_non_exhaustive()
    }
}

impl Backoff<'_> {
    /// The wait before the next attempt of `state`, whose `failures` already counts the failure.
    pub fn wait(&mut self, state: &TaskState) -> Duration {
        let policy = state.retry.unwrap_or(self.defaults);
        retry::wait(&policy, state.failures, (self.draw)())
    }
}

/// How a failed attempt ends the task (after `failures` was incremented), for [`fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    /// The task is retried while attempts remain, else ends `failed`.
    Error,
    /// The task is retried while attempts remain, else ends `timed_out`.
    Timeout,
    /// The task ends `failed` whatever attempts remain.
    Permanent,
}

/// Counts a failed attempt against the task and decides what follows: with attempts left, a retry
/// after its backoff (`scheduled` with `not_before`; a wait of 0 redispatches at once); else the
/// terminal status. Returns whether the task was retried.
pub(crate) fn fail(
    planner: &mut Planner,
    id: uuid::Uuid,
    how: Failed,
    message: String,
    backoff: &mut Backoff<'_>,
) -> bool {
    let mut retried = false;
    planner.update(id, |state, update| {
        state.failures = state.failures.saturating_add(1);
        update.error = Some(Some(message));
        if how != Failed::Permanent && state.failures < state.max_attempts {
            retried = true;
            let wait = backoff.wait(state);
            if wait.is_zero() {
                redispatch(state, update);
            } else {
                state.status = TaskStatus::Scheduled;
                state.due = false;
                update.not_before_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
            }
        } else {
            state.status = if how == Failed::Timeout { TaskStatus::TimedOut } else { TaskStatus::Failed };
            update.finished = true;
        }
    });
    retried
}

/// Whether a task that was delivered `redeliveries + 1` times may be delivered once more.
pub(crate) fn within_delivery_limit(redeliveries: u32, delivery_limit: u32) -> bool {
    redeliveries.saturating_add(1) <= delivery_limit
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A task state for planner tests.
    pub fn state(status: TaskStatus) -> TaskState {
        TaskState {
            id: Uuid::now_v7(),
            status,
            attempt: 0,
            failures: 0,
            max_attempts: 1,
            dispatch: 1,
            redeliveries: 0,
            node: None,
            due: true,
            chain_version: None,
            retry: None,
            timeout_ms: 30_000,
        }
    }

    /// Backoff for planner tests: the settings' defaults and a fixed draw.
    pub fn backoff(draw: &mut (dyn FnMut() -> f64 + Send)) -> Backoff<'_> {
        Backoff { defaults: retry::RetryPolicy::from(&legion_common::settings::RetrySettings::default()), draw }
    }
}
