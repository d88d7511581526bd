//! What the scheduler does with one due schedule, and the checks a fire must pass (pure, no I/O).
//!
//! [`plan`] turns a due schedule into a [`Plan`]: wait (nothing due yet), pass over a slot (overlap,
//! missed) or fire one, each with the schedule's new cursor and `next_due`, or stop a schedule whose
//! stored cadence no longer parses. For a fire, the scheduler then gathers what the checks need (the
//! catalog, the chain, the creator's key and policies) and builds the task, or fails the slot with the
//! first check's reason ([`check_catalog`], [`check_chain`], [`check_key`], [`check_access`],
//! [`check_args`]). [`Plan::record`] makes the [`TickRecord`] the store writes: a creator no longer
//! authorized ([`Failure::Unauthorized`]) also pauses the schedule.

use std::collections::HashMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use legion_common::settings::{Limits, json_depth};
use serde_json::{Value, json};
use uuid::Uuid;

use super::tick::{self, Passed, State};
use crate::chains::Chain;
use crate::grpc::chains::{actions, chain_path};
use crate::grpc::tasks::{runner_path, task_path};
use crate::policy::{Acl, Capability};
use crate::store::NewTask;
use crate::store::schedules::{DueSchedule, NewFire, Outcome, Schedule, TickRecord};
use crate::tasks::validate::{contains_nul, json_kind};

/// The decision about one due schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The stored cadence no longer parses (it was valid at creation): the schedule stops
    /// (`next_due` = `None`) until it is resumed.
    Broken {
        /// Why, for the log.
        reason: String,
    },
    /// No slot is due: look again at `next_due`.
    Wait {
        /// The first slot after the cursor (`None`: the cadence has no further slot).
        next_due: Option<DateTime<Utc>>,
    },
    /// The newest due slot is passed over (overlap, or missed with policy `skip`).
    Pass {
        /// The fire row ([`Outcome::Overlap`] or [`Outcome::Missed`]).
        fire: NewFire,
        /// The new cursor (the slot).
        cursor: DateTime<Utc>,
        /// The first slot after it.
        next_due: Option<DateTime<Utc>>,
    },
    /// The newest due slot fires: the caller builds its task, or fails the slot.
    Fire {
        /// The slot.
        slot: DateTime<Utc>,
        /// Older due slots, not listed and not fired (missed while no leader ticked, or late).
        missed: u64,
        /// For a late fire, or one after older slots that were not fired: what happened to them.
        reason: Option<String>,
        /// The first slot after it.
        next_due: Option<DateTime<Utc>>,
    },
}

/// `n` and `noun`, plural unless `n` is 1: "1 missed slot", "3 missed slots".
fn count(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// Why due slots were not dealt with on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// They came due while no replica led (downtime, a failover, another holder of the lease).
    NoLeader,
    /// They came due while this replica led at this epoch: its rounds took longer than the cadence.
    Busy,
}

impl Cause {
    /// How a reason says it, after the slots: "missed while no leader ticked".
    fn phrase(self) -> &'static str {
        match self {
            Self::NoLeader => "missed while no leader ticked",
            Self::Busy => "late while the scheduler was busy",
        }
    }
}

