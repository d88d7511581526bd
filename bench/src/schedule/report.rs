//! The figures of the `schedule` scenario, computed from the fire rows of the shared slot and their
//! tasks as PostgreSQL holds them, rendered as a table and as one JSON line
//! (`{"bench":"legion-schedule",…}`).
//!
//! Fire and task timestamps are the control plane's (PostgreSQL `now()`: the start of the transaction
//! that wrote them), and the slot is the instant the schedules named, so no clock of the benchmark
//! enters the lateness figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::store::FireTimes;
use crate::stats::{Summary, millis_between, rate, summarize};

/// How the scenario was run and how creation went, echoed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleSetup {
    /// Free-form name of the run.
    pub label: String,
    /// Schedules asked for.
    pub schedules: usize,
    /// `CreateSchedule` calls in flight at once.
    pub concurrency: usize,
    /// The cron expression every schedule has (6 fields, UTC).
    pub cron: String,
    /// The slot they share (RFC 3339, UTC).
    pub slot: DateTime<Utc>,
    /// Ready executors when the scenario started.
    pub executors: Vec<String>,
    /// Schedules created.
    pub created: usize,
    /// `CreateSchedule` calls that failed.
    pub create_failed: u64,
    /// The first failure's message.
    pub create_error: Option<String>,
    /// From the first `CreateSchedule` call to the last answer, s.
    pub create_seconds: f64,
    /// Round trip of the `CreateSchedule` calls that succeeded.
    pub create_rpc_ms: Option<Summary>,
    /// Seconds left between the last answer and the slot.
    pub margin_seconds: f64,
}

/// The figures of one run; latencies in milliseconds after the slot.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleReport {
    /// Always `legion-schedule`.
    pub bench: &'static str,
    /// The setup.
    #[serde(flatten)]
    pub setup: ScheduleSetup,
    /// Schedules created per second.
    pub create_per_s: f64,
    /// Fire rows of the slot.
    pub fires: usize,
    /// Fire rows by outcome (`fired`, `overlap`, `missed`, `failed`).
    pub outcomes: BTreeMap<String, u64>,
    /// `fired_at − slot` of every fire row.
    pub lateness_ms: Option<Summary>,
    /// `fired_at − slot` of the first row written.
    pub first_fire_ms: Option<f64>,
    /// `fired_at − slot` of the last row written: when the last schedule had fired.
    pub last_fire_ms: Option<f64>,
    /// Fire rows per second, from the first to the last `fired_at`; `None` when every row has the same
    /// `fired_at` (one transaction wrote them all).
    pub fires_per_s: Option<f64>,
    /// `started_at − slot` of every task that started.
    pub start_ms: Option<Summary>,
    /// `finished_at − slot` of the last task, when every fired task succeeded.
    pub all_succeeded_ms: Option<f64>,
    /// The fired tasks by status.
    pub statuses: BTreeMap<String, u64>,
    /// True when every schedule asked for was created, fired the slot and its task succeeded.
    pub ok: bool,
}

/// Computes the report from the fire rows of the slot.
pub fn measure(setup: ScheduleSetup, rows: &[FireTimes]) -> ScheduleReport {
    let slot = setup.slot;
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let (mut lateness, mut starts) = (Vec::with_capacity(rows.len()), Vec::new());
    let mut last_finish: Option<DateTime<Utc>> = None;
    for row in rows {
        *outcomes.entry(row.outcome.clone()).or_default() += 1;
        lateness.push(millis_between(slot, row.fired_at));
        if let Some(status) = &row.status {
            *statuses.entry(status.clone()).or_default() += 1;
        }
        if let Some(started) = row.started_at {
            starts.push(millis_between(slot, started));
        }
        if let Some(done) = row.finished_at {
            last_finish = Some(last_finish.map_or(done, |t| t.max(done)));
        }
    }
    let first = rows.iter().map(|r| r.fired_at).min();
    let last = rows.iter().map(|r| r.fired_at).max();
    let spread = first.zip(last).map_or(0.0, |(a, b)| millis_between(a, b) / 1000.0);
    let succeeded = statuses.get("succeeded").copied().unwrap_or(0);
    let fired = outcomes.get("fired").copied().unwrap_or(0);
    let all_succeeded = !rows.is_empty() && fired == rows.len() as u64 && succeeded == fired;
    let ok = setup.created == setup.schedules && rows.len() == setup.created && all_succeeded;
    ScheduleReport {
        bench: "legion-schedule",
        create_per_s: rate(setup.created, setup.create_seconds),
        fires: rows.len(),
        outcomes,
        lateness_ms: summarize(lateness),
        first_fire_ms: first.map(|t| millis_between(slot, t)),
        last_fire_ms: last.map(|t| millis_between(slot, t)),
        fires_per_s: (spread > 0.0).then(|| rate(rows.len(), spread)),
        start_ms: summarize(starts),
        all_succeeded_ms: last_finish.filter(|_| all_succeeded).map(|t| millis_between(slot, t)),
        statuses,
        ok,
        setup,
    }
}

