//! Schedule helpers (DESIGN.md section 4, `proto/legion/v1/schedules.proto`,
//! `migrations/0007_schedules.sql`): a `ScheduleService` client, the stored history read straight
//! from the test's PostgreSQL database, and the checks the end-to-end tests share.
//!
//! Instants are microseconds since the Unix epoch, PostgreSQL's own precision, read with
//! `extract(epoch …)`, so that slots compare exactly and the checks need no date library.

use legion_proto::v1::schedule_service_client::ScheduleServiceClient;
use legion_proto::v1::{CreateScheduleRequest, Schedule, SetSchedulePausedRequest};
use serde_json::Value;
use sqlx::PgPool;

use crate::TestEnv;
use crate::grpc::{self, AuthChannel};
use crate::replicas::ControlPlane;

/// Client of `legion.v1.ScheduleService`, sending its channel's credential.
pub type ScheduleClient = ScheduleServiceClient<AuthChannel>;

/// Microseconds in a millisecond.
pub const US_PER_MS: i64 = 1000;

impl TestEnv {
    /// A `ScheduleService` client on the env's control plane, sending the bootstrap admin key.
    ///
    /// # Errors
    /// As [`TestEnv::channel_as`] (never for the admin key, which is a valid metadata value).
    pub fn schedules(&self) -> Result<ScheduleClient, grpc::Error> {
        Ok(ScheduleClient::new(self.channel_as(&crate::Auth::admin())?))
    }
}

impl ControlPlane {
    /// A `ScheduleService` client on this replica, sending the bootstrap admin key.
    pub fn schedules(&self) -> ScheduleClient {
        ScheduleClient::new(self.channel())
    }
}

/// `CreateSchedule` through `client`.
///
/// # Errors
/// The control plane's status (`INVALID_ARGUMENT` naming the field, `ALREADY_EXISTS`).
pub async fn create(client: &ScheduleClient, schedule: Schedule) -> Result<Schedule, tonic::Status> {
    let request = CreateScheduleRequest { schedule: Some(schedule) };
    Ok(client.clone().create_schedule(grpc::request(request)).await?.into_inner())
}

/// `PauseSchedule` (`paused`) or `ResumeSchedule` (`!paused`) through `client`.
///
/// # Errors
/// The control plane's status (`NOT_FOUND` for an unknown name).
pub async fn set_paused(client: &ScheduleClient, name: &str, paused: bool) -> Result<Schedule, tonic::Status> {
    let request = grpc::request(SetSchedulePausedRequest { name: name.to_owned() });
    let mut client = client.clone();
    let reply = if paused { client.pause_schedule(request).await? } else { client.resume_schedule(request).await? };
    Ok(reply.into_inner())
}

/// An interval schedule of `function` with `args` every `interval_ms`, defaults for everything else
/// (misfire `fire_once`, no overlap).
pub fn every(name: &str, function: &str, args: &Value, interval_ms: u64) -> Schedule {
    Schedule {
        name: name.to_owned(),
        function: function.to_owned(),
        args: Some(legion_proto::json_to_value(args)),
        interval_ms: Some(interval_ms),
        ..Schedule::default()
    }
}

/// A `schedule_fires` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FireRow {
    /// The slot, µs since the epoch.
    pub slot_us: i64,
    /// When the leader dealt with it (PostgreSQL's clock), µs since the epoch.
    pub fired_at_us: i64,
    /// The scheduler lease's epoch it was written under.
    pub epoch: i64,
    /// `fired`, `overlap`, `missed` or `failed`.
    pub outcome: String,
    /// The task, for `fired`.
    pub task_id: Option<String>,
    /// Why it did not fire, or what a catch-up stands for.
    pub reason: Option<String>,
    /// Older missed slots the row stands for.
    pub missed: i64,
}

/// Every fire row of schedule `name`, oldest slot first.
///
/// # Errors
/// The driver's error.
pub async fn fires(pool: &PgPool, name: &str) -> Result<Vec<FireRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT (extract(epoch FROM f.slot) * 1000000)::bigint AS slot_us, \
                (extract(epoch FROM f.fired_at) * 1000000)::bigint AS fired_at_us, \
                f.epoch, f.outcome, f.task_id::text AS task_id, f.reason, f.missed \
         FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id WHERE s.name = $1 ORDER BY f.slot",
    )
    .bind(name)
    .fetch_all(pool)
    .await
}

