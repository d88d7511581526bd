//! Validation of a `legion.v1.Schedule` into a [`ScheduleSpec`], and the slots the API shows (pure, no
//! I/O).
//!
//! Every error names the field first (`cron: …`, `timezone: …`), as the proto's comments say. The task
//! fields (`function`, `args`, `priority`, `max_attempts`, `timeout_ms`, `region`, `chain`) are checked
//! by the submit validator ([`validate_submit`]), so a schedule is held to exactly the limits of a
//! submit; the cadence by [`Cadence`], the code that fires it. Whether the function is in the catalog,
//! whether the chain exists, and whether the caller may do all this need storage and policies: the gRPC
//! adapter checks them after this.

use chrono::{DateTime, Utc};
use legion_common::settings::Limits;
use legion_proto::v1;
use legion_proto::value_to_json;

use super::slots::{Cadence, Invalid};
use super::tick::Misfire;
use crate::chains::FieldError;
use crate::chains::transform::Transformation;
use crate::store::schedules::{CadenceSpec, Schedule, ScheduleSpec};
use crate::tasks::validate::{contains_nul, validate_submit};

/// Longest schedule description, in bytes (as a chain's).
pub const MAX_DESCRIPTION_BYTES: usize = crate::chains::validate::MAX_DESCRIPTION_BYTES;

/// How many upcoming slots `Schedule.next_fires` holds.
pub const NEXT_FIRES: usize = 5;

/// Slots `PreviewSchedule` returns when no `count` is given.
pub const DEFAULT_PREVIEW_COUNT: u32 = 5;

/// Most slots one `PreviewSchedule` returns.
pub const MAX_PREVIEW_COUNT: u32 = 1000;

/// The time zone of interval schedules, and of cron schedules that name none.
pub const UTC: &str = "UTC";

fn field_error(e: Invalid) -> FieldError {
    FieldError::new(e.field, e.reason)
}

/// Checks a schedule document and applies its defaults. `paused` creates it paused. Output-only fields
/// (`next_fires`, `created_at`, `updated_at`, `created_by`, `last_fire`) are ignored. The result's
/// `created_by` and `policies` are empty: the caller sets them after authentication. Whether the cadence
/// has a slot after now is [`first_slot`]'s check; what the transformation gives on that slot is checked
/// by the gRPC adapter, which evaluates it in the sandbox.
///
/// # Errors
/// [`FieldError`] naming the first field at fault, in this order: `name` (as chain names),
/// `description` (more than [`MAX_DESCRIPTION_BYTES`], NUL), the task fields as a submit's
/// (`function`, `chain`, `args`, `priority`, `max_attempts`, `timeout_ms`, `region`),
/// `transformation` (and its sub-fields, as a relationship's), `cron` (both or neither of `cron` and
/// `interval_ms`; an expression that does not parse), `timezone` (not an IANA name; set on an interval
/// schedule), `interval_ms` (outside 1000..=31622400000), `misfire` (not `fire_once` or `skip`),
/// `allow_overlap` (set on a cron schedule).
pub fn validate(schedule: &v1::Schedule, limits: &Limits) -> Result<ScheduleSpec, FieldError> {
    crate::policy::parse::validate_name("name", &schedule.name).map_err(|e| FieldError::new(e.field, e.reason))?;
    if schedule.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(FieldError::new("description", format!("must be at most {MAX_DESCRIPTION_BYTES} bytes")));
    }
    if schedule.description.contains('\0') {
        return Err(FieldError::new("description", "must not contain NUL characters"));
    }
    // The task fields line up with a submit's, so a fired task passes exactly the checks of a submit.
    let submit = v1::SubmitTaskRequest {
        function: schedule.function.clone(),
        args: schedule.args.clone(),
        priority: schedule.priority,
        max_attempts: schedule.max_attempts,
        timeout_ms: schedule.timeout_ms,
        delay_ms: 0,
        idempotency_key: None,
        region: schedule.region.clone(),
        chain: schedule.chain.clone(),
        retry: schedule.retry,
    };
    let task = validate_submit(&submit, limits).map_err(|e| FieldError::new(e.field, e.reason))?;
    let transformation = match schedule.transformation.as_ref().map(value_to_json) {
        None | Some(serde_json::Value::Null) => None,
        Some(document) => {
            Transformation::parse(&document, "transformation", limits.max_transformation_bytes)?;
            if contains_nul(&document) {
                return Err(FieldError::new(
                    "transformation",
                    "strings must not contain NUL (\\u0000), which PostgreSQL cannot store",
                ));
            }
            Some(document)
        }
    };
    let cadence = cadence_spec(schedule.cron.as_deref(), &schedule.timezone, schedule.interval_ms)?;
    let misfire = match schedule.misfire.as_str() {
        "" => Misfire::default(),
        text => Misfire::parse(text).map_err(|reason| FieldError::new("misfire", reason))?,
    };
    if schedule.allow_overlap && matches!(cadence, CadenceSpec::Cron { .. }) {
        return Err(FieldError::new(
            "allow_overlap",
            "only interval schedules can overlap; cron schedules always start each slot's task",
        ));
    }
    Ok(ScheduleSpec {
        name: schedule.name.clone(),
        description: schedule.description.clone(),
        function: task.function.to_string(),
        args: task.args,
        transformation,
        chain: task.chain,
        priority: task.priority,
        max_attempts: task.max_attempts,
        timeout_ms: task.timeout_ms,
        region: task.region,
        cadence,
        allow_overlap: schedule.allow_overlap,
        misfire,
        paused: schedule.paused,
        created_by: String::new(),
        policies: Vec::new(),
        retry: task.retry,
    })
}

