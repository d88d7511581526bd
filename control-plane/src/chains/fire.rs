//! Firing relationships when a task of a chain run succeeds (DESIGN.md section 5, step 4).
//!
//! The store calls [`Firing::children`] inside the transaction that records the parent's result and
//! inserts what it returns in the same transaction, so the children exist exactly when the success
//! does. For each active relationship of the run's chain version whose trigger is the parent's function,
//! in order:
//!
//! 1. A child deeper than the cap (the chain's `max_depth`, at most `limits.max_chain_depth`) is created
//!    `skipped` with the reason; so is one whose conditions do not hold ([`decide`]).
//! 2. The transformation runs on `{results, args, task}` ([`Sandbox::evaluate`]); without one, the args
//!    are the parent's result if it is an object, else `{"result": <result>}`.
//! 3. The output becomes children ([`expand`]): an object is one child; an array fans out into one child
//!    per element (at most `limits.max_fanout`); an empty array gives one `skipped` child. A
//!    transformation error, an output of another kind, too many items, or args beyond
//!    `limits.max_payload_bytes`/`limits.max_json_depth` give one `failed` child (or one per bad item)
//!    with the reason; the parent is never affected.
//! 4. A child with `delay_ms` is `scheduled` until then; others are `pending` with their first dispatch.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use legion_common::settings::{Limits, json_depth};
use serde_json::{Value, json};
use uuid::Uuid;

use super::compiled::{CompiledChain, CompiledRelationship};
use super::sandbox::Sandbox;
use crate::delivery::retry::RetryOverrides;
use crate::dispatch::message;
use crate::tasks::validate::{contains_nul, json_kind};

/// A task of a chain run that has just succeeded, with what firing reads of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    /// The task.
    pub id: Uuid,
    /// `extension.runner.function`.
    pub function: String,
    /// Its args.
    pub args: Value,
    /// Its result.
    pub result: Value,
    /// The chain of the run.
    pub chain: String,
    /// The chain version the run is pinned to.
    pub chain_version: i64,
    /// The run's root task.
    pub root_id: Uuid,
    /// Its own parent, if it is not the root.
    pub parent_id: Option<Uuid>,
    /// The relationship that created it, if it is not the root.
    pub relationship_id: Option<Uuid>,
    /// 0 for the root.
    pub depth: u32,
    /// The attempt that succeeded.
    pub attempt: u32,
    /// 0 to 9.
    pub priority: u8,
    /// Region label, inherited by the children.
    pub region: Option<String>,
    /// The principal that started the run; the children run on its behalf.
    pub owner: String,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// First started at.
    pub started_at: Option<DateTime<Utc>>,
}

impl Parent {
    /// The context of conditions and transformations: `{"results", "args", "task"}`, where `task` holds
    /// `id`, `function`, `chain`, `chain_version`, `root_id`, `parent_id`, `relationship_id`, `depth`,
    /// `attempt`, `priority`, `region`, `owner`, `created_at` and `started_at` (RFC 3339).
    pub fn context(&self) -> Value {
        json!({
            "results": self.result,
            "args": self.args,
            "task": {
                "id": self.id,
                "function": self.function,
                "chain": self.chain,
                "chain_version": self.chain_version,
                "root_id": self.root_id,
                "parent_id": self.parent_id,
                "relationship_id": self.relationship_id,
                "depth": self.depth,
                "attempt": self.attempt,
                "priority": self.priority,
                "region": self.region,
                "owner": self.owner,
                "created_at": self.created_at.to_rfc3339(),
                "started_at": self.started_at.map(|t| t.to_rfc3339()),
            },
        })
    }
}

