//! `legion.v1.ConfigService`: the effective settings, redacted, and run-time changes of `limits`
//! ([`crate::config`]).

use std::sync::Arc;

use legion_common::Settings;
use legion_common::settings::{Limits, redact};
use legion_proto::v1;
use legion_proto::v1::config_service_server::ConfigService;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::{invalid, store_status};
use crate::auth::Auth;
use crate::config::{LIVE_SECTIONS, READ_ONLY_SECTIONS, patched_limits};
use crate::policy::Capability;

/// The config API.
pub struct ConfigApi {
    auth: Auth,
    base: Arc<Settings>,
    limits: watch::Sender<Limits>,
}

impl ConfigApi {
    /// The service over the settings the process started with (`base`) and the live `limits`.
    pub fn new(auth: Auth, base: Settings, limits: watch::Sender<Limits>) -> Self {
        Self { auth, base: Arc::new(base), limits }
    }

    /// The effective settings, redacted.
    fn effective(&self) -> serde_json::Value {
        let mut settings = (*self.base).clone();
        settings.limits = self.limits.borrow().clone();
        settings.redacted()
    }
}

fn to_struct(value: serde_json::Value) -> prost_types::Struct {
    match legion_proto::json_to_value(&value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn get_config(
        &self,
        request: Request<v1::GetConfigRequest>,
    ) -> Result<Response<v1::GetConfigResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let serde_json::Value::Object(all) = self.effective() else {
            return Err(Status::internal("settings are not an object"));
        };
        // Each section is shown if the caller may read `config/<section>`; one audited decision for the
        // document as a whole (`config/`), the sections filtered without a record each.
        let mut shown = serde_json::Map::new();
        for (section, value) in all {
            if self.auth.allows(&caller, &format!("config/{section}"), Capability::Read).await? {
                shown.insert(section, value);
            }
        }
        if shown.is_empty() {
            self.auth.check(&caller, "config/", Capability::Read).await?;
        } else {
            self.auth
                .record_change(
                    &caller,
                    "config.read",
                    "config/",
                    serde_json::json!({"sections": shown.keys().collect::<Vec<_>>()}),
                )
                .await?;
        }
        Ok(Response::new(v1::GetConfigResponse { settings: Some(to_struct(serde_json::Value::Object(shown))) }))
    }

    async fn update_config(
        &self,
        request: Request<v1::UpdateConfigRequest>,
    ) -> Result<Response<v1::UpdateConfigResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let section = request.get_ref().section.clone();
        let Some(patch) = request.get_ref().patch.as_ref() else {
            return Err(invalid("patch", "required: a JSON merge patch of the section"));
        };
        let patch = legion_proto::value_to_json(&prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(patch.clone())),
        });
        let path = format!("config/{section}");
        if READ_ONLY_SECTIONS.contains(&section.as_str()) {
            let reason = format!("section: {section} is read-only through the API; change the settings files");
            self.auth.record_denial(&caller, &path, Capability::Update, &reason).await?;
            return Err(Status::permission_denied(reason));
        }
        if !LIVE_SECTIONS.contains(&section.as_str()) {
            let known = serde_json::to_value(&*self.base).ok().and_then(|v| v.get(&section).cloned()).is_some();
            if !known {
                return Err(invalid("section", format!("no settings section {section:?}")));
            }
            return Err(Status::failed_precondition(format!(
                "section: {section} is read at start only; change the settings files and restart (run-time sections: {})",
                LIVE_SECTIONS.join(", ")
            )));
        }
        self.auth.check(&caller, &path, Capability::Update).await?;
        let current = self.limits.borrow().clone();
        let new = patched_limits(&self.base, &current, &patch).map_err(|e| invalid(&e.field, e.reason))?;
        // What is stored is the whole section relative to the settings files, so replicas converge.
        let value = serde_json::to_value(&new).map_err(|e| Status::internal(e.to_string()))?;
        self.auth.store().put_config_override(&section, &value, &caller.principal).await.map_err(store_status)?;
        self.limits.send_replace(new);
        let mut shown = value.clone();
        redact(&mut shown);
        self.auth.record_change(&caller, "config.update", &path, serde_json::json!({"patch": patch})).await?;
        tracing::info!(section, principal = %caller.principal, "settings section changed through the API");
        Ok(Response::new(v1::UpdateConfigResponse { section: Some(to_struct(shown)) }))
    }
}
