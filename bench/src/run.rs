//! One benchmark run end to end: connect, wait for the executors, optionally warm up, submit, wait
//! until PostgreSQL shows every task terminal, read the timestamps and compute the report.

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use crate::client::{self, ClientOptions};
use crate::report::{self, Report, Setup};
use crate::store::{self, Store};
use crate::submit::{self, Plan};
use crate::{cpu, nodes, stats};

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Channel setup failed.
    #[error(transparent)]
    Client(#[from] client::Error),
    /// Not enough executors became ready.
    #[error(transparent)]
    Nodes(#[from] nodes::Error),
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A flag is out of range.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The warm-up round went wrong, so the measured round would measure a broken system.
    #[error("warm-up failed: {0}")]
    Warmup(String),
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How to reach the control plane.
    pub client: ClientOptions,
    /// The control plane's database, `postgres://…`.
    pub database_url: String,
    /// HTTP/2 connections (channels) to spread the calls over.
    pub connections: usize,
    /// What to submit (tasks, concurrency, function, args).
    pub plan: Plan,
    /// Tasks submitted and awaited before the measured round, not measured.
    pub warmup: usize,
    /// Active executors to wait for.
    pub executors: usize,
    /// Longest wait for the executors.
    pub wait_nodes: Duration,
    /// Longest wait for the tasks to finish, counted from the last submit.
    pub timeout: Duration,
    /// How often PostgreSQL is polled for unfinished tasks.
    pub poll: Duration,
    /// Name of the run in the report.
    pub label: String,
    /// Also append the JSON line to this file.
    pub json_out: Option<PathBuf>,
    /// Pause after the round before the commit counter is read again, so that idle PostgreSQL
    /// backends have reported their counts (PostgreSQL 15+: within 10 s). Zero skips the count.
    pub stats_settle: Duration,
    /// Processes whose CPU time is reported (see [`cpu`]); the benchmark itself is always included.
    pub cpu_targets: Vec<(String, cpu::Target)>,
}

impl Options {
    /// Checks what the types do not.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the flag.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |flag, reason: &str| Err(Error::Invalid { flag, reason: reason.to_owned() });
        if self.plan.tasks == 0 {
            return invalid("--tasks", "must be at least 1");
        }
        if self.plan.concurrency == 0 {
            return invalid("--concurrency", "must be at least 1");
        }
        if self.connections == 0 || self.connections > 64 {
            return invalid("--connections", "must be 1 to 64");
        }
        if !self.plan.args.is_object() {
            return invalid("--args", "must be a JSON object");
        }
        if let Err(reason) = legion_common::FunctionName::parse(&self.plan.function) {
            return invalid("--function", &reason);
        }
        if !(self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")) {
            return invalid("--database-url", "must start with postgres:// or postgresql://");
        }
        if self.poll.is_zero() {
            return invalid("--poll-ms", "must be at least 1");
        }
        Ok(())
    }
}

/// Runs the benchmark once and returns its report (which says whether every task succeeded).
///
/// # Errors
/// [`Error`] when the run could not be carried out at all (bad flags, no executors, database down).
pub async fn run(options: &Options) -> Result<Report, Error> {
    options.validate()?;
    let clients = client::connect(&options.client, options.connections)?;
    let store = Store::connect(&options.database_url).await?;
    let extension = options.plan.function.split('.').next().unwrap_or_default().to_owned();
    let mut catalog = clients.catalog.clone();
    let executors = nodes::wait_for_executors(&mut catalog, &extension, options.executors, options.wait_nodes).await?;
    tracing::info!(executors = ?executors, "executors ready");

    if options.warmup > 0 {
        let plan = Plan { tasks: options.warmup, ..options.plan.clone() };
        tracing::info!(tasks = plan.tasks, "warm-up round");
        let outcome = submit::submit_all(&clients.tasks, &plan).await;
        if let Some(error) = outcome.first_error {
            return Err(Error::Warmup(format!("submits failed ({:?}): {error}", outcome.failures)));
        }
        let ids: Vec<Uuid> = outcome.accepted.iter().map(|s| s.id).collect();
        let unfinished = store.wait_finished(&ids, options.poll, options.timeout).await?;
        if unfinished > 0 {
            return Err(Error::Warmup(format!("{unfinished} warm-up tasks did not finish")));
        }
    }

    tracing::info!(
        tasks = options.plan.tasks,
        concurrency = options.plan.concurrency,
        connections = options.connections,
        "measured round"
    );
    let commits_before = if options.stats_settle.is_zero() { None } else { Some(store.commits().await?) };
    let cpu_before = cpu::sample(&options.cpu_targets);
    let outcome = submit::submit_all(&clients.tasks, &options.plan).await;
    tracing::info!(
        accepted = outcome.accepted.len(),
        per_s = stats::rate(outcome.accepted.len(), outcome.elapsed.as_secs_f64()).round(),
        "submitted"
    );
    let ids: Vec<Uuid> = outcome.accepted.iter().map(|s| s.id).collect();
    store.wait_finished(&ids, options.poll, options.timeout).await?;
    let cpu_used = cpu::usage(&cpu_before, &cpu::sample(&options.cpu_targets));
    let rows = store.task_times(&ids).await?;
    let commits = match commits_before {
        Some(before) => {
            tracing::info!(
                seconds = options.stats_settle.as_secs(),
                "waiting for postgres to report its commit counts"
            );
            tokio::time::sleep(options.stats_settle).await;
            Some(store.commits().await?.saturating_sub(before))
        }
        None => None,
    };
    let setup = Setup {
        label: options.label.clone(),
        function: options.plan.function.clone(),
        executors,
        tasks: options.plan.tasks,
        concurrency: options.plan.concurrency,
        connections: options.connections,
    };
    let mut report = report::measure(setup, &outcome, &rows, commits);
    report.cpu = Some(cpu_used);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            client: ClientOptions {
                url: "https://localhost:1".into(),
                ca: "/tmp/ca.pem".into(),
                cert: None,
                key: None,
                api_key: None,
                token: None,
            },
            database_url: "postgres://postgres@127.0.0.1/legion_bench".into(),
            connections: 1,
            plan: Plan { tasks: 10, concurrency: 4, function: "core.util.noop".into(), args: serde_json::json!({}) },
            warmup: 0,
            executors: 1,
            wait_nodes: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            poll: Duration::from_millis(100),
            label: "t".into(),
            json_out: None,
            stats_settle: Duration::ZERO,
            cpu_targets: Vec::new(),
        }
    }

    #[test]
    fn flags_are_validated_by_name() {
        assert!(options().validate().is_ok());
        type Breaker = fn(&mut Options);
        let cases: [(&str, Breaker); 7] = [
            ("--tasks", |o| o.plan.tasks = 0),
            ("--concurrency", |o| o.plan.concurrency = 0),
            ("--connections", |o| o.connections = 65),
            ("--args", |o| o.plan.args = serde_json::json!([1])),
            ("--function", |o| o.plan.function = "noop".into()),
            ("--database-url", |o| o.database_url = "mysql://x".into()),
            ("--poll-ms", |o| o.poll = Duration::ZERO),
        ];
        for (flag, break_it) in cases {
            let mut o = options();
            break_it(&mut o);
            let err = o.validate().expect_err(flag).to_string();
            assert!(err.starts_with(flag), "{flag}: {err}");
        }
    }
}
