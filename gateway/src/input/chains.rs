//! What REST callers (and `legion chain apply`) send to `/api/v1/chains`: a chain definition and the
//! list query. Each error is a 400 [`Problem`] naming the field and the reason. Numbers must fit the
//! protobuf field they travel in (`uint32`, `uint64`): a value out of range is refused by name, never
//! truncated. The control plane checks names, functions, conditions, transformations and limits itself
//! (chains.proto, DESIGN.md section 4).
//!
//! A document exported from the chain view ([`crate::view::Chain`], what `GET /api/v1/chains/{name}`
//! answers and `legion chain show` prints) applies again: the members only the view has (the chain's
//! `version`, `created_at`, `updated_at`, `updated_by`, each relationship's `id`) are accepted and
//! ignored, never sent to the control plane. Any other unknown member is refused by name.

use legion_proto::v1;
use serde::Deserialize;
use serde::de::IgnoredAny;
use utoipa::{IntoParams, ToSchema};

use super::{RetryPolicy, check_depth, kind, object_from_value, page_size, query_map};
use crate::problem::Problem;

/// One relationship of a [`ChainBody`]: trigger function → action function.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelationshipBody {
    /// Output only; ignored on input. The id the control plane assigned (the chain view's), accepted so
    /// that an exported chain applies again; it is not sent, each apply assigns the ids anew.
    #[serde(default)]
    #[schema(value_type = String, format = Uuid, read_only)]
    pub id: IgnoredAny,
    /// `extension.runner.function` whose success fires the relationship.
    #[schema(example = "http.request.get")]
    pub trigger: String,
    /// `extension.runner.function` of the task it creates.
    #[schema(example = "log.entry.write")]
    pub action: String,
    /// A rule (`{"all":[…]}`, `{"any":[…]}` or a leaf `{"fact","operator","value"}`) over the context
    /// `{"results","args","task"}` of the trigger task; absent or null: always fires.
    #[serde(default)]
    #[schema(example = json!({"all": [{"fact": "results.status", "operator": "equal", "value": 200}]}))]
    pub conditions: Option<serde_json::Value>,
    /// `{"engine":"jinja","template":"…"}`, `{"engine":"jq","expr":"…"}` or
    /// `{"engine":"static","value":{…}}`; its output becomes the action's args (an array fans out).
    /// Absent or null: the trigger's result if it is an object, else `{"result": <result>}`.
    #[serde(default)]
    #[schema(example = json!({"engine": "jq", "expr": "{message: .results.body}"}))]
    pub transformation: Option<serde_json::Value>,
    /// Delay before the action task may start, in milliseconds; default 0, at most `limits.max_delay_ms`.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// An inactive relationship never fires; default true.
    #[serde(default)]
    pub active: Option<bool>,
    /// Priority of the action task, 0 to 9; default the trigger task's priority.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u32>,
    /// Attempts of the action task, 1 to `limits.max_attempts`; default 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_attempts: Option<u32>,
    /// Limit for one attempt of the action task, in milliseconds; default `limits.default_timeout_ms`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u32>,
    /// How the action task's failed attempts are retried (`initial_backoff_ms`, `multiplier`,
    /// `max_backoff_ms`, `jitter`); absent members take the `retry.*` settings when the task is created.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

impl RelationshipBody {
    /// The members that define a relationship, in documentation order.
    pub const FIELDS: &'static [&'static str] = &[
        "trigger",
        "action",
        "conditions",
        "transformation",
        "delay_ms",
        "active",
        "priority",
        "max_attempts",
        "timeout_ms",
        "retry",
    ];

    /// The members of the chain view ([`crate::view::Relationship`]) accepted and ignored.
    pub const OUTPUT_ONLY: &'static [&'static str] = &["id"];

    fn into_proto(self) -> v1::Relationship {
        v1::Relationship {
            id: String::new(),
            trigger: self.trigger,
            action: self.action,
            conditions: self.conditions.as_ref().map(legion_proto::json_to_value),
            transformation: self.transformation.as_ref().map(legion_proto::json_to_value),
            delay_ms: self.delay_ms.unwrap_or(0),
            active: self.active,
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            retry: self.retry.map(RetryPolicy::into_proto),
        }
    }
}

/// Body of `POST /api/v1/chains`, and the document `legion chain apply` reads (as JSON or YAML). It
/// creates the chain `name` or replaces its definition as a whole.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainBody {
    /// The chain's name, as the control plane checks policy names: 1 to 64 bytes of `a-z`, `0-9`, `_`,
    /// `-` and `.`, starting with a letter or digit (docs/chains.md).
    #[schema(example = "nightly-report")]
    pub name: String,
    /// What the chain is for; default empty.
    #[serde(default)]
    pub description: Option<String>,
    /// Depth cap of the chain's runs (the root task has depth 0), at most `limits.max_chain_depth`;
    /// required when the relationships form a cycle. A child beyond it is created `skipped`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_depth: Option<u32>,
    /// Output only; ignored on input. The chain view's version, accepted so that an exported chain
    /// applies again; it is not sent (the control plane numbers versions, and keeps the current one when
    /// the definition is unchanged).
    #[serde(default)]
    #[schema(value_type = i64, read_only)]
    pub version: IgnoredAny,
    /// Output only; ignored on input. The chain view's `created_at` (RFC 3339, UTC); not sent.
    #[serde(default)]
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>, read_only)]
    pub created_at: IgnoredAny,
    /// Output only; ignored on input. The chain view's `updated_at` (RFC 3339, UTC); not sent.
    #[serde(default)]
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>, read_only)]
    pub updated_at: IgnoredAny,
    /// Output only; ignored on input. The chain view's `updated_by`; not sent (the control plane records
    /// the caller's principal).
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub updated_by: IgnoredAny,
    /// The relationships, at most `limits.max_relationships`; they replace the chain's as a whole.
    pub relationships: Vec<RelationshipBody>,
}

