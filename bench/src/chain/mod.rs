//! The `chain` scenario: the overhead of one step of a chain run (DESIGN.md sections 4 and 5).
//!
//! For each [`Variant`] it applies a looping chain `core.util.noop` → `core.util.noop` with
//! `max_depth` = `--depth` (chain `bench-chain-<variant>`), so every run has `depth + 1` no-op tasks
//! that succeed (depths 0 to `depth`) and one `skipped` child at `depth + 1`. It starts `--runs` runs,
//! at most `--parallel` in flight at once, follows them in PostgreSQL (one query per poll) until every
//! task is terminal, then reads every task of the runs and reports (see [`report`]):
//!
//! - the step overhead: for every child that ran, its `started_at` minus its parent's `finished_at`,
//!   both written by the control plane (PostgreSQL `now()`, the start of the writing transaction). It
//!   covers the parent's completion transaction (where the relationship fires and its transformation
//!   is evaluated), the outbox publish with the broker's confirm, the delivery to the executor and the
//!   child's `StartTask`;
//! - its two halves around the child's `queued_at` (set by the publisher after the confirm);
//! - the end-to-end time of each run: root `created_at` to the last `finished_at` of the run.
//!
//! `static` transformations evaluate in the control plane's process; `jq` and `jinja` ones in its
//! sandbox processes, so comparing the variants shows the sandbox's cost.

pub mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use legion_proto::v1::{self, ApplyChainRequest, SubmitTaskRequest};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{self, ClientOptions, Clients};
use crate::nodes;
use crate::store::{self, Store};
use report::{ChainReport, ChainSetup};

/// The function every task of the benchmark chain runs.
pub const FUNCTION: &str = "core.util.noop";

/// Largest `--depth`: the control plane's default `limits.max_chain_depth` (a cycle's `max_depth` may
/// not exceed it).
pub const MAX_DEPTH: u32 = 32;

/// How the chain turns a parent's completion into the child's args.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// No transformation: the parent's result (`{}`) is the child's args.
    None,
    /// `{"engine":"static",…}`: evaluated in the control plane's own process.
    Static,
    /// `{"engine":"jq",…}`: evaluated in a sandbox process.
    Jq,
    /// `{"engine":"jinja",…}`: evaluated in a sandbox process.
    Jinja,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Self; 4] = [Self::None, Self::Static, Self::Jq, Self::Jinja];

    /// `none`, `static`, `jq` or `jinja`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Static => "static",
            Self::Jq => "jq",
            Self::Jinja => "jinja",
        }
    }

    /// The variant named `name` (as [`Variant::name`]).
    ///
    /// # Errors
    /// A message listing the names when `name` is none of them.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .ok_or_else(|| format!("unknown variant {name:?} (none, static, jq, jinja)"))
    }

    /// The relationship's transformation: each builds a small object from the parent's metadata, the
    /// same for `jq` and `jinja`.
    pub fn transformation(self) -> Option<Value> {
        match self {
            Self::None => None,
            Self::Static => Some(json!({"engine": "static", "value": {"step": true}})),
            Self::Jq => Some(json!({"engine": "jq", "expr": "{step: (.task.depth + 1), root: .task.root_id}"})),
            Self::Jinja => Some(json!({
                "engine": "jinja",
                "template": "{\"step\": {{ task.depth + 1 }}, \"root\": {{ task.root_id | tojson }}}"
            })),
        }
    }

    /// The chain's name: `bench-chain-<variant>`.
    pub fn chain_name(self) -> String {
        format!("bench-chain-{}", self.name())
    }

    /// The looping chain of this variant, capped at `depth`.
    pub fn chain(self, depth: u32) -> v1::Chain {
        let relationship = v1::Relationship {
            trigger: FUNCTION.into(),
            action: FUNCTION.into(),
            transformation: self.transformation().as_ref().map(legion_proto::json_to_value),
            ..v1::Relationship::default()
        };
        v1::Chain {
            name: self.chain_name(),
            description: "legion-bench chain step overhead".into(),
            max_depth: Some(depth),
            relationships: vec![relationship],
            ..v1::Chain::default()
        }
    }
}

