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

/// An executor process.
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

/// A control-plane replica, as it last reported itself (every third of `control_plane.leader_lease_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ControlPlane {
    /// Unique per process: `<host>/<random>`; the name the scheduler lease is held under.
    #[schema(example = "cp-0/3f9a1c")]
    pub name: String,
    /// Its software version.
    pub version: String,
    /// When the process started.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it last reported itself.
    #[schema(required = true)]
    pub last_seen: Option<DateTime<Utc>>,
    /// Whether it holds the scheduler lease now (it runs the scheduler tick).
    pub leader: bool,
}

impl From<&v1::ControlPlane> for ControlPlane {
    fn from(c: &v1::ControlPlane) -> Self {
        Self {
            name: c.name.clone(),
            version: c.version.clone(),
            started_at: time(c.started_at.as_ref()),
            last_seen: time(c.last_seen.as_ref()),
            leader: c.leader,
        }
    }
}

/// The scheduler lease: which control-plane replica leads, under which epoch (the fencing token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Leadership {
    /// The name of the replica holding (or that last held) the lease.
    pub holder: String,
    /// The lease's epoch: it grows by one at each change of holder.
    pub epoch: i64,
    /// When the holder acquired it.
    #[schema(required = true)]
    pub acquired_at: Option<DateTime<Utc>>,
    /// It lapses then unless renewed; a past instant means no replica leads.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&v1::Leadership> for Leadership {
    fn from(l: &v1::Leadership) -> Self {
        Self {
            holder: l.holder.clone(),
            epoch: l.epoch,
            acquired_at: time(l.acquired_at.as_ref()),
            expires_at: time(l.expires_at.as_ref()),
        }
    }
}

/// The node registry: the executors, and the control-plane replicas with the scheduler lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// Every known executor node.
    pub nodes: Vec<Node>,
    /// The control-plane replicas seen within three leases, by name.
    #[serde(default)]
    #[schema(required = true)]
    pub control_planes: Vec<ControlPlane>,
    /// The scheduler lease; null before any replica led.
    #[serde(default)]
    #[schema(required = true)]
    pub leadership: Option<Leadership>,
}

impl TryFrom<&v1::ListNodesResponse> for NodeList {
    type Error = Error;

    fn try_from(r: &v1::ListNodesResponse) -> Result<Self, Error> {
        Ok(Self {
            nodes: r.nodes.iter().map(Node::try_from).collect::<Result<_, _>>()?,
            control_planes: r.control_planes.iter().map(ControlPlane::from).collect(),
            leadership: r.leadership.as_ref().map(Leadership::from),
        })
    }
}