/// A task to create for a parent.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// New UUIDv7.
    pub id: Uuid,
    /// The relationship's action.
    pub function: String,
    /// `pending`, `scheduled`, `skipped` or `failed`.
    pub status: TaskStatus,
    /// The args object (`{}` for a skipped or failed child).
    pub args: Value,
    /// `args` serialized.
    pub args_json: String,
    /// Why it was skipped or failed.
    pub error: Option<String>,
    /// 0 to 9.
    pub priority: u8,
    /// Retry limit.
    pub max_attempts: u32,
    /// Limit of one attempt, in ms.
    pub timeout_ms: u32,
    /// The retry policy fields its relationship sets; the store fills the others from the `retry.*`
    /// settings when it writes the child.
    pub retry: RetryOverrides,
    /// Delay before it may start, in ms (for `scheduled`).
    pub delay_ms: u64,
    /// The chain of the run.
    pub chain: String,
    /// The pinned chain version.
    pub chain_version: i64,
    /// The run's root.
    pub root_id: Uuid,
    /// The task that fired it.
    pub parent_id: Uuid,
    /// The relationship that created it.
    pub relationship_id: Uuid,
    /// The parent's depth + 1.
    pub depth: u32,
    /// Position among the children of this relationship and parent, from 0.
    pub fanout_index: u32,
    /// The run's owner.
    pub owner: String,
    /// Inherited from the parent.
    pub region: Option<String>,
    /// Routing key of its broker messages.
    pub routing_key: String,
    /// The broker message of dispatch 1, for a `pending` child; empty otherwise.
    pub payload: Vec<u8>,
}

/// What to do for one relationship fired by a parent.
#[derive(Debug)]
pub enum Step<'a> {
    /// Create one `skipped` child with this reason.
    Skip(&'a CompiledRelationship, String),
    /// Evaluate the transformation and create the children.
    Run(&'a CompiledRelationship),
}

/// The depth cap of a run of `chain`: its own `max_depth`, at most `limits.max_chain_depth`.
pub fn depth_cap(chain: &CompiledChain, limits: &Limits) -> u32 {
    chain.max_depth.map_or(limits.max_chain_depth, |d| d.min(limits.max_chain_depth))
}

/// Decides, without evaluating transformations, what each relationship fired by `parent` does.
pub fn decide<'a>(parent: &Parent, chain: &'a CompiledChain, context: &Value, limits: &Limits) -> Vec<Step<'a>> {
    let cap = depth_cap(chain, limits);
    chain
        .fired_by(&parent.function)
        .into_iter()
        .map(|rel| {
            let depth = parent.depth.saturating_add(1);
            if depth > cap {
                return Step::Skip(
                    rel,
                    format!("depth {depth} exceeds the run's depth cap {cap} (max_depth, limits.max_chain_depth)"),
                );
            }
            match &rel.condition {
                Some(condition) => {
                    let evaluation = condition.evaluate(context);
                    if evaluation.satisfied {
                        Step::Run(rel)
                    } else {
                        Step::Skip(rel, format!("conditions not met: {}", evaluation.reason))
                    }
                }
                None => Step::Run(rel),
            }
        })
        .collect()
}

/// The args of an action without a transformation: the parent's result if it is an object, else
/// `{"result": <result>}`.
pub fn default_args(parent: &Parent) -> Value {
    match &parent.result {
        Value::Object(_) => parent.result.clone(),
        other => json!({ "result": other }),
    }
}

/// The children of one relationship from its transformation's output (or error).
pub fn expand(
    parent: &Parent,
    rel: &CompiledRelationship,
    output: Result<Value, String>,
    limits: &Limits,
) -> Vec<Child> {
    let output = match output {
        Ok(output) => output,
        Err(reason) => return vec![failed(parent, rel, 0, format!("transformation failed: {reason}"), limits)],
    };
    match output {
        Value::Object(_) => vec![child(parent, rel, 0, output, limits)],
        Value::Array(items) if items.is_empty() => vec![ended(
            parent,
            rel,
            0,
            TaskStatus::Skipped,
            "transformation produced an empty array: nothing to fan out".into(),
            limits,
        )],
        Value::Array(items) if items.len() > usize::try_from(limits.max_fanout).unwrap_or(usize::MAX) => {
            vec![failed(
                parent,
                rel,
                0,
                format!(
                    "transformation produced {} items, more than limits.max_fanout ({})",
                    items.len(),
                    limits.max_fanout
                ),
                limits,
            )]
        }
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                match item {
                    Value::Object(_) => child(parent, rel, index, item, limits),
                    other => failed(
                        parent,
                        rel,
                        index,
                        format!(
                            "transformation item {i} is {}; the args of a task must be an object",
                            json_kind(&other)
                        ),
                        limits,
                    ),
                }
            })
            .collect(),
        other => vec![failed(
            parent,
            rel,
            0,
            format!(
                "transformation produced {}; the args of a task must be an object (or an array of objects to fan out)",
                json_kind(&other)
            ),
            limits,
        )],
    }
}

