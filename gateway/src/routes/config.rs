//! `/api/v1/config`: the control plane's effective settings, secrets redacted (DESIGN.md section 3).

use axum::Json;
use axum::extract::{Path, State};
use legion_proto::v1;

use crate::body::JsonBody;
use crate::client::CallMeta;
use crate::input::config_patch;
use crate::problem::Problem;
use crate::state::AppState;
use crate::view::struct_to_json;

/// The effective settings: each section the caller may read (`read` on `config/<section>`), with every
/// value under a key containing `password`, `token`, `secret`, `key`, `credential` or `private`
/// replaced by `"[REDACTED]"`.
#[utoipa::path(
    get,
    path = "/api/v1/config",
    tag = "config",
    responses(
        (status = 200, description = "The settings, by section", content_type = "application/json", body = Object),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_config(State(state): State<AppState>, meta: CallMeta) -> Result<Json<serde_json::Value>, Problem> {
    let response = state.config.clone().get_config(meta.request(v1::GetConfigRequest {})).await?.into_inner();
    Ok(Json(response.settings.as_ref().map_or_else(|| serde_json::json!({}), struct_to_json)))
}

/// Changes keys of a writable section (`limits`, `logging`) with a JSON merge patch (RFC 7396): members
/// set keys, `null` members remove them. The sections `crypt`, `tls`, `auth`, `rbac`, `transport` and
/// `data` are read-only (403).
#[utoipa::path(
    patch,
    path = "/api/v1/config/{section}",
    tag = "config",
    params(("section" = String, Path, description = "Settings section, e.g. `limits`")),
    request_body(
        description = "A JSON merge patch of the section",
        content((Object = "application/merge-patch+json"), (Object = "application/json"))
    ),
    responses(
        (status = 200, description = "The section after the change, redacted", content_type = "application/json", body = Object),
        (status = 400, description = "Not a JSON object, or an invalid value (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such section", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn patch_config(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(section): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<serde_json::Value>, Problem> {
    let patch = Some(config_patch(&body)?);
    let request = meta.request(v1::UpdateConfigRequest { section, patch });
    let response = state.config.clone().update_config(request).await?.into_inner();
    Ok(Json(response.section.as_ref().map_or_else(|| serde_json::json!({}), struct_to_json)))
}
