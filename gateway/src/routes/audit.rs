//! `/api/v1/audit`: the append-only, hash-chained audit trail (capability `read` on `audit`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use legion_proto::v1;

use crate::client::CallMeta;
use crate::input::ListAuditQuery;
use crate::problem::Problem;
use crate::state::AppState;
use crate::view::{AuditPage, AuditVerification};

/// Lists audit records, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(ListAuditQuery),
    responses(
        (status = 200, description = "One page of records", body = AuditPage),
        (status = 400, description = "Bad query parameter (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_audit(
    State(state): State<AppState>,
    meta: CallMeta,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    let Query(pairs) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let request = ListAuditQuery::from_pairs(pairs)?.into_request()?;
    let response = state.audit.clone().list_audit(meta.request(request)).await?.into_inner();
    Ok(Json(AuditPage::from(&response)))
}

/// Checks the hash chain of the whole trail: `valid` is false, naming the first broken record, when a
/// record was altered, removed or inserted.
#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "audit",
    responses(
        (status = 200, description = "The result of the check (also when the chain is broken)", body = AuditVerification),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify_audit(State(state): State<AppState>, meta: CallMeta) -> Result<Json<AuditVerification>, Problem> {
    let response = state.audit.clone().verify_audit(meta.request(v1::VerifyAuditRequest {})).await?.into_inner();
    Ok(Json(AuditVerification::from(&response)))
}
