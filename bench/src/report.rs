//! The figures of one run, computed from what the submit driver saw and what PostgreSQL recorded,
//! rendered as a table for people and as one JSON line for scripts.
//!
//! Times: `sent_at` is the benchmark's wall clock just before a `SubmitTask` call; `started_at` and
//! `finished_at` are the control plane's timestamps in PostgreSQL. Everything runs on one host, so the
//! clocks are the same clock.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::stats::{Summary, millis_between, rate, summarize};
use crate::store::TaskTimes;
use crate::submit::Outcome;

/// Status counted for an accepted task id that PostgreSQL does not hold.
pub const MISSING: &str = "missing";

/// How a run was set up, echoed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Free-form name of the run, e.g. `legion-2-executors`.
    pub label: String,
    /// The benchmarked function.
    pub function: String,
    /// Ready executors when the run started.
    pub executors: Vec<String>,
    /// Tasks asked for.
    pub tasks: usize,
    /// `SubmitTask` calls in flight.
    pub concurrency: usize,
    /// HTTP/2 connections used.
    pub connections: usize,
}

/// The figures of one run. Durations in seconds, latencies in milliseconds, rates in tasks/s.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `legion`, to tell these lines from other benchmarks' in a shared log.
    pub bench: &'static str,
    /// The run's setup.
    #[serde(flatten)]
    pub setup: Setup,
    /// Wall-clock time of the first submit.
    pub first_submit_at: Option<DateTime<Utc>>,
    /// Submits accepted.
    pub submitted: usize,
    /// Failed submits by gRPC code.
    pub submit_failures: BTreeMap<String, u64>,
    /// First submit to last submit answered, s.
    pub submit_seconds: f64,
    /// Accepted submits per second over `submit_seconds`.
    pub submit_per_s: f64,
    /// First submit to the last `finished_at` of an accepted task, s; `None` when none finished.
    pub e2e_seconds: Option<f64>,
    /// Finished tasks per second over `e2e_seconds`.
    pub e2e_per_s: Option<f64>,
    /// Round trip of `SubmitTask`, ms.
    pub submit_rpc_ms: Option<Summary>,
    /// `sent_at` to `started_at` (the current attempt's start), ms.
    pub submit_to_start_ms: Option<Summary>,
    /// `sent_at` to `finished_at`, ms.
    pub submit_to_finish_ms: Option<Summary>,
    /// Transactions committed in the control plane's database during the measured round (see
    /// [`crate::store::Store::commits`]); includes the control plane's idle loops and the benchmark's
    /// own polls, so it is an upper bound. `None` when not measured.
    pub pg_commits: Option<u64>,
    /// `pg_commits` per accepted task: how well submits, starts and completions share commits.
    pub pg_commits_per_task: Option<f64>,
    /// CPU use from the first submit until every task was seen terminal; `None` when not measured.
    pub cpu: Option<crate::cpu::Report>,
    /// Accepted tasks by status in PostgreSQL (`missing` for ids it does not hold).
    pub statuses: BTreeMap<String, u64>,
    /// True when every requested task was accepted and `succeeded`.
    pub ok: bool,
}

/// Computes the report from the driver's `outcome` and the tasks' `rows` from PostgreSQL.
///
/// `pg_commits` is the number of transactions the database committed during the round, if measured.
pub fn measure(setup: Setup, outcome: &Outcome, rows: &[TaskTimes], pg_commits: Option<u64>) -> Report {
    let sent: HashMap<Uuid, DateTime<Utc>> = outcome.accepted.iter().map(|s| (s.id, s.sent_at)).collect();
    let first_submit_at = outcome.accepted.iter().map(|s| s.sent_at).min();

    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let (mut to_start, mut to_finish) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
    let mut last_finish: Option<DateTime<Utc>> = None;
    let mut finished = 0usize;
    for row in rows {
        let Some(sent_at) = sent.get(&row.id) else { continue };
        *statuses.entry(row.status.clone()).or_default() += 1;
        if let Some(started_at) = row.started_at {
            to_start.push(millis_between(*sent_at, started_at));
        }
        if let Some(finished_at) = row.finished_at {
            to_finish.push(millis_between(*sent_at, finished_at));
            last_finish = Some(last_finish.map_or(finished_at, |t| t.max(finished_at)));
            finished += 1;
        }
    }
    let seen: u64 = statuses.values().sum();
    let missing = u64::try_from(sent.len()).unwrap_or(u64::MAX).saturating_sub(seen);
    if missing > 0 {
        statuses.insert(MISSING.into(), missing);
    }

    let submit_seconds = outcome.elapsed.as_secs_f64();
    let e2e_seconds = match (first_submit_at, last_finish) {
        (Some(first), Some(last)) => Some((millis_between(first, last) / 1000.0).max(0.0)),
        _ => None,
    };
    let succeeded = statuses.get("succeeded").copied().unwrap_or(0);
    let ok = outcome.failures.is_empty()
        && outcome.accepted.len() == setup.tasks
        && u64::try_from(setup.tasks).is_ok_and(|n| n == succeeded);
    Report {
        bench: "legion",
        submitted: outcome.accepted.len(),
        submit_failures: outcome.failures.clone(),
        submit_seconds,
        submit_per_s: rate(outcome.accepted.len(), submit_seconds),
        e2e_seconds,
        e2e_per_s: e2e_seconds.map(|s| rate(finished, s)),
        submit_rpc_ms: summarize(outcome.accepted.iter().map(|s| s.rpc.as_secs_f64() * 1000.0).collect()),
        submit_to_start_ms: summarize(to_start),
        submit_to_finish_ms: summarize(to_finish),
        first_submit_at,
        pg_commits,
        pg_commits_per_task: per_task(pg_commits, outcome.accepted.len()),
        cpu: None,
        statuses,
        ok,
        setup,
    }
}

