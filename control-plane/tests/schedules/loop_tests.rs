//! The scheduler loop inside the whole control plane (`run_with`, a real leader election with a short
//! lease, the outbox publisher on RabbitMQ). No executor runs the fired tasks, so they stay unfinished.

use std::time::Duration;

use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use legion_control_plane::leader::{LeaseStore, SCHEDULER_LEASE};
use legion_control_plane::schedules::plan::rfc3339;
use legion_control_plane::schedules::tick::Misfire;
use legion_control_plane::store::TaskStore;
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::schedules::{CadenceSpec, Fire, Outcome, ScheduleSpec, ScheduleStore};
use serde_json::json;

use super::common::{OWNER, all_fires, every_second, spec, yearly};
use crate::support::stack::Stack;
use crate::support::{eventually, register_core};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A control plane that leads at once (lease 1 s), polls schedules every 100 ms and re-reads policies
/// every 100 ms, with `core.util.echo` in the catalog; and a store on its database.
pub async fn start() -> (Stack, PgStore) {
    let stack = Stack::start(true, |s| {
        s.control_plane.leader_lease_ms = 1000;
        s.control_plane.schedule_poll_ms = 100;
        s.auth.cache_ttl_ms = 100;
    })
    .await;
    let store = stack.db.store().await;
    register_core(&store, "exec-1", &["echo"]).await;
    (stack, store)
}

/// The fire rows of `name` once `done` holds for them.
pub async fn fires_until(store: &PgStore, name: &str, what: &str, done: impl Fn(&[Fire]) -> bool) -> Vec<Fire> {
    eventually(what, DEADLINE, || async {
        let fires = all_fires(store, name).await;
        done(&fires).then_some(fires)
    })
    .await
}