/// Checks a cadence as given in a request: exactly one of `cron` and `interval_ms`, with `timezone`
/// (empty for UTC) only for `cron`. The stored time zone is the IANA name, `UTC` when none was given.
///
/// # Errors
/// [`FieldError`] naming `cron` (both or neither given, or the expression is refused by
/// [`Cadence::cron`]), `timezone` (not an IANA name, or not empty/`UTC` with `interval_ms`) or
/// `interval_ms` (outside [`super::slots::MIN_INTERVAL_MS`]..=[`super::slots::MAX_INTERVAL_MS`]).
pub fn cadence_spec(cron: Option<&str>, timezone: &str, interval_ms: Option<u64>) -> Result<CadenceSpec, FieldError> {
    match (cron, interval_ms) {
        (Some(_), Some(_)) => Err(FieldError::new("cron", "give either cron or interval_ms, not both")),
        (None, None) => Err(FieldError::new("cron", "required: give either cron or interval_ms")),
        (Some(expression), None) => match Cadence::cron(expression, Some(timezone)).map_err(field_error)? {
            Cadence::Cron { timezone, .. } => {
                Ok(CadenceSpec::Cron { expression: expression.to_owned(), timezone: timezone.name().to_owned() })
            }
            Cadence::Interval { .. } => Err(FieldError::new("cron", "is not a cron expression")),
        },
        (None, Some(interval_ms)) => {
            if !timezone.is_empty() && timezone != UTC {
                return Err(FieldError::new(
                    "timezone",
                    format!("only cron schedules have a time zone; leave it empty (or {UTC}) with interval_ms"),
                ));
            }
            // The anchor does not matter to the check.
            Cadence::interval(interval_ms, DateTime::<Utc>::UNIX_EPOCH).map_err(field_error)?;
            Ok(CadenceSpec::Interval { interval_ms })
        }
    }
}

/// The first slot of a schedule created at `now`, as the scheduler computes it: for a cron cadence the
/// first slot from `now` on, for an interval `now` itself (its anchor is the creation instant). The
/// creation checks the transformation on this slot.
///
/// # Errors
/// [`FieldError`] naming `cron` when the expression never matches from `now` on
/// (`cron: "0 0 31 2 *" has no slot after now`), which would be a schedule that never fires; as
/// [`cadence`] for a cadence that does not parse.
pub fn first_slot(spec: &CadenceSpec, now: DateTime<Utc>) -> Result<DateTime<Utc>, FieldError> {
    match spec {
        CadenceSpec::Interval { .. } => Ok(now),
        CadenceSpec::Cron { expression, .. } => {
            let cadence = cadence(spec, now).map_err(field_error)?;
            // From `now` included, as the scheduler looks from the instant before the activation.
            let first = cadence.next_after(now - chrono::Duration::nanoseconds(1));
            first.ok_or_else(|| FieldError::new("cron", format!("{expression:?} has no slot after now")))
        }
    }
}

