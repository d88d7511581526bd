//! What the scheduler does with one schedule at one tick (pure, no I/O): which slot fires, which are
//! passed over, and where the schedule's cursor moves (DESIGN.md section 4).
//!
//! A schedule keeps a cursor: the last slot it has dealt with (fired or passed over). At a tick at
//! `now`, the slots in `(cursor, now]` are due:
//! - none due: nothing happens;
//! - the newest due slot is **on time** when it is at most `grace` old (the tick runs late by less
//!   than that in normal operation). Older due slots, and a newest one past `grace`, were missed
//!   while no leader ticked (downtime, a failover);
//! - misfire policy [`Misfire::FireOnce`] (the default) fires the newest due slot whether on time or
//!   not: a control plane that was down for an hour fires once, not 3,600 times;
//!   [`Misfire::Skip`] fires it only if it is on time, and passes over missed slots;
//! - an interval schedule without `allow_overlap` whose previous task has not finished passes over
//!   the slot it would fire (recorded, so the history shows why nothing ran);
//! - either way the cursor moves to the newest due slot, so no slot is considered twice.

use chrono::{DateTime, Duration, Utc};

use super::slots::Cadence;

/// What to do with slots missed while no leader ticked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misfire {
    /// Fire the newest missed slot once (default).
    #[default]
    FireOnce,
    /// Fire nothing for missed slots.
    Skip,
}

impl Misfire {
    /// `fire_once` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FireOnce => "fire_once",
            Self::Skip => "skip",
        }
    }

    /// Parses `fire_once` or `skip`.
    ///
    /// # Errors
    /// The reason, for an error naming `misfire`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "fire_once" => Ok(Self::FireOnce),
            "skip" => Ok(Self::Skip),
            other => Err(format!("{other:?} is not a misfire policy (expected fire_once or skip)")),
        }
    }
}

/// A schedule as a tick sees it.
#[derive(Debug, Clone)]
pub struct State<'a> {
    /// When it fires.
    pub cadence: &'a Cadence,
    /// The last slot dealt with; `None` before the first (the cursor then starts at `created_at`).
    pub cursor: Option<DateTime<Utc>>,
    /// When the schedule was created or resumed: slots before it are never due.
    pub created_at: DateTime<Utc>,
    /// Missed-slot policy.
    pub misfire: Misfire,
    /// Whether an interval schedule may start a task while its previous one is unfinished.
    pub allow_overlap: bool,
    /// Whether the task of its previous fire has not finished.
    pub previous_running: bool,
}

/// Why a due slot did not fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// Missed while no leader ticked, and the policy is `skip`.
    Missed,
    /// The previous task of a non-overlapping interval schedule was still running.
    Overlap,
}

/// The outcome of one tick for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tick {
    /// The slot to fire now, if any.
    pub fire: Option<DateTime<Utc>>,
    /// The newest due slot that did not fire, and why (older missed slots are not listed).
    pub passed: Option<(DateTime<Utc>, Passed)>,
    /// How many due slots were neither fired nor listed in `passed` (missed during downtime).
    pub missed: u64,
    /// The new cursor (the newest due slot), or `None` when nothing was due.
    pub cursor: Option<DateTime<Utc>>,
}

/// Most due slots counted in [`Tick::missed`]; past it the count stops (a minutely schedule down for a
/// year need not be walked slot by slot).
pub const MAX_COUNTED: u64 = 10_000;

/// Decides one schedule at `now`.
pub fn tick(state: &State<'_>, now: DateTime<Utc>, grace: Duration) -> Tick {
    let Some((newest, older)) = newest_due(state.cadence, state.cursor, state.created_at, now) else {
        return Tick::default();
    };
    let on_time = now.signed_duration_since(newest) <= grace;
    let mut result = Tick { missed: older, cursor: Some(newest), ..Tick::default() };
    if !on_time && state.misfire == Misfire::Skip {
        result.passed = Some((newest, Passed::Missed));
        return result;
    }
    let interval = matches!(state.cadence, Cadence::Interval { .. });
    if interval && !state.allow_overlap && state.previous_running {
        result.passed = Some((newest, Passed::Overlap));
        return result;
    }
    result.fire = Some(newest);
    result
}

/// The newest due slot of `cadence` at `now` (not after `now`, after `cursor`, the last slot dealt
/// with, and not before `active_since`, the creation or resume), with how many older slots were due
/// too (at most [`MAX_COUNTED`]); `None` when no slot is due.
pub fn newest_due(
    cadence: &Cadence,
    cursor: Option<DateTime<Utc>>,
    active_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, u64)> {
    // Slots equal to the creation instant count as due: `next_after` is strict, so start just before.
    let start = cursor.unwrap_or(active_since - Duration::nanoseconds(1));
    let first = cadence.next_after(start).filter(|s| *s <= now)?;
    // Walk to the newest due slot, counting the older ones.
    let (mut newest, mut older) = (first, 0_u64);
    while let Some(next) = cadence.next_after(newest).filter(|s| *s <= now) {
        newest = next;
        older += 1;
        if older >= MAX_COUNTED {
            // Jump: the newest due slot is the last one not after `now`.
            newest = last_not_after(cadence, newest, now);
            break;
        }
    }
    Some((newest, older))
}

/// The newest slot of `cadence` not after `now`, from a slot `from` not after `now`.
fn last_not_after(cadence: &Cadence, from: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    match cadence {
        Cadence::Interval { every, anchor } => {
            let period = every.num_milliseconds().max(1);
            let elapsed = now.signed_duration_since(*anchor).num_milliseconds();
            *anchor + Duration::milliseconds(elapsed / period * period)
        }
        Cadence::Cron { .. } => {
            // Cron slots are irregular: step on (bounded by the time left, not by the count).
            let mut newest = from;
            while let Some(next) = cadence.next_after(newest).filter(|s| *s <= now) {
                newest = next;
            }
            newest
        }
    }
}

#[cfg(test)]
#[path = "tick_tests.rs"]
mod tests;