/// The fire rows of schedule `name`, or the error as text, for probes.
///
/// # Errors
/// The driver's error as text.
pub async fn probe_fires(pool: &PgPool, name: &str) -> Result<Vec<FireRow>, String> {
    fires(pool, name).await.map_err(|e| format!("read the fires of {name}: {e}"))
}

/// Schedule `name`'s `created_at` (the anchor of an interval schedule) and `updated_at` (its last
/// pause or resume), µs since the epoch.
///
/// # Errors
/// The driver's error (`RowNotFound` for an unknown name).
pub async fn times(pool: &PgPool, name: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (extract(epoch FROM created_at) * 1000000)::bigint, \
                (extract(epoch FROM updated_at) * 1000000)::bigint FROM schedules WHERE name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
}

/// PostgreSQL's now, µs since the epoch: the clock every scheduler decision uses.
///
/// # Errors
/// The driver's error.
pub async fn now_us(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (now,): (i64,) =
        sqlx::query_as("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint").fetch_one(pool).await?;
    Ok(now)
}

/// A task as the schedule checks need it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskRow {
    /// Task id.
    pub id: String,
    /// Status (`succeeded`, …).
    pub status: String,
    /// `args.slot` read as a `timestamptz`, µs since the epoch (`None` when absent).
    pub slot_arg_us: Option<i64>,
    /// When it was written, µs since the epoch.
    pub created_us: i64,
    /// When it ended, µs since the epoch.
    pub finished_us: Option<i64>,
}

/// Every task of `function` in the database, oldest first.
///
/// # Errors
/// The driver's error (also when an `args.slot` is not an instant).
pub async fn tasks_of(pool: &PgPool, function: &str) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id::text AS id, status, \
                (extract(epoch FROM (args->>'slot')::timestamptz) * 1000000)::bigint AS slot_arg_us, \
                (extract(epoch FROM created_at) * 1000000)::bigint AS created_us, \
                (extract(epoch FROM finished_at) * 1000000)::bigint AS finished_us \
         FROM tasks WHERE function = $1 ORDER BY id",
    )
    .bind(function)
    .fetch_all(pool)
    .await
}

/// The tasks schedule `name` fired (through its fire rows), oldest first.
///
/// # Errors
/// The driver's error.
pub async fn fired_tasks(pool: &PgPool, name: &str) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id::text AS id, t.status, NULL::bigint AS slot_arg_us, \
                (extract(epoch FROM t.created_at) * 1000000)::bigint AS created_us, \
                (extract(epoch FROM t.finished_at) * 1000000)::bigint AS finished_us \
         FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id JOIN tasks t ON t.id = f.task_id \
         WHERE s.name = $1 ORDER BY t.id",
    )
    .bind(name)
    .fetch_all(pool)
    .await
}

/// Statuses that are not terminal.
pub const UNFINISHED: [&str; 4] = ["pending", "scheduled", "queued", "running"];

/// Waits (probe) until every task schedule `name` fired is terminal; the count still running as the
/// observation.
///
/// # Errors
/// The observation, for [`crate::wait::eventually`].
pub async fn all_fired_terminal(pool: &PgPool, name: &str) -> Result<Vec<TaskRow>, String> {
    let tasks = fired_tasks(pool, name).await.map_err(|e| format!("read the tasks of {name}: {e}"))?;
    let running = tasks.iter().filter(|t| UNFINISHED.contains(&t.status.as_str())).count();
    if running == 0 { Ok(tasks) } else { Err(format!("{running} of {} tasks of {name} unfinished", tasks.len())) }
}

/// One attempt of a task, µs since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptSpan {
    /// Task id.
    pub task_id: String,
    /// Attempt number.
    pub attempt: i32,
    /// When it started.
    pub started_us: i64,
    /// When it ended (`None` while it runs).
    pub finished_us: Option<i64>,
}

/// Every attempt of the tasks schedule `name` fired, by start.
///
/// # Errors
/// The driver's error.
pub async fn attempts(pool: &PgPool, name: &str) -> Result<Vec<AttemptSpan>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.task_id::text AS task_id, a.attempt, \
                (extract(epoch FROM a.started_at) * 1000000)::bigint AS started_us, \
                (extract(epoch FROM a.finished_at) * 1000000)::bigint AS finished_us \
         FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id \
         JOIN task_attempts a ON a.task_id = f.task_id WHERE s.name = $1 ORDER BY a.started_at, a.task_id",
    )
    .bind(name)
    .fetch_all(pool)
    .await
}

