//! What `legion schedule` prints for people: a schedule as aligned `key: value` lines (its next fires
//! and its last fire included), tables of schedules and of fires, and the one-line answers of `pause`
//! and `resume`. Instants are RFC 3339 in UTC with `Z` and fractional seconds only when not zero, as
//! in the REST shapes; absent values are `-`.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use legion_gateway::view::{Schedule, ScheduleFire, ScheduleFirePage};

use crate::error::Error;

/// An instant as the REST shapes write it: `2026-03-08T07:00:00Z`, `2026-03-08T07:00:00.250Z`.
pub fn instant(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn optional_instant(at: Option<&DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), instant)
}

/// The cadence in words: `cron "30 2 * * *" in America/New_York`, or
/// `every 5m (300000 ms), overlap allowed` / `…, no overlap`.
pub fn cadence(schedule: &Schedule) -> String {
    match (&schedule.cron, schedule.interval_ms) {
        (Some(cron), _) => format!("cron {cron:?} in {}", schedule.timezone),
        (None, Some(ms)) => {
            let overlap = if schedule.allow_overlap { "overlap allowed" } else { "no overlap" };
            format!("every {} ({ms} ms), {overlap}", humantime::format_duration(Duration::from_millis(ms)))
        }
        (None, None) => "-".to_owned(),
    }
}

/// One fire in words: `2026-03-08T07:00:00Z fired: task 0190… (succeeded)`, or for a slot that did not
/// fire `2026-03-08T07:00:00Z overlap: the previous task is unfinished`; then the reason of a catch-up
/// and the count of earlier slots missed, when there are.
pub fn fire_summary(fire: &ScheduleFire) -> String {
    let mut text = format!("{} {}", optional_instant(fire.slot.as_ref()), fire.outcome);
    match &fire.task_id {
        Some(task) => {
            text.push_str(&format!(": task {task} ({})", fire.status));
            if let Some(reason) = &fire.reason {
                text.push_str(&format!(", {reason}"));
            }
        }
        None => {
            if let Some(reason) = &fire.reason {
                text.push_str(&format!(": {reason}"));
            }
        }
    }
    if fire.missed > 0 {
        text.push_str(&format!("; {} earlier slot{} missed", fire.missed, if fire.missed == 1 { "" } else { "s" }));
    }
    text
}

/// The retry fields a schedule sets, as JSON (`{"initial_backoff_ms":200,"jitter":0.0}`); `-` when it
/// sets none (the `retry.*` settings apply when a task is fired).
fn retry(schedule: &Schedule) -> String {
    match serde_json::to_value(&schedule.retry) {
        Ok(serde_json::Value::Object(set)) if !set.is_empty() => serde_json::Value::Object(set).to_string(),
        _ => "-".to_owned(),
    }
}

/// Writes a schedule as aligned `key: value` lines: name, description, function, args,
/// transformation, chain, cadence, misfire, priority, max_attempts, timeout_ms, retry, region, state,
/// created, updated, next fires (one per line; `none (paused)` while paused) and last fire (`never`
/// before the first).
///
/// # Errors
/// [`Error::Output`].
pub fn write_schedule(out: &mut impl Write, s: &Schedule) -> Result<(), Error> {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let json = |v: &serde_json::Value| if v.is_null() { "-".to_owned() } else { v.to_string() };
    let created = match &s.created_by {
        Some(by) => format!("{} by {by}", optional_instant(s.created_at.as_ref())),
        None => optional_instant(s.created_at.as_ref()),
    };
    let lines = [
        ("name", s.name.clone()),
        ("description", or_dash(s.description.clone())),
        ("function", s.function.clone()),
        ("args", json(&s.args)),
        ("transformation", json(&s.transformation)),
        ("chain", or_dash(s.chain.clone())),
        ("cadence", cadence(s)),
        ("misfire", s.misfire.clone()),
        ("priority", s.priority.to_string()),
        ("max_attempts", or_dash(s.max_attempts.map(|n| n.to_string()))),
        ("timeout_ms", or_dash(s.timeout_ms.map(|n| n.to_string()))),
        ("retry", retry(s)),
        ("region", or_dash(s.region.clone())),
        ("state", if s.paused { "paused" } else { "running" }.to_owned()),
        ("created", created),
        ("updated", optional_instant(s.updated_at.as_ref())),
    ];
    const WIDTH: usize = "transformation: ".len();
    for (key, value) in lines {
        writeln!(out, "{:<WIDTH$}{value}", format!("{key}:"))?;
    }
    match s.next_fires.split_first() {
        None if s.paused => writeln!(out, "{:<WIDTH$}none (paused)", "next fires:")?,
        None => writeln!(out, "{:<WIDTH$}none", "next fires:")?,
        Some((first, rest)) => {
            writeln!(out, "{:<WIDTH$}{}", "next fires:", instant(first))?;
            for slot in rest {
                writeln!(out, "{:<WIDTH$}{}", "", instant(slot))?;
            }
        }
    }
    let last = s.last_fire.as_ref().map_or_else(|| "never".to_owned(), fire_summary);
    writeln!(out, "{:<WIDTH$}{last}", "last fire:")?;
    Ok(())
}

