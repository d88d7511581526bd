//! `/api/v1/dead-letters`: list the tasks that ended `dead_lettered` and replay them.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use legion_proto::v1;

use super::tasks::missing;
use crate::client::CallMeta;
use crate::input::{ListDeadLettersQuery, parse_uuid};
use crate::problem::Problem;
use crate::state::AppState;
use crate::view::{DeadLetterPage, Task};

/// Lists dead letters (tasks in status `dead_lettered`; `error` holds the reason), newest first, one
/// page at a time. Needs `list` on `tasks/` (or, with `function`, on that function's path); tasks the
/// caller may not `read` are left out, so a page may hold fewer than `limit`, or none, and still carry a
/// token.
#[utoipa::path(
    get,
    path = "/api/v1/dead-letters",
    tag = "dead-letters",
    params(ListDeadLettersQuery),
    responses(
        (status = 200, description = "One page of dead letters", body = DeadLetterPage),
        (status = 400, description = "Bad query parameter (named in detail)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    meta: CallMeta,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, Problem> {
    let Query(pairs) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let request = ListDeadLettersQuery::from_pairs(pairs)?.into_request()?;
    let response = state.dead_letters.clone().list_dead_letters(meta.request(request)).await?.into_inner();
    Ok(Json(DeadLetterPage::try_from(&response)?))
}

/// Replays a dead-lettered task: same id and args, status `pending` with a new dispatch, failure and
/// delivery counts reset, `replays` + 1; its attempts are kept. Needs `update` on
/// `tasks/<extension>/<runner>/<function>` and `execute` on `runners/<extension>/<runner>/<function>`;
/// audited as `task.replay`.
#[utoipa::path(
    post,
    path = "/api/v1/dead-letters/{task_id}/replay",
    tag = "dead-letters",
    params(("task_id" = String, Path, description = "Task id (UUID)", format = Uuid)),
    responses(
        (status = 200, description = "The task after the replay (pending)", body = Task),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is not dead_lettered (a second replay included), or its extension is disabled", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(task_id): Path<String>,
) -> Result<Json<Task>, Problem> {
    let task_id = parse_uuid("task_id", &task_id)?;
    let response = state
        .dead_letters
        .clone()
        .replay_dead_letter(meta.request(v1::ReplayDeadLetterRequest { task_id }))
        .await?
        .into_inner();
    let task = response.task.as_ref().ok_or_else(|| missing("ReplayDeadLetterResponse.task"))?;
    Ok(Json(Task::try_from(task)?))
}