/// Checks that `rows` (oldest slot first) account for every slot of an interval schedule from its
/// anchor to the newest row exactly once: each slot is `anchor + k × interval`, no slot appears
/// twice, and each row stands for itself plus the `missed` slots right before it (so the sum of
/// `1 + missed` over the rows is the number of slots from the anchor to the last row).
///
/// # Errors
/// The first row that breaks it, described.
pub fn check_accounting(anchor_us: i64, interval_us: i64, rows: &[FireRow]) -> Result<(), String> {
    let mut previous = anchor_us - interval_us;
    for row in rows {
        let offset = row.slot_us - anchor_us;
        if offset < 0 || offset % interval_us != 0 {
            return Err(format!("slot {} is not anchor {anchor_us} + k × {interval_us} µs: {row:?}", row.slot_us));
        }
        let between = (row.slot_us - previous) / interval_us - 1;
        if between != row.missed {
            return Err(format!(
                "{between} slots lie between {previous} and this row, which accounts for {} missed: {row:?}",
                row.missed
            ));
        }
        previous = row.slot_us;
    }
    Ok(())
}

/// The largest distance between consecutive slots of `rows` (oldest first), in µs, with the later row.
pub fn largest_gap(rows: &[FireRow]) -> Option<(i64, &FireRow)> {
    rows.windows(2).map(|w| (w[1].slot_us - w[0].slot_us, &w[1])).max_by_key(|(gap, _)| *gap)
}

/// Checks that the `fired` rows and `tasks` match one to one: every task is the task of exactly one
/// fired row, every fired row has a task, and the task's `args.slot` is its row's slot.
///
/// # Errors
/// What does not match, described.
pub fn check_one_to_one(rows: &[FireRow], tasks: &[TaskRow]) -> Result<(), String> {
    let fired: Vec<&FireRow> = rows.iter().filter(|r| r.outcome == "fired").collect();
    if let Some(bad) = rows.iter().find(|r| (r.outcome == "fired") != r.task_id.is_some()) {
        return Err(format!("a row has a task exactly when it fired: {bad:?}"));
    }
    if fired.len() != tasks.len() {
        return Err(format!("{} fired rows but {} tasks", fired.len(), tasks.len()));
    }
    for task in tasks {
        let owners: Vec<&&FireRow> = fired.iter().filter(|r| r.task_id.as_deref() == Some(task.id.as_str())).collect();
        match owners.as_slice() {
            [row] if task.slot_arg_us == Some(row.slot_us) => {}
            [row] => return Err(format!("task {} has args.slot {:?}, its row {row:?}", task.id, task.slot_arg_us)),
            _ => return Err(format!("task {} is the task of {} rows: {owners:?}", task.id, owners.len())),
        }
    }
    Ok(())
}

