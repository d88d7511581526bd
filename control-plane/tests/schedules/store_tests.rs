//! The schedule store: documents round-trip, names are unique, pages, pause and resume, delete, the fire
//! history, the scheduler's reads (due schedules, unfinished previous runs, the next due instant) and
//! the control-plane replicas.

use std::time::Duration;

use legion_common::TaskStatus;
use legion_control_plane::schedules::plan::{Plan, plan};
use legion_control_plane::schedules::tick::Misfire;
use legion_control_plane::store::schedules::{CadenceSpec, Outcome, ScheduleStore};
use legion_control_plane::store::{Error, TaskStore};
use serde_json::json;

use super::common::{all_fires, at, every_second, lead, record, spec, yearly};
use crate::support::TestDb;

#[tokio::test]
async fn a_schedule_round_trips_and_its_name_is_unique() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let mut document =
        spec("nightly", CadenceSpec::Cron { expression: "30 2 * * *".into(), timezone: "Europe/Berlin".into() });
    document.transformation = Some(json!({"engine": "jq", "expr": ".args"}));
    document.chain = Some("alerts".into());
    document.region = Some("eu-west".into());
    document.misfire = Misfire::Skip;
    let created = store.create_schedule(&document).await.unwrap();
    assert_eq!(created.spec, document);
    assert_eq!((created.paused, created.revision, created.cursor, created.last_task_id), (false, 1, None, None));
    assert_eq!(created.active_since, created.created_at);
    assert_eq!(created.next_due, Some(created.created_at), "the scheduler computes the first slot at once");
    assert_eq!(created.last_fire, None);
    assert_eq!(store.get_schedule("nightly").await.unwrap(), Some(created.clone()));
    assert_eq!(store.get_schedule("other").await.unwrap(), None);

    let interval = store.create_schedule(&every_second("ticker")).await.unwrap();
    assert_eq!(interval.spec.cadence, CadenceSpec::Interval { interval_ms: 1000 });
    assert_ne!(interval.id, created.id);

    let err = store.create_schedule(&yearly("nightly")).await.unwrap_err();
    assert!(matches!(&err, Error::AlreadyExists(m) if m == "name: schedule \"nightly\" already exists"), "{err:?}");
}

