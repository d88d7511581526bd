//! `/api/v1/tasks`: submit, get, list and cancel tasks, and list their attempts.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use legion_proto::v1;

use crate::body::JsonBody;
use crate::client::CallMeta;
use crate::input::{ListTasksQuery, SubmitTask, parse_uuid};
use crate::problem::Problem;
use crate::state::AppState;
use crate::view::{AttemptList, Task, TaskPage};

/// Submits a task. The task is durable when the response is sent.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    tag = "tasks",
    request_body(content = SubmitTask, content_type = "application/json"),
    responses(
        (status = 201, description = "Task accepted", body = Task,
            headers(("location" = String, description = "/api/v1/tasks/{id}"))),
        (status = 200, description = "The idempotency key matched an existing task, which is returned", body = Task),
        (status = 400, description = "Malformed body or invalid field (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown function or chain", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The extension is disabled", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than api.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn submit_task(
    State(state): State<AppState>,
    meta: CallMeta,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let request = SubmitTask::parse(&body)?.into_request();
    let response = state.tasks.clone().submit_task(meta.request(request)).await?.into_inner();
    let task = Task::try_from(response.task.as_ref().ok_or_else(|| missing("SubmitTaskResponse.task"))?)?;
    if !response.created {
        return Ok((StatusCode::OK, Json(task)).into_response());
    }
    let mut reply = (StatusCode::CREATED, Json(&task)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/tasks/{}", task.id)) {
        reply.headers_mut().insert(header::LOCATION, location);
    }
    Ok(reply)
}

/// Lists tasks, newest first, one page at a time. With `root_id`: the tasks of one chain run, root
/// included (`legion task tree` pages through them to draw the run). Tasks the caller may not `read`
/// are left out, so a page may hold fewer than `limit`, or none, and still carry a token.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(ListTasksQuery),
    responses(
        (status = 200, description = "One page of tasks", body = TaskPage),
        (status = 400, description = "Bad query parameter (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_tasks(
    State(state): State<AppState>,
    meta: CallMeta,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<TaskPage>, Problem> {
    let Query(pairs) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let request = ListTasksQuery::from_pairs(pairs)?.into_request()?;
    let response = state.tasks.clone().list_tasks(meta.request(request)).await?.into_inner();
    Ok(Json(TaskPage::try_from(&response)?))
}

/// Gets one task.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id (UUID)", format = Uuid)),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_task(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(id): Path<String>,
) -> Result<Json<Task>, Problem> {
    let id = parse_uuid("id", &id)?;
    let task = state.tasks.clone().get_task(meta.request(v1::GetTaskRequest { id })).await?.into_inner();
    Ok(Json(Task::try_from(&task)?))
}

/// Cancels a task that has not finished. A running attempt is aborted on its executor's next heartbeat.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id (UUID)", format = Uuid)),
    responses(
        (status = 200, description = "The cancelled task", body = Task),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task already ended", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_task(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(id): Path<String>,
) -> Result<Json<Task>, Problem> {
    let id = parse_uuid("id", &id)?;
    let task = state.tasks.clone().cancel_task(meta.request(v1::CancelTaskRequest { id })).await?.into_inner();
    Ok(Json(Task::try_from(&task)?))
}

/// Lists the attempts (runs) of a task.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/attempts",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id (UUID)", format = Uuid)),
    responses(
        (status = 200, description = "The task's attempts", body = AttemptList),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_attempts(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(id): Path<String>,
) -> Result<Json<AttemptList>, Problem> {
    let task_id = parse_uuid("id", &id)?;
    let response = state
        .tasks
        .clone()
        .list_task_attempts(meta.request(v1::ListTaskAttemptsRequest { task_id }))
        .await?
        .into_inner();
    Ok(Json(AttemptList { attempts: response.attempts.iter().map(Into::into).collect() }))
}

/// The problem for a response message the control plane left incomplete (a bug on its side).
pub fn missing(field: &str) -> Problem {
    tracing::error!(field, "control plane response lacks a required field");
    Problem::new(legion_common::ErrorCode::Internal, format!("control plane response lacks {field}"))
}
