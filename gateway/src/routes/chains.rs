//! `/api/v1/chains`: create or replace, list, get and delete chains (DESIGN.md sections 4 and 7,
//! `legion.v1.ChainService`). A chain run starts with `POST /api/v1/tasks` and `"chain": "<name>"`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use legion_proto::v1;

use crate::body::JsonBody;
use crate::client::CallMeta;
use crate::input::{ChainBody, ListChainsQuery};
use crate::problem::Problem;
use crate::routes::tasks::missing;
use crate::state::AppState;
use crate::view::{Chain, ChainPage};

/// Response header of `POST /api/v1/chains` (201 and 200): `true` when the apply wrote a new version
/// (always on 201), `false` when the chain already had this definition and kept its version
/// (`ApplyChainResponse.changed`).
pub const CHAIN_CHANGED_HEADER: HeaderName = HeaderName::from_static("legion-chain-changed");

/// Creates a chain, or replaces its definition with a new version (capability `create` when new,
/// `update` otherwise, on `chains/<name>`, and `execute` on `runners/<extension>/<runner>/<function>`
/// of every action). Applying the definition a chain already has keeps its version; the header
/// `Legion-Chain-Changed` tells whether a version was written. Runs in flight stay on the version they
/// started with. A document exported from `GET /api/v1/chains/{name}` applies as is: its output-only
/// members are ignored.
#[utoipa::path(
    post,
    path = "/api/v1/chains",
    tag = "chains",
    request_body(content = ChainBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The chain was created", body = Chain,
            headers(
                ("location" = String, description = "/api/v1/chains/{name}"),
                ("Legion-Chain-Changed" = bool, description = "`true`: the chain was created, its first version written"),
            )),
        (status = 200, description = "The chain existed; its definition was replaced (a new version) or was already this one (same version)", body = Chain,
            headers(
                ("Legion-Chain-Changed" = bool, description = "`true` when the definition was replaced (a new version was written), `false` when the chain already had this definition (same version, nothing written)"),
            )),
        (status = 400, description = "Malformed body, or an invalid name, condition, transformation or limit, or a trigger or action not in the catalog (the field is named in detail, e.g. `relationships[2].conditions.all[0].operator: unknown operator \"equals\"`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than api.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn apply_chain(
    State(state): State<AppState>,
    meta: CallMeta,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let request = ChainBody::parse(&body)?.into_request();
    let response = state.chains.clone().apply_chain(meta.request(request)).await?.into_inner();
    let chain = Chain::from(response.chain.as_ref().ok_or_else(|| missing("ApplyChainResponse.chain"))?);
    // A creation writes a first version whatever `changed` says.
    let changed = HeaderValue::from_static(if response.created || response.changed { "true" } else { "false" });
    if !response.created {
        let mut reply = Json(chain).into_response();
        reply.headers_mut().insert(CHAIN_CHANGED_HEADER, changed);
        return Ok(reply);
    }
    let location = HeaderValue::from_str(&format!("/api/v1/chains/{}", chain.name)).ok();
    let mut reply = (StatusCode::CREATED, Json(chain)).into_response();
    reply.headers_mut().insert(CHAIN_CHANGED_HEADER, changed);
    if let Some(location) = location {
        reply.headers_mut().insert(header::LOCATION, location);
    }
    Ok(reply)
}

/// Lists chains by name, one page at a time (capability `list` on `chains/`); chains the caller may not
/// `read` are left out, so a page may hold fewer than `limit`, or none, and still carry a token.
#[utoipa::path(
    get,
    path = "/api/v1/chains",
    tag = "chains",
    params(ListChainsQuery),
    responses(
        (status = 200, description = "One page of chains", body = ChainPage),
        (status = 400, description = "Bad query parameter (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_chains(
    State(state): State<AppState>,
    meta: CallMeta,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ChainPage>, Problem> {
    let Query(pairs) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let request = ListChainsQuery::from_pairs(pairs)?.into_request()?;
    let response = state.chains.clone().list_chains(meta.request(request)).await?.into_inner();
    Ok(Json(ChainPage::from(&response)))
}

/// Gets one chain, at its current version (capability `read` on `chains/<name>`).
#[utoipa::path(
    get,
    path = "/api/v1/chains/{name}",
    tag = "chains",
    params(("name" = String, Path, description = "Chain name")),
    responses(
        (status = 200, description = "The chain", body = Chain),
        (status = 400, description = "Invalid chain name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such chain", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_chain(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<Json<Chain>, Problem> {
    let chain = state.chains.clone().get_chain(meta.request(v1::GetChainRequest { name })).await?.into_inner();
    Ok(Json(Chain::from(&chain)))
}

/// Deletes a chain (capability `delete` on `chains/<name>`). Runs in flight create no further tasks.
#[utoipa::path(
    delete,
    path = "/api/v1/chains/{name}",
    tag = "chains",
    params(("name" = String, Path, description = "Chain name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid chain name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such chain", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_chain(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    state.chains.clone().delete_chain(meta.request(v1::DeleteChainRequest { name })).await?;
    Ok(StatusCode::NO_CONTENT)
}
