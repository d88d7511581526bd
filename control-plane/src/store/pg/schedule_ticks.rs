//! The scheduler's write ([`crate::store::schedules::ScheduleStore::record_ticks`]), in the caller's
//! transaction: the fence, the schedules still at the revision decided on, the fire rows under their
//! `(schedule_id, slot)` key, the tasks of exactly the fire rows inserted, and the schedules' cursors
//! (and pauses, for creators no longer authorized).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::tasks::insert_tasks_in;
use crate::events::StatusChange;
use crate::store::schedules::{Fence, Outcome, Recorded, TickRecord};
use crate::store::{Error, NewTask, Result};

/// Writes `records` under `fence` on `conn`, which must be inside a transaction.
///
/// # Errors
/// [`Error::FailedPrecondition`] when the fence does not hold (nothing is written), and
/// [`Error::InvalidData`] for a record whose fire and task disagree (a fired outcome without a task, or
/// a task with another outcome).
pub(super) async fn record(
    conn: &mut PgConnection,
    store: &super::PgStore,
    fence: &Fence,
    records: &[TickRecord],
) -> Result<Recorded> {
    check_records(records)?;
    // 1. The fence: the lease row stays share-locked until the commit, so the lease cannot change
    //    holder (a takeover updates the row) while this transaction writes.
    let held: Option<(i64,)> = sqlx::query_as(
        "SELECT epoch FROM leases
         WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
         FOR SHARE",
    )
    .bind(fence.lease)
    .bind(&fence.holder)
    .bind(fence.epoch)
    .fetch_optional(&mut *conn)
    .await?;
    if held.is_none() {
        return Err(Error::FailedPrecondition(format!(
            "lease {:?}: {} no longer holds epoch {} (taken over, or expired by the database's clock)",
            fence.lease, fence.holder, fence.epoch
        )));
    }

    // 2. The schedules, locked in id order; records decided on another revision, or of a schedule paused
    //    or deleted since, are dropped.
    let mut ids: Vec<Uuid> = records.iter().map(|r| r.schedule_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<(Uuid, i64, bool)> =
        sqlx::query_as("SELECT id, revision, paused FROM schedules WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let current: HashMap<Uuid, (i64, bool)> = rows.into_iter().map(|(id, rev, paused)| (id, (rev, paused))).collect();
    let kept: Vec<&TickRecord> =
        records.iter().filter(|r| current.get(&r.schedule_id) == Some(&(r.revision, false))).collect();
    let stale = records.len() - kept.len();

    // 3. The fire rows; a slot dealt with already (by another writer, or twice in this batch) is refused.
    let fired_tasks = insert_fires(conn, fence.epoch, &kept).await?;
    let attempted = kept.iter().filter(|r| r.fire.is_some()).count();
    let duplicates = attempted - fired_tasks.inserted_rows;

    // 4. The tasks of the fire rows inserted, with their outbox rows.
    let tasks: Vec<NewTask> =
        kept.iter().filter_map(|r| r.task.as_ref()).filter(|t| fired_tasks.task_ids.contains(&t.id)).cloned().collect();
    let inserted = insert_tasks_in(conn, store, &tasks).await?;
    let changes: Vec<StatusChange> = inserted
        .iter()
        .filter(|i| i.created)
        .map(|i| StatusChange { task_id: i.task.id, status: i.task.status, attempt: i.task.attempt })
        .collect();

    // 5. Each kept schedule moves on: one update per schedule (the record whose fire was written, if
    //    several records name it), paused when that record pauses it and its fire row was written.
    let paused = update_schedules(conn, &kept, &fired_tasks).await?;

    let fired = kept
        .iter()
        .filter_map(|r| r.task.as_ref().map(|t| (r.schedule_id, t.id)))
        .filter(|(_, task)| fired_tasks.task_ids.contains(task))
        .collect();
    Ok(Recorded { fired, stale, duplicates, changes, paused })
}

/// Refuses records whose fire outcome and task disagree: the `schedule_fires` check constraint would
/// fail the whole batch.
fn check_records(records: &[TickRecord]) -> Result<()> {
    for r in records {
        let fired = r.fire.as_ref().is_some_and(|f| f.outcome == Outcome::Fired);
        if fired != r.task.is_some() {
            return Err(Error::InvalidData(format!(
                "tick record of schedule {}: a task goes with exactly the fired outcome",
                r.schedule_id
            )));
        }
    }
    Ok(())
}

/// What [`insert_fires`] wrote.
struct InsertedFires {
    /// Fire rows inserted.
    inserted_rows: usize,
    /// The tasks of the fired rows inserted.
    task_ids: HashSet<Uuid>,
    /// The schedules of the fire rows inserted.
    schedules: HashSet<Uuid>,
}

async fn insert_fires(conn: &mut PgConnection, epoch: i64, kept: &[&TickRecord]) -> Result<InsertedFires> {
    let (mut schedules, mut slots, mut outcomes, mut tasks, mut reasons, mut missed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in kept {
        let Some(fire) = &r.fire else { continue };
        schedules.push(r.schedule_id);
        slots.push(fire.slot);
        outcomes.push(fire.outcome.as_str());
        tasks.push(r.task.as_ref().map(|t| t.id));
        reasons.push(fire.reason.as_deref());
        missed.push(i64::try_from(fire.missed).unwrap_or(i64::MAX));
    }
    if schedules.is_empty() {
        return Ok(InsertedFires { inserted_rows: 0, task_ids: HashSet::new(), schedules: HashSet::new() });
    }
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "INSERT INTO schedule_fires (schedule_id, slot, epoch, outcome, task_id, reason, missed)
         SELECT schedule_id, slot, $7, outcome, task_id, reason, missed
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::uuid[], $5::text[], $6::int8[])
              WITH ORDINALITY AS u(schedule_id, slot, outcome, task_id, reason, missed, n)
         ORDER BY n
         ON CONFLICT (schedule_id, slot) DO NOTHING
         RETURNING schedule_id, task_id",
    )
    .bind(&schedules)
    .bind(&slots)
    .bind(&outcomes)
    .bind(&tasks)
    .bind(&reasons)
    .bind(&missed)
    .bind(epoch)
    .fetch_all(&mut *conn)
    .await?;
    Ok(InsertedFires {
        inserted_rows: rows.len(),
        task_ids: rows.iter().filter_map(|(_, task)| *task).collect(),
        schedules: rows.iter().map(|(schedule, _)| *schedule).collect(),
    })
}

/// Moves each kept schedule on; returns the schedules it paused.
async fn update_schedules(
    conn: &mut PgConnection,
    kept: &[&TickRecord],
    inserted: &InsertedFires,
) -> Result<Vec<Uuid>> {
    let fired = &inserted.task_ids;
    // Per schedule: the record whose task was written, else the first.
    let mut chosen: HashMap<Uuid, &TickRecord> = HashMap::new();
    for r in kept {
        let wrote = r.task.as_ref().is_some_and(|t| fired.contains(&t.id));
        if wrote || !chosen.contains_key(&r.schedule_id) {
            chosen.insert(r.schedule_id, r);
        }
    }
    let mut chosen: Vec<&TickRecord> = chosen.into_values().collect();
    chosen.sort_by_key(|r| r.schedule_id);
    let ids: Vec<Uuid> = chosen.iter().map(|r| r.schedule_id).collect();
    let cursors: Vec<Option<DateTime<Utc>>> = chosen.iter().map(|r| r.cursor).collect();
    let next_due: Vec<Option<DateTime<Utc>>> = chosen.iter().map(|r| r.next_due).collect();
    let last_tasks: Vec<Option<Uuid>> =
        chosen.iter().map(|r| r.task.as_ref().map(|t| t.id).filter(|id| fired.contains(id))).collect();
    // A pause goes with its fire row, which says why: a slot another writer dealt with pauses nothing.
    let pauses: Vec<bool> =
        chosen.iter().map(|r| r.pause && r.fire.is_some() && inserted.schedules.contains(&r.schedule_id)).collect();
    // A pause is a change an operator sees (`updated_at`), as through the API.
    sqlx::query(
        "UPDATE schedules s SET cursor = COALESCE(u.new_cursor, s.cursor), next_due = u.new_next_due,
             last_task_id = COALESCE(u.new_last_task_id, s.last_task_id), revision = s.revision + 1,
             paused = s.paused OR u.pause,
             updated_at = CASE WHEN u.pause THEN now() ELSE s.updated_at END
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::uuid[], $5::bool[])
              AS u(id, new_cursor, new_next_due, new_last_task_id, pause)
         WHERE s.id = u.id",
    )
    .bind(&ids)
    .bind(&cursors)
    .bind(&next_due)
    .bind(&last_tasks)
    .bind(&pauses)
    .execute(&mut *conn)
    .await?;
    Ok(ids.into_iter().zip(pauses).filter_map(|(id, pause)| pause.then_some(id)).collect())
}
