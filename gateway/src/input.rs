//! Parsing and validation of what REST callers send: JSON bodies, query strings and path ids. Pure
//! functions without I/O; each error is a 400 [`Problem`] naming the field and the reason.
//!
//! The control plane validates every value again (ranges, limits, the catalog); the gateway only
//! checks what it must to build a well-formed gRPC request, so the rules live in one place.

use std::collections::BTreeMap;

use legion_common::TaskStatus;
use legion_common::settings::MAX_JSON_DEPTH_CEILING;
use legion_proto::v1;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::{IntoParams, ToSchema};

use crate::problem::Problem;

/// Body of `POST /api/v1/tasks`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// `extension.runner.function`.
    #[schema(example = "http.request.get")]
    pub function: String,
    /// JSON object passed to the function; `{}` when absent. Serialized size is capped by
    /// `limits.max_payload_bytes` (default 1048576 bytes).
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    /// Run the task as the root of a run of this chain.
    #[serde(default)]
    pub chain: Option<String>,
    /// 0 (lowest, default) to 9 (highest).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u32>,
    /// 1 to `limits.max_attempts`; default 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_attempts: Option<u32>,
    /// Limit for one attempt, in milliseconds; default `limits.default_timeout_ms` (30000).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u32>,
    /// Delay before the first start, in milliseconds; default 0.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// A second submit with the same key returns the first task (status 200 instead of 201).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Region whose executors run the task (executors with `executor.region` = this value); any
    /// executor with the extension when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// How failed attempts are retried (`initial_backoff_ms`, `multiplier`, `max_backoff_ms`, `jitter`);
    /// absent members take the `retry.*` settings when the task is created.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

/// The members [`SubmitTask`] accepts, in documentation order.
pub const SUBMIT_FIELDS: &[&str] = &[
    "function",
    "args",
    "chain",
    "priority",
    "max_attempts",
    "timeout_ms",
    "delay_ms",
    "idempotency_key",
    "region",
    "retry",
];

impl SubmitTask {
    /// Parses a JSON body. Errors name the field and the reason: a body that is not JSON, not an
    /// object, has members other than [`SUBMIT_FIELDS`] (all of them are named), lacks `function`, or
    /// has a member of the wrong type (`priority: invalid type: string "high", expected u32`).
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        let submit: Self = parse_object(body, SUBMIT_FIELDS, &["function"])?;
        // Deeper values cannot cross the gRPC hop to the control plane (protobuf's recursion limit), so
        // they are refused here by name; the control plane applies its own `limits.max_json_depth`.
        if let Some(args) = &submit.args {
            check_depth("args", args)?;
        }
        Ok(submit)
    }

    /// The gRPC request. Absent or null `args` become `{}`.
    pub fn into_request(self) -> v1::SubmitTaskRequest {
        let args = self.args.unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        v1::SubmitTaskRequest {
            function: self.function,
            args: Some(legion_proto::json_to_value(&args)),
            chain: self.chain,
            priority: self.priority.unwrap_or(0),
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            delay_ms: self.delay_ms.unwrap_or(0),
            idempotency_key: self.idempotency_key,
            region: self.region,
            retry: self.retry.map(RetryPolicy::into_proto),
        }
    }
}

/// Parses a JSON body that must be an object with members among `fields`, each of `required` present.
/// Errors name the field and the reason: a body that is not JSON or not an object (`body: …`), members
/// other than `fields` (all of them named, with the accepted ones listed), a missing required member
/// (`name: required`), or a member of the wrong type, by its path (`rules[0].path: invalid type: …`).
pub fn parse_object<T: DeserializeOwned>(body: &[u8], fields: &[&str], required: &[&str]) -> Result<T, Problem> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Problem::invalid("body", format!("not valid JSON: {e}")))?;
    object_from_value(&value, fields, required)
}

/// [`parse_object`] for a document already parsed (from YAML, say): `value` must be an object with
/// members among `fields`, each of `required` present. Errors as [`parse_object`], the document being
/// named `body`.
pub fn object_from_value<T: DeserializeOwned>(
    value: &serde_json::Value,
    fields: &[&str],
    required: &[&str],
) -> Result<T, Problem> {
    let Some(object) = value.as_object() else {
        return Err(Problem::invalid("body", format!("must be a JSON object, not {}", kind(value))));
    };
    let unknown: Vec<&str> = object.keys().map(String::as_str).filter(|k| !fields.contains(k)).collect();
    if !unknown.is_empty() {
        return Err(Problem::invalid(
            &unknown.join(", "),
            format!(
                "unknown field{}; accepted fields are {}",
                if unknown.len() > 1 { "s" } else { "" },
                fields.join(", ")
            ),
        ));
    }
    if let Some(missing) = required.iter().find(|f| object.get(**f).is_none_or(serde_json::Value::is_null)) {
        return Err(Problem::invalid(missing, "required"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| Problem::invalid(&e.path().to_string(), e.inner()))
}

/// Checks that `value` is no deeper than protobuf can carry to the control plane
/// ([`MAX_JSON_DEPTH_CEILING`] levels); errors name `field`.
pub fn check_depth(field: &str, value: &serde_json::Value) -> Result<(), Problem> {
    let depth = legion_common::settings::json_depth(value);
    if depth > MAX_JSON_DEPTH_CEILING {
        return Err(Problem::invalid(
            field,
            format!("nested {depth} levels deep, more than {MAX_JSON_DEPTH_CEILING} (limits.max_json_depth)"),
        ));
    }
    Ok(())
}

/// Collects decoded query `name=value` pairs into a map keyed by the parameter name. An empty value
/// counts as absent. Errors: a parameter not in `accepted` (the accepted ones are listed) or one given
/// twice.
pub fn query_map(
    pairs: Vec<(String, String)>,
    accepted: &'static [&'static str],
) -> Result<BTreeMap<&'static str, String>, Problem> {
    let mut map = BTreeMap::new();
    let mut seen = Vec::new();
    for (name, value) in pairs {
        let Some(key) = accepted.iter().copied().find(|a| *a == name) else {
            return Err(Problem::invalid(
                &name,
                format!("unknown query parameter; accepted parameters are {}", accepted.join(", ")),
            ));
        };
        if seen.contains(&key) {
            return Err(Problem::invalid(&name, "given more than once"));
        }
        seen.push(key);
        if !value.is_empty() {
            map.insert(key, value);
        }
    }
    Ok(map)
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Most tasks a page may hold (`limit`).
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Query parameters of `GET /api/v1/tasks`. All are optional; an empty value counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTasksQuery {
    /// Only tasks with this status (`pending`, `scheduled`, `queued`, `running`, `succeeded`, `failed`,
    /// `cancelled`, `timed_out`, `dead_lettered`, `skipped`).
    #[param(schema_with = status_filter_schema)]
    pub status: Option<String>,
    /// Only tasks of this function (`extension.runner.function`).
    pub function: Option<String>,
    /// Only tasks of runs of this chain.
    pub chain: Option<String>,
    /// The tasks of one chain run, root included: the id (UUID) of the run's root task.
    #[param(format = Uuid)]
    pub root_id: Option<String>,
    /// Tasks per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

fn status_filter_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(TaskStatus::NAMES))
        .description(Some("Only tasks with this status"))
        .build()
}