/// Decides `due` at `now` (the database's clock), a slot at most `grace` old being on time
/// ([`tick::tick`]). `leading_since` is when this replica started acting as leader at its current
/// epoch (the database's now of its first round), if it does: slots missed since then were late
/// because the scheduler was busy, not missed while no leader ticked, and the reasons say so.
pub fn plan(due: &DueSchedule, now: DateTime<Utc>, grace: Duration, leading_since: Option<DateTime<Utc>>) -> Plan {
    let schedule = &due.schedule;
    let cadence = match super::validate::cadence(&schedule.spec.cadence, schedule.created_at) {
        Ok(cadence) => cadence,
        Err(e) => return Plan::Broken { reason: format!("the stored cadence no longer parses: {e}") },
    };
    let misfire = schedule.spec.misfire;
    let state = State {
        cadence: &cadence,
        cursor: schedule.cursor,
        created_at: schedule.active_since,
        misfire,
        allow_overlap: schedule.spec.allow_overlap,
        previous_running: due.previous_running,
    };
    let decided = tick::tick(&state, now, grace);
    // The first slot after the cursor (or from the activation on).
    let first = cadence.next_after(schedule.cursor.unwrap_or(schedule.active_since - Duration::nanoseconds(1)));
    let Some(cursor) = decided.cursor else {
        // Nothing due: the first slot is in the future.
        return Plan::Wait { next_due: first };
    };
    let next_due = cadence.next_after(cursor);
    // The first slot is the oldest due: if it came due after this replica started leading, all did.
    let cause = match (leading_since, first) {
        (Some(since), Some(oldest)) if oldest >= since => Cause::Busy,
        _ => Cause::NoLeader,
    };
    if let Some((slot, passed)) = decided.passed {
        let (outcome, reason) = match passed {
            Passed::Missed => (
                Outcome::Missed,
                format!("{} ({}); misfire policy skip", cause.phrase(), count(decided.missed + 1, "slot")),
            ),
            Passed::Overlap => {
                let mut reason = match (schedule.last_task_id, &schedule.spec.chain) {
                    (Some(root), Some(_)) => format!("previous chain run {root} unfinished"),
                    (Some(task), None) => format!("previous task {task} unfinished"),
                    (None, _) => "the previous fire's task is unfinished".to_owned(),
                };
                if decided.missed > 0 {
                    reason.push_str(&format!("; {} {}", count(decided.missed, "older slot"), cause.phrase()));
                }
                (Outcome::Overlap, reason)
            }
        };
        let fire = NewFire { slot, outcome, reason: Some(reason), missed: decided.missed };
        return Plan::Pass { fire, cursor, next_due };
    }
    let slot = decided.fire.unwrap_or(cursor);
    let late = now.signed_duration_since(slot) > grace;
    let reason = if late {
        // Only fire_once fires a late slot (skip passes over it): it was missed too.
        let slots = decided.missed + 1;
        Some(match cause {
            Cause::NoLeader => format!("catch-up for {} (misfire fire_once)", count(slots, "missed slot")),
            Cause::Busy => {
                format!("catch-up for {} late while the scheduler was busy (misfire fire_once)", count(slots, "slot"))
            }
        })
    } else if decided.missed > 0 {
        let verb = if decided.missed == 1 { "was" } else { "were" };
        Some(format!(
            "on time; {} {} {verb} not fired (misfire {})",
            count(decided.missed, "older slot"),
            cause.phrase(),
            misfire.as_str()
        ))
    } else {
        None
    };
    Plan::Fire { slot, missed: decided.missed, reason, next_due }
}

/// Why a fire's task could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The slot fails with this reason; the schedule keeps running.
    Slot(String),
    /// The creator is no longer authorized (this reason): the slot fails and the schedule is paused
    /// until an operator resumes it.
    Unauthorized(String),
}

impl Failure {
    /// The reason, as the fire row records it.
    pub fn reason(&self) -> String {
        match self {
            Self::Slot(reason) => reason.clone(),
            Self::Unauthorized(reason) => format!("{reason}; the schedule is paused until it is resumed"),
        }
    }
}

impl Plan {
    /// The slot this plan fires, if any.
    pub fn fire_slot(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Fire { slot, .. } => Some(*slot),
            _ => None,
        }
    }

    /// The record to write for `schedule`. For [`Plan::Fire`], `built` is the task, or why the slot
    /// fails (a `failed` fire row; the schedule keeps running, unless its creator is no longer
    /// authorized: then the record pauses it); it is ignored otherwise.
    pub fn record(self, schedule: &Schedule, built: Option<Result<NewTask, Failure>>) -> TickRecord {
        let mut record = TickRecord {
            schedule_id: schedule.id,
            revision: schedule.revision,
            cursor: None,
            next_due: None,
            fire: None,
            task: None,
            pause: false,
        };
        match self {
            Self::Broken { .. } => {}
            Self::Wait { next_due } => record.next_due = next_due,
            Self::Pass { fire, cursor, next_due } => {
                record.cursor = Some(cursor);
                record.next_due = next_due;
                record.fire = Some(fire);
            }
            Self::Fire { slot, missed, reason, next_due } => {
                record.cursor = Some(slot);
                record.next_due = next_due;
                let built = built.unwrap_or_else(|| Err(Failure::Slot("the task was not built".to_owned())));
                record.fire = Some(match built {
                    Ok(task) => {
                        record.task = Some(task);
                        NewFire { slot, outcome: Outcome::Fired, reason, missed }
                    }
                    Err(failure) => {
                        record.pause = matches!(failure, Failure::Unauthorized(_));
                        NewFire { slot, outcome: Outcome::Failed, reason: Some(failure.reason()), missed }
                    }
                });
            }
        }
        record
    }
}

/// RFC 3339 in UTC with the precision the instant needs (`2026-03-08T07:00:00Z`).
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The input of a schedule's transformation: `{"args", "schedule": {"name", "slot", "fired_at"}}`.
pub fn context(args: &Value, name: &str, slot: DateTime<Utc>, fired_at: DateTime<Utc>) -> Value {
    json!({
        "args": args,
        "schedule": {"name": name, "slot": rfc3339(slot), "fired_at": rfc3339(fired_at)},
    })
}

