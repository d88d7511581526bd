//! Watching a task (docs/architecture.md "Watching").
//!
//! A watcher subscribes to the in-process broadcast *before* it reads the task, so no change between
//! the read and the subscription is missed, and it re-reads the task every second to see changes
//! committed by other replicas. Every event carries a fresh snapshot of the task. Events go out in the
//! task's lifecycle order (see [`progress`]): a late broadcast of an older status is skipped. The
//! stream ends after a terminal status.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::{Events, StatusEvent};
use crate::store::{self, Store, Task};

/// How often a watcher re-reads its task.
pub const REREAD_INTERVAL: Duration = Duration::from_secs(1);

/// One status change sent to a watcher.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// The status.
    pub status: TaskStatus,
    /// The attempt at that status.
    pub attempt: u32,
    /// When the change was seen.
    pub at: DateTime<Utc>,
    /// The task as read just after the change (it may already be further along).
    pub task: Task,
}

/// Why a watch ended without a terminal status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task does not exist (any more).
    #[error("id: no task {0}")]
    NotFound(Uuid),
    /// The task could not be read.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The process is shutting down; watch again elsewhere.
    #[error("the control plane is shutting down")]
    ShuttingDown,
}

/// Where a status sits in a task's lifecycle, for ordering: `(attempt, rank)`. Within one attempt `n`
/// a task is `running` (the start of attempt `n`), then possibly `scheduled`/`pending`/`queued` again (a
/// retry or a re-dispatch, still numbered `n` until the next start), then terminal.
pub fn progress(status: TaskStatus, attempt: u32) -> (u32, u8) {
    let rank = match status {
        TaskStatus::Running => 0,
        TaskStatus::Scheduled => 1,
        TaskStatus::Pending => 2,
        TaskStatus::Queued => 3,
        _ => 4,
    };
    (attempt, rank)
}

/// Whether a change at `candidate` comes after the last one sent.
pub fn is_newer(last: Option<(TaskStatus, u32)>, candidate: (TaskStatus, u32)) -> bool {
    last.is_none_or(|(status, attempt)| progress(candidate.0, candidate.1) > progress(status, attempt))
}

/// Starts watching task `id`: subscribes, reads the task, and streams its status changes on the
/// returned receiver until a terminal status, `shutdown`, or the receiver is dropped.
///
/// # Errors
/// [`Error::NotFound`] or [`Error::Store`] for the first read.
pub async fn watch(
    store: Arc<dyn Store>,
    events: &Events,
    id: Uuid,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Result<WatchEvent, Error>>, Error> {
    let subscription = events.subscribe();
    let task = store.get_task(id).await?.ok_or(Error::NotFound(id))?;
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(follow(store, subscription, task, sender, shutdown));
    Ok(receiver)
}

async fn follow(
    store: Arc<dyn Store>,
    mut subscription: broadcast::Receiver<StatusEvent>,
    first: Task,
    sender: mpsc::Sender<Result<WatchEvent, Error>>,
    shutdown: CancellationToken,
) {
    let id = first.id;
    let mut last: Option<(TaskStatus, u32)> = None;
    if emit(&sender, &mut last, None, first).await {
        return;
    }
    let mut reread = tokio::time::interval(REREAD_INTERVAL);
    reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reread.reset();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => {
                let _ = sender.send(Err(Error::ShuttingDown)).await;
                return;
            }
            () = sender.closed() => return,
            _ = reread.tick() => None,
            received = subscription.recv() => match received {
                Ok(event) if event.change.task_id == id => Some(event),
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            },
        };
        let task = match store.get_task(id).await {
            Ok(Some(task)) => task,
            Ok(None) => {
                let _ = sender.send(Err(Error::NotFound(id))).await;
                return;
            }
            Err(e) => {
                tracing::warn!(task_id = %id, error = %e, "watch cannot read the task, retrying");
                continue;
            }
        };
        if emit(&sender, &mut last, event, task).await {
            return;
        }
    }
}

/// Sends the broadcast change (if newer) and then the snapshot's status (if newer still). Returns true
/// when the stream is over (terminal status sent, or the watcher left).
async fn emit(
    sender: &mpsc::Sender<Result<WatchEvent, Error>>,
    last: &mut Option<(TaskStatus, u32)>,
    event: Option<StatusEvent>,
    task: Task,
) -> bool {
    let mut candidates = Vec::with_capacity(2);
    if let Some(event) = event {
        candidates.push((event.change.status, event.change.attempt, event.at));
    }
    candidates.push((task.status, task.attempt, Utc::now()));
    for (status, attempt, at) in candidates {
        if !is_newer(*last, (status, attempt)) {
            continue;
        }
        *last = Some((status, attempt));
        let event = WatchEvent { status, attempt, at, task: task.clone() };
        if sender.send(Ok(event)).await.is_err() {
            return true;
        }
        if status.is_terminal() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_order_is_monotonic() {
        use TaskStatus::*;
        let lifecycle = [
            (Scheduled, 0),
            (Pending, 0),
            (Queued, 0),
            (Running, 1),
            (Pending, 1),
            (Queued, 1),
            (Running, 2),
            (Running, 3),
            (Succeeded, 3),
        ];
        for pair in lifecycle.windows(2) {
            assert!(is_newer(Some(pair[0]), pair[1]), "{:?} then {:?}", pair[0], pair[1]);
            assert!(!is_newer(Some(pair[1]), pair[0]), "{:?} after {:?}", pair[0], pair[1]);
        }
        assert!(is_newer(None, (Pending, 0)));
        assert!(!is_newer(Some((Queued, 0)), (Queued, 0)));
        assert!(is_newer(Some((Queued, 0)), (Cancelled, 0)));
    }
}
