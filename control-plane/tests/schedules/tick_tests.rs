//! The scheduler's fenced write: only the lease holder at its epoch writes, a slot is written once even
//! when two writers decide it, and a decision about a schedule changed since it was read is dropped.

use legion_common::TaskStatus;
use legion_control_plane::leader::{LeaseStore, SCHEDULER_LEASE};
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::schedules::{Fence, Outcome, ScheduleStore};
use legion_control_plane::store::{Error, OutboxStore, TaskStore};
use uuid::Uuid;

use super::common::{all_fires, at, lead, record, yearly};
use crate::support::TestDb;

async fn count(store: &PgStore, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(store.pool()).await.unwrap();
    n
}

/// Nothing of a refused write is visible: no fire rows, no tasks, no outbox rows, the schedule unchanged.
async fn assert_nothing_written(store: &PgStore, name: &str, revision: i64) {
    assert_eq!(count(store, "SELECT count(*) FROM schedule_fires").await, 0);
    assert_eq!(count(store, "SELECT count(*) FROM tasks").await, 0);
    assert_eq!(count(store, "SELECT count(*) FROM outbox").await, 0);
    let schedule = store.get_schedule(name).await.unwrap().unwrap();
    assert_eq!((schedule.revision, schedule.cursor), (revision, None));
}

#[tokio::test]
async fn a_tick_writes_the_fire_the_task_its_outbox_row_and_moves_the_schedule() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let schedule = store.create_schedule(&yearly("s")).await.unwrap();
    let fired = record(&schedule, at("2026-01-01T00:00:00Z"), Outcome::Fired);
    let task = fired.task.clone().unwrap();
    let recorded = store.record_ticks(&fence, &[fired]).await.unwrap();
    assert_eq!(recorded.fired, [(schedule.id, task.id)]);
    assert_eq!((recorded.stale, recorded.duplicates), (0, 0));
    assert_eq!(recorded.changes.len(), 1);
    assert_eq!((recorded.changes[0].task_id, recorded.changes[0].status), (task.id, TaskStatus::Pending));

    let stored = store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.owner.as_str()), (TaskStatus::Pending, "jwt/tester"));
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
    let after = store.get_schedule("s").await.unwrap().unwrap();
    assert_eq!(after.revision, schedule.revision + 1);
    assert_eq!(after.cursor, Some(at("2026-01-01T00:00:00Z")));
    assert_eq!(after.next_due, Some(at("2026-01-01T00:00:01Z")));
    assert_eq!(after.last_task_id, Some(task.id));
    assert_eq!(after.updated_at, schedule.updated_at, "ticks are not operator changes");
    let fires = all_fires(&store, "s").await;
    assert_eq!(fires.len(), 1);
    assert_eq!((fires[0].outcome, fires[0].task_id, fires[0].epoch), (Outcome::Fired, Some(task.id), fence.epoch));

    // A tick with nothing due only moves next_due (and the revision).
    let mut wait = record(&after, at("2026-01-01T00:00:00Z"), Outcome::Fired);
    (wait.fire, wait.task, wait.cursor, wait.next_due) = (None, None, None, Some(at("2027-01-01T00:00:00Z")));
    let recorded = store.record_ticks(&fence, &[wait]).await.unwrap();
    assert!(recorded.fired.is_empty() && recorded.changes.is_empty());
    let waited = store.get_schedule("s").await.unwrap().unwrap();
    assert_eq!((waited.cursor, waited.next_due), (after.cursor, Some(at("2027-01-01T00:00:00Z"))));
    assert_eq!((waited.last_task_id, waited.revision), (Some(task.id), after.revision + 1));
}