/// Why the scenario could not produce its reports.
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
    /// `ApplyChain` or a root's `SubmitTask` was refused.
    #[error("{call} {chain}: {status}")]
    Call {
        /// `ApplyChain` or `SubmitTask`.
        call: &'static str,
        /// The chain.
        chain: String,
        /// The control plane's answer.
        status: Box<tonic::Status>,
    },
}

/// Everything the scenario needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How to reach the control plane.
    pub client: ClientOptions,
    /// The control plane's database, `postgres://…`.
    pub database_url: String,
    /// Active executors to wait for.
    pub executors: usize,
    /// Longest wait for the executors.
    pub wait_nodes: Duration,
    /// `max_depth` of the chains: each run has `depth + 1` tasks that run.
    pub depth: u32,
    /// Measured runs per variant.
    pub runs: usize,
    /// Runs in flight at once (1: one after the other, each on an otherwise idle system).
    pub parallel: usize,
    /// Unmeasured runs per variant first (they start the sandbox processes).
    pub warmup_runs: usize,
    /// The variants, run in this order.
    pub variants: Vec<Variant>,
    /// Longest time one run may take.
    pub timeout: Duration,
    /// How often PostgreSQL is polled for unfinished runs.
    pub poll: Duration,
    /// Name of the scenario in the reports.
    pub label: String,
    /// Also append the JSON lines to this file.
    pub json_out: Option<PathBuf>,
}

impl Options {
    /// Checks what the types do not.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the flag.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |flag, reason: String| Err(Error::Invalid { flag, reason });
        if !(1..=MAX_DEPTH).contains(&self.depth) {
            return invalid("--depth", format!("must be 1 to {MAX_DEPTH} (limits.max_chain_depth)"));
        }
        if self.runs == 0 {
            return invalid("--runs", "must be at least 1".into());
        }
        if self.parallel == 0 {
            return invalid("--parallel", "must be at least 1".into());
        }
        if self.variants.is_empty() {
            return invalid("--variants", "name at least one of none, static, jq, jinja".into());
        }
        if !(self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")) {
            return invalid("--database-url", "must start with postgres:// or postgresql://".into());
        }
        if self.poll.is_zero() {
            return invalid("--poll-ms", "must be at least 1".into());
        }
        Ok(())
    }
}

/// Runs every variant in turn and returns one report per variant.
///
/// # Errors
/// [`Error`] when the scenario could not be carried out (bad flags, no executors, database down, a
/// chain or submit refused).
pub async fn run(options: &Options) -> Result<Vec<ChainReport>, Error> {
    options.validate()?;
    let clients = client::connect(&options.client, 1)?;
    let store = Store::connect(&options.database_url).await?;
    let extension = FUNCTION.split('.').next().unwrap_or_default();
    let mut catalog = clients.catalog.clone();
    let executors = nodes::wait_for_executors(&mut catalog, extension, options.executors, options.wait_nodes).await?;
    tracing::info!(executors = ?executors, "executors ready");
    let mut reports = Vec::with_capacity(options.variants.len());
    for &variant in &options.variants {
        let name = variant.chain_name();
        let mut chains = clients.chains.clone();
        chains
            .apply_chain(ApplyChainRequest { chain: Some(variant.chain(options.depth)) })
            .await
            .map_err(|status| Error::Call { call: "ApplyChain", chain: name.clone(), status: Box::new(status) })?;
        if options.warmup_runs > 0 {
            tracing::info!(variant = variant.name(), runs = options.warmup_runs, "warm-up runs");
            drive(&clients, &store, &name, options.warmup_runs, options.parallel, options).await?;
        }
        tracing::info!(variant = variant.name(), runs = options.runs, depth = options.depth, "measured runs");
        let driven = drive(&clients, &store, &name, options.runs, options.parallel, options).await?;
        let tasks = store.run_tasks(&driven.roots).await?;
        let setup = ChainSetup {
            label: options.label.clone(),
            variant: variant.name(),
            transformation: variant.transformation(),
            depth: options.depth,
            runs: options.runs,
            parallel: options.parallel,
            executors: executors.clone(),
            wall_seconds: driven.elapsed.as_secs_f64(),
        };
        reports.push(report::measure(setup, &driven.roots, &tasks));
    }
    Ok(reports)
}

