//! The `retry` member of a task submit, a relationship and a schedule: how failed attempts are retried
//! (tasks.proto `RetryPolicy`). Absent members take the `retry.*` settings when the task is created; the
//! control plane checks the ranges (`retry.<field>` named in its error).

use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A retry policy. After failed attempt n (1-based) the task waits
/// `min(max_backoff_ms, initial_backoff_ms * multiplier^(n-1)) * (1 - jitter * u)` ms, u uniform in
/// [0, 1), as `scheduled`; a permanent error is never retried. Unknown members are refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt, in ms; 0 retries at once. At most `max_backoff_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 1000)]
    pub initial_backoff_ms: Option<u64>,
    /// Growth factor of the wait, 1.0 to 10.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 2.0)]
    pub multiplier: Option<f64>,
    /// Longest wait, in ms; at most 86400000 (24 h).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 60000)]
    pub max_backoff_ms: Option<u64>,
    /// Random fraction of each wait, 0.0 to 1.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.2)]
    pub jitter: Option<f64>,
}

impl RetryPolicy {
    /// The members a retry policy accepts, in documentation order.
    pub const FIELDS: &'static [&'static str] = &["initial_backoff_ms", "multiplier", "max_backoff_ms", "jitter"];

    /// The protobuf message.
    pub fn into_proto(self) -> v1::RetryPolicy {
        v1::RetryPolicy {
            initial_backoff_ms: self.initial_backoff_ms,
            multiplier: self.multiplier,
            max_backoff_ms: self.max_backoff_ms,
            jitter: self.jitter,
        }
    }

    /// The REST shape of a protobuf policy (absent fields stay absent).
    pub fn from_proto(policy: &v1::RetryPolicy) -> Self {
        Self {
            initial_backoff_ms: policy.initial_backoff_ms,
            multiplier: policy.multiplier,
            max_backoff_ms: policy.max_backoff_ms,
            jitter: policy.jitter,
        }
    }
}

/// A policy is a JSON object (unknown members refused by name). Written by hand because serde's derive
/// would also bind an array to the fields by position, which is not a documented shape; map keys and
/// values go through the deserializer's map access, so `serde_path_to_error` still names
/// `retry.<field>` in errors.
impl<'de> Deserialize<'de> for RetryPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RetryPolicy;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with initial_backoff_ms, multiplier, max_backoff_ms or jitter")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RetryPolicy, A::Error> {
                let mut policy = RetryPolicy::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "initial_backoff_ms" => policy.initial_backoff_ms = map.next_value()?,
                        "multiplier" => policy.multiplier = map.next_value()?,
                        "max_backoff_ms" => policy.max_backoff_ms = map.next_value()?,
                        "jitter" => policy.jitter = map.next_value()?,
                        other => return Err(serde::de::Error::unknown_field(other, RetryPolicy::FIELDS)),
                    }
                }
                Ok(policy)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default)]
        retry: Option<RetryPolicy>,
    }

    #[test]
    fn only_an_object_or_null_is_a_policy() {
        let parse = |text: &str| serde_json::from_str::<Body>(text).map(|b| b.retry).map_err(|e| e.to_string());
        assert_eq!(parse("{}"), Ok(None));
        assert_eq!(parse(r#"{"retry": null}"#), Ok(None));
        assert_eq!(
            parse(r#"{"retry": {"jitter": 0.5}}"#),
            Ok(Some(RetryPolicy { jitter: Some(0.5), ..RetryPolicy::default() }))
        );
        for bad in [r#"{"retry": [7, 3.5, 90000, 0.5]}"#, r#"{"retry": []}"#, r#"{"retry": 5}"#] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("invalid type") && err.contains("expected an object"), "{bad}: {err}");
        }
        let err = parse(r#"{"retry": {"tries": 3}}"#).expect_err("unknown member");
        assert!(err.contains("unknown field `tries`"), "{err}");
    }

    #[test]
    fn unset_fields_are_left_out_of_the_json() {
        let policy = RetryPolicy { initial_backoff_ms: Some(500), ..RetryPolicy::default() };
        assert_eq!(serde_json::to_value(policy).expect("json"), serde_json::json!({"initial_backoff_ms": 500}));
    }

    #[test]
    fn a_policy_round_trips_through_protobuf() {
        let body =
            RetryPolicy { initial_backoff_ms: Some(5), multiplier: Some(1.5), max_backoff_ms: None, jitter: Some(0.0) };
        assert_eq!(RetryPolicy::from_proto(&body.clone().into_proto()), body);
        assert_eq!(RetryPolicy::default().into_proto(), v1::RetryPolicy::default());
    }
}