/// The [`Cadence`] of a stored cadence; `anchor` is the first slot of an interval schedule (its
/// `created_at`).
///
/// # Errors
/// [`Invalid`] when the stored expression, time zone or interval no longer passes (a row written by
/// another version).
pub fn cadence(spec: &CadenceSpec, anchor: DateTime<Utc>) -> Result<Cadence, Invalid> {
    match spec {
        CadenceSpec::Cron { expression, timezone } => Cadence::cron(expression, Some(timezone)),
        CadenceSpec::Interval { interval_ms } => Cadence::interval(*interval_ms, anchor),
    }
}

/// The next [`NEXT_FIRES`] slots of `schedule`: first the newest slot that is due and not dealt with
/// yet, if any (the creation instant of a new interval schedule, or a slot the leader has yet to
/// decide: it fires, or is recorded `missed` or `overlap`, at the leader's next round), then the slots
/// strictly after the latest of `now`, its cursor (the last slot dealt with) and `active_since` (slots
/// before a creation or resume never fire); none while it is paused, fewer when the cadence ends.
///
/// # Errors
/// As [`cadence`].
pub fn next_fires(schedule: &Schedule, now: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>, Invalid> {
    if schedule.paused {
        return Ok(Vec::new());
    }
    let cadence = cadence(&schedule.spec.cadence, schedule.created_at)?;
    let due = super::tick::newest_due(&cadence, schedule.cursor, schedule.active_since, now).map(|(slot, _)| slot);
    let after = [Some(now), schedule.cursor, Some(schedule.active_since)].into_iter().flatten().max().unwrap_or(now);
    let later = cadence.next_slots(after, NEXT_FIRES - usize::from(due.is_some()));
    Ok(due.into_iter().chain(later).collect())
}

/// A `PreviewSchedule` request, checked.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The cadence; an interval is anchored at `from`.
    pub cadence: Cadence,
    /// Slots are strictly after this instant.
    pub from: DateTime<Utc>,
    /// How many slots, 1 to [`MAX_PREVIEW_COUNT`].
    pub count: usize,
}

impl Preview {
    /// The slots.
    pub fn slots(&self) -> Vec<DateTime<Utc>> {
        self.cadence.next_slots(self.from, self.count)
    }
}

/// Checks a `PreviewSchedule` request: the cadence as [`cadence_spec`], `from` (default `now`), `count`
/// (0 for [`DEFAULT_PREVIEW_COUNT`]).
///
/// # Errors
/// [`FieldError`] naming `cron`, `timezone`, `interval_ms` (as [`cadence_spec`]), `from` (not a valid
/// instant) or `count` (more than [`MAX_PREVIEW_COUNT`]).
pub fn preview(request: &v1::PreviewScheduleRequest, now: DateTime<Utc>) -> Result<Preview, FieldError> {
    let spec = cadence_spec(request.cron.as_deref(), &request.timezone, request.interval_ms)?;
    let from = match &request.from {
        None => now,
        Some(ts) => legion_proto::timestamp_to_chrono(ts)
            .ok_or_else(|| FieldError::new("from", "is not a valid timestamp (seconds and nanos out of range)"))?,
    };
    let count = match request.count {
        0 => DEFAULT_PREVIEW_COUNT,
        n if n <= MAX_PREVIEW_COUNT => n,
        n => return Err(FieldError::new("count", format!("must be 1 to {MAX_PREVIEW_COUNT}, got {n}"))),
    };
    let cadence = cadence(&spec, from).map_err(field_error)?;
    Ok(Preview { cadence, from, count: usize::try_from(count).unwrap_or(usize::MAX) })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
