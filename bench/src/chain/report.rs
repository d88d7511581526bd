//! The figures of the `chain` scenario for one variant, computed from the tasks of its runs as
//! PostgreSQL holds them, rendered as a table and as one JSON line (`{"bench":"legion-chain",…}`).
//!
//! Every timestamp is the control plane's (PostgreSQL `now()`: the start of the transaction that wrote
//! it), so no clock of the benchmark enters the figures.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::stats::{Summary, millis_between, summarize};
use crate::store::RunTask;

/// How the variant was run, echoed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ChainSetup {
    /// Free-form name of the scenario.
    pub label: String,
    /// `none`, `static`, `jq` or `jinja`.
    pub variant: &'static str,
    /// The relationship's transformation, `None` for the variant `none`.
    pub transformation: Option<Value>,
    /// The chain's `max_depth`: each run has `depth + 1` tasks that run and one skipped child.
    pub depth: u32,
    /// Runs asked for.
    pub runs: usize,
    /// Runs in flight at once.
    pub parallel: usize,
    /// Ready executors when the scenario started.
    pub executors: Vec<String>,
    /// From the first submit until the last run was seen ended, s (includes the benchmark's poll
    /// interval after each run when `parallel` is small).
    pub wall_seconds: f64,
}

/// The figures of one variant; latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Always `legion-chain`.
    pub bench: &'static str,
    /// The setup.
    #[serde(flatten)]
    pub setup: ChainSetup,
    /// Children that ran (samples of `step_ms`).
    pub steps: usize,
    /// Parent `finished_at` → child `started_at`: the overhead of one step.
    pub step_ms: Option<Summary>,
    /// Parent `finished_at` → child `queued_at`: the completion transaction (firing, transformation)
    /// and the outbox publish up to the broker's confirm.
    pub finish_to_queued_ms: Option<Summary>,
    /// Child `queued_at` → child `started_at`: delivery to the executor and `StartTask`.
    pub queued_to_start_ms: Option<Summary>,
    /// `started_at` → `finished_at` of every task that ran: the no-op and its completion.
    pub task_ms: Option<Summary>,
    /// Root `created_at` → the run's last `finished_at`, one sample per run.
    pub run_ms: Option<Summary>,
    /// Mean of `run_ms` divided by the tasks that run in a run (`depth + 1`).
    pub run_ms_per_step: Option<f64>,
    /// Runs with exactly `depth + 1` succeeded tasks and one skipped child at `depth + 1`.
    pub runs_complete: usize,
    /// Every task of the runs by status.
    pub statuses: BTreeMap<String, u64>,
    /// True when every run asked for was submitted and complete.
    pub ok: bool,
}

#[derive(Default)]
struct Run {
    created_at: Option<DateTime<Utc>>,
    last_finish: Option<DateTime<Utc>>,
    succeeded: u32,
    capped: u32,
    other: u32,
}

/// Computes the report of the runs rooted at `roots` from all their `tasks`.
pub fn measure(setup: ChainSetup, roots: &[Uuid], tasks: &[RunTask]) -> ChainReport {
    let finished: HashMap<Uuid, Option<DateTime<Utc>>> = tasks.iter().map(|t| (t.id, t.finished_at)).collect();
    let cap = i64::from(setup.depth) + 1;
    let mut runs: HashMap<Uuid, Run> = roots.iter().map(|r| (*r, Run::default())).collect();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let (mut step, mut to_queued, mut to_start, mut task_ms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        *statuses.entry(task.status.clone()).or_default() += 1;
        let Some(run) = runs.get_mut(&task.root_id) else { continue };
        if task.id == task.root_id {
            run.created_at = Some(task.created_at);
        }
        if let Some(done) = task.finished_at {
            run.last_finish = Some(run.last_finish.map_or(done, |t| t.max(done)));
        }
        match task.status.as_str() {
            "succeeded" => run.succeeded += 1,
            "skipped" if i64::from(task.depth) == cap => run.capped += 1,
            _ => run.other += 1,
        }
        if let (Some(started), Some(done)) = (task.started_at, task.finished_at) {
            task_ms.push(millis_between(started, done));
        }
        let parent_done = task.parent_id.and_then(|p| finished.get(&p).copied().flatten());
        if let (Some(parent_done), Some(started)) = (parent_done, task.started_at) {
            step.push(millis_between(parent_done, started));
            if let Some(queued) = task.queued_at {
                to_queued.push(millis_between(parent_done, queued));
                to_start.push(millis_between(queued, started));
            }
        }
    }
    let expected = u32::try_from(cap).unwrap_or(u32::MAX);
    let runs_complete = runs.values().filter(|r| r.succeeded == expected && r.capped == 1 && r.other == 0).count();
    let run_samples: Vec<f64> =
        runs.values().filter_map(|r| Some(millis_between(r.created_at?, r.last_finish?))).collect();
    let run_ms = summarize(run_samples);
    #[allow(clippy::cast_precision_loss)]
    let run_ms_per_step = run_ms.map(|s| s.mean_ms / cap as f64);
    ChainReport {
        bench: "legion-chain",
        steps: step.len(),
        step_ms: summarize(step),
        finish_to_queued_ms: summarize(to_queued),
        queued_to_start_ms: summarize(to_start),
        task_ms: summarize(task_ms),
        run_ms,
        run_ms_per_step,
        ok: roots.len() == setup.runs && runs_complete == setup.runs,
        runs_complete,
        statuses,
        setup,
    }
}

