//! `/api/v1/policies`: Vault-style ACL policies (DESIGN.md section 6).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use legion_proto::v1;

use crate::body::JsonBody;
use crate::client::CallMeta;
use crate::input::PolicyBody;
use crate::problem::Problem;
use crate::routes::tasks::missing;
use crate::state::AppState;
use crate::view::{Policy, PolicyList};

/// Creates a policy, or replaces its rules (capability `create` when new, `update` otherwise, on
/// `policies/<name>`).
#[utoipa::path(
    put,
    path = "/api/v1/policies/{name}",
    tag = "policies",
    params(("name" = String, Path, description = "Policy name: 1 to 64 characters of a-z, 0-9, _, . and -")),
    request_body(content = PolicyBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The policy was created", body = Policy,
            headers(("location" = String, description = "/api/v1/policies/{name}"))),
        (status = 200, description = "The policy's rules were replaced", body = Policy),
        (status = 400, description = "Malformed body, invalid rule or name (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_policy(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let request = PolicyBody::parse(&body)?.into_request(name)?;
    let response = state.policies.clone().put_policy(meta.request(request)).await?.into_inner();
    let policy = Policy::from(response.policy.as_ref().ok_or_else(|| missing("PutPolicyResponse.policy"))?);
    if !response.created {
        return Ok(Json(policy).into_response());
    }
    let location = HeaderValue::from_str(&format!("/api/v1/policies/{}", policy.name)).ok();
    let mut reply = (StatusCode::CREATED, Json(policy)).into_response();
    if let Some(location) = location {
        reply.headers_mut().insert(header::LOCATION, location);
    }
    Ok(reply)
}

/// Lists every policy.
#[utoipa::path(
    get,
    path = "/api/v1/policies",
    tag = "policies",
    responses(
        (status = 200, description = "The policies", body = PolicyList),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_policies(State(state): State<AppState>, meta: CallMeta) -> Result<Json<PolicyList>, Problem> {
    let response = state.policies.clone().list_policies(meta.request(v1::ListPoliciesRequest {})).await?.into_inner();
    Ok(Json(PolicyList::from(&response)))
}

/// Gets one policy.
#[utoipa::path(
    get,
    path = "/api/v1/policies/{name}",
    tag = "policies",
    params(("name" = String, Path, description = "Policy name")),
    responses(
        (status = 200, description = "The policy", body = Policy),
        (status = 404, description = "No such policy", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_policy(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<Json<Policy>, Problem> {
    let policy = state.policies.clone().get_policy(meta.request(v1::GetPolicyRequest { name })).await?.into_inner();
    Ok(Json(Policy::from(&policy)))
}

/// Deletes a policy. Keys and tokens bound to it lose what it granted.
#[utoipa::path(
    delete,
    path = "/api/v1/policies/{name}",
    tag = "policies",
    params(("name" = String, Path, description = "Policy name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such policy", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_policy(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    state.policies.clone().delete_policy(meta.request(v1::DeletePolicyRequest { name })).await?;
    Ok(StatusCode::NO_CONTENT)
}
