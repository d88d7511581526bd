//! Retry policies (DESIGN.md section 5, item 5; the `retry.*` settings; `legion.v1.RetryPolicy`), as
//! pure functions.
//!
//! A submit, a relationship or a schedule may set any field of a policy ([`RetryOverrides`]); the unset
//! fields take the `retry.*` settings when the task is written, and the task keeps the whole
//! [`RetryPolicy`] it was given (`tasks.retry`), so a later change of settings does not alter it.
//!
//! After failed attempt `n` (1-based) the task waits [`wait`] = `min(max_backoff_ms, initial_backoff_ms ·
//! multiplier^(n−1)) · (1 − jitter · u)`, `u` uniform in [0, 1): exponential backoff with jitter
//! (`jitter = 1` is the "full jitter" of the AWS Architecture Blog's "Exponential Backoff And Jitter").

use std::time::Duration;

use legion_common::settings::{MAX_BACKOFF_CEILING_MS, RetrySettings};
use legion_proto::v1;
use serde::{Deserialize, Serialize};

/// A retry policy field that is not acceptable: `retry.<field>: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// `retry.initial_backoff_ms`, `retry.multiplier`, `retry.max_backoff_ms` or `retry.jitter`.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl FieldError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A task's retry policy, every field set, as stored in `tasks.retry` (JSONB).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt, in ms; 0 retries at once. At most `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    /// Growth factor of the wait, 1.0 to 10.0.
    pub multiplier: f64,
    /// Longest wait, in ms; at most [`MAX_BACKOFF_CEILING_MS`].
    pub max_backoff_ms: u64,
    /// Random fraction of each wait, 0.0 to 1.0.
    pub jitter: f64,
}

impl From<&RetrySettings> for RetryPolicy {
    fn from(settings: &RetrySettings) -> Self {
        Self {
            initial_backoff_ms: settings.initial_backoff_ms,
            multiplier: settings.multiplier,
            max_backoff_ms: settings.max_backoff_ms,
            jitter: settings.jitter,
        }
    }
}

impl RetryPolicy {
    /// The policy as `legion.v1.RetryPolicy`, every field set.
    pub fn to_proto(&self) -> v1::RetryPolicy {
        v1::RetryPolicy {
            initial_backoff_ms: Some(self.initial_backoff_ms),
            multiplier: Some(self.multiplier),
            max_backoff_ms: Some(self.max_backoff_ms),
            jitter: Some(self.jitter),
        }
    }
}

/// The fields of a policy that a submit, relationship or schedule sets; `None` takes the setting.
/// Stored as is in a chain version's definition (`relationships[].retry`) and in `schedules.retry`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryOverrides {
    /// See [`RetryPolicy::initial_backoff_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_backoff_ms: Option<u64>,
    /// See [`RetryPolicy::multiplier`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// See [`RetryPolicy::max_backoff_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// See [`RetryPolicy::jitter`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

impl RetryOverrides {
    /// The fields set in a request's `retry` (none for an unset message).
    pub fn from_proto(request: Option<&v1::RetryPolicy>) -> Self {
        request.map_or_else(Self::default, |r| Self {
            initial_backoff_ms: r.initial_backoff_ms,
            multiplier: r.multiplier,
            max_backoff_ms: r.max_backoff_ms,
            jitter: r.jitter,
        })
    }

