//! The attempt deadline (DESIGN.md section 5, items 5 and 6): "a task never stays running past its
//! timeout plus the lease, whatever happens to the executor". The executor enforces `timeout_ms` on the
//! runner; should it fail to report (hung, partitioned, or its report lost), the lease sweeper ends every
//! `running` attempt that started (`task_attempts.started_at`, PostgreSQL clock) more than the task's
//! `timeout_ms` plus `control_plane.node_lease_ms` ago. The attempt becomes `timed_out` and counts as a
//! failure, exactly like a timeout the executor reports: the task is retried after its backoff while
//! attempts remain, or ends `timed_out`. The executor learns from its next heartbeat (`abort`) that the
//! attempt is no longer current, and a late completion of it is stale.

use std::time::Duration;

use legion_common::TaskStatus;

use super::{AttemptEnd, AttemptStatus, Backoff, Failed, Plan, Planner, TaskState, fail};

/// Plans the end of the overdue attempts of `states`, the locked tasks whose current attempt started
/// more than `timeout_ms + lease` ago. Tasks that are no longer `running` are left alone.
pub fn plan(states: Vec<TaskState>, lease: Duration, backoff: &mut Backoff<'_>) -> Plan {
    let overdue: Vec<_> =
        states.iter().filter(|s| s.status == TaskStatus::Running).map(|s| (s.id, s.attempt, s.timeout_ms)).collect();
    let mut planner = Planner::new(states);
    let lease_ms = lease.as_millis();
    for (id, attempt, timeout_ms) in overdue {
        let reason = format!(
            "the attempt ran past its timeout_ms ({timeout_ms}) plus control_plane.node_lease_ms ({lease_ms}) \
             without a report from its executor"
        );
        planner.end_attempt(AttemptEnd {
            task_id: id,
            attempt,
            status: AttemptStatus::TimedOut,
            error: Some(reason.clone()),
            duration_ms: None,
        });
        fail(&mut planner, id, Failed::Timeout, reason, backoff);
    }
    planner.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::test_support::{backoff, state};

    fn running(max_attempts: u32, failures: u32) -> TaskState {
        TaskState {
            attempt: failures + 1,
            failures,
            max_attempts,
            timeout_ms: 2000,
            node: Some("n1".into()),
            ..state(TaskStatus::Running)
        }
    }

    #[test]
    fn an_overdue_attempt_times_out_and_is_retried_after_its_backoff() {
        let s = running(3, 0);
        let mut draw = || 0.0;
        let plan = plan(vec![s], Duration::from_millis(500), &mut backoff(&mut draw));
        let end = &plan.ended_attempts[0];
        assert_eq!((end.status, end.attempt), (AttemptStatus::TimedOut, 1));
        let reason = end.error.as_deref().unwrap_or_default();
        assert!(reason.contains("timeout_ms (2000)") && reason.contains("node_lease_ms (500)"), "{reason}");
        let update = &plan.updates[0];
        assert_eq!((update.state.status, update.state.failures), (TaskStatus::Scheduled, 1));
        assert_eq!(update.not_before_ms, Some(1000));
        assert_eq!(update.error, Some(Some(reason.to_owned())));
        assert!(!update.finished && !update.redispatch);
    }

    #[test]
    fn on_the_last_attempt_the_task_ends_timed_out() {
        let s = running(2, 1);
        let mut draw = || 0.0;
        let plan = plan(vec![s], Duration::from_millis(500), &mut backoff(&mut draw));
        let update = &plan.updates[0];
        assert_eq!((update.state.status, update.state.failures), (TaskStatus::TimedOut, 2));
        assert!(update.finished && update.not_before_ms.is_none());
        assert_eq!(plan.changes[0].status, TaskStatus::TimedOut);
    }

    #[test]
    fn tasks_no_longer_running_are_left_alone() {
        let mut draw = || 0.0;
        let states = vec![state(TaskStatus::Cancelled), state(TaskStatus::Scheduled), state(TaskStatus::Succeeded)];
        assert_eq!(plan(states, Duration::from_secs(1), &mut backoff(&mut draw)), Plan::default());
    }
}
