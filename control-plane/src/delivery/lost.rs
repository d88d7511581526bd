//! Attempts lost with their executor (DESIGN.md section 5, item 6): a node silent for
//! `control_plane.node_lease_ms` is `lost`; each of its running attempts is marked `lost` and its task
//! runs again elsewhere (a new dispatch and outbox row). Lost attempts do not count as failures; like
//! takeovers they count as redeliveries, and past `transport.delivery_limit` the task ends
//! `dead_lettered`. A node that reports it stopped (its last heartbeat after a drain) has its attempts
//! still recorded as running recovered the same way.

use legion_common::TaskStatus;

use super::{AttemptEnd, AttemptStatus, Plan, Planner, TaskState, redispatch, within_delivery_limit};

/// Why a node's attempts are recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The node was silent past `control_plane.node_lease_ms`.
    Silent,
    /// The node reported that it stopped while the attempt was still recorded as running.
    Stopped,
}

impl Cause {
    fn reason(self, node: &str) -> String {
        match self {
            Self::Silent => format!("node {node} stopped sending heartbeats"),
            Self::Stopped => format!("node {node} stopped while the attempt was recorded as running"),
        }
    }
}

/// Plans the recovery of `states`, the locked `running` tasks of lost (or stopped) nodes.
pub fn plan(states: Vec<TaskState>, delivery_limit: u32, cause: Cause) -> Plan {
    let ids: Vec<_> = states.iter().filter(|s| s.status == TaskStatus::Running).map(|s| s.id).collect();
    let mut planner = Planner::new(states);
    for id in ids {
        let Some(state) = planner.state(&id) else { continue };
        let node = state.node.clone().unwrap_or_else(|| "an unknown node".into());
        let (attempt, redeliveries) = (state.attempt, state.redeliveries + 1);
        planner.end_attempt(AttemptEnd {
            task_id: id,
            attempt,
            status: AttemptStatus::Lost,
            error: Some(cause.reason(&node)),
            duration_ms: None,
        });
        planner.update(id, |state, update| {
            state.redeliveries = redeliveries;
            if within_delivery_limit(redeliveries, delivery_limit) {
                redispatch(state, update);
            } else {
                state.status = TaskStatus::DeadLettered;
                update.finished = true;
                update.error = Some(Some(format!(
                    "dead-lettered: delivered {} times, more than transport.delivery_limit ({delivery_limit}); \
                     the last attempt was lost with node {node}",
                    redeliveries + 1
                )));
            }
        });
    }
    planner.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::test_support::state;

    #[test]
    fn a_lost_attempt_is_redispatched() {
        let s = TaskState { attempt: 1, node: Some("n0".into()), ..state(TaskStatus::Running) };
        let plan = plan(vec![s.clone()], 5, Cause::Silent);
        let update = &plan.updates[0];
        assert_eq!(
            (update.state.status, update.state.dispatch, update.state.redeliveries),
            (TaskStatus::Pending, 2, 1)
        );
        assert!(update.not_before_ms.is_none(), "a lost attempt runs again at once");
        let stopped = super::plan(vec![s], 5, Cause::Stopped);
        assert!(stopped.ended_attempts[0].error.as_deref().is_some_and(|e| e.contains("n0 stopped while")));
        assert_eq!(stopped.updates[0].state.status, TaskStatus::Pending);
        assert_eq!(update.state.failures, 0, "a lost attempt is not a failure");
        assert!(update.redispatch);
        assert_eq!(plan.ended_attempts[0].status, AttemptStatus::Lost);
        assert!(plan.ended_attempts[0].error.as_deref().is_some_and(|e| e.contains("n0")));
    }

    #[test]
    fn past_the_delivery_limit_the_task_is_dead_lettered() {
        let s = TaskState { attempt: 2, redeliveries: 1, ..state(TaskStatus::Running) };
        let plan = plan(vec![s], 2, Cause::Stopped);
        let update = &plan.updates[0];
        assert_eq!(update.state.status, TaskStatus::DeadLettered);
        assert!(update.finished && !update.redispatch);
    }

    #[test]
    fn tasks_that_are_no_longer_running_are_left_alone() {
        assert_eq!(plan(vec![state(TaskStatus::Cancelled)], 5, Cause::Silent), Plan::default());
    }
}