    /// As `legion.v1.RetryPolicy` with only the set fields; `None` when no field is set.
    pub fn to_proto(&self) -> Option<v1::RetryPolicy> {
        (!self.is_empty()).then_some(v1::RetryPolicy {
            initial_backoff_ms: self.initial_backoff_ms,
            multiplier: self.multiplier,
            max_backoff_ms: self.max_backoff_ms,
            jitter: self.jitter,
        })
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Checks each set field on its own (ranges, NaN and infinities refused) and, when both are set,
/// `initial_backoff_ms <= max_backoff_ms`. Needs no settings: used when a relationship or schedule is
/// stored, whose tasks take the settings only when they are created ([`merge`]).
///
/// # Errors
/// [`FieldError`] naming the first field at fault.
pub fn check(overrides: &RetryOverrides) -> Result<(), FieldError> {
    if let Some(max) = overrides.max_backoff_ms
        && max > MAX_BACKOFF_CEILING_MS
    {
        return Err(FieldError::new(
            "retry.max_backoff_ms",
            format!("must be at most {MAX_BACKOFF_CEILING_MS} ms (24 h), got {max}"),
        ));
    }
    if let Some(m) = overrides.multiplier
        && !(1.0..=10.0).contains(&m)
    {
        return Err(FieldError::new("retry.multiplier", format!("must be a number from 1.0 to 10.0, got {m:?}")));
    }
    if let Some(j) = overrides.jitter
        && !(0.0..=1.0).contains(&j)
    {
        return Err(FieldError::new("retry.jitter", format!("must be a number from 0.0 to 1.0, got {j:?}")));
    }
    if let (Some(initial), Some(max)) = (overrides.initial_backoff_ms, overrides.max_backoff_ms)
        && initial > max
    {
        return Err(FieldError::new(
            "retry.initial_backoff_ms",
            format!("must be at most retry.max_backoff_ms ({max}), got {initial}"),
        ));
    }
    Ok(())
}

/// The policy of a request: its set fields, checked ([`check`]), the others from `defaults`, and the
/// result's `initial_backoff_ms` at most its `max_backoff_ms` (one of them may come from the settings).
///
/// # Errors
/// [`FieldError`] naming the first field at fault (`retry.initial_backoff_ms`, `retry.multiplier`,
/// `retry.max_backoff_ms`, `retry.jitter`).
pub fn resolve(request: Option<&v1::RetryPolicy>, defaults: &RetrySettings) -> Result<RetryPolicy, FieldError> {
    resolve_overrides(&RetryOverrides::from_proto(request), defaults)
}

/// [`resolve`] for fields already taken from a request.
///
/// # Errors
/// As [`resolve`].
pub fn resolve_overrides(overrides: &RetryOverrides, defaults: &RetrySettings) -> Result<RetryPolicy, FieldError> {
    check(overrides)?;
    let policy = fill(overrides, defaults);
    if policy.initial_backoff_ms > policy.max_backoff_ms {
        return Err(match overrides.initial_backoff_ms {
            Some(initial) => FieldError::new(
                "retry.initial_backoff_ms",
                format!("must be at most retry.max_backoff_ms ({}), got {initial}", policy.max_backoff_ms),
            ),
            None => FieldError::new(
                "retry.max_backoff_ms",
                format!(
                    "must be at least retry.initial_backoff_ms ({}), got {}",
                    policy.initial_backoff_ms, policy.max_backoff_ms
                ),
            ),
        });
    }
    Ok(policy)
}

/// The policy a task of a relationship or schedule gets when it is created: the stored fields (checked
/// when they were stored) over `defaults`. Settings may have changed since, so a combination that
/// [`resolve`] would refuse is repaired instead of failing the task: `initial_backoff_ms` is capped at
/// `max_backoff_ms`.
pub fn merge(overrides: &RetryOverrides, defaults: &RetrySettings) -> RetryPolicy {
    let mut policy = fill(overrides, defaults);
    policy.initial_backoff_ms = policy.initial_backoff_ms.min(policy.max_backoff_ms);
    policy
}

fn fill(overrides: &RetryOverrides, defaults: &RetrySettings) -> RetryPolicy {
    RetryPolicy {
        initial_backoff_ms: overrides.initial_backoff_ms.unwrap_or(defaults.initial_backoff_ms),
        multiplier: overrides.multiplier.unwrap_or(defaults.multiplier),
        max_backoff_ms: overrides.max_backoff_ms.unwrap_or(defaults.max_backoff_ms),
        jitter: overrides.jitter.unwrap_or(defaults.jitter),
    }
}

/// The wait after failed attempt `failures` (1-based; 0 counts as 1) with the random draw `u` in
/// [0, 1) (clamped there; a non-finite draw counts as 0): `min(max_backoff_ms, initial_backoff_ms ·
/// multiplier^(failures−1)) · (1 − jitter · u)`, whole milliseconds, saturating (never more than
/// `max_backoff_ms`, never negative, whatever the inputs).
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn wait(policy: &RetryPolicy, failures: u32, u: f64) -> Duration {
    if policy.initial_backoff_ms == 0 {
        return Duration::ZERO;
    }
    let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
    let multiplier = if policy.multiplier.is_finite() { policy.multiplier.max(1.0) } else { 1.0 };
    let max = policy.max_backoff_ms as f64;
    // `powi` overflows to +inf, which `min` turns into the maximum.
    let grown = (policy.initial_backoff_ms as f64 * multiplier.powi(exponent)).min(max);
    let u = if u.is_finite() { u.clamp(0.0, 1.0) } else { 0.0 };
    let jitter = if policy.jitter.is_finite() { policy.jitter.clamp(0.0, 1.0) } else { 0.0 };
    let ms = (grown * (1.0 - jitter * u)).clamp(0.0, max);
    // `as` saturates; `ms` is within [0, max_backoff_ms].
    Duration::from_millis(ms as u64)
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
