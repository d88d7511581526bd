//! The tasks of a scheduler round's fires, with their transformations evaluated under one budget
//! (`docs/schedules.md`, "Slow transformations").
//!
//! The scheduler has its own sandbox pool, so schedules never wait for chain firing nor chain firing
//! for schedules. Within a round:
//! - all `jinja`/`jq` evaluations share `control_plane.transform_budget_ms`, as a chain completion
//!   batch does: the round never waits longer on transformations;
//! - they start in the order of [`Class`] ([`super::quarantine`]): trusted schedules first, then
//!   unknown ones, then those whose quarantine ended; quarantined schedules' slots fail at once;
//! - as many run at once as the pool has processes (`control_plane.transform_workers`);
//! - when the budget runs out, an evaluation still running fails its slot with a reason naming
//!   `control_plane.transform_budget_ms` (its process is killed), and quarantines its schedule if it
//!   had run for half the shorter of the timeout and the budget; an evaluation not started yet is
//!   **deferred**: its schedule is left due, and decided again by the next round, which starts at once.
//!
//! `static` transformations are evaluated in this process, at once, outside the budget.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::Value;
use tokio::time::Instant;

use super::build::{Args, Builder, Prepared};
use super::plan::{Failure, Plan, rfc3339};
use super::quarantine::{Admission, Class, Quarantine};
use crate::chains::sandbox::Sandbox;
use crate::chains::transform::Transformation;
use crate::store::NewTask;
use crate::store::schedules::DueSchedule;

/// How transformations are evaluated (from `control_plane.transform_*`).
#[derive(Debug, Clone, Copy)]
pub struct EvaluationSettings {
    /// Processes of the scheduler's sandbox pool (`transform_workers`): evaluations at once, and
    /// schedules whose quarantine ended evaluated per round.
    pub workers: usize,
    /// Longest evaluation (`transform_timeout_ms`), enforced by the sandbox.
    pub timeout: Duration,
    /// Longest time all evaluations of a round take together (`transform_budget_ms`).
    pub budget: Duration,
}

/// The outcome of building a round's fires.
#[derive(Debug, Default)]
pub struct Built {
    /// Per due schedule (in the round's order): its task or why its slot fails; `None` for a schedule
    /// whose plan fires nothing, and for a deferred one.
    pub tasks: Vec<Option<Result<NewTask, Failure>>>,
    /// Per due schedule: whether its evaluation never started before the budget ran out. Such a
    /// schedule gets no record this round.
    pub deferred: Vec<bool>,
}

/// How one evaluation of a round ended.
#[derive(Debug)]
enum Evaluated {
    /// It finished: the output, or the transformation's or the sandbox's error.
    Done(Result<Value, String>),
    /// It was still running, for this long, when the budget ran out.
    Overran(Duration),
    /// It never started.
    NotStarted,
}

/// A fire waiting for its transformation.
struct Waiting<'s> {
    index: usize,
    class: Class,
    prepared: Prepared<'s>,
    transformation: Transformation,
    context: Value,
}

/// Evaluates the scheduler's transformations, remembering how each schedule's went.
pub struct Evaluator {
    sandbox: Sandbox,
    settings: EvaluationSettings,
    quarantine: Quarantine,
}

impl Evaluator {
    /// An evaluator on `sandbox` (the scheduler's own pool).
    pub fn new(sandbox: Sandbox, settings: EvaluationSettings) -> Self {
        Self { sandbox, settings, quarantine: Quarantine::default() }
    }

