//! The REST shapes of chains and their relationships (DESIGN.md sections 4 and 7), as REST returns
//! them and `legion chain show` prints them. Absent optional values, and empty strings that mean
//! "none", are JSON `null`.

use chrono::{DateTime, Utc};
use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::time;
use crate::input::RetryPolicy;

/// A relationship of a chain: trigger function → action function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Relationship {
    /// Assigned by the control plane when the chain is applied (UUIDv7, in the chain's order).
    #[schema(format = Uuid)]
    pub id: String,
    /// `extension.runner.function` whose success fires the relationship.
    #[schema(example = "http.request.get")]
    pub trigger: String,
    /// `extension.runner.function` of the task it creates.
    #[schema(example = "log.entry.write")]
    pub action: String,
    /// The rule that must hold for the relationship to fire; null: always fires.
    pub conditions: serde_json::Value,
    /// How the action's args are computed; null: from the trigger's result.
    pub transformation: serde_json::Value,
    /// Delay before the action task may start, in milliseconds.
    pub delay_ms: u64,
    /// Whether the relationship fires; null means the default, true.
    #[schema(required = true)]
    pub active: Option<bool>,
    /// Priority of the action task, 0 to 9; null: the trigger task's.
    #[schema(required = true)]
    pub priority: Option<u32>,
    /// Attempts of the action task; null: 1.
    #[schema(required = true)]
    pub max_attempts: Option<u32>,
    /// Limit for one attempt of the action task, in milliseconds; null: `limits.default_timeout_ms`.
    #[schema(required = true)]
    pub timeout_ms: Option<u32>,
    /// How the action task's failed attempts are retried, only the members the relationship sets;
    /// null (or a null member): the `retry.*` settings when the task is created.
    #[serde(default)]
    #[schema(required = true)]
    pub retry: Option<RetryPolicy>,
}

impl From<&v1::Relationship> for Relationship {
    fn from(r: &v1::Relationship) -> Self {
        Self {
            id: r.id.clone(),
            trigger: r.trigger.clone(),
            action: r.action.clone(),
            conditions: r.conditions.as_ref().map_or(serde_json::Value::Null, legion_proto::value_to_json),
            transformation: r.transformation.as_ref().map_or(serde_json::Value::Null, legion_proto::value_to_json),
            delay_ms: r.delay_ms,
            active: r.active,
            priority: r.priority,
            max_attempts: r.max_attempts,
            timeout_ms: r.timeout_ms,
            retry: r.retry.as_ref().map(RetryPolicy::from_proto),
        }
    }
}

/// A named set of relationships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Chain {
    /// Its name.
    #[schema(example = "nightly-report")]
    pub name: String,
    /// What it is for; null when not given.
    #[schema(required = true)]
    pub description: Option<String>,
    /// Depth cap of its runs (the root task has depth 0); null: `limits.max_chain_depth`.
    #[schema(required = true)]
    pub max_depth: Option<u32>,
    /// The current version. Versions come from one sequence shared by every chain, so a new chain's
    /// first version is not 1 and a chain deleted and created again never reuses one. A run is pinned
    /// to the version current at its submit.
    pub version: i64,
    /// When it was first applied (RFC 3339, UTC).
    #[schema(required = true)]
    pub created_at: Option<DateTime<Utc>>,
    /// When its current version was applied.
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The principal of the last change (`api-key/<id>`, `jwt/<sub>`).
    #[schema(required = true)]
    pub updated_by: Option<String>,
    /// Its relationships, in the order applied.
    pub relationships: Vec<Relationship>,
}

impl From<&v1::Chain> for Chain {
    fn from(c: &v1::Chain) -> Self {
        Self {
            name: c.name.clone(),
            description: Some(c.description.clone()).filter(|d| !d.is_empty()),
            max_depth: c.max_depth,
            version: c.version,
            created_at: time(c.created_at.as_ref()),
            updated_at: time(c.updated_at.as_ref()),
            updated_by: Some(c.updated_by.clone()).filter(|u| !u.is_empty()),
            relationships: c.relationships.iter().map(Relationship::from).collect(),
        }
    }
}

/// One page of chains, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChainPage {
    /// The chains of this page.
    pub chains: Vec<Chain>,
    /// Pass as `page_token` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