#[tokio::test]
async fn only_the_lease_holder_at_its_epoch_writes() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let schedule = store.create_schedule(&yearly("s")).await.unwrap();
    let slot = at("2026-01-01T00:00:00Z");

    for bad in [
        Fence { epoch: fence.epoch + 1, ..fence.clone() },
        Fence { epoch: fence.epoch - 1, ..fence.clone() },
        Fence { holder: "replica-b".into(), ..fence.clone() },
    ] {
        let err = store.record_ticks(&bad, &[record(&schedule, slot, Outcome::Fired)]).await.unwrap_err();
        assert!(matches!(&err, Error::FailedPrecondition(m) if m.contains("no longer holds")), "{err:?}");
        assert_nothing_written(&store, "s", schedule.revision).await;
    }

    // The lease lapsed by the database's clock: the holder's own fence no longer holds either.
    sqlx::query("UPDATE leases SET expires_at = now() - interval '1 millisecond' WHERE name = $1")
        .bind(SCHEDULER_LEASE)
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.record_ticks(&fence, &[record(&schedule, slot, Outcome::Fired)]).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    assert_nothing_written(&store, "s", schedule.revision).await;

    // Another replica took over: the new epoch writes, the old one never again.
    let b = lead(&store, "replica-b").await;
    assert_eq!(b.epoch, fence.epoch + 1);
    assert!(
        store.acquire_lease(SCHEDULER_LEASE, "replica-a", std::time::Duration::from_secs(60)).await.unwrap().is_none()
    );
    let err = store.record_ticks(&fence, &[record(&schedule, slot, Outcome::Fired)]).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let recorded = store.record_ticks(&b, &[record(&schedule, slot, Outcome::Fired)]).await.unwrap();
    assert_eq!(recorded.fired.len(), 1);
    assert_eq!(all_fires(&store, "s").await[0].epoch, b.epoch);
}

#[tokio::test]
async fn a_slot_decided_twice_fires_once() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let schedule = store.create_schedule(&yearly("s")).await.unwrap();
    let slot = at("2026-01-01T00:00:00Z");
    // Two "leaders" decided the same slot on the same revision, each with its own task.
    let first = record(&schedule, slot, Outcome::Fired);
    let second = record(&schedule, slot, Outcome::Fired);
    let (a, b) = (first.task.as_ref().unwrap().id, second.task.as_ref().unwrap().id);
    let recorded = store.record_ticks(&fence, &[first, second]).await.unwrap();
    assert_eq!(recorded.duplicates, 1);
    assert_eq!(recorded.stale, 0);
    assert_eq!(recorded.fired, [(schedule.id, a)]);
    assert_eq!(recorded.changes.len(), 1);
    let fires = all_fires(&store, "s").await;
    assert_eq!(fires.len(), 1);
    assert_eq!(fires[0].task_id, Some(a));
    assert!(store.get_task(a).await.unwrap().is_some());
    assert!(store.get_task(b).await.unwrap().is_none(), "the refused fire's task is never written");
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
    let after = store.get_schedule("s").await.unwrap().unwrap();
    assert_eq!((after.revision, after.last_task_id), (schedule.revision + 1, Some(a)));

    // A slot another writer already recorded: refused, no task, yet the cursor moves past it.
    let again = record(&after, slot, Outcome::Fired);
    let refused = again.task.as_ref().unwrap().id;
    let recorded = store.record_ticks(&fence, &[again]).await.unwrap();
    assert_eq!((recorded.duplicates, recorded.fired.len(), recorded.changes.len()), (1, 0, 0));
    assert!(store.get_task(refused).await.unwrap().is_none());
    let moved = store.get_schedule("s").await.unwrap().unwrap();
    assert_eq!((moved.revision, moved.last_task_id), (after.revision + 1, Some(a)));
    assert_eq!(all_fires(&store, "s").await.len(), 1);
}

