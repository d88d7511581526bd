//! Task statuses (DESIGN.md section 4, contract): their stored names and the protobuf enum.

use std::fmt;
use std::str::FromStr;

use legion_proto::v1;

/// The lifecycle status of a task, stored as its lowercase name in `tasks.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Durable, waiting in the outbox.
    Pending,
    /// Waiting for `not_before`.
    Scheduled,
    /// Published to the broker with a confirm.
    Queued,
    /// An executor runs the current attempt.
    Running,
    /// The function returned a result.
    Succeeded,
    /// The last attempt failed.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
    /// The last attempt ran past its timeout.
    TimedOut,
    /// Delivered more often than `transport.delivery_limit`, or unroutable.
    DeadLettered,
    /// A chain condition was false.
    Skipped,
}

/// Every status.
pub const ALL_STATUSES: [TaskStatus; 10] = [
    TaskStatus::Pending,
    TaskStatus::Scheduled,
    TaskStatus::Queued,
    TaskStatus::Running,
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
    TaskStatus::TimedOut,
    TaskStatus::DeadLettered,
    TaskStatus::Skipped,
];

/// A status name that is not one of the ten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status {0:?}")]
pub struct UnknownStatus(pub String);

impl TaskStatus {
    /// The stored name, e.g. `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::DeadLettered => "dead_lettered",
            Self::Skipped => "skipped",
        }
    }

    /// Terminal statuses never change again: succeeded, failed, cancelled, timed_out, dead_lettered,
    /// skipped.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut | Self::DeadLettered | Self::Skipped
        )
    }

    /// The protobuf enum value.
    pub fn to_proto(self) -> v1::TaskStatus {
        match self {
            Self::Pending => v1::TaskStatus::Pending,
            Self::Scheduled => v1::TaskStatus::Scheduled,
            Self::Queued => v1::TaskStatus::Queued,
            Self::Running => v1::TaskStatus::Running,
            Self::Succeeded => v1::TaskStatus::Succeeded,
            Self::Failed => v1::TaskStatus::Failed,
            Self::Cancelled => v1::TaskStatus::Cancelled,
            Self::TimedOut => v1::TaskStatus::TimedOut,
            Self::DeadLettered => v1::TaskStatus::DeadLettered,
            Self::Skipped => v1::TaskStatus::Skipped,
        }
    }

    /// The status of a protobuf enum value; `None` for `TASK_STATUS_UNSPECIFIED`.
    pub fn from_proto(status: v1::TaskStatus) -> Option<Self> {
        ALL_STATUSES.into_iter().find(|s| s.to_proto() == status)
    }
}

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATUSES.into_iter().find(|status| status.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_proto_values_round_trip() {
        for status in ALL_STATUSES {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            assert_eq!(TaskStatus::from_proto(status.to_proto()), Some(status));
        }
        assert_eq!(TaskStatus::from_proto(v1::TaskStatus::Unspecified), None);
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn terminal_statuses_match_the_contract() {
        let terminal: Vec<&str> =
            ALL_STATUSES.into_iter().filter(|s| s.is_terminal()).map(TaskStatus::as_str).collect();
        assert_eq!(terminal, ["succeeded", "failed", "cancelled", "timed_out", "dead_lettered", "skipped"]);
    }
}