impl ChainReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "legion-bench chain {} [{}]: {} runs of depth {} ({} in flight), executors {}",
            s.label,
            s.variant,
            s.runs,
            s.depth,
            s.parallel,
            s.executors.join(", ")
        );
        let _ =
            writeln!(out, "  {:<30} {:>9} {:>9} {:>9} {:>9} {:>7}", "latency (ms)", "p50", "p99", "max", "mean", "n");
        for (name, summary) in [
            ("step: parent finish -> start", &self.step_ms),
            ("  parent finish -> queued", &self.finish_to_queued_ms),
            ("  queued -> start", &self.queued_to_start_ms),
            ("task: start -> finish", &self.task_ms),
            ("run: root created -> last end", &self.run_ms),
        ] {
            match summary {
                Some(m) => {
                    let _ = writeln!(
                        out,
                        "  {:<30} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7}",
                        name, m.p50_ms, m.p99_ms, m.max_ms, m.mean_ms, m.count
                    );
                }
                None => {
                    let _ = writeln!(out, "  {:<30} {:>9} {:>9} {:>9} {:>9} {:>7}", name, "-", "-", "-", "-", 0);
                }
            }
        }
        if let Some(per_step) = self.run_ms_per_step {
            let _ = writeln!(out, "  run time per step (mean run / {}): {per_step:.1} ms", s.depth + 1);
        }
        let statuses: Vec<String> = self.statuses.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  statuses: {}", if statuses.is_empty() { "-".into() } else { statuses.join(" ") });
        let _ = write!(
            out,
            "  result: {} ({} of {} runs complete, {:.1} s)",
            if self.ok { "ok" } else { "NOT OK" },
            self.runs_complete,
            s.runs,
            s.wall_seconds
        );
        out
    }

    /// The report as one line of JSON.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"bench":"legion-chain","error":"{e}"}}"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("time")
    }

    fn setup(depth: u32, runs: usize) -> ChainSetup {
        ChainSetup {
            label: "t".into(),
            variant: "jq",
            transformation: None,
            depth,
            runs,
            parallel: 1,
            executors: vec!["e1".into()],
            wall_seconds: 1.0,
        }
    }

    /// A run of depth `depth` starting at `t0`: task `d` is created at the end of task `d - 1`, queued
    /// 2 ms later, started 5 ms later and finishes 3 ms after its start; the capped child is skipped.
    fn run(t0: i64, depth: i32) -> (Uuid, Vec<RunTask>) {
        let root = Uuid::now_v7();
        let mut tasks = Vec::new();
        let (mut parent, mut created) = (None, t0);
        for d in 0..=depth + 1 {
            let id = if d == 0 { root } else { Uuid::now_v7() };
            let ran = d <= depth;
            tasks.push(RunTask {
                id,
                root_id: root,
                parent_id: parent,
                depth: d,
                status: if ran { "succeeded" } else { "skipped" }.into(),
                created_at: at(created),
                queued_at: ran.then(|| at(created + 2)),
                started_at: ran.then(|| at(created + 5)),
                finished_at: Some(at(if ran { created + 8 } else { created })),
            });
            parent = Some(id);
            created += 8;
        }
        (root, tasks)
    }

    #[test]
    fn steps_are_measured_from_the_parents_finish() {
        let (a, mut tasks) = run(0, 3);
        let (b, more) = run(1000, 3);
        tasks.extend(more);
        let report = measure(setup(3, 2), &[a, b], &tasks);
        assert!(report.ok, "{}", report.table());
        assert_eq!(report.runs_complete, 2);
        assert_eq!(report.steps, 6, "3 children ran in each run");
        let step = report.step_ms.expect("steps");
        assert_eq!((step.p50_ms, step.max_ms), (5.0, 5.0));
        assert_eq!(report.finish_to_queued_ms.map(|s| s.p50_ms), Some(2.0));
        assert_eq!(report.queued_to_start_ms.map(|s| s.p50_ms), Some(3.0));
        assert_eq!(report.task_ms.map(|s| (s.count, s.p50_ms)), Some((8, 3.0)));
        // Root created at 0, last task (depth 3) finishes at 3 * 8 + 8 = 32.
        assert_eq!(report.run_ms.map(|s| (s.count, s.max_ms)), Some((2, 32.0)));
        assert_eq!(report.run_ms_per_step, Some(8.0));
        assert_eq!(report.statuses, BTreeMap::from([("skipped".into(), 2), ("succeeded".into(), 8)]));
        let line: Value = serde_json::from_str(&report.json_line()).expect("json");
        assert_eq!((line["bench"].as_str(), line["variant"].as_str()), (Some("legion-chain"), Some("jq")));
        assert_eq!(line["step_ms"]["p99_ms"], 5.0);
    }

    #[test]
    fn short_failed_or_missing_runs_are_not_ok() {
        let (a, mut tasks) = run(0, 3);
        // A run cut short: the child at depth 2 failed, so nothing deeper exists.
        let (b, short) = run(1000, 3);
        let mut short: Vec<RunTask> = short.into_iter().filter(|t| t.depth <= 2).collect();
        short[2].status = "failed".into();
        tasks.extend(short);
        let report = measure(setup(3, 2), &[a, b], &tasks);
        assert!(!report.ok);
        assert_eq!(report.runs_complete, 1);
        assert!(report.table().contains("NOT OK (1 of 2 runs complete"));

        // Fewer runs submitted than asked for.
        let (c, tasks) = run(0, 3);
        assert!(!measure(setup(3, 2), &[c], &tasks).ok);
        // No rows at all.
        let empty = measure(setup(3, 1), &[Uuid::now_v7()], &[]);
        assert!(!empty.ok && empty.step_ms.is_none() && empty.run_ms.is_none());
        assert!(empty.table().contains("step: parent finish -> start"));
    }
}