/// The first two attempts of `spans` (sorted by start) that ran at the same time: the later one
/// started before the earlier one finished (an unfinished attempt runs forever).
pub fn first_overlap(spans: &[AttemptSpan]) -> Option<(&AttemptSpan, &AttemptSpan)> {
    let mut running: Option<&AttemptSpan> = None;
    for span in spans {
        if let Some(earlier) = running
            && earlier.finished_us.is_none_or(|end| span.started_us < end)
        {
            return Some((earlier, span));
        }
        // Keep the attempt that ends last as the one the next must not start inside.
        running = match running {
            Some(earlier) if earlier.finished_us.is_none_or(|e| span.finished_us.is_some_and(|s| e >= s)) => {
                Some(earlier)
            }
            _ => Some(span),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn row(slot_us: i64, outcome: &str, missed: i64) -> FireRow {
        FireRow {
            slot_us,
            fired_at_us: slot_us + 1000,
            epoch: 1,
            outcome: outcome.into(),
            task_id: (outcome == "fired").then(|| format!("t{slot_us}")),
            reason: None,
            missed,
        }
    }

    #[test]
    fn accounting_follows_every_slot_from_the_anchor() {
        let anchor = 1_000 * SECOND + 123;
        let rows = [row(anchor, "fired", 0), row(anchor + SECOND, "overlap", 0), row(anchor + 5 * SECOND, "fired", 3)];
        assert_eq!(check_accounting(anchor, SECOND, &rows), Ok(()));
        // A first row that stands for the slots before it.
        assert_eq!(check_accounting(anchor, SECOND, &[row(anchor + 2 * SECOND, "fired", 2)]), Ok(()));
        assert_eq!(check_accounting(anchor, SECOND, &[]), Ok(()));

        let gap = [row(anchor, "fired", 0), row(anchor + 3 * SECOND, "fired", 0)];
        assert!(check_accounting(anchor, SECOND, &gap).expect_err("unaccounted").contains("2 slots lie between"));
        let twice = [row(anchor, "fired", 0), row(anchor, "fired", 0)];
        assert!(check_accounting(anchor, SECOND, &twice).expect_err("twice").contains("-1 slots"));
        let off_grid = [row(anchor + 10, "fired", 0)];
        assert!(check_accounting(anchor, SECOND, &off_grid).expect_err("grid").contains("is not anchor"));
        let early = [row(anchor - SECOND, "fired", 0)];
        assert!(check_accounting(anchor, SECOND, &early).is_err(), "before the anchor");
    }

    #[test]
    fn the_largest_gap_names_the_later_row() {
        let rows =
            [row(0, "fired", 0), row(SECOND, "fired", 0), row(5 * SECOND, "fired", 3), row(6 * SECOND, "fired", 0)];
        let (gap, later) = largest_gap(&rows).expect("gaps");
        assert_eq!((gap, later.slot_us), (4 * SECOND, 5 * SECOND));
        assert!(largest_gap(&rows[..1]).is_none());
    }

    fn task(id: &str, slot: Option<i64>) -> TaskRow {
        TaskRow { id: id.into(), status: "succeeded".into(), slot_arg_us: slot, created_us: 0, finished_us: None }
    }

    #[test]
    fn fired_rows_and_tasks_match_one_to_one() {
        let rows = [row(0, "fired", 0), row(SECOND, "overlap", 0), row(2 * SECOND, "fired", 0)];
        let tasks = [task("t0", Some(0)), task(&format!("t{}", 2 * SECOND), Some(2 * SECOND))];
        assert_eq!(check_one_to_one(&rows, &tasks), Ok(()));
        assert!(check_one_to_one(&rows, &tasks[..1]).expect_err("missing").contains("2 fired rows but 1 tasks"));
        let wrong_slot = [task("t0", Some(SECOND)), tasks[1].clone()];
        assert!(check_one_to_one(&rows, &wrong_slot).expect_err("slot").contains("args.slot"));
        let stranger = [task("t0", Some(0)), task("other", Some(2 * SECOND))];
        assert!(check_one_to_one(&rows, &stranger).expect_err("stranger").contains("task of 0 rows"));
        let mut shared = rows.clone();
        shared[2].task_id = Some("t0".into());
        assert!(check_one_to_one(&shared, &tasks).is_err(), "one task for two rows");
        let mut taskless = rows;
        taskless[0].task_id = None;
        assert!(check_one_to_one(&taskless, &tasks).expect_err("no task").contains("exactly when it fired"));
    }

    fn span(task: &str, started: i64, finished: Option<i64>) -> AttemptSpan {
        AttemptSpan { task_id: task.into(), attempt: 1, started_us: started, finished_us: finished }
    }

    #[test]
    fn overlaps_are_found_between_any_two_attempts() {
        let back_to_back = [span("a", 0, Some(10)), span("b", 10, Some(20)), span("c", 25, None)];
        assert_eq!(first_overlap(&back_to_back), None);
        let overlapping = [span("a", 0, Some(10)), span("b", 9, Some(20))];
        assert_eq!(first_overlap(&overlapping).map(|(a, b)| (&*a.task_id, &*b.task_id)), Some(("a", "b")));
        // A long attempt overlaps one that starts after a short one in between.
        let nested = [span("a", 0, Some(100)), span("b", 10, Some(20)), span("c", 30, Some(40))];
        assert_eq!(first_overlap(&nested).map(|(a, b)| (&*a.task_id, &*b.task_id)), Some(("a", "b")));
        let unfinished = [span("a", 0, None), span("b", 1000, Some(2000))];
        assert!(first_overlap(&unfinished).is_some(), "an unfinished attempt still runs");
    }
}
