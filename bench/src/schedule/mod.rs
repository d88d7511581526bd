//! The `schedule` scenario: N schedules due in the same second (DESIGN.md section 4,
//! docs/schedules.md). How late does the leader's scheduler fire the last of them?
//!
//! It picks a slot `--lead-s` seconds ahead of PostgreSQL's clock (rounded up to a whole second) and
//! creates `--schedules` schedules (`bench-sched-<run>-<n>`, `--concurrency` `CreateSchedule` calls in
//! flight) with the 6-field cron expression `S M H * * *` in UTC of that instant, each firing
//! `core.util.noop`. Every schedule therefore has that slot as its next one; the first answer's
//! `next_fires` is checked to be it. Once the slot has passed it follows the fire rows of the slot in
//! PostgreSQL (one query per poll) until every schedule has fired and every task is terminal, then
//! reads them all and reports (see [`report`]): the creation rate, the lateness `fired_at − slot`
//! (p50/p99/max: the max is when the last schedule fired), and when the last task succeeded. The
//! schedules are deleted at the end unless `--keep`.

pub mod create;
pub mod report;
pub mod store;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound as _, Timelike as _, Utc};
use legion_proto::v1::Schedule;

use crate::client::{self, ClientOptions};
use crate::nodes;
use crate::stats::summarize;
use report::{ScheduleReport, ScheduleSetup};
use store::FireStore;

/// The function every schedule fires.
pub const FUNCTION: &str = "core.util.noop";

/// Most schedules one run creates.
pub const MAX_SCHEDULES: usize = 1_000_000;

/// Longest `--lead-s`: the slot must stay within the day the expression names.
pub const MAX_LEAD: Duration = Duration::from_secs(3600);

/// Why the scenario could not produce its report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Channel setup failed.
    #[error(transparent)]
    Client(#[from] client::Error),
    /// Not enough executors became ready.
    #[error(transparent)]
    Nodes(#[from] nodes::Error),
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A flag is out of range, or too small for the run (the reason says which).
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The control plane's answer contradicts the scenario (a schedule not due at the slot).
    #[error("{0}")]
    Unexpected(String),
}

/// Everything the scenario needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How to reach the control plane.
    pub client: ClientOptions,
    /// The control plane's database, `postgres://…`.
    pub database_url: String,
    /// Active executors to wait for.
    pub executors: usize,
    /// Longest wait for the executors.
    pub wait_nodes: Duration,
    /// Schedules to create.
    pub schedules: usize,
    /// `CreateSchedule` (and `DeleteSchedule`) calls in flight at once.
    pub concurrency: usize,
    /// How far ahead of the database's clock the slot is: long enough to create them all.
    pub lead: Duration,
    /// Longest wait for the fires and tasks after the slot.
    pub timeout: Duration,
    /// How often PostgreSQL is polled.
    pub poll: Duration,
    /// Keep the schedules (by default they are deleted after the measurement).
    pub keep: bool,
    /// Name of the run in the report.
    pub label: String,
    /// Also append the JSON line to this file.
    pub json_out: Option<PathBuf>,
}

impl Options {
    /// Checks what the types do not.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the flag.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |flag, reason: String| Err(Error::Invalid { flag, reason });
        if !(1..=MAX_SCHEDULES).contains(&self.schedules) {
            return invalid("--schedules", format!("must be 1 to {MAX_SCHEDULES}"));
        }
        if self.concurrency == 0 {
            return invalid("--concurrency", "must be at least 1".into());
        }
        if self.lead < Duration::from_secs(2) || self.lead > MAX_LEAD {
            return invalid("--lead-s", format!("must be 2 to {}", MAX_LEAD.as_secs()));
        }
        if !(self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")) {
            return invalid("--database-url", "must start with postgres:// or postgresql://".into());
        }
        if self.poll.is_zero() {
            return invalid("--poll-ms", "must be at least 1".into());
        }
        Ok(())
    }
}

/// The 6-field cron expression (`second minute hour * * *`, read in UTC) whose daily slot is `slot`.
pub fn daily_cron(slot: DateTime<Utc>) -> String {
    format!("{} {} {} * * *", slot.second(), slot.minute(), slot.hour())
}

