//! The command line of `legion schedule …` and the parsers of its values. The cadence flags are
//! checked before any call: `--every` and `--interval-ms` must lie in 1 s to 366 days (whole
//! milliseconds), `--timezone` goes only with `--cron`, `--allow-overlap` only with an interval, and
//! exactly one cadence is given.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand};
use legion_common::slots::{MAX_INTERVAL_MS, MIN_INTERVAL_MS};

use super::parse_json_arg;

/// The misfire policies a schedule may name.
pub const MISFIRE_POLICIES: &[&str] = &["fire_once", "skip"];

/// `legion schedule …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Creates a schedule from flags, or from a file shaped as the body of `POST /api/v1/schedules`,
    /// and prints it as `show` does (its next fires included).
    Add(Box<ScheduleAdd>),
    /// Prints every schedule as a table: name, cadence, function, state, next fire, last fire.
    List,
    /// Prints a schedule: its definition, its next fires and its last fire.
    Show {
        /// The schedule's name.
        name: String,
        /// Print the REST shape (`GET /api/v1/schedules/{name}`) as pretty JSON; `add --file` takes it
        /// back.
        #[arg(long)]
        json: bool,
    },
    /// Pauses a schedule: it fires nothing until resumed. Prints one line.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resumes a paused schedule (slots that passed while it was paused never fire). Prints one line
    /// with its next fire.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Deletes a schedule and its fire history; tasks it fired are kept. Prints nothing.
    Delete {
        /// The schedule's name.
        name: String,
    },
    /// Prints what happened to the newest slots of a schedule, newest first, as a table: slot,
    /// outcome, status, task, fired_at, missed, reason.
    Fires(ScheduleFires),
    /// Prints the next slots of a cadence, one RFC 3339 UTC instant per line, computed locally by the
    /// scheduler's own code (no control plane needed).
    Preview(SchedulePreview),
}

/// `legion schedule add`.
#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("definition").args(["cron", "every", "interval_ms", "file"]).required(true).multiple(false)
))]
pub struct ScheduleAdd {
    /// The schedule's name: 1 to 64 bytes of a-z, 0-9, `_`, `-` and `.`, starting with a letter or
    /// digit. With --file, it overrides the file's `name`.
    #[arg(required_unless_present = "file")]
    pub name: Option<String>,
    /// Reads the schedule from a JSON or YAML file shaped as the body of `POST /api/v1/schedules` (what
    /// `show --json` prints); `-` reads standard input. A `.yaml`/`.yml` file is read as YAML; any
    /// other as JSON, else YAML.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "function", "args", "timezone", "chain", "priority", "max_attempts", "timeout_ms", "region", "misfire",
        "allow_overlap", "transformation", "description",
    ])]
    pub file: Option<PathBuf>,
    /// `extension.runner.function` of the fired tasks, e.g. `http.request.get`.
    #[arg(long, value_name = "FUNCTION", required_unless_present = "file")]
    pub function: Option<String>,
    /// The fired tasks' JSON args, inline or `@FILE`; default `{}`.
    #[arg(long, value_name = "JSON", value_parser = parse_json_arg)]
    pub args: Option<serde_json::Value>,
    /// A cron expression of 5 fields (`minute hour day-of-month month day-of-week`) or 6 (a leading
    /// second), read on the wall clock of --timezone.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// IANA time zone name of --cron (e.g. `Europe/Berlin`); default UTC.
    #[arg(long, value_name = "TZ", conflicts_with_all = ["every", "interval_ms"])]
    pub timezone: Option<String>,
    /// Fire at this interval from the schedule's creation: a duration such as `30s`, `5m`, `1h 30m`
    /// or `2d`, 1 s to 366 days.
    #[arg(long, value_name = "DURATION", value_parser = parse_every)]
    pub every: Option<u64>,
    /// Fire every MS milliseconds from the schedule's creation, 1000 to 31622400000.
    #[arg(long = "interval-ms", value_name = "MS", value_parser = parse_interval_ms)]
    pub interval_ms: Option<u64>,
    /// Each fired task is the root of a run of this chain.
    #[arg(long, value_name = "NAME")]
    pub chain: Option<String>,
    /// Priority of the fired tasks, 0 (lowest, default) to 9 (highest).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub priority: Option<u32>,
    /// Attempts of each fired task (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// Limit for one attempt, in milliseconds (default `limits.default_timeout_ms`).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..))]
    pub timeout_ms: Option<u32>,
    /// Region whose executors run the fired tasks (default: any).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Slots missed while no control plane led: `fire_once` (default) fires the newest once, `skip`
    /// none of them.
    #[arg(long, value_name = "POLICY", value_parser = clap::builder::PossibleValuesParser::new(MISFIRE_POLICIES))]
    pub misfire: Option<String>,
    /// Interval schedules: start a task even while the previous one is unfinished.
    #[arg(long, conflicts_with = "cron")]
    pub allow_overlap: bool,
    /// A transformation of the args at each fire, as JSON inline or `@FILE`:
    /// `{"engine":"jq","expr":"…"}`, `{"engine":"jinja","template":"…"}` or
    /// `{"engine":"static","value":{…}}`.
    #[arg(long, value_name = "JSON", value_parser = parse_json_arg)]
    pub transformation: Option<serde_json::Value>,
    /// What the schedule is for.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Create the schedule paused: it fires nothing until `legion schedule resume NAME`. With --file,
    /// overrides the file's `paused`.
    #[arg(long)]
    pub paused: bool,
    /// Print the created schedule as its REST shape (pretty JSON) instead.
    #[arg(long)]
    pub json: bool,
}

