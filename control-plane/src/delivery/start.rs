//! `StartTask` decisions (docs/architecture.md, delivery protocol step 3).
//!
//! For each item, against the locked task row:
//! - task finished or cancelled, or the message's `dispatch` is not current → drop;
//! - task `pending`, `queued`, or `scheduled` and due → `attempt += 1`, `running`, a new attempt row, run;
//! - task `running` and the message is a redelivery → the previous consumer is gone: its attempt is
//!   `lost`, `redeliveries += 1`, and the task runs again (a takeover), unless it has now been delivered
//!   more than `transport.delivery_limit` times, which ends it `dead_lettered`;
//! - task `running` and not a redelivery → a duplicate publish → drop.

use legion_common::TaskStatus;
use uuid::Uuid;

use super::{AttemptEnd, AttemptStatus, NewAttempt, Plan, Planner, TaskState, within_delivery_limit};

/// One start request of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartItem {
    /// The task, as sent (may be malformed).
    pub task_id: String,
    /// Dispatch number of the broker message.
    pub dispatch: u32,
    /// The broker's redelivered flag.
    pub redelivered: bool,
}

/// The answer to one start request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the task as this attempt.
    Run {
        /// The fencing token to report in `CompleteTask`.
        attempt: u32,
    },
    /// Do not run; ack the message.
    Drop {
        /// Why.
        reason: String,
    },
}

/// Whether a decision ended a task `dead_lettered` (for metrics).
pub fn is_dead_letter(reason: &str) -> bool {
    reason.starts_with(DEAD_LETTER_PREFIX)
}

const DEAD_LETTER_PREFIX: &str = "dead-lettered";

