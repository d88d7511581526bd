//! The bounded fire history (`control_plane.schedule_history`): a pass deletes each visited schedule's
//! rows beyond its newest `keep`, oldest first, within its schedule and row limits; the leader's loop
//! sweeps every schedule.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use legion_control_plane::leader::Leadership;
use legion_control_plane::schedules::history::{self, HistorySettings};
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::schedules::{FireHistoryStore, Pruned, Schedule, ScheduleStore};
use tokio_util::sync::CancellationToken;

use super::common::{all_fires, at, yearly};
use crate::support::{TestDb, eventually};

/// Writes `count` `missed` fire rows for `schedule`, a minute apart from 2026-01-01T00:01:00Z.
async fn fill(store: &PgStore, schedule: &Schedule, count: i64) {
    sqlx::query(
        "INSERT INTO schedule_fires (schedule_id, slot, epoch, outcome, reason)
         SELECT $1, timestamptz '2026-01-01T00:00:00Z' + n * interval '1 minute', 1, 'missed', 'test'
         FROM generate_series(1, $2) AS n",
    )
    .bind(schedule.id)
    .bind(count)
    .execute(store.pool())
    .await
    .unwrap();
}

/// The slots kept for `name`: `(count, oldest)`.
async fn kept(store: &PgStore, name: &str) -> (usize, Option<DateTime<Utc>>) {
    let fires = all_fires(store, name).await;
    (fires.len(), fires.first().map(|f| f.slot))
}

/// Three schedules in id order.
async fn three(store: &PgStore) -> Vec<Schedule> {
    let mut schedules = Vec::new();
    for name in ["a", "b", "c"] {
        schedules.push(store.create_schedule(&yearly(name)).await.unwrap());
    }
    schedules.sort_by_key(|s| s.id);
    schedules
}

#[tokio::test]
async fn a_pass_keeps_the_newest_rows_of_each_schedule_it_visits() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let s = three(&store).await;
    fill(&store, &s[0], 250).await;
    fill(&store, &s[1], 50).await;
    fill(&store, &s[2], 120).await;

    // One schedule per pass: the first, then the next after it.
    let pass = store.prune_fires(None, 1, 100, 10_000).await.unwrap();
    assert_eq!(pass, Pruned { deleted: 150, visited: 1, last: Some(s[0].id) });
    assert_eq!(kept(&store, &s[0].spec.name).await, (100, Some(at("2026-01-01T02:31:00Z"))));
    assert_eq!(kept(&store, &s[2].spec.name).await.0, 120, "not visited yet");
    // The row limit stops a pass early, oldest rows first.
    let pass = store.prune_fires(Some(s[0].id), 5, 100, 10).await.unwrap();
    assert_eq!(pass, Pruned { deleted: 10, visited: 2, last: Some(s[2].id) });
    assert_eq!(kept(&store, &s[2].spec.name).await, (110, Some(at("2026-01-01T00:11:00Z"))));
    let pass = store.prune_fires(Some(s[0].id), 5, 100, 10_000).await.unwrap();
    assert_eq!(pass, Pruned { deleted: 10, visited: 2, last: Some(s[2].id) });
    assert_eq!(kept(&store, &s[2].spec.name).await, (100, Some(at("2026-01-01T00:21:00Z"))));
    assert_eq!(kept(&store, &s[1].spec.name).await.0, 50, "a short history is left whole");
    // Past the last schedule, a pass visits nothing.
    assert_eq!(store.prune_fires(Some(s[2].id), 5, 100, 10_000).await.unwrap(), Pruned::default());
    // The newest fire of each schedule is untouched.
    let newest = store.get_schedule(&s[0].spec.name).await.unwrap().unwrap().last_fire.unwrap();
    assert_eq!(newest.slot, at("2026-01-01T04:10:00Z"));
}

#[tokio::test]
async fn the_leader_sweeps_every_schedule_and_keeps_up() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let s = three(&store).await;
    for schedule in &s {
        fill(&store, schedule, 130).await;
    }
    let (lead, leadership) = tokio::sync::watch::channel(Some(Leadership { epoch: 1 }));
    let shutdown = CancellationToken::new();
    let settings = HistorySettings { keep: 100, every: Duration::from_millis(50) };
    let sweeper: Arc<dyn FireHistoryStore> = Arc::new(store.clone());
    let running = tokio::spawn(history::run(sweeper, settings, leadership, shutdown.clone()));
    for schedule in &s {
        eventually("the history to be pruned", Duration::from_secs(30), || async {
            (kept(&store, &schedule.spec.name).await.0 == 100).then_some(())
        })
        .await;
    }
    // Rows written later are pruned by the next sweeps.
    let extra = store.create_schedule(&yearly("d")).await.unwrap();
    fill(&store, &extra, 101).await;
    eventually("the newer history to be pruned", Duration::from_secs(30), || async {
        (kept(&store, "d").await == (100, Some(at("2026-01-01T00:02:00Z")))).then_some(())
    })
    .await;
    drop(lead);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
}