impl From<&v1::ListChainsResponse> for ChainPage {
    fn from(r: &v1::ListChainsResponse) -> Self {
        Self {
            chains: r.chains.iter().map(Chain::from).collect(),
            next_page_token: Some(r.next_page_token.clone()).filter(|t| !t.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use serde_json::json;

    use super::*;

    fn proto_chain() -> v1::Chain {
        v1::Chain {
            name: "nightly".into(),
            description: String::new(),
            max_depth: Some(4),
            relationships: vec![
                v1::Relationship {
                    id: "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e".into(),
                    trigger: "http.request.get".into(),
                    action: "log.entry.write".into(),
                    conditions: Some(legion_proto::json_to_value(
                        &json!({"all": [{"fact": "results.status", "operator": "equal", "value": 200}]}),
                    )),
                    transformation: Some(legion_proto::json_to_value(&json!({"engine": "jq", "expr": ".results"}))),
                    delay_ms: 250,
                    active: Some(false),
                    priority: Some(9),
                    max_attempts: Some(3),
                    timeout_ms: Some(5000),
                    retry: Some(v1::RetryPolicy {
                        initial_backoff_ms: Some(100),
                        multiplier: Some(2.0),
                        ..v1::RetryPolicy::default()
                    }),
                },
                v1::Relationship {
                    id: "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5f".into(),
                    trigger: "log.entry.write".into(),
                    action: "core.util.noop".into(),
                    ..v1::Relationship::default()
                },
            ],
            version: 7,
            created_at: Some(Timestamp { seconds: 1_767_225_600, nanos: 0 }),
            updated_at: Some(Timestamp { seconds: 1_767_225_660, nanos: 500_000_000 }),
            updated_by: "api-key/k1".into(),
        }
    }

    #[test]
    fn a_chain_converts_to_the_rest_shape_in_the_documented_order() {
        let text = serde_json::to_string(&Chain::from(&proto_chain())).expect("serializes");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            json,
            json!({
                "name": "nightly",
                "description": null,
                "max_depth": 4,
                "version": 7,
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:01:00.500Z",
                "updated_by": "api-key/k1",
                "relationships": [
                    {
                        "id": "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e",
                        "trigger": "http.request.get",
                        "action": "log.entry.write",
                        "conditions": {"all": [{"fact": "results.status", "operator": "equal", "value": 200}]},
                        "transformation": {"engine": "jq", "expr": ".results"},
                        "delay_ms": 250,
                        "active": false,
                        "priority": 9,
                        "max_attempts": 3,
                        "timeout_ms": 5000,
                        "retry": {"initial_backoff_ms": 100, "multiplier": 2.0}
                    },
                    {
                        "id": "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5f",
                        "trigger": "log.entry.write",
                        "action": "core.util.noop",
                        "conditions": null,
                        "transformation": null,
                        "delay_ms": 0,
                        "active": null,
                        "priority": null,
                        "max_attempts": null,
                        "timeout_ms": null,
                        "retry": null
                    }
                ]
            })
        );
        let order = ["name", "description", "max_depth", "version", "created_at", "updated_at", "updated_by"];
        let positions: Vec<usize> = order.iter().map(|k| text.find(&format!("\"{k}\"")).expect("present")).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn empty_strings_that_mean_none_are_null() {
        let chain = v1::Chain { description: "reports".into(), updated_by: String::new(), ..proto_chain() };
        let json = serde_json::to_value(Chain::from(&chain)).expect("serializes");
        assert_eq!((&json["description"], &json["updated_by"]), (&json!("reports"), &json!(null)));
        let json = serde_json::to_value(Chain::from(&v1::Chain::default())).expect("serializes");
        assert_eq!(
            (&json["created_at"], &json["max_depth"], &json["relationships"]),
            (&json!(null), &json!(null), &json!([]))
        );
    }

    #[test]
    fn a_page_has_a_null_token_on_the_last_page() {
        let page =
            ChainPage::from(&v1::ListChainsResponse { chains: vec![proto_chain()], next_page_token: String::new() });
        assert_eq!((page.chains.len(), page.next_page_token), (1, None));
        let page = ChainPage::from(&v1::ListChainsResponse { chains: vec![], next_page_token: "n".into() });
        assert_eq!(page.next_page_token.as_deref(), Some("n"));
    }
}
