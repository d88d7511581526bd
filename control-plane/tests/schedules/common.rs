//! Helpers of the schedule tests: schedule documents, tasks, a lease to write under, the fire history.

use std::time::Duration;

use chrono::{DateTime, Utc};
use legion_common::FunctionName;
use legion_control_plane::leader::{LeaseStore, SCHEDULER_LEASE};
use legion_control_plane::schedules::tick::Misfire;
use legion_control_plane::store::NewTask;
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::schedules::{
    CadenceSpec, Fence, Fire, NewFire, Outcome, Schedule, ScheduleSpec, ScheduleStore, TickRecord,
};
use legion_control_plane::tasks::submit::new_task;
use legion_control_plane::tasks::validate::SubmitSpec;
use serde_json::json;

/// The creator of the test schedules (a token principal: no API key to check).
pub const OWNER: &str = "jwt/tester";

/// A schedule of `core.util.echo` on `cadence`, created by [`OWNER`] with the `admin` policy.
pub fn spec(name: &str, cadence: CadenceSpec) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        description: format!("test schedule {name}"),
        function: "core.util.echo".into(),
        args: json!({"n": 1}),
        transformation: None,
        chain: None,
        priority: 3,
        max_attempts: 2,
        timeout_ms: 5000,
        region: None,
        cadence,
        allow_overlap: false,
        misfire: Misfire::FireOnce,
        paused: false,
        created_by: OWNER.into(),
        policies: vec!["admin".into()],
        retry: Default::default(),
    }
}

/// Every second, overlapping allowed (no executor finishes the tasks).
pub fn every_second(name: &str) -> ScheduleSpec {
    ScheduleSpec { allow_overlap: true, ..spec(name, CadenceSpec::Interval { interval_ms: 1000 }) }
}

/// At midnight on 1 January: no slot comes due while a test runs.
pub fn yearly(name: &str) -> ScheduleSpec {
    spec(name, CadenceSpec::Cron { expression: "0 0 1 1 *".into(), timezone: "UTC".into() })
}

/// A `core.util.echo` task owned by `owner`.
pub fn task(owner: &str) -> NewTask {
    new_task(SubmitSpec {
        function: FunctionName::parse("core.util.echo").unwrap(),
        args: json!({}),
        args_json: "{}".into(),
        priority: 0,
        max_attempts: 1,
        timeout_ms: 1000,
        delay_ms: 0,
        idempotency_key: None,
        region: None,
        owner: owner.into(),
        chain: None,
        chain_version: None,
        retry: Default::default(),
    })
}

/// Takes the scheduler lease as `holder` for a minute and returns its fence.
pub async fn lead(store: &PgStore, holder: &str) -> Fence {
    let lease = store.acquire_lease(SCHEDULER_LEASE, holder, Duration::from_secs(60)).await.unwrap().unwrap();
    Fence { lease: SCHEDULER_LEASE, holder: holder.into(), epoch: lease.epoch }
}

/// A record that fires `slot` of `schedule` with a new task (or passes it over with `outcome`).
pub fn record(schedule: &Schedule, slot: DateTime<Utc>, outcome: Outcome) -> TickRecord {
    let task = (outcome == Outcome::Fired).then(|| task(&schedule.spec.created_by));
    let reason = (outcome != Outcome::Fired).then(|| format!("test {}", outcome.as_str()));
    TickRecord {
        schedule_id: schedule.id,
        revision: schedule.revision,
        cursor: Some(slot),
        next_due: Some(slot + chrono::Duration::seconds(1)),
        fire: Some(NewFire { slot, outcome, reason, missed: 0 }),
        task,
        pause: false,
    }
}

/// Every fire row of schedule `name`, oldest slot first (read in pages of 2).
pub async fn all_fires(store: &PgStore, name: &str) -> Vec<Fire> {
    let mut fires = Vec::new();
    let mut before = None;
    loop {
        let (page, more) = store.list_fires(name, before, 2).await.unwrap().unwrap();
        before = page.last().map(|f| f.slot);
        fires.extend(page);
        if !more {
            break;
        }
    }
    fires.reverse();
    fires
}

/// An instant as a test writes it.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}
