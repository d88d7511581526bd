//! The scheduler loop (DESIGN.md section 4, `docs/schedules.md`). It runs on every replica and acts only
//! while the leader election ([`crate::leader`]) says this replica holds the scheduler lease, with that
//! lease's epoch as the fencing token of everything it writes.
//!
//! While leading, a round reads up to `control_plane.schedule_batch` due schedules
//! ([`ScheduleStore::due_schedules`]), decides each ([`super::plan`]), builds the tasks of the slots
//! that fire ([`super::build`]) and writes it all in one transaction ([`ScheduleStore::record_ticks`]),
//! then wakes the outbox publisher and the watchers. A full batch is followed at once by another round;
//! otherwise the loop sleeps until the earliest `next_due`, computed against the database's clock (so
//! replicas' clocks do not matter), at most `control_plane.schedule_poll_ms` (to see schedules created
//! through other replicas), and wakes early for a change made through this replica, a change of
//! leadership, or shutdown.
//!
//! A write refused by the fence means the lease was lost (taken over, or expired by the database's
//! clock): the loop stops acting until the election reports leadership again. Other storage failures
//! are retried with backoff.
//!
//! Only this loop must run on one replica at a time. The outbox publisher, the promoter of delayed
//! tasks and the lease sweeper run on every replica: each claims its rows with `FOR UPDATE SKIP LOCKED`
//! inside a transaction whose set-based update re-checks the row's state, so two replicas never act on
//! the same row.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use legion_common::settings::Limits;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::build::{self, Builder, Lookups};
use super::plan::{Plan, plan, rfc3339};
use crate::auth::Auth;
use crate::chains::sandbox::Sandbox;
use crate::dispatch::backoff::Backoff;
use crate::leader::{Leadership, SCHEDULER_LEASE};
use crate::metrics::OutcomeLabel;
use crate::store::schedules::{DueSchedule, Fence, Outcome, Recorded, ScheduleStore, TickRecord};
use crate::store::{self, Store};
use crate::tasks::submit::Signals;

/// The scheduler's settings (from `control_plane.*`).
#[derive(Debug, Clone, Copy)]
pub struct SchedulerSettings {
    /// Most schedules decided and written per round (`schedule_batch`).
    pub batch: u32,
    /// Longest sleep between rounds (`schedule_poll_ms`).
    pub poll: Duration,
    /// How late a slot may be and still be on time (`misfire_grace_ms`).
    pub grace: Duration,
}

/// The scheduler. Build with [`Scheduler::new`], run with [`Scheduler::run`].
pub struct Scheduler {
    schedules: Arc<dyn ScheduleStore>,
    store: Arc<dyn Store>,
    auth: Auth,
    sandbox: Sandbox,
    limits: watch::Receiver<Limits>,
    settings: SchedulerSettings,
    signals: Signals,
}

/// How a round ended.
enum Round {
    /// The batch was full: more may be due.
    Full,
    /// Every due schedule was dealt with.
    Done,
}

/// Why a round wrote nothing.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    /// The fence refused the write: the lease is lost.
    #[error("{0}")]
    LeaseLost(String),
    /// Storage or policies could not be read, or the write failed.
    #[error(transparent)]
    Lookup(#[from] build::Error),
}

impl From<store::Error> for RoundError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::FailedPrecondition(message) => Self::LeaseLost(message),
            other => Self::Lookup(other.into()),
        }
    }
}

impl Scheduler {
    /// A scheduler over `schedules`, reading the catalog and chains from `store`, the creators' keys and
    /// policies through `auth`, evaluating transformations in `sandbox` under `limits`, and signalling
    /// the tasks it creates through `signals` (publisher wake-up, watchers, metrics).
    pub fn new(
        schedules: Arc<dyn ScheduleStore>,
        store: Arc<dyn Store>,
        auth: Auth,
        sandbox: Sandbox,
        limits: watch::Receiver<Limits>,
        settings: SchedulerSettings,
        signals: Signals,
    ) -> Self {
        Self { schedules, store, auth, sandbox, limits, settings, signals }
    }