fn child(parent: &Parent, rel: &CompiledRelationship, index: u32, args: Value, limits: &Limits) -> Child {
    let args_json = args.to_string();
    if args_json.len() > limits.max_payload_bytes {
        let reason =
            format!("args: {} bytes exceeds limits.max_payload_bytes ({})", args_json.len(), limits.max_payload_bytes);
        return failed(parent, rel, index, reason, limits);
    }
    let depth = json_depth(&args);
    if depth > limits.max_json_depth {
        let reason =
            format!("args: nested {depth} levels deep, more than limits.max_json_depth ({})", limits.max_json_depth);
        return failed(parent, rel, index, reason, limits);
    }
    if contains_nul(&args) {
        return failed(parent, rel, index, "args: strings must not contain NUL (\\u0000)".into(), limits);
    }
    let r = &rel.relationship;
    let mut child = base(parent, rel, index, limits);
    child.delay_ms = r.delay_ms;
    if r.delay_ms > 0 {
        child.status = TaskStatus::Scheduled;
    } else {
        child.status = TaskStatus::Pending;
        child.payload = message::payload(child.id, 1, &child.function, &args, child.timeout_ms);
    }
    child.args = args;
    child.args_json = args_json;
    child
}

fn failed(parent: &Parent, rel: &CompiledRelationship, index: u32, reason: String, limits: &Limits) -> Child {
    ended(parent, rel, index, TaskStatus::Failed, reason, limits)
}

fn ended(
    parent: &Parent,
    rel: &CompiledRelationship,
    index: u32,
    status: TaskStatus,
    reason: String,
    limits: &Limits,
) -> Child {
    Child { status, error: Some(reason), ..base(parent, rel, index, limits) }
}

/// A child with everything inherited and empty args; the caller sets status and args.
fn base(parent: &Parent, rel: &CompiledRelationship, index: u32, limits: &Limits) -> Child {
    let r = &rel.relationship;
    Child {
        id: Uuid::now_v7(),
        function: r.action.clone(),
        status: TaskStatus::Skipped,
        args: json!({}),
        args_json: "{}".into(),
        error: None,
        priority: r.priority.unwrap_or(parent.priority),
        max_attempts: r.max_attempts.unwrap_or(1).clamp(1, limits.max_attempts.max(1)),
        timeout_ms: r.timeout_ms.unwrap_or(limits.default_timeout_ms).min(limits.max_timeout_ms),
        retry: r.retry,
        delay_ms: 0,
        chain: parent.chain.clone(),
        chain_version: parent.chain_version,
        root_id: parent.root_id,
        parent_id: parent.id,
        relationship_id: r.id,
        depth: parent.depth.saturating_add(1),
        fanout_index: index,
        owner: parent.owner.clone(),
        region: parent.region.clone(),
        routing_key: message::routing_key(&r.action, parent.region.as_deref()),
        payload: Vec::new(),
    }
}

/// Keeps the run of each child within `max_run_tasks` (`limits.max_run_tasks`). `run_tasks` holds, per
/// root, how many tasks its run has now. Children are taken in order, one group (the children of one
/// relationship from one parent) at a time: a group that fits is kept whole; one that does not is
/// replaced by a single `failed` child naming the limit (allowed past the cap: it fires nothing, and
/// only a task created within the cap can give rise to one). Returns the children to create and how
/// many each root gains.
pub fn cap_run(
    children: Vec<Child>,
    run_tasks: &HashMap<Uuid, u32>,
    max_run_tasks: u32,
) -> (Vec<Child>, HashMap<Uuid, u32>) {
    let mut added: HashMap<Uuid, u32> = HashMap::new();
    let mut kept = Vec::with_capacity(children.len());
    let mut rest = children.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut group = vec![first];
        while let Some(next) = rest.peek() {
            if next.parent_id != group[0].parent_id || next.relationship_id != group[0].relationship_id {
                break;
            }
            if let Some(next) = rest.next() {
                group.push(next);
            }
        }
        let root = group[0].root_id;
        let now = run_tasks.get(&root).copied().unwrap_or(1).saturating_add(added.get(&root).copied().unwrap_or(0));
        let size = u32::try_from(group.len()).unwrap_or(u32::MAX);
        if now.saturating_add(size) <= max_run_tasks {
            *added.entry(root).or_default() += size;
            kept.extend(group);
        } else {
            let reason =
                format!("the run has {now} tasks; {size} more would pass limits.max_run_tasks ({max_run_tasks})");
            let mut marker = group.swap_remove(0);
            marker.status = TaskStatus::Failed;
            marker.error = Some(reason);
            marker.args = json!({});
            marker.args_json = "{}".into();
            marker.fanout_index = 0;
            marker.payload = Vec::new();
            marker.delay_ms = 0;
            *added.entry(root).or_default() += 1;
            kept.push(marker);
        }
    }
    (kept, added)
}

