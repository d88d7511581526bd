//! The effective settings as the API shows and changes them (DESIGN.md section 3).
//!
//! `GET /api/v1/config` shows the settings with every secret replaced by `"[REDACTED]"`
//! ([`legion_common::settings::redact`]). The sections `crypt`, `tls`, `auth`, `rbac`, `transport` and
//! `data` are read-only through the API; of the others, `limits` can change at run time: a change is a
//! JSON merge patch (RFC 7396) of the section, validated like a settings file, stored in
//! `config_overrides`, applied at once on this replica and within [`OVERRIDE_POLL`] on the others, and
//! applied over the settings files at every start. The other sections are read at start only, so
//! changing them through the API is refused rather than silently ignored.

use std::sync::Arc;
use std::time::Duration;

use legion_common::Settings;
use legion_common::settings::Limits;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::security::SecurityStore;

/// Sections never changed through the API.
pub const READ_ONLY_SECTIONS: &[&str] = &["crypt", "tls", "auth", "rbac", "transport", "data"];

/// Sections that change at run time through the API.
pub const LIVE_SECTIONS: &[&str] = &["limits"];

/// How often a replica reads the sections changed through the API on any replica.
pub const OVERRIDE_POLL: Duration = Duration::from_secs(5);

/// The placeholder of a redacted value.
pub const REDACTED: &str = "[REDACTED]";

/// A refused change: the field (`patch.max_attempts`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// Applies `patch` to `current` as a JSON merge patch (RFC 7396): objects merge key by key, `null`
/// removes a key (which then takes its default), anything else replaces. A `"[REDACTED]"` string
/// anywhere in the patch is refused, so a redacted value read from the API is never written back.
///
/// # Errors
/// [`Invalid`] naming `patch.<key…>`.
pub fn merge_patch(current: &serde_json::Value, patch: &serde_json::Value) -> Result<serde_json::Value, Invalid> {
    refuse_redacted(patch, "patch")?;
    if !patch.is_object() {
        return Err(Invalid { field: "patch".into(), reason: "must be a JSON object".into() });
    }
    let mut merged = current.clone();
    apply(&mut merged, patch);
    Ok(merged)
}

fn refuse_redacted(value: &serde_json::Value, field: &str) -> Result<(), Invalid> {
    match value {
        serde_json::Value::String(s) if s == REDACTED => Err(Invalid {
            field: field.into(),
            reason: "\"[REDACTED]\" is a placeholder for a secret, not a value".into(),
        }),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| refuse_redacted(v, &format!("{field}.{k}"))),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, v)| refuse_redacted(v, &format!("{field}[{i}]")))
        }
        _ => Ok(()),
    }
}

fn apply(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    if let serde_json::Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                apply(map.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
    }
}

/// The `limits` section after `patch`, validated as settings are at start (with `base` for the rest).
///
/// # Errors
/// [`Invalid`] naming the field.
pub fn patched_limits(base: &Settings, current: &Limits, patch: &serde_json::Value) -> Result<Limits, Invalid> {
    let current =
        serde_json::to_value(current).map_err(|e| Invalid { field: "patch".into(), reason: e.to_string() })?;
    let merged = merge_patch(&current, patch)?;
    let limits: Limits = serde_path_to_error::deserialize(merged)
        .map_err(|e| Invalid { field: format!("patch.{}", e.path()), reason: e.inner().to_string() })?;
    let mut settings = base.clone();
    settings.limits = limits.clone();
    settings.validate().map_err(|e| Invalid { field: "patch".into(), reason: e.to_string() })?;
    crate::check_settings_limits(&settings).map_err(|e| Invalid { field: "patch".into(), reason: e.to_string() })?;
    Ok(limits)
}

/// Reads the overrides stored by any replica every [`OVERRIDE_POLL`] and publishes changed limits,
/// until `shutdown`.
pub async fn poll_overrides(
    store: Arc<dyn SecurityStore>,
    base: Settings,
    limits: watch::Sender<Limits>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(OVERRIDE_POLL) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = apply_overrides(store.as_ref(), &base, &limits).await {
            tracing::warn!(error = %e, "cannot read settings overrides");
        }
    }
}

/// Applies the stored overrides once (at start, and from [`poll_overrides`]).
///
/// # Errors
/// When the database cannot be read. A stored override that no longer validates is logged and skipped.
pub async fn apply_overrides(
    store: &dyn SecurityStore,
    base: &Settings,
    limits: &watch::Sender<Limits>,
) -> Result<(), crate::store::Error> {
    for (section, value) in store.config_overrides().await? {
        if section != "limits" {
            continue;
        }
        match patched_limits(base, &base.limits, &value) {
            Ok(new) => {
                limits.send_if_modified(|current| {
                    let changed = serde_json::to_value(&*current).ok() != serde_json::to_value(&new).ok();
                    if changed {
                        tracing::info!("limits changed through the API applied");
                        *current = new.clone();
                    }
                    changed
                });
            }
            Err(e) => tracing::error!(section, error = %e, "stored settings override is invalid; ignored"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let current = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}});
        let merged = merge_patch(&current, &serde_json::json!({"a": 5, "b": {"c": null, "e": 4}})).expect("patch");
        assert_eq!(merged, serde_json::json!({"a": 5, "b": {"d": 3, "e": 4}}));
        assert_eq!(merge_patch(&current, &serde_json::json!([1])).expect_err("not an object").field, "patch");
    }

    #[test]
    fn a_redacted_value_is_never_written_back() {
        let current = serde_json::json!({"a": 1});
        let err = merge_patch(&current, &serde_json::json!({"x": {"y": ["ok", "[REDACTED]"]}})).expect_err("redacted");
        assert_eq!(err.field, "patch.x.y[1]");
    }

    #[test]
    fn limits_patches_are_validated_and_name_the_field() {
        let base = Settings::default();
        let limits =
            patched_limits(&base, &base.limits, &serde_json::json!({"max_attempts": 7})).expect("valid change");
        assert_eq!(limits.max_attempts, 7);
        assert_eq!(limits.max_payload_bytes, base.limits.max_payload_bytes);
        let err = patched_limits(&base, &base.limits, &serde_json::json!({"max_attempts": "x"})).expect_err("type");
        assert_eq!(err.field, "patch.max_attempts");
        let err = patched_limits(&base, &base.limits, &serde_json::json!({"nope": 1})).expect_err("unknown");
        assert!(err.reason.contains("nope"), "{err}");
        let err = patched_limits(&base, &base.limits, &serde_json::json!({"max_attempts": 0})).expect_err("range");
        assert!(err.reason.contains("limits.max_attempts"), "{err}");
    }
}
