//! The scheduler loop (DESIGN.md section 4, `docs/schedules.md`). It runs on every replica and acts only
//! while the leader election ([`crate::leader`]) says this replica holds the scheduler lease, with that
//! lease's epoch as the fencing token of everything it writes.
//!
//! While leading, a round reads up to `control_plane.schedule_batch` due schedules
//! ([`ScheduleStore::due_schedules`]), decides each ([`super::plan`]), builds the tasks of the slots
//! that fire ([`super::build`], transformations in the scheduler's own sandbox pool under the round's
//! budget, [`super::evaluate`]) and writes it all in one transaction ([`ScheduleStore::record_ticks`]),
//! then wakes the outbox publisher and the watchers, and audits the schedules it paused because their
//! creator is no longer authorized (`schedule.pause` by principal [`AUDIT_PRINCIPAL`]). A full batch,
//! or a round that deferred evaluations, is followed at once by another round;
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
use uuid::Uuid;

use super::build::{self, Builder, Lookups};
use super::evaluate::{EvaluationSettings, Evaluator};
use super::plan::{Plan, plan, rfc3339};
use crate::audit::{AuditEvent, AuditLog, Decision};
use crate::auth::Auth;
use crate::chains::sandbox::Sandbox;
use crate::dispatch::backoff::Backoff;
use crate::leader::{Leadership, SCHEDULER_LEASE};
use crate::metrics::OutcomeLabel;
use crate::store::schedules::{DueSchedule, Fence, Outcome, Recorded, ScheduleStore, TickRecord};
use crate::store::{self, Store};
use crate::tasks::submit::Signals;

/// The principal of the audit records the scheduler writes (as the control plane's own
/// `config.load`).
pub const AUDIT_PRINCIPAL: &str = "control-plane";

/// Whether a fire of `schedule` evaluates its transformation in the sandbox (`jinja` or `jq`).
fn needs_sandbox(schedule: &crate::store::schedules::Schedule) -> bool {
    let engine = schedule.spec.transformation.as_ref().and_then(|t| t.get("engine")).and_then(|e| e.as_str());
    matches!(engine, Some("jinja" | "jq"))
}

/// The scheduler's settings (from `control_plane.*`).
#[derive(Debug, Clone, Copy)]
pub struct SchedulerSettings {
    /// Most schedules decided and written per round (`schedule_batch`).
    pub batch: u32,
    /// Longest sleep between rounds (`schedule_poll_ms`).
    pub poll: Duration,
    /// How late a slot may be and still be on time (`misfire_grace_ms`).
    pub grace: Duration,
    /// How transformations are evaluated (`transform_workers`, `transform_timeout_ms`,
    /// `transform_budget_ms`).
    pub evaluation: EvaluationSettings,
}

/// What the scheduler works with.
pub struct SchedulerParts {
    /// Schedules and their history.
    pub schedules: Arc<dyn ScheduleStore>,
    /// The catalog and chains.
    pub store: Arc<dyn Store>,
    /// The creators' keys and policies.
    pub auth: Auth,
    /// Where the pauses of schedules whose creator lost its authorization are recorded.
    pub audit: AuditLog,
    /// The scheduler's own sandbox pool (not the chains'), for `jinja` and `jq` transformations.
    pub sandbox: Sandbox,
    /// The limits in force.
    pub limits: watch::Receiver<Limits>,
    /// Publisher wake-up, watchers, metrics.
    pub signals: Signals,
}

/// The scheduler. Build with [`Scheduler::new`], run with [`Scheduler::run`].
pub struct Scheduler {
    schedules: Arc<dyn ScheduleStore>,
    store: Arc<dyn Store>,
    auth: Auth,
    audit: AuditLog,
    evaluator: Evaluator,
    limits: watch::Receiver<Limits>,
    settings: SchedulerSettings,
    signals: Signals,
}

/// How a round ended.
enum Round {
    /// The batch was full, or evaluations were deferred: more is due.
    More,
    /// Every due schedule was dealt with.
    Done,
}