/// Fires relationships: the parsed-version cache, the transformation sandbox and the live limits.
/// Cheap to clone.
#[derive(Clone)]
pub struct Firing {
    cache: super::compiled::ChainCache,
    sandbox: Sandbox,
    limits: tokio::sync::watch::Receiver<Limits>,
    budget: std::time::Duration,
}

impl Firing {
    /// Firing with `sandbox` for `jinja`/`jq`, the live `limits`, and `budget`
    /// (`control_plane.transform_budget_ms`): the longest all transformations of one call of
    /// [`Firing::children`] may take together.
    pub fn new(sandbox: Sandbox, limits: tokio::sync::watch::Receiver<Limits>, budget: std::time::Duration) -> Self {
        Self { cache: super::compiled::ChainCache::default(), sandbox, limits, budget }
    }

    /// The parsed chain versions.
    pub fn cache(&self) -> &super::compiled::ChainCache {
        &self.cache
    }

    /// `limits.max_run_tasks`, as currently set.
    pub fn max_run_tasks(&self) -> u32 {
        self.limits.borrow().max_run_tasks
    }

    /// The children of every parent, parents in order, each parent's relationships in order. A parent
    /// whose version is not in `chains` (its chain was deleted) has none. Transformations of all
    /// parents evaluate concurrently (as many at once as the sandbox has processes); those unfinished
    /// when the budget runs out fail their children with the reason.
    pub async fn children(&self, parents: &[Parent], chains: &HashMap<i64, Arc<CompiledChain>>) -> Vec<Child> {
        let limits = self.limits.borrow().clone();
        let mut plans = Vec::new();
        for parent in parents {
            let Some(chain) = chains.get(&parent.chain_version) else { continue };
            let context = parent.context();
            let steps = decide(parent, chain, &context, &limits);
            plans.push((parent, context, steps));
        }
        let deadline = tokio::time::Instant::now() + self.budget;
        let budget_ms = self.budget.as_millis();
        let mut evaluations = Vec::new();
        for (parent, context, steps) in &plans {
            for step in steps {
                if let Step::Run(rel) = step {
                    evaluations.push(async move {
                        match &rel.transformation {
                            Some(t) => tokio::time::timeout_at(deadline, self.sandbox.evaluate(t, context))
                                .await
                                .unwrap_or_else(|_| {
                                    Err(format!(
                                        "the transformations of this completion ran past \
                                         control_plane.transform_budget_ms ({budget_ms} ms)"
                                    ))
                                }),
                            None => Ok(default_args(parent)),
                        }
                    });
                }
            }
        }
        let mut outputs = futures_util::future::join_all(evaluations).await.into_iter();
        let mut children = Vec::new();
        for (parent, _, steps) in &plans {
            for step in steps {
                match step {
                    Step::Skip(rel, reason) => {
                        children.push(ended(parent, rel, 0, TaskStatus::Skipped, reason.clone(), &limits));
                    }
                    Step::Run(rel) => {
                        let output = outputs.next().unwrap_or_else(|| Err("transformation not evaluated".into()));
                        children.extend(expand(parent, rel, output, &limits));
                    }
                }
            }
        }
        children
    }
}

#[cfg(test)]
#[path = "fire_tests.rs"]
mod tests;
