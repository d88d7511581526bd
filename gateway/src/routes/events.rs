//! `GET /api/v1/tasks/{id}/events`: a task's status changes as Server-Sent Events, from
//! `TaskService.WatchTask`.
//!
//! Each status change is one unnamed event (`message`, so `EventSource.onmessage` sees it) whose data
//! is a [`TaskEvent`] JSON object; the first is the status at the time of the call. The stream ends
//! after a terminal status. If the watch fails midway (the control plane went away), one
//! `event: error` with a problem JSON object is sent and the stream ends. The route has no request
//! timeout; a comment line every 15 s keeps idle connections open, and gateway shutdown ends the
//! stream.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use legion_proto::v1;
use tonic::Streaming;

use crate::client::CallMeta;
use crate::input::parse_uuid;
use crate::problem::Problem;
use crate::state::AppState;
use crate::view::TaskEvent;

/// Streams a task's status changes until it reaches a terminal status.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/events",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id (UUID)", format = Uuid)),
    responses(
        (status = 200, description = "Server-Sent Events; each event's data is a TaskEvent object", content_type = "text/event-stream", body = TaskEvent),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Control plane unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn watch_task(
    State(state): State<AppState>,
    meta: CallMeta,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let id = parse_uuid("id", &id)?;
    let stream = state.tasks.clone().watch_task(meta.request(v1::WatchTaskRequest { id })).await?.into_inner();
    let events = sse_events(stream).take_until(state.shutdown.cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Turns the gRPC stream into SSE events, ending after a terminal status or an error.
fn sse_events(stream: Streaming<v1::TaskEvent>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(Some(stream), |stream| async move {
        let mut stream = stream?;
        match stream.message().await {
            Ok(Some(event)) => {
                let view = TaskEvent::from(&event);
                let next = if view.status.is_terminal() { None } else { Some(stream) };
                Some((Ok(status_event(&view)), next))
            }
            Ok(None) => None,
            Err(status) => Some((Ok(error_event(&Problem::from_status(&status))), None)),
        }
    })
}

/// The SSE event of one status change.
pub fn status_event(view: &TaskEvent) -> Event {
    Event::default().json_data(view).unwrap_or_else(|e| {
        error_event(&Problem::new(legion_common::ErrorCode::Internal, format!("cannot encode event: {e}")))
    })
}

/// The SSE `error` event carrying a problem object.
pub fn error_event(problem: &Problem) -> Event {
    let data = serde_json::to_string(problem).unwrap_or_default();
    Event::default().event("error").data(data)
}