impl ScheduleReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "legion-bench schedule {}: {} schedules `{}` (UTC) due at {}, executors {}",
            s.label,
            s.schedules,
            s.cron,
            s.slot.to_rfc3339_opts(SecondsFormat::Secs, true),
            s.executors.join(", ")
        );
        let _ = writeln!(
            out,
            "  created {} in {:.1} s: {:.0}/s with {} in flight, {} failed{}; {:.1} s left before the slot",
            s.created,
            s.create_seconds,
            self.create_per_s,
            s.concurrency,
            s.create_failed,
            s.create_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            s.margin_seconds
        );
        let _ = writeln!(
            out,
            "  {:<32} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "after the slot (ms)", "p50", "p99", "max", "mean", "n"
        );
        for (name, summary) in [
            ("create rpc", &s.create_rpc_ms),
            ("fired (fired_at - slot)", &self.lateness_ms),
            ("task started", &self.start_ms),
        ] {
            match summary {
                Some(m) => {
                    let _ = writeln!(
                        out,
                        "  {:<32} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7}",
                        name, m.p50_ms, m.p99_ms, m.max_ms, m.mean_ms, m.count
                    );
                }
                None => {
                    let _ = writeln!(out, "  {:<32} {:>9} {:>9} {:>9} {:>9} {:>7}", name, "-", "-", "-", "-", 0);
                }
            }
        }
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
        let rate = self.fires_per_s.map_or_else(|| "one transaction".to_owned(), |r| format!("{r:.0} fires/s"));
        let _ = writeln!(
            out,
            "  first fire {}, LAST FIRE {} after the slot ({rate}); all tasks succeeded {} after the slot",
            ms(self.first_fire_ms),
            ms(self.last_fire_ms),
            ms(self.all_succeeded_ms)
        );
        let list = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "-".to_owned()
            } else {
                m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            }
        };
        let _ = writeln!(out, "  fires: {} ({}); tasks: {}", self.fires, list(&self.outcomes), list(&self.statuses));
        let _ = write!(out, "  result: {}", if self.ok { "ok" } else { "NOT OK" });
        out
    }

    /// The report as one line of JSON.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"bench":"legion-schedule","error":"{e}"}}"#))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn slot() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn at(ms: i64) -> DateTime<Utc> {
        slot() + chrono::Duration::milliseconds(ms)
    }

    fn setup(schedules: usize, created: usize) -> ScheduleSetup {
        ScheduleSetup {
            label: "t".into(),
            schedules,
            concurrency: 8,
            cron: "0 30 12 * * *".into(),
            slot: slot(),
            executors: vec!["e1".into()],
            created,
            create_failed: (schedules - created) as u64,
            create_error: None,
            create_seconds: 2.0,
            create_rpc_ms: None,
            margin_seconds: 30.0,
        }
    }

    fn fired(fired_ms: i64, status: &str, finished_ms: i64) -> FireTimes {
        FireTimes {
            outcome: "fired".into(),
            fired_at: at(fired_ms),
            status: Some(status.into()),
            started_at: Some(at(fired_ms + 10)),
            finished_at: Some(at(finished_ms)),
        }
    }

    #[test]
    fn lateness_is_measured_from_the_slot() {
        let rows = [
            fired(5, "succeeded", 40),
            fired(105, "succeeded", 300),
            fired(205, "succeeded", 250),
            fired(405, "succeeded", 500),
        ];
        let report = measure(setup(4, 4), &rows);
        assert!(report.ok, "{}", report.table());
        assert!((report.create_per_s - 2.0).abs() < 1e-9);
        assert_eq!((report.first_fire_ms, report.last_fire_ms), (Some(5.0), Some(405.0)));
        assert_eq!(report.lateness_ms.map(|s| (s.count, s.p50_ms, s.max_ms)), Some((4, 105.0, 405.0)));
        assert_eq!(report.start_ms.map(|s| s.max_ms), Some(415.0));
        assert_eq!(report.all_succeeded_ms, Some(500.0));
        assert!(report.fires_per_s.is_some_and(|r| (r - 10.0).abs() < 1e-9), "4 rows over 0.4 s");
        let one = measure(setup(2, 2), &[fired(5, "succeeded", 40), fired(5, "succeeded", 41)]);
        assert_eq!(one.fires_per_s, None, "one transaction");
        assert!(one.table().contains("(one transaction)"));
        let line: Value = serde_json::from_str(&report.json_line()).expect("json");
        assert_eq!((line["bench"].as_str(), line["last_fire_ms"].as_f64()), (Some("legion-schedule"), Some(405.0)));
        assert_eq!(line["slot"], "2027-01-15T08:00:00Z");
        assert!(report.table().contains("LAST FIRE 405.0 ms"));
    }

    #[test]
    fn missing_failed_or_unsucceeded_fires_are_not_ok() {
        let rows = [fired(5, "succeeded", 40), fired(6, "failed", 41)];
        let report = measure(setup(2, 2), &rows);
        assert!(!report.ok && report.all_succeeded_ms.is_none());
        assert_eq!(report.statuses, BTreeMap::from([("failed".into(), 1), ("succeeded".into(), 1)]));

        let passed = FireTimes {
            outcome: "failed".into(),
            status: None,
            started_at: None,
            finished_at: None,
            ..fired(7, "", 0)
        };
        let report = measure(setup(2, 2), &[fired(5, "succeeded", 40), passed]);
        assert!(!report.ok);
        assert_eq!(report.outcomes, BTreeMap::from([("failed".into(), 1), ("fired".into(), 1)]));

        assert!(!measure(setup(3, 2), &[fired(5, "succeeded", 40), fired(6, "succeeded", 41)]).ok, "a create failed");
        assert!(!measure(setup(2, 2), &[fired(5, "succeeded", 40)]).ok, "a schedule did not fire");
        let empty = measure(setup(1, 1), &[]);
        assert!(!empty.ok && empty.lateness_ms.is_none() && empty.last_fire_ms.is_none());
        assert!(empty.table().contains("NOT OK"));
    }
}
