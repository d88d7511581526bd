//! The slots of a schedule: the UTC instants at which it fires (pure, no I/O).
//!
//! A cron schedule has 5 fields (`minute hour day-of-month month day-of-week`) or 6 (a leading
//! `second`), parsed by [croner](https://docs.rs/croner), and an IANA time zone (default `UTC`) that
//! gives the expression's wall clock. Daylight-saving changes follow DESIGN.md section 4, which is
//! croner's implementation of the Open Cron Pattern Specification (OCPS) rules:
//! - a local time that does not exist (the spring-forward gap) fires once, at the first valid
//!   instant after the gap (`30 2 * * *` in America/New_York fires at 03:00 EDT on 2026-03-08);
//!   croner does this for single values only, so [`Cadence::next_after`] also finds a gap in which a
//!   list, range or step names a time (`30 2,3 * * *`, `*/20 2 * * *`) and fires once at its end;
//! - a local time that happens twice (the fall-back overlap) fires once, at its first occurrence,
//!   for a fixed-time expression (no wildcard or step in the second, minute or hour field: `30 1 * * *`,
//!   but also lists and ranges such as `30 1,5 * * *` or `0,30 1-2 * * *`), and at each UTC instant
//!   for an expression that is hourly or finer (a wildcard or step in one of those fields: `0 * * * *`
//!   fires at both 01:00 of the fall-back day). croner applies the first rule only to single values, so
//!   [`Cadence::next_after`] passes over the second occurrence of a repeated local time itself for
//!   every fixed-time expression.
//!
//! An interval schedule fires every `interval_ms` milliseconds from its anchor (its creation), in
//! UTC, unaffected by time zones.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// Shortest `interval_ms`: one second.
pub const MIN_INTERVAL_MS: u64 = 1000;

/// Longest `interval_ms`: 366 days.
pub const MAX_INTERVAL_MS: u64 = 366 * 24 * 3600 * 1000;

/// Longest cron expression, in bytes.
pub const MAX_CRON_BYTES: usize = 256;

/// The last year with slots: RFC 3339 writes four-digit years.
pub const MAX_YEAR: i32 = 9999;

/// A schedule field that is not acceptable: `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// `cron`, `timezone` or `interval_ms`.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field, reason: reason.into() }
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// A cron expression read on the wall clock of a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// The expression as given.
        expression: String,
        /// The IANA time zone of the wall clock.
        timezone: Tz,
        /// No wildcard or step in the second, minute or hour field: a repeated local time fires once.
        fixed_time: bool,
    },
    /// Every `every`, counted from `anchor`.
    Interval {
        /// The period.
        every: Duration,
        /// The first slot.
        anchor: DateTime<Utc>,
    },
}

impl Cadence {
    /// A cron cadence: `expression` with 5 or 6 fields, `timezone` an IANA name (`None` for UTC).
    ///
    /// # Errors
    /// [`Invalid`] naming `cron` (not 5 or 6 fields, longer than [`MAX_CRON_BYTES`], or refused by
    /// the parser, with its reason) or `timezone` (not an IANA time zone name).
    pub fn cron(expression: &str, timezone: Option<&str>) -> Result<Self, Invalid> {
        if expression.len() > MAX_CRON_BYTES {
            return Err(invalid("cron", format!("must be at most {MAX_CRON_BYTES} bytes")));
        }
        let fields = expression.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(invalid(
                "cron",
                format!(
                    "{expression:?} has {fields} fields; expected 5 (minute hour day-of-month month day-of-week) \
                     or 6 (with a leading second)"
                ),
            ));
        }
        let cron = Cron::from_str(expression).map_err(|e| invalid("cron", format!("{expression:?}: {e}")))?;
        let timezone = match timezone {
            None | Some("") => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                invalid("timezone", format!("{name:?} is not an IANA time zone name (e.g. Europe/Berlin)"))
            })?,
        };
        let fixed_time = fixed_time(expression);
        Ok(Self::Cron { cron: Box::new(cron), expression: expression.to_owned(), timezone, fixed_time })
    }

    /// An interval cadence of `interval_ms` from `anchor`.
    ///
    /// # Errors
    /// [`Invalid`] naming `interval_ms` outside [`MIN_INTERVAL_MS`]..=[`MAX_INTERVAL_MS`].
    pub fn interval(interval_ms: u64, anchor: DateTime<Utc>) -> Result<Self, Invalid> {
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval_ms) {
            return Err(invalid("interval_ms", format!("must be {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS} ms")));
        }
        let every = Duration::milliseconds(i64::try_from(interval_ms).unwrap_or(i64::MAX));
        Ok(Self::Interval { every, anchor })
    }

    /// The first slot strictly after `after`, or `None` when there is none (a cron expression that
    /// never matches again, such as a date in the past). Slots end with the year 9999, the last that
    /// RFC 3339 can write.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after_unbounded(after).filter(|slot| slot.year() <= MAX_YEAR)
    }

    fn next_after_unbounded(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { cron, timezone, fixed_time, .. } => {
                let mut cursor = after;
                // A repeated local time is passed over at most twice a year: the bound only guards
                // against a time zone database gone wrong.
                for _ in 0..MAX_REPEATS_SKIPPED {
                    let local = cursor.with_timezone(timezone);
                    let next = cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc));
                    // croner moves a nonexistent local time past the gap only for single values; a
                    // list, range or step that names one is caught here.
                    if let Some(gap) = gap_slot(cron, timezone, cursor, next) {
                        return Some(gap);
                    }
                    let next = next?;
                    if !(*fixed_time && second_occurrence(next, timezone)) {
                        return Some(next);
                    }
                    cursor = next;
                }
                None
            }
            Self::Interval { every, anchor } => {
                if after < *anchor {
                    return Some(*anchor);
                }
                let elapsed = after.signed_duration_since(*anchor).num_milliseconds();
                let period = every.num_milliseconds().max(1);
                let done = elapsed / period + 1;
                anchor.checked_add_signed(Duration::milliseconds(done.checked_mul(period)?))
            }
        }
    }

    /// The next `count` slots strictly after `after`, in order (fewer when the cadence ends).
    pub fn next_slots(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::with_capacity(count);
        let mut cursor = after;
        while slots.len() < count {
            let Some(next) = self.next_after(cursor) else { break };
            slots.push(next);
            cursor = next;
        }
        slots
    }
}

