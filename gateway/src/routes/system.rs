//! Operational endpoints: `/healthz`, `/readyz`, `/metrics`, the OpenAPI document, and the problem
//! responses for unknown routes and methods.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use legion_common::ErrorCode;
use serde::{Deserialize, Serialize};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::state::{AppState, READY_TIMEOUT};

/// Body of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (process up) or `ready` (control plane serving).
    pub status: String,
}

/// The process is up. Never calls the control plane.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Up", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// The gateway can do its job: the control plane answers `grpc.health.v1.Health/Check` with
/// `SERVING` within 2 s.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The control plane is unreachable or not serving", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    request.set_timeout(READY_TIMEOUT);
    let check = tokio::time::timeout(READY_TIMEOUT, state.health.clone().check(request)).await;
    let reason = match check {
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => {
            return Json(Health { status: "ready".into() }).into_response();
        }
        Ok(Ok(response)) => format!("control plane health is {:?}", ServingStatus::try_from(response.get_ref().status)),
        Ok(Err(status)) => format!("control plane health check failed: {}", crate::problem::status_message(&status)),
        Err(_) => format!("control plane health check timed out after {} ms", READY_TIMEOUT.as_millis()),
    };
    tracing::debug!(%reason, "not ready");
    Problem::new(ErrorCode::Unavailable, reason).into_response()
}

/// Metrics of the REST API in the OpenMetrics 1.0 text format, which Prometheus scrapes natively.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, legion_common::admin::METRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => Problem::new(ErrorCode::Internal, format!("cannot encode metrics: {e}")).into_response(),
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn openapi(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi.as_str().to_owned()).into_response()
}

/// 404 for a path no route matches.
pub async fn not_found(uri: Uri) -> Problem {
    Problem::with_status(404, ErrorCode::NotFound.name(), format!("no route for {}", uri.path()))
}

/// 405 for a known path with a method it does not serve.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::with_status(405, "UNIMPLEMENTED", format!("{method} is not allowed on {}", uri.path()))
}