#[allow(clippy::cast_precision_loss)]
fn per_task(count: Option<u64>, tasks: usize) -> Option<f64> {
    count.filter(|_| tasks > 0).map(|c| c as f64 / tasks as f64)
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        let _ = writeln!(out, "legion-bench {}: {} x {}", s.label, s.tasks, s.function);
        let _ = writeln!(
            out,
            "  executors {} ({}), concurrency {}, connections {}",
            s.executors.len(),
            s.executors.join(", "),
            s.concurrency,
            s.connections
        );
        let _ = writeln!(out, "  {:<26} {:>12} {:>12}", "throughput", "tasks/s", "seconds");
        let _ = writeln!(out, "  {:<26} {:>12.0} {:>12.2}", "submit", self.submit_per_s, self.submit_seconds);
        match (self.e2e_per_s, self.e2e_seconds) {
            (Some(rate), Some(secs)) => {
                let _ = writeln!(out, "  {:<26} {:>12.0} {:>12.2}", "end to end", rate, secs);
            }
            _ => {
                let _ = writeln!(out, "  {:<26} {:>12} {:>12}", "end to end", "-", "-");
            }
        }
        let _ = writeln!(out, "  {:<26} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "p50", "p99", "max", "mean");
        for (name, summary) in [
            ("submit rpc", &self.submit_rpc_ms),
            ("submit -> start", &self.submit_to_start_ms),
            ("submit -> finish", &self.submit_to_finish_ms),
        ] {
            match summary {
                Some(m) => {
                    let _ = writeln!(
                        out,
                        "  {:<26} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                        name, m.p50_ms, m.p99_ms, m.max_ms, m.mean_ms
                    );
                }
                None => {
                    let _ = writeln!(out, "  {:<26} {:>9} {:>9} {:>9} {:>9}", name, "-", "-", "-", "-");
                }
            }
        }
        if let (Some(commits), Some(per_task)) = (self.pg_commits, self.pg_commits_per_task) {
            let _ = writeln!(out, "  postgres commits: {commits} ({per_task:.2} per task, upper bound)");
        }
        if let Some(cpu) = &self.cpu {
            let _ = writeln!(
                out,
                "  cpu over {:.2} s on {} cores: machine {:.0}% busy",
                cpu.wall_seconds,
                cpu.cpus,
                cpu.machine_busy * 100.0
            );
            let mut by_use: Vec<_> = cpu.processes.iter().collect();
            by_use.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
            for (name, usage) in by_use {
                let _ = writeln!(
                    out,
                    "    {:<24} {:>7.2} s {:>5.0}% of the machine",
                    name,
                    usage.seconds,
                    usage.share * 100.0
                );
            }
        }
        let statuses: Vec<String> = self.statuses.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  statuses: {}", if statuses.is_empty() { "-".into() } else { statuses.join(" ") });
        if !self.submit_failures.is_empty() {
            let failures: Vec<String> = self.submit_failures.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "  submit failures: {}", failures.join(" "));
        }
        let _ = write!(out, "  result: {}", if self.ok { "ok, every task succeeded" } else { "NOT OK" });
        out
    }

    /// The report as one line of JSON.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"bench":"legion","error":"{e}"}}"#))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::submit::Submitted;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("time")
    }

    fn setup(tasks: usize) -> Setup {
        Setup {
            label: "t".into(),
            function: "core.util.noop".into(),
            executors: vec!["e1".into()],
            tasks,
            concurrency: 2,
            connections: 1,
        }
    }

    fn row(id: Uuid, status: &str, started: Option<i64>, finished: Option<i64>) -> TaskTimes {
        TaskTimes {
            id,
            status: status.into(),
            created_at: at(0),
            started_at: started.map(at),
            finished_at: finished.map(at),
        }
    }

    #[test]
    fn figures_come_from_send_times_and_stored_times() {
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let outcome = Outcome {
            accepted: ids
                .iter()
                .enumerate()
                .map(|(i, id)| Submitted {
                    id: *id,
                    sent_at: at(i64::try_from(i).expect("small") * 10),
                    rpc: Duration::from_millis(2),
                })
                .collect(),
            elapsed: Duration::from_millis(40),
            ..Outcome::default()
        };
        let rows = vec![
            row(ids[0], "succeeded", Some(5), Some(7)),
            row(ids[1], "succeeded", Some(20), Some(30)),
            row(ids[2], "succeeded", Some(23), Some(24)),
            row(ids[3], "succeeded", Some(100), Some(2000)),
            // A task of another run is ignored.
            row(Uuid::new_v4(), "failed", Some(1), Some(5000)),
        ];
        let report = measure(setup(4), &outcome, &rows, Some(6));
        assert!(report.ok);
        assert_eq!(report.pg_commits_per_task, Some(1.5));
        assert!(report.table().contains("postgres commits: 6 (1.50 per task"));
        assert_eq!(report.submitted, 4);
        assert!((report.submit_per_s - 100.0).abs() < 1e-9);
        assert_eq!(report.e2e_seconds, Some(2.0));
        assert_eq!(report.e2e_per_s, Some(2.0));
        let start = report.submit_to_start_ms.expect("starts");
        // Latencies 5, 10, 3, 70 → sorted 3, 5, 10, 70.
        assert_eq!((start.p50_ms, start.p99_ms, start.max_ms), (5.0, 70.0, 70.0));
        let finish = report.submit_to_finish_ms.expect("finishes");
        assert_eq!((finish.p50_ms, finish.max_ms), (7.0, 1970.0));
        assert_eq!(report.statuses, BTreeMap::from([("succeeded".to_owned(), 4)]));
        assert_eq!(report.first_submit_at, Some(at(0)));
    }

    #[test]
    fn failures_missing_rows_and_unfinished_tasks_are_not_ok() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let outcome = Outcome {
            accepted: ids.iter().map(|id| Submitted { id: *id, sent_at: at(0), rpc: Duration::ZERO }).collect(),
            failures: BTreeMap::from([("Unavailable".to_owned(), 1)]),
            first_error: Some("down".into()),
            elapsed: Duration::from_secs(1),
        };
        let rows = vec![row(ids[0], "succeeded", Some(1), Some(2)), row(ids[1], "running", Some(1), None)];
        let report = measure(setup(4), &outcome, &rows, None);
        assert!(!report.ok);
        assert_eq!(
            report.statuses,
            BTreeMap::from([("missing".to_owned(), 1), ("running".to_owned(), 1), ("succeeded".to_owned(), 1)])
        );
        assert_eq!(report.e2e_seconds, Some(0.002));
        assert_eq!(report.submit_to_finish_ms.map(|s| s.count), Some(1));
        assert!(report.table().contains("NOT OK"));
        assert!(report.table().contains("Unavailable=1"));

        let all_good_but_failed = vec![row(ids[0], "failed", Some(1), Some(2))];
        let one = Outcome { accepted: outcome.accepted[..1].to_vec(), ..Outcome::default() };
        assert!(!measure(setup(1), &one, &all_good_but_failed, None).ok);
    }

    #[test]
    fn nothing_finished_gives_no_end_to_end_figure() {
        let report = measure(setup(1), &Outcome::default(), &[], Some(3));
        assert_eq!(report.pg_commits_per_task, None, "no task, no ratio");
        assert_eq!(report.e2e_seconds, None);
        assert_eq!(report.submit_to_start_ms, None);
        assert!(!report.ok);
        assert!(report.table().contains("end to end"));
    }

    #[test]
    fn the_json_line_is_one_line_with_the_setup_flattened() {
        let report = measure(setup(0), &Outcome::default(), &[], None);
        let line = report.json_line();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["bench"], "legion");
        assert_eq!(value["label"], "t");
        assert_eq!(value["function"], "core.util.noop");
        assert_eq!(value["ok"], true, "zero tasks asked, zero failed");
        assert!(value["e2e_per_s"].is_null());
    }
}