    /// Runs until `shutdown`, acting while `leadership` (this replica's, for [`SCHEDULER_LEASE`] held by
    /// `holder`) is `Some`. `changed` wakes it for a schedule created or resumed through this replica.
    pub async fn run(
        self,
        holder: String,
        mut leadership: watch::Receiver<Option<Leadership>>,
        changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        'follow: loop {
            let epoch = loop {
                if let Some(led) = *leadership.borrow_and_update() {
                    break led.epoch;
                }
                tokio::select! {
                    changed = leadership.changed() => if changed.is_err() { return },
                    () = shutdown.cancelled() => return,
                }
            };
            tracing::info!(epoch, "scheduler acting as leader");
            let fence = Fence { lease: SCHEDULER_LEASE, holder: holder.clone(), epoch };
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                if leadership.borrow_and_update().map(|l| l.epoch) != Some(epoch) {
                    tracing::info!(epoch, "scheduler stops acting: no longer leading at this epoch");
                    continue 'follow;
                }
                let wait = match self.round(&fence).await {
                    Ok(Round::Full) => {
                        backoff.reset();
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Ok(Round::Done) => {
                        backoff.reset();
                        match self.until_next_due().await {
                            Ok(wait) => wait,
                            Err(e) => {
                                let delay = backoff.next_delay();
                                tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "cannot read when schedules are due next");
                                delay
                            }
                        }
                    }
                    // Stopping: the election released the lease before this round's write.
                    Err(RoundError::LeaseLost(_)) if shutdown.is_cancelled() => return,
                    Err(RoundError::LeaseLost(reason)) => {
                        tracing::warn!(epoch, %reason, "scheduler lease lost; waiting to lead again");
                        tokio::select! {
                            changed = leadership.changed() => if changed.is_err() { return },
                            () = shutdown.cancelled() => return,
                        }
                        continue 'follow;
                    }
                    Err(RoundError::Lookup(e)) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "scheduler round failed; retrying");
                        delay
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = changed.notified() => {}
                    changed = leadership.changed() => if changed.is_err() { return },
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }

    /// How long to sleep: until the earliest `next_due` by the database's clock (rounded up to the
    /// millisecond), at most the poll interval.
    async fn until_next_due(&self) -> Result<Duration, store::Error> {
        let (now, next) = self.schedules.next_due().await?;
        let Some(next) = next else { return Ok(self.settings.poll) };
        let micros = next.signed_duration_since(now).num_microseconds().unwrap_or(i64::MAX).max(0);
        let wait = Duration::from_millis(u64::try_from(micros).unwrap_or(0).div_ceil(1000));
        Ok(wait.min(self.settings.poll))
    }

