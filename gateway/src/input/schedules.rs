//! What REST callers (and `legion schedule add`) send to `/api/v1/schedules` and
//! `/api/v1/schedule-preview`: a schedule definition, the list queries and the preview query. Each
//! error is a 400 [`Problem`] naming the field and the reason. Numbers must fit the protobuf field they
//! travel in (`uint32`, `uint64`): a value out of range is refused by name, never truncated. The
//! control plane checks the name, the function, the cadence (`cron`, `timezone`, `interval_ms`),
//! `misfire`, the transformation and the limits itself (schedules.proto, DESIGN.md section 4).
//!
//! A document exported from the schedule view ([`crate::view::Schedule`], what
//! `GET /api/v1/schedules/{name}` answers and `legion schedule show --json` prints) is accepted again:
//! the members only the view has (`next_fires`, `created_at`, `updated_at`, `created_by`, `last_fire`)
//! are accepted and ignored, never sent to the control plane; `paused` is taken, so a paused schedule
//! exported and created again is paused. Any other unknown member is refused by name.

use legion_proto::v1;
use serde::Deserialize;
use serde::de::IgnoredAny;
use utoipa::{IntoParams, ToSchema};

use super::chains::check_members;
use super::{MAX_PAGE_SIZE, RetryPolicy, check_depth, object_from_value, page_size, parse_time, query_map};
use crate::problem::Problem;

/// Body of `POST /api/v1/schedules`, and the document `legion schedule add --file` reads (as JSON or
/// YAML). Exactly one of `cron` and `interval_ms` must be given.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// 1 to 64 bytes of `a-z`, `0-9`, `_`, `-` and `.`, starting with a letter or digit (as chain
    /// names).
    #[schema(example = "nightly-report")]
    pub name: String,
    /// What the schedule is for, at most 1024 bytes; default empty.
    #[serde(default)]
    pub description: Option<String>,
    /// `extension.runner.function` of the fired tasks; must be in the catalog.
    #[schema(example = "http.request.get")]
    pub function: String,
    /// The fired tasks' args: a JSON object; absent or null: `{}`. Same limits as a submit's args.
    #[serde(default)]
    #[schema(example = json!({"url": "https://example.com/report"}))]
    pub args: Option<serde_json::Value>,
    /// `{"engine":"jinja","template":"…"}`, `{"engine":"jq","expr":"…"}` or
    /// `{"engine":"static","value":{…}}`, evaluated at each fire on
    /// `{"args": <args>, "schedule": {"name", "slot", "fired_at"}}`; its output must be an object and
    /// becomes the task's args. Absent or null: the args as they are.
    #[serde(default)]
    #[schema(example = json!({"engine": "jq", "expr": ".args + {slot: .schedule.slot}"}))]
    pub transformation: Option<serde_json::Value>,
    /// Each fired task is the root of a run of this chain, which must have an active relationship
    /// triggered by `function`.
    #[serde(default)]
    pub chain: Option<String>,
    /// Priority of the fired tasks, 0 (lowest, default) to 9 (highest).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u32>,
    /// Attempts of each fired task, 1 to `limits.max_attempts`; default 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_attempts: Option<u32>,
    /// Limit for one attempt, in milliseconds; default `limits.default_timeout_ms`, at most
    /// `limits.max_timeout_ms`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u32>,
    /// Region whose executors run the fired tasks; any region when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// How the fired tasks' failed attempts are retried (`initial_backoff_ms`, `multiplier`,
    /// `max_backoff_ms`, `jitter`); absent members take the `retry.*` settings when a task is fired.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// A cron expression of 5 fields (`minute hour day-of-month month day-of-week`) or 6 (a leading
    /// second), read on the wall clock of `timezone`. Give either `cron` or `interval_ms`.
    #[serde(default)]
    #[schema(example = "30 2 * * *")]
    pub cron: Option<String>,
    /// Fire every this many milliseconds, 1000 to 31622400000 (366 days), from the schedule's creation.
    /// Give either `cron` or `interval_ms`.
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 31_622_400_000_u64)]
    pub interval_ms: Option<u64>,
    /// IANA time zone name of `cron` (`Europe/Berlin`); default `UTC`. Empty or `UTC` for an interval
    /// schedule.
    #[serde(default)]
    #[schema(example = "America/New_York")]
    pub timezone: Option<String>,
    /// Interval schedules only: start a task even while the previous one (or its chain run) is
    /// unfinished. Default false: such a slot is passed over and recorded with outcome `overlap`.
    #[serde(default)]
    pub allow_overlap: Option<bool>,
    /// Slots missed while no leader ticked (downtime, failover): `fire_once` (default) fires the newest
    /// once; `skip` fires none of them.
    #[serde(default)]
    #[schema(example = "fire_once")]
    pub misfire: Option<String>,
    /// Create the schedule paused: it fires nothing until `POST /api/v1/schedules/{name}/resume`.
    /// Default false (running). The schedule view's `paused`, so an exported paused schedule is created
    /// again paused.
    #[serde(default)]
    pub paused: Option<bool>,
    /// Output only; ignored on input. The schedule view's next slots; not sent.
    #[serde(default)]
    #[schema(value_type = Option<Vec<chrono::DateTime<chrono::Utc>>>, read_only)]
    pub next_fires: IgnoredAny,
    /// Output only; ignored on input. The schedule view's `created_at` (RFC 3339, UTC); not sent.
    #[serde(default)]
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>, read_only)]
    pub created_at: IgnoredAny,
    /// Output only; ignored on input. The schedule view's `updated_at` (RFC 3339, UTC); not sent.
    #[serde(default)]
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>, read_only)]
    pub updated_at: IgnoredAny,
    /// Output only; ignored on input. The schedule view's `created_by`; not sent (the control plane
    /// records the caller's principal).
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub created_by: IgnoredAny,
    /// Output only; ignored on input. The schedule view's newest fire; not sent.
    #[serde(default)]
    #[schema(value_type = Option<crate::view::ScheduleFire>, read_only)]
    pub last_fire: IgnoredAny,
}