/// This replica's time as leader at one epoch.
struct Term {
    /// The fence of its writes.
    fence: Fence,
    /// The database's now at its first round: slots missed since were late, not missed for want of
    /// a leader.
    since: Option<DateTime<Utc>>,
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
    /// A scheduler over `parts.schedules`, reading the catalog and chains from `parts.store`, the
    /// creators' keys and policies through `parts.auth`, evaluating transformations in `parts.sandbox`
    /// under `parts.limits`, signalling the tasks it creates through `parts.signals`, and auditing the
    /// pauses it makes in `parts.audit`.
    pub fn new(parts: SchedulerParts, settings: SchedulerSettings) -> Self {
        let SchedulerParts { schedules, store, auth, audit, sandbox, limits, signals } = parts;
        let evaluator = Evaluator::new(sandbox, settings.evaluation);
        Self { schedules, store, auth, audit, evaluator, limits, settings, signals }
    }

    /// Runs until `shutdown`, acting while `leadership` (this replica's, for [`SCHEDULER_LEASE`] held by
    /// `holder`) is `Some`. `changed` wakes it for a schedule created or resumed through this replica.
    pub async fn run(
        mut self,
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
            let mut term = Term { fence: Fence { lease: SCHEDULER_LEASE, holder: holder.clone(), epoch }, since: None };
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                if leadership.borrow_and_update().map(|l| l.epoch) != Some(epoch) {
                    tracing::info!(epoch, "scheduler stops acting: no longer leading at this epoch");
                    continue 'follow;
                }
                let wait = match self.round(&mut term).await {
                    Ok(Round::More) => {
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

    /// One round: read due schedules, decide them, build their tasks, write everything, report. The
    /// schedules whose fire runs a `jinja` or `jq` transformation are decided and written after the
    /// others, in a second transaction, so that slow transformations never delay a schedule without one.
    async fn round(&mut self, term: &mut Term) -> Result<Round, RoundError> {
        let (now, due) = self.schedules.due_schedules(self.settings.batch).await?;
        let leading_since = *term.since.get_or_insert(now);
        if due.is_empty() {
            return Ok(Round::Done);
        }
        let read_at = Instant::now();
        let full = due.len() >= usize::try_from(self.settings.batch).unwrap_or(usize::MAX);
        let (sandboxed, direct): (Vec<DueSchedule>, Vec<DueSchedule>) =
            due.into_iter().partition(|d| needs_sandbox(&d.schedule));
        let mut deferred = false;
        for group in [direct, sandboxed] {
            if !group.is_empty() {
                deferred |= self.decide(term, now, read_at, leading_since, &group).await?;
            }
        }
        Ok(if full || deferred { Round::More } else { Round::Done })
    }

    /// Decides `due` (read at `now` by the database's clock, `read_at` by this process's), builds the
    /// tasks, writes the records in one transaction and reports. Returns whether some schedules were
    /// deferred (left due for the next round).
    async fn decide(
        &mut self,
        term: &Term,
        now: DateTime<Utc>,
        read_at: Instant,
        leading_since: DateTime<Utc>,
        due: &[DueSchedule],
    ) -> Result<bool, RoundError> {
        let grace = chrono::Duration::from_std(self.settings.grace).unwrap_or(chrono::Duration::MAX);
        let plans: Vec<Plan> = due.iter().map(|d| plan(d, now, grace, Some(leading_since))).collect();
        for (d, p) in due.iter().zip(&plans) {
            if let Plan::Broken { reason } = p {
                tracing::error!(schedule = %d.schedule.spec.name, %reason, "schedule stopped: it fires nothing until it is resumed");
            }
        }
        let firing: Vec<_> =
            due.iter().zip(&plans).filter(|(_, p)| p.fire_slot().is_some()).map(|(d, _)| &d.schedule).collect();
        let lookups = Lookups::read(self.store.as_ref(), &self.auth, &firing).await?;
        let limits = self.limits.borrow().clone();
        let builder = Builder { lookups: &lookups, limits: &limits, now };
        let built = self.evaluator.build(&builder, due, &plans, now).await;
        // Deferred schedules get no record: they stay due, and the next round decides them.
        let mut decided = Vec::with_capacity(due.len());
        let mut records = Vec::with_capacity(due.len());
        for (((d, p), task), deferred) in due.iter().zip(plans).zip(built.tasks).zip(&built.deferred) {
            if !deferred {
                records.push(p.record(&d.schedule, task));
                decided.push(d);
            }
        }
        // The fire rows' `fired_at` is the write's start by the database's clock: the read's clock plus
        // the time spent deciding.
        let fired_at = now + chrono::Duration::from_std(read_at.elapsed()).unwrap_or_default();
        let recorded = self.schedules.record_ticks(&term.fence, &records).await?;
        self.report(&decided, &records, &recorded, fired_at);
        self.audit_pauses(&term.fence, &decided, &records, &recorded.paused).await;
        Ok(records.len() < due.len())
    }

    /// Audits the pauses of `paused` (`schedule.pause`, one record each, with the fire row's reason).
    async fn audit_pauses(&self, fence: &Fence, decided: &[&DueSchedule], records: &[TickRecord], paused: &[Uuid]) {
        let events: Vec<AuditEvent> = decided
            .iter()
            .zip(records)
            .filter(|(d, r)| r.pause && paused.contains(&d.schedule.id))
            .map(|(d, r)| {
                let name = &d.schedule.spec.name;
                let reason = r.fire.as_ref().and_then(|f| f.reason.clone()).unwrap_or_default();
                let slot = r.fire.as_ref().map(|f| rfc3339(f.slot)).unwrap_or_default();
                tracing::warn!(
                    schedule = %name,
                    %slot,
                    %reason,
                    "schedule paused: its creator is no longer authorized"
                );
                AuditEvent {
                    action: "schedule.pause".into(),
                    principal: AUDIT_PRINCIPAL.into(),
                    resource: format!("schedules/{name}"),
                    capability: String::new(),
                    decision: Decision::Allow,
                    request_id: String::new(),
                    source: format!("scheduler of {} (epoch {})", fence.holder, fence.epoch),
                    detail: serde_json::json!({"id": d.schedule.id, "slot": slot, "reason": reason}),
                }
            })
            .collect();
        if events.is_empty() {
            return;
        }
        let count = events.len();
        if let Err(e) = self.audit.append_many(events).await {
            tracing::error!(error = %e, count, "cannot audit the schedules paused by the scheduler (they are paused)");
        }
    }

    /// Signals the created tasks, counts and logs what was written.
    fn report(&self, due: &[&DueSchedule], records: &[TickRecord], recorded: &Recorded, fired_at: DateTime<Utc>) {
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
                        tracing::info!(
                            schedule = %name,
                            %slot,
                            task_id = %task.id,
                            missed = fire.missed,
                            %reason,
                            "schedule fired after missed or late slots"
                        );
                    } else {
                        tracing::debug!(schedule = %name, %slot, task_id = %task.id, "schedule fired");
                    }
                }
                (Outcome::Fired, _) => continue,
                (_, _) if !all_written => continue,
                (Outcome::Failed, _) if r.pause => {}
                // The quarantine itself was logged once at WARN; its refused slots are only in the history.
                (Outcome::Failed, _) if reason.starts_with("transformation not evaluated: quarantined") => {
                    tracing::debug!(schedule = %name, %slot, %reason, "schedule slot failed: quarantined");
                }
                (Outcome::Failed, _) => {
                    tracing::warn!(schedule = %name, %slot, %reason, "schedule slot failed; the schedule keeps running");
                }
                (Outcome::Missed, _) => {
                    tracing::info!(schedule = %name, %slot, missed = fire.missed, %reason, "schedule slot missed");
                }
                (Outcome::Overlap, _) => {
                    let task_id = d.schedule.last_task_id.map(|id| id.to_string()).unwrap_or_default();
                    tracing::info!(
                        schedule = %name,
                        %slot,
                        %task_id,
                        %reason,
                        "schedule slot passed over: previous fire unfinished"
                    );
                }
            }
            metrics.schedule_fires.get_or_create(&OutcomeLabel { outcome: fire.outcome.as_str() }).inc();
        }
    }
}