    /// One round: read due schedules, decide them, build their tasks, write everything, report.
    async fn round(&self, fence: &Fence) -> Result<Round, RoundError> {
        let (now, due) = self.schedules.due_schedules(self.settings.batch).await?;
        if due.is_empty() {
            return Ok(Round::Done);
        }
        let read_at = Instant::now();
        let grace = chrono::Duration::from_std(self.settings.grace).unwrap_or(chrono::Duration::MAX);
        let plans: Vec<Plan> = due.iter().map(|d| plan(d, now, grace)).collect();
        for (d, p) in due.iter().zip(&plans) {
            if let Plan::Broken { reason } = p {
                tracing::error!(schedule = %d.schedule.spec.name, %reason, "schedule stopped: it fires nothing until it is resumed");
            }
        }
        let firing: Vec<_> =
            due.iter().zip(&plans).filter(|(_, p)| p.fire_slot().is_some()).map(|(d, _)| &d.schedule).collect();
        let lookups = Lookups::read(self.store.as_ref(), &self.auth, &firing).await?;
        let limits = self.limits.borrow().clone();
        let builder = Builder { lookups: &lookups, sandbox: &self.sandbox, limits: &limits, now };
        let built = futures_util::future::join_all(due.iter().zip(&plans).map(|(d, p)| {
            let builder = &builder;
            async move {
                match p.fire_slot() {
                    Some(slot) => Some(builder.build(&d.schedule, slot).await),
                    None => None,
                }
            }
        }))
        .await;
        let records: Vec<TickRecord> =
            plans.into_iter().zip(&due).zip(built).map(|((p, d), b)| p.record(&d.schedule, b)).collect();
        // The fire rows' `fired_at` is the write's start by the database's clock: the read's clock plus
        // the time spent deciding.
        let fired_at = now + chrono::Duration::from_std(read_at.elapsed()).unwrap_or_default();
        let recorded = self.schedules.record_ticks(fence, &records).await?;
        self.report(&due, &records, &recorded, fired_at);
        let full = due.len() >= usize::try_from(self.settings.batch).unwrap_or(usize::MAX);
        Ok(if full { Round::Full } else { Round::Done })
    }

    /// Signals the created tasks, counts and logs what was written.
    fn report(&self, due: &[DueSchedule], records: &[TickRecord], recorded: &Recorded, fired_at: DateTime<Utc>) {
        if !recorded.fired.is_empty() {
            self.signals.wake.notify_one();
            self.signals.events.publish(&recorded.changes);
        }
        if recorded.stale > 0 {
            tracing::debug!(
                stale = recorded.stale,
                "schedules changed while being decided; their decisions were dropped"
            );
        }
        if recorded.duplicates > 0 {
            tracing::warn!(
                duplicates = recorded.duplicates,
                "slots already dealt with by another writer (two replicas believed they led); their tasks were not created"
            );
        }
        // Which fired slots were written is known exactly; of the others, only when nothing was dropped.
        let fired: HashSet<uuid::Uuid> = recorded.fired.iter().map(|(_, task)| *task).collect();
        let all_written = recorded.stale == 0 && recorded.duplicates == 0;
        let metrics = &self.signals.metrics;
        for (d, r) in due.iter().zip(records) {
            let Some(fire) = &r.fire else { continue };
            let name = &d.schedule.spec.name;
            let slot = rfc3339(fire.slot);
            let reason = fire.reason.as_deref().unwrap_or_default();
            match (fire.outcome, &r.task) {
                (Outcome::Fired, Some(task)) if fired.contains(&task.id) => {
                    let late = fired_at.signed_duration_since(fire.slot).num_microseconds().unwrap_or(0).max(0);
                    #[allow(clippy::cast_precision_loss)]
                    metrics.schedule_lateness.observe(late as f64 / 1e6);
                    if fire.reason.is_some() {
                        tracing::info!(schedule = %name, %slot, task_id = %task.id, missed = fire.missed, %reason, "schedule fired a catch-up slot");
                    } else {
                        tracing::debug!(schedule = %name, %slot, task_id = %task.id, "schedule fired");
                    }
                }
                (Outcome::Fired, _) => continue,
                (_, _) if !all_written => continue,
                (Outcome::Failed, _) => {
                    tracing::warn!(schedule = %name, %slot, %reason, "schedule slot failed; the schedule keeps running");
                }
                (Outcome::Missed, _) => {
                    tracing::info!(schedule = %name, %slot, missed = fire.missed, %reason, "schedule slot missed");
                }
                (Outcome::Overlap, _) => {
                    let task_id = d.schedule.last_task_id.map(|id| id.to_string()).unwrap_or_default();
                    tracing::info!(schedule = %name, %slot, %task_id, %reason, "schedule slot passed over: previous task unfinished");
                }
            }
            metrics.schedule_fires.get_or_create(&OutcomeLabel { outcome: fire.outcome.as_str() }).inc();
        }
    }
}