impl ScheduleBody {
    /// The members that define a schedule, in documentation order.
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "description",
        "function",
        "args",
        "transformation",
        "chain",
        "priority",
        "max_attempts",
        "timeout_ms",
        "region",
        "retry",
        "cron",
        "interval_ms",
        "timezone",
        "allow_overlap",
        "misfire",
        "paused",
    ];

    /// The members of the schedule view ([`crate::view::Schedule`]) accepted and ignored.
    pub const OUTPUT_ONLY: &'static [&'static str] =
        &["next_fires", "created_at", "updated_at", "created_by", "last_fire"];

    /// The members required.
    const REQUIRED: &'static [&'static str] = &["name", "function"];

    /// Parses a JSON body. Errors as [`super::parse_object`] (`name: required`,
    /// `interval_ms: invalid value: integer \`-1\`, expected u64`), plus `args` or `transformation`
    /// nested deeper than protobuf carries. The members of [`ScheduleBody::OUTPUT_ONLY`] are accepted
    /// whatever their value, and ignored; any other unknown member is refused, all of them named, with
    /// the accepted ones listed.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| Problem::invalid("body", format!("not valid JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// [`ScheduleBody::parse`] for a document already parsed (`legion schedule add --file` reads YAML
    /// too).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, Problem> {
        if let Some(object) = value.as_object() {
            check_members(object, "", Self::FIELDS, Self::OUTPUT_ONLY)?;
        }
        let accepted = [Self::FIELDS, Self::OUTPUT_ONLY].concat();
        let schedule: Self = object_from_value(value, &accepted, Self::REQUIRED)?;
        if let Some(args) = &schedule.args {
            check_depth("args", args)?;
        }
        if let Some(transformation) = &schedule.transformation {
            check_depth("transformation", transformation)?;
        }
        Ok(schedule)
    }

    /// The `legion.v1.Schedule` it defines, output-only fields unset. Absent or null `args` become
    /// `{}`; absent `timezone` and `misfire` are sent empty (the control plane's defaults: `UTC`,
    /// `fire_once`); absent `paused` is false.
    pub fn into_schedule(self) -> v1::Schedule {
        let args =
            self.args.filter(|a| !a.is_null()).unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        v1::Schedule {
            name: self.name,
            description: self.description.unwrap_or_default(),
            function: self.function,
            args: Some(legion_proto::json_to_value(&args)),
            transformation: self.transformation.as_ref().map(legion_proto::json_to_value),
            chain: self.chain,
            priority: self.priority.unwrap_or(0),
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            region: self.region,
            retry: self.retry.map(RetryPolicy::into_proto),
            cron: self.cron,
            timezone: self.timezone.unwrap_or_default(),
            interval_ms: self.interval_ms,
            allow_overlap: self.allow_overlap.unwrap_or(false),
            misfire: self.misfire.unwrap_or_default(),
            paused: self.paused.unwrap_or(false),
            ..v1::Schedule::default()
        }
    }

    /// The gRPC request.
    pub fn into_request(self) -> v1::CreateScheduleRequest {
        v1::CreateScheduleRequest { schedule: Some(self.into_schedule()) }
    }
}