/// Checks the args of a fired task (a transformation's output, or the stored args under limits that may
/// have been lowered since the creation): an object within `limits.max_payload_bytes` and
/// `limits.max_json_depth`, without NUL. Returns them with their JSON text.
///
/// # Errors
/// The reason, starting with `args:`.
pub fn check_args(args: Value, limits: &Limits) -> Result<(Value, String), String> {
    if !args.is_object() {
        return Err(format!(
            "args: the transformation produced {}; the args of a task must be an object",
            json_kind(&args)
        ));
    }
    let text = args.to_string();
    if text.len() > limits.max_payload_bytes {
        return Err(format!(
            "args: {} bytes exceeds limits.max_payload_bytes ({})",
            text.len(),
            limits.max_payload_bytes
        ));
    }
    let depth = json_depth(&args);
    if depth > limits.max_json_depth {
        return Err(format!(
            "args: nested {depth} levels deep, more than limits.max_json_depth ({})",
            limits.max_json_depth
        ));
    }
    if contains_nul(&args) {
        return Err("args: strings must not contain NUL (\\u0000)".to_owned());
    }
    Ok((args, text))
}

/// Whether `function` may fire according to the catalog (function → extension disabled).
///
/// # Errors
/// The reason: not in the catalog, or its extension disabled.
pub fn check_catalog(catalog: &HashMap<String, bool>, function: &str) -> Result<(), String> {
    match catalog.get(function) {
        None => Err(format!("function {function} is no longer in the catalog")),
        Some(true) => Err(format!(
            "function {function}: extension {:?} is disabled",
            function.split('.').next().unwrap_or(function)
        )),
        Some(false) => Ok(()),
    }
}

/// Whether chain `name` (as read now: `None` if deleted) can start a run from `function`.
///
/// # Errors
/// The reason: the chain is gone, or none of its active relationships is triggered by `function`.
pub fn check_chain<'a>(chain: Option<&'a Chain>, name: &str, function: &str) -> Result<&'a Chain, String> {
    let chain = chain.ok_or_else(|| format!("chain {name:?} no longer exists"))?;
    if !chain.definition.relationships.iter().any(|r| r.active && r.trigger == function) {
        return Err(format!(
            "no active relationship of chain {name:?} is triggered by {function}: the run would do nothing"
        ));
    }
    Ok(chain)
}

/// The API key behind a creator principal: `api-key/<id>`, or a token exchanged for one
/// (`jwt/api-key/<id>`), which dies with its key. `None` for other principals.
pub fn creator_key(principal: &str) -> Option<Uuid> {
    let id = principal.strip_prefix("api-key/").or_else(|| principal.strip_prefix("jwt/api-key/"))?;
    Uuid::parse_str(id).ok()
}

/// Whether the creator's API key (read now: `None` if deleted) still authenticates at `now`.
///
/// # Errors
/// The reason naming the creator.
pub fn check_key(
    principal: &str,
    key: Option<&crate::store::security::ApiKeyRecord>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    match key {
        None => Err(format!("creator {principal} is no longer authorized: its API key no longer exists")),
        Some(k) if k.revoked_at.is_some() => {
            Err(format!("creator {principal} is no longer authorized: its API key was revoked"))
        }
        Some(k) if !k.is_valid_at(now) => {
            Err(format!("creator {principal} is no longer authorized: its API key has expired"))
        }
        Some(_) => Ok(()),
    }
}

/// The capabilities a fire needs (as a submit, DESIGN.md section 6): `create` on the task path and
/// `execute` on the runner of `function`; with a chain, `execute` on the chain and on the runner of each
/// of its actions.
pub fn required(function: &str, chain: Option<&Chain>) -> Vec<(String, Capability)> {
    let mut checks = vec![(task_path(function), Capability::Create), (runner_path(function), Capability::Execute)];
    if let Some(chain) = chain {
        checks.push((chain_path(&chain.name), Capability::Execute));
        checks.extend(actions(&chain.definition).iter().map(|a| (runner_path(a), Capability::Execute)));
    }
    checks
}

/// Whether the creator's policies (merged into `acl`) grant every one of `checks`.
///
/// # Errors
/// The reason naming the first capability lacking.
pub fn check_access(principal: &str, acl: &Acl, checks: &[(String, Capability)]) -> Result<(), String> {
    match checks.iter().find(|(path, capability)| !acl.allows(path, *capability)) {
        Some((path, capability)) => {
            Err(format!("creator {principal} is no longer authorized: lacks {capability} on {path}"))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
