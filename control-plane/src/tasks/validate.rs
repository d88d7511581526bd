//! Validation of `SubmitTask` requests against `limits.*` (pure, no I/O).
//!
//! Every error names the field first (`args: …`), so a caller of the gRPC or REST API knows what to
//! fix. Whether the function exists and whether its extension is disabled needs the catalog and is
//! checked by the submit writer.

use legion_common::FunctionName;
use legion_common::settings::{Limits, json_depth};
use legion_proto::v1::SubmitTaskRequest;

use crate::delivery::retry::{self, RetryOverrides};

/// A request field that is not acceptable: `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidArgument {
    /// The request field, e.g. `args`.
    pub field: &'static str,
    /// What is wrong with it and what is allowed.
    pub reason: String,
}

impl InvalidArgument {
    /// An error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A submit that passed [`validate_submit`]: every default applied, every limit checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitSpec {
    /// The function to call.
    pub function: FunctionName,
    /// The args, a JSON object (`{}` when the request had none).
    pub args: serde_json::Value,
    /// `args` serialized as JSON; its length is what `limits.max_payload_bytes` caps.
    pub args_json: String,
    /// 0 to 9.
    pub priority: u8,
    /// 1 to `limits.max_attempts`.
    pub max_attempts: u32,
    /// Limit of one attempt, in ms: 1 to `limits.max_timeout_ms`.
    pub timeout_ms: u32,
    /// Delay before the first start, in ms; 0 for none.
    pub delay_ms: u64,
    /// Deduplication key, 1 to `limits.max_idempotency_key_bytes` bytes.
    pub idempotency_key: Option<String>,
    /// Region the task must run in (`legion_common::broker::validate_region`); `None` for any region.
    pub region: Option<String>,
    /// The principal submitting the task; set by the caller after authentication (empty from
    /// [`validate_submit`]). Idempotency keys are scoped to it.
    pub owner: String,
    /// The chain whose run the task starts (name checked by [`validate_submit`], existence by the
    /// caller).
    pub chain: Option<String>,
    /// The chain's current version; set by the caller after looking the chain up.
    pub chain_version: Option<i64>,
    /// The retry policy fields the request sets, each checked ([`retry::check`]); the others take the
    /// `retry.*` settings when the task is written. The API also checks the whole policy against the
    /// settings ([`retry::resolve_overrides`]).
    pub retry: RetryOverrides,
}

/// Checks a `SubmitTask` request and applies its defaults.
///
/// # Errors
/// [`InvalidArgument`] naming the first field at fault.
pub fn validate_submit(req: &SubmitTaskRequest, limits: &Limits) -> Result<SubmitSpec, InvalidArgument> {
    let function = FunctionName::parse(&req.function).map_err(|reason| InvalidArgument::new("function", reason))?;
    if let Some(chain) = &req.chain {
        crate::policy::parse::validate_name("chain", chain).map_err(|e| InvalidArgument::new("chain", e.reason))?;
    }
    let args = match &req.args {
        None => serde_json::Value::Object(serde_json::Map::new()),
        Some(value) => match legion_proto::value_to_json(value) {
            serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
            object @ serde_json::Value::Object(_) => object,
            other => {
                return Err(InvalidArgument::new("args", format!("must be a JSON object, got {}", json_kind(&other))));
            }
        },
    };
    if contains_nul(&args) {
        return Err(InvalidArgument::new(
            "args",
            "strings must not contain NUL (\\u0000), which PostgreSQL cannot store",
        ));
    }
    let depth = json_depth(&args);
    if depth > limits.max_json_depth {
        return Err(InvalidArgument::new(
            "args",
            format!("nested {depth} levels deep, more than limits.max_json_depth ({})", limits.max_json_depth),
        ));
    }
    let args_json = args.to_string();
    if args_json.len() > limits.max_payload_bytes {
        return Err(InvalidArgument::new(
            "args",
            format!("{} bytes exceeds limits.max_payload_bytes ({})", args_json.len(), limits.max_payload_bytes),
        ));
    }
    let priority = u8::try_from(req.priority)
        .ok()
        .filter(|p| *p <= legion_common::broker::MAX_PRIORITY)
        .ok_or_else(|| InvalidArgument::new("priority", format!("must be 0 to 9, got {}", req.priority)))?;
    let max_attempts = req.max_attempts.unwrap_or(1);
    if max_attempts == 0 || max_attempts > limits.max_attempts {
        return Err(InvalidArgument::new(
            "max_attempts",
            format!("must be 1 to {} (limits.max_attempts), got {max_attempts}", limits.max_attempts),
        ));
    }
    let timeout_ms = req.timeout_ms.unwrap_or(limits.default_timeout_ms);
    if timeout_ms == 0 || timeout_ms > limits.max_timeout_ms || i32::try_from(timeout_ms).is_err() {
        return Err(InvalidArgument::new(
            "timeout_ms",
            format!(
                "must be 1 to {} ms (limits.max_timeout_ms), got {timeout_ms}",
                limits.max_timeout_ms.min(i32::MAX as u32)
            ),
        ));
    }
    if req.delay_ms > limits.max_delay_ms {
        return Err(InvalidArgument::new(
            "delay_ms",
            format!("must be at most {} ms (limits.max_delay_ms), got {}", limits.max_delay_ms, req.delay_ms),
        ));
    }
    let idempotency_key = match &req.idempotency_key {
        None => None,
        Some(key) if key.is_empty() => return Err(InvalidArgument::new("idempotency_key", "must not be empty")),
        Some(key) if key.len() > limits.max_idempotency_key_bytes => {
            return Err(InvalidArgument::new(
                "idempotency_key",
                format!(
                    "{} bytes exceeds limits.max_idempotency_key_bytes ({})",
                    key.len(),
                    limits.max_idempotency_key_bytes
                ),
            ));
        }
        Some(key) if key.contains('\0') => {
            return Err(InvalidArgument::new("idempotency_key", "must not contain NUL characters"));
        }
        Some(key) => Some(key.clone()),
    };
    let region = match &req.region {
        None => None,
        Some(region) => {
            legion_common::broker::validate_region(region).map_err(|reason| InvalidArgument::new("region", reason))?;
            Some(region.clone())
        }
    };
    let retry = RetryOverrides::from_proto(req.retry.as_ref());
    retry::check(&retry).map_err(|e| InvalidArgument::new(e.field, e.reason))?;
    Ok(SubmitSpec {
        function,
        args,
        args_json,
        priority,
        max_attempts,
        timeout_ms,
        delay_ms: req.delay_ms,
        idempotency_key,
        region,
        owner: String::new(),
        chain: req.chain.clone(),
        chain_version: None,
        retry,
    })
}