/// The schedule number `index` of the run named by `prefix`.
pub fn schedule(prefix: &str, index: usize, cron: &str) -> Schedule {
    Schedule {
        name: format!("{prefix}{index:07}"),
        description: "legion-bench schedule scenario".into(),
        function: FUNCTION.into(),
        args: Some(legion_proto::json_to_value(&serde_json::json!({}))),
        cron: Some(cron.to_owned()),
        timezone: "UTC".into(),
        ..Schedule::default()
    }
}

/// Runs the scenario and returns its report.
///
/// # Errors
/// [`Error`] when it could not be carried out: bad flags, no executors, database down, or creation
/// slower than `--lead-s` (the schedules created are deleted first unless `--keep`).
pub async fn run(options: &Options) -> Result<ScheduleReport, Error> {
    options.validate()?;
    let clients = client::connect(&options.client, 1)?;
    let schedules = create::connect(&options.client)?;
    let store = FireStore::connect(&options.database_url).await?;
    let extension = FUNCTION.split('.').next().unwrap_or_default();
    let mut catalog = clients.catalog.clone();
    let executors = nodes::wait_for_executors(&mut catalog, extension, options.executors, options.wait_nodes).await?;
    tracing::info!(executors = ?executors, "executors ready");

    let now = store.now().await?;
    let lead = chrono::Duration::from_std(options.lead).unwrap_or(chrono::Duration::MAX);
    let slot = (now + lead).duration_round_up(chrono::Duration::seconds(1)).unwrap_or(now + lead);
    let cron = daily_cron(slot);
    let prefix = format!("bench-sched-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    tracing::info!(schedules = options.schedules, cron = %cron, slot = %slot, prefix = %prefix, "creating schedules");
    let plan: Vec<Schedule> = (0..options.schedules).map(|i| schedule(&prefix, i, &cron)).collect();
    let created = create::create_all(&schedules, plan, options.concurrency).await;
    let names: Vec<String> = created.schedules.values().map(|s| s.name.clone()).collect();
    let margin = millis(store.now().await?, slot) / 1000.0;
    let check = check_created(&created, slot, margin);
    if let Err(e) = check {
        cleanup(options, &schedules, names).await;
        return Err(e);
    }

    let wait = (slot - store.now().await?).to_std().unwrap_or_default();
    tracing::info!(wait_s = wait.as_secs_f64(), "waiting for the slot");
    tokio::time::sleep(wait).await;
    follow(&store, &prefix, slot, names.len() as u64, options).await?;
    let rows = store.fires(&prefix, slot).await?;
    let setup = ScheduleSetup {
        label: options.label.clone(),
        schedules: options.schedules,
        concurrency: options.concurrency,
        cron,
        slot,
        executors,
        created: names.len(),
        create_failed: created.failed(),
        create_error: created.first_error.clone(),
        create_seconds: created.elapsed.as_secs_f64(),
        create_rpc_ms: summarize(created.ok.iter().map(|d| d.as_secs_f64() * 1000.0).collect()),
        margin_seconds: margin,
    };
    cleanup(options, &schedules, names).await;
    Ok(report::measure(setup, &rows))
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    crate::stats::millis_between(from, to)
}

/// Refuses a run whose schedules are not all due at `slot`: creation ended too close to it
/// (`margin_s` seconds left), or the control plane computed another next slot.
fn check_created(created: &create::Calls, slot: DateTime<Utc>, margin_s: f64) -> Result<(), Error> {
    if margin_s < 1.0 {
        return Err(Error::Invalid {
            flag: "--lead-s",
            reason: format!(
                "creating the schedules took {:.1} s and ended {:.1} s before the slot: raise --lead-s",
                created.elapsed.as_secs_f64(),
                margin_s
            ),
        });
    }
    let Some(first) = created.schedules.values().next() else {
        return Err(Error::Unexpected(format!(
            "no schedule was created ({:?}; first error: {})",
            created.failures,
            created.first_error.as_deref().unwrap_or("-")
        )));
    };
    let next = first.next_fires.first().and_then(legion_proto::timestamp_to_chrono);
    if next != Some(slot) {
        return Err(Error::Unexpected(format!(
            "schedule {} is next due at {next:?}, not at the slot {slot}",
            first.name
        )));
    }
    Ok(())
}

/// Polls until every one of `expected` schedules has a fire row for `slot` and no task of those rows
/// is unfinished, or `options.timeout` passed (the report then shows what is missing).
async fn follow(
    store: &FireStore,
    prefix: &str,
    slot: DateTime<Utc>,
    expected: u64,
    options: &Options,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut logged = Instant::now();
    loop {
        let progress = store.progress(prefix, slot).await?;
        if progress.fires >= expected && progress.unfinished == 0 {
            return Ok(());
        }
        if started.elapsed() >= options.timeout {
            tracing::warn!(
                fires = progress.fires,
                expected,
                unfinished = progress.unfinished,
                "the slot did not complete in time"
            );
            return Ok(());
        }
        if logged.elapsed() >= Duration::from_secs(2) {
            tracing::info!(fires = progress.fires, expected, unfinished = progress.unfinished, "waiting for the fires");
            logged = Instant::now();
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// Deletes the run's schedules unless `--keep` (their fire history goes with them; their tasks stay).
async fn cleanup(options: &Options, client: &create::ScheduleClient, names: Vec<String>) {
    if options.keep || names.is_empty() {
        return;
    }
    let deleted = create::delete_all(client, names, options.concurrency).await;
    tracing::info!(
        deleted = deleted.ok.len(),
        failed = deleted.failed(),
        seconds = deleted.elapsed.as_secs_f64(),
        "schedules deleted"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            client: ClientOptions {
                url: "https://localhost:1".into(),
                ca: "/tmp/ca.pem".into(),
                cert: None,
                key: None,
                api_key: None,
                token: None,
            },
            database_url: "postgres://postgres@127.0.0.1/legion_bench".into(),
            executors: 1,
            wait_nodes: Duration::from_secs(1),
            schedules: 10_000,
            concurrency: 64,
            lead: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            poll: Duration::from_millis(50),
            keep: false,
            label: "t".into(),
            json_out: None,
        }
    }

    #[test]
    fn flags_are_validated_by_name() {
        assert!(options().validate().is_ok());
        type Breaker = fn(&mut Options);
        let cases: [(&str, Breaker); 7] = [
            ("--schedules", |o| o.schedules = 0),
            ("--schedules", |o| o.schedules = MAX_SCHEDULES + 1),
            ("--concurrency", |o| o.concurrency = 0),
            ("--lead-s", |o| o.lead = Duration::from_secs(1)),
            ("--lead-s", |o| o.lead = MAX_LEAD + Duration::from_secs(1)),
            ("--database-url", |o| o.database_url = "mysql://x".into()),
            ("--poll-ms", |o| o.poll = Duration::ZERO),
        ];
        for (flag, break_it) in cases {
            let mut o = options();
            break_it(&mut o);
            let err = o.validate().expect_err(flag).to_string();
            assert!(err.starts_with(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn every_schedule_names_the_slot_in_six_fields() {
        let slot = DateTime::from_timestamp(1_800_000_000 + 3600 * 5 + 60 * 7 + 9, 0).expect("time");
        assert_eq!(daily_cron(slot), "9 7 13 * * *");
        let s = schedule("bench-sched-ab12cd34-", 42, &daily_cron(slot));
        assert_eq!(s.name, "bench-sched-ab12cd34-0000042");
        assert_eq!(
            (s.function.as_str(), s.cron.as_deref(), s.timezone.as_str()),
            (FUNCTION, Some("9 7 13 * * *"), "UTC")
        );
        assert_eq!(s.interval_ms, None);
    }

    #[test]
    fn a_run_whose_schedules_are_not_due_at_the_slot_is_refused() {
        let slot = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let due = |at: DateTime<Utc>| Schedule {
            name: "s".into(),
            next_fires: vec![legion_proto::timestamp(at)],
            ..Schedule::default()
        };
        let mut calls = create::Calls::default();
        calls.schedules.insert(0, due(slot));
        assert!(check_created(&calls, slot, 5.0).is_ok());
        assert!(check_created(&calls, slot, 0.5).expect_err("late").to_string().starts_with("--lead-s"));
        calls.schedules.insert(0, due(slot + chrono::Duration::days(1)));
        assert!(check_created(&calls, slot, 5.0).expect_err("tomorrow").to_string().contains("not at the slot"));
        assert!(
            check_created(&create::Calls::default(), slot, 5.0).expect_err("none").to_string().contains("no schedule")
        );
    }
}
