//! Task statuses as the REST API names them (`succeeded`, `timed_out`), their order in a task's life
//! and terminality, for assertions.

use legion_proto::v1::TaskStatus;

/// What the tests need to know about a [`TaskStatus`].
pub trait TaskStatusExt {
    /// The REST name: lowercase, without the `TASK_STATUS_` prefix (`dead_lettered`).
    fn rest_name(&self) -> String;
    /// Succeeded, failed, cancelled, timed out, dead-lettered or skipped.
    fn is_terminal(&self) -> bool;
    /// Position in a task's life for a single attempt: scheduled < pending < queued < running <
    /// terminal. A watched task's statuses never go down this order unless it is retried.
    fn rank(&self) -> u8;
}

impl TaskStatusExt for TaskStatus {
    fn rest_name(&self) -> String {
        self.as_str_name().trim_start_matches("TASK_STATUS_").to_ascii_lowercase()
    }

    fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut | Self::DeadLettered | Self::Skipped
        )
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::Scheduled => 1,
            Self::Pending => 2,
            Self::Queued => 3,
            Self::Running => 4,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut | Self::DeadLettered | Self::Skipped => 5,
        }
    }
}

/// The status of a wire value; unknown numbers are `Unspecified`.
pub fn from_wire(value: i32) -> TaskStatus {
    TaskStatus::try_from(value).unwrap_or(TaskStatus::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_names_are_lowercase_without_prefix() {
        assert_eq!(TaskStatus::Succeeded.rest_name(), "succeeded");
        assert_eq!(TaskStatus::DeadLettered.rest_name(), "dead_lettered");
        assert_eq!(TaskStatus::TimedOut.rest_name(), "timed_out");
    }

    #[test]
    fn terminal_statuses_rank_last() {
        let all = (0..=10).map(from_wire).collect::<Vec<_>>();
        assert_eq!(all.iter().filter(|s| s.is_terminal()).count(), 6);
        for s in &all {
            assert_eq!(s.is_terminal(), s.rank() == 5, "{s:?}");
        }
        assert!(TaskStatus::Pending.rank() < TaskStatus::Queued.rank());
        assert!(TaskStatus::Queued.rank() < TaskStatus::Running.rank());
        assert_eq!(from_wire(99), TaskStatus::Unspecified);
    }
}
