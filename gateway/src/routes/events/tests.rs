use std::time::Duration;

use futures_util::stream;
use legion_common::TaskStatus;

use super::*;

fn event(status: v1::TaskStatus, attempt: u32) -> v1::TaskEvent {
    v1::TaskEvent { task_id: "t".into(), status: status as i32, attempt, at: None, task: None }
}

async fn collect(items: impl Stream<Item = WatchItem>) -> Vec<WatchItem> {
    tokio::time::timeout(Duration::from_secs(5), items.collect::<Vec<_>>()).await.expect("the stream ends")
}

fn statuses(items: &[WatchItem]) -> Vec<TaskStatus> {
    items
        .iter()
        .filter_map(|i| match i {
            WatchItem::Change(view) => Some(view.status),
            WatchItem::Failure(_) => None,
        })
        .collect()
}

fn failure(items: &[WatchItem]) -> Option<&Problem> {
    match items.last() {
        Some(WatchItem::Failure(problem)) => Some(problem),
        _ => None,
    }
}

#[tokio::test]
async fn a_watch_ends_after_the_terminal_status_without_an_error() {
    let source = stream::iter([
        Ok(event(v1::TaskStatus::Queued, 0)),
        Ok(event(v1::TaskStatus::Running, 1)),
        Ok(event(v1::TaskStatus::Succeeded, 1)),
        Ok(event(v1::TaskStatus::Running, 2)),
    ])
    .chain(stream::pending());
    let items = collect(watch_items(source, CancellationToken::new())).await;
    assert_eq!(statuses(&items), [TaskStatus::Queued, TaskStatus::Running, TaskStatus::Succeeded]);
    assert_eq!(failure(&items), None);
}

/// Regression: a watch cut by a dropped connection ended with a 500 `INTERNAL` problem.
#[tokio::test]
async fn a_watch_cut_mid_stream_ends_with_503_unavailable() {
    let cut = tonic::Status::from_error(Box::new(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "error reading a body from connection",
    )));
    let source = stream::iter([Ok(event(v1::TaskStatus::Running, 1)), Err(cut)]);
    let items = collect(watch_items(source, CancellationToken::new())).await;
    assert_eq!(statuses(&items), [TaskStatus::Running]);
    let problem = failure(&items).expect("a final problem");
    assert_eq!((problem.status, problem.code.as_str()), (503, "UNAVAILABLE"), "{problem}");
    assert!(problem.detail.contains("error reading a body"), "{problem}");
}

#[tokio::test]
async fn a_refusal_of_the_control_plane_keeps_its_meaning() {
    let source = stream::iter([Err(tonic::Status::not_found("task t not found"))]);
    let items = collect(watch_items(source, CancellationToken::new())).await;
    let problem = failure(&items).expect("a final problem");
    assert_eq!(
        (problem.status, problem.code.as_str(), problem.detail.as_str()),
        (404, "NOT_FOUND", "task t not found")
    );
}

#[tokio::test]
async fn a_watch_ended_before_the_task_finished_is_unavailable() {
    let source = stream::iter([Ok(event(v1::TaskStatus::Scheduled, 0))]);
    let items = collect(watch_items(source, CancellationToken::new())).await;
    assert_eq!(statuses(&items), [TaskStatus::Scheduled]);
    let problem = failure(&items).expect("a final problem");
    assert_eq!((problem.status, problem.code.as_str(), problem.detail.as_str()), (503, "UNAVAILABLE", ENDED_EARLY));
}

#[tokio::test]
async fn an_event_without_a_known_status_ends_the_watch_with_500_internal() {
    let source = stream::iter([Ok(event(v1::TaskStatus::Queued, 0)), Ok(event(v1::TaskStatus::Unspecified, 0))])
        .chain(stream::pending());
    let items = collect(watch_items(source, CancellationToken::new())).await;
    assert_eq!(statuses(&items), [TaskStatus::Queued]);
    let problem = failure(&items).expect("a final problem");
    assert_eq!((problem.status, problem.code.as_str()), (500, "INTERNAL"), "{problem}");
    assert!(problem.detail.contains("task status 0 is unspecified"), "{problem}");
}

#[tokio::test]
async fn shutdown_ends_an_idle_watch_with_a_final_problem() {
    let shutdown = CancellationToken::new();
    let source = stream::iter([Ok(event(v1::TaskStatus::Scheduled, 0))]).chain(stream::pending());
    let mut items = Box::pin(watch_items(source, shutdown.clone()));
    let first = items.next().await.expect("first event");
    assert!(matches!(first, WatchItem::Change(ref view) if view.status == TaskStatus::Scheduled), "{first:?}");
    shutdown.cancel();
    let rest = collect(items).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    let problem = failure(&rest).expect("a final problem");
    assert_eq!((problem.status, problem.code.as_str(), problem.detail.as_str()), (503, "UNAVAILABLE", SHUTTING_DOWN));
}