/// The parameters [`ListTasksQuery`] accepts.
pub const LIST_PARAMS: &[&str] = &["status", "function", "chain", "root_id", "limit", "page_token"];

impl ListTasksQuery {
    /// Collects decoded `name=value` pairs. Errors: an unknown parameter or one given twice.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Problem> {
        let mut query = Self::default();
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "status" => &mut query.status,
                "function" => &mut query.function,
                "chain" => &mut query.chain,
                "root_id" => &mut query.root_id,
                "limit" => &mut query.limit,
                "page_token" => &mut query.page_token,
                _ => {
                    return Err(Problem::invalid(
                        &name,
                        format!("unknown query parameter; accepted parameters are {}", LIST_PARAMS.join(", ")),
                    ));
                }
            };
            if slot.is_some() {
                return Err(Problem::invalid(&name, "given more than once"));
            }
            if !value.is_empty() {
                *slot = Some(value);
            }
        }
        Ok(query)
    }

    /// The gRPC request. Errors: an unknown `status`, a `limit` that is not an integer from 1 to 1000,
    /// a `root_id` that is not a UUID.
    pub fn into_request(self) -> Result<v1::ListTasksRequest, Problem> {
        let status = match self.status.as_deref() {
            None => None,
            Some(s) => Some(s.parse::<TaskStatus>().map_err(|e| Problem::invalid("status", e))?.to_proto().into()),
        };
        let page_size = page_size(self.limit.as_deref())?;
        if let Some(root) = &self.root_id {
            parse_uuid("root_id", root)?;
        }
        Ok(v1::ListTasksRequest {
            status,
            function: self.function,
            chain: self.chain,
            root_id: self.root_id,
            page_size,
            page_token: self.page_token.unwrap_or_default(),
        })
    }
}

/// Checks that `value` is a UUID (any version, hyphenated form) and returns it in canonical lowercase.
/// Errors name `field`.
pub fn parse_uuid(field: &str, value: &str) -> Result<String, Problem> {
    match uuid::Uuid::try_parse(value) {
        Ok(id) if value.len() == 36 => Ok(id.hyphenated().to_string()),
        _ => Err(Problem::invalid(
            field,
            format!("must be a UUID like 0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e, got {value:?}"),
        )),
    }
}

/// Checks a `Content-Type` header value for a JSON body: `application/json` or `application/*+json`,
/// parameters (`; charset=utf-8`) allowed. `None` (no header) is refused as well.
pub fn is_json_content_type(value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

mod chains;
mod dead_letters;
mod retry;
mod schedules;
mod security;
/// The page size of a `limit` query parameter: 0 (the server's default) when absent.
///
/// # Errors
/// A problem naming `limit` when it is not an integer from 1 to [`MAX_PAGE_SIZE`].
pub(crate) fn page_size(limit: Option<&str>) -> Result<u32, Problem> {
    match limit {
        None => Ok(0),
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
            _ => Err(Problem::invalid("limit", format!("must be an integer from 1 to {MAX_PAGE_SIZE}, got {l:?}"))),
        },
    }
}

#[cfg(test)]
mod tests;

pub use chains::{ChainBody, LIST_CHAINS_PARAMS, ListChainsQuery, RelationshipBody};
pub use dead_letters::{LIST_DEAD_LETTERS_PARAMS, ListDeadLettersQuery};
pub use retry::RetryPolicy;
pub use schedules::{LIST_SCHEDULES_PARAMS, ListSchedulesQuery, PREVIEW_PARAMS, PreviewQuery, ScheduleBody};

pub use security::{
    AUDIT_DECISIONS, AUDIT_PARAMS, CapabilitiesBody, CreateApiKey, IssueToken, LIST_API_KEYS_PARAMS, ListApiKeysQuery,
    ListAuditQuery, PolicyBody, PolicyRuleBody, config_patch, parse_time,
};
