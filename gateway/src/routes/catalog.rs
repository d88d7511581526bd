//! `/api/v1/extensions` and `/api/v1/nodes`: the extension catalog and the node registry (executors,
//! control-plane replicas and the scheduler lease).

use axum::Json;
use axum::extract::{Path, State};
use legion_proto::v1;

use crate::client::CallMeta;
use crate::problem::Problem;
use crate::state::AppState;
use crate::view::{Extension, ExtensionList, NodeList};

/// Lists the extensions of the catalog with their state on each node.
#[utoipa::path(
    get,
    path = "/api/v1/extensions",
    tag = "catalog",
    responses(
        (status = 200, description = "The catalog", body = ExtensionList),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_extensions(State(state): State<AppState>, meta: CallMeta) -> Result<Json<ExtensionList>, Problem> {
    let response =
        state.catalog.clone().list_extensions(meta.request(v1::ListExtensionsRequest {})).await?.into_inner();
    let extensions = response.extensions.iter().map(Extension::try_from).collect::<Result<_, _>>()?;
    Ok(Json(ExtensionList { extensions }))
}

/// Disables an extension: it accepts no new tasks until enabled again.
#[utoipa::path(
    post,
    path = "/api/v1/extensions/{name}/disable",
    tag = "catalog",
    params(("name" = String, Path, description = "Extension name, e.g. `http`")),
    responses(
        (status = 200, description = "The extension", body = Extension),
        (status = 404, description = "No such extension", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn disable_extension(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<Json<Extension>, Problem> {
    let request = meta.request(v1::SetExtensionDisabledRequest { name });
    let extension = state.catalog.clone().disable_extension(request).await?.into_inner();
    Ok(Json(Extension::try_from(&extension)?))
}

/// Enables a disabled extension.
#[utoipa::path(
    post,
    path = "/api/v1/extensions/{name}/enable",
    tag = "catalog",
    params(("name" = String, Path, description = "Extension name, e.g. `http`")),
    responses(
        (status = 200, description = "The extension", body = Extension),
        (status = 404, description = "No such extension", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn enable_extension(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<Json<Extension>, Problem> {
    let request = meta.request(v1::SetExtensionDisabledRequest { name });
    let extension = state.catalog.clone().enable_extension(request).await?.into_inner();
    Ok(Json(Extension::try_from(&extension)?))
}

/// Lists the executor nodes with their status and loaded extensions, the control-plane replicas (which
/// one leads: holds the scheduler lease and fires the schedules) and the scheduler lease itself.
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    tag = "catalog",
    responses(
        (status = 200, description = "The node registry", body = NodeList),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_nodes(State(state): State<AppState>, meta: CallMeta) -> Result<Json<NodeList>, Problem> {
    let response = state.catalog.clone().list_nodes(meta.request(v1::ListNodesRequest {})).await?.into_inner();
    Ok(Json(NodeList::try_from(&response)?))
}