/// The ids of the valid task ids among `items`, for the store to lock.
pub fn task_ids(items: &[StartItem]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = items.iter().filter_map(|i| Uuid::parse_str(&i.task_id).ok()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Decides every item of a batch, in order, for `node`. `states` are the locked rows of the batch's
/// tasks (unknown ids are simply absent). Returns one decision per item and the writes.
pub fn plan(states: Vec<TaskState>, items: &[StartItem], node: &str, delivery_limit: u32) -> (Vec<Decision>, Plan) {
    let mut planner = Planner::new(states);
    let decisions = items.iter().map(|item| decide(&mut planner, item, node, delivery_limit)).collect();
    (decisions, planner.finish())
}

fn decide(planner: &mut Planner, item: &StartItem, node: &str, delivery_limit: u32) -> Decision {
    let drop = |reason: String| Decision::Drop { reason };
    let Ok(id) = Uuid::parse_str(&item.task_id) else {
        return drop(format!("task_id {:?} is not a UUID", item.task_id));
    };
    let Some(state) = planner.state(&id) else { return drop("unknown task".into()) };
    if state.status.is_terminal() {
        return drop(format!("task is {}", state.status));
    }
    if item.dispatch != state.dispatch {
        return drop(format!("stale dispatch {} (current {})", item.dispatch, state.dispatch));
    }
    match state.status {
        TaskStatus::Pending | TaskStatus::Queued => run(planner, id, node),
        TaskStatus::Scheduled if state.due => run(planner, id, node),
        TaskStatus::Scheduled => drop("task is scheduled for later".into()),
        TaskStatus::Running if item.redelivered => takeover(planner, id, node, delivery_limit),
        TaskStatus::Running => drop(format!("duplicate delivery: attempt {} is running", state.attempt)),
        // Terminal statuses returned above.
        _ => drop(format!("task is {}", state.status)),
    }
}

fn run(planner: &mut Planner, id: Uuid, node: &str) -> Decision {
    let mut attempt = 0;
    planner.update(id, |state, update| {
        state.attempt += 1;
        state.status = TaskStatus::Running;
        state.node = Some(node.to_owned());
        update.started = true;
        attempt = state.attempt;
    });
    planner.insert_attempt(NewAttempt {
        task_id: id,
        attempt,
        node: node.to_owned(),
        status: AttemptStatus::Running,
        error: None,
    });
    Decision::Run { attempt }
}

fn takeover(planner: &mut Planner, id: Uuid, node: &str, delivery_limit: u32) -> Decision {
    let Some(state) = planner.state(&id) else { return Decision::Drop { reason: "unknown task".into() } };
    let previous = state.attempt;
    let redeliveries = state.redeliveries + 1;
    let lost_from = state.node.clone().unwrap_or_else(|| "an unknown node".into());
    planner.end_attempt(AttemptEnd {
        task_id: id,
        attempt: previous,
        status: AttemptStatus::Lost,
        error: Some(format!("redelivered after the consumer on {lost_from} vanished")),
        duration_ms: None,
    });
    if within_delivery_limit(redeliveries, delivery_limit) {
        planner.update(id, |state, _| state.redeliveries = redeliveries);
        return run(planner, id, node);
    }
    let reason = format!(
        "{DEAD_LETTER_PREFIX}: delivered {} times, more than transport.delivery_limit ({delivery_limit})",
        redeliveries + 1
    );
    planner.update(id, |state, update| {
        state.redeliveries = redeliveries;
        state.status = TaskStatus::DeadLettered;
        update.finished = true;
        update.error = Some(Some(reason.clone()));
    });
    Decision::Drop { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::test_support::state;
    use crate::events::StatusChange;

    fn item(state: &TaskState, redelivered: bool) -> StartItem {
        StartItem { task_id: state.id.to_string(), dispatch: state.dispatch, redelivered }
    }

    fn only(states: Vec<TaskState>, items: &[StartItem]) -> (Vec<Decision>, Plan) {
        plan(states, items, "n1", 3)
    }

    #[test]
    fn a_queued_task_runs_as_attempt_one() {
        for status in [TaskStatus::Pending, TaskStatus::Queued, TaskStatus::Scheduled] {
            let s = state(status);
            let (decisions, plan) = only(vec![s.clone()], &[item(&s, false)]);
            assert_eq!(decisions, vec![Decision::Run { attempt: 1 }], "{status}");
            let update = &plan.updates[0];
            assert_eq!((update.state.status, update.state.attempt), (TaskStatus::Running, 1));
            assert_eq!(update.state.node.as_deref(), Some("n1"));
            assert!(update.started && !update.finished && !update.redispatch);
            assert_eq!(plan.new_attempts.len(), 1);
            assert_eq!(plan.new_attempts[0].status, AttemptStatus::Running);
            assert_eq!(plan.changes, vec![StatusChange { task_id: s.id, status: TaskStatus::Running, attempt: 1 }]);
        }
    }

    #[test]
    fn finished_cancelled_and_unknown_tasks_are_dropped() {
        for status in [TaskStatus::Succeeded, TaskStatus::Cancelled, TaskStatus::Failed, TaskStatus::DeadLettered] {
            let s = state(status);
            let (decisions, plan) = only(vec![s.clone()], &[item(&s, false)]);
            assert!(matches!(&decisions[0], Decision::Drop { reason } if reason.contains(status.as_str())));
            assert_eq!(plan, Plan::default());
        }
        let (decisions, _) =
            only(vec![], &[StartItem { task_id: Uuid::now_v7().to_string(), dispatch: 1, redelivered: false }]);
        assert_eq!(decisions, vec![Decision::Drop { reason: "unknown task".into() }]);
        let (decisions, _) = only(vec![], &[StartItem { task_id: "nope".into(), dispatch: 1, redelivered: false }]);
        assert!(matches!(&decisions[0], Decision::Drop { reason } if reason.contains("not a UUID")));
    }

    #[test]
    fn a_stale_dispatch_is_dropped() {
        let s = TaskState { dispatch: 2, ..state(TaskStatus::Queued) };
        let (decisions, plan) = only(vec![s.clone()], &[StartItem { dispatch: 1, ..item(&s, true) }]);
        assert_eq!(decisions, vec![Decision::Drop { reason: "stale dispatch 1 (current 2)".into() }]);
        assert!(plan.updates.is_empty());
    }

    #[test]
    fn a_scheduled_task_that_is_not_due_is_dropped() {
        let s = TaskState { due: false, ..state(TaskStatus::Scheduled) };
        let (decisions, _) = only(vec![s.clone()], &[item(&s, false)]);
        assert!(matches!(&decisions[0], Decision::Drop { .. }));
    }

    #[test]
    fn a_duplicate_publish_of_a_running_task_is_dropped() {
        let s = TaskState { attempt: 1, node: Some("n0".into()), ..state(TaskStatus::Running) };
        let (decisions, plan) = only(vec![s.clone()], &[item(&s, false)]);
        assert_eq!(decisions, vec![Decision::Drop { reason: "duplicate delivery: attempt 1 is running".into() }]);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_redelivery_takes_over_and_marks_the_old_attempt_lost() {
        let s = TaskState { attempt: 1, node: Some("n0".into()), ..state(TaskStatus::Running) };
        let (decisions, plan) = only(vec![s.clone()], &[item(&s, true)]);
        assert_eq!(decisions, vec![Decision::Run { attempt: 2 }]);
        assert_eq!(plan.ended_attempts.len(), 1);
        assert_eq!((plan.ended_attempts[0].attempt, plan.ended_attempts[0].status), (1, AttemptStatus::Lost));
        let update = &plan.updates[0];
        assert_eq!((update.state.attempt, update.state.redeliveries), (2, 1));
        assert_eq!(update.state.node.as_deref(), Some("n1"));
        assert_eq!(plan.new_attempts[0].attempt, 2);
    }

    #[test]
    fn takeovers_past_the_delivery_limit_dead_letter_the_task() {
        // Limit 3: the first delivery plus two takeovers; the third takeover is the fourth delivery.
        let s = TaskState { attempt: 3, redeliveries: 2, ..state(TaskStatus::Running) };
        let (decisions, plan) = only(vec![s.clone()], &[item(&s, true)]);
        assert!(
            matches!(&decisions[0], Decision::Drop { reason } if is_dead_letter(reason) && reason.contains("4 times"))
        );
        let update = &plan.updates[0];
        assert_eq!(update.state.status, TaskStatus::DeadLettered);
        assert!(update.finished);
        assert!(matches!(&update.error, Some(Some(e)) if e.contains("transport.delivery_limit (3)")));
        assert_eq!(plan.ended_attempts[0].status, AttemptStatus::Lost);
        assert!(plan.new_attempts.is_empty());
        assert_eq!(plan.changes[0].status, TaskStatus::DeadLettered);

        let s = TaskState { attempt: 2, redeliveries: 1, ..state(TaskStatus::Running) };
        let (decisions, _) = only(vec![s.clone()], &[item(&s, true)]);
        assert_eq!(decisions, vec![Decision::Run { attempt: 3 }]);
    }

    #[test]
    fn items_of_one_batch_see_each_other() {
        let s = state(TaskStatus::Queued);
        // The same message twice (a duplicate publish), then a redelivery of it in the same batch.
        let (decisions, plan) = only(vec![s.clone()], &[item(&s, false), item(&s, false), item(&s, true)]);
        assert_eq!(decisions[0], Decision::Run { attempt: 1 });
        assert!(matches!(&decisions[1], Decision::Drop { .. }));
        assert_eq!(decisions[2], Decision::Run { attempt: 2 });
        assert_eq!(plan.updates.len(), 1, "one row update per task");
        assert_eq!(plan.updates[0].state.attempt, 2);
        // Attempt 1 was inserted by this batch, so it is inserted as lost rather than updated.
        let statuses: Vec<(u32, AttemptStatus)> = plan.new_attempts.iter().map(|a| (a.attempt, a.status)).collect();
        assert_eq!(statuses, vec![(1, AttemptStatus::Lost), (2, AttemptStatus::Running)]);
        assert!(plan.ended_attempts.is_empty());
        assert_eq!(plan.changes.len(), 2);
    }

    #[test]
    fn ids_to_lock_are_sorted_and_unique() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let items: Vec<StartItem> = [b, a, b]
            .iter()
            .map(|id| StartItem { task_id: id.to_string(), dispatch: 1, redelivered: false })
            .chain([StartItem { task_id: "bad".into(), dispatch: 1, redelivered: false }])
            .collect();
        assert_eq!(task_ids(&items), vec![a, b]);
    }
}