/// Most second occurrences of repeated local times [`Cadence::next_after`] passes over in one call.
const MAX_REPEATS_SKIPPED: usize = 64;

/// Whether a cron expression is fixed-time: no wildcard (`*`) or step (`/`) in its second (6 fields),
/// minute or hour field.
fn fixed_time(expression: &str) -> bool {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let time_fields = if fields.len() == 6 { 3 } else { 2 };
    fields.iter().take(time_fields).all(|f| !f.contains('*') && !f.contains('/'))
}

/// The first instant after a spring-forward gap of `timezone` that lies in `(after, next]` (or the
/// year after `after` when `next` is `None`), if the expression names a local time inside that gap: such
/// a time does not exist, and fires once, at the first valid instant after the gap.
fn gap_slot(cron: &Cron, timezone: &Tz, after: DateTime<Utc>, next: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let end = next.unwrap_or(after + Duration::days(366));
    let offset = |at: DateTime<Utc>| at.with_timezone(timezone).offset().fix().local_minus_utc();
    let mut low = after;
    while low < end {
        let high = (low + Duration::days(1)).min(end);
        let (before, later) = (offset(low), offset(high));
        if later > before {
            // The transition: the first second at the new offset, by bisection.
            let (mut a, mut b) = (low, high);
            while b.signed_duration_since(a) > Duration::seconds(1) {
                let middle = a + b.signed_duration_since(a) / 2;
                if offset(middle) > before { b = middle } else { a = middle }
            }
            let transition = b.with_nanosecond(0).unwrap_or(b);
            let transition = if offset(transition) > before { transition } else { transition + Duration::seconds(1) };
            if transition > after && gap_named(cron, transition, before, offset(transition)) {
                return Some(transition);
            }
        }
        low = high;
    }
    None
}

/// Whether the expression matches a local time in the gap that opens at `transition` (UTC), where the
/// offset moves from `before` to `after` seconds: the local times `[transition + before, transition + after)`.
fn gap_named(cron: &Cron, transition: DateTime<Utc>, before: i32, after: i32) -> bool {
    let start = (transition + Duration::seconds(i64::from(before))).naive_utc();
    let length = i64::from(after - before);
    (0..length).any(|s| cron.is_time_matching(&(start + Duration::seconds(s))).unwrap_or(false))
}

/// Whether `instant` is the second occurrence of a local time of `timezone` that happens twice (the
/// fall-back overlap).
fn second_occurrence(instant: DateTime<Utc>, timezone: &Tz) -> bool {
    let local = instant.with_timezone(timezone).naive_local();
    match timezone.from_local_datetime(&local) {
        LocalResult::Ambiguous(a, b) => instant == a.max(b).with_timezone(&Utc),
        _ => false,
    }
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