pub fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let micros = b.signed_duration_since(a).num_microseconds().unwrap() as f64;
    micros / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_schedule_fires_each_slot_once_overlap_waits_and_resume_skips_the_pause() {
    let (stack, store) = start().await;
    let ticker = store.create_schedule(&every_second("ticker")).await.unwrap();
    let serial = store
        .create_schedule(&ScheduleSpec {
            created_by: "jwt/serial".into(),
            ..spec("serial", CadenceSpec::Interval { interval_ms: 1000 })
        })
        .await
        .unwrap();
    let stamped = ScheduleSpec {
        transformation: Some(json!({"engine": "jq", "expr": ".args + {slot: .schedule.slot, name: .schedule.name}"})),
        created_by: "jwt/stamped".into(),
        ..every_second("stamped")
    };
    store.create_schedule(&stamped).await.unwrap();

    // One task per slot: every slot from the creation on is dealt with once, as a row or counted in
    // the `missed` of the next row (a tick more than a slot late), and every row fired.
    fires_until(&store, "ticker", "four fires of ticker", |f| f.len() >= 4).await;
    let paused = store.set_schedule_paused("ticker", true).await.unwrap().unwrap();
    let fires = all_fires(&store, "ticker").await;
    assert_eq!(fires[0].slot, ticker.created_at, "the first slot is the creation");
    for pair in fires.windows(2) {
        #[allow(clippy::cast_precision_loss)]
        let expected = 1.0 + pair[1].missed as f64;
        assert!((seconds_between(pair[0].slot, pair[1].slot) - expected).abs() < 1e-6, "{pair:?}");
    }
    assert!(fires.iter().all(|f| f.outcome == Outcome::Fired && f.task_id.is_some()), "{fires:?}");
    let ids: Vec<uuid::Uuid> = fires.iter().filter_map(|f| f.task_id).collect();
    let (tasks,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks WHERE owner = $1")
        .bind(OWNER)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(usize::try_from(tasks).unwrap(), ids.len(), "one task per fire row");
    let first = store.get_task(ids[0]).await.unwrap().unwrap();
    assert_eq!((first.function.as_str(), first.args.clone(), first.priority), ("core.util.echo", json!({"n": 1}), 3));
    // The outbox publisher took the tasks to RabbitMQ.
    eventually("the first task to be queued", DEADLINE, || async {
        (store.get_task(ids[0]).await.unwrap().unwrap().status == TaskStatus::Queued).then_some(())
    })
    .await;

    // Paused for 2.5 s, then resumed: no slot of the pause ever fires.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resumed = store.set_schedule_paused("ticker", false).await.unwrap().unwrap();
    let count = fires.len();
    let fires = fires_until(&store, "ticker", "fires after the resume", |f| f.len() >= count + 2).await;
    for fire in &fires {
        assert!(fire.slot <= paused.updated_at || fire.slot > resumed.active_since, "{fire:?} fired a paused slot");
    }

    // Without overlap: the first task is unfinished, so the next slots are passed over, naming it.
    let fires = fires_until(&store, "serial", "overlapping slots of serial", |f| f.len() >= 3).await;
    let previous = fires[0].task_id.unwrap();
    assert_eq!(fires[0].outcome, Outcome::Fired);
    for fire in &fires[1..] {
        assert_eq!((fire.outcome, fire.task_id), (Outcome::Overlap, None), "{fire:?}");
        assert_eq!(fire.reason.clone().unwrap(), format!("previous task {previous} unfinished"));
    }
    assert_eq!(store.get_schedule("serial").await.unwrap().unwrap().last_task_id, Some(previous));
    // Once it ends, the next slot fires again.
    store.cancel_task(previous).await.unwrap();
    let count = fires.len();
    fires_until(&store, "serial", "serial to fire again", |f| {
        f[count..].iter().any(|x| x.outcome == Outcome::Fired && x.task_id != Some(previous))
    })
    .await;
    assert!(!serial.spec.allow_overlap);

    // A jq transformation puts the slot into the args.
    let fires = fires_until(&store, "stamped", "a fire of stamped", |f| !f.is_empty()).await;
    let task = store.get_task(fires[0].task_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(task.args, json!({"n": 1, "slot": rfc3339(fires[0].slot), "name": "stamped"}));

    let (_, metrics) = stack.admin("/metrics").await;
    assert!(metrics.contains("legion_schedule_fires_total{outcome=\"fired\"}"), "{metrics}");
    assert!(metrics.contains("legion_schedule_fires_total{outcome=\"overlap\"}"), "{metrics}");
    assert!(metrics.contains("legion_schedule_lateness_seconds_count"), "{metrics}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_that_cannot_fire_fail_with_a_reason_and_the_schedule_keeps_running() {
    let (stack, store) = start().await;
    let failing = ScheduleSpec {
        transformation: Some(json!({"engine": "jq", "expr": "error(\"boom at \" + .schedule.slot)"})),
        ..every_second("failing")
    };
    store.create_schedule(&failing).await.unwrap();
    store.create_schedule(&ScheduleSpec { chain: Some("gone".into()), ..every_second("chained") }).await.unwrap();

    // A failing transformation fails each slot, with the transformation's error.
    let fires = fires_until(&store, "failing", "two failed slots", |f| f.len() >= 2).await;
    for fire in &fires {
        assert_eq!((fire.outcome, fire.task_id), (Outcome::Failed, None), "{fire:?}");
        let reason = fire.reason.clone().unwrap();
        assert!(reason.starts_with("transformation: ") && reason.contains("boom at "), "{reason}");
    }
    // A chain that does not exist.
    let fires = fires_until(&store, "chained", "a failed slot of chained", |f| !f.is_empty()).await;
    assert_eq!(fires[0].outcome, Outcome::Failed);
    assert_eq!(fires[0].reason.as_deref(), Some("chain \"gone\" no longer exists"));

    // Both keep running: more failed slots come.
    for name in ["failing", "chained"] {
        fires_until(&store, name, "more failed slots", |f| {
            f.len() >= 3 && f.iter().all(|x| x.outcome == Outcome::Failed)
        })
        .await;
        assert!(!store.get_schedule(name).await.unwrap().unwrap().paused, "{name} keeps running");
    }

    let (_, metrics) = stack.admin("/metrics").await;
    assert!(metrics.contains("legion_schedule_fires_total{outcome=\"failed\"}"), "{metrics}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_fire_once_catches_up_once_and_skip_records_one_missed_slot() {
    let (stack, store) = start().await;
    let once = store.create_schedule(&ScheduleSpec { allow_overlap: true, ..yearly("once") }).await.unwrap();
    let skip = store
        .create_schedule(&ScheduleSpec { allow_overlap: true, misfire: Misfire::Skip, ..yearly("skip") })
        .await
        .unwrap();
    // Wait until the scheduler looked at both (their next slot is next 1 January), so that it holds no
    // decision about them while the downtime is simulated.
    eventually("both schedules to wait for 1 January", DEADLINE, || async {
        let mut waiting = true;
        for name in ["once", "skip"] {
            let s = store.get_schedule(name).await.unwrap().unwrap();
            waiting &= s.revision > 1 && s.next_due.is_some_and(|d| d > Utc::now() + chrono::Duration::hours(1));
        }
        waiting.then_some(())
    })
    .await;
    // Simulated downtime: both become every-minute schedules whose cursor is an hour and a half minute
    // back; the newest due slot passed 30 s ago (late: the grace is 10 s), 59 older ones before it.
    sqlx::query(
        "UPDATE schedules SET cron = NULL, interval_ms = 60000,
             created_at = now() - interval '3630 seconds', active_since = now() - interval '3630 seconds',
             cursor = now() - interval '3630 seconds', next_due = now(), revision = revision + 1
         WHERE id = ANY($1)",
    )
    .bind(vec![once.id, skip.id])
    .execute(store.pool())
    .await
    .unwrap();

    let fires = fires_until(&store, "once", "the catch-up fire", |f| !f.is_empty()).await;
    assert_eq!(fires.len(), 1, "{fires:?}");
    assert_eq!(fires[0].outcome, Outcome::Fired);
    assert_eq!(fires[0].missed, 59);
    assert_eq!(fires[0].reason.as_deref(), Some("catch-up for 60 missed slots (misfire fire_once)"));
    let schedule = store.get_schedule("once").await.unwrap().unwrap();
    assert_eq!(seconds_between(schedule.created_at, fires[0].slot), 3600.0);
    assert_eq!(schedule.next_due, Some(fires[0].slot + chrono::Duration::seconds(60)));
    let (tasks,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks").fetch_one(store.pool()).await.unwrap();
    assert_eq!(tasks, 1, "one task for the whole downtime");

    let fires = fires_until(&store, "skip", "the missed slot", |f| !f.is_empty()).await;
    assert_eq!(fires.len(), 1, "{fires:?}");
    assert_eq!((fires[0].outcome, fires[0].task_id, fires[0].missed), (Outcome::Missed, None, 59));
    assert_eq!(fires[0].reason.as_deref(), Some("missed while no leader ticked (60 slots); misfire policy skip"));
    let (tasks,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks").fetch_one(store.pool()).await.unwrap();
    assert_eq!(tasks, 1, "skip fires nothing");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_loses_the_lease_writes_nothing_and_the_next_epoch_catches_up() {
    let (stack, store) = start().await;
    store.create_schedule(&every_second("ticker")).await.unwrap();
    let fires = fires_until(&store, "ticker", "two fires", |f| f.len() >= 2).await;
    let first_epoch = fires[0].epoch;
    // The replica is recorded under the name with which it holds the lease.
    let replicas = store.list_control_planes(Duration::from_secs(10)).await.unwrap();
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    assert_eq!(replicas[0].version, env!("CARGO_PKG_VERSION"));
    let lease = store.lease(SCHEDULER_LEASE).await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.epoch), (replicas[0].name.as_str(), first_epoch));

    // Another holder takes the lease for 3 s (it waits for a write in progress, which holds the lease
    // row share-locked): from then on, nothing is written under the old epoch.
    let (intruder, taken_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "UPDATE leases SET holder = 'intruder', epoch = epoch + 1, expires_at = now() + interval '3 seconds'
         WHERE name = $1 RETURNING epoch, clock_timestamp()",
    )
    .bind(SCHEDULER_LEASE)
    .fetch_one(store.pool())
    .await
    .unwrap();
    // Once it lapses, the replica leads again under a new epoch; its first fire stands for the slots
    // that passed meanwhile.
    let fires =
        fires_until(&store, "ticker", "a fire under the next epoch", |f| f.iter().any(|x| x.epoch > intruder)).await;
    assert!(fires.iter().all(|f| f.epoch != intruder), "{fires:?}");
    let resumed = fires.iter().position(|f| f.epoch > intruder).unwrap();
    assert_eq!(fires[resumed].epoch, intruder + 1);
    assert!(fires[..resumed].iter().all(|f| f.epoch == first_epoch && f.fired_at <= taken_at), "{fires:?}");
    // The slots of the intruder's lease were missed while no leader ticked (this replica did not lead):
    // the first fire after them is on time and says so.
    let catch_up = &fires[resumed];
    assert!(catch_up.missed >= 1, "{catch_up:?}");
    let verb = if catch_up.missed == 1 {
        "slot missed while no leader ticked was"
    } else {
        "slots missed while no leader ticked were"
    };
    assert_eq!(
        catch_up.reason.clone().unwrap(),
        format!("on time; {} older {verb} not fired (misfire fire_once)", catch_up.missed)
    );
    #[allow(clippy::cast_precision_loss)]
    let gap = 1.0 + catch_up.missed as f64;
    assert!((seconds_between(fires[resumed - 1].slot, catch_up.slot) - gap).abs() < 1e-6, "{fires:?}");
    stack.stop().await.unwrap();
}
