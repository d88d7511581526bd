//! `/api/v1/schedules` and `/api/v1/schedule-preview`: create, list, get, delete, pause and resume
//! schedules, list their fires, and preview the slots of a cadence (DESIGN.md sections 4 and 7,
//! `legion.v1.ScheduleService`). Only the leader among the control-plane replicas fires schedules;
//! `GET /api/v1/nodes` tells which one leads.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use legion_proto::v1;

use crate::body::JsonBody;
use crate::client::CallMeta;
use crate::input::{ListSchedulesQuery, PreviewQuery, ScheduleBody};
use crate::problem::Problem;
use crate::state::AppState;
use crate::view::{Schedule, ScheduleFirePage, SchedulePage, SchedulePreview};

/// The decoded query pairs, or a 400 naming the query.
fn pairs(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Vec<(String, String)>, Problem> {
    query.map(|Query(pairs)| pairs).map_err(|e| Problem::invalid("query", e.body_text()))
}

/// Creates a schedule (capability `create` on `schedules/<name>` and on
/// `tasks/<extension>/<runner>/<function>`, `execute` on `runners/<extension>/<runner>/<function>`,
/// and with a chain, `execute` on `chains/<name>` and on the runner of each of its actions). Its tasks
/// are submitted on the creator's behalf. The cron expression must have a slot after now, and the
/// transformation is evaluated once, on the first slot, and must give an object. With `"paused": true`
/// the schedule is created paused. A document exported from `GET /api/v1/schedules/{name}` is accepted
/// as is: its output-only members are ignored, and a paused schedule is created again paused.
#[utoipa::path(
    post,
    path = "/api/v1/schedules",
    tag = "schedules",
    request_body(content = ScheduleBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The schedule was created", body = Schedule,
            headers(("location" = String, description = "/api/v1/schedules/{name}"))),
        (status = 400, description = "Malformed body, or an invalid name, cadence, function, transformation or limit (the field is named in detail, e.g. `cron: \"61 * * * *\": …`, `cron: \"0 0 31 2 *\" has no slot after now`, `timezone: \"Mars/Base\" is not an IANA time zone name` or `transformation: on the first slot (…): …`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown function or chain", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A schedule of this name exists (ALREADY_EXISTS)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than api.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_schedule(
    State(state): State<AppState>,
    meta: CallMeta,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let request = ScheduleBody::parse(&body)?.into_request();
    let schedule = Schedule::from(&state.schedules.clone().create_schedule(meta.request(request)).await?.into_inner());
    let location = HeaderValue::from_str(&format!("/api/v1/schedules/{}", schedule.name)).ok();
    let mut reply = (StatusCode::CREATED, Json(schedule)).into_response();
    if let Some(location) = location {
        reply.headers_mut().insert(header::LOCATION, location);
    }
    Ok(reply)
}

/// Lists schedules by name, one page at a time (capability `list` on `schedules/`). Only the
/// schedules the caller may `read` (`schedules/<name>`) are shown: a page may hold fewer than `limit`,
/// even none, while `next_page_token` is set.
#[utoipa::path(
    get,
    path = "/api/v1/schedules",
    tag = "schedules",
    params(ListSchedulesQuery),
    responses(
        (status = 200, description = "One page of schedules", body = SchedulePage),
        (status = 400, description = "Bad query parameter (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_schedules(
    State(state): State<AppState>,
    meta: CallMeta,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<SchedulePage>, Problem> {
    let request = ListSchedulesQuery::from_pairs(pairs(query)?)?.into_request()?;
    let response = state.schedules.clone().list_schedules(meta.request(request)).await?.into_inner();
    Ok(Json(SchedulePage::from(&response)))
}

/// Gets one schedule with its next slots and its newest fire (capability `read` on
/// `schedules/<name>`).
#[utoipa::path(
    get,
    path = "/api/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "The schedule", body = Schedule),
        (status = 400, description = "Invalid schedule name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_schedule(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<Json<Schedule>, Problem> {
    let request = meta.request(v1::GetScheduleRequest { name });
    let schedule = state.schedules.clone().get_schedule(request).await?.into_inner();
    Ok(Json(Schedule::from(&schedule)))
}

/// Deletes a schedule and its fire history (capability `delete` on `schedules/<name>`); tasks it
/// already fired are kept.
#[utoipa::path(
    delete,
    path = "/api/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid schedule name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_schedule(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    state.schedules.clone().delete_schedule(meta.request(v1::DeleteScheduleRequest { name })).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a schedule (capability `update` on `schedules/<name>`): it fires nothing until resumed, and
/// keeps its history. Pausing a paused schedule changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{name}/pause",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "The schedule, paused (no `next_fires`)", body = Schedule),
        (status = 400, description = "Invalid schedule name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pause_schedule(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<Json<Schedule>, Problem> {
    let request = meta.request(v1::SetSchedulePausedRequest { name });
    let schedule = state.schedules.clone().pause_schedule(request).await?.into_inner();
    Ok(Json(Schedule::from(&schedule)))
}

/// Resumes a paused schedule (capability `update` on `schedules/<name>`); slots that passed while it
/// was paused never fire. Resuming a running schedule changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{name}/resume",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "The schedule, running, with its next slots", body = Schedule),
        (status = 400, description = "Invalid schedule name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resume_schedule(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
) -> Result<Json<Schedule>, Problem> {
    let request = meta.request(v1::SetSchedulePausedRequest { name });
    let schedule = state.schedules.clone().resume_schedule(request).await?.into_inner();
    Ok(Json(Schedule::from(&schedule)))
}

/// Lists what happened to each slot of a schedule, newest slot first, one page at a time (capability
/// `read` on `schedules/<name>`).
#[utoipa::path(
    get,
    path = "/api/v1/schedules/{name}/fires",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name"), ListSchedulesQuery),
    responses(
        (status = 200, description = "One page of fires", body = ScheduleFirePage),
        (status = 400, description = "Invalid schedule name or bad query parameter (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_schedule_fires(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(name): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ScheduleFirePage>, Problem> {
    let request = ListSchedulesQuery::from_pairs(pairs(query)?)?.into_fires_request(name)?;
    let response = state.schedules.clone().list_schedule_fires(meta.request(request)).await?.into_inner();
    Ok(Json(ScheduleFirePage::from(&response)))
}

/// The slots a cadence fires at, computed by the scheduler's own code (any authenticated caller): the
/// way to check a cron expression and its time zone, daylight-saving changes included, before
/// creating a schedule.
#[utoipa::path(
    get,
    path = "/api/v1/schedule-preview",
    tag = "schedules",
    params(PreviewQuery),
    responses(
        (status = 200, description = "The slots, in order", body = SchedulePreview),
        (status = 400, description = "Bad query parameter or cadence (named in detail: `cron: …`, `timezone: …`, `interval_ms: …`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn preview_schedule(
    State(state): State<AppState>,
    meta: CallMeta,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<SchedulePreview>, Problem> {
    let request = PreviewQuery::from_pairs(pairs(query)?)?.into_request()?;
    let response = state.schedules.clone().preview_schedule(meta.request(request)).await?.into_inner();
    Ok(Json(SchedulePreview::from(&response)))
}