/// The line of `pause` and `resume`: `schedule NAME paused`, or
/// `schedule NAME running, next fire 2026-03-08T07:00:00Z` (`…, no next fire` when the cadence has
/// none left).
pub fn paused_line(s: &Schedule) -> String {
    if s.paused {
        return format!("schedule {} paused", s.name);
    }
    match s.next_fires.first() {
        Some(next) => format!("schedule {} running, next fire {}", s.name, instant(next)),
        None => format!("schedule {} running, no next fire", s.name),
    }
}

/// Writes rows under a header, columns padded to their widest cell (the last one unpadded).
fn write_table<const N: usize>(out: &mut impl Write, header: [&str; N], rows: &[[String; N]]) -> Result<(), Error> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes schedules as a table: `NAME  CADENCE  FUNCTION  STATE  NEXT_FIRE  LAST_FIRE`, the cadence as
/// `30 2 * * * America/New_York` or `every 5m`, the last fire as its slot and outcome.
///
/// # Errors
/// [`Error::Output`].
pub fn write_list(out: &mut impl Write, schedules: &[Schedule]) -> Result<(), Error> {
    let rows: Vec<[String; 6]> = schedules
        .iter()
        .map(|s| {
            let cadence = match (&s.cron, s.interval_ms) {
                (Some(cron), _) => format!("{cron} {}", s.timezone),
                (None, Some(ms)) => format!("every {}", humantime::format_duration(Duration::from_millis(ms))),
                (None, None) => "-".to_owned(),
            };
            let last = s
                .last_fire
                .as_ref()
                .map_or_else(|| "-".to_owned(), |f| format!("{} {}", optional_instant(f.slot.as_ref()), f.outcome));
            [
                s.name.clone(),
                cadence,
                s.function.clone(),
                if s.paused { "paused" } else { "running" }.to_owned(),
                optional_instant(s.next_fires.first()),
                last,
            ]
        })
        .collect();
    write_table(out, ["NAME", "CADENCE", "FUNCTION", "STATE", "NEXT_FIRE", "LAST_FIRE"], &rows)
}

/// Writes one page of fires as a table: `SLOT  OUTCOME  STATUS  TASK_ID  FIRED_AT  MISSED  REASON`,
/// then, when there are more, the command that prints the next page.
///
/// # Errors
/// [`Error::Output`].
pub fn write_fires(out: &mut impl Write, name: &str, page: &ScheduleFirePage) -> Result<(), Error> {
    let rows: Vec<[String; 7]> = page
        .fires
        .iter()
        .map(|f| {
            [
                optional_instant(f.slot.as_ref()),
                f.outcome.clone(),
                f.status.clone(),
                f.task_id.clone().unwrap_or_else(|| "-".to_owned()),
                optional_instant(f.fired_at.as_ref()),
                f.missed.to_string(),
                f.reason.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    write_table(out, ["SLOT", "OUTCOME", "STATUS", "TASK_ID", "FIRED_AT", "MISSED", "REASON"], &rows)?;
    if let Some(token) = &page.next_page_token {
        writeln!(out, "more: legion schedule fires {name} --page-token {token}")?;
    }
    Ok(())
}
