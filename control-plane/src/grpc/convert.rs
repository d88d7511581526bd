//! Conversions from the stores' models to `legion.v1` messages.

use chrono::{DateTime, Utc};
use legion_proto::v1;
use legion_proto::{json_to_value, timestamp};

use crate::delivery::retry::RetryPolicy;
use crate::leader::Lease;
use crate::store::schedules::{CadenceSpec, ControlPlaneInfo, Fire, Schedule};
use crate::store::{Attempt, ExtensionInfo, NodeExtensionInfo, NodeInfo, Task};

/// A task as `legion.v1.Task`, with `retry` as stored (unset for a task written before policies were
/// stored: use [`task_with`] to show the policy such a task follows).
pub fn task(task: &Task) -> v1::Task {
    v1::Task {
        id: task.id.to_string(),
        function: task.function.clone(),
        status: task.status.to_proto().into(),
        args: Some(json_to_value(&task.args)),
        result: task.result.as_ref().map(json_to_value),
        error: task.error.clone(),
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        priority: u32::from(task.priority),
        chain: task.chain.clone(),
        root_id: task.root_id.map(|id| id.to_string()),
        parent_id: task.parent_id.map(|id| id.to_string()),
        relationship_id: task.relationship_id.map(|id| id.to_string()),
        depth: task.depth,
        chain_version: task.chain_version,
        fanout_index: task.fanout_index,
        node: task.node.clone(),
        created_at: Some(timestamp(task.created_at)),
        started_at: task.started_at.map(timestamp),
        finished_at: task.finished_at.map(timestamp),
        timeout_ms: task.timeout_ms,
        region: task.region.clone(),
        idempotency_key: task.idempotency_key.clone(),
        owner: task.owner.clone(),
        not_before: task.not_before.map(timestamp),
        retry: task.retry.as_ref().map(RetryPolicy::to_proto),
        replays: task.replays,
    }
}

/// [`task`], showing `defaults` (the `retry.*` settings) as the policy of a task without a stored one,
/// which is the policy it follows.
pub fn task_with(task: &Task, defaults: &RetryPolicy) -> v1::Task {
    let mut message = self::task(task);
    message.retry.get_or_insert_with(|| defaults.to_proto());
    message
}

/// An attempt as `legion.v1.TaskAttempt`.
pub fn attempt(attempt: &Attempt) -> v1::TaskAttempt {
    v1::TaskAttempt {
        task_id: attempt.task_id.to_string(),
        attempt: attempt.attempt,
        node: attempt.node.clone(),
        status: attempt.status.as_str().to_owned(),
        error: attempt.error.clone(),
        started_at: Some(timestamp(attempt.started_at)),
        finished_at: attempt.finished_at.map(timestamp),
        duration_ms: attempt.duration_ms,
    }
}

/// An extension as `legion.v1.Extension`.
pub fn extension(extension: &ExtensionInfo) -> v1::Extension {
    v1::Extension {
        name: extension.name.clone(),
        version: extension.version.clone(),
        disabled: extension.disabled,
        runners: extension
            .runners
            .iter()
            .map(|r| v1::Runner {
                name: r.name.clone(),
                functions: r
                    .functions
                    .iter()
                    .map(|f| v1::Function { name: f.name.clone(), description: f.description.clone() })
                    .collect(),
            })
            .collect(),
        nodes: extension.nodes.iter().map(node_extension).collect(),
    }
}

fn node_extension(ne: &NodeExtensionInfo) -> v1::NodeExtension {
    v1::NodeExtension {
        node: ne.node.clone(),
        state: ne.state.to_proto().into(),
        updated_at: Some(timestamp(ne.updated_at)),
    }
}

/// A node as `legion.v1.Node`.
pub fn node(node: &NodeInfo) -> v1::Node {
    v1::Node {
        name: node.name.clone(),
        region: node.region.clone(),
        version: node.version.clone(),
        status: node.status.to_proto().into(),
        concurrency: node.concurrency,
        started_at: Some(timestamp(node.started_at)),
        last_heartbeat: Some(timestamp(node.last_heartbeat)),
        extensions: node.extensions.iter().map(|e| (e.extension.clone(), e.state.to_proto().into())).collect(),
    }
}

/// A schedule as `legion.v1.Schedule`, with its upcoming slots `next_fires` (see
/// [`crate::schedules::validate::next_fires`]). An interval schedule's `timezone` is `UTC`, so the
/// message can be created again as it is.
pub fn schedule(schedule: &Schedule, next_fires: &[DateTime<Utc>]) -> v1::Schedule {
    let spec = &schedule.spec;
    let (cron, timezone, interval_ms) = match &spec.cadence {
        CadenceSpec::Cron { expression, timezone } => (Some(expression.clone()), timezone.clone(), None),
        CadenceSpec::Interval { interval_ms } => (None, crate::schedules::validate::UTC.to_owned(), Some(*interval_ms)),
    };
    v1::Schedule {
        name: spec.name.clone(),
        description: spec.description.clone(),
        function: spec.function.clone(),
        args: Some(json_to_value(&spec.args)),
        transformation: spec.transformation.as_ref().map(json_to_value),
        chain: spec.chain.clone(),
        priority: u32::from(spec.priority),
        max_attempts: Some(spec.max_attempts),
        timeout_ms: Some(spec.timeout_ms),
        region: spec.region.clone(),
        cron,
        timezone,
        interval_ms,
        allow_overlap: spec.allow_overlap,
        misfire: spec.misfire.as_str().to_owned(),
        paused: schedule.paused,
        next_fires: next_fires.iter().copied().map(timestamp).collect(),
        created_at: Some(timestamp(schedule.created_at)),
        updated_at: Some(timestamp(schedule.updated_at)),
        created_by: spec.created_by.clone(),
        last_fire: schedule.last_fire.as_ref().map(fire),
        retry: spec.retry.to_proto(),
    }
}

/// A fire row as `legion.v1.ScheduleFire`: `status` is the task's current status, or the outcome when
/// there is no task (or it was purged).
pub fn fire(fire: &Fire) -> v1::ScheduleFire {
    v1::ScheduleFire {
        slot: Some(timestamp(fire.slot)),
        fired_at: Some(timestamp(fire.fired_at)),
        task_id: fire.task_id.map(|id| id.to_string()).unwrap_or_default(),
        status: fire.task_status.map_or(fire.outcome.as_str(), |s| s.as_str()).to_owned(),
        outcome: fire.outcome.as_str().to_owned(),
        reason: fire.reason.clone().unwrap_or_default(),
        missed: fire.missed,
        epoch: fire.epoch,
    }
}

/// A control-plane replica as `legion.v1.ControlPlane`; `leader` says whether it holds the scheduler
/// lease now.
pub fn control_plane(replica: &ControlPlaneInfo, leader: bool) -> v1::ControlPlane {
    v1::ControlPlane {
        name: replica.name.clone(),
        version: replica.version.clone(),
        started_at: Some(timestamp(replica.started_at)),
        last_seen: Some(timestamp(replica.last_seen)),
        leader,
    }
}

/// The scheduler lease as `legion.v1.Leadership`. The lease row's acquisition time is not part of
/// [`Lease`], so `acquired_at` is left unset.
pub fn leadership(lease: &Lease) -> v1::Leadership {
    v1::Leadership {
        holder: lease.holder.clone(),
        epoch: lease.epoch,
        acquired_at: Some(timestamp(lease.acquired_at)),
        expires_at: Some(timestamp(lease.expires_at)),
    }
}
