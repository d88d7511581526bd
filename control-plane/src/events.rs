//! Status changes committed by this process, broadcast to `WatchTask` streams (docs/architecture.md
//! "Watching"). Changes committed by other replicas are not broadcast here; watchers re-read the task
//! every second to see them.

use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Events kept for slow receivers; a receiver that falls further behind re-reads its task.
pub const CAPACITY: usize = 16_384;

/// A committed status change of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    /// The task.
    pub task_id: Uuid,
    /// Its new status.
    pub status: TaskStatus,
    /// Its attempt at the change.
    pub attempt: u32,
}

/// A [`StatusChange`] with the time it was broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusEvent {
    /// The change.
    pub change: StatusChange,
    /// When it was published, just after its commit.
    pub at: DateTime<Utc>,
}

/// The broadcast of status changes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    sender: broadcast::Sender<StatusEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A broadcast holding up to [`CAPACITY`] events.
    pub fn new() -> Self {
        Self { sender: broadcast::channel(CAPACITY).0 }
    }

    /// Publishes changes after their commit. Nothing is done when no one listens.
    pub fn publish(&self, changes: &[StatusChange]) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let at = Utc::now();
        for change in changes {
            // An error means every receiver left in the meantime; nothing to do.
            let _ = self.sender.send(StatusEvent { change: *change, at });
        }
    }

    /// A receiver of every change published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_changes_in_order() {
        let events = Events::new();
        events.publish(&[StatusChange { task_id: Uuid::now_v7(), status: TaskStatus::Queued, attempt: 0 }]);
        let mut rx = events.subscribe();
        let id = Uuid::now_v7();
        events.publish(&[
            StatusChange { task_id: id, status: TaskStatus::Queued, attempt: 0 },
            StatusChange { task_id: id, status: TaskStatus::Running, attempt: 1 },
        ]);
        assert_eq!(rx.recv().await.expect("first").change.status, TaskStatus::Queued);
        assert_eq!(rx.recv().await.expect("second").change.status, TaskStatus::Running);
    }
}
