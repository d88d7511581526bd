//! `GET /api/v1/tasks/{id}/events`: a task's status changes as Server-Sent Events, from
//! `TaskService.WatchTask`.
//!
//! Each status change is one unnamed event (`message`, so `EventSource.onmessage` sees it) whose data
//! is a [`TaskEvent`] JSON object; the first is the status at the time of the call. The stream ends
//! after a terminal status. Otherwise it ends with one `event: error` whose data is a problem JSON
//! object, after which a client reconnects to resume:
//! - the control plane became unreachable or cut the watch: 503 `UNAVAILABLE` (see
//!   [`crate::problem::meaning`]), or the control plane's own error (404 for an unknown task, …);
//! - the control plane ended the watch before the task finished: 503 `UNAVAILABLE`;
//! - the control plane sent an event without a REST shape (an unspecified or unknown status): 500
//!   `INTERNAL`;
//! - the gateway is shutting down: 503 `UNAVAILABLE` "gateway shutting down".
//!
//! The route has no request timeout; a comment line every 15 s keeps idle connections open.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use legion_common::ErrorCode;
use legion_proto::v1;
use tokio_util::sync::CancellationToken;

use crate::client::CallMeta;
use crate::input::parse_uuid;
use crate::problem::Problem;
use crate::state::AppState;
use crate::view::TaskEvent;

/// `detail` of the final problem of a stream ended by gateway shutdown.
pub const SHUTTING_DOWN: &str = "gateway shutting down";

/// `detail` of the final problem of a watch the control plane ended before the task finished.
pub const ENDED_EARLY: &str = "control plane unavailable: the watch ended before the task finished";

/// Streams a task's status changes until it reaches a terminal status.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/events",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id (UUID)", format = Uuid)),
    responses(
        (status = 200, description = "Server-Sent Events; each event's data is a TaskEvent object. A stream \
            that ends before a terminal status ends with an `event: error` whose data is a Problem (503 \
            UNAVAILABLE when the control plane is unreachable or the gateway shuts down): reconnect to resume.",
            content_type = "text/event-stream", body = TaskEvent),
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
    let events = watch_items(stream, state.shutdown.clone()).map(|item| Ok(item.into_event()));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// One item of an event stream, before SSE encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// A status change: an unnamed event whose data is the [`TaskEvent`].
    Change(Box<TaskEvent>),
    /// The last item of a stream that ended before a terminal status: `event: error` with the problem.
    Failure(Problem),
}

impl WatchItem {
    /// The SSE event.
    pub fn into_event(self) -> Event {
        match self {
            Self::Change(view) => status_event(&view),
            Self::Failure(problem) => error_event(&problem),
        }
    }
}

/// The items of a watch: each status change of `stream`, ending after a terminal status; or, when
/// `stream` fails, ends early or `shutdown` is cancelled first, one [`WatchItem::Failure`] last.
pub fn watch_items<S>(stream: S, shutdown: CancellationToken) -> impl Stream<Item = WatchItem> + Send + 'static
where
    S: Stream<Item = Result<v1::TaskEvent, tonic::Status>> + Send + 'static,
{
    futures_util::stream::unfold(Some((Box::pin(stream), shutdown)), |state| async move {
        let (mut stream, shutdown) = state?;
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                tracing::debug!("gateway shutting down: ending an event stream");
                return Some((WatchItem::Failure(Problem::new(ErrorCode::Unavailable, SHUTTING_DOWN)), None));
            }
            next = stream.next() => next,
        };
        match next {
            Some(Ok(event)) => match TaskEvent::try_from(&event) {
                Ok(view) => {
                    let more = !view.status.is_terminal();
                    Some((WatchItem::Change(Box::new(view)), more.then_some((stream, shutdown))))
                }
                Err(e) => Some((WatchItem::Failure(Problem::from(e)), None)),
            },
            Some(Err(status)) => Some((WatchItem::Failure(Problem::from_status(&status)), None)),
            None => {
                tracing::warn!("control plane ended a watch before the task finished");
                Some((WatchItem::Failure(Problem::new(ErrorCode::Unavailable, ENDED_EARLY)), None))
            }
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

#[cfg(test)]
mod tests;
