//! The REST shapes of the extension catalog and the node registry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::time;

/// State of an extension on a node (the catalog state machine), as a lowercase string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExtensionState {
    /// Announced by a node.
    Registered,
    /// Loaded by the node.
    Loaded,
    /// Consuming tasks.
    Running,
    /// Shutting down.
    Stopping,
    /// Stopped.
    Stopped,
    /// Failed on the node.
    Failed,
    /// Disabled by an operator.
    Disabled,
    /// Not set.
    Unspecified,
}

impl ExtensionState {
    /// The state of a protobuf enum value; unknown numbers are [`ExtensionState::Unspecified`].
    pub fn from_proto(value: i32) -> Self {
        match v1::ExtensionState::try_from(value).unwrap_or(v1::ExtensionState::Unspecified) {
            v1::ExtensionState::Unspecified => Self::Unspecified,
            v1::ExtensionState::Registered => Self::Registered,
            v1::ExtensionState::Loaded => Self::Loaded,
            v1::ExtensionState::Running => Self::Running,
            v1::ExtensionState::Stopping => Self::Stopping,
            v1::ExtensionState::Stopped => Self::Stopped,
            v1::ExtensionState::Failed => Self::Failed,
            v1::ExtensionState::Disabled => Self::Disabled,
        }
    }
}

/// A function of a runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Function {
    /// The function's own name (`get`).
    pub name: String,
    /// What it does.
    pub description: String,
}

/// A runner of an extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Runner {
    /// The runner's name (`request`).
    pub name: String,
    /// Its functions.
    pub functions: Vec<Function>,
}

/// The state of an extension on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeExtension {
    /// The node.
    pub node: String,
    /// The extension's state there.
    pub state: ExtensionState,
    /// When the state last changed.
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// An extension of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Extension {
    /// The extension's name (`http`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Set by an operator; a disabled extension accepts no new tasks.
    pub disabled: bool,
    /// Its runners.
    pub runners: Vec<Runner>,
    /// Its state on each node that registered it.
    pub nodes: Vec<NodeExtension>,
}

impl From<&v1::Extension> for Extension {
    fn from(e: &v1::Extension) -> Self {
        Self {
            name: e.name.clone(),
            version: e.version.clone(),
            disabled: e.disabled,
            runners: e
                .runners
                .iter()
                .map(|r| Runner {
                    name: r.name.clone(),
                    functions: r
                        .functions
                        .iter()
                        .map(|f| Function { name: f.name.clone(), description: f.description.clone() })
                        .collect(),
                })
                .collect(),
            nodes: e
                .nodes
                .iter()
                .map(|n| NodeExtension {
                    node: n.node.clone(),
                    state: ExtensionState::from_proto(n.state),
                    updated_at: time(n.updated_at.as_ref()),
                })
                .collect(),
        }
    }
}

/// The extension catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExtensionList {
    /// Every known extension.
    pub extensions: Vec<Extension>,
}

/// Status of a node, as a lowercase string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Heartbeating and taking tasks.
    Active,
    /// Finishing its tasks before it stops.
    Draining,
    /// Silent for longer than the node lease.
    Lost,
    /// Not set.
    Unspecified,
}

impl NodeStatus {
    /// The status of a protobuf enum value; unknown numbers are [`NodeStatus::Unspecified`].
    pub fn from_proto(value: i32) -> Self {
        match v1::NodeStatus::try_from(value).unwrap_or(v1::NodeStatus::Unspecified) {
            v1::NodeStatus::Unspecified => Self::Unspecified,
            v1::NodeStatus::Active => Self::Active,
            v1::NodeStatus::Draining => Self::Draining,
            v1::NodeStatus::Lost => Self::Lost,
        }
    }
}

/// An executor or control-plane process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// The node's name.
    pub name: String,
    /// Its region label.
    pub region: String,
    /// Its software version.
    pub version: String,
    /// Its status.
    pub status: NodeStatus,
    /// Task slots (runner pool size).
    pub concurrency: u32,
    /// When the process started.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// Its last heartbeat.
    #[schema(required = true)]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The extensions loaded on it, with their state.
    pub extensions: BTreeMap<String, ExtensionState>,
}

impl From<&v1::Node> for Node {
    fn from(n: &v1::Node) -> Self {
        Self {
            name: n.name.clone(),
            region: n.region.clone(),
            version: n.version.clone(),
            status: NodeStatus::from_proto(n.status),
            concurrency: n.concurrency,
            started_at: time(n.started_at.as_ref()),
            last_heartbeat: time(n.last_heartbeat.as_ref()),
            extensions: n.extensions.iter().map(|(k, v)| (k.clone(), ExtensionState::from_proto(*v))).collect(),
        }
    }
}

/// The node registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// Every known node.
    pub nodes: Vec<Node>,
}
