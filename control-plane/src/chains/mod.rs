//! Chains (DESIGN.md section 4): named sets of relationships, trigger function -> action function,
//! with optional conditions (LegionIO's rule format, [`condition`]) and a transformation
//! ([`transform`]) that builds the action's args.
//!
//! - [`validate`] checks a chain document when it is applied (pure; the catalog check of function
//!   names is the caller's) and [`validate::loops`] finds relationships that can fire without end.
//! - [`fire`] decides, when a task of a chain run succeeds, which children to create and with which
//!   status (pure, given the transformation outputs).
//! - [`sandbox`] evaluates `jinja` and `jq` transformations in separate processes with memory and time
//!   limits, so that a runaway template or expression fails its child task, never the control plane.
//! - [`compiled`] keeps parsed chain versions in memory: versions are immutable, so the cache never
//!   needs invalidating.

pub mod compiled;
pub mod condition;
pub mod fire;
pub mod sandbox;
pub mod transform;
pub mod validate;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::delivery::retry::RetryOverrides;

/// A field of a chain document that is not acceptable: `field: reason`, e.g.
/// `relationships[2].conditions.all[0].operator: unknown operator "equals"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// Path of the field in the chain document: `name`, `relationships[2].action`,
    /// `relationships[0].conditions.any[1].value`, `relationships[1].transformation.expr`.
    pub field: String,
    /// What is wrong with it and what is allowed.
    pub reason: String,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// One relationship of a chain version, as stored (`chain_versions.definition`) and validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relationship {
    /// UUIDv7 assigned when the version was written; tasks it creates carry it as `relationship_id`.
    pub id: Uuid,
    /// `extension.runner.function` whose success fires it.
    pub trigger: String,
    /// `extension.runner.function` of the task it creates.
    pub action: String,
    /// The rule document ([`condition::Condition::parse`]); `None` fires always.
    pub conditions: Option<serde_json::Value>,
    /// The transformation document ([`transform::Transformation::parse`]); `None` passes the parent's
    /// result (an object) as args, or `{"result": <result>}` for any other result.
    pub transformation: Option<serde_json::Value>,
    /// Delay before the action task may start, in ms (the child is `scheduled` until then).
    pub delay_ms: u64,
    /// An inactive relationship never fires.
    pub active: bool,
    /// Priority of the action task (0 to 9); `None` inherits the parent's.
    pub priority: Option<u8>,
    /// `max_attempts` of the action task; `None` for 1.
    pub max_attempts: Option<u32>,
    /// `timeout_ms` of the action task; `None` for `limits.default_timeout_ms`.
    pub timeout_ms: Option<u32>,
    /// The retry policy fields of the action task that the relationship sets; the others take the
    /// `retry.*` settings when the task is created. Absent from definitions stored before policies
    /// existed (read as none set).
    #[serde(default, skip_serializing_if = "RetryOverrides::is_empty")]
    pub retry: RetryOverrides,
}

/// The content of one chain version (`chain_versions.definition`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// Free text.
    pub description: String,
    /// The chain's own depth cap; required when its relationships form a cycle.
    pub max_depth: Option<u32>,
    /// In the order applied.
    pub relationships: Vec<Relationship>,
}

/// A chain as the API shows it: its current version's definition and bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// Unique name.
    pub name: String,
    /// The current version (`chain_versions.id`).
    pub version: i64,
    /// The current definition.
    pub definition: Definition,
    /// First applied at.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last changed at.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The principal of the last change.
    pub updated_by: String,
}
