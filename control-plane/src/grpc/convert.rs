//! Conversions from the stores' models to `legion.v1` messages.

use legion_proto::v1;
use legion_proto::{json_to_value, timestamp};

use crate::store::{Attempt, ExtensionInfo, NodeExtensionInfo, NodeInfo, Task};

/// A task as `legion.v1.Task`.
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
    }
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