    /// The tasks of the fires among `plans` (of `due`, in order), built by `builder`; `now` is the
    /// round's instant (database clock).
    pub async fn build(
        &mut self,
        builder: &Builder<'_>,
        due: &[DueSchedule],
        plans: &[Plan],
        now: DateTime<Utc>,
    ) -> Built {
        let mut built = Built { tasks: (0..due.len()).map(|_| None).collect(), deferred: vec![false; due.len()] };
        let mut waiting = Vec::new();
        let mut probes = self.settings.workers.max(1);
        for (index, (d, p)) in due.iter().zip(plans).enumerate() {
            let Some(slot) = p.fire_slot() else { continue };
            let (prepared, args) = match builder.prepare(&d.schedule, slot) {
                Ok(prepared) => prepared,
                Err(failure) => {
                    built.tasks[index] = Some(Err(failure));
                    continue;
                }
            };
            let (transformation, context) = match args {
                Args::Ready(args) => {
                    built.tasks[index] = Some(builder.finish(prepared, args));
                    continue;
                }
                Args::Transform { transformation, context } => (transformation, context),
            };
            if !transformation.needs_sandbox() {
                let output = self.sandbox.evaluate(&transformation, &context).await;
                built.tasks[index] = Some(output.map_err(failed).and_then(|args| builder.finish(prepared, args)));
                continue;
            }
            match self.quarantine.admit(d.schedule.id, now, &mut probes) {
                Admission::Refuse(reason) => built.tasks[index] = Some(Err(Failure::Slot(reason))),
                Admission::Evaluate(class) => waiting.push(Waiting { index, class, prepared, transformation, context }),
            }
        }
        // Stable: within a class, the round's order (earliest due first).
        waiting.sort_by_key(|w| w.class);
        let results = {
            let jobs: Vec<(&Transformation, &Value)> =
                waiting.iter().map(|w| (&w.transformation, &w.context)).collect();
            let deadline = Instant::now() + self.settings.budget;
            evaluate_all(&self.sandbox, &jobs, self.settings.workers, deadline).await
        };
        for (w, result) in waiting.into_iter().zip(results) {
            let schedule = &due[w.index].schedule;
            built.tasks[w.index] = match result {
                Evaluated::Done(Ok(args)) => {
                    self.quarantine.finished(schedule.id, now);
                    Some(builder.finish(w.prepared, args))
                }
                Evaluated::Done(Err(error)) => {
                    if error.contains("control_plane.transform_timeout_ms") {
                        let cause = format!(
                            "its last evaluation ran past control_plane.transform_timeout_ms ({} ms)",
                            self.settings.timeout.as_millis()
                        );
                        self.quarantine_one(&schedule.spec.name, schedule.id, now, cause);
                    } else {
                        self.quarantine.finished(schedule.id, now);
                    }
                    Some(Err(failed(error)))
                }
                Evaluated::Overran(ran) => {
                    let budget_ms = self.settings.budget.as_millis();
                    if ran >= self.settings.timeout.min(self.settings.budget) / 2 {
                        let cause = format!(
                            "its last evaluation was still running after {} ms when the round's \
                             control_plane.transform_budget_ms ({budget_ms} ms) ran out",
                            ran.as_millis()
                        );
                        self.quarantine_one(&schedule.spec.name, schedule.id, now, cause);
                    }
                    Some(Err(Failure::Slot(format!(
                        "transformation: the transformations of this scheduler round ran past \
                         control_plane.transform_budget_ms ({budget_ms} ms)"
                    ))))
                }
                Evaluated::NotStarted => {
                    built.deferred[w.index] = true;
                    None
                }
            };
        }
        built
    }

    /// Quarantines schedule `name` (`id`) because of `cause`, and logs it.
    fn quarantine_one(&mut self, name: &str, id: uuid::Uuid, now: DateTime<Utc>, cause: String) {
        let (until, backoff) = self.quarantine.ran_long(id, now, cause.clone());
        tracing::warn!(
            schedule = %name,
            %cause,
            until = %rfc3339(until),
            backoff_s = backoff.num_seconds(),
            "schedule's transformation runs long: quarantined, its slots fail without evaluation until then"
        );
    }
}

/// A transformation's error as the fire row's reason.
fn failed(error: String) -> Failure {
    Failure::Slot(format!("transformation: {error}"))
}

/// Evaluates `jobs` in order on `sandbox`, at most `workers` at once, until `deadline`. Evaluations
/// still running then are dropped (the sandbox kills their processes).
async fn evaluate_all(
    sandbox: &Sandbox,
    jobs: &[(&Transformation, &Value)],
    workers: usize,
    deadline: Instant,
) -> Vec<Evaluated> {
    let mut done: Vec<Option<Result<Value, String>>> = (0..jobs.len()).map(|_| None).collect();
    let mut started: HashMap<usize, Instant> = HashMap::new();
    {
        let mut running = FuturesUnordered::new();
        let mut next = 0;
        loop {
            while running.len() < workers.max(1) && next < jobs.len() {
                let (index, (transformation, context)) = (next, jobs[next]);
                next += 1;
                started.insert(index, Instant::now());
                running.push(async move { (index, sandbox.evaluate(transformation, context).await) });
            }
            match tokio::time::timeout_at(deadline, running.next()).await {
                Ok(Some((index, result))) => {
                    started.remove(&index);
                    done[index] = Some(result);
                }
                // Nothing left to run, or the budget ran out.
                Ok(None) | Err(_) => break,
            }
        }
    }
    let end = Instant::now();
    done.into_iter()
        .enumerate()
        .map(|(index, result)| match (result, started.get(&index)) {
            (Some(result), _) => Evaluated::Done(result),
            (None, Some(since)) => Evaluated::Overran(end.saturating_duration_since(*since)),
            (None, None) => Evaluated::NotStarted,
        })
        .collect()
}