impl ChainBody {
    /// The members that define a chain, in documentation order.
    pub const FIELDS: &'static [&'static str] = &["name", "description", "max_depth", "relationships"];

    /// The members of the chain view ([`crate::view::Chain`]) accepted and ignored.
    pub const OUTPUT_ONLY: &'static [&'static str] = &["version", "created_at", "updated_at", "updated_by"];

    /// The members required.
    const REQUIRED: &'static [&'static str] = &["name", "relationships"];

    /// Parses a JSON body. Errors as [`super::parse_object`] (`name: required`,
    /// `relationships[0]: missing field \`trigger\``, `relationships[1].delay_ms: invalid type: …`), plus
    /// the unknown members of each relationship (all of them named, by path) and `conditions` or
    /// `transformation` nested deeper than protobuf carries. The members of [`ChainBody::OUTPUT_ONLY`]
    /// and [`RelationshipBody::OUTPUT_ONLY`] are accepted whatever their value, and ignored; any other
    /// unknown member is refused, the accepted ones listed.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| Problem::invalid("body", format!("not valid JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// [`ChainBody::parse`] for a document already parsed (`legion chain apply` reads YAML too).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, Problem> {
        // The document's own members first, then each relationship's, then the types.
        let accepted = [Self::FIELDS, Self::OUTPUT_ONLY].concat();
        if let Some(object) = value.as_object() {
            check_members(object, "", Self::FIELDS, Self::OUTPUT_ONLY)?;
        }
        object_from_value::<IgnoredAny>(value, &accepted, Self::REQUIRED)?;
        if let Some(relationships) = value.get("relationships").and_then(serde_json::Value::as_array) {
            check_relationship_members(relationships)?;
        }
        let chain: Self = object_from_value(value, &accepted, Self::REQUIRED)?;
        for (i, relationship) in chain.relationships.iter().enumerate() {
            if let Some(conditions) = &relationship.conditions {
                check_depth(&format!("relationships[{i}].conditions"), conditions)?;
            }
            if let Some(transformation) = &relationship.transformation {
                check_depth(&format!("relationships[{i}].transformation"), transformation)?;
            }
        }
        Ok(chain)
    }

    /// The gRPC request. A null `conditions` or `transformation` is sent as absent.
    pub fn into_request(self) -> v1::ApplyChainRequest {
        v1::ApplyChainRequest {
            chain: Some(v1::Chain {
                name: self.name,
                description: self.description.unwrap_or_default(),
                max_depth: self.max_depth,
                relationships: self.relationships.into_iter().map(RelationshipBody::into_proto).collect(),
                ..v1::Chain::default()
            }),
        }
    }
}

/// Refuses a relationship that is not an object, or has members other than
/// [`RelationshipBody::FIELDS`] and [`RelationshipBody::OUTPUT_ONLY`] (all of them named by path, with
/// the accepted ones listed).
fn check_relationship_members(relationships: &[serde_json::Value]) -> Result<(), Problem> {
    for (i, relationship) in relationships.iter().enumerate() {
        let Some(object) = relationship.as_object() else {
            return Err(Problem::invalid(
                &format!("relationships[{i}]"),
                format!("must be a JSON object, not {}", kind(relationship)),
            ));
        };
        check_members(
            object,
            &format!("relationships[{i}]."),
            RelationshipBody::FIELDS,
            RelationshipBody::OUTPUT_ONLY,
        )?;
    }
    Ok(())
}

/// Refuses an object with members other than `fields` and `output_only`, naming all of them (each
/// prefixed with `prefix`, e.g. `relationships[1].`): `owner: unknown field; accepted fields are name,
/// description, max_depth, relationships, and the output-only version, … (ignored)`.
pub(super) fn check_members(
    object: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    fields: &[&str],
    output_only: &[&str],
) -> Result<(), Problem> {
    let unknown: Vec<String> = object
        .keys()
        .filter(|k| !fields.contains(&k.as_str()) && !output_only.contains(&k.as_str()))
        .map(|k| format!("{prefix}{k}"))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Problem::invalid(
        &unknown.join(", "),
        format!(
            "unknown field{}; accepted fields are {}, and the output-only {} (ignored)",
            if unknown.len() > 1 { "s" } else { "" },
            fields.join(", "),
            output_only.join(", ")
        ),
    ))
}

/// The query parameters of `GET /api/v1/chains`.
pub const LIST_CHAINS_PARAMS: &[&str] = &["limit", "page_token"];

/// Query parameters of `GET /api/v1/chains`. Both are optional; an empty value counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListChainsQuery {
    /// Chains per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

impl ListChainsQuery {
    /// Collects decoded `name=value` pairs. Errors: an unknown parameter or one given twice.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Problem> {
        let mut map = query_map(pairs, LIST_CHAINS_PARAMS)?;
        Ok(Self { limit: map.remove("limit"), page_token: map.remove("page_token") })
    }

    /// The gRPC request. Error: a `limit` that is not an integer from 1 to 1000.
    pub fn into_request(self) -> Result<v1::ListChainsRequest, Problem> {
        let page_size = page_size(self.limit.as_deref())?;
        Ok(v1::ListChainsRequest { page_size, page_token: self.page_token.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests;
