//! `/api/v1/api-keys`, `/api/v1/auth/*` and `/.well-known/jwks.json`: API keys, tokens, capabilities
//! and the public keys that verify Legion's tokens (DESIGN.md section 6).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use legion_proto::v1;

use crate::body::JsonBody;
use crate::client::CallMeta;
use crate::input::{CapabilitiesBody, CreateApiKey, IssueToken, ListApiKeysQuery, parse_uuid};
use crate::problem::Problem;
use crate::routes::tasks::missing;
use crate::state::AppState;
use crate::view::{ApiKey, ApiKeyList, CapabilityMap, CreatedApiKey, Token, WhoAmI};

/// Creates an API key bound to policies. The response holds the key's secret, shown this once.
#[utoipa::path(
    post,
    path = "/api/v1/api-keys",
    tag = "auth",
    request_body(content = CreateApiKey, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, with its secret (shown once)", body = CreatedApiKey),
        (status = 400, description = "Malformed body or invalid field (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown policy", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    meta: CallMeta,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let request = CreateApiKey::parse(&body)?.into_request();
    let response = state.auth.clone().create_api_key(meta.request(request)).await?.into_inner();
    let key = response.api_key.as_ref().ok_or_else(|| missing("CreateApiKeyResponse.api_key"))?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey::new(key, response.key))).into_response())
}

/// Lists API keys (never their secrets).
#[utoipa::path(
    get,
    path = "/api/v1/api-keys",
    tag = "auth",
    params(ListApiKeysQuery),
    responses(
        (status = 200, description = "The keys", body = ApiKeyList),
        (status = 400, description = "Bad query parameter (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    meta: CallMeta,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ApiKeyList>, Problem> {
    let Query(pairs) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let request = ListApiKeysQuery::from_pairs(pairs)?.into_request()?;
    let response = state.auth.clone().list_api_keys(meta.request(request)).await?.into_inner();
    Ok(Json(ApiKeyList::from(&response)))
}

/// Revokes an API key: it stops authenticating at once on this control plane, and within
/// `auth.cache_ttl_ms` on the others.
#[utoipa::path(
    delete,
    path = "/api/v1/api-keys/{id}",
    tag = "auth",
    params(("id" = String, Path, description = "API key id (UUID)", format = Uuid)),
    responses(
        (status = 200, description = "The revoked key", body = ApiKey),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>, Problem> {
    let id = parse_uuid("id", &id)?;
    let response = state.auth.clone().revoke_api_key(meta.request(v1::RevokeApiKeyRequest { id })).await?.into_inner();
    let key = response.api_key.as_ref().ok_or_else(|| missing("RevokeApiKeyResponse.api_key"))?;
    Ok(Json(ApiKey::from(key)))
}

/// Exchanges an API key for a short-lived JWT (`crypt.jwt.ttl_s`) carrying its principal and
/// policies. The key in the body authenticates the call.
#[utoipa::path(
    post,
    path = "/api/v1/auth/token",
    tag = "auth",
    request_body(content = IssueToken, content_type = "application/json"),
    responses(
        (status = 200, description = "The token", body = Token),
        (status = 400, description = "Malformed body (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn issue_token(
    State(state): State<AppState>,
    meta: CallMeta,
    JsonBody(body): JsonBody,
) -> Result<Json<Token>, Problem> {
    let request = IssueToken::parse(&body)?.into_request();
    let response = state.auth.clone().issue_token(meta.request(request)).await?.into_inner();
    Ok(Json(Token::from(&response)))
}

/// The caller's capabilities on each path (or those of the named policies), as Vault's
/// `sys/capabilities`.
#[utoipa::path(
    post,
    path = "/api/v1/auth/capabilities",
    tag = "auth",
    request_body(content = CapabilitiesBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Capabilities per path", body = CapabilityMap),
        (status = 400, description = "Malformed body or invalid path (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn capabilities(
    State(state): State<AppState>,
    meta: CallMeta,
    JsonBody(body): JsonBody,
) -> Result<Json<CapabilityMap>, Problem> {
    let request = CapabilitiesBody::parse(&body)?.into_request();
    let response = state.auth.clone().capabilities(meta.request(request)).await?.into_inner();
    Ok(Json(CapabilityMap::from(&response)))
}

/// The caller's principal and policies, as the control plane authenticated them.
#[utoipa::path(
    get,
    path = "/api/v1/auth/whoami",
    tag = "auth",
    responses(
        (status = 200, description = "The caller", body = WhoAmI),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn whoami(State(state): State<AppState>, meta: CallMeta) -> Result<Json<WhoAmI>, Problem> {
    let response = state.auth.clone().who_am_i(meta.request(v1::WhoAmIRequest {})).await?.into_inner();
    Ok(Json(WhoAmI::from(&response)))
}

/// The JSON Web Key Set (RFC 7517) of the public keys that verify Legion's tokens, as the control
/// plane publishes it; `{"keys":[]}` when tokens are signed with HS256 only. Needs no credential.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "auth",
    security(()),
    responses(
        (status = 200, description = "The key set", content_type = "application/json", body = Object),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn jwks(State(state): State<AppState>, meta: CallMeta) -> Result<Response, Problem> {
    let request = meta.without_credentials().request(v1::GetJwksRequest {});
    let response = state.auth.clone().get_jwks(request).await?.into_inner();
    Ok(([(header::CONTENT_TYPE, "application/json")], response.jwks_json).into_response())
}