#[tokio::test]
async fn schedules_list_in_pages_by_name_with_their_newest_fire() {
    let db = TestDb::create().await;
    let store = db.store().await;
    for name in ["e", "c", "a", "d", "b"] {
        store.create_schedule(&yearly(name)).await.unwrap();
    }
    let (first, more) = store.list_schedules(None, 2).await.unwrap();
    assert_eq!(first.iter().map(|s| s.spec.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(more);
    let (second, more) = store.list_schedules(Some("b"), 2).await.unwrap();
    assert_eq!(second.iter().map(|s| s.spec.name.as_str()).collect::<Vec<_>>(), ["c", "d"]);
    assert!(more);
    let (last, more) = store.list_schedules(Some("d"), 2).await.unwrap();
    assert_eq!(last.iter().map(|s| s.spec.name.as_str()).collect::<Vec<_>>(), ["e"]);
    assert!(!more);

    // The newest fire (by slot) comes with each schedule, with its task's current status.
    let fence = lead(&store, "replica-a").await;
    let a = store.get_schedule("a").await.unwrap().unwrap();
    let fired = record(&a, at("2026-01-01T00:00:00Z"), Outcome::Fired);
    let task_id = fired.task.as_ref().unwrap().id;
    store.record_ticks(&fence, &[fired]).await.unwrap();
    let a = store.get_schedule("a").await.unwrap().unwrap();
    store.record_ticks(&fence, &[record(&a, at("2025-01-01T00:00:00Z"), Outcome::Missed)]).await.unwrap();
    let (page, _) = store.list_schedules(None, 1).await.unwrap();
    let fire = page[0].last_fire.clone().unwrap();
    assert_eq!((fire.slot, fire.outcome, fire.task_id), (at("2026-01-01T00:00:00Z"), Outcome::Fired, Some(task_id)));
    assert_eq!((fire.task_status, fire.epoch), (Some(TaskStatus::Pending), fence.epoch));
    assert_eq!(page[0].last_task_id, Some(task_id));
    store.cancel_task(task_id).await.unwrap();
    let fire = store.get_schedule("a").await.unwrap().unwrap().last_fire.unwrap();
    assert_eq!(fire.task_status, Some(TaskStatus::Cancelled));
}

#[tokio::test]
async fn pause_and_resume_move_the_revision_and_resume_skips_the_slots_passed_meanwhile() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let created = store.create_schedule(&spec("ticker", CadenceSpec::Interval { interval_ms: 1000 })).await.unwrap();
    assert_eq!(store.due_schedules(10).await.unwrap().1.len(), 1);

    let paused = store.set_schedule_paused("ticker", true).await.unwrap().unwrap();
    assert!(paused.paused);
    assert_eq!(paused.revision, 2);
    assert!(paused.updated_at > created.updated_at);
    assert!(store.due_schedules(10).await.unwrap().1.is_empty(), "a paused schedule is never due");
    assert_eq!(store.next_due().await.unwrap().1, None);
    // Pausing again changes nothing.
    assert_eq!(store.set_schedule_paused("ticker", true).await.unwrap().unwrap().revision, 2);
    assert_eq!(store.set_schedule_paused("unknown", true).await.unwrap(), None);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resumed = store.set_schedule_paused("ticker", false).await.unwrap().unwrap();
    assert!(!resumed.paused);
    assert_eq!(resumed.revision, 3);
    assert!(resumed.active_since >= created.active_since + chrono::Duration::milliseconds(2500));
    assert_eq!(resumed.cursor, Some(resumed.active_since));
    assert_eq!(resumed.next_due, Some(resumed.active_since));
    // Deciding it a second after the resume fires the one slot of that second; those passed while
    // paused are gone.
    let (_, due) = store.due_schedules(10).await.unwrap();
    let grace = chrono::Duration::seconds(10);
    let decided = plan(&due[0], resumed.active_since + chrono::Duration::seconds(1), grace, None);
    let Plan::Fire { slot, missed, reason, .. } = decided else { panic!("fires: {decided:?}") };
    assert!(slot > resumed.active_since, "{slot} after the resume at {}", resumed.active_since);
    assert_eq!((missed, reason), (0, None));
    // The interval keeps its grid: slots stay whole intervals from the creation.
    assert_eq!(slot.signed_duration_since(created.created_at).num_microseconds().unwrap() % 1_000_000, 0);
}

#[tokio::test]
async fn deleting_a_schedule_deletes_its_history_but_not_its_tasks() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let schedule = store.create_schedule(&yearly("doomed")).await.unwrap();
    let fired = record(&schedule, at("2026-01-01T00:00:00Z"), Outcome::Fired);
    let task_id = fired.task.as_ref().unwrap().id;
    store.record_ticks(&fence, &[fired]).await.unwrap();
    assert_eq!(all_fires(&store, "doomed").await.len(), 1);

    assert_eq!(store.delete_schedule("doomed").await.unwrap(), Some(schedule.id));
    assert_eq!(store.delete_schedule("doomed").await.unwrap(), None);
    assert_eq!(store.get_schedule("doomed").await.unwrap(), None);
    assert_eq!(store.list_fires("doomed", None, 10).await.unwrap(), None);
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM schedule_fires WHERE schedule_id = $1")
        .bind(schedule.id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert!(store.get_task(task_id).await.unwrap().is_some(), "fired tasks are kept");
    // A schedule created again under the name starts a new history.
    let again = store.create_schedule(&yearly("doomed")).await.unwrap();
    assert_ne!(again.id, schedule.id);
    assert!(all_fires(&store, "doomed").await.is_empty());
}

#[tokio::test]
async fn the_fire_history_pages_newest_slot_first() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let outcomes = [Outcome::Fired, Outcome::Overlap, Outcome::Fired, Outcome::Failed, Outcome::Missed];
    let mut tasks = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let schedule = store.get_schedule("h").await.unwrap();
        let schedule = match schedule {
            Some(s) => s,
            None => store.create_schedule(&yearly("h")).await.unwrap(),
        };
        let slot = at("2026-01-01T00:00:00Z") + chrono::Duration::seconds(i64::try_from(i).unwrap());
        let r = record(&schedule, slot, outcome);
        tasks.push(r.task.as_ref().map(|t| t.id));
        let recorded = store.record_ticks(&fence, &[r]).await.unwrap();
        assert_eq!((recorded.stale, recorded.duplicates), (0, 0));
    }
    let (page, more) = store.list_fires("h", None, 2).await.unwrap().unwrap();
    assert!(more);
    assert_eq!(page.iter().map(|f| f.outcome).collect::<Vec<_>>(), [Outcome::Missed, Outcome::Failed]);
    assert_eq!(page[0].reason.as_deref(), Some("test missed"));
    assert_eq!((page[0].task_id, page[0].task_status), (None, None));
    let (page, more) = store.list_fires("h", Some(page[1].slot), 2).await.unwrap().unwrap();
    assert!(more);
    assert_eq!(page.iter().map(|f| f.outcome).collect::<Vec<_>>(), [Outcome::Fired, Outcome::Overlap]);
    assert_eq!((page[0].task_id, page[0].task_status), (tasks[2], Some(TaskStatus::Pending)));
    let (page, more) = store.list_fires("h", Some(page[1].slot), 2).await.unwrap().unwrap();
    assert!(!more);
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].slot, at("2026-01-01T00:00:00Z"));
    assert_eq!(store.list_fires("nope", None, 2).await.unwrap(), None);
}