#[tokio::test]
async fn a_decision_about_a_changed_schedule_is_dropped() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let stale = store.create_schedule(&yearly("stale")).await.unwrap();
    let paused = store.create_schedule(&yearly("paused")).await.unwrap();
    let deleted = store.create_schedule(&yearly("deleted")).await.unwrap();
    let fresh = store.create_schedule(&yearly("fresh")).await.unwrap();
    let slot = at("2026-01-01T00:00:00Z");
    // Decided on revision 1; meanwhile `stale` was paused and resumed, `paused` paused, `deleted` deleted.
    let records = [
        record(&stale, slot, Outcome::Fired),
        record(&paused, slot, Outcome::Overlap),
        record(&deleted, slot, Outcome::Fired),
        record(&fresh, slot, Outcome::Fired),
    ];
    store.set_schedule_paused("stale", true).await.unwrap();
    store.set_schedule_paused("stale", false).await.unwrap();
    store.set_schedule_paused("paused", true).await.unwrap();
    assert!(store.delete_schedule("deleted").await.unwrap().is_some());
    let fresh_task = records[3].task.as_ref().unwrap().id;
    let recorded = store.record_ticks(&fence, &records).await.unwrap();
    assert_eq!((recorded.stale, recorded.duplicates), (3, 0));
    assert_eq!(recorded.fired, [(fresh.id, fresh_task)]);
    assert_eq!(count(&store, "SELECT count(*) FROM tasks").await, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM schedule_fires").await, 1);
    let after = store.get_schedule("stale").await.unwrap().unwrap();
    assert_eq!((after.revision, after.last_task_id), (3, None));
    assert_ne!(after.cursor, Some(slot));
    assert!(store.get_schedule("paused").await.unwrap().unwrap().last_fire.is_none());
    assert_eq!(store.get_schedule("fresh").await.unwrap().unwrap().last_task_id, Some(fresh_task));
}

#[tokio::test]
async fn a_record_whose_outcome_and_task_disagree_is_refused() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let schedule = store.create_schedule(&yearly("s")).await.unwrap();
    let mut without_task = record(&schedule, at("2026-01-01T00:00:00Z"), Outcome::Fired);
    without_task.task = None;
    let err = store.record_ticks(&fence, &[without_task]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidData(_)), "{err:?}");
    let mut with_task = record(&schedule, at("2026-01-01T00:00:00Z"), Outcome::Failed);
    with_task.task = Some(super::common::task("jwt/tester"));
    assert!(matches!(store.record_ticks(&fence, &[with_task]).await.unwrap_err(), Error::InvalidData(_)));
    assert_eq!(count(&store, "SELECT count(*) FROM schedule_fires").await, 0);
    assert_eq!(store.record_ticks(&fence, &[]).await.unwrap().fired, Vec::<(Uuid, Uuid)>::new());
}

#[tokio::test]
async fn a_record_that_pauses_pauses_with_its_fire_row_only() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let schedule = store.create_schedule(&yearly("s")).await.unwrap();
    let slot = at("2026-01-01T00:00:00Z");
    let mut refused = record(&schedule, slot, Outcome::Failed);
    refused.pause = true;
    let recorded = store.record_ticks(&fence, &[refused]).await.unwrap();
    assert_eq!(recorded.paused, [schedule.id]);
    let paused = store.get_schedule("s").await.unwrap().unwrap();
    assert!(paused.paused);
    assert_eq!((paused.revision, paused.cursor), (schedule.revision + 1, Some(slot)));
    assert!(paused.updated_at > schedule.updated_at, "a pause is a change an operator sees");
    assert_eq!(all_fires(&store, "s").await[0].outcome, Outcome::Failed);

    // Resumed; a pause whose slot another writer already dealt with pauses nothing.
    let resumed = store.set_schedule_paused("s", false).await.unwrap().unwrap();
    let mut again = record(&resumed, slot, Outcome::Failed);
    again.pause = true;
    let recorded = store.record_ticks(&fence, &[again]).await.unwrap();
    assert_eq!((recorded.duplicates, recorded.paused.len()), (1, 0));
    assert!(!store.get_schedule("s").await.unwrap().unwrap().paused);
}
