//! The REST shapes of the extension catalog and the node registry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use legion_common::{ExtensionState, NodeStatus};
use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Error, time};

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

impl TryFrom<&v1::Extension> for Extension {
    type Error = Error;

    fn try_from(e: &v1::Extension) -> Result<Self, Error> {
        Ok(Self {
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
                .map(|n| {
                    Ok(NodeExtension {
                        node: n.node.clone(),
                        state: ExtensionState::from_wire(n.state)?,
                        updated_at: time(n.updated_at.as_ref()),
                    })
                })
                .collect::<Result<_, Error>>()?,
        })
    }
}

/// The extension catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExtensionList {
    /// Every known extension.
    pub extensions: Vec<Extension>,
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

impl TryFrom<&v1::Node> for Node {
    type Error = Error;

    fn try_from(n: &v1::Node) -> Result<Self, Error> {
        Ok(Self {
            name: n.name.clone(),
            region: n.region.clone(),
            version: n.version.clone(),
            status: NodeStatus::from_wire(n.status)?,
            concurrency: n.concurrency,
            started_at: time(n.started_at.as_ref()),
            last_heartbeat: time(n.last_heartbeat.as_ref()),
            extensions: n
                .extensions
                .iter()
                .map(|(k, v)| Ok((k.clone(), ExtensionState::from_wire(*v)?)))
                .collect::<Result<_, Error>>()?,
        })
    }
}

/// The node registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// Every known node.
    pub nodes: Vec<Node>,
}
