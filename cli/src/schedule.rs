//! `legion schedule …`: define schedules over gRPC (`legion.v1.ScheduleService`), and preview a
//! cadence locally.
//!
//! `add` builds the REST body of `POST /api/v1/schedules` from its flags, or reads it from a JSON or
//! YAML file ([`legion_gateway::input::ScheduleBody`], so a file is refused exactly as the REST API
//! refuses the same body), checks a cron cadence with the scheduler's own code
//! ([`legion_common::slots::Cadence`]) before any call, and prints the created schedule. `show` prints
//! the definition, the next fires and the last fire ([`output`]), or with `--json` the REST shape
//! ([`legion_gateway::view::Schedule`]), which `add --file` takes back. `preview` needs no control
//! plane: it prints the slots `Cadence` computes, one RFC 3339 UTC instant per line.

pub mod output;

use std::io::{Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use legion_common::slots::{Cadence, Invalid};
use legion_gateway::input::ScheduleBody;
use legion_gateway::view::{Schedule, ScheduleFirePage};
use legion_proto::v1;
use legion_proto::v1::schedule_service_client::ScheduleServiceClient;

use crate::args::{ScheduleAdd, ScheduleCommand, ScheduleFires, SchedulePreview};
use crate::chain::{is_yaml_name, parse_document};
use crate::connect::AuthChannel;
use crate::error::Error;
use crate::task::print_pretty;

/// Schedules per `ListSchedules` page for `schedule list` (the API's maximum).
pub const PAGE_SIZE: u32 = 1000;

/// Runs one `schedule` command with the client `connect` gives; `stdin` is read by
/// `schedule add --file -`. Definitions and cadences are checked before connecting, and `preview`
/// never connects.
///
/// # Errors
/// [`Error::Usage`] for an unreadable or malformed schedule file or a cadence the scheduler refuses
/// (exit 64, the flag or field named: `--cron: …`, `--timezone: …`); `connect`'s error;
/// [`Error::Grpc`] when the control plane refuses a call (ALREADY_EXISTS for a taken name,
/// INVALID_ARGUMENT naming the field) or cannot be reached; [`Error::Output`].
pub async fn run(
    command: ScheduleCommand,
    connect: impl FnOnce() -> Result<ScheduleServiceClient<AuthChannel>, Error>,
    stdin: impl Read,
    out: &mut impl Write,
) -> Result<u8, Error> {
    match command {
        ScheduleCommand::Add(add) => {
            let json = add.json;
            let request = add_request(*add, stdin)?;
            let schedule = connect()?.create_schedule(request).await?.into_inner();
            print_schedule(out, &Schedule::from(&schedule), json)?;
        }
        ScheduleCommand::List => {
            let schedules = list_all(&mut connect()?).await?;
            output::write_list(out, &schedules)?;
        }
        ScheduleCommand::Show { name, json } => {
            let schedule = connect()?.get_schedule(v1::GetScheduleRequest { name }).await?.into_inner();
            print_schedule(out, &Schedule::from(&schedule), json)?;
        }
        ScheduleCommand::Pause { name } => {
            let schedule = connect()?.pause_schedule(v1::SetSchedulePausedRequest { name }).await?.into_inner();
            writeln!(out, "{}", output::paused_line(&Schedule::from(&schedule)))?;
        }
        ScheduleCommand::Resume { name } => {
            let schedule = connect()?.resume_schedule(v1::SetSchedulePausedRequest { name }).await?.into_inner();
            writeln!(out, "{}", output::paused_line(&Schedule::from(&schedule)))?;
        }
        ScheduleCommand::Delete { name } => {
            connect()?.delete_schedule(v1::DeleteScheduleRequest { name }).await?;
        }
        ScheduleCommand::Fires(fires) => {
            let ScheduleFires { name, limit, page_token, json } = fires;
            let request = v1::ListScheduleFiresRequest {
                name: name.clone(),
                page_size: limit,
                page_token: page_token.unwrap_or_default(),
            };
            let page = ScheduleFirePage::from(&connect()?.list_schedule_fires(request).await?.into_inner());
            if json {
                print_pretty(out, &page)?;
            } else {
                output::write_fires(out, &name, &page)?;
            }
        }
        ScheduleCommand::Preview(preview) => {
            for slot in preview_slots(&preview, Utc::now())? {
                writeln!(out, "{}", output::instant(&slot))?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

fn print_schedule(out: &mut impl Write, schedule: &Schedule, json: bool) -> Result<(), Error> {
    if json { print_pretty(out, schedule) } else { output::write_schedule(out, schedule) }
}

/// The flag that sets a cadence field: `--cron`, `--timezone`, or for `interval_ms` the one given
/// (`--every` or `--interval-ms`).
fn flag_error(invalid: &Invalid, every: bool) -> Error {
    let flag = match invalid.field {
        "cron" => "--cron",
        "timezone" => "--timezone",
        _ if every => "--every",
        _ => "--interval-ms",
    };
    Error::Usage(format!("{flag}: {}", invalid.reason))
}

/// The slots `schedule preview` prints: the first `--count` slots strictly after `--from` (default
/// `now`, exactly, as `GET /api/v1/schedule-preview` takes it), an interval being counted from
/// `--from`.
///
/// # Errors
/// [`Error::Usage`] naming the flag: `--cron` (not 5 or 6 fields, refused by the parser, or without
/// any slot after `--from`: `--cron: "0 0 31 2 *" has no slot after 2026-03-07T00:00:00Z`) or
/// `--timezone` (not an IANA name).
pub fn preview_slots(preview: &SchedulePreview, now: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>, Error> {
    let from = preview.from.unwrap_or(now);
    let cadence = match (&preview.cron, preview.every.or(preview.interval_ms)) {
        (Some(cron), _) => Cadence::cron(cron, preview.timezone.as_deref()),
        (None, Some(ms)) => Cadence::interval(ms, from),
        (None, None) => return Err(Error::Usage("--cron, --every or --interval-ms: one is required".into())),
    }
    .map_err(|e| flag_error(&e, preview.every.is_some()))?;
    let slots = cadence.next_slots(from, preview.count as usize);
    match (&preview.cron, slots.is_empty()) {
        // A cadence without slots is a cron expression that never matches again (`0 0 31 2 *`): an
        // empty listing would pass for a preview.
        (Some(cron), true) => {
            Err(Error::Usage(format!("--cron: {cron:?} has no slot after {}", output::instant(&from))))
        }
        _ => Ok(slots),
    }
}

/// The `CreateSchedule` request of `schedule add`: from the flags, or from `--file` (`-`: `stdin`) with
/// the positional NAME, when given, replacing the file's `name`, and `--paused` its `paused`. A cron cadence is checked with
/// [`Cadence::cron`] first, so a bad expression or time zone never reaches the control plane.
///
/// # Errors
/// [`Error::Usage`]: a file that cannot be read or is not the schedule shape (named, with the field:
/// `nightly.yaml: interval_ms: invalid type: …`), or a refused cadence (`--cron: …`, `--timezone: …`;
/// for a file, `FILE: cron: …`).
pub fn add_request(add: ScheduleAdd, stdin: impl Read) -> Result<v1::CreateScheduleRequest, Error> {
    let body = match &add.file {
        Some(file) => {
            let mut body = read_schedule(file, add.name.as_deref(), stdin)?;
            if add.paused {
                body.paused = Some(true);
            }
            body
        }
        None => body_from_flags(add)?,
    };
    Ok(body.into_request())
}

fn body_from_flags(add: ScheduleAdd) -> Result<ScheduleBody, Error> {
    if let Some(cron) = &add.cron {
        Cadence::cron(cron, add.timezone.as_deref()).map_err(|e| flag_error(&e, false))?;
    }
    let mut document = serde_json::json!({
        "name": add.name,
        "function": add.function,
        "args": add.args,
        "transformation": add.transformation,
        "chain": add.chain,
        "priority": add.priority,
        "max_attempts": add.max_attempts,
        "timeout_ms": add.timeout_ms,
        "region": add.region,
        "cron": add.cron,
        "interval_ms": add.every.or(add.interval_ms),
        "timezone": add.timezone,
        "misfire": add.misfire,
        "description": add.description,
        "paused": add.paused,
    });
    if add.allow_overlap {
        document["allow_overlap"] = serde_json::Value::Bool(true);
    }
    // The flags' values pass the same checks as a REST body (`--args` nested too deep, say).
    ScheduleBody::from_value(&document).map_err(|p| Error::Usage(p.detail))
}

/// Reads a schedule document from `file` (`-`: `stdin`), YAML or JSON as [`parse_document`] decides
/// by its name, in the shape of the REST body of `POST /api/v1/schedules` ([`ScheduleBody::from_value`];
/// the output-only members of `show --json` are accepted and ignored). `name`, when given, replaces
/// the document's.
///
/// # Errors
/// [`Error::Usage`] naming the file (or `standard input`) and the field.
pub fn read_schedule(file: &Path, name: Option<&str>, mut stdin: impl Read) -> Result<ScheduleBody, Error> {
    let from_stdin = file == Path::new("-");
    let origin = if from_stdin { "standard input".to_owned() } else { file.display().to_string() };
    let mut bytes = Vec::new();
    let read =
        if from_stdin { stdin.read_to_end(&mut bytes).map(|_| ()) } else { std::fs::read(file).map(|b| bytes = b) };
    read.map_err(|e| Error::Usage(format!("cannot read {origin}: {e}")))?;
    let mut document =
        parse_document(&bytes, is_yaml_name(file)).map_err(|e| Error::Usage(format!("{origin}: {e}")))?;
    if let (Some(name), Some(object)) = (name, document.as_object_mut()) {
        object.insert("name".into(), serde_json::Value::String(name.to_owned()));
    }
    let body = ScheduleBody::from_value(&document).map_err(|p| Error::Usage(format!("{origin}: {}", p.detail)))?;
    if let Some(cron) = &body.cron {
        Cadence::cron(cron, body.timezone.as_deref()).map_err(|e| Error::Usage(format!("{origin}: {e}")))?;
    }
    Ok(body)
}

/// Every schedule, by name: `ListSchedules` page after page.
///
/// # Errors
/// [`Error::Grpc`], also when the control plane hands out the same page token twice.
pub async fn list_all(client: &mut ScheduleServiceClient<AuthChannel>) -> Result<Vec<Schedule>, Error> {
    let mut schedules = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = v1::ListSchedulesRequest { page_size: PAGE_SIZE, page_token: page_token.clone() };
        let response = client.list_schedules(request).await?.into_inner();
        schedules.extend(response.schedules.iter().map(Schedule::from));
        if response.next_page_token.is_empty() {
            return Ok(schedules);
        }
        if response.next_page_token == page_token {
            return Err(Error::Grpc(tonic::Status::internal(format!(
                "the control plane returned page token {page_token:?} twice while listing schedules"
            ))));
        }
        page_token = response.next_page_token;
    }
}

#[cfg(test)]
mod tests;