/// What [`drive`] did.
#[derive(Debug, Clone)]
struct Driven {
    /// The roots submitted, in order.
    roots: Vec<Uuid>,
    /// From the first submit until the last run was seen ended (or given up on).
    elapsed: Duration,
}

/// Submits `runs` roots of chain `name`, keeping at most `parallel` runs unfinished, and returns when
/// every run has ended or one took longer than `options.timeout` (its tasks then show as unfinished in
/// the report).
async fn drive(
    clients: &Clients,
    store: &Store,
    name: &str,
    runs: usize,
    parallel: usize,
    options: &Options,
) -> Result<Driven, Error> {
    let mut tasks = clients
        .tasks
        .first()
        .cloned()
        .ok_or(Error::Invalid { flag: "--connections", reason: "no channel to submit on".into() })?;
    let started = Instant::now();
    let mut roots = Vec::with_capacity(runs);
    let mut in_flight: Vec<(Uuid, Instant)> = Vec::with_capacity(parallel);
    loop {
        while in_flight.len() < parallel && roots.len() < runs {
            let request = SubmitTaskRequest {
                function: FUNCTION.into(),
                args: Some(legion_proto::json_to_value(&json!({}))),
                chain: Some(name.to_owned()),
                ..SubmitTaskRequest::default()
            };
            let call = |status| Error::Call { call: "SubmitTask", chain: name.to_owned(), status: Box::new(status) };
            let task = tasks.submit_task(request).await.map_err(call)?.into_inner().task;
            let id = task
                .and_then(|t| t.id.parse::<Uuid>().ok())
                .ok_or_else(|| call(tonic::Status::internal("SubmitTaskResponse without a task id that is a uuid")))?;
            roots.push(id);
            in_flight.push((id, Instant::now()));
        }
        if in_flight.is_empty() {
            break;
        }
        tokio::time::sleep(options.poll).await;
        let ids: Vec<Uuid> = in_flight.iter().map(|(id, _)| *id).collect();
        let unfinished = store.unfinished_runs(&ids).await?;
        in_flight.retain(|(id, _)| unfinished.contains(id));
        if let Some((late, _)) = in_flight.iter().find(|(_, since)| since.elapsed() > options.timeout) {
            tracing::warn!(root = %late, timeout_s = options.timeout.as_secs(), "a chain run did not end in time");
            break;
        }
    }
    Ok(Driven { roots, elapsed: started.elapsed() })
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
            executors: 1,
            wait_nodes: Duration::from_secs(1),
            depth: 20,
            runs: 10,
            parallel: 1,
            warmup_runs: 1,
            variants: Variant::ALL.to_vec(),
            timeout: Duration::from_secs(1),
            poll: Duration::from_millis(50),
            label: "t".into(),
            json_out: None,
        }
    }

    #[test]
    fn flags_are_validated_by_name() {
        assert!(options().validate().is_ok());
        type Breaker = fn(&mut Options);
        let cases: [(&str, Breaker); 7] = [
            ("--depth", |o| o.depth = 0),
            ("--depth", |o| o.depth = MAX_DEPTH + 1),
            ("--runs", |o| o.runs = 0),
            ("--parallel", |o| o.parallel = 0),
            ("--variants", |o| o.variants.clear()),
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

    #[test]
    fn variants_parse_by_name_and_build_a_capped_loop() {
        for variant in Variant::ALL {
            assert_eq!(Variant::parse(variant.name()), Ok(variant));
            let chain = variant.chain(7);
            assert_eq!(chain.name, format!("bench-chain-{}", variant.name()));
            assert_eq!(chain.max_depth, Some(7), "a cycle needs max_depth");
            let rel = &chain.relationships[0];
            assert_eq!((rel.trigger.as_str(), rel.action.as_str()), (FUNCTION, FUNCTION));
            let engine = rel.transformation.as_ref().map(|t| legion_proto::value_to_json(t)["engine"].clone());
            match variant {
                Variant::None => assert_eq!(engine, None),
                other => assert_eq!(engine, Some(json!(other.name()))),
            }
        }
        assert!(Variant::parse("lua").expect_err("unknown").contains("none, static, jq, jinja"));
    }
}