/// Whether any string or key in `value` holds a NUL character (PostgreSQL's JSONB and TEXT refuse it).
pub fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// "a string", "an object", …: the kind of a JSON value, for error messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(function: &str) -> SubmitTaskRequest {
        SubmitTaskRequest { function: function.into(), ..SubmitTaskRequest::default() }
    }

    fn field_of(req: &SubmitTaskRequest) -> &'static str {
        validate_submit(req, &Limits::default()).expect_err("must be rejected").field
    }

    #[test]
    fn defaults_are_applied() {
        let spec = validate_submit(&request("core.util.echo"), &Limits::default()).expect("valid");
        assert_eq!(spec.function.to_string(), "core.util.echo");
        assert_eq!(spec.args, json!({}));
        assert_eq!(spec.args_json, "{}");
        assert_eq!((spec.priority, spec.max_attempts, spec.timeout_ms, spec.delay_ms), (0, 1, 30_000, 0));
        assert_eq!((spec.idempotency_key, spec.region), (None, None));
    }

    #[test]
    fn a_full_request_is_kept() {
        let req = SubmitTaskRequest {
            function: "http.request.get".into(),
            args: Some(legion_proto::json_to_value(&json!({"url": "http://x", "n": 2}))),
            priority: 9,
            max_attempts: Some(25),
            timeout_ms: Some(86_400_000),
            delay_ms: 2_592_000_000,
            idempotency_key: Some("k".repeat(255)),
            region: Some("eu-west_1".into()),
            chain: None,
            retry: None,
        };
        let spec = validate_submit(&req, &Limits::default()).expect("valid");
        assert_eq!(spec.args, json!({"url": "http://x", "n": 2}));
        assert_eq!((spec.priority, spec.max_attempts, spec.timeout_ms), (9, 25, 86_400_000));
        assert_eq!(spec.region.as_deref(), Some("eu-west_1"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = request("core.util.echo");
        let cases: Vec<(SubmitTaskRequest, &str)> = vec![
            (request("core.util"), "function"),
            (request("Core.util.echo"), "function"),
            (SubmitTaskRequest { chain: Some("Bad Name".into()), ..base.clone() }, "chain"),
            (SubmitTaskRequest { chain: Some(String::new()), ..base.clone() }, "chain"),
            (SubmitTaskRequest { args: Some(legion_proto::json_to_value(&json!([1]))), ..base.clone() }, "args"),
            (SubmitTaskRequest { args: Some(legion_proto::json_to_value(&json!("s"))), ..base.clone() }, "args"),
            (
                SubmitTaskRequest { args: Some(legion_proto::json_to_value(&json!({"a": "x\u{0}y"}))), ..base.clone() },
                "args",
            ),
            (SubmitTaskRequest { priority: 10, ..base.clone() }, "priority"),
            (SubmitTaskRequest { max_attempts: Some(0), ..base.clone() }, "max_attempts"),
            (SubmitTaskRequest { max_attempts: Some(26), ..base.clone() }, "max_attempts"),
            (SubmitTaskRequest { timeout_ms: Some(0), ..base.clone() }, "timeout_ms"),
            (SubmitTaskRequest { timeout_ms: Some(86_400_001), ..base.clone() }, "timeout_ms"),
            (SubmitTaskRequest { delay_ms: 2_592_000_001, ..base.clone() }, "delay_ms"),
            (SubmitTaskRequest { idempotency_key: Some(String::new()), ..base.clone() }, "idempotency_key"),
            (SubmitTaskRequest { idempotency_key: Some("k".repeat(256)), ..base.clone() }, "idempotency_key"),
            (SubmitTaskRequest { idempotency_key: Some("a\0b".into()), ..base.clone() }, "idempotency_key"),
            (SubmitTaskRequest { region: Some(String::new()), ..base.clone() }, "region"),
            (SubmitTaskRequest { region: Some("EU".into()), ..base.clone() }, "region"),
            (SubmitTaskRequest { region: Some("eu.west".into()), ..base.clone() }, "region"),
            (SubmitTaskRequest { region: Some("1eu".into()), ..base.clone() }, "region"),
            (SubmitTaskRequest { region: Some("eu#".into()), ..base }, "region"),
        ];
        for (req, field) in cases {
            assert_eq!(field_of(&req), field, "{req:?}");
        }
    }

    #[test]
    fn messages_start_with_the_field_and_give_the_limit() {
        let limits = Limits { max_payload_bytes: 16, ..Limits::default() };
        let req = SubmitTaskRequest {
            args: Some(legion_proto::json_to_value(&json!({"message": "hello world"}))),
            ..request("core.util.echo")
        };
        let err = validate_submit(&req, &limits).expect_err("too large");
        assert_eq!(err.to_string(), "args: 25 bytes exceeds limits.max_payload_bytes (16)");
        let err = validate_submit(&SubmitTaskRequest { priority: 12, ..request("core.util.echo") }, &limits)
            .expect_err("priority");
        assert_eq!(err.to_string(), "priority: must be 0 to 9, got 12");
    }

    /// `{"a":{"a":…{"a":1}…}}`, `levels` deep.
    fn nested_args(levels: usize) -> serde_json::Value {
        (1..levels).fold(json!({"a": 1}), |inner, _| json!({"a": inner}))
    }

    #[test]
    fn args_nested_deeper_than_the_limit_are_refused() {
        let req = |levels| SubmitTaskRequest {
            args: Some(legion_proto::json_to_value(&nested_args(levels))),
            ..request("core.util.echo")
        };
        let err = validate_submit(&req(33), &Limits::default()).expect_err("too deep");
        assert_eq!(err.to_string(), "args: nested 33 levels deep, more than limits.max_json_depth (32)");
        validate_submit(&req(32), &Limits::default()).expect("at the limit");
        let limits = Limits { max_json_depth: 3, ..Limits::default() };
        let err = validate_submit(&req(5), &limits).expect_err("too deep");
        assert_eq!(err.to_string(), "args: nested 5 levels deep, more than limits.max_json_depth (3)");
    }

    #[test]
    fn null_args_count_as_absent() {
        let req = SubmitTaskRequest {
            args: Some(legion_proto::json_to_value(&serde_json::Value::Null)),
            ..request("core.util.echo")
        };
        assert_eq!(validate_submit(&req, &Limits::default()).expect("valid").args, json!({}));
    }

    #[test]
    fn retry_fields_are_checked_one_by_one() {
        let with = |retry: legion_proto::v1::RetryPolicy| SubmitTaskRequest { retry: Some(retry), ..request("x.y.z") };
        let spec = validate_submit(
            &with(legion_proto::v1::RetryPolicy { initial_backoff_ms: Some(5), ..Default::default() }),
            &Limits::default(),
        )
        .expect("valid");
        assert_eq!(spec.retry, RetryOverrides { initial_backoff_ms: Some(5), ..RetryOverrides::default() });
        assert!(validate_submit(&request("x.y.z"), &Limits::default()).expect("valid").retry.is_empty());
        let cases = [
            (legion_proto::v1::RetryPolicy { multiplier: Some(11.0), ..Default::default() }, "retry.multiplier"),
            (legion_proto::v1::RetryPolicy { jitter: Some(-1.0), ..Default::default() }, "retry.jitter"),
            (
                legion_proto::v1::RetryPolicy { max_backoff_ms: Some(u64::MAX), ..Default::default() },
                "retry.max_backoff_ms",
            ),
            (
                legion_proto::v1::RetryPolicy {
                    initial_backoff_ms: Some(2),
                    max_backoff_ms: Some(1),
                    ..Default::default()
                },
                "retry.initial_backoff_ms",
            ),
        ];
        for (retry, field) in cases {
            assert_eq!(field_of(&with(retry)), field, "{retry:?}");
        }
    }

    #[test]
    fn nul_is_found_at_any_depth() {
        assert!(contains_nul(&json!({"a": [{"b": "\u{0}"}]})));
        assert!(contains_nul(&json!({"k\u{0}": 1})));
        assert!(!contains_nul(&json!({"a": [1, "two", null, {"b": true}]})));
    }
}
