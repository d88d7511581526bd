//! The `retry` member of a task submit, a relationship and a schedule: how failed attempts are retried
//! (tasks.proto `RetryPolicy`). Absent members take the `retry.*` settings when the task is created; the
//! control plane checks the ranges (`retry.<field>` named in its error).

use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A retry policy. After failed attempt n (1-based) the task waits
/// `min(max_backoff_ms, initial_backoff_ms * multiplier^(n-1)) * (1 - jitter * u)` ms, u uniform in
/// [0, 1), as `scheduled`; a permanent error is never retried. Unknown members are refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt, in ms; 0 retries at once. At most `max_backoff_ms`.
    #[serde(default)]
    #[schema(example = 1000)]
    pub initial_backoff_ms: Option<u64>,
    /// Growth factor of the wait, 1.0 to 10.0.
    #[serde(default)]
    #[schema(example = 2.0)]
    pub multiplier: Option<f64>,
    /// Longest wait, in ms; at most 86400000 (24 h).
    #[serde(default)]
    #[schema(example = 60000)]
    pub max_backoff_ms: Option<u64>,
    /// Random fraction of each wait, 0.0 to 1.0.
    #[serde(default)]
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

    /// The REST shape of a protobuf policy (absent fields stay null).
    pub fn from_proto(policy: &v1::RetryPolicy) -> Self {
        Self {
            initial_backoff_ms: policy.initial_backoff_ms,
            multiplier: policy.multiplier,
            max_backoff_ms: policy.max_backoff_ms,
            jitter: policy.jitter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_round_trips_through_protobuf() {
        let body =
            RetryPolicy { initial_backoff_ms: Some(5), multiplier: Some(1.5), max_backoff_ms: None, jitter: Some(0.0) };
        assert_eq!(RetryPolicy::from_proto(&body.clone().into_proto()), body);
        assert_eq!(RetryPolicy::default().into_proto(), v1::RetryPolicy::default());
    }
}