/// `legion schedule fires`.
#[derive(Debug, Clone, Args)]
pub struct ScheduleFires {
    /// The schedule's name.
    pub name: String,
    /// Fires to print, 1 to 1000 (default 20).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// `next_page_token` of the previous page (printed after a full page).
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
    /// Print the page as its REST shape `{"fires":[…],"next_page_token"}` (pretty JSON).
    #[arg(long)]
    pub json: bool,
}

/// `legion schedule preview`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("cadence").args(["cron", "every", "interval_ms"]).required(true).multiple(false)))]
pub struct SchedulePreview {
    /// A cron expression of 5 or 6 fields, read on the wall clock of --timezone.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// IANA time zone name of --cron; default UTC.
    #[arg(long, value_name = "TZ", conflicts_with_all = ["every", "interval_ms"])]
    pub timezone: Option<String>,
    /// An interval such as `30s`, `5m` or `1h`, counted from --from.
    #[arg(long, value_name = "DURATION", value_parser = parse_every)]
    pub every: Option<u64>,
    /// An interval in milliseconds, counted from --from.
    #[arg(long = "interval-ms", value_name = "MS", value_parser = parse_interval_ms)]
    pub interval_ms: Option<u64>,
    /// Print the slots strictly after this instant (RFC 3339, any offset); default now (to the
    /// nanosecond, as the REST preview).
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// How many slots, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
}

fn check_interval(ms: u64) -> Result<u64, String> {
    if (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!("must be 1s to 366d ({MIN_INTERVAL_MS} to {MAX_INTERVAL_MS} ms), got {ms} ms"))
    }
}

/// A human duration (`30s`, `5m`, `1h 30m`, `2d`, `1.5s`; see humantime's units) in whole
/// milliseconds, 1 s to 366 days.
pub fn parse_every(value: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(value)
        .map_err(|e| format!("{e}; expected a duration such as 30s, 5m, 1h 30m or 2d"))?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{value:?} is not a whole number of milliseconds"));
    }
    check_interval(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// A number of milliseconds, 1000 to 31622400000 (1 s to 366 days).
pub fn parse_interval_ms(value: &str) -> Result<u64, String> {
    let ms = value.parse::<u64>().map_err(|_| format!("must be a whole number of milliseconds, got {value:?}"))?;
    check_interval(ms)
}

/// An RFC 3339 instant (`2026-03-07T00:00:00Z`, any offset), in UTC.
pub fn parse_instant(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("must be an RFC 3339 time like 2026-03-07T00:00:00Z, got {value:?}: {e}"))
}