#[tokio::test]
async fn due_schedules_know_whether_the_previous_run_is_unfinished() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let fence = lead(&store, "replica-a").await;
    let schedule = store.create_schedule(&every_second("runs")).await.unwrap();
    let (now, due) = store.due_schedules(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(!due[0].previous_running);
    assert!(now >= schedule.created_at);
    let (db_now, next) = store.next_due().await.unwrap();
    assert_eq!(next, Some(schedule.created_at));
    assert!(db_now >= now);

    // A fire whose task is pending: the previous run is unfinished.
    let mut fired = record(&schedule, schedule.created_at, Outcome::Fired);
    fired.next_due = Some(now);
    let root = fired.task.as_ref().unwrap().id;
    store.record_ticks(&fence, &[fired]).await.unwrap();
    let (_, due) = store.due_schedules(10).await.unwrap();
    assert!(due[0].previous_running);
    assert_eq!(due[0].schedule.last_task_id, Some(root));

    // The root finished, a task of its chain run did not: still unfinished, until that one ends.
    store.cancel_task(root).await.unwrap();
    let child = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tasks (id, function, status, args, priority, max_attempts, timeout_ms, root_id, parent_id, chain)
         VALUES ($1, 'core.util.echo', 'queued', '{}', 0, 1, 1000, $2, $2, 'c')",
    )
    .bind(child)
    .bind(root)
    .execute(store.pool())
    .await
    .unwrap();
    assert!(store.due_schedules(10).await.unwrap().1[0].previous_running);
    sqlx::query("UPDATE tasks SET status = 'succeeded' WHERE id = $1").bind(child).execute(store.pool()).await.unwrap();
    assert!(!store.due_schedules(10).await.unwrap().1[0].previous_running);

    // Earliest first, at most `limit`; a schedule due later is not due.
    let later = store.create_schedule(&yearly("later")).await.unwrap();
    sqlx::query("UPDATE schedules SET next_due = now() + interval '1 hour' WHERE id = $1")
        .bind(later.id)
        .execute(store.pool())
        .await
        .unwrap();
    store.create_schedule(&yearly("third")).await.unwrap();
    let (_, due) = store.due_schedules(10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.schedule.spec.name.as_str()).collect::<Vec<_>>(), ["runs", "third"]);
    assert_eq!(store.due_schedules(1).await.unwrap().1.len(), 1);
}

#[tokio::test]
async fn control_plane_replicas_are_recorded_and_forgotten() {
    let db = TestDb::create().await;
    let store = db.store().await;
    store.touch_control_plane("host-a/1", "1.2.3").await.unwrap();
    store.touch_control_plane("host-b/2", "1.2.3").await.unwrap();
    let first = store.list_control_planes(Duration::from_secs(30)).await.unwrap();
    assert_eq!(first.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["host-a/1", "host-b/2"]);
    assert_eq!(first[0].version, "1.2.3");
    store.touch_control_plane("host-a/1", "1.2.4").await.unwrap();
    let again = store.list_control_planes(Duration::from_secs(30)).await.unwrap();
    assert_eq!(again[0].version, "1.2.4");
    assert_eq!(again[0].started_at, first[0].started_at, "a touch keeps the start");
    assert!(again[0].last_seen > first[0].last_seen);

    // Silent replicas drop out of the list; a clean stop removes the row.
    sqlx::query("UPDATE nodes SET last_heartbeat = now() - interval '1 minute' WHERE name = 'host-b/2'")
        .execute(store.pool())
        .await
        .unwrap();
    let live = store.list_control_planes(Duration::from_secs(30)).await.unwrap();
    assert_eq!(live.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["host-a/1"]);
    store.forget_control_plane("host-a/1").await.unwrap();
    assert!(store.list_control_planes(Duration::from_secs(3600)).await.unwrap().iter().all(|r| r.name != "host-a/1"));

    // Executors are not replicas, and their rows are never taken over.
    crate::support::register_core(&store, "exec-1", &["echo"]).await;
    assert!(store.list_control_planes(Duration::from_secs(3600)).await.unwrap().iter().all(|r| r.name != "exec-1"));
    let err = store.touch_control_plane("exec-1", "1.2.3").await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
}