/// The query parameters of `GET /api/v1/schedules` and `GET /api/v1/schedules/{name}/fires`.
pub const LIST_SCHEDULES_PARAMS: &[&str] = &["limit", "page_token"];

/// Query parameters of `GET /api/v1/schedules` and `GET /api/v1/schedules/{name}/fires`. Both are
/// optional; an empty value counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSchedulesQuery {
    /// Items per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

impl ListSchedulesQuery {
    /// Collects decoded `name=value` pairs. Errors: an unknown parameter or one given twice.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Problem> {
        let mut map = query_map(pairs, LIST_SCHEDULES_PARAMS)?;
        Ok(Self { limit: map.remove("limit"), page_token: map.remove("page_token") })
    }

    /// The `ListSchedules` request. Error: a `limit` that is not an integer from 1 to 1000.
    pub fn into_request(self) -> Result<v1::ListSchedulesRequest, Problem> {
        let page_size = page_size(self.limit.as_deref())?;
        Ok(v1::ListSchedulesRequest { page_size, page_token: self.page_token.unwrap_or_default() })
    }

    /// The `ListScheduleFires` request for the schedule `name`. Error: a `limit` that is not an integer
    /// from 1 to 1000.
    pub fn into_fires_request(self, name: String) -> Result<v1::ListScheduleFiresRequest, Problem> {
        let page_size = page_size(self.limit.as_deref())?;
        Ok(v1::ListScheduleFiresRequest { name, page_size, page_token: self.page_token.unwrap_or_default() })
    }
}

/// The query parameters of `GET /api/v1/schedule-preview`.
pub const PREVIEW_PARAMS: &[&str] = &["cron", "timezone", "interval_ms", "from", "count"];

/// Query parameters of `GET /api/v1/schedule-preview`: a cadence as a schedule gives it (exactly one
/// of `cron` and `interval_ms`), and which slots to list. An empty value counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// A cron expression of 5 or 6 fields (URL-encoded: `30%202%20*%20*%20*`).
    #[param(example = "30 2 * * *")]
    pub cron: Option<String>,
    /// IANA time zone name of `cron`; default `UTC`.
    #[param(example = "America/New_York")]
    pub timezone: Option<String>,
    /// The period of an interval cadence, in milliseconds (1000 to 31622400000), counted from `from`.
    #[param(value_type = Option<u64>, minimum = 1000, maximum = 31_622_400_000_u64)]
    pub interval_ms: Option<String>,
    /// List the slots strictly after this instant (RFC 3339; the anchor of an interval); default now.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>, example = "2026-03-07T00:00:00Z")]
    pub from: Option<String>,
    /// How many slots, 1 to 1000; default 5.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub count: Option<String>,
}

impl PreviewQuery {
    /// Collects decoded `name=value` pairs. Errors: an unknown parameter or one given twice.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Problem> {
        let mut map = query_map(pairs, PREVIEW_PARAMS)?;
        Ok(Self {
            cron: map.remove("cron"),
            timezone: map.remove("timezone"),
            interval_ms: map.remove("interval_ms"),
            from: map.remove("from"),
            count: map.remove("count"),
        })
    }

    /// The `PreviewSchedule` request. Errors name the parameter: an `interval_ms` that is not a
    /// non-negative integer, a `from` that is not an RFC 3339 time, a `count` that is not an integer
    /// from 1 to 1000. The cadence itself is checked by the control plane (`cron: …`, `timezone: …`).
    pub fn into_request(self) -> Result<v1::PreviewScheduleRequest, Problem> {
        let interval_ms = match self.interval_ms.as_deref() {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                Problem::invalid("interval_ms", format!("must be a whole number of milliseconds, got {text:?}"))
            })?),
        };
        let from = self.from.as_deref().map(|t| parse_time("from", t)).transpose()?;
        let count = match self.count.as_deref() {
            None => 0,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => {
                    return Err(Problem::invalid(
                        "count",
                        format!("must be an integer from 1 to {MAX_PAGE_SIZE}, got {text:?}"),
                    ));
                }
            },
        };
        Ok(v1::PreviewScheduleRequest {
            cron: self.cron,
            timezone: self.timezone.unwrap_or_default(),
            interval_ms,
            from,
            count,
        })
    }
}

#[cfg(test)]
mod tests;
